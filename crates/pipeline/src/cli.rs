//! The command line every task binary shares: `download`, `extract`, `train`, `run`, `merge`,
//! `ablate`,
//! with the flags listed in docs/ARCHITECTURE.md ("Stable interfaces"). A task binary is one call:
//!
//! ```ignore
//! fn main() {
//!     pipeline::cli::main::<Esc50Options, _>("esc50", "ESC-50 environmental sounds", Esc50::new);
//! }
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches, Subcommand};
use hubert_core::{parse_count, LayerSelection, ModelSource};
use probe_heads::TrainConfig;

use crate::ablate::{
    ablate, ablation_dir, full_grid, one_at_a_time, AblateOptions, Component, Grid,
};
use crate::download::{fetch, DownloadOptions};
use crate::extract::{extract, merge, store_path, ExtractOptions, ExtractOutcome};
use crate::naming;
use crate::protocol::Protocol;
use crate::store::{FeatureStore, Pooling, PoolingSet};
use crate::task::Task;
use crate::train::{train, LayerChoice, ProbeChoice, TrainOptions};

/// The `--mirror URL` flag, to `#[command(flatten)]` into a dataset binary's `download` / `run`
/// arguments; pass `mirror` to `DownloadOptions::from_env_and_flag`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MirrorArgs {
    /// Fetch every file from `URL/<file name>` instead of its official URL (for when the official
    /// host is down, or a local copy). Defaults to the environment variable HUBERT_PROBE_MIRROR.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Most bytes one download may have (e.g. 30G); default: the archive's known size with
    /// margin, or 128 GiB when unknown.
    #[arg(long, value_name = "BYTES", value_parser = crate::download::parse_byte_size)]
    pub max_download_bytes: Option<u64>,
    /// Most bytes one archive may unpack to (e.g. 50G); default: the dataset's known size with
    /// margin, or 256 GiB when unknown.
    #[arg(long, value_name = "BYTES", value_parser = crate::download::parse_byte_size)]
    pub max_unpack_bytes: Option<u64>,
    /// Most entries (files and folders) one archive may have; default: the dataset's known count
    /// with margin, or 4,000,000 when unknown.
    #[arg(long, value_name = "N", value_parser = crate::download::parse_byte_size)]
    pub max_unpack_entries: Option<u64>,
}

impl MirrorArgs {
    /// The caps given on the command line.
    pub fn limits(&self) -> crate::download::Limits {
        crate::download::Limits {
            max_download_bytes: self.max_download_bytes,
            max_unpack_bytes: self.max_unpack_bytes,
            max_entries: self.max_unpack_entries,
        }
    }
}

/// Where things live.
#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// Dataset root (the folder the official archive unpacks into); default per task.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Feature stores.
    #[arg(long, value_name = "DIR", default_value = "features")]
    pub features_dir: PathBuf,
    /// Results (`<DIR>/<task>/<slug>/results.json`, report.md, CSVs).
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub results_dir: PathBuf,
    /// Saved probes (`<DIR>/<task>_<slug>_{linear,three}_classifier.safetensors`; the study's
    /// `<DIR>/<task>_{linear,three}_classifier.safetensors` for the `hubert` slug).
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub models_dir: PathBuf,
}

/// `--model` and `--slug` of the commands that read a store rather than run the model (`train`,
/// `ablate`, `merge`): which model's store, results and probes.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreModelArgs {
    /// The model whose features to use (hub id or folder, as given to `extract`); it picks the
    /// store by its slug. Default: the study's facebook/hubert-base-ls960 (slug `hubert`), or,
    /// with `--features FILE`, the model that store records.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Name the model's files are filed under (as given to `extract --slug`).
    #[arg(long, value_name = "NAME", value_parser = crate::naming::parse_slug)]
    pub slug: Option<String>,
}

