//! Streaming resampling of a mono signal to 16 kHz, sample-exact in time and length.
//!
//! Rates whose ratio `16000 / sr = p / q` has `p <= poly::MAX_PHASES` (every common rate:
//! 8, 11.025, 22.05, 24, 32, 44.1, 48, 96 kHz ...) use the hand-written polyphase filter in
//! `poly.rs` (its module docs have the design and measured figures). The rubato sinc
//! resampler described below serves the other rates (an odd rate such as 44 101 Hz) and the
//! parameter sweep of the previous design (`benches/decode_resample.rs -- sweep`).
//!
//! # How the output lines up with the input
//!
//! For an input rate `sr`, write the rate ratio in lowest terms: `16000 / sr = p / q`. Output
//! sample `k` must sit at input time `k * q / p` (in input samples). Every such position has a
//! fractional part that is a multiple of `1 / p`, so a sinc table oversampled exactly `p` times
//! holds the filter at *every* phase the conversion ever needs: rubato's
//! [`SincInterpolationType::Nearest`] then evaluates the exact windowed sinc (no interpolation
//! between table entries, one dot product per output sample, the cheapest sinc mode there is).
//! `p` is 1 for 48/32/96 kHz, 2 for 8/24 kHz, 8 for 10 kHz, 160 for 44.1 kHz, 320 for
//! 22.05 kHz, 640 for 11.025 kHz. For the rare rates where `p` exceeds [`MAX_EXACT_PHASES`]
//! (an odd rate such as 44 101 Hz has `p = 16000`) the table would be megabytes, so those use
//! [`SincInterpolationType::Cubic`] over [`FALLBACK_OVERSAMPLING`] phases instead.
//!
//! rubato's first output of a fresh resampler sits at input position
//! `q/p - sinc_len/2 + 1/F` (`F` the oversampling factor: read off
//! `Async::init_last_index`, `get_nearest_time` and `make_sincs` in rubato 4.0, and checked by
//! the tests below). We feed `pad` zeros before the clip and drop the first `skip` outputs, with
//! the integers chosen so that output `skip` sits exactly at input position 0 (a whole-sample
//! solution always exists when `F = p`). The end is flushed with zeros and the output cut to
//! exactly `round(n * 16000 / sr)` samples. `rubato::Resampler::output_delay` is not used: it
//! is rounded to whole output samples, which would shift a 3 kHz tone by up to half a sample.
//!
//! # Parameters, and why
//!
//! See [`SINC_LEN`], [`WINDOW`] and [`F_CUTOFF`]; the measured figures behind them are in the
//! doc comment of [`SINC_LEN`].

use std::cell::RefCell;
use std::collections::HashMap;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Indexing, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use crate::poly::{self, output_len, PolyStream};
use crate::TARGET_SAMPLE_RATE;

/// Length of the windowed-sinc filter, in taps at the input rate (rubato builds the filter on
/// the input side; the cutoff is scaled to the output Nyquist when downsampling).
///
/// Chosen from the sweep `cargo bench -p audio-io --bench decode_resample -- sweep` (AMD EPYC,
/// one core, 2026-11-24; quality on the committed fixtures, speed for one 5 s 44.1 kHz clip):
///
/// | sinc_len | window | max abs err, 440 Hz & 3 kHz sines from 44.1/48/22.05/8 kHz | 10 kHz @ 44.1k | SNR vs librosa (worst fixture) | resample 5 s @ 44.1k |
/// |---:|---|---:|---:|---:|---:|
/// | 64 | Blackman2 | 3.8e-3 | -98.6 dB | 31.0 dB | 1.32 ms |
/// | 96 | Blackman2 | 7.3e-6 | -115.7 dB | 45.5 dB | 1.47 ms |
/// | **128** | **Blackman2** | **8.3e-6** | **-135.0 dB** | **63.6 dB** | **2.06 ms** |
/// | 256 | Blackman2 | 3.9e-6 | -136.5 dB | 67.7 dB | 2.95 ms |
/// | 128 | BlackmanHarris2 | 8.5e-6 | -136.5 dB | 43.6 dB | 2.59 ms |
/// | 256 | BlackmanHarris2 | 7.6e-6 | -135.7 dB | 67.3 dB | 2.92 ms |
///
/// The transition band of the chosen filter at 44.1 kHz (from `tests/quality.rs`): 8.2 kHz
/// -29 dB, 8.6 kHz -52 dB, 9 kHz -99 dB, 10 kHz -140 dB; the passband is flat to < 1e-5 up
/// to at least 3 kHz (max abs error of a 0.9-amplitude sine).
///
/// 128 taps is where the agreement with librosa's soxr_hq saturates (64 dB; 96 taps drops to
/// 46 dB, 64 taps fails the 40 dB bar) at 70 % of the cost of 256 taps. Shorter filters buy
/// little: rubato's per-output overhead is about 1.2 ms per 5 s clip even at 32 taps. With
/// nearest lookup in an exact-phase table the passband error is at the f32 rounding level,
/// where rubato's usual cubic interpolation (F = 512) left up to 4e-3 on these rates and ran
/// 2 to 2.5 times slower.
pub const SINC_LEN: usize = 128;

