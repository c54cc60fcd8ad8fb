//! Probe equivalence with the PyTorch training loop: on the committed synthetic feature set,
//! the mean test accuracy over 10 seeds of our linear and MLP probes is within 1 point of the
//! PyTorch loop's (numbers written by `scripts/make_probe_fixtures.py`).
//!
//! The two sides draw different random numbers (initialisation, shuffles), so only the
//! statistics can agree; the figures go to docs/PERFORMANCE.md ("Probe equivalence").
//!
//! ```text
//! cargo test --release -p probe-heads --test torch_equivalence -- --nocapture
//! ```

use std::ops::ControlFlow;

mod common;

use common::{features_and_labels, fixture};
use probe_heads::{evaluate, Dataset, ProbeKind, TrainConfig, Trainer};
use serde_json::Value;

/// 2 x 10 trainings of 7,500 steps: seconds in release, too slow unoptimised, so debug builds
/// skip it (`cargo test --release -p probe-heads --test torch_equivalence` runs it).
#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release")]
fn mean_test_accuracy_matches_pytorch_within_one_point() {
    let bytes = fixture("equivalence_features.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let reference: Value =
        serde_json::from_str(include_str!("fixtures/torch_equivalence.json")).unwrap();
    let dim = reference["dim"].as_u64().unwrap() as usize;
    let n_classes = reference["n_classes"].as_u64().unwrap() as usize;
    let (xtr, ytr) = features_and_labels(&st, "train");
    let (xte, yte) = features_and_labels(&st, "test");
    let train = Dataset::new(&xtr, &ytr, dim).unwrap();
    let test = Dataset::new(&xte, &yte, dim).unwrap();
    let seeds: Vec<u64> = reference["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(seeds.len(), 10);
    for (key, kind) in [
        ("linear", ProbeKind::Linear),
        (
            "mlp",
            ProbeKind::ThreeLayer {
                hidden: reference["hidden"].as_u64().unwrap() as usize,
            },
        ),
    ] {
        let accs: Vec<f64> = seeds
            .iter()
            .map(|&seed| {
                let cfg = TrainConfig {
                    epochs: reference["epochs"].as_u64().unwrap() as usize,
                    batch_size: reference["batch_size"].as_u64().unwrap() as usize,
                    learning_rate: reference["learning_rate"].as_f64().unwrap(),
                    seed,
                    threads: 1,
                    ..TrainConfig::default()
                };
                let trained = Trainer::new(cfg)
                    .train(kind, n_classes, &train, None, |_| ControlFlow::Continue(()))
                    .unwrap();
                evaluate(&trained.model, &test).0
            })
            .collect();
        let ours = accs.iter().sum::<f64>() / accs.len() as f64;
        let std = (accs.iter().map(|a| (a - ours).powi(2)).sum::<f64>() / 9.0).sqrt();
        let torch = reference[key]["mean"].as_f64().unwrap();
        eprintln!(
            "{key}: hubert-probe {:.2} ± {:.2} %, PyTorch {:.2} ± {:.2} %, diff {:+.2} points; ours per seed {:?}",
            100.0 * ours,
            100.0 * std,
            100.0 * torch,
            100.0 * reference[key]["std"].as_f64().unwrap(),
            100.0 * (ours - torch),
            accs
        );
        assert!(
            (ours - torch).abs() <= 0.01,
            "{key}: mean test accuracy {ours:.4} vs PyTorch {torch:.4}"
        );
    }
}
