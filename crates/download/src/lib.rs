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
//! 5. unpacks zip / tar.gz archives into the destination directory (see the `unpack` module's
//!    rules: no link entries, a private temp folder renamed into place, caps on bytes and
//!    entries) and writes a marker `<dest_dir>/.<file_name>.unpacked` only once everything is in
//!    place, so an interrupted unpack is redone on the next run. The marker records the dataset,
//!    the archive's size, sha256 and md5, and every unpacked file with its size; it is verified
//!    against the disk (and the pinned md5) before it is believed.
//!
//! # Caps
//!
//! Downloads stop at [`Limits::max_download_bytes`] (checked against `Content-Length` before the
//! first byte, and while streaming), unpacking at [`Limits::max_unpack_bytes`] and
//! [`Limits::max_entries`]. Defaults come from the resource's pinned size or
//! [`Resource::expected`] sizes with a margin ([`with_margin`]), or generous fixed values when
//! unknown; the error names the cap and the flag that raises it.
//!
//! # Files on disk
//!
//! Every file this crate writes (the `.part` download, its sidecars, the marker, unpacked files)
//! is created without following a link at its final name (`O_CREAT|O_EXCL` or `O_NOFOLLOW`), and
//! temp files are removed on every failure path except a network error, where the `.part` file is
//! kept to resume.
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use indicatif::ProgressBar;
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

mod unpack;
pub use unpack::{read_marker, Marker, MAX_DEPTH};

/// Download cap when neither the size nor [`Expected::download_bytes`] is known (128 GiB).
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 128 << 30;
/// Unpack cap when [`Expected::unpacked_bytes`] is not known (256 GiB).
pub const DEFAULT_MAX_UNPACK_BYTES: u64 = 256 << 30;
/// Entry cap when [`Expected::entries`] is not known.
pub const DEFAULT_MAX_ENTRIES: u64 = 4_000_000;

/// A cap from an approximate figure: twice it, plus 256 MiB (bytes) — generous, since the
/// figures are approximate, but a zip bomb's ratio is far beyond it.
pub fn with_margin(approx: u64) -> u64 {
    approx.saturating_mul(2).saturating_add(256 << 20)
}

/// Approximate sizes of a resource, used only to set default caps (never checked as such).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    /// About how many bytes the download has.
    pub download_bytes: Option<u64>,
    /// About how many bytes the archive unpacks to.
    pub unpacked_bytes: Option<u64>,
    /// About how many entries (files and folders) the archive has.
    pub entries: Option<u64>,
}

/// Caps set on the command line (`--max-download-bytes`, `--max-unpack-bytes`,
/// `--max-unpack-entries`); `None` means the default for the resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes one download may have.
    pub max_download_bytes: Option<u64>,
    /// Most bytes one archive may unpack to.
    pub max_unpack_bytes: Option<u64>,
    /// Most entries one archive may have.
    pub max_entries: Option<u64>,
}

impl Limits {
    /// The download cap for `resource`: the flag, else its pinned size or expected size with
    /// margin ([`with_margin`]: a wrong pinned size is then reported as a size mismatch), else
    /// [`DEFAULT_MAX_DOWNLOAD_BYTES`].
    pub fn download_cap(&self, resource: &Resource) -> u64 {
        self.max_download_bytes.unwrap_or_else(|| {
            resource
                .size
                .or(resource.expected.download_bytes)
                .map_or(DEFAULT_MAX_DOWNLOAD_BYTES, with_margin)
        })
    }

    /// The unpacked-bytes cap for `resource`.
    pub fn unpack_cap(&self, resource: &Resource) -> u64 {
        self.max_unpack_bytes.unwrap_or_else(|| {
            resource
                .expected
                .unpacked_bytes
                .map_or(DEFAULT_MAX_UNPACK_BYTES, with_margin)
        })
    }

    /// The entry cap for `resource`.
    pub fn entry_cap(&self, resource: &Resource) -> u64 {
        self.max_entries.unwrap_or_else(|| {
            resource.expected.entries.map_or(DEFAULT_MAX_ENTRIES, |n| {
                n.saturating_mul(2).saturating_add(1000)
            })
        })
    }
}

