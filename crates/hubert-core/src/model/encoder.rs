//! The transformer encoder (`encoder`): positional embedding, encoder LayerNorm and layers,
//! shared by every family (post-LN, or pre-LN with `do_stable_layer_norm`), on candle's ops or
//! on the CPU backend's fused layers.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use tracing::{span, Level};

use super::attention::Attention;
use super::positional::PositionalEmbedding;
use super::wavlm::{RelPositionEmbedding, RelPositionGate};
use super::{layer_norm, linear, to_vec};
use crate::config::{Activation, HubertConfig, ModelFamily};
use crate::cpu::fast::{FastLayer, FastLinear, Norm, PositionBias};
use crate::cpu::gemm::Kernel;
use crate::cpu::tiled::{Tiling, FULL_ATTENTION_MAX_FRAMES};
use crate::weights::Weights;
use crate::Result;

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L350-L371
/// `encoder.layers.{i}.feed_forward`.
#[derive(Debug)]
pub(crate) struct FeedForward {
    intermediate_dense: Linear,
    output_dense: Linear,
    activation: Activation,
    span: tracing::Span,
}

impl FeedForward {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, prefix: &str) -> Result<Self> {
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

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
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
pub(crate) struct EncoderLayer {
    attention: Attention,
    layer_norm: LayerNorm,
    feed_forward: FeedForward,
    final_layer_norm: LayerNorm,
    stable_layer_norm: bool,
    span: tracing::Span,
}

impl EncoderLayer {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, i: usize) -> Result<Self> {
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

    /// `bias`: WavLM's relative position bias rows `[heads][2T - 1]`; `query_block`: see
    /// [`Attention::forward`].
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        bias: Option<&[f32]>,
        query_block: Option<usize>,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        if self.stable_layer_norm {
            let attn = self
                .attention
                .forward(&self.layer_norm.forward(xs)?, bias, query_block)?;
            let xs = (xs + attn)?;
            let ff = self
                .feed_forward
                .forward(&self.final_layer_norm.forward(&xs)?)?;
            Ok((xs + ff)?)
        } else {
            let attn = self.attention.forward(xs, bias, query_block)?;
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
pub(crate) struct Encoder {
    pos_conv_embed: PositionalEmbedding,
    /// WavLM: layer 0's relative position embedding, shared by every layer.
    rel_pos: Option<RelPositionEmbedding>,
    layer_norm: LayerNorm,
    /// candle's layers (empty when `fast` runs them).
    layers: Vec<EncoderLayer>,
    /// The CPU layers (see [`crate::cpu::fast`]).
    fast: Option<FastEncoder>,
    stable_layer_norm: bool,
}

/// How the layers compute attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttentionMode {
    /// Each head's full `T x T` score matrix.
    Full,
    /// In tiles: the CPU path's online softmax ([`crate::cpu::tiled`]); candle's path takes
    /// blocks of `query` frames against every key.
    Tiled(Tiling),
}

impl AttentionMode {
    /// What the model runs for a `t`-frame clip: full score matrices up to
    /// [`FULL_ATTENTION_MAX_FRAMES`] frames, tiles ([`Tiling::DEFAULT`]) above.
    pub(crate) fn for_frames(t: usize) -> Self {
        if t > FULL_ATTENTION_MAX_FRAMES {
            AttentionMode::Tiled(Tiling::DEFAULT)
        } else {
            AttentionMode::Full
        }
    }

