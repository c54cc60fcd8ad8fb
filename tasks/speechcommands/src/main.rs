//! `speechcommands`: Speech Commands v0.01 / v0.02 keyword spotting with frozen HuBERT features.
//! `speechcommands run [--version 1|2] [--classes 12]` downloads (if missing), extracts, trains
//! the linear and MLP probes on the official train / validation / test lists and reports.

fn main() {
    pipeline::cli::main::<speechcommands::SpeechCommandsOptions, _>(
        "speechcommands",
        "Speech Commands keyword spotting with frozen HuBERT features",
        speechcommands::SpeechCommands::new,
    );
}
