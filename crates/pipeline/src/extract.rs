//! Extraction: decode in parallel ahead of the model, bucket clips by length, run HuBERT in
//! batches, mean-pool the chosen layers, and write the feature store, resumably and in shards.
//!
//! Work is cut into fixed chunks of items (`--chunk-size`, default 256). Each finished chunk is
//! written atomically to `<store>.parts/chunk-NNNNN.safetensors`; a killed run (Ctrl-C,
//! `kill -9`, a SLURM time limit) loses at most the chunks in flight and resumes from the rest.
//! `--shard K/N` extracts the K-th of N contiguous ranges of chunks, so N machines (a SLURM job
//! array) can share one dataset; when every chunk exists, the store is assembled (by a shard
//! that finds every chunk present, or by `merge`).
//!
//! Cached work is trusted only as far as it is checked:
//!
//! - Chunks and stores are keyed by [`Settings`]: the weights, config and preprocessor files by
//!   sha256 (so weights replaced in place are noticed), canonical dtype and device names,
//!   layers, pooling, decoding and the item list. A run whose settings (or `--chunk-size`)
//!   differ from the chunks already in `<store>.parts` stops and names each difference; it never
//!   deletes another run's work.
//! - Every chunk carries a sha256 over its rows, metadata and features, and its row list is
//!   checked against the chunk's item range. A missing, truncated, altered or foreign chunk is
//!   removed and redone, never assembled.
//! - Exactly one process assembles: the one that creates `<store>.parts/assemble.claim`
//!   exclusively (no `flock`: it is node-local or off on cluster file systems). The others exit
//!   successfully, saying who assembles. A claim whose holder died (killed, wall time, node
//!   lost) is taken over: see the `claim` module.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use artifacts::{atomic_write, write_safetensors, RawTensor};
use hubert_core::{
    parse_count, EmbedOptions, Embedder, Embedding, Hubert, LayerSelection, ModelArgs, ModelSource,
};
use serde::{Deserialize, Serialize};

use crate::claim::{try_claim, Attempt, Claim};
use crate::store::{
    decode_settings, file_sha256, sha256_hex, weights_sha256, write_store, write_store_blocks,
    FeatureStore, PoolingSet, Provenance, Settings, Skipped, Stat, StoreContents,
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
    /// Name the model's files are filed under (stores, results, probes); default: the hub id's
    /// name part or the folder's name, lowercased (`hubert` for the study's model).
    #[arg(long, value_name = "NAME", value_parser = crate::naming::parse_slug)]
    pub slug: Option<String>,
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
    /// Statistics over frames to store per layer (the mean always; one forward pass computes
    /// them all). The `extract` subcommand's `--pooling LIST` sets it; `run` stores what its
    /// `train --pooling` reads.
    #[arg(skip)]
    pub pooling: PoolingSet,
    /// Cropping and windowing of long clips (`--max-seconds`, `--chunk-seconds`).
    #[command(flatten)]
    pub long_clips: LongClips,
}

/// How extraction treats long clips; both settings enter the store fingerprint.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct LongClips {
    /// Keep only the first S seconds of each clip (after the task's own preparation).
    #[arg(long, value_name = "S")]
    pub max_seconds: Option<f64>,
    /// Embed clips longer than S seconds in windows of S seconds, each separately, frames
    /// stitched (each shared frame from the window where it is furthest from an edge) and
    /// pooled over the clip: a deviation from the full-context result. Mean pooling only.
    #[arg(long, value_name = "S")]
    pub chunk_seconds: Option<f64>,
    /// Seconds consecutive windows share.
    #[arg(
        long,
        value_name = "O",
        default_value_t = 0.0,
        requires = "chunk_seconds"
    )]
    pub chunk_overlap: f64,
}

