#!/usr/bin/env python3
"""Writes the scikit-learn parity fixtures for crates/scaler and crates/metrics.

Usage: python3 scripts/make_scaler_metrics_fixtures.py
Outputs: crates/scaler/tests/fixtures/sklearn_scaler.json
         crates/metrics/tests/fixtures/sklearn_metrics.json
Every expected number comes from scikit-learn / NumPy; nothing is hand-written.

Each metrics case holds two scikit-learn calls:
- `labels=range(n_classes)` (`precision`, `recall`, `f1`, `support`, `macro`, `weighted`): a row
  for every class name, absent classes scored 0; our `macro_avg_all_classes`;
- the default call without `labels=` (`default`): scikit-learn averages over
  `unique_labels(y_true, y_pred)`, the classes in the truth or the predictions; our per-class rows
  of those classes, `macro_avg` and `weighted_avg`. The UndefinedMetricWarnings it raises
  (zero_division="warn") are recorded under `default.warnings`.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
)
from sklearn.utils.multiclass import unique_labels
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
warnings.filterwarnings("ignore")  # zero_division="warn" and balanced_accuracy warnings


def floats(a):
    return [float(v) for v in np.asarray(a).ravel()]


def scaler_fixture():
    rng = np.random.default_rng(0)
    cases = []
    for name, n, d in [("gaussian", 37, 12), ("single_row", 1, 5), ("wide", 40, 48)]:
        x = (rng.standard_normal((n, d)) * rng.uniform(0.1, 50, d) + rng.uniform(-100, 100, d)).astype(np.float32)
        if d >= 12:
            x[:, 3] = 7.25  # constant feature -> scale 1
            x[:, 4] = np.float32(1e6)  # large constant
            x[:, 5] = np.float32(1e4) + (rng.standard_normal(n) * 1e-3).astype(np.float32)  # tiny variance, big mean
            x[:, 6] = 0.0
        test = (rng.standard_normal((5, d)) * 10).astype(np.float32)
        sc = StandardScaler().fit(x)
        cases.append({
            "name": name,
            "n_features": d,
            "x": floats(x),
            "test": floats(test),
            "mean": floats(sc.mean_),
            "var": floats(sc.var_),
            "scale": floats(sc.scale_),
            "n_samples_seen": int(sc.n_samples_seen_),
            "transform_x": floats(sc.transform(x)),
            "transform_test": floats(sc.transform(test)),
            "inverse_test": floats(sc.inverse_transform(test)),
        })
    return {"sklearn_version": sklearn.__version__, "cases": cases}


def icbhi(y_true, y_pred, n_classes, positive):
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
    neg = [c for c in range(n_classes) if c not in positive]
    def exact(classes):
        tot = cm[classes, :].sum()
        return float(np.trace(cm[np.ix_(classes, classes)] * np.eye(len(classes)))) / tot if tot else 0.0
    bt = np.isin(y_true, positive).astype(int)
    bp = np.isin(y_pred, positive).astype(int)
    se_g = recall_score(bt, bp, pos_label=1, zero_division=0)
    sp_g = recall_score(bt, bp, pos_label=0, zero_division=0)
    se_e, sp_e = exact(list(positive)), exact(neg)
    return {
        "positive_classes": list(positive),
        "exact": {"sensitivity": se_e, "specificity": sp_e, "score": (se_e + sp_e) / 2},
        "grouped": {"sensitivity": float(se_g), "specificity": float(sp_g), "score": float(se_g + sp_g) / 2},
    }


def metrics_case(name, y_true, y_pred, n_classes, positive):
    labels = list(range(n_classes))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None)
    case = {
        "name": name,
        "n_classes": n_classes,
        "y_true": [int(v) for v in y_true],
        "y_pred": [int(v) for v in y_pred],
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "precision": floats(p), "recall": floats(r), "f1": floats(f), "support": [int(v) for v in s],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg)
        case[avg] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    case["icbhi"] = icbhi(np.array(y_true), np.array(y_pred), n_classes, positive)
    case["default"] = default_call(y_true, y_pred)
    return case


def default_call(y_true, y_pred):
    """scikit-learn's default: no `labels=`, so the classes are unique_labels(y_true, y_pred)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None)
        out = {
            "labels": [int(v) for v in unique_labels(y_true, y_pred)],
            "precision": floats(p), "recall": floats(r), "f1": floats(f),
            "support": [int(v) for v in s],
        }
        for avg in ("macro", "weighted"):
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg)
            out[avg] = {"precision": float(p), "recall": float(r), "f1": float(f)}
        # The study's exact call.
        out["f1_score_macro"] = float(f1_score(y_true, y_pred, average="macro"))
    # The distinct UndefinedMetricWarning messages (e.g. "Precision is ill-defined and being set
    # to 0.0 in labels with no predicted samples. ...").
    out["warnings"] = sorted({str(w.message) for w in caught
                              if issubclass(w.category, UndefinedMetricWarning)})
    return out