/// Window of the sinc filter: Blackman squared. For the same length its main lobe is
/// narrower than Blackman-Harris squared, so rubato's automatic cutoff sits higher (closer
/// to soxr HQ's 0.913 of Nyquist, librosa's default), while its side lobes (about -115 dB
/// squared) are still far below anything a 16-bit source holds.
pub const WINDOW: WindowFunction = WindowFunction::Blackman2;

/// Relative cutoff (fraction of the output Nyquist, 8 kHz): `None` lets rubato pick the
/// highest cutoff that keeps aliasing under the window's side-lobe level for [`SINC_LEN`]
/// (`rubato::calculate_cutoff`).
pub const F_CUTOFF: Option<f32> = None;

/// Largest exact phase count `p` served by nearest-phase lookup (table = `p * SINC_LEN` f32,
/// 1 MiB at most). Rates with a larger `p` use cubic interpolation.
pub const MAX_EXACT_PHASES: u64 = 2048;

/// Oversampling factor used with cubic interpolation for rates with `p > MAX_EXACT_PHASES`.
pub const FALLBACK_OVERSAMPLING: usize = 512;

/// Input chunk handed to rubato per call: large enough to amortise the per-call overhead,
/// small enough to keep the working set (input + output chunk) in L1/L2.
const CHUNK_FRAMES: usize = 2048;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The filter choices, for the parameter sweep in `benches/` (see [`crate::tuning`]);
/// [`SincParams::DEFAULT`] is what [`crate::load`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SincParams {
    /// Filter length (rounded up to a multiple of 8 by rubato).
    pub sinc_len: usize,
    /// Window function.
    pub window: WindowFunction,
    /// Relative cutoff, `None` for rubato's automatic choice.
    pub f_cutoff: Option<f32>,
    /// `true`: `F = p` exact phases with nearest lookup (when `p <= MAX_EXACT_PHASES`);
    /// `false`: rubato's usual cubic interpolation between [`FALLBACK_OVERSAMPLING`] phases.
    pub exact_phases: bool,
}

impl SincParams {
    /// [`SINC_LEN`], [`WINDOW`], [`F_CUTOFF`], exact phases.
    pub const DEFAULT: SincParams = SincParams {
        sinc_len: SINC_LEN,
        window: WINDOW,
        f_cutoff: F_CUTOFF,
        exact_phases: true,
    };
}

/// How one input rate is resampled: the filter and the alignment integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    params: SincParams,
    /// Numerator of `16000 / sr` in lowest terms.
    p: u64,
    /// Denominator of `16000 / sr` in lowest terms.
    q: u64,
    oversampling: usize,
    interpolation: SincInterpolationType,
    /// Zeros fed before the clip.
    pad: usize,
    /// Outputs dropped at the start.
    skip: usize,
}

