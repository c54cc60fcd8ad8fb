//! `urbansound8k`: UrbanSound8K with frozen HuBERT features. `urbansound8k run` downloads (if
//! missing), extracts, trains the linear and MLP probes under 10-fold cross-validation over the
//! official folds and reports.

fn main() {
    pipeline::cli::main::<urbansound8k::UrbanSound8kOptions, _>(
        "urbansound8k",
        "UrbanSound8K urban sound classification with frozen HuBERT features",
        urbansound8k::UrbanSound8k::new,
    );
}