impl StoreModelArgs {
    /// The slug: `--slug`, else `--model`'s, else the one `features` (a store given with
    /// `--features`) records, else `hubert`.
    pub fn slug(&self, features: Option<&Path>) -> Result<String> {
        if let Some(slug) = &self.slug {
            return Ok(slug.clone());
        }
        if let Some(model) = &self.model {
            return Ok(naming::slug_for(model, None));
        }
        match features {
            Some(path) => Ok(naming::store_slug(&FeatureStore::open(path)?)),
            None => Ok(naming::STUDY_SLUG.to_owned()),
        }
    }
}

/// `--split`: the dataset's official protocol, the original study's random split, or a
/// task-specific protocol (checked against the task's names when the command line is parsed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SplitChoice {
    /// The dataset's official protocol.
    #[default]
    Official,
    /// The original study's stratified random split (`--test-fraction`, `--seed`).
    Random,
    /// A task-specific protocol ([`Task::split_names`]).
    Named(String),
}

impl std::str::FromStr for SplitChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "official" => Self::Official,
            "random" => Self::Random,
            other => Self::Named(other.to_string()),
        })
    }
}

impl std::fmt::Display for SplitChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Official => f.write_str("official"),
            Self::Random => f.write_str("random"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

/// A fraction strictly between 0 and 1 (`--test-fraction`).
fn open_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!(
            "expected a number strictly between 0 and 1, got {s:?}"
        )),
    }
}

/// A fraction in `[0, 1)` (`--val-fraction`: 0 means no validation part).
fn half_open_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number in [0, 1), got {s:?}")),
    }
}

/// A learning rate in `(0, 10]`.
fn learning_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 10.0 => Ok(v),
        _ => Err(format!(
            "expected a learning rate in (0, 10] (the study's is 1e-3), got {s:?}"
        )),
    }
}

/// `train` flags, parsed into types and bounded by clap.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Probe(s) to train.
    #[arg(long, value_enum, default_value = "both")]
    pub probe: ProbeChoice,
    /// Training epochs.
    #[arg(long, default_value_t = 100, value_parser = parse_count::<1, 100_000>)]
    pub epochs: usize,
    /// Probe mini-batch size.
    #[arg(long, default_value_t = 8, value_parser = parse_count::<1, 65_536>)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = learning_rate)]
    pub lr: f64,
    /// Seed of the first run (run r uses seed + r).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `official` (the dataset's protocol), `random` (the original study's stratified split),
    /// or a task-specific name.
    #[arg(long, default_value = "official")]
    pub split: SplitChoice,
    /// Test fraction of `--split random`.
    #[arg(long, default_value_t = 0.2, value_parser = open_fraction)]
    pub test_fraction: f64,
    /// Seeds per fold.
    #[arg(long, default_value_t = 1, value_parser = parse_count::<1, 1_000>)]
    pub runs: usize,
    /// Features to train on: last, a hidden-state index N, all (one probe per layer), or
    /// weighted (a learned softmax-weighted sum of every stored layer, SUPERB's featurizer).
    #[arg(long, default_value = "last")]
    pub layer: LayerChoice,
    /// Hold out this fraction of each training part (group-disjoint) for best-epoch selection
    /// (0: train for all epochs, as the original study did).
    #[arg(long, default_value_t = 0.0, value_parser = half_open_fraction)]
    pub val_fraction: f64,
    /// Skip the PNG plots (confusion matrices, t-SNE, per-layer accuracy).
    #[arg(long)]
    pub no_plots: bool,
    /// Item vector per layer: mean (the study's), max, or meanstd (mean and std concatenated,
    /// 2D wide); max and std must have been extracted (`extract --pooling mean,std,max`).
    #[arg(long, value_enum, default_value = "mean")]
    pub pooling: Pooling,
    /// Feature store to read (default: the one `extract` writes for the chosen layers).
    #[arg(long, value_name = "FILE")]
    pub features: Option<PathBuf>,
}

