//! CPU fp32 kernels for the parts of HuBERT that a generic tensor library does poorly:
//! the conv feature encoder and the grouped positional conv, in channels-last layout
//! (`[T, C]` rows), as GEMMs over *strided views* of the input with no im2col copy, plus a
//! fused, vectorisable exact-GELU (erf) and fused norm + GELU passes.
//!
//! Why: in channels-last layout, the receptive field of output frame `t` of a conv with kernel
//! `k` and stride `s` is the contiguous slice `x[t*s*C_in .. (t*s+k)*C_in]`, so the conv is one
//! GEMM whose left operand is the input itself with row stride `s*C_in`. candle's conv1d works
//! channels-first: an im2col gather, a GEMM, and a transposed copy back, per layer; its GELU
//! calls libm's `erff` per element. Measured on hubert-base, 5 s clip, 2 threads (see
//! docs/PERFORMANCE.md for the figures).
//!
//! Numerics: sums in f32 (GEMM) like PyTorch's; norm statistics in f64; GELU's erf through the
//! Abramowitz-Stegun 7.1.26 rational approximation (|error| < 1.5e-7) with a polynomial `exp`,
//! so every hidden state stays within the parity tests' 1e-4 of transformers.

use rayon::prelude::*;

/// Threads for GEMM: candle's setting (RAYON_NUM_THREADS or the core count).
fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// `dst[m, n] (+)= lhs[m, k] * rhs[k, n]`: `lhs` rows start `lhs_rs` elements apart (they may
/// overlap: that is the conv trick), `rhs` is row-major `[k, n]`, `dst` rows are `dst_rs` apart.
/// With `accumulate`, `dst` is added to (it holds the bias).
///
/// # Safety
/// `lhs` must be valid for reads of `(m - 1) * lhs_rs + k` elements, `rhs` for `k * n`, and
/// `dst` for writes of `(m - 1) * dst_rs + n`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rows(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        1,
        n as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::Rayon(threads()),
    );
}

/// A conv layer's weight prepacked for channels-last GEMM: `[k * c_in, c_out]`, row
/// `j * c_in + c` holding tap `j` of input channel `c`.
#[derive(Debug, Clone)]
pub(crate) struct PackedConv {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
}

impl PackedConv {
    /// Packs a PyTorch `Conv1d` weight `[c_out, c_in, k]` (row-major values).
    pub(crate) fn new(
        torch_weight: &[f32],
        bias: Option<Vec<f32>>,
        c_out: usize,
        c_in: usize,
        k: usize,
        stride: usize,
    ) -> Self {
        let mut weight = vec![0f32; k * c_in * c_out];
        for o in 0..c_out {
            for c in 0..c_in {
                for j in 0..k {
                    weight[(j * c_in + c) * c_out + o] = torch_weight[(o * c_in + c) * k + j];
                }
            }
        }
        Self {
            weight,
            bias,
            k,
            stride,
            c_in,
            c_out,
        }
    }

    /// Output frames for `t_in` input frames (0 when too short).
    pub(crate) fn out_len(&self, t_in: usize) -> usize {
        if t_in < self.k {
            0
        } else {
            (t_in - self.k) / self.stride + 1
        }
    }

    /// `x` `[t_in, c_in]` -> `[t_out, c_out]`.
    pub(crate) fn forward(&self, x: &[f32], t_in: usize) -> Vec<f32> {
        assert_eq!(x.len(), t_in * self.c_in, "input is [t_in, c_in]");
        let t_out = self.out_len(t_in);
        let mut out = match &self.bias {
            Some(b) => b.repeat(t_out),
            None => vec![0f32; t_out * self.c_out],
        };
        if t_out > 0 {
            // SAFETY: the last row read starts at (t_out-1)*stride*c_in and spans k*c_in
            // elements, which ends at or before t_in*c_in because (t_out-1)*stride + k <= t_in.
            unsafe {
                gemm_rows(
                    t_out,
                    self.c_out,
                    self.k * self.c_in,
                    out.as_mut_ptr(),
                    self.c_out,
                    self.bias.is_some(),
                    x.as_ptr(),
                    self.stride * self.c_in,
                    self.weight.as_ptr(),
                );
            }
        }
        out
    }
}

