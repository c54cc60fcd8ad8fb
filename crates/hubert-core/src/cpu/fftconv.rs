//! The grouped positional conv (hubert-base: kernel 128, 16 groups of 48 channels, "same"
//! padding) as overlap-save FFT convolution: 2.35 GFLOP per 5 s clip as a direct conv, about
//! 0.1 GFLOP this way.
//!
//! Each channel's padded signal is cut into blocks of `n` samples that overlap by `k - 1`
//! (`n` the power of two at or above `2k`: 256 for k = 128), and each block's real FFT is taken.
//! Per frequency bin and group, the output spectra are a `cg x cg` complex matrix (the
//! conjugated spectra of the weights, computed once at load) times the input spectra; an inverse
//! FFT per block and channel gives `n - k + 1` output frames with no wrap-around.
//!
//! Numerics: f32 FFTs (relative error ~1e-7), f32 sums over channels; every hidden state stays
//! within the parity tests' 1e-4 of transformers' direct conv, in the f32 and bf16 modes alike
//! (the FFT path has no bf16 rounding).

use std::sync::Arc;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use crate::cpu::{multiversion, SendPtr};

/// Whether the positional conv runs as [`FftGroupedConv`]: yes unless
/// `HUBERT_PROBE_FFT_CONV=0` (for A/B measurements).
pub(crate) fn enabled() -> bool {
    std::env::var("HUBERT_PROBE_FFT_CONV").map_or(true, |v| v != "0")
}

/// A grouped "same" conv over time (even kernels drop the last frame, as
/// `HubertSamePadLayer` does), weights as spectra.
pub(crate) struct FftGroupedConv {
    /// FFT length, and output frames per block (`n - k + 1`).
    n: usize,
    step: usize,
    pad: usize,
    groups: usize,
    cg: usize,
    bins: usize,
    /// `conj(rfft(w[o, c, :]))` per (bin, group), `[bins][groups][c][o]`, split re / im.
    w_re: Vec<f32>,
    w_im: Vec<f32>,
    bias: Vec<f32>,
    forward_fft: Arc<dyn RealToComplex<f32>>,
    inverse_fft: Arc<dyn ComplexToReal<f32>>,
}

impl std::fmt::Debug for FftGroupedConv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FftGroupedConv")
            .field("n", &self.n)
            .field("groups", &self.groups)
            .field("cg", &self.cg)
            .finish_non_exhaustive()
    }
}

multiversion! {
    /// `y += x * w` over a group for one block: `y[o] += sum_c x[c] w[c][o]` (complex, split).
    fn mix(
        y_re: &mut [f32],
        y_im: &mut [f32],
        x_re: &[f32],
        x_im: &[f32],
        w_re: &[f32],
        w_im: &[f32],
    ) {
        let cg = y_re.len();
        for ((&a, &b), (wr, wi)) in x_re
            .iter()
            .zip(x_im)
            .zip(w_re.chunks_exact(cg).zip(w_im.chunks_exact(cg)))
        {
            for (((yr, yi), &r), &i) in y_re.iter_mut().zip(y_im.iter_mut()).zip(wr).zip(wi) {
                *yr += a * r - b * i;
                *yi += a * i + b * r;
            }
        }
    }
}

