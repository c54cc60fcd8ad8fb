//! Streaming decode: symphonia packets -> channel mean -> 16 kHz sink, with every failure
//! mapped to an [`AudioError`] that names the file.

use std::cell::RefCell;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use crate::error::{AudioError, Container};
use crate::poly::output_len;
use crate::resample::MonoTo16k;
use crate::wav;
use crate::{AudioInfo, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

/// Where the bytes come from.
pub(crate) enum Input {
    /// A file on disk, opened lazily.
    File(PathBuf),
    /// Bytes in memory, with the name to use in errors.
    Bytes(Vec<u8>, PathBuf),
}

impl Input {
    fn path(&self) -> &Path {
        match self {
            Input::File(path) | Input::Bytes(_, path) => path,
        }
    }
}

/// Run `f`, turning a panic into [`AudioError::Decoder`] for `path`: the last line of defence
/// against a bug in symphonia or rubato on hostile input. (The panic message still reaches
/// the process's panic hook, normally stderr.)
pub(crate) fn guard<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, AudioError>,
) -> Result<T, AudioError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            Err(AudioError::Decoder {
                path: path.to_path_buf(),
                detail: format!("decoder panicked: {message}"),
            })
        }
    }
}

/// An opened, probed file: the format reader, the audio track's facts, the container.
struct Opened {
    format: Box<dyn FormatReader>,
    container: Container,
    track_id: u32,
    sample_rate: u32,
    channels: Option<usize>,
    frames: Option<u64>,
    codec: String,
    bits_per_sample: Option<u32>,
}

fn io_err(path: &Path, source: std::io::Error) -> AudioError {
    AudioError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The opened bytes, before symphonia sees them.
enum Raw {
    File(std::fs::File),
    Bytes(Vec<u8>),
}

impl Raw {
    fn into_source(self, path: &Path) -> Result<Box<dyn MediaSource>, AudioError> {
        match self {
            Raw::File(mut file) => {
                file.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, e))?;
                Ok(Box::new(file))
            }
            Raw::Bytes(bytes) => Ok(Box::new(Cursor::new(bytes))),
        }
    }
}

/// Open the source, check it is non-empty and starts like a supported container.
fn open_source(input: Input) -> Result<(Box<dyn MediaSource>, Container, PathBuf), AudioError> {
    let (raw, container, path, _) = open_raw(input)?;
    Ok((raw.into_source(&path)?, container, path))
}

/// [`open_source`] without handing over to symphonia; also returns the first bytes read.
fn open_raw(input: Input) -> Result<(Raw, Container, PathBuf, Vec<u8>), AudioError> {
    match input {
        Input::File(path) => {
            let mut file = open_regular(&path)?;
            let mut head = vec![0u8; HEAD_LEN];
            let mut filled = 0;
            while filled < head.len() {
                match file.read(&mut head[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(&path, e)),
                }
            }
            head.truncate(filled);
            if filled == 0 {
                return Err(AudioError::Empty { path });
            }
            let container = check_container(&head, &path)?;
            wav_precheck(&head, container, &path)?;
            Ok((Raw::File(file), container, path, head))
        }
        Input::Bytes(bytes, path) => {
            if bytes.is_empty() {
                return Err(AudioError::Empty { path });
            }
            let container = check_container(&bytes[..bytes.len().min(12)], &path)?;
            wav_precheck(&bytes[..bytes.len().min(HEAD_LEN)], container, &path)?;
            Ok((Raw::Bytes(bytes), container, path, Vec::new()))
        }
    }
}

/// Opens `path` for reading and checks that it is a regular file (after following links). On
/// Unix the open is non-blocking, so a FIFO with no writer is refused instead of hanging; the
/// flag changes nothing for regular files.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File, AudioError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(|e| io_err(path, e))?;
    let kind = file.metadata().map_err(|e| io_err(path, e))?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(AudioError::NotAFile {
        path: path.to_path_buf(),
        kind: file_kind(&kind),
    })
}

/// Words for a file type that is not a regular file ("a FIFO", "a directory", ...), for errors
/// that refuse one.
pub fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
    }
    "not a regular file"
}

/// Bytes read ahead of symphonia to recognise the container and pre-check WAV headers.
const HEAD_LEN: usize = 4096;

