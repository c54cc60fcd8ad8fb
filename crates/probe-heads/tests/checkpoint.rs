//! Checkpoint files: round trip through a real file, PyTorch `state_dict` names and shapes, and
//! every kind of bad file is an error naming the file (never a panic).

use std::ops::ControlFlow;

use probe_heads::{Checkpoint, Dataset, Probe, ProbeError, ProbeKind, TrainConfig, Trainer};

fn trained(kind: ProbeKind) -> (Checkpoint, Vec<f32>) {
    let x: Vec<f32> = (0..40 * 5)
        .map(|i| ((i * 7919) % 23) as f32 / 23.0 - 0.5)
        .collect();
    let y: Vec<usize> = (0..40).map(|i| i % 3).collect();
    let cfg = TrainConfig {
        epochs: 2,
        ..TrainConfig::default()
    };
    let data = Dataset::new(&x, &y, 5).unwrap();
    let t = Trainer::new(cfg.clone())
        .train(kind, 3, &data, Some(&data), |_| ControlFlow::Continue(()))
        .unwrap();
    let ck = Checkpoint {
        probe: t.model,
        class_names: vec!["crackle".into(), "normal".into(), "wheeze".into()],
        hyperparameters: Some(cfg),
        best_epoch: t.best_epoch,
    };
    (ck, x)
}

#[test]
fn reload_needs_no_arguments_and_predicts_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [ProbeKind::Linear, ProbeKind::three_layer()] {
        let (ck, x) = trained(kind);
        let path = dir
            .path()
            .join(format!("icbhi_{}_classifier.safetensors", kind.name()));
        ck.save(&path).unwrap();
        let loaded = Checkpoint::load(&path).unwrap();
        assert_eq!(loaded, ck);
        assert_eq!(loaded.probe.kind(), kind);
        assert_eq!(
            loaded.probe.predict(&x).unwrap(),
            ck.probe.predict(&x).unwrap()
        );
        assert_eq!(loaded.metadata().class_names[1], "normal");
        assert!(loaded.best_epoch.is_some());
    }
}

#[test]
fn tensors_use_pytorch_state_dict_names_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let (ck, _) = trained(ProbeKind::ThreeLayer { hidden: 16 });
    ck.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "net.0.bias",
            "net.0.weight",
            "net.2.bias",
            "net.2.weight",
            "net.4.bias",
            "net.4.weight"
        ]
    );
    assert_eq!(st.tensor("net.0.weight").unwrap().shape(), &[16, 5]);
    assert_eq!(st.tensor("net.4.weight").unwrap().shape(), &[3, 16]);
    let Probe::ThreeLayer(m) = &ck.probe else {
        panic!("three-layer probe expected")
    };
    let first: Vec<f32> = st.tensor("net.0.weight").unwrap().data()[..4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(first[0], m.layers()[0].weight()[0]);
}

#[test]
fn bad_files_are_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let e = Checkpoint::load(&missing).unwrap_err();
    assert!(matches!(e, ProbeError::Io { .. }));
    assert!(e.to_string().contains("missing.safetensors"), "{e}");

    let good = dir.path().join("good.safetensors");
    trained(ProbeKind::Linear).0.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for cut in [0, 5, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = Checkpoint::load(&p).unwrap_err();
        assert!(matches!(e, ProbeError::Checkpoint { .. }), "cut {cut}: {e}");
        assert!(e.to_string().contains(&format!("cut{cut}")), "{e}");
    }

    // Flipped bytes anywhere must never panic.
    for i in (0..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x5a;
        let p = dir.path().join("flipped.safetensors");
        std::fs::write(&p, &bad).unwrap();
        let _ = Checkpoint::load(&p);
    }

    // A valid safetensors file whose metadata promises other shapes.
    let data = vec![0u8; 4 * 6];
    let write = |name: &str, meta: Option<std::collections::HashMap<String, String>>| {
        let w = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &data)
            .unwrap();
        let b = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data[..8])
            .unwrap();
        let file = safetensors::serialize(vec![("fc.weight", w), ("fc.bias", b)], meta).unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, file).unwrap();
        Checkpoint::load(&p).unwrap_err()
    };
    let e = write("foreign.safetensors", None);
    assert!(e.to_string().contains("format"), "{e}");
    let meta = |json: &str| {
        Some(
            [
                ("format".to_string(), probe_heads::FORMAT.to_string()),
                ("probe".to_string(), json.to_string()),
            ]
            .into_iter()
            .collect(),
        )
    };
    let e = write(
        "shape.safetensors",
        meta(
            r#"{"kind":"linear","in_dim":4,"n_classes":2,"class_names":[],"hyperparameters":null,"best_epoch":null}"#,
        ),
    );
    assert!(e.to_string().contains("fc.weight"), "{e}");
    let e = write("json.safetensors", meta("{not json"));
    assert!(e.to_string().contains("probe"), "{e}");
    let e = write(
        "names.safetensors",
        meta(
            r#"{"kind":"linear","in_dim":3,"n_classes":2,"class_names":["a"],"hyperparameters":null,"best_epoch":null}"#,
        ),
    );
    assert!(e.to_string().contains("class names"), "{e}");
    // The same file with consistent metadata loads.
    let ok = dir.path().join("ok.safetensors");
    let w =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &data).unwrap();
    let b =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data[..8]).unwrap();
    let file = safetensors::serialize(
        vec![("fc.weight", w), ("fc.bias", b)],
        meta(r#"{"kind":"linear","in_dim":3,"n_classes":2,"class_names":[],"hyperparameters":null,"best_epoch":null}"#),
    )
    .unwrap();
    std::fs::write(&ok, file).unwrap();
    assert_eq!(Checkpoint::load(&ok).unwrap().probe.in_dim(), 3);
}