impl Plan {
    pub(crate) fn new(sample_rate: u32, params: SincParams) -> Plan {
        // rubato rounds the length up to a multiple of 8; the alignment needs the real one.
        let sinc_len = params.sinc_len.max(8).div_ceil(8) * 8;
        let params = SincParams { sinc_len, ..params };
        let sr = u64::from(sample_rate);
        let g = gcd(u64::from(TARGET_SAMPLE_RATE), sr);
        let (p, q) = (u64::from(TARGET_SAMPLE_RATE) / g, sr / g);
        let (oversampling, interpolation) = if params.exact_phases && p <= MAX_EXACT_PHASES {
            (p as usize, SincInterpolationType::Nearest)
        } else {
            (FALLBACK_OVERSAMPLING, SincInterpolationType::Cubic)
        };
        // Output j of the padded stream sits at input position (j+1)*q/p - c - pad, where
        // c = SINC_LEN/2 - 1/F. We want j = skip at position 0:
        //   (skip+1) * q - pad * p = c * p.
        // With F = p the right side is the integer SINC_LEN/2*p - 1 and an exact solution
        // exists with 0 <= pad < q; otherwise take the pad with the smallest residual.
        let c = sinc_len as f64 / 2.0 - 1.0 / oversampling as f64;
        let (mut best_pad, mut best_skip, mut best_residual) = (0u64, 0u64, f64::INFINITY);
        for pad in 0..q {
            // (skip + 1) = (c + pad) * p / q, rounded to the nearest integer, at least 1.
            let s1 = ((c + pad as f64) * p as f64 / q as f64).round().max(1.0);
            let residual = (s1 * q as f64 / p as f64 - pad as f64 - c).abs();
            if residual < best_residual - 1e-12 {
                (best_pad, best_skip, best_residual) = (pad, s1 as u64 - 1, residual);
            }
            if best_residual < 1e-9 {
                break;
            }
        }
        Plan {
            params,
            p,
            q,
            oversampling,
            interpolation,
            pad: best_pad as usize,
            skip: best_skip as usize,
        }
    }

    fn build(&self) -> Result<Async<f32>, String> {
        let params = SincInterpolationParameters {
            sinc_len: self.params.sinc_len,
            f_cutoff: self.params.f_cutoff,
            oversampling_factor: self.oversampling,
            interpolation: self.interpolation,
            window: self.params.window,
        };
        Async::<f32>::new_sinc(
            self.p as f64 / self.q as f64,
            1.0,
            &params,
            CHUNK_FRAMES,
            1,
            FixedAsync::Input,
        )
        .map_err(|e| format!("cannot build the resampler: {e}"))
    }
}

/// Rates kept per thread (each at most 1 MiB of sinc table).
const MAX_CACHED_RATES: usize = 8;

/// A built resampler for one input rate, with the plan it was built from.
type CachedResampler = (Plan, Box<Async<f32>>);

thread_local! {
    /// Resamplers are costly to build (a sinc table of `p * SINC_LEN` entries, 160 * 128 for
    /// 44.1 kHz): keep one per input rate per thread. A resampler is taken out while in use and
    /// put back (reset) when a clip completes, so a panic or an error simply drops it.
    static CACHE: RefCell<HashMap<u32, CachedResampler>> = RefCell::new(HashMap::new());
}

/// Feeds mono samples at any rate, returns 16 kHz samples: pass-through at 16 kHz, otherwise
/// the sinc resampler described in the module docs.
pub(crate) enum MonoTo16k {
    /// Input is already at 16 kHz: samples are copied bit for bit.
    PassThrough(Vec<f32>),
    /// Rational ratio with at most `MAX_PHASES` phases: the hand-written polyphase filter.
    Poly(Box<PolyStream>),
    /// Any other ratio: rubato's sinc resampler.
    Resample(Box<SincStream>),
}

impl MonoTo16k {
    /// A sink for mono input at `sample_rate` (> 0). `expected_frames`, when known, only
    /// pre-sizes the output (capped, so a lying header cannot make us allocate gigabytes).
    pub(crate) fn new(sample_rate: u32, expected_frames: Option<u64>) -> Result<Self, String> {
        const MAX_RESERVE: u64 = 1 << 24;
        if sample_rate == TARGET_SAMPLE_RATE {
            let reserve = expected_frames.unwrap_or(0).min(MAX_RESERVE) as usize;
            return Ok(MonoTo16k::PassThrough(Vec::with_capacity(reserve)));
        }
        let reserve = expected_frames
            .map(|n| output_len(n, sample_rate))
            .unwrap_or(0)
            .min(MAX_RESERVE) as usize;
        if poly::ratio(sample_rate).0 <= poly::MAX_PHASES {
            return Ok(MonoTo16k::Poly(Box::new(PolyStream::new(
                sample_rate,
                reserve,
            ))));
        }
        Ok(MonoTo16k::Resample(Box::new(SincStream::new(
            sample_rate,
            reserve,
        )?)))
    }