/// Reject a `fmt ` chunk whose channels x bits overflow the 16-bit `block_align` (symphonia
/// 0.6.1 multiplies them in `u16`), and a WAVE_FORMAT_EXTENSIBLE `fmt ` chunk whose channel mask cannot describe its
/// channel count in the way symphonia-format-riff 0.6.1 (`fix_wave_channel_mask`) would
/// overflow on: more channels than mask bits by 31 or more, or too few mask bits with bit 31
/// set. Debug builds of symphonia panic there (caught by [`guard`], but a clear error is
/// better); release builds wrap and guess the layout. Only the chunks inside `head` are
/// checked: the `fmt ` chunk comes first in every writer we know.
fn wav_precheck(head: &[u8], container: Container, path: &Path) -> Result<(), AudioError> {
    if container != Container::Wav {
        return Ok(());
    }
    let u16_at = |i: usize| head.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |i: usize| {
        head.get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pos = 12;
    while let (Some(tag), Some(len)) = (head.get(pos..pos + 4), u32_at(pos + 4)) {
        let body = pos + 8;
        if tag == b"fmt " {
            let (Some(format_tag), Some(channels)) = (u16_at(body), u16_at(body + 2)) else {
                return Ok(());
            };
            // block_align (u16) = channels * bytes per sample: a header whose product does not
            // fit cannot be valid (and overflows symphonia's check in debug builds).
            if let Some(bits) = u16_at(body + 14) {
                let block = u32::from(channels) * u32::from(bits).div_ceil(8);
                if block > u32::from(u16::MAX) {
                    return Err(AudioError::MalformedHeader {
                        path: path.to_path_buf(),
                        container,
                        detail: format!(
                            "{channels} channels of {bits} bits do not fit a WAV frame \
                             (block_align is 16-bit)"
                        ),
                    });
                }
            }
            let Some(mask) = u32_at(body + 20) else {
                return Ok(());
            };
            if format_tag == 0xFFFE && len >= 40 {
                let missing = i64::from(channels) - i64::from(mask.count_ones());
                let shift = 32 - mask.leading_zeros();
                if missing > 0 && (missing >= 31 || shift >= 32) {
                    return Err(AudioError::MalformedHeader {
                        path: path.to_path_buf(),
                        container,
                        detail: format!(
                            "WAVE_FORMAT_EXTENSIBLE channel mask {mask:#010x} cannot describe \
                             {channels} channels"
                        ),
                    });
                }
            }
            return Ok(());
        }
        // Chunks are word-aligned: odd sizes carry a pad byte.
        pos = body
            .saturating_add(len as usize)
            .saturating_add(len as usize & 1);
    }
    Ok(())
}

fn check_container(head: &[u8], path: &Path) -> Result<Container, AudioError> {
    match Container::sniff(head) {
        // No container header fits in fewer than 12 bytes.
        container @ (Container::Wav | Container::Flac | Container::Ogg | Container::Mp3)
            if head.len() < 12 =>
        {
            Err(AudioError::TruncatedHeader {
                path: path.to_path_buf(),
                container,
                detail: format!("the whole file is {} bytes", head.len()),
            })
        }
        Container::Unknown => Err(AudioError::NotAudio {
            path: path.to_path_buf(),
            detail: format!(
                "the file starts with {}, not a RIFF/WAVE, fLaC, OggS, ID3 or MPEG frame \
                 signature",
                describe_head(head)
            ),
        }),
        container => Ok(container),
    }
}

/// The first bytes as printable text when they are, hex otherwise (`"<!DOCTYPE"` says more
/// than `3c 21 44 ...` when a download saved an HTML error page).
fn describe_head(head: &[u8]) -> String {
    let head = &head[..head.len().min(12)];
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes [{}]", hex.join(" "))
    }
}

/// Map an error from opening/probing the container.
fn header_error(err: SymError, container: Container, path: &Path) -> AudioError {
    let path = path.to_path_buf();
    match err {
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::TruncatedHeader {
                path,
                container,
                detail: "the file ends inside the header".into(),
            }
        }
        SymError::IoError(e) => AudioError::Io { path, source: e },
        SymError::Unsupported(msg) if msg.contains("probe") => AudioError::NotAudio {
            path,
            detail: format!("{container} signature found but no reader accepted it: {msg}"),
        },
        SymError::Unsupported(msg) if msg.contains("missing") || msg.contains("not wave") => {
            AudioError::MalformedHeader {
                path,
                container,
                detail: msg.to_string(),
            }
        }
        SymError::Unsupported(msg) => AudioError::UnsupportedCodec {
            path,
            codec: "unknown".into(),
            detail: msg.to_string(),
        },
        SymError::DecodeError(msg) | SymError::LimitError(msg) => AudioError::MalformedHeader {
            path,
            container,
            detail: msg.to_string(),
        },
        other => AudioError::MalformedHeader {
            path,
            container,
            detail: other.to_string(),
        },
    }
}

