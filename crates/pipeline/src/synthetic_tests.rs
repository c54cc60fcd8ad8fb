//! The generic pipeline on a small synthetic task, through the library (no task binary): a
//! `Task` whose items are `class<c>/clip<i>.wav` tones at 22.05 kHz in two folds. Covers what
//! every dataset shares: extraction (up to date, resume, shards in any order, merge, chunk sizes,
//! undecodable files), training (folds, runs, every layer, the weighted sum) and the outputs
//! (results.json through the `results` schema, report.md, confusion and prediction CSVs, plots).

use std::path::{Path, PathBuf};

use hubert_core::{LayerSelection, ModelArgs, ModelSource};
use probe_heads::TrainConfig;

use crate::extract::{
    extract, merge, parts_dir, store_path, ExtractOptions, ExtractOutcome, LongClips, Shard,
};
use crate::protocol::Protocol;
use crate::store::FeatureStore;
use crate::task::{Dataset, Item, Partition, Task};
use crate::testing::{class_tone, tiny_model_dir, write_wav, WavEncoding};
use crate::train::{train, LayerChoice, ProbeChoice, TrainOptions};

const CLASSES: usize = 3;
const PER_CLASS_AND_FOLD: usize = 3;

/// Three tone classes, two folds.
struct Synthetic;

impl Task for Synthetic {
    fn name(&self) -> String {
        "synthetic".into()
    }
    fn description(&self) -> String {
        "three tones".into()
    }
    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data/synthetic")
    }
    fn resources(&self) -> Vec<crate::download::Resource> {
        Vec::new()
    }
    fn is_present(&self, data_dir: &Path) -> bool {
        data_dir.join("class0").is_dir()
    }
    fn load(&self, data_dir: &Path) -> anyhow::Result<Dataset> {
        let mut items = Vec::new();
        for fold in 1..=2u32 {
            for class in 0..CLASSES {
                for i in 0..PER_CLASS_AND_FOLD {
                    items.push(Item {
                        path: format!("class{class}/clip{fold}{i}.wav"),
                        label: class,
                        split: Partition::Fold(fold),
                        group: Some(format!("{class}-{fold}-{i}")),
                        segment: None,
                    });
                }
            }
        }
        Ok(Dataset {
            root: data_dir.to_path_buf(),
            class_names: (0..CLASSES).map(|c| format!("tone{c}")).collect(),
            items,
            notes: Vec::new(),
        })
    }
    fn official_protocol(&self) -> Protocol {
        Protocol::PredefinedFolds
    }
}

/// Writes the corpus: 0.4-1.2 s tones of unequal lengths (so batches bucket), one 300-sample clip
/// (zero-padded to the receptive field).
fn corpus(dir: &Path) -> Dataset {
    let dataset = Synthetic.load(dir).unwrap();
    for (k, item) in dataset.items.iter().enumerate() {
        let seconds = if k == 4 {
            300.0 / 22_050.0
        } else {
            0.4 + 0.1 * (k % 9) as f64
        };
        let audio = class_tone(item.label, k as u64, seconds, 22_050);
        write_wav(&dir.join(&item.path), 22_050, 1, WavEncoding::Pcm16, &audio);
    }
    dataset
}

fn options(chunk_size: usize, shard: Option<Shard>) -> ExtractOptions {
    ExtractOptions {
        model: ModelArgs {
            model: tiny_model_dir().display().to_string(),
            device: Default::default(),
            dtype: Default::default(),
        },
        layers: LayerSelection::All,
        batch_size: 4,
        shard,
        skip_bad: false,
        chunk_size,
        pooling: Default::default(),
        slug: None,
        long_clips: Default::default(),
    }
}

/// The store of every layer of the synthetic task in `features_dir`.
fn store_in(features_dir: &Path) -> PathBuf {
    store_path(features_dir, "synthetic", "hubert", &LayerSelection::All)
}

fn source() -> ModelSource {
    ModelSource::resolve(&tiny_model_dir().display().to_string()).unwrap()
}

fn run(dataset: &Dataset, store: &Path, opts: &ExtractOptions) -> ExtractOutcome {
    extract(&Synthetic, dataset, store, opts, source()).unwrap()
}

