//! Unpacking zip / tar.gz archives so that nothing can land outside the destination.
//!
//! The rules, in the order they apply:
//!
//! - every entry name is checked lexically: no `..`, no absolute path or drive letter, no NUL or
//!   line break, valid UTF-8, at most [`MAX_DEPTH`] components;
//! - symlink and hard-link entries are refused ([`DownloadError::UnsafeEntry`]): none of the six
//!   datasets has one, and refusing them means no link made by an archive is ever followed;
//! - entries outside the resource's top-level names ([`crate::Resource::roots`]), or hidden at the
//!   top level (where the unpack markers and the download cache live), are skipped with a
//!   warning, never written: one dataset's archive cannot plant another dataset's files or
//!   markers;
//! - entries are written into a fresh private folder `<dest>/.<archive>.unpacking-<pid>-<n>`
//!   (created with `mkdir`, so it cannot pre-exist), each file created with `O_CREAT|O_EXCL`, and
//!   the unpacked bytes and entries are counted against the caps;
//! - once everything is unpacked, the tree is moved into place by `rename` (a file already in
//!   place is replaced, a link in the way is replaced, not followed), then the marker
//!   `<dest>/.<archive>.unpacked` is written (via a temp file and a rename): it records the
//!   dataset, the archive's size, sha256 and md5 (computed while unpacking), and every unpacked
//!   file with its size; [`read_marker`] + [`Marker::verify`] check it against the disk;
//! - on any error the private folder is removed, so no temp file is left behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::ProgressBar;
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::{create_new, progress_bar, rename, DownloadError, Limit, Unpack, BUF_SIZE};

/// Most path components an archive entry may have.
pub const MAX_DEPTH: usize = 64;
/// Largest marker file read back (a marker lists every unpacked file: NSynth's training set,
/// about 290,000 files, needs about 25 MB).
const MAX_MARKER_BYTES: u64 = 512 << 20;
/// First line of every marker.
const MARKER_HEADER: &str = "hubert-probe unpack marker v1";

/// What an unpack is for and what it may do.
pub(crate) struct Spec<'a> {
    /// Dataset recorded in the marker.
    pub dataset: &'a str,
    /// Allowed top-level names (empty: any name not starting with `.`).
    pub roots: &'a [String],
    /// Most bytes written in all.
    pub max_bytes: u64,
    /// Most entries (files and directories) in the archive.
    pub max_entries: u64,
    /// Show a progress bar.
    pub progress: bool,
}

/// The record of one finished unpack, stored as `<dest>/.<archive>.unpacked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The dataset the archive belongs to (e.g. `ESC-50`).
    pub dataset: String,
    /// The archive's file name.
    pub archive: String,
    /// The archive's size in bytes.
    pub archive_size: u64,
    /// The archive's sha256, lower-case hex.
    pub sha256: String,
    /// The archive's md5, lower-case hex (compared with a pinned md5).
    pub md5: String,
    /// Every unpacked file, relative to the destination with `/` separators, and its size.
    pub files: Vec<(String, u64)>,
}