impl FftGroupedConv {
    /// From a PyTorch grouped `Conv1d` weight `[dim, dim / groups, kernel]` and its bias.
    pub(crate) fn new(
        torch_weight: &[f32],
        bias: Vec<f32>,
        dim: usize,
        groups: usize,
        kernel: usize,
    ) -> Self {
        let cg = dim / groups;
        assert_eq!(
            torch_weight.len(),
            dim * cg * kernel,
            "weight is [dim, cg, k]"
        );
        let n = (2 * kernel).next_power_of_two();
        let bins = n / 2 + 1;
        let mut planner = RealFftPlanner::<f32>::new();
        let forward_fft = planner.plan_fft_forward(n);
        let inverse_fft = planner.plan_fft_inverse(n);
        let mut w_re = vec![0f32; bins * groups * cg * cg];
        let mut w_im = vec![0f32; bins * groups * cg * cg];
        let (re, im) = (SendPtr(w_re.as_mut_ptr()), SendPtr(w_im.as_mut_ptr()));
        (0..groups * cg).into_par_iter().for_each(|go| {
            let (g, o) = (go / cg, go % cg);
            let mut signal = vec![0f32; n];
            let mut spectrum = vec![Complex::default(); bins];
            let mut scratch = forward_fft.make_scratch_vec();
            for c in 0..cg {
                signal.fill(0.0);
                let w = &torch_weight[((g * cg + o) * cg + c) * kernel..][..kernel];
                signal[..kernel].copy_from_slice(w);
                forward_fft
                    .process_with_scratch(&mut signal, &mut spectrum, &mut scratch)
                    .expect("buffers of the planned lengths");
                for (f, v) in spectrum.iter().enumerate() {
                    let at = ((f * groups + g) * cg + c) * cg + o;
                    // SAFETY: each (g, o) task writes its own `o` column of every (f, g, c) row.
                    unsafe {
                        *re.get().add(at) = v.re;
                        *im.get().add(at) = -v.im;
                    }
                }
            }
        });
        Self {
            n,
            step: n - kernel + 1,
            pad: kernel / 2,
            groups,
            cg,
            bins,
            w_re,
            w_im,
            bias,
            forward_fft,
            inverse_fft,
        }
    }

