//! `encoder.layers.{i}.attention`: multi-head self-attention on candle's ops (GPUs, f16),
//! with WavLM's gated relative position bias when the family has it; long clips compute the
//! scores one block of query frames at a time.

use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;
use tracing::{span, Level};

use super::linear;
use super::wavlm::{RelPositionEmbedding, RelPositionGate};
use crate::config::{HubertConfig, ModelFamily};
use crate::weights::Weights;
use crate::Result;

// https://github.com/huggingface/transformers/blob/v5.0.0/src/transformers/models/hubert/modeling_hubert.py#L265-L347
/// `encoder.layers.{i}.attention`: multi-head self-attention without masking.
#[derive(Debug)]
pub(crate) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scaling: f64,
    /// WavLM: this layer's gate of the relative position bias.
    gate: Option<RelPositionGate>,
    span: tracing::Span,
}

impl Attention {
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, prefix: &str) -> Result<Self> {
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
            gate: match cfg.family {
                ModelFamily::WavLm => Some(RelPositionGate::load(w, cfg, prefix)?),
                _ => None,
            },
            span: span!(Level::TRACE, "attention"),
        })
    }

    /// `[B, T, D]` -> `[B, T, D]`; `bias`: WavLM's ungated relative position bias rows
    /// (`[heads][2T - 1]`, [`super::wavlm::RelPositionEmbedding::bias_rows`]; required when the
    /// layer has a gate); `query_block`: compute the scores for this many query frames at a time
    /// (each block's softmax is over every key, so the result is the same; memory
    /// `heads x block x T` instead of `heads x T x T`), `None` for all at once.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        bias: Option<&[f32]>,
        query_block: Option<usize>,
    ) -> Result<Tensor> {
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
        let k_t = k.t()?;
        // WavLM: each query frame's gate per head, `[B, H, T, 1]` in f32.
        let gates = match (&self.gate, bias) {
            (Some(gate), Some(_)) => Some(gate.gates_tensor(xs)?.to_dtype(DType::F32)?),
            (Some(_), None) => {
                return Err(crate::Error::Config(
                    "WavLM attention run without its relative position bias".into(),
                ))
            }
            (None, _) => None,
        };
        let block = query_block.unwrap_or(t).clamp(1, t.max(1));
        let mut outs = Vec::with_capacity(t.div_ceil(block));
        let mut i0 = 0;
        while i0 < t {
            let n = block.min(t - i0);
            let q = if n == t {
                q.clone()
            } else {
                q.narrow(2, i0, n)?
            };
            // WavLM: the bias of these query frames gated per frame and head, `[B, H, n, T]`.
            let gated = match (&gates, bias) {
                (Some(gates), Some(rows)) => {
                    let block = RelPositionEmbedding::bias_block(
                        rows,
                        self.num_heads,
                        t,
                        (i0, i0 + n),
                        xs.device(),
                        DType::F32,
                    )?;
                    Some(
                        gates
                            .narrow(2, i0, n)?
                            .broadcast_mul(&block.unsqueeze(0)?)?,
                    )
                }
                _ => None,
            };
            let probs = if q.dtype() == DType::F32 {
                let mut scores = (q.matmul(&k_t)? * self.scaling)?;
                if let Some(gated) = &gated {
                    scores = (scores + gated)?;
                }
                candle_nn::ops::softmax_last_dim(&scores)?
            } else {
                // f16/bf16: scale q before the product (keeps the scores in f16's range), then
                // the softmax in f32 as PyTorch's fused attention does; candle's half kernel
                // runs exp and the normalisation in half precision.
                let dtype = q.dtype();
                let mut scores = (q * self.scaling)?.matmul(&k_t)?.to_dtype(DType::F32)?;
                if let Some(gated) = &gated {
                    scores = (scores + gated)?;
                }
                candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?
            };
            outs.push(probs.matmul(&v)?);
            i0 += n;
        }
        let out = if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(&outs, 2)?
        };
        let out = out.transpose(1, 2)?.contiguous()?.reshape((b, t, d))?;
        Ok(self.out_proj.forward(&out)?)
    }
}
