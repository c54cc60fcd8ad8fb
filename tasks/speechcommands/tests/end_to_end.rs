//! Speech Commands end to end on small corpora in the exact official layout:
//! `{word}/{speakerhash}_nohash_{n}.wav` (16 kHz mono 16-bit, 1 s and shorter),
//! `validation_list.txt` / `testing_list.txt` with `word/file.wav` lines, and
//! `_background_noise_/` with multi-second noise recordings; served as a tar.gz with no top-level
//! folder (like the official archives) from 127.0.0.1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline::testing::{assert_success as ok, tiny_model_arg as model};
use pipeline::testing::{class_tone, write_wav, TestServer, WavEncoding};
use pipeline::testing::{task_in, tiny_wavlm_end_to_end};

/// Speaker hashes; the first four train, the fifth is in validation_list.txt, the sixth in
/// testing_list.txt (the official lists assign whole speakers).
const SPEAKERS: [&str; 6] = [
    "0a7c2a8d", "0b09edd3", "0c2ca723", "0f3f64d5", "1a892463", "2b5e346d",
];
/// "yes" is a SUPERB command, the others are not ("backward" exists in v0.02 only).
const WORDS_V2: [&str; 3] = ["backward", "bed", "yes"];
const WORDS_V1: [&str; 3] = ["bed", "cat", "yes"];
/// Clips per word: speaker 0 says each word twice.
const TRAIN_PER_WORD: u64 = 5;

/// Writes the unpacked archive's contents into `root`.
fn make_corpus(root: &Path, words: &[&str]) {
    let (mut valid, mut test) = (String::new(), String::new());
    for (w, word) in words.iter().enumerate() {
        for (s, speaker) in SPEAKERS.iter().enumerate() {
            let takes = if s == 0 { 2 } else { 1 };
            for n in 0..takes {
                let file = format!("{speaker}_nohash_{n}.wav");
                // Some clips are shorter than 1 s, as in the real data.
                let seconds = match s {
                    2 => 0.7,
                    5 => 0.85,
                    _ => 1.0,
                };
                let seed = (w * 100 + s * 10 + n) as u64;
                write_wav(
                    &root.join(word).join(&file),
                    16_000,
                    1,
                    WavEncoding::Pcm16,
                    &class_tone(w, seed, seconds, 16_000),
                );
                match s {
                    4 => valid.push_str(&format!("{word}/{file}\n")),
                    5 => test.push_str(&format!("{word}/{file}\n")),
                    _ => {}
                }
            }
        }
    }
    std::fs::write(root.join("validation_list.txt"), valid).unwrap();
    std::fs::write(root.join("testing_list.txt"), test).unwrap();
    for (name, seconds, seed) in [("running_tap.wav", 8.0, 7), ("white_noise.wav", 12.0, 8)] {
        // Broadband noise: class_tone's noise part dominates at this amplitude.
        let noise: Vec<f32> = class_tone(9, seed, seconds, 16_000)
            .iter()
            .map(|x| x * 0.1)
            .collect();
        write_wav(
            &root.join("_background_noise_").join(name),
            16_000,
            1,
            WavEncoding::Pcm16,
            &noise,
        );
    }
    std::fs::write(
        root.join("_background_noise_/README.md"),
        "Noise recordings to mix with the clips.\n",
    )
    .unwrap();
    std::fs::write(root.join("LICENSE"), "Creative Commons BY 4.0\n").unwrap();
    std::fs::write(root.join("README.md"), "Speech Commands Data Set\n").unwrap();
}

/// A tar.gz of `root`'s contents with `./`-relative entries and no top-level folder.
fn tar_gz_flat(root: &Path) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(enc);
    tar.append_dir_all(".", root).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn speechcommands(dir: &Path, args: &[&str]) -> Command {
    task_in(env!("CARGO_BIN_EXE_speechcommands"), dir, args)
}