/// The grouped positional conv (`kernel`, `groups`, "same" padding `kernel / 2`, last frame
/// dropped for even kernels), weights prepacked per group as `[kernel * cg, cg]`.
#[derive(Debug, Clone)]
pub(crate) struct PackedGroupedConv {
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
    kernel: usize,
    groups: usize,
    dim: usize,
}

impl PackedGroupedConv {
    /// Packs a PyTorch grouped `Conv1d` weight `[dim, dim / groups, kernel]`.
    pub(crate) fn new(
        torch_weight: &[f32],
        bias: Vec<f32>,
        dim: usize,
        groups: usize,
        kernel: usize,
    ) -> Self {
        let cg = dim / groups;
        let weights = (0..groups)
            .map(|g| {
                let mut w = vec![0f32; kernel * cg * cg];
                for o in 0..cg {
                    for c in 0..cg {
                        for j in 0..kernel {
                            w[(j * cg + c) * cg + o] =
                                torch_weight[((g * cg + o) * cg + c) * kernel + j];
                        }
                    }
                }
                w
            })
            .collect();
        Self {
            weights,
            bias,
            kernel,
            groups,
            dim,
        }
    }

    /// `x` `[t, dim]` -> `[t, dim]` (before the activation).
    pub(crate) fn forward(&self, x: &[f32], t: usize) -> Vec<f32> {
        let (d, cg, k) = (self.dim, self.dim / self.groups, self.kernel);
        let pad = k / 2;
        let padded = t + 2 * pad;
        let mut out = self.bias.repeat(t);
        let mut xg = vec![0f32; padded * cg];
        for g in 0..self.groups {
            for (row, src) in x.chunks_exact(d).enumerate() {
                xg[(row + pad) * cg..(row + pad + 1) * cg]
                    .copy_from_slice(&src[g * cg..(g + 1) * cg]);
            }
            // Output frame i reads padded rows i..i+k: a contiguous slice of k*cg values, rows
            // cg apart; frames 0..t cover every kept output (the extra frame of an even kernel
            // is never computed).
            // SAFETY: the last row read starts at (t-1)*cg and spans k*cg values, ending at
            // (t-1+k)*cg <= padded*cg since t-1+k <= t+2*pad; dst writes stay inside `out`.
            unsafe {
                gemm_rows(
                    t,
                    cg,
                    k * cg,
                    out.as_mut_ptr().add(g * cg),
                    d,
                    true,
                    xg.as_ptr(),
                    cg,
                    self.weights[g].as_ptr(),
                );
            }
        }
        out
    }
}

/// `exp(v)` for `v <= 0` as branch-free f32 code LLVM vectorises: `2^n * p(r)` with
/// `v = n ln2 + r`, `|r| <= ln2 / 2`, a degree-6 Taylor polynomial (relative error < 2e-7).
#[inline(always)]
fn exp_neg(v: f32) -> f32 {
    let v = v.max(-87.0);
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to an integer
    let n = (v * LOG2E + ROUND) - ROUND;
    let r = v - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, with erf from Abramowitz-Stegun 7.1.26.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let erf_abs = 1.0 - poly * exp_neg(-a * a);
    let erf = erf_abs.copysign(z);
    0.5 * x * (1.0 + erf)
}

/// Applies exact GELU in place, in parallel chunks.
pub(crate) fn gelu_erf_inplace(x: &mut [f32]) {
    x.par_chunks_mut(1 << 15).for_each(|chunk| {
        for v in chunk.iter_mut() {
            *v = gelu_erf(*v);
        }
    });
}

/// GroupNorm with one group per channel over `[t, c]` rows (statistics over time, per channel,
/// in f64), affine, then GELU, in place.
pub(crate) fn group_norm_gelu(
    x: &mut [f32],
    t: usize,
    c: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f64,
) {
    let mut mean = vec![0f64; c];
    for row in x.chunks_exact(c) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= t as f64);
    let mut var = vec![0f64; c];
    for row in x.chunks_exact(c) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            let d = v as f64 - m;
            *s += d * d;
        }
    }
    let scale: Vec<f32> = var
        .iter()
        .zip(weight)
        .map(|(&s, &w)| (w as f64 / (s / t as f64 + eps).sqrt()) as f32)
        .collect();
    let shift: Vec<f32> = mean
        .iter()
        .zip(&scale)
        .zip(bias)
        .map(|((&m, &sc), &b)| b - (m as f32) * sc)
        .collect();
    x.par_chunks_mut(c * 64).for_each(|rows| {
        for row in rows.chunks_exact_mut(c) {
            for ((v, &sc), &sh) in row.iter_mut().zip(&scale).zip(&shift) {
                *v = gelu_erf(*v * sc + sh);
            }
        }
    });
}

