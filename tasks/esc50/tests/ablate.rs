//! `esc50 ablate` end to end on a generated ESC-50 corpus (official layout, 5 folds) with the
//! tiny fixture model: the store lacks the statistics first (a clear error), then every cell of
//! the one-at-a-time grid is filled, the outputs and plots are written, and a narrower grid
//! reproduces the same cells exactly.

mod common;

use std::path::Path;
use std::process::Output;

use pipeline::testing::tiny_model_dir;
use pipeline::testing::{assert_fails_with, assert_success as ok, task_in};

/// The shared corpus (`common::make_corpus`) with 1.0 s clips.
fn make_corpus(parent: &Path) -> std::path::PathBuf {
    common::make_corpus(parent, 1.0, &["A", "B"])
}

fn esc50(dir: &Path, data: &Path, args: &[&str]) -> Output {
    let mut cmd = task_in(env!("CARGO_BIN_EXE_esc50"), dir, args);
    cmd.arg("--data-dir").arg(data).output().unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn is_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{} missing: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert!(bytes.len() > 5_000, "{}", path.display());
}

#[test]
fn ablate_fills_every_cell_and_writes_tables_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(tmp.path());
    let dir = tmp.path();
    let model = tiny_model_dir().display().to_string();

    // Every layer, the mean only: the pooling cells cannot run, and the error says why.
    ok(esc50(
        dir,
        &data,
        &["extract", "--model", &model, "--layers", "all"],
    ));
    assert_fails_with(
        esc50(dir, &data, &["ablate", "--model", &model, "--epochs", "2"]),
        &["--pooling mean,std,max"],
    );
    ok(esc50(
        dir,
        &data,
        &[
            "extract",
            "--model",
            &model,
            "--layers",
            "all",
            "--pooling",
            "mean,std,max",
        ],
    ));
    let out = ok(esc50(
        dir,
        &data,
        &["ablate", "--model", &model, "--epochs", "3", "--jobs", "2"],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("26 cells (0 failed)"), "{stdout}");

    let results = dir.join("results/esc50/tiny-base");
    let a = read_json(&results.join("ablation.json"));
    assert_eq!(a["protocol"], "official");
    assert_eq!(a["mode"], "one-at-a-time");
    let cells = a["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 26);
    for c in cells {
        let label = c["label"].as_str().unwrap();
        assert_eq!(c["status"], "ok", "{label}: {}", c["error"]);
        let evals = c["evaluations"].as_array().unwrap().len();
        let knn = c["config"]["probe"] == "knn";
        assert_eq!(evals, if knn { 5 } else { 15 }, "{label}: folds x seeds");
        let acc = c["accuracy"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{label}: {acc}");
        let study = label.ends_with("(study)");
        assert_eq!(c["difference"].is_null(), study, "{label}");
        if !study {
            let d = &c["difference"];
            assert_eq!(d["items"], 50, "{label}: every test item paired");
            let (lo, hi) = (
                d["ci95"][0].as_f64().unwrap(),
                d["ci95"][1].as_f64().unwrap(),
            );
            assert!(lo <= hi, "{label}");
        }
        if c["config"]["layer"] == "best" || c["config"]["lr"] == "chosen" {
            assert_eq!(
                c["choices"].as_array().unwrap().len(),
                5,
                "{label}: one per fold"
            );
        }
    }
    let md = std::fs::read_to_string(results.join("ablation.md")).unwrap();
    assert!(
        md.contains("| component | cell |") && md.contains("linear (study)"),
        "{md}"
    );
    assert!(md.contains("![ablation.png](ablation.png)"), "{md}");
    let csv = std::fs::read_to_string(results.join("ablation.csv")).unwrap();
    assert_eq!(csv.lines().count(), 27);
    is_png(&results.join("ablation.png"));
    is_png(&results.join("learning_curve.png"));

    // A narrower grid, one job: the same cells, the same numbers.
    let other = dir.join("narrow");
    let mut cmd = task_in(
        env!("CARGO_BIN_EXE_esc50"),
        &other,
        &[
            "ablate", "--model", &model, "--epochs", "3", "--jobs", "1", "--grid", "scaler",
        ],
    );
    cmd.arg("--data-dir")
        .arg(&data)
        .arg("--features-dir")
        .arg(dir.join("features"));
    ok(cmd.output().unwrap());
    let narrow = read_json(&other.join("results/esc50/tiny-base/ablation.json"));
    let narrow = narrow["cells"].as_array().unwrap();
    assert_eq!(narrow.len(), 4);
    for c in narrow {
        let same = cells
            .iter()
            .find(|x| x["label"] == c["label"])
            .unwrap_or_else(|| panic!("{} in the full grid", c["label"]));
        assert_eq!(c["evaluations"], same["evaluations"], "{}", c["label"]);
        assert_eq!(c["difference"], same["difference"], "{}", c["label"]);
    }
}
