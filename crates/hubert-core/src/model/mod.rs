//! The model, module for module as transformers' `HubertModel`, `Wav2Vec2Model`,
//! `Data2VecAudioModel` and `WavLMModel`: one Rust module per part of the checkpoint's key tree
//! (`feature_extractor` + `feature_projection`, `encoder.pos_conv_embed`, `encoder.layers.{i}`),
//! the wav2vec2-style encoder shared, and each family's difference in its own module.
//!
//! Every struct mirrors one upstream module and is loaded from the checkpoint keys under that
//! module's name, so a missing key points at the code that wanted it. Forward passes are pure
//! (`&self`) and run in inference mode (no dropout, no SpecAugment masking).

mod attention;
mod encoder;
mod feature_encoder;
mod positional;
#[cfg(test)]
mod tiling_tests;
mod wavlm;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear};

use self::encoder::Encoder;
use self::feature_encoder::{FeatureEncoder, FeatureProjection};
use crate::config::{Activation, HubertConfig};
use crate::cpu::{self, gemm::Kernel};
use crate::weights::Weights;
use crate::{Error, Result};

impl Activation {
    /// Applies the activation (exact GELU through the CPU backend's vectorised kernel on f32
    /// CPU tensors, candle's ops elsewhere).
    pub fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Gelu if xs.device().is_cpu() && xs.dtype() == DType::F32 => {
                xs.contiguous()?.apply_op1_no_bwd(&cpu::GeluErf)
            }
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::Relu => xs.relu(),
            Self::Silu => xs.silu(),
        }
    }
}

/// Loads `nn.LayerNorm(size, eps)` from `{prefix}.weight` / `{prefix}.bias`.
pub(crate) fn layer_norm(w: &Weights, prefix: &str, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        w.get(&format!("{prefix}.weight"), &[size])?,
        w.get(&format!("{prefix}.bias"), &[size])?,
        eps,
    ))
}

/// Loads `nn.Linear(in_dim, out_dim)` (with bias) from `{prefix}.weight` / `{prefix}.bias`.
pub(crate) fn linear(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(Linear::new(
        w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
        Some(w.get(&format!("{prefix}.bias"), &[out_dim])?),
    ))
}

/// LayerNorm over the channel axis of a `[B, C, T]` tensor.
pub(crate) fn layer_norm_channels(norm: &LayerNorm, xs: &Tensor) -> Result<Tensor> {
    Ok(norm.forward(&xs.transpose(1, 2)?)?.transpose(1, 2)?)
}

/// A tensor's values as f32.
pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Runs `f` on a thread of rayon's pool (the caller waits): the parallel sections of the CPU
/// path then keep one half of their work on the running worker and wake only the others, instead
/// of waking every worker from outside the pool for each matrix product.
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("the scope ran the closure")
}

/// The GEMM kernel of the CPU path for a requested dtype: fp32, or bf16 where the CPU has
/// AVX512_BF16 (fp32 otherwise); `None` (candle's generic path) for f16 and for GPUs.
pub(crate) fn cpu_kernel(device: &Device, dtype: DType) -> Option<Kernel> {
    if !device.is_cpu() {
        return None;
    }
    match dtype {
        DType::F32 => Some(Kernel::best_f32()),
        DType::BF16 => {
            let kernel = Kernel::best_bf16();
            if !kernel.is_bf16() {
                tracing::warn!("this CPU has no AVX512_BF16: bf16 runs in fp32");
            }
            Some(kernel)
        }
        _ => None,
    }
}

/// The dtype tensors are stored and computed in: f32 on the CPU path (bf16 there only rounds
/// the matrix-product operands), the requested dtype elsewhere.
pub(crate) fn tensor_dtype(device: &Device, dtype: DType) -> DType {
    if device.is_cpu() && matches!(dtype, DType::F32 | DType::BF16) {
        DType::F32
    } else {
        dtype
    }
}

