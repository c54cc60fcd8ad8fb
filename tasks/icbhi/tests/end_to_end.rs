//! ICBHI 2017 end to end on a small corpus in the exact official layout.
//!
//! - `ICBHI_final_database/{patient}_{recIdx}_{chest}_{sc|mc}_{device}.wav` and the same-name
//!   `.txt` cycle annotations (`start<TAB>end<TAB>crackles<TAB>wheezes`). Some files use CRLF
//!   and trailing blank lines.
//! - The split file `ICBHI_challenge_train_test.txt`: CRLF, one duplicated line, one listed
//!   recording that is missing, and patients 156 and 218 in both train and test, as in the
//!   real file.
//! - The diagnosis file `ICBHI_Challenge_diagnosis.txt`.
//!
//! Audio covers the three real sample rates (4 kHz, 10 kHz, 44.1 kHz) in 16- and 24-bit PCM.
//! Rates are assigned per device only to cover all three; the real rate/device mix differs.
//! Every cycle sounds a tone of its class (normal, crackle, wheeze, both).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pipeline::testing::{assert_success as ok, tiny_model_arg as model};
use pipeline::testing::{class_tone, write_wav, zip_dir, TestServer, WavEncoding};
use pipeline::testing::{task_in, tiny_wavlm_end_to_end};
use pipeline::Task;
use serde_json::Value;

/// Cycle kinds: (crackles, wheezes).
const N: (u8, u8) = (0, 0);
const C: (u8, u8) = (1, 0);
const W: (u8, u8) = (0, 1);
const B: (u8, u8) = (1, 1);

/// Three cycles' (crackles, wheezes) flags.
type Cycles = [(u8, u8); 3];

/// (recording, official split, cycles).
const RECORDINGS: [(&str, &str, Cycles); 15] = [
    ("101_1b1_Al_sc_Litt3200", "train", [N, N, N]),
    ("101_1b1_Pr_sc_Litt3200", "train", [N, C, N]),
    ("107_2b3_Ll_mc_LittC2SE", "train", [W, N, W]),
    ("107_2b3_Lr_mc_LittC2SE", "train", [N, N, N]),
    ("121_1b1_Tc_sc_Meditron", "train", [N, N, N]),
    ("130_2b2_Ll_mc_AKGC417L", "train", [C, B, C]),
    ("130_2b2_Pl_mc_AKGC417L", "train", [B, W, N]),
    ("156_2b3_Al_mc_AKGC417L", "train", [N, C, W]),
    ("218_1b1_Pl_sc_Meditron", "train", [N, N, N]),
    ("156_5b3_Pr_mc_AKGC417L", "test", [C, N, B]),
    ("218_1p1_Pr_sc_Litt3200", "test", [N, N, N]),
    ("125_1b1_Tc_sc_Meditron", "test", [N, N, N]),
    ("125_1b1_Ar_sc_Meditron", "test", [N, N, N]),
    ("226_1b1_Pl_sc_LittC2SE", "test", [W, W, N]),
    ("226_1b1_Ll_sc_LittC2SE", "test", [N, B, C]),
];

/// On disk but not in the split file (must be reported and left out).
const UNLISTED: &str = "226_1b1_Ar_sc_LittC2SE";
/// In the split file but not on disk (the real file's rename leftover).
const MISSING: &str = "226_1b1_Pl_sc_Meditron";

const DIAGNOSIS: &str = "101\tURTI\n102\tHealthy\n107\tCOPD\n121\tHealthy\n125\tHealthy\n\
                         130\tCOPD\n156\tCOPD\n218\tHealthy\n226\tPneumonia\n";

/// Cycle bounds within a 7.5 s recording, written with the real files' varied precision.
const BOUNDS: [(&str, &str); 3] = [("0.214", "2.5"), ("2.5", "4.836"), ("4.836", "7.2")];

fn format_of(device: &str) -> (u32, WavEncoding) {
    match device {
        "Litt3200" => (4_000, WavEncoding::Pcm16),
        "LittC2SE" => (10_000, WavEncoding::Pcm24),
        "Meditron" => (44_100, WavEncoding::Pcm16),
        _ => (44_100, WavEncoding::Pcm24), // AKGC417L
    }
}