    /// The tiling, `None` for full score matrices.
    fn tiling(self) -> Option<Tiling> {
        match self {
            AttentionMode::Full => None,
            AttentionMode::Tiled(tiling) => Some(tiling),
        }
    }
}

/// The encoder's layers and LayerNorm on the CPU path.
#[derive(Debug)]
pub(crate) struct FastEncoder {
    layers: Vec<FastLayer>,
    /// WavLM: each layer's gate of the position bias.
    gates: Vec<RelPositionGate>,
    layer_norm: Norm,
}

/// Loads `encoder.layers.{i}` packed for `kernel`, q/k/v fused into one product.
pub(crate) fn fast_layer(
    w: &Weights,
    cfg: &HubertConfig,
    i: usize,
    kernel: Kernel,
) -> Result<FastLayer> {
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

impl Encoder {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, kernel: Option<Kernel>) -> Result<Self> {
        let layer_norm = layer_norm(w, "encoder.layer_norm", cfg.hidden_size, cfg.layer_norm_eps)?;
        let fast_kernel = kernel
            .filter(|_| Activation::from_name(&cfg.hidden_act).ok() == Some(Activation::Gelu));
        let rel_pos = match cfg.family {
            ModelFamily::WavLm => Some(RelPositionEmbedding::load(w, cfg)?),
            _ => None,
        };
        let (layers, fast) = match fast_kernel {
            Some(kernel) => {
                let layers = (0..cfg.num_hidden_layers)
                    .map(|i| fast_layer(w, cfg, i, kernel))
                    .collect::<Result<_>>()?;
                let gates = match cfg.family {
                    ModelFamily::WavLm => (0..cfg.num_hidden_layers)
                        .map(|i| {
                            RelPositionGate::load(w, cfg, &format!("encoder.layers.{i}.attention"))
                        })
                        .collect::<Result<_>>()?,
                    _ => Vec::new(),
                };
                let norm = Norm::new(
                    to_vec(layer_norm.weight())?,
                    to_vec(layer_norm.bias().expect("loaded with a bias"))?,
                    cfg.layer_norm_eps,
                );
                (
                    vec![],
                    Some(FastEncoder {
                        layers,
                        gates,
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
            pos_conv_embed: PositionalEmbedding::load(w, cfg, kernel)?,
            rel_pos,
            layer_norm,
            layers,
            fast,
            stable_layer_norm: cfg.do_stable_layer_norm,
        })
    }

    /// Whether the CPU layers run (rather than candle's).
    #[cfg(test)]
    pub(crate) fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// [`Encoder::forward_visit`] on the CPU path.
    fn forward_visit_fast(
        &self,
        fast: &FastEncoder,
        xs: &Tensor,
        visit: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
        mode: AttentionMode,
    ) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let tiling = mode.tiling();
        let device = xs.device();
        let pos = self.pos_conv_embed.forward(xs)?;
        let mut x = (xs + pos)?.flatten_all()?.to_vec1::<f32>()?;
        if !self.stable_layer_norm {
            fast.layer_norm.forward_inplace(&mut x);
        }
        visit(0, &Tensor::from_slice(&x, (b, t, d), device)?)?;
        let rows = self.rel_pos.as_ref().map(|r| r.bias_rows(t));
        for (i, layer) in fast.layers.iter().enumerate() {
            {
                let _span = span!(Level::TRACE, "encoder-layer", i).entered();
                let gate = fast.gates.get(i);
                let gates_fn = |x: &[f32]| match gate {
                    Some(g) => g.gates(x),
                    None => vec![1.0; x.len() / d * layer.heads],
                };
                let bias = rows.as_deref().map(|rows| PositionBias {
                    rows,
                    gates: &gates_fn,
                });
                layer.forward(&mut x, b, t, bias.as_ref(), tiling);
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
    pub(crate) fn forward_visit(
        &self,
        xs: &Tensor,
        visit: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        self.forward_visit_with(xs, visit, AttentionMode::for_frames(xs.dim(1)?))
    }

    /// [`Encoder::forward_visit`] with the attention computed as `mode` says (tests compare
    /// the modes).
    pub(crate) fn forward_visit_with(
        &self,
        xs: &Tensor,
        visit: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
        mode: AttentionMode,
    ) -> Result<Tensor> {
        if let Some(fast) = &self.fast {
            return self.forward_visit_fast(fast, xs, visit, mode);
        }
        let pos = self.pos_conv_embed.forward(xs)?;
        let mut xs = (xs + pos)?;
        if !self.stable_layer_norm {
            xs = self.layer_norm.forward(&xs)?;
        }
        visit(0, &xs)?;
        let t = xs.dim(1)?;
        let rows = self.rel_pos.as_ref().map(|r| r.bias_rows(t));
        let query_block = mode.tiling().map(|tiling| tiling.query);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = layer.forward(&xs, rows.as_deref(), query_block)?;
            visit(i + 1, &xs)?;
        }
        if self.stable_layer_norm {
            xs = self.layer_norm.forward(&xs)?;
        }
        Ok(xs)
    }
}
