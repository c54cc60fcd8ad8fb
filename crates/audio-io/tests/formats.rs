//! Every supported format and layout, decoded through the public API.

mod common;

use audio_io::{load, load_bytes, probe, probe_bytes, AudioError, Container};
use common::{fixture, fixtures, sine_interleaved, snr_db, Encoding, WavSpec};

/// What a 16-bit/24-bit/... sample must decode to: symphonia's integer -> f32 conversion,
/// which matches soundfile's (`int / 2^(bits-1)`; u8: `(u - 128) / 128`).
fn expected_decode(spec: &WavSpec, interleaved: &[f64]) -> Vec<f32> {
    let bytes = spec.encode_samples(interleaved);
    let ch = usize::from(spec.channels);
    let values: Vec<f64> = match spec.encoding {
        Encoding::Pcm(8) => bytes
            .iter()
            .map(|b| (f64::from(*b) - 128.0) / 128.0)
            .collect(),
        Encoding::Pcm(16) => bytes
            .chunks_exact(2)
            .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect(),
        Encoding::Pcm(24) => bytes
            .chunks_exact(3)
            .map(|b| f64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) / 8_388_608.0)
            .collect(),
        Encoding::Pcm(32) => bytes
            .chunks_exact(4)
            .map(|b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0)
            .collect(),
        Encoding::Float(32) => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Encoding::Float(64) => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("{other:?}"),
    };
    values
        .chunks_exact(ch)
        .map(|frame| {
            let f32s: Vec<f32> = frame.iter().map(|v| *v as f32).collect();
            let sum: f32 = f32s.iter().sum();
            if ch == 1 {
                f32s[0]
            } else {
                sum / ch as f32
            }
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn wav_every_encoding_and_channel_count_at_16k() {
    let encodings = [
        Encoding::Pcm(8),
        Encoding::Pcm(16),
        Encoding::Pcm(24),
        Encoding::Pcm(32),
        Encoding::Float(32),
        Encoding::Float(64),
    ];
    for encoding in encodings {
        for channels in [1u16, 2, 3, 6] {
            for extensible in [false, true] {
                let mut spec = WavSpec::new(16_000, channels, encoding);
                spec.extensible = extensible;
                let x = sine_interleaved(440.0, 16_000, 1_234, channels.into(), 0.8);
                let bytes = spec.build(&x);
                let what = format!("{encoding:?} x{channels} ext={extensible}");
                let got =
                    load_bytes(bytes.clone(), "t.wav").unwrap_or_else(|e| panic!("{what}: {e}"));
                let want = expected_decode(&spec, &x);
                let tol = if channels > 2 { 1e-6 } else { 0.0 };
                assert!(max_abs_diff(&got, &want) <= tol, "{what}");
                let info = probe_bytes(bytes, "t.wav").unwrap();
                assert_eq!(info.container, Container::Wav);
                assert_eq!(info.sample_rate, 16_000);
                assert_eq!(info.channels, usize::from(channels), "{what}");
                assert_eq!(info.frames, Some(1_234), "{what}");
            }
        }
    }
}

#[test]
fn wav_extra_chunks_and_odd_sizes_before_data() {
    let mut spec = WavSpec::new(16_000, 1, Encoding::Pcm(16));
    let mut list = b"INFO".to_vec();
    list.extend_from_slice(b"INAM");
    list.extend_from_slice(&5u32.to_le_bytes());
    list.extend_from_slice(b"tone\0\0"); // 5 bytes + pad
    spec.extra_chunks = vec![
        (*b"fact", 1000u32.to_le_bytes().to_vec()),
        (
            *b"PEAK",
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0],
        ),
        (*b"odd ", vec![1, 2, 3]), // odd size: pad byte follows
        (*b"LIST", list),
        (*b"junk", vec![0; 7]),
    ];
    let x = sine_interleaved(1000.0, 16_000, 1000, 1, 0.5);
    let got = load_bytes(spec.build(&x), "chunks.wav").unwrap();
    assert_eq!(got, expected_decode(&spec, &x));
}

#[test]
fn wav_odd_data_chunk_8bit_with_pad_byte() {
    // 8-bit mono with an odd frame count: the data chunk is odd-sized and padded.
    let spec = WavSpec::new(16_000, 1, Encoding::Pcm(8));
    let x = sine_interleaved(300.0, 16_000, 999, 1, 0.9);
    let got = load_bytes(spec.build(&x), "odd.wav").unwrap();
    assert_eq!(got.len(), 999);
    assert_eq!(got, expected_decode(&spec, &x));
}

#[test]
fn wav_44k1_stereo_is_resampled_to_exact_length() {
    let spec = WavSpec::new(44_100, 2, Encoding::Pcm(16));
    let x = sine_interleaved(440.0, 44_100, 44_100 * 2 + 7, 2, 0.5);
    let got = load_bytes(spec.build(&x), "a.wav").unwrap();
    assert_eq!(
        got.len() as u64,
        audio_io::output_len(44_100 * 2 + 7, 44_100)
    );
}

#[test]
fn fixtures_decode_with_the_length_librosa_gives() {
    for f in fixtures() {
        let got = load(f.path()).unwrap_or_else(|e| panic!("{e}"));
        let want = f.librosa_16k();
        let info = probe(f.path()).unwrap();
        assert_eq!(info.sample_rate, f.sample_rate, "{}", f.file);
        assert_eq!(info.channels, f.channels, "{}", f.file);
        // librosa pads to ceil(n * 16000 / sr); we return round(). Equal or one less.
        assert!(
            got.len() == want.len() || got.len() + 1 == want.len(),
            "{}: {} vs librosa {}",
            f.file,
            got.len(),
            want.len()
        );
        println!(
            "{}: {} samples, SNR vs librosa {:.1} dB",
            f.file,
            got.len(),
            snr_db(&want, &got)
        );
    }
}

#[test]
fn flac_at_16k_is_bit_exact_with_soundfile() {
    let f = fixture("speech_16k_mono.flac");
    let got = load(f.path()).unwrap();
    let want = f.librosa_16k(); // no resampling at 16 kHz: soundfile's decode
    assert_eq!(got.len(), want.len());
    assert!(got
        .iter()
        .zip(&want)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let info = probe(f.path()).unwrap();
    assert_eq!(info.container, Container::Flac);
    assert_eq!(info.codec, "flac");
    assert_eq!(info.bits_per_sample, Some(16));
    assert_eq!(info.frames, Some(f.frames));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = load("/definitely/not/here.wav").unwrap_err();
    assert!(matches!(err, AudioError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("/definitely/not/here.wav: cannot read file"),
        "{err}"
    );
}

#[test]
fn truncated_data_is_an_error() {
    let spec = WavSpec::new(16_000, 1, Encoding::Pcm(16));
    let x = sine_interleaved(440.0, 16_000, 4000, 1, 0.5);
    let mut bytes = spec.build(&x);
    bytes.truncate(bytes.len() - 3001);
    let err = load_bytes(bytes, "cut.wav").unwrap_err();
    println!("{err}");
    assert!(
        matches!(
            err,
            AudioError::TruncatedData {
                expected_frames: 4000,
                ..
            }
        ),
        "{err:?}"
    );
}