fn open(input: Input) -> Result<Opened, AudioError> {
    let (source, container, path) = open_source(input)?;
    open_from(source, container, path)
}

fn open_from(
    source: Box<dyn MediaSource>,
    container: Container,
    path: PathBuf,
) -> Result<Opened, AudioError> {
    let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| header_error(e, container, &path))?;

    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::NoSamples {
            path: path.clone(),
            detail: format!("the {container} file has no audio track"),
        })?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::UnsupportedCodec {
            path: path.clone(),
            codec: "unknown".into(),
            detail: "the track carries no audio codec parameters".into(),
        })?;
    let codec = codec_name(params.codec);
    let sample_rate = match params.sample_rate {
        Some(0) | None => {
            return Err(AudioError::MalformedHeader {
                path,
                container,
                detail: "sample rate is missing or zero".into(),
            })
        }
        Some(sr) if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sr) => {
            return Err(AudioError::MalformedHeader {
                path,
                container,
                detail: format!(
                    "sample rate {sr} Hz is outside the supported {MIN_SAMPLE_RATE} to \
                     {MAX_SAMPLE_RATE} Hz"
                ),
            })
        }
        Some(sr) => sr,
    };
    let channels = params.channels.as_ref().map(|c| c.count());
    if channels == Some(0) {
        return Err(AudioError::MalformedHeader {
            path,
            container,
            detail: "zero channels".into(),
        });
    }
    Ok(Opened {
        track_id: track.id,
        frames: track.num_frames,
        bits_per_sample: params.bits_per_sample,
        sample_rate,
        channels,
        codec,
        container,
        format,
    })
}

fn codec_name(id: symphonia::core::codecs::audio::AudioCodecId) -> String {
    symphonia::default::get_codecs()
        .get_audio_decoder(id)
        .map(|reg| reg.codec.info.short_name.to_string())
        .unwrap_or_else(|| id.to_string())
}

fn make_decoder(opened: &Opened, path: &Path) -> Result<Box<dyn AudioDecoder>, AudioError> {
    let params = opened
        .format
        .tracks()
        .iter()
        .find(|t| t.id == opened.track_id)
        .and_then(|t| t.codec_params.as_ref())
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::UnsupportedCodec {
            path: path.to_path_buf(),
            codec: opened.codec.clone(),
            detail: "the track carries no audio codec parameters".into(),
        })?;
    symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(msg) => AudioError::UnsupportedCodec {
                path: path.to_path_buf(),
                codec: opened.codec.clone(),
                detail: format!("{msg}; supported: PCM, IEEE float, FLAC, MP3, Vorbis"),
            },
            other => AudioError::MalformedHeader {
                path: path.to_path_buf(),
                container: opened.container,
                detail: format!("codec parameters rejected: {other}"),
            },
        })
}

/// Header facts, see [`crate::probe`].
pub(crate) fn probe(input: Input) -> Result<AudioInfo, AudioError> {
    let path = input.path().to_path_buf();
    guard(&path, move || {
        let opened = open(input)?;
        Ok(AudioInfo {
            container: opened.container,
            sample_rate: opened.sample_rate,
            channels: opened.channels.unwrap_or(0),
            frames: opened.frames,
            codec: opened.codec,
            bits_per_sample: opened.bits_per_sample,
        })
    })
}

/// Decode, downmix and resample, see [`crate::load`].
pub(crate) fn load(input: Input) -> Result<Vec<f32>, AudioError> {
    let path = input.path().to_path_buf();
    guard(&path, move || decode_to_16k(input))
}

fn decode_to_16k(input: Input) -> Result<Vec<f32>, AudioError> {
    let (mut raw, container, path, head) = open_raw(input)?;
    if container == Container::Wav {
        let fast = match &mut raw {
            Raw::File(file) => {
                let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
                wav::parse(&mut wav::HeadedFile {
                    file,
                    head: &head,
                    len,
                })
            }
            Raw::Bytes(bytes) => wav::parse(&mut bytes.as_slice()),
        };
        if let Some(fast) = fast {
            return decode_fast_wav(raw, fast, &path);
        }
    }
    decode_symphonia(raw, container, path)
}

