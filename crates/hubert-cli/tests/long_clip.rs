//! A long clip embeds in bounded memory: `hubert embed` runs in a child process whose address
//! space is capped (`RLIMIT_AS`) below what one layer's untiled attention scores alone would
//! take, so only the tiled path (attention with an online softmax, the conv encoder in tiles)
//! can finish.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The child's address-space limit. `hubert embed` on a 2 s clip runs within 100 MiB; the
/// untiled path on a 4000-frame clip peaks at about 150 MB resident (measured with
/// `/usr/bin/time -v` on tiny-base), so this limit stops it.
const LIMIT: u64 = 128 << 20;

/// Frames of the clip: above the size at which attention switches to tiles.
const FRAMES: usize = 4352;

fn tiny_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hubert-core/tests/fixtures/tiny-base")
}

#[test]
fn a_long_clip_embeds_under_an_address_space_limit() {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny_base().join("config.json")).unwrap()).unwrap();
    let heads = config["num_attention_heads"].as_u64().unwrap();
    // The premise: the untiled score matrices of one layer ([heads, T, T] f32) exceed the limit.
    let untiled = heads * (FRAMES as u64).pow(2) * 4;
    assert!(
        untiled > 2 * LIMIT,
        "untiled scores {untiled} B vs limit {LIMIT} B"
    );

    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("long.wav");
    // FRAMES frames: 320 samples per frame plus the 80 of the receptive field's overlap.
    let samples = FRAMES * 320 + 80;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&wav, spec).unwrap();
    let mut state = 0x9e37_79b9u32;
    for i in 0..samples {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let tone = (i as f32 * 2.0 * std::f32::consts::PI * 220.0 / 16_000.0).sin() * 8000.0;
        let noise = ((state >> 16) as f32 / 65536.0 - 0.5) * 2000.0;
        writer.write_sample((tone + noise) as i16).unwrap();
    }
    writer.finalize().unwrap();

    let out = tmp.path().join("long.safetensors");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hubert"));
    command
        .args(["embed", "--layers", "all", "--model"])
        .arg(tiny_base())
        .arg("--output")
        .arg(&out)
        .arg(&wav)
        .env("RAYON_NUM_THREADS", "2");
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT as libc::rlim_t,
                rlim_max: LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "hubert embed under RLIMIT_AS {LIMIT}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let bytes = std::fs::read(&out).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    assert_eq!(metadata["num_frames"], format!("[{FRAMES}]"));
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let pooled = tensors.tensor("pooled").unwrap();
    let layers = config["num_hidden_layers"].as_u64().unwrap() as usize + 1;
    let hidden = config["hidden_size"].as_u64().unwrap() as usize;
    assert_eq!(pooled.shape(), [1, layers, hidden]);
    let values: Vec<f32> = pooled
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|&v| v != 0.0));
}
