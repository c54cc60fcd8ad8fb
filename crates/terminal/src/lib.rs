//! What every binary (`hubert`, the six task binaries, `report`) shows on the terminal, in one
//! place:
//!
//! - [`init_logging`]: `tracing` events on stderr, warnings and errors by default (a download
//!   retried, a CPU without AVX512_BF16 running bf16 as f32, a fine-tuned head ignored); the
//!   environment variable [`LOG_ENV`] (`HUBERT_LOG`) takes a filter such as `info`, `debug` or
//!   `hubert_core=trace` for more;
//! - [`count_bar`] and [`bytes_bar`]: progress bars on stderr that draw nothing when stderr is
//!   not a terminal (logs, CI, SLURM output files), so long runs never fill a log with bars.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The environment variable holding the log filter (`tracing_subscriber`'s `EnvFilter` syntax).
pub const LOG_ENV: &str = "HUBERT_LOG";

/// Sends `tracing` events to stderr: warnings and errors by default, or what [`LOG_ENV`] asks
/// for. Call once at the start of `main`; a second call does nothing.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

fn on_stderr(bar: ProgressBar) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// A bar over `len` things: `<what> ⠁ [00:01:02] =====>    12/80 <unit> (3.4/s, <msg>) ETA 20s`.
pub fn count_bar(len: u64, what: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!(
        "{what} {{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}{{msg}}) ETA {{eta}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    on_stderr(bar)
}

/// A bar over bytes (a download): `<msg> [=====>   ] 12 MiB/600 MiB 3 MiB/s ETA 3m`, or a
/// spinner with the count when the length is unknown.
pub fn bytes_bar(len: Option<u64>, msg: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    on_stderr(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_made_and_hidden_off_a_terminal() {
        // Tests run with stderr captured or redirected: nothing may be drawn.
        let bar = count_bar(10, "extract", "clips");
        bar.inc(3);
        assert_eq!(bar.position(), 3);
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            assert!(bar.is_hidden());
        }
        let bytes = bytes_bar(None, "file.zip".into());
        bytes.inc(1024);
        assert_eq!(bytes.position(), 1024);
        init_logging();
        init_logging();
    }
}
