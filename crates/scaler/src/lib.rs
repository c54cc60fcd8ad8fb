//! `StandardScaler` with scikit-learn's semantics, for standardising frozen HuBERT features
//! before a probe is trained on them.
//!
//! Matches `sklearn.preprocessing.StandardScaler()` (defaults `with_mean=True, with_std=True`,
//! scikit-learn 1.9, `sklearn/preprocessing/_data.py`):
//!
//! * **f64 accumulation.** Means and variances are accumulated in `f64` even though features
//!   are `f32`, like scikit-learn's `_incremental_mean_and_var`, which uses the corrected
//!   two-pass algorithm (Chan, Golub & LeVeque): `var = (Σ(x-μ)² - (Σ(x-μ))²/n) / n`.
//! * **Population variance** (`ddof = 0`): `var_` divides by `n`, not `n - 1`.
//! * **Zero-variance features get scale 1.** A feature is constant when
//!   `var <= n·eps·var + (n·mean·eps)²` (`eps` = f64 machine epsilon, scikit-learn's
//!   `_is_constant_feature`); its `scale` is then `1.0`, so the transform only centres it.
//! * **Transform in f32.** `transform` computes `(x - f32(mean)) / f32(scale)` in `f32`, as
//!   scikit-learn does for `float32` input (`X -= mean_.astype(X.dtype)`).
//!
//! Decided differently from scikit-learn: NaN or infinite inputs are rejected with
//! [`ScalerError::NonFinite`] (scikit-learn ignores NaN during `fit`); features in this project
//! are never legitimately missing, so a NaN is a bug upstream that should surface.
//!
//! Data is passed as row-major `f32` slices of shape `[n_samples, n_features]` (the layout of the
//! feature store's `features` tensor for one layer).
//!
//! ```
//! use scaler::StandardScaler;
//!
//! // 3 samples x 2 features, row-major
//! let train = [1.0_f32, 10.0, 2.0, 10.0, 3.0, 10.0];
//! let scaler = StandardScaler::fit(&train, 2).unwrap();
//! assert_eq!(scaler.mean(), &[2.0, 10.0]);
//! assert_eq!(scaler.scale()[1], 1.0); // constant feature: scale 1
//! let z = scaler.transform(&[3.0, 12.0]).unwrap();
//! assert!((z[0] - 1.2247449).abs() < 1e-6);
//! assert_eq!(z[1], 2.0);
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("scaler.safetensors");
//! scaler.save(&path).unwrap();
//! assert_eq!(StandardScaler::load(&path).unwrap(), scaler);
//! ```

#![warn(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use artifacts::{write_safetensors, RawTensor};
use safetensors::tensor::{Dtype, SafeTensors};

/// Value of the `format` metadata key written by [`StandardScaler::save`].
pub const FORMAT: &str = "hubert-probe.standard-scaler";
/// Version of the file layout written by [`StandardScaler::save`].
pub const FORMAT_VERSION: u32 = 1;

/// Errors from fitting, applying, saving or loading a scaler.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    /// `fit` was given no samples (or `n_features == 0`).
    #[error("cannot fit a StandardScaler on an empty feature matrix ({n_samples} samples x {n_features} features)")]
    Empty {
        /// Number of rows given.
        n_samples: usize,
        /// Number of columns given.
        n_features: usize,
    },
    /// The slice length is not a multiple of the number of features.
    #[error(
        "feature slice of length {len} is not a whole number of rows of {n_features} features"
    )]
    Ragged {
        /// Length of the slice.
        len: usize,
        /// Expected row width.
        n_features: usize,
    },
    /// A NaN or infinite value was found in the input.
    #[error("non-finite value {value} at row {row}, feature {feature}: features must be finite")]
    NonFinite {
        /// Row index of the offending value.
        row: usize,
        /// Column index of the offending value.
        feature: usize,
        /// The value itself.
        value: f32,
    },
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid scaler checkpoint.
    #[error("{}: not a valid StandardScaler file: {reason}", path.display())]
    Format {
        /// File involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ScalerError>;

/// A fitted standard scaler: `z = (x - mean) / scale`.
///
/// Construct it with [`StandardScaler::fit`] (or [`StandardScaler::fit_transform`]) or
/// [`StandardScaler::load`]; a fitted scaler carries everything needed to save and reload it.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardScaler {
    mean: Vec<f64>,
    var: Vec<f64>,
    scale: Vec<f64>,
    n_samples_seen: u64,
}

fn check_shape(x: &[f32], n_features: usize) -> Result<usize> {
    if n_features == 0 || x.is_empty() {
        return Err(ScalerError::Empty {
            n_samples: x.len().checked_div(n_features).unwrap_or(0),
            n_features,
        });
    }
    if !x.len().is_multiple_of(n_features) {
        return Err(ScalerError::Ragged {
            len: x.len(),
            n_features,
        });
    }
    Ok(x.len() / n_features)
}

fn check_finite(x: &[f32], n_features: usize) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ScalerError::NonFinite {
            row: i / n_features,
            feature: i % n_features,
            value: x[i],
        }),
    }
}