impl Marker {
    fn to_text(&self) -> String {
        let mut s = format!(
            "{MARKER_HEADER}\ndataset {}\narchive {}\narchive-size {}\narchive-sha256 {}\n\
             archive-md5 {}\nfiles {}\n",
            self.dataset,
            self.archive,
            self.archive_size,
            self.sha256,
            self.md5,
            self.files.len()
        );
        for (path, size) in &self.files {
            s.push_str(&format!("file {size} {path}\n"));
        }
        s
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MARKER_HEADER) {
            return Err("not a marker written by this version".into());
        }
        let mut field = |key: &str| -> Result<String, String> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or_else(|| format!("missing `{key}` line"))
        };
        let dataset = field("dataset")?;
        let archive = field("archive")?;
        let archive_size = field("archive-size")?
            .parse()
            .map_err(|_| "bad archive-size".to_owned())?;
        let sha256 = field("archive-sha256")?;
        let md5 = field("archive-md5")?;
        let count: u64 = field("files")?
            .parse()
            .map_err(|_| "bad file count".to_owned())?;
        let mut files = Vec::new();
        for line in lines {
            let rest = line
                .strip_prefix("file ")
                .ok_or_else(|| format!("unexpected line {line:?}"))?;
            let (size, path) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad file line {line:?}"))?;
            let size = size.parse().map_err(|_| format!("bad size in {line:?}"))?;
            files.push((path.to_owned(), size));
        }
        if files.len() as u64 != count {
            return Err(format!("lists {} files, says {count}", files.len()));
        }
        Ok(Self {
            dataset,
            archive,
            archive_size,
            sha256,
            md5,
            files,
        })
    }

    /// Checks the marker against what it should describe: `dataset` and `archive` match, the
    /// pinned md5 (when given) is the one recorded, every listed path is a plain relative path
    /// under one of `roots` (any non-hidden name when empty), and every listed file exists in
    /// `dest` as a regular file of the recorded size. `Err` says what does not match.
    pub fn verify(
        &self,
        dest: &Path,
        dataset: &str,
        archive: &str,
        md5: Option<&str>,
        roots: &[String],
    ) -> Result<(), String> {
        if self.dataset != dataset {
            return Err(format!(
                "it belongs to dataset {:?}, not {dataset:?}",
                self.dataset
            ));
        }
        if self.archive != archive {
            return Err(format!("it is for archive {:?}", self.archive));
        }
        if let Some(pin) = md5 {
            if !self.md5.eq_ignore_ascii_case(pin.trim()) {
                return Err(format!(
                    "it records md5 {}, the pinned md5 is {pin}",
                    self.md5
                ));
            }
        }
        if self.files.is_empty() {
            return Err("it lists no file".into());
        }
        for (path, size) in &self.files {
            let rel = lexical_relative(Path::new(path))
                .ok_or_else(|| format!("it lists an unsafe path {path:?}"))?;
            if !root_allowed(&rel, roots) {
                return Err(format!("it lists {path:?}, outside {roots:?}"));
            }
            let full = dest.join(&rel);
            match fs::metadata(&full) {
                Ok(m) if m.is_file() && m.len() == *size => {}
                Ok(m) if m.is_file() => {
                    return Err(format!(
                        "{} has {} bytes, {size} were unpacked",
                        full.display(),
                        m.len()
                    ))
                }
                Ok(_) => return Err(format!("{} is not a regular file", full.display())),
                Err(e) => return Err(format!("{}: {e}", full.display())),
            }
        }
        Ok(())
    }
}

/// Reads the marker at `path`: `Ok(None)` when there is none, `Err` (a reason) when it is not a
/// valid marker (too large, a link, not text, bad syntax).
pub fn read_marker(path: &Path) -> Result<Option<Marker>, String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > MAX_MARKER_BYTES {
        return Err(format!("it has {} bytes", meta.len()));
    }
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(MAX_MARKER_BYTES).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    Marker::parse(&text).map(Some)
}

/// The path relative to its base, or `None` when it has `..`, a root, a prefix, a NUL or a line
/// break, or more than [`MAX_DEPTH`] components. `.` components are dropped.
fn lexical_relative(path: &Path) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => {
                let s = c.to_str()?;
                if s.contains(['\0', '\n', '\r']) {
                    return None;
                }
                rel.push(c);
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (rel.components().count() <= MAX_DEPTH).then_some(rel)
}

/// Whether `rel`'s top-level name is allowed.
fn root_allowed(rel: &Path, roots: &[String]) -> bool {
    let Some(Component::Normal(top)) = rel.components().next() else {
        return false;
    };
    let top = top.to_string_lossy();
    if roots.is_empty() {
        !top.starts_with('.')
    } else {
        roots.iter().any(|r| *r == top)
    }
}

