//! The feature store: `features/<task>_features_<slug>.safetensors` (the model's slug: see
//! `naming`), readable from Python with `safetensors`:
//!
//! - `features` `[N, L, D]` f32: the frame mean of each stored hidden state of each item;
//! - `features_std` `[N, L, D]` f32 (with `extract --pooling ...,std`): the population standard
//!   deviation over frames;
//! - `features_max` `[N, L, D]` f32 (with `extract --pooling ...,max`): the maximum over frames;
//! - `labels` `[N]` i64;
//! - metadata (all values are strings; JSON where structured): `format`, `task`, `model`,
//!   `revision`, `slug`, `family` (the model's `model_type`), `layers`, `layer_indices`, `pooling` (the statistics stored, e.g. `mean` or
//!   `mean,std,max`), `dtype`, `class_names`, `items` (path, label, split, group, segment per
//!   row), `skipped`, `padded`, `device`, and `settings` (JSON [`Settings`]: every setting that
//!   shapes the features, the weights by content) with its `fingerprint`.
//!
//! Stores of format 1 (before `--pooling`) hold the mean only and still open. The file is
//! memory-mapped: training reads only the layers and statistics it uses, so a store larger than
//! memory trains.
//!
//! ```python
//! from safetensors import safe_open
//! with safe_open("features/esc50_features_hubert.safetensors", "np") as f:
//!     x, y = f.get_tensor("features"), f.get_tensor("labels")
//!     items = json.loads(f.metadata()["items"])
//! ```
//!
//! While extracting, finished work lives in `<store>.parts/chunk-NNNNN.safetensors` files, each
//! written atomically; an interrupted run resumes from them, and the final file is assembled from
//! them in item order, so it equals an uninterrupted run's byte for byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use artifacts::{write_safetensors, RawTensor};
use hubert_core::StoredLayer;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::task::Item;
use crate::train::LayerChoice;

/// Format tag written into every store (2: optional `features_std` / `features_max`).
pub const FORMAT: &str = "hubert-probe.features/2";

/// The previous format (the mean only), still read.
pub const FORMAT_V1: &str = "hubert-probe.features/1";

/// A statistic over an item's frames, stored per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    /// The frame mean (`features`, the study's pooling).
    Mean,
    /// The population standard deviation over frames (`features_std`).
    Std,
    /// The maximum over frames (`features_max`).
    Max,
}

impl Stat {
    /// Every statistic, in store order.
    pub const ALL: [Stat; 3] = [Stat::Mean, Stat::Std, Stat::Max];

    /// The tensor holding it.
    pub fn tensor_name(self) -> &'static str {
        match self {
            Stat::Mean => "features",
            Stat::Std => "features_std",
            Stat::Max => "features_max",
        }
    }

    /// `mean`, `std`, `max`.
    pub fn name(self) -> &'static str {
        match self {
            Stat::Mean => "mean",
            Stat::Std => "std",
            Stat::Max => "max",
        }
    }
}

/// `extract --pooling`: the statistics a store holds, the mean always among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolingSet(Vec<Stat>);

impl Default for PoolingSet {
    fn default() -> Self {
        Self(vec![Stat::Mean])
    }
}

impl PoolingSet {
    /// The mean and `extra`, in store order.
    pub fn new(extra: &[Stat]) -> Self {
        let mut v: Vec<Stat> = std::iter::once(Stat::Mean)
            .chain(extra.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        Self(v)
    }

    /// The statistics, in store order (mean first).
    pub fn stats(&self) -> &[Stat] {
        &self.0
    }

    /// Whether `stat` is held.
    pub fn contains(&self, stat: Stat) -> bool {
        self.0.contains(&stat)
    }

    /// Whether every statistic of `other` is held here (a store with more serves fewer).
    pub fn covers(&self, other: &PoolingSet) -> bool {
        other.0.iter().all(|s| self.contains(*s))
    }
}

impl std::str::FromStr for PoolingSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut extra = Vec::new();
        for part in s.split(',') {
            match part.trim() {
                "mean" => {}
                "std" => extra.push(Stat::Std),
                "max" => extra.push(Stat::Max),
                other => {
                    return Err(format!(
                    "expected a list of mean, std, max (the mean is always stored), got {other:?}"
                ))
                }
            }
        }
        Ok(Self::new(&extra))
    }
}

