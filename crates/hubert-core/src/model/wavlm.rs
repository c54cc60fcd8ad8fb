//! WavLM's one difference from the wav2vec2 encoder: a gated relative position bias added to
//! every layer's attention scores (transformers' `WavLMAttention`).
//!
//! Layer 0 holds `rel_attn_embed` (`[num_buckets, heads]`): the bias of head `h` between query
//! frame `i` and key frame `j` is `rel_attn_embed[bucket(j - i), h]`, computed once per forward
//! pass and reused by every later layer. Each layer gates it per query frame and head with
//! `gru_rel_pos_linear` (`head_dim -> 8`) and `gru_rel_pos_const` (`[1, heads, 1, 1]`):
//! `p = linear(x_head)` summed in two groups of four, `a, b = sigmoid(p)`,
//! `gate = a * (b * const - 1) + 2`, and the scores become `q.k * scaling + gate * bias`.
//!
//! The bias depends only on `j - i`, so it is kept as one row of `2T - 1` values per head
//! ([`RelPositionEmbedding::bias_rows`]): query row `i` reads the contiguous slice starting at
//! `T - 1 - i`, and nothing of size `T x T` is ever stored on the CPU path.

use candle_core::{DType, Device, Tensor};

use super::to_vec;
use crate::config::HubertConfig;
use crate::weights::Weights;
use crate::Result;

/// transformers' `_relative_positions_bucket` for one relative position `rel = key - query`:
/// half the buckets for each sign, exact below `num_buckets / 4`, log-spaced up to
/// `max_distance`. The log is taken in f32 like PyTorch's float tensor ops.
pub(crate) fn bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let mut out = if rel > 0 { half } else { 0 };
    let r = rel.unsigned_abs() as usize;
    let max_exact = half / 2;
    if r < max_exact {
        return out + r;
    }
    let ratio = r as f32 / max_exact as f32;
    let large = (ratio.ln() / (max_distance as f64 / max_exact as f64).ln() as f32)
        * (half - max_exact) as f32;
    let large = (max_exact as f32 + large) as usize;
    out += large.min(half - 1);
    out
}

/// Layer 0's `rel_attn_embed` table with its bucketing parameters.
#[derive(Debug)]
pub(crate) struct RelPositionEmbedding {
    /// `[num_buckets, heads]`, row-major.
    table: Vec<f32>,
    heads: usize,
    num_buckets: usize,
    max_distance: usize,
}

impl RelPositionEmbedding {
    /// Loads `encoder.layers.0.attention.rel_attn_embed.weight`.
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig) -> Result<Self> {
        let heads = cfg.num_attention_heads;
        let name = "encoder.layers.0.attention.rel_attn_embed.weight";
        let table = to_vec(&w.get_with_hint(
            name,
            &[cfg.num_buckets, heads],
            " (WavLM's relative position embedding, in layer 0 only)",
        )?)?;
        Ok(Self {
            table,
            heads,
            num_buckets: cfg.num_buckets,
            max_distance: cfg.max_bucket_distance,
        })
    }

    /// The bias of every head for every relative position of a `t`-frame clip:
    /// `[heads][2t - 1]`, entry `k` of head `h` for `rel = k - (t - 1)`.
    pub(crate) fn bias_rows(&self, t: usize) -> Vec<f32> {
        let width = 2 * t.max(1) - 1;
        let buckets: Vec<usize> = (0..width)
            .map(|k| {
                bucket(
                    k as i64 - (t as i64 - 1),
                    self.num_buckets,
                    self.max_distance,
                )
            })
            .collect();
        let mut out = Vec::with_capacity(self.heads * width);
        for h in 0..self.heads {
            out.extend(buckets.iter().map(|&b| self.table[b * self.heads + h]));
        }
        out
    }

    /// The bias of query frames `i0..i1` of a `t`-frame clip against every key, `[heads,
    /// i1 - i0, t]`, from [`RelPositionEmbedding::bias_rows`]'s `rows` (candle's path, one
    /// block of query rows at a time for long clips).
    pub(crate) fn bias_block(
        rows: &[f32],
        heads: usize,
        t: usize,
        (i0, i1): (usize, usize),
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let width = 2 * t - 1;
        let mut block = Vec::with_capacity(heads * (i1 - i0) * t);
        for h in 0..heads {
            let row = &rows[h * width..(h + 1) * width];
            for i in i0..i1 {
                block.extend_from_slice(&row[t - 1 - i..2 * t - 1 - i]);
            }
        }
        Ok(Tensor::from_vec(block, (heads, i1 - i0, t), device)?.to_dtype(dtype)?)
    }
}

