//! Checkpoint loading: `model.safetensors` or `pytorch_model.bin`, with or without a task-head
//! or pre-training prefix (`hubert.`, `wav2vec2.`, `wavlm.`, `data2vec_audio.`), weight norm
//! stored as legacy `weight_g`/`weight_v` or as `parametrizations.weight.original0/1`. Weight
//! norm is folded into a plain `weight` at load time, exactly as `torch._weight_norm` computes
//! it.
//!
//! The store records which tensors the model took: after loading, anything left over that is
//! neither training-only ([`TRAINING_ONLY`]) nor a fine-tuned head ([`HEADS`], ignored with a
//! note) is an error naming it, so a checkpoint of another architecture never loads silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Prefixes that task-head and pre-training checkpoints (`HubertForCTC`,
/// `Wav2Vec2ForPreTraining`, `WavLMForXVector`, ...) put in front of the base model's keys.
const PREFIXES: [&str; 4] = ["hubert.", "wav2vec2.", "wavlm.", "data2vec_audio."];

/// Top-level modules that only pre-training uses (masking vector, quantizer, prediction
/// heads): left in a checkpoint, they are skipped without a word.
pub const TRAINING_ONLY: [&str; 6] = [
    "masked_spec_embed",
    "quantizer",
    "project_q",
    "project_hid",
    "label_embs_concat",
    "final_proj",
];

/// Top-level modules of fine-tuned task heads: skipped with a note (their checkpoints still
/// hold a pre-trained encoder whose features users extract).
pub const HEADS: [&str; 4] = ["projector", "classifier", "layer_weights", "lm_head"];