/// Reader that hashes (sha256 + md5) and counts every byte read through it.
struct Hashing<R> {
    inner: R,
    sha256: Sha256,
    md5: Md5,
    len: u64,
    pb: ProgressBar,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R, pb: ProgressBar) -> Self {
        Self {
            inner,
            sha256: Sha256::new(),
            md5: Md5::new(),
            len: 0,
            pb,
        }
    }

    /// Reads the rest, then returns (size, sha256, md5).
    fn finish(mut self) -> io::Result<(u64, String, String)> {
        let mut buf = vec![0u8; BUF_SIZE];
        while self.read(&mut buf)? > 0 {}
        Ok((
            self.len,
            format!("{:x}", self.sha256.finalize()),
            format!("{:x}", self.md5.finalize()),
        ))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        self.sha256.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        self.len += n as u64;
        self.pb.inc(n as u64);
        Ok(n)
    }
}

/// Removes the private folder on drop (every failure path).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        // `remove_dir_all` does not follow symlinks (and none can be in there anyway).
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes archive entries into a private folder, refusing anything unsafe.
struct Extractor<'a> {
    archive: &'a Path,
    dest: &'a Path,
    /// The private folder.
    root: PathBuf,
    spec: &'a Spec<'a>,
    /// Unpacked files (relative path -> size).
    files: BTreeMap<String, u64>,
    written: u64,
    entries: u64,
    skipped: Vec<String>,
    skipped_count: u64,
}

impl<'a> Extractor<'a> {
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

    fn unpack_limit(
        &self,
        what: String,
        limit: u64,
        flag: &'static str,
        unit: &'static str,
    ) -> DownloadError {
        DownloadError::Limit(Box::new(Limit {
            subject: self.archive.display().to_string(),
            what,
            limit,
            unit,
            flag,
        }))
    }

    /// Counts one entry against the entry cap.
    fn count_entry(&mut self) -> Result<(), DownloadError> {
        self.entries += 1;
        if self.entries > self.spec.max_entries {
            return Err(self.unpack_limit(
                format!("it has more than {} entries", self.spec.max_entries),
                self.spec.max_entries,
                "--max-unpack-entries",
                "entries",
            ));
        }
        Ok(())
    }

