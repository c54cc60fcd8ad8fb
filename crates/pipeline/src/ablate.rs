//! `<task> ablate`: each component of the study's configuration varied around it, from the
//! feature store, under the task's protocol; writes `ablation.{md,json,csv}` and two plots.
//!
//! The study's configuration is mean pooling, StandardScaler on, the last layer, all training
//! data, Adam lr 1e-3, with the linear probe and with the study's MLP (256). A *cell* is one
//! configuration. `--grid` picks the components varied (one at a time, for both study probes):
//!
//! | component | values |
//! |---|---|
//! | `pooling` | mean, max, meanstd (mean and std concatenated) |
//! | `scaler` | on, off |
//! | `probe` | linear, mlp (256), mlp-wide (1024), knn (k = 10, cosine) |
//! | `layer` | last, best (one stored layer, chosen on validation), weighted (learned sum) |
//! | `lr` | 1e-4, 1e-3, 1e-2, chosen (on validation, among the three) |
//! | `fraction` | 10, 25, 50, 100 % of each training part (stratified, nested) |
//!
//! `--full` runs the cross product of the chosen components instead (kNN ignores the learning
//! rate and has no weighted variant, so those combinations collapse or drop).
//!
//! # Protocol, selection and the test items
//!
//! Every cell runs on every fold of the protocol (as `train`) with `--runs` seeds (3 by
//! default; kNN is deterministic and runs once per fold). Test items are only ever predicted by
//! the trained probe of their fold: they never enter a training set, a scaler fit or a choice.
//! The `best` layer and the `chosen` lr are picked per fold on a validation part: the
//! protocol's own (official valid split) or a group-disjoint, stratified `--val-fraction` of the
//! fold's training part. Candidates train on the rest of the training part with the first seed;
//! the best validation accuracy wins (ties: the earlier candidate); the winner is then trained
//! on the whole training part with every seed and tested. A chosen lr's test results are those
//! of the fixed-lr cell it chose (the same training, computed once). [`Plan::check`] verifies
//! the bookkeeping; the tests also change every test label and check that no choice moves.
//!
//! # Outputs
//!
//! Per cell: accuracy and macro-F1 as mean ± sample std over fold x seed evaluations, and the
//! difference in accuracy to its *reference* (the study's configuration with the same probe;
//! the study's MLP for mlp-wide and kNN) with a paired bootstrap 95 % interval over test items
//! (each item's correctness averaged over seeds; 2,000 resamples of the items, percentile
//! interval). A cell whose training fails (a non-finite loss) is reported as failed; the grid
//! goes on. Results do not depend on `--jobs` (each training is single-threaded and seeded).
//!
//! # Speed
//!
//! The work is cut into units (one cell, one fold: scaled once, then every seed), run in
//! parallel largest first on `--jobs` threads, with the hand-written probe trainer of
//! `probe-heads`. Features are read once per layer and pooling from the memory-mapped store.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use metrics::{ClassificationReport, MeanStd};
use probe_heads::{Dataset as ProbeData, KnnClassifier, ProbeKind, TrainConfig, Trainer};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scaler::StandardScaler;
use serde::{Deserialize, Serialize};

use crate::protocol::{splits, FoldSplit, Protocol};
use crate::store::{FeatureStore, Pooling};
use crate::task::Task;
use crate::train::{protocol_name, LayerChoice};

/// The study's learning rate.
pub const STUDY_LR: f64 = 1e-3;
/// The fixed learning rates of the `lr` component.
pub const LEARNING_RATES: [f64; 3] = [1e-4, 1e-3, 1e-2];
/// The training-set percentages of the `fraction` component.
pub const FRACTIONS: [u32; 4] = [10, 25, 50, 100];
/// Neighbours of the kNN probe.
pub const KNN_K: usize = 10;
/// Hidden width of the wide MLP.
pub const WIDE_HIDDEN: usize = 1024;
/// Bootstrap resamples of the paired interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The folder of a task's ablation outputs: the model's results folder,
/// `<results_dir>/<task>/<slug>/` ([`crate::naming::results_dir`]).
pub fn ablation_dir(results_dir: &Path, task: &str, slug: &str) -> PathBuf {
    crate::naming::results_dir(results_dir, task, slug)
}

/// A component of the configuration that `--grid` can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// Frame statistics.
    Pooling,
    /// Standardisation.
    Scaler,
    /// The probe.
    Probe,
    /// The layer.
    Layer,
    /// The learning rate.
    Lr,
    /// The training-set fraction.
    Fraction,
}

impl Component {
    /// Every component, in report order.
    pub const ALL: [Component; 6] = [
        Component::Pooling,
        Component::Scaler,
        Component::Probe,
        Component::Layer,
        Component::Lr,
        Component::Fraction,
    ];

    /// The `--grid` name.
    pub fn name(self) -> &'static str {
        match self {
            Component::Pooling => "pooling",
            Component::Scaler => "scaler",
            Component::Probe => "probe",
            Component::Layer => "layer",
            Component::Lr => "lr",
            Component::Fraction => "fraction",
        }
    }
}

/// `--grid a,b,c`: the components, deduplicated, in report order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid(pub Vec<Component>);

impl FromStr for Grid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match Component::ALL.iter().find(|c| c.name() == part) {
                Some(c) => v.push(*c),
                None => {
                    return Err(format!(
                        "unknown component {part:?}; expected a list of pooling, scaler, probe, \
                         layer, lr, fraction"
                    ))
                }
            }
        }
        if v.is_empty() {
            return Err("--grid needs at least one component".into());
        }
        v.sort_unstable();
        v.dedup();
        Ok(Self(v))
    }
}

/// The probe of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeVariant {
    /// The linear probe.
    Linear,
    /// The study's MLP (hidden 256).
    Mlp,
    /// The MLP with a wider hidden layer ([`WIDE_HIDDEN`] unless set otherwise).
    #[serde(rename = "mlp-wide")]
    WideMlp,
    /// Cosine kNN, k = [`KNN_K`].
    Knn,
}

impl ProbeVariant {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            ProbeVariant::Linear => "linear",
            ProbeVariant::Mlp => "mlp",
            ProbeVariant::WideMlp => "mlp-wide",
            ProbeVariant::Knn => "knn",
        }
    }

    /// The trained architecture (`None` for kNN); `wide` is the wide MLP's hidden width.
    pub fn kind(self, wide: usize) -> Option<ProbeKind> {
        match self {
            ProbeVariant::Linear => Some(ProbeKind::Linear),
            ProbeVariant::Mlp => Some(ProbeKind::three_layer()),
            ProbeVariant::WideMlp => Some(ProbeKind::ThreeLayer { hidden: wide }),
            ProbeVariant::Knn => None,
        }
    }
}

/// The layer of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerVariant {
    /// The last stored layer.
    Last,
    /// The single stored layer with the best validation accuracy, per fold.
    Best,
    /// The learned softmax-weighted sum of every stored layer.
    Weighted,
}

impl LayerVariant {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            LayerVariant::Last => "last",
            LayerVariant::Best => "best",
            LayerVariant::Weighted => "weighted",
        }
    }
}

/// The learning rate of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrVariant {
    /// This rate.
    Fixed(f64),
    /// The best of [`LEARNING_RATES`] on validation, per fold.
    Chosen,
}

impl LrVariant {
    fn name(self) -> String {
        match self {
            LrVariant::Fixed(v) => format!("{v:e}"),
            LrVariant::Chosen => "chosen".into(),
        }
    }
}

/// One configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellConfig {
    /// Frame statistics.
    pub pooling: Pooling,
    /// StandardScaler fit on the training part (else raw features).
    pub scaler: bool,
    /// The probe.
    pub probe: ProbeVariant,
    /// The layer.
    pub layer: LayerVariant,
    /// The learning rate.
    pub lr: LrVariant,
    /// Percent of each training part used.
    pub fraction: u32,
}

impl CellConfig {
    /// The study's configuration with `probe`.
    pub fn study(probe: ProbeVariant) -> Self {
        Self {
            pooling: Pooling::Mean,
            scaler: true,
            probe,
            layer: LayerVariant::Last,
            lr: LrVariant::Fixed(STUDY_LR),
            fraction: 100,
        }
    }

    /// The study configuration this cell is compared with: same probe for the linear probe and
    /// the MLP, the study's MLP for the other probes.
    pub fn reference(&self) -> Self {
        match self.probe {
            ProbeVariant::Linear => Self::study(ProbeVariant::Linear),
            _ => Self::study(ProbeVariant::Mlp),
        }
    }

