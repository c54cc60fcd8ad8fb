//! Parity with `sklearn.preprocessing.StandardScaler` on fixtures written by
//! `scripts/make_scaler_metrics_fixtures.py`.

use scaler::{ScalerError, StandardScaler};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/sklearn_scaler.json");
    serde_json::from_str(text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

fn assert_close64(got: &[f64], want: &[f64], rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rtol * w.abs().max(1e-300),
            "{what}[{i}]: {g} vs sklearn {w}"
        );
    }
}

fn assert_close32(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} vs sklearn {w}"
        );
    }
}

#[test]
fn fit_and_transform_match_sklearn() {
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let d = case["n_features"].as_u64().unwrap() as usize;
        let x = f32s(&case["x"]);
        let s = StandardScaler::fit(&x, d).unwrap();
        assert_eq!(s.n_samples_seen(), case["n_samples_seen"].as_u64().unwrap());
        // f64 accumulation: only summation order differs from NumPy's pairwise sum.
        assert_close64(s.mean(), &f64s(&case["mean"]), 1e-12, name);
        let want_var = f64s(&case["var"]);
        for (j, (g, w)) in s.var().iter().zip(&want_var).enumerate() {
            assert!(
                (g - w).abs() <= 1e-9 * w.abs() + 1e-12,
                "{name} var[{j}]: {g} vs {w}"
            );
        }
        // Scale 1 for constant features must match exactly.
        let want_scale = f64s(&case["scale"]);
        for (g, w) in s.scale().iter().zip(&want_scale) {
            assert_eq!(*g == 1.0, *w == 1.0, "{name}: constant-feature decision");
        }
        assert_close64(s.scale(), &want_scale, 1e-9, name);
        assert_close32(
            &s.transform(&x).unwrap(),
            &f32s(&case["transform_x"]),
            1e-5,
            name,
        );
        let test = f32s(&case["test"]);
        assert_close32(
            &s.transform(&test).unwrap(),
            &f32s(&case["transform_test"]),
            1e-5,
            name,
        );
        assert_close32(
            &s.inverse_transform(&test).unwrap(),
            &f32s(&case["inverse_test"]),
            1e-6,
            name,
        );
    }
}

#[test]
fn save_load_round_trip_and_python_layout() {
    let fx = fixture();
    let case = &fx["cases"][0];
    let d = case["n_features"].as_u64().unwrap() as usize;
    let s = StandardScaler::fit(&f32s(&case["x"]), d).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaler.safetensors");
    s.save(&path).unwrap();
    let loaded = StandardScaler::load(&path).unwrap();
    assert_eq!(loaded, s);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, vec!["mean", "scale", "var"]);
    assert_eq!(st.tensor("mean").unwrap().shape(), &[d]);
}

#[test]
fn bad_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let e = StandardScaler::load(&missing).unwrap_err();
    assert!(matches!(e, ScalerError::Io { .. }));
    assert!(e.to_string().contains("missing.safetensors"));

    let s = StandardScaler::fit(&[1.0, 2.0, 3.0, 5.0], 2).unwrap();
    let good = dir.path().join("good.safetensors");
    s.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for cut in [0, 7, 8, 40, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = StandardScaler::load(&p).unwrap_err();
        assert!(matches!(e, ScalerError::Format { .. }), "cut {cut}: {e}");
    }
    // A valid safetensors file that is not a scaler.
    let data = vec![0u8; 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
    let foreign = safetensors::serialize(vec![("mean", view)], None).unwrap();
    let p = dir.path().join("foreign.safetensors");
    std::fs::write(&p, foreign).unwrap();
    let e = StandardScaler::load(&p).unwrap_err();
    assert!(e.to_string().contains("format"), "{e}");
}