#[test]
fn extraction_resumes_shards_and_merges_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let n = dataset.items.len();

    let reference = store_in(&tmp.path().join("one"));
    assert_eq!(
        run(&dataset, &reference, &options(4, None)),
        ExtractOutcome::Complete(reference.clone())
    );
    let bytes = std::fs::read(&reference).unwrap();
    let store = FeatureStore::open(&reference).unwrap();
    assert_eq!((store.len(), store.num_layers, store.dim), (n, 3, 32));
    assert_eq!(store.padded, ["class1/clip11.wav"], "the 300-sample clip");
    assert!(
        !parts_dir(&reference).exists(),
        "parts removed once assembled"
    );
    // Up to date: nothing recomputed, nothing rewritten.
    run(&dataset, &reference, &options(4, None));
    assert_eq!(std::fs::read(&reference).unwrap(), bytes);

    // Another chunk size gives the same store.
    let other = store_in(&tmp.path().join("chunks"));
    run(&dataset, &other, &options(7, None));
    assert_eq!(std::fs::read(&other).unwrap(), bytes);

    // Shards in any order: only the last one assembles, and the store equals one run's.
    let sharded = store_in(&tmp.path().join("shards"));
    for (k, expect_done) in [(3, false), (1, false), (2, true)] {
        let outcome = run(
            &dataset,
            &sharded,
            &options(4, Some(Shard { index: k, count: 3 })),
        );
        assert_eq!(
            matches!(outcome, ExtractOutcome::Complete(_)),
            expect_done,
            "shard {k}: {outcome:?}"
        );
    }
    assert_eq!(std::fs::read(&sharded).unwrap(), bytes);

    // Resume: a run that stopped after some chunks (here: shard 1 of 2) is finished by a full
    // run, which computes only what is missing.
    let resumed = store_in(&tmp.path().join("resume"));
    let first_half = run(
        &dataset,
        &resumed,
        &options(4, Some(Shard { index: 1, count: 2 })),
    );
    assert_eq!(first_half, ExtractOutcome::ShardDone { done: 2, total: 5 });
    run(&dataset, &resumed, &options(4, None));
    assert_eq!(std::fs::read(&resumed).unwrap(), bytes);

    // Merge: parts made on "another machine" are copied in, and the store assembled.
    let machine_a = store_in(&tmp.path().join("a"));
    let machine_b = store_in(&tmp.path().join("b"));
    run(
        &dataset,
        &machine_a,
        &options(4, Some(Shard { index: 1, count: 2 })),
    );
    run(
        &dataset,
        &machine_b,
        &options(4, Some(Shard { index: 2, count: 2 })),
    );
    let merged = merge(&dataset, &machine_a, &[parts_dir(&machine_b)]).unwrap();
    assert_eq!(std::fs::read(merged).unwrap(), bytes);
}

#[test]
fn undecodable_files_stop_extraction_or_are_skipped_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    std::fs::write(
        dataset.path_of(&dataset.items[2]),
        b"RIFF\x10\0\0\0WAVEjunk",
    )
    .unwrap();
    let store = store_in(&tmp.path().join("f"));
    let err = extract(&Synthetic, &dataset, &store, &options(4, None), source()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("class0/clip12.wav") && msg.contains("--skip-bad"),
        "{msg}"
    );
    let mut opts = options(4, None);
    opts.skip_bad = true;
    run(&dataset, &store, &opts);
    let store = FeatureStore::open(&store).unwrap();
    assert_eq!(store.len(), dataset.items.len() - 1);
    assert_eq!(store.skipped.len(), 1);
    assert_eq!(store.skipped[0].index, 2);
}

fn train_options(dir: &Path, layer: LayerChoice, runs: usize, plots: bool) -> TrainOptions {
    TrainOptions {
        pooling: Default::default(),
        probe: ProbeChoice::Both,
        config: TrainConfig {
            epochs: 8,
            ..TrainConfig::default()
        },
        protocol: Protocol::PredefinedFolds,
        runs,
        layer,
        val_fraction: 0.0,
        results_dir: dir.join("results/synthetic/hubert"),
        models_dir: dir.join("models"),
        slug: "hubert".into(),
        plots,
    }
}

