//! The CPU backend: our own kernels for the parts of the model that candle's generic CPU path
//! runs slowly, all on plain `[frames, channels]` buffers.
//!
//! - [`features`]: the one runtime CPU feature detector. It picks, once per process, the
//!   instruction set every kernel below runs with ([`Isa::Avx512`], [`Isa::Avx2`] or
//!   [`Isa::Portable`]) and whether the bf16 dot-product kernel is available.
//! - [`gemm`]: packed matrix products (AVX-512 fp32 / bf16 micro-kernels, or the `gemm` crate).
//! - `kernels`: channels-last convs as strided GEMMs, exact GELU, norms and softmax rows.
//! - `winograd`: the conv feature encoder's stride-2 kernel-3 layers as Winograd F(2,2).
//! - `fftconv`: the grouped positional conv as overlap-save FFT convolution.
//! - `fast`: the transformer layers (fused QKV, attention, feed-forward).
//! - `tiled`: attention in tiles with an online softmax (`O(T)` memory, long clips).
//!
//! The model code (`crate::model`) decides per layer whether this backend runs it (CPU device,
//! f32 or bf16, exact GELU) and otherwise uses candle's ops; both give the same hidden states
//! within the parity tests' tolerance.

pub(crate) mod fast;
pub(crate) mod fftconv;
pub mod gemm;
mod kernels;
pub(crate) mod tiled;
pub(crate) mod winograd;

pub(crate) use kernels::*;

use std::sync::OnceLock;

/// The instruction set the CPU kernels run with, from the narrowest to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// The build's baseline (SSE2 on x86-64), and the `gemm` crate for matrix products.
    Portable,
    /// AVX2 + FMA for the element-wise loops; matrix products through the `gemm` crate.
    Avx2,
    /// AVX-512 (F, DQ, VL, BW) for the element-wise loops and our own GEMM micro-kernels.
    Avx512,
}

/// What the CPU kernels may use on this machine: detected once, honoured by every kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuFeatures {
    /// The widest instruction set in use.
    pub isa: Isa,
    /// Whether the AVX512_BF16 GEMM kernel may run (`--dtype bf16` as bf16 products).
    pub avx512_bf16: bool,
}

/// The environment variable that caps the instruction set: `portable` or `avx2` (for tests
/// and A/B measurements; `HUBERT_PROBE_GEMM=portable`, its older spelling, is honoured too).
pub const ISA_ENV: &str = "HUBERT_PROBE_CPU";

/// The CPU features the kernels use, detected on first call and fixed for the process.
pub fn features() -> CpuFeatures {
    static DETECTED: OnceLock<CpuFeatures> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let detected = detect();
        let cap = match std::env::var(ISA_ENV).ok().as_deref() {
            Some("portable") => Some(Isa::Portable),
            Some("avx2") => Some(Isa::Avx2),
            _ if std::env::var("HUBERT_PROBE_GEMM").is_ok_and(|v| v == "portable") => {
                Some(Isa::Portable)
            }
            _ => None,
        };
        match cap {
            Some(cap) if cap < detected.isa => CpuFeatures {
                isa: cap,
                avx512_bf16: false,
            },
            _ => detected,
        }
    })
}

/// What this CPU has, without the environment's cap.
fn detect() -> CpuFeatures {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw") {
            return CpuFeatures {
                isa: Isa::Avx512,
                avx512_bf16: has!("avx512bf16"),
            };
        }
        if has!("avx2") && has!("fma") {
            return CpuFeatures {
                isa: Isa::Avx2,
                avx512_bf16: false,
            };
        }
    }
    CpuFeatures {
        isa: Isa::Portable,
        avx512_bf16: false,
    }
}
