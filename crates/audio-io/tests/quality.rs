//! Resampling quality through the public API: passband accuracy, anti-aliasing, agreement
//! with librosa (references written by scripts/make_audio_fixtures.py).

mod common;

use audio_io::{load, load_bytes, output_len};
use common::{fixtures, sine_interleaved, snr_db, Encoding, WavSpec};

/// A float32 WAV of a sine (float, so the test measures the resampler, not quantisation).
fn sine_wav(freq: f64, sr: u32, seconds: f64, amp: f64) -> Vec<u8> {
    let n = (f64::from(sr) * seconds) as usize;
    WavSpec::new(sr, 1, Encoding::Float(32)).build(&sine_interleaved(freq, sr, n, 1, amp))
}

/// Max abs error against the analytic sine, ignoring `margin` output samples at each edge.
fn max_abs_error(got: &[f32], freq: f64, amp: f64, margin: usize) -> f64 {
    got.iter()
        .enumerate()
        .skip(margin)
        .take(got.len() - 2 * margin)
        .map(|(i, v)| {
            let want = amp * (2.0 * std::f64::consts::PI * freq * i as f64 / 16_000.0).sin();
            (f64::from(*v) - want).abs()
        })
        .fold(0.0, f64::max)
}

#[test]
fn passband_sines_match_the_analytic_sine() {
    // 25 ms from each edge: the filters' half-lengths are under 5 ms (32 input samples at
    // 44.1 kHz, 32 at 8 kHz; 64 for rubato at odd rates).
    let margin = 400;
    for sr in [
        44_100, 48_000, 22_050, 8_000, 11_025, 32_000, 96_000, 44_101, 12_345,
    ] {
        for freq in [440.0, 3_000.0] {
            let got = load_bytes(sine_wav(freq, sr, 1.0, 0.9), "sine.wav").unwrap();
            assert_eq!(got.len() as u64, output_len(u64::from(sr), sr));
            let err = max_abs_error(&got, freq, 0.9, margin);
            println!("{sr:>6} Hz, {freq:>6} Hz sine: max abs err {err:.2e}");
            assert!(err < 1e-3, "{sr} Hz, {freq} Hz: max abs error {err:.2e}");
        }
    }
}

#[test]
fn tones_above_8k_are_attenuated_60_db() {
    let mut levels = Vec::new();
    for (sr, freq) in [
        (44_100, 8_200.0),
        (44_100, 8_600.0),
        (44_100, 9_000.0),
        (44_100, 9_500.0),
        (44_100, 10_000.0),
        (48_000, 9_000.0),
        (48_000, 10_000.0),
        (22_050, 9_000.0),
        (22_050, 10_000.0),
    ] {
        let got = load_bytes(sine_wav(freq, sr, 1.0, 1.0), "hf.wav").unwrap();
        let core = &got[400..got.len() - 400];
        let rms =
            (core.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / core.len() as f64).sqrt();
        // Relative to the input's RMS (1 / sqrt 2).
        let level_db = 20.0 * (rms * 2f64.sqrt()).max(1e-12).log10();
        println!("{freq} Hz at {sr} Hz: {level_db:.1} dB");
        levels.push((sr, freq, level_db));
    }
    for (sr, freq, level_db) in levels {
        // The transition band of the 64-tap filter ends near 9 kHz (see poly.rs).
        if freq >= 9_000.0 {
            assert!(
                level_db <= -60.0,
                "{freq} Hz at {sr} Hz only {level_db:.1} dB down"
            );
        }
    }
}

#[test]
fn agrees_with_librosa_to_40_db() {
    for f in fixtures() {
        let got = load(f.path()).unwrap();
        let want = f.librosa_16k();
        let snr = snr_db(&want, &got);
        println!("{}: SNR vs librosa {snr:.1} dB", f.file);
        // Lossy codecs: symphonia's and libsndfile's (mpg123, libvorbis) decoders differ a
        // little; still far above the bar.
        assert!(snr >= 40.0, "{}: SNR vs librosa {snr:.1} dB", f.file);
    }
}

#[test]
fn downmix_then_resample_equals_resample_of_the_mean() {
    // Stereo with opposite-phase content: the mean cancels it exactly.
    let sr = 44_100;
    let n = 44_100;
    let mut x = Vec::with_capacity(2 * n);
    for i in 0..n {
        let t = i as f64 / f64::from(sr);
        let common = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin();
        let diff = 0.25 * (2.0 * std::f64::consts::PI * 1_000.0 * t).sin();
        x.push(common + diff);
        x.push(common - diff);
    }
    let got = load_bytes(WavSpec::new(sr, 2, Encoding::Float(64)).build(&x), "st.wav").unwrap();
    let err = max_abs_error(&got, 440.0, 0.5, 400);
    assert!(err < 1e-3, "max abs err {err:.2e}");
}
