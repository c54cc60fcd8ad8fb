//! `icbhi`: ICBHI 2017 respiratory sounds with frozen HuBERT features. `icbhi run` downloads (if
//! missing), extracts, trains the linear and MLP probes on the official train/test split
//! (recording-level normal/abnormal by default) and reports accuracy, F1 and the ICBHI
//! sensitivity, specificity and score.

fn main() {
    pipeline::cli::main::<icbhi::IcbhiOptions, _>(
        "icbhi",
        "ICBHI 2017 respiratory sound classification with frozen HuBERT features",
        icbhi::Icbhi::new,
    );
}
