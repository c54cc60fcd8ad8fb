//! An exclusive claim on a piece of work shared by processes on many machines (the shards of a
//! job array assembling one feature store): a file created with `O_CREAT | O_EXCL`, which
//! network file systems (NFS v3+, Lustre, GPFS, BeeGFS) honour where `flock` is node-local or
//! switched off.
//!
//! The holder touches the file's modification time every [`HEARTBEAT`]. A claim whose time is
//! older than [`STALE_AFTER`] by this machine's clock is watched for [`CONFIRM`] more (mtime
//! compared with itself, so clock skew between nodes cannot make a live claim look dead); if
//! it did not move, its holder is gone (killed, node lost) and the claim is taken over: renamed
//! aside (only one of several contenders can rename it) and created anew. Two dead holders are
//! recognised at once: a process of this host that no longer exists, and an earlier run of this
//! very SLURM job (`SLURM_JOB_ID`: a requeued array element that was killed while holding it).
//! Times are read after opening the file, which makes NFS revalidate its cached attributes.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often a holder refreshes its claim.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A claim not refreshed for this long (by the local clock) is suspected dead.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// How long a suspected-dead claim is watched before it is taken over.
pub const CONFIRM: Duration = Duration::from_secs(6);

/// The result of [`try_claim`].
#[derive(Debug)]
pub enum Attempt {
    /// This process holds the claim until the [`Claim`] is dropped or consumed.
    Claimed(Claim),
    /// Another live process holds it; its description (host, pid).
    Held(String),
    /// The folder the claim lives in is gone (the work was finished and cleared).
    Gone,
}

/// A held claim; refreshed by a background thread, released (file removed) on drop.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    token: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(' '))
        .unwrap_or_else(|| "unknown-host".into())
}

fn slurm_job() -> Option<String> {
    std::env::var("SLURM_JOB_ID")
        .ok()
        .filter(|j| !j.is_empty() && j.bytes().all(|b| b.is_ascii_digit()))
}

/// Who this process is, uniquely: `host <h> pid <n> [job <slurm id>] at <nanos>`.
fn identity() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let job = slurm_job().map(|j| format!(" job {j}")).unwrap_or_default();
    format!(
        "host {} pid {}{job} at {nanos}",
        hostname(),
        std::process::id()
    )
}

/// The value after `key` in a holder line (`host a pid 7 job 12 at 5`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next();
        }
    }
    None
}

/// Whether a holder is known dead without waiting: a process of this host that is gone, or an
/// earlier run of this SLURM job (only one run of a job exists at a time).
fn known_dead(line: &str) -> bool {
    if let (Some(job), Some(ours)) = (field(line, "job"), slurm_job()) {
        if job == ours {
            return true;
        }
    }
    match (field(line, "host"), field(line, "pid")) {
        (Some(host), Some(pid)) if host == hostname() => {
            let alive = pid.parse::<u32>().is_ok_and(|p| {
                p == std::process::id() || Path::new(&format!("/proc/{p}")).exists()
            });
            // Only where /proc shows processes at all.
            !alive && Path::new("/proc/self").exists()
        }
        _ => false,
    }
}

/// The claim file's first line (its holder), bounded.
fn holder(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(512).read_to_string(&mut text);
    }
    text.lines().next().unwrap_or("another process").to_string()
}

fn mtime(path: &Path) -> std::io::Result<SystemTime> {
    std::fs::File::open(path)?.metadata()?.modified()
}

