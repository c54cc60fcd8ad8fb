//! The cosine kNN probe against scikit-learn's `KNeighborsClassifier(n_neighbors=10,
//! metric="cosine")` on the fixture written by `scripts/make_knn_fixture.py`: the same
//! neighbours and the same predictions (vote ties included) for every test row.

mod common;

use common::{features_and_labels, fixture, tensor_f32, tensor_usize};
use probe_heads::{Dataset, KnnClassifier};

#[test]
fn neighbours_and_predictions_match_scikit_learn() {
    let bytes = fixture("knn_cosine.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dim = st.tensor("train_features").unwrap().shape()[1];
    let k = st.tensor("neighbors").unwrap().shape()[1];
    let (xtr, ytr) = features_and_labels(&st, "train");
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
