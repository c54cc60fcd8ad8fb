//! `encoder.layers.{i}.attention`: multi-head self-attention on candle's ops (GPUs, f16),
//! with WavLM's gated relative position bias when the family has it.

use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;
use tracing::{span, Level};

use super::linear;
use super::wavlm::RelPositionGate;
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

    /// `[B, T, D]` -> `[B, T, D]`; `bias`: WavLM's ungated relative position bias
    /// `[heads, T, T]` in f32 (required when the layer has a gate).
    pub(crate) fn forward(&self, xs: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
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
        // WavLM: the bias gated per query frame and head, `[B, H, T, T]` in f32.
        let gated = match (&self.gate, bias) {
            (Some(gate), Some(bias)) => {
                Some(gate.gates_tensor(xs)?.broadcast_mul(&bias.unsqueeze(0)?)?)
            }
            (Some(_), None) => {
                return Err(crate::Error::Config(
                    "WavLM attention run without its relative position bias".into(),
                ))
            }
            (None, _) => None,
        };
        let probs = if q.dtype() == DType::F32 {
            let mut scores = (q.matmul(&k.t()?)? * self.scaling)?;
            if let Some(gated) = &gated {
                scores = (scores + gated)?;
            }
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            // f16/bf16: scale q before the product (keeps the scores in f16's range), then the
            // softmax in f32 as PyTorch's fused attention does; candle's half kernel runs
            // exp and the normalisation in half precision.
            let dtype = q.dtype();
            let mut scores = (q * self.scaling)?.matmul(&k.t()?)?.to_dtype(DType::F32)?;
            if let Some(gated) = &gated {
                scores = (scores + gated)?;
            }
            candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?
        };
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        Ok(self.out_proj.forward(&out)?)
    }
}
