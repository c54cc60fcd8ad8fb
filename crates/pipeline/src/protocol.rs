//! Evaluation protocols: predefined folds (k-fold cross-validation), predefined
//! train/valid/test, and seeded stratified random splits (optionally keeping groups whole).
//!
//! Validation sets, when asked for, are always carved out of the training part only, keeping
//! groups (source recording, fsID, speaker) whole, so nothing of the test part leaks into model
//! selection.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::item::{Item, Partition};

/// How items are divided into training and test parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// Cross-validation over the items' predefined folds: each fold is the test part once.
    PredefinedFolds,
    /// The items' predefined train / valid / test splits; `valid`, when present, selects the
    /// best epoch.
    PredefinedSplit,
    /// Stratified random split: per class, `round(n_c * test_fraction)` items (at least one
    /// when the class has two or more) go to the test part, chosen by a seeded shuffle. With
    /// `test_fraction` 0.2 and seed 42 this is the original study's protocol (its split used
    /// scikit-learn's RNG, so the exact items differ; the proportions are the same).
    Random {
        /// Fraction of each class in the test part.
        test_fraction: f64,
        /// Shuffle seed.
        seed: u64,
    },
    /// Like `Random`, but whole groups (chapters, recordings) move together: per class, groups
    /// go to the test part in a seeded order until it holds `test_fraction` of the class, and
    /// at least one group stays in training.
    GroupRandom {
        /// Target fraction of each class in the test part.
        test_fraction: f64,
        /// Shuffle seed.
        seed: u64,
    },
}

impl Protocol {
    /// [`Protocol::GroupRandom`] when `name` is `split_name`, the one task-specific `--split`
    /// of a task whose groups (patients, chapters, recordings) must stay whole; `None`
    /// otherwise. The body of such a task's `Task::custom_protocol`.
    pub fn group_random_named(
        name: &str,
        split_name: &str,
        test_fraction: f64,
        seed: u64,
    ) -> Option<Self> {
        (name == split_name).then_some(Self::GroupRandom {
            test_fraction,
            seed,
        })
    }

    /// A short name for reports.
    pub fn describe(&self) -> String {
        match self {
            Self::PredefinedFolds => "cross-validation over the official folds".into(),
            Self::PredefinedSplit => "official train/valid/test split".into(),
            Self::Random {
                test_fraction,
                seed,
            } => format!("stratified random split, test fraction {test_fraction}, seed {seed}"),
            Self::GroupRandom {
                test_fraction,
                seed,
            } => format!(
                "group-disjoint stratified random split, test fraction {test_fraction}, seed {seed}"
            ),
        }
    }
}

/// One train/test division (one fold of a cross-validation, or the single split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldSplit {
    /// `fold1`, ..., `test`, `random`.
    pub name: String,
    /// Item indices used for training.
    pub train: Vec<usize>,
    /// Item indices used for best-epoch selection (empty: train for the full epochs).
    pub valid: Vec<usize>,
    /// Item indices evaluated.
    pub test: Vec<usize>,
}

