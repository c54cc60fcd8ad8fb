//! Extraction: decode in parallel ahead of the model, bucket clips by length, run HuBERT in
//! batches, pool the chosen layers (the frame mean, and with `--pooling` the standard deviation
//! and maximum from the same forward pass), and write the feature store, resumably and in shards.
//!
//! Work is cut into fixed chunks of items (`--chunk-size`, default 256). Each finished chunk is
//! written atomically to `<store>.parts/chunk-NNNNN.safetensors`; a killed run (Ctrl-C,
//! `kill -9`, a SLURM time limit) loses at most the chunks in flight and resumes from the rest.
//! `--shard K/N` extracts the K-th of N contiguous ranges of chunks, so N machines (a SLURM job
//! array) can share one dataset; when every chunk exists, the store is assembled (by the last
//! shard to finish, or by `merge`). Chunks are keyed by a fingerprint of the task, model,
//! revision, layers, dtype and item list, so a changed dataset or model never reuses stale work.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use artifacts::{atomic_write, write_safetensors, RawTensor};
use hubert_core::{
    parse_count, EmbedOptions, Embedder, Embedding, Hubert, LayerSelection, ModelArgs, ModelSource,
};
use serde::{Deserialize, Serialize};

use crate::store::{
    fingerprint, write_store, FeatureStore, PoolingSet, Provenance, Skipped, Stat, StoreContents,
};
use crate::task::{Dataset, Item, Partition, Task};

/// `--shard K/N`: the K-th (1-based) of N slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("--shard expects K/N with 1 <= K <= N, got {s:?}");
        let (k, n) = s.split_once('/').ok_or_else(err)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| err())?,
            n.trim().parse().map_err(|_| err())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(err());
        }
        Ok(Self { index, count })
    }
}

/// Extraction settings: the `extract` flags, parsed into types by clap (the same struct is the
/// library's options).
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractOptions {
    /// The model, device and dtype.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Hidden states to store: last, all, or indices like 0,6,12.
    #[arg(long, default_value = "last")]
    pub layers: LayerSelection,
    /// Clips per model batch (only clips of equal length share a batch).
    #[arg(
        id = "extract_batch_size",
        long = "extract-batch-size",
        default_value_t = 8,
        value_parser = parse_count::<1, 4096>
    )]
    pub batch_size: usize,
    /// Extract only the K-th of N slices (for job arrays); `merge` or the last shard assembles.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Leave undecodable files out (listed in the store) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Items per resumable chunk.
    #[arg(long, default_value_t = 256, value_parser = parse_count::<1, 1_000_000>)]
    pub chunk_size: usize,
    /// Statistics over frames to store per layer: mean (always), std, max, e.g. `mean,std,max`
    /// (one forward pass computes them all; `train --pooling` picks among them).
    #[arg(long, default_value = "mean", value_name = "LIST")]
    pub pooling: PoolingSet,
}

impl Shard {
    /// The half-open range `[first, last)` of `n` candidates that this shard takes (computed
    /// without overflow for any `K/N`).
    pub fn range(&self, n: usize) -> (usize, usize) {
        let at = |k: usize| ((k as u128 * n as u128) / self.count as u128) as usize;
        (at(self.index - 1), at(self.index))
    }
}

/// What [`extract`] achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtractOutcome {
    /// The store is complete at this path.
    Complete(PathBuf),
    /// This shard is done; other chunks are still missing.
    ShardDone {
        /// Chunks present.
        done: usize,
        /// Chunks in all.
        total: usize,
    },
}

/// `features/<name>_features_hubert.safetensors` for `last`, `..._hubert_<layers>.safetensors`
/// otherwise.
pub fn store_path(features_dir: &Path, task_name: &str, layers: &LayerSelection) -> PathBuf {
    let suffix = match layers {
        LayerSelection::Last => String::new(),
        other => format!("_{}", other.name().replace(',', "-")),
    };
    features_dir.join(format!("{task_name}_features_hubert{suffix}.safetensors"))
}

/// `<store>.parts`.
pub fn parts_dir(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    store.with_file_name(name)
}

/// Written into the parts directory: what the chunks belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    fingerprint: String,
    provenance: Provenance,
    num_items: usize,
    chunk_size: usize,
    num_layers: usize,
    dim: usize,
    /// Statistics in each chunk (absent in manifests written before `--pooling`: the mean).
    #[serde(default)]
    pooling: PoolingSet,
}

impl Manifest {
    fn num_chunks(&self) -> usize {
        self.num_items.div_ceil(self.chunk_size)
    }
}

