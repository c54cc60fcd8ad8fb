//! `report`: `cargo run -p report -- --results-dir results` writes `results/summary.{md,csv,json}`
//! and `results/task_similarity.{md,png}` from every `results/<task>/<slug>/results.json`.

use std::path::PathBuf;

use clap::Parser;

/// Cross-task summary of probe results.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Folder holding `<task>/<slug>/results.json` (a task's `--results-dir`).
    #[arg(long, value_name = "DIR", default_value = "results")]
    results_dir: PathBuf,
}

fn main() {
    terminal::init_logging();
    let args = Args::parse();
    match report::write_report(&args.results_dir) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