impl TrainArgs {
    /// The protocol `--split` names for `task`.
    pub fn protocol(&self, task: &dyn Task) -> Result<Protocol> {
        match &self.split {
            SplitChoice::Official => Ok(task.official_protocol()),
            SplitChoice::Random => Ok(Protocol::Random {
                test_fraction: self.test_fraction,
                seed: self.seed,
            }),
            SplitChoice::Named(name) => task
                .custom_protocol(name, self.test_fraction, self.seed)
                .with_context(|| format!("unknown --split {name:?} for {}", task.name())),
        }
    }

    /// The training options for `task` and the model of slug `slug`: hyper-parameters, protocol
    /// and output folders.
    pub fn options(&self, task: &dyn Task, paths: &PathArgs, slug: &str) -> Result<TrainOptions> {
        Ok(TrainOptions {
            probe: self.probe,
            config: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: self.lr,
                seed: self.seed,
                ..TrainConfig::default()
            },
            protocol: self.protocol(task)?,
            runs: self.runs,
            layer: self.layer,
            val_fraction: self.val_fraction,
            pooling: self.pooling,
            results_dir: naming::results_dir(&paths.results_dir, &task.name(), slug),
            models_dir: paths.models_dir.clone(),
            slug: slug.to_owned(),
            plots: !self.no_plots,
        })
    }
}

/// `ablate` flags: `train`'s (less those the grid varies: probe, layer, pooling, lr) and the
/// grid's.
#[derive(Debug, Clone, Args)]
pub struct AblateArgs {
    /// Components varied one at a time: any of pooling, scaler, probe, layer, lr, fraction.
    #[arg(long, default_value = "pooling,scaler,probe,layer,lr,fraction")]
    pub grid: Grid,
    /// Run the cross product of the --grid components instead (many cells: the count is shown).
    #[arg(long)]
    pub full: bool,
    /// Cells trained in parallel (results do not depend on it); default: every core.
    #[arg(long, value_parser = parse_count::<1, 1024>)]
    pub jobs: Option<usize>,
    /// Training epochs.
    #[arg(long, default_value_t = 100, value_parser = parse_count::<1, 100_000>)]
    pub epochs: usize,
    /// Probe mini-batch size.
    #[arg(long, default_value_t = 8, value_parser = parse_count::<1, 65_536>)]
    pub batch_size: usize,
    /// Seed of the first run (run r uses seed + r).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `official` (the dataset's protocol), `random`, or a task-specific name.
    #[arg(long, default_value = "official")]
    pub split: SplitChoice,
    /// Test fraction of `--split random`.
    #[arg(long, default_value_t = 0.2, value_parser = open_fraction)]
    pub test_fraction: f64,
    /// Seeds per cell and fold (3 or more recommended).
    #[arg(long, default_value_t = 3, value_parser = parse_count::<1, 1_000>)]
    pub runs: usize,
    /// Fraction of each training part held out (group-disjoint) to choose the best layer and
    /// learning rate on, when the protocol has no validation part.
    #[arg(long, default_value_t = 0.2, value_parser = open_fraction)]
    pub val_fraction: f64,
    /// Skip ablation.png and learning_curve.png.
    #[arg(long)]
    pub no_plots: bool,
    /// Feature store to read (default: the `--layers all` store, else the last-layer one).
    #[arg(long, value_name = "FILE")]
    pub features: Option<PathBuf>,
}

