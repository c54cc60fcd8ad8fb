//! Attention in tiles with an online softmax (the "flash attention" recurrence) on the CPU:
//! the `T x T` score matrix of a head is never stored, only one `query x key` tile of it at a
//! time, so the extra memory of a layer's attention is `O(T)` instead of `O(T^2)` (a 10-minute
//! clip has 30,000 frames: 3.6 GB of scores per head, 43 GB for hubert-base's 12 heads).
//!
//! For each query tile, the key tiles are visited in order; each row keeps its running maximum
//! `m` of the scaled scores, the running sum `l` of `exp(s - m)` and the unnormalised context
//! `acc = sum exp(s - m) v`. A new tile with a larger maximum `m'` rescales `l` and `acc` by
//! `exp(m - m')` first. After the last tile the context row is `acc / l`: the full softmax's
//! result, in a different order of the same f32 sums (equal within float rounding; the tests
//! compare with the full-matrix path at 1e-5).
//!
//! WavLM's gated relative position bias is added per tile from the `[heads][2T - 1]` bias rows
//! (it depends only on `key - query`), so nothing of size `T x T` exists for it either.

use rayon::prelude::*;

use crate::cpu::fast::PositionBias;
use crate::cpu::gemm::{gemm, Init, Kernel, PackedB};
use crate::cpu::{exp_neg, multiversion, SendPtr};

/// Tile sizes of [`attention`]: query rows per task and keys per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tiling {
    /// Query rows per task (each task holds `query x key` scores and `query x head_dim`
    /// accumulators).
    pub(crate) query: usize,
    /// Keys per step.
    pub(crate) key: usize,
}

impl Tiling {
    /// The tiles the model runs with: a 128 x 512 score tile is 256 KiB, which stays in L2.
    pub(crate) const DEFAULT: Tiling = Tiling {
        query: 128,
        key: 512,
    };
}

/// Up to this many frames, [`crate::cpu::fast`] computes each head's full score matrix (at
/// most 4096^2 f32 = 64 MiB per head in flight); above it, attention runs in tiles.
pub(crate) const FULL_ATTENTION_MAX_FRAMES: usize = 4096;

multiversion! {
    /// One row of a score tile: scales it (adding `gate * rel[j]` when `rel` is not empty),
    /// replaces each score `s` by `exp(s - m')` with `m'` the new running maximum, adds the
    /// row's sum to `sum`, and returns the factor `exp(m - m')` by which the row's earlier sum
    /// and accumulator must be rescaled (0 for the first tile).
    fn online_row(
        row: &mut [f32],
        scale: f32,
        gate: f32,
        rel: &[f32],
        max: &mut f32,
        sum: &mut f32,
    ) -> f32 {
        if rel.is_empty() {
            for v in row.iter_mut() {
                *v *= scale;
            }
        } else {
            for (v, &r) in row.iter_mut().zip(rel) {
                *v = *v * scale + gate * r;
            }
        }
        let mut lanes = [f32::NEG_INFINITY; 16];
        let chunks = row.chunks_exact(16);
        let mut tile_max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for c in chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        tile_max = lanes.iter().fold(tile_max, |m, &v| m.max(v));
        let new_max = max.max(tile_max);
        let correction = if *max == f32::NEG_INFINITY {
            0.0
        } else {
            exp_neg(*max - new_max)
        };
        let mut acc = [0f32; 16];
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
                *v = exp_neg(*v - new_max);
                *a += *v;
            }
        }
        let mut rest = 0f32;
        for v in chunks.into_remainder() {
            *v = exp_neg(*v - new_max);
            rest += *v;
        }
        *sum = *sum * correction + acc.iter().sum::<f32>() + rest;
        *max = new_max;
        correction
    }
}

multiversion! {
    /// `x *= factor`.
    fn scale_inplace(x: &mut [f32], factor: f32) {
        for v in x.iter_mut() {
            *v *= factor;
        }
    }
}