/// Divides `items` according to `protocol`. With `val_fraction > 0`, a group-disjoint
/// validation part of that fraction is carved from each training part (seeded by `seed`) unless
/// the protocol already has an official one.
pub fn splits(
    protocol: &Protocol,
    items: &[Item],
    val_fraction: f64,
    seed: u64,
) -> Result<Vec<FoldSplit>> {
    if !(0.0..1.0).contains(&val_fraction) {
        bail!("--val-fraction must be in [0, 1), got {val_fraction}");
    }
    let mut out = match protocol {
        Protocol::PredefinedFolds => {
            let folds: BTreeSet<u32> = items
                .iter()
                .filter_map(|it| match it.split {
                    Partition::Fold(k) => Some(k),
                    _ => None,
                })
                .collect();
            if folds.len() < 2 {
                bail!(
                    "cross-validation needs items in at least two folds, found {}",
                    folds.len()
                );
            }
            folds
                .iter()
                .map(|&k| FoldSplit {
                    name: format!("fold{k}"),
                    train: indices(items, |it| it.split != Partition::Fold(k)),
                    valid: vec![],
                    test: indices(items, |it| it.split == Partition::Fold(k)),
                })
                .collect()
        }
        Protocol::PredefinedSplit => {
            let split = FoldSplit {
                name: "test".into(),
                train: indices(items, |it| it.split == Partition::Train),
                valid: indices(items, |it| it.split == Partition::Valid),
                test: indices(items, |it| it.split == Partition::Test),
            };
            if split.train.is_empty() || split.test.is_empty() {
                bail!(
                    "the official split needs train and test items (found {} train, {} test)",
                    split.train.len(),
                    split.test.len()
                );
            }
            vec![split]
        }
        Protocol::Random {
            test_fraction,
            seed,
        } => {
            check_fraction(*test_fraction)?;
            let singletons: Vec<Vec<usize>> = (0..items.len()).map(|i| vec![i]).collect();
            let (train, test) = stratified_group_split(items, singletons, *test_fraction, *seed);
            vec![FoldSplit {
                name: "random".into(),
                train,
                valid: vec![],
                test,
            }]
        }
        Protocol::GroupRandom {
            test_fraction,
            seed,
        } => {
            check_fraction(*test_fraction)?;
            let groups = group_items(items, &(0..items.len()).collect::<Vec<_>>());
            let (train, test) = stratified_group_split(items, groups, *test_fraction, *seed);
            vec![FoldSplit {
                name: "group-random".into(),
                train,
                valid: vec![],
                test,
            }]
        }
    };
    if val_fraction > 0.0 {
        for split in out.iter_mut().filter(|s| s.valid.is_empty()) {
            let groups = group_items(items, &split.train);
            let (train, valid) = stratified_group_split(items, groups, val_fraction, seed ^ 0x5EED);
            split.train = train;
            split.valid = valid;
        }
    }
    for split in &out {
        if split.train.is_empty() || split.test.is_empty() {
            bail!("split {} has an empty training or test part", split.name);
        }
    }
    Ok(out)
}

fn check_fraction(f: f64) -> Result<()> {
    if !(f > 0.0 && f < 1.0) {
        bail!("--test-fraction must be in (0, 1), got {f}");
    }
    Ok(())
}

fn indices(items: &[Item], keep: impl Fn(&Item) -> bool) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, it)| keep(it))
        .map(|(i, _)| i)
        .collect()
}

/// The given item indices grouped by `Item::group` (an item without a group is its own group),
/// in first-appearance order.
fn group_items(items: &[Item], subset: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<Vec<usize>> = Vec::new();
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in subset {
        match items[i].group.as_deref() {
            Some(g) => {
                let slot = *by_name.entry(g).or_insert_with(|| {
                    order.push(Vec::new());
                    order.len() - 1
                });
                order[slot].push(i);
            }
            None => order.push(vec![i]),
        }
    }
    order
}

