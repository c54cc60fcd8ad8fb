//! Where a model's files come from: a local directory laid out like a hub repository, or a hub
//! id (`facebook/hubert-base-ls960`, optionally `@revision`) fetched through hf-hub.
//!
//! Environment, as the Python hub client reads it: `HF_HOME` (cache at `$HF_HOME/hub`),
//! `HF_ENDPOINT` (mirror URL), `HF_HUB_OFFLINE=1` (use the local cache only, never the network).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The weight files tried, in order.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// The resolved files of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `preprocessor_config.json`, when the model has one.
    pub preprocessor: Option<PathBuf>,
    /// `model.safetensors` or `pytorch_model.bin`.
    pub weights: PathBuf,
    /// What the user asked for: a hub id or the local directory as given.
    pub id: String,
    /// The hub commit the files come from (from the cache's `snapshots/<sha>` path), if any.
    pub revision: Option<String>,
}

impl ModelFiles {
    /// A local directory if `spec` names one, else a hub id with an optional `@revision`.
    pub fn resolve(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Self::from_dir(path);
        }
        let looks_local = spec.starts_with('.')
            || spec.starts_with('/')
            || spec.starts_with('~')
            || spec.matches('/').count() > 1
            || path.exists();
        if looks_local {
            return Err(Error::ModelDir {
                dir: path.to_path_buf(),
                msg: "not a directory (expected a model directory with config.json and \
                      model.safetensors or pytorch_model.bin, or a hub id like \
                      facebook/hubert-base-ls960)"
                    .into(),
            });
        }
        let (id, revision) = match spec.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (spec, None),
        };
        Self::from_hub(id, revision)
    }

    /// A directory holding `config.json`, optionally `preprocessor_config.json`, and
    /// `model.safetensors` (preferred) or `pytorch_model.bin`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(Error::ModelDir {
                dir: dir.to_path_buf(),
                msg: "config.json not found".into(),
            });
        }
        let weights = WEIGHT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::ModelDir {
                dir: dir.to_path_buf(),
                msg: format!("no weights: expected one of {}", WEIGHT_FILES.join(", ")),
            })?;
        let preprocessor = Some(dir.join("preprocessor_config.json")).filter(|p| p.is_file());
        Ok(Self {
            config,
            preprocessor,
            weights,
            id: dir.display().to_string(),
            revision: None,
        })
    }

    /// Fetches (or finds in the cache) a hub model's files.
    pub fn from_hub(id: &str, revision: Option<&str>) -> Result<Self> {
        use hf_hub::{Repo, RepoType};
        let shown = match revision {
            Some(r) => format!("{id}@{r}"),
            None => id.to_string(),
        };
        let hub_err = |msg: String| Error::Hub {
            repo: shown.clone(),
            msg,
        };
        let repo = Repo::with_revision(
            id.to_string(),
            RepoType::Model,
            revision.unwrap_or("main").to_string(),
        );
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| {
                matches!(
                    v.as_str(),
                    "1" | "true" | "TRUE" | "True" | "yes" | "ON" | "on"
                )
            })
            .unwrap_or(false);

        let fetch: Box<FetchFn> = if offline {
            let cache = hf_hub::Cache::from_env().repo(repo);
            Box::new(move |file| {
                cache.get(file).ok_or_else(|| {
                    format!("{file} is not in the local cache and HF_HUB_OFFLINE is set")
                })
            })
        } else {
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .build()
                .map_err(|e| hub_err(e.to_string()))?
                .repo(repo);
            Box::new(move |file| api.get(file).map_err(|e| format!("{file}: {e}")))
        };

        let config = fetch("config.json").map_err(&hub_err)?;
        let preprocessor = fetch("preprocessor_config.json").ok();
        let mut errors = Vec::new();
        let mut weights = None;
        for file in WEIGHT_FILES {
            match fetch(file) {
                Ok(p) => {
                    weights = Some(p);
                    break;
                }
                Err(e) => errors.push(e),
            }
        }
        let weights = weights.ok_or_else(|| hub_err(errors.join("; ")))?;
        let revision = snapshot_revision(&config);
        Ok(Self {
            config,
            preprocessor,
            weights,
            id: id.to_string(),
            revision,
        })
    }
}

/// Fetches one file of a repository, or says why not.
type FetchFn = dyn Fn(&str) -> std::result::Result<PathBuf, String>;

/// The commit hash in a hub cache path `.../snapshots/<sha>/<file>`.
fn snapshot_revision(path: &Path) -> Option<String> {
    let mut parts = path
        .components()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy());
    parts.next()?;
    let sha = parts.next()?.to_string();
    (parts.next()? == "snapshots").then_some(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_revision_from_cache_path() {
        let p = Path::new("/c/hub/models--a--b/snapshots/0123abc/config.json");
        assert_eq!(snapshot_revision(p).as_deref(), Some("0123abc"));
        assert_eq!(snapshot_revision(Path::new("/x/config.json")), None);
    }

    #[test]
    fn local_dir_errors_name_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json not found"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        let err = ModelFiles::resolve("./no/such/dir")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