/// Multi-head attention without masking from the fused projections `qkv` (`[b * t, 3d]`: q, k
/// and v of each frame, heads `head_dim` apart), in tiles: writes the context `[b * t, d]`
/// (heads concatenated, before the out projection) into `ctx`. `x` is the attention input
/// (`[b * t, d]`), read only for WavLM's gates when `bias` is given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    kernel: Kernel,
    qkv: &[f32],
    x: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    head_dim: usize,
    bias: Option<&PositionBias>,
    tiling: Tiling,
    ctx: &mut [f32],
) {
    let hd = head_dim;
    let d = heads * hd;
    assert!(qkv.len() >= b * t * 3 * d, "qkv is [b * t, 3d]");
    assert!(ctx.len() >= b * t * d, "ctx is [b * t, d]");
    assert!(
        tiling.query > 0 && tiling.key > 0,
        "tiles hold at least one frame"
    );
    if t == 0 {
        return;
    }
    let scaling = (hd as f32).powf(-0.5);
    let query_tiles = t.div_ceil(tiling.query);
    let key_tiles = t.div_ceil(tiling.key);
    let dst = SendPtr(ctx.as_mut_ptr());
    // WavLM: every frame's gate per head, `[b * t, heads]`, computed once for the layer.
    let all_gates = bias.map(|bias| (bias.gates)(&x[..b * t * d]));
    // One (batch item, head) at a time: its keys and values are packed once, tile by tile
    // (`2 * t * head_dim` floats), and shared by every query tile, which run in parallel.
    for bh in 0..b * heads {
        let (bi, h) = (bh / heads, bh % heads);
        let packed: Vec<(PackedB, PackedB)> = (0..key_tiles)
            .into_par_iter()
            .map(|kt| {
                let j0 = kt * tiling.key;
                let n = tiling.key.min(t - j0);
                let kv = (bi * t + j0) * 3 * d + h * hd;
                // scores[r, j] = q_r . k_j: B[p][j] = k[j][p], rows of qkv 3d apart.
                let keys = PackedB::new(kernel, hd, n, &qkv[kv + d..], 1, 3 * d);
                let values = PackedB::new(kernel, n, hd, &qkv[kv + 2 * d..], 3 * d, 1);
                (keys, values)
            })
            .collect();
        let width = 2 * t - 1;
        let rel_rows = bias.map(|bias| &bias.rows[h * width..(h + 1) * width]);
        (0..query_tiles).into_par_iter().for_each(|qt| {
            let i0 = qt * tiling.query;
            let m = tiling.query.min(t - i0);
            // Row r of this tile is frame bi * t + i0 + r; its q starts at `base + r * 3d`.
            let base = (bi * t + i0) * 3 * d + h * hd;
            let gates: Vec<f32> = match &all_gates {
                Some(all) => (0..m).map(|r| all[(bi * t + i0 + r) * heads + h]).collect(),
                None => Vec::new(),
            };
            let mut max = vec![f32::NEG_INFINITY; m];
            let mut sum = vec![0f32; m];
            let mut acc = vec![0f32; m * hd];
            let mut scores = vec![0f32; m * tiling.key.min(t)];
            for (kt, (keys, values)) in packed.iter().enumerate() {
                let j0 = kt * tiling.key;
                let n = keys.n();
                let scores = &mut scores[..m * n];
                gemm(m, &qkv[base..], 3 * d, keys, scores, n, Init::Zero, 1);
                for (r, row) in scores.chunks_exact_mut(n).enumerate() {
                    let i = i0 + r;
                    let (gate, rel) = match rel_rows {
                        // Key j of query i reads entry j - i + t - 1.
                        Some(rows) => (gates[r], &rows[t - 1 - i + j0..t - 1 - i + j0 + n]),
                        None => (0.0, &[][..]),
                    };
                    let correction = online_row(row, scaling, gate, rel, &mut max[r], &mut sum[r]);
                    if j0 > 0 {
                        scale_inplace(&mut acc[r * hd..(r + 1) * hd], correction);
                    }
                }
                // acc [m, hd] += exp-scores [m, n] . v [n, hd] (acc starts at zero).
                gemm(m, scores, n, values, &mut acc, hd, Init::Accumulate, 1);
            }
            for (r, row) in acc.chunks_exact_mut(hd).enumerate() {
                scale_inplace(row, 1.0 / sum[r]);
                // SAFETY: row i0 + r of batch bi, columns h * hd .. (h + 1) * hd of `ctx`
                // (inside it: asserted above) belong to this task alone.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        row.as_ptr(),
                        dst.get().add((bi * t + i0 + r) * d + h * hd),
                        hd,
                    );
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition in f64: softmax(q k^T * scale + gate_i * rel[j - i]) v.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        qkv: &[f32],
        x: &[f32],
        t: usize,
        heads: usize,
        hd: usize,
        rows: Option<&[f32]>,
        gate: &dyn Fn(&[f32], usize) -> f32,
    ) -> Vec<f32> {
        let d = heads * hd;
        let scale = (hd as f64).powf(-0.5);
        let mut out = vec![0f32; t * d];
        for h in 0..heads {
            for i in 0..t {
                let q = &qkv[i * 3 * d + h * hd..][..hd];
                let g = gate(&x[i * d..(i + 1) * d], h) as f64;
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        let k = &qkv[j * 3 * d + d + h * hd..][..hd];
                        let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let bias =
                            rows.map_or(0.0, |r| g * r[h * (2 * t - 1) + j + t - 1 - i] as f64);
                        dot * scale + bias
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..hd {
                    let v: f64 = (0..t)
                        .map(|j| e[j] * qkv[j * 3 * d + 2 * d + h * hd + c] as f64)
                        .sum();
                    out[i * d + h * hd + c] = (v / total) as f32;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * amp
            })
            .collect()
    }

    /// Every tiling (tiles smaller than, dividing, not dividing and larger than `t`), with and
    /// without the bias, equals the f64 definition; large scores exercise the rescaling.
    #[test]
    fn tiled_attention_equals_the_definition() {
        let (t, heads, hd) = (37, 3, 8);
        let d = heads * hd;
        let qkv = values(t * 3 * d, 7, 6.0);
        let x = values(t * d, 11, 2.0);
        let rows = values(heads * (2 * t - 1), 13, 4.0);
        let gate = |x: &[f32], h: usize| 1.0 + 0.1 * x[h] + 0.05 * h as f32;
        for kernel in Kernel::available() {
            if kernel.is_bf16() {
                continue; // attention products run in f32 (`FastLayer::attention_kernel`)
            }
            for with_bias in [false, true] {
                let expected = reference(
                    &qkv,
                    &x,
                    t,
                    heads,
                    hd,
                    with_bias.then_some(&rows[..]),
                    &gate,
                );
                // The gates of every frame and head, `[t, heads]`, as `PositionBias` wants them.
                let gates = |x: &[f32]| -> Vec<f32> {
                    x.chunks_exact(d)
                        .flat_map(|frame| (0..heads).map(move |h| gate(frame, h)))
                        .collect()
                };
                let bias = PositionBias {
                    rows: &rows,
                    gates: &gates,
                };
                for (query, key) in [(1, 1), (4, 5), (16, 16), (37, 37), (64, 512), (5, 40)] {
                    let mut ctx = vec![f32::NAN; t * d];
                    attention(
                        kernel,
                        &qkv,
                        &x,
                        1,
                        t,
                        heads,
                        hd,
                        with_bias.then_some(&bias),
                        Tiling { query, key },
                        &mut ctx,
                    );
                    let worst = ctx
                        .iter()
                        .zip(&expected)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-5,
                        "{kernel:?} bias {with_bias} tiles {query}x{key}: {worst:e}"
                    );
                }
            }
        }
    }
}