impl LongClips {
    /// The fingerprint entry: `None` when clips are taken whole (stores made before these
    /// settings existed keep their fingerprint).
    pub fn setting(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(max) = self.max_seconds {
            parts.push(format!("first {max} s"));
        }
        if let Some(chunk) = self.chunk_seconds {
            parts.push(format!(
                "windows of {chunk} s overlapping {} s, stitched at the most central frame",
                self.chunk_overlap
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Checks the values; returns the window plan's `(chunk, overlap)` in frames.
    fn windows(&self, stride: usize, pooling: &PoolingSet) -> Result<Option<(usize, usize)>> {
        if let Some(max) = self.max_seconds {
            if !(max.is_finite() && max > 0.0) {
                bail!("--max-seconds {max}: expected a positive number of seconds");
            }
        }
        let Some(chunk) = self.chunk_seconds else {
            return Ok(None);
        };
        let frames = |s: f64| s * audio_io::TARGET_SAMPLE_RATE as f64 / stride as f64;
        let (c, o) = (frames(chunk).floor(), frames(self.chunk_overlap).round());
        if !(c.is_finite() && o.is_finite() && c >= 1.0 && o >= 0.0 && o < c) {
            bail!(
                "--chunk-seconds {chunk} --chunk-overlap {}: a window needs at least one frame \
                 and more frames than the overlap",
                self.chunk_overlap
            );
        }
        if pooling.contains(Stat::Std) || pooling.contains(Stat::Max) {
            bail!("--chunk-seconds pools by the mean only (not with std or max pooling)");
        }
        Ok(Some((c as usize, o as usize)))
    }
}

impl ExtractOptions {
    /// The model's slug: `--slug`, else the one of `--model` ([`crate::naming::slug_for`]).
    pub fn slug(&self) -> String {
        crate::naming::slug_for(&self.model.model, self.slug.as_deref())
    }
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
    /// Every chunk is present and another process is assembling the store (it holds the
    /// claim); this one has nothing left to do.
    AssembledElsewhere {
        /// The holder: host, pid, SLURM job.
        by: String,
    },
}

/// The store of `slug` ([`crate::naming::store_path`]):
/// `features/<name>_features_<slug>.safetensors` for `last`, `..._<slug>_<layers>.safetensors`
/// otherwise.
pub fn store_path(
    features_dir: &Path,
    task_name: &str,
    slug: &str,
    layers: &LayerSelection,
) -> PathBuf {
    crate::naming::store_path(features_dir, task_name, slug, layers)
}

/// `<store>.parts`.
pub fn parts_dir(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    store.with_file_name(name)
}

/// Format tag of a parts folder's manifest.
const PARTS_FORMAT: &str = "hubert-probe.parts/2";

/// The claim file of the process that assembles the store.
const CLAIM: &str = "assemble.claim";

/// Written into the parts directory: what the chunks belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: String,
    fingerprint: String,
    settings: Settings,
    /// What the store will record (the first run's model id and revision).
    provenance: Provenance,
    num_items: usize,
    chunk_size: usize,
    num_layers: usize,
    dim: usize,
    /// Statistics in each chunk (the mean, and those `--pooling` adds).
    #[serde(default)]
    pooling: PoolingSet,
}

impl Manifest {
    fn num_chunks(&self) -> usize {
        self.num_items.div_ceil(self.chunk_size)
    }

    /// The item range `[start, end)` of chunk `c`.
    fn range(&self, c: usize) -> (usize, usize) {
        let start = c.saturating_mul(self.chunk_size).min(self.num_items);
        (
            start,
            start.saturating_add(self.chunk_size).min(self.num_items),
        )
    }

    /// Each setting that differs from `other` (`name: ours vs theirs`).
    fn differences(&self, other: &Manifest) -> Vec<String> {
        let mut d = self.settings.differences(&other.settings);
        for (name, a, b) in [
            ("chunk_size", self.chunk_size, other.chunk_size),
            ("num_items", self.num_items, other.num_items),
            ("num_layers", self.num_layers, other.num_layers),
            ("dim", self.dim, other.dim),
        ] {
            if a != b {
                d.push(format!("{name}: {a} vs {b}"));
            }
        }
        if self.format != other.format {
            d.push(format!("format: {} vs {}", self.format, other.format));
        }
        d
    }
}

fn chunk_path(parts: &Path, chunk: usize) -> PathBuf {
    parts.join(format!("chunk-{chunk:05}.safetensors"))
}

/// sha256 of the item list and class names.
fn items_sha256(dataset: &Dataset) -> Result<String> {
    let items = serde_json::to_string(&dataset.items)?;
    let names = serde_json::to_string(&dataset.class_names)?;
    Ok(sha256_hex(format!("{items}\0{names}").as_bytes()))
}

/// The settings of this extraction; the weights are hashed (once per file version, cached in
/// `features_dir`).
fn settings_for(
    task: &dyn Task,
    dataset: &Dataset,
    opts: &ExtractOptions,
    source: &ModelSource,
    features_dir: &Path,
) -> Result<Settings> {
    let config = &source.config;
    let files = &source.files;
    Ok(Settings {
        task: task.name(),
        weights_sha256: weights_sha256(&files.weights, features_dir)?,
        config_sha256: file_sha256(&files.config)?,
        preprocessor_sha256: match &files.preprocessor {
            Some(p) => file_sha256(p)?,
            None => "defaults".into(),
        },
        layers: opts.layers.name(),
        layer_indices: opts.layers.stored_layers(config.num_hidden_layers),
        dtype: opts.model.dtype.to_string(),
        device: match opts.model.device {
            hubert_core::DeviceSpec::Cpu => "cpu".into(),
            hubert_core::DeviceSpec::Cuda(_) => "cuda".into(),
        },
        pooling: opts.pooling.to_string(),
        decode: decode_settings(),
        items_sha256: items_sha256(dataset)?,
        long_clips: opts.long_clips.setting(),
    })
}

/// Why `existing` cannot stand for an extraction with `settings` of `dataset` (`None`: it can).
/// A store holding more statistics than `settings` asks for serves the request.
fn store_mismatch(
    existing: &FeatureStore,
    settings: &Settings,
    dataset: &Dataset,
) -> Option<String> {
    let Some(stored) = &existing.settings else {
        return Some("it records no settings (an older version made it)".into());
    };
    let mut wanted = settings.clone();
    wanted.pooling = stored.pooling.clone();
    let asked: PoolingSet = settings.pooling.parse().unwrap_or_default();
    if stored != &wanted {
        Some(format!(
            "it was made with other settings ({}; stored vs now)",
            stored.differences(settings).join(", ")
        ))
    } else if !existing.pooling.covers(&asked) {
        Some(format!(
            "it holds the frame {} only, --pooling {asked} was asked",
            existing.pooling
        ))
    } else if existing.class_names != dataset.class_names || !items_match(existing, dataset) {
        Some("its item list differs".into())
    } else {
        None
    }
}

fn store_up_to_date(store: &Path, settings: &Settings, dataset: &Dataset) -> bool {
    FeatureStore::open(store).is_ok_and(|s| store_mismatch(&s, settings, dataset).is_none())
}

/// Loads the model when a chunk must be computed, at most once.
struct Worker<'a> {
    task: &'a dyn Task,
    opts: &'a ExtractOptions,
    source: Option<ModelSource>,
    hubert: Option<Hubert>,
}

impl Worker<'_> {
    fn run(
        &mut self,
        dataset: &Dataset,
        manifest: &Manifest,
        parts: &Path,
        chunks: &[usize],
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        if self.hubert.is_none() {
            let source = self
                .source
                .take()
                .context("internal: model source used up")?;
            self.hubert = Some(
                source
                    .load(self.opts.model.device, self.opts.model.dtype)
                    .with_context(|| format!("cannot load model {:?}", self.opts.model.model))?,
            );
        }
        let hubert = self.hubert.as_ref().expect("loaded above");
        run_chunks(
            self.task, dataset, hubert, manifest, parts, chunks, self.opts,
        )
    }
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
        slug: Some(opts.slug()),
        family: Some(config.family.to_string()),
    };
    let features_dir = store
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let settings = settings_for(task, dataset, opts, &source, features_dir)?;