/// One layer's gate (`gru_rel_pos_linear`, `gru_rel_pos_const`), as f32 values.
#[derive(Debug, Clone)]
pub(crate) struct RelPositionGate {
    /// `[8, head_dim]` (PyTorch's Linear layout).
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// `[heads]`.
    konst: Vec<f32>,
    heads: usize,
    head_dim: usize,
}

impl RelPositionGate {
    /// Loads `{prefix}.gru_rel_pos_linear` and `{prefix}.gru_rel_pos_const` of an attention
    /// module, releasing them from the store.
    pub(crate) fn load(w: &Weights, cfg: &HubertConfig, prefix: &str) -> Result<Self> {
        let heads = cfg.num_attention_heads;
        let head_dim = cfg.hidden_size / heads;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let full = format!("{prefix}.{name}");
            let v = to_vec(&w.get_with_hint(&full, shape, " (WavLM's gated position bias)")?)?;
            w.release(&full);
            Ok(v)
        };
        Ok(Self {
            weight: get("gru_rel_pos_linear.weight", &[8, head_dim])?,
            bias: get("gru_rel_pos_linear.bias", &[8])?,
            konst: get("gru_rel_pos_const", &[1, heads, 1, 1])?,
            heads,
            head_dim,
        })
    }

    /// The gate of head `h` for one frame whose attention input is `x` (`hidden_size` values).
    pub(crate) fn gate(&self, x: &[f32], h: usize) -> f32 {
        let xs = &x[h * self.head_dim..(h + 1) * self.head_dim];
        let mut p = [0f32; 8];
        for (o, p) in p.iter_mut().enumerate() {
            let w = &self.weight[o * self.head_dim..(o + 1) * self.head_dim];
            *p = w.iter().zip(xs).map(|(&w, &x)| w * x).sum::<f32>() + self.bias[o];
        }
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        let a = sigmoid(p[0] + p[1] + p[2] + p[3]);
        let b = sigmoid(p[4] + p[5] + p[6] + p[7]);
        a * (b * self.konst[h] - 1.0) + 2.0
    }

    /// The gates of every frame and head of `x` (`[b, t, d]`) as a `[b, heads, t, 1]` tensor.
    pub(crate) fn gates_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; b * self.heads * t];
        for bi in 0..b {
            for i in 0..t {
                let row = &values[(bi * t + i) * d..(bi * t + i + 1) * d];
                for h in 0..self.heads {
                    out[(bi * self.heads + h) * t + i] = self.gate(row, h);
                }
            }
        }
        Ok(Tensor::from_vec(out, (b, self.heads, t, 1), x.device())?.to_dtype(x.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bucket of wavlm-base's 320 buckets / 800 distance for relative positions
    /// -3000..=3000 equals transformers' (`wavlm.buckets_320_800` in the parity fixture).
    #[test]
    fn buckets_equal_transformers() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/expected.safetensors");
        let expected = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let buckets: Vec<i64> = expected["wavlm.buckets_320_800"].to_vec1().unwrap();
        assert_eq!(buckets.len(), 6001);
        for (i, &b) in buckets.iter().enumerate() {
            let rel = i as i64 - 3000;
            assert_eq!(bucket(rel, 320, 800) as i64, b, "relative position {rel}");
        }
    }

    #[test]
    fn buckets_follow_the_transformers_formula() {
        // wavlm-base: 320 buckets, max distance 800: 160 per sign, exact below 80.
        assert_eq!(bucket(0, 320, 800), 0);
        assert_eq!(bucket(-79, 320, 800), 79);
        assert_eq!(bucket(79, 320, 800), 160 + 79);
        assert_eq!(bucket(80, 320, 800), 160 + 80);
        // Far away: the last bucket of each sign.
        assert_eq!(bucket(-100_000, 320, 800), 159);
        assert_eq!(bucket(100_000, 320, 800), 319);
        // Monotone in |rel| within each sign.
        let mut last = 0;
        for r in 0..5000 {
            let b = bucket(-r, 320, 800);
            assert!(b >= last, "{r}");
            last = b;
        }
    }
}
