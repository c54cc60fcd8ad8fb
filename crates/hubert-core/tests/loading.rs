//! Loading errors: each names what is wrong and where.

use std::path::{Path, PathBuf};

use hubert_core::{DType, Device, Hubert, Tensor};

fn fixture(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

/// Copies a fixture model directory, letting `edit` change its tensors.
fn edited_copy(edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixture("tiny-base").join(f), tmp.path().join(f)).unwrap();
    }
    let map = candle_core::safetensors::load(
        fixture("tiny-base").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut tensors: Vec<(String, Tensor)> = map.into_iter().collect();
    edit(&mut tensors);
    let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, tmp.path().join("model.safetensors")).unwrap();
    tmp
}

fn load_err(dir: &Path) -> String {
    Hubert::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string()
}

#[test]
fn missing_tensor_is_named() {
    let tmp =
        edited_copy(|t| t.retain(|(k, _)| k != "encoder.layers.1.feed_forward.output_dense.bias"));
    let err = load_err(tmp.path());
    assert!(
        err.contains("missing tensor `encoder.layers.1.feed_forward.output_dense.bias`"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_shape_is_named() {
    let tmp = edited_copy(|t| {
        for (k, v) in t.iter_mut() {
            if k == "encoder.layers.0.attention.q_proj.weight" {
                *v = Tensor::zeros((32, 16), DType::F32, &Device::Cpu).unwrap();
            }
        }
    });
    let err = load_err(tmp.path());
    assert!(
        err.contains("encoder.layers.0.attention.q_proj.weight"),
        "{err}"
    );
    assert!(
        err.contains("[32, 16]") && err.contains("[32, 32]"),
        "{err}"
    );
}

#[test]
fn half_a_weight_norm_pair_is_named() {
    let tmp = edited_copy(|t| t.retain(|(k, _)| !k.ends_with("parametrizations.weight.original1")));
    let err = load_err(tmp.path());
    assert!(err.contains("parametrizations.weight.original1"), "{err}");
}

#[test]
fn malformed_config_is_named() {
    let tmp = edited_copy(|_| {});
    std::fs::write(tmp.path().join("config.json"), "{\"hidden_size\": \"big\"}").unwrap();
    let err = load_err(tmp.path());
    assert!(
        err.contains("config.json") && err.contains("hidden_size"),
        "{err}"
    );
}

#[test]
fn config_that_disagrees_with_the_weights_is_named() {
    let tmp = edited_copy(|_| {});
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    cfg["num_hidden_layers"] = 3.into();
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("missing tensor `encoder.layers.2."), "{err}");
}

#[test]
fn corrupt_checkpoint_is_named() {
    let tmp = edited_copy(|_| {});
    std::fs::write(
        tmp.path().join("model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let err = load_err(tmp.path());
    assert!(
        err.contains("model.safetensors") && err.contains("cannot read checkpoint"),
        "{err}"
    );
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"PK\x03\x04garbage").unwrap();
    let err = load_err(tmp.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("cannot read checkpoint"),
        "{err}"
    );
}

#[test]
fn missing_weights_and_config_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("config.json not found"), "{err}");
    std::fs::copy(
        fixture("tiny-base").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("no weights"), "{err}");
}

#[test]
fn cuda_without_the_feature_says_how_to_enable_it() {
    if cfg!(feature = "cuda") {
        return;
    }
    let err = hubert_core::parse_device("cuda:0").unwrap_err().to_string();
    assert!(err.contains("--features cuda"), "{err}");
    assert!(hubert_core::parse_device("tpu").is_err());
    assert!(hubert_core::parse_dtype("f8").is_err());
}

#[test]
fn a_bert_checkpoint_is_refused_naming_its_model_type() {
    let err = load_err(&fixture("tiny-bert"));
    assert!(err.contains("model type `bert`"), "{err}");
    assert!(
        err.contains("hubert, wav2vec2, data2vec-audio, wavlm"),
        "{err}"
    );
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn tensors_the_model_does_not_use_are_named() {
    let tmp = edited_copy(|t| {
        let extra = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        t.push((
            "encoder.layers.0.attention.extra_proj.weight".into(),
            extra.clone(),
        ));
        // A fine-tuned head and a pre-training module are skipped.
        t.push(("lm_head.weight".into(), extra.clone()));
        t.push(("quantizer.codevectors".into(), extra));
    });
    let err = load_err(tmp.path());
    assert!(
        err.contains("`encoder.layers.0.attention.extra_proj.weight`"),
        "{err}"
    );
    assert!(
        !err.contains("lm_head") && !err.contains("quantizer"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn a_wavlm_config_over_hubert_weights_is_refused() {
    // The family decides which tensors are needed: WavLM's position bias is missing.
    let tmp = edited_copy(|_| {});
    let cfg = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    let cfg = cfg.replace("\"model_type\": \"hubert\"", "\"model_type\": \"wavlm\"");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("rel_attn_embed"), "{err}");
}

#[test]
fn preprocessor_settings_are_checked() {
    for (json, needle) in [
        (r#"{"sampling_rate": 8000}"#, "sampling_rate 8000"),
        (r#"{"feature_size": 2}"#, "feature_size 2"),
        (r#"{"do_normalize": "yes"}"#, "do_normalize"),
    ] {
        let tmp = edited_copy(|_| {});
        std::fs::write(tmp.path().join("preprocessor_config.json"), json).unwrap();
        let err = load_err(tmp.path());
        assert!(err.contains(needle), "{json}: {err}");
        assert!(err.contains("preprocessor_config.json"), "{json}: {err}");
    }
    // return_attention_mask: true is accepted (clips are never padded).
    let tmp = edited_copy(|_| {});
    std::fs::write(
        tmp.path().join("preprocessor_config.json"),
        r#"{"return_attention_mask": true, "do_normalize": false}"#,
    )
    .unwrap();
    let hubert = Hubert::load(tmp.path().to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    assert!(hubert.preprocessor.return_attention_mask);
    assert!(!hubert.preprocessor.do_normalize);
}

/// Each family fixture's preprocessor setting is honoured: with `do_normalize: false`
/// (tiny-wavlm, tiny-distilhubert) the input is the raw clip, with `true` it is normalised.
#[test]
fn do_normalize_is_read_per_family() {
    for (dir, normalize) in [
        ("tiny-wavlm", false),
        ("tiny-distilhubert", false),
        ("tiny-wav2vec2", true),
        ("tiny-wav2vec2-large", true),
        ("tiny-data2vec", true),
        ("tiny-wavlm-large", true),
    ] {
        let hubert =
            Hubert::load(fixture(dir).to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(hubert.preprocessor.do_normalize, normalize, "{dir}");
        let clip: Vec<f32> = (0..800)
            .map(|i| 0.5 + 0.1 * (i as f32 * 0.3).sin())
            .collect();
        let input: Vec<f32> = hubert
            .input_values(&[&clip])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean = input.iter().sum::<f32>() / input.len() as f32;
        if normalize {
            assert!(mean.abs() < 1e-4, "{dir}: mean {mean}");
        } else {
            assert_eq!(input, clip, "{dir}");
        }
    }
}

/// A `pytorch_model.bin` (zip) holding `pickle` as its state dict and `storage` as storage `0`.
fn torch_zip(pickle: &[u8], storage: &[u8]) -> tempfile::TempDir {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixture("tiny-base").join(f), tmp.path().join(f)).unwrap();
    }
    let file = std::fs::File::create(tmp.path().join("pytorch_model.bin")).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/data/0", opts).unwrap();
    zip.write_all(storage).unwrap();
    zip.finish().unwrap();
    tmp
}

/// The pickle of `{name: tensor}` (protocol 2, as `torch.save` writes it) for a float tensor of
/// `size` / `stride` over storage `0` of `numel` elements.
fn state_dict_pickle(name: &str, numel: u32, size: &[u32], stride: &[u32]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'(', b'X'];
    p.extend((name.len() as u32).to_le_bytes());
    p.extend(name.as_bytes());
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage");
    p.extend(b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ");
    p.extend(numel.to_le_bytes());
    p.extend(b"tQK\x00(");
    for &s in size {
        p.push(b'J');
        p.extend(s.to_le_bytes());
    }
    p.extend(b"t(");
    for &s in stride {
        p.push(b'J');
        p.extend(s.to_le_bytes());
    }
    p.extend(b"t\x89ccollections\nOrderedDict\n)RtRu.");
    p
}

#[test]
fn a_hand_made_torch_zip_loads_through_the_bounded_reader() {
    // The reader itself on a well-formed file: one 2x2 tensor (a real checkpoint is checked by
    // the parity tests on the *-bin fixtures).
    let tmp = torch_zip(
        &state_dict_pickle("w", 4, &[2, 2], &[2, 1]),
        &[1f32, 2., 3., 4.].map(f32::to_le_bytes).concat(),
    );
    let tensors =
        hubert_core::pickle::read_checkpoint(&tmp.path().join("pytorch_model.bin")).unwrap();
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0].0, "w");
    let v: Vec<Vec<f32>> = tensors[0].1.to_vec2().unwrap();
    assert_eq!(v, [[1., 2.], [3., 4.]]);
}

#[test]
fn a_shape_larger_than_its_storage_is_refused_naming_the_tensor() {
    // [2^20, 2^20] over 4 bytes: 4.4 TB if allocated from the declared shape.
    let tmp = torch_zip(
        &state_dict_pickle(
            "encoder.layer_norm.weight",
            1,
            &[1 << 20, 1 << 20],
            &[1 << 20, 1],
        ),
        &[0; 4],
    );
    let err = load_err(tmp.path());
    assert!(err.contains("tensor `encoder.layer_norm.weight`"), "{err}");
    assert!(err.contains("larger than its storage"), "{err}");
    assert!(err.contains("pytorch_model.bin"), "{err}");
    // A storage that declares more elements than its zip entry holds.
    let tmp = torch_zip(&state_dict_pickle("w", 1 << 30, &[4], &[1]), &[0; 16]);
    let err = load_err(tmp.path());
    assert!(
        err.contains("tensor `w`") && err.contains("holds 16 bytes"),
        "{err}"
    );
}

#[test]
fn a_memo_expansion_bomb_is_refused() {
    // "Billion laughs": nine levels of ten references to the level below (a few hundred
    // bytes; a reader that copies memo entries builds 10^9 objects).
    let mut p = vec![0x80, 2, b')', b'q', 0];
    for level in 1..=9u8 {
        p.push(b'(');
        for _ in 0..10 {
            p.extend([b'h', level - 1]);
        }
        p.extend([b't', b'q', level]);
    }
    p.push(b'.');
    let tmp = torch_zip(&p, &[]);
    let err = load_err(tmp.path());
    assert!(err.contains("memo-expansion"), "{err}");
    assert!(err.contains("pytorch_model.bin"), "{err}");
}

#[test]
fn an_oversized_safetensors_header_is_refused() {
    let tmp = edited_copy(|_| {});
    let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
    bytes.extend(b"{}");
    std::fs::write(tmp.path().join("model.safetensors"), bytes).unwrap();
    let err = load_err(tmp.path());
    assert!(
        err.contains("header") && err.contains("model.safetensors"),
        "{err}"
    );
}