impl AblateArgs {
    /// The grid options for `task` and the model of slug `slug`.
    pub fn options(&self, task: &dyn Task, paths: &PathArgs, slug: &str) -> Result<AblateOptions> {
        let train = TrainArgs {
            probe: ProbeChoice::Both,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: crate::ablate::STUDY_LR,
            seed: self.seed,
            split: self.split.clone(),
            test_fraction: self.test_fraction,
            runs: self.runs,
            layer: LayerChoice::Last,
            val_fraction: 0.0,
            no_plots: self.no_plots,
            features: self.features.clone(),
            pooling: Pooling::Mean,
        };
        let cells = if self.full {
            full_grid(&self.grid.0)
        } else {
            one_at_a_time(&self.grid.0)
        };
        if self.full {
            eprintln!(
                "warning: --full runs {} cells (the cross product of {}), each on every fold                  with {} seeds",
                cells.len(),
                self.grid
                    .0
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.runs
            );
        }
        if self.runs < 3 {
            eprintln!(
                "note: --runs {} (3 or more seeds per cell give a steadier std)",
                self.runs
            );
        }
        Ok(AblateOptions {
            cells,
            config: TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: crate::ablate::STUDY_LR,
                seed: self.seed,
                ..TrainConfig::default()
            },
            protocol: train.protocol(task)?,
            runs: self.runs,
            val_fraction: self.val_fraction,
            wide_hidden: crate::ablate::WIDE_HIDDEN,
            jobs: self
                .jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            out_dir: ablation_dir(&paths.results_dir, &task.name(), slug),
            plots: !self.no_plots,
            grid: self.grid.0.clone(),
            full: self.full,
        })
    }

    /// Whether some cell reads more than the last layer.
    fn needs_all_layers(&self) -> bool {
        self.grid.0.contains(&Component::Layer)
    }
}

#[derive(Debug, Subcommand)]
enum Command<O: Args> {
    /// Fetch and unpack the official archives (resumable; checksums verified when known).
    Download {
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        task: O,
        #[command(flatten)]
        mirror: MirrorArgs,
    },
    /// Embed every item with HuBERT into the feature store (resumable, shardable).
    Extract {
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        task: O,
        #[command(flatten)]
        extract: ExtractOptions,
        /// Statistics over frames to store per layer: mean (always), std, max, e.g.
        /// `mean,std,max` (one forward pass computes them all; `train --pooling` picks).
        #[arg(long, default_value = "mean", value_name = "LIST")]
        pooling: PoolingSet,
    },
    /// Train and evaluate probes on the feature store; write results.json and report.md.
    Train {
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        task: O,
        #[command(flatten)]
        model: StoreModelArgs,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Download if missing, extract, train, report.
    Run {
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        task: O,
        #[command(flatten)]
        mirror: MirrorArgs,
        #[command(flatten)]
        extract: ExtractOptions,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Vary each component (pooling, scaler, probe, layer, lr, training fraction) around the
    /// study's configuration; write ablation.{md,json,csv} and plots.
    Ablate {
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        task: O,
        #[command(flatten)]
        model: StoreModelArgs,
        #[command(flatten)]
        ablate: AblateArgs,
    },
    /// Join shard outputs into the feature store (optionally copying parts from other folders).
    Merge {
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        task: O,
        #[command(flatten)]
        model: StoreModelArgs,
        /// Hidden states of the store to merge (as given to extract).
        #[arg(long, default_value = "last")]
        layers: LayerSelection,
        /// Other `<store>.parts` folders to copy chunks from.
        parts: Vec<PathBuf>,
    },
}

/// Parses the command line and runs the task; exits non-zero with the error chain on failure.
pub fn main<O, T>(bin: &'static str, about: &'static str, make: impl Fn(&O) -> Result<T>)
where
    O: Args + std::fmt::Debug,
    T: Task,
{
    hubert_core::tune_allocator();
    terminal::init_logging();
    let mut splits = vec!["official", "random"];
    splits.extend_from_slice(T::split_names());
    let split_values = clap::builder::TypedValueParser::try_map(
        clap::builder::PossibleValuesParser::new(splits),
        |s| s.parse::<SplitChoice>(),
    );
    let cmd = <Command<O> as Subcommand>::augment_subcommands(
        clap::Command::new(bin)
            .about(about)
            .version(env!("CARGO_PKG_VERSION"))
            .subcommand_required(true)
            .arg_required_else_help(true),
    )
    .mut_subcommand("train", |c| {
        c.mut_arg("split", |a| a.value_parser(split_values.clone()))
    })
    .mut_subcommand("run", |c| {
        c.mut_arg("split", |a| a.value_parser(split_values.clone()))
    })
    .mut_subcommand("ablate", |c| {
        c.mut_arg("split", |a| a.value_parser(split_values.clone()))
    });
    // A flag given twice counts once, with its last value (as in most Unix tools), so a script can
    // append an override to a shared command line.
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let cmd = names.iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |c| c.args_override_self(true))
    });
    let matches = cmd.get_matches();
    let command = match Command::<O>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Err(e) = dispatch(command, &make) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn data_dir(task: &dyn Task, paths: &PathArgs) -> PathBuf {
    paths
        .data_dir
        .clone()
        .unwrap_or_else(|| task.default_data_dir())
}