    /// The entry's relative path, or an error for unsafe names; `None` for entries to skip
    /// (outside the allowed top-level names, or the archive's root itself).
    fn relative(&mut self, entry: &str, path: &Path) -> Result<Option<PathBuf>, DownloadError> {
        for component in path.components() {
            match component {
                Component::ParentDir => {
                    return Err(self.unsafe_entry(entry, "its path contains `..`"))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(entry, "its path is absolute"))
                }
                _ => {}
            }
        }
        let rel = lexical_relative(path).ok_or_else(|| {
            self.unsafe_entry(
                entry,
                format!(
                    "its name is not UTF-8, has a NUL or line break, or is deeper than {MAX_DEPTH}"
                ),
            )
        })?;
        if rel.as_os_str().is_empty() {
            return Ok(None);
        }
        if !root_allowed(&rel, self.spec.roots) {
            self.skipped_count += 1;
            if self.skipped.len() < 5 {
                self.skipped.push(entry.to_owned());
            }
            return Ok(None);
        }
        Ok(Some(rel))
    }

    /// Makes `root/rel` and its parents real directories (the private folder holds no link).
    fn ensure_dir(&self, entry: &str, rel: &Path) -> Result<(), DownloadError> {
        let mut current = self.root.clone();
        for component in rel.components() {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.bad_archive(format!(
                        "entry {entry:?} needs a directory where the archive put a file"
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(|e| DownloadError::io(&current, e))?;
                }
                Err(e) => return Err(DownloadError::io(&current, e)),
            }
        }
        Ok(())
    }

    /// Writes a regular file, counting its bytes against the cap.
    fn file(
        &mut self,
        entry: &str,
        rel: &Path,
        declared: Option<u64>,
        contents: &mut dyn Read,
    ) -> Result<(), DownloadError> {
        let remaining = self.spec.max_bytes.saturating_sub(self.written);
        if declared.is_some_and(|d| d > remaining) {
            return Err(self.bytes_limit());
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(entry, parent)?;
        }
        let target = self.root.join(rel);
        let mut out = match create_new(&target) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // The same name twice (tar allows it: the last one wins). Nothing in the private
                // folder is a link, so removing and re-creating is safe.
                if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    return Err(self.bad_archive(format!(
                        "file entry {entry:?} has the name of a directory entry"
                    )));
                }
                fs::remove_file(&target).map_err(|e| DownloadError::io(&target, e))?;
                create_new(&target).map_err(|e| DownloadError::io(&target, e))?
            }
            Err(e) => return Err(DownloadError::io(&target, e)),
        };
        let mut buf = vec![0u8; BUF_SIZE];
        let mut size = 0u64;
        loop {
            match contents.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if n as u64 > self.spec.max_bytes.saturating_sub(self.written) {
                        return Err(self.bytes_limit());
                    }
                    self.written += n as u64;
                    size += n as u64;
                    out.write_all(&buf[..n])
                        .map_err(|e| DownloadError::io(&target, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.bad_archive(format!("cannot read entry {entry:?}: {e}"))),
            }
        }
        let key = rel.to_string_lossy().replace('\\', "/");
        self.files.insert(key, size);
        Ok(())
    }

    fn bytes_limit(&self) -> DownloadError {
        self.unpack_limit(
            format!("it unpacks to more than {} bytes", self.spec.max_bytes),
            self.spec.max_bytes,
            "--max-unpack-bytes",
            "bytes",
        )
    }

    fn link(&self, entry: &str, kind: &str) -> DownloadError {
        self.unsafe_entry(
            entry,
            format!("it is a {kind}; archives with links are refused (no dataset has any)"),
        )
    }
}

/// Removes stale private folders of earlier, interrupted unpacks of `archive_name`.
fn remove_stale(dest: &Path, archive_name: &str) {
    let prefix = format!(".{archive_name}.unpacking-");
    if let Ok(entries) = fs::read_dir(dest) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let path = entry.path();
                tracing::info!("removing {} left by an interrupted unpack", path.display());
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
}

/// A fresh private folder inside `dest`.
fn private_dir(dest: &Path, archive_name: &str) -> Result<TempDir, DownloadError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dest.join(format!(
            ".{archive_name}.unpacking-{}-{n}",
            std::process::id()
        ));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&path) {
            Ok(()) => return Ok(TempDir(path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(DownloadError::io(&path, e)),
        }
    }
    Err(DownloadError::io(
        dest,
        io::Error::new(io::ErrorKind::AlreadyExists, "no free private folder name"),
    ))
}

/// Moves `src` (in the private folder) to `dst`: a missing target is one rename; an existing
/// directory is merged into (a directory link made by the user is followed: archives cannot make
/// links); an existing file or link is replaced by the rename, never written through.
fn place(src: &Path, dst: &Path) -> Result<(), DownloadError> {
    let src_is_dir = fs::symlink_metadata(src)
        .map_err(|e| DownloadError::io(src, e))?
        .is_dir();
    match fs::symlink_metadata(dst) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => rename(src, dst),
        Err(e) => Err(DownloadError::io(dst, e)),
        Ok(existing) => {
            if src_is_dir {
                if !fs::metadata(dst).is_ok_and(|m| m.is_dir()) {
                    return Err(DownloadError::io(
                        dst,
                        io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "a file is in the way of a directory of the archive",
                        ),
                    ));
                }
                let mut children: Vec<_> = fs::read_dir(src)
                    .map_err(|e| DownloadError::io(src, e))?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| DownloadError::io(src, e))?;
                children.sort();
                for name in children {
                    place(&src.join(&name), &dst.join(&name))?;
                }
                Ok(())
            } else if existing.is_dir() {
                Err(DownloadError::io(
                    dst,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a directory is in the way of a file of the archive",
                    ),
                ))
            } else {
                rename(src, dst)
            }
        }
    }
}