/// Parses a byte count for the cap flags: a whole number with an optional binary suffix `K`,
/// `M`, `G` or `T` (optionally followed by `B` or `iB`): `500M`, `20G`, `123456`.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 500M, 20G, 123456)"))?;
    n.checked_mul(1u64 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?} is out of range (1 byte to 16 EiB)"))
}

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
    /// The dataset the file belongs to (e.g. `ESC-50`), recorded in the unpack marker and checked
    /// when the marker is read.
    pub dataset: String,
    /// The top-level names the archive unpacks into the destination (e.g. `ESC-50-master`):
    /// entries elsewhere are skipped with a warning, never written. Empty: any top-level name
    /// not starting with `.` (for a destination that belongs to this dataset alone).
    pub roots: Vec<String>,
    /// Approximate sizes, for the default caps.
    pub expected: Expected,
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
    /// Caps on download and unpack sizes (command-line overrides).
    pub limits: Limits,
}

impl DownloadOptions {
    /// Options with no mirror and progress bars on.
    pub fn new(cache_dir: impl Into<PathBuf>, dest_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            dest_dir: dest_dir.into(),
            mirror: None,
            progress: true,
            limits: Limits::default(),
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
    /// A cap on downloaded or unpacked size was reached (nothing is kept).
    #[error("{0}")]
    Limit(Box<Limit>),
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

/// Details of [`DownloadError::Limit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The URL or archive concerned.
    pub subject: String,
    /// What went over, e.g. "it unpacks to more than 1000 bytes".
    pub what: String,
    /// The cap.
    pub limit: u64,
    /// Its unit: `bytes` or `entries`.
    pub unit: &'static str,
    /// The command-line flag that raises it, e.g. `--max-unpack-bytes`.
    pub flag: &'static str,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}, over the cap of {} {} ({}); nothing was kept. If this size is expected, \
             raise the cap with {} N",
            self.subject, self.what, self.limit, self.unit, self.flag, self.flag
        )
    }
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
/// download when the final file exists and verifies; skipping the unpack when the marker
/// `<dest_dir>/.<file_name>.unpacked` exists and verifies: see [`Marker::verify`]). Returns the
/// path of the downloaded file.
///
/// For an archive whose marker verifies, a missing archive is not downloaded again (the user may
/// have deleted it to save space): the returned path then does not exist. A cached archive that
/// cannot be opened is moved aside (`<file>.bad`) and downloaded again, once.
pub fn fetch(resource: &Resource, opts: &DownloadOptions) -> Result<PathBuf, DownloadError> {
    check_file_name(resource, opts)?;
    let final_path = opts.cached_path(resource);

    let unpacked = resource.unpack != Unpack::None && marker_is_valid(resource, opts);
    if unpacked && !final_path.exists() {
        tracing::info!(
            "{} was already unpacked into {} (marker verified); not downloading it again",
            resource.file_name,
            opts.dest_dir.display(),
        );
        return Ok(final_path);
    }

    fs::create_dir_all(&opts.cache_dir).map_err(|e| DownloadError::io(&opts.cache_dir, e))?;

    let mut from_cache = false;
    if fs::symlink_metadata(&final_path).is_ok() {
        match verify(&final_path, resource, opts.progress) {
            Ok(()) => {
                tracing::info!("{} is present and verified", final_path.display());
                from_cache = true;
            }
            Err(e @ (DownloadError::Checksum { .. } | DownloadError::Size { .. })) => {
                // Moved aside by `verify`; download a fresh copy.
                tracing::warn!("{e}");
            }
            Err(e) => return Err(e),
        }
    }
    if !from_cache {
        download_verified(resource, opts, &final_path)?;
    }
    if resource.unpack == Unpack::None || unpacked {
        return Ok(final_path);
    }
    match unpack_resource(&final_path, resource, opts) {
        Err(DownloadError::BadArchive { path, message }) => {
            let moved_to = move_aside(&final_path)?;
            if !from_cache {
                return Err(DownloadError::BadArchive {
                    path,
                    message: format!(
                        "{message}; it was moved to {}, and the next run downloads it again",
                        moved_to.display()
                    ),
                });
            }
            tracing::warn!(
                "the cached {} cannot be unpacked ({message}); moved it to {} and downloading it \
                 again",
                path.display(),
                moved_to.display()
            );
            download_verified(resource, opts, &final_path)?;
            unpack_resource(&final_path, resource, opts).map_err(|e| match e {
                DownloadError::BadArchive { path, message } => {
                    let moved = move_aside(&final_path)
                        .map(|p| format!("; it was moved to {}", p.display()))
                        .unwrap_or_default();
                    DownloadError::BadArchive {
                        path,
                        message: format!("{message}{moved}"),
                    }
                }
                other => other,
            })?;
        }
        other => {
            other?;
        }
    }
    Ok(final_path)
}

