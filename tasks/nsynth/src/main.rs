//! `nsynth`: NSynth instrument family classification with frozen HuBERT features. `nsynth run`
//! downloads (if missing), extracts, trains the linear and MLP probes on the official training
//! split (best epoch chosen on the official validation split), tests on the official test split
//! and reports. `nsynth extract --part train|valid|test` extracts one part at a time.

fn main() {
    pipeline::cli::main::<nsynth::NsynthOptions, _>(
        "nsynth",
        "NSynth instrument family classification with frozen HuBERT features",
        nsynth::Nsynth::new,
    );
}