    if store.is_file() {
        match FeatureStore::open(store) {
            Ok(existing) => match store_mismatch(&existing, &settings, dataset) {
                None => {
                    eprintln!("{} is up to date", store.display());
                    return Ok(ExtractOutcome::Complete(store.to_path_buf()));
                }
                Some(why) => eprintln!("{}: {why}: extracting again", store.display()),
            },
            Err(e) => eprintln!("{e:#}: extracting again"),
        }
    }

    let manifest = Manifest {
        format: PARTS_FORMAT.into(),
        fingerprint: settings.fingerprint(),
        settings,
        provenance,
        num_items: dataset.items.len(),
        chunk_size: opts.chunk_size.max(1),
        num_layers: opts.layers.len(config.num_hidden_layers),
        dim: config.hidden_size,
        pooling: opts.pooling.clone(),
    };
    let parts = parts_dir(store);
    prepare_parts(&parts, &manifest)?;
    // Another process may have assembled the store since the check above (and removed its
    // parts, so that this run created them anew): then there is nothing to do.
    if store.is_file() && store_up_to_date(store, &manifest.settings, dataset) {
        eprintln!("{} is up to date", store.display());
        return Ok(ExtractOutcome::Complete(store.to_path_buf()));
    }

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
        .filter(|&c| !chunk_ok(&parts, &manifest, dataset, c))
        .collect();
    let mut worker = Worker {
        task,
        opts,
        source: Some(source),
        hubert: None,
    };
    worker.run(dataset, &manifest, &parts, &todo)?;
    finish(dataset, store, &parts, &manifest, Some(&mut worker))
}