fn write_recording(dir: &Path, name: &str, cycles: &[(u8, u8)], seed: u64, crlf: bool) {
    let device = name.rsplit('_').next().unwrap();
    let (sr, encoding) = format_of(device);
    let mut audio = vec![0.0f32; (7.5 * sr as f64) as usize];
    let mut txt = String::new();
    for (k, ((crackles, wheezes), (start, end))) in cycles.iter().zip(BOUNDS).enumerate() {
        let class = (crackles + 2 * wheezes) as usize;
        let (s, e): (f64, f64) = (start.parse().unwrap(), end.parse().unwrap());
        let tone = class_tone(class, seed * 10 + k as u64, e - s, sr);
        let offset = (s * sr as f64) as usize;
        for (i, v) in tone.into_iter().enumerate() {
            if let Some(slot) = audio.get_mut(offset + i) {
                *slot = v;
            }
        }
        let eol = if crlf { "\r\n" } else { "\n" };
        txt.push_str(&format!("{start}\t{end}\t{crackles}\t{wheezes}{eol}"));
    }
    if crlf {
        txt.push_str("\r\n");
    }
    write_wav(&dir.join(format!("{name}.wav")), sr, 1, encoding, &audio);
    std::fs::write(dir.join(format!("{name}.txt")), txt).unwrap();
}

/// Writes the corpus into `data_dir` (the folder `--data-dir` points at).
fn make_corpus(data_dir: &Path) -> PathBuf {
    let audio = data_dir.join("ICBHI_final_database");
    std::fs::create_dir_all(&audio).unwrap();
    let mut split = String::new();
    for (i, (name, part, cycles)) in RECORDINGS.iter().enumerate() {
        write_recording(&audio, name, cycles, i as u64, i % 4 == 1);
        split.push_str(&format!("{name}\t{part}\r\n"));
        if *name == "226_1b1_Pl_sc_LittC2SE" {
            split.push_str(&format!("{MISSING}\ttest\r\n"));
        }
        if i == 3 {
            split.push_str(&format!("{name}\t{part}\r\n")); // a duplicated line
        }
    }
    write_recording(&audio, UNLISTED, &[N, W, N], 99, false);
    std::fs::write(data_dir.join("ICBHI_challenge_train_test.txt"), split).unwrap();
    std::fs::write(data_dir.join("ICBHI_Challenge_diagnosis.txt"), DIAGNOSIS).unwrap();
    data_dir.to_path_buf()
}

fn icbhi(tmp: &Path, data: &Path, args: &[&str]) -> Command {
    let mut cmd = task_in(env!("CARGO_BIN_EXE_icbhi"), tmp, args);
    cmd.arg("--data-dir").arg(data);
    cmd
}

