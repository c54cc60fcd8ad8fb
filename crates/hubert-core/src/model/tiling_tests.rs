//! Tiled and full computation give the same hidden states: attention in tiles (the CPU path's
//! online softmax in fp32 and bf16, candle's query blocks) against each head's full score
//! matrix, on every family's tiny fixture, with tiles small enough that every clip spans many.

use candle_core::{DType, Device, Tensor};

use super::encoder::{AttentionMode, Encoder};
use super::HubertModel;
use crate::cpu::tiled::Tiling;
use crate::weights::Weights;
use crate::{ModelFiles, ModelSource};

/// Every family's fixture (post-LN and pre-LN, group and layer conv norms, WavLM's bias).
pub(crate) const FIXTURES: [&str; 8] = [
    "tiny-base",
    "tiny-large",
    "tiny-distilhubert",
    "tiny-wav2vec2",
    "tiny-wav2vec2-large",
    "tiny-data2vec",
    "tiny-wavlm",
    "tiny-wavlm-large",
];

pub(crate) fn fixture(dir: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .to_string_lossy()
        .into_owned()
}

/// A deterministic clip of `n` samples (a chirp with noise, amplitude about 0.5).
pub(crate) fn clip(n: usize) -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let t = i as f32 / 16_000.0;
            0.4 * (2.0 * std::f32::consts::PI * (200.0 + 900.0 * t) * t).sin() + 0.2 * noise
        })
        .collect()
}

pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every hidden state and the last one of `encoder` on `xs` in `mode`.
fn run(encoder: &Encoder, xs: &Tensor, mode: AttentionMode) -> Vec<Tensor> {
    let mut states = Vec::new();
    let last = encoder
        .forward_visit_with(
            xs,
            &mut |_, h| {
                states.push(h.to_dtype(DType::F32)?);
                Ok(())
            },
            mode,
        )
        .unwrap();
    states.push(last.to_dtype(DType::F32).unwrap());
    states
}

/// Small tiles: several query tiles and key tiles per clip, the last ones partial.
const SMALL: [Tiling; 2] = [Tiling { query: 7, key: 5 }, Tiling { query: 16, key: 24 }];

fn assert_modes_agree(what: &str, encoder: &Encoder, xs: &Tensor, tol: f32) {
    let full = run(encoder, xs, AttentionMode::Full);
    for tiling in SMALL {
        let tiled = run(encoder, xs, AttentionMode::Tiled(tiling));
        for (i, (a, b)) in full.iter().zip(&tiled).enumerate() {
            let diff = max_abs_diff(a, b);
            assert!(diff < tol, "{what} {tiling:?} hidden state {i}: {diff:e}");
        }
    }
}

/// The CPU path (fp32, and bf16 where the CPU has it): online-softmax tiles equal the full
/// score matrices within 1e-5 on every hidden state.
#[test]
fn tiled_attention_equals_full_on_every_family_cpu_path() {
    let samples = clip(24_000); // 74 frames
    for dir in FIXTURES {
        for dtype in [DType::F32, DType::BF16] {
            let hubert = crate::Hubert::load(&fixture(dir), &Device::Cpu, dtype).unwrap();
            let model: &HubertModel = &hubert.model;
            assert!(model.encoder.is_fast(), "{dir}: the CPU path");
            let input = Tensor::from_slice(&samples, (1, samples.len()), &Device::Cpu).unwrap();
            let xs = model.embed_frames(&input).unwrap();
            assert_modes_agree(&format!("{dir} {dtype:?}"), &model.encoder, &xs, 1e-5);
        }
    }
}

/// candle's path (what GPUs run; loaded here on the CPU without the fast layers): blocks of
/// query frames equal the full score matrices within 1e-5, a batch of two clips included.
#[test]
fn query_blocks_equal_full_on_every_family_candle_path() {
    let samples = clip(24_000);
    for dir in FIXTURES {
        let source = ModelSource::from_files(ModelFiles::resolve(&fixture(dir)).unwrap()).unwrap();
        let weights = Weights::from_file(&source.files.weights, &Device::Cpu, DType::F32).unwrap();
        let encoder = Encoder::load(&weights, &source.config, None).unwrap();
        assert!(!encoder.is_fast());
        let hubert = crate::Hubert::load(&fixture(dir), &Device::Cpu, DType::F32).unwrap();
        let mut batch = samples.clone();
        batch.extend(samples.iter().rev());
        let input = Tensor::from_vec(batch, (2, samples.len()), &Device::Cpu).unwrap();
        let xs = hubert.model.embed_frames(&input).unwrap();
        assert_modes_agree(&format!("{dir} candle"), &encoder, &xs, 1e-5);
    }
}

/// The conv feature encoder in tiles (two-pass GroupNorm, overlapping receptive fields)
/// equals the whole clip at once within 1e-5, fp32 and bf16, for every family's conv stack.
#[test]
fn tiled_feature_encoder_equals_whole_clip() {
    // 74 and 49 frames (the second clip's length is no multiple of the stride).
    for n in [24_000, 15_999] {
        let samples = clip(n);
        for dir in FIXTURES {
            for dtype in [DType::F32, DType::BF16] {
                let hubert = crate::Hubert::load(&fixture(dir), &Device::Cpu, dtype).unwrap();
                let fe = &hubert.model.feature_extractor;
                let input = Tensor::from_slice(&samples, (1, n), &Device::Cpu).unwrap();
                let whole = fe.forward_with(&input, usize::MAX).unwrap();
                for tile in [1, 3, 16, 48] {
                    let tiled = fe.forward_with(&input, tile).unwrap();
                    let diff = max_abs_diff(&whole, &tiled);
                    assert!(
                        diff < 1e-5,
                        "{dir} {dtype:?} {n} samples, tile {tile}: {diff:e}"
                    );
                }
            }
        }
    }
}
