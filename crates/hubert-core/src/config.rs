//! Model and preprocessor configuration, read from a checkpoint's `config.json` and
//! `preprocessor_config.json` with transformers' defaults for missing keys.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// How the convolutional feature encoder normalises its outputs (`feat_extract_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatExtractNorm {
    /// GroupNorm (one group per channel) after the first conv layer only (hubert-base, wav2vec2-base).
    Group,
    /// LayerNorm over channels after every conv layer (hubert-large/xlarge, wav2vec2-large-lv60).
    Layer,
}

/// An activation function named the way transformers' `ACT2FN` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))` (`"gelu"`).
    Gelu,
    /// The tanh approximation of GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`).
    GeluTanh,
    /// `"relu"`.
    Relu,
    /// `"silu"` / `"swish"`.
    Silu,
}

impl Activation {
    /// Parses an `ACT2FN` key; unknown names are an error naming the key.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            "silu" | "swish" => Ok(Self::Silu),
            other => Err(Error::Config(format!(
                "unsupported activation {other:?} (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, silu, swish)"
            ))),
        }
    }
}

/// The model families this crate runs: each is one `model_type` of transformers, and each
/// checkpoint's key tree mirrors that family's modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum ModelFamily {
    /// `hubert`: HuBERT base/large/xlarge, DistilHuBERT (`HubertModel`).
    Hubert,
    /// `wav2vec2`: wav2vec 2.0 and XLS-R (`Wav2Vec2Model`).
    Wav2Vec2,
    /// `data2vec-audio`: data2vec audio (`Data2VecAudioModel`): LayerNorm after every conv
    /// layer, a stack of plain convs as the positional embedding.
    Data2VecAudio,
    /// `wavlm`: WavLM (`WavLMModel`): gated relative position bias in every attention layer.
    WavLm,
}

impl ModelFamily {
    /// Every family, in the order errors list them.
    pub const ALL: [ModelFamily; 4] = [
        Self::Hubert,
        Self::Wav2Vec2,
        Self::Data2VecAudio,
        Self::WavLm,
    ];

    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Hubert => "hubert",
            Self::Wav2Vec2 => "wav2vec2",
            Self::Data2VecAudio => "data2vec-audio",
            Self::WavLm => "wavlm",
        }
    }

    /// The family of a `model_type`, if supported.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == model_type)
    }

    /// The family of a transformers class name (`WavLMForCTC`, `HubertModel`, ...), if any.
    pub fn from_architecture(arch: &str) -> Option<Self> {
        [
            ("Hubert", Self::Hubert),
            ("Wav2Vec2", Self::Wav2Vec2),
            ("Data2VecAudio", Self::Data2VecAudio),
            ("WavLM", Self::WavLm),
        ]
        .into_iter()
        .find(|(prefix, _)| {
            arch.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("For") || rest == "Model")
        })
        .map(|(_, f)| f)
        // `Wav2Vec2ConformerModel`, `Wav2Vec2BertModel` are other architectures.
        .filter(|_| !arch.starts_with("Wav2Vec2Conformer") && !arch.starts_with("Wav2Vec2Bert"))
    }

    /// The prefix a task-head or pre-training checkpoint (`HubertForCTC`,
    /// `Wav2Vec2ForPreTraining`, ...) puts before the base model's keys.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::Hubert => "hubert.",
            Self::Wav2Vec2 => "wav2vec2.",
            Self::Data2VecAudio => "data2vec_audio.",
            Self::WavLm => "wavlm.",
        }
    }

    fn supported_list() -> String {
        Self::ALL.map(Self::model_type).join(", ")
    }
}

impl From<ModelFamily> for &'static str {
    fn from(f: ModelFamily) -> Self {
        f.model_type()
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_type())
    }
}

