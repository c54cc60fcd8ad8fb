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

/// The subset of transformers' `HubertConfig` / `Wav2Vec2Config` that inference needs. Field
/// names mirror `config.json`; every field has transformers' default, so old checkpoints that
/// lack a key (hubert-base-ls960 predates `feat_proj_layer_norm`) load as transformers loads them.
// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/configuration_hubert.py
#[derive(Debug, Clone, Deserialize)]
pub struct HubertConfig {
    /// `"hubert"` or `"wav2vec2"` (informational; both share this code path).
    #[serde(default = "default_model_type")]
    pub model_type: String,
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
    /// Normalisation of the conv feature encoder.
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
    /// Kernel size of the positional conv.
    #[serde(default = "d_128")]
    pub num_conv_pos_embeddings: usize,
    /// Groups of the positional conv.
    #[serde(default = "d_16")]
    pub num_conv_pos_embedding_groups: usize,
    /// Positional conv preceded by BatchNorm instead of weight norm (some newer checkpoints).
    #[serde(default)]
    pub conv_pos_batch_norm: bool,
    /// LayerNorm before the feature projection (transformers' default: true).
    #[serde(default = "default_true")]
    pub feat_proj_layer_norm: bool,
    /// Pre-LN transformer (true: large/xlarge) or post-LN (false: base).
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    /// Present in some fine-tuned checkpoints; attention adapters are not supported.
    #[serde(default)]
    pub adapter_attn_dim: Option<usize>,
}

fn default_model_type() -> String {
    "hubert".into()
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

impl Default for HubertConfig {
    /// The `facebook/hubert-base-ls960` architecture.
    fn default() -> Self {
        serde_json::from_str("{}").expect("an empty object always deserialises with defaults")
    }
}

impl HubertConfig {
    /// Reads and validates `config.json`; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config(msg) => Error::ConfigFile {
                path: path.to_path_buf(),
                msg,
            },
            other => other,
        })
    }

    /// Parses and validates a `config.json` string.
    pub fn from_json(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                Error::Config(e.into_inner().to_string())
            } else {
                Error::Config(format!("key `{path}`: {}", e.into_inner()))
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
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
        if self.adapter_attn_dim.is_some() {
            return Err(Error::Config(
                "adapter_attn_dim is set: attention adapters (MMS) are not supported".into(),
            ));
        }
        Activation::from_name(&self.hidden_act)?;
        Activation::from_name(&self.feat_extract_activation)?;
        Ok(())
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

/// The part of `preprocessor_config.json` (transformers' `Wav2Vec2FeatureExtractor`) that
/// changes the model's input. A missing file means transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct PreprocessorConfig {
    /// Per-clip zero-mean unit-variance normalisation: `(x - mean) / sqrt(var + 1e-7)`.
    #[serde(default = "default_true")]
    pub do_normalize: bool,
    /// The sampling rate the model expects.
    #[serde(default = "default_sr")]
    pub sampling_rate: u32,
}

fn default_sr() -> u32 {
    16_000
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            do_normalize: true,
            sampling_rate: 16_000,
        }
    }
}

impl PreprocessorConfig {
    /// Reads `preprocessor_config.json`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
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
