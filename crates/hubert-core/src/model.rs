//! The HuBERT / wav2vec2 encoder, module for module as transformers' `HubertModel`.
//!
//! Every struct mirrors one upstream module and is loaded from the checkpoint keys under that
//! module's name, so a missing key points at the code that wanted it. Forward passes are pure
//! (`&self`) and run in inference mode (no dropout, no SpecAugment masking).

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, GroupNorm, LayerNorm, Linear};
use tracing::{span, Level};

use crate::config::{Activation, FeatExtractNorm, HubertConfig};
use crate::cpu::fast::{FastLayer, FastLinear, Norm};
use crate::cpu::fftconv::{self, FftGroupedConv};
use crate::cpu::gemm::Kernel;
use crate::cpu::winograd::{self, Act, Pre, WinogradConv};
use crate::cpu::{self, PackedConv, PackedGroupedConv};
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
fn layer_norm(w: &Weights, prefix: &str, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        w.get(&format!("{prefix}.weight"), &[size])?,
        w.get(&format!("{prefix}.bias"), &[size])?,
        eps,
    ))
}

/// Loads `nn.Linear(in_dim, out_dim)` (with bias) from `{prefix}.weight` / `{prefix}.bias`.
fn linear(w: &Weights, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(Linear::new(
        w.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
        Some(w.get(&format!("{prefix}.bias"), &[out_dim])?),
    ))
}

/// LayerNorm over the channel axis of a `[B, C, T]` tensor.
fn layer_norm_channels(norm: &LayerNorm, xs: &Tensor) -> Result<Tensor> {
    Ok(norm.forward(&xs.transpose(1, 2)?)?.transpose(1, 2)?)
}

