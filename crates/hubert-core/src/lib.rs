//! HuBERT and its family (wav2vec 2.0 / XLS-R, data2vec-audio, WavLM, DistilHuBERT) in
//! pure-Rust [candle] and our own CPU kernels, equal to transformers' `HubertModel`,
//! `Wav2Vec2Model`, `Data2VecAudioModel` and `WavLMModel`.
//!
//! The crate loads a checkpoint laid out like its family's models on the Hugging Face hub (a
//! local directory or a hub id; base model, pre-training or fine-tuned task-head layout), runs
//! the conv feature encoder and the transformer over a batch of equal-length 16 kHz clips, and
//! returns every hidden state or their mean over frames. `config.json`'s `model_type` picks the
//! family ([`ModelFamily`]); any other model type is refused, naming it. Every hidden state
//! matches transformers 5.x in fp32 to about 1e-5 (the parity tests, whose fixtures
//! `scripts/make_fixtures.py` generates with transformers for a tiny model of each family).
//!
//! Full size, on random weights (`python3 scripts/make_fixtures.py --skip-tiny --full-size DIR
//! --arch wavlm-base-plus|wav2vec2-base|hubert-base`, then `HUBERT_FULL_SIZE_DIR=$PWD/DIR cargo
//! test -p hubert-core --test parity full_size -- --nocapture`), measured against transformers
//! 5.24 over every hidden state of a 1 s and a 5 s clip, fp32 on the AVX-512 path: wavlm-base-plus
//! worst max abs 2.8e-5, worst relative L2 2.0e-6; wav2vec2-base 2.3e-5 and 1.9e-6 (the test
//! requires 1e-3 and 2e-5). bf16 (AVX512_BF16 products): last hidden state within 4.3e-3
//! (WavLM) and 4.9e-3 (wav2vec2) relative L2 of fp32.
//!
//! ```no_run
//! use hubert_core::{Hubert, LayerSelection};
//! use candle_core::{DType, Device};
//!
//! # fn main() -> hubert_core::Result<()> {
//! let hubert = Hubert::load("models/hubert-base", &Device::Cpu, DType::F32)?;
//! let clip = vec![0.0f32; 16_000]; // one second of 16 kHz mono audio
//! let pooled = hubert.embed(&[clip.as_slice()], &LayerSelection::All)?; // [1, 13, 768]
//! assert_eq!(pooled.dims(), &[1, 13, 768]);
//! # Ok(())
//! # }
//! ```
//!
//! Both `feat_extract_norm` variants (`"group"`: base; `"layer"`: large/xlarge, data2vec-audio)
//! and both transformer layouts (post-LN, and pre-LN with `do_stable_layer_norm`) share one code
//! path; the family differences live in their own modules (data2vec-audio's positional conv
//! stack, WavLM's gated relative position bias).
//! Exactness is per clip: clips in a batch must have equal length (bucket them), so no padding
//! ever enters a group-normalised conv.
//!
//! [candle]: https://github.com/huggingface/candle

mod bucket;
mod config;
pub mod cpu;
pub mod embed;
mod error;
mod model;
pub mod params;
pub mod pickle;
mod source;
mod weights;

pub use bucket::{Batch, LengthBuckets};
pub use candle_core::{DType, Device, Tensor};
pub use config::{
    limits, Activation, FeatExtractNorm, HubertConfig, ModelFamily, PreprocessorConfig,
};
pub use cpu::gemm;
pub use embed::{EmbedOptions, Embedder, Embedding};
pub use error::{Error, Result};
pub use model::{HiddenStates, HubertModel, LayerOutputs, LayerSelection, Outputs};
#[cfg(feature = "cli")]
pub use params::{parse_count, ModelArgs};
pub use params::{DeviceSpec, Precision, StoredLayer};
pub use source::{ModelFiles, WEIGHT_FILES};
pub use weights::Weights;

/// Parses a device string (`cpu`, `cuda`, `cuda:N`) and opens the device; see [`DeviceSpec`].
pub fn parse_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.open()
}