/// Per class (of a group's first item), shuffles the class's groups with `seed` and moves
/// groups to the second part until it holds `round(n_c * fraction)` items, keeping at least one
/// group in the first part. Returns sorted (first, second).
fn stratified_group_split(
    items: &[Item],
    groups: Vec<Vec<usize>>,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: BTreeMap<usize, Vec<Vec<usize>>> = BTreeMap::new();
    for g in groups {
        by_class.entry(items[g[0]].label).or_default().push(g);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for (_, mut class_groups) in by_class {
        class_groups.shuffle(&mut rng);
        let n: usize = class_groups.iter().map(Vec::len).sum();
        let mut target = (n as f64 * fraction).round() as usize;
        if target == 0 && n >= 2 && class_groups.len() >= 2 {
            target = 1;
        }
        let mut taken = 0;
        let last = class_groups.len().saturating_sub(1);
        for (gi, g) in class_groups.into_iter().enumerate() {
            if taken < target && gi < last {
                taken += g.len();
                second.extend(g);
            } else {
                first.extend(g);
            }
        }
    }
    first.sort_unstable();
    second.sort_unstable();
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(label: usize, split: Partition, group: Option<&str>) -> Item {
        Item {
            path: format!("{label}.wav"),
            label,
            split,
            group: group.map(str::to_string),
            segment: None,
        }
    }

    #[test]
    fn folds_cover_every_item_once_as_test() {
        let items: Vec<Item> = (0..20)
            .map(|i| item(i % 4, Partition::Fold(1 + (i % 5) as u32), None))
            .collect();
        let s = splits(&Protocol::PredefinedFolds, &items, 0.0, 42).unwrap();
        assert_eq!(s.len(), 5);
        let mut tested: Vec<usize> = s.iter().flat_map(|f| f.test.clone()).collect();
        tested.sort();
        assert_eq!(tested, (0..20).collect::<Vec<_>>());
        for f in &s {
            assert!(f.train.iter().all(|i| !f.test.contains(i)));
            assert_eq!(f.train.len() + f.test.len(), 20);
        }
    }

    #[test]
    fn random_split_is_stratified_and_seeded() {
        let items: Vec<Item> = (0..100)
            .map(|i| item(i % 5, Partition::None, None))
            .collect();
        let p = Protocol::Random {
            test_fraction: 0.2,
            seed: 42,
        };
        let a = splits(&p, &items, 0.0, 42).unwrap();
        let b = splits(&p, &items, 0.0, 42).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].test.len(), 20);
        for c in 0..5 {
            assert_eq!(
                a[0].test.iter().filter(|&&i| items[i].label == c).count(),
                4
            );
        }
        let other = splits(
            &Protocol::Random {
                test_fraction: 0.2,
                seed: 7,
            },
            &items,
            0.0,
            7,
        )
        .unwrap();
        assert_ne!(a[0].test, other[0].test);
    }

    #[test]
    fn validation_keeps_groups_whole_and_never_touches_test() {
        let items: Vec<Item> = (0..60)
            .map(|i| {
                let g = format!("src{}", i / 3);
                item(i % 2, Partition::Fold(1 + (i / 3 % 3) as u32), Some(&g))
            })
            .collect();
        let s = splits(&Protocol::PredefinedFolds, &items, 0.25, 1).unwrap();
        for f in &s {
            assert!(!f.valid.is_empty());
            for v in &f.valid {
                assert!(!f.test.contains(v) && !f.train.contains(v));
                let g = &items[*v].group;
                assert!(
                    f.train.iter().all(|t| &items[*t].group != g),
                    "group split across train/valid"
                );
            }
        }
    }

    #[test]
    fn group_random_keeps_groups_disjoint_and_each_class_in_training() {
        let items: Vec<Item> = (0..40)
            .map(|i| {
                let g = format!("spk{}-ch{}", i % 4, i / 8);
                item(i % 4, Partition::None, Some(&g))
            })
            .collect();
        let p = Protocol::GroupRandom {
            test_fraction: 0.2,
            seed: 3,
        };
        let s = &splits(&p, &items, 0.0, 3).unwrap()[0];
        for t in &s.test {
            assert!(s.train.iter().all(|r| items[*r].group != items[*t].group));
        }
        for c in 0..4 {
            assert!(s.train.iter().any(|&i| items[i].label == c));
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let items = vec![
            item(0, Partition::Fold(1), None),
            item(1, Partition::Fold(1), None),
        ];
        assert!(splits(&Protocol::PredefinedFolds, &items, 0.0, 1).is_err());
        assert!(splits(&Protocol::PredefinedSplit, &items, 0.0, 1).is_err());
        let p = Protocol::Random {
            test_fraction: 1.5,
            seed: 1,
        };
        assert!(splits(&p, &items, 0.0, 1).is_err());
    }
}