fn results(dir: &Path, task: &str) -> serde_json::Value {
    let path = dir
        .join("results")
        .join(task)
        .join("tiny-base")
        .join("results.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn confusion(r: &serde_json::Value, probe: &str) -> Vec<Vec<u64>> {
    serde_json::from_value(r["probes"][probe]["confusion_matrix"].clone()).unwrap()
}

fn store_meta(features: &Path) -> HashMap<String, String> {
    let bytes = std::fs::read(features).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().clone().unwrap()
}

#[test]
fn v2_downloads_and_runs_the_official_split_then_the_12_class_task() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_corpus(&src, &WORDS_V2);
    let server = TestServer::serve(HashMap::from([(
        "speech_commands_v0.02.tar.gz".to_string(),
        tar_gz_flat(&src),
    )]));
    let data = tmp.path().join("data/speech_commands_v0.02");
    let run = |extra: &[&str]| {
        let mut cmd = speechcommands(
            tmp.path(),
            &[
                "run",
                "--version",
                "2",
                "--model",
                &model(),
                "--epochs",
                "10",
            ],
        );
        cmd.args(extra)
            .arg("--data-dir")
            .arg(&data)
            .arg("--mirror")
            .arg(&server.url);
        cmd
    };

    // HEAR's md5 is pinned: the stand-in archive is refused, then accepted with checks skipped.
    let out = run(&[]).output().unwrap();
    pipeline::testing::assert_fails_with(out, &["6b74f3901214cb2c2934e98196829835"]);
    let out = ok(run(&[])
        .env("HUBERT_PROBE_SKIP_CHECKSUMS", "1")
        .output()
        .unwrap());
    assert!(
        data.join("validation_list.txt").is_file() && data.join("yes").is_dir(),
        "no top-level folder: the archive unpacks into the data dir itself"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 words, 21 clips: 15 train, 3 valid, 3 test"),
        "{stderr}"
    );
    assert!(
        stderr.contains("found 3 word folders; the official v0.02 release has 35"),
        "{stderr}"
    );

    let r = results(tmp.path(), "speechcommands_v2");
    assert_eq!(r["task"], "speechcommands_v2");
    assert_eq!(r["protocol"]["name"], "official");
    assert_eq!(r["protocol"]["spec"]["kind"], "predefined_split");
    let folds = r["protocol"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 1);
    assert_eq!(folds[0]["train"], 3 * TRAIN_PER_WORD);
    assert_eq!(
        folds[0]["valid"], 3,
        "validation_list.txt selects the epoch"
    );
    assert_eq!(folds[0]["test"], 3);
    assert_eq!(r["features"]["items"], 21);
    for probe in ["linear", "mlp"] {
        assert_eq!(
            r["probes"][probe]["classes"],
            serde_json::json!(WORDS_V2),
            "word folders, sorted, _background_noise_ excluded"
        );
        let cm = confusion(&r, probe);
        for row in &cm {
            assert_eq!(row.iter().sum::<u64>(), 1, "one test speaker per word");
        }
        let diag: u64 = (0..3).map(|i| cm[i][i]).sum();
        let acc = r["probes"][probe]["accuracy"]["mean"].as_f64().unwrap();
        assert!((acc - diag as f64 / 3.0).abs() < 1e-9, "{probe}: {acc}");
    }
    let meta = store_meta(
        &tmp.path()
            .join("features/speechcommands_v2_features_tiny-base.safetensors"),
    );
    let items: Vec<serde_json::Value> = serde_json::from_str(&meta["items"]).unwrap();
    let first = &items[0];
    assert_eq!(first["path"], "backward/0a7c2a8d_nohash_0.wav");
    assert_eq!(first["group"], "0a7c2a8d");
    assert_eq!(first["split"], "train");
    let test_item = items
        .iter()
        .find(|it| it["path"] == "yes/2b5e346d_nohash_0.wav")
        .unwrap();
    assert_eq!(test_item["split"], "test");

    // The SUPERB task: 10 commands + _unknown_ + _silence_ from the same download.
    let before = server.requests();
    let out = ok(run(&["--classes", "12", "--probe", "linear"])
        .output()
        .unwrap());
    assert_eq!(server.requests(), before, "no second download");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "_silence_: 7 one-second crops of _background_noise_/ (5 train, 1 valid, 1 test)"
        ),
        "{stderr}"
    );
    let r = results(tmp.path(), "speechcommands_v2_12");
    let classes: Vec<String> =
        serde_json::from_value(r["probes"]["linear"]["classes"].clone()).unwrap();
    assert_eq!(
        classes,
        [
            "yes",
            "no",
            "up",
            "down",
            "left",
            "right",
            "on",
            "off",
            "stop",
            "go",
            "_unknown_",
            "_silence_"
        ]
    );
    let folds = r["protocol"]["folds"].as_array().unwrap();
    assert_eq!(folds[0]["train"], 3 * TRAIN_PER_WORD + 5);
    assert_eq!(folds[0]["valid"], 3 + 1);
    assert_eq!(folds[0]["test"], 3 + 1);
    let cm = confusion(&r, "linear");
    let support: Vec<u64> = cm.iter().map(|row| row.iter().sum()).collect();
    assert_eq!(support, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1]);
    let meta = store_meta(
        &tmp.path()
            .join("features/speechcommands_v2_12_features_tiny-base.safetensors"),
    );
    let items: Vec<serde_json::Value> = serde_json::from_str(&meta["items"]).unwrap();
    let silence: Vec<&serde_json::Value> = items.iter().filter(|it| it["label"] == 11).collect();
    assert_eq!(silence.len(), 7);
    for it in &silence {
        let seg = it["segment"].as_array().unwrap();
        let (a, b) = (seg[0].as_f64().unwrap(), seg[1].as_f64().unwrap());
        assert!((b - a - 1.0).abs() < 1e-9, "1 s crops: {it}");
        let (secs, path) = if it["path"] == "_background_noise_/white_noise.wav" {
            (12.0, "white")
        } else {
            (8.0, "tap")
        };
        // Train crops come from the first 80% of a file, valid 80-90%, test the last 10%.
        let (lo, hi) = match it["split"].as_str().unwrap() {
            "train" => (0.0, 0.8),
            "valid" => (0.8, 0.9),
            "test" => (0.9, 1.0),
            other => panic!("{other}"),
        };
        assert!(
            a >= lo * secs - 1e-9 && b <= hi * secs + 1e-9,
            "{path}: {a}..{b} outside its split's part"
        );
    }
    let padded: Vec<String> = serde_json::from_str(&meta["padded"]).unwrap_or_default();
    assert!(padded.is_empty(), "prepare pads to 1 s itself: {padded:?}");
}