/// Keeps freed memory in the process for reuse instead of returning it to the kernel (glibc).
///
/// A forward pass allocates and frees activations of tens of megabytes per op; with glibc's
/// defaults every such allocation is a fresh `mmap`, and the kernel zeroes each page on first
/// touch (about 10% of a hubert-base forward pass in a profile). Raising the mmap and trim
/// thresholds makes the allocator reuse that memory: measured 8.3 -> 9.7 audio-s/s on a 5 s
/// clip (2 threads). Peak RSS is unchanged (the same peak, now kept). Binaries call this once at
/// start; it is a no-op on other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        // One arena: the forward passes run on whichever pool thread picks them up, and with
        // an arena per thread each would keep its own copy of the largest buffers (peak RSS of
        // the extract bench 619-714 MiB from run to run with per-thread arenas).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Parses a model dtype (`f32`, `f16`, `bf16` and their aliases); see [`Precision`].
pub fn parse_dtype(spec: &str) -> Result<DType> {
    Ok(spec.parse::<Precision>()?.dtype())
}

/// A checkpoint's files and configuration, read once: what checking parameters against the
/// model (layer indices, widths) and then loading it need.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Where the files are.
    pub files: ModelFiles,
    /// `config.json`.
    pub config: HubertConfig,
    /// `preprocessor_config.json` (transformers' defaults when absent).
    pub preprocessor: PreprocessorConfig,
}

impl ModelSource {
    /// Resolves a local directory or a hub id (`owner/name[@revision]`) and reads its
    /// configuration files.
    pub fn resolve(spec: &str) -> Result<Self> {
        Self::from_files(ModelFiles::resolve(spec)?)
    }

    /// Reads the configuration files of resolved files.
    pub fn from_files(files: ModelFiles) -> Result<Self> {
        let config = HubertConfig::from_file(&files.config)?;
        let preprocessor = match &files.preprocessor {
            Some(p) => PreprocessorConfig::from_file(p)?,
            None => PreprocessorConfig::default(),
        };
        Ok(Self {
            files,
            config,
            preprocessor,
        })
    }

    /// Loads the weights onto `device` in `precision`.
    pub fn load(self, device: DeviceSpec, precision: Precision) -> Result<Hubert> {
        Hubert::from_source(self, &device.open()?, precision.dtype())
    }
}

/// A summary of a loaded model ([`Hubert::info`]): what `hubert info` prints and what
/// results record next to the features.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// The hub id or local directory the model was loaded from.
    pub model: String,
    /// The hub commit, when loaded from the hub cache.
    pub revision: Option<String>,
    /// The model family (`hubert`, `wav2vec2`, `data2vec-audio`, `wavlm`).
    pub family: ModelFamily,
    /// `architectures` of `config.json`.
    pub architectures: Vec<String>,
    /// Transformer layers (the model has one more hidden state).
    pub num_hidden_layers: usize,
    /// Transformer width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Pre-LN (true) or post-LN transformer.
    pub do_stable_layer_norm: bool,
    /// `group` or `layer` normalisation in the conv feature encoder.
    pub feat_extract_norm: &'static str,
    /// Channels of each conv layer.
    pub conv_dim: Vec<usize>,
    /// Kernel of each conv layer.
    pub conv_kernel: Vec<usize>,
    /// Stride of each conv layer.
    pub conv_stride: Vec<usize>,
    /// Positional conv layers (1, or data2vec-audio's stack).
    pub num_conv_pos_layers: usize,
    /// Kernel of each positional conv layer.
    pub conv_pos_kernel: usize,
    /// Groups of the positional conv(s).
    pub num_conv_pos_embedding_groups: usize,
    /// WavLM: `(num_buckets, max_bucket_distance)`.
    pub relative_position_buckets: Option<(usize, usize)>,
    /// Parameters of the base model (see [`Hubert::num_parameters`]).
    pub num_parameters: usize,
    /// Per-clip input normalisation from `preprocessor_config.json`.
    pub do_normalize: bool,
    /// Frames per second of hidden states (50 for every published checkpoint).
    pub frame_rate_hz: f64,
    /// The shortest input that yields one frame.
    pub min_samples: usize,
}

