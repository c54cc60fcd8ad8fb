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
///
/// The gate only uses the sums of `gru_rel_pos_linear`'s outputs in two groups of four, so the
/// layer is kept as those two sums of weight rows and biases: two dot products per frame and
/// head instead of eight (the same value up to f32 rounding, ~1e-7 relative).
#[derive(Debug, Clone)]
pub(crate) struct RelPositionGate {
    /// `[2, head_dim]`: rows 0..4 of `gru_rel_pos_linear.weight` summed, then rows 4..8.
    weight: Vec<f32>,
    /// `gru_rel_pos_linear.bias` summed in the same two groups.
    bias: [f32; 2],
    /// `[heads]`.
    konst: Vec<f32>,
    heads: usize,
    head_dim: usize,
}

/// `a . b` with eight independent partial sums (so the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((acc, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *acc += x * y;
        }
    }
    acc.iter().sum::<f32>() + rest
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
        let linear = get("gru_rel_pos_linear.weight", &[8, head_dim])?;
        let bias = get("gru_rel_pos_linear.bias", &[8])?;
        let mut weight = vec![0f32; 2 * head_dim];
        for (o, row) in linear.chunks_exact(head_dim).enumerate() {
            let sum = &mut weight[(o / 4) * head_dim..(o / 4 + 1) * head_dim];
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        Ok(Self {
            weight,
            bias: [bias[..4].iter().sum(), bias[4..].iter().sum()],
            konst: get("gru_rel_pos_const", &[1, heads, 1, 1])?,
            heads,
            head_dim,
        })
    }

    /// The gate of every frame and head: `x` is the attention input `[frames, hidden_size]`,
    /// the result `[frames, heads]`.
    pub(crate) fn gates(&self, x: &[f32]) -> Vec<f32> {
        let hd = self.head_dim;
        let (wa, wb) = self.weight.split_at(hd);
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        x.chunks_exact(self.heads * hd)
            .flat_map(|row| {
                row.chunks_exact(hd)
                    .zip(&self.konst)
                    .map(move |(xs, &konst)| {
                        let a = sigmoid(dot(wa, xs) + self.bias[0]);
                        let b = sigmoid(dot(wb, xs) + self.bias[1]);
                        a * (b * konst - 1.0) + 2.0
                    })
            })
            .collect()
    }

    /// The gates of every frame and head of `x` (`[b, t, d]`) as a `[b, heads, t, 1]` f32
    /// tensor, computed with candle's ops on `x`'s device (no copy to the host on a GPU).
    pub(crate) fn gates_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (heads, hd) = (self.heads, self.head_dim);
        let device = x.device();
        // [b, t, heads, hd] -> [b * t * heads, hd] x [hd, 2] -> [b * t * heads, 2]
        let weight = Tensor::from_slice(&self.weight, (2, hd), device)?;
        let bias = Tensor::from_slice(&self.bias, (1, 2), device)?;
        let p = x
            .to_dtype(DType::F32)?
            .reshape((b * t * heads, hd))?
            .matmul(&weight.t()?)?
            .broadcast_add(&bias)?;
        let s = candle_nn::ops::sigmoid(&p)?;
        let a = s.narrow(1, 0, 1)?.reshape((b, t, heads))?;
        let s_b = s.narrow(1, 1, 1)?.reshape((b, t, heads))?;
        let konst = Tensor::from_slice(&self.konst, (1, 1, heads), device)?;
        let gate = ((a * (s_b.broadcast_mul(&konst)? - 1.0)?)? + 2.0)?;
        Ok(gate.transpose(1, 2)?.unsqueeze(3)?.contiguous()?)
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