impl std::fmt::Display for PoolingSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// `train --pooling`: the item vector a probe sees, per layer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The frame mean, `D` wide (the study's).
    #[default]
    Mean,
    /// The frame maximum, `D` wide.
    Max,
    /// The mean and the standard deviation concatenated, `2D` wide.
    Meanstd,
}

impl Pooling {
    /// The stored statistics it reads, in the order they are concatenated.
    pub fn stats(self) -> &'static [Stat] {
        match self {
            Pooling::Mean => &[Stat::Mean],
            Pooling::Max => &[Stat::Max],
            Pooling::Meanstd => &[Stat::Mean, Stat::Std],
        }
    }

    /// `mean`, `max`, `meanstd`.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::Meanstd => "meanstd",
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What produced a store: everything that must match for cached work to be reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Task name.
    pub task: String,
    /// Model id or local path.
    pub model: String,
    /// Hub revision, when known.
    pub revision: Option<String>,
    /// `last`, `all`, or indices.
    pub layers: String,
    /// The hidden state of each stored layer (`"last_hidden_state"` or an index in JSON).
    pub layer_indices: Vec<StoredLayer>,
    /// Model dtype.
    pub dtype: String,
    /// The model's slug (`naming`: `hubert`, `wavlm-base-plus`, or `--slug`); `None` in stores
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// The model family (`config.json`'s `model_type`: `hubert`, `wav2vec2`, `wavlm`,
    /// `data2vec-audio`); `None` in stores written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// Every setting that shapes the features, by content: what cached work (a finished store, the
/// chunks of an interrupted or sharded run) must match to be reused. The model enters by the
/// sha256 of its weight, config and preprocessor files, not by its path, so weights replaced in
/// the same folder are never mistaken for the old ones, and the same weights at another path
/// (another node's scratch copy) still match. Names are canonical (`bf16`, never `bfloat16`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Task name.
    pub task: String,
    /// sha256 of the weight file (`model.safetensors` or `pytorch_model.bin`).
    pub weights_sha256: String,
    /// sha256 of `config.json`.
    pub config_sha256: String,
    /// sha256 of `preprocessor_config.json`, or `defaults` when the model has none.
    pub preprocessor_sha256: String,
    /// `last`, `all`, or indices (canonical).
    pub layers: String,
    /// The stored hidden states.
    pub layer_indices: Vec<StoredLayer>,
    /// Model precision, canonical (`f32`, `f16`, `bf16`).
    pub dtype: String,
    /// Device kind (`cpu` or `cuda`; the CUDA ordinal does not change results).
    pub device: String,
    /// Pooling over frames.
    pub pooling: String,
    /// Decoding: target rate, channel mixing, decoder version.
    pub decode: String,
    /// sha256 of the item list and class names.
    pub items_sha256: String,
    /// Cropping / windowing of long clips (`extract::LongClips::setting`); absent when clips
    /// are taken whole, so older stores keep their fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_clips: Option<String>,
}

/// The decode settings every extraction uses (part of [`Settings`]).
pub fn decode_settings() -> String {
    format!(
        "{} Hz, mean of channels, audio-io {}",
        audio_io::TARGET_SAMPLE_RATE,
        env!("CARGO_PKG_VERSION")
    )
}

impl Settings {
    /// sha256 (hex) of the settings' JSON: the key of cached stores and chunks.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&serde_json::to_vec(self).expect("settings serialise"))
    }

    /// The settings that differ from `other`, one `name: ours vs theirs` line each (empty when
    /// equal).
    pub fn differences(&self, other: &Settings) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).expect("settings serialise"),
            serde_json::to_value(other).expect("settings serialise"),
        );
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec!["settings".into()];
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                let show = |v: Option<&serde_json::Value>| match v {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "(none)".into(),
                };
                format!("{k}: {} vs {}", show(Some(v)), show(b.get(k)))
            })
            .collect()
    }
}

/// sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 (hex) of a file's content, streamed.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Name of the digest cache kept in the features folder (never in the model folder, which may
/// be read-only or shared).
pub const DIGEST_CACHE: &str = ".weights-sha256.json";

/// One cached digest: valid while the file keeps its path, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedDigest {
    size: u64,
    mtime_ns: i128,
    sha256: String,
}

/// The sha256 of a weight file. A hub cache blob (`.../blobs/<sha256>`, which the snapshot
/// links to) is named by its digest already; any other file is hashed once and the digest
/// cached in `cache_dir/.weights-sha256.json` by path, size and modification time (nanoseconds),
/// so a replaced file is hashed again. An unreadable or unwritable cache only costs the hashing.
pub fn weights_sha256(weights: &Path, cache_dir: &Path) -> Result<String> {
    let real = std::fs::canonicalize(weights)
        .with_context(|| format!("cannot resolve {}", weights.display()))?;
    if let Some(digest) = hub_blob_digest(&real) {
        return Ok(digest);
    }
    let meta =
        std::fs::metadata(&real).with_context(|| format!("cannot stat {}", real.display()))?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .or_else(|e| Ok::<_, ()>(-(e.duration().as_nanos() as i128)))
                .ok()
        })
        .unwrap_or(0);
    let key = real.display().to_string();
    let cache_path = cache_dir.join(DIGEST_CACHE);
    // Bounded read: a cache file is a few hundred bytes per model.
    let mut cache: std::collections::BTreeMap<String, CachedDigest> =
        match std::fs::metadata(&cache_path) {
            Ok(m) if m.len() <= 4 << 20 => std::fs::read(&cache_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            _ => Default::default(),
        };
    if let Some(hit) = cache.get(&key) {
        if hit.size == meta.len() && hit.mtime_ns == mtime_ns && is_sha256(&hit.sha256) {
            return Ok(hit.sha256.clone());
        }
    }
    eprintln!(
        "hashing {} (once; cached by path, size and time)",
        real.display()
    );
    let sha256 = file_sha256(&real)?;
    cache.insert(
        key,
        CachedDigest {
            size: meta.len(),
            mtime_ns,
            sha256: sha256.clone(),
        },
    );
    if let Ok(json) = serde_json::to_vec_pretty(&cache) {
        if let Err(e) = artifacts::atomic_write(&cache_path, &json) {
            tracing::warn!("cannot update {}: {e}", cache_path.display());
        }
    }
    Ok(sha256)
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The digest in a hub cache blob's name: `.../blobs/<64 hex>` (large files are stored under
/// their sha256; small ones under a 40-hex git hash, which is not used).
fn hub_blob_digest(real: &Path) -> Option<String> {
    let name = real.file_name()?.to_str()?;
    let parent = real.parent()?.file_name()?.to_str()?;
    (parent == "blobs" && is_sha256(name)).then(|| name.to_string())
}

/// An item that could not be embedded (`--skip-bad`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Index into the dataset's items.
    pub index: usize,
    /// The item's path.
    pub path: String,
    /// Why.
    pub error: String,
}

/// A finished extraction, in memory or opened from disk.
#[derive(Debug)]
pub struct FeatureStore {
    /// Where it lives.
    pub path: PathBuf,
    /// What produced it.
    pub provenance: Provenance,
    /// Class names by label.
    pub class_names: Vec<String>,
    /// One entry per row of `features`.
    pub items: Vec<Item>,
    /// Items left out because they could not be decoded.
    pub skipped: Vec<Skipped>,
    /// Paths of items shorter than the model's receptive field, zero-padded to it.
    pub padded: Vec<String>,
    /// Stored layers `L`.
    pub num_layers: usize,
    /// Feature width `D`.
    pub dim: usize,
    /// The settings it was made with (`None` for stores written before settings were recorded,
    /// which are never taken as up to date).
    pub settings: Option<Settings>,
    /// The statistics stored.
    pub pooling: PoolingSet,
    mmap: memmap2::Mmap,
    /// Byte offset of each stored statistic's tensor, by [`Stat`] order.
    offsets: [Option<usize>; 3],
}

