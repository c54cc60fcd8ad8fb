//! Downloading and unpacking the official dataset archives.
//!
//! Every dataset binary's `download` subcommand describes the files of its official distribution
//! as [`Resource`]s and hands them to [`fetch`], which
//!
//! 1. skips everything when the file is already in the cache directory and verifies (or when an
//!    archive was already unpacked and its archive has since been deleted to save space);
//! 2. downloads over HTTP(S) into `<cache_dir>/<file_name>.part`, resuming a partial file with a
//!    `Range: bytes=N-` request (guarded by `If-Range` with the server's validator) and restarting
//!    cleanly when the server ignores the range and answers `200`; a connection cut mid-way is
//!    retried on the spot from where it stopped;
//! 3. checks the size and md5 digest when known: a mismatch is an error, and the bad file is moved
//!    aside to `<file_name>.bad`, never used;
//! 4. renames `.part` to the final name (atomic on one file system);
//! 5. unpacks zip / tar.gz archives into the destination directory with [`unpack`], which refuses
//!    entries that would land outside it and writes a marker `<dest_dir>/.<file_name>.unpacked`
//!    only once everything is in place, so an interrupted unpack is redone on the next run.
//!
//! # Mirrors
//!
//! The official hosts are not always reachable (ICBHI's host is often down; CI has no network at
//! all). [`DownloadOptions::mirror`] replaces each resource's URL by `{mirror}/{file_name}`. The
//! dataset binaries set it from their `--mirror URL` flag or, when the flag is
//! absent, from the environment variable `HUBERT_PROBE_MIRROR` ([`MIRROR_ENV`]); see
//! [`DownloadOptions::from_env_and_flag`]. A mirror is any HTTP(S) server (a local
//! `python3 -m http.server` over a directory of archives will do) holding the files under their
//! [`Resource::file_name`]s.
//!
//! # Manual downloads
//!
//! When a host needs a browser (a form, a login) or is down, tasks return
//! [`DownloadError::Manual`] built by [`manual_download`], which tells the user which URL to open
//! and where to put the file; the next run then finds the file in the cache, verifies it and
//! unpacks it without any network access.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use md5::{Digest, Md5};

/// Environment variable read by [`DownloadOptions::from_env_and_flag`] when no `--mirror` flag is
/// given: a base URL such that every file is fetched from `{base}/{file_name}`.
pub const MIRROR_ENV: &str = "HUBERT_PROBE_MIRROR";

/// Consecutive attempts that receive no new byte before a download gives up.
const MAX_STALLED_ATTEMPTS: u32 = 4;
/// Pause before the first retry of an attempt that made no progress (doubled each time).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Copy buffer size for downloads, hashing and unpacking.
const BUF_SIZE: usize = 256 * 1024;

/// One file of a dataset's official distribution.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Official URL.
    pub url: String,
    /// File name to save as (in the download cache directory). A plain name: no `/`, no `..`.
    pub file_name: String,
    /// md5 hex digest when known (each task's docs say where its pin comes from), checked after download; a
    /// mismatch is an error naming the file, the expected and the actual digest, and the bad file
    /// is moved aside (renamed `*.bad`), never silently used.
    pub md5: Option<String>,
    /// Expected size in bytes when known.
    pub size: Option<u64>,
    /// What to do after download.
    pub unpack: Unpack,
}

/// What [`fetch`] does with a file once it is downloaded and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpack {
    /// Keep the file as it is (a split list, a metadata file).
    None,
    /// A zip archive (stored or deflate entries), unpacked into the destination directory.
    Zip,
    /// A gzip-compressed tar archive, unpacked into the destination directory.
    TarGz,
}

