//! Times `<task> ablate`'s one-at-a-time grid on a synthetic ESC-50-sized store: by default
//! 2,000 items x 13 layers x 768 dims with mean, std and max, 50 classes in 5 folds, 3 seeds,
//! 100 epochs, 2 jobs (the study's grid on ESC-50, which should finish in under 30 minutes on
//! 2 cores). Run it on a quiet machine:
//!
//! ```text
//! cargo run --release -p pipeline --example ablate_bench
//! cargo run --release -p pipeline --example ablate_bench -- --items 200 --layers 3 --dim 64 --epochs 5
//! ```
//!
//! Flags: `--items N --layers L --dim D --classes C --folds F --epochs E --runs R --jobs J
//! --grid LIST --dir DIR` (the store and outputs go to DIR, default a temporary folder). Prints
//! the wall time of the grid (store building not included).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use hubert_core::StoredLayer;
use pipeline::ablate::{ablate, ablation_dir, one_at_a_time, AblateOptions, Grid, WIDE_HIDDEN};
use pipeline::store::{write_store, FeatureStore, Provenance, StoreContents};
use pipeline::task::{Dataset, Item, Partition, Task};
use pipeline::Protocol;
use probe_heads::TrainConfig;
use rand::{Rng, SeedableRng};

struct Bench;

impl Task for Bench {
    fn name(&self) -> String {
        "bench".into()
    }
    fn description(&self) -> String {
        "synthetic ESC-50-sized features".into()
    }
    fn default_data_dir(&self) -> PathBuf {
        PathBuf::from("data/bench")
    }
    fn resources(&self) -> Vec<pipeline::download::Resource> {
        Vec::new()
    }
    fn is_present(&self, _: &Path) -> bool {
        true
    }
    fn load(&self, _: &Path) -> Result<Dataset> {
        bail!("the bench task has no audio")
    }
    fn official_protocol(&self) -> Protocol {
        Protocol::PredefinedFolds
    }
}

fn flag(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str, default: &str| -> Result<usize> {
        flag(&args, name, default)
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    let (n, layers, dim) = (
        num("--items", "2000")?,
        num("--layers", "13")?,
        num("--dim", "768")?,
    );
    let (classes, folds) = (num("--classes", "50")?, num("--folds", "5")?);
    let (epochs, runs, jobs) = (
        num("--epochs", "100")?,
        num("--runs", "3")?,
        num("--jobs", "2")?,
    );
    let grid: Grid = flag(&args, "--grid", "pooling,scaler,probe,layer,lr,fraction")
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let tmp = tempfile::tempdir()?;
    let dir = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(&args[i + 1]),
        None => tmp.path().to_path_buf(),
    };
    std::fs::create_dir_all(&dir)?;

    // Items: classes spread evenly over folds; features: a class centre per layer (stronger in
    // later layers) plus unit noise, for each statistic.
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            path: format!("{i}.wav"),
            label: i % classes,
            split: Partition::Fold((i / classes % folds) as u32 + 1),
            group: None,
            segment: None,
        })
        .collect();
    let started = Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let centres: Vec<f32> = (0..classes * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut stats: [Vec<f32>; 3] = Default::default();
    for (k, s) in stats.iter_mut().enumerate() {
        s.reserve(n * layers * dim);
        for it in &items {
            for l in 0..layers {
                let strength = (l + 1) as f32 / layers as f32;
                for d in 0..dim {
                    let noise: f32 = rng.random_range(-1.7..1.7);
                    s.push(centres[it.label * dim + d] * strength + noise + k as f32);
                }
            }
        }
    }
    let path = dir.join("bench_features_hubert_all.safetensors");
    let provenance = Provenance {
        task: "bench".into(),
        model: "synthetic".into(),
        revision: None,
        layers: "all".into(),
        layer_indices: (0..layers).map(StoredLayer::HiddenState).collect(),
        dtype: "f32".into(),
        slug: None,
        family: None,
    };
    let class_names: Vec<String> = (0..classes).map(|c| format!("class{c}")).collect();
    write_store(
        &path,
        &StoreContents {
            provenance: &provenance,
            class_names: &class_names,
            items: &items,
            features: &stats[0],
            features_std: Some(&stats[1]),
            features_max: Some(&stats[2]),
            num_layers: layers,
            dim,
            skipped: &[],
            padded: &[],
            settings: None,
        },
    )?;
    drop(stats);
    eprintln!(
        "store: {n} items x {layers} layers x {dim} dims x 3 statistics, {classes} classes, \
         {folds} folds ({:.1} s to build)",
        started.elapsed().as_secs_f64()
    );

    let store = FeatureStore::open(&path)?;
    let cells = one_at_a_time(&grid.0);
    let opts = AblateOptions {
        cells,
        config: TrainConfig {
            epochs,
            ..TrainConfig::default()
        },
        protocol: Protocol::PredefinedFolds,
        runs,
        val_fraction: 0.2,
        jobs,
        wide_hidden: WIDE_HIDDEN,
        out_dir: ablation_dir(&dir.join("results"), "bench", "hubert"),
        plots: true,
        grid: grid.0.clone(),
        full: false,
    };
    let started = Instant::now();
    let result = ablate(&Bench, &store, &opts)?;
    let secs = started.elapsed().as_secs_f64();
    let failed = result.cells.iter().filter(|c| c.status != "ok").count();
    println!(
        "ablate: {} cells ({failed} failed), {runs} seeds, {epochs} epochs, {jobs} jobs: {:.1} s \
         ({:.1} min) wall",
        result.cells.len(),
        secs,
        secs / 60.0
    );
    println!("outputs: {}", opts.out_dir.display());
    Ok(())
}