impl FeatureStore {
    /// Opens a store written by [`write_store`] (memory-mapped: only the layers used are read).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open feature store {}", path.display()))?;
        // SAFETY: read-only map of a file this process does not modify; stores are replaced by
        // atomic renames, never rewritten in place.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        let bad = |msg: String| anyhow::anyhow!("{}: not a feature store: {msg}", path.display());
        let (header_len, header) =
            SafeTensors::read_metadata(&mmap).map_err(|e| bad(e.to_string()))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        let format = meta.get("format").map(String::as_str);
        if format != Some(FORMAT) && format != Some(FORMAT_V1) {
            bail!(bad(format!(
                "format is {format:?}, expected {FORMAT} (or {FORMAT_V1})"
            )));
        }
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| bad(format!("metadata key `{k}` missing")))
        };
        let json = |k: &str| -> Result<serde_json::Value> {
            serde_json::from_str(get(k)?).map_err(|e| bad(format!("metadata `{k}`: {e}")))
        };
        let provenance = Provenance {
            task: get("task")?.clone(),
            model: get("model")?.clone(),
            revision: meta.get("revision").filter(|r| !r.is_empty()).cloned(),
            layers: get("layers")?.clone(),
            layer_indices: serde_json::from_value(json("layer_indices")?)?,
            dtype: get("dtype")?.clone(),
            slug: meta.get("slug").filter(|s| !s.is_empty()).cloned(),
            family: meta.get("family").filter(|f| !f.is_empty()).cloned(),
        };
        let class_names: Vec<String> = serde_json::from_value(json("class_names")?)?;
        let items: Vec<Item> = serde_json::from_value(json("items")?)?;
        let skipped: Vec<Skipped> = serde_json::from_value(json("skipped")?)?;
        let padded: Vec<String> = serde_json::from_value(json("padded")?)?;
        let settings = meta
            .get("settings")
            .and_then(|s| serde_json::from_str::<Settings>(s).ok());
        let info = header
            .tensors()
            .get("features")
            .cloned()
            .ok_or_else(|| bad("tensor `features` missing".into()))?;
        let (n, num_layers, dim) = match info.shape[..] {
            [n, l, d] => (n, l, d),
            _ => bail!(bad(format!(
                "`features` has shape {:?}, expected [N, L, D]",
                info.shape
            ))),
        };
        if info.dtype != safetensors::Dtype::F32 || n != items.len() {
            bail!(bad(format!(
                "`features` is {:?} {:?} for {} items",
                info.dtype,
                info.shape,
                items.len()
            )));
        }
        let pooling: PoolingSet = match meta.get("pooling") {
            Some(p) if format == Some(FORMAT) => p
                .parse()
                .map_err(|e: String| bad(format!("metadata `pooling`: {e}")))?,
            _ => PoolingSet::default(),
        };
        let mut offsets = [None; 3];
        for (k, stat) in Stat::ALL.into_iter().enumerate() {
            if !pooling.contains(stat) {
                continue;
            }
            let name = stat.tensor_name();
            let t = header.tensors().get(name).cloned().ok_or_else(|| {
                bad(format!(
                    "pooling lists {}, tensor `{name}` missing",
                    stat.name()
                ))
            })?;
            if t.dtype != safetensors::Dtype::F32 || t.shape != info.shape {
                bail!(bad(format!(
                    "`{name}` is {:?} {:?}, `features` {:?}",
                    t.dtype, t.shape, info.shape
                )));
            }
            offsets[k] = Some(8 + header_len + t.data_offsets.0);
        }
        Ok(Self {
            path: path.to_path_buf(),
            provenance,
            class_names,
            items,
            skipped,
            padded,
            num_layers,
            dim,
            settings,
            pooling,
            mmap,
            offsets,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the store has no rows.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Labels by row.
    pub fn labels(&self) -> Vec<usize> {
        self.items.iter().map(|it| it.label).collect()
    }

    /// The frame means of stored layer `layer` (`0..num_layers`), `[N, D]` row-major.
    pub fn layer(&self, layer: usize) -> Result<Vec<f32>> {
        self.pooled(layer, Pooling::Mean)
    }

    /// Checks that the store holds what `pooling` reads, with an error saying how to extract it.
    pub fn check_pooling(&self, pooling: Pooling) -> Result<()> {
        for &stat in pooling.stats() {
            if !self.pooling.contains(stat) {
                bail!(
                    "{}: --pooling {pooling} needs the frame {}, the store holds {}; extract \
                     again with --pooling {}",
                    self.path.display(),
                    stat.name(),
                    self.pooling,
                    PoolingSet::new(&[self.pooling.stats(), pooling.stats()].concat())
                );
            }
        }
        Ok(())
    }

    /// The item vectors of stored layer `layer` under `pooling`, `[N, D']` row-major, `D'` =
    /// `D` x the number of statistics (mean and std concatenated per row for `meanstd`). Reads
    /// only that layer's rows from the mapped file.
    pub fn pooled(&self, layer: usize, pooling: Pooling) -> Result<Vec<f32>> {
        if layer >= self.num_layers {
            bail!(
                "{}: stored layer {layer} requested, the store has {}",
                self.path.display(),
                self.num_layers
            );
        }
        self.check_pooling(pooling)?;
        let (l, d) = (self.num_layers, self.dim);
        let sources: Vec<&[u8]> = pooling
            .stats()
            .iter()
            .map(|&s| {
                let k = Stat::ALL.iter().position(|&t| t == s).expect("listed");
                &self.mmap[self.offsets[k].expect("checked above")..]
            })
            .collect();
        let mut out = Vec::with_capacity(self.len() * d * sources.len());
        for row in 0..self.len() {
            let start = ((row * l + layer) * d) * 4;
            for bytes in &sources {
                out.extend(
                    bytes[start..start + d * 4]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
        }
        Ok(out)
    }

    /// The stored-layer position of one layer: `last` (the `last_hidden_state` entry, else the
    /// highest stored hidden-state index) or a hidden-state index `N`; an error naming the
    /// stored layers for anything else (`all` and `weighted` use every stored layer).
    pub fn resolve_layer(&self, choice: LayerChoice) -> Result<usize> {
        let idx = &self.provenance.layer_indices;
        match choice {
            LayerChoice::Last => {
                if let Some(p) = idx.iter().position(|v| *v == StoredLayer::LastHiddenState) {
                    return Ok(p);
                }
                idx.iter()
                    .enumerate()
                    .filter_map(|(p, v)| match v {
                        StoredLayer::HiddenState(i) => Some((*i, p)),
                        StoredLayer::LastHiddenState => None,
                    })
                    .max()
                    .map(|(_, p)| p)
                    .context("the store has no layers")
            }
            LayerChoice::Index(want) => idx
                .iter()
                .position(|v| *v == StoredLayer::HiddenState(want))
                .with_context(|| {
                    format!(
                        "{}: hidden state {want} is not stored (stored: {}); extract with --layers all",
                        self.path.display(),
                        self.provenance.layers
                    )
                }),
            LayerChoice::All | LayerChoice::Weighted => {
                bail!("--layer {choice} uses every stored layer, not one")
            }
        }
    }

    /// sha256 of the file, hex.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&self.mmap[..]);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Everything [`write_store`] writes.
pub struct StoreContents<'a> {
    /// Provenance.
    pub provenance: &'a Provenance,
    /// Class names.
    pub class_names: &'a [String],
    /// One per row.
    pub items: &'a [Item],
    /// `[N * L * D]` frame means.
    pub features: &'a [f32],
    /// `[N * L * D]` population standard deviations over frames, when stored.
    pub features_std: Option<&'a [f32]>,
    /// `[N * L * D]` maxima over frames, when stored.
    pub features_max: Option<&'a [f32]>,
    /// `L`.
    pub num_layers: usize,
    /// `D`.
    pub dim: usize,
    /// Left-out items.
    pub skipped: &'a [Skipped],
    /// Zero-padded items.
    pub padded: &'a [String],
    /// The settings it was made with (recorded with their fingerprint).
    pub settings: Option<&'a Settings>,
}

/// Writes a store atomically.
pub fn write_store(path: &Path, c: &StoreContents<'_>) -> Result<()> {
    let n = c.items.len();
    if c.features.len() != n * c.num_layers * c.dim {
        bail!(
            "internal: {} feature values for {n} items x {} layers x {}",
            c.features.len(),
            c.num_layers,
            c.dim
        );
    }
    let labels: Vec<i64> = c.items.iter().map(|it| it.label as i64).collect();
    let shape = vec![n, c.num_layers, c.dim];
    let mut tensors = vec![(
        "features".to_string(),
        RawTensor::f32(shape.clone(), c.features),
    )];
    let mut extra = Vec::new();
    for (stat, values) in [(Stat::Std, c.features_std), (Stat::Max, c.features_max)] {
        if let Some(values) = values {
            if values.len() != c.features.len() {
                bail!(
                    "internal: {} {} values for {} means",
                    values.len(),
                    stat.name(),
                    c.features.len()
                );
            }
            tensors.push((
                stat.tensor_name().to_string(),
                RawTensor::f32(shape.clone(), values),
            ));
            extra.push(stat);
        }
    }
    tensors.push(("labels".to_string(), RawTensor::i64(vec![n], &labels)));
    write_safetensors(path, &tensors, store_metadata(c)?)
        .with_context(|| format!("cannot write feature store {}", path.display()))
}

/// The metadata of a store; `pooling` lists the statistics `c` carries.
fn store_metadata(c: &StoreContents<'_>) -> Result<HashMap<String, String>> {
    let extra: Vec<Stat> = [(Stat::Std, c.features_std), (Stat::Max, c.features_max)]
        .into_iter()
        .filter_map(|(stat, values)| values.map(|_| stat))
        .collect();
    let pooling = PoolingSet::new(&extra);
    let p = c.provenance;
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("task".to_string(), p.task.clone()),
        ("model".to_string(), p.model.clone()),
        (
            "revision".to_string(),
            p.revision.clone().unwrap_or_default(),
        ),
        ("layers".to_string(), p.layers.clone()),
        (
            "layer_indices".to_string(),
            serde_json::to_string(&p.layer_indices)?,
        ),
        ("pooling".to_string(), pooling.to_string()),
        ("dtype".to_string(), p.dtype.clone()),
        (
            "class_names".to_string(),
            serde_json::to_string(c.class_names)?,
        ),
        ("items".to_string(), serde_json::to_string(c.items)?),
        ("skipped".to_string(), serde_json::to_string(c.skipped)?),
        ("padded".to_string(), serde_json::to_string(c.padded)?),
    ]);
    for (key, value) in [("slug", &p.slug), ("family", &p.family)] {
        if let Some(v) = value {
            meta.insert(key.to_string(), v.clone());
        }
    }
    if let Some(settings) = c.settings {
        meta.insert("device".to_string(), settings.device.clone());
        meta.insert("settings".to_string(), serde_json::to_string(settings)?);
        meta.insert("fingerprint".to_string(), settings.fingerprint());
    }
    Ok(meta)
}

/// Writes a store like [`write_store`], byte for byte, but with the features given block by
/// block in row order by `next_block` (`None` when there are no more), so that memory holds one
/// block at a time, not the whole store: how chunks are assembled. `c.features` must be empty.
/// Written to a temporary file beside `path` and renamed into place; removed on any error.
pub fn write_store_blocks(
    path: &Path,
    c: &StoreContents<'_>,
    next_block: &mut dyn FnMut() -> Result<Option<Vec<f32>>>,
) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    if !c.features.is_empty() || c.features_std.is_some() || c.features_max.is_some() {
        bail!("internal: write_store_blocks takes the mean from the blocks and no other statistic");
    }
    let n = c.items.len();
    let values = n * c.num_layers * c.dim;
    let feature_bytes = values * 4;
    // The header exactly as `artifacts::serialize_safetensors` lays it out: sorted keys,
    // sorted metadata, padded with spaces to a multiple of 8.
    let meta: std::collections::BTreeMap<String, String> = store_metadata(c)?.into_iter().collect();
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(meta)?);
    header.insert(
        "features".into(),
        serde_json::json!({
            "dtype": "F32",
            "shape": [n, c.num_layers, c.dim],
            "data_offsets": [0, feature_bytes],
        }),
    );
    header.insert(
        "labels".into(),
        serde_json::json!({
            "dtype": "I64",
            "shape": [n],
            "data_offsets": [feature_bytes, feature_bytes + 8 * n],
        }),
    );
    let mut json = serde_json::to_vec(&header)?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }

    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let mut write = || -> Result<()> {
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&(json.len() as u64).to_le_bytes())?;
        out.write_all(&json)?;
        let mut written = 0usize;
        let mut bytes = Vec::new();
        while let Some(block) = next_block()? {
            written += block.len();
            if written > values {
                bail!(
                    "internal: more feature values than {n} items x {} layers x {}",
                    c.num_layers,
                    c.dim
                );
            }
            bytes.clear();
            bytes.extend(block.iter().flat_map(|v| v.to_le_bytes()));
            out.write_all(&bytes)?;
        }
        if written != values {
            bail!(
                "internal: {written} feature values for {n} items x {} layers x {}",
                c.num_layers,
                c.dim
            );
        }
        for it in c.items {
            out.write_all(&(it.label as i64).to_le_bytes())?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.context(format!("cannot write feature store {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Partition;

    #[test]
    fn stores_written_in_blocks_equal_stores_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<Item> = (0..5)
            .map(|i| Item {
                path: format!("a/{i}.wav"),
                label: i % 2,
                split: Partition::Fold(1),
                group: None,
                segment: None,
            })
            .collect();
        let features: Vec<f32> = (0..5 * 2 * 3).map(|v| v as f32 * 0.25 - 1.0).collect();
        let provenance = Provenance {
            task: "t".into(),
            model: "m".into(),
            revision: None,
            layers: "all".into(),
            layer_indices: vec![StoredLayer::HiddenState(0), StoredLayer::HiddenState(1)],
            dtype: "f32".into(),
            slug: Some("m".into()),
            family: Some("wavlm".into()),
        };
        let names = ["x".to_string(), "y".to_string()];
        let contents = |features| StoreContents {
            provenance: &provenance,
            class_names: &names,
            items: &items,
            features,
            features_std: None,
            features_max: None,
            num_layers: 2,
            dim: 3,
            skipped: &[],
            padded: &[],
            settings: None,
        };
        let whole = dir.path().join("whole.safetensors");
        write_store(&whole, &contents(&features)).unwrap();
        let blocks = dir.path().join("blocks.safetensors");
        let mut rest = features.chunks(12).map(<[f32]>::to_vec);
        write_store_blocks(&blocks, &contents(&[]), &mut || Ok(rest.next())).unwrap();
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(&blocks).unwrap()
        );
        let opened = FeatureStore::open(&blocks).unwrap();
        assert_eq!(opened.layer(1).unwrap()[..3], features[3..6]);
        assert_eq!(opened.provenance, provenance, "slug and family read back");

        // Too few values: an error, and nothing left behind.
        let short = dir.path().join("short.safetensors");
        let mut once = Some(features[..6].to_vec());
        let err = write_store_blocks(&short, &contents(&[]), &mut || Ok(once.take()));
        assert!(err.is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "only the two complete stores");
    }
}
