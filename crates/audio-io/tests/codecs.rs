//! Every WAV encoding symphonia can decode is enabled and correct: IMA ADPCM (format tag 0x11,
//! as sox and some Freesound uploads write it), Microsoft ADPCM (0x02), A-law (0x06) and mu-law
//! (0x07), on files written by sox (`scripts/make_codec_fixtures.sh`), compared with sox's own
//! decode of the same files. The fixtures are 16 kHz, so no resampling is involved: the
//! comparison is of the decoders alone.
//!
//! A-law and mu-law are table expansions: equal to sox's to the last bit. The ADPCM decoders
//! (sox's own and symphonia-codec-adpcm) are not bit-identical on these files; a difference in
//! one sample is carried forward by the predictor, so small differences persist. Measured on
//! these fixtures: at most 34 (IMA mono), 14 (IMA stereo, after the downmix) and 55 (Microsoft) steps of
//! 16-bit PCM, i.e. below -55 dB of full scale; the tests allow 200 steps and require a
//! signal-to-difference ratio of at least 40 dB.

use std::path::PathBuf;

use audio_io::{load, probe, Container};

fn codecs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codecs")
}

/// sox's decode of `name`, as mono (the mean of the channels, as `load` downmixes).
fn sox_reference(name: &str, channels: usize) -> Vec<f32> {
    let bytes = std::fs::read(codecs_dir().join(format!("{name}.sox.f32"))).unwrap();
    let interleaved: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Decodes `name`, checks its format tag, channels and rate, and compares with sox: the same
/// length (ADPCM files may be padded to a whole block: up to one block more or less is allowed),
/// every common sample within `tolerance`, and the ratio of the reference's energy to the
/// difference's at least `min_snr_db`.
fn check(name: &str, format_tag: u16, channels: usize, tolerance: f32, min_snr_db: f64) {
    let path = codecs_dir().join(name);
    let head = std::fs::read(&path).unwrap();
    assert_eq!(
        u16::from_le_bytes([head[20], head[21]]),
        format_tag,
        "{name}: fixture has another format tag"
    );
    let info = probe(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.container, Container::Wav);
    assert_eq!(info.sample_rate, 16_000, "{name}");
    assert_eq!(info.channels, channels, "{name}");
    let ours = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let reference = sox_reference(name, channels);
    let n = ours.len().min(reference.len());
    assert!(
        ours.len().abs_diff(reference.len()) <= 1024 && n >= 7_900,
        "{name}: {} samples decoded, sox decodes {}",
        ours.len(),
        reference.len()
    );
    let max_err = ours[..n]
        .iter()
        .zip(&reference[..n])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let peak = reference.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(peak > 0.1, "{name}: the fixture is silent");
    assert!(
        max_err <= tolerance,
        "{name}: max |ours - sox| = {max_err} over {n} samples (tolerance {tolerance})"
    );
    let signal: f64 = reference[..n].iter().map(|&x| f64::from(x).powi(2)).sum();
    let noise: f64 = ours[..n]
        .iter()
        .zip(&reference[..n])
        .map(|(&a, &b)| f64::from(a - b).powi(2))
        .sum();
    let snr = if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    };
    assert!(
        snr >= min_snr_db,
        "{name}: signal-to-difference {snr:.1} dB < {min_snr_db} dB"
    );
}

/// One step of 16-bit PCM.
const LSB: f32 = 1.0 / 32768.0;
/// What the ADPCM comparisons allow (see the module docs).
const ADPCM_TOLERANCE: f32 = 200.0 * LSB;
const ADPCM_SNR_DB: f64 = 40.0;

#[test]
fn ima_adpcm_mono() {
    check("ima_adpcm_mono.wav", 0x11, 1, ADPCM_TOLERANCE, ADPCM_SNR_DB);
}

#[test]
fn ima_adpcm_stereo() {
    check(
        "ima_adpcm_stereo.wav",
        0x11,
        2,
        ADPCM_TOLERANCE,
        ADPCM_SNR_DB,
    );
}

#[test]
fn microsoft_adpcm_mono() {
    check("ms_adpcm_mono.wav", 0x02, 1, ADPCM_TOLERANCE, ADPCM_SNR_DB);
}

#[test]
fn a_law_mono() {
    check("alaw_mono.wav", 0x06, 1, 0.0, f64::INFINITY);
}

#[test]
fn mu_law_mono() {
    check("mulaw_mono.wav", 0x07, 1, 0.0, f64::INFINITY);
}