/// The output of [`HubertModel::forward`].
#[derive(Debug, Clone)]
pub struct HiddenStates {
    /// `num_hidden_layers + 1` tensors of shape `[B, T, D]`, as transformers 5.x returns them:
    /// `[0]` is the input of the first layer (after the positional conv and, for post-LN
    /// models, the encoder LayerNorm); `[i]` is the output of layer `i`. For pre-LN
    /// (`do_stable_layer_norm`) models the last entry is *before* the final encoder LayerNorm.
    pub hidden_states: Vec<Tensor>,
    /// `[B, T, D]`: the model's output. Equals `hidden_states[L]` for post-LN models; the final
    /// encoder LayerNorm applied to it for pre-LN models.
    pub last_hidden_state: Tensor,
}

/// What [`HubertModel::forward_outputs`] keeps of each selected hidden state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outputs {
    /// The mean over frames (the study's pooling).
    pub mean: bool,
    /// The population standard deviation over frames.
    pub std: bool,
    /// The maximum over frames.
    pub max: bool,
    /// Every frame.
    pub frames: bool,
}

/// The result of [`HubertModel::forward_outputs`]: `Some` for what was asked, f32, layers in
/// the order of the [`LayerSelection`].
#[derive(Debug, Clone)]
pub struct LayerOutputs {
    /// `[B, L, D]` frame means.
    pub mean: Option<Tensor>,
    /// `[B, L, D]` population standard deviations over frames.
    pub std: Option<Tensor>,
    /// `[B, L, D]` maxima over frames.
    pub max: Option<Tensor>,
    /// `[B, L, T, D]` frames.
    pub frames: Option<Tensor>,
}

/// Which hidden states to keep (and mean-pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    /// `last_hidden_state` only (what the original study pooled).
    Last,
    /// Every hidden state, `0..=num_hidden_layers`.
    All,
    /// The given hidden-state indices (`0..=num_hidden_layers`), in the given order.
    Indices(Vec<usize>),
}

impl LayerSelection {
    /// Number of stored layers for a model with `num_hidden_layers` layers.
    pub fn len(&self, num_hidden_layers: usize) -> usize {
        match self {
            Self::Last => 1,
            Self::All => num_hidden_layers + 1,
            Self::Indices(v) => v.len(),
        }
    }

