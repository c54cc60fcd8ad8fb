//! Decode + resample benchmark and resampler parameter sweep (`harness = false`).
//!
//! ```text
//! cargo bench -p audio-io --bench decode_resample -- run DIR
//!     time audio_io::load over every *.wav in DIR: one thread (per-core figure), then
//!     load_many on rayon's pool (all cores); prints one JSON line per mode
//! cargo bench -p audio-io --bench decode_resample -- sweep
//!     quality and speed of candidate sinc parameters; prints a Markdown table
//! ```
//! `scripts/bench_audio.sh` generates the clips, runs this and `scripts/bench_librosa.py`
//! side by side and prints the comparison table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use audio_io::tuning::{SincParams, TunedResampler, WindowFunction};

fn wav_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no .wav files in {}", dir.display());
    paths
}

fn audio_seconds(paths: &[PathBuf]) -> f64 {
    paths
        .iter()
        .map(|p| {
            let info = audio_io::probe(p).unwrap();
            info.duration_seconds().unwrap()
        })
        .sum()
}

fn report(mode: &str, threads: usize, clips: usize, audio_s: f64, wall: f64, samples: usize) {
    println!(
        "{{\"tool\": \"audio-io\", \"mode\": \"{mode}\", \"threads\": {threads}, \"clips\": {clips}, \
         \"audio_seconds\": {audio_s}, \"output_samples\": {samples}, \"wall_seconds\": {wall}, \
         \"clips_per_s\": {}, \"audio_s_per_s\": {}}}",
        clips as f64 / wall,
        audio_s / wall
    );
}

fn run(dir: &Path) {
    let paths = wav_files(dir);
    let audio_s = audio_seconds(&paths);
    for p in paths.iter().take(10) {
        audio_io::load(p).unwrap(); // warm-up: page cache, resampler cache
    }
    // One core: sequential loads on this thread, best of two passes.
    let mut best = f64::INFINITY;
    let mut samples = 0;
    for _ in 0..2 {
        let start = Instant::now();
        samples = 0;
        for p in &paths {
            samples += audio_io::load(p).unwrap().len();
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    report("sequential", 1, paths.len(), audio_s, best, samples);
    // All cores: load_many on rayon's global pool.
    let threads = rayon::current_num_threads();
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let start = Instant::now();
        samples = 0;
        for (_, result) in audio_io::load_many(paths.clone(), 4 * threads) {
            samples += result.unwrap().len();
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    report("load_many", threads, paths.len(), audio_s, best, samples);
}

fn sine(freq: f64, sr: u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(sr)).sin() as f32)
        .collect()
}

/// Max abs error of a resampled passband sine against the analytic one, 25 ms from the edges.
fn sine_error(params: SincParams, sr: u32, freq: f64) -> f32 {
    let mut r = TunedResampler::new(sr, params).unwrap();
    let x: Vec<f32> = sine(freq, sr, sr as usize / 2)
        .iter()
        .map(|v| v * 0.9)
        .collect();
    let y = r.resample(&x).unwrap();
    let want: Vec<f32> = sine(freq, 16_000, y.len())
        .iter()
        .map(|v| v * 0.9)
        .collect();
    let m = 400;
    y[m..y.len() - m]
        .iter()
        .zip(&want[m..want.len() - m])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Level in dB (re. the input amplitude) of what is left of a stopband tone.
fn attenuation_db(params: SincParams, sr: u32, freq: f64) -> f64 {
    let mut r = TunedResampler::new(sr, params).unwrap();
    let y = r.resample(&sine(freq, sr, sr as usize / 2)).unwrap();
    let m = 400;
    let core = &y[m..y.len() - m];
    let peak = core.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    -20.0 * f64::from(peak).log10()
}

/// SNR (dB) against librosa over the committed WAV fixtures (decoded with hound).
fn snr_vs_librosa(params: SincParams) -> f64 {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut worst = f64::INFINITY;
    for name in [
        "speech_44k1_mono.wav",
        "speech_48k_stereo.wav",
        "speech_22k05_mono.wav",
        "speech_8k_mono.wav",
    ] {
        let mut reader = hound::WavReader::open(dir.join(name)).unwrap();
        let spec = reader.spec();
        let ch = usize::from(spec.channels);
        let ints: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
        let mono: Vec<f32> = ints
            .chunks_exact(ch)
            .map(|f| {
                let s: f32 = f.iter().map(|v| f32::from(*v) / 32768.0).sum();
                s / ch as f32
            })
            .collect();
        let mut r = TunedResampler::new(spec.sample_rate, params).unwrap();
        let y = r.resample(&mono).unwrap();
        let bytes = std::fs::read(dir.join(format!("{name}.librosa16k.f32"))).unwrap();
        let want: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let n = want.len().min(y.len());
        let sig: f64 = want[..n].iter().map(|v| f64::from(*v).powi(2)).sum();
        let noise: f64 = want[..n]
            .iter()
            .zip(&y[..n])
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum();
        worst = worst.min(10.0 * (sig / noise).log10());
    }
    worst
}

/// Seconds to resample one 5 s 44.1 kHz clip (best of 7), resampler already built.
fn resample_seconds(params: SincParams) -> f64 {
    let mut r = TunedResampler::new(44_100, params).unwrap();
    let mut state = 1u32;
    let x: Vec<f32> = (0..220_500)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect();
    r.resample(&x).unwrap();
    (0..7)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(r.resample(&x).unwrap());
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn sweep() {
    println!(
        "| sinc_len | window | phases | max abs err (440 Hz & 3 kHz; 44.1/48/22.05/8 kHz) | \
         10 kHz @ 44.1k (dB) | SNR vs librosa (dB, worst fixture) | resample 5 s @ 44.1k (ms) |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|");
    let windows = [
        (WindowFunction::BlackmanHarris2, "BlackmanHarris2"),
        (WindowFunction::Blackman2, "Blackman2"),
    ];
    for (window, wname) in windows {
        for sinc_len in [32, 48, 64, 96, 128, 192, 256] {
            for exact_phases in [true, false] {
                if !exact_phases && window != WindowFunction::BlackmanHarris2 {
                    continue;
                }
                let params = SincParams {
                    sinc_len,
                    window,
                    f_cutoff: None,
                    exact_phases,
                };
                let err = [44_100, 48_000, 22_050, 8_000]
                    .iter()
                    .flat_map(|&sr| [440.0, 3_000.0].map(|f| sine_error(params, sr, f)))
                    .fold(0.0f32, f32::max);
                println!(
                    "| {sinc_len} | {wname} | {} | {err:.1e} | {:.1} | {:.1} | {:.3} |",
                    if exact_phases {
                        "exact (F = p), nearest"
                    } else {
                        "cubic, F = 512"
                    },
                    attenuation_db(params, 44_100, 10_000.0),
                    snr_vs_librosa(params),
                    1e3 * resample_seconds(params),
                );
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    match args.first().map(String::as_str) {
        Some("run") => run(Path::new(args.get(1).expect("run DIR"))),
        Some("sweep") => sweep(),
        // `cargo bench` without arguments (CI smoke): a quick sweep is the cheapest useful run.
        _ => {
            eprintln!("usage: decode_resample run DIR | sweep");
        }
    }
}