fn chunk_path(parts: &Path, chunk: usize) -> PathBuf {
    parts.join(format!("chunk-{chunk:05}.safetensors"))
}

fn items_fingerprint(provenance: &Provenance, dataset: &Dataset) -> Result<String> {
    let items = serde_json::to_string(&dataset.items)?;
    let names = serde_json::to_string(&dataset.class_names)?;
    Ok(fingerprint(&[
        &provenance.task,
        &provenance.model,
        provenance.revision.as_deref().unwrap_or(""),
        &provenance.layers,
        &provenance.dtype,
        &names,
        &items,
    ]))
}

/// Extracts (the shard of) `dataset` into the store at `store`, resuming from finished chunks.
/// `source` is the model of `opts.model`, resolved by the caller (who checks the layer
/// selection against its configuration before any work).
pub fn extract(
    task: &dyn Task,
    dataset: &Dataset,
    store: &Path,
    opts: &ExtractOptions,
    source: ModelSource,
) -> Result<ExtractOutcome> {
    if dataset.items.is_empty() {
        bail!("{}: the dataset has no items", dataset.root.display());
    }
    let config = source.config.clone();
    opts.layers.validate(config.num_hidden_layers)?;
    let provenance = Provenance {
        task: task.name(),
        model: source.files.id.clone(),
        revision: source.files.revision.clone(),
        layers: opts.layers.name(),
        layer_indices: opts.layers.stored_layers(config.num_hidden_layers),
        dtype: opts.model.dtype.to_string(),
    };
    let fp = items_fingerprint(&provenance, dataset)?;

    if store.is_file() {
        match FeatureStore::open(store) {
            Ok(existing)
                if existing.provenance == provenance
                    && existing.pooling.covers(&opts.pooling)
                    && existing.class_names == dataset.class_names
                    && items_match(&existing, dataset) =>
            {
                eprintln!("{} is up to date", store.display());
                return Ok(ExtractOutcome::Complete(store.to_path_buf()));
            }
            _ => eprintln!(
                "{} was made from another model, layer set, pooling or item list: extracting again",
                store.display()
            ),
        }
    }

    let manifest = Manifest {
        fingerprint: fp,
        provenance,
        num_items: dataset.items.len(),
        chunk_size: opts.chunk_size.max(1),
        num_layers: opts.layers.len(config.num_hidden_layers),
        dim: config.hidden_size,
        pooling: opts.pooling.clone(),
    };
    let parts = parts_dir(store);
    prepare_parts(&parts, &manifest)?;

    let total_chunks = manifest.num_chunks();
    // Chunks this call may do: all, or those holding items of `Task::extract_only`.
    let candidates: Vec<usize> = match task.extract_only() {
        Some(p) => {
            let c = chunks_holding(&dataset.items, manifest.chunk_size, p);
            if c.is_empty() {
                bail!("{}: no item belongs to {p}", dataset.root.display());
            }
            c
        }
        None => (0..total_chunks).collect(),
    };
    let (first, last) = match opts.shard {
        Some(s) => s.range(candidates.len()),
        None => (0, candidates.len()),
    };
    let todo: Vec<usize> = candidates[first..last]
        .iter()
        .copied()
        .filter(|&c| !chunk_path(&parts, c).is_file())
        .collect();
    if !todo.is_empty() {
        let hubert = source
            .load(opts.model.device, opts.model.dtype)
            .with_context(|| format!("cannot load model {:?}", opts.model.model))?;
        run_chunks(task, dataset, &hubert, &manifest, &parts, &todo, opts)?;
    }

    let done = (0..total_chunks)
        .filter(|&c| chunk_path(&parts, c).is_file())
        .count();
    if done == total_chunks {
        assemble(dataset, &parts, store)?;
        Ok(ExtractOutcome::Complete(store.to_path_buf()))
    } else {
        Ok(ExtractOutcome::ShardDone {
            done,
            total: total_chunks,
        })
    }
}

/// The chunks (of `chunk_size` items, in item order) holding at least one item of `partition`,
/// ascending.
pub fn chunks_holding(items: &[Item], chunk_size: usize, partition: Partition) -> Vec<usize> {
    let cs = chunk_size.max(1);
    let mut chunks: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.split == partition)
        .map(|(i, _)| i / cs)
        .collect();
    chunks.dedup();
    chunks
}

fn items_match(store: &FeatureStore, dataset: &Dataset) -> bool {
    let skipped: std::collections::HashSet<usize> = store.skipped.iter().map(|s| s.index).collect();
    let expected: Vec<&crate::task::Item> = dataset
        .items
        .iter()
        .enumerate()
        .filter(|(i, _)| !skipped.contains(i))
        .map(|(_, it)| it)
        .collect();
    expected.len() == store.items.len() && expected.iter().zip(&store.items).all(|(a, b)| *a == b)
}