/// The general path: symphonia packets -> channel mean -> 16 kHz sink.
fn decode_symphonia(raw: Raw, container: Container, path: PathBuf) -> Result<Vec<f32>, AudioError> {
    let mut opened = open_from(raw.into_source(&path)?, container, path.clone())?;
    let mut decoder = make_decoder(&opened, &path)?;
    let sample_rate = opened.sample_rate;
    let decoder_err = |detail: String| AudioError::Decoder {
        path: path.clone(),
        detail,
    };
    let mut sink = MonoTo16k::new(sample_rate, opened.frames).map_err(&decoder_err)?;

    // Reused per packet: the planes at the input rate (one packet's worth, never the clip)
    // and their channel mean.
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut decoded: u64 = 0;

    loop {
        let packet = match opened.format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(match opened.frames {
                    Some(expected) if expected > decoded => AudioError::TruncatedData {
                        path,
                        expected_frames: expected,
                        decoded_frames: decoded,
                    },
                    _ => decoder_err(format!(
                        "the file ends inside a packet after {decoded} frames; it is \
                         probably truncated"
                    )),
                });
            }
            Err(SymError::IoError(e)) => return Err(io_err(&path, e)),
            Err(SymError::ResetRequired) => {
                return Err(decoder_err(
                    "the stream changes its parameters mid-file (chained stream), which is \
                     not supported"
                        .into(),
                ))
            }
            Err(e) => return Err(decoder_err(format!("demuxing failed: {e}"))),
        };
        if packet.track_id != opened.track_id {
            continue;
        }
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            Err(SymError::Unsupported(msg)) => {
                return Err(AudioError::UnsupportedCodec {
                    path,
                    codec: opened.codec,
                    detail: msg.to_string(),
                })
            }
            Err(e) => {
                return Err(decoder_err(format!(
                    "corrupt packet after {decoded} frames: {e}"
                )))
            }
        };
        let frames = buffer.frames();
        if frames == 0 {
            continue;
        }
        let channels = buffer.num_planes();
        if channels == 0 {
            return Err(decoder_err(
                "decoder produced audio with zero channels".into(),
            ));
        }
        buffer.copy_to_vecs_planar::<f32>(&mut planes);
        downmix(&planes[..channels], frames, &mut mono);
        if let Some(i) = mono.iter().position(|v| !v.is_finite()) {
            return Err(AudioError::NonFinite {
                path,
                frame: decoded + i as u64,
                value: mono[i],
            });
        }
        sink.push(&mono).map_err(&decoder_err)?;
        decoded += frames as u64;
    }

    if let Some(expected) = opened.frames {
        if decoded < expected {
            return Err(AudioError::TruncatedData {
                path,
                expected_frames: expected,
                decoded_frames: decoded,
            });
        }
    }
    if decoded == 0 {
        return Err(AudioError::NoSamples {
            path,
            detail: "the stream holds 0 frames".into(),
        });
    }
    let out = sink.finish().map_err(&decoder_err)?;
    if out.is_empty() {
        return Err(AudioError::NoSamples {
            path,
            detail: format!(
                "{decoded} frames at {sample_rate} Hz round to {} samples at 16 kHz",
                output_len(decoded, sample_rate)
            ),
        });
    }
    Ok(out)
}