    /// `pooling=max scaler=off ...`: the components that differ from the study's, after the
    /// probe; `study` alone when none does.
    pub fn label(&self) -> String {
        let s = Self::study(self.probe);
        let mut parts = vec![self.probe.name().to_string()];
        if self.pooling != s.pooling {
            parts.push(format!("pooling={}", self.pooling));
        }
        if !self.scaler {
            parts.push("scaler=off".into());
        }
        if self.layer != s.layer {
            parts.push(format!("layer={}", self.layer.name()));
        }
        if self.lr != s.lr && self.probe != ProbeVariant::Knn {
            parts.push(format!("lr={}", self.lr.name()));
        }
        if self.fraction != 100 {
            parts.push(format!("fraction={}%", self.fraction));
        }
        if parts.len() == 1 && matches!(self.probe, ProbeVariant::Linear | ProbeVariant::Mlp) {
            parts.push("(study)".into());
        }
        parts.join(" ")
    }

    /// Whether the configuration can run: kNN has no learned layer weights, and a layer and a
    /// learning rate are not chosen together (one choice per cell).
    fn valid(&self) -> bool {
        let knn_weighted = self.probe == ProbeVariant::Knn && self.layer == LayerVariant::Weighted;
        let two_choices = self.layer == LayerVariant::Best && self.lr == LrVariant::Chosen;
        !(knn_weighted || two_choices)
    }

    /// kNN does not use a learning rate: its cells keep the study's.
    fn normalised(mut self) -> Self {
        if self.probe == ProbeVariant::Knn {
            self.lr = LrVariant::Fixed(STUDY_LR);
        }
        self
    }
}

/// A cell: its configuration and the component it varies (`None`: a study configuration, or
/// a cross-product cell).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The component varied.
    pub component: Option<Component>,
    /// The configuration.
    pub config: CellConfig,
}

/// Sets one component of a configuration.
type Setter = Box<dyn Fn(&mut CellConfig)>;

fn values(component: Component) -> Vec<Setter> {
    match component {
        Component::Pooling => [Pooling::Mean, Pooling::Max, Pooling::Meanstd]
            .into_iter()
            .map(|p| Box::new(move |c: &mut CellConfig| c.pooling = p) as Setter)
            .collect(),
        Component::Scaler => [true, false]
            .into_iter()
            .map(|v| Box::new(move |c: &mut CellConfig| c.scaler = v) as Setter)
            .collect(),
        Component::Probe => [
            ProbeVariant::Linear,
            ProbeVariant::Mlp,
            ProbeVariant::WideMlp,
            ProbeVariant::Knn,
        ]
        .into_iter()
        .map(|v| Box::new(move |c: &mut CellConfig| c.probe = v) as Setter)
        .collect(),
        Component::Layer => [
            LayerVariant::Last,
            LayerVariant::Best,
            LayerVariant::Weighted,
        ]
        .into_iter()
        .map(|v| Box::new(move |c: &mut CellConfig| c.layer = v) as Setter)
        .collect(),
        Component::Lr => LEARNING_RATES
            .iter()
            .map(|&v| LrVariant::Fixed(v))
            .chain([LrVariant::Chosen])
            .map(|v| Box::new(move |c: &mut CellConfig| c.lr = v) as Setter)
            .collect(),
        Component::Fraction => FRACTIONS
            .into_iter()
            .map(|v| Box::new(move |c: &mut CellConfig| c.fraction = v) as Setter)
            .collect(),
    }
}

fn push_unique(cells: &mut Vec<Cell>, cell: Cell) {
    let config = cell.config.normalised();
    if config.valid() && !cells.iter().any(|c| c.config == config) {
        cells.push(Cell { config, ..cell });
    }
}

/// The two study configurations (linear probe, MLP), the cells every grid starts with.
fn study_cells() -> Vec<Cell> {
    let mut cells = Vec::new();
    for probe in [ProbeVariant::Linear, ProbeVariant::Mlp] {
        push_unique(
            &mut cells,
            Cell {
                component: None,
                config: CellConfig::study(probe),
            },
        );
    }
    cells
}

/// The one-at-a-time grid: the two study configurations (linear probe, MLP), then each value
/// of each component in `grid` with every other component at the study's value, for both
/// probes (the `probe` component adds the wide MLP and kNN once).
pub fn one_at_a_time(grid: &[Component]) -> Vec<Cell> {
    let mut cells = study_cells();
    for &component in grid {
        for probe in [ProbeVariant::Linear, ProbeVariant::Mlp] {
            for set in values(component) {
                let mut config = CellConfig::study(probe);
                set(&mut config);
                push_unique(
                    &mut cells,
                    Cell {
                        component: Some(component),
                        config,
                    },
                );
            }
        }
    }
    cells
}

/// The cross product of every value of the components in `grid` (the others at the study's
/// values; both study probes when `probe` is not in the grid).
pub fn full_grid(grid: &[Component]) -> Vec<Cell> {
    let mut configs = vec![
        CellConfig::study(ProbeVariant::Linear),
        CellConfig::study(ProbeVariant::Mlp),
    ];
    for &component in grid {
        let mut next = Vec::new();
        for base in &configs {
            for set in values(component) {
                let mut c = *base;
                set(&mut c);
                next.push(c);
            }
        }
        configs = next;
    }
    let mut cells = study_cells();
    for config in configs {
        push_unique(
            &mut cells,
            Cell {
                component: None,
                config,
            },
        );
    }
    cells
}

/// What a unit's training is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    /// Trained on the fold's training part, evaluated on its test part, every seed.
    Test,
    /// A candidate of a per-fold choice: trained on the fit part, evaluated on the validation
    /// part, first seed.
    Select(Candidate),
}

/// A candidate of a per-fold choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Candidate {
    /// Stored layer position.
    Layer(usize),
    /// Learning rate.
    Lr(f64),
}

/// The features a unit trains on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnitLayer {
    /// One stored layer position.
    Stored(usize),
    /// Every stored layer, learned weighting.
    Weighted,
    /// The layer chosen for this fold (filled in after selection).
    Chosen,
}

/// One piece of work: a cell on a fold.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Index into [`Plan::cells`].
    pub cell: usize,
    /// Index into [`Plan::folds`].
    pub fold: usize,
    /// Test or selection.
    pub purpose: Purpose,
    /// Rows trained on.
    pub train: Arc<Vec<usize>>,
    /// Rows for best-epoch selection (the protocol's validation part), may be empty.
    pub valid: Arc<Vec<usize>>,
    /// Rows predicted.
    pub eval: Arc<Vec<usize>>,
    /// Features.
    pub layer: UnitLayer,
    /// Learning rate.
    pub lr: f64,
    /// Seeds (indices into [`Plan::seeds`]) trained.
    pub runs: usize,
}

/// Every unit of a grid, with the folds they use.
#[derive(Debug)]
pub struct Plan {
    /// The cells.
    pub cells: Vec<Cell>,
    /// The protocol's folds.
    pub folds: Vec<FoldSplit>,
    /// Per fold: `train` = the part selection candidates train on, `valid` = the part they are
    /// judged on, `test` = the fold's test part (never used by selection).
    pub selection: Vec<FoldSplit>,
    /// Seeds of the runs.
    pub seeds: Vec<u64>,
    /// The work.
    pub units: Vec<Unit>,
    /// For a cell with a chosen lr: the cells with each fixed rate (same other components).
    pub lr_siblings: HashMap<usize, Vec<(f64, usize)>>,
}

/// Settings of a grid run.
#[derive(Debug, Clone)]
pub struct AblateOptions {
    /// Cells.
    pub cells: Vec<Cell>,
    /// Epochs, batch size, first seed (lr is the cell's).
    pub config: TrainConfig,
    /// The protocol.
    pub protocol: Protocol,
    /// Seeds per cell and fold.
    pub runs: usize,
    /// Validation fraction carved from each training part for choices (when the protocol has
    /// no validation part).
    pub val_fraction: f64,
    /// Parallel units.
    pub jobs: usize,
    /// Hidden width of the wide MLP ([`WIDE_HIDDEN`]).
    pub wide_hidden: usize,
    /// `results/<task>/<slug>` ([`ablation_dir`]).
    pub out_dir: PathBuf,
    /// Draw the plots.
    pub plots: bool,
    /// The `--grid` components (for the report).
    pub grid: Vec<Component>,
    /// `--full`.
    pub full: bool,
}