fn results(tmp: &Path, task: &str) -> Value {
    let path = tmp
        .join("results")
        .join(task)
        .join("tiny-base")
        .join("results.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cycle_class((c, w): (u8, u8)) -> usize {
    (c + 2 * w) as usize
}

/// Test-part counts per class for `label` over the test recordings.
fn test_support(n_classes: usize, labels: impl Fn(&str, &Cycles) -> Vec<usize>) -> Vec<u64> {
    let mut support = vec![0u64; n_classes];
    for (name, part, cycles) in RECORDINGS {
        if part == "test" {
            for l in labels(name, &cycles) {
                support[l] += 1;
            }
        }
    }
    support
}

/// Checks one probe's results: confusion matrix shape and supports, accuracy against the
/// matrix, and Se/Sp/score recomputed from the matrix with `negative` as the normal class.
fn check_probe(p: &Value, classes: &[&str], support: &[u64], negative: usize) {
    assert_eq!(p["classes"], serde_json::json!(classes));
    let cm: Vec<Vec<u64>> = serde_json::from_value(p["confusion_matrix"].clone()).unwrap();
    assert_eq!(cm.len(), classes.len());
    let rows: Vec<u64> = cm.iter().map(|r| r.iter().sum()).collect();
    assert_eq!(rows, support, "test items per class");
    let total: u64 = rows.iter().sum();
    let diag: u64 = (0..cm.len()).map(|i| cm[i][i]).sum();
    let acc = p["accuracy"]["mean"].as_f64().unwrap();
    assert!(
        (acc - diag as f64 / total as f64).abs() < 1e-9,
        "{acc} vs {diag}/{total}"
    );
    let m = &p["task_metrics"];
    let pos: Vec<usize> = (0..cm.len()).filter(|&c| c != negative).collect();
    let se = pos.iter().map(|&c| cm[c][c]).sum::<u64>() as f64
        / pos.iter().map(|&c| rows[c]).sum::<u64>() as f64;
    let sp = cm[negative][negative] as f64 / rows[negative] as f64;
    let close = |k: &str, v: f64| {
        let got = m[k]
            .as_f64()
            .unwrap_or_else(|| panic!("task_metrics.{k} in {m}"));
        assert!((got - v).abs() < 1e-9, "{k}: {got} vs {v} from {cm:?}");
    };
    close("sensitivity", se);
    close("specificity", sp);
    close("score", (se + sp) / 2.0);
    assert_eq!(m["negative_class"], classes[negative]);
    assert_eq!(m["matching"], "exact");
    // Grouped: any abnormal prediction counts for an abnormal item.
    let g_se = pos
        .iter()
        .map(|&t| pos.iter().map(|&q| cm[t][q]).sum::<u64>())
        .sum::<u64>() as f64
        / pos.iter().map(|&c| rows[c]).sum::<u64>() as f64;
    let g = m["grouped"]["sensitivity"].as_f64().unwrap();
    assert!((g - g_se).abs() < 1e-9, "grouped Se {g} vs {g_se}");
}

fn recording_abnormal(_: &str, cycles: &Cycles) -> Vec<usize> {
    vec![usize::from(cycles.iter().any(|&c| c != N))]
}

#[test]
fn download_then_official_and_patient_splits_at_recording_level() {
    let tmp = tempfile::tempdir().unwrap();
    let src = make_corpus(&tmp.path().join("src/icbhi"));
    let read = |n: &str| std::fs::read(src.join(n)).unwrap();
    let server = TestServer::serve(HashMap::from([
        (
            "ICBHI_final_database.zip".to_string(),
            zip_dir(&src.join("ICBHI_final_database")),
        ),
        (
            "ICBHI_challenge_train_test.txt".to_string(),
            read("ICBHI_challenge_train_test.txt"),
        ),
        (
            "ICBHI_Challenge_diagnosis.txt".to_string(),
            read("ICBHI_Challenge_diagnosis.txt"),
        ),
    ]));
    let data = tmp.path().join("data/icbhi");
    let out = ok(icbhi(
        tmp.path(),
        &data,
        &["run", "--model", &model(), "--epochs", "20"],
    )
    .arg("--mirror")
    .arg(&server.url)
    .output()
    .unwrap());
    assert!(server.requests() >= 3, "zip, split file, diagnosis file");
    for f in [
        "ICBHI_challenge_train_test.txt",
        "ICBHI_Challenge_diagnosis.txt",
        "ICBHI_final_database/101_1b1_Al_sc_Litt3200.wav",
        "ICBHI_final_database/101_1b1_Al_sc_Litt3200.txt",
    ] {
        assert!(data.join(f).is_file(), "{f} in place after download");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "patient(s) 156, 218 have recordings in both train and test",
        "107_2b3_Lr_mc_LittC2SE is listed twice (lines 4 and 5)",
        "lists 1 recording(s) not found",
        &format!("{MISSING}.wav"),
        &format!("does not list, left out: {UNLISTED}.wav"),
        "15 items from 15 recordings of 8 patients; official split: 9 train, 6 test",
    ] {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
    let r = results(tmp.path(), "icbhi");
    assert_eq!(r["task"], "icbhi");
    assert_eq!(r["protocol"]["name"], "official");
    let folds = r["protocol"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 1);
    assert_eq!(
        (&folds[0]["train"], &folds[0]["valid"], &folds[0]["test"]),
        (&9.into(), &0.into(), &6.into())
    );
    assert_eq!(r["features"]["items"], 15);
    let support = test_support(2, recording_abnormal);
    assert_eq!(support, [3, 3]);
    for probe in ["linear", "mlp"] {
        check_probe(&r["probes"][probe], &["normal", "abnormal"], &support, 0);
    }

    // The strictly patient-disjoint variant reuses the download and the features.
    let before = server.requests();
    let out = ok(icbhi(
        tmp.path(),
        &data,
        &[
            "run",
            "--model",
            &model(),
            "--epochs",
            "5",
            "--split",
            "patient",
            "--test-fraction",
            "0.3",
        ],
    )
    .arg("--mirror")
    .arg(&server.url)
    .output()
    .unwrap());
    assert_eq!(server.requests(), before, "no second download");
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
    let r = results(tmp.path(), "icbhi");
    assert_eq!(r["protocol"]["name"], "group-random");
    let fold = &r["protocol"]["folds"][0];
    let test = fold["test"].as_u64().unwrap();
    assert_eq!(fold["train"].as_u64().unwrap() + test, 15);
    assert!((1..15).contains(&test));
    for probe in ["linear", "mlp"] {
        let cm: Vec<Vec<u64>> =
            serde_json::from_value(r["probes"][probe]["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.iter().flatten().sum::<u64>(), test);
        let m = &r["probes"][probe]["task_metrics"];
        let rows: Vec<u64> = cm.iter().map(|r| r.iter().sum()).collect();
        let rate = |c: usize| {
            if rows[c] == 0 {
                0.0
            } else {
                cm[c][c] as f64 / rows[c] as f64
            }
        };
        assert!((m["sensitivity"].as_f64().unwrap() - rate(1)).abs() < 1e-9);
        assert!((m["specificity"].as_f64().unwrap() - rate(0)).abs() < 1e-9);
    }
}

#[test]
fn patient_split_keeps_every_patient_on_one_side() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(&tmp.path().join("icbhi"));
    for level in [icbhi::Level::Recording, icbhi::Level::Cycle] {
        let task = icbhi::Icbhi::new(&icbhi::IcbhiOptions {
            level,
            ..Default::default()
        })
        .unwrap();
        let ds = task.load(&data).unwrap();
        for seed in [1, 42, 7] {
            let p = task.custom_protocol("patient", 0.3, seed).unwrap();
            let s = &pipeline::protocol::splits(&p, &ds.items, 0.0, seed).unwrap()[0];
            let side = |idx: &[usize]| -> BTreeSet<String> {
                idx.iter()
                    .map(|&i| ds.items[i].group.clone().unwrap())
                    .collect()
            };
            let (train, test) = (side(&s.train), side(&s.test));
            assert!(!test.is_empty());
            assert!(
                train.is_disjoint(&test),
                "{level:?} seed {seed}: {train:?} / {test:?}"
            );
            assert_eq!(s.train.len() + s.test.len(), ds.items.len());
        }
        // The official split is not patient-disjoint, and says so.
        assert!(ds
            .notes
            .iter()
            .any(|n| n.contains("patient(s) 156, 218 have recordings in both")));
    }
    let task = icbhi::Icbhi::new(&Default::default()).unwrap();
    assert!(task.custom_protocol("speaker", 0.2, 1).is_none());
}

#[test]
fn cycle_level_four_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(&tmp.path().join("icbhi"));
    let out = ok(icbhi(
        tmp.path(),
        &data,
        &[
            "run",
            "--level",
            "cycle",
            "--model",
            &model(),
            "--epochs",
            "20",
        ],
    )
    .output()
    .unwrap());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("45 items from 15 recordings of 8 patients; official split: 27 train, 18 test"));
    let r = results(tmp.path(), "icbhi_cycle");
    assert_eq!(r["task"], "icbhi_cycle");
    assert_eq!(r["protocol"]["name"], "official");
    assert_eq!(r["features"]["items"], 45);
    let folds = &r["protocol"]["folds"][0];
    assert_eq!(
        (folds["train"].as_u64(), folds["test"].as_u64()),
        (Some(27), Some(18))
    );
    let support = test_support(4, |_, cycles| {
        cycles.iter().map(|&c| cycle_class(c)).collect()
    });
    assert!(
        support.iter().all(|&s| s > 0),
        "every class is tested: {support:?}"
    );
    let classes = ["normal", "crackle", "wheeze", "both"];
    for probe in ["linear", "mlp"] {
        let p = &r["probes"][probe];
        check_probe(p, &classes, &support, 0);
        assert_eq!(
            p["task_metrics"]["positive_classes"],
            serde_json::json!(["crackle", "wheeze", "both"])
        );
    }
    // Each cycle is a pure tone of its class: the MLP separates them from the cut segments.
    let mlp = r["probes"]["mlp"]["accuracy"]["mean"].as_f64().unwrap();
    assert!(mlp > 0.6, "mlp accuracy {mlp} on separable cycle tones");
    // The feature store keeps each cycle's segment and patient.
    let bytes = std::fs::read(
        tmp.path()
            .join("features/icbhi_cycle_features_tiny-base.safetensors"),
    )
    .unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let items: Vec<Value> =
        serde_json::from_str(&header.metadata().clone().unwrap()["items"]).unwrap();
    assert_eq!(
        items[0]["path"],
        "ICBHI_final_database/101_1b1_Al_sc_Litt3200.wav"
    );
    assert_eq!(items[0]["segment"], serde_json::json!([0.214, 2.5]));
    assert_eq!(items[0]["group"], "101");
    assert_eq!(items[0]["split"], "train");
}

#[test]
fn diagnosis_labels_and_external_labels_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let data = make_corpus(&tmp.path().join("icbhi"));
    ok(icbhi(
        tmp.path(),
        &data,
        &[
            "run",
            "--labels",
            "diagnosis",
            "--model",
            &model(),
            "--epochs",
            "10",
        ],
    )
    .output()
    .unwrap());
    let r = results(tmp.path(), "icbhi_diagnosis");
    assert_eq!(r["protocol"]["name"], "official");
    let healthy = ["121", "125", "218"];
    let support = test_support(2, |name, _| {
        vec![usize::from(!healthy.contains(&&name[..3]))]
    });
    assert_eq!(support, [3, 3]);
    for probe in ["linear", "mlp"] {
        check_probe(&r["probes"][probe], &["healthy", "unhealthy"], &support, 0);
    }

    // The original study's result.csv: file,label with class names; classes come out sorted,
    // so `normal` (the negative class) is index 1 here. One recording is left unlabelled.
    let csv_path = tmp.path().join("result.csv");
    let mut csv = String::from("file,label\r\n");
    for (name, _, cycles) in RECORDINGS.iter().skip(1) {
        let label = ["normal", "abnormal"][recording_abnormal(name, cycles)[0]];
        csv.push_str(&format!("{name}.wav,{label}\r\n"));
    }
    std::fs::write(&csv_path, csv).unwrap();
    let out = ok(icbhi(
        tmp.path(),
        &data,
        &[
            "run",
            "--model",
            &model(),
            "--epochs",
            "10",
            "--probe",
            "linear",
        ],
    )
    .arg("--labels-csv")
    .arg(&csv_path)
    .output()
    .unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no label for 1 recording(s), left out: 101_1b1_Al_sc_Litt3200.wav"),
        "{stderr}"
    );
    assert!(
        stderr.contains("in sorted order: abnormal, normal"),
        "{stderr}"
    );
    let r = results(tmp.path(), "icbhi_labels");
    assert_eq!(r["features"]["items"], 14);
    let support = test_support(2, |name, cycles| {
        vec![1 - recording_abnormal(name, cycles)[0]]
    });
    check_probe(&r["probes"]["linear"], &["abnormal", "normal"], &support, 1);
}