/// All tensors of a checkpoint, keyed by their base-model names, with weight norm folded.
pub struct Weights {
    tensors: Mutex<HashMap<String, Tensor>>,
    /// Names handed out by [`Weights::get`], with their element counts.
    used: Mutex<HashMap<String, usize>>,
    /// Keys outside the base model's prefix (when the checkpoint has one).
    foreign: Vec<String>,
    path: PathBuf,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("tensors", &self.len())
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl Weights {
    /// Reads a checkpoint. `.safetensors` files are memory-mapped; anything else is read as a
    /// PyTorch zip pickle (`pytorch_model.bin`). Tensors end up on `device` in `dtype`.
    pub fn from_file(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let raw: Vec<(String, Tensor)> = if is_safetensors {
            read_safetensors(path)?
        } else {
            crate::pickle::read_checkpoint(path)?
        };
        Self::from_tensors(raw, path, device, dtype)
    }

    /// Builds the store from named tensors (as found in a checkpoint) already in memory.
    pub fn from_tensors(
        raw: Vec<(String, Tensor)>,
        path: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let prefix = PREFIXES
            .iter()
            .find(|p| raw.iter().any(|(k, _)| k.starts_with(*p)))
            .copied();
        let mut tensors = HashMap::with_capacity(raw.len());
        let mut foreign = Vec::new();
        for (name, tensor) in raw {
            let name = match prefix {
                Some(p) => match name.strip_prefix(p) {
                    Some(rest) => rest.to_string(),
                    // Keys outside the base model (lm_head, quantizer, ...): checked by
                    // `check_leftovers`.
                    None => {
                        foreign.push(name);
                        continue;
                    }
                },
                None => name,
            };
            tensors.insert(name, tensor);
        }
        let mut weights = Self {
            tensors: Mutex::new(tensors),
            used: Mutex::new(HashMap::new()),
            foreign,
            path: path.to_path_buf(),
            device: device.clone(),
            dtype,
        };
        weights.fold_weight_norm()?;
        Ok(weights)
    }

    /// The same tensors, handed out in `dtype` (tensors are shared, not copied).
    pub(crate) fn with_dtype(&self, dtype: DType) -> Self {
        Self {
            tensors: Mutex::new(self.map().clone()),
            used: Mutex::new(HashMap::new()),
            foreign: self.foreign.clone(),
            path: self.path.clone(),
            device: self.device.clone(),
            dtype,
        }
    }

    /// Hands tensors out in `dtype` from now on.
    pub(crate) fn set_dtype(&mut self, dtype: DType) {
        self.dtype = dtype;
    }

    /// Drops the store's reference to `name` (once its values are copied into packed form), so
    /// a model does not hold two copies of its weights while it loads.
    pub(crate) fn release(&self, name: &str) {
        self.map().remove(name);
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tensor>> {
        // A panic while the lock was held left the map itself consistent.
        self.tensors.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn used(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of elements over the tensors the model took (its parameter count, each
    /// weight-norm pair counted as the one weight it folds into).
    pub fn used_elem_count(&self) -> usize {
        self.used().values().sum()
    }

    /// Checks that every tensor left after loading is training-only ([`TRAINING_ONLY`],
    /// skipped) or a fine-tuned head ([`HEADS`], skipped with a note); anything else is an error
    /// naming it (a checkpoint of another architecture, or a config that does not match it).
    pub fn check_leftovers(&self) -> Result<()> {
        let used = self.used();
        let mut left: Vec<String> = self
            .map()
            .keys()
            .filter(|k| !used.contains_key(*k))
            .cloned()
            .chain(self.foreign.iter().cloned())
            .collect();
        left.sort();
        let top = |k: &str| k.split('.').next().unwrap_or(k).to_string();
        let mut heads = Vec::new();
        let mut unknown = Vec::new();
        for k in left {
            let t = top(&k);
            if TRAINING_ONLY.contains(&t.as_str()) || k.ends_with(".num_batches_tracked") {
                continue;
            }
            if HEADS.contains(&t.as_str()) {
                if !heads.contains(&t) {
                    heads.push(t);
                }
                continue;
            }
            unknown.push(k);
        }
        if !heads.is_empty() {
            tracing::info!(
                "{}: ignoring the fine-tuned head(s) {} (the encoder's features are extracted)",
                self.path.display(),
                heads.join(", ")
            );
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unknown.iter().take(8).map(String::as_str).collect();
        let more = unknown.len().saturating_sub(shown.len());
        Err(Error::UnusedTensors {
            path: self.path.clone(),
            names: format!(
                "`{}`{}",
                shown.join("`, `"),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
        })
    }

    /// The checkpoint file these weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tensors (after folding weight norm).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether the checkpoint held no base-model tensor.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Total number of elements over all tensors.
    pub fn elem_count(&self) -> usize {
        self.map().values().map(|t| t.elem_count()).sum()
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.map().contains_key(name)
    }

    /// Replaces each weight-norm pair by the weight it parametrises:
    /// `weight = g * v / ||v||`, the norm taken over every dim but the one `g` keeps.
    fn fold_weight_norm(&mut self) -> Result<()> {
        let path = self.path.clone();
        let tensors = self.tensors.get_mut().unwrap_or_else(|e| e.into_inner());
        let pairs = [
            (".weight_g", ".weight_v"),
            (
                ".parametrizations.weight.original0",
                ".parametrizations.weight.original1",
            ),
        ];
        for (g_suffix, v_suffix) in pairs {
            let bases: Vec<String> = tensors
                .keys()
                .filter_map(|k| k.strip_suffix(g_suffix).map(str::to_string))
                .collect();
            for base in bases {
                let g_name = format!("{base}{g_suffix}");
                let v_name = format!("{base}{v_suffix}");
                let g = tensors.remove(&g_name).expect("key listed above");
                let Some(v) = tensors.remove(&v_name) else {
                    return Err(Error::MissingTensor {
                        path: path.clone(),
                        name: v_name,
                        hint: format!(" (weight norm: `{g_name}` is present without it)"),
                    });
                };
                let weight = weight_norm(&g, &v).map_err(|e| Error::Checkpoint {
                    path: path.clone(),
                    msg: format!("cannot fold weight norm of `{base}`: {e}"),
                })?;
                tensors.insert(format!("{base}.weight"), weight);
            }
        }
        Ok(())
    }

    /// Takes the tensor `name` with the `expected` shape, moved to the model's device and dtype.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<Tensor> {
        self.get_with_hint(name, expected, "")
    }

    /// Like [`Weights::get`], with a hint appended to the missing-tensor error.
    pub fn get_with_hint(&self, name: &str, expected: &[usize], hint: &str) -> Result<Tensor> {
        let tensor = self
            .map()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                hint: hint.to_string(),
            })?;
        if tensor.dims() != expected {
            return Err(Error::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        self.used().insert(name.to_string(), tensor.elem_count());
        Ok(tensor.to_dtype(self.dtype)?.to_device(&self.device)?)
    }
}

/// The largest safetensors JSON header read (bytes).
pub const MAX_SAFETENSORS_HEADER: u64 = 16 << 20;

/// Reads every tensor of a `.safetensors` file through a memory map, copying each out and then
/// dropping its pages from this process (`MADV_DONTNEED`; the page cache keeps them), so that
/// loading holds one copy of the weights in memory instead of the mapped file plus the copies.
fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let ckpt_err = Error::checkpoint(path);
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    // SAFETY: the file is only read; like every mmap-based loader we assume it is not truncated
    // by another process while the model loads.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))?;
    // The header's size is checked before the parser reads it (hubert-xlarge's is ~60 KB).
    let header_len = mmap
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| ckpt_err("shorter than a safetensors header".into()))?;
    if header_len > MAX_SAFETENSORS_HEADER {
        return Err(ckpt_err(format!(
            "safetensors header of {header_len} bytes is larger than the {MAX_SAFETENSORS_HEADER} \
             this reader accepts"
        )));
    }
    let st = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| ckpt_err(e.to_string()))?;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::U32 => DType::U32,
            safetensors::Dtype::U8 => DType::U8,
            other => {
                return Err(ckpt_err(format!(
                    "tensor `{name}` has unsupported dtype {other:?}"
                )))
            }
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| ckpt_err(format!("tensor `{name}`: {e}")))?;
        release_pages(view.data());
        out.push((name, tensor));
    }
    Ok(out)
}

/// Drops the whole pages inside `data` (a slice of a read-only file mapping) from this
/// process's resident set; later reads fault them back in from the page cache.
fn release_pages(data: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let start = (data.as_ptr() as usize).div_ceil(page) * page;
        let end = (data.as_ptr() as usize + data.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside a private read-only file mapping that stays
            // mapped; MADV_DONTNEED on it only drops pages, which reads fault back in from the
            // file unchanged.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = data;
}

/// `torch._weight_norm(v, g, dim)` where `g` has size 1 on every dim except `dim`.
fn weight_norm(g: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let g = g.to_dtype(DType::F32)?;
    let v = v.to_dtype(DType::F32)?;
    if g.rank() != v.rank() {
        candle_core::bail!("weight_g has shape {:?}, weight_v {:?}", g.dims(), v.dims());
    }
    let mut norm = v.sqr()?;
    for (d, (&gd, &vd)) in g.dims().iter().zip(v.dims()).enumerate() {
        if gd == 1 && vd != 1 {
            norm = norm.sum_keepdim(d)?;
        } else if gd != vd {
            candle_core::bail!("weight_g has shape {:?}, weight_v {:?}", g.dims(), v.dims());
        }
    }
    let scale = g.broadcast_div(&norm.sqrt()?)?;
    v.broadcast_mul(&scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_norm_over_dim_2() -> anyhow::Result<()> {
        let v = Tensor::arange(1f32, 13., &Device::Cpu)?.reshape((2, 3, 2))?;
        let g = Tensor::new(&[[[2f32, 3.]]], &Device::Cpu)?;
        let w = weight_norm(&g, &v)?;
        let v3: Vec<Vec<Vec<f32>>> = v.to_vec3()?;
        let w3: Vec<Vec<Vec<f32>>> = w.to_vec3()?;
        for k in 0..2 {
            let norm: f32 = v3
                .iter()
                .flat_map(|r| r.iter().map(move |c| c[k] * c[k]))
                .sum::<f32>()
                .sqrt();
            let gk = [2f32, 3.][k];
            for o in 0..2 {
                for i in 0..3 {
                    assert!((w3[o][i][k] - gk * v3[o][i][k] / norm).abs() < 1e-6);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn prefix_is_stripped_and_foreign_keys_dropped() -> anyhow::Result<()> {
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu)?;
        let raw = vec![
            ("hubert.encoder.layer_norm.bias".to_string(), t.clone()),
            ("lm_head.bias".to_string(), t.clone()),
        ];
        let w = Weights::from_tensors(raw, Path::new("x.bin"), &Device::Cpu, DType::F32)?;
        assert!(w.contains("encoder.layer_norm.bias"));
        assert_eq!(w.len(), 1);
        let err = w
            .get("encoder.layer_norm.bias", &[3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape [2]") && err.contains("[3]"), "{err}");
        let err = w
            .get("encoder.layer_norm.weight", &[2])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing tensor `encoder.layer_norm.weight`"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn weight_norm_half_pair_is_an_error() -> anyhow::Result<()> {
        let t = Tensor::zeros((1, 1, 4), DType::F32, &Device::Cpu)?;
        let raw = vec![("encoder.pos_conv_embed.conv.weight_g".to_string(), t)];
        let err = Weights::from_tensors(raw, Path::new("m.bin"), &Device::Cpu, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight_v"), "{err}");
        Ok(())
    }
}