/// A loaded model with its preprocessing and provenance: the usual entry point.
#[derive(Debug)]
pub struct Hubert {
    /// The network.
    pub model: HubertModel,
    /// Input preprocessing from `preprocessor_config.json` (defaults when absent).
    pub preprocessor: PreprocessorConfig,
    /// Where the files came from.
    pub files: ModelFiles,
    num_parameters: usize,
}

impl Hubert {
    /// Loads a model from a local directory or a hub id (`owner/name[@revision]`).
    pub fn load(spec: &str, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_files(ModelFiles::resolve(spec)?, device, dtype)
    }

    /// Loads a model from resolved files.
    pub fn from_files(files: ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_source(ModelSource::from_files(files)?, device, dtype)
    }

    /// Loads a model whose configuration is already read.
    pub fn from_source(source: ModelSource, device: &Device, dtype: DType) -> Result<Self> {
        let ModelSource {
            files,
            config,
            preprocessor,
        } = source;
        let weights =
            Weights::from_file(&files.weights, device, model::tensor_dtype(device, dtype))?;
        let model = HubertModel::from_weights(config, weights, device, dtype)?;
        let num_parameters = model.num_parameters();
        Ok(Self {
            model,
            preprocessor,
            files,
            num_parameters,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HubertConfig {
        self.model.config()
    }

    /// Number of parameters of the base model (weight norm folded into one tensor; heads and
    /// training-only tensors not counted).
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// What the model is: family, sizes, parameter count and where it came from (what
    /// `hubert info` prints).
    pub fn info(&self) -> ModelInfo {
        let cfg = self.config();
        ModelInfo {
            model: self.files.id.clone(),
            revision: self.files.revision.clone(),
            family: cfg.family,
            architectures: cfg.architectures.clone(),
            num_hidden_layers: cfg.num_hidden_layers,
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            num_attention_heads: cfg.num_attention_heads,
            do_stable_layer_norm: cfg.do_stable_layer_norm,
            feat_extract_norm: match cfg.feat_extract_norm {
                FeatExtractNorm::Group => "group",
                FeatExtractNorm::Layer => "layer",
            },
            conv_dim: cfg.conv_dim.clone(),
            conv_kernel: cfg.conv_kernel.clone(),
            conv_stride: cfg.conv_stride.clone(),
            num_conv_pos_layers: match cfg.family {
                ModelFamily::Data2VecAudio => cfg.num_conv_pos_embeddings,
                _ => 1,
            },
            conv_pos_kernel: cfg.pos_conv_kernel(),
            num_conv_pos_embedding_groups: cfg.num_conv_pos_embedding_groups,
            relative_position_buckets: (cfg.family == ModelFamily::WavLm)
                .then_some((cfg.num_buckets, cfg.max_bucket_distance)),
            num_parameters: self.num_parameters,
            do_normalize: self.preprocessor.do_normalize,
            frame_rate_hz: 16_000.0 / cfg.conv_stride.iter().product::<usize>() as f64,
            min_samples: cfg.min_samples(),
        }
    }

    /// Preprocesses equal-length clips (per-clip normalisation when `do_normalize`) into the
    /// model's `[B, samples]` input on the model's device.
    pub fn input_values(&self, clips: &[&[f32]]) -> Result<Tensor> {
        let len = clips.first().map_or(0, |c| c.len());
        if clips.iter().any(|c| c.len() != len) {
            return Err(Error::RaggedBatch(clips.iter().map(|c| c.len()).collect()));
        }
        let mut flat = Vec::with_capacity(clips.len() * len);
        for clip in clips {
            let start = flat.len();
            flat.extend_from_slice(clip);
            self.preprocessor.apply(&mut flat[start..]);
        }
        Ok(Tensor::from_vec(
            flat,
            (clips.len(), len),
            self.model.device(),
        )?)
    }

    /// Mean-pooled hidden states `[B, L, D]` (f32) of equal-length raw 16 kHz clips.
    pub fn embed(&self, clips: &[&[f32]], layers: &LayerSelection) -> Result<Tensor> {
        self.model
            .forward_pooled(&self.input_values(clips)?, layers)
    }

    /// Every hidden state of equal-length raw 16 kHz clips.
    pub fn hidden_states(&self, clips: &[&[f32]]) -> Result<HiddenStates> {
        self.model.forward(&self.input_values(clips)?)
    }
}
