//! Per-step training time of the linear and 3-layer probes (batch 8, Adam 1e-3), the Rust side
//! of `scripts/bench_probes.sh` (the PyTorch side is `scripts/bench_torch_probe.py`).
//!
//! ```text
//! cargo bench -p probe-heads --bench train_step -- [--data FEATURES.safetensors] [--epochs N] [--threads T]
//!     [--probe linear|mlp]
//! ```
//! `--data` is a safetensors file with `features` `[N, D]` f32 and `labels` `[N]` i64 (written by
//! `scripts/bench_torch_probe.py --write-data`); without it, 2000 x 768 synthetic features with
//! 50 classes are generated. Prints one JSON line per probe: `{"impl": "rust", "probe": ..,
//! "us_per_step": .., ...}`. Epoch 1 is a warm-up and excluded from the per-step time.

use std::ops::ControlFlow;
use std::time::Duration;

use probe_heads::{Dataset, ProbeKind, TrainConfig, Trainer};
use rand::{Rng, SeedableRng};

fn load(path: &str) -> (Vec<f32>, Vec<usize>, usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors file");
    let f = st.tensor("features").expect("`features` tensor");
    let dim = f.shape()[1];
    let features = f
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let labels = st
        .tensor("labels")
        .expect("`labels` tensor")
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    (features, labels, dim)
}

fn synthetic(n: usize, dim: usize, n_classes: usize) -> (Vec<f32>, Vec<usize>, usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let means: Vec<f32> = (0..n_classes * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut x = Vec::with_capacity(n * dim);
    let labels: Vec<usize> = (0..n).map(|i| i % n_classes).collect();
    for &y in &labels {
        for d in 0..dim {
            x.push(means[y * dim + d] + rng.random_range(-2.0_f32..2.0));
        }
    }
    (x, labels, dim)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The value after the first `name` (other arguments, such as cargo's `--bench`, are ignored).
    let arg = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let epochs: usize = arg("--epochs").map_or(5, |e| e.parse().expect("--epochs N"));
    let threads: usize = arg("--threads").map_or(2, |e| e.parse().expect("--threads N"));
    let (x, y, dim) = match arg("--data") {
        Some(path) => load(&path),
        None => synthetic(2000, 768, 50),
    };
    let n_classes = y.iter().max().unwrap() + 1;
    let data = Dataset::new(&x, &y, dim).unwrap();
    let only = arg("--probe");
    for (name, kind) in [
        ("linear", ProbeKind::Linear),
        ("mlp", ProbeKind::three_layer()),
    ] {
        if only.as_deref().is_some_and(|p| p != name) {
            continue;
        }
        let config = TrainConfig {
            epochs: epochs + 1,
            threads,
            ..TrainConfig::default()
        };
        let trained = Trainer::new(config)
            .train(kind, n_classes, &data, None, |_| ControlFlow::Continue(()))
            .unwrap();
        let timed = &trained.history[1..];
        let time: Duration = timed.iter().map(|s| s.train_time).sum();
        let steps = trained.history.last().unwrap().steps - trained.history[0].steps;
        println!(
            "{{\"impl\": \"rust\", \"probe\": \"{name}\", \"threads\": {threads}, \"us_per_step\": {:.2}, \"steps\": {steps}, \"epochs_timed\": {}, \"final_train_loss\": {:.4}}}",
            time.as_secs_f64() * 1e6 / steps as f64,
            timed.len(),
            trained.history.last().unwrap().train_loss,
        );
    }
}