/// Downloads `resource` to `<final_path>.part`, renames it into place and verifies it.
fn download_verified(
    resource: &Resource,
    opts: &DownloadOptions,
    final_path: &Path,
) -> Result<(), DownloadError> {
    let url = opts.url_for(resource);
    let part = part_path(final_path);
    download(&url, &part, resource, opts)?;
    // Verify at the final name so that the error and the `.bad` file carry the real name.
    rename(&part, final_path)?;
    let _ = fs::remove_file(validator_path(&part));
    verify(final_path, resource, opts.progress)
}

/// Whether the marker of `resource` exists and verifies (a reason is logged when it does not).
fn marker_is_valid(resource: &Resource, opts: &DownloadOptions) -> bool {
    let path = unpacked_marker(&opts.dest_dir, &resource.file_name);
    let marker = match read_marker(&path) {
        Ok(Some(m)) => m,
        Ok(None) => return false,
        Err(reason) => {
            tracing::warn!(
                "ignoring the unpack marker {}: {reason}; unpacking again",
                path.display()
            );
            return false;
        }
    };
    let mut check = marker.verify(
        &opts.dest_dir,
        &resource.dataset,
        &resource.file_name,
        resource.md5.as_deref(),
        &resource.roots,
    );
    if check.is_ok() {
        if let Some(size) = resource.size {
            if marker.archive_size != size {
                check = Err(format!(
                    "it records an archive of {} bytes, {size} expected",
                    marker.archive_size
                ));
            }
        }
        // A different archive in the cache (e.g. a newer download) is unpacked again.
        let cached = opts.cached_path(resource);
        if let Ok(meta) = fs::symlink_metadata(&cached) {
            if meta.len() != marker.archive_size {
                check = Err(format!(
                    "it records an archive of {} bytes, {} has {}",
                    marker.archive_size,
                    cached.display(),
                    meta.len()
                ));
            }
        }
    }
    match check {
        Ok(()) => true,
        Err(reason) => {
            tracing::warn!(
                "the unpack marker {} does not match: {reason}; unpacking again",
                path.display()
            );
            false
        }
    }
}

/// Unpacks `archive` (the downloaded `resource`) into `opts.dest_dir` with the resource's
/// dataset name, allowed top-level names and caps; writes and returns the verified marker.
pub fn unpack_resource(
    archive: &Path,
    resource: &Resource,
    opts: &DownloadOptions,
) -> Result<Marker, DownloadError> {
    let spec = unpack::Spec {
        dataset: &resource.dataset,
        roots: &resource.roots,
        max_bytes: opts.limits.unpack_cap(resource),
        max_entries: opts.limits.entry_cap(resource),
        progress: opts.progress,
    };
    unpack::unpack_into(archive, resource.unpack, &opts.dest_dir, &spec)
}

/// Unpack an archive (zip or tar.gz) into `dest` with the default caps, any non-hidden top-level
/// name and no dataset name, refusing link entries and entries that escape `dest` (`..`,
/// absolute paths); the archive goes into a private temp folder first, moved into place once
/// complete, so an interrupted unpack is redone on the next run (the marker [`unpacked_marker`]
/// is written only at the end). [`Unpack::None`] does nothing.
pub fn unpack(archive: &Path, kind: Unpack, dest: &Path) -> Result<(), DownloadError> {
    if kind == Unpack::None {
        return Ok(());
    }
    let spec = unpack::Spec {
        dataset: "",
        roots: &[],
        max_bytes: DEFAULT_MAX_UNPACK_BYTES,
        max_entries: DEFAULT_MAX_ENTRIES,
        progress: true,
    };
    unpack::unpack_into(archive, kind, dest, &spec).map(drop)
}

/// Creates a new file at `path` for writing; fails if anything (a file or a link) is there, so it
/// never follows a link.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Opens `path` for writing without following a link at its final name (`O_NOFOLLOW` on Unix),
/// creating it when missing; `truncate` empties it.
fn open_nofollow(path: &Path, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NOFOLLOW);
    o.open(path)
}