    /// Whether no layer is selected.
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Indices(v) if v.is_empty())
    }

    /// A short name for metadata: `last`, `all`, or comma-separated indices.
    pub fn name(&self) -> String {
        match self {
            Self::Last => "last".into(),
            Self::All => "all".into(),
            Self::Indices(v) => v
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl std::str::FromStr for LayerSelection {
    type Err = String;

    /// Parses `last`, `all`, or comma-separated hidden-state indices (`0,6,12`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "last" => Ok(Self::Last),
            "all" => Ok(Self::All),
            other => other
                .split(',')
                .map(|p| p.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Self::Indices)
                .map_err(|_| format!("expected `last`, `all` or indices like `0,6,12`, got {s:?}")),
        }
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L760-L902
/// transformers' `HubertModel`, `Wav2Vec2Model`, `Data2VecAudioModel` or `WavLMModel` (as
/// the config's family says) in inference mode.
#[derive(Debug)]
pub struct HubertModel {
    config: HubertConfig,
    feature_extractor: FeatureEncoder,
    feature_projection: FeatureProjection,
    encoder: Encoder,
    device: Device,
    dtype: DType,
    /// What tensors hold (f32 on the CPU path, see [`tensor_dtype`]).
    tensor_dtype: DType,
    kernel: Option<Kernel>,
    num_parameters: usize,
}

impl HubertModel {
    /// Builds the model from loaded weights; a missing tensor or a wrong shape is an error that
    /// names it and the checkpoint file.
    pub fn new(
        config: HubertConfig,
        weights: &Weights,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Self::from_weights(
            config,
            weights.with_dtype(tensor_dtype(device, dtype)),
            device,
            dtype,
        )
    }

    /// Like [`HubertModel::new`], consuming the weights: tensors the CPU path packs are freed
    /// as it packs them, so loading never holds two copies of the model.
    pub fn from_weights(
        config: HubertConfig,
        mut weights: Weights,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let kernel = cpu_kernel(device, dtype);
        let tensor_dtype = tensor_dtype(device, dtype);
        weights.set_dtype(tensor_dtype);
        let weights = &weights;
        let feature_extractor = FeatureEncoder::load(weights, &config, kernel)?;
        let feature_projection = FeatureProjection::load(weights, &config)?;
        let encoder = Encoder::load(weights, &config, kernel)?;
        weights.check_leftovers()?;
        Ok(Self {
            feature_extractor,
            feature_projection,
            encoder,
            config,
            device: device.clone(),
            dtype,
            tensor_dtype,
            kernel,
            num_parameters: weights.used_elem_count(),
        })
    }

    /// Number of parameters the model took from the checkpoint (each weight-norm pair counted
    /// as the one weight it folds into; heads and training-only tensors not counted).
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// The configuration.
    pub fn config(&self) -> &HubertConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the model was loaded for. On the CPU, bf16 rounds the operands of the matrix
    /// products (weights and activations) to bf16 and accumulates in f32; everything else,
    /// hidden states included, stays f32 (see [`HubertModel::cpu_kernel`]).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The matrix-product kernel of the CPU path (`None` on GPUs and for f16, which take
    /// candle's generic path).
    pub fn cpu_kernel(&self) -> Option<Kernel> {
        self.kernel
    }

    /// Feature encoder and projection: `[B, samples]` -> `[B, T, D]` (encoder input).
    fn embed_frames(&self, input_values: &Tensor) -> Result<Tensor> {
        let (_, samples) = input_values.dims2()?;
        let min = self.config.min_samples();
        if samples < min {
            return Err(Error::InputTooShort { samples, min });
        }
        let input_values = input_values
            .to_device(&self.device)?
            .to_dtype(self.tensor_dtype)?;
        let conv_features = self.feature_extractor.forward(&input_values)?;
        self.feature_projection.forward(&conv_features)
    }

    /// The full forward pass over a batch of equal-length, already preprocessed clips
    /// `[B, samples]`, keeping every hidden state.
    pub fn forward(&self, input_values: &Tensor) -> Result<HiddenStates> {
        in_pool(|| self.forward_inner(input_values))
    }

    fn forward_inner(&self, input_values: &Tensor) -> Result<HiddenStates> {
        let xs = self.embed_frames(input_values)?;
        let mut hidden_states = Vec::with_capacity(self.config.num_hidden_states());
        let last_hidden_state = self.encoder.forward_visit(&xs, &mut |_, h| {
            hidden_states.push(h.clone());
            Ok(())
        })?;
        Ok(HiddenStates {
            hidden_states,
            last_hidden_state,
        })
    }

    /// Mean over frames of the selected hidden states, `[B, L, D]` in f32, without keeping the
    /// other layers' activations alive.
    pub fn forward_pooled(&self, input_values: &Tensor, layers: &LayerSelection) -> Result<Tensor> {
        let mut out = self.forward_selected(input_values, layers, |h| Ok(vec![h.mean(1)?]))?;
        Ok(out.remove(0))
    }

    /// The selected hidden states, each `[B, T, D]` in f32, stacked as `[B, L, T, D]`.
    pub fn forward_frames(&self, input_values: &Tensor, layers: &LayerSelection) -> Result<Tensor> {
        let mut out = self.forward_selected(input_values, layers, |h| Ok(vec![h.clone()]))?;
        Ok(out.remove(0))
    }

    /// One forward pass keeping, of each selected hidden state, what `outputs` asks for (all in
    /// f32): the frame mean, the population standard deviation and the maximum over frames
    /// (`[B, L, D]` each), and the frames themselves (`[B, L, T, D]`). The mean is computed
    /// exactly as [`HubertModel::forward_pooled`] computes it.
    pub fn forward_outputs(
        &self,
        input_values: &Tensor,
        layers: &LayerSelection,
        outputs: Outputs,
    ) -> Result<LayerOutputs> {
        let reduce = |h: &Tensor| -> Result<Vec<Tensor>> {
            let mut v = Vec::with_capacity(4);
            if outputs.mean || outputs.std {
                v.push(h.mean(1)?);
            }
            if outputs.std {
                let centred = h.broadcast_sub(&h.mean_keepdim(1)?)?;
                v.push(centred.sqr()?.mean(1)?.sqrt()?);
            }
            if outputs.max {
                v.push(h.max(1)?);
            }
            if outputs.frames {
                v.push(h.clone());
            }
            Ok(v)
        };
        let mut stacked = self
            .forward_selected(input_values, layers, reduce)?
            .into_iter();
        let mean = (outputs.mean || outputs.std)
            .then(|| stacked.next())
            .flatten();
        let std = outputs.std.then(|| stacked.next()).flatten();
        let max = outputs.max.then(|| stacked.next()).flatten();
        let frames = outputs.frames.then(|| stacked.next()).flatten();
        Ok(LayerOutputs {
            mean: mean.filter(|_| outputs.mean),
            std,
            max,
            frames,
        })
    }

    /// Runs the encoder and applies `reduce` to each selected hidden state (cast to f32); the
    /// `k`-th tensors `reduce` returns are stacked over layers into the `k`-th output.
    fn forward_selected(
        &self,
        input_values: &Tensor,
        layers: &LayerSelection,
        reduce: impl Fn(&Tensor) -> Result<Vec<Tensor>> + Send,
    ) -> Result<Vec<Tensor>> {
        in_pool(|| self.forward_selected_inner(input_values, layers, reduce))
    }

    fn forward_selected_inner(
        &self,
        input_values: &Tensor,
        layers: &LayerSelection,
        reduce: impl Fn(&Tensor) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let n = self.config.num_hidden_layers;
        let wanted: Vec<usize> = match layers {
            LayerSelection::Last => vec![],
            LayerSelection::All => (0..=n).collect(),
            LayerSelection::Indices(v) => {
                if let Some(bad) = v.iter().find(|&&i| i > n) {
                    return Err(Error::Config(format!(
                        "hidden-state index {bad} out of range: the model has {} (0..={n})",
                        n + 1
                    )));
                }
                v.clone()
            }
        };
        let xs = self.embed_frames(input_values)?;
        let mut kept: Vec<Option<Vec<Tensor>>> = vec![None; n + 1];
        let last = self.encoder.forward_visit(&xs, &mut |i, h| {
            if wanted.contains(&i) {
                kept[i] = Some(reduce(&h.to_dtype(DType::F32)?)?);
            }
            Ok(())
        })?;
        // Cast before reducing: a mean over frames accumulated in f16/bf16 loses digits.
        let per_layer: Vec<Vec<Tensor>> = match layers {
            LayerSelection::Last => vec![reduce(&last.to_dtype(DType::F32)?)?],
            _ => wanted
                .iter()
                .map(|&i| kept[i].clone().expect("every wanted index is visited"))
                .collect(),
        };
        let slots = per_layer.first().map_or(0, Vec::len);
        (0..slots)
            .map(|k| {
                let column: Vec<&Tensor> = per_layer.iter().map(|outs| &outs[k]).collect();
                Ok(Tensor::stack(&column, 1)?)
            })
            .collect()
    }

    /// Mean over the frame axis (`[B, T, D]` -> `[B, D]`): the pooling of the original study.
    pub fn mean_pool(hidden_state: &Tensor) -> Result<Tensor> {
        Ok(hidden_state.mean(D::Minus2)?)
    }
}