/// The stratified nested subset: per class, the first `ceil(n_c * percent / 100)` (at least
/// one) of the class's rows in an order shuffled by `seed`; a smaller percentage takes a prefix
/// of a larger one's rows. Sorted.
pub fn nested_subset(rows: &[usize], labels: &[usize], percent: u32, seed: u64) -> Vec<usize> {
    if percent >= 100 {
        return rows.to_vec();
    }
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &r in rows {
        by_class.entry(labels[r]).or_default().push(r);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (_, mut class_rows) in by_class {
        class_rows.shuffle(&mut rng);
        let take = (class_rows.len() * percent as usize)
            .div_ceil(100)
            .max(1)
            .min(class_rows.len());
        out.extend_from_slice(&class_rows[..take]);
    }
    out.sort_unstable();
    out
}

impl Plan {
    /// Lays out the units of `opts.cells` on `store`'s items under `opts.protocol`.
    pub fn new(store: &FeatureStore, opts: &AblateOptions) -> Result<Self> {
        if opts.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let labels = store.labels();
        let seed = opts.config.seed;
        let folds = splits(&opts.protocol, &store.items, 0.0, seed)?;
        let selection = splits(&opts.protocol, &store.items, opts.val_fraction, seed)?;
        for (f, s) in folds.iter().zip(&selection) {
            if f.name != s.name || f.test != s.test || s.valid.is_empty() {
                bail!(
                    "fold {}: no validation part for the per-fold choices (raise --val-fraction)",
                    f.name
                );
            }
        }
        let last = store.resolve_layer(LayerChoice::Last)?;
        let cells = opts.cells.clone();
        let mut units = Vec::new();
        let mut lr_siblings = HashMap::new();
        // Subsets per (fold, fraction, fit part or whole training part).
        let subset = |rows: &[usize], fold: usize, percent: u32| -> Arc<Vec<usize>> {
            Arc::new(nested_subset(
                rows,
                &labels,
                percent,
                seed ^ (0xF4AC_0000 + fold as u64),
            ))
        };
        for (ci, cell) in cells.iter().enumerate() {
            let c = cell.config;
            let runs = if c.probe == ProbeVariant::Knn {
                1
            } else {
                opts.runs
            };
            if c.lr == LrVariant::Chosen {
                let mut siblings = Vec::new();
                for &lr in &LEARNING_RATES {
                    let want = CellConfig {
                        lr: LrVariant::Fixed(lr),
                        ..c
                    };
                    let at = cells
                        .iter()
                        .position(|x| x.config == want)
                        .with_context(|| {
                            format!("internal: no cell {} in the grid", want.label())
                        })?;
                    siblings.push((lr, at));
                }
                lr_siblings.insert(ci, siblings);
            }
            for (fi, fold) in folds.iter().enumerate() {
                let sel = &selection[fi];
                let fixed_lr = match c.lr {
                    LrVariant::Fixed(v) => v,
                    LrVariant::Chosen => STUDY_LR,
                };
                let layer = match c.layer {
                    LayerVariant::Last => UnitLayer::Stored(last),
                    LayerVariant::Weighted => UnitLayer::Weighted,
                    LayerVariant::Best => UnitLayer::Chosen,
                };
                let select = |candidate: Candidate, layer: UnitLayer, lr: f64| Unit {
                    cell: ci,
                    fold: fi,
                    purpose: Purpose::Select(candidate),
                    train: subset(&sel.train, fi, c.fraction),
                    valid: Arc::new(Vec::new()),
                    eval: Arc::new(sel.valid.clone()),
                    layer,
                    lr,
                    runs: 1,
                };
                if c.layer == LayerVariant::Best {
                    for pos in 0..store.num_layers {
                        units.push(select(
                            Candidate::Layer(pos),
                            UnitLayer::Stored(pos),
                            fixed_lr,
                        ));
                    }
                }
                if c.lr == LrVariant::Chosen {
                    if c.layer == LayerVariant::Best {
                        bail!(
                            "internal: a cell with both a chosen layer and a chosen lr ({})",
                            c.label()
                        );
                    }
                    for &lr in &LEARNING_RATES {
                        units.push(select(Candidate::Lr(lr), layer, lr));
                    }
                    // Test results come from the fixed-lr sibling chosen.
                    continue;
                }
                units.push(Unit {
                    cell: ci,
                    fold: fi,
                    purpose: Purpose::Test,
                    train: subset(&fold.train, fi, c.fraction),
                    valid: Arc::new(fold.valid.clone()),
                    eval: Arc::new(fold.test.clone()),
                    layer,
                    lr: fixed_lr,
                    runs,
                });
            }
        }
        let plan = Self {
            cells,
            folds,
            selection,
            seeds: (0..opts.runs as u64).map(|r| seed + r).collect(),
            units,
            lr_siblings,
        };
        plan.check()?;
        Ok(plan)
    }

    /// The bookkeeping invariants: no unit trains, validates or chooses on a test item of its
    /// fold; selection units are judged on the fold's validation part only, which they do not
    /// train on; test units predict exactly the fold's test part.
    pub fn check(&self) -> Result<()> {
        for (k, u) in self.units.iter().enumerate() {
            let fold = &self.folds[u.fold];
            let test: std::collections::HashSet<usize> = fold.test.iter().copied().collect();
            let leak = |rows: &[usize]| rows.iter().any(|r| test.contains(r));
            if leak(&u.train) || leak(&u.valid) {
                bail!(
                    "internal: unit {k} trains on a test item of fold {}",
                    fold.name
                );
            }
            match u.purpose {
                Purpose::Test => {
                    if *u.eval != fold.test {
                        bail!(
                            "internal: test unit {k} does not predict fold {}'s test part",
                            fold.name
                        );
                    }
                }
                Purpose::Select(_) => {
                    let valid: std::collections::HashSet<usize> =
                        self.selection[u.fold].valid.iter().copied().collect();
                    if leak(&u.eval)
                        || u.eval.iter().any(|r| !valid.contains(r))
                        || u.train.iter().any(|r| valid.contains(r))
                    {
                        bail!("internal: selection unit {k} of fold {} is not judged on validation alone", fold.name);
                    }
                }
            }
        }
        Ok(())
    }
}

/// One evaluation of a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellEvaluation {
    /// Fold name.
    pub fold: String,
    /// Seed (`None` for kNN, which has none).
    pub seed: Option<u64>,
    /// Test accuracy.
    pub accuracy: f64,
    /// Test macro-F1 (scikit-learn's).
    pub macro_f1: f64,
}

/// A per-fold choice made on validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Fold name.
    pub fold: String,
    /// The chosen layer (hidden-state label) or learning rate.
    pub chosen: serde_json::Value,
    /// Validation accuracy of each candidate (`null`: its training failed).
    pub validation: Vec<(serde_json::Value, Option<f64>)>,
}

/// The paired comparison of a cell with its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// The reference cell's label.
    pub reference: String,
    /// Accuracy of the cell minus the reference's, over the shared test items (each item's
    /// correctness averaged over seeds).
    pub accuracy: f64,
    /// Paired bootstrap 95 % interval of that difference.
    pub ci95: [f64; 2],
    /// Test items compared.
    pub items: usize,
}

/// A cell's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Label (the components that differ from the study's).
    pub label: String,
    /// The component varied.
    pub component: Option<Component>,
    /// The configuration.
    pub config: CellConfig,
    /// `ok` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Accuracy over fold x seed evaluations.
    pub accuracy: Option<MeanStd>,
    /// Macro-F1 over fold x seed evaluations.
    pub macro_f1: Option<MeanStd>,
    /// Every evaluation.
    pub evaluations: Vec<CellEvaluation>,
    /// Per-fold choices (best layer, chosen lr).
    pub choices: Vec<Choice>,
    /// Compared with the reference.
    pub difference: Option<Difference>,
}