thread_local! {
    /// Byte block and mono block of the WAV fast path, reused clip after clip.
    static FAST_BUFFERS: RefCell<(Vec<u8>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Decode a WAV file [`wav::parse`] accepted: `data` in blocks of [`wav::BLOCK_BYTES`],
/// converted and averaged over channels in one loop, streamed into the resampler.
fn decode_fast_wav(raw: Raw, fast: wav::FastWav, path: &Path) -> Result<Vec<f32>, AudioError> {
    let sample_rate = fast.sample_rate;
    let decoder_err = |detail: String| AudioError::Decoder {
        path: path.to_path_buf(),
        detail,
    };
    let mut sink = MonoTo16k::new(sample_rate, Some(fast.frames)).map_err(decoder_err)?;
    let frame_bytes = fast.frame_bytes();
    let block = (wav::BLOCK_BYTES / frame_bytes).max(1) * frame_bytes;
    let (mut bytes, mut mono) = FAST_BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let mut decoded = 0u64;
    let mut step = |data: &[u8], decoded: &mut u64| -> Result<(), AudioError> {
        sink.push_with(
            &mut mono,
            |dst: &mut Vec<f32>| {
                let start = dst.len();
                wav::frames_to_mono(data, fast.encoding, fast.channels, dst);
                let new = &dst[start..];
                if fast.encoding.is_float() {
                    if let Some(i) = new.iter().position(|v| !v.is_finite()) {
                        return Err(AudioError::NonFinite {
                            path: path.to_path_buf(),
                            frame: *decoded + i as u64,
                            value: new[i],
                        });
                    }
                }
                *decoded += new.len() as u64;
                Ok(())
            },
            decoder_err,
        )
    };
    let total = fast.frames as usize * frame_bytes;
    let result = match raw {
        Raw::Bytes(all) => {
            let start = fast.data_start as usize;
            all[start..start + total]
                .chunks(block)
                .try_for_each(|data| step(data, &mut decoded))
        }
        Raw::File(mut file) => (|| {
            file.seek(SeekFrom::Start(fast.data_start))
                .map_err(|e| io_err(path, e))?;
            let mut left = total;
            bytes.resize(block.min(total), 0);
            while left > 0 {
                let n = block.min(left);
                if let Err(e) = file.read_exact(&mut bytes[..n]) {
                    return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        // The file shrank after we measured it.
                        AudioError::TruncatedData {
                            path: path.to_path_buf(),
                            expected_frames: fast.frames,
                            decoded_frames: decoded,
                        }
                    } else {
                        io_err(path, e)
                    });
                }
                step(&bytes[..n], &mut decoded)?;
                left -= n;
            }
            Ok(())
        })(),
    };
    FAST_BUFFERS.with(|b| *b.borrow_mut() = (bytes, mono));
    result?;
    let out = sink.finish().map_err(decoder_err)?;
    if out.is_empty() {
        return Err(AudioError::NoSamples {
            path: path.to_path_buf(),
            detail: format!(
                "{decoded} frames at {sample_rate} Hz round to {} samples at 16 kHz",
                output_len(decoded, sample_rate)
            ),
        });
    }
    Ok(out)
}