impl StandardScaler {
    /// Fits mean, variance and scale per feature on `x`, row-major `[n_samples, n_features]`.
    ///
    /// Errors on an empty matrix, a slice that is not a whole number of rows, or a non-finite
    /// value. One sample is allowed: every feature then has variance 0 and scale 1.
    pub fn fit(x: &[f32], n_features: usize) -> Result<Self> {
        let n_samples = check_shape(x, n_features)?;
        check_finite(x, n_features)?;
        let n = n_samples as f64;
        let mut sum = vec![0.0_f64; n_features];
        for row in x.chunks_exact(n_features) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        // Corrected two-pass algorithm, as sklearn.utils.extmath._incremental_mean_and_var.
        let mut correction = vec![0.0_f64; n_features];
        let mut sq = vec![0.0_f64; n_features];
        for row in x.chunks_exact(n_features) {
            for j in 0..n_features {
                let d = f64::from(row[j]) - mean[j];
                correction[j] += d;
                sq[j] += d * d;
            }
        }
        let var: Vec<f64> = (0..n_features)
            .map(|j| (sq[j] - correction[j] * correction[j] / n) / n)
            .collect();
        let eps = f64::EPSILON;
        let scale = var
            .iter()
            .zip(&mean)
            .map(|(&v, &m)| {
                // sklearn.preprocessing._data._is_constant_feature
                let upper_bound = n * eps * v + (n * m * eps).powi(2);
                if v <= upper_bound {
                    1.0
                } else {
                    v.sqrt()
                }
            })
            .collect();
        Ok(Self {
            mean,
            var,
            scale,
            n_samples_seen: n_samples as u64,
        })
    }

    /// Fits on `x` and returns the scaler together with the standardised copy of `x`.
    pub fn fit_transform(x: &[f32], n_features: usize) -> Result<(Self, Vec<f32>)> {
        let scaler = Self::fit(x, n_features)?;
        let z = scaler.transform(x)?;
        Ok((scaler, z))
    }

    /// Number of features the scaler was fitted on.
    pub fn n_features(&self) -> usize {
        self.mean.len()
    }

    /// Number of samples seen during `fit` (scikit-learn's `n_samples_seen_`).
    pub fn n_samples_seen(&self) -> u64 {
        self.n_samples_seen
    }

    /// Per-feature mean (`mean_`).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Per-feature population variance (`var_`, `ddof = 0`).
    pub fn var(&self) -> &[f64] {
        &self.var
    }

    /// Per-feature scale (`scale_`): `sqrt(var)`, or `1.0` for a constant feature.
    pub fn scale(&self) -> &[f64] {
        &self.scale
    }

    fn check_input(&self, x: &[f32]) -> Result<()> {
        let n_features = self.n_features();
        if !x.len().is_multiple_of(n_features) {
            return Err(ScalerError::Ragged {
                len: x.len(),
                n_features,
            });
        }
        check_finite(x, n_features)
    }

