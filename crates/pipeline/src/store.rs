//! The feature store: `features/<task>_features_hubert.safetensors`, readable from Python with
//! `safetensors`:
//!
//! - `features` `[N, L, D]` f32: the frame mean of each stored hidden state of each item;
//! - `features_std` `[N, L, D]` f32 (with `extract --pooling ...,std`): the population standard
//!   deviation over frames;
//! - `features_max` `[N, L, D]` f32 (with `extract --pooling ...,max`): the maximum over frames;
//! - `labels` `[N]` i64;
//! - metadata (all values are strings; JSON where structured): `format`, `task`, `model`,
//!   `revision`, `layers`, `layer_indices`, `pooling` (the statistics stored, e.g. `mean` or
//!   `mean,std,max`), `dtype`, `class_names`, `items` (path, label, split, group, segment per
//!   row), `skipped`, `padded`.
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
        };
        let class_names: Vec<String> = serde_json::from_value(json("class_names")?)?;
        let items: Vec<Item> = serde_json::from_value(json("items")?)?;
        let skipped: Vec<Skipped> = serde_json::from_value(json("skipped")?)?;
        let padded: Vec<String> = serde_json::from_value(json("padded")?)?;
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
    let pooling = PoolingSet::new(&extra);
    let p = c.provenance;
    let meta = HashMap::from([
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
    write_safetensors(path, &tensors, meta)
        .with_context(|| format!("cannot write feature store {}", path.display()))
}

/// FNV-1a, 64-bit: a stable fingerprint (std's hasher may change between Rust releases).
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}
