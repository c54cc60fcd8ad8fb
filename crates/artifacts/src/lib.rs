//! Everything the tools write goes through here: [`atomic_write`] (a temporary sibling file,
//! synced, then renamed over the target, so a reader or a resumed run never sees half a file, and
//! the temporary is removed on every failure), and [`write_safetensors`] (named tensors plus
//! string metadata, byte-for-byte deterministic). Feature stores, `hubert embed` outputs, saved
//! probes, scalers, results.json and reports use them; the safetensors files open in Python with
//! `safetensors.safe_open` / `safetensors.numpy.load_file`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use safetensors::tensor::Dtype;

/// Why a write failed: the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating, writing, syncing or renaming failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The tensors do not make a valid safetensors file.
    #[error("cannot write {path}: {msg}")]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, Error>;

/// One tensor to write: little-endian bytes with their dtype and shape.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes, `shape.product() * size_of(dtype)` of them.
    pub bytes: Vec<u8>,
}

impl RawTensor {
    /// An f32 tensor.
    pub fn f32(shape: Vec<usize>, data: &[f32]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// An f64 tensor.
    pub fn f64(shape: Vec<usize>, data: &[f64]) -> Self {
        Self {
            dtype: Dtype::F64,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// An i64 tensor.
    pub fn i64(shape: Vec<usize>, data: &[i64]) -> Self {
        Self {
            dtype: Dtype::I64,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// Writes `tensors` and `metadata` to `path` atomically (temporary file + rename).
///
/// The file is byte-for-byte deterministic: metadata keys are sorted and tensors are laid out
/// in the given order (safetensors' own serializer emits metadata in hash-map order, which
/// differs between processes; resumable extraction relies on identical bytes).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, RawTensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes = serialize_safetensors(tensors, &metadata).map_err(|msg| Error::Encode {
        path: path.to_path_buf(),
        msg,
    })?;
    atomic_write(path, &bytes)
}

/// The safetensors encoding of `tensors` with sorted `metadata`: an 8-byte little-endian header
/// length, the JSON header (padded with spaces to a multiple of 8), then the tensor bytes.
pub fn serialize_safetensors(
    tensors: &[(String, RawTensor)],
    metadata: &HashMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let mut header = serde_json::Map::new();
    let sorted: std::collections::BTreeMap<&String, &String> = metadata.iter().collect();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(sorted).map_err(|e| e.to_string())?,
    );
    let mut offset = 0usize;
    for (name, t) in tensors {
        let elems: usize = t.shape.iter().product();
        let expected = elems * t.dtype.bitsize() / 8;
        if t.bytes.len() != expected {
            return Err(format!(
                "tensor `{name}`: {} bytes for shape {:?} of {:?} ({expected} expected)",
                t.bytes.len(),
                t.shape,
                t.dtype
            ));
        }
        if name == "__metadata__" || header.contains_key(name) {
            return Err(format!("tensor name `{name}` is reserved or repeated"));
        }
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": format!("{:?}", t.dtype),
                "shape": t.shape,
                "data_offsets": [offset, offset + t.bytes.len()],
            }),
        );
        offset += t.bytes.len();
    }
    // serde_json's Map keeps insertion order only with `preserve_order`; without it keys are
    // sorted, which is deterministic too.
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, t) in tensors {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err)?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/f.safetensors");
        let tensors = vec![
            (
                "a".to_string(),
                RawTensor::f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]),
            ),
            ("b".to_string(), RawTensor::i64(vec![3], &[7, -1, 0])),
        ];
        let meta = HashMap::from([("task".to_string(), "esc50".to_string())]);
        write_safetensors(&path, &tensors, meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["task"], "esc50");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("a").unwrap().shape(), &[2, 2]);
        assert_eq!(st.tensor("b").unwrap().dtype(), Dtype::I64);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn output_is_deterministic_whatever_the_map_order() {
        let tensors = vec![("x".to_string(), RawTensor::f32(vec![1], &[1.0]))];
        let keys = ["b", "a", "zz", "m", "c", "q", "e"];
        let first: HashMap<String, String> =
            keys.iter().map(|k| (k.to_string(), k.repeat(3))).collect();
        let second: HashMap<String, String> = keys
            .iter()
            .rev()
            .map(|k| (k.to_string(), k.repeat(3)))
            .collect();
        assert_eq!(
            serialize_safetensors(&tensors, &first).unwrap(),
            serialize_safetensors(&tensors, &second).unwrap()
        );
        let bad = vec![(
            "x".to_string(),
            RawTensor {
                dtype: Dtype::F32,
                shape: vec![2],
                bytes: vec![0; 4],
            },
        )];
        assert!(serialize_safetensors(&bad, &first).is_err());
    }
}
