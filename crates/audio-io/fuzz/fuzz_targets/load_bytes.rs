//! Any bytes into `load_bytes` and `probe_bytes`: Ok or an error, never a panic, never a
//! non-finite sample. Panics inside the decoder are caught by the crate's guard and come back
//! as `AudioError::Decoder { detail: "decoder panicked: ..." }`; this target turns those back
//! into crashes so the fuzzer reports them.
#![no_main]

use audio_io::{load_bytes, probe_bytes, AudioError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match load_bytes(data.to_vec(), "fuzz.bin") {
        Ok(samples) => assert!(!samples.is_empty() && samples.iter().all(|v| v.is_finite())),
        Err(AudioError::Decoder { detail, .. }) => {
            assert!(!detail.starts_with("decoder panicked"), "{detail}")
        }
        Err(_) => {}
    }
    if let Err(AudioError::Decoder { detail, .. }) = probe_bytes(data.to_vec(), "fuzz.bin") {
        assert!(!detail.starts_with("decoder panicked"), "{detail}");
    }
});
