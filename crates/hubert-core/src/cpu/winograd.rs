//! The conv feature encoder's stride-2, kernel-3 layers (four of hubert-base's seven, 84% of
//! its conv multiply-adds) with Winograd's minimal filtering F(2,2) on the even taps: 5 GEMM
//! passes of `c_in` depth per pair of output frames instead of 6.
//!
//! With taps `W0, W1, W2` (`[c_in, c_out]` each) and input frames `x`, a pair of outputs reads
//! frames `x0..x4 = x[4s..4s+4]`:
//!
//! ```text
//! y[2s]   = W0 x0 + W1 x1 + W2 x2 = W0 (x0 - x2) + W1 x1 + (W0 + W2) x2
//! y[2s+1] = W0 x2 + W1 x3 + W2 x4 = (W0 + W2) x2 + W1 x3 + W2 (x4 - x2)
//! ```
//!
//! so with `z = (W0 + W2) x2` shared by both, each pair costs `[x0 - x2 | x1] . [W0; W1]`,
//! `[x3 | x4 - x2] . [W1; W2]` and `z`: three GEMMs over one transformed input whose rows are
//! `[x0 - x2 | x1 | x2 | x3 | x4 - x2]` (`5 c_in` wide, 1.25x the input). The previous layer's
//! activation pass writes that layout directly ([`to_winograd`]), and this layer's `z` is added
//! in the next activation pass, so the transform costs no extra pass over memory.
//!
//! With the bf16 kernel the transformed input is written as bf16 directly (half the bytes, and
//! no rounding pass per product).
//!
//! Numerics: the same products summed in another order (f32 accumulation; `x0 - x2` and
//! `W0 + W2` rounded once each); parity with transformers is unchanged (tests/parity.rs).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::gemm::{bf16_bits, gemm_raw, padded_ld, AElem, Init, Kernel, PackedB};
use crate::cpu::{gelu_erf, multiversion, threads, SendPtr};

/// The row stride of the transformed input of `c` channels: `5c` values and, where `5c` values
/// would be a multiple of 1 KiB, one cache line of zeros ([`padded_ld`]: then the products read
/// the rows in place instead of packing them; measured 201-202 against 212-218 GFLOP/s).
fn q_width<T>(c: usize) -> usize {
    padded_ld(5 * c, std::mem::size_of::<T>())
}

/// An element of the transformed input: f32 for the f32 kernel, bf16 bits for the bf16 one
/// (then the products read it in place: [`gemm_raw`]).
pub(crate) trait QElem: AElem {
    /// Writes `src` converted into `dst`.
    fn store(dst: &mut [MaybeUninit<Self>], src: &[f32]);
}

impl QElem for f32 {
    fn store(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            d.write(v);
        }
    }
}

multiversion! {
    /// `dst = bf16(src)` into uninitialised memory.
    fn round_row(dst: &mut [MaybeUninit<u16>], src: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            d.write(bf16_bits(v));
        }
    }
}

impl QElem for u16 {
    fn store(dst: &mut [MaybeUninit<u16>], src: &[f32]) {
        round_row(dst, src);
    }
}

/// Whether stride-2 kernel-3 conv layers run as [`WinogradConv`]: yes unless
/// `HUBERT_PROBE_WINOGRAD=0` (for A/B measurements).
pub(crate) fn enabled() -> bool {
    std::env::var("HUBERT_PROBE_WINOGRAD").map_or(true, |v| v != "0")
}

/// A stride-2 kernel-3 conv layer, weights prepacked as `W0 + W2`, `[W0; W1]` and `[W1; W2]`.
#[derive(Debug, Clone)]
pub(crate) struct WinogradConv {
    shared: PackedB,
    even: PackedB,
    odd: PackedB,
    bias: Option<Vec<f32>>,
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
}

