//! Parity with scikit-learn / NumPy on fixtures written by
//! `scripts/make_scaler_metrics_fixtures.py`.

use metrics::{
    accuracy, balanced_accuracy, ClassificationReport, ConfusionMatrix, IcbhiScore, Matching,
    MeanStd,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/sklearn_metrics.json")).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    serde_json::from_value(v.clone()).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-12, "{what}: {a} vs sklearn {b}");
}

#[test]
fn classification_metrics_match_sklearn() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 11);
    // The fixture covers a class absent from the truth only, from the predictions only, and
    // from both.
    let has = |name: &str| cases.iter().any(|c| c["name"] == name);
    for name in [
        "absent_from_truth",
        "absent_from_predictions",
        "absent_from_both",
    ] {
        assert!(has(name), "{name}");
    }
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let n = case["n_classes"].as_u64().unwrap() as usize;
        let (t, p) = (usizes(&case["y_true"]), usizes(&case["y_pred"]));
        close(
            accuracy(&t, &p).unwrap(),
            case["accuracy"].as_f64().unwrap(),
            name,
        );
        close(
            balanced_accuracy(&t, &p, n).unwrap(),
            case["balanced_accuracy"].as_f64().unwrap(),
            name,
        );
        let cm = ConfusionMatrix::compute(&t, &p, n).unwrap();
        let want_cm: Vec<Vec<u64>> =
            serde_json::from_value(case["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.counts, want_cm, "{name}");
        let r = ClassificationReport::compute(&t, &p, n).unwrap();
        // scikit-learn's default call (no `labels=`): the classes in y_true or y_pred.
        let d = &case["default"];
        let labels = usizes(&d["labels"]);
        let absent: Vec<usize> = (0..n).filter(|c| !labels.contains(c)).collect();
        assert_eq!(r.absent_classes, absent, "{name}");
        for (c, m) in r.per_class.iter().enumerate() {
            assert_eq!(m.class, c);
            assert_eq!(m.support as usize, usizes(&case["support"])[c], "{name}");
            match labels.iter().position(|&l| l == c) {
                Some(i) => {
                    assert!(!m.absent, "{name}: class {c} is present");
                    for (key, got) in [
                        ("precision", m.precision),
                        ("recall", m.recall),
                        ("f1", m.f1),
                    ] {
                        let got = got.unwrap_or_else(|| panic!("{name} {key}[{c}] is None"));
                        close(got, f64s(&d[key])[i], &format!("{name} {key}[{c}]"));
                        // labels=range(C) gives the same value for a present class.
                        close(
                            got,
                            f64s(&case[key])[c],
                            &format!("{name} {key}[{c}] (labels=)"),
                        );
                    }
                    assert_eq!(m.support as usize, usizes(&d["support"])[i], "{name}");
                }
                None => {
                    assert!(m.absent, "{name}: class {c} is absent");
                    assert_eq!((m.precision, m.recall, m.f1), (None, None, None), "{name}");
                    assert_eq!(m.support, 0);
                    // scikit-learn with labels=range(C) scores it 0.
                    assert_eq!(f64s(&case["f1"])[c], 0.0, "{name}");
                }
            }
        }
        for (avg, got, want) in [
            ("macro", &r.macro_avg, &d["macro"]),
            ("weighted", &r.weighted_avg, &d["weighted"]),
            (
                "macro labels=range(C)",
                &r.macro_avg_all_classes,
                &case["macro"],
            ),
            (
                "weighted labels=range(C)",
                &r.weighted_avg,
                &case["weighted"],
            ),
        ] {
            for key in ["precision", "recall", "f1"] {
                let got = match key {
                    "precision" => got.precision,
                    "recall" => got.recall,
                    _ => got.f1,
                };
                close(
                    got,
                    want[key].as_f64().unwrap(),
                    &format!("{name} {avg} {key}"),
                );
            }
        }
        // The study's `f1_score(y_true, y_pred, average="macro")`.
        close(
            r.macro_avg.f1,
            d["f1_score_macro"].as_f64().unwrap(),
            &format!("{name} f1_score macro"),
        );
        // scikit-learn warns exactly where a present class hits zero_division (value 0.0):
        // precision of a true class never predicted, recall of a predicted class never true.
        let warned = |what: &str| {
            d["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().starts_with(what))
        };
        let never_predicted = labels.iter().any(|&c| cm.predicted(c) == 0);
        let never_true = labels.iter().any(|&c| cm.support(c) == 0);
        assert_eq!(
            warned("Precision is ill-defined"),
            never_predicted,
            "{name}"
        );
        assert_eq!(warned("Recall is ill-defined"), never_true, "{name}");
        assert!(!warned("F-score is ill-defined"), "{name}");
        let ic = &case["icbhi"];
        let pos = usizes(&ic["positive_classes"]);
        for (key, matching) in [("exact", Matching::Exact), ("grouped", Matching::Grouped)] {
            let s = IcbhiScore::compute(&t, &p, n, &pos, matching).unwrap();
            close(
                s.sensitivity,
                ic[key]["sensitivity"].as_f64().unwrap(),
                &format!("{name} {key} Se"),
            );
            close(
                s.specificity,
                ic[key]["specificity"].as_f64().unwrap(),
                &format!("{name} {key} Sp"),
            );
            close(
                s.score,
                ic[key]["score"].as_f64().unwrap(),
                &format!("{name} {key} score"),
            );
        }
        // The report serialises (it goes into results.json).
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["per_class"].as_array().unwrap().len(), n);
        for &c in &absent {
            assert_eq!(json["per_class"][c]["absent"], true, "{name}");
            assert!(json["per_class"][c]["f1"].is_null(), "{name}");
        }
    }
}

#[test]
fn mean_std_matches_numpy_ddof1() {
    let fx = fixture();
    for case in fx["mean_std"].as_array().unwrap() {
        let values = f64s(&case["values"]);
        let got = MeanStd::from_values(&values).unwrap();
        close(got.mean, case["mean"].as_f64().unwrap(), "mean");
        match case["std"].as_f64() {
            Some(std) => close(got.std, std, "std"),
            // NumPy gives NaN for one value with ddof=1; we document 0.
            None => assert_eq!(got.std, 0.0),
        }
    }
}
