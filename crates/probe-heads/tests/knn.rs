//! The cosine kNN probe against scikit-learn's `KNeighborsClassifier(n_neighbors=10,
//! metric="cosine")` on the fixture written by `scripts/make_knn_fixture.py`: the same
//! neighbours and the same predictions (vote ties included) for every test row.

use probe_heads::{Dataset, KnnClassifier};

fn tensor_f32(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn tensor_usize(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<usize> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

#[test]
fn neighbours_and_predictions_match_scikit_learn() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/knn_cosine.safetensors"
    ))
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dim = st.tensor("train_features").unwrap().shape()[1];
    let k = st.tensor("neighbors").unwrap().shape()[1];
    let (xtr, ytr) = (
        tensor_f32(&st, "train_features"),
        tensor_usize(&st, "train_labels"),
    );
    let xte = tensor_f32(&st, "test_features");
    let expected = tensor_usize(&st, "predictions");
    let neighbours = tensor_usize(&st, "neighbors");
    let n_classes = ytr.iter().max().unwrap() + 1;

    let knn = KnnClassifier::fit(&Dataset::new(&xtr, &ytr, dim).unwrap(), n_classes, k).unwrap();
    let got = knn.kneighbors(&xte).unwrap();
    for (row, (mine, theirs)) in got.iter().zip(neighbours.chunks_exact(k)).enumerate() {
        assert_eq!(mine, theirs, "neighbours of test row {row}");
    }
    assert_eq!(knn.predict(&xte).unwrap(), expected);
    // The fixture exercises vote ties (the smallest label wins).
    let ties = got
        .iter()
        .filter(|n| {
            let mut votes = vec![0; n_classes];
            n.iter().for_each(|&i| votes[ytr[i]] += 1);
            let max = *votes.iter().max().unwrap();
            votes.iter().filter(|&&v| v == max).count() > 1
        })
        .count();
    assert!(ties > 0, "no tied vote in the fixture");
}