/// Options common to every download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Where archives are saved (e.g. `data/.downloads`); partial downloads live here as
    /// `<file>.part` and resume.
    pub cache_dir: PathBuf,
    /// Where archives unpack (the task's data root's parent, e.g. `data/`).
    pub dest_dir: PathBuf,
    /// Replace the URL's scheme+host+path prefix: if `Some(base)`, the file is fetched from
    /// `{base}/{file_name}` instead of `url`. Set from the `--mirror URL` flag or the environment
    /// variable `HUBERT_PROBE_MIRROR` by [`DownloadOptions::from_env_and_flag`].
    pub mirror: Option<String>,
    /// Show progress bars (indicatif; hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl DownloadOptions {
    /// Options with no mirror and progress bars on.
    pub fn new(cache_dir: impl Into<PathBuf>, dest_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            dest_dir: dest_dir.into(),
            mirror: None,
            progress: true,
        }
    }

    /// Options whose mirror comes from the `--mirror` flag when given, otherwise from the
    /// environment variable `HUBERT_PROBE_MIRROR` ([`MIRROR_ENV`]); an empty value means no
    /// mirror. Progress bars are on.
    pub fn from_env_and_flag(
        flag: Option<String>,
        cache_dir: impl Into<PathBuf>,
        dest_dir: impl Into<PathBuf>,
    ) -> Self {
        let env = std::env::var(MIRROR_ENV).ok();
        Self {
            mirror: resolve_mirror(flag, env),
            ..Self::new(cache_dir, dest_dir)
        }
    }

    /// The URL [`fetch`] uses for `resource`: `{mirror}/{file_name}` with a mirror, otherwise the
    /// official URL.
    pub fn url_for(&self, resource: &Resource) -> String {
        match &self.mirror {
            Some(base) => format!("{}/{}", base.trim_end_matches('/'), resource.file_name),
            None => resource.url.clone(),
        }
    }

    /// Where [`fetch`] saves `resource`: `<cache_dir>/<file_name>`.
    pub fn cached_path(&self, resource: &Resource) -> PathBuf {
        self.cache_dir.join(&resource.file_name)
    }
}

/// The mirror to use given the flag's and the environment variable's values: the flag wins, and
/// empty or blank values count as absent.
fn resolve_mirror(flag: Option<String>, env: Option<String>) -> Option<String> {
    let clean = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    clean(flag).or_else(|| clean(env))
}

/// Why a download or an unpack failed. Every variant names the URL or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with an error status.
    #[error(
        "{status} {status_text} for {url}; check that the URL is still valid, or fetch the file \
         from elsewhere with --mirror URL (or {MIRROR_ENV})"
    )]
    Http {
        /// The URL requested.
        url: String,
        /// HTTP status code, e.g. 404.
        status: u16,
        /// The status line's reason, e.g. `Not Found`.
        status_text: String,
    },
    /// The connection failed or broke, and retrying did not help.
    #[error(
        "network error fetching {url}: {message}; re-run the command to resume (the partial file \
         is kept), or use --mirror URL (or {MIRROR_ENV})"
    )]
    Network {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The file's md5 digest is not the expected one.
    #[error(
        "checksum mismatch for {}: expected md5 {expected}, got {actual}; the file was moved to \
         {} and will not be used; re-run the command to download it again",
        path.display(),
        moved_to.display()
    )]
    Checksum {
        /// The file checked (at its final name).
        path: PathBuf,
        /// Expected md5, lower-case hex.
        expected: String,
        /// Actual md5, lower-case hex.
        actual: String,
        /// Where the bad file now is (`<file>.bad`).
        moved_to: PathBuf,
    },
    /// The file's size is not the expected one.
    #[error(
        "size mismatch for {}: expected {expected} bytes, got {actual}; the file was moved to {} \
         and will not be used; re-run the command to download it again",
        path.display(),
        moved_to.display()
    )]
    Size {
        /// The file checked (at its final name).
        path: PathBuf,
        /// Expected size in bytes.
        expected: u64,
        /// Actual size in bytes.
        actual: u64,
        /// Where the bad file now is (`<file>.bad`).
        moved_to: PathBuf,
    },
    /// The archive is corrupt, truncated or uses an unsupported feature.
    #[error(
        "bad archive {}: {message}; delete it and re-run the command to download it again",
        path.display()
    )]
    BadArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An archive entry would be written outside the destination directory.
    #[error(
        "unsafe entry {entry:?} in archive {}: {reason}; refusing to unpack it (nothing is \
         written outside {})",
        archive.display(),
        dest.display()
    )]
    UnsafeEntry {
        /// The archive.
        archive: PathBuf,
        /// The entry's name as stored in the archive.
        entry: String,
        /// Why it is unsafe.
        reason: String,
        /// The destination directory.
        dest: PathBuf,
    },
    /// A local file operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file must be downloaded by hand; the text says from where and to where.
    #[error("{instructions}")]
    Manual {
        /// Step-by-step instructions for the user.
        instructions: String,
    },
}

