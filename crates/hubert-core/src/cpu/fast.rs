//! The transformer layers on the CPU, on plain `[frames, channels]` buffers: fused QKV
//! projection, per-head attention as small GEMMs with the softmax in between, LayerNorm with the
//! residual add, and the feed-forward with a vectorised exact GELU. Every product goes through
//! [`crate::cpu::gemm`] with the weights packed once at load time (fp32, or bf16 with fp32
//! accumulation for `--dtype bf16`); norms, softmax and GELU always run in f32.
//!
//! candle's generic path for the same layer spends much of its time outside the matrix
//! products: head split/merge copies, a scalar softmax, separate bias adds and LayerNorms (see
//! docs/PERFORMANCE.md for the profile before and after).

use rayon::prelude::*;

use crate::cpu::gemm::{gemm_new, gemm_raw, padded_ld, Init, Kernel, PackedB};
use crate::cpu::tiled::{self, Tiling};
use crate::cpu::{self, threads, SendPtr};

/// `nn.LayerNorm` weights.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub(crate) fn new(weight: Vec<f32>, bias: Vec<f32>, eps: f64) -> Self {
        assert_eq!(weight.len(), bias.len());
        Self {
            weight,
            bias,
            eps: eps as f32,
        }
    }

    /// Normalises each row of `x` in place.
    pub(crate) fn forward_inplace(&self, x: &mut [f32]) {
        let d = self.weight.len();
        x.par_chunks_mut(d * 16).for_each(|rows| {
            for row in rows.chunks_exact_mut(d) {
                cpu::layer_norm_row(row, &self.weight, &self.bias, self.eps);
            }
        });
    }

    /// `x = LayerNorm(x + y)`, row by row.
    pub(crate) fn add_forward_inplace(&self, x: &mut [f32], y: &[f32]) {
        let d = self.weight.len();
        x.par_chunks_mut(d * 16)
            .zip(y.par_chunks(d * 16))
            .for_each(|(rows, add)| {
                for (row, add) in rows.chunks_exact_mut(d).zip(add.chunks_exact(d)) {
                    cpu::add_inplace(row, add);
                    cpu::layer_norm_row(row, &self.weight, &self.bias, self.eps);
                }
            });
    }

    /// A normalised copy of `x`.
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        self.forward_inplace(&mut y);
        y
    }
}

/// `nn.Linear(k, n)` packed for one GEMM kernel.
#[derive(Debug, Clone)]
pub(crate) struct FastLinear {
    weight: PackedB,
    bias: Vec<f32>,
}

impl FastLinear {
    /// From PyTorch's `[n, k]` weight and `[n]` bias.
    pub(crate) fn new(kernel: Kernel, weight: &[f32], bias: Vec<f32>, k: usize, n: usize) -> Self {
        assert_eq!(bias.len(), n);
        Self {
            weight: PackedB::linear(kernel, weight, k, n),
            bias,
        }
    }

    /// `x [m, k]` -> `[m, n]`.
    pub(crate) fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        gemm_new(
            m,
            x,
            self.weight.k(),
            &self.weight,
            Init::Bias(&self.bias),
            threads(),
        )
    }
}

/// WavLM's gated relative position bias for one layer's attention (see `crate::model`'s
/// `wavlm` module): added to the scaled scores as `gate(x_i, h) * rows[h][j - i + t - 1]`.
pub(crate) struct PositionBias<'a> {
    /// `[heads][2t - 1]`: entry `k` of head `h` is the bias for `key - query = k - (t - 1)`.
    pub(crate) rows: &'a [f32],
    /// The gates `[frames, heads]` of the attention input `[frames, d]`.
    pub(crate) gates: &'a (dyn Fn(&[f32]) -> Vec<f32> + Sync),
}

/// One encoder layer (`HubertEncoderLayer` / `HubertEncoderLayerStableLayerNorm`, and the
/// wav2vec2, data2vec-audio and WavLM layers of the same shape), exact-GELU feed-forward.
#[derive(Debug)]
pub(crate) struct FastLayer {
    /// q, k and v projections as one `[d, 3d]` product.
    pub(crate) qkv: FastLinear,
    pub(crate) out_proj: FastLinear,
    pub(crate) layer_norm: Norm,
    pub(crate) intermediate: FastLinear,
    pub(crate) output: FastLinear,
    pub(crate) final_layer_norm: Norm,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) stable_layer_norm: bool,
    /// Kernel for the attention products (fp32: they are a few percent of the work).
    pub(crate) attention_kernel: Kernel,
}

impl FastLayer {
    /// `x` `[b * t, d]` in place; `bias`: WavLM's position bias for this layer; `tiling`:
    /// attention in tiles ([`tiled`]) instead of each head's full score matrix.
    pub(crate) fn forward(
        &self,
        x: &mut [f32],
        b: usize,
        t: usize,
        bias: Option<&PositionBias>,
        tiling: Option<Tiling>,
    ) {
        let m = b * t;
        if self.stable_layer_norm {
            let attn = self.attention(&self.layer_norm.forward(x), b, t, bias, tiling);
            cpu::add_inplace(x, &attn);
            let ff = self.feed_forward(&self.final_layer_norm.forward(x), m);
            cpu::add_inplace(x, &ff);
        } else {
            let attn = self.attention(x, b, t, bias, tiling);
            self.layer_norm.add_forward_inplace(x, &attn);
            let ff = self.feed_forward(x, m);
            self.final_layer_norm.add_forward_inplace(x, &ff);
        }
    }

