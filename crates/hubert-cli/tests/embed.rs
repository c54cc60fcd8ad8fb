//! `hubert embed` end to end on the hubert-core fixtures: real WAV files (PCM16 and float32),
//! every hidden state against transformers' outputs, metadata, and bad-file handling.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

fn core_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hubert-core/tests/fixtures")
}

const CLIPS: [&str; 5] = [
    "min400_pcm16",
    "odd1234_float",
    "half8000_pcm16",
    "one16000_float",
    "one16000_pcm16",
];

fn hubert() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hubert"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn metadata(path: &Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().clone().unwrap()
}

#[test]
fn embed_all_layers_with_frames_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let wavs: Vec<PathBuf> = CLIPS
        .iter()
        .map(|c| core_fixtures().join("audio").join(format!("{c}.wav")))
        .collect();
    // Every family in its hub layout: HuBERT base/large, DistilHuBERT, wav2vec2 (pre-training
    // layout and large .bin), data2vec-audio, WavLM (with task heads, and large .bin).
    for (dir, arch) in [
        ("tiny-base", "base"),
        ("tiny-large-bin", "large"),
        ("tiny-distilhubert", "distilhubert"),
        ("tiny-wav2vec2", "wav2vec2"),
        ("tiny-wav2vec2-large", "wav2vec2large"),
        ("tiny-data2vec", "data2vec"),
        ("tiny-wavlm", "wavlm"),
        ("tiny-wavlm-large", "wavlmlarge"),
    ] {
        let status = hubert()
            .args([
                "embed",
                "--layers",
                "all",
                "--frames",
                "--batch-size",
                "2",
                "--model",
            ])
            .arg(core_fixtures().join(dir))
            .arg("--output")
            .arg(&out)
            .args(&wavs)
            .status()
            .unwrap();
        assert!(status.success());
        let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
        let exp = candle_core::safetensors::load(
            core_fixtures().join("expected.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let pooled = &got["pooled"];
        assert_eq!(pooled.dims(), &[CLIPS.len(), 3, 32]);
        for (i, clip) in CLIPS.iter().enumerate() {
            let hidden = &exp[&format!("{arch}.{clip}.hidden_states")];
            let frames = &got[&format!("frames.{i}")];
            let d = max_abs_diff(frames, hidden);
            assert!(d < 1e-4, "{dir} {clip}: frames differ by {d}");
            let d = max_abs_diff(&pooled.get(i).unwrap(), &hidden.mean(1).unwrap());
            assert!(d < 1e-4, "{dir} {clip}: pooled differs by {d}");
        }
        let meta = metadata(&out);
        let files: Vec<String> = serde_json::from_str(&meta["files"]).unwrap();
        assert_eq!(files.len(), CLIPS.len());
        assert!(files[0].ends_with("min400_pcm16.wav"), "input order kept");
        assert_eq!(meta["layers"], "all");
        assert_eq!(
            meta["model"],
            core_fixtures().join(dir).display().to_string()
        );
        assert_eq!(meta["skipped"], "[]");
    }
}

#[test]
fn embed_last_layer_default() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("last.safetensors");
    let wav = core_fixtures().join("audio/one16000_float.wav");
    let ok = hubert()
        .args(["embed", "--model"])
        .arg(core_fixtures().join("tiny-large"))
        .arg("-o")
        .arg(&out)
        .arg(&wav)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let exp =
        candle_core::safetensors::load(core_fixtures().join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let last = exp["large.one16000_float.last_hidden_state"]
        .mean(0)
        .unwrap();
    assert_eq!(got["pooled"].dims(), &[1, 1, 32]);
    let d = max_abs_diff(&got["pooled"].flatten_all().unwrap(), &last);
    assert!(d < 1e-4, "last_hidden_state pooled differs by {d}");
    assert!(!got.contains_key("frames.0"));
}

#[test]
fn a_bad_file_stops_with_its_name_unless_skip_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("broken.wav");
    std::fs::write(&bad, b"RIFF\x24\x00\x00\x00WAVEfmt ").unwrap();
    let short = tmp.path().join("short.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&short, spec).unwrap();
    for i in 0..200 {
        w.write_sample((i * 50) as i16).unwrap();
    }
    w.finalize().unwrap();
    let good = core_fixtures().join("audio/half8000_pcm16.wav");
    let out = tmp.path().join("out.safetensors");

    let run = |extra: &[&str]| {
        hubert()
            .args(["embed", "--model"])
            .arg(core_fixtures().join("tiny-base"))
            .arg("--output")
            .arg(&out)
            .args(extra)
            .arg(&good)
            .arg(&bad)
            .arg(&short)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("broken.wav"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "no output on failure");

    let o = run(&["--skip-bad"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("broken.wav"), "{stderr}");
    let meta = metadata(&out);
    let skipped: Vec<serde_json::Value> = serde_json::from_str(&meta["skipped"]).unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("broken.wav"));
    // A clip shorter than the receptive field is zero-padded to it and recorded, as `extract`
    // does (one embedding loop for both).
    let files: Vec<String> = serde_json::from_str(&meta["files"]).unwrap();
    assert_eq!(files.len(), 2);
    assert!(files[1].ends_with("short.wav"), "{files:?}");
    let padded: Vec<String> = serde_json::from_str(&meta["padded"]).unwrap();
    assert_eq!(padded, [files[1].clone()]);
    assert!(stderr.contains("zero-padded"), "{stderr}");
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(got["pooled"].dims(), &[2, 1, 32]);
    let num_frames: Vec<usize> = serde_json::from_str(&meta["num_frames"]).unwrap();
    assert_eq!(num_frames[1], 1, "400 samples make one frame");
}

#[test]
fn layer_indices_out_of_range_fail_before_any_file_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let o = hubert()
        .args(["embed", "--layers", "0,7", "--model"])
        .arg(core_fixtures().join("tiny-base"))
        .arg("--output")
        .arg(&out)
        .arg(tmp.path().join("does-not-exist.wav"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("index 7 out of range"), "{stderr}");
    assert!(!stderr.contains("does-not-exist"), "{stderr}");
}

#[test]
fn dtype_spellings_are_recorded_canonically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let o = hubert()
        .args(["embed", "--dtype", "float32", "--model"])
        .arg(core_fixtures().join("tiny-base"))
        .arg("--output")
        .arg(&out)
        .arg(core_fixtures().join("audio/half8000_pcm16.wav"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(metadata(&out)["dtype"], "f32");
    let o = hubert()
        .args(["embed", "--dtype", "f8", "--model"])
        .arg(core_fixtures().join("tiny-base"))
        .arg("--output")
        .arg(&out)
        .arg(core_fixtures().join("audio/half8000_pcm16.wav"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected f32, f16 or bf16"));
}

#[test]
fn info_prints_the_architecture() {
    let o = hubert()
        .args(["info", "--json", "--model"])
        .arg(core_fixtures().join("tiny-base-bin"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["num_hidden_layers"], 2);
    assert_eq!(v["feat_extract_norm"], "group");
    assert_eq!(v["min_samples"], 400);
    assert!(v["num_parameters"].as_u64().unwrap() > 10_000);
    assert_eq!(v["family"], "hubert");
    for (dir, family) in [
        ("tiny-wavlm", "wavlm"),
        ("tiny-data2vec", "data2vec-audio"),
        ("tiny-wav2vec2", "wav2vec2"),
    ] {
        let o = hubert()
            .args(["info", "--json", "--model"])
            .arg(core_fixtures().join(dir))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["family"], family, "{dir}");
        assert_eq!(v["hidden_size"], 32, "{dir}");
    }
    let o = hubert()
        .args(["info", "--model"])
        .arg(core_fixtures().join("tiny-wavlm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("family           wavlm"), "{text}");
    assert!(text.contains("16 buckets, max distance 20"), "{text}");
    // A checkpoint of another model type is refused, naming it.
    let o = hubert()
        .args(["info", "--model"])
        .arg(core_fixtures().join("tiny-bert"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("model type `bert`"), "{err}");
    let o = hubert()
        .args(["info", "--model", "/no/such/model"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/model"));
}

/// `--max-seconds` keeps the first S seconds: the cropped file embeds exactly as a file holding
/// only those samples, shorter files are untouched, and the metadata says what was cropped.
#[test]
fn max_seconds_crops_to_the_first_seconds_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let long = core_fixtures().join("audio/one16000_float.wav");
    let samples: Vec<f32> = hound::WavReader::open(&long)
        .unwrap()
        .samples::<f32>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(samples.len(), 16_000);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let head = tmp.path().join("head.wav");
    let mut w = hound::WavWriter::create(&head, spec).unwrap();
    samples[..8000]
        .iter()
        .for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    let short = core_fixtures().join("audio/odd1234_float.wav");

    let run = |args: &[&str], files: &[&Path], out: &Path| {
        let ok = hubert()
            .args(["embed", "--layers", "all", "--model"])
            .arg(core_fixtures().join("tiny-base"))
            .args(args)
            .arg("-o")
            .arg(out)
            .args(files)
            .status()
            .unwrap()
            .success();
        assert!(ok, "hubert embed {args:?}");
        candle_core::safetensors::load(out, &Device::Cpu).unwrap()
    };
    let cropped_out = tmp.path().join("cropped.safetensors");
    let cropped = run(&["--max-seconds", "0.5"], &[&long, &short], &cropped_out);
    let reference = run(&[], &[&head, &short], &tmp.path().join("head.safetensors"));
    let d = max_abs_diff(&cropped["pooled"], &reference["pooled"]);
    assert!(d < 1e-6, "cropped vs first 8000 samples: {d}");
    let meta = metadata(&cropped_out);
    assert_eq!(meta["max_seconds"], "0.5");
    let listed: Vec<String> = serde_json::from_str(&meta["cropped"]).unwrap();
    assert_eq!(listed, vec![long.display().to_string()]);
    // 8000 samples: (8000 - 400) / 320 + 1 frames; the short file keeps its own.
    let frames: Vec<usize> = serde_json::from_str(&meta["num_frames"]).unwrap();
    assert_eq!(frames[0], 24);

    let bad = hubert()
        .args(["embed", "--max-seconds", "0", "--model"])
        .arg(core_fixtures().join("tiny-base"))
        .arg("-o")
        .arg(tmp.path().join("x.safetensors"))
        .arg(&long)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("positive number of seconds"));
}

/// `--chunk-seconds`: files that fit one window embed as without it; longer ones are windows
/// embedded separately whose frames are stitched (each shared frame from the window where it is
/// furthest from an edge) and pooled over the whole file; the settings are in the metadata.
#[test]
fn chunked_files_stitch_window_frames_and_pool_over_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let wav = core_fixtures().join("audio/one16000_float.wav");
    let samples: Vec<f32> = hound::WavReader::open(&wav)
        .unwrap()
        .samples::<f32>()
        .map(Result::unwrap)
        .collect();
    let run = |args: &[&str], file: &Path, out: &Path| {
        let output = hubert()
            .args(["embed", "--layers", "all", "--frames", "--model"])
            .arg(core_fixtures().join("tiny-base"))
            .args(args)
            .arg("-o")
            .arg(out)
            .arg(file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        candle_core::safetensors::load(out, &Device::Cpu).unwrap()
    };
    let whole = run(&[], &wav, &tmp.path().join("whole.safetensors"));
    let one_window = tmp.path().join("one.safetensors");
    let fits = run(&["--chunk-seconds", "2"], &wav, &one_window);
    assert_eq!(max_abs_diff(&whole["pooled"], &fits["pooled"]), 0.0);
    assert_eq!(metadata(&one_window)["chunked"], "[]");

    // 0.4 s windows (20 frames, 6480 samples), 5 frames shared: window 0 keeps frames 0..18
    // (frame 17 is 2 frames from an edge in both windows: it stays with the earlier one).
    let out = tmp.path().join("chunked.safetensors");
    let chunked = run(
        &["--chunk-seconds", "0.4", "--chunk-overlap", "0.1"],
        &wav,
        &out,
    );
    let frames = &chunked["frames.0"];
    assert_eq!(frames.dims(), &[3, 49, 32]);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let first = tmp.path().join("first.wav");
    let mut w = hound::WavWriter::create(&first, spec).unwrap();
    samples[..6480]
        .iter()
        .for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    let alone = run(&[], &first, &tmp.path().join("first.safetensors"));
    let head = frames.narrow(1, 0, 18).unwrap();
    let expected = alone["frames.0"].narrow(1, 0, 18).unwrap();
    assert!(max_abs_diff(&head, &expected) < 1e-6);
    // Frame 18 comes from window 1, not window 0.
    let w0 = alone["frames.0"].narrow(1, 18, 1).unwrap();
    assert!(max_abs_diff(&frames.narrow(1, 18, 1).unwrap(), &w0) > 1e-6);
    let mean = frames.mean(1).unwrap().unsqueeze(0).unwrap();
    assert!(max_abs_diff(&chunked["pooled"], &mean) < 1e-5);
    // The chunked result deviates from the full-context one (it is not the same computation).
    assert!(max_abs_diff(&chunked["pooled"], &whole["pooled"]) > 1e-6);
    let meta = metadata(&out);
    assert_eq!(meta["chunk_seconds"], "0.4");
    assert_eq!(meta["chunk_overlap"], "0.1");
    assert_eq!(meta["frame_centre_seconds"], "0.02 * i + 0.0125");
    let listed: Vec<String> = serde_json::from_str(&meta["chunked"]).unwrap();
    assert_eq!(listed, vec![wav.display().to_string()]);

    let bad = hubert()
        .args([
            "embed",
            "--chunk-seconds",
            "0.4",
            "--chunk-overlap",
            "0.4",
            "--model",
        ])
        .arg(core_fixtures().join("tiny-base"))
        .arg("-o")
        .arg(tmp.path().join("x.safetensors"))
        .arg(&wav)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("more frames than the overlap"));
}