impl WinogradConv {
    /// Packs a PyTorch `Conv1d` weight `[c_out, c_in, 3]` (row-major values) for `kernel`.
    pub(crate) fn new(
        kernel: Kernel,
        torch_weight: &[f32],
        bias: Option<Vec<f32>>,
        c_out: usize,
        c_in: usize,
    ) -> Self {
        assert_eq!(
            torch_weight.len(),
            c_out * c_in * 3,
            "weight is [c_out, c_in, 3]"
        );
        let tap = |j: usize, c: usize, o: usize| torch_weight[(o * c_in + c) * 3 + j];
        let mut shared = vec![0f32; c_in * c_out];
        let mut even = vec![0f32; 2 * c_in * c_out];
        let mut odd = vec![0f32; 2 * c_in * c_out];
        for c in 0..c_in {
            for o in 0..c_out {
                shared[c * c_out + o] = tap(0, c, o) + tap(2, c, o);
                even[c * c_out + o] = tap(0, c, o);
                even[(c_in + c) * c_out + o] = tap(1, c, o);
                odd[c * c_out + o] = tap(1, c, o);
                odd[(c_in + c) * c_out + o] = tap(2, c, o);
            }
        }
        Self {
            shared: PackedB::new(kernel, c_in, c_out, &shared, c_out, 1),
            even: PackedB::new(kernel, 2 * c_in, c_out, &even, c_out, 1),
            odd: PackedB::new(kernel, 2 * c_in, c_out, &odd, c_out, 1),
            bias,
            c_in,
            c_out,
        }
    }

    /// Output frames for `t_in` input frames (0 when too short).
    pub(crate) fn out_len(t_in: usize) -> usize {
        if t_in < 3 {
            0
        } else {
            (t_in - 3) / 2 + 1
        }
    }

    /// The transformed input `q` of `t_in` frames ([`to_winograd`]) -> `(y, z)`: `y` `[t_out,
    /// c_out]` holds each frame's even or odd part, `z` `[t_out.div_ceil(2), c_out]` the shared
    /// part and the bias; frame `r` of the conv's output is `y[r] + z[r / 2]` ([`Pre::Winograd`]).
    /// `q` holds f32 values for an f32 `kernel`, bf16 bits for the bf16 kernel (then `c_in` must
    /// be even).
    pub(crate) fn forward<T: QElem>(&self, q: &[T], t_in: usize) -> (Vec<f32>, Vec<f32>) {
        let (c, n) = (self.c_in, self.c_out);
        let t_out = Self::out_len(t_in);
        let (rows, pairs) = (t_out.div_ceil(2), t_out / 2);
        let w = q_width::<T>(c);
        assert_eq!(
            q.len(),
            rows * w,
            "transformed input is [rows, 5 c_in (padded)]"
        );
        if t_out == 0 {
            return (Vec::new(), Vec::new());
        }
        let init = Init::bias_or_zero(self.bias.as_deref());
        let mut z: Vec<f32> = Vec::with_capacity(rows * n);
        let mut y: Vec<f32> = Vec::with_capacity(t_out * n);
        // SAFETY: reads (row stride w >= 5c): the shared product's last row ends at (rows-1)*w +
        // 3c, the even one's at (rows-1)*w + 2c, the odd one's (pairs odd rows, from column 3c)
        // at (pairs-1)*w + 5c, all within q's rows*w. Writes: every value of z (rows x n); even frames 0, 2, ..,
        // 2(rows-1) <= t_out-1 and odd frames 1, .., 2 pairs-1 <= t_out-1 of y, row stride 2n:
        // together every value of the t_out x n buffer. Lengths are set after the writes.
        unsafe {
            gemm_raw(
                rows,
                q.as_ptr().add(2 * c),
                w,
                &self.shared,
                z.as_mut_ptr(),
                n,
                init,
                threads(),
            );
            z.set_len(rows * n);
            gemm_raw(
                rows,
                q.as_ptr(),
                w,
                &self.even,
                y.as_mut_ptr(),
                2 * n,
                Init::Zero,
                threads(),
            );
            gemm_raw(
                pairs,
                q.as_ptr().add(3 * c),
                w,
                &self.odd,
                y.as_mut_ptr().add(n),
                2 * n,
                Init::Zero,
                threads(),
            );
            y.set_len(t_out * n);
        }
        (y, z)
    }
}

