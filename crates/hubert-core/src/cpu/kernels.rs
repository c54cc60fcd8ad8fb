//! CPU kernels for the parts of HuBERT that a generic tensor library does poorly: the conv
//! feature encoder and the grouped positional conv, in channels-last layout (`[T, C]` rows), as
//! GEMMs ([`crate::cpu::gemm`], fp32 or bf16 operands) over *strided views* of the input with no
//! im2col copy, plus a fused, vectorised exact GELU (erf), fused norm + GELU passes, and the
//! row-wise LayerNorm / softmax of the transformer layers (`crate::cpu::fast`). Element-wise loops
//! are compiled for AVX-512, AVX2 + FMA and the baseline, and picked at run time.
//!
//! Why: in channels-last layout, the receptive field of output frame `t` of a conv with kernel
//! `k` and stride `s` is the contiguous slice `x[t*s*C_in .. (t*s+k)*C_in]`, so the conv is one
//! GEMM whose left operand is the input itself with row stride `s*C_in`. candle's conv1d works
//! channels-first: an im2col gather, a GEMM, and a transposed copy back, per layer; its GELU
//! calls libm's `erff` per element. Measured on hubert-base, 5 s clip, 2 threads (see
//! docs/PERFORMANCE.md for the figures).
//!
//! Numerics: sums in f32 (GEMM) like PyTorch's; conv norm statistics in f64, LayerNorm's in f32
//! (two passes); GELU's erf through the
//! Abramowitz-Stegun 7.1.26 rational approximation (|error| < 1.5e-7) with a polynomial `exp`,
//! so every hidden state stays within the parity tests' 1e-4 of transformers.

use rayon::prelude::*;

use crate::cpu::gemm::{gemm_new, gemm_raw, Init, Kernel, PackedB};

/// Threads for GEMM: candle's setting (RAYON_NUM_THREADS or the core count).
pub(crate) fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// A conv layer's weight prepacked for channels-last GEMM: `[k * c_in, c_out]`, row
/// `j * c_in + c` holding tap `j` of input channel `c`.
#[derive(Debug, Clone)]
pub(crate) struct PackedConv {
    weight: PackedB,
    bias: Option<Vec<f32>>,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
}

impl PackedConv {
    /// Packs a PyTorch `Conv1d` weight `[c_out, c_in, k]` (row-major values) for `kernel`.
    pub(crate) fn new(
        kernel: Kernel,
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
            weight: PackedB::new(kernel, k * c_in, c_out, &weight, c_out, 1),
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
        // The last row read starts at (t_out-1)*stride*c_in and spans k*c_in values, which
        // ends at or before t_in*c_in because (t_out-1)*stride + k <= t_in.
        let init = Init::bias_or_zero(self.bias.as_deref());
        gemm_new(
            t_out,
            x,
            self.stride * self.c_in,
            &self.weight,
            init,
            threads(),
        )
    }
}

/// The grouped positional conv (`kernel`, `groups`, "same" padding `kernel / 2`, last frame
/// dropped for even kernels), weights prepacked per group as `[kernel * cg, cg]`.
#[derive(Debug, Clone)]
pub(crate) struct PackedGroupedConv {
    weights: Vec<PackedB>,
    bias: Vec<f32>,
    kernel: usize,
    groups: usize,
    dim: usize,
}

impl PackedGroupedConv {
    /// Packs a PyTorch grouped `Conv1d` weight `[dim, dim / groups, kernel]` for `gemm_kernel`.
    pub(crate) fn new(
        gemm_kernel: Kernel,
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
                PackedB::new(gemm_kernel, kernel * cg, cg, &w, cg, 1)
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
        let mut out = vec![0f32; t * d];
        let dst = SendPtr(out.as_mut_ptr());
        // One task per group (each a single-threaded GEMM): groups write disjoint columns.
        (0..self.groups).into_par_iter().for_each(|g| {
            let mut xg = vec![0f32; padded * cg];
            for (row, src) in x.chunks_exact(d).enumerate() {
                xg[(row + pad) * cg..(row + pad + 1) * cg]
                    .copy_from_slice(&src[g * cg..(g + 1) * cg]);
            }
            // Output frame i reads padded rows i..i+k: a contiguous slice of k*cg values, rows
            // cg apart; frames 0..t cover every kept output (the extra frame of an even kernel
            // is never computed).
            // SAFETY: the last row read starts at (t-1)*cg and spans k*cg values, ending at
            // (t-1+k)*cg <= padded*cg since t-1+k <= t+2*pad; the writes are the t x cg tile at
            // column g*cg of `out` (row stride d), which no other group touches.
            unsafe {
                gemm_raw(
                    t,
                    xg.as_ptr(),
                    cg,
                    &self.weights[g],
                    dst.get().add(g * cg),
                    d,
                    Init::Bias(&self.bias[g * cg..(g + 1) * cg]),
                    1,
                );
            }
        });
        out
    }
}