#[test]
fn training_writes_results_report_csvs_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let path = store_in(&tmp.path().join("f"));
    run(&dataset, &path, &options(8, None));
    let store = FeatureStore::open(&path).unwrap();
    let n = dataset.items.len() as u64;

    let opts = train_options(tmp.path(), LayerChoice::Last, 2, true);
    let outcome = train(&Synthetic, &store, &opts).unwrap();
    // results.json reads back through the schema, equal to what `train` returned.
    let results = results::Results::read(&outcome.results_path).unwrap();
    assert_eq!(results, outcome.results);
    assert_eq!(results.task, "synthetic");
    assert_eq!(results.protocol.folds.len(), 2);
    assert_eq!(results.features.padded, 1);
    assert_eq!(
        results.features.layer,
        serde_json::json!(2),
        "last stored layer"
    );
    for (name, probe) in &results.probes {
        assert_eq!(probe.evaluations.len(), 4, "{name}: 2 folds x 2 runs");
        let seeds: Vec<u64> = probe.evaluations.iter().map(|e| e.seed).collect();
        assert!(seeds.contains(&42) && seeds.contains(&43), "{seeds:?}");
        let total: u64 = probe.confusion_matrix.iter().flatten().sum();
        assert_eq!(total, 2 * n, "{name}: every item tested once per run");
        assert_eq!(probe.accuracy.per_fold.len(), 2);
        let csv = outcome
            .results_path
            .with_file_name(&results.predictions[name]);
        let rows = std::fs::read_to_string(csv).unwrap().lines().count() as u64;
        assert_eq!(rows, 1 + 2 * n, "{name}: header + one row per prediction");
    }
    let dir = outcome.results_path.parent().unwrap();
    for plot in &results.plots {
        let png = std::fs::read(dir.join(plot)).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{plot}");
    }
    assert!(results.plots.iter().any(|p| p.contains("confusion")));
    assert!(dir.join("confusion_linear.csv").is_file());
    let report = std::fs::read_to_string(&outcome.report_path).unwrap();
    assert!(
        report.contains("# synthetic") && report.contains("| mlp |"),
        "{report}"
    );
    for probe in ["linear", "three"] {
        let saved = opts
            .models_dir
            .join(format!("synthetic_{probe}_classifier.safetensors"));
        assert!(saved.is_file(), "{}", saved.display());
    }

    // Every layer: one result per stored hidden state.
    let all = train(
        &Synthetic,
        &store,
        &train_options(tmp.path(), LayerChoice::All, 1, false),
    )
    .unwrap();
    let per_layer = all.results.per_layer.as_ref().unwrap();
    assert_eq!(per_layer.len(), 3);
    assert!(per_layer.iter().all(|l| l.probes.contains_key("mlp")));
    // The learned weighted sum: weights per stored layer.
    let weighted = train(
        &Synthetic,
        &store,
        &train_options(tmp.path(), LayerChoice::Weighted, 1, false),
    )
    .unwrap();
    let w = &weighted.results.layer_weights.as_ref().unwrap()["linear"];
    assert_eq!(w.mean.len(), 3);
    assert!((w.mean.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    assert_eq!(
        weighted.results.features.layer,
        serde_json::json!("weighted")
    );

    // A layer that is not stored is an error naming what is.
    let err = train(
        &Synthetic,
        &store,
        &train_options(tmp.path(), LayerChoice::Index(7), 1, false),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("hidden state 7 is not stored"), "{err}");
}

/// The `opts` of [`options`] with another model folder.
fn with_model(mut opts: ExtractOptions, dir: &Path) -> ExtractOptions {
    opts.model.model = dir.display().to_string();
    opts
}

fn chunk_file(store: &Path, c: usize) -> PathBuf {
    parts_dir(store).join(format!("chunk-{c:05}.safetensors"))
}

#[test]
fn weights_replaced_in_place_are_noticed_and_hashed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(tiny_model_dir().join(f), model.join(f)).unwrap();
    }
    let features = tmp.path().join("features");
    let store = store_in(&features);
    let opts = with_model(options(8, None), &model);
    let src = || ModelSource::resolve(&model.display().to_string()).unwrap();
    extract(&Synthetic, &dataset, &store, &opts, src()).unwrap();
    let before = std::fs::read(&store).unwrap();
    let settings = FeatureStore::open(&store).unwrap().settings.unwrap();
    assert_eq!(
        settings.weights_sha256,
        crate::store::file_sha256(&model.join("model.safetensors")).unwrap()
    );
    assert_eq!(
        (settings.dtype.as_str(), settings.device.as_str()),
        ("f32", "cpu")
    );
    // The digest cache lives beside the stores, never in the model folder.
    assert!(features.join(crate::store::DIGEST_CACHE).is_file());
    assert_eq!(std::fs::read_dir(&model).unwrap().count(), 3);

    // Same path, same size, new content (one weight's last byte changed): extracted again.
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&weights, &bytes).unwrap();
    extract(&Synthetic, &dataset, &store, &opts, src()).unwrap();
    let after = FeatureStore::open(&store).unwrap().settings.unwrap();
    assert_ne!(after.weights_sha256, settings.weights_sha256);
    assert_ne!(
        std::fs::read(&store).unwrap(),
        before,
        "features recomputed"
    );

    // The cache answers by path, size and time: a planted digest for the unchanged file is used
    // (so the file is not read again), and is dropped once the file changes.
    let planted = "ab".repeat(32);
    let cache_path = features.join(crate::store::DIGEST_CACHE);
    let mut cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache_path).unwrap()).unwrap();
    for entry in cache.as_object_mut().unwrap().values_mut() {
        entry["sha256"] = serde_json::json!(planted);
    }
    std::fs::write(&cache_path, serde_json::to_vec(&cache).unwrap()).unwrap();
    assert_eq!(
        crate::store::weights_sha256(&weights, &features).unwrap(),
        planted
    );
    std::fs::write(
        &weights,
        std::fs::read(tiny_model_dir().join("model.safetensors")).unwrap(),
    )
    .unwrap();
    let real = crate::store::weights_sha256(&weights, &features).unwrap();
    assert_eq!(real, settings.weights_sha256);

    // A hub blob is named by its sha256: taken from the name, the file is not hashed.
    let hub = tmp.path().join("hub/models--a--b");
    let blob = hub.join("blobs").join("cd".repeat(32));
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, b"not really weights").unwrap();
    let snap = hub.join("snapshots/0123/model.safetensors");
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("../../blobs/".to_string() + &"cd".repeat(32), &snap).unwrap();
    assert_eq!(
        crate::store::weights_sha256(&snap, &features).unwrap(),
        "cd".repeat(32)
    );
}

