//! `librispeech`: speaker identification over LibriSpeech train-clean-100 with frozen HuBERT
//! features. `librispeech run` downloads (if missing), extracts, trains the linear and MLP
//! probes on the per-speaker stratified 80/20 split of utterances and reports.

fn main() {
    pipeline::cli::main::<librispeech::LibriSpeechOptions, _>(
        "librispeech",
        "LibriSpeech train-clean-100 speaker identification with frozen HuBERT features",
        librispeech::LibriSpeech::new,
    );
}