/// A conv layer's output frames before normalisation and activation.
#[derive(Clone, Copy)]
pub(crate) enum Pre<'a> {
    /// `[t, c]` rows.
    Plain(&'a [f32]),
    /// A [`WinogradConv`]'s parts: frame `r` is `y[r] + z[r / 2]`.
    Winograd { y: &'a [f32], z: &'a [f32] },
}

/// What follows the conv: GELU, after a per-channel affine map (GroupNorm, its statistics
/// folded in) or a LayerNorm over each frame's channels (statistics in f64).
#[derive(Clone, Copy)]
pub(crate) enum Act<'a> {
    Gelu,
    Affine {
        scale: &'a [f32],
        shift: &'a [f32],
    },
    LayerNorm {
        weight: &'a [f32],
        bias: &'a [f32],
        eps: f64,
    },
}

multiversion! {
    /// `x = gelu(x)`.
    fn gelu_row(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_erf(*v);
        }
    }
}

multiversion! {
    /// `x = gelu(x * scale + shift)` per channel.
    fn affine_gelu_row(x: &mut [f32], scale: &[f32], shift: &[f32]) {
        for ((v, &sc), &sh) in x.iter_mut().zip(scale).zip(shift) {
            *v = gelu_erf(*v * sc + sh);
        }
    }
}

multiversion! {
    /// `dst = a + b`.
    fn add_row(dst: &mut [f32], a: &[f32], b: &[f32]) {
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d = x + y;
        }
    }
}

multiversion! {
    /// `a -= b`.
    fn sub_row(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x -= y;
        }
    }
}

impl Act<'_> {
    /// Normalises (if so) and activates one frame in place.
    fn apply(self, row: &mut [f32]) {
        match self {
            Act::Gelu => gelu_row(row),
            Act::Affine { scale, shift } => affine_gelu_row(row, scale, shift),
            Act::LayerNorm { weight, bias, eps } => {
                let c = row.len() as f64;
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c;
                let inv = 1.0 / (var + eps).sqrt();
                for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
                    *v = gelu_erf((((*v as f64 - mean) * inv) as f32) * w + b);
                }
            }
        }
    }
}

multiversion! {
    /// `dst = gelu(x)`.
    fn gelu_to(dst: &mut [f32], x: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(x) {
            *d = gelu_erf(v);
        }
    }
}

multiversion! {
    /// `dst = gelu(a + b)`.
    fn gelu_sum_to(dst: &mut [f32], a: &[f32], b: &[f32]) {
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d = gelu_erf(x + y);
        }
    }
}

multiversion! {
    /// `dst = gelu(x * scale + shift)` per channel.
    fn affine_gelu_to(dst: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32]) {
        for (((d, &v), &sc), &sh) in dst.iter_mut().zip(x).zip(scale).zip(shift) {
            *d = gelu_erf(v * sc + sh);
        }
    }
}

impl Pre<'_> {
    /// Frame `r` (of `c` channels), normalised and activated, into `out`.
    fn activated(self, act: Act<'_>, r: usize, c: usize, out: &mut [f32]) {
        let frame = r * c..(r + 1) * c;
        match (self, act) {
            (Pre::Plain(x), Act::Gelu) => gelu_to(out, &x[frame]),
            (Pre::Plain(x), Act::Affine { scale, shift }) => {
                affine_gelu_to(out, &x[frame], scale, shift)
            }
            (Pre::Winograd { y, z }, Act::Gelu) => {
                let s = r / 2;
                gelu_sum_to(out, &y[frame], &z[s * c..(s + 1) * c]);
            }
            (Pre::Plain(x), _) => {
                out.copy_from_slice(&x[frame]);
                act.apply(out);
            }
            (Pre::Winograd { y, z }, _) => {
                let s = r / 2;
                add_row(out, &y[frame], &z[s * c..(s + 1) * c]);
                act.apply(out);
            }
        }
    }
}