fn dispatch<O: Args, T: Task>(command: Command<O>, make: &impl Fn(&O) -> Result<T>) -> Result<()> {
    match command {
        Command::Download {
            paths,
            task,
            mirror,
        } => {
            let task = make(&task)?;
            download(&task, &data_dir(&task, &paths), &mirror)
        }
        Command::Extract {
            paths,
            task,
            extract: mut args,
            pooling,
        } => {
            args.pooling = pooling;
            let task = make(&task)?;
            let source = check_model(&args, None)?;
            run_extract(&task, &paths, &args, source).map(|_| ())
        }
        Command::Train {
            paths,
            task,
            model,
            train: args,
        } => {
            let task = make(&task)?;
            let slug = model.slug(args.features.as_deref())?;
            let opts = args.options(&task, &paths, &slug)?;
            ensure_writable(&[&opts.results_dir, &opts.models_dir])?;
            let store = find_store(&task, &paths, &args, &slug, &model)?;
            run_train(&task, opts, store)
        }
        Command::Run {
            paths,
            task,
            mirror,
            extract: mut ex,
            train: tr,
        } => {
            let task = make(&task)?;
            if let Some(part) = task.extract_only() {
                bail!("`run` extracts every item; to extract only {part}, use `extract`, then `train`");
            }
            if ex.shard.is_some() {
                bail!("`run` extracts everything; use `extract --shard` and `merge` for shards");
            }
            if tr.layer.needs_all_layers() && ex.layers == LayerSelection::Last {
                ex.layers = LayerSelection::All;
            }
            ex.pooling = PoolingSet::new(tr.pooling.stats());
            // Every parameter is checked (model config, output folders) before the download.
            let source = check_model(&ex, Some(tr.layer))?;
            let opts = tr.options(&task, &paths, &ex.slug())?;
            ensure_writable(&[&opts.results_dir, &opts.models_dir])?;
            let dir = data_dir(&task, &paths);
            if !task.is_present(&dir) {
                eprintln!("{} not found: downloading", dir.display());
                download(&task, &dir, &mirror)?;
            }
            let store = match run_extract(&task, &paths, &ex, source)? {
                ExtractOutcome::Complete(p) => p,
                ExtractOutcome::ShardDone { .. } => unreachable!("no shard in run"),
                ExtractOutcome::AssembledElsewhere { by } => bail!(
                    "another process ({by}) is assembling this store; run again when it is done"
                ),
            };
            run_train(&task, opts, store)
        }
        Command::Ablate {
            paths,
            task,
            model,
            ablate: args,
        } => {
            let task = make(&task)?;
            let slug = model.slug(args.features.as_deref())?;
            let opts = args.options(&task, &paths, &slug)?;
            ensure_writable(&[&opts.out_dir])?;
            let store_path = match &args.features {
                Some(p) => p.clone(),
                None => {
                    let layers = if args.needs_all_layers() {
                        vec![LayerSelection::All]
                    } else {
                        vec![LayerSelection::All, LayerSelection::Last]
                    };
                    naming::find_store(&paths.features_dir, &task.name(), &slug, &layers)
                        .with_context(|| {
                            format!(
                                "{} not found; run `{} extract{} --layers all --pooling \
                                 mean,std,max` first (or pass --features FILE){}",
                                store_path(
                                    &paths.features_dir,
                                    &task.name(),
                                    &slug,
                                    &LayerSelection::All
                                )
                                .display(),
                                task.name(),
                                model_flags(&model),
                                naming::other_stores_hint(&paths.features_dir, &task.name())
                            )
                        })?
                }
            };
            let store = FeatureStore::open(&store_path)?;
            let result = ablate(&task, &store, &opts)?;
            let failed = result.cells.iter().filter(|c| c.status != "ok").count();
            println!(
                "{}: {} cells ({} failed)\nablation: {}",
                task.name(),
                result.cells.len(),
                failed,
                opts.out_dir.join("ablation.md").display()
            );
            Ok(())
        }
        Command::Merge {
            paths,
            task,
            model,
            layers,
            parts,
        } => {
            let task = make(&task)?;
            let dataset = task.load_checked(&data_dir(&task, &paths))?;
            let slug = model.slug(None)?;
            let store = store_path(&paths.features_dir, &task.name(), &slug, &layers);
            let out = merge(&dataset, &store, &parts)?;
            eprintln!("merged into {}", out.display());
            Ok(())
        }
    }
}

