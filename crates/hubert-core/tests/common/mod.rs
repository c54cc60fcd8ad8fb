//! Fixture helpers shared by the parity suites (`parity.rs`, `portable.rs`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hubert_core::{DType, Device, Hubert, LayerSelection, Tensor};

pub const TOL: f32 = 1e-4;

/// The fixture directories of the other families, with their expected-output keys.
pub const FAMILIES: [(&str, &str); 6] = [
    ("tiny-distilhubert", "distilhubert"),
    ("tiny-wav2vec2", "wav2vec2"),
    ("tiny-wav2vec2-large", "wav2vec2large"),
    ("tiny-data2vec", "data2vec"),
    ("tiny-wavlm", "wavlm"),
    ("tiny-wavlm-large", "wavlmlarge"),
];

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu).unwrap()
}

pub const CLIPS: [&str; 5] = [
    "min400_pcm16",
    "odd1234_float",
    "half8000_pcm16",
    "one16000_float",
    "one16000_pcm16",
];

/// The largest absolute value of a tensor.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    max_abs(&(a - b).unwrap())
}

pub fn read_wav(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(spec.sample_rate, 16_000);
    match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .map(|s| s.unwrap() as f32 / (1i64 << (spec.bits_per_sample - 1)) as f32)
            .collect(),
    }
}

/// Checks one model directory against the fixture outputs of architecture `arch`.
pub fn check_model_dir(dir: &str, arch: &str) {
    let exp = expected();
    let hubert = Hubert::load(
        fixtures().join(dir).to_str().unwrap(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let n_layers = hubert.config().num_hidden_layers;
    let mut worst = 0f32;
    for clip in CLIPS {
        let samples = read_wav(&fixtures().join("audio").join(format!("{clip}.wav")));
        // Our preprocessing equals the feature extractor's.
        let input = hubert.input_values(&[&samples]).unwrap();
        let exp_input = &exp[&format!("{arch}.{clip}.input_values")];
        let d = max_abs_diff(&input.squeeze(0).unwrap(), exp_input);
        assert!(d < 1e-5, "{dir}/{clip}: input_values differ by {d}");

        let out = hubert.model.forward(&input).unwrap();
        assert_eq!(out.hidden_states.len(), n_layers + 1);
        let exp_hidden = &exp[&format!("{arch}.{clip}.hidden_states")];
        for (i, h) in out.hidden_states.iter().enumerate() {
            let d = max_abs_diff(&h.squeeze(0).unwrap(), &exp_hidden.get(i).unwrap());
            assert!(d < TOL, "{dir}/{clip}: hidden_states[{i}] max abs diff {d}");
            worst = worst.max(d);
        }
        let exp_last = &exp[&format!("{arch}.{clip}.last_hidden_state")];
        let d = max_abs_diff(&out.last_hidden_state.squeeze(0).unwrap(), exp_last);
        assert!(d < TOL, "{dir}/{clip}: last_hidden_state max abs diff {d}");

        // Pooled features are the frame means of the same states.
        let pooled = hubert.embed(&[&samples], &LayerSelection::All).unwrap();
        let exp_pooled = exp_hidden.mean(1).unwrap();
        let d = max_abs_diff(&pooled.squeeze(0).unwrap(), &exp_pooled);
        assert!(d < TOL, "{dir}/{clip}: pooled max abs diff {d}");
        let last = hubert.embed(&[&samples], &LayerSelection::Last).unwrap();
        let d = max_abs_diff(
            &last.squeeze(0).unwrap().squeeze(0).unwrap(),
            &exp_last.mean(0).unwrap(),
        );
        assert!(d < TOL, "{dir}/{clip}: pooled last max abs diff {d}");
    }
    eprintln!("{dir}: worst max abs diff over all hidden states {worst:e}");
}