/// A pointer handed to rayon tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: users write disjoint ranges (stated at each use).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the raw field).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// `exp(v)` for `v <= 0` as branch-free f32 code LLVM vectorises: `2^n * p(r)` with
/// `v = n ln2 + r`, `|r| <= ln2 / 2`, a degree-6 Taylor polynomial (relative error < 2e-7).
/// `n` is rounded by adding `1.5 * 2^23`, which leaves it in the low mantissa bits, so `2^n` is
/// built with integer ops on those bits (a float-to-int `as` cast saturates, which LLVM does
/// not vectorise: it cost softmax and GELU a scalar conversion per value).
#[inline(always)]
pub(crate) fn exp_neg(v: f32) -> f32 {
    let v = v.max(-87.0);
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to an integer
    let shifted = v * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = v - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // shifted's bits are ROUND's plus n (|n| <= 126 < 2^22); 2^n has exponent field n + 127.
    let exponent = (shifted.to_bits() as i32)
        .wrapping_sub(ROUND.to_bits() as i32)
        .wrapping_add(127);
    p * f32::from_bits((exponent as u32) << 23)
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, with erf from Abramowitz-Stegun 7.1.26.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
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

/// Defines `fn $name(args)` whose body is compiled three times (AVX-512, AVX2+FMA, baseline)
/// and picked at run time: LLVM vectorises the plain loops 16 or 8 wide instead of SSE2's 4.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
                /// The body compiled for AVX-512.
                ///
                /// # Safety
                /// The CPU must have AVX-512 F/DQ/VL/BW, AVX2 and FMA
                /// ([`$crate::cpu::features`] says [`$crate::cpu::Isa::Avx512`]).
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                /// The body compiled for AVX2 + FMA.
                ///
                /// # Safety
                /// The CPU must have AVX2 and FMA ([`$crate::cpu::features`] says
                /// [`$crate::cpu::Isa::Avx2`] or wider).
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                match $crate::cpu::features().isa {
                    // SAFETY: the CPU has the features (detected by `cpu::features`).
                    $crate::cpu::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::cpu::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::cpu::Isa::Portable => {}
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

multiversion! {
    /// Exact GELU over a slice.
    fn gelu_slice(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_erf(*v);
        }
    }
}

/// Applies exact GELU in place on this thread.
pub(crate) fn gelu_erf_inplace_serial(x: &mut [f32]) {
    gelu_slice(x);
}

/// Applies exact GELU in place, in parallel chunks.
pub(crate) fn gelu_erf_inplace(x: &mut [f32]) {
    x.par_chunks_mut(1 << 14).for_each(gelu_slice);
}

/// Sum of a slice in 16 independent lanes (vectorisable; f32 like PyTorch's reductions).
#[inline(always)]
fn sum_lanes(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + rest
}

multiversion! {
    /// LayerNorm of one row (two-pass mean and variance in f32), affine.
    pub(crate) fn layer_norm_row(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let n = row.len() as f32;
        let mean = sum_lanes(row, |v| v) / n;
        let var = sum_lanes(row, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

multiversion! {
    /// `x += y`.
    pub(crate) fn add_inplace(x: &mut [f32], y: &[f32]) {
        for (a, &b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

multiversion! {
    /// `softmax(row * scale)` in place (f32, max subtracted first).
    pub(crate) fn softmax_row(row: &mut [f32], scale: f32) {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let chunks = row.chunks_exact(16);
        let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for c in chunks {
            for (m, &v) in lanes.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        max = lanes.iter().fold(max, |m, &v| m.max(v));
        for v in row.iter_mut() {
            *v = exp_neg((*v - max) * scale);
        }
        let inv = 1.0 / sum_lanes(row, |v| v);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// GroupNorm with one group per channel over `[t, c]` rows as a per-channel affine map
/// `(scale, shift)`: statistics over time in f64, folded with the norm's weight and bias.
pub(crate) fn group_norm_affine(
    x: &[f32],
    t: usize,
    c: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    // Per-channel sums of (x - x[0]) and its square over time in one pass, in parallel row
    // blocks (f64 partial sums, vectorised); shifting by the first frame keeps the variance
    // E[d^2] - E[d]^2 free of cancellation for channels whose mean is far from zero.
    if t == 0 {
        return (weight.to_vec(), bias.to_vec());
    }
    let first: Vec<f64> = x[..c].iter().map(|&v| v as f64).collect();
    let sums = x
        .par_chunks(c * 256)
        .map(|rows| {
            let mut acc = vec![0f64; 2 * c];
            let (sum, sq) = acc.split_at_mut(c);
            for row in rows.chunks_exact(c) {
                accumulate_moments(sum, sq, row, &first);
            }
            acc
        })
        .reduce(
            || vec![0f64; 2 * c],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let (sum, sq) = sums.split_at(c);
    let n = t as f64;
    let mean: Vec<f64> = sum.iter().zip(&first).map(|(&s, &f)| f + s / n).collect();
    let var: Vec<f64> = sum
        .iter()
        .zip(sq)
        .map(|(&s, &q)| (q / n - (s / n) * (s / n)).max(0.0) * n)
        .collect();
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
    (scale, shift)
}

multiversion! {
    /// `sum[c] += d`, `sq[c] += d^2` with `d = row[c] - shift[c]`, in f64.
    fn accumulate_moments(sum: &mut [f64], sq: &mut [f64], row: &[f32], shift: &[f64]) {
        for (((s, q), &v), &k) in sum.iter_mut().zip(sq.iter_mut()).zip(row).zip(shift) {
            let d = v as f64 - k;
            *s += d;
            *q += d * d;
        }
    }
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
        for kernel in Kernel::available() {
            strided_conv_case(kernel);
        }
    }

    fn strided_conv_case(kernel: Kernel) {
        let tol = if kernel.is_bf16() { 3e-2 } else { 1e-5 };
        let (c_in, c_out, k, s, t) = (3, 4, 5, 2, 23);
        let w: Vec<f32> = (0..c_out * c_in * k)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..c_out).map(|o| o as f32 * 0.5).collect();
        let x: Vec<f32> = (0..t * c_in)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.2)
            .collect();
        let conv = PackedConv::new(kernel, &w, Some(b.clone()), c_out, c_in, k, s);
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
                assert!((y[to * c_out + o] - acc).abs() < tol, "{kernel:?}");
            }
        }
    }

    #[test]
    fn grouped_same_conv_equals_the_direct_sum() {
        for (gk, kernel) in Kernel::available()
            .into_iter()
            .flat_map(|gk| [(gk, 4usize), (gk, 5)])
        {
            let tol = if gk.is_bf16() { 3e-2 } else { 1e-5 };
            let (d, groups, t) = (6, 2, 9);
            let cg = d / groups;
            let w: Vec<f32> = (0..d * cg * kernel)
                .map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.05)
                .collect();
            let b: Vec<f32> = (0..d).map(|o| o as f32 * 0.1).collect();
            let x: Vec<f32> = (0..t * d)
                .map(|i| ((i * 17 % 9) as f32 - 4.0) * 0.3)
                .collect();
            let conv = PackedGroupedConv::new(gk, &w, b.clone(), d, groups, kernel);
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
                        (y[to * d + oc] - acc).abs() < tol,
                        "{gk:?} k={kernel} t={to} c={oc}"
                    );
                }
            }
        }
    }
}