/// The subset of transformers' `HubertConfig`, `Wav2Vec2Config`, `Data2VecAudioConfig` and
/// `WavLMConfig` that inference needs. Field names mirror `config.json`; every field has the
/// family's transformers default, so old checkpoints that lack a key (hubert-base-ls960
/// predates `feat_proj_layer_norm`) load as transformers loads them. Keys that a family does not
/// have are fixed to what that family's modules do (wav2vec2's feature projection always has its
/// LayerNorm, data2vec-audio's conv layers are always layer-normed).
// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/configuration_hubert.py
#[derive(Debug, Clone, Deserialize)]
pub struct HubertConfig {
    /// `model_type` as written in `config.json` (`"hubert"`, `"wav2vec2"`, ...).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// The family `model_type` (or, without it, `architectures`) names.
    #[serde(skip, default = "default_family")]
    pub family: ModelFamily,
    /// The transformers classes the checkpoint was saved from (informational; `null` in
    /// configs saved from a bare config object).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub architectures: Vec<String>,
    /// Transformer width.
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    /// Number of transformer layers.
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    /// Feed-forward width.
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    /// Feed-forward activation (`ACT2FN` key).
    #[serde(default = "default_gelu")]
    pub hidden_act: String,
    /// LayerNorm epsilon of the transformer and feature projection.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Normalisation of the conv feature encoder (always `layer` for data2vec-audio).
    #[serde(default = "default_norm")]
    pub feat_extract_norm: FeatExtractNorm,
    /// Activation of the conv feature encoder and positional conv (`ACT2FN` key).
    #[serde(default = "default_gelu")]
    pub feat_extract_activation: String,
    /// Output channels of each conv layer.
    #[serde(default = "default_conv_dim")]
    pub conv_dim: Vec<usize>,
    /// Stride of each conv layer.
    #[serde(default = "default_conv_stride")]
    pub conv_stride: Vec<usize>,
    /// Kernel of each conv layer.
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: Vec<usize>,
    /// Whether the conv layers have biases.
    #[serde(default)]
    pub conv_bias: bool,
    /// Kernel size of the positional conv; for data2vec-audio, the number of stacked
    /// positional conv layers (default 5).
    #[serde(default = "d_128")]
    pub num_conv_pos_embeddings: usize,
    /// Groups of the positional conv(s).
    #[serde(default = "d_16")]
    pub num_conv_pos_embedding_groups: usize,
    /// data2vec-audio: kernel of each stacked positional conv layer.
    #[serde(default = "d_19")]
    pub conv_pos_kernel_size: usize,
    /// Positional conv preceded by BatchNorm instead of weight norm (some HuBERT checkpoints).
    #[serde(default)]
    pub conv_pos_batch_norm: bool,
    /// LayerNorm before the feature projection (HuBERT's default: true; always true for the
    /// other families).
    #[serde(default = "default_true")]
    pub feat_proj_layer_norm: bool,
    /// Pre-LN transformer (true: large/xlarge) or post-LN (false: base).
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    /// WavLM: number of relative position buckets.
    #[serde(default = "d_320")]
    pub num_buckets: usize,
    /// WavLM: the relative distance at which buckets stop growing.
    #[serde(default = "d_800")]
    pub max_bucket_distance: usize,
    /// Present in some fine-tuned checkpoints; attention adapters are not supported.
    #[serde(default)]
    pub adapter_attn_dim: Option<usize>,
    /// wav2vec2-style output adapter after the encoder (fine-tuned ASR checkpoints); not
    /// supported: it would change `last_hidden_state`.
    #[serde(default)]
    pub add_adapter: bool,
}

/// Upper bounds on config values, checked before anything is sized from them (a config is
/// input like any other file). Each is far above every published checkpoint (hubert-xlarge:
/// 48 layers of width 1280, 5120 feed-forward, 16 heads).
pub mod limits {
    /// Transformer layers.
    pub const MAX_LAYERS: usize = 512;
    /// Transformer width, feed-forward width and conv channels.
    pub const MAX_WIDTH: usize = 65_536;
    /// Attention heads.
    pub const MAX_HEADS: usize = 1_024;
    /// Conv layers of the feature encoder.
    pub const MAX_CONV_LAYERS: usize = 64;
    /// Kernel and stride of a conv layer, kernel of the positional conv.
    pub const MAX_KERNEL: usize = 4_096;
    /// data2vec-audio's stacked positional conv layers.
    pub const MAX_POS_CONV_LAYERS: usize = 64;
    /// WavLM's relative position buckets and their maximum distance.
    pub const MAX_BUCKETS: usize = 1 << 20;
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}
fn default_model_type() -> String {
    "hubert".into()
}
fn default_family() -> ModelFamily {
    ModelFamily::Hubert
}
fn d_19() -> usize {
    19
}
fn d_320() -> usize {
    320
}
fn d_800() -> usize {
    800
}
fn d_768() -> usize {
    768
}
fn d_12() -> usize {
    12
}
fn d_3072() -> usize {
    3072
}
fn d_128() -> usize {
    128
}
fn d_16() -> usize {
    16
}
fn default_gelu() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_norm() -> FeatExtractNorm {
    FeatExtractNorm::Group
}
fn default_conv_dim() -> Vec<usize> {
    vec![512; 7]
}
fn default_conv_stride() -> Vec<usize> {
    vec![5, 2, 2, 2, 2, 2, 2]
}
fn default_conv_kernel() -> Vec<usize> {
    vec![10, 3, 3, 3, 3, 2, 2]
}
fn default_true() -> bool {
    true
}