impl DownloadError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// A [`DownloadError::Manual`] for `resource`: why the automatic download is not possible
/// (`reason`, e.g. "the Zenodo record requires accepting its terms in a browser"), which URL to
/// open, where to save the file under which name, and that re-running the command then
/// verifies and unpacks it.
pub fn manual_download(resource: &Resource, opts: &DownloadOptions, reason: &str) -> DownloadError {
    let target = opts.cached_path(resource);
    let mut instructions = format!(
        "{file} cannot be downloaded automatically: {reason}.\n\
         To continue:\n  \
         1. open {url} in a browser and download the file;\n  \
         2. save it as {target} (create the directory {dir} if needed);\n  \
         3. re-run this command: it will verify the file{checks} and unpack it.",
        file = resource.file_name,
        url = resource.url,
        target = target.display(),
        dir = opts.cache_dir.display(),
        checks = match (&resource.md5, resource.size) {
            (Some(md5), Some(size)) => format!(" (md5 {md5}, {size} bytes)"),
            (Some(md5), None) => format!(" (md5 {md5})"),
            (None, Some(size)) => format!(" ({size} bytes)"),
            (None, None) => String::new(),
        },
    );
    instructions.push_str(&format!(
        "\nAlternatively, point --mirror URL (or {MIRROR_ENV}) at a server holding {}.",
        resource.file_name
    ));
    DownloadError::Manual { instructions }
}

/// The marker [`unpack`] writes once an archive named `archive_file_name` is fully unpacked into
/// `dest`: `<dest>/.<archive_file_name>.unpacked`.
pub fn unpacked_marker(dest: &Path, archive_file_name: &str) -> PathBuf {
    dest.join(format!(".{archive_file_name}.unpacked"))
}

/// Download (resuming a `.part` file with an HTTP Range request when the server supports it;
/// restarting cleanly when it does not, i.e. answers 200 to a Range request), verify md5/size,
/// atomically rename `.part` to the final name, then unpack into `dest_dir` (skipping the
/// download when the final file exists and verifies; skipping the unpack when a marker file
/// `<dest_dir>/.<file_name>.unpacked` exists). Returns the path of the downloaded file.
///
/// For an archive whose marker exists, a missing archive is not downloaded again (the user may
/// have deleted it to save space): the returned path then does not exist.
pub fn fetch(resource: &Resource, opts: &DownloadOptions) -> Result<PathBuf, DownloadError> {
    check_file_name(resource, opts)?;
    let final_path = opts.cached_path(resource);
    let marker = unpacked_marker(&opts.dest_dir, &resource.file_name);

    if resource.unpack != Unpack::None && marker.exists() && !final_path.exists() {
        tracing::info!(
            "{} was already unpacked into {} (marker {}); not downloading it again",
            resource.file_name,
            opts.dest_dir.display(),
            marker.display()
        );
        return Ok(final_path);
    }

    fs::create_dir_all(&opts.cache_dir).map_err(|e| DownloadError::io(&opts.cache_dir, e))?;

    let mut have_file = false;
    if final_path.exists() {
        match verify(&final_path, resource, opts.progress) {
            Ok(()) => {
                tracing::info!("{} is present and verified", final_path.display());
                have_file = true;
            }
            Err(e @ (DownloadError::Checksum { .. } | DownloadError::Size { .. })) => {
                // Moved aside by `verify`; download a fresh copy.
                tracing::warn!("{e}");
            }
            Err(e) => return Err(e),
        }
    }

    if !have_file {
        let url = opts.url_for(resource);
        let part = part_path(&final_path);
        download(&url, &part, resource, opts.progress)?;
        // Verify at the final name so that the error and the `.bad` file carry the real name.
        rename(&part, &final_path)?;
        let _ = fs::remove_file(validator_path(&part));
        verify(&final_path, resource, opts.progress)?;
    }

    if resource.unpack != Unpack::None && !marker.exists() {
        unpack_with(&final_path, resource.unpack, &opts.dest_dir, opts.progress)?;
    }
    Ok(final_path)
}

/// Unpack an archive (zip or tar.gz) into `dest`, rejecting entries that escape `dest` (`..`,
/// absolute paths, symlinks pointing out, entries written through a symlink) with an error;
/// writes via temp names so an interrupted unpack is redone on the next run (the marker
/// [`unpacked_marker`] is written only at the end). [`Unpack::None`] does nothing.
pub fn unpack(archive: &Path, kind: Unpack, dest: &Path) -> Result<(), DownloadError> {
    unpack_with(archive, kind, dest, true)
}