/// LayerNorm over the channels of each `[c]` row (statistics in f64), affine, then GELU.
pub(crate) fn layer_norm_gelu(x: &mut [f32], c: usize, weight: &[f32], bias: &[f32], eps: f64) {
    x.par_chunks_mut(c * 64).for_each(|rows| {
        for row in rows.chunks_exact_mut(c) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
                *v = gelu_erf((((*v as f64 - mean) * inv) as f32) * w + b);
            }
        }
    });
}

/// candle op: exact GELU on contiguous CPU f32 tensors through [`gelu_erf_inplace`].
pub(crate) struct GeluErf;

impl candle_core::CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-fast"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu-erf-fast: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu-erf-fast: contiguous input only");
        };
        let mut out = data[start..end].to_vec();
        gelu_erf_inplace(&mut out);
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // High-precision erf by its Taylor series (|x| <= 3) or asymptotics: enough for 1e-9.
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut sum = 0f64;
        let mut term = x;
        let mut n = 0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 5 {
            sum += term / (2 * n + 1) as f64;
            n += 1;
            term *= -x * x / n as f64;
            if n > 400 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn gelu_matches_the_exact_definition() {
        let mut worst = 0f64;
        for i in -2000..=2000 {
            let x = i as f32 * 0.005; // -10 .. 10
            let exact = 0.5 * x as f64 * (1.0 + erf_ref(x as f64 / 2f64.sqrt()));
            let err = (gelu_erf(x) as f64 - exact).abs();
            worst = worst.max(err / (1.0 + exact.abs()));
        }
        assert!(worst < 1e-6, "worst relative error {worst:e}");
        assert_eq!(gelu_erf(-200.0), -0.0);
        assert_eq!(gelu_erf(200.0), 200.0);
    }

    #[test]
    fn strided_conv_equals_the_direct_sum() {
        let (c_in, c_out, k, s, t) = (3, 4, 5, 2, 23);
        let w: Vec<f32> = (0..c_out * c_in * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..c_out).map(|o| o as f32 * 0.5).collect();
        let x: Vec<f32> = (0..t * c_in)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.2)
            .collect();
        let conv = PackedConv::new(&w, Some(b.clone()), c_out, c_in, k, s);
        let y = conv.forward(&x, t);
        let t_out = (t - k) / s + 1;
        assert_eq!(y.len(), t_out * c_out);
        for to in 0..t_out {
            for o in 0..c_out {
                let mut acc = b[o];
                for c in 0..c_in {
                    for j in 0..k {
                        acc += w[(o * c_in + c) * k + j] * x[(to * s + j) * c_in + c];
                    }
                }
                assert!((y[to * c_out + o] - acc).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn grouped_same_conv_equals_the_direct_sum() {
        for kernel in [4usize, 5] {
            let (d, groups, t) = (6, 2, 9);
            let cg = d / groups;
            let w: Vec<f32> = (0..d * cg * kernel)
                .map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.05)
                .collect();
            let b: Vec<f32> = (0..d).map(|o| o as f32 * 0.1).collect();
            let x: Vec<f32> = (0..t * d)
                .map(|i| ((i * 17 % 9) as f32 - 4.0) * 0.3)
                .collect();
            let conv = PackedGroupedConv::new(&w, b.clone(), d, groups, kernel);
            let y = conv.forward(&x, t);
            let pad = kernel / 2;
            for to in 0..t {
                for oc in 0..d {
                    let g = oc / cg;
                    let mut acc = b[oc];
                    for c in 0..cg {
                        for j in 0..kernel {
                            let ti = to as isize + j as isize - pad as isize;
                            if ti >= 0 && (ti as usize) < t {
                                acc +=
                                    w[(oc * cg + c) * kernel + j] * x[ti as usize * d + g * cg + c];
                            }
                        }
                    }
                    assert!(
                        (y[to * d + oc] - acc).abs() < 1e-5,
                        "k={kernel} t={to} c={oc}"
                    );
                }
            }
        }
    }
}