/// Environment variable that, when set to a non-empty value, makes `download` skip the pinned md5
/// and size checks (for tests serving generated stand-in archives through `--mirror`; never
/// needed for the real archives).
pub const SKIP_CHECKSUMS_ENV: &str = "HUBERT_PROBE_SKIP_CHECKSUMS";

/// `download`: fetch and unpack each official archive, or explain the manual download (pinned
/// checksums are skipped when [`SKIP_CHECKSUMS_ENV`] is set).
pub fn download(task: &dyn Task, data_dir: &Path, mirror: &MirrorArgs) -> Result<()> {
    let resources = task.resources();
    let dest = task.unpack_dir(data_dir);
    if resources.is_empty() {
        match task.manual_download(data_dir) {
            Some(instructions) => bail!("{instructions}"),
            None => bail!("{} has no downloadable archive", task.name()),
        }
    }
    let cache = dest.join(".downloads");
    let opts = DownloadOptions {
        limits: mirror.limits(),
        ..DownloadOptions::from_env_and_flag(mirror.mirror.clone(), &cache, &dest)
    };
    let skip_checks = std::env::var_os(SKIP_CHECKSUMS_ENV).is_some_and(|v| !v.is_empty());
    if skip_checks {
        eprintln!("{SKIP_CHECKSUMS_ENV} is set: pinned md5 and sizes are not checked");
    }
    for resource in &resources {
        let mut resource = resource.clone();
        if skip_checks {
            resource.md5 = None;
            resource.size = None;
        }
        let result = fetch(&resource, &opts);
        if let Ok(path) = &result {
            task.after_fetch(data_dir, &resource, path)?;
        }
        if let Err(e) = result {
            let manual = task
                .manual_download(data_dir)
                .map(|m| format!("\n\n{m}"))
                .unwrap_or_default();
            bail!("{e}{manual}");
        }
    }
    if !task.is_present(data_dir) {
        bail!(
            "downloaded and unpacked into {}, but {} still does not hold the dataset; pass --data-dir to where it is",
            dest.display(),
            data_dir.display()
        );
    }
    eprintln!("{} ready in {}", task.name(), data_dir.display());
    Ok(())
}

/// Checks the model flags before any work: the device is usable by this binary, the checkpoint
/// resolves and its config reads (once), and the layer selection (and a `--layer N` that will
/// train on it) fits the model.
fn check_model(args: &ExtractOptions, train_layer: Option<LayerChoice>) -> Result<ModelSource> {
    args.model.check()?;
    let source = args
        .model
        .source()
        .with_context(|| format!("cannot find model {:?}", args.model.model))?;
    let n = source.config.num_hidden_layers;
    args.layers.validate(n)?;
    if let Some(layer) = train_layer {
        layer.validate(n)?;
    }
    Ok(source)
}