    /// Standardises `x` (row-major, `n_features` columns) in place, in `f32` like scikit-learn
    /// does for `float32` input. An empty slice is a no-op.
    pub fn transform_inplace(&self, x: &mut [f32]) -> Result<()> {
        self.check_input(x)?;
        let mean: Vec<f32> = self.mean.iter().map(|&m| m as f32).collect();
        let scale: Vec<f32> = self.scale.iter().map(|&s| s as f32).collect();
        for row in x.chunks_exact_mut(self.n_features()) {
            for ((v, &m), &s) in row.iter_mut().zip(&mean).zip(&scale) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }

    /// Returns the standardised copy of `x` (row-major, `n_features` columns).
    pub fn transform(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut z = x.to_vec();
        self.transform_inplace(&mut z)?;
        Ok(z)
    }

    /// Undoes [`StandardScaler::transform`]: `x = z * scale + mean`, in `f32`.
    pub fn inverse_transform(&self, z: &[f32]) -> Result<Vec<f32>> {
        self.check_input(z)?;
        let mean: Vec<f32> = self.mean.iter().map(|&m| m as f32).collect();
        let scale: Vec<f32> = self.scale.iter().map(|&s| s as f32).collect();
        let mut x = z.to_vec();
        for row in x.chunks_exact_mut(self.n_features()) {
            for ((v, &m), &s) in row.iter_mut().zip(&mean).zip(&scale) {
                *v = *v * s + m;
            }
        }
        Ok(x)
    }

    /// Writes the scaler as safetensors: `f64` tensors `mean`, `scale`, `var` of shape
    /// `[n_features]`, and metadata `format`, `format_version`, `n_features`,
    /// `n_samples_seen`, `with_mean`, `with_std`. Readable from Python with
    /// `safetensors.numpy.load_file`. The file is written to a temporary name and renamed, so
    /// a crash never leaves a half-written scaler behind.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let shape = vec![self.n_features()];
        let tensors = vec![
            (
                "mean".to_string(),
                RawTensor::f64(shape.clone(), &self.mean),
            ),
            (
                "scale".to_string(),
                RawTensor::f64(shape.clone(), &self.scale),
            ),
            ("var".to_string(), RawTensor::f64(shape, &self.var)),
        ];
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("format_version", FORMAT_VERSION.to_string()),
            ("n_features", self.n_features().to_string()),
            ("n_samples_seen", self.n_samples_seen.to_string()),
            ("with_mean", "true".to_string()),
            ("with_std", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        write_safetensors(path, &tensors, metadata).map_err(|e| match e {
            artifacts::Error::Io { path, source } => ScalerError::Io { path, source },
            artifacts::Error::Encode { path, msg } => ScalerError::Format { path, reason: msg },
        })
    }

    /// Reads a scaler written by [`StandardScaler::save`]. A missing file is
    /// [`ScalerError::Io`]; a truncated, corrupt or foreign file is [`ScalerError::Format`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| ScalerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let format_err = |reason: String| ScalerError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) =
            SafeTensors::read_metadata(&data).map_err(|e| format_err(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        match metadata.get("format") {
            Some(f) if f == FORMAT => {}
            other => {
                return Err(format_err(format!(
                    "metadata key `format` is {other:?}, expected {FORMAT:?}"
                )))
            }
        }
        let n_samples_seen = metadata
            .get("n_samples_seen")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format_err("missing or invalid `n_samples_seen` metadata".into()))?;
        let tensors = SafeTensors::deserialize(&data).map_err(|e| format_err(e.to_string()))?;
        let read = |name: &str| -> Result<Vec<f64>> {
            let t = tensors
                .tensor(name)
                .map_err(|e| format_err(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != Dtype::F64 || t.shape().len() != 1 {
                return Err(format_err(format!(
                    "tensor `{name}` is {:?} {:?}, expected F64 of rank 1",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")))
                .collect())
        };
        let (mean, scale, var) = (read("mean")?, read("scale")?, read("var")?);
        if mean.is_empty() || mean.len() != scale.len() || mean.len() != var.len() {
            return Err(format_err(format!(
                "tensor lengths differ or are zero: mean {}, scale {}, var {}",
                mean.len(),
                scale.len(),
                var.len()
            )));
        }
        if scale.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(format_err(
                "`scale` holds a non-positive or non-finite value".into(),
            ));
        }
        Ok(Self {
            mean,
            var,
            scale,
            n_samples_seen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_variance_and_constant_feature() {
        let x = [1.0_f32, 5.0, 3.0, 5.0];
        let s = StandardScaler::fit(&x, 2).unwrap();
        assert_eq!(s.mean(), &[2.0, 5.0]);
        assert_eq!(s.var(), &[1.0, 0.0]); // ddof = 0
        assert_eq!(s.scale(), &[1.0, 1.0]);
        assert_eq!(s.transform(&x).unwrap(), vec![-1.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn single_sample_gives_unit_scale() {
        let s = StandardScaler::fit(&[3.0, -2.0], 2).unwrap();
        assert_eq!(s.scale(), &[1.0, 1.0]);
        assert_eq!(s.transform(&[3.0, -2.0]).unwrap(), vec![0.0, 0.0]);
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        assert!(matches!(
            StandardScaler::fit(&[], 3),
            Err(ScalerError::Empty { .. })
        ));
        assert!(matches!(
            StandardScaler::fit(&[1.0], 0),
            Err(ScalerError::Empty { .. })
        ));
        assert!(matches!(
            StandardScaler::fit(&[1.0, 2.0, 3.0], 2),
            Err(ScalerError::Ragged { .. })
        ));
        let e = StandardScaler::fit(&[1.0, f32::NAN], 1).unwrap_err();
        assert!(matches!(
            e,
            ScalerError::NonFinite {
                row: 1,
                feature: 0,
                ..
            }
        ));
        let s = StandardScaler::fit(&[1.0, 2.0, 3.0, 4.0], 2).unwrap();
        assert!(matches!(
            s.transform(&[1.0, 2.0, 3.0]),
            Err(ScalerError::Ragged { .. })
        ));
    }

    #[test]
    fn inverse_round_trips() {
        let x = [0.5_f32, -3.0, 2.5, 7.0, 1.5, 0.0];
        let (s, z) = StandardScaler::fit_transform(&x, 3).unwrap();
        let back = s.inverse_transform(&z).unwrap();
        for (a, b) in back.iter().zip(&x) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    proptest::proptest! {
        #[test]
        fn transformed_train_set_has_zero_mean_unit_var(
            rows in proptest::collection::vec(proptest::collection::vec(-1e3_f32..1e3, 4), 2..40)
        ) {
            let x: Vec<f32> = rows.concat();
            let (s, z) = StandardScaler::fit_transform(&x, 4).unwrap();
            let n = rows.len() as f64;
            for j in 0..4 {
                let col: Vec<f64> = z.iter().skip(j).step_by(4).map(|&v| f64::from(v)).collect();
                let m = col.iter().sum::<f64>() / n;
                proptest::prop_assert!(m.abs() < 1e-3, "mean {m}");
                let v = col.iter().map(|c| (c - m).powi(2)).sum::<f64>() / n;
                if s.scale()[j] != 1.0 {
                    proptest::prop_assert!((v - 1.0).abs() < 1e-3, "var {v}");
                }
            }
        }
    }
}
