//! Probe checkpoints: safetensors with PyTorch `state_dict` key names and a JSON metadata block.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use artifacts::{write_safetensors, RawTensor};
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::model::{Dense, LinearClassifier, Probe, ProbeKind, ThreeLayerClassifier};
use crate::train::TrainConfig;
use crate::{ProbeError, Result};

/// Value of the `format` metadata key.
pub const FORMAT: &str = "hubert-probe.probe";
/// Version of the checkpoint layout.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON stored under the `probe` metadata key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Architecture (`{"kind": "linear"}` or `{"kind": "three_layer", "hidden": 256}`).
    #[serde(flatten)]
    pub kind: ProbeKind,
    /// Input feature width.
    pub in_dim: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// Class names in index order (may be empty when unknown).
    pub class_names: Vec<String>,
    /// Hyper-parameters the probe was trained with, if known.
    pub hyperparameters: Option<TrainConfig>,
    /// Best validation epoch whose weights were kept, if any.
    pub best_epoch: Option<usize>,
}

/// A probe with everything needed to use it later: class names and training provenance.
///
/// Tensors use PyTorch's `state_dict` names and `[out, in]` layout (`fc.weight`, `fc.bias` for
/// the linear probe; `net.0.*`, `net.2.*`, `net.4.*` for `nn.Sequential(Linear, ReLU, Linear,
/// ReLU, Linear)`), so `model.load_state_dict(safetensors.torch.load_file(path))` works in
/// Python; metadata keys are `format`, `format_version` and `probe` (JSON
/// [`CheckpointMetadata`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The probe.
    pub probe: Probe,
    /// Class names in index order (empty when unknown; otherwise one per class).
    pub class_names: Vec<String>,
    /// Hyper-parameters used for training, if known.
    pub hyperparameters: Option<TrainConfig>,
    /// Best validation epoch, if any.
    pub best_epoch: Option<usize>,
}

fn tensor_names(kind: ProbeKind) -> &'static [&'static str] {
    match kind {
        ProbeKind::Linear => &["fc"],
        ProbeKind::ThreeLayer { .. } => &["net.0", "net.2", "net.4"],
    }
}

impl Checkpoint {
    /// Wraps a probe without names or provenance.
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            class_names: Vec::new(),
            hyperparameters: None,
            best_epoch: None,
        }
    }

    /// The metadata block as it will be written.
    pub fn metadata(&self) -> CheckpointMetadata {
        CheckpointMetadata {
            kind: self.probe.kind(),
            in_dim: self.probe.in_dim(),
            n_classes: self.probe.n_classes(),
            class_names: self.class_names.clone(),
            hyperparameters: self.hyperparameters.clone(),
            best_epoch: self.best_epoch,
        }
    }

    /// Writes the checkpoint atomically (temporary file, then rename). Errors when
    /// `class_names` is neither empty nor one per class.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let err = |reason: String| ProbeError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if !self.class_names.is_empty() && self.class_names.len() != self.probe.n_classes() {
            return Err(err(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.probe.n_classes()
            )));
        }
        let mut tensors = Vec::new();
        for (layer, prefix) in self
            .probe
            .layers()
            .iter()
            .zip(tensor_names(self.probe.kind()))
        {
            tensors.push((
                format!("{prefix}.weight"),
                RawTensor::f32(vec![layer.out_dim, layer.in_dim], &layer.weight),
            ));
            tensors.push((
                format!("{prefix}.bias"),
                RawTensor::f32(vec![layer.out_dim], &layer.bias),
            ));
        }
        let meta_json = serde_json::to_string(&self.metadata()).map_err(|e| err(e.to_string()))?;
        let metadata: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            ("probe".to_string(), meta_json),
        ]
        .into_iter()
        .collect();
        write_safetensors(path, &tensors, metadata).map_err(|e| match e {
            artifacts::Error::Io { path, source } => ProbeError::Io { path, source },
            artifacts::Error::Encode { msg, .. } => err(msg),
        })
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]; the architecture, dimensions and class
    /// names come from the file. A missing file is [`ProbeError::Io`]; a truncated, corrupt,
    /// foreign or inconsistent file is [`ProbeError::Checkpoint`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| ProbeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&data, path)
    }

    fn from_bytes(data: &[u8], path: &Path) -> Result<Self> {
        let err = |reason: String| ProbeError::Checkpoint {
            path: PathBuf::from(path),
            reason,
        };
        let (_, header) = SafeTensors::read_metadata(data).map_err(|e| err(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(err(format!(
                "metadata key `format` is {:?}, expected {FORMAT:?}",
                metadata.get("format")
            )));
        }
        let meta_json = metadata
            .get("probe")
            .ok_or_else(|| err("missing `probe` metadata".into()))?;
        let meta: CheckpointMetadata =
            serde_json::from_str(meta_json).map_err(|e| err(format!("`probe` metadata: {e}")))?;
        let tensors = SafeTensors::deserialize(data).map_err(|e| err(e.to_string()))?;
        let dims: Vec<(usize, usize)> = match meta.kind {
            ProbeKind::Linear => vec![(meta.in_dim, meta.n_classes)],
            ProbeKind::ThreeLayer { hidden } => vec![
                (meta.in_dim, hidden),
                (hidden, hidden),
                (hidden, meta.n_classes),
            ],
        };
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = tensors
                .tensor(name)
                .map_err(|e| err(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(err(format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(err(format!("tensor `{name}` holds a non-finite value")));
            }
            Ok(values)
        };
        let mut layers = Vec::with_capacity(dims.len());
        for (&(i, o), prefix) in dims.iter().zip(tensor_names(meta.kind)) {
            if i == 0 || o == 0 {
                return Err(err(format!("layer `{prefix}` has a zero dimension")));
            }
            let w = read(&format!("{prefix}.weight"), &[o, i])?;
            let b = read(&format!("{prefix}.bias"), &[o])?;
            layers.push(Dense::from_parts(i, o, w, b)?);
        }
        let probe = match meta.kind {
            ProbeKind::Linear => Probe::Linear(LinearClassifier {
                fc: layers.pop().expect("one layer"),
            }),
            ProbeKind::ThreeLayer { .. } => {
                let layers: [Dense; 3] = layers.try_into().expect("three layers");
                Probe::ThreeLayer(ThreeLayerClassifier { layers })
            }
        };
        if !meta.class_names.is_empty() && meta.class_names.len() != meta.n_classes {
            return Err(err(format!(
                "{} class names for {} classes",
                meta.class_names.len(),
                meta.n_classes
            )));
        }
        Ok(Self {
            probe,
            class_names: meta.class_names,
            hyperparameters: meta.hyperparameters,
            best_epoch: meta.best_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_kinds() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [ProbeKind::Linear, ProbeKind::ThreeLayer { hidden: 7 }] {
            let ck = Checkpoint {
                probe: Probe::new(kind, 5, 3, 9),
                class_names: vec!["dog".into(), "rain".into(), "siren".into()],
                hyperparameters: Some(TrainConfig::default()),
                best_epoch: Some(4),
            };
            let path = dir.path().join(format!("{}.safetensors", kind.name()));
            ck.save(&path).unwrap();
            assert_eq!(Checkpoint::load(&path).unwrap(), ck);
        }
    }

    #[test]
    fn wrong_class_name_count_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut ck = Checkpoint::new(Probe::new(ProbeKind::Linear, 2, 2, 0));
        ck.class_names = vec!["only one".into()];
        assert!(ck.save(dir.path().join("x.safetensors")).is_err());
    }
}