#[test]
fn a_shard_with_other_settings_refuses_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let store = store_in(&tmp.path().join("f"));
    let half = |cs| options(cs, Some(Shard { index: 1, count: 2 }));
    run(&dataset, &store, &half(4));
    let chunks = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("chunk-"))
            .collect();
        v.sort();
        v
    };
    let before = chunks(&parts_dir(&store));
    assert_eq!(before.len(), 2);

    let mut other = options(5, Some(Shard { index: 2, count: 2 }));
    let err = extract(&Synthetic, &dataset, &store, &other, source()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("chunk_size: 4 vs 5"), "{msg}");
    assert!(msg.contains("nothing was deleted"), "{msg}");
    other.chunk_size = 4;
    other.model.dtype = hubert_core::Precision::Bf16;
    let msg = format!(
        "{:#}",
        extract(&Synthetic, &dataset, &store, &other, source()).unwrap_err()
    );
    assert!(msg.contains("dtype: f32 vs bf16"), "{msg}");
    assert!(!msg.contains("chunk_size"), "{msg}");
    assert_eq!(chunks(&parts_dir(&store)), before, "nothing deleted");

    // The same settings continue the extraction.
    other.model.dtype = hubert_core::Precision::F32;
    assert_eq!(
        run(&dataset, &store, &other),
        ExtractOutcome::Complete(store.clone())
    );
}

