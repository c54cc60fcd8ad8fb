//! The parity checks again with the portable GEMM (the `gemm` crate), whatever this CPU has:
//! machines without AVX-512 run that path, and this keeps it tested on machines with it. One
//! test only, so the override is set before anything picks a kernel.

mod common;

use common::*;
use hubert_core::gemm::Kernel;
use hubert_core::{DType, Device, Hubert};

#[test]
fn portable_kernels_match_transformers_too() {
    std::env::set_var("HUBERT_PROBE_GEMM", "portable");
    assert_eq!(Kernel::best_f32(), Kernel::Portable);
    // bf16 without the bf16 kernel runs in fp32.
    assert_eq!(Kernel::best_bf16(), Kernel::Portable);
    let hubert = Hubert::load(
        fixtures().join("tiny-base").to_str().unwrap(),
        &Device::Cpu,
        DType::BF16,
    )
    .unwrap();
    assert_eq!(hubert.model.cpu_kernel(), Some(Kernel::Portable));
    for (dir, arch) in [
        ("tiny-base", "base"),
        ("tiny-base-bin", "base"),
        ("tiny-large", "large"),
        ("tiny-large-bin", "large"),
    ]
    .into_iter()
    .chain(FAMILIES)
    {
        check_model_dir(dir, arch);
    }
}
