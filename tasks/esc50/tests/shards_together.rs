//! Shards as separate processes finishing together (as the elements of a job array do): every
//! one exits 0, exactly one assembles the store, and it equals a single process's byte for byte.

mod common;

use std::path::Path;
use std::process::Command;

use pipeline::testing::{assert_success as ok, task, tiny_model_arg as model};

/// The shared corpus (`common::make_corpus`) with 1.0 s clips.
fn make_corpus(parent: &Path) -> std::path::PathBuf {
    common::make_corpus(parent, 1.0, &["A"])
}

fn extract(data: &Path, features: &Path, shard: Option<&str>) -> Command {
    let mut cmd = task(
        env!("CARGO_BIN_EXE_esc50"),
        &["extract", "--model", &model(), "--chunk-size", "2"],
    );
    cmd.arg("--data-dir")
        .arg(data)
        .arg("--features-dir")
        .arg(features);
    if let Some(s) = shard {
        cmd.args(["--shard", s]);
    }
    cmd
}

#[test]
fn shards_finishing_together_assemble_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(tmp.path());
    let reference = tmp.path().join("reference");
    ok(extract(&data, &reference, None).output().unwrap());
    let store = "esc50_features_tiny-base.safetensors";
    let bytes = std::fs::read(reference.join(store)).unwrap();

    for round in 0..3 {
        let features = tmp.path().join(format!("round{round}"));
        let children: Vec<_> = (1..=4)
            .map(|k| {
                extract(&data, &features, Some(&format!("{k}/4")))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut assembled = 0;
        for child in children {
            let out = ok(child.wait_with_output().unwrap());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{stderr}");
            assembled += stderr
                .lines()
                .filter(|l| l.starts_with("assembled "))
                .count();
        }
        assert_eq!(assembled, 1, "round {round}: exactly one process assembles");
        assert_eq!(
            std::fs::read(features.join(store)).unwrap(),
            bytes,
            "round {round}"
        );
        assert!(!features.join(format!("{store}.parts")).exists());
    }
}
