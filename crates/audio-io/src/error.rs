//! The one error type of this crate: every failure names the file and says what went wrong.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while turning a file into 16 kHz mono samples.
///
/// Every variant carries the `path` of the file (for [`load_bytes`](crate::load_bytes): the
/// `name` it was given) and a cause, so that `Display` reads like
/// `"data/x.wav: truncated WAV header (unexpected end of file)"` and a person can act on it
/// without a debugger. Match on the variant to tell the causes apart programmatically.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The file could not be opened or read (not found, permission denied, a directory, ...).
    #[error("{path}: cannot read file ({source})", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The path is not a regular file (a FIFO, a socket, a device, a directory): refused
    /// before anything is read, so a FIFO cannot make a run hang.
    #[error(
        "{path}: not a regular file (it is {kind}); only regular audio files are read",
        path = .path.display()
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead, e.g. `a FIFO`.
        kind: &'static str,
    },

    /// The file has zero bytes.
    #[error("{path}: empty file (0 bytes)", path = .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// The file ends inside its header, before any audio data starts.
    #[error("{path}: truncated {container} header ({detail})", path = .path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// The container recognised from the file's first bytes (`WAV`, `FLAC`, `OGG`, `MP3`).
        container: Container,
        /// What was missing.
        detail: String,
    },

    /// The header is present but inconsistent or invalid (a bad `fmt ` chunk, zero channels,
    /// an invalid FLAC STREAMINFO, ...).
    #[error("{path}: malformed {container} header ({detail})", path = .path.display())]
    MalformedHeader {
        /// The file.
        path: PathBuf,
        /// The container recognised from the file's first bytes.
        container: Container,
        /// What the demuxer objected to.
        detail: String,
    },

    /// The header announces more audio than the file holds: the file was cut short (an
    /// interrupted download or copy). The decoded prefix is *not* returned, because silently
    /// training on part of a clip is worse than a loud failure.
    #[error(
        "{path}: audio data shorter than the header says (header: {expected_frames} frames, \
         file holds {decoded_frames}); the file is probably truncated, re-download it",
        path = .path.display()
    )]
    TruncatedData {
        /// The file.
        path: PathBuf,
        /// Frames per channel announced by the header.
        expected_frames: u64,
        /// Frames per channel actually present.
        decoded_frames: u64,
    },

    /// No supported container was recognised: the bytes are not WAV, FLAC, MP3 or OGG.
    #[error(
        "{path}: not a supported audio file ({detail}); supported: WAV, FLAC, MP3, OGG Vorbis",
        path = .path.display()
    )]
    NotAudio {
        /// The file.
        path: PathBuf,
        /// Why the probe gave up.
        detail: String,
    },

    /// The container is fine but its codec (or a codec feature) is not supported, for example
    /// ADPCM in a WAV file or Opus in an OGG file.
    #[error("{path}: unsupported codec {codec} ({detail})", path = .path.display())]
    UnsupportedCodec {
        /// The file.
        path: PathBuf,
        /// The codec as the container names it (`"unknown"` when it does not).
        codec: String,
        /// What is unsupported.
        detail: String,
    },

    /// The file decodes to no samples at all (an empty `data` chunk, an OGG stream without
    /// audio packets, or a clip too short to yield one sample at 16 kHz).
    #[error("{path}: no audio samples ({detail})", path = .path.display())]
    NoSamples {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },

    /// A decoded sample is NaN or infinite (possible in float WAVs); such a value would poison
    /// every feature computed from the clip.
    #[error(
        "{path}: non-finite sample ({value}) at frame {frame} (at the file's own rate, after \
         the channel mean)",
        path = .path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Index of the first offending frame.
        frame: u64,
        /// The offending value (NaN, inf or -inf).
        value: f32,
    },

    /// The stream is corrupt past the header (a bad packet), or the decoder failed in an
    /// unexpected way. A panic inside symphonia or rubato is caught and reported here too, with
    /// `detail` starting with `"decoder panicked: "`.
    #[error("{path}: decoding failed ({detail})", path = .path.display())]
    Decoder {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
}

impl AudioError {
    /// The file this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            AudioError::Io { path, .. }
            | AudioError::NotAFile { path, .. }
            | AudioError::Empty { path }
            | AudioError::TruncatedHeader { path, .. }
            | AudioError::MalformedHeader { path, .. }
            | AudioError::TruncatedData { path, .. }
            | AudioError::NotAudio { path, .. }
            | AudioError::UnsupportedCodec { path, .. }
            | AudioError::NoSamples { path, .. }
            | AudioError::NonFinite { path, .. }
            | AudioError::Decoder { path, .. } => path,
        }
    }
}

/// The container format of a file, recognised from its first bytes (not its extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Container {
    /// RIFF/WAVE.
    Wav,
    /// Native FLAC (`fLaC`).
    Flac,
    /// OGG (`OggS`), normally carrying Vorbis.
    Ogg,
    /// MPEG audio, with or without an ID3v2 tag.
    Mp3,
    /// Not recognised from the first bytes.
    Unknown,
}

impl Container {
    /// Recognise the container from the first bytes of a file (12 are enough).
    pub fn sniff(head: &[u8]) -> Container {
        match head {
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => Container::Wav,
            [b'R', b'I', b'F', b'F', ..] if head.len() < 12 => Container::Wav,
            [b'f', b'L', b'a', b'C', ..] => Container::Flac,
            [b'O', b'g', b'g', b'S', ..] => Container::Ogg,
            [b'I', b'D', b'3', ..] => Container::Mp3,
            [0xFF, b, ..] if b & 0xE0 == 0xE0 => Container::Mp3,
            _ => Container::Unknown,
        }
    }
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Container::Wav => "WAV",
            Container::Flac => "FLAC",
            Container::Ogg => "OGG",
            Container::Mp3 => "MP3",
            Container::Unknown => "audio",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_cause() {
        let err = AudioError::TruncatedHeader {
            path: PathBuf::from("data/x.wav"),
            container: Container::Wav,
            detail: "unexpected end of file".into(),
        };
        assert_eq!(
            err.to_string(),
            "data/x.wav: truncated WAV header (unexpected end of file)"
        );
        assert_eq!(err.path(), std::path::Path::new("data/x.wav"));
    }

    #[test]
    fn sniff_recognises_magic_bytes() {
        assert_eq!(Container::sniff(b"RIFF\0\0\0\0WAVEfmt "), Container::Wav);
        assert_eq!(Container::sniff(b"RIF"), Container::Unknown);
        assert_eq!(Container::sniff(b"RIFF\0\0"), Container::Wav);
        assert_eq!(Container::sniff(b"fLaC\0\0\0\x22"), Container::Flac);
        assert_eq!(Container::sniff(b"OggS\0\x02"), Container::Ogg);
        assert_eq!(Container::sniff(b"ID3\x04"), Container::Mp3);
        assert_eq!(Container::sniff(&[0xFF, 0xFB, 0x90]), Container::Mp3);
        assert_eq!(Container::sniff(b"hello world!"), Container::Unknown);
        assert_eq!(Container::sniff(b""), Container::Unknown);
    }
}