/// `ablation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ablation {
    /// Task.
    pub task: String,
    /// Protocol name (`official`, ...).
    pub protocol: String,
    /// Protocol in words.
    pub protocol_description: String,
    /// Feature store.
    pub store: String,
    /// Model of the store.
    pub model: String,
    /// Items.
    pub items: usize,
    /// Epochs per training.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Hidden width of the `mlp-wide` probe.
    pub wide_hidden: usize,
    /// Seeds of the runs.
    pub seeds: Vec<u64>,
    /// How per-fold choices are made.
    pub selection: String,
    /// `one-at-a-time` or `full`.
    pub mode: String,
    /// Components varied.
    pub grid: Vec<Component>,
    /// Every cell, in grid order.
    pub cells: Vec<CellResult>,
    /// Output files next to this one.
    pub files: Vec<String>,
}

/// Validation accuracy of each candidate (`None`: its training failed).
type Scores = Vec<(Candidate, Option<f64>)>;

/// Per (cell, fold): the chosen candidate and every candidate's score.
type Choices = HashMap<(usize, usize), (Candidate, Scores)>;

/// Per run: predictions, or why the training failed.
type RunOutputs = Vec<std::result::Result<Vec<usize>, String>>;

struct UnitOutput {
    /// Per run: predictions on `eval`, or the training error.
    runs: RunOutputs,
}

/// Features per (pooling, stored layer), read once from the mapped store.
struct FeatureCache {
    map: HashMap<(Pooling, usize), Vec<f32>>,
    dim: HashMap<Pooling, usize>,
}

impl FeatureCache {
    fn load(store: &FeatureStore, plan: &Plan) -> Result<Self> {
        let mut map = HashMap::new();
        let mut dim = HashMap::new();
        for u in &plan.units {
            let pooling = plan.cells[u.cell].config.pooling;
            dim.insert(pooling, store.dim * pooling.stats().len());
            let layers: Vec<usize> = match u.layer {
                UnitLayer::Stored(p) => vec![p],
                UnitLayer::Weighted | UnitLayer::Chosen => (0..store.num_layers).collect(),
            };
            for l in layers {
                if let std::collections::hash_map::Entry::Vacant(e) = map.entry((pooling, l)) {
                    e.insert(store.pooled(l, pooling)?);
                }
            }
        }
        Ok(Self { map, dim })
    }
}

fn gather(features: &[f32], rows: &[usize], dim: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        x.extend_from_slice(&features[r * dim..(r + 1) * dim]);
    }
    x
}

/// Train / valid / eval matrices of one unit (scaled with the training part's statistics).
fn prepare(
    cache: &FeatureCache,
    config: &CellConfig,
    unit: &Unit,
    layer: UnitLayer,
    n_layers: usize,
) -> Result<([Vec<f32>; 3], usize, usize)> {
    let dim = cache.dim[&config.pooling];
    let parts = [&unit.train[..], &unit.valid[..], &unit.eval[..]];
    let one = |pos: usize| -> Result<[Vec<f32>; 3]> {
        let f = &cache.map[&(config.pooling, pos)];
        let mut out: [Vec<f32>; 3] = Default::default();
        for (p, rows) in parts.iter().enumerate() {
            out[p] = gather(f, rows, dim);
        }
        if config.scaler {
            let scaler = StandardScaler::fit(&out[0], dim)?;
            for x in out.iter_mut() {
                scaler.transform_inplace(x)?;
            }
        }
        Ok(out)
    };
    match layer {
        UnitLayer::Stored(p) => Ok((one(p)?, dim, 1)),
        UnitLayer::Weighted => {
            let mut stacked: [Vec<f32>; 3] = Default::default();
            for (p, rows) in parts.iter().enumerate() {
                stacked[p] = vec![0.0; rows.len() * n_layers * dim];
            }
            for l in 0..n_layers {
                let per = one(l)?;
                for p in 0..3 {
                    for r in 0..parts[p].len() {
                        let to = (r * n_layers + l) * dim;
                        stacked[p][to..to + dim].copy_from_slice(&per[p][r * dim..(r + 1) * dim]);
                    }
                }
            }
            Ok((stacked, dim * n_layers, n_layers))
        }
        UnitLayer::Chosen => bail!("internal: layer not chosen yet"),
    }
}

/// What every unit reads.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    cache: &'a FeatureCache,
    plan: &'a Plan,
    labels: &'a [usize],
    n_classes: usize,
    base: &'a TrainConfig,
    n_layers: usize,
    wide_hidden: usize,
    jobs: usize,
}

/// Trains and predicts one unit, every run; errors of a run (a non-finite loss) are kept.
fn run_unit(ctx: &Ctx<'_>, unit: &Unit, layer: UnitLayer) -> UnitOutput {
    let Ctx {
        cache,
        plan,
        labels,
        n_classes,
        base,
        n_layers,
        wide_hidden,
        ..
    } = *ctx;
    let config = plan.cells[unit.cell].config;
    let fail_all = |e: String| UnitOutput {
        runs: vec![Err(e); unit.runs],
    };
    let ([train_x, valid_x, eval_x], width, n_l) =
        match prepare(cache, &config, unit, layer, n_layers) {
            Ok(v) => v,
            Err(e) => return fail_all(format!("{e:#}")),
        };
    let ys = |rows: &[usize]| -> Vec<usize> { rows.iter().map(|&r| labels[r]).collect() };
    let (train_y, valid_y) = (ys(&unit.train), ys(&unit.valid));
    let train = match ProbeData::new(&train_x, &train_y, width) {
        Ok(d) => d,
        Err(e) => return fail_all(e.to_string()),
    };
    let valid = if valid_y.is_empty() {
        None
    } else {
        match ProbeData::new(&valid_x, &valid_y, width) {
            Ok(d) => Some(d),
            Err(e) => return fail_all(e.to_string()),
        }
    };
    let Some(kind) = config.probe.kind(wide_hidden) else {
        let out = KnnClassifier::fit(&train, n_classes, KNN_K)
            .and_then(|k| k.predict(&eval_x))
            .map_err(|e| e.to_string());
        return UnitOutput { runs: vec![out] };
    };
    let runs = (0..unit.runs)
        .map(|run| {
            let cfg = TrainConfig {
                seed: base.seed + run as u64,
                learning_rate: unit.lr,
                threads: 1,
                ..base.clone()
            };
            let trainer = Trainer::new(cfg);
            let hook = |_: &probe_heads::EpochStats| ControlFlow::Continue(());
            if matches!(layer, UnitLayer::Weighted) {
                trainer
                    .train_weighted(kind, n_l, n_classes, &train, valid.as_ref(), hook)
                    .and_then(|t| t.model.predict(&eval_x))
            } else {
                trainer
                    .train(kind, n_classes, &train, valid.as_ref(), hook)
                    .and_then(|t| t.model.predict(&eval_x))
            }
            .map_err(|e| e.to_string())
        })
        .collect();
    UnitOutput { runs }
}

/// Rough cost of a unit, to start the largest first.
fn cost(plan: &Plan, u: &Unit, n_layers: usize, wide_hidden: usize) -> f64 {
    let c = plan.cells[u.cell].config;
    let width = c.pooling.stats().len() as f64;
    let probe = match c.probe {
        ProbeVariant::Linear => 1.0,
        ProbeVariant::Mlp => 6.0 * width.sqrt(),
        ProbeVariant::WideMlp => 40.0 * (wide_hidden as f64 / WIDE_HIDDEN as f64).powi(2),
        ProbeVariant::Knn => 0.05,
    };
    let layers = if matches!(u.layer, UnitLayer::Weighted) {
        1.0 + n_layers as f64 * 0.2
    } else {
        1.0
    };
    u.train.len() as f64 * u.runs as f64 * probe * layers * width
}

/// Runs `units` (with their resolved layers) on `ctx.jobs` threads, each taking the largest
/// unit left (longest-processing-time-first scheduling); outputs in unit order.
fn execute(
    ctx: &Ctx<'_>,
    units: &[(Unit, UnitLayer)],
    progress: &indicatif::ProgressBar,
) -> Vec<UnitOutput> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let mut order: Vec<usize> = (0..units.len()).collect();
    let cost_of = |k: usize| cost(ctx.plan, &units[k].0, ctx.n_layers, ctx.wide_hidden);
    order.sort_by(|&a, &b| cost_of(b).total_cmp(&cost_of(a)).then(a.cmp(&b)));
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<UnitOutput>>> = units.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..ctx.jobs.clamp(1, units.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&k) = order.get(i) else { break };
                let (u, layer) = &units[k];
                let out = run_unit(ctx, u, *layer);
                *slots[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
                progress.inc(1);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| UnitOutput {
                    runs: vec![Err("internal: unit not run".into())],
                })
        })
        .collect()
}