#[test]
fn manual_download_instructions_when_the_host_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::serve(HashMap::new()); // every file: 404
    let data = tmp.path().join("data/icbhi");
    let out = icbhi(tmp.path(), &data, &["download", "--mirror", &server.url])
        .output()
        .unwrap();
    let base = "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database";
    let needles = [
        "404".to_string(),
        format!("under the data directory {}", data.display()),
        format!("1. {base}/ICBHI_final_database.zip"),
        "ICBHI_final_database/ holds the .wav and .txt files".into(),
        ".downloads/ICBHI_final_database.zip".into(),
        format!("2. {base}/ICBHI_challenge_train_test.txt -> ICBHI_challenge_train_test.txt"),
        format!("3. {base}/ICBHI_Challenge_diagnosis.txt -> ICBHI_Challenge_diagnosis.txt"),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    pipeline::testing::assert_fails_with(out, &needles);
}

#[test]
fn broken_layouts_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let extract = |data: &Path, extra: &[&str]| {
        icbhi(tmp.path(), data, &["extract", "--model", &model()])
            .args(extra)
            .output()
            .unwrap()
    };
    let fails_with =
        |out: Output, needle: &str| pipeline::testing::assert_fails_with(out, &[needle]);
    fails_with(
        extract(&tmp.path().join("nowhere"), &[]),
        "ICBHI_final_database not found; run `icbhi download` or pass --data-dir",
    );
    let data = make_corpus(&tmp.path().join("icbhi"));
    let split = data.join("ICBHI_challenge_train_test.txt");
    let text = std::fs::read_to_string(&split).unwrap();
    std::fs::remove_file(&split).unwrap();
    fails_with(
        extract(&data, &[]),
        "ICBHI_challenge_train_test.txt not found; run `icbhi download` or pass --data-dir",
    );
    std::fs::write(
        &split,
        text.replace(
            "107_2b3_Ll_mc_LittC2SE\ttrain",
            "107_2b3_Ll_mc_LittC2SE train extra",
        ),
    )
    .unwrap();
    fails_with(
        extract(&data, &[]),
        "ICBHI_challenge_train_test.txt: line 3: expected `name<TAB>train|test`, found 3 fields",
    );
    std::fs::write(
        &split,
        text.replace("Pr_sc_Litt3200\ttrain", "Pr_sc_Litt9999\ttrain"),
    )
    .unwrap();
    fails_with(
        extract(&data, &[]),
        "line 2: \"101_1b1_Pr_sc_Litt9999\": device",
    );
    std::fs::write(&split, &text).unwrap();

    let txt = data.join("ICBHI_final_database/130_2b2_Ll_mc_AKGC417L.txt");
    let ann = std::fs::read_to_string(&txt).unwrap();
    std::fs::write(&txt, ann.replacen("\t1\t1", "\t1\tyes", 1)).unwrap();
    fails_with(
        extract(&data, &[]),
        "130_2b2_Ll_mc_AKGC417L.txt: line 2: wheezes flag \"yes\" is not 0 or 1",
    );
    std::fs::remove_file(&txt).unwrap();
    fails_with(extract(&data, &[]), "130_2b2_Ll_mc_AKGC417L.txt not found");
    std::fs::write(&txt, &ann).unwrap();

    let diagnosis = data.join("ICBHI_Challenge_diagnosis.txt");
    std::fs::write(&diagnosis, "101\tURTI\n").unwrap();
    fails_with(
        extract(&data, &["--labels", "diagnosis"]),
        "no diagnosis for patient 107 (recording 107_2b3_Ll_mc_LittC2SE.wav)",
    );
    fails_with(
        extract(&data, &["--level", "cycle", "--labels", "diagnosis"]),
        "--labels diagnosis is recording-level only",
    );
}

/// Recording level with a model of another family: the tiny WavLM's own store, results, probes.
#[test]
fn runs_on_a_tiny_wavlm() {
    let corpus = |dir: &Path| make_corpus(&dir.join("icbhi"));
    let r = tiny_wavlm_end_to_end(env!("CARGO_BIN_EXE_icbhi"), "icbhi", corpus, &[]);
    assert_eq!(r["features"]["items"], 15);
}