/// A [`WinogradConv`]'s frames `y[r] + z[r / 2]` as `[t, c]` rows (before any norm).
pub(crate) fn combine(y: &[f32], z: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0f32; y.len()];
    out.par_chunks_mut(c * 32)
        .enumerate()
        .for_each(|(chunk, rows)| {
            for (i, row) in rows.chunks_exact_mut(c).enumerate() {
                let (r, s) = (chunk * 32 + i, (chunk * 32 + i) / 2);
                add_row(row, &y[r * c..(r + 1) * c], &z[s * c..(s + 1) * c]);
            }
        });
    out
}

/// Normalises (if so) and activates `[t, c]` rows in place.
pub(crate) fn activate_inplace(x: &mut [f32], act: Act<'_>, c: usize) {
    x.par_chunks_mut(c * 32).for_each(|rows| {
        for row in rows.chunks_exact_mut(c) {
            act.apply(row);
        }
    });
}

/// Activates `t` frames of `c` channels into `[t, c]` rows.
pub(crate) fn activate(pre: Pre<'_>, act: Act<'_>, t: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; t * c];
    out.par_chunks_mut(c * 32)
        .enumerate()
        .for_each(|(chunk, rows)| {
            for (i, row) in rows.chunks_exact_mut(c).enumerate() {
                pre.activated(act, chunk * 32 + i, c, row);
            }
        });
    out
}