/// Creates the parts directory with its manifest, clearing chunks of another configuration.
fn prepare_parts(parts: &Path, manifest: &Manifest) -> Result<()> {
    let manifest_path = parts.join("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest_path) {
        match serde_json::from_str::<Manifest>(&text) {
            Ok(old) if old == *manifest => return Ok(()),
            _ => {
                eprintln!(
                    "{}: chunks from another model, layer set, chunk size or item list: starting over",
                    parts.display()
                );
                std::fs::remove_dir_all(parts)
                    .with_context(|| format!("cannot clear {}", parts.display()))?;
            }
        }
    }
    std::fs::create_dir_all(parts).with_context(|| format!("cannot create {}", parts.display()))?;
    atomic_write(
        &manifest_path,
        serde_json::to_string_pretty(manifest)?.as_bytes(),
    )?;
    Ok(())
}

/// One chunk being filled.
struct ChunkState {
    chunk: usize,
    start: usize,
    rows: Vec<Option<Vec<f32>>>,
    /// Standard deviations and maxima by row, when stored.
    std_rows: Vec<Option<Vec<f32>>>,
    max_rows: Vec<Option<Vec<f32>>>,
    skipped: Vec<Skipped>,
    /// Items zero-padded to the receptive field.
    padded: Vec<usize>,
}

impl ChunkState {
    fn place(&mut self, embedded: Vec<Embedding>) -> usize {
        let n = embedded.len();
        for e in embedded {
            if e.padded {
                self.padded.push(e.index);
            }
            self.rows[e.index - self.start] = e.mean;
            self.std_rows[e.index - self.start] = e.std;
            self.max_rows[e.index - self.start] = e.max;
        }
        n
    }
}