    /// Append input samples.
    pub(crate) fn push(&mut self, samples: &[f32]) -> Result<(), String> {
        match self {
            MonoTo16k::PassThrough(out) => {
                out.extend_from_slice(samples);
                Ok(())
            }
            MonoTo16k::Poly(stream) => {
                stream.push(samples);
                Ok(())
            }
            MonoTo16k::Resample(stream) => stream.push(samples),
        }
    }

    /// Append input samples written by `fill` into the sink's own buffer where it has one
    /// (polyphase and pass-through: no intermediate copy), else into `scratch`.
    pub(crate) fn push_with<E>(
        &mut self,
        scratch: &mut Vec<f32>,
        fill: impl FnOnce(&mut Vec<f32>) -> Result<(), E>,
        resampler_err: impl FnOnce(String) -> E,
    ) -> Result<(), E> {
        match self {
            MonoTo16k::PassThrough(out) => fill(out),
            MonoTo16k::Poly(stream) => stream.push_with(fill),
            MonoTo16k::Resample(stream) => {
                scratch.clear();
                fill(scratch)?;
                stream.push(scratch).map_err(resampler_err)
            }
        }
    }

    /// Flush and return exactly `round(n * 16000 / sr)` samples.
    pub(crate) fn finish(self) -> Result<Vec<f32>, String> {
        match self {
            MonoTo16k::PassThrough(out) => Ok(out),
            MonoTo16k::Poly(stream) => Ok(stream.finish()),
            MonoTo16k::Resample(stream) => stream.finish(),
        }
    }
}

/// The streaming state around one rubato resampler.
pub(crate) struct SincStream {
    sample_rate: u32,
    plan: Plan,
    resampler: Option<Box<Async<f32>>>,
    /// Input waiting for a full chunk.
    chunk: Vec<f32>,
    /// One call's worth of output.
    scratch: Vec<f32>,
    /// Outputs still to drop (the filter delay).
    skip_left: usize,
    /// Real input frames seen (pad zeros excluded).
    frames_in: u64,
    out: Vec<f32>,
}

impl SincStream {
    fn new(sample_rate: u32, reserve: usize) -> Result<Self, String> {
        let cached = CACHE.with(|cache| cache.borrow_mut().remove(&sample_rate));
        let (plan, resampler) = match cached {
            Some(entry) => entry,
            None => {
                let plan = Plan::new(sample_rate, SincParams::DEFAULT);
                (plan, Box::new(plan.build()?))
            }
        };
        Self::with_resampler(sample_rate, plan, resampler, reserve)
    }

    fn with_resampler(
        sample_rate: u32,
        plan: Plan,
        resampler: Box<Async<f32>>,
        reserve: usize,
    ) -> Result<Self, String> {
        let scratch = vec![0.0; resampler.output_frames_max()];
        let mut stream = SincStream {
            sample_rate,
            plan,
            resampler: Some(resampler),
            chunk: Vec::with_capacity(CHUNK_FRAMES),
            scratch,
            skip_left: plan.skip,
            frames_in: 0,
            out: Vec::with_capacity(reserve),
        };
        // Leading zeros that put output `skip` exactly on input sample 0.
        let zeros = [0.0f32; 256];
        let mut left = plan.pad;
        while left > 0 {
            let n = left.min(zeros.len());
            stream.feed(&zeros[..n])?;
            left -= n;
        }
        Ok(stream)
    }

    fn push(&mut self, samples: &[f32]) -> Result<(), String> {
        self.frames_in += samples.len() as u64;
        self.feed(samples)
    }

    fn feed(&mut self, mut samples: &[f32]) -> Result<(), String> {
        while !samples.is_empty() {
            let take = (CHUNK_FRAMES - self.chunk.len()).min(samples.len());
            self.chunk.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.chunk.len() == CHUNK_FRAMES {
                self.process(None)?;
                self.chunk.clear();
            }
        }
        Ok(())
    }