/// Unpacks `archive` into `dest` under `spec` and writes the marker; returns it.
pub(crate) fn unpack_into(
    archive: &Path,
    kind: Unpack,
    dest: &Path,
    spec: &Spec<'_>,
) -> Result<Marker, DownloadError> {
    let archive_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            DownloadError::io(
                archive,
                io::Error::new(io::ErrorKind::InvalidInput, "not a UTF-8 file name"),
            )
        })?;
    fs::create_dir_all(dest).map_err(|e| DownloadError::io(dest, e))?;
    let file = File::open(archive).map_err(|e| DownloadError::io(archive, e))?;
    let len = file.metadata().map(|m| m.len()).ok();
    remove_stale(dest, &archive_name);
    let tmp = private_dir(dest, &archive_name)?;
    let mut ex = Extractor {
        archive,
        dest,
        root: tmp.0.clone(),
        spec,
        files: BTreeMap::new(),
        written: 0,
        entries: 0,
        skipped: Vec::new(),
        skipped_count: 0,
    };
    let pb = progress_bar(len, spec.progress, format!("unpacking {archive_name}"));
    let hashing = Hashing::new(BufReader::with_capacity(BUF_SIZE, file), pb.clone());
    let (archive_size, sha256, md5) = match kind {
        Unpack::None => return Err(ex.bad_archive("not an archive")),
        Unpack::Zip => unzip(&mut ex, hashing, archive)?,
        Unpack::TarGz => untar_gz(&mut ex, hashing)?,
    };
    pb.finish_and_clear();
    if ex.skipped_count > 0 {
        tracing::warn!(
            "{}: skipped {} entries outside {} (e.g. {:?}); they were not written",
            archive.display(),
            ex.skipped_count,
            if spec.roots.is_empty() {
                "the non-hidden top-level names".to_owned()
            } else {
                format!("{:?}", spec.roots)
            },
            ex.skipped
        );
    }
    if ex.files.is_empty() {
        return Err(ex.bad_archive("it holds no file of the dataset"));
    }
    let marker = Marker {
        dataset: spec.dataset.to_owned(),
        archive: archive_name.clone(),
        archive_size,
        sha256,
        md5,
        files: std::mem::take(&mut ex.files).into_iter().collect(),
    };
    let mut tops: Vec<_> = fs::read_dir(&tmp.0)
        .map_err(|e| DownloadError::io(&tmp.0, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| DownloadError::io(&tmp.0, e))?;
    tops.sort();
    for name in tops {
        place(&tmp.0.join(&name), &dest.join(&name))?;
    }
    let marker_path = crate::unpacked_marker(dest, &archive_name);
    let marker_tmp = tmp.0.join(".marker");
    let mut f = create_new(&marker_tmp).map_err(|e| DownloadError::io(&marker_tmp, e))?;
    f.write_all(marker.to_text().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| DownloadError::io(&marker_tmp, e))?;
    drop(f);
    rename(&marker_tmp, &marker_path)?;
    drop(tmp);
    Ok(marker)
}