    /// `x` `[b, t, dim]` -> `[b, t, dim]` (before the activation).
    pub(crate) fn forward(&self, x: &[f32], b: usize, t: usize) -> Vec<f32> {
        let (cg, groups, bins, n) = (self.cg, self.groups, self.bins, self.n);
        let d = cg * groups;
        assert_eq!(x.len(), b * t * d, "input is [b, t, dim]");
        let per_clip = t.div_ceil(self.step);
        let blocks = b * per_clip;
        // Input spectra, [bins][blocks][dim] split re / im: one task per (block, group).
        let mut x_re = vec![0f32; bins * blocks * d];
        let mut x_im = vec![0f32; bins * blocks * d];
        let (re, im) = (SendPtr(x_re.as_mut_ptr()), SendPtr(x_im.as_mut_ptr()));
        (0..blocks * groups).into_par_iter().for_each(|task| {
            let (block, g) = (task / groups, task % groups);
            let (clip, j) = (block / per_clip, block % per_clip);
            let frames = &x[clip * t * d..(clip + 1) * t * d];
            let mut signal = vec![0f32; n];
            let mut spectrum = vec![Complex::default(); bins];
            let mut scratch = self.forward_fft.make_scratch_vec();
            // Padded frame i of this block is input frame start + i.
            let start = (j * self.step) as isize - self.pad as isize;
            for ch in g * cg..(g + 1) * cg {
                for (i, s) in signal.iter_mut().enumerate() {
                    let frame = start + i as isize;
                    *s = if frame >= 0 && (frame as usize) < t {
                        frames[frame as usize * d + ch]
                    } else {
                        0.0
                    };
                }
                self.forward_fft
                    .process_with_scratch(&mut signal, &mut spectrum, &mut scratch)
                    .expect("buffers of the planned lengths");
                for (f, v) in spectrum.iter().enumerate() {
                    let at = (f * blocks + block) * d + ch;
                    // SAFETY: each (block, group) task writes its own channels of each bin.
                    unsafe {
                        *re.get().add(at) = v.re;
                        *im.get().add(at) = v.im;
                    }
                }
            }
        });
        // Output spectra, same layout: one task per bin, every group and block.
        let mut y_re = vec![0f32; bins * blocks * d];
        let mut y_im = vec![0f32; bins * blocks * d];
        y_re.par_chunks_mut(blocks * d)
            .zip(y_im.par_chunks_mut(blocks * d))
            .enumerate()
            .for_each(|(f, (yr, yi))| {
                for g in 0..groups {
                    let w = ((f * groups + g) * cg * cg)..((f * groups + g + 1) * cg * cg);
                    let (wr, wi) = (&self.w_re[w.clone()], &self.w_im[w]);
                    for block in 0..blocks {
                        let at = (f * blocks + block) * d + g * cg;
                        let out = block * d + g * cg;
                        mix(
                            &mut yr[out..out + cg],
                            &mut yi[out..out + cg],
                            &x_re[at..at + cg],
                            &x_im[at..at + cg],
                            wr,
                            wi,
                        );
                    }
                }
            });
        drop((x_re, x_im));
        // Inverse FFTs, scaled by 1/n, plus the bias: one task per (block, group).
        let mut out = vec![0f32; b * t * d];
        let dst = SendPtr(out.as_mut_ptr());
        let scale = 1.0 / n as f32;
        (0..blocks * groups).into_par_iter().for_each(|task| {
            let (block, g) = (task / groups, task % groups);
            let (clip, j) = (block / per_clip, block % per_clip);
            let first = j * self.step;
            let frames = self.step.min(t - first);
            let mut spectrum = vec![Complex::default(); bins];
            let mut signal = vec![0f32; n];
            let mut scratch = self.inverse_fft.make_scratch_vec();
            for ch in g * cg..(g + 1) * cg {
                for (f, v) in spectrum.iter_mut().enumerate() {
                    let at = (f * blocks + block) * d + ch;
                    *v = Complex::new(y_re[at], y_im[at]);
                }
                // A real signal's spectrum: the DC and Nyquist bins are real.
                spectrum[0].im = 0.0;
                spectrum[bins - 1].im = 0.0;
                self.inverse_fft
                    .process_with_scratch(&mut spectrum, &mut signal, &mut scratch)
                    .expect("buffers of the planned lengths, real DC and Nyquist bins");
                for (i, &v) in signal[..frames].iter().enumerate() {
                    // SAFETY: each (block, group) task writes its own frames and channels.
                    unsafe {
                        *dst.get().add((clip * t + first + i) * d + ch) = v * scale + self.bias[ch];
                    }
                }
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_conv_equals_the_direct_sum() {
        // Even and odd kernels; clips shorter than, equal to and longer than one block.
        for (kernel, t) in [
            (4usize, 1usize),
            (4, 5),
            (5, 9),
            (16, 17),
            (16, 40),
            (15, 64),
        ] {
            let (d, groups, b) = (12, 3, 2);
            let cg = d / groups;
            let w: Vec<f32> = (0..d * cg * kernel)
                .map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.05)
                .collect();
            let bias: Vec<f32> = (0..d).map(|o| o as f32 * 0.1).collect();
            let x: Vec<f32> = (0..b * t * d)
                .map(|i| ((i * 17 % 9) as f32 - 4.0) * 0.3)
                .collect();
            let conv = FftGroupedConv::new(&w, bias.clone(), d, groups, kernel);
            let y = conv.forward(&x, b, t);
            assert_eq!(y.len(), b * t * d);
            let pad = kernel / 2;
            for clip in 0..b {
                for to in 0..t {
                    for oc in 0..d {
                        let g = oc / cg;
                        let mut acc = bias[oc] as f64;
                        for c in 0..cg {
                            for j in 0..kernel {
                                let ti = to as isize + j as isize - pad as isize;
                                if ti >= 0 && (ti as usize) < t {
                                    acc += w[(oc * cg + c) * kernel + j] as f64
                                        * x[(clip * t + ti as usize) * d + g * cg + c] as f64;
                                }
                            }
                        }
                        let got = y[(clip * t + to) * d + oc] as f64;
                        assert!(
                            (got - acc).abs() < 1e-5,
                            "k={kernel} t={t} clip {clip} frame {to} channel {oc}: {got} vs {acc}"
                        );
                    }
                }
            }
        }
    }
}