/// Normalisation after a conv layer of the feature encoder.
#[derive(Debug)]
enum ConvNorm {
    /// `HubertGroupNormConvLayer`: GroupNorm with one group per channel.
    Group(GroupNorm),
    /// `HubertLayerNormConvLayer`: LayerNorm over channels.
    Layer(LayerNorm),
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L109-L178
/// One conv layer of the feature encoder (`feature_extractor.conv_layers.{i}`).
#[derive(Debug)]
struct ConvLayer {
    conv: Conv1d,
    norm: Option<ConvNorm>,
    activation: Activation,
    span: tracing::Span,
}

impl ConvLayer {
    fn load(w: &Weights, cfg: &HubertConfig, i: usize) -> Result<Self> {
        let prefix = format!("feature_extractor.conv_layers.{i}");
        let in_dim = if i == 0 { 1 } else { cfg.conv_dim[i - 1] };
        let out_dim = cfg.conv_dim[i];
        let kernel = cfg.conv_kernel[i];
        let weight = w.get(&format!("{prefix}.conv.weight"), &[out_dim, in_dim, kernel])?;
        let bias = if cfg.conv_bias {
            Some(w.get_with_hint(
                &format!("{prefix}.conv.bias"),
                &[out_dim],
                " (config has conv_bias: true)",
            )?)
        } else {
            None
        };
        let conv = Conv1d::new(
            weight,
            bias,
            Conv1dConfig {
                stride: cfg.conv_stride[i],
                ..Default::default()
            },
        );
        let norm = match (cfg.feat_extract_norm, i) {
            (FeatExtractNorm::Group, 0) => {
                let prefix = format!("{prefix}.layer_norm");
                Some(ConvNorm::Group(GroupNorm::new(
                    w.get(&format!("{prefix}.weight"), &[out_dim])?,
                    w.get(&format!("{prefix}.bias"), &[out_dim])?,
                    out_dim,
                    out_dim,
                    1e-5, // nn.GroupNorm's default eps
                )?))
            }
            (FeatExtractNorm::Group, _) => None,
            (FeatExtractNorm::Layer, _) => Some(ConvNorm::Layer(layer_norm(
                w,
                &format!("{prefix}.layer_norm"),
                out_dim,
                1e-5, // nn.LayerNorm's default eps
            )?)),
        };
        Ok(Self {
            conv,
            norm,
            activation: Activation::from_name(&cfg.feat_extract_activation)?,
            span: span!(Level::TRACE, "conv-layer", i),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let xs = self.conv.forward(xs)?;
        let xs = match &self.norm {
            None => xs,
            Some(ConvNorm::Group(norm)) => norm.forward(&xs)?,
            Some(ConvNorm::Layer(norm)) => layer_norm_channels(norm, &xs)?,
        };
        Ok(self.activation.apply(&xs)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L181-L216
/// The convolutional feature encoder (`feature_extractor`): raw samples to frames.
#[derive(Debug)]
struct FeatureEncoder {
    conv_layers: Vec<ConvLayer>,
    /// Channels-last GEMM kernels for CPU fp32 with GELU (see [`crate::cpu`]).
    fast: Option<Vec<(FastConv, FastNorm)>>,
    /// Whether `fast` runs the bf16 kernel (Winograd inputs then are bf16).
    bf16: bool,
    span: tracing::Span,
}

/// A conv layer on the CPU path: strided GEMM, or Winograd for stride 2 kernel 3.
#[derive(Debug)]
enum FastConv {
    Plain(PackedConv),
    Winograd(WinogradConv),
}

impl FastConv {
    fn out_len(&self, t_in: usize) -> usize {
        match self {
            FastConv::Plain(conv) => conv.out_len(t_in),
            FastConv::Winograd(_) => WinogradConv::out_len(t_in),
        }
    }

    fn c_out(&self) -> usize {
        match self {
            FastConv::Plain(conv) => conv.c_out,
            FastConv::Winograd(conv) => conv.c_out,
        }
    }
}

/// A fast conv layer's output before its norm and activation: `[t, c]` frames, or
/// [`WinogradConv`]'s parts.
enum ConvOut {
    Plain(Vec<f32>),
    Winograd(Vec<f32>, Vec<f32>),
}

/// A fast conv layer's input: `[t, c]` frames, or transformed for [`WinogradConv`].
enum FastInput {
    Plain(Vec<f32>),
    Winograd(Vec<f32>),
    /// The same, as bf16 bits for the bf16 kernel.
    WinogradBf16(Vec<u16>),
}

/// The normalisation after a fast conv layer, with its affine parameters.
#[derive(Debug)]
enum FastNorm {
    None,
    Group(Vec<f32>, Vec<f32>),
    Layer(Vec<f32>, Vec<f32>),
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

impl FeatureEncoder {
    fn load(w: &Weights, cfg: &HubertConfig, kernel: Option<Kernel>) -> Result<Self> {
        let conv_layers: Vec<ConvLayer> = (0..cfg.conv_dim.len())
            .map(|i| ConvLayer::load(w, cfg, i))
            .collect::<Result<_>>()?;
        let fast_kernel = kernel.filter(|_| {
            Activation::from_name(&cfg.feat_extract_activation).ok() == Some(Activation::Gelu)
        });
        let fast = if let Some(kernel) = fast_kernel {
            let mut layers = Vec::with_capacity(conv_layers.len());
            for (i, layer) in conv_layers.iter().enumerate() {
                let c_in = if i == 0 { 1 } else { cfg.conv_dim[i - 1] };
                let weight = to_vec(layer.conv.weight())?;
                let bias = layer.conv.bias().map(to_vec).transpose()?;
                let (k, stride) = (cfg.conv_kernel[i], cfg.conv_stride[i]);
                // The bf16 kernel reads the transformed input as bf16 k-pairs: even widths.
                let packed = if k == 3
                    && stride == 2
                    && (!kernel.is_bf16() || c_in.is_multiple_of(2))
                    && winograd::enabled()
                {
                    FastConv::Winograd(WinogradConv::new(
                        kernel,
                        &weight,
                        bias,
                        cfg.conv_dim[i],
                        c_in,
                    ))
                } else {
                    FastConv::Plain(PackedConv::new(
                        kernel,
                        &weight,
                        bias,
                        cfg.conv_dim[i],
                        c_in,
                        k,
                        stride,
                    ))
                };
                let norm = match &layer.norm {
                    None => FastNorm::None,
                    Some(ConvNorm::Group(_)) => {
                        let p = format!("feature_extractor.conv_layers.{i}.layer_norm");
                        FastNorm::Group(
                            to_vec(&w.get(&format!("{p}.weight"), &[cfg.conv_dim[i]])?)?,
                            to_vec(&w.get(&format!("{p}.bias"), &[cfg.conv_dim[i]])?)?,
                        )
                    }
                    Some(ConvNorm::Layer(ln)) => FastNorm::Layer(
                        to_vec(ln.weight())?,
                        to_vec(ln.bias().expect("loaded with a bias"))?,
                    ),
                };
                layers.push((packed, norm));
            }
            Some(layers)
        } else {
            None
        };
        Ok(Self {
            // The candle layers are only for devices and dtypes without the fast path: not
            // kept beside the packed copies (17 MB for hubert-base).
            conv_layers: if fast.is_some() {
                Vec::new()
            } else {
                conv_layers
            },
            fast,
            bf16: kernel.is_some_and(Kernel::is_bf16),
            span: span!(Level::TRACE, "feature-encoder"),
        })
    }

    /// `[B, samples]` -> `[B, T, C]` (channels last, as the projection wants it).
    fn forward(&self, input_values: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        if let Some(layers) = &self.fast {
            let (b, n) = input_values.dims2()?;
            let mut outputs = Vec::with_capacity(b);
            for row in 0..b {
                let mut x = FastInput::Plain(input_values.get(row)?.to_vec1::<f32>()?);
                let bf16 = self.bf16;
                let mut t = n;
                for (i, (conv, norm)) in layers.iter().enumerate() {
                    let _layer = span!(Level::TRACE, "conv-layer", i).entered();
                    let t_in = t;
                    t = conv.out_len(t_in);
                    let c = conv.c_out();
                    let next_winograd =
                        matches!(layers.get(i + 1), Some((FastConv::Winograd(_), _)));
                    // The conv (its output before the norm and activation) ...
                    // The input is dropped once the conv has run (a 5 s clip's first
                    // Winograd input is 41 MB).
                    let input = std::mem::replace(&mut x, FastInput::Plain(Vec::new()));
                    let out = match (conv, &input) {
                        (FastConv::Plain(conv), FastInput::Plain(x)) => {
                            ConvOut::Plain(conv.forward(x, t_in))
                        }
                        (FastConv::Winograd(conv), FastInput::Winograd(q)) => {
                            let (y, z) = conv.forward(q, t_in);
                            ConvOut::Winograd(y, z)
                        }
                        (FastConv::Winograd(conv), FastInput::WinogradBf16(q)) => {
                            let (y, z) = conv.forward(q, t_in);
                            ConvOut::Winograd(y, z)
                        }
                        _ => unreachable!("each layer gets the input form it takes"),
                    };
                    drop(input);
                    // ... then its norm (GroupNorm's statistics want the frames themselves) ...
                    let out = match (out, norm) {
                        (ConvOut::Winograd(y, z), FastNorm::Group(..)) => {
                            ConvOut::Plain(winograd::combine(&y, &z, c))
                        }
                        (out, _) => out,
                    };
                    let affine = match (&out, norm) {
                        (ConvOut::Plain(p), FastNorm::Group(w, b)) => {
                            Some(cpu::group_norm_affine(p, t, c, w, b, 1e-5))
                        }
                        _ => None,
                    };
                    let act = match (norm, &affine) {
                        (FastNorm::Group(..), Some((scale, shift))) => Act::Affine { scale, shift },
                        (FastNorm::Layer(w, b), _) => Act::LayerNorm {
                            weight: w,
                            bias: b,
                            eps: 1e-5,
                        },
                        _ => Act::Gelu,
                    };
                    // ... and activation, into the form the next layer takes.
                    x = match out {
                        ConvOut::Plain(mut p) if !next_winograd => {
                            winograd::activate_inplace(&mut p, act, c);
                            FastInput::Plain(p)
                        }
                        out => {
                            let pre = match &out {
                                ConvOut::Plain(p) => Pre::Plain(p),
                                ConvOut::Winograd(y, z) => Pre::Winograd { y, z },
                            };
                            if next_winograd && bf16 {
                                FastInput::WinogradBf16(winograd::to_winograd(pre, act, t, c))
                            } else if next_winograd {
                                FastInput::Winograd(winograd::to_winograd(pre, act, t, c))
                            } else {
                                FastInput::Plain(winograd::activate(pre, act, t, c))
                            }
                        }
                    };
                }
                let (FastInput::Plain(x), Some((last, _))) = (x, layers.last()) else {
                    unreachable!("the last layer's output is plain");
                };
                let c = last.c_out();
                outputs.push(Tensor::from_vec(x, (t, c), input_values.device())?);
            }
            return Ok(Tensor::stack(&outputs, 0)?);
        }
        let mut xs = input_values.unsqueeze(1)?;
        for layer in &self.conv_layers {
            xs = layer.forward(&xs)?;
        }
        Ok(xs.transpose(1, 2)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L219-L235
/// `feature_projection`: optional LayerNorm, then Linear to the transformer width.
#[derive(Debug)]
struct FeatureProjection {
    layer_norm: Option<LayerNorm>,
    projection: Linear,
    span: tracing::Span,
}

impl FeatureProjection {
    fn load(w: &Weights, cfg: &HubertConfig) -> Result<Self> {
        let conv_out = *cfg.conv_dim.last().expect("validated non-empty");
        let layer_norm = if cfg.feat_proj_layer_norm {
            Some(layer_norm(
                w,
                "feature_projection.layer_norm",
                conv_out,
                cfg.layer_norm_eps,
            )?)
        } else {
            None
        };
        Ok(Self {
            layer_norm,
            projection: linear(
                w,
                "feature_projection.projection",
                conv_out,
                cfg.hidden_size,
            )?,
            span: span!(Level::TRACE, "feature-projection"),
        })
    }

    /// `[B, T, C]` -> `[B, T, D]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let xs = match &self.layer_norm {
            Some(norm) => norm.forward(xs)?,
            None => xs.clone(),
        };
        Ok(self.projection.forward(&xs)?)
    }
}

/// Inference-mode `nn.BatchNorm1d` with running statistics, over the channel axis of `[B, C, T]`.
#[derive(Debug)]
struct BatchNorm1d {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm1d {
    fn load(w: &Weights, prefix: &str, size: usize) -> Result<Self> {
        // Folded in f32 (the running variance may be tiny), then cast to the model's dtype.
        let get = |n: &str| -> Result<Tensor> {
            Ok(w.get(&format!("{prefix}.{n}"), &[size])?
                .to_dtype(DType::F32)?)
        };
        let dtype = w.get(&format!("{prefix}.weight"), &[size])?.dtype();
        let (weight, bias, mean, var) = (
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        );
        let scale = weight.div(&(var + 1e-5)?.sqrt()?)?;
        let shift = bias.sub(&mean.mul(&scale)?)?;
        Ok(Self {
            scale: scale.to_dtype(dtype)?.reshape((1, size, 1))?,
            shift: shift.to_dtype(dtype)?.reshape((1, size, 1))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L48-L107
/// `encoder.pos_conv_embed`: grouped conv over time with "same" padding that drops the last
/// frame for even kernels (`HubertSamePadLayer`), then the activation.
#[derive(Debug)]
struct PositionalConvEmbedding {
    conv: Option<Conv1d>,
    /// Per-group strided GEMMs for CPU fp32 with GELU (see [`crate::cpu`]).
    fast: Option<PackedGroupedConv>,
    /// Overlap-save FFT convolution on the CPU path (see [`crate::cpu::fftconv`]), preferred.
    fft: Option<FftGroupedConv>,
    batch_norm: Option<BatchNorm1d>,
    num_pad_remove: usize,
    activation: Activation,
    span: tracing::Span,
}

impl PositionalConvEmbedding {
    fn load(w: &Weights, cfg: &HubertConfig, kernel: Option<Kernel>) -> Result<Self> {
        let d = cfg.hidden_size;
        let k = cfg.num_conv_pos_embeddings;
        let groups = cfg.num_conv_pos_embedding_groups;
        let weight = w.get_with_hint(
            "encoder.pos_conv_embed.conv.weight",
            &[d, d / groups, k],
            " (nor `weight_g`/`weight_v` nor `parametrizations.weight.original0/1`)",
        )?;
        let bias = w.get("encoder.pos_conv_embed.conv.bias", &[d])?;
        let batch_norm = if cfg.conv_pos_batch_norm {
            Some(BatchNorm1d::load(
                w,
                "encoder.pos_conv_embed.batch_norm",
                d,
            )?)
        } else {
            None
        };
        let activation = Activation::from_name(&cfg.feat_extract_activation)?;
        let cpu_path = kernel.filter(|_| batch_norm.is_none() && activation == Activation::Gelu);
        let fft = cpu_path
            .filter(|_| fftconv::enabled())
            .map(|_| -> Result<FftGroupedConv> {
                Ok(FftGroupedConv::new(
                    &to_vec(&weight)?,
                    to_vec(&bias)?,
                    d,
                    groups,
                    k,
                ))
            })
            .transpose()?;
        let fast = cpu_path
            .filter(|_| fft.is_none())
            .map(|kernel| -> Result<PackedGroupedConv> {
                Ok(PackedGroupedConv::new(
                    kernel,
                    &to_vec(&weight)?,
                    to_vec(&bias)?,
                    d,
                    groups,
                    k,
                ))
            })
            .transpose()?;
        // The candle conv only where neither CPU path runs (19 MB for hubert-base).
        let conv = (fft.is_none() && fast.is_none()).then(|| {
            Conv1d::new(
                weight,
                Some(bias),
                Conv1dConfig {
                    padding: k / 2,
                    groups,
                    ..Default::default()
                },
            )
        });
        Ok(Self {
            conv,
            fast,
            fft,
            batch_norm,
            num_pad_remove: usize::from(k.is_multiple_of(2)),
            activation: Activation::from_name(&cfg.feat_extract_activation)?,
            span: span!(Level::TRACE, "pos-conv"),
        })
    }

    /// `[B, T, D]` -> `[B, T, D]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        if let Some(conv) = &self.fft {
            let (b, t, d) = xs.dims3()?;
            let x = xs.flatten_all()?.to_vec1::<f32>()?;
            let mut y = conv.forward(&x, b, t);
            cpu::gelu_erf_inplace(&mut y);
            return Ok(Tensor::from_vec(y, (b, t, d), xs.device())?);
        }
        if let Some(conv) = &self.fast {
            let (b, t, d) = xs.dims3()?;
            let mut outputs = Vec::with_capacity(b);
            for row in 0..b {
                let x = xs.get(row)?.flatten_all()?.to_vec1::<f32>()?;
                let mut y = conv.forward(&x, t);
                cpu::gelu_erf_inplace(&mut y);
                outputs.push(Tensor::from_vec(y, (t, d), xs.device())?);
            }
            return Ok(Tensor::stack(&outputs, 0)?);
        }
        let mut xs = xs.transpose(1, 2)?.contiguous()?;
        if let Some(bn) = &self.batch_norm {
            xs = bn.forward(&xs)?;
        }
        let conv = self.conv.as_ref().expect("kept when no CPU path runs");
        let xs = conv.forward(&xs)?;
        let t = xs.dim(2)?;
        let xs = xs.narrow(2, 0, t - self.num_pad_remove)?;
        let xs = self.activation.apply(&xs)?;
        Ok(xs.transpose(1, 2)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L265-L347
/// `encoder.layers.{i}.attention`: multi-head self-attention without masking.
#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scaling: f64,
    span: tracing::Span,
}

impl Attention {
    fn load(w: &Weights, cfg: &HubertConfig, prefix: &str) -> Result<Self> {
        let d = cfg.hidden_size;
        let head_dim = d / cfg.num_attention_heads;
        Ok(Self {
            q_proj: linear(w, &format!("{prefix}.q_proj"), d, d)?,
            k_proj: linear(w, &format!("{prefix}.k_proj"), d, d)?,
            v_proj: linear(w, &format!("{prefix}.v_proj"), d, d)?,
            out_proj: linear(w, &format!("{prefix}.out_proj"), d, d)?,
            num_heads: cfg.num_attention_heads,
            head_dim,
            scaling: (head_dim as f64).powf(-0.5),
            span: span!(Level::TRACE, "attention"),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let (b, t, d) = xs.dims3()?;
        let heads = |proj: &Linear| -> Result<Tensor> {
            Ok(proj
                .forward(xs)?
                .reshape((b, t, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = heads(&self.q_proj)?;
        let k = heads(&self.k_proj)?;
        let v = heads(&self.v_proj)?;
        let probs = if q.dtype() == DType::F32 {
            let scores = (q.matmul(&k.t()?)? * self.scaling)?;
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            // f16/bf16: scale q before the product (keeps the scores in f16's range), then the
            // softmax in f32 as PyTorch's fused attention does; candle's half kernel runs
            // exp and the normalisation in half precision.
            let dtype = q.dtype();
            let scores = (q * self.scaling)?.matmul(&k.t()?)?;
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?
        };
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        Ok(self.out_proj.forward(&out)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L350-L371
/// `encoder.layers.{i}.feed_forward`.
#[derive(Debug)]
struct FeedForward {
    intermediate_dense: Linear,
    output_dense: Linear,
    activation: Activation,
    span: tracing::Span,
}

impl FeedForward {
    fn load(w: &Weights, cfg: &HubertConfig, prefix: &str) -> Result<Self> {
        Ok(Self {
            intermediate_dense: linear(
                w,
                &format!("{prefix}.intermediate_dense"),
                cfg.hidden_size,
                cfg.intermediate_size,
            )?,
            output_dense: linear(
                w,
                &format!("{prefix}.output_dense"),
                cfg.intermediate_size,
                cfg.hidden_size,
            )?,
            activation: Activation::from_name(&cfg.hidden_act)?,
            span: span!(Level::TRACE, "feed-forward"),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        let xs = self.intermediate_dense.forward(xs)?;
        let xs = self.activation.apply(&xs)?;
        Ok(self.output_dense.forward(&xs)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L374-L405 (post-LN)
// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L480-L516 (pre-LN)
/// `encoder.layers.{i}`: post-LN (`HubertEncoderLayer`) or pre-LN
/// (`HubertEncoderLayerStableLayerNorm`) transformer layer.
#[derive(Debug)]
struct EncoderLayer {
    attention: Attention,
    layer_norm: LayerNorm,
    feed_forward: FeedForward,
    final_layer_norm: LayerNorm,
    stable_layer_norm: bool,
    span: tracing::Span,
}

impl EncoderLayer {
    fn load(w: &Weights, cfg: &HubertConfig, i: usize) -> Result<Self> {
        let prefix = format!("encoder.layers.{i}");
        let d = cfg.hidden_size;
        Ok(Self {
            attention: Attention::load(w, cfg, &format!("{prefix}.attention"))?,
            layer_norm: layer_norm(w, &format!("{prefix}.layer_norm"), d, cfg.layer_norm_eps)?,
            feed_forward: FeedForward::load(w, cfg, &format!("{prefix}.feed_forward"))?,
            final_layer_norm: layer_norm(
                w,
                &format!("{prefix}.final_layer_norm"),
                d,
                cfg.layer_norm_eps,
            )?,
            stable_layer_norm: cfg.do_stable_layer_norm,
            span: span!(Level::TRACE, "encoder-layer", i),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        if self.stable_layer_norm {
            let attn = self.attention.forward(&self.layer_norm.forward(xs)?)?;
            let xs = (xs + attn)?;
            let ff = self
                .feed_forward
                .forward(&self.final_layer_norm.forward(&xs)?)?;
            Ok((xs + ff)?)
        } else {
            let attn = self.attention.forward(xs)?;
            let xs = self.layer_norm.forward(&(xs + attn)?)?;
            let ff = self.feed_forward.forward(&xs)?;
            Ok(self.final_layer_norm.forward(&(xs + ff)?)?)
        }
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L408-L452 (post-LN)
// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L519-L568 (pre-LN)
/// `encoder`: positional conv, encoder LayerNorm (before the layers for post-LN models, after
/// them for pre-LN models), and the layers.
#[derive(Debug)]
struct Encoder {
    pos_conv_embed: PositionalConvEmbedding,
    layer_norm: LayerNorm,
    /// candle's layers (empty when `fast` runs them).
    layers: Vec<EncoderLayer>,
    /// The CPU layers (see [`crate::cpu::fast`]).
    fast: Option<FastEncoder>,
    stable_layer_norm: bool,
}

/// The encoder's layers and LayerNorm on the CPU path.
#[derive(Debug)]
struct FastEncoder {
    layers: Vec<FastLayer>,
    layer_norm: Norm,
}

/// Loads `encoder.layers.{i}` packed for `kernel`, q/k/v fused into one product.
fn fast_layer(w: &Weights, cfg: &HubertConfig, i: usize, kernel: Kernel) -> Result<FastLayer> {
    let prefix = format!("encoder.layers.{i}");
    let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
    // Each tensor is copied out, then released from the store: it lives on in packed form only.
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let full = format!("{prefix}.{name}");
        let values = to_vec(&w.get(&full, shape)?)?;
        w.release(&full);
        Ok(values)
    };
    let linear = |name: &str, k: usize, n: usize| -> Result<FastLinear> {
        Ok(FastLinear::new(
            kernel,
            &get(&format!("{name}.weight"), &[n, k])?,
            get(&format!("{name}.bias"), &[n])?,
            k,
            n,
        ))
    };
    let norm = |name: &str| -> Result<Norm> {
        Ok(Norm::new(
            get(&format!("{name}.weight"), &[d])?,
            get(&format!("{name}.bias"), &[d])?,
            cfg.layer_norm_eps,
        ))
    };
    let (mut qkv_w, mut qkv_b) = (Vec::with_capacity(3 * d * d), Vec::with_capacity(3 * d));
    for proj in ["q_proj", "k_proj", "v_proj"] {
        qkv_w.extend(get(&format!("attention.{proj}.weight"), &[d, d])?);
        qkv_b.extend(get(&format!("attention.{proj}.bias"), &[d])?);
    }
    Ok(FastLayer {
        qkv: FastLinear::new(kernel, &qkv_w, qkv_b, d, 3 * d),
        out_proj: linear("attention.out_proj", d, d)?,
        layer_norm: norm("layer_norm")?,
        intermediate: linear("feed_forward.intermediate_dense", d, f)?,
        output: linear("feed_forward.output_dense", f, d)?,
        final_layer_norm: norm("final_layer_norm")?,
        heads: cfg.num_attention_heads,
        head_dim: d / cfg.num_attention_heads,
        stable_layer_norm: cfg.do_stable_layer_norm,
        attention_kernel: Kernel::best_f32(),
    })
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

impl Encoder {
    fn load(w: &Weights, cfg: &HubertConfig, kernel: Option<Kernel>) -> Result<Self> {
        let layer_norm = layer_norm(w, "encoder.layer_norm", cfg.hidden_size, cfg.layer_norm_eps)?;
        let fast_kernel = kernel
            .filter(|_| Activation::from_name(&cfg.hidden_act).ok() == Some(Activation::Gelu));
        let (layers, fast) = match fast_kernel {
            Some(kernel) => {
                let layers = (0..cfg.num_hidden_layers)
                    .map(|i| fast_layer(w, cfg, i, kernel))
                    .collect::<Result<_>>()?;
                let norm = Norm::new(
                    to_vec(layer_norm.weight())?,
                    to_vec(layer_norm.bias().expect("loaded with a bias"))?,
                    cfg.layer_norm_eps,
                );
                (
                    vec![],
                    Some(FastEncoder {
                        layers,
                        layer_norm: norm,
                    }),
                )
            }
            None => (
                (0..cfg.num_hidden_layers)
                    .map(|i| EncoderLayer::load(w, cfg, i))
                    .collect::<Result<_>>()?,
                None,
            ),
        };
        Ok(Self {
            pos_conv_embed: PositionalConvEmbedding::load(w, cfg, kernel)?,
            layer_norm,
            layers,
            fast,
            stable_layer_norm: cfg.do_stable_layer_norm,
        })
    }

    /// [`Encoder::forward_visit`] on the CPU path.
    fn forward_visit_fast(
        &self,
        fast: &FastEncoder,
        xs: &Tensor,
        visit: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let device = xs.device();
        let pos = self.pos_conv_embed.forward(xs)?;
        let mut x = (xs + pos)?.flatten_all()?.to_vec1::<f32>()?;
        if !self.stable_layer_norm {
            fast.layer_norm.forward_inplace(&mut x);
        }
        visit(0, &Tensor::from_slice(&x, (b, t, d), device)?)?;
        for (i, layer) in fast.layers.iter().enumerate() {
            {
                let _span = span!(Level::TRACE, "encoder-layer", i).entered();
                layer.forward(&mut x, b, t);
            }
            visit(i + 1, &Tensor::from_slice(&x, (b, t, d), device)?)?;
        }
        if self.stable_layer_norm {
            fast.layer_norm.forward_inplace(&mut x);
        }
        Ok(Tensor::from_vec(x, (b, t, d), device)?)
    }

    /// Runs the encoder, handing each hidden state `(index, tensor)` to `visit` as soon as it
    /// exists (so callers that only pool can drop it at once); returns `last_hidden_state`.
    fn forward_visit(
        &self,
        xs: &Tensor,
        visit: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        if let Some(fast) = &self.fast {
            return self.forward_visit_fast(fast, xs, visit);
        }
        let pos = self.pos_conv_embed.forward(xs)?;
        let mut xs = (xs + pos)?;
        if !self.stable_layer_norm {
            xs = self.layer_norm.forward(&xs)?;
        }
        visit(0, &xs)?;
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs)?;
            visit(i + 1, &xs)?;
        }
        if self.stable_layer_norm {
            xs = self.layer_norm.forward(&xs)?;
        }
        Ok(xs)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L760-L902
/// transformers' `HubertModel` (also `Wav2Vec2Model`) in inference mode.
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
        Ok(Self {
            feature_extractor: FeatureEncoder::load(weights, &config, kernel)?,
            feature_projection: FeatureProjection::load(weights, &config)?,
            encoder: Encoder::load(weights, &config, kernel)?,
            config,
            device: device.clone(),
            dtype,
            tensor_dtype,
            kernel,
        })
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
