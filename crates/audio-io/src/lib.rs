//! Any audio file to 16 kHz mono `f32`, the input HuBERT expects.
//!
//! * **Decode** plain PCM / IEEE-float WAV with our own RIFF parser (the `data` chunk read in
//!   64 KiB blocks, converted and downmixed in one loop; bit-identical to symphonia), and
//!   everything else with [symphonia](https://docs.rs/symphonia): WAV (PCM u8/16/24/32-bit, IEEE
//!   float 32/64-bit, `WAVE_FORMAT_EXTENSIBLE`, extra chunks such as `LIST`, `fact`, `PEAK`
//!   before `data`, odd-sized chunks with their pad byte), FLAC, MP3 and OGG Vorbis. The
//!   container is recognised from the file's first bytes, not its extension.
//! * **Downmix** to the mean of the channels.
//! * **Resample** to 16 kHz with a hand-written polyphase Kaiser-windowed-sinc filter (AVX2 +
//!   FMA when the CPU has them; rubato's sinc resampler for odd rates whose ratio needs more
//!   than 2048 phases), anti-aliased, aligned to the sample and cut to exactly
//!   `round(n * 16000 / sr)` samples; 16 kHz input is passed through bit for bit. Parameters
//!   and measured quality: see the `poly` and `resample` module docs (in the source) and
//!   `docs/PERFORMANCE.md`.
//! * **Stream**: packets are decoded, downmixed and resampled one by one, so memory is the
//!   clip's 16 kHz output plus one packet, never all channels of the file at its own rate.
//! * **Fail loudly and clearly**: every failure is an [`AudioError`] naming the file and the
//!   cause (not found, empty, truncated header, data shorter than the header says, not audio,
//!   unsupported codec, no samples, NaN/inf samples, corrupt packets). No input bytes make
//!   this crate panic; as a last line of defence a panic inside symphonia or rubato is caught
//!   and returned as [`AudioError::Decoder`].
//! * **Parallel**: [`load_many_bounded`] decodes a file list on rayon's pool ahead of the
//!   consumer, yielding results in input order, with the look-ahead bounded both in clips and
//!   in 16 kHz samples ([`Lookahead`]; [`DEFAULT_LOOKAHEAD_SAMPLES`] = 32 Mi samples, 128 MiB
//!   of `f32`), so a list of hour-long files holds a bounded amount of decoded audio however
//!   many clips the bound allows; a single clip larger than the sample budget still decodes,
//!   alone. [`load_many`] bounds clips only.
//!
//! # Example
//!
//! ```no_run
//! use audio_io::{load, load_many_bounded, probe, Lookahead, TARGET_SAMPLE_RATE};
//!
//! # fn main() -> Result<(), audio_io::AudioError> {
//! let info = probe("data/ESC-50-master/audio/1-100032-A-0.wav")?;
//! println!("{} Hz, {} channel(s), codec {}", info.sample_rate, info.channels, info.codec);
//!
//! let samples: Vec<f32> = load("data/ESC-50-master/audio/1-100032-A-0.wav")?;
//! println!("{:.2} s at {TARGET_SAMPLE_RATE} Hz", samples.len() as f64 / 16_000.0);
//!
//! let paths = vec!["a.wav".into(), "b.flac".into(), "c.mp3".into()];
//! // At most 8 clips and 32 Mi samples (128 MiB of f32) decoded ahead of this loop.
//! for (index, result) in load_many_bounded(paths, Lookahead::with_default_samples(8)) {
//!     match result {
//!         Ok(clip) => println!("#{index}: {} samples", clip.len()),
//!         Err(err) => eprintln!("#{index}: {err}"), // e.g. "c.mp3: cannot read file (...)"
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod decode;
mod error;
mod parallel;
mod poly;
mod resample;
mod wav;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

pub use decode::file_kind;
pub use error::{AudioError, Container};
pub use parallel::{LoadMany, Lookahead, DEFAULT_LOOKAHEAD_SAMPLES};
pub use poly::output_len;

use decode::Input;

/// Resampler internals exposed for the parameter sweeps in `benches/decode_resample.rs`; not
/// part of the stable API.
#[doc(hidden)]
pub mod tuning {
    pub use crate::poly::{PolyFilter, PolyParams, PolyStream, MAX_PHASES, POLY};
    pub use crate::resample::{
        SincParams, TunedResampler, FALLBACK_OVERSAMPLING, F_CUTOFF, MAX_EXACT_PHASES, SINC_LEN,
        WINDOW,
    };
    pub use rubato::WindowFunction;
}

/// The sample rate of everything this crate returns, in Hz.
pub const TARGET_SAMPLE_RATE: u32 = 16_000;