    /// Run one rubato call on `self.chunk` (`partial` valid frames when given, rest zeros).
    fn process(&mut self, partial: Option<usize>) -> Result<(), String> {
        let resampler = self
            .resampler
            .as_mut()
            .expect("resampler present until finish");
        let frames_next = resampler.input_frames_next();
        let valid = partial.unwrap_or(frames_next);
        let needed_out = resampler.output_frames_next();
        if self.scratch.len() < needed_out {
            self.scratch.resize(needed_out, 0.0);
        }
        // The adapter must span `frames_next` frames even for a partial chunk.
        self.chunk.resize(frames_next.max(self.chunk.len()), 0.0);
        let input = InterleavedSlice::new(&self.chunk[..], 1, frames_next)
            .map_err(|e| format!("resampler input: {e}"))?;
        let scratch_len = self.scratch.len();
        let mut output = InterleavedSlice::new_mut(&mut self.scratch[..], 1, scratch_len)
            .map_err(|e| format!("resampler output: {e}"))?;
        let indexing = partial.map(|n| Indexing {
            partial_len: Some(n.min(valid)),
            ..Indexing::default()
        });
        let (_, written) = resampler
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| format!("resampling failed: {e}"))?;
        let dropped = self.skip_left.min(written);
        self.skip_left -= dropped;
        self.out.extend_from_slice(&self.scratch[dropped..written]);
        Ok(())
    }

    fn finish(self) -> Result<Vec<f32>, String> {
        let (out, plan, resampler) = self.finish_keep()?;
        if plan.params == SincParams::DEFAULT {
            let sample_rate = out.1;
            CACHE.with(|cache| {
                let mut cache = cache.borrow_mut();
                // Real corpora use a handful of rates; hostile headers could use thousands.
                if cache.len() >= MAX_CACHED_RATES {
                    cache.clear();
                }
                cache.insert(sample_rate, (plan, resampler));
            });
        }
        Ok(out.0)
    }

    /// Flush; return the output (and the rate) and the reset resampler for reuse.
    #[allow(clippy::type_complexity)]
    fn finish_keep(mut self) -> Result<((Vec<f32>, u32), Plan, Box<Async<f32>>), String> {
        let target = output_len(self.frames_in, self.sample_rate) as usize;
        if !self.chunk.is_empty() {
            let valid = self.chunk.len();
            self.process(Some(valid))?;
            self.chunk.clear();
        }
        while self.out.len() < target {
            self.chunk.clear();
            self.process(Some(0))?;
        }
        self.out.truncate(target);
        let mut resampler = self
            .resampler
            .take()
            .expect("resampler present until finish");
        resampler.reset();
        Ok(((self.out, self.sample_rate), self.plan, resampler))
    }
}

/// A resampler with explicit [`SincParams`], reused clip after clip (for parameter sweeps).
pub struct TunedResampler {
    sample_rate: u32,
    plan: Plan,
    resampler: Option<Box<Async<f32>>>,
}

impl TunedResampler {
    /// Build for input at `sample_rate` (> 0, not 16 000).
    pub fn new(sample_rate: u32, params: SincParams) -> Result<Self, String> {
        let plan = Plan::new(sample_rate, params);
        Ok(TunedResampler {
            sample_rate,
            plan,
            resampler: Some(Box::new(plan.build()?)),
        })
    }

    /// Resample one clip (exact length and alignment, as [`crate::load`]).
    pub fn resample(&mut self, samples: &[f32]) -> Result<Vec<f32>, String> {
        let resampler = self
            .resampler
            .take()
            .ok_or("resampler lost to an earlier error")?;
        let mut stream = SincStream::with_resampler(
            self.sample_rate,
            self.plan,
            resampler,
            output_len(samples.len() as u64, self.sample_rate) as usize,
        )?;
        stream.push(samples)?;
        let ((out, _), _, resampler) = stream.finish_keep()?;
        self.resampler = Some(resampler);
        Ok(out)
    }
}