/// After this process's chunks: assemble the store if every chunk is present and this process
/// wins the claim (verifying every chunk first and redoing bad ones when it has a model), or say
/// why not.
fn finish(
    dataset: &Dataset,
    store: &Path,
    parts: &Path,
    manifest: &Manifest,
    worker: Option<&mut Worker<'_>>,
) -> Result<ExtractOutcome> {
    let total = manifest.num_chunks();
    let present = (0..total)
        .filter(|&c| chunk_path(parts, c).is_file())
        .count();
    if present < total {
        // Another process may have assembled and cleared the parts meanwhile.
        if !parts.exists() && store_up_to_date(store, &manifest.settings, dataset) {
            return Ok(ExtractOutcome::Complete(store.to_path_buf()));
        }
        return Ok(ExtractOutcome::ShardDone {
            done: present,
            total,
        });
    }
    let claim = match try_claim(&parts.join(CLAIM))
        .with_context(|| format!("cannot claim the assembly in {}", parts.display()))?
    {
        Attempt::Claimed(claim) => claim,
        Attempt::Held(by) => {
            eprintln!(
                "every chunk is present; the store is being assembled by another process ({by})"
            );
            return Ok(ExtractOutcome::AssembledElsewhere { by });
        }
        Attempt::Gone => {
            if store_up_to_date(store, &manifest.settings, dataset) {
                return Ok(ExtractOutcome::Complete(store.to_path_buf()));
            }
            bail!(
                "{} was removed while this process finished, and {} is not complete",
                parts.display(),
                store.display()
            );
        }
    };
    // Trust nothing another process wrote: verify every chunk, redo what fails.
    let bad: Vec<usize> = (0..total)
        .filter(|&c| !chunk_ok(parts, manifest, dataset, c))
        .collect();
    if !bad.is_empty() {
        match worker {
            Some(w) => w.run(dataset, manifest, parts, &bad)?,
            None => bail!(
                "{}: chunks {bad:?} were missing or invalid (removed); run `extract` with the same settings (the shards holding them) to redo them",
                parts.display()
            ),
        }
    }
    assemble(dataset, parts, store, manifest, claim)?;
    Ok(ExtractOutcome::Complete(store.to_path_buf()))
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

/// Reads a parts folder's manifest (`None` when it has none).
fn read_manifest(parts: &Path) -> Result<Option<Manifest>> {
    let path = parts.join("manifest.json");
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if len > 1 << 20 {
        bail!("{}: {len} bytes, not a manifest", path.display());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: unreadable (written by another version?); delete {} to start over",
            path.display(),
            parts.display()
        )
    })?;
    Ok(Some(manifest))
}

/// Creates the parts directory with its manifest, or checks that the chunks already there were
/// made with the same settings; if not, stops naming each difference (deleting nothing).
fn prepare_parts(parts: &Path, manifest: &Manifest) -> Result<()> {
    for _ in 0..3 {
        if let Some(old) = read_manifest(parts)? {
            let diffs = old.differences(manifest);
            if diffs.is_empty() {
                return Ok(());
            }
            bail!(
                "{} holds chunks made with other settings (there vs this run):\n  {}\nRun with the same settings to continue that extraction, or delete {} (or pick another --features-dir) to start over; nothing was deleted",
                parts.display(),
                diffs.join("\n  "),
                parts.display()
            );
        }
        std::fs::create_dir_all(parts)
            .with_context(|| format!("cannot create {}", parts.display()))?;
        if publish_manifest(parts, manifest)? {
            return Ok(());
        }
        // Another process published its manifest first: compare with it.
    }
    bail!("{}: the manifest keeps changing", parts.display())
}

