//! Two models side by side in one set of folders: `esc50 run` with the tiny HuBERT, then with
//! the tiny WavLM (another family). Each gets its own store, results folder and probes, named by
//! its slug; the second run changes none of the first's files; `train --model` picks the store of
//! the model named; `report` compares the two.

mod common;

use pipeline::testing::{
    assert_fails_with, assert_success as ok, run_tiny_wavlm, task_in, tiny_model_arg, TINY_SLUG,
    TINY_WAVLM_SLUG,
};

#[test]
fn two_models_share_the_folders_without_clobbering_and_report_compares_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = common::make_corpus(dir, 0.6, &["A"]);
    let bin = env!("CARGO_BIN_EXE_esc50");
    let esc50 = |args: &[&str]| {
        let mut cmd = task_in(bin, dir, args);
        cmd.arg("--data-dir").arg(&data).output().unwrap()
    };
    let hubert = tiny_model_arg();
    ok(esc50(&[
        "run",
        "--model",
        &hubert,
        "--epochs",
        "2",
        "--no-plots",
    ]));
    let wavlm = run_tiny_wavlm(bin, dir, &data, "esc50", &[]);
    assert_eq!(wavlm["features"]["items"], 25);

    let features = dir.join("features");
    let store =
        |slug: &str| std::fs::read(features.join(format!("esc50_features_{slug}.safetensors")));
    assert_ne!(store(TINY_SLUG).unwrap(), store(TINY_WAVLM_SLUG).unwrap());

    // `train --model` (or `--slug`) picks that model's store and results folder.
    ok(esc50(&[
        "train",
        "--slug",
        TINY_SLUG,
        "--epochs",
        "1",
        "--no-plots",
    ]));
    let text = std::fs::read_to_string(dir.join("results/esc50/tiny-base/results.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["features"]["family"], "hubert");
    assert_eq!(r["hyperparameters"]["epochs"], 1);
    // Without --model: the study's model, whose store is not there; the error lists those that are.
    assert_fails_with(
        esc50(&["train", "--epochs", "1"]),
        &[
            "esc50_features_hubert.safetensors not found",
            "esc50_features_tiny-base.safetensors, esc50_features_tiny-wavlm.safetensors",
        ],
    );

    report::write_report(&dir.join("results")).unwrap();
    let summary = std::fs::read_to_string(dir.join("results/summary.md")).unwrap();
    for needle in [
        "## Models",
        "| esc50 (tiny-base) |",
        "| esc50 (tiny-wavlm) |",
        "(slug `tiny-wavlm`, family wavlm",
        "(slug `tiny-base`, family hubert",
    ] {
        assert!(summary.contains(needle), "{needle:?} in:\n{summary}");
    }
}
