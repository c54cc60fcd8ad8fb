//! GFLOP/s of the CPU matrix products (`hubert_core::gemm`) on the shapes of hubert-base, per
//! kernel: the ceilings the extraction profile in docs/PERFORMANCE.md is measured against.
//!
//! `cargo bench -p hubert-core --bench gemm [-- --threads 2 --reps 5]` prints one JSON line per
//! (shape, kernel). `portable` is the `gemm` crate candle uses.

use std::time::Instant;

use hubert_core::gemm::{gemm, Init, Kernel, PackedB};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = arg(&args, "--threads", rayon::current_num_threads());
    let reps = arg(&args, "--reps", 5);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    // (name, m, k, n, lda): lda < k means overlapping rows (a conv over channels-last frames).
    let shapes = [
        ("q/k/v/out proj 5 s (249x768 . 768x768)", 249, 768, 768, 768),
        ("ffn in 5 s (249x768 . 768x3072)", 249, 768, 3072, 768),
        ("ffn out 5 s (249x3072 . 3072x768)", 249, 3072, 768, 3072),
        ("ffn out, rows padded to 3088", 249, 3072, 768, 3088),
        (
            "winograd even 5 s (4000x1024 . 1024x512, lda 2560)",
            4000,
            1024,
            512,
            2560,
        ),
        ("winograd even, rows padded to 2576", 4000, 1024, 512, 2576),
        (
            "conv k3 s2 5 s (7999x1536 . 1536x512)",
            7999,
            1536,
            512,
            1024,
        ),
        ("pos conv group (249x6144 . 6144x48)", 249, 6144, 48, 48),
        ("square 2048", 2048, 2048, 2048, 2048),
        ("l2-resident (126x256 . 256x256)", 126, 256, 256, 256),
        ("x1 (126x768 . 768x768)", 126, 768, 768, 768),
        ("x2 (126x256 . 256x3072)", 126, 256, 3072, 256),
        ("x3 (14x768 . 768x3072)", 14, 768, 3072, 768),
        ("x4 (1400x256 . 256x32)", 1400, 256, 32, 256),
    ];
    for (name, m, k, n, lda) in shapes {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let a = values((m - 1) * lda + k);
        let w = values(k * n);
        let bias = values(n);
        let mut c = vec![0f32; m * n];
        for kernel in Kernel::available() {
            let b = PackedB::new(kernel, k, n, &w, n, 1);
            gemm(m, &a, lda, &b, &mut c, n, Init::Bias(&bias), threads);
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps {
                let t = Instant::now();
                gemm(m, &a, lda, &b, &mut c, n, Init::Bias(&bias), threads);
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let median = times[reps / 2];
            let gflops = 2.0 * (m * k * n) as f64 / median / 1e9;
            println!(
                "{{\"shape\": \"{name}\", \"kernel\": \"{kernel:?}\", \"threads\": {threads}, \
                 \"median_ms\": {:.3}, \"gflop_s\": {gflops:.1}}}",
                median * 1e3
            );
        }
    }
}
