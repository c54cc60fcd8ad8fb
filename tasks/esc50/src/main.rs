//! `esc50`: ESC-50 / ESC-10 with frozen HuBERT features. `esc50 run` downloads (if missing),
//! extracts, trains the linear and MLP probes under 5-fold cross-validation and reports.

fn main() {
    pipeline::cli::main::<esc50::Esc50Options, _>(
        "esc50",
        "ESC-50 environmental sound classification with frozen HuBERT features",
        esc50::Esc50::new,
    );
}