fn run_chunks(
    task: &dyn Task,
    dataset: &Dataset,
    hubert: &Hubert,
    manifest: &Manifest,
    parts: &Path,
    todo: &[usize],
    opts: &ExtractOptions,
) -> Result<()> {
    let cs = manifest.chunk_size;
    let n = dataset.items.len();
    // Items of the chunks to do, in order; consecutive items of one file are decoded once.
    let item_ids: Vec<usize> = todo
        .iter()
        .flat_map(|&c| c * cs..((c + 1) * cs).min(n))
        .collect();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut file_items: Vec<Vec<usize>> = Vec::new();
    for &i in &item_ids {
        let path = dataset.path_of(&dataset.items[i]);
        let same_file = files.last() == Some(&path)
            && file_items
                .last()
                .and_then(|v| v.last())
                .is_some_and(|&prev| prev / cs == i / cs);
        if same_file {
            file_items.last_mut().expect("non-empty").push(i);
        } else {
            files.push(path);
            file_items.push(vec![i]);
        }
    }

    let progress = terminal::count_bar(item_ids.len() as u64, "extract", "clips");
    let started = Instant::now();
    let options = EmbedOptions::new(opts.layers.clone())
        .with_batch_size(opts.batch_size)
        .with_outputs(hubert_core::Outputs {
            mean: true,
            std: manifest.pooling.contains(Stat::Std),
            max: manifest.pooling.contains(Stat::Max),
            frames: false,
        });
    let mut embedder = Embedder::new(hubert, options)?;
    let mut state: Option<ChunkState> = None;

    for (file_idx, decoded) in audio_io::load_many(files.clone(), 2 * opts.batch_size.max(4)) {
        for &i in &file_items[file_idx] {
            let chunk = i / cs;
            if state.as_ref().is_none_or(|s| s.chunk != chunk) {
                if let Some(mut done) = state.take() {
                    progress.inc(done.place(embedder.flush()?) as u64);
                    write_chunk(parts, manifest, dataset, done)?;
                }
                let start = chunk * cs;
                state = Some(ChunkState {
                    chunk,
                    start,
                    rows: vec![None; ((chunk + 1) * cs).min(n) - start],
                    std_rows: vec![None; ((chunk + 1) * cs).min(n) - start],
                    max_rows: vec![None; ((chunk + 1) * cs).min(n) - start],
                    skipped: Vec::new(),
                    padded: Vec::new(),
                });
            }
            let st = state.as_mut().expect("set above");
            let item = &dataset.items[i];
            match &decoded {
                Ok(samples) => {
                    let clip = task.prepare(item, samples.clone());
                    // Clips count when their batch has run, so the bar never runs ahead of the
                    // model.
                    progress.inc(st.place(embedder.push(i, clip)?) as u64);
                }
                Err(e) if opts.skip_bad => {
                    progress.suspend(|| eprintln!("skipped: {e}"));
                    st.skipped.push(Skipped {
                        index: i,
                        path: item.path.clone(),
                        error: e.to_string(),
                    });
                    progress.inc(1);
                }
                Err(e) => {
                    progress.abandon();
                    bail!("{e}\n(pass --skip-bad to leave undecodable files out)");
                }
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        progress.set_message(format!(
            ", {:.1} audio-s/s",
            embedder.seconds_embedded() / secs
        ));
    }
    if let Some(mut done) = state.take() {
        progress.inc(done.place(embedder.flush()?) as u64);
        write_chunk(parts, manifest, dataset, done)?;
    }
    progress.finish_and_clear();
    eprintln!(
        "embedded {} items ({:.0} s of audio) in {:.1} s",
        item_ids.len(),
        embedder.seconds_embedded(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_chunk(
    parts: &Path,
    manifest: &Manifest,
    dataset: &Dataset,
    mut state: ChunkState,
) -> Result<()> {
    // In item order, as the store lists them.
    state.padded.sort_unstable();
    let padded: Vec<&str> = state
        .padded
        .iter()
        .map(|&i| dataset.items[i].path.as_str())
        .collect();
    let mut rows = Vec::new();
    let mut features = Vec::new();
    let (mut stds, mut maxs) = (Vec::new(), Vec::new());
    let extra = state.std_rows.into_iter().zip(state.max_rows);
    for (offset, (row, (std, max))) in state.rows.into_iter().zip(extra).enumerate() {
        if let Some(row) = row {
            rows.push(state.start + offset);
            features.extend(row);
            stds.extend(std.unwrap_or_default());
            maxs.extend(max.unwrap_or_default());
        }
    }
    let meta = std::collections::HashMap::from([
        ("fingerprint".to_string(), manifest.fingerprint.clone()),
        ("chunk".to_string(), state.chunk.to_string()),
        ("rows".to_string(), serde_json::to_string(&rows)?),
        (
            "skipped".to_string(),
            serde_json::to_string(&state.skipped)?,
        ),
        ("padded".to_string(), serde_json::to_string(&padded)?),
    ]);
    let shape = vec![rows.len(), manifest.num_layers, manifest.dim];
    let mut tensors = vec![(
        "features".to_string(),
        RawTensor::f32(shape.clone(), &features),
    )];
    for (stat, values) in [(Stat::Std, &stds), (Stat::Max, &maxs)] {
        if manifest.pooling.contains(stat) {
            if values.len() != features.len() {
                bail!("internal: the model returned no frame {}", stat.name());
            }
            tensors.push((
                stat.tensor_name().to_string(),
                RawTensor::f32(shape.clone(), values),
            ));
        }
    }
    write_safetensors(&chunk_path(parts, state.chunk), &tensors, meta)?;
    // A test hook, compiled only into test builds (the `testing` feature, which the task crates'
    // tests enable): `HUBERT_PROBE_THROTTLE_MS` pauses after each chunk so the interruption
    // tests can kill an extraction midway on any machine.
    #[cfg(feature = "testing")]
    if let Some(ms) = std::env::var("HUBERT_PROBE_THROTTLE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    Ok(())
}

/// Joins every chunk into the final store (atomically) and removes the parts directory.
fn assemble(dataset: &Dataset, parts: &Path, store: &Path) -> Result<()> {
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(parts.join("manifest.json"))
            .with_context(|| format!("{}: manifest.json missing", parts.display()))?,
    )
    .with_context(|| format!("{}: bad manifest.json", parts.display()))?;
    if manifest.num_items != dataset.items.len() {
        bail!(
            "{}: chunks are for {} items, the dataset has {}",
            parts.display(),
            manifest.num_items,
            dataset.items.len()
        );
    }
    let mut features = Vec::new();
    let (mut stds, mut maxs) = (Vec::new(), Vec::new());
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut padded = Vec::new();
    let missing: Vec<usize> = (0..manifest.num_chunks())
        .filter(|&c| !chunk_path(parts, c).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: {} of {} chunks missing (first: {}); run the remaining shards or copy their parts here",
            parts.display(),
            missing.len(),
            manifest.num_chunks(),
            missing[0]
        );
    }
    for c in 0..manifest.num_chunks() {
        let path = chunk_path(parts, c);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: corrupt chunk (delete it to redo)", path.display()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("fingerprint") != Some(&manifest.fingerprint) {
            bail!(
                "{}: chunk from another configuration (delete it to redo)",
                path.display()
            );
        }
        let rows: Vec<usize> = serde_json::from_str(meta.get("rows").map_or("[]", |s| s))?;
        skipped.extend(serde_json::from_str::<Vec<Skipped>>(
            meta.get("skipped").map_or("[]", |s| s),
        )?);
        padded.extend(serde_json::from_str::<Vec<String>>(
            meta.get("padded").map_or("[]", |s| s),
        )?);
        for (stat, out) in [
            (Stat::Mean, &mut features),
            (Stat::Std, &mut stds),
            (Stat::Max, &mut maxs),
        ] {
            if !manifest.pooling.contains(stat) {
                continue;
            }
            let t = st.tensor(stat.tensor_name()).with_context(|| {
                format!("{}: corrupt chunk (delete it to redo)", path.display())
            })?;
            out.extend(
                t.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        items.extend(rows.iter().map(|&r| dataset.items[r].clone()));
    }
    if items.is_empty() {
        bail!("no item could be embedded (all were skipped)");
    }
    write_store(
        store,
        &StoreContents {
            provenance: &manifest.provenance,
            class_names: &dataset.class_names,
            items: &items,
            features: &features,
            features_std: manifest.pooling.contains(Stat::Std).then_some(&stds[..]),
            features_max: manifest.pooling.contains(Stat::Max).then_some(&maxs[..]),
            num_layers: manifest.num_layers,
            dim: manifest.dim,
            skipped: &skipped,
            padded: &padded,
        },
    )?;
    std::fs::remove_dir_all(parts).with_context(|| format!("cannot remove {}", parts.display()))?;
    Ok(())
}

/// `merge`: copies chunk files from other parts directories (e.g. fetched from the machines of a
/// job array) into this store's parts directory and assembles the store.
pub fn merge(dataset: &Dataset, store: &Path, other_parts: &[PathBuf]) -> Result<PathBuf> {
    let parts = parts_dir(store);
    let own: Option<Manifest> = std::fs::read_to_string(parts.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    for other in other_parts {
        let text = std::fs::read_to_string(other.join("manifest.json"))
            .with_context(|| format!("{}: manifest.json missing", other.display()))?;
        let theirs: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: bad manifest.json", other.display()))?;
        match &own {
            Some(m) if *m != theirs => bail!(
                "{} holds chunks of another configuration than {}",
                other.display(),
                parts.display()
            ),
            Some(_) => {}
            None => {
                std::fs::create_dir_all(&parts)?;
                atomic_write(&parts.join("manifest.json"), text.as_bytes())?;
            }
        }
        for c in 0..theirs.num_chunks() {
            let (src, dst) = (chunk_path(other, c), chunk_path(&parts, c));
            if src.is_file() && !dst.is_file() {
                let bytes = std::fs::read(&src)?;
                atomic_write(&dst, &bytes)?;
            }
        }
    }
    if !parts.join("manifest.json").is_file() {
        if store.is_file() {
            return Ok(store.to_path_buf());
        }
        bail!(
            "{}: nothing to merge (no extraction parts)",
            parts.display()
        );
    }
    assemble(dataset, &parts, store)?;
    Ok(store.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "x/2", "3", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chunks_holding_a_partition() {
        let item = |split| Item {
            path: String::new(),
            label: 0,
            split,
            group: None,
            segment: None,
        };
        let items: Vec<Item> = [Partition::Train; 5]
            .into_iter()
            .chain([Partition::Valid; 2])
            .chain([Partition::Test; 3])
            .map(item)
            .collect();
        assert_eq!(chunks_holding(&items, 4, Partition::Train), [0, 1]);
        assert_eq!(chunks_holding(&items, 4, Partition::Valid), [1]);
        assert_eq!(chunks_holding(&items, 4, Partition::Test), [1, 2]);
        assert!(chunks_holding(&items, 4, Partition::Fold(1)).is_empty());
        assert_eq!(chunks_holding(&items, 0, Partition::Valid), [5, 6]);
    }

    #[test]
    fn store_names() {
        let d = Path::new("features");
        assert_eq!(
            store_path(d, "esc50", &LayerSelection::Last),
            Path::new("features/esc50_features_hubert.safetensors")
        );
        assert_eq!(
            store_path(d, "esc50", &LayerSelection::All),
            Path::new("features/esc50_features_hubert_all.safetensors")
        );
        assert_eq!(
            parts_dir(Path::new("features/x.safetensors")),
            Path::new("features/x.safetensors.parts")
        );
    }
}
