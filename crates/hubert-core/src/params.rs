//! Typed run parameters, parsed once where a user gives them (a command line, a Python call)
//! and carried as types from then on: where the model runs ([`DeviceSpec`]), in which precision
//! ([`Precision`]), and which hidden states to keep ([`crate::LayerSelection`]).
//!
//! Each type parses every spelling users write (`bfloat16`, `bf16`; `cuda`, `cuda:0`) and
//! displays one canonical name, which is what fingerprints and metadata record: re-running with
//! another spelling of the same setting never invalidates finished work.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::{Error, Result};

/// Where the model runs: `cpu`, or a CUDA device `cuda:N` (`cuda` alone means `cuda:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// The CPU (own AVX-512 / AVX2 kernels where the CPU has them).
    #[default]
    Cpu,
    /// CUDA device with this ordinal (needs a build with the `cuda` feature).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        match spec.trim() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            s => match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map(Self::Cuda).map_err(|_| {
                    Error::Device(format!("invalid CUDA device {s:?}: expected cuda:N"))
                }),
                None => Err(Error::Device(format!(
                    "unknown device {s:?}: expected cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    /// The canonical name: `cpu` or `cuda:N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Checks that this binary can use the device at all (CUDA needs the `cuda` feature), without
    /// opening it: called where parameters are parsed, so a bad `--device` fails before any
    /// work, even when nothing needs the model.
    pub fn check_supported(self) -> Result<()> {
        match self {
            Self::Cpu => Ok(()),
            Self::Cuda(n) => {
                if cfg!(feature = "cuda") {
                    Ok(())
                } else {
                    Err(Error::Device(format!(
                        "cuda:{n} requested, but this binary was built without CUDA support; \
                         rebuild with `cargo build --release --features cuda`"
                    )))
                }
            }
        }
    }

    /// Opens the device.
    pub fn open(self) -> Result<Device> {
        self.check_supported()?;
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => open_cuda(n),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| Error::Device(format!("cannot open cuda:{ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Err(Error::Device(format!(
        "cuda:{ordinal}: this binary was built without CUDA support"
    )))
}

/// The precision the model computes in. Features are always returned and stored as f32.
///
/// On the CPU, `bf16` rounds the operands of every matrix product to bf16 and accumulates in
/// f32 (everything else, hidden states included, stays f32), and runs as f32 on CPUs without
/// AVX512_BF16; `f16` takes candle's generic path. On a GPU the weights and activations are
/// held in the precision itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit float (`f32`, `fp32`, `float32`): the exact reference.
    #[default]
    F32,
    /// IEEE half (`f16`, `fp16`, `float16`).
    F16,
    /// bfloat16 (`bf16`, `bfloat16`).
    Bf16,
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        match spec.trim() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(Error::Device(format!(
                "unknown dtype {other:?}: expected f32, f16 or bf16"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    /// The canonical name: `f32`, `f16` or `bf16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
    }
}

impl Precision {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// One stored hidden state, as feature stores and `hubert embed` record it: `last_hidden_state`
/// (the model's output: for pre-LN models, after the final LayerNorm) or a hidden-state index
/// (`0` = the encoder input, `i` = the output of layer `i`). Serialised as the JSON string
/// `"last_hidden_state"` or the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredLayer {
    /// `last_hidden_state`.
    LastHiddenState,
    /// `hidden_states[i]`.
    HiddenState(usize),
}

impl fmt::Display for StoredLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LastHiddenState => f.write_str("last_hidden_state"),
            Self::HiddenState(i) => write!(f, "{i}"),
        }
    }
}

impl serde::Serialize for StoredLayer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::LastHiddenState => s.serialize_str("last_hidden_state"),
            Self::HiddenState(i) => s.serialize_u64(*i as u64),
        }
    }
}

impl<'de> serde::Deserialize<'de> for StoredLayer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) if s == "last_hidden_state" => Ok(Self::LastHiddenState),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .map(Self::HiddenState)
                .ok_or_else(|| serde::de::Error::custom(format!("bad hidden-state index {n}"))),
            other => Err(serde::de::Error::custom(format!(
                "expected \"last_hidden_state\" or a hidden-state index, got {other}"
            ))),
        }
    }
}

impl crate::LayerSelection {
    /// Checks the selection against a model with `num_hidden_layers` layers: indices must lie in
    /// `0..=num_hidden_layers`, and an explicit list must be non-empty and without repeats.
    pub fn validate(&self, num_hidden_layers: usize) -> Result<()> {
        if let Self::Indices(v) = self {
            if v.is_empty() {
                return Err(Error::Config(
                    "--layers: no hidden-state index given".into(),
                ));
            }
            if let Some(bad) = v.iter().find(|&&i| i > num_hidden_layers) {
                return Err(Error::Config(format!(
                    "--layers: hidden-state index {bad} out of range: the model has {} \
                     hidden states (0..={num_hidden_layers})",
                    num_hidden_layers + 1
                )));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = v.iter().find(|i| !seen.insert(**i)) {
                return Err(Error::Config(format!(
                    "--layers: hidden-state index {dup} given twice"
                )));
            }
        }
        Ok(())
    }

    /// The stored layers of this selection for a model with `num_hidden_layers` layers, in
    /// storage order.
    pub fn stored_layers(&self, num_hidden_layers: usize) -> Vec<StoredLayer> {
        match self {
            Self::Last => vec![StoredLayer::LastHiddenState],
            Self::All => (0..=num_hidden_layers)
                .map(StoredLayer::HiddenState)
                .collect(),
            Self::Indices(v) => v.iter().map(|&i| StoredLayer::HiddenState(i)).collect(),
        }
    }
}

/// The model flags every binary shares (`hubert embed`, `hubert info`, each task's `extract` and
/// `run`): which checkpoint, where it runs and in which precision, parsed into types by clap.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Model directory (config.json + model.safetensors or pytorch_model.bin) or hub id
    /// (`owner/name[@revision]`; HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE are respected).
    #[arg(long, default_value = "facebook/hubert-base-ls960")]
    pub model: String,
    /// Device: cpu, cuda or cuda:N (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu", value_parser = parse_arg::<DeviceSpec>)]
    pub device: DeviceSpec,
    /// Model dtype: f32, f16 or bf16 (features are always stored as f32; on the CPU bf16 rounds
    /// the matrix-product operands only, and runs as f32 without AVX512_BF16).
    #[arg(long, default_value = "f32", value_parser = parse_arg::<Precision>)]
    pub dtype: Precision,
}