/// Reads `path` and parses it with `parse`, naming the file in the error of a bad value.
fn read_json_file<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    parse(&text).map_err(|e| match e {
        Error::Config(msg) => Error::ConfigFile {
            path: path.to_path_buf(),
            msg,
        },
        other => other,
    })
}

impl Default for HubertConfig {
    /// The `facebook/hubert-base-ls960` architecture.
    fn default() -> Self {
        Self::default_for(ModelFamily::Hubert)
    }
}

impl HubertConfig {
    /// Reads and validates `config.json`; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_json_file(path, Self::from_json)
    }

    /// Parses and validates a `config.json` string: the family from `model_type` (or, without
    /// it, `architectures`; neither means an old HuBERT config), then the family's defaults.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| Error::Config("config.json is not a JSON object".into()))?;
        let family = family_of(obj)?;
        apply_family_defaults(obj, family);
        let mut cfg: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                Error::Config(e.into_inner().to_string())
            } else {
                Error::Config(format!("key `{path}`: {}", e.into_inner()))
            }
        })?;
        cfg.family = family;
        cfg.model_type = family.model_type().into();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration of `family` with every key at its transformers default (for tests
    /// and documentation: `facebook/hubert-base-ls960`'s architecture for HuBERT).
    pub fn default_for(family: ModelFamily) -> Self {
        Self::from_json(&format!(r#"{{"model_type": "{}"}}"#, family.model_type()))
            .expect("the defaults of a supported family are valid")
    }

    /// Checks the invariants the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        self.validate_limits()?;
        let n = self.conv_dim.len();
        if n == 0 || self.conv_stride.len() != n || self.conv_kernel.len() != n {
            return Err(Error::Config(format!(
                "conv_dim, conv_stride and conv_kernel must be non-empty and of equal length (got {}, {}, {})",
                n,
                self.conv_stride.len(),
                self.conv_kernel.len()
            )));
        }
        if self.conv_stride.contains(&0) || self.conv_kernel.contains(&0) {
            return Err(Error::Config(
                "conv_stride and conv_kernel must be positive".into(),
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.num_conv_pos_embedding_groups == 0
            || !self
                .hidden_size
                .is_multiple_of(self.num_conv_pos_embedding_groups)
        {
            return Err(Error::Config(format!(
                "hidden_size {} is not divisible by num_conv_pos_embedding_groups {}",
                self.hidden_size, self.num_conv_pos_embedding_groups
            )));
        }
        if self.add_adapter {
            return Err(Error::Config(
                "add_adapter is true: the output adapter of fine-tuned checkpoints is not supported"
                    .into(),
            ));
        }
        if self.family == ModelFamily::WavLm {
            let max_exact = self.num_buckets / 4;
            if max_exact == 0 || self.max_bucket_distance <= max_exact {
                return Err(Error::Config(format!(
                    "num_buckets {} and max_bucket_distance {} give no log-spaced buckets \
                     (need num_buckets >= 4 and max_bucket_distance > num_buckets / 4)",
                    self.num_buckets, self.max_bucket_distance
                )));
            }
        }
        if self.adapter_attn_dim.is_some() {
            return Err(Error::Config(
                "adapter_attn_dim is set: attention adapters (MMS) are not supported".into(),
            ));
        }
        Activation::from_name(&self.hidden_act)?;
        Activation::from_name(&self.feat_extract_activation)?;
        Ok(())
    }

    /// Checks every size against [`limits`] (before anything is allocated from it).
    fn validate_limits(&self) -> Result<()> {
        use limits::*;
        let check = |key: &str, v: usize, min: usize, max: usize| -> Result<()> {
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::Config(format!(
                    "key `{key}`: {v} is out of range (expected {min}..={max})"
                )))
            }
        };
        check("num_hidden_layers", self.num_hidden_layers, 1, MAX_LAYERS)?;
        check("hidden_size", self.hidden_size, 1, MAX_WIDTH)?;
        check("intermediate_size", self.intermediate_size, 1, MAX_WIDTH)?;
        check(
            "num_attention_heads",
            self.num_attention_heads,
            1,
            MAX_HEADS,
        )?;
        check(
            "conv_dim (number of layers)",
            self.conv_dim.len(),
            1,
            MAX_CONV_LAYERS,
        )?;
        for &c in &self.conv_dim {
            check("conv_dim", c, 1, MAX_WIDTH)?;
        }
        for &k in &self.conv_kernel {
            check("conv_kernel", k, 1, MAX_KERNEL)?;
        }
        for &st in &self.conv_stride {
            check("conv_stride", st, 1, MAX_KERNEL)?;
        }
        check(
            "num_conv_pos_embedding_groups",
            self.num_conv_pos_embedding_groups,
            1,
            MAX_WIDTH,
        )?;
        if self.family == ModelFamily::Data2VecAudio {
            check(
                "num_conv_pos_embeddings",
                self.num_conv_pos_embeddings,
                1,
                MAX_POS_CONV_LAYERS,
            )?;
            check(
                "conv_pos_kernel_size",
                self.conv_pos_kernel_size,
                1,
                MAX_KERNEL,
            )?;
        } else {
            check(
                "num_conv_pos_embeddings",
                self.num_conv_pos_embeddings,
                1,
                MAX_KERNEL,
            )?;
        }
        if self.family == ModelFamily::WavLm {
            check("num_buckets", self.num_buckets, 1, MAX_BUCKETS)?;
            check(
                "max_bucket_distance",
                self.max_bucket_distance,
                1,
                MAX_BUCKETS,
            )?;
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::Config(format!(
                "key `layer_norm_eps`: {} is not a positive number",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }

    /// The kernel of each positional conv layer: `num_conv_pos_embeddings` (one conv), or for
    /// data2vec-audio `conv_pos_kernel_size` (a stack of `num_conv_pos_embeddings` convs).
    pub fn pos_conv_kernel(&self) -> usize {
        match self.family {
            ModelFamily::Data2VecAudio => self.conv_pos_kernel_size,
            _ => self.num_conv_pos_embeddings,
        }
    }

    /// Number of frames the conv feature encoder produces for `num_samples` input samples
    /// (0 when the clip is shorter than the receptive field).
    pub fn num_frames(&self, num_samples: usize) -> usize {
        let mut len = num_samples;
        for (&k, &s) in self.conv_kernel.iter().zip(&self.conv_stride) {
            if len < k {
                return 0;
            }
            len = (len - k) / s + 1;
        }
        len
    }

    /// The shortest input (in samples) that yields at least one frame: 400 for hubert-base.
    pub fn min_samples(&self) -> usize {
        let mut len = 1;
        for (&k, &s) in self.conv_kernel.iter().zip(&self.conv_stride).rev() {
            len = (len - 1) * s + k;
        }
        len
    }

    /// Number of hidden states returned by the encoder: `num_hidden_layers + 1`.
    pub fn num_hidden_states(&self) -> usize {
        self.num_hidden_layers + 1
    }
}

/// The family of a parsed `config.json`: `model_type` when present (any other type is an
/// error naming it), else the first recognised `architectures` entry, else HuBERT (configs
/// older than `model_type`).
fn family_of(obj: &serde_json::Map<String, serde_json::Value>) -> Result<ModelFamily> {
    let architectures: Vec<&str> = obj
        .get("architectures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    match obj.get("model_type") {
        Some(serde_json::Value::String(t)) => ModelFamily::from_model_type(t).ok_or_else(|| {
            let arch = match architectures.first() {
                Some(a) => format!(" ({a})"),
                None => String::new(),
            };
            Error::Config(format!(
                "model type `{t}`{arch} is not supported (supported model types: {})",
                ModelFamily::supported_list()
            ))
        }),
        Some(other) => Err(Error::Config(format!(
            "key `model_type`: expected a string, got {other}"
        ))),
        None => match architectures.first() {
            None => Ok(ModelFamily::Hubert),
            Some(arch) => ModelFamily::from_architecture(arch).ok_or_else(|| {
                Error::Config(format!(
                    "architecture `{arch}` is not supported (supported model types: {})",
                    ModelFamily::supported_list()
                ))
            }),
        },
    }
}

/// Fills in the keys a family's transformers config does not have, as its modules behave.
fn apply_family_defaults(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    family: ModelFamily,
) {
    use serde_json::Value;
    match family {
        ModelFamily::Hubert => {}
        ModelFamily::Wav2Vec2 | ModelFamily::WavLm => {
            obj.insert("feat_proj_layer_norm".into(), Value::Bool(true));
            obj.insert("conv_pos_batch_norm".into(), Value::Bool(false));
        }
        ModelFamily::Data2VecAudio => {
            obj.insert("feat_proj_layer_norm".into(), Value::Bool(true));
            obj.insert("conv_pos_batch_norm".into(), Value::Bool(false));
            obj.insert("feat_extract_norm".into(), Value::String("layer".into()));
            obj.insert("do_stable_layer_norm".into(), Value::Bool(false));
            obj.entry("num_conv_pos_embeddings")
                .or_insert(Value::from(5u64));
        }
    }
}

/// The part of `preprocessor_config.json` (transformers' `Wav2Vec2FeatureExtractor`) that
/// changes the model's input. A missing file means transformers' defaults. Every family ships
/// its own: `do_normalize` is `false` for wavlm-base / wavlm-base-plus and hubert-base, `true`
/// for wav2vec2-large-lv60 and the large HuBERT/WavLM checkpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct PreprocessorConfig {
    /// Per-clip zero-mean unit-variance normalisation: `(x - mean) / sqrt(var + 1e-7)`.
    #[serde(default = "default_true")]
    pub do_normalize: bool,
    /// The sampling rate the model expects (only 16000 is supported).
    #[serde(default = "default_sr")]
    pub sampling_rate: u32,
    /// Input channels (only 1, mono, is supported).
    #[serde(default = "default_feature_size")]
    pub feature_size: u32,
    /// Whether the extractor returns an attention mask for padded batches. Accepted either
    /// way: clips here are never padded (batches hold equal lengths), so the mask would be all
    /// ones.
    #[serde(default)]
    pub return_attention_mask: bool,
}

fn default_sr() -> u32 {
    16_000
}
fn default_feature_size() -> u32 {
    1
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            do_normalize: true,
            sampling_rate: 16_000,
            feature_size: 1,
            return_attention_mask: false,
        }
    }
}

impl PreprocessorConfig {
    /// Reads and checks `preprocessor_config.json`; errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Self> {
        read_json_file(path, Self::from_json)
    }

    /// Parses and checks a `preprocessor_config.json` string.
    pub fn from_json(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            Error::Config(format!("key `{path}`: {}", e.into_inner()))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses what the model cannot take: another sampling rate, more than one channel.
    pub fn validate(&self) -> Result<()> {
        if self.sampling_rate != 16_000 {
            return Err(Error::Config(format!(
                "sampling_rate {} is not supported: the models here take 16000 Hz audio",
                self.sampling_rate
            )));
        }
        if self.feature_size != 1 {
            return Err(Error::Config(format!(
                "feature_size {} is not supported: the models here take one channel of raw \
                 samples (feature_size 1)",
                self.feature_size
            )));
        }
        Ok(())
    }

    /// Applies the preprocessing to one clip in place: with `do_normalize`,
    /// `(x - mean) / sqrt(var + 1e-7)` with the population variance, accumulated in f64
    /// (transformers computes it in numpy on the float32 array; the difference is ~1e-7 relative).
    pub fn apply(&self, samples: &mut [f32]) {
        if !self.do_normalize || samples.is_empty() {
            return;
        }
        let n = samples.len() as f64;
        let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = samples
            .iter()
            .map(|&x| {
                let d = x as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / n;
        let inv_std = 1.0 / (var + 1e-7).sqrt();
        for x in samples.iter_mut() {
            *x = ((*x as f64 - mean) * inv_std) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_hubert_base() {
        let cfg = HubertConfig::default();
        assert_eq!(cfg.hidden_size, 768);
        assert_eq!(cfg.num_hidden_layers, 12);
        assert!(cfg.feat_proj_layer_norm);
        assert_eq!(cfg.feat_extract_norm, FeatExtractNorm::Group);
        assert_eq!(cfg.min_samples(), 400);
        assert_eq!(cfg.num_frames(16_000), 49);
        assert_eq!(cfg.num_frames(80_000), 249);
        assert_eq!(cfg.num_frames(399), 0);
        assert_eq!(cfg.num_frames(400), 1);
    }

    #[test]
    fn malformed_config_is_an_error_naming_the_problem() {
        let err = HubertConfig::from_json(r#"{"hidden_size": 100, "num_attention_heads": 12}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not divisible"), "{err}");
        let err = HubertConfig::from_json(r#"{"feat_extract_norm": "batch"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feat_extract_norm") || err.contains("unknown variant"),
            "{err}"
        );
        let err = HubertConfig::from_json(r#"{"conv_dim": [512, 512]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("equal length"), "{err}");
        let err = HubertConfig::from_json(r#"{"hidden_act": "mish"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mish"), "{err}");
        assert!(HubertConfig::from_json("{not json").is_err());
    }

    #[test]
    fn families_come_from_model_type_or_architectures() {
        for (json, family) in [
            (r#"{"model_type": "wav2vec2"}"#, ModelFamily::Wav2Vec2),
            (r#"{"model_type": "wavlm"}"#, ModelFamily::WavLm),
            (
                r#"{"model_type": "data2vec-audio"}"#,
                ModelFamily::Data2VecAudio,
            ),
            (r#"{"architectures": ["WavLMForCTC"]}"#, ModelFamily::WavLm),
            (r#"{"architectures": null}"#, ModelFamily::Hubert),
            ("{}", ModelFamily::Hubert),
        ] {
            assert_eq!(
                HubertConfig::from_json(json).unwrap().family,
                family,
                "{json}"
            );
        }
        let d2v = HubertConfig::default_for(ModelFamily::Data2VecAudio);
        assert_eq!(d2v.feat_extract_norm, FeatExtractNorm::Layer);
        assert_eq!(
            (d2v.num_conv_pos_embeddings, d2v.conv_pos_kernel_size),
            (5, 19)
        );
        assert_eq!(d2v.pos_conv_kernel(), 19);
        let wavlm = HubertConfig::default_for(ModelFamily::WavLm);
        assert_eq!((wavlm.num_buckets, wavlm.max_bucket_distance), (320, 800));
        // wav2vec2's feature projection always has its LayerNorm.
        let w2v =
            HubertConfig::from_json(r#"{"model_type": "wav2vec2", "feat_proj_layer_norm": false}"#)
                .unwrap();
        assert!(w2v.feat_proj_layer_norm);
        for (json, needle) in [
            (
                r#"{"model_type": "bert", "architectures": ["BertModel"]}"#,
                "model type `bert` (BertModel)",
            ),
            (
                r#"{"architectures": ["Wav2Vec2ConformerModel"]}"#,
                "Wav2Vec2ConformerModel",
            ),
            (r#"{"model_type": 3}"#, "model_type"),
            (
                r#"{"model_type": "wav2vec2", "add_adapter": true}"#,
                "add_adapter",
            ),
            (
                r#"{"model_type": "wavlm", "num_buckets": 2}"#,
                "num_buckets",
            ),
        ] {
            let err = HubertConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    /// Sizes are bounded before anything is allocated from them.
    #[test]
    fn absurd_sizes_are_refused() {
        for (json, key) in [
            (
                r#"{"num_hidden_layers": 1000000000000}"#,
                "num_hidden_layers",
            ),
            (
                r#"{"num_hidden_layers": 18446744073709551615}"#,
                "num_hidden_layers",
            ),
            (r#"{"num_hidden_layers": 0}"#, "num_hidden_layers"),
            (
                r#"{"hidden_size": 100000000, "num_attention_heads": 1}"#,
                "hidden_size",
            ),
            (r#"{"intermediate_size": 4294967296}"#, "intermediate_size"),
            (r#"{"num_attention_heads": 0}"#, "num_attention_heads"),
            (
                r#"{"conv_kernel": [10, 3, 3, 3, 3, 2, 99999999]}"#,
                "conv_kernel",
            ),
            (
                r#"{"conv_dim": [512, 512, 512, 512, 512, 512, 0]}"#,
                "conv_dim",
            ),
            (
                r#"{"num_conv_pos_embeddings": 1000000}"#,
                "num_conv_pos_embeddings",
            ),
            (
                r#"{"model_type": "data2vec-audio", "num_conv_pos_embeddings": 1000}"#,
                "num_conv_pos_embeddings",
            ),
            (
                r#"{"model_type": "wavlm", "num_buckets": 100000000000}"#,
                "num_buckets",
            ),
            (r#"{"layer_norm_eps": -1.0}"#, "layer_norm_eps"),
            (r#"{"num_hidden_layers": 1e12}"#, "num_hidden_layers"),
        ] {
            let err = HubertConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(key), "{json}: {err}");
        }
    }

    #[test]
    fn normalisation_is_zero_mean_unit_variance() {
        let mut x: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.01).sin() * 0.3 + 0.1)
            .collect();
        PreprocessorConfig::default().apply(&mut x);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(mean.abs() < 1e-6);
        assert!((var - 1.0).abs() < 1e-5);
    }
}