#[test]
fn v1_downloads_into_its_default_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_corpus(&src, &WORDS_V1);
    let server = TestServer::serve(HashMap::from([(
        "speech_commands_v0.01.tar.gz".to_string(),
        tar_gz_flat(&src),
    )]));
    let out = ok(speechcommands(
        tmp.path(),
        &[
            "run",
            "--version",
            "1",
            "--model",
            &model(),
            "--epochs",
            "5",
            "--probe",
            "linear",
        ],
    )
    .arg("--mirror")
    .arg(&server.url)
    .env("HUBERT_PROBE_SKIP_CHECKSUMS", "1")
    .current_dir(tmp.path())
    .output()
    .unwrap());
    assert!(tmp
        .path()
        .join("data/speech_commands_v0.01/testing_list.txt")
        .is_file());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the official v0.01 release has 30"));
    let r = results(tmp.path(), "speechcommands_v1");
    assert_eq!(r["task"], "speechcommands_v1");
    assert_eq!(
        r["probes"]["linear"]["classes"],
        serde_json::json!(WORDS_V1)
    );
    let total: u64 = confusion(&r, "linear").iter().flatten().sum();
    assert_eq!(total, 3);
    assert!(tmp
        .path()
        .join("features/speechcommands_v1_features_tiny-base.safetensors")
        .is_file());
}

#[test]
fn broken_layouts_and_options_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let extract = |data: &Path, extra: &[&str]| {
        task_in(
            env!("CARGO_BIN_EXE_speechcommands"),
            tmp.path(),
            &["extract", "--model", &model()],
        )
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .output()
        .unwrap()
    };
    let fails_with = pipeline::testing::assert_fails_with;
    fails_with(
        extract(&tmp.path().join("nowhere"), &[]),
        &["validation_list.txt not found; run `speechcommands download` or pass --data-dir"],
    );
    fails_with(
        extract(&tmp.path().join("nowhere"), &["--version", "1"]),
        &["run `speechcommands download --version 1` or pass --data-dir"],
    );
    fails_with(
        extract(&tmp.path().join("nowhere"), &["--classes", "10"]),
        &["--classes supports 12"],
    );

    let data: PathBuf = tmp.path().join("c");
    make_corpus(&data, &WORDS_V2);
    let list = data.join("testing_list.txt");
    let text = std::fs::read_to_string(&list).unwrap();
    std::fs::write(&list, text.replace("bed/", "bed\\")).unwrap();
    fails_with(
        extract(&data, &[]),
        &["testing_list.txt: line 2", "expected a path like"],
    );
    std::fs::write(&list, format!("{text}yes/ffffffff_nohash_0.wav\n")).unwrap();
    fails_with(
        extract(&data, &[]),
        &["yes/ffffffff_nohash_0.wav", "missing"],
    );
    std::fs::write(&list, &text).unwrap();
    std::fs::remove_dir_all(data.join("_background_noise_")).unwrap();
    fails_with(
        extract(&data, &["--classes", "12"]),
        &["_background_noise_ not found", "_silence_"],
    );
}

/// Version 2 (three words) with the tiny WavLM: its own store, results and probes.
#[test]
fn runs_on_a_tiny_wavlm() {
    let corpus = |dir: &Path| {
        let data = dir.join("speech_commands_v0.02");
        make_corpus(&data, &WORDS_V2);
        data
    };
    let bin = env!("CARGO_BIN_EXE_speechcommands");
    let r = tiny_wavlm_end_to_end(bin, "speechcommands_v2", corpus, &[]);
    assert_eq!(
        r["probes"]["linear"]["classes"],
        serde_json::json!(WORDS_V2)
    );
}
