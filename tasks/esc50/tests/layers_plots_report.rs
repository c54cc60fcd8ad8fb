//! Per-layer probes, the learned layer weighting, every plot, and the cross-task report, end to
//! end on a generated ESC-50 corpus (official layout) with the tiny fixture model.

mod common;

use std::path::Path;
use std::process::Output;

use pipeline::testing::tiny_model_dir;
use pipeline::testing::{assert_success as ok, task_in};

/// The shared corpus (`common::make_corpus`) with 5.0 s clips.
fn make_corpus(parent: &Path) -> std::path::PathBuf {
    common::make_corpus(parent, 5.0, &["A", "B"])
}

/// `esc50 <args>` with every folder under `dir`.
fn esc50(dir: &Path, data: &Path, args: &[&str]) -> Output {
    let mut cmd = task_in(env!("CARGO_BIN_EXE_esc50"), dir, args);
    ok(cmd.arg("--data-dir").arg(data).output().unwrap())
}

/// Width and height of a PNG, after checking its signature, IHDR and IEND.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{} missing: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(&bytes[12..16], b"IHDR", "{}", path.display());
    assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    let (w, h) = (be(16), be(20));
    assert!(
        (300..4000).contains(&w) && (300..4000).contains(&h),
        "{}: {w}x{h}",
        path.display()
    );
    assert!(
        bytes.len() > 5_000,
        "{}: {} bytes",
        path.display(),
        bytes.len()
    );
    (w, h)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn per_layer_weighted_plots_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(tmp.path());
    let dir = tmp.path();
    let model = tiny_model_dir().display().to_string();
    let results = dir.join("results/esc50/tiny-base");

    // One probe per stored layer.
    esc50(
        dir,
        &data,
        &[
            "run", "--model", &model, "--layers", "all", "--layer", "all", "--epochs", "20",
        ],
    );
    let r = read_json(&results.join("results.json"));
    let per_layer = r["per_layer"].as_array().unwrap();
    let stored = r["features"]["layers_stored"].as_str().unwrap();
    assert_eq!(stored, "all");
    let n_layers = per_layer.len();
    assert!(
        n_layers >= 3,
        "tiny model stores every hidden state: {n_layers}"
    );
    for (i, entry) in per_layer.iter().enumerate() {
        assert_eq!(entry["layer"], i, "layers in order");
        for probe in ["linear", "mlp"] {
            let acc = entry[probe]["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "layer {i} {probe}: {acc}");
        }
    }
    // The reported probes are the last layer's.
    assert_eq!(
        per_layer[n_layers - 1]["linear"]["accuracy"],
        r["probes"]["linear"]["accuracy"]["mean"]
    );
    let plots: Vec<String> = serde_json::from_value(r["plots"].clone()).unwrap();
    for f in [
        "confusion_linear.png",
        "confusion_mlp.png",
        "per_layer.png",
        "tsne.png",
        "umap.png",
    ] {
        assert!(plots.contains(&f.to_string()), "{f} listed in {plots:?}");
        png_size(&results.join(f));
    }
    let report = std::fs::read_to_string(results.join("report.md")).unwrap();
    assert!(report.contains("## Per layer") && report.contains("![per_layer.png](per_layer.png)"));
    assert!(
        report.contains("![umap.png](umap.png)"),
        "report.md shows the UMAP plot"
    );
    keep_for_docs(&results, "esc50-layers");

    // The cross-task report over this results folder.
    let written = report::write_report(&dir.join("results")).unwrap();
    assert_eq!(written.len(), 5, "{written:?}");
    let summary = std::fs::read_to_string(dir.join("results/summary.md")).unwrap();
    assert!(summary.contains("| esc50 | official | 2 |"), "{summary}");
    assert!(
        summary.contains("cross-validation over the official folds"),
        "{summary}"
    );
    let csv = std::fs::read_to_string(dir.join("results/summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "header + linear + mlp: {csv}");
    let similarity = std::fs::read_to_string(dir.join("results/task_similarity.md")).unwrap();
    assert!(similarity.contains("| | esc50 |"), "{similarity}");
    png_size(&dir.join("results/task_similarity.png"));
    keep_for_docs(&dir.join("results"), "report");

    // The learned weighting of every layer (features already extracted: train only).
    esc50(
        dir,
        &data,
        &[
            "train", "--model", &model, "--layer", "weighted", "--epochs", "20",
        ],
    );
    let r = read_json(&results.join("results.json"));
    assert_eq!(r["features"]["layer"], "weighted");
    assert!(r.get("per_layer").is_none());
    for probe in ["linear", "mlp"] {
        let acc = r["probes"][probe]["accuracy"]["mean"].as_f64().unwrap();
        assert!(acc > 0.6, "{probe} on weighted layers: {acc}");
        let w: Vec<f64> =
            serde_json::from_value(r["layer_weights"][probe]["mean"].clone()).unwrap();
        assert_eq!(w.len(), n_layers);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{w:?}");
        assert!(w.iter().all(|&v| v > 0.0));
        assert!(
            w.iter().any(|&v| (v - 1.0 / n_layers as f64).abs() > 1e-3),
            "{probe}: weights moved from uniform: {w:?}"
        );
        assert_eq!(
            r["layer_weights"][probe]["layers"]
                .as_array()
                .unwrap()
                .len(),
            n_layers
        );
    }
    let plots: Vec<String> = serde_json::from_value(r["plots"].clone()).unwrap();
    for f in [
        "confusion_linear.png",
        "confusion_mlp.png",
        "layer_weights_linear.png",
        "layer_weights_mlp.png",
        "tsne.png",
        "umap.png",
    ] {
        assert!(plots.contains(&f.to_string()), "{f} listed in {plots:?}");
        png_size(&results.join(f));
    }
    keep_for_docs(&results, "esc50-weighted");
    report::write_report(&dir.join("results")).unwrap();
    let summary = std::fs::read_to_string(dir.join("results/summary.md")).unwrap();
    assert!(
        summary.contains("| esc50 | official | weighted |")
            && summary.contains("Learned layer weights"),
        "{summary}"
    );
}

/// With `HUBERT_PROBE_KEEP_PLOTS=DIR`, copies the results folder to `DIR/<name>` to look at
/// the plots (the docs' pictures come from such a run).
fn keep_for_docs(results: &Path, name: &str) {
    if let Some(keep) = std::env::var_os("HUBERT_PROBE_KEEP_PLOTS") {
        let to = Path::new(&keep).join(name);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(results).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
}