#[test]
fn exactly_one_process_assembles_and_a_dead_claim_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let reference = store_in(&tmp.path().join("one"));
    run(&dataset, &reference, &options(4, None));
    let bytes = std::fs::read(&reference).unwrap();

    // A live holder (this process) claims the assembly: the last shard leaves it alone.
    let store = store_in(&tmp.path().join("f"));
    let shard = |k| options(4, Some(Shard { index: k, count: 3 }));
    run(&dataset, &store, &shard(1));
    run(&dataset, &store, &shard(2));
    let claim = parts_dir(&store).join("assemble.claim");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let live = format!("host {} pid {} at 1\n", host.trim(), std::process::id());
    std::fs::write(&claim, &live).unwrap();
    match run(&dataset, &store, &shard(3)) {
        ExtractOutcome::AssembledElsewhere { by } => assert_eq!(by, live.trim()),
        other => panic!("{other:?}"),
    }
    assert!(!store.exists() && claim.is_file());
    // Its holder died (a pid that does not exist on this host): taken over at once.
    std::fs::write(
        &claim,
        format!("host {} pid 4294967295 at 1\n", host.trim()),
    )
    .unwrap();
    assert_eq!(
        run(&dataset, &store, &shard(3)),
        ExtractOutcome::Complete(store.clone())
    );
    assert_eq!(std::fs::read(&store).unwrap(), bytes);
    assert!(!parts_dir(&store).exists());

    // Four shards finishing together, several times: every one succeeds, the store is whole.
    for round in 0..3 {
        let store = store_in(&tmp.path().join(format!("race{round}")));
        let outcomes: Vec<ExtractOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (1..=4)
                .map(|k| {
                    let (dataset, store) = (&dataset, &store);
                    s.spawn(move || {
                        extract(
                            &Synthetic,
                            dataset,
                            store,
                            &options(4, Some(Shard { index: k, count: 4 })),
                            source(),
                        )
                        .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, ExtractOutcome::Complete(_))),
            "{outcomes:?}"
        );
        // Whoever did not assemble either finished its shard before the last chunk, saw the
        // claim held, or found the store complete.
        if !store.is_file() {
            panic!("no store after round {round}: {outcomes:?}");
        }
        assert_eq!(std::fs::read(&store).unwrap(), bytes, "round {round}");
        assert!(!parts_dir(&store).exists());
    }
}

#[test]
fn damaged_chunks_are_redone_never_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let reference = store_in(&tmp.path().join("one"));
    run(&dataset, &reference, &options(4, None));
    let bytes = std::fs::read(&reference).unwrap();

    let read_meta = |path: &Path| {
        let b = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&b).unwrap();
        let t = st.tensor("features").unwrap();
        let raw = artifacts::RawTensor {
            dtype: safetensors::Dtype::F32,
            shape: t.shape().to_vec(),
            bytes: t.data().to_vec(),
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&b).unwrap();
        (header.metadata().clone().unwrap(), raw)
    };
    let rewrite = |path: &Path, meta: std::collections::HashMap<String, String>, raw| {
        artifacts::write_safetensors(path, &[("features".to_string(), raw)], meta).unwrap();
    };

    for case in 0..5 {
        let store = store_in(&tmp.path().join(format!("case{case}")));
        // Chunks 0 and 1 of 5 by "another machine"; then damage one of them.
        run(
            &dataset,
            &store,
            &options(4, Some(Shard { index: 1, count: 2 })),
        );
        let chunk = chunk_file(&store, case % 2);
        let (mut meta, mut raw) = read_meta(&chunk);
        match case {
            // Truncated.
            0 => {
                let b = std::fs::read(&chunk).unwrap();
                std::fs::write(&chunk, &b[..b.len() - 100]).unwrap();
            }
            // One feature value changed.
            1 => {
                raw.bytes[5] ^= 1;
                rewrite(&chunk, meta, raw);
            }
            // The row list altered (this panicked once), checksum left as it was.
            2 => {
                meta.insert("rows".into(), "[0,1,2,99999999999]".into());
                rewrite(&chunk, meta, raw);
            }
            // The row list altered with a matching checksum: the range check catches it.
            3 => {
                meta.insert("rows".into(), "[4,5,6,70000]".into());
                let f = |k: &str| meta[k].clone();
                let sum = crate::extract::chunk_checksum(
                    [
                        &f("fingerprint"),
                        &f("chunk"),
                        &f("rows"),
                        &f("skipped"),
                        &f("padded"),
                    ],
                    &raw.shape,
                    &raw.bytes,
                );
                meta.insert("checksum".into(), sum);
                rewrite(&chunk, meta, raw);
            }
            // Not a chunk at all.
            _ => std::fs::write(&chunk, b"garbage").unwrap(),
        }
        // The other half: this shard verifies every chunk when it assembles, and redoes the
        // damaged one (which lies outside its own range).
        assert_eq!(
            run(
                &dataset,
                &store,
                &options(4, Some(Shard { index: 2, count: 2 }))
            ),
            ExtractOutcome::Complete(store.clone()),
            "case {case}"
        );
        assert_eq!(std::fs::read(&store).unwrap(), bytes, "case {case}");
    }

    // `merge` copies only chunks that pass the checks, and says what is missing.
    let a = store_in(&tmp.path().join("ma"));
    let b = store_in(&tmp.path().join("mb"));
    run(
        &dataset,
        &a,
        &options(4, Some(Shard { index: 1, count: 2 })),
    );
    run(
        &dataset,
        &b,
        &options(4, Some(Shard { index: 2, count: 2 })),
    );
    let c3 = chunk_file(&b, 3);
    let damaged = std::fs::read(&c3).unwrap();
    std::fs::write(&c3, &damaged[..damaged.len() / 2]).unwrap();
    let err = format!("{:#}", merge(&dataset, &a, &[parts_dir(&b)]).unwrap_err());
    assert!(err.contains("1 of 5 chunks missing (first: 3)"), "{err}");
    // Redone where it was made, then merged: the whole store.
    run(
        &dataset,
        &b,
        &options(4, Some(Shard { index: 2, count: 2 })),
    );
    let merged = merge(&dataset, &a, &[parts_dir(&b)]).unwrap();
    assert_eq!(std::fs::read(merged).unwrap(), bytes);
}