fn unzip(
    ex: &mut Extractor<'_>,
    hashing: Hashing<BufReader<File>>,
    archive: &Path,
) -> Result<(u64, String, String), DownloadError> {
    // Zip needs random access: hash the whole file first (streaming), then unpack.
    let digests = hashing
        .finish()
        .map_err(|e| DownloadError::io(archive, e))?;
    let file = File::open(archive).map_err(|e| DownloadError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| ex.bad_archive(e))?;
    if zip.len() as u64 > ex.spec.max_entries {
        return Err(ex.unpack_limit(
            format!("it has {} entries", zip.len()),
            ex.spec.max_entries,
            "--max-unpack-entries",
            "entries",
        ));
    }
    for i in 0..zip.len() {
        ex.count_entry()?;
        let mut entry = zip.by_index(i).map_err(|e| ex.bad_archive(e))?;
        let name = match entry.name() {
            Ok(n) => n.into_owned(),
            Err(_) => {
                let raw = String::from_utf8_lossy(entry.name_raw()).into_owned();
                return Err(ex.unsafe_entry(&raw, "its name is not UTF-8"));
            }
        };
        if name.contains('\0') {
            return Err(ex.unsafe_entry(&name, "its name contains a NUL byte"));
        }
        // Zip names use `/`; some Windows tools write `\`.
        let normalised = name.replace('\\', "/");
        if normalised.len() >= 2 && normalised.as_bytes()[1] == b':' {
            return Err(ex.unsafe_entry(&name, "its path is absolute (drive letter)"));
        }
        if entry.is_symlink() {
            return Err(ex.link(&name, "symlink"));
        }
        let Some(rel) = ex.relative(&name, Path::new(&normalised))? else {
            continue;
        };
        if entry.is_dir() {
            ex.ensure_dir(&name, &rel)?;
        } else {
            let declared = entry.size();
            ex.file(&name, &rel, Some(declared), &mut entry)?;
        }
    }
    Ok(digests)
}

fn untar_gz(
    ex: &mut Extractor<'_>,
    hashing: Hashing<BufReader<File>>,
) -> Result<(u64, String, String), DownloadError> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(hashing));
    {
        let entries = tar.entries().map_err(|e| ex.bad_archive(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| ex.bad_archive(e))?;
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue;
            }
            ex.count_entry()?;
            let path = entry
                .path()
                .map_err(|e| ex.bad_archive(format!("bad entry name: {e}")))?
                .into_owned();
            let name = path.to_string_lossy().into_owned();
            if kind.is_symlink() {
                return Err(ex.link(&name, "symlink"));
            }
            if kind.is_hard_link() {
                return Err(ex.link(&name, "hard link"));
            }
            let Some(rel) = ex.relative(&name, &path)? else {
                continue;
            };
            if kind.is_dir() {
                ex.ensure_dir(&name, &rel)?;
            } else if kind.is_file() || kind.is_contiguous() {
                let declared = entry.header().size().ok();
                ex.file(&name, &rel, declared, &mut entry)?;
            } else {
                tracing::warn!(
                    "skipping entry {name:?} of {} (type {kind:?}: not a file or directory)",
                    ex.archive.display(),
                );
            }
        }
    }
    let hashing = tar.into_inner().into_inner();
    hashing
        .finish()
        .map_err(|e| DownloadError::io(ex.archive, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_rejects_garbage() {
        let m = Marker {
            dataset: "ESC-50".into(),
            archive: "a.zip".into(),
            archive_size: 12,
            sha256: "ab".into(),
            md5: "cd".into(),
            files: vec![("x/y z.wav".into(), 3), ("x/b".into(), 0)],
        };
        assert_eq!(Marker::parse(&m.to_text()).unwrap(), m);
        assert!(Marker::parse("/tmp/a.zip\n").is_err());
        let mut wrong_count = m.to_text();
        wrong_count.push_str("file 1 x/c\n");
        assert!(Marker::parse(&wrong_count).is_err());
    }

    #[test]
    fn lexical_paths() {
        assert_eq!(
            lexical_relative(Path::new("./a/./b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(lexical_relative(Path::new("a/../b")), None);
        assert_eq!(lexical_relative(Path::new("/a")), None);
        assert_eq!(lexical_relative(Path::new("a\nb")), None);
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(lexical_relative(Path::new(&deep)), None);
        assert!(root_allowed(Path::new("a/b"), &[]));
        assert!(!root_allowed(Path::new(".a.zip.unpacked"), &[]));
        assert!(!root_allowed(
            Path::new("LibriSpeech/x"),
            &["ESC-50-master".into()]
        ));
    }
}