// ---------------------------------------------------------------------------------------------
// Downloading
// ---------------------------------------------------------------------------------------------

fn check_file_name(resource: &Resource, opts: &DownloadOptions) -> Result<(), DownloadError> {
    let name = resource.file_name.as_str();
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(DownloadError::io(
            opts.cache_dir.join(name),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "resource file name {name:?} (for {}) must be a plain file name",
                    resource.url
                ),
            ),
        ))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn part_path(final_path: &Path) -> PathBuf {
    with_suffix(final_path, ".part")
}

/// Sidecar holding the server's validator (strong ETag or Last-Modified) of a `.part` file, sent
/// back as `If-Range` so a resumed download never splices two versions of a file.
fn validator_path(part: &Path) -> PathBuf {
    with_suffix(part, ".validator")
}

/// Sidecar recording that a file of a given size and mtime had a given md5, so that re-runs do
/// not re-hash multi-gigabyte archives.
fn verified_path(final_path: &Path) -> PathBuf {
    with_suffix(final_path, ".md5-verified")
}

fn rename(from: &Path, to: &Path) -> Result<(), DownloadError> {
    fs::rename(from, to).map_err(|e| {
        DownloadError::io(
            to,
            io::Error::new(
                e.kind(),
                format!("cannot rename {} to it: {e}", from.display()),
            ),
        )
    })
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .user_agent(concat!("hubert-probe/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn progress_bar(len: Option<u64>, progress: bool, msg: String) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    let template = if len.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{msg} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

/// How one HTTP attempt ended, when it did not complete the file.
enum AttemptError {
    /// Worth retrying (connection trouble, 5xx); `progressed` when new bytes were written.
    Retry {
        error: DownloadError,
        progressed: bool,
    },
    /// Retrying will not help.
    Fatal(DownloadError),
}

fn download(
    url: &str,
    part: &Path,
    resource: &Resource,
    progress: bool,
) -> Result<(), DownloadError> {
    let agent = agent();
    let pb = progress_bar(resource.size, progress, resource.file_name.clone());
    let mut stalled = 0u32;
    let result = loop {
        match attempt(&agent, url, part, resource, &pb) {
            Ok(()) => break Ok(()),
            Err(AttemptError::Fatal(e)) => break Err(e),
            Err(AttemptError::Retry { error, progressed }) => {
                if progressed {
                    stalled = 0;
                } else {
                    stalled += 1;
                }
                if stalled >= MAX_STALLED_ATTEMPTS {
                    break Err(error);
                }
                tracing::warn!("{error}; retrying");
                if stalled > 0 {
                    std::thread::sleep(FIRST_BACKOFF * 2u32.pow(stalled - 1));
                }
            }
        }
    };
    pb.finish_and_clear();
    result
}

fn network(url: &str, message: impl Into<String>) -> DownloadError {
    DownloadError::Network {
        url: url.to_owned(),
        message: message.into(),
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) or `bytes */TOTAL`.
fn parse_content_range(value: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range.trim() {
        "*" => None,
        r => Some(r.split_once('-')?.0.trim().parse().ok()?),
    };
    Some((start, total))
}

fn truncate_part(part: &Path) -> Result<(), DownloadError> {
    File::create(part)
        .map(drop)
        .map_err(|e| DownloadError::io(part, e))?;
    let _ = fs::remove_file(validator_path(part));
    Ok(())
}

fn attempt(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    resource: &Resource,
    pb: &ProgressBar,
) -> Result<(), AttemptError> {
    let fatal = AttemptError::Fatal;
    let mut offset = match fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(fatal(DownloadError::io(part, e))),
    };
    if let Some(size) = resource.size {
        if offset == size {
            // Complete already (e.g. interrupted just before the rename); verified by the caller.
            return Ok(());
        }
        if offset > size {
            tracing::warn!(
                "{} is larger than the expected {size} bytes; starting over",
                part.display()
            );
            truncate_part(part).map_err(fatal)?;
            offset = 0;
        }
    }

    let mut request = agent.get(url).set("Accept-Encoding", "identity");
    if offset > 0 {
        request = request.set("Range", &format!("bytes={offset}-"));
        if let Ok(validator) = fs::read_to_string(validator_path(part)) {
            let validator = validator.trim();
            if !validator.is_empty() {
                request = request.set("If-Range", validator);
            }
        }
    }

    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, r)) if offset > 0 => {
            let total = r
                .header("Content-Range")
                .and_then(parse_content_range)
                .and_then(|(_, t)| t);
            if total == Some(offset) {
                return Ok(());
            }
            tracing::warn!(
                "server refused to resume {} at byte {offset}; starting over",
                part.display()
            );
            truncate_part(part).map_err(fatal)?;
            return Err(AttemptError::Retry {
                error: network(url, "the server refused the resume range"),
                progressed: true,
            });
        }
        Err(ureq::Error::Status(status, r)) => {
            let error = DownloadError::Http {
                url: url.to_owned(),
                status,
                status_text: r.status_text().to_owned(),
            };
            return Err(if status >= 500 || status == 429 || status == 408 {
                AttemptError::Retry {
                    error,
                    progressed: false,
                }
            } else {
                fatal(error)
            });
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(AttemptError::Retry {
                error: network(url, t.to_string()),
                progressed: false,
            });
        }
    };

    let status = response.status();
    let content_length: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());
    let (start, total) = match status {
        206 => {
            let Some((Some(start), total)) = response
                .header("Content-Range")
                .and_then(parse_content_range)
            else {
                truncate_part(part).map_err(fatal)?;
                return Err(AttemptError::Retry {
                    error: network(url, "206 response without a valid Content-Range"),
                    progressed: true,
                });
            };
            if start != offset {
                truncate_part(part).map_err(fatal)?;
                return Err(AttemptError::Retry {
                    error: network(
                        url,
                        format!("asked to resume at byte {offset}, the server sent from {start}"),
                    ),
                    progressed: true,
                });
            }
            (offset, total.or(content_length.map(|l| offset + l)))
        }
        200 => {
            if offset > 0 {
                tracing::info!(
                    "{url} does not support resuming (or the file changed); restarting {}",
                    part.display()
                );
            }
            (0, content_length)
        }
        other => {
            return Err(fatal(DownloadError::Http {
                url: url.to_owned(),
                status: other,
                status_text: response.status_text().to_owned(),
            }));
        }
    };

    if let (Some(total), Some(size)) = (total, resource.size) {
        if total != size {
            tracing::warn!(
                "{url}: the server reports {total} bytes, {} expects {size}",
                resource.file_name
            );
        }
    }
    if start == 0 {
        let validator = response
            .header("ETag")
            .filter(|v| !v.trim_start().starts_with("W/"))
            .or_else(|| response.header("Last-Modified"))
            .map(str::to_owned);
        match validator {
            Some(v) => fs::write(validator_path(part), v)
                .map_err(|e| fatal(DownloadError::io(validator_path(part), e)))?,
            None => {
                let _ = fs::remove_file(validator_path(part));
            }
        }
    }

    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(start == 0)
        .open(part)
        .map_err(|e| fatal(DownloadError::io(part, e)))?;
    let mut out = BufWriter::with_capacity(BUF_SIZE, file);
    if start > 0 {
        out.seek(SeekFrom::Start(start))
            .map_err(|e| fatal(DownloadError::io(part, e)))?;
    }
    if let Some(total) = total {
        pb.set_length(total);
    }
    pb.set_position(start);

    let mut reader = response.into_reader();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut written = 0u64;
    let read_error = loop {
        match reader.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                out.write_all(&buf[..n])
                    .map_err(|e| fatal(DownloadError::io(part, e)))?;
                written += n as u64;
                pb.inc(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    let file = out
        .into_inner()
        .map_err(|e| fatal(DownloadError::io(part, e.into_error())))?;
    file.sync_all()
        .map_err(|e| fatal(DownloadError::io(part, e)))?;

    let have = start + written;
    if let Some(e) = read_error {
        return Err(AttemptError::Retry {
            error: network(url, format!("connection broken after {have} bytes ({e})")),
            progressed: written > 0,
        });
    }
    if let Some(total) = total {
        if have != total {
            return Err(AttemptError::Retry {
                error: network(
                    url,
                    format!("connection closed after {have} of {total} bytes"),
                ),
                progressed: written > 0,
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

fn md5_of(path: &Path, progress: bool) -> Result<String, DownloadError> {
    let file = File::open(path).map_err(|e| DownloadError::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let pb = progress_bar(
        len,
        progress,
        format!(
            "verifying {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
    );
    let mut reader = BufReader::with_capacity(BUF_SIZE, file);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                pb.inc(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DownloadError::io(path, e)),
        }
    }
    pb.finish_and_clear();
    Ok(format!("{:x}", hasher.finalize()))
}

/// `size mtime_ns` of a file, the key of its `.md5-verified` sidecar.
fn file_stamp(meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{} {mtime}", meta.len())
}

fn move_aside(path: &Path) -> Result<PathBuf, DownloadError> {
    let bad = with_suffix(path, ".bad");
    rename(path, &bad)?;
    let _ = fs::remove_file(verified_path(path));
    Ok(bad)
}

/// Checks size and md5 (when known) of `path`; on mismatch moves it to `<path>.bad`.
fn verify(path: &Path, resource: &Resource, progress: bool) -> Result<(), DownloadError> {
    let meta = fs::metadata(path).map_err(|e| DownloadError::io(path, e))?;
    if let Some(expected) = resource.size {
        if meta.len() != expected {
            let moved_to = move_aside(path)?;
            return Err(DownloadError::Size {
                path: path.to_owned(),
                expected,
                actual: meta.len(),
                moved_to,
            });
        }
    }
    let Some(expected) = &resource.md5 else {
        return Ok(());
    };
    let expected = expected.trim().to_ascii_lowercase();
    let stamp = file_stamp(&meta);
    let sidecar = verified_path(path);
    if fs::read_to_string(&sidecar).is_ok_and(|s| s.trim() == format!("{stamp} {expected}")) {
        return Ok(());
    }
    let actual = md5_of(path, progress)?;
    if actual != expected {
        let moved_to = move_aside(path)?;
        return Err(DownloadError::Checksum {
            path: path.to_owned(),
            expected,
            actual,
            moved_to,
        });
    }
    // Best effort: without the sidecar the next run just hashes again.
    let _ = fs::write(&sidecar, format!("{stamp} {expected}\n"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Unpacking
// ---------------------------------------------------------------------------------------------

/// Writes archive entries under `dest`, refusing anything that would land outside it.
struct Extractor<'a> {
    archive: &'a Path,
    dest: &'a Path,
    /// Directories under `dest` known to be real directories (not symlinks).
    real_dirs: HashSet<PathBuf>,
}

impl<'a> Extractor<'a> {
    fn new(archive: &'a Path, dest: &'a Path) -> Self {
        Self {
            archive,
            dest,
            real_dirs: HashSet::new(),
        }
    }

    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> DownloadError {
        DownloadError::UnsafeEntry {
            archive: self.archive.to_owned(),
            entry: entry.to_owned(),
            reason: reason.into(),
            dest: self.dest.to_owned(),
        }
    }

    fn bad_archive(&self, message: impl std::fmt::Display) -> DownloadError {
        DownloadError::BadArchive {
            path: self.archive.to_owned(),
            message: message.to_string(),
        }
    }

    /// The entry's path relative to `dest`, or an error for absolute paths and `..`.
    fn relative(&self, entry: &str, path: &Path) -> Result<PathBuf, DownloadError> {
        let mut rel = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(c) => rel.push(c),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(self.unsafe_entry(entry, "its path contains `..`"));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(entry, "its path is absolute"));
                }
            }
        }
        Ok(rel)
    }

    /// Makes `dest/rel` (and its parents) real directories, refusing to go through symlinks.
    fn ensure_dir(&mut self, entry: &str, rel: &Path) -> Result<(), DownloadError> {
        let mut current = self.dest.to_path_buf();
        for component in rel.components() {
            current.push(component);
            if self.real_dirs.contains(&current) {
                continue;
            }
            match fs::symlink_metadata(&current) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "it would be written through the symlink {}",
                            current.display()
                        ),
                    ));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(DownloadError::io(
                        &current,
                        io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "a file is in the way of directory entry {entry:?} of {}",
                                self.archive.display()
                            ),
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current)
                        .or_else(|e| {
                            if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(|e| DownloadError::io(&current, e))?;
                }
                Err(e) => return Err(DownloadError::io(&current, e)),
            }
            self.real_dirs.insert(current.clone());
        }
        Ok(())
    }

    /// Prepares the parent of `dest/rel` and returns (final path, temp path next to it).
    fn targets(&mut self, entry: &str, rel: &Path) -> Result<(PathBuf, PathBuf), DownloadError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.ensure_dir(entry, parent)?;
        let target = self.dest.join(rel);
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Err(DownloadError::io(
                &target,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "a directory is in the way of file entry {entry:?} of {}",
                        self.archive.display()
                    ),
                ),
            ));
        }
        let name = rel.file_name().unwrap_or_default().to_string_lossy();
        let tmp = self.dest.join(parent).join(format!(".{name}.unpack-tmp"));
        Ok((target, tmp))
    }

    /// Writes a regular file's contents via a temp name, then renames it into place.
    fn file(
        &mut self,
        entry: &str,
        rel: &Path,
        contents: &mut dyn Read,
    ) -> Result<(), DownloadError> {
        let (target, tmp) = self.targets(entry, rel)?;
        let out = File::create(&tmp).map_err(|e| DownloadError::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(BUF_SIZE, out);
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            match contents.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out
                    .write_all(&buf[..n])
                    .map_err(|e| DownloadError::io(&tmp, e))?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    drop(out);
                    let _ = fs::remove_file(&tmp);
                    return Err(self.bad_archive(format!("cannot read entry {entry:?}: {e}")));
                }
            }
        }
        out.flush().map_err(|e| DownloadError::io(&tmp, e))?;
        drop(out);
        rename(&tmp, &target)
    }

    /// Creates a symlink whose target stays inside `dest`.
    fn symlink(
        &mut self,
        entry: &str,
        rel: &Path,
        link_target: &Path,
    ) -> Result<(), DownloadError> {
        // Resolve the target lexically from the link's directory; no ancestor under `dest` is a
        // symlink (ensured by `targets`), so lexical is physical.
        let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(parent) = rel.parent() {
            depth.extend(parent.components().map(|c| c.as_os_str()));
        }
        for component in link_target.components() {
            match component {
                Component::Normal(c) => depth.push(c),
                Component::CurDir => {}
                Component::ParentDir => {
                    if depth.pop().is_none() {
                        return Err(self.unsafe_entry(
                            entry,
                            format!(
                                "it is a symlink pointing outside: {}",
                                link_target.display()
                            ),
                        ));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "it is a symlink to an absolute path: {}",
                            link_target.display()
                        ),
                    ));
                }
            }
        }
        let (target, tmp) = self.targets(entry, rel)?;
        #[cfg(unix)]
        {
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(link_target, &tmp)
                .map_err(|e| DownloadError::io(&tmp, e))?;
            rename(&tmp, &target)
        }
        #[cfg(not(unix))]
        {
            let _ = (target, tmp);
            tracing::warn!(
                "skipping symlink entry {entry:?} of {}: symlinks are only created on Unix",
                self.archive.display()
            );
            Ok(())
        }
    }

    /// Creates a hard link to an earlier entry (tar), both inside `dest`.
    fn hard_link(&mut self, entry: &str, rel: &Path, source: &Path) -> Result<(), DownloadError> {
        let source_rel = self.relative(entry, source)?;
        let source_path = self.dest.join(&source_rel);
        if let Some(parent) = source_rel.parent() {
            self.ensure_dir(entry, parent)?;
        }
        if !fs::symlink_metadata(&source_path).is_ok_and(|m| m.is_file()) {
            return Err(self.bad_archive(format!(
                "hard link entry {entry:?} points to {}, which is not a file unpacked before it",
                source.display()
            )));
        }
        let (target, tmp) = self.targets(entry, rel)?;
        let _ = fs::remove_file(&tmp);
        fs::hard_link(&source_path, &tmp).map_err(|e| DownloadError::io(&tmp, e))?;
        rename(&tmp, &target)
    }
}

