//! Readers for the safetensors fixtures that `scripts/` writes for these tests.

use safetensors::SafeTensors;

/// The bytes of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A float32 tensor's values.
pub fn tensor_f32(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// An int64 tensor's values (labels, indices).
pub fn tensor_usize(st: &SafeTensors<'_>, name: &str) -> Vec<usize> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

/// The `<part>_features` and `<part>_labels` tensors (`part` is "train" or "test").
pub fn features_and_labels(st: &SafeTensors<'_>, part: &str) -> (Vec<f32>, Vec<usize>) {
    (
        tensor_f32(st, &format!("{part}_features")),
        tensor_usize(st, &format!("{part}_labels")),
    )
}
