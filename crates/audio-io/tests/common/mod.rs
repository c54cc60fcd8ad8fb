//! Helpers shared by the integration tests: the fixture manifest and a WAV writer that can
//! produce every layout the tests need (including broken ones).

#![allow(dead_code)]

use std::path::PathBuf;

/// `crates/audio-io/tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One entry of `fixtures/manifest.json` (written by scripts/make_audio_fixtures.py).
#[derive(Debug, Clone)]
pub struct Fixture {
    pub file: String,
    pub sample_rate: u32,
    pub channels: usize,
    pub frames: u64,
    pub format: String,
    pub reference: String,
}

impl Fixture {
    pub fn path(&self) -> PathBuf {
        fixtures_dir().join(&self.file)
    }

    /// `librosa.load(path, sr=16000)` as stored by the script.
    pub fn librosa_16k(&self) -> Vec<f32> {
        let bytes = std::fs::read(fixtures_dir().join(&self.reference)).unwrap();
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

pub fn fixtures() -> Vec<Fixture> {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Fixture {
            file: e["file"].as_str().unwrap().to_string(),
            sample_rate: e["sample_rate"].as_u64().unwrap() as u32,
            channels: e["channels"].as_u64().unwrap() as usize,
            frames: e["frames"].as_u64().unwrap(),
            format: e["format"].as_str().unwrap().to_string(),
            reference: e["reference"].as_str().unwrap().to_string(),
        })
        .collect()
}

pub fn fixture(file: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.file == file)
        .unwrap_or_else(|| panic!("{file} not in manifest.json"))
}

/// Signal-to-noise ratio of `got` against `want` in dB, over their common length.
pub fn snr_db(want: &[f32], got: &[f32]) -> f64 {
    let n = want.len().min(got.len());
    let signal: f64 = want[..n].iter().map(|v| f64::from(*v).powi(2)).sum();
    let noise: f64 = want[..n]
        .iter()
        .zip(&got[..n])
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-300)).log10()
}

/// Sample encodings for [`WavSpec`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    /// Integer PCM with this many bits (8 is unsigned, as in WAV).
    Pcm(u16),
    /// IEEE float, 32 or 64 bits.
    Float(u16),
}

/// A WAV file described field by field, so tests can also write what no sane writer would.
#[derive(Debug, Clone)]
pub struct WavSpec {
    pub sample_rate: u32,
    pub channels: u16,
    pub encoding: Encoding,
    /// WAVE_FORMAT_EXTENSIBLE instead of the plain tag.
    pub extensible: bool,
    /// Chunks written between `fmt ` and `data`: (tag, body). Odd bodies get their pad byte.
    pub extra_chunks: Vec<([u8; 4], Vec<u8>)>,
    /// Override of the `data` chunk's size field (for truncated files).
    pub data_size_override: Option<u32>,
}

impl WavSpec {
    pub fn new(sample_rate: u32, channels: u16, encoding: Encoding) -> WavSpec {
        WavSpec {
            sample_rate,
            channels,
            encoding,
            extensible: false,
            extra_chunks: Vec::new(),
            data_size_override: None,
        }
    }

    fn bits(&self) -> u16 {
        match self.encoding {
            Encoding::Pcm(b) | Encoding::Float(b) => b,
        }
    }

    /// Encode interleaved samples in [-1, 1] (f64, so 64-bit float keeps its precision).
    pub fn encode_samples(&self, interleaved: &[f64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &v in interleaved {
            match self.encoding {
                Encoding::Pcm(8) => {
                    out.push(((v * 128.0).round().clamp(-128.0, 127.0) + 128.0) as u8)
                }
                Encoding::Pcm(16) => out.extend_from_slice(
                    &((v * 32768.0).round().clamp(-32768.0, 32767.0) as i16).to_le_bytes(),
                ),
                Encoding::Pcm(24) => {
                    let s = (v * 8_388_608.0).round().clamp(-8_388_608.0, 8_388_607.0) as i32;
                    out.extend_from_slice(&s.to_le_bytes()[..3]);
                }
                Encoding::Pcm(32) => out.extend_from_slice(
                    &((v * 2_147_483_648.0)
                        .round()
                        .clamp(-2_147_483_648.0, 2_147_483_647.0) as i32)
                        .to_le_bytes(),
                ),
                Encoding::Float(32) => out.extend_from_slice(&(v as f32).to_le_bytes()),
                Encoding::Float(64) => out.extend_from_slice(&v.to_le_bytes()),
                other => panic!("unsupported test encoding {other:?}"),
            }
        }
        out
    }

    /// The complete file for interleaved samples.
    pub fn build(&self, interleaved: &[f64]) -> Vec<u8> {
        self.build_raw(&self.encode_samples(interleaved))
    }

    /// The complete file around already-encoded sample bytes.
    pub fn build_raw(&self, data: &[u8]) -> Vec<u8> {
        let bits = self.bits();
        let block_align = self.channels * bits / 8;
        let tag: u16 = match self.encoding {
            Encoding::Pcm(_) => 1,
            Encoding::Float(_) => 3,
        };
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&(if self.extensible { 0xFFFE } else { tag }).to_le_bytes());
        fmt.extend_from_slice(&self.channels.to_le_bytes());
        fmt.extend_from_slice(&self.sample_rate.to_le_bytes());
        fmt.extend_from_slice(&(self.sample_rate * u32::from(block_align)).to_le_bytes());
        fmt.extend_from_slice(&block_align.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        if self.extensible {
            fmt.extend_from_slice(&22u16.to_le_bytes());
            fmt.extend_from_slice(&bits.to_le_bytes()); // valid bits
            let mask: u32 = (1u32 << self.channels.min(18)) - 1;
            fmt.extend_from_slice(&mask.to_le_bytes());
            // KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT: {0000000X-0000-0010-8000-00aa00389b71}
            fmt.extend_from_slice(&u32::from(tag).to_le_bytes());
            fmt.extend_from_slice(&[
                0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
            ]);
        } else if tag == 3 {
            fmt.extend_from_slice(&0u16.to_le_bytes()); // cbSize
        }
        let mut body = Vec::new();
        body.extend_from_slice(b"WAVE");
        push_chunk(&mut body, *b"fmt ", &fmt, None);
        for (tag, chunk) in &self.extra_chunks {
            push_chunk(&mut body, *tag, chunk, None);
        }
        push_chunk(&mut body, *b"data", data, self.data_size_override);
        let mut file = Vec::new();
        file.extend_from_slice(b"RIFF");
        let riff_len = match self.data_size_override {
            // A truncated file keeps the RIFF size of the complete one.
            Some(size) => body.len() as u32 - data.len() as u32 + size,
            None => body.len() as u32,
        };
        file.extend_from_slice(&riff_len.to_le_bytes());
        file.extend_from_slice(&body);
        file
    }
}

fn push_chunk(out: &mut Vec<u8>, tag: [u8; 4], body: &[u8], size_override: Option<u32>) {
    out.extend_from_slice(&tag);
    out.extend_from_slice(&size_override.unwrap_or(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    if body.len() % 2 == 1 {
        out.push(0);
    }
}

/// `n` frames of a sine at `freq` Hz with amplitude `amp`, channel `c` phase-shifted by `c`
/// radians, interleaved.
pub fn sine_interleaved(freq: f64, sr: u32, n: usize, channels: usize, amp: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * channels);
    for i in 0..n {
        for c in 0..channels {
            let t = i as f64 / f64::from(sr);
            out.push(amp * (2.0 * std::f64::consts::PI * freq * t + c as f64).sin());
        }
    }
    out
}
