//! Shards as separate processes finishing together (as the elements of a job array do): every
//! one exits 0, exactly one assembles the store, and it equals a single process's byte for byte.

use std::path::Path;
use std::process::Command;

use pipeline::testing::{assert_success as ok, class_tone, tiny_model_arg as model};
use pipeline::testing::{write_wav, WavEncoding};

/// `ESC-50-master/` with 25 one-second clips (5 classes x 5 folds) in the official layout.
fn make_corpus(parent: &Path) -> std::path::PathBuf {
    let root = parent.join("ESC-50-master");
    let mut csv = String::from("filename,fold,target,category,esc10,src_file,take\n");
    for fold in 1..=5u32 {
        for (target, category) in ["dog", "rooster", "pig", "cow", "frog"].iter().enumerate() {
            let src = 100_000 + fold as usize * 100 + target;
            let name = format!("{fold}-{src}-A-{target}.wav");
            let audio = class_tone(target, fold as u64 * 10 + target as u64, 1.0, 44_100);
            write_wav(
                &root.join("audio").join(&name),
                44_100,
                1,
                WavEncoding::Pcm16,
                &audio,
            );
            csv.push_str(&format!(
                "{name},{fold},{target},{category},False,{src},A\n"
            ));
        }
    }
    std::fs::create_dir_all(root.join("meta")).unwrap();
    std::fs::write(root.join("meta/esc50.csv"), csv).unwrap();
    root
}

fn extract(data: &Path, features: &Path, shard: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_esc50"));
    cmd.args(["extract", "--model", &model(), "--chunk-size", "2"])
        .arg("--data-dir")
        .arg(data)
        .arg("--features-dir")
        .arg(features)
        .env_remove("HUBERT_PROBE_THROTTLE_MS");
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
    let store = "esc50_features_hubert.safetensors";
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
