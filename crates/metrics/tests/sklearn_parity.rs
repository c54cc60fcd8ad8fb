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
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-12, "{what}: {a} vs sklearn {b}");
}

#[test]
fn classification_metrics_match_sklearn() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
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
        for (c, m) in r.per_class.iter().enumerate() {
            close(
                m.precision,
                f64s(&case["precision"])[c],
                &format!("{name} precision[{c}]"),
            );
            close(
                m.recall,
                f64s(&case["recall"])[c],
                &format!("{name} recall[{c}]"),
            );
            close(m.f1, f64s(&case["f1"])[c], &format!("{name} f1[{c}]"));
            assert_eq!(m.support as usize, usizes(&case["support"])[c], "{name}");
        }
        for (avg, got) in [("macro", &r.macro_avg), ("weighted", &r.weighted_avg)] {
            close(
                got.precision,
                case[avg]["precision"].as_f64().unwrap(),
                &format!("{name} {avg} P"),
            );
            close(
                got.recall,
                case[avg]["recall"].as_f64().unwrap(),
                &format!("{name} {avg} R"),
            );
            close(
                got.f1,
                case[avg]["f1"].as_f64().unwrap(),
                &format!("{name} {avg} F1"),
            );
        }
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
