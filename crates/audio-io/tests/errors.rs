//! Every failure mode gives its own typed error naming the file.

mod common;

use std::io::Write;

use audio_io::{load, load_bytes, probe, AudioError, Container};
use common::{fixture, sine_interleaved, Encoding, WavSpec};

fn wav16(n: usize) -> Vec<u8> {
    WavSpec::new(16_000, 1, Encoding::Pcm(16)).build(&sine_interleaved(440.0, 16_000, n, 1, 0.5))
}

fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path
}

#[test]
fn io_errors_name_the_file() {
    let err = load("/no/such/dir/clip.wav").unwrap_err();
    assert!(matches!(err, AudioError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("/no/such/dir/clip.wav: cannot read file ("),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let err = load(dir.path()).unwrap_err(); // a directory
    assert!(
        matches!(
            err,
            AudioError::NotAFile {
                kind: "a directory",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        probe("/no/such.flac").unwrap_err(),
        AudioError::Io { .. }
    ));
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "empty.wav", b"");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: empty file (0 bytes)", path.display())
    );
    assert!(matches!(
        load_bytes(Vec::new(), "e.wav"),
        Err(AudioError::Empty { .. })
    ));
}

#[test]
fn not_audio() {
    let err = load_bytes(b"<!DOCTYPE html><html>404</html>".to_vec(), "page.wav").unwrap_err();
    assert!(matches!(err, AudioError::NotAudio { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("page.wav: not a supported audio file"),
        "{err}"
    );
    assert!(err.to_string().contains("<!DOCTYPE"), "{err}");
    let err = load_bytes(vec![0u8; 5000], "zeros.flac").unwrap_err();
    assert!(matches!(err, AudioError::NotAudio { .. }), "{err:?}");
}

#[test]
fn truncated_header() {
    let bytes = wav16(100);
    for cut in [4, 11, 12, 20, 30, 43] {
        let err = load_bytes(bytes[..cut].to_vec(), "cut.wav").unwrap_err();
        assert!(
            matches!(
                err,
                AudioError::TruncatedHeader {
                    container: Container::Wav,
                    ..
                }
            ),
            "cut at {cut}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cut.wav: truncated WAV header ("),
            "{err}"
        );
    }
    let flac = std::fs::read(fixture("speech_16k_mono.flac").path()).unwrap();
    let err = load_bytes(flac[..20].to_vec(), "cut.flac").unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::TruncatedHeader {
                container: Container::Flac,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn malformed_header() {
    // Zero channels.
    let mut bytes = wav16(100);
    bytes[22] = 0;
    bytes[23] = 0;
    let err = load_bytes(bytes, "zero_channels.wav").unwrap_err();
    assert!(matches!(err, AudioError::MalformedHeader { .. }), "{err:?}");
    // Float WAV claiming 16 bits.
    let mut bytes = WavSpec::new(16_000, 1, Encoding::Float(32)).build(&[0.0; 8]);
    bytes[34] = 16;
    let err = load_bytes(bytes, "float16.wav").unwrap_err();
    assert!(matches!(err, AudioError::MalformedHeader { .. }), "{err:?}");
    // Sample rates no recording has (0, and 3 GHz: resampling would take forever).
    for rate in [0u32, 3_000_000_000] {
        let mut bytes = wav16(100);
        bytes[24..28].copy_from_slice(&rate.to_le_bytes());
        let err = load_bytes(bytes, "rate.wav").unwrap_err();
        assert!(
            matches!(err, AudioError::MalformedHeader { .. }),
            "{rate}: {err:?}"
        );
    }
    // WAVE_FORMAT_EXTENSIBLE with 40 channels but a 2-bit mask.
    let mut spec = WavSpec::new(16_000, 40, Encoding::Pcm(16));
    spec.extensible = true;
    let mut bytes = spec.build(&vec![0.0; 40 * 4]);
    bytes[40..44].copy_from_slice(&3u32.to_le_bytes());
    let err = load_bytes(bytes, "mask.wav").unwrap_err();
    assert!(matches!(err, AudioError::MalformedHeader { .. }), "{err:?}");
    assert!(err.to_string().contains("channel mask"), "{err}");
    // No fmt chunk: RIFF/WAVE directly followed by data.
    let mut bytes = b"RIFF\x14\0\0\0WAVEdata\x08\0\0\0".to_vec();
    bytes.extend_from_slice(&[0; 8]);
    let err = load_bytes(bytes, "nofmt.wav").unwrap_err();
    assert!(matches!(err, AudioError::MalformedHeader { .. }), "{err:?}");
}

#[test]
fn data_shorter_than_header() {
    let bytes = wav16(4_000);
    let err = load_bytes(bytes[..bytes.len() - 3_001].to_vec(), "cut.wav").unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::TruncatedData {
                expected_frames: 4_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("shorter than the header says"),
        "{err}"
    );
    // Also when the cut falls on a packet boundary (the reader sees a clean EOF).
    let mut spec = WavSpec::new(16_000, 1, Encoding::Pcm(16));
    spec.data_size_override = Some(2 * 100_000);
    let err = load_bytes(spec.build(&[0.1; 1_000]), "short.wav").unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::TruncatedData {
                expected_frames: 100_000,
                ..
            }
        ),
        "{err:?}"
    );
    // FLAC: STREAMINFO announces the frame count.
    let flac = std::fs::read(fixture("speech_44k1_stereo.flac").path()).unwrap();
    let err = load_bytes(flac[..flac.len() / 2].to_vec(), "half.flac").unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::TruncatedData { .. } | AudioError::Decoder { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn unsupported_codec() {
    // WAVE_FORMAT_ADPCM (2) is not among the enabled codecs.
    let mut bytes = wav16(100);
    bytes[20] = 0x02;
    let err = load_bytes(bytes, "adpcm.wav").unwrap_err();
    assert!(
        matches!(
            err,
            AudioError::UnsupportedCodec { .. } | AudioError::MalformedHeader { .. }
        ),
        "{err:?}"
    );
    // WAVE_FORMAT_MPEGLAYER3 (0x55) in a WAV.
    let mut bytes = wav16(100);
    bytes[20] = 0x55;
    let err = load_bytes(bytes, "mp3.wav").unwrap_err();
    assert!(
        matches!(err, AudioError::UnsupportedCodec { .. }),
        "{err:?}"
    );
    println!("{err}");
}

#[test]
fn zero_samples() {
    let err = load_bytes(wav16(0), "silence.wav").unwrap_err();
    assert!(matches!(err, AudioError::NoSamples { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("silence.wav: no audio samples"),
        "{err}"
    );
    // One frame at 48 kHz is a third of a sample at 16 kHz.
    let one = WavSpec::new(48_000, 1, Encoding::Pcm(16)).build(&[0.5]);
    assert!(matches!(
        load_bytes(one, "one.wav"),
        Err(AudioError::NoSamples { .. })
    ));
}

#[test]
fn non_finite_samples() {
    for (bad, encoding) in [
        (f64::NAN, Encoding::Float(32)),
        (f64::INFINITY, Encoding::Float(64)),
        (f64::NEG_INFINITY, Encoding::Float(32)),
        (1e300, Encoding::Float(64)), // finite in f64, infinite as f32
    ] {
        let mut x = vec![0.25; 3_000];
        x[2_345] = bad;
        let err = load_bytes(WavSpec::new(16_000, 1, encoding).build(&x), "nan.wav").unwrap_err();
        assert!(
            matches!(err, AudioError::NonFinite { frame: 2_345, .. }),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains("at frame 2345"), "{err}");
    }
}

#[test]
fn every_error_displays_path_first() {
    let errors = [
        load_bytes(Vec::new(), "a.wav").unwrap_err(),
        load_bytes(b"hello".to_vec(), "b.wav").unwrap_err(),
        load_bytes(wav16(10)[..30].to_vec(), "c.wav").unwrap_err(),
        load_bytes(wav16(0), "d.wav").unwrap_err(),
    ];
    for (err, name) in errors.iter().zip(["a.wav", "b.wav", "c.wav", "d.wav"]) {
        assert!(err.to_string().starts_with(&format!("{name}: ")), "{err}");
        assert_eq!(err.path(), std::path::Path::new(name));
    }
}

/// A FIFO with no writer is refused at once (it used to block `open` forever), both when
/// loaded and when probed, and named in the error.
#[cfg(unix)]
#[test]
fn a_fifo_is_refused_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("clip.wav");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send((load(&path).map(drop), probe(&path).map(drop)));
    });
    let (loaded, probed) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("loading a FIFO hung");
    for err in [loaded.unwrap_err(), probed.unwrap_err()] {
        assert!(
            matches!(err, AudioError::NotAFile { kind: "a FIFO", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("clip.wav"), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    // A link to a regular file is still read.
    let real = dir.path().join("real.wav");
    std::fs::write(&real, wav16(1600)).unwrap();
    let link = dir.path().join("link.wav");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(load(&link).unwrap().len(), 1600);
}