#[cfg(feature = "cli")]
impl ModelArgs {
    /// Checks what can be checked without loading anything (the device is usable by this
    /// binary). Called before any work starts.
    pub fn check(&self) -> Result<()> {
        self.device.check_supported()
    }

    /// Resolves the checkpoint's files and reads its configuration (once).
    pub fn source(&self) -> Result<crate::ModelSource> {
        crate::ModelSource::resolve(&self.model)
    }
}

/// A clap value parser from [`FromStr`] whose error is a [`crate::Error`].
#[cfg(feature = "cli")]
pub fn parse_arg<T: FromStr<Err = Error>>(s: &str) -> std::result::Result<T, String> {
    s.parse::<T>().map_err(|e| match e {
        Error::Device(msg) => msg,
        other => other.to_string(),
    })
}

/// A clap value parser for a whole number in `MIN..=MAX`: `--epochs 1e12` or `--batch-size 0`
/// are refused with the range, before anything is sized from them.
#[cfg(feature = "cli")]
pub fn parse_count<const MIN: usize, const MAX: usize>(
    s: &str,
) -> std::result::Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number in {MIN}..={MAX}, got {s:?}"))?;
    if !(MIN..=MAX).contains(&v) {
        return Err(format!("{v} is out of range: expected {MIN}..={MAX}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_to_canonical_names() {
        for (spec, canonical) in [
            ("cpu", "cpu"),
            ("cuda", "cuda:0"),
            ("cuda:0", "cuda:0"),
            (" cuda:3 ", "cuda:3"),
        ] {
            assert_eq!(spec.parse::<DeviceSpec>().unwrap().to_string(), canonical);
        }
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", "gpu", ""] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("device"), "{bad}: {err}");
        }
    }

    #[test]
    fn precisions_parse_to_canonical_names() {
        for (spec, canonical) in [
            ("f32", "f32"),
            ("fp32", "f32"),
            ("float32", "f32"),
            ("f16", "f16"),
            ("float16", "f16"),
            ("bf16", "bf16"),
            ("bfloat16", "bf16"),
        ] {
            assert_eq!(spec.parse::<Precision>().unwrap().to_string(), canonical);
        }
        assert!("f8".parse::<Precision>().is_err());
        assert_eq!(Precision::Bf16.dtype(), DType::BF16);
    }

    #[test]
    fn layer_selections_are_checked_against_the_model() {
        use crate::LayerSelection;
        LayerSelection::All.validate(12).unwrap();
        LayerSelection::Indices(vec![0, 12]).validate(12).unwrap();
        let err = LayerSelection::Indices(vec![13]).validate(12).unwrap_err();
        assert!(err.to_string().contains("index 13 out of range"), "{err}");
        assert!(LayerSelection::Indices(vec![]).validate(12).is_err());
        assert!(LayerSelection::Indices(vec![3, 3]).validate(12).is_err());
        assert_eq!(
            serde_json::to_string(&LayerSelection::Last.stored_layers(12)).unwrap(),
            r#"["last_hidden_state"]"#
        );
        assert_eq!(
            serde_json::to_string(&LayerSelection::All.stored_layers(2)).unwrap(),
            "[0,1,2]"
        );
        let back: Vec<StoredLayer> = serde_json::from_str(r#"["last_hidden_state",4]"#).unwrap();
        assert_eq!(
            back,
            [StoredLayer::LastHiddenState, StoredLayer::HiddenState(4)]
        );
        assert!(serde_json::from_str::<StoredLayer>(r#""first""#).is_err());
    }

    #[cfg(feature = "cli")]
    #[test]
    fn counts_are_bounded() {
        assert_eq!(parse_count::<1, 10>("7"), Ok(7));
        assert!(parse_count::<1, 10>("0").unwrap_err().contains("1..=10"));
        assert!(parse_count::<1, 10>("1e12").is_err());
        assert!(parse_count::<1, 10>("99999999999999999999999").is_err());
    }

    #[test]
    fn cpu_is_always_supported() {
        DeviceSpec::Cpu.check_supported().unwrap();
        assert!(matches!(DeviceSpec::Cpu.open().unwrap(), Device::Cpu));
        if !cfg!(feature = "cuda") {
            let err = DeviceSpec::Cuda(1)
                .check_supported()
                .unwrap_err()
                .to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