/// Writes `bytes` to `path` via a fresh temp file and a rename: whatever was at `path` (a file
/// or a link) is replaced, never written through.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), DownloadError> {
    let tmp = with_suffix(path, &format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = create_new(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| DownloadError::io(&tmp, e))
        .and_then(|()| rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies the regular file `src` to `target` via a fresh temp file next to `target` and a
/// rename: a link at `target` is replaced, never written through, and the temp file is removed
/// on failure. `src` must be a regular file (not a link, FIFO or device).
pub fn install_file(src: &Path, target: &Path) -> Result<(), DownloadError> {
    let meta = fs::symlink_metadata(src).map_err(|e| DownloadError::io(src, e))?;
    if !meta.is_file() {
        return Err(DownloadError::io(
            src,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let tmp = with_suffix(target, &format!(".tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut input = File::open(src).map_err(|e| DownloadError::io(src, e))?;
        let mut out = create_new(&tmp).map_err(|e| DownloadError::io(&tmp, e))?;
        io::copy(&mut input, &mut out).map_err(|e| DownloadError::io(&tmp, e))?;
        out.sync_all().map_err(|e| DownloadError::io(&tmp, e))?;
        rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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

/// A bytes bar on stderr ([`terminal::bytes_bar`], drawn only on a terminal), or a hidden one
/// when `progress` is off.
fn progress_bar(len: Option<u64>, progress: bool, msg: String) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    terminal::bytes_bar(len, msg)
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
    opts: &DownloadOptions,
) -> Result<(), DownloadError> {
    let agent = agent();
    let cap = opts.limits.download_cap(resource);
    let pb = progress_bar(resource.size, opts.progress, resource.file_name.clone());
    let mut stalled = 0u32;
    let result = loop {
        match attempt(&agent, url, part, resource, cap, &pb) {
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
    open_nofollow(part, true)
        .map(drop)
        .map_err(|e| DownloadError::io(part, e))?;
    let _ = fs::remove_file(validator_path(part));
    Ok(())
}

/// Removes the `.part` file and its validator (after a local failure or a cap).
fn remove_part(part: &Path) {
    let _ = fs::remove_file(part);
    let _ = fs::remove_file(validator_path(part));
}

fn download_limit(url: &str, what: String, limit: u64) -> DownloadError {
    DownloadError::Limit(Box::new(Limit {
        subject: url.to_owned(),
        what,
        limit,
        unit: "bytes",
        flag: "--max-download-bytes",
    }))
}

fn attempt(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    resource: &Resource,
    cap: u64,
    pb: &ProgressBar,
) -> Result<(), AttemptError> {
    let fatal = AttemptError::Fatal;
    let mut offset = match fs::symlink_metadata(part) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            // A link or anything else in the way is removed, never written through.
            tracing::warn!("{} is not a regular file; removing it", part.display());
            fs::remove_file(part).map_err(|e| fatal(DownloadError::io(part, e)))?;
            0
        }
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

    if let Some(total) = total {
        if total > cap {
            remove_part(part);
            return Err(fatal(download_limit(
                url,
                format!("the server announces {total} bytes"),
                cap,
            )));
        }
    }
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
            Some(v) => write_replacing(&validator_path(part), v.as_bytes()).map_err(fatal)?,
            None => {
                let _ = fs::remove_file(validator_path(part));
            }
        }
    }

    // A local failure (disk full) removes the `.part` file, so that it never blocks a re-run.
    let local = |e: io::Error| {
        remove_part(part);
        fatal(DownloadError::io(part, e))
    };
    let file = open_nofollow(part, start == 0).map_err(local)?;
    let mut out = BufWriter::with_capacity(BUF_SIZE, file);
    if start > 0 {
        out.seek(SeekFrom::Start(start)).map_err(local)?;
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
                if start + written + n as u64 > cap {
                    drop(out);
                    remove_part(part);
                    return Err(fatal(download_limit(
                        url,
                        format!("the server sent more than {cap} bytes"),
                        cap,
                    )));
                }
                out.write_all(&buf[..n]).map_err(local)?;
                written += n as u64;
                pb.inc(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e),
        }
    };
    let file = out.into_inner().map_err(|e| local(e.into_error()))?;
    file.sync_all().map_err(local)?;

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
    let _ = write_replacing(&sidecar, format!("{stamp} {expected}\n").as_bytes());
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