def metrics_fixture():
    rng = np.random.default_rng(1)
    cases = []
    y = rng.integers(0, 6, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 6, 200))
    pred[pred == 4] = 0  # class 4 never predicted
    cases.append(metrics_case("six_classes_one_never_predicted", y, pred, 6, [1, 2, 3]))
    y = rng.integers(0, 4, 50)  # classes 4 and 5 absent from truth
    pred = rng.integers(0, 5, 50)  # class 4 predicted but absent from truth; 5 absent from both
    cases.append(metrics_case("absent_from_truth_and_both", y, pred, 6, [1, 4]))
    y = rng.integers(0, 2, 80)
    pred = np.where(rng.random(80) < 0.7, y, 1 - y)
    cases.append(metrics_case("binary", y, pred, 2, [1]))
    y = rng.integers(0, 4, 120)  # ICBHI-like: normal, crackle, wheeze, both
    pred = np.where(rng.random(120) < 0.5, y, rng.integers(0, 4, 120))
    cases.append(metrics_case("icbhi_four_class", y, pred, 4, [1, 2, 3]))
    cases.append(metrics_case("all_wrong", [0, 0, 1], [1, 1, 0], 3, [1]))
    # Absent classes, for the default call (a separate generator keeps the cases above and the
    # mean_std values below unchanged).
    g = np.random.default_rng(2)
    y = g.integers(0, 4, 60)  # class 4 predicted, never true
    pred = np.where(g.random(60) < 0.6, y, g.integers(0, 5, 60))
    pred[:3] = 4
    cases.append(metrics_case("absent_from_truth", y, pred, 5, [1, 2]))
    y = g.integers(0, 5, 60)  # class 3 true, never predicted
    y[:4] = 3
    pred = np.where(g.random(60) < 0.6, y, g.integers(0, 5, 60))
    pred[pred == 3] = 1
    cases.append(metrics_case("absent_from_predictions", y, pred, 5, [1, 2]))
    y = g.integers(0, 4, 60)  # class 4 neither true nor predicted
    pred = np.where(g.random(60) < 0.6, y, g.integers(0, 4, 60))
    cases.append(metrics_case("absent_from_both", y, pred, 5, [1, 2]))
    # NSynth-like: 11 families, synth_lead (9) never in the test truth; one family (2) never
    # predicted, one (10) predicted but never true.
    y = g.choice([0, 1, 2, 3, 4, 5, 6, 7, 8], 150)
    pred = np.where(g.random(150) < 0.7, y, g.choice([0, 1, 3, 4, 5, 6, 7, 8, 10], 150))
    pred[pred == 2] = 0
    cases.append(metrics_case("nsynth_like_mixed", y, pred, 11, [1]))
    cases.append(metrics_case("one_class_present", [1, 1, 1], [1, 1, 1], 3, [1]))
    cases.append(metrics_case("truth_and_predictions_disjoint", [0, 0], [1, 1], 3, [1]))
    mean_std = []
    for values in ([0.81, 0.84, 0.79, 0.9, 0.86], [0.5], list(rng.random(10)), [1.0, 1.0, 1.0]):
        v = np.array(values, dtype=np.float64)
        mean_std.append({"values": floats(v), "mean": float(v.mean()),
                         "std": float(v.std(ddof=1)) if len(v) > 1 else None})
    return {"sklearn_version": sklearn.__version__, "numpy_version": np.__version__,
            "cases": cases, "mean_std": mean_std}


if __name__ == "__main__":
    out = ROOT / "crates/scaler/tests/fixtures/sklearn_scaler.json"
    out.write_text(json.dumps(scaler_fixture()))
    print(out, out.stat().st_size)
    out = ROOT / "crates/metrics/tests/fixtures/sklearn_metrics.json"
    out.write_text(json.dumps(metrics_fixture(), indent=1))
    print(out, out.stat().st_size)