/// Writes `manifest.json` unless one exists (hard link of a complete temporary file: exclusive
/// and atomic on network file systems too). Whether this process's manifest was written.
fn publish_manifest(parts: &Path, manifest: &Manifest) -> Result<bool> {
    let path = parts.join("manifest.json");
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parts.join(format!(".manifest.{}.{serial}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(manifest)?.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let result = match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // File systems without hard links: an atomic rename (last writer wins; differing
        // chunks are then caught by their fingerprints).
        Err(_) => std::fs::rename(&tmp, &path)
            .map(|()| true)
            .with_context(|| format!("cannot write {}", path.display())),
    };
    let _ = std::fs::remove_file(&tmp);
    result
}

/// A chunk read back and checked.
struct ChunkData {
    rows: Vec<usize>,
    skipped: Vec<Skipped>,
    padded: Vec<String>,
    features: Vec<f32>,
    /// Standard deviations and maxima, when the manifest's pooling holds them (else empty).
    stds: Vec<f32>,
    maxs: Vec<f32>,
}

/// Why a chunk cannot be used.
enum ChunkFault {
    Missing,
    Invalid(String),
}

/// The checksum a chunk carries: sha256 over its metadata values, shape and feature bytes.
pub(crate) fn chunk_checksum(fields: [&str; 5], shape: &[usize], data: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for f in fields {
        h.update(f.as_bytes());
        h.update([0u8]);
    }
    h.update(format!("{shape:?}").as_bytes());
    h.update([0u8]);
    h.update(data);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads chunk `c` and checks everything about it: size bound, format, fingerprint, chunk
/// number, checksum, and that its rows and skipped items partition its item range exactly.
fn read_chunk(
    parts: &Path,
    manifest: &Manifest,
    dataset: &Dataset,
    c: usize,
) -> std::result::Result<ChunkData, ChunkFault> {
    use ChunkFault::{Invalid, Missing};
    let path = chunk_path(parts, c);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Missing),
        Err(e) => return Err(Invalid(format!("cannot read it: {e}"))),
    };
    let (start, end) = manifest.range(c);
    let count = end - start;
    let row_bytes = manifest.num_layers * manifest.dim * 4 * manifest.pooling.stats().len();
    let limit = (count * row_bytes + (1 << 20) + count * (16 << 10)) as u64;
    if len > limit {
        return Err(Invalid(format!(
            "{len} bytes, more than a chunk of {count} items can hold"
        )));
    }
    let bytes = std::fs::read(&path).map_err(|e| Invalid(format!("cannot read it: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Invalid(format!("not a complete safetensors file ({e})")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Invalid(format!("bad header ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .map(String::as_str)
            .ok_or_else(|| Invalid(format!("metadata `{k}` missing")))
    };
    if get("fingerprint")? != manifest.fingerprint {
        return Err(Invalid("made with other settings".into()));
    }
    if get("chunk")? != c.to_string() {
        return Err(Invalid(format!("it says it is chunk {}", get("chunk")?)));
    }
    let t = st
        .tensor("features")
        .map_err(|e| Invalid(format!("no features ({e})")))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(Invalid(format!("features are {:?}, not F32", t.dtype())));
    }
    let fields = [
        get("fingerprint")?,
        get("chunk")?,
        get("rows")?,
        get("skipped")?,
        get("padded")?,
    ];
    if get("checksum")? != chunk_checksum(fields, t.shape(), t.data()) {
        return Err(Invalid("checksum mismatch (altered or damaged)".into()));
    }
    let parse_err = |k: &str, e: serde_json::Error| Invalid(format!("metadata `{k}`: {e}"));
    let rows: Vec<usize> = serde_json::from_str(fields[2]).map_err(|e| parse_err("rows", e))?;
    let skipped: Vec<Skipped> =
        serde_json::from_str(fields[3]).map_err(|e| parse_err("skipped", e))?;
    let padded: Vec<String> =
        serde_json::from_str(fields[4]).map_err(|e| parse_err("padded", e))?;
    let increasing_in_range = |v: &[usize]| {
        v.iter().all(|i| (start..end).contains(i)) && v.windows(2).all(|w| w[0] < w[1])
    };
    let skipped_rows: Vec<usize> = skipped.iter().map(|s| s.index).collect();
    let skipped_ok = skipped
        .iter()
        .all(|s| s.index < dataset.items.len() && dataset.items[s.index].path == s.path);
    if !increasing_in_range(&rows)
        || !increasing_in_range(&skipped_rows)
        || !skipped_ok
        || rows.len() + skipped.len() != count
        || skipped.iter().any(|s| rows.binary_search(&s.index).is_ok())
    {
        return Err(Invalid(format!(
            "its rows and skipped items do not cover items {start}..{end} exactly"
        )));
    }
    let row_paths: std::collections::HashSet<&str> = rows
        .iter()
        .map(|&r| dataset.items[r].path.as_str())
        .collect();
    if padded.iter().any(|p| !row_paths.contains(p.as_str())) {
        return Err(Invalid("a padded item is not one of its rows".into()));
    }
    if t.shape() != [rows.len(), manifest.num_layers, manifest.dim] {
        return Err(Invalid(format!(
            "features {:?} for {} rows of {} x {}",
            t.shape(),
            rows.len(),
            manifest.num_layers,
            manifest.dim
        )));
    }
    let floats = |data: &[u8]| -> Vec<f32> {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let features = floats(t.data());
    // The other statistics `--pooling` stores, each under its own checksum.
    let (mut stds, mut maxs) = (Vec::new(), Vec::new());
    for (stat, out) in [(Stat::Std, &mut stds), (Stat::Max, &mut maxs)] {
        if !manifest.pooling.contains(stat) {
            continue;
        }
        let name = stat.tensor_name();
        let x = st
            .tensor(name)
            .map_err(|e| Invalid(format!("no {name} ({e})")))?;
        if x.dtype() != safetensors::Dtype::F32 || x.shape() != t.shape() {
            return Err(Invalid(format!("{name} is not F32 {:?}", t.shape())));
        }
        if get(&format!("checksum_{}", stat.name()))? != chunk_checksum(fields, x.shape(), x.data())
        {
            return Err(Invalid(format!(
                "{name}: checksum mismatch (altered or damaged)"
            )));
        }
        *out = floats(x.data());
    }
    Ok(ChunkData {
        rows,
        skipped,
        padded,
        features,
        stds,
        maxs,
    })
}

/// Whether chunk `c` is present and valid; an invalid one is removed (saying why) so that it is
/// redone.
fn chunk_ok(parts: &Path, manifest: &Manifest, dataset: &Dataset, c: usize) -> bool {
    match read_chunk(parts, manifest, dataset, c) {
        Ok(_) => true,
        Err(ChunkFault::Missing) => false,
        Err(ChunkFault::Invalid(why)) => {
            let path = chunk_path(parts, c);
            eprintln!("{}: {why}; redoing it", path.display());
            let _ = std::fs::remove_file(&path);
            false
        }
    }
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
    let cfg = hubert.config();
    let stride: usize = cfg.conv_stride.iter().product();
    let field = cfg.min_samples();
    let max_samples = opts
        .long_clips
        .max_seconds
        .map(|s| (s * audio_io::TARGET_SAMPLE_RATE as f64).round().max(1.0) as usize);
    let mut windows = match opts.long_clips.windows(stride, &manifest.pooling)? {
        Some((chunk, overlap)) => {
            let options = EmbedOptions::new(opts.layers.clone())
                .with_batch_size(1)
                .with_outputs(hubert_core::Outputs {
                    frames: true,
                    ..Default::default()
                });
            Some((chunk, overlap, Embedder::new(hubert, options)?))
        }
        None => None,
    };

    // At most 2 x batch clips and 32 Mi samples (128 MiB) decoded ahead of the model.
    let lookahead = audio_io::Lookahead::with_default_samples(2 * opts.batch_size.max(4));
    for (file_idx, decoded) in audio_io::load_many_bounded(files.clone(), lookahead) {
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
                    let mut clip = task.prepare(item, samples.clone());
                    if let Some(max) = max_samples {
                        clip.truncate(max);
                    }
                    let plan = windows.as_ref().and_then(|(chunk, overlap, _)| {
                        hubert_core::embed::chunk_windows(
                            clip.len(),
                            stride,
                            field,
                            *chunk,
                            *overlap,
                        )
                    });
                    match (plan, &mut windows) {
                        (Some(plan), Some((_, _, window_embedder))) => {
                            let e = window_embedder.embed_windows(i, &clip, &plan, false)?;
                            progress.inc(st.place(vec![e]) as u64);
                        }
                        // Clips count when their batch has run, so the bar never runs ahead
                        // of the model.
                        _ => progress.inc(st.place(embedder.push(i, clip)?) as u64),
                    }
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
    let shape = vec![rows.len(), manifest.num_layers, manifest.dim];
    let tensor = RawTensor::f32(shape.clone(), &features);
    let fields = [
        manifest.fingerprint.clone(),
        state.chunk.to_string(),
        serde_json::to_string(&rows)?,
        serde_json::to_string(&state.skipped)?,
        serde_json::to_string(&padded)?,
    ];
    let checksum = chunk_checksum(
        [&fields[0], &fields[1], &fields[2], &fields[3], &fields[4]],
        &shape,
        &tensor.bytes,
    );
    let mut extra_tensors = Vec::new();
    let mut extra_meta = Vec::new();
    for (stat, values) in [(Stat::Std, &stds), (Stat::Max, &maxs)] {
        if manifest.pooling.contains(stat) {
            if values.len() != features.len() {
                bail!("internal: the model returned no frame {}", stat.name());
            }
            let t = RawTensor::f32(shape.clone(), values);
            let sum = chunk_checksum(
                [&fields[0], &fields[1], &fields[2], &fields[3], &fields[4]],
                &shape,
                &t.bytes,
            );
            extra_meta.push((format!("checksum_{}", stat.name()), sum));
            extra_tensors.push((stat.tensor_name().to_string(), t));
        }
    }
    let [fingerprint, chunk, rows, skipped, padded] = fields;
    let mut meta = std::collections::HashMap::from([
        ("fingerprint".to_string(), fingerprint),
        ("chunk".to_string(), chunk),
        ("rows".to_string(), rows),
        ("skipped".to_string(), skipped),
        ("padded".to_string(), padded),
        ("checksum".to_string(), checksum),
    ]);
    meta.extend(extra_meta);
    let mut tensors = vec![("features".to_string(), tensor)];
    tensors.extend(extra_tensors);
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

/// Joins every chunk into the final store (atomically) and removes the parts directory; called
/// by the holder of the assembly claim, after every chunk was verified.
fn assemble(
    dataset: &Dataset,
    parts: &Path,
    store: &Path,
    manifest: &Manifest,
    claim: Claim,
) -> Result<()> {
    if manifest.num_items != dataset.items.len()
        || manifest.settings.items_sha256 != items_sha256(dataset)?
    {
        bail!(
            "{}: the chunks are for another item list ({} items) than the dataset's ({} items)",
            parts.display(),
            manifest.num_items,
            dataset.items.len()
        );
    }
    // Pass 1: every chunk checked, its rows and lists kept (not its features).
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut padded = Vec::new();
    let fault = |c: usize, fault: ChunkFault| {
        let path = chunk_path(parts, c);
        let why = match fault {
            ChunkFault::Missing => "missing".to_string(),
            ChunkFault::Invalid(why) => why,
        };
        let _ = std::fs::remove_file(&path);
        anyhow::anyhow!(
            "{}: {why} (removed; run `extract` again to redo it)",
            path.display()
        )
    };
    for c in 0..manifest.num_chunks() {
        let chunk = read_chunk(parts, manifest, dataset, c).map_err(|f| fault(c, f))?;
        items.extend(chunk.rows.iter().map(|&r| dataset.items[r].clone()));
        skipped.extend(chunk.skipped);
        padded.extend(chunk.padded);
    }
    if items.is_empty() {
        bail!("no item could be embedded (all were skipped)");
    }
    let contents = StoreContents {
        provenance: &manifest.provenance,
        class_names: &dataset.class_names,
        items: &items,
        features: &[],
        features_std: None,
        features_max: None,
        num_layers: manifest.num_layers,
        dim: manifest.dim,
        skipped: &skipped,
        padded: &padded,
        settings: Some(&manifest.settings),
    };
    if manifest.pooling.stats() == [Stat::Mean] {
        // Pass 2: the features streamed into the store chunk by chunk (checked again), so
        // memory holds one chunk, not the store.
        let mut next = 0;
        let mut next_block = || -> Result<Option<Vec<f32>>> {
            if next == manifest.num_chunks() {
                return Ok(None);
            }
            let c = next;
            next += 1;
            let chunk = read_chunk(parts, manifest, dataset, c).map_err(|f| fault(c, f))?;
            Ok(Some(chunk.features))
        };
        write_store_blocks(store, &contents, &mut next_block)?;
    } else {
        // With `--pooling` statistics beyond the mean, the store is assembled in memory (every
        // statistic of every chunk, checked again): docs/CLUSTER.md sizes this case.
        let (mut features, mut stds, mut maxs) = (Vec::new(), Vec::new(), Vec::new());
        for c in 0..manifest.num_chunks() {
            let chunk = read_chunk(parts, manifest, dataset, c).map_err(|f| fault(c, f))?;
            features.extend(chunk.features);
            stds.extend(chunk.stds);
            maxs.extend(chunk.maxs);
        }
        write_store(
            store,
            &StoreContents {
                features: &features,
                features_std: manifest.pooling.contains(Stat::Std).then_some(&stds[..]),
                features_max: manifest.pooling.contains(Stat::Max).then_some(&maxs[..]),
                ..contents
            },
        )?;
    }
    eprintln!(
        "assembled {} from {} chunks",
        store.display(),
        manifest.num_chunks()
    );
    if !claim.is_ours() {
        // Stalled past the claim's lifetime and taken over: the new holder clears the parts
        // (the store it writes is the same).
        eprintln!(
            "{}: the assembly claim was taken over; leaving the parts to its new holder",
            parts.display()
        );
        return Ok(());
    }
    // Move the folder out of the way first, so that no other process sees a half-removed one.
    claim.disarm();
    let mut name = parts.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".done-{}", std::process::id()));
    let done = parts.with_file_name(name);
    let doomed = match std::fs::rename(parts, &done) {
        Ok(()) => done,
        Err(_) => parts.to_path_buf(),
    };
    std::fs::remove_dir_all(&doomed)
        .with_context(|| format!("cannot remove {}", doomed.display()))?;
    Ok(())
}

/// `merge`: copies chunk files from other parts directories (e.g. fetched from the machines of a
/// job array) into this store's parts directory and assembles the store. Only chunks that pass
/// every check are copied; parts made with other settings are refused, naming the difference.
pub fn merge(dataset: &Dataset, store: &Path, other_parts: &[PathBuf]) -> Result<PathBuf> {
    let parts = parts_dir(store);
    let mut own = read_manifest(&parts)?;
    for other in other_parts {
        let theirs = read_manifest(other)?
            .with_context(|| format!("{}: manifest.json missing", other.display()))?;
        let manifest = match &own {
            Some(m) => {
                let diffs = m.differences(&theirs);
                if !diffs.is_empty() {
                    bail!(
                        "{} holds chunks made with other settings than {} ({} vs there):\n  {}",
                        other.display(),
                        parts.display(),
                        parts.display(),
                        diffs.join("\n  ")
                    );
                }
                m.clone()
            }
            None => {
                prepare_parts(&parts, &theirs)?;
                own = Some(theirs.clone());
                theirs
            }
        };
        for c in 0..manifest.num_chunks() {
            if chunk_ok(&parts, &manifest, dataset, c) {
                continue;
            }
            match read_chunk(other, &manifest, dataset, c) {
                Ok(_) => {
                    let bytes = std::fs::read(chunk_path(other, c))?;
                    atomic_write(&chunk_path(&parts, c), &bytes)?;
                }
                Err(ChunkFault::Missing) => {}
                Err(ChunkFault::Invalid(why)) => {
                    eprintln!("{}: {why}; not copied", chunk_path(other, c).display())
                }
            }
        }
    }
    let Some(manifest) = own else {
        if store.is_file() {
            return Ok(store.to_path_buf());
        }
        bail!(
            "{}: nothing to merge (no extraction parts)",
            parts.display()
        );
    };
    match finish(dataset, store, &parts, &manifest, None)? {
        ExtractOutcome::Complete(p) => Ok(p),
        ExtractOutcome::ShardDone { done, total } => {
            let first = (0..total)
                .find(|&c| !chunk_path(&parts, c).is_file())
                .unwrap_or(0);
            bail!(
                "{}: {} of {total} chunks missing (first: {first}); run the remaining shards or copy their parts here",
                parts.display(),
                total - done
            )
        }
        ExtractOutcome::AssembledElsewhere { by } => bail!(
            "{}: another process ({by}) is assembling the store; run merge again when it is done",
            parts.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long-clip settings enter the fingerprint; without them the settings' JSON (and so every
    /// existing store's fingerprint) is unchanged.
    #[test]
    fn long_clip_settings_enter_the_fingerprint() {
        let base = Settings {
            task: "t".into(),
            weights_sha256: "w".into(),
            config_sha256: "c".into(),
            preprocessor_sha256: "defaults".into(),
            layers: "last".into(),
            layer_indices: vec![],
            dtype: "f32".into(),
            device: "cpu".into(),
            pooling: "mean".into(),
            decode: "d".into(),
            items_sha256: "i".into(),
            long_clips: LongClips::default().setting(),
        };
        assert_eq!(base.long_clips, None);
        let json = serde_json::to_string(&base).unwrap();
        assert!(!json.contains("long_clips"), "{json}");
        let cropped = LongClips {
            max_seconds: Some(30.0),
            ..Default::default()
        };
        let chunked = LongClips {
            chunk_seconds: Some(30.0),
            chunk_overlap: 2.0,
            ..Default::default()
        };
        let chunked_more = LongClips {
            chunk_overlap: 4.0,
            ..chunked.clone()
        };
        let mut prints = vec![base.fingerprint()];
        for long in [&cropped, &chunked, &chunked_more] {
            let s = Settings {
                long_clips: long.setting(),
                ..base.clone()
            };
            prints.push(s.fingerprint());
        }
        prints.sort();
        prints.dedup();
        assert_eq!(prints.len(), 4, "every setting its own fingerprint");
        assert_eq!(
            chunked.setting().unwrap(),
            "windows of 30 s overlapping 2 s, stitched at the most central frame"
        );
    }

    /// The flags parse as part of the `extract` options.
    #[test]
    fn long_clip_flags_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            extract: ExtractOptions,
        }
        let cli = Cli::try_parse_from([
            "extract",
            "--model",
            "m",
            "--max-seconds",
            "600",
            "--chunk-seconds",
            "30",
            "--chunk-overlap",
            "2",
        ])
        .unwrap();
        assert_eq!(
            cli.extract.long_clips,
            LongClips {
                max_seconds: Some(600.0),
                chunk_seconds: Some(30.0),
                chunk_overlap: 2.0,
            }
        );
        assert!(Cli::try_parse_from(["extract", "--model", "m", "--chunk-overlap", "2"]).is_err());
        let plain = Cli::try_parse_from(["extract", "--model", "m"]).unwrap();
        assert_eq!(plain.extract.long_clips, LongClips::default());
    }

    #[test]
    fn long_clip_settings_are_checked() {
        let mean = PoolingSet::default();
        let ok = LongClips {
            chunk_seconds: Some(0.4),
            chunk_overlap: 0.1,
            max_seconds: Some(5.0),
        };
        assert_eq!(ok.windows(320, &mean).unwrap(), Some((20, 5)));
        assert_eq!(LongClips::default().windows(320, &mean).unwrap(), None);
        for bad in [
            LongClips {
                max_seconds: Some(0.0),
                ..Default::default()
            },
            LongClips {
                chunk_seconds: Some(0.01),
                ..Default::default()
            },
            LongClips {
                chunk_seconds: Some(1.0),
                chunk_overlap: 1.0,
                ..Default::default()
            },
            LongClips {
                chunk_seconds: Some(f64::NAN),
                ..Default::default()
            },
        ] {
            assert!(bad.windows(320, &mean).is_err(), "{bad:?}");
        }
    }

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
    fn parts_folder_name() {
        assert_eq!(
            parts_dir(Path::new("features/x.safetensors")),
            Path::new("features/x.safetensors.parts")
        );
    }
}