/// Creates each output folder and checks that a file can be written in it, so an unwritable
/// `--results-dir` fails before training rather than after.
fn ensure_writable(dirs: &[&Path]) -> Result<()> {
    for dir in dirs {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
        let probe = dir.join(format!(".write-test-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .with_context(|| format!("cannot write into output folder {}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

fn run_extract(
    task: &dyn Task,
    paths: &PathArgs,
    args: &ExtractOptions,
    source: ModelSource,
) -> Result<ExtractOutcome> {
    let dir = data_dir(task, paths);
    let dataset = task.load_checked(&dir)?;
    for note in &dataset.notes {
        eprintln!("note: {note}");
    }
    let store = store_path(
        &paths.features_dir,
        &task.name(),
        &args.slug(),
        &args.layers,
    );
    let outcome = extract(task, &dataset, &store, args, source)?;
    match &outcome {
        ExtractOutcome::Complete(p) => eprintln!("features: {}", p.display()),
        ExtractOutcome::ShardDone { done, total } => eprintln!(
            "shard done: {done} of {total} chunks present; the store is assembled when all are (or run `merge`)"
        ),
        ExtractOutcome::AssembledElsewhere { by } => eprintln!(
            "shard done: every chunk is present and another process ({by}) assembles the store"
        ),
    }
    Ok(outcome)
}

/// `--model M` and `--slug S` as given, for the command an error message suggests.
fn model_flags(model: &StoreModelArgs) -> String {
    let mut flags = String::new();
    if let Some(m) = &model.model {
        flags.push_str(&format!(" --model {m}"));
    }
    if let Some(s) = &model.slug {
        flags.push_str(&format!(" --slug {s}"));
    }
    flags
}

fn find_store(
    task: &dyn Task,
    paths: &PathArgs,
    args: &TrainArgs,
    slug: &str,
    model: &StoreModelArgs,
) -> Result<PathBuf> {
    if let Some(p) = &args.features {
        return Ok(p.clone());
    }
    let layers = if args.layer.needs_all_layers() {
        vec![LayerSelection::All]
    } else {
        vec![LayerSelection::Last, LayerSelection::All]
    };
    naming::find_store(&paths.features_dir, &task.name(), slug, &layers).with_context(|| {
        format!(
            "{} not found; run `{} extract{}{}` first (or pass --features FILE){}",
            store_path(&paths.features_dir, &task.name(), slug, &layers[0]).display(),
            task.name(),
            model_flags(model),
            if args.layer.needs_all_layers() {
                " --layers all"
            } else {
                ""
            },
            naming::other_stores_hint(&paths.features_dir, &task.name())
        )
    })
}

fn run_train(task: &dyn Task, opts: TrainOptions, store_path: PathBuf) -> Result<()> {
    let store = FeatureStore::open(&store_path)?;
    if store.provenance.task != task.name() {
        bail!(
            "{} holds features of task {:?}, not {:?}",
            store_path.display(),
            store.provenance.task,
            task.name()
        );
    }
    let held = naming::store_slug(&store);
    if held != opts.slug {
        eprintln!(
            "warning: {} holds features of {} (slug {held}); the results are filed under {}",
            store_path.display(),
            store.provenance.model,
            opts.slug
        );
    }
    let outcome = train(task, &store, &opts)?;
    println!("{} ({})", task.name(), opts.protocol.describe());
    for (k, r) in &outcome.results.probes {
        println!(
            "  {k:<7} accuracy {:.4} ± {:.4}   macro-F1 {:.4} ± {:.4}",
            r.accuracy.mean, r.accuracy.std, r.macro_f1.mean, r.macro_f1.std,
        );
    }
    println!(
        "results: {}\nreport:  {}",
        outcome.results_path.display(),
        outcome.report_path.display()
    );
    Ok(())
}