/// Resample a whole mono clip to 16 kHz (bit-exact copy at 16 kHz). Errors are rubato's,
/// as text; [`crate::load`] wraps them with the file name.
pub(crate) fn resample_mono(samples: &[f32], sample_rate: u32) -> Result<Vec<f32>, String> {
    let mut sink = MonoTo16k::new(sample_rate, Some(samples.len() as u64))?;
    sink.push(samples)?;
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, sr: u32, n: usize, phase_samples: f64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = (i as f64 + phase_samples) / f64::from(sr);
                (2.0 * std::f64::consts::PI * freq * t).sin() as f32
            })
            .collect()
    }

    #[test]
    fn output_len_rounds_half_up() {
        assert_eq!(output_len(44_100, 44_100), 16_000);
        assert_eq!(output_len(1, 32_000), 1); // 0.5 -> 1
        assert_eq!(output_len(1, 48_000), 0); // 0.333 -> 0
        assert_eq!(output_len(3, 22_050), 2); // 2.18 -> 2
        assert_eq!(output_len(220_500, 44_100), 80_000);
        assert_eq!(output_len(u64::MAX / 16_000, 16_000), u64::MAX / 16_000);
        // Below 16 kHz the exact result can pass u64::MAX: it saturates instead of wrapping.
        assert_eq!(output_len(u64::MAX, 8_000), u64::MAX);
        assert_eq!(output_len(u64::MAX / 2 + 1, 8_000), u64::MAX);
        assert_eq!(output_len(u64::MAX / 2, 8_000), u64::MAX - 1);
    }

    #[test]
    fn plans_are_exact_for_common_rates() {
        for sr in [
            8_000, 11_025, 22_050, 24_000, 32_000, 44_100, 48_000, 96_000,
        ] {
            let plan = Plan::new(sr, SincParams::DEFAULT);
            assert_eq!(plan.interpolation, SincInterpolationType::Nearest, "{sr}");
            assert_eq!(plan.oversampling as u64, plan.p, "{sr}");
            let c = SINC_LEN as f64 / 2.0 - 1.0 / plan.oversampling as f64;
            let lhs = (plan.skip as f64 + 1.0) * plan.q as f64 - plan.pad as f64 * plan.p as f64;
            assert!((lhs - c * plan.p as f64).abs() < 1e-9, "{sr}: {plan:?}");
            assert!((plan.pad as u64) < plan.q, "{sr}: {plan:?}");
        }
        let odd = Plan::new(44_101, SincParams::DEFAULT);
        assert_eq!(odd.interpolation, SincInterpolationType::Cubic);
    }

    #[test]
    fn exact_length_for_many_sizes_and_rates() {
        for sr in [8_000, 22_050, 44_100, 48_000, 44_101] {
            for n in [0usize, 1, 2, 3, 100, 2047, 2048, 2049, 10_000] {
                let x = vec![0.25f32; n];
                let y = resample_mono(&x, sr).unwrap();
                assert_eq!(y.len() as u64, output_len(n as u64, sr), "sr {sr} n {n}");
            }
        }
    }

    #[test]
    fn passthrough_at_16k_is_bit_exact() {
        let x: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.37).sin() * 0.9).collect();
        let y = resample_mono(&x, 16_000).unwrap();
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    /// The time alignment is exact: a 3 kHz sine keeps its phase to well under 1e-3.
    #[test]
    fn sine_alignment_is_sample_exact() {
        for sr in [44_100u32, 48_000, 22_050, 8_000, 44_101, 11_025] {
            let n = sr as usize; // 1 s
            let x = sine(3_000.0_f64.min(f64::from(sr) * 0.3), sr, n, 0.0);
            let y = resample_mono(&x, sr).unwrap();
            let want = sine(3_000.0_f64.min(f64::from(sr) * 0.3), 16_000, y.len(), 0.0);
            let margin = 400;
            let err = y[margin..y.len() - margin]
                .iter()
                .zip(&want[margin..want.len() - margin])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-3, "sr {sr}: max abs err {err}");
        }
    }

    #[test]
    fn cache_reuse_gives_identical_output() {
        let x = sine(440.0, 44_100, 30_000, 0.3);
        let a = resample_mono(&x, 44_100).unwrap();
        let b = resample_mono(&x, 44_100).unwrap();
        assert_eq!(a, b);
    }
}