#[test]
fn pooled_statistics_are_stored_served_and_trained_on() {
    use crate::store::{Pooling, PoolingSet, Stat};
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let n = dataset.items.len();
    let all_stats: PoolingSet = "mean,std,max".parse().unwrap();
    assert_eq!(all_stats.to_string(), "mean,std,max");
    assert_eq!("max".parse::<PoolingSet>().unwrap().to_string(), "mean,max");
    assert!("mean,median".parse::<PoolingSet>().is_err());

    // A mean-only store, then every statistic from one forward pass.
    let mean_only = store_in(&tmp.path().join("m"));
    run(&dataset, &mean_only, &options(4, None));
    let path = store_in(&tmp.path().join("f"));
    let mut opts = options(4, None);
    opts.pooling = all_stats.clone();
    run(&dataset, &path, &opts);
    let store = FeatureStore::open(&path).unwrap();
    assert_eq!(store.pooling, all_stats);
    let plain = FeatureStore::open(&mean_only).unwrap();
    assert_eq!(plain.pooling, PoolingSet::default());
    for l in 0..store.num_layers {
        assert_eq!(
            store.layer(l).unwrap(),
            plain.layer(l).unwrap(),
            "layer {l}"
        );
    }
    // The stored rows equal the Embedder's statistics of the same clip.
    let hubert = source()
        .load(Default::default(), Default::default())
        .unwrap();
    let embed_options =
        hubert_core::EmbedOptions::new(LayerSelection::All).with_outputs(hubert_core::Outputs {
            mean: true,
            std: true,
            max: true,
            frames: false,
        });
    let mut embedder = hubert_core::Embedder::new(&hubert, embed_options).unwrap();
    let row = 5;
    let clip = audio_io::load(dataset.path_of(&dataset.items[row])).unwrap();
    let e = embedder.embed_all([(row, clip)]).unwrap().remove(0);
    let (l, d) = (store.num_layers, store.dim);
    for (pooling, expected) in [
        (Pooling::Mean, e.mean.unwrap()),
        (Pooling::Max, e.max.unwrap()),
    ] {
        for layer in 0..l {
            let got = store.pooled(layer, pooling).unwrap();
            assert_eq!(got.len(), n * d);
            assert_eq!(
                &got[row * d..(row + 1) * d],
                &expected[layer * d..(layer + 1) * d],
                "{pooling} layer {layer}"
            );
        }
    }
    let std = e.std.unwrap();
    let meanstd = store.pooled(l - 1, Pooling::Meanstd).unwrap();
    assert_eq!(meanstd.len(), n * 2 * d);
    assert_eq!(
        &meanstd[row * 2 * d + d..(row + 1) * 2 * d],
        &std[(l - 1) * d..l * d],
        "the std half of a meanstd row"
    );

    // More statistics serve a request for fewer: up to date, nothing rewritten.
    let bytes = std::fs::read(&path).unwrap();
    run(&dataset, &path, &options(4, None));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // A mean-only store asked for max: training says how to extract, extraction redoes it.
    let err = plain.pooled(0, Pooling::Max).unwrap_err().to_string();
    assert!(err.contains("--pooling mean,max"), "{err}");
    let mut max_opts = options(4, None);
    max_opts.pooling = "mean,max".parse().unwrap();
    run(&dataset, &mean_only, &max_opts);
    let redone = FeatureStore::open(&mean_only).unwrap();
    assert!(redone.pooling.contains(Stat::Max) && !redone.pooling.contains(Stat::Std));

    // Training on mean and std concatenated: a 2D-wide probe input.
    let mut train_opts = train_options(tmp.path(), LayerChoice::Last, 1, false);
    train_opts.pooling = Pooling::Meanstd;
    let outcome = train(&Synthetic, &store, &train_opts).unwrap();
    assert_eq!(outcome.results.features.pooling, "meanstd");
    assert_eq!(outcome.results.features.dim, 2 * d);
}