/// Mean of the channels, frame by frame, into `mono` (resized to `frames`). One channel is
/// copied unchanged (bit-exact); more are summed in channel order and divided by the count,
/// like `numpy.mean(axis=0)` for the channel counts that occur in practice.
fn downmix(planes: &[Vec<f32>], frames: usize, mono: &mut Vec<f32>) {
    mono.clear();
    match planes {
        [only] => mono.extend_from_slice(&only[..frames]),
        [left, right] => mono.extend(
            left[..frames]
                .iter()
                .zip(&right[..frames])
                .map(|(l, r)| (l + r) / 2.0),
        ),
        _ => {
            mono.extend_from_slice(&planes[0][..frames]);
            for plane in &planes[1..] {
                for (m, v) in mono.iter_mut().zip(&plane[..frames]) {
                    *m += v;
                }
            }
            let count = planes.len() as f32;
            for m in mono.iter_mut() {
                *m /= count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_is_the_channel_mean() {
        let mut mono = Vec::new();
        downmix(&[vec![1.0, 2.0, 3.0]], 2, &mut mono);
        assert_eq!(mono, [1.0, 2.0]);
        downmix(&[vec![1.0, -1.0], vec![0.0, 1.0]], 2, &mut mono);
        assert_eq!(mono, [0.5, 0.0]);
        downmix(&[vec![3.0], vec![0.0], vec![0.0]], 1, &mut mono);
        assert_eq!(mono, [1.0]);
    }

    /// A WAV file: `fmt ` body from the arguments, optional extra chunks, `data`.
    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, ext: bool, data: &[u8]) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&(if ext { 0xFFFE } else { tag }).to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        fmt.extend_from_slice(&block.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        if ext {
            fmt.extend_from_slice(&22u16.to_le_bytes());
            fmt.extend_from_slice(&bits.to_le_bytes());
            fmt.extend_from_slice(&((1u32 << channels) - 1).to_le_bytes());
            fmt.extend_from_slice(&[tag as u8, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0]);
            fmt.extend_from_slice(&[0x38, 0x9b, 0x71]);
        }
        let mut body = b"WAVE".to_vec();
        for (id, chunk) in [
            (b"fmt ", &fmt[..]),
            (b"LIST", &b"INFOISFT\x03\0\0\0ab\0\0"[..]),
            (b"junk", &b"odd"[..]),
            (b"data", data),
        ] {
            body.extend_from_slice(id);
            body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            body.extend_from_slice(chunk);
            if chunk.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend_from_slice(&body);
        file
    }

    /// The WAV fast path returns exactly what symphonia's path returns, for every encoding,
    /// channel count, plain and extensible headers, resampled or passed through; and it does
    /// take the files (so the comparison is not symphonia against itself).
    #[test]
    fn fast_wav_path_is_bit_identical_to_symphonia() {
        let mut state = 12_345u32;
        let data: Vec<u8> = (0..48_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let floats = |bits: u16| -> Vec<u8> {
            let n = data.len() / 4;
            (0..n)
                .flat_map(|i| {
                    let v = ((i * 7919) % 2001) as f64 / 1000.0 - 1.0;
                    if bits == 32 {
                        (v as f32).to_le_bytes().to_vec()
                    } else {
                        v.to_le_bytes().to_vec()
                    }
                })
                .collect()
        };
        let mut cases = 0;
        for (tag, bits) in [(1u16, 8u16), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)] {
            for channels in [1u16, 2, 3, 6] {
                for ext in [false, true] {
                    for rate in [16_000u32, 44_100, 48_000, 8_000, 44_101] {
                        let payload = if tag == 3 { floats(bits) } else { data.clone() };
                        let bytes = wav(tag, channels, rate, bits, ext, &payload);
                        let fast = wav::parse(&mut bytes.as_slice());
                        assert!(fast.is_some(), "{tag} {bits} {channels} {ext} {rate}");
                        let name = PathBuf::from("t.wav");
                        let a = decode_fast_wav(Raw::Bytes(bytes.clone()), fast.unwrap(), &name)
                            .unwrap();
                        let b = decode_symphonia(Raw::Bytes(bytes), Container::Wav, name).unwrap();
                        assert_eq!(a.len(), b.len());
                        assert!(
                            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "{tag} {bits} {channels} {ext} {rate}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 240);
    }

    /// Headers the fast path must leave to symphonia (which reports them as before).
    #[test]
    fn fast_wav_path_declines_unusual_or_broken_headers() {
        let good = wav(1, 2, 44_100, 16, false, &[0; 400]);
        assert!(wav::parse(&mut good.as_slice()).is_some());
        let declines = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = good.clone();
            edit(&mut bytes);
            wav::parse(&mut bytes.as_slice()).is_none()
        };
        assert!(declines(&|b| b.truncate(b.len() - 1))); // data cut short
        assert!(declines(&|b| b[34] = 12)); // 12-bit PCM
        assert!(declines(&|b| b[32] = 3)); // block_align disagrees
        assert!(declines(&|b| b[20] = 2)); // ADPCM
        assert!(declines(&|b| b[22] = 0)); // zero channels
        assert!(declines(
            &|b| b[24..28].copy_from_slice(&500u32.to_le_bytes())
        )); // rate
        assert!(declines(&|b| b[4..8].copy_from_slice(&40u32.to_le_bytes()))); // RIFF too short
        assert!(declines(&|b| b[16] = 20)); // fmt length 20
        assert!(declines(&|b| b[12..16].copy_from_slice(b"fmx "))); // no fmt before data
                                                                    // A LIST INFO sub-chunk longer than its list.
        assert!(declines(&|b| b[52] = 0x40));
    }

    #[test]
    fn describe_head_prefers_text() {
        assert_eq!(describe_head(b"<!DOCTYPE html>"), "\"<!DOCTYPE ht\"");
        assert_eq!(describe_head(&[0, 1, 0xff]), "bytes [00 01 ff]");
    }

    #[test]
    fn guard_turns_panics_into_decoder_errors() {
        let err = guard::<()>(Path::new("x.wav"), || panic!("boom")).unwrap_err();
        assert!(matches!(err, AudioError::Decoder { .. }));
        assert_eq!(
            err.to_string(),
            "x.wav: decoding failed (decoder panicked: boom)"
        );
    }
}