fn unpack_with(
    archive: &Path,
    kind: Unpack,
    dest: &Path,
    progress: bool,
) -> Result<(), DownloadError> {
    let archive_name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            DownloadError::io(
                archive,
                io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
            )
        })?;
    if kind == Unpack::None {
        return Ok(());
    }
    fs::create_dir_all(dest).map_err(|e| DownloadError::io(dest, e))?;
    let file = File::open(archive).map_err(|e| DownloadError::io(archive, e))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let mut ex = Extractor::new(archive, dest);
    match kind {
        Unpack::None => {}
        Unpack::Zip => unzip(&mut ex, file, progress, &archive_name)?,
        Unpack::TarGz => untar_gz(&mut ex, file, len, progress, &archive_name)?,
    }
    let marker = unpacked_marker(dest, &archive_name);
    let tmp = with_suffix(&marker, ".tmp");
    fs::write(&tmp, format!("{}\n", archive.display())).map_err(|e| DownloadError::io(&tmp, e))?;
    rename(&tmp, &marker)
}

fn unzip(
    ex: &mut Extractor<'_>,
    file: File,
    progress: bool,
    archive_name: &str,
) -> Result<(), DownloadError> {
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| ex.bad_archive(e))?;
    let pb = if progress {
        let pb =
            ProgressBar::with_draw_target(Some(zip.len() as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} entries") {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(format!("unpacking {archive_name}"));
        pb
    } else {
        ProgressBar::hidden()
    };
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| ex.bad_archive(e))?;
        let name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
        };
        if name.contains('\0') {
            return Err(ex.unsafe_entry(&name, "its name contains a NUL byte"));
        }
        // Zip names use `/`; some Windows tools write `\`.
        let normalised = name.replace('\\', "/");
        if normalised.len() >= 2 && normalised.as_bytes()[1] == b':' {
            return Err(ex.unsafe_entry(&name, "its path is absolute (drive letter)"));
        }
        let rel = ex.relative(&name, Path::new(&normalised))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        if entry.is_dir() {
            ex.ensure_dir(&name, &rel)?;
        } else if entry.is_symlink() {
            let mut target = Vec::new();
            (&mut entry)
                .take(4096)
                .read_to_end(&mut target)
                .map_err(|e| ex.bad_archive(format!("cannot read symlink entry {name:?}: {e}")))?;
            let target = String::from_utf8(target)
                .map_err(|_| ex.unsafe_entry(&name, "its symlink target is not UTF-8"))?;
            ex.symlink(&name, &rel, Path::new(&target))?;
        } else {
            ex.file(&name, &rel, &mut entry)?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Counts bytes read, for the tar.gz progress bar (compressed bytes of the archive).
struct Counting<R> {
    inner: R,
    pb: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pb.inc(n as u64);
        Ok(n)
    }
}