/// `--max-seconds` and `--chunk-seconds`: clips that fit are stored exactly as without them,
/// longer ones are cropped or embedded in stitched windows, and the settings are in the store's
/// fingerprint.
#[test]
fn long_clip_settings_crop_or_window_and_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = corpus(&tmp.path().join("data"));
    let n = dataset.items.len();
    let store_at = |name: &str, long_clips: LongClips| {
        let path = store_path(
            &tmp.path().join(name),
            "synthetic",
            "hubert",
            &LayerSelection::All,
        );
        let opts = ExtractOptions {
            long_clips,
            ..options(4, None)
        };
        assert_eq!(
            run(&dataset, &path, &opts),
            ExtractOutcome::Complete(path.clone())
        );
        FeatureStore::open(&path).unwrap()
    };
    let rows = |store: &FeatureStore| -> Vec<Vec<f32>> {
        let last = store.layer(2).unwrap();
        last.chunks_exact(32).map(<[f32]>::to_vec).collect()
    };
    let reference = store_at("whole", LongClips::default());
    assert_eq!(reference.settings.as_ref().unwrap().long_clips, None);
    let whole = rows(&reference);
    assert_eq!(whole.len(), n);

    // Windows longer than every clip (at most 1.2 s): the same features, another fingerprint.
    let wide = store_at(
        "wide",
        LongClips {
            chunk_seconds: Some(2.0),
            ..Default::default()
        },
    );
    assert_eq!(rows(&wide), whole);
    assert_ne!(
        wide.settings.as_ref().unwrap().fingerprint(),
        reference.settings.as_ref().unwrap().fingerprint()
    );

    // 0.3 s windows sharing 0.06 s: every clip but the 300-sample one is windowed.
    let windowed = store_at(
        "windows",
        LongClips {
            chunk_seconds: Some(0.3),
            chunk_overlap: 0.06,
            ..Default::default()
        },
    );
    let got = rows(&windowed);
    assert_eq!(got[4], whole[4], "the short clip is embedded whole");
    for k in (0..n).filter(|&k| k != 4) {
        assert!(got[k].iter().all(|v| v.is_finite()));
        assert_ne!(got[k], whole[k], "clip {k} is windowed");
    }
    assert!(windowed
        .settings
        .as_ref()
        .unwrap()
        .long_clips
        .as_deref()
        .unwrap()
        .contains("windows of 0.3 s overlapping 0.06 s"));

    // Cropped to 0.45 s: the 0.4 s clips are untouched, longer ones change.
    let cropped = store_at(
        "cropped",
        LongClips {
            max_seconds: Some(0.45),
            ..Default::default()
        },
    );
    let got = rows(&cropped);
    for k in 0..n {
        let seconds = if k == 4 {
            0.0
        } else {
            0.4 + 0.1 * (k % 9) as f64
        };
        if seconds < 0.45 {
            assert_eq!(got[k], whole[k], "clip {k}");
        } else {
            assert_ne!(got[k], whole[k], "clip {k}");
        }
    }
    assert_eq!(
        cropped.settings.as_ref().unwrap().long_clips.as_deref(),
        Some("first 0.45 s")
    );
}