    fn feed_forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let _span = tracing::trace_span!("feed-forward").entered();
        // The intermediate's rows are padded (`padded_ld`) so that the output product reads
        // them in place instead of packing them.
        let n = self.intermediate.weight.n();
        assert!(x.len() >= m * self.intermediate.weight.k(), "x is [m, k]");
        let ld = padded_ld(n, 4);
        let mut h: Vec<f32> = Vec::with_capacity(m * ld);
        // SAFETY: x is [m, k] (asserted above); the product writes the m x n tile
        // of h (row stride ld) and the loop below the ld - n padding values of each row, so every
        // value is written before the length is set.
        unsafe {
            let hp = h.as_mut_ptr();
            gemm_raw(
                m,
                x.as_ptr(),
                self.intermediate.weight.k(),
                &self.intermediate.weight,
                hp,
                ld,
                Init::Bias(&self.intermediate.bias),
                threads(),
            );
            for row in 0..m {
                std::ptr::write_bytes(hp.add(row * ld + n), 0, ld - n);
            }
            h.set_len(m * ld);
        }
        h.par_chunks_mut(ld * 16).for_each(|rows| {
            for row in rows.chunks_exact_mut(ld) {
                cpu::gelu_erf_inplace_serial(&mut row[..n]);
            }
        });
        let out = &self.output;
        let mut y: Vec<f32> = Vec::with_capacity(m * out.weight.n());
        // SAFETY: h holds m rows of ld >= k values; y gets every value of its m x n tile.
        unsafe {
            gemm_raw(
                m,
                h.as_ptr(),
                ld,
                &out.weight,
                y.as_mut_ptr(),
                out.weight.n(),
                Init::Bias(&out.bias),
                threads(),
            );
            y.set_len(m * out.weight.n());
        }
        y
    }

    /// Multi-head self-attention without masking (with WavLM's gated position bias when
    /// given), out projection included.
    fn attention(
        &self,
        x: &[f32],
        b: usize,
        t: usize,
        bias: Option<&PositionBias>,
        tiling: Option<Tiling>,
    ) -> Vec<f32> {
        let _span = tracing::trace_span!("attention").entered();
        let (hd, heads) = (self.head_dim, self.heads);
        let d = hd * heads;
        let qkv = self.qkv.forward(x, b * t);
        let mut ctx = vec![0f32; b * t * d];
        if let Some(tiling) = tiling {
            let _core = tracing::trace_span!("attention-tiled").entered();
            tiled::attention(
                self.attention_kernel,
                &qkv,
                x,
                b,
                t,
                heads,
                hd,
                bias,
                tiling,
                &mut ctx,
            );
            drop(qkv);
            return self.out_proj.forward(&ctx, b * t);
        }
        let dst = SendPtr(ctx.as_mut_ptr());
        let scaling = (hd as f32).powf(-0.5);
        let core = tracing::trace_span!("attention-core").entered();
        let gates = bias.map(|bias| (bias.gates)(x));
        (0..b * heads).into_par_iter().for_each(|task| {
            let (bi, h) = (task / heads, task % heads);
            let base = bi * t * 3 * d + h * hd;
            // scores[i, j] = q_i . k_j: B[p][j] = k[j][p], rows of qkv 3d apart.
            let keys = PackedB::new(self.attention_kernel, hd, t, &qkv[base + d..], 1, 3 * d);
            let mut scores = gemm_new(t, &qkv[base..], 3 * d, &keys, Init::Zero, 1);
            match bias.zip(gates.as_deref()) {
                None => {
                    for row in scores.chunks_exact_mut(t) {
                        cpu::softmax_row(row, scaling);
                    }
                }
                Some((bias, gates)) => {
                    let width = 2 * t - 1;
                    let rows = &bias.rows[h * width..(h + 1) * width];
                    for (i, row) in scores.chunks_exact_mut(t).enumerate() {
                        let gate = gates[(bi * t + i) * heads + h];
                        let rel = &rows[t - 1 - i..2 * t - 1 - i];
                        for (v, &r) in row.iter_mut().zip(rel) {
                            *v = *v * scaling + gate * r;
                        }
                        cpu::softmax_row(row, 1.0);
                    }
                }
            }
            let values = PackedB::new(self.attention_kernel, t, hd, &qkv[base + 2 * d..], 3 * d, 1);
            // SAFETY: reads of `scores` are t rows of t; writes are the t x hd tile of batch bi
            // and head h in `ctx` (row stride d), which no other task touches.
            unsafe {
                gemm_raw(
                    t,
                    scores.as_ptr(),
                    t,
                    &values,
                    dst.get().add(bi * t * d + h * hd),
                    d,
                    Init::Zero,
                    1,
                );
            }
        });
        drop(core);
        self.out_proj.forward(&ctx, b * t)
    }
}