/// Tries to take the claim at `path` (its folder must exist), taking over a dead holder's.
pub fn try_claim(path: &Path) -> std::io::Result<Attempt> {
    let token = identity();
    // A few rounds: a takeover can race with another contender's.
    for _ in 0..5 {
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(mut f) => {
                f.write_all(format!("{token}\n").as_bytes())?;
                f.sync_all()?;
                return Ok(Attempt::Claimed(Claim::start(path.to_path_buf(), token)));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Attempt::Gone),
            Err(e) => return Err(e),
        }
        let first = match mtime(path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let age = SystemTime::now().duration_since(first).unwrap_or_default();
        let dead = holder(path);
        if !known_dead(&dead) {
            if age < STALE_AFTER {
                return Ok(Attempt::Held(dead));
            }
            std::thread::sleep(CONFIRM);
            match mtime(path) {
                Ok(t) if t != first => return Ok(Attempt::Held(holder(path))),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        let aside = path.with_extension(format!("stale-{}", std::process::id()));
        match std::fs::rename(path, &aside) {
            Ok(()) => {
                eprintln!(
                    "{}: taking over the claim of a process that is gone ({dead}; last refreshed {} s ago)",
                    path.display(),
                    age.as_secs()
                );
                let _ = std::fs::remove_file(&aside);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Attempt::Held(holder(path)))
}

impl Claim {
    fn start(path: PathBuf, token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (p, t, s) = (path.clone(), token.clone(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let step = Duration::from_millis(100);
            let mut waited = Duration::ZERO;
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(step);
                waited += step;
                if waited >= HEARTBEAT {
                    waited = Duration::ZERO;
                    if owned(&p, &t) {
                        if let Ok(f) = OpenOptions::new().write(true).open(&p) {
                            let _ = f.set_modified(SystemTime::now());
                        }
                    }
                }
            }
        });
        Self {
            path,
            token,
            stop,
            thread: Some(thread),
        }
    }

    /// Whether the claim file is still this process's (not taken over after a long stall).
    pub fn is_ours(&self) -> bool {
        owned(&self.path, &self.token)
    }

    /// Stops refreshing without removing the file (for when its whole folder is about to be
    /// removed by the holder).
    pub fn disarm(mut self) {
        self.stop_thread();
        self.path = PathBuf::new();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop_thread();
        if !self.path.as_os_str().is_empty() && self.is_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn owned(path: &Path, token: &str) -> bool {
    holder(path) == token
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets the file's modification time an hour back (a claim that looks abandoned).
    fn backdate_an_hour(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn one_holder_others_see_it_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claim");
        let Attempt::Claimed(claim) = try_claim(&path).unwrap() else {
            panic!("first claim")
        };
        match try_claim(&path).unwrap() {
            Attempt::Held(by) => assert!(by.contains(&format!("pid {} ", std::process::id()))),
            other => panic!("{other:?}"),
        }
        assert!(claim.is_ours());
        drop(claim);
        assert!(!path.exists(), "released on drop");
        assert!(matches!(try_claim(&path).unwrap(), Attempt::Claimed(_)));
        assert!(matches!(
            try_claim(&dir.path().join("gone/claim")).unwrap(),
            Attempt::Gone
        ));
    }

    #[test]
    fn a_dead_holders_claim_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claim");
        std::fs::write(&path, "host node7 pid 1 at 0\n").unwrap();
        backdate_an_hour(&path);
        let Attempt::Claimed(claim) = try_claim(&path).unwrap() else {
            panic!("stale claim not taken over")
        };
        assert!(claim.is_ours());
        drop(claim);

        // A process of this host that is gone: taken over at once, however fresh its claim.
        std::fs::write(&path, format!("host {} pid 4294967295 at 0\n", hostname())).unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(try_claim(&path).unwrap(), Attempt::Claimed(_)));
        assert!(t.elapsed() < CONFIRM, "no wait for a known-dead holder");
        assert_eq!(field("host a pid 7 job 12 at 5", "job"), Some("12"));
    }

    #[test]
    fn a_live_holder_keeps_its_claim_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claim");
        let Attempt::Claimed(_claim) = try_claim(&path).unwrap() else {
            panic!("claim")
        };
        backdate_an_hour(&path);
        // Looks dead by its age, but the heartbeat moves it during the confirmation wait.
        assert!(matches!(try_claim(&path).unwrap(), Attempt::Held(_)));
    }
}
