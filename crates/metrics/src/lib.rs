//! Classification metrics for probe evaluation, with scikit-learn parity.
//!
//! Labels are class indices `0..n_classes`. Per-class rows are reported for **all** `n_classes`
//! classes (aligned with the class names), so a class that never appears still has a row.
//!
//! # Which classes an average covers
//!
//! The macro average ([`ClassificationReport::macro_avg`], the headline macro-F1) is
//! scikit-learn's default `precision_recall_fscore_support(y_true, y_pred, average="macro")`
//! (the same as `f1_score(y_true, y_pred, average="macro")`): the unweighted mean over the
//! classes that occur in `y_true` **or** `y_pred` (`unique_labels(y_true, y_pred)`), not over
//! every class name. A class with no sample in `y_true` and no prediction is **absent**: its
//! row has `absent: true` and `None` (JSON `null`) precision, recall and F1, and it is listed in
//! [`ClassificationReport::absent_classes`]. A class that is predicted but absent from the
//! truth is present: its recall and F1 are 0 and count in the mean, as in scikit-learn.
//! [`ClassificationReport::macro_avg_all_classes`] keeps the mean over all `n_classes` class
//! names (absent classes counted as 0, scikit-learn with `labels=range(n_classes)`), for
//! comparison with code that passes `labels=`. The weighted average is the same either way
//! (absent classes weigh 0). [`balanced_accuracy`] averages recall over the classes in `y_true`
//! only, as `balanced_accuracy_score`.
//!
//! # Zero division
//!
//! As scikit-learn's default `zero_division="warn"`, an undefined ratio of a present class is
//! `0.0`: the precision of a class in `y_true` that is never predicted, and the recall of a
//! class predicted but absent from `y_true` (scikit-learn also raises an
//! `UndefinedMetricWarning`; this crate returns the value without a warning, and the pipeline's
//! report names such classes). The F1 of a present class is always defined
//! (`2·tp + fp + fn > 0`). ICBHI Se/Sp with no positive/negative samples are `0.0`.
//!
//! | function | scikit-learn |
//! |---|---|
//! | [`accuracy`] | `accuracy_score` |
//! | [`balanced_accuracy`] | `balanced_accuracy_score` |
//! | [`ConfusionMatrix::compute`] | `confusion_matrix(labels=range(C))` (rows = true class) |
//! | [`ClassificationReport::compute`] | `precision_recall_fscore_support(average=None / "macro" / "weighted")`, default labels |
//! | [`IcbhiScore::compute`] | ICBHI 2017 challenge Se, Sp, (Se + Sp) / 2 |
//! | [`MeanStd::from_values`] | `np.mean`, `np.std(ddof=1)` |
//!
//! All report structs are `serde`-serialisable for `results.json`.
//!
//! ```
//! use metrics::{ClassificationReport, IcbhiScore, Matching, MeanStd};
//!
//! let y_true = [0, 0, 1, 1, 2];
//! let y_pred = [0, 1, 1, 1, 0];
//! let report = ClassificationReport::compute(&y_true, &y_pred, 3).unwrap();
//! assert_eq!(report.accuracy, 0.6);
//! assert_eq!(report.per_class[2].f1, Some(0.0)); // class 2 never predicted correctly
//! assert_eq!(report.confusion_matrix.counts[0], vec![1, 1, 0]); // rows = true class
//!
//! // Class 3 is neither true nor predicted: absent, left out of the macro average.
//! let report = ClassificationReport::compute(&y_true, &y_pred, 4).unwrap();
//! assert!(report.per_class[3].absent && report.per_class[3].f1.is_none());
//! assert_eq!(report.absent_classes, vec![3]);
//! let f1s = [0.5, 0.8, 0.0]; // classes 0, 1, 2
//! assert!((report.macro_avg.f1 - f1s.iter().sum::<f64>() / 3.0).abs() < 1e-12);
//! assert!((report.macro_avg_all_classes.f1 - f1s.iter().sum::<f64>() / 4.0).abs() < 1e-12);
//!
//! // ICBHI: class 0 is "normal", classes 1 and 2 are abnormal.
//! let icbhi = IcbhiScore::compute(&y_true, &y_pred, 3, &[1, 2], Matching::Exact).unwrap();
//! assert_eq!(icbhi.sensitivity, 2.0 / 3.0);
//! assert_eq!(icbhi.specificity, 0.5);
//!
//! let folds = MeanStd::from_values(&[0.8, 0.9]).unwrap();
//! assert!((folds.mean - 0.85).abs() < 1e-12);
//! ```

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// Errors from metric computation: all are caller mistakes in the inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// `y_true` and `y_pred` differ in length.
    #[error("y_true has {y_true} labels but y_pred has {y_pred}")]
    LengthMismatch {
        /// Length of `y_true`.
        y_true: usize,
        /// Length of `y_pred`.
        y_pred: usize,
    },
    /// No samples (or no values for [`MeanStd`]).
    #[error("cannot compute {what} on an empty input")]
    Empty {
        /// What was being computed.
        what: &'static str,
    },
    /// A label is outside `0..n_classes`.
    #[error("label {label} at position {index} is out of range for {n_classes} classes")]
    LabelOutOfRange {
        /// Offending label.
        label: usize,
        /// Its position.
        index: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// Class names do not match the number of classes.
    #[error("{names} class names given for {n_classes} classes")]
    ClassNames {
        /// Number of names given.
        names: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// A value passed to [`MeanStd::from_values`] is NaN or infinite.
    #[error("value {value} at position {index} is not finite")]
    NonFinite {
        /// Offending value.
        value: f64,
        /// Its position.
        index: usize,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

fn check(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> Result<()> {
    if y_true.len() != y_pred.len() {
        return Err(MetricsError::LengthMismatch {
            y_true: y_true.len(),
            y_pred: y_pred.len(),
        });
    }
    if y_true.is_empty() {
        return Err(MetricsError::Empty {
            what: "classification metrics",
        });
    }
    for (index, &label) in y_true.iter().chain(y_pred).enumerate() {
        if label >= n_classes {
            return Err(MetricsError::LabelOutOfRange {
                label,
                index: index % y_true.len(),
                n_classes,
            });
        }
    }
    Ok(())
}

/// `num / den`, or `0.0` when `den == 0` (scikit-learn's `zero_division="warn"` result).
fn safe_div(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Fraction of exact matches (`accuracy_score`). Errors on empty or mismatched inputs.
pub fn accuracy(y_true: &[usize], y_pred: &[usize]) -> Result<f64> {
    check(y_true, y_pred, usize::MAX)?;
    let correct = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    Ok(correct as f64 / y_true.len() as f64)
}

/// Mean per-class recall over the classes present in `y_true` (`balanced_accuracy_score`).
///
/// As in scikit-learn, a class that appears only in `y_pred` is left out of the mean (its recall
/// is undefined), and `n_classes` only bounds the labels.
pub fn balanced_accuracy(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> Result<f64> {
    let cm = ConfusionMatrix::compute(y_true, y_pred, n_classes)?;
    let recalls: Vec<f64> = (0..n_classes)
        .filter(|&c| cm.support(c) > 0)
        .map(|c| cm.counts[c][c] as f64 / cm.support(c) as f64)
        .collect();
    Ok(recalls.iter().sum::<f64>() / recalls.len() as f64)
}

/// A confusion matrix: `counts[true_class][predicted_class]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfusionMatrix {
    /// `counts[t][p]` = number of samples of true class `t` predicted as `p`.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// An all-zero `n_classes x n_classes` matrix (the identity for [`ConfusionMatrix::add`]).
    pub fn zeros(n_classes: usize) -> Self {
        Self {
            counts: vec![vec![0; n_classes]; n_classes],
        }
    }

    /// Counts `(true, predicted)` pairs; rows are true classes, as `sklearn.metrics.confusion_matrix`.
    pub fn compute(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> Result<Self> {
        check(y_true, y_pred, n_classes)?;
        let mut cm = Self::zeros(n_classes);
        for (&t, &p) in y_true.iter().zip(y_pred) {
            cm.counts[t][p] += 1;
        }
        Ok(cm)
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.counts.len()
    }

    /// Number of samples of true class `c` (row sum).
    pub fn support(&self, c: usize) -> u64 {
        self.counts[c].iter().sum()
    }

    /// Number of samples predicted as class `c` (column sum).
    pub fn predicted(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }

    /// Adds another matrix of the same size element-wise (to sum folds).
    ///
    /// # Panics
    /// If the two matrices have different sizes.
    pub fn add(&mut self, other: &ConfusionMatrix) {
        assert_eq!(
            self.n_classes(),
            other.n_classes(),
            "confusion matrices of different sizes"
        );
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

/// Precision, recall, F1 and support of one class.
///
/// Deserialises rows written before `absent` existed (plain numbers, no `absent` key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class index.
    pub class: usize,
    /// Class name (the index as text when no names were given).
    pub name: String,
    /// `tp / (tp + fp)`; `0.0` when the class is in `y_true` but never predicted
    /// (scikit-learn's `zero_division` default); `None` when the class is absent.
    pub precision: Option<f64>,
    /// `tp / (tp + fn)`; `0.0` when the class is predicted but not in `y_true`; `None` when
    /// the class is absent.
    pub recall: Option<f64>,
    /// `2·tp / (2·tp + fp + fn)` (scikit-learn ≥ 1.3's formula); `None` when the class is
    /// absent (the only case where the denominator is 0).
    pub f1: Option<f64>,
    /// Number of samples of this class in `y_true`.
    pub support: u64,
    /// `true` when the class is neither in `y_true` nor predicted: it has no precision, recall
    /// or F1 and is left out of the macro average.
    #[serde(default)]
    pub absent: bool,
}

/// Averaged precision, recall and F1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Averages {
    /// Averaged precision.
    pub precision: f64,
    /// Averaged recall.
    pub recall: f64,
    /// Averaged F1 (the average of per-class F1s, not the F1 of the averages).
    pub f1: f64,
    /// Total support.
    pub support: u64,
}

/// Everything the pipeline reports for one fold or run (or all of them pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// [`accuracy`].
    pub accuracy: f64,
    /// [`balanced_accuracy`] (over the classes in `y_true`).
    pub balanced_accuracy: f64,
    /// One entry per class `0..n_classes`, including absent classes (`absent: true`).
    pub per_class: Vec<ClassMetrics>,
    /// scikit-learn's `average="macro"` with its default labels: the unweighted mean over the
    /// classes in `y_true` or `y_pred`; absent classes are left out. The headline macro-F1.
    pub macro_avg: Averages,
    /// The unweighted mean over all `n_classes` class names, absent classes counted as 0
    /// (scikit-learn with `labels=range(n_classes)`). Lower than [`Self::macro_avg`] whenever
    /// a class is absent; kept only for comparison.
    pub macro_avg_all_classes: Averages,
    /// Support-weighted mean (`average="weighted"`); classes absent from `y_true` weigh 0, so
    /// it does not depend on which classes are listed.
    pub weighted_avg: Averages,
    /// Classes neither in `y_true` nor predicted, in index order.
    pub absent_classes: Vec<usize>,
    /// Rows = true class.
    pub confusion_matrix: ConfusionMatrix,
}

impl ClassificationReport {
    /// Computes the full report for labels in `0..n_classes`.
    pub fn compute(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> Result<Self> {
        let cm = ConfusionMatrix::compute(y_true, y_pred, n_classes)?;
        let per_class: Vec<ClassMetrics> = (0..n_classes)
            .map(|c| {
                let tp = cm.counts[c][c] as f64;
                let support = cm.support(c);
                let predicted = cm.predicted(c);
                let absent = support == 0 && predicted == 0;
                let fp = predicted as f64 - tp;
                let fn_ = support as f64 - tp;
                let defined = |v: f64| (!absent).then_some(v);
                ClassMetrics {
                    class: c,
                    name: c.to_string(),
                    precision: defined(safe_div(tp, predicted as f64)),
                    recall: defined(safe_div(tp, support as f64)),
                    f1: defined(safe_div(2.0 * tp, 2.0 * tp + fp + fn_)),
                    support,
                    absent,
                }
            })
            .collect();
        let total: u64 = per_class.iter().map(|m| m.support).sum();
        let present: Vec<&ClassMetrics> = per_class.iter().filter(|m| !m.absent).collect();
        // `check` refuses empty inputs, so at least one class is present.
        let mean = |f: fn(&ClassMetrics) -> Option<f64>, n: usize| {
            per_class.iter().filter_map(f).sum::<f64>() / n as f64
        };
        let macro_avg = Averages {
            precision: mean(|m| m.precision, present.len()),
            recall: mean(|m| m.recall, present.len()),
            f1: mean(|m| m.f1, present.len()),
            support: total,
        };
        let macro_avg_all_classes = Averages {
            precision: mean(|m| m.precision, n_classes),
            recall: mean(|m| m.recall, n_classes),
            f1: mean(|m| m.f1, n_classes),
            support: total,
        };
        let w = |f: fn(&ClassMetrics) -> Option<f64>| {
            safe_div(
                present
                    .iter()
                    .map(|m| f(m).unwrap_or(0.0) * m.support as f64)
                    .sum::<f64>(),
                total as f64,
            )
        };
        let weighted_avg = Averages {
            precision: w(|m| m.precision),
            recall: w(|m| m.recall),
            f1: w(|m| m.f1),
            support: total,
        };
        Ok(Self {
            accuracy: accuracy(y_true, y_pred)?,
            balanced_accuracy: balanced_accuracy(y_true, y_pred, n_classes)?,
            absent_classes: per_class
                .iter()
                .filter(|m| m.absent)
                .map(|m| m.class)
                .collect(),
            per_class,
            macro_avg,
            macro_avg_all_classes,
            weighted_avg,
            confusion_matrix: cm,
        })
    }

    /// Names the classes in `per_class` (one name per class, in index order).
    pub fn with_class_names<S: AsRef<str>>(mut self, names: &[S]) -> Result<Self> {
        if names.len() != self.per_class.len() {
            return Err(MetricsError::ClassNames {
                names: names.len(),
                n_classes: self.per_class.len(),
            });
        }
        for (m, name) in self.per_class.iter_mut().zip(names) {
            m.name = name.as_ref().to_string();
        }
        Ok(self)
    }

    /// The names of [`Self::absent_classes`] (as set by [`Self::with_class_names`]).
    pub fn absent_class_names(&self) -> Vec<String> {
        self.absent_classes
            .iter()
            .map(|&c| self.per_class[c].name.clone())
            .collect()
    }
}

/// How predictions of abnormal classes count for the ICBHI sensitivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matching {
    /// The ICBHI 2017 challenge definition: a sample counts as correct only when its class is
    /// predicted exactly (`Se = Σ_{c∈P} cm[c][c] / Σ_{c∈P} support(c)`, `Sp` likewise over the
    /// negative classes). With one positive and one negative class it equals [`Matching::Grouped`].
    Exact,
    /// Binary view: a positive sample is detected when the prediction is any positive class, a
    /// negative one is correct when the prediction is any negative class (recall of the
    /// binarised labels).
    Grouped,
}

/// ICBHI sensitivity, specificity and score for a chosen set of positive (abnormal) classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IcbhiScore {
    /// Sensitivity over the positive classes; `0.0` with no positive sample.
    pub sensitivity: f64,
    /// Specificity over the negative classes; `0.0` with no negative sample.
    pub specificity: f64,
    /// `(sensitivity + specificity) / 2`.
    pub score: f64,
    /// The positive classes used.
    pub positive_classes: Vec<usize>,
    /// The matching rule used.
    pub matching: Matching,
}

impl IcbhiScore {
    /// Computes Se, Sp and the ICBHI score; classes not in `positive_classes` are negatives.
    /// Positive classes outside `0..n_classes` are an error.
    pub fn compute(
        y_true: &[usize],
        y_pred: &[usize],
        n_classes: usize,
        positive_classes: &[usize],
        matching: Matching,
    ) -> Result<Self> {
        let cm = ConfusionMatrix::compute(y_true, y_pred, n_classes)?;
        if let Some((index, &label)) = positive_classes
            .iter()
            .enumerate()
            .find(|(_, &c)| c >= n_classes)
        {
            return Err(MetricsError::LabelOutOfRange {
                label,
                index,
                n_classes,
            });
        }
        let is_pos = |c: usize| positive_classes.contains(&c);
        let rate = |positive: bool| {
            let mut hit = 0u64;
            let mut total = 0u64;
            for t in (0..n_classes).filter(|&t| is_pos(t) == positive) {
                total += cm.support(t);
                hit += match matching {
                    Matching::Exact => cm.counts[t][t],
                    Matching::Grouped => (0..n_classes)
                        .filter(|&p| is_pos(p) == positive)
                        .map(|p| cm.counts[t][p])
                        .sum(),
                };
            }
            safe_div(hit as f64, total as f64)
        };
        let (sensitivity, specificity) = (rate(true), rate(false));
        let mut positive_classes = positive_classes.to_vec();
        positive_classes.sort_unstable();
        positive_classes.dedup();
        Ok(Self {
            sensitivity,
            specificity,
            score: (sensitivity + specificity) / 2.0,
            positive_classes,
            matching,
        })
    }
}

/// Mean and sample standard deviation of a metric over runs or folds.
///
/// Serialises as `{"mean": .., "std": .., "per_fold": [..]}`, the `results.json` schema
/// (`per_fold` holds the per-run values when aggregating runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (`ddof = 1`, as `np.std(x, ddof=1)`); `0.0` for one value
    /// (where NumPy would return NaN).
    pub std: f64,
    /// The values aggregated, in order.
    pub per_fold: Vec<f64>,
}

impl MeanStd {
    /// Aggregates `values`; errors when empty or when a value is not finite.
    pub fn from_values(values: &[f64]) -> Result<Self> {
        if values.is_empty() {
            return Err(MetricsError::Empty {
                what: "mean ± std"
            });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(MetricsError::NonFinite { value, index });
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() == 1 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Ok(Self {
            mean,
            std,
            per_fold: values.to_vec(),
        })
    }
}

impl std::fmt::Display for MeanStd {
    /// `mean ± std`, with the precision given (`{:.4}`), or 4 decimals by default.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(4);
        write!(f, "{:.*} ± {:.*}", p, self.mean, p, self.std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors() {
        assert!(matches!(
            accuracy(&[0, 1], &[0]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            accuracy(&[], &[]),
            Err(MetricsError::Empty { .. })
        ));
        assert_eq!(
            ConfusionMatrix::compute(&[0, 3], &[0, 1], 3).unwrap_err(),
            MetricsError::LabelOutOfRange {
                label: 3,
                index: 1,
                n_classes: 3
            }
        );
        assert!(IcbhiScore::compute(&[0], &[0], 2, &[2], Matching::Exact).is_err());
        assert!(MeanStd::from_values(&[]).is_err());
        assert!(MeanStd::from_values(&[1.0, f64::NAN]).is_err());
        let r = ClassificationReport::compute(&[0], &[0], 2).unwrap();
        assert!(r.with_class_names(&["a"]).is_err());
    }

    #[test]
    fn absent_class_has_no_scores_and_is_left_out_of_the_macro_average() {
        let r = ClassificationReport::compute(&[0, 1], &[0, 1], 3)
            .unwrap()
            .with_class_names(&["a", "b", "c"])
            .unwrap();
        let c = &r.per_class[2];
        assert!(c.absent);
        assert_eq!((c.precision, c.recall, c.f1), (None, None, None));
        assert!(!r.per_class[0].absent);
        assert_eq!(r.absent_classes, vec![2]);
        assert_eq!(r.absent_class_names(), vec!["c".to_string()]);
        assert_eq!(r.macro_avg.f1, 1.0);
        assert!((r.macro_avg_all_classes.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.weighted_avg.f1, 1.0);
        assert_eq!(r.balanced_accuracy, 1.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["per_class"][2],
            serde_json::json!({"class": 2, "name": "c", "precision": null, "recall": null,
                               "f1": null, "support": 0, "absent": true})
        );
    }

    #[test]
    fn predicted_but_untrue_class_is_present_with_zero_recall_and_f1() {
        // Class 2 never true but predicted once: in the macro mean with F1 0.
        let r = ClassificationReport::compute(&[0, 1, 1], &[0, 1, 2], 4).unwrap();
        assert_eq!(r.per_class[2].recall, Some(0.0));
        assert_eq!(r.per_class[2].f1, Some(0.0));
        assert!(!r.per_class[2].absent);
        assert_eq!(r.absent_classes, vec![3]);
        let f1s = [1.0, 2.0 / 3.0, 0.0];
        assert!((r.macro_avg.f1 - f1s.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    }

    #[test]
    fn rows_written_before_absent_existed_still_load() {
        let old = r#"{"class": 0, "name": "a", "precision": 0.5, "recall": 0.0, "f1": 0.0,
                      "support": 3}"#;
        let m: ClassMetrics = serde_json::from_str(old).unwrap();
        assert_eq!(m.precision, Some(0.5));
        assert!(!m.absent);
    }

    #[test]
    fn mean_std_edge_cases_and_display() {
        let one = MeanStd::from_values(&[0.7]).unwrap();
        assert_eq!((one.mean, one.std), (0.7, 0.0));
        let two = MeanStd::from_values(&[1.0, 3.0]).unwrap();
        assert!((two.std - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(format!("{two:.2}"), "2.00 ± 1.41");
        let json = serde_json::to_value(&two).unwrap();
        assert_eq!(json["per_fold"], serde_json::json!([1.0, 3.0]));
    }

    #[test]
    fn confusion_matrices_add() {
        let mut a = ConfusionMatrix::compute(&[0, 1], &[1, 1], 2).unwrap();
        a.add(&ConfusionMatrix::compute(&[0], &[0], 2).unwrap());
        assert_eq!(a.counts, vec![vec![1, 1], vec![0, 1]]);
        assert_eq!(serde_json::to_string(&a).unwrap(), "[[1,1],[0,1]]");
    }

    #[test]
    fn icbhi_grouped_differs_from_exact_on_confusions_within_positives() {
        // true crackle predicted as wheeze: detected as abnormal, but not an exact match.
        let exact = IcbhiScore::compute(&[1, 0], &[2, 0], 3, &[1, 2], Matching::Exact).unwrap();
        let grouped = IcbhiScore::compute(&[1, 0], &[2, 0], 3, &[1, 2], Matching::Grouped).unwrap();
        assert_eq!(exact.sensitivity, 0.0);
        assert_eq!(grouped.sensitivity, 1.0);
        assert_eq!(exact.specificity, 1.0);
        assert_eq!(grouped.score, 1.0);
    }
}