/// Activates `t` frames of `c` channels into the transformed input of a [`WinogradConv`] with
/// `t` input frames: row `s` is `[g0 - g2 | g1 | g2 | g3 | g4 - g2]` with `gj` activated frame
/// `4s + j` (then zeros up to the padded row stride); a last row without a pair (odd output
/// count) holds zeros in its last two parts.
pub(crate) fn to_winograd<T: QElem>(pre: Pre<'_>, act: Act<'_>, t: usize, c: usize) -> Vec<T> {
    let t_out = WinogradConv::out_len(t);
    let (rows, pairs) = (t_out.div_ceil(2), t_out / 2);
    let width = q_width::<T>(c);
    let mut q: Vec<T> = Vec::with_capacity(rows * width);
    const CHUNK: usize = 8;
    let base = SendPtr(q.as_mut_ptr());
    (0..rows.div_ceil(CHUNK)).into_par_iter().for_each(|chunk| {
        let (s0, s1) = (chunk * CHUNK, ((chunk + 1) * CHUNK).min(rows));
        // SAFETY: the chunks cover disjoint row ranges of q's capacity (rows * width).
        let dst: &mut [MaybeUninit<T>] = unsafe {
            std::slice::from_raw_parts_mut(
                base.get().add(s0 * width) as *mut MaybeUninit<T>,
                (s1 - s0) * width,
            )
        };
        let mut first = vec![0f32; c];
        let mut last = vec![0f32; c];
        let mut row = vec![0f32; c];
        pre.activated(act, 4 * s0, c, &mut first);
        for (s, out) in (s0..s1).zip(dst.chunks_exact_mut(width)) {
            let (d0, rest) = out.split_at_mut(c);
            let (d1, rest) = rest.split_at_mut(c);
            let (d2, rest) = rest.split_at_mut(c);
            let (d3, rest) = rest.split_at_mut(c);
            let (d4, padding) = rest.split_at_mut(c);
            T::store(padding, &[0.0; 64][..padding.len()]);
            pre.activated(act, 4 * s + 2, c, &mut row);
            T::store(d2, &row);
            sub_row(&mut first, &row);
            T::store(d0, &first);
            pre.activated(act, 4 * s + 1, c, &mut last);
            T::store(d1, &last);
            if s < pairs {
                pre.activated(act, 4 * s + 3, c, &mut last);
                T::store(d3, &last);
                // Frame 4s + 4 is the next row's first.
                pre.activated(act, 4 * s + 4, c, &mut first);
                last.copy_from_slice(&first);
                sub_row(&mut last, &row);
                T::store(d4, &last);
            } else {
                last.fill(0.0);
                T::store(d3, &last);
                T::store(d4, &last);
            }
        }
    });
    // SAFETY: every row's five parts were written above.
    unsafe { q.set_len(rows * width) };
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct conv sum, then GELU, for comparison.
    fn reference(w: &[f32], b: &[f32], x: &[f32], c_in: usize, c_out: usize, t: usize) -> Vec<f64> {
        let t_out = WinogradConv::out_len(t);
        let mut y = vec![0f64; t_out * c_out];
        for r in 0..t_out {
            for o in 0..c_out {
                let mut acc = b[o] as f64;
                for c in 0..c_in {
                    for j in 0..3 {
                        acc += w[(o * c_in + c) * 3 + j] as f64 * x[(2 * r + j) * c_in + c] as f64;
                    }
                }
                y[r * c_out + o] = acc;
            }
        }
        y
    }

    fn gelu64(v: f64) -> f64 {
        // erf by its series (|v| small in these tests).
        let z = v / std::f64::consts::SQRT_2;
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        0.5 * v * (1.0 + 2.0 / std::f64::consts::PI.sqrt() * sum)
    }

    #[test]
    fn two_winograd_layers_equal_the_direct_convs() {
        for kernel in Kernel::available() {
            // Odd and even output counts in both layers, and a too-short input.
            for t in [3usize, 4, 5, 7, 9, 22, 23, 37, 40] {
                // Even input widths: the bf16 kernel reads k-pairs.
                case(kernel, t, (6, 8, 7));
            }
            // Widths whose transformed rows get padded (5c values a multiple of 1 KiB).
            case(kernel, 11, (512, 256, 3));
        }
    }

    fn case(kernel: Kernel, t: usize, (c0, c1, c2): (usize, usize, usize)) {
        let tol = if kernel.is_bf16() { 5e-2 } else { 2e-5 };
        let wave = |n: usize, a: usize, m: usize, s: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * a % m) as f32 - (m / 2) as f32) * s)
                .collect()
        };
        let (w1, b1) = (wave(c1 * c0 * 3, 37, 11, 0.1), wave(c1, 3, 5, 0.2));
        let (w2, b2) = (wave(c2 * c1 * 3, 29, 13, 0.08), wave(c2, 7, 5, 0.1));
        let x = wave(t * c0, 13, 7, 0.3);
        let l1 = WinogradConv::new(kernel, &w1, Some(b1.clone()), c1, c0);
        let l2 = WinogradConv::new(kernel, &w2, Some(b2.clone()), c2, c1);

        let t1 = WinogradConv::out_len(t);
        let (y2, z2) = if kernel.is_bf16() {
            let q1 = to_winograd::<u16>(Pre::Plain(&x), Act::Gelu, t, c0);
            let (y1, z1) = l1.forward(&q1, t);
            let q2 = to_winograd::<u16>(Pre::Winograd { y: &y1, z: &z1 }, Act::Gelu, t1, c1);
            l2.forward(&q2, t1)
        } else {
            let q1 = to_winograd::<f32>(Pre::Plain(&x), Act::Gelu, t, c0);
            let (y1, z1) = l1.forward(&q1, t);
            let q2 = to_winograd::<f32>(Pre::Winograd { y: &y1, z: &z1 }, Act::Gelu, t1, c1);
            l2.forward(&q2, t1)
        };
        let t2 = WinogradConv::out_len(t1);
        let out = activate(Pre::Winograd { y: &y2, z: &z2 }, Act::Gelu, t2, c2);

        let gx: Vec<f32> = x.iter().map(|&v| gelu64(v as f64) as f32).collect();
        let r1: Vec<f32> = reference(&w1, &b1, &gx, c0, c1, t)
            .into_iter()
            .map(|v| gelu64(v) as f32)
            .collect();
        let r2: Vec<f64> = reference(&w2, &b2, &r1, c1, c2, t1)
            .into_iter()
            .map(gelu64)
            .collect();
        assert_eq!(out.len(), t2 * c2, "t={t}");
        for (i, (&got, &want)) in out.iter().zip(&r2).enumerate() {
            assert!(
                (got as f64 - want).abs() < tol,
                "{kernel:?} t={t} value {i}: {got} vs {want}"
            );
        }
    }
}
