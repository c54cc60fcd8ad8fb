//! One example of a dataset ([`Item`]: file, label, partition, group, segment) and the part of
//! the official partition it belongs to ([`Partition`]). Shared by the dataset description
//! ([`crate::task`]) and the protocols that split items ([`crate::protocol`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which part of the official partition an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partition {
    /// A predefined cross-validation fold (1-based, as datasets number them).
    Fold(u32),
    /// The official training split.
    Train,
    /// The official validation split (model selection).
    Valid,
    /// The official test split.
    Test,
    /// No predefined partition (random protocols only).
    None,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fold(k) => write!(f, "fold{k}"),
            Self::Train => f.write_str("train"),
            Self::Valid => f.write_str("valid"),
            Self::Test => f.write_str("test"),
            Self::None => f.write_str("none"),
        }
    }
}

impl FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Self::Train),
            "valid" => Ok(Self::Valid),
            "test" => Ok(Self::Test),
            "none" => Ok(Self::None),
            other => other
                .strip_prefix("fold")
                .and_then(|k| k.parse().ok())
                .map(Self::Fold)
                .ok_or_else(|| format!("unknown partition {other:?}")),
        }
    }
}

impl Serialize for Partition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Partition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One example: an audio file (or a segment of one) with its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Path relative to the dataset root, with `/` separators.
    pub path: String,
    /// Class index into [`Dataset::class_names`].
    pub label: usize,
    /// Official fold or split.
    pub split: Partition,
    /// Items sharing a group must stay on one side of any split (source recording, fsID,
    /// speaker, patient). Validation sets and group-disjoint protocols use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A segment `[start, end)` in seconds to cut after decoding (ICBHI respiratory cycles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<(f64, f64)>,
}
