//! `encoder.pos_conv_embed`, the convolutional positional embedding: one weight-normed
//! grouped conv (HuBERT, wav2vec2, WavLM; some HuBERT checkpoints put a BatchNorm before it), or
//! data2vec-audio's stack of plain grouped convs, each followed by a LayerNorm without affine
//! parameters and the activation.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm};
use tracing::{span, Level};

use super::to_vec;
use crate::config::{Activation, HubertConfig, ModelFamily};
use crate::cpu::fast::Norm;
use crate::cpu::fftconv::{self, FftGroupedConv};
use crate::cpu::gemm::Kernel;
use crate::cpu::{self, PackedGroupedConv};
use crate::weights::Weights;
use crate::Result;

/// Inference-mode `nn.BatchNorm1d` with running statistics, over the channel axis of `[B, C, T]`.
#[derive(Debug)]
pub(crate) struct BatchNorm1d {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm1d {
    pub(crate) fn load(w: &Weights, prefix: &str, size: usize) -> Result<Self> {
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

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?)
    }
}

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L48-L107
/// `encoder.pos_conv_embed`: grouped conv over time with "same" padding that drops the last
/// frame for even kernels (`HubertSamePadLayer`), then the activation.
#[derive(Debug)]
pub(crate) struct PositionalConvEmbedding {
    conv: Option<Conv1d>,
    /// Per-group strided GEMMs for CPU fp32 with GELU (see [`crate::cpu`]).
    fast: Option<PackedGroupedConv>,
    /// Overlap-save FFT convolution on the CPU path (see [`crate::cpu::fftconv`]), preferred.
    fft: Option<FftGroupedConv>,
    batch_norm: Option<BatchNorm1d>,
    /// data2vec-audio: LayerNorm without affine parameters between the conv and the activation.
    norm: Option<LayerNormPlain>,
    num_pad_remove: usize,
    activation: Activation,
    span: tracing::Span,
}

/// `nn.LayerNorm(d, elementwise_affine=False)` (eps 1e-5) on both paths.
#[derive(Debug)]
struct LayerNormPlain {
    candle: LayerNorm,
    cpu: Norm,
}

impl LayerNormPlain {
    fn new(d: usize, device: &candle_core::Device, dtype: DType) -> Result<Self> {
        Ok(Self {
            candle: LayerNorm::new(
                Tensor::ones(d, dtype, device)?,
                Tensor::zeros(d, dtype, device)?,
                1e-5,
            ),
            cpu: Norm::new(vec![1.0; d], vec![0.0; d], 1e-5),
        })
    }
}

/// `encoder.pos_conv_embed`: one conv (HuBERT, wav2vec2, WavLM), or data2vec-audio's stack of
/// `num_conv_pos_embeddings` conv layers (`encoder.pos_conv_embed.layers.{j}`) of kernel
/// `conv_pos_kernel_size`, each conv -> LayerNorm without affine -> activation.
#[derive(Debug)]
pub(crate) enum PositionalEmbedding {
    /// `HubertPositionalConvEmbedding` / `Wav2Vec2PositionalConvEmbedding`.
    Conv(Box<PositionalConvEmbedding>),
    /// `Data2VecAudioPositionalConvEmbedding`.
    Stack(Vec<PositionalConvEmbedding>),
}

impl PositionalEmbedding {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, kernel: Option<Kernel>) -> Result<Self> {
        match cfg.family {
            ModelFamily::Data2VecAudio => Ok(Self::Stack(
                (0..cfg.num_conv_pos_embeddings)
                    .map(|j| {
                        PositionalConvEmbedding::load(
                            w,
                            cfg,
                            kernel,
                            &format!("encoder.pos_conv_embed.layers.{j}"),
                            true,
                        )
                    })
                    .collect::<Result<_>>()?,
            )),
            _ => Ok(Self::Conv(Box::new(PositionalConvEmbedding::load(
                w,
                cfg,
                kernel,
                "encoder.pos_conv_embed",
                false,
            )?))),
        }
    }

    /// `[B, T, D]` -> `[B, T, D]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Conv(conv) => conv.forward(xs),
            Self::Stack(layers) => {
                let mut xs = xs.clone();
                for layer in layers {
                    xs = layer.forward(&xs)?;
                }
                Ok(xs)
            }
        }
    }
}

impl PositionalConvEmbedding {
    /// Loads `{prefix}.conv` (and the BatchNorm some HuBERT checkpoints have); `norm`: the
    /// data2vec-audio layer's LayerNorm without affine.
    pub(crate) fn load(
        w: &Weights,
        cfg: &HubertConfig,
        kernel: Option<Kernel>,
        prefix: &str,
        norm: bool,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let k = cfg.pos_conv_kernel();
        let groups = cfg.num_conv_pos_embedding_groups;
        let hint = if norm {
            ""
        } else {
            " (nor `weight_g`/`weight_v` nor `parametrizations.weight.original0/1`)"
        };
        let weight =
            w.get_with_hint(&format!("{prefix}.conv.weight"), &[d, d / groups, k], hint)?;
        let bias = w.get(&format!("{prefix}.conv.bias"), &[d])?;
        let norm = if norm {
            Some(LayerNormPlain::new(d, weight.device(), weight.dtype())?)
        } else {
            None
        };
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
            norm,
            num_pad_remove: usize::from(k.is_multiple_of(2)),
            activation: Activation::from_name(&cfg.feat_extract_activation)?,
            span: span!(Level::TRACE, "pos-conv"),
        })
    }

    /// `[B, T, D]` -> `[B, T, D]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        if let Some(conv) = &self.fft {
            let (b, t, d) = xs.dims3()?;
            let x = xs.flatten_all()?.to_vec1::<f32>()?;
            let mut y = conv.forward(&x, b, t);
            if let Some(norm) = &self.norm {
                norm.cpu.forward_inplace(&mut y);
            }
            cpu::gelu_erf_inplace(&mut y);
            return Ok(Tensor::from_vec(y, (b, t, d), xs.device())?);
        }
        if let Some(conv) = &self.fast {
            let (b, t, d) = xs.dims3()?;
            let mut outputs = Vec::with_capacity(b);
            for row in 0..b {
                let x = xs.get(row)?.flatten_all()?.to_vec1::<f32>()?;
                let mut y = conv.forward(&x, t);
                if let Some(norm) = &self.norm {
                    norm.cpu.forward_inplace(&mut y);
                }
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
        let xs = xs.narrow(2, 0, t - self.num_pad_remove)?.transpose(1, 2)?;
        let xs = match &self.norm {
            Some(norm) => norm.candle.forward(&xs.contiguous()?)?,
            None => xs,
        };
        Ok(self.activation.apply(&xs)?)
    }
}