fn accuracy_of(pred: &[usize], rows: &[usize], labels: &[usize]) -> f64 {
    let correct = pred
        .iter()
        .zip(rows)
        .filter(|(p, r)| **p == labels[**r])
        .count();
    correct as f64 / rows.len().max(1) as f64
}

/// The per-fold choice of each selection cell: candidate with the best validation accuracy
/// (first on ties; failed candidates never win).
fn choose(
    plan: &Plan,
    units: &[(Unit, UnitLayer)],
    outputs: &[UnitOutput],
    labels: &[usize],
) -> Choices {
    let mut scores: BTreeMap<(usize, usize), Scores> = BTreeMap::new();
    for ((u, _), out) in units.iter().zip(outputs) {
        if let Purpose::Select(c) = u.purpose {
            let acc = out.runs[0]
                .as_ref()
                .ok()
                .map(|p| accuracy_of(p, &u.eval, labels));
            scores.entry((u.cell, u.fold)).or_default().push((c, acc));
        }
    }
    let _ = plan;
    scores
        .into_iter()
        .map(|(key, list)| {
            let mut best: Option<(Candidate, f64)> = None;
            for &(c, acc) in &list {
                if let Some(a) = acc {
                    if best.is_none_or(|(_, b)| a > b) {
                        best = Some((c, a));
                    }
                }
            }
            // Every candidate failed: the first stands (its test training will fail too).
            let chosen = best.map(|(c, _)| c).unwrap_or(list[0].0);
            (key, (chosen, list))
        })
        .collect()
}

