//! No input bytes make `load_bytes`/`probe_bytes` panic: random bytes and mutated valid files
//! (bit flips, truncation, mangled headers, spliced chunks). The decode runs under
//! `catch_unwind`, so a panic would surface as `AudioError::Decoder` with "decoder panicked":
//! that is treated as a failure here, so this test catches panics the guard would hide.
//! The cargo-fuzz target in `fuzz/` explores the same property without a time bound.

mod common;

use audio_io::{load_bytes, probe_bytes, AudioError};
use common::{fixture, sine_interleaved, Encoding, WavSpec};
use proptest::prelude::*;

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let x = sine_interleaved(440.0, 22_050, 600, 2, 0.7);
    let mut ext = WavSpec::new(22_050, 2, Encoding::Pcm(24));
    ext.extensible = true;
    ext.extra_chunks = vec![(*b"LIST", b"INFOjunk\x01\0\0\0x\0".to_vec())];
    let mut seeds = vec![
        (
            "s16.wav",
            WavSpec::new(22_050, 2, Encoding::Pcm(16)).build(&x),
        ),
        (
            "f32.wav",
            WavSpec::new(16_000, 2, Encoding::Float(32)).build(&x),
        ),
        (
            "f64.wav",
            WavSpec::new(8_000, 1, Encoding::Float(64)).build(&x[..600]),
        ),
        (
            "u8.wav",
            WavSpec::new(44_100, 1, Encoding::Pcm(8)).build(&x[..301]),
        ),
        ("ext24.wav", ext.build(&x)),
    ];
    for name in [
        "speech_16k_mono.flac",
        "speech_44k1_stereo.flac",
        "speech_44k1_mono.mp3",
        "speech_44k1_mono.ogg",
    ] {
        let bytes = std::fs::read(fixture(name).path()).unwrap();
        // Keep the lossy/FLAC seeds short so each case stays fast (truncation is a mutation
        // in its own right; the decoder sees a cut stream either way).
        seeds.push((name, bytes[..bytes.len().min(6_000)].to_vec()));
    }
    seeds
}

/// Decode must return Ok with finite samples, or an error; never a caught panic.
fn check(bytes: Vec<u8>, name: &str) -> Result<(), TestCaseError> {
    match load_bytes(bytes.clone(), name) {
        Ok(samples) => {
            prop_assert!(!samples.is_empty());
            prop_assert!(samples.iter().all(|v| v.is_finite()));
        }
        Err(AudioError::Decoder { detail, .. }) => {
            prop_assert!(!detail.starts_with("decoder panicked"), "{name}: {detail}");
        }
        Err(err) => prop_assert!(err.to_string().starts_with(name), "{err}"),
    }
    if let Err(AudioError::Decoder { detail, .. }) = probe_bytes(bytes, name) {
        prop_assert!(
            !detail.starts_with("decoder panicked"),
            "probe {name}: {detail}"
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBits(Vec<(usize, u8)>),
    Truncate(usize),
    MangleHeader(Vec<(usize, u8)>),
    Splice { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), 0u8..8), 1..8).prop_map(Mutation::FlipBits),
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec((0usize..96, any::<u8>()), 1..6).prop_map(Mutation::MangleHeader),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Mutation::Delete { at, len }),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let n = bytes.len().max(1);
    match m {
        Mutation::FlipBits(flips) => {
            for (pos, bit) in flips {
                let i = pos % n;
                if i < bytes.len() {
                    bytes[i] ^= 1 << bit;
                }
            }
        }
        Mutation::Truncate(at) => bytes.truncate(at % n),
        Mutation::MangleHeader(edits) => {
            for (i, v) in edits {
                if *i < bytes.len() {
                    bytes[*i] = *v;
                }
            }
        }
        Mutation::Splice { at, bytes: extra } => {
            let at = at % n;
            bytes.splice(at..at, extra.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            bytes.drain(at..end);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_files_never_panic(
        seed in 0usize..9,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (name, mut bytes) = seeds().swap_remove(seed);
        for m in &mutations {
            bytes = apply(bytes, m);
        }
        check(bytes, name)?;
    }

    #[test]
    fn random_bytes_behind_a_magic_never_panic(
        magic in prop::sample::select(vec![
            b"RIFF\x24\x08\0\0WAVEfmt ".to_vec(),
            b"fLaC\0\0\0\x22".to_vec(),
            b"OggS\0\x02".to_vec(),
            b"ID3\x04\0\0".to_vec(),
            vec![0xFF, 0xFB, 0x90, 0x64],
            Vec::new(),
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..2_000),
    ) {
        let mut bytes = magic;
        bytes.extend_from_slice(&tail);
        check(bytes, "random.bin")?;
    }
}
