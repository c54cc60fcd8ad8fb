//! The crate's error type: every variant names the file, tensor or key it is about.

use std::path::{Path, PathBuf};

/// Errors from configuration, weight loading, model resolution and the forward pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A configuration is malformed or unsupported.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A configuration file is malformed or unsupported.
    #[error("{path}: invalid model config: {msg}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A checkpoint file could not be parsed.
    #[error("{path}: cannot read checkpoint: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("{path}: missing tensor `{name}`{hint}")]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name, without any `hubert.`/`wav2vec2.` prefix.
        name: String,
        /// Extra context (e.g. which config key implies the tensor).
        hint: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("{path}: tensor `{name}` has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Tensors left in a checkpoint after loading that the architecture does not use.
    #[error(
        "{path}: tensors the model does not use: {names} (a checkpoint of another \
         architecture, or a config.json that does not match it)"
    )]
    UnusedTensors {
        /// The checkpoint file.
        path: PathBuf,
        /// The leftover names (the first few).
        names: String,
    },
    /// A model directory lacks a required file.
    #[error("{dir}: {msg}")]
    ModelDir {
        /// The directory.
        dir: PathBuf,
        /// What is missing.
        msg: String,
    },
    /// The Hugging Face hub (or its local cache) could not provide a file.
    #[error("hub model `{repo}`: {msg}")]
    Hub {
        /// The repository id (with `@revision` when one was asked for).
        repo: String,
        /// What went wrong.
        msg: String,
    },
    /// A device or dtype string could not be used.
    #[error("{0}")]
    Device(String),
    /// An input clip is shorter than the conv encoder's receptive field.
    #[error("input has {samples} samples; the model needs at least {min} (one frame)")]
    InputTooShort {
        /// Samples in the clip.
        samples: usize,
        /// The minimum.
        min: usize,
    },
    /// Clips in one batch have different lengths.
    #[error("clips in a batch must have equal length (got {0:?}); bucket clips by length")]
    RaggedBatch(Vec<usize>),
    /// An error from candle during the forward pass.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// [`Error::Io`] about `path`, for `map_err`.
    pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + Copy + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// [`Error::Checkpoint`] about `path` with the message given.
    pub(crate) fn checkpoint(path: &Path) -> impl Fn(String) -> Error + Copy + '_ {
        move |msg| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