/// The bootstrap seed of a cell: from the run's seed and the cell's label, so a cell's interval
/// does not depend on which other cells the grid holds.
fn bootstrap_seed(seed: u64, label: &str) -> u64 {
    // FNV-1a, 64-bit (stable across Rust releases, unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(label.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Percentile paired bootstrap of the mean of `diffs` (seeded).
pub fn paired_bootstrap(diffs: &[f64], resamples: usize, seed: u64) -> [f64; 2] {
    let n = diffs.len();
    if n == 0 {
        return [f64::NAN, f64::NAN];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| diffs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    [at(0.025), at(0.975)]
}

/// Runs the grid and writes `ablation.{md,json,csv}` (and the plots) into `opts.out_dir`.
pub fn ablate(task: &dyn Task, store: &FeatureStore, opts: &AblateOptions) -> Result<Ablation> {
    check_store(task, store, &opts.cells)?;
    let plan = Plan::new(store, opts)?;
    let labels = store.labels();
    let n_classes = store.class_names.len();
    let cache = FeatureCache::load(store, &plan)?;
    let first: Vec<(Unit, UnitLayer)> = plan
        .units
        .iter()
        .filter(|u| u.layer != UnitLayer::Chosen || u.purpose != Purpose::Test)
        .map(|u| (u.clone(), u.layer))
        .collect();
    let ctx = Ctx {
        cache: &cache,
        plan: &plan,
        labels: &labels,
        n_classes,
        base: &opts.config,
        n_layers: store.num_layers,
        wide_hidden: opts.wide_hidden,
        jobs: opts.jobs,
    };
    let progress = terminal::count_bar(plan.units.len() as u64, "ablate", "units");
    let started = std::time::Instant::now();
    let out1 = execute(&ctx, &first, &progress);
    let choices = choose(&plan, &first, &out1, &labels);
    let second: Vec<(Unit, UnitLayer)> = plan
        .units
        .iter()
        .filter(|u| u.layer == UnitLayer::Chosen && u.purpose == Purpose::Test)
        .map(|u| {
            let layer = match choices.get(&(u.cell, u.fold)) {
                Some((Candidate::Layer(p), _)) => UnitLayer::Stored(*p),
                _ => UnitLayer::Chosen,
            };
            (u.clone(), layer)
        })
        .collect();
    let out2 = execute(&ctx, &second, &progress);
    progress.finish_and_clear();
    eprintln!(
        "{} cells, {} units in {:.1} s",
        plan.cells.len(),
        plan.units.len(),
        started.elapsed().as_secs_f64()
    );

    // Test predictions per (cell, fold): run -> predictions.
    let mut tests: HashMap<(usize, usize), RunOutputs> = HashMap::new();
    for ((u, _), out) in first.iter().chain(&second).zip(out1.iter().chain(&out2)) {
        if u.purpose == Purpose::Test {
            tests.insert((u.cell, u.fold), out.runs.clone());
        }
    }
    let layer_name = |p: usize| -> serde_json::Value {
        store
            .provenance
            .layer_indices
            .get(p)
            .and_then(|l| serde_json::to_value(l).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let candidate_name = |c: Candidate| match c {
        Candidate::Layer(p) => layer_name(p),
        Candidate::Lr(v) => serde_json::json!(v),
    };
    // Resolve chosen-lr cells to their siblings' test runs.
    for (&ci, siblings) in &plan.lr_siblings {
        for fi in 0..plan.folds.len() {
            let runs = match choices.get(&(ci, fi)) {
                Some((Candidate::Lr(lr), _)) => siblings
                    .iter()
                    .find(|(v, _)| v == lr)
                    .and_then(|(_, s)| tests.get(&(*s, fi)).cloned()),
                _ => None,
            }
            .unwrap_or_else(|| vec![Err("no learning rate chosen".into())]);
            tests.insert((ci, fi), runs);
        }
    }

    // Per cell: evaluations and per-item correctness (mean over runs).
    let n = store.len();
    let mut per_item: Vec<Option<Vec<Option<f64>>>> = Vec::new();
    let mut cells = Vec::new();
    for (ci, cell) in plan.cells.iter().enumerate() {
        let mut evaluations = Vec::new();
        let mut error = None;
        let mut item_scores: Vec<Option<f64>> = vec![None; n];
        for (fi, fold) in plan.folds.iter().enumerate() {
            let runs = tests.get(&(ci, fi)).cloned().unwrap_or_default();
            let mut sums = vec![0.0; fold.test.len()];
            for (run, r) in runs.iter().enumerate() {
                match r {
                    Ok(pred) => {
                        let y: Vec<usize> = fold.test.iter().map(|&i| labels[i]).collect();
                        let report = ClassificationReport::compute(&y, pred, n_classes)?;
                        evaluations.push(CellEvaluation {
                            fold: fold.name.clone(),
                            seed: (cell.config.probe != ProbeVariant::Knn).then(|| plan.seeds[run]),
                            accuracy: report.accuracy,
                            macro_f1: report.macro_avg.f1,
                        });
                        for (s, (p, t)) in sums.iter_mut().zip(pred.iter().zip(&y)) {
                            *s += f64::from(u8::from(p == t));
                        }
                    }
                    Err(e) => {
                        error.get_or_insert_with(|| format!("fold {}: {e}", fold.name));
                    }
                }
            }
            for (&i, s) in fold.test.iter().zip(&sums) {
                item_scores[i] = Some(s / runs.len().max(1) as f64);
            }
        }
        let cell_choices: Vec<Choice> = plan
            .folds
            .iter()
            .enumerate()
            .filter_map(|(fi, fold)| {
                let (chosen, list) = choices.get(&(ci, fi))?;
                Some(Choice {
                    fold: fold.name.clone(),
                    chosen: candidate_name(*chosen),
                    validation: list.iter().map(|(c, a)| (candidate_name(*c), *a)).collect(),
                })
            })
            .collect();
        let ok = error.is_none() && !evaluations.is_empty();
        let metric = |f: fn(&CellEvaluation) -> f64| -> Option<MeanStd> {
            if !ok {
                return None;
            }
            MeanStd::from_values(&evaluations.iter().map(f).collect::<Vec<_>>()).ok()
        };
        cells.push(CellResult {
            label: cell.config.label(),
            component: cell.component,
            config: cell.config,
            status: if ok { "ok" } else { "failed" }.into(),
            error: if ok {
                None
            } else {
                Some(error.unwrap_or_else(|| "no evaluation".into()))
            },
            accuracy: metric(|e| e.accuracy),
            macro_f1: metric(|e| e.macro_f1),
            evaluations,
            choices: cell_choices,
            difference: None,
        });
        per_item.push(ok.then_some(item_scores));
    }
    // Paired differences to the reference.
    for ci in 0..cells.len() {
        let reference = cells[ci].config.reference();
        let Some(ri) = plan.cells.iter().position(|c| c.config == reference) else {
            continue;
        };
        if ri == ci {
            continue;
        }
        let (Some(mine), Some(theirs)) = (&per_item[ci], &per_item[ri]) else {
            continue;
        };
        let diffs: Vec<f64> = mine
            .iter()
            .zip(theirs)
            .filter_map(|(a, b)| Some((*a)? - (*b)?))
            .collect();
        if diffs.is_empty() {
            continue;
        }
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        cells[ci].difference = Some(Difference {
            reference: cells[ri].label.clone(),
            accuracy: mean,
            ci95: paired_bootstrap(
                &diffs,
                BOOTSTRAP_RESAMPLES,
                bootstrap_seed(opts.config.seed, &cells[ci].label),
            ),
            items: diffs.len(),
        });
    }

    let mut result = Ablation {
        task: task.name(),
        protocol: protocol_name(&opts.protocol).to_string(),
        protocol_description: opts.protocol.describe(),
        store: store.path.display().to_string(),
        model: store.provenance.model.clone(),
        items: store.len(),
        epochs: opts.config.epochs,
        batch_size: opts.config.batch_size,
        wide_hidden: opts.wide_hidden,
        seeds: plan.seeds.clone(),
        selection: format!(
            "per fold, on {}; candidates trained with seed {} on the rest of the training part",
            if plan.folds.iter().any(|f| !f.valid.is_empty()) {
                "the protocol's validation part".to_string()
            } else {
                format!(
                    "a group-disjoint stratified {} of the training part",
                    opts.val_fraction
                )
            },
            opts.config.seed
        ),
        mode: if opts.full { "full" } else { "one-at-a-time" }.into(),
        grid: opts.grid.clone(),
        cells,
        files: Vec::new(),
    };
    write_outputs(&mut result, opts)?;
    Ok(result)
}

/// Checks before any training that the store holds what the cells need.
fn check_store(task: &dyn Task, store: &FeatureStore, cells: &[Cell]) -> Result<()> {
    if store.provenance.task != task.name() {
        bail!(
            "{} holds features of task {:?}, not {:?}",
            store.path.display(),
            store.provenance.task,
            task.name()
        );
    }
    let mut needs = Vec::new();
    for c in cells {
        for &s in c.config.pooling.stats() {
            if !store.pooling.contains(s) && !needs.contains(&s.name()) {
                needs.push(s.name());
            }
        }
    }
    let all_layers = cells.iter().any(|c| c.config.layer != LayerVariant::Last);
    if !needs.is_empty() || (all_layers && store.num_layers < 2) {
        bail!(
            "{} holds {} layer(s) with pooling {}; this grid needs{}{}: run `{} extract{}{}` \
             (or narrow --grid)",
            store.path.display(),
            store.num_layers,
            store.pooling,
            if all_layers { " every layer" } else { "" },
            if needs.is_empty() {
                String::new()
            } else {
                format!(" the frame {}", needs.join(" and "))
            },
            task.name(),
            if all_layers { " --layers all" } else { "" },
            if needs.is_empty() {
                String::new()
            } else {
                " --pooling mean,std,max".to_string()
            }
        );
    }
    Ok(())
}

fn fmt_ms(m: &Option<MeanStd>) -> String {
    m.as_ref()
        .map_or("—".into(), |m| format!("{:.4} ± {:.4}", m.mean, m.std))
}

fn fmt_diff(d: &Option<Difference>) -> String {
    d.as_ref().map_or("—".into(), |d| {
        format!("{:+.4} [{:+.4}, {:+.4}]", d.accuracy, d.ci95[0], d.ci95[1])
    })
}

fn fmt_choices(c: &[Choice]) -> String {
    c.iter()
        .map(|c| format!("{}: {}", c.fold, c.chosen))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The markdown report.
pub fn markdown(a: &Ablation) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# {} — ablation\n", a.task);
    let _ = writeln!(
        s,
        "- Protocol: {} (`--split {}`), {} items; seeds {:?} per fold (kNN: once per fold)",
        a.protocol_description, a.protocol, a.items, a.seeds
    );
    let _ = writeln!(s, "- Features: `{}` (model `{}`)", a.store, a.model);
    let _ = writeln!(
        s,
        "- Training: Adam, batch {}, {} epochs; study configuration: mean pooling, \
         StandardScaler, last layer, all training data, lr 1e-3; mlp = hidden 256, mlp-wide = \
         hidden {}, knn = cosine, k = {KNN_K}",
        a.batch_size, a.epochs, a.wide_hidden
    );
    let _ = writeln!(s, "- Choices (best layer, chosen lr): {}", a.selection);
    let _ = writeln!(
        s,
        "- Grid: {} over {}\n",
        a.mode,
        a.grid
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "Accuracy and macro-F1 are mean ± std over fold x seed evaluations. Δ accuracy is the \
         cell minus its reference (the study's configuration with the same probe; the study's \
         MLP for mlp-wide and knn) over the same test items, with a paired bootstrap 95 % \
         interval; an interval that excludes 0 is a difference the test items support.\n"
    );
    let _ = writeln!(
        s,
        "| component | cell | accuracy | macro-F1 | Δ accuracy [95 % CI] | choices |\n|---|---|---|---|---|---|"
    );
    for c in &a.cells {
        let comp = c.component.map_or("study", |c| c.name());
        if c.status == "ok" {
            let _ = writeln!(
                s,
                "| {comp} | {} | {} | {} | {} | {} |",
                c.label,
                fmt_ms(&c.accuracy),
                fmt_ms(&c.macro_f1),
                fmt_diff(&c.difference),
                fmt_choices(&c.choices)
            );
        } else {
            let _ = writeln!(
                s,
                "| {comp} | {} | failed: {} | — | — | {} |",
                c.label,
                c.error.as_deref().unwrap_or("").replace('|', "/"),
                fmt_choices(&c.choices)
            );
        }
    }
    if !a.files.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for f in a.files.iter().filter(|f| f.ends_with(".png")) {
            let _ = writeln!(s, "![{f}]({f})");
        }
    }
    s
}

fn csv_bytes(a: &Ablation) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "component",
        "cell",
        "pooling",
        "scaler",
        "probe",
        "layer",
        "lr",
        "fraction",
        "status",
        "accuracy_mean",
        "accuracy_std",
        "macro_f1_mean",
        "macro_f1_std",
        "evaluations",
        "reference",
        "diff_accuracy",
        "diff_ci_low",
        "diff_ci_high",
        "choices",
        "error",
    ])?;
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    for c in &a.cells {
        let d = c.difference.as_ref();
        w.write_record([
            c.component.map_or("study", |c| c.name()).to_string(),
            c.label.clone(),
            c.config.pooling.to_string(),
            if c.config.scaler { "on" } else { "off" }.to_string(),
            c.config.probe.name().to_string(),
            c.config.layer.name().to_string(),
            c.config.lr.name(),
            c.config.fraction.to_string(),
            c.status.clone(),
            num(c.accuracy.as_ref().map(|m| m.mean)),
            num(c.accuracy.as_ref().map(|m| m.std)),
            num(c.macro_f1.as_ref().map(|m| m.mean)),
            num(c.macro_f1.as_ref().map(|m| m.std)),
            c.evaluations.len().to_string(),
            d.map_or(String::new(), |d| d.reference.clone()),
            num(d.map(|d| d.accuracy)),
            num(d.map(|d| d.ci95[0])),
            num(d.map(|d| d.ci95[1])),
            fmt_choices(&c.choices),
            c.error.clone().unwrap_or_default(),
        ])?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write the CSV: {}", e.error()))
}

fn write_outputs(a: &mut Ablation, opts: &AblateOptions) -> Result<()> {
    let dir = &opts.out_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = vec![
        "ablation.md".to_string(),
        "ablation.json".into(),
        "ablation.csv".into(),
    ];
    if opts.plots {
        let ok: Vec<&CellResult> = a.cells.iter().filter(|c| c.status == "ok").collect();
        if !ok.is_empty() {
            let labels: Vec<String> = ok.iter().map(|c| c.label.clone()).collect();
            let mean: Vec<f64> = ok
                .iter()
                .map(|c| c.accuracy.as_ref().map_or(0.0, |m| m.mean))
                .collect();
            let std: Vec<f64> = ok
                .iter()
                .map(|c| c.accuracy.as_ref().map_or(0.0, |m| m.std))
                .collect();
            plots::error_bar_chart(
                &dir.join("ablation.png"),
                &format!("{} — ablation (accuracy, mean ± std)", a.task),
                "accuracy",
                &labels,
                &mean,
                &std,
            )
            .context("cannot draw ablation.png")?;
            files.push("ablation.png".into());
        }
        let mut series = Vec::new();
        for probe in [ProbeVariant::Linear, ProbeVariant::Mlp] {
            let points: Vec<Option<&MeanStd>> = FRACTIONS
                .iter()
                .map(|&f| {
                    let want = CellConfig {
                        fraction: f,
                        ..CellConfig::study(probe)
                    };
                    a.cells
                        .iter()
                        .find(|c| c.config == want && c.status == "ok")
                        .and_then(|c| c.accuracy.as_ref())
                })
                .collect();
            if points.iter().all(Option::is_some) {
                series.push(plots::Series {
                    name: probe.name().to_string(),
                    values: points.iter().map(|m| m.map_or(0.0, |m| m.mean)).collect(),
                    spread: Some(points.iter().map(|m| m.map_or(0.0, |m| m.std)).collect()),
                });
            }
        }
        if !series.is_empty() {
            let x: Vec<String> = FRACTIONS.iter().map(|f| format!("{f}%")).collect();
            plots::line_chart(
                &dir.join("learning_curve.png"),
                &format!("{} — learning curve (study configuration)", a.task),
                "training data used",
                "accuracy",
                &x,
                &series,
                (0.0, 1.0),
            )
            .context("cannot draw learning_curve.png")?;
            files.push("learning_curve.png".into());
        }
    }
    a.files = files;
    artifacts::atomic_write(&dir.join("ablation.md"), markdown(a).as_bytes())?;
    artifacts::atomic_write(
        &dir.join("ablation.json"),
        serde_json::to_string_pretty(a)?.as_bytes(),
    )?;
    artifacts::atomic_write(&dir.join("ablation.csv"), &csv_bytes(a)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{write_store, PoolingSet, Provenance, Stat, StoreContents};
    use crate::task::{Dataset, Item, Partition};
    use hubert_core::StoredLayer;

    const CLASSES: usize = 3;
    const FOLDS: u32 = 3;
    const PER: usize = 6; // items per class and fold
    const LAYERS: usize = 3;
    const DIM: usize = 6;

    struct Toy;

    impl Task for Toy {
        fn name(&self) -> String {
            "toy".into()
        }
        fn description(&self) -> String {
            "toy".into()
        }
        fn default_data_dir(&self) -> PathBuf {
            PathBuf::from("data/toy")
        }
        fn resources(&self) -> Vec<crate::download::Resource> {
            Vec::new()
        }
        fn is_present(&self, _: &Path) -> bool {
            true
        }
        fn load(&self, _: &Path) -> Result<Dataset> {
            bail!("not used")
        }
        fn official_protocol(&self) -> Protocol {
            Protocol::PredefinedFolds
        }
    }

    fn items() -> Vec<Item> {
        let mut items = Vec::new();
        for fold in 1..=FOLDS {
            for c in 0..CLASSES {
                for i in 0..PER {
                    items.push(Item {
                        path: format!("{fold}/{c}/{i}.wav"),
                        label: c,
                        split: Partition::Fold(fold),
                        group: None,
                        segment: None,
                    });
                }
            }
        }
        items
    }

    /// Writes a store of `LAYERS` x `DIM` features per item: the means, and with `spread` the
    /// standard deviations and maxima.
    fn write_toy_store(
        path: &Path,
        provenance: &Provenance,
        class_names: &[String],
        items: &[Item],
        features: &[f32],
        spread: Option<(&[f32], &[f32])>,
    ) {
        let contents = StoreContents {
            provenance,
            class_names,
            items,
            features,
            features_std: spread.map(|s| s.0),
            features_max: spread.map(|s| s.1),
            num_layers: LAYERS,
            dim: DIM,
            skipped: &[],
            padded: &[],
            settings: None,
        };
        write_store(path, &contents).unwrap();
    }

    /// A store whose layer l separates the classes with signal strength l + 1 (plus noise), with
    /// every statistic; `scale` multiplies every value.
    fn toy_store(dir: &Path, items: &[Item], scale: f32) -> FeatureStore {
        let n = items.len();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut stats: [Vec<f32>; 3] = Default::default();
        for (k, s) in stats.iter_mut().enumerate() {
            for it in items {
                for l in 0..LAYERS {
                    for d in 0..DIM {
                        let signal = if d % CLASSES == it.label {
                            l as f32 + 1.0
                        } else {
                            0.0
                        };
                        let noise: f32 = rng.random_range(-1.5..1.5);
                        s.push(scale * (signal + noise + k as f32));
                    }
                }
            }
        }
        let path = dir.join("toy_features_hubert_all.safetensors");
        let provenance = Provenance {
            task: "toy".into(),
            model: "none".into(),
            revision: None,
            layers: "all".into(),
            layer_indices: (0..LAYERS).map(StoredLayer::HiddenState).collect(),
            dtype: "f32".into(),
            slug: None,
            family: None,
        };
        let class_names: Vec<String> = (0..CLASSES).map(|c| format!("c{c}")).collect();
        let spread = Some((&stats[1][..], &stats[2][..]));
        write_toy_store(&path, &provenance, &class_names, items, &stats[0], spread);
        let store = FeatureStore::open(&path).unwrap();
        assert_eq!(store.len(), n);
        assert_eq!(store.pooling, PoolingSet::new(&[Stat::Std, Stat::Max]));
        store
    }

    fn options(dir: &Path, cells: Vec<Cell>, jobs: usize) -> AblateOptions {
        AblateOptions {
            cells,
            config: TrainConfig {
                epochs: 3,
                ..TrainConfig::default()
            },
            protocol: Protocol::PredefinedFolds,
            runs: 3,
            val_fraction: 0.25,
            jobs,
            wide_hidden: 48,
            out_dir: dir.join("out"),
            plots: false,
            grid: Component::ALL.to_vec(),
            full: false,
        }
    }

    #[test]
    fn grids_vary_one_component_at_a_time_or_all() {
        let all = one_at_a_time(&Component::ALL);
        // 2 study cells + pooling 2x2 + scaler 1x2 + probe 2 + layer 2x2 + lr 3x2 + fraction 3x2.
        assert_eq!(all.len(), 26);
        assert_eq!(all[0].config, CellConfig::study(ProbeVariant::Linear));
        assert_eq!(all[1].config, CellConfig::study(ProbeVariant::Mlp));
        let study = CellConfig::study(ProbeVariant::Linear);
        for cell in &all[2..] {
            let c = cell.config;
            let s = CellConfig::study(c.probe);
            let differing = [
                c.pooling != s.pooling,
                c.scaler != s.scaler,
                !matches!(c.probe, ProbeVariant::Linear | ProbeVariant::Mlp),
                c.layer != s.layer,
                c.lr != s.lr,
                c.fraction != s.fraction,
            ];
            assert_eq!(differing.iter().filter(|d| **d).count(), 1, "{}", c.label());
        }
        assert!(all.iter().any(|c| c.config.probe == ProbeVariant::Knn));
        assert_eq!(study.label(), "linear (study)");
        assert_eq!(
            one_at_a_time(&[Component::Scaler])
                .iter()
                .map(|c| c.config.label())
                .collect::<Vec<_>>(),
            [
                "linear (study)",
                "mlp (study)",
                "linear scaler=off",
                "mlp scaler=off"
            ]
        );
        // The cross product: 2 probes x 3 poolings x 2 scalers.
        assert_eq!(
            full_grid(&[Component::Pooling, Component::Scaler]).len(),
            12
        );
        // kNN collapses the lr axis and drops the weighted layer; best layer and chosen lr
        // never meet.
        let full = full_grid(&[Component::Probe, Component::Layer, Component::Lr]);
        assert!(full.iter().all(|c| c.config.valid()));
        let knn = full
            .iter()
            .filter(|c| c.config.probe == ProbeVariant::Knn)
            .count();
        assert_eq!(knn, 2, "last and best layer, one lr");
        assert_eq!(
            "lr, pooling,lr".parse::<Grid>().unwrap().0,
            [Component::Pooling, Component::Lr]
        );
        assert!("pooling,depth".parse::<Grid>().is_err());
        assert!("".parse::<Grid>().is_err());
    }

    #[test]
    fn fractions_are_stratified_and_nested() {
        let labels: Vec<usize> = (0..200).map(|i| i % 4).collect();
        let rows: Vec<usize> = (0..200).filter(|i| i % 5 != 0).collect();
        let mut previous: Option<Vec<usize>> = None;
        for percent in [100, 50, 25, 10] {
            let sub = nested_subset(&rows, &labels, percent, 7);
            for c in 0..4 {
                let n_c = rows.iter().filter(|&&r| labels[r] == c).count();
                let got = sub.iter().filter(|&&r| labels[r] == c).count();
                assert_eq!(
                    got,
                    (n_c * percent as usize).div_ceil(100),
                    "{percent}% class {c}"
                );
            }
            assert!(sub.iter().all(|r| rows.contains(r)));
            if let Some(p) = &previous {
                assert!(sub.iter().all(|r| p.contains(r)), "{percent}% nested");
            }
            previous = Some(sub);
        }
    }

    #[test]
    fn bootstrap_interval() {
        assert_eq!(paired_bootstrap(&[0.5; 40], 500, 1), [0.5, 0.5]);
        let diffs: Vec<f64> = (0..200)
            .map(|i| if i % 4 == 0 { 1.0 } else { 0.0 })
            .collect();
        let [lo, hi] = paired_bootstrap(&diffs, 2000, 3);
        assert!(
            lo < 0.25 && hi > 0.25 && lo > 0.15 && hi < 0.35,
            "{lo} {hi}"
        );
        assert_eq!(paired_bootstrap(&diffs, 2000, 3), [lo, hi], "seeded");
    }

    #[test]
    fn no_test_item_enters_training_or_selection() {
        let tmp = tempfile::tempdir().unwrap();
        let items = items();
        let store = toy_store(tmp.path(), &items, 1.0);
        let cells = one_at_a_time(&Component::ALL);
        let opts = options(tmp.path(), cells, 2);
        let plan = Plan::new(&store, &opts).unwrap();
        plan.check().unwrap();
        assert!(plan
            .units
            .iter()
            .any(|u| matches!(u.purpose, Purpose::Select(Candidate::Layer(_)))));
        assert!(plan
            .units
            .iter()
            .any(|u| matches!(u.purpose, Purpose::Select(Candidate::Lr(_)))));
        // The check fails when a test item is slipped into a selection unit's evaluation or a
        // unit's training.
        let select = plan
            .units
            .iter()
            .position(|u| matches!(u.purpose, Purpose::Select(_)))
            .unwrap();
        let test_item = plan.folds[plan.units[select].fold].test[0];
        let copy = || Plan {
            units: plan.units.clone(),
            folds: plan.folds.clone(),
            selection: plan.selection.clone(),
            seeds: plan.seeds.clone(),
            cells: plan.cells.clone(),
            lr_siblings: plan.lr_siblings.clone(),
        };
        let mut bad = copy();
        Arc::make_mut(&mut bad.units[select].eval).push(test_item);
        assert!(bad.check().is_err());
        let mut bad = copy();
        Arc::make_mut(&mut bad.units[0].train).push(plan.folds[plan.units[0].fold].test[0]);
        assert!(bad.check().is_err());

        // Choices depend on the fold's training part only: scrambling the labels of fold 1's
        // test items leaves every choice (and validation score) of fold 1 unchanged.
        let grid = one_at_a_time(&[Component::Layer, Component::Lr]);
        let before = ablate(&Toy, &store, &options(tmp.path(), grid.clone(), 2)).unwrap();
        let mut scrambled = items.clone();
        for &i in &plan.folds[0].test {
            scrambled[i].label = (scrambled[i].label + 1) % CLASSES;
        }
        let other = tempfile::tempdir().unwrap();
        let store2 = toy_store(other.path(), &scrambled, 1.0);
        let after = ablate(&Toy, &store2, &options(other.path(), grid, 2)).unwrap();
        let mut compared = 0;
        for (a, b) in before.cells.iter().zip(&after.cells) {
            for (ca, cb) in a.choices.iter().zip(&b.choices) {
                if ca.fold == plan.folds[0].name {
                    assert_eq!(ca, cb, "{}", a.label);
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 4, "best layer and chosen lr, for both probes");
    }

    #[test]
    fn parallel_runs_equal_serial_ones_and_failures_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let items = items();
        let store = toy_store(tmp.path(), &items, 1.0);
        let cells = one_at_a_time(&Component::ALL);
        let serial = ablate(&Toy, &store, &options(tmp.path(), cells.clone(), 1)).unwrap();
        let mut o = options(tmp.path(), cells, 3);
        o.plots = true;
        let parallel = ablate(&Toy, &store, &o).unwrap();
        assert_eq!(serial.cells, parallel.cells);
        assert!(
            serial.cells.iter().all(|c| c.status == "ok"),
            "every cell filled"
        );
        for c in &serial.cells {
            let expect = if c.config.probe == ProbeVariant::Knn {
                3
            } else {
                9
            };
            assert_eq!(c.evaluations.len(), expect, "{}: folds x seeds", c.label);
            let is_reference = c.config == c.config.reference();
            assert_eq!(c.difference.is_none(), is_reference, "{}", c.label);
            if let Some(d) = &c.difference {
                assert_eq!(d.items, items.len());
                assert!(
                    d.ci95[0] <= d.accuracy && d.accuracy <= d.ci95[1],
                    "{}",
                    c.label
                );
            }
        }
        // The learning signal grows with the layer: the best layer is the last on most folds.
        let best = serial
            .cells
            .iter()
            .find(|c| c.config.layer == LayerVariant::Best)
            .unwrap();
        assert_eq!(best.choices.len(), 3);
        let out = tmp.path().join("out");
        for f in [
            "ablation.md",
            "ablation.json",
            "ablation.csv",
            "ablation.png",
            "learning_curve.png",
        ] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let csv = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + serial.cells.len());
        let json: Ablation =
            serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap())
                .unwrap();
        assert_eq!(json.cells, serial.cells);

        // Features so large that unscaled logits overflow: the linear probe's scaler-off cell
        // fails (a non-finite loss), every other cell still runs.
        let huge = tempfile::tempdir().unwrap();
        let store = toy_store(huge.path(), &items, 5e37);
        let cells = one_at_a_time(&[Component::Scaler]);
        let r = ablate(&Toy, &store, &options(huge.path(), cells, 2)).unwrap();
        for c in r.cells.iter().filter(|c| c.config.scaler) {
            assert_eq!(c.status, "ok", "{}: {:?}", c.label, c.error);
        }
        let failed = &r.cells[2];
        assert_eq!(
            (failed.label.as_str(), failed.status.as_str()),
            ("linear scaler=off", "failed")
        );
        assert!(failed.accuracy.is_none() && failed.difference.is_none());
        assert!(
            failed.error.as_ref().unwrap().contains("loss"),
            "{:?}",
            failed.error
        );
        let md = std::fs::read_to_string(huge.path().join("out/ablation.md")).unwrap();
        assert!(md.contains("failed:"), "{md}");
    }

    #[test]
    fn a_store_without_what_the_grid_needs_is_refused_before_training() {
        let tmp = tempfile::tempdir().unwrap();
        let items = items();
        let store = toy_store(tmp.path(), &items, 1.0);
        // Rewrite with the mean only.
        let path = tmp.path().join("mean_only.safetensors");
        let mut features = vec![0.0f32; items.len() * LAYERS * DIM];
        for l in 0..LAYERS {
            let layer = store.layer(l).unwrap();
            for r in 0..items.len() {
                let to = (r * LAYERS + l) * DIM;
                features[to..to + DIM].copy_from_slice(&layer[r * DIM..(r + 1) * DIM]);
            }
        }
        let (provenance, class_names) = (&store.provenance, &store.class_names);
        write_toy_store(
            &path,
            provenance,
            class_names,
            &store.items,
            &features,
            None,
        );
        let plain = FeatureStore::open(&path).unwrap();
        let err = ablate(
            &Toy,
            &plain,
            &options(tmp.path(), one_at_a_time(&[Component::Pooling]), 1),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--pooling mean,std,max"), "{err}");
        assert!(!tmp.path().join("out/ablation.json").exists());
        // The mean-only grid components run on it.
        ablate(
            &Toy,
            &plain,
            &options(tmp.path(), one_at_a_time(&[Component::Scaler]), 1),
        )
        .unwrap();
    }
}