/// Lowest accepted sample rate: below this a header is corrupt, not a recording.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest accepted sample rate (4 x 192 kHz); also bounds the resampler's alignment work.
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Header facts of an audio file, from [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// Container, recognised from the first bytes.
    pub container: Container,
    /// Sample rate of the stream, in Hz (never 0).
    pub sample_rate: u32,
    /// Channel count as the header declares it (0 when the header does not say, which
    /// symphonia allows for some MP3 streams until the first packet is decoded).
    pub channels: usize,
    /// Frames per channel, when the header says (WAV `data` size, FLAC STREAMINFO, the last
    /// OGG granule position, an MP3 Xing/Info header).
    pub frames: Option<u64>,
    /// Codec short name, as symphonia names it (`"pcm_s16le"`, `"flac"`, `"mp3"`,
    /// `"vorbis"`, ...).
    pub codec: String,
    /// Bits per decoded sample, when known (PCM and FLAC).
    pub bits_per_sample: Option<u32>,
}

impl AudioInfo {
    /// Duration in seconds, when the frame count is known.
    pub fn duration_seconds(&self) -> Option<f64> {
        self.frames
            .map(|frames| frames as f64 / f64::from(self.sample_rate))
    }

    /// Length of [`load`]'s output for this file, when the frame count is known:
    /// `round(frames * 16000 / sample_rate)`.
    pub fn output_len(&self) -> Option<u64> {
        self.frames
            .map(|frames| output_len(frames, self.sample_rate))
    }
}

/// Decode any supported file to 16 kHz mono `f32` in `[-1, 1]` (for integer PCM).
///
/// Channels are averaged; other rates are resampled with an anti-aliased sinc filter to
/// exactly `round(frames * 16000 / sample_rate)` samples; a 16 kHz mono file comes back bit
/// for bit as symphonia decodes it (for 16-bit PCM: `sample / 32768`, the same values as
/// `soundfile`/`librosa`).
///
/// # Errors
///
/// An [`AudioError`] naming `path` and the cause; see its variants. A file whose `data` is
/// shorter than its header says is an error ([`AudioError::TruncatedData`]), not a silently
/// shortened clip.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<f32>, AudioError> {
    decode::load(Input::File(path.as_ref().to_path_buf()))
}

/// [`load`] for bytes already in memory (tests, fuzzing, archives). `name` stands in for the
/// path in errors; its extension, if any, is used as a format hint only.
pub fn load_bytes(bytes: Vec<u8>, name: &str) -> Result<Vec<f32>, AudioError> {
    decode::load(Input::Bytes(bytes, PathBuf::from(name)))
}

/// Read the header facts of a file without decoding its audio.
///
/// # Errors
///
/// The same header errors as [`load`]: I/O, empty, not audio, truncated or malformed header.
pub fn probe(path: impl AsRef<Path>) -> Result<AudioInfo, AudioError> {
    decode::probe(Input::File(path.as_ref().to_path_buf()))
}

/// [`probe`] for bytes already in memory; `name` stands in for the path in errors.
pub fn probe_bytes(bytes: Vec<u8>, name: &str) -> Result<AudioInfo, AudioError> {
    decode::probe(Input::Bytes(bytes, PathBuf::from(name)))
}

/// Resample mono samples at `sample_rate` to 16 kHz, exactly as [`load`] does after decoding:
/// `round(len * 16000 / sample_rate)` samples, a bit-exact copy at 16 kHz.
pub fn resample_to_16k(samples: &[f32], sample_rate: NonZeroU32) -> Vec<f32> {
    resample::resample_mono(samples, sample_rate.get())
        .expect("rubato accepts every positive rate ratio and our buffer sizes")
}

/// Decode many files in parallel on rayon's global pool, at most `lookahead` clips ahead of
/// the consumer (0 is treated as 1), yielding `(index, result)` in input order.
///
/// The bound is in clips only ([`Lookahead::clips`]): with long files, `lookahead` of them
/// can hold a lot of memory; use [`load_many_bounded`] to bound the samples too.
///
/// Each file's error comes back in its own slot; one bad file does not stop the others. See
/// [`LoadMany`] for the memory bound and cancellation.
pub fn load_many(paths: Vec<PathBuf>, lookahead: usize) -> LoadMany {
    LoadMany::new(paths, Lookahead::clips(lookahead))
}

/// [`load_many`] with the look-ahead bounded in clips and in 16 kHz samples: at most
/// `lookahead.clips` files and `lookahead.samples` samples decoded or decoding ahead of the
/// consumer, except that one file is always allowed (a clip larger than the budget decodes
/// alone). See [`Lookahead`] for how a clip is weighed before and after it is decoded.
///
/// Each file's header is read once with [`probe`] on the calling thread just before its
/// decode starts (unless `lookahead.samples` is `u64::MAX`); a header that cannot be read
/// weighs the whole budget, and the file's real error comes back in its slot as usual.
pub fn load_many_bounded(paths: Vec<PathBuf>, lookahead: Lookahead) -> LoadMany {
    LoadMany::new(paths, lookahead)
}