fn untar_gz(
    ex: &mut Extractor<'_>,
    file: File,
    len: Option<u64>,
    progress: bool,
    archive_name: &str,
) -> Result<(), DownloadError> {
    let pb = progress_bar(len, progress, format!("unpacking {archive_name}"));
    let reader = Counting {
        inner: BufReader::with_capacity(BUF_SIZE, file),
        pb: pb.clone(),
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let entries = tar.entries().map_err(|e| ex.bad_archive(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ex.bad_archive(e))?;
        let path = entry
            .path()
            .map_err(|e| ex.bad_archive(format!("bad entry name: {e}")))?
            .into_owned();
        let name = path.to_string_lossy().into_owned();
        let rel = ex.relative(&name, &path)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            ex.ensure_dir(&name, &rel)?;
        } else if kind.is_file() || kind.is_contiguous() {
            ex.file(&name, &rel, &mut entry)?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| ex.bad_archive(format!("bad link name in entry {name:?}: {e}")))?
                .ok_or_else(|| ex.bad_archive(format!("link entry {name:?} has no target")))?
                .into_owned();
            if kind.is_symlink() {
                ex.symlink(&name, &rel, &link)?;
            } else {
                ex.hard_link(&name, &rel, &link)?;
            }
        } else {
            tracing::debug!(
                "skipping entry {name:?} of {} (type {:?})",
                ex.archive.display(),
                kind
            );
        }
    }
    pb.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            Some((Some(10), Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((Some(0), None)));
        assert_eq!(parse_content_range("bytes */100"), Some((None, Some(100))));
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn mirror_resolution() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(resolve_mirror(s("http://a"), s("http://b")), s("http://a"));
        assert_eq!(resolve_mirror(None, s("http://b")), s("http://b"));
        assert_eq!(resolve_mirror(s(" "), s("http://b")), s("http://b"));
        assert_eq!(resolve_mirror(None, s("")), None);
    }
}
