//! Tests of the `download` crate against a tiny HTTP/1.1 server on 127.0.0.1 started by each
//! test (no network needed): fetch + unpack of zip and tar.gz archives made here, checksum and
//! size errors, 404, resume after a cut connection, servers without Range support, unsafe
//! archive entries, the mirror override and the no-network second run.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use download::{
    fetch, install_file, manual_download, read_marker, unpack, unpacked_marker, DownloadError,
    DownloadOptions, Expected, Resource, Unpack, MIRROR_ENV,
};
use md5::{Digest, Md5};

// ---------------------------------------------------------------------------------------------
// A tiny HTTP server
// ---------------------------------------------------------------------------------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
    if_range: Option<String>,
}

#[derive(Clone)]
struct ServerConfig {
    /// URL path (e.g. `/a.zip`) -> contents.
    files: HashMap<String, Vec<u8>>,
    /// Honour `Range: bytes=N-` with 206; otherwise always answer 200 with the whole file.
    ranges: bool,
    /// Cut the connection after this many body bytes on the very first request.
    cut_first_after: Option<usize>,
    /// Send no Content-Length (the body ends when the connection closes).
    no_length: bool,
}

const ETAG: &str = "\"v1\"";

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded: at most 32 connections and 20 s, whatever the client does.
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut served = 0;
                while served < 32 && !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let first = served == 0;
                            served += 1;
                            let _ = handle(stream, &config, first, &seen);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Self {
            base,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(
    stream: TcpStream,
    config: &ServerConfig,
    first: bool,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let range = headers.get("range").cloned();
    let if_range = headers.get("if-range").cloned();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
        if_range: if_range.clone(),
    });

    let mut out = stream;
    let Some(body) = config.files.get(&path) else {
        let msg = b"no such file";
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        )?;
        out.write_all(msg)?;
        return out.flush();
    };
    let len = body.len();
    let start = range
        .as_deref()
        .filter(|_| config.ranges)
        .filter(|_| if_range.as_deref().is_none_or(|v| v == ETAG))
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (head, slice) = match start {
        Some(s) if s >= len => {
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return out.flush();
        }
        Some(s) => (
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n\
                 Content-Length: {}\r\n",
                len - 1,
                len - s
            ),
            &body[s..],
        ),
        None if config.no_length => ("HTTP/1.1 200 OK\r\n".to_owned(), &body[..]),
        None => (
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            &body[..],
        ),
    };
    let accept = if config.ranges {
        "Accept-Ranges: bytes\r\n"
    } else {
        ""
    };
    write!(
        out,
        "{head}{accept}ETag: {ETAG}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n"
    )?;
    match config.cut_first_after {
        Some(k) if first => {
            out.write_all(&slice[..k.min(slice.len())])?;
            out.flush()?;
            let _ = out.shutdown(Shutdown::Both);
        }
        _ => {
            out.write_all(slice)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn serve(files: &[(&str, &[u8])]) -> Server {
    Server::start(ServerConfig {
        files: files
            .iter()
            .map(|(n, b)| (format!("/{n}"), b.to_vec()))
            .collect(),
        ranges: true,
        cut_first_after: None,
        no_length: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Deterministic incompressible bytes (a 64-bit LCG).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let step = |x: u64| {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut x = step(seed);
    (0..len)
        .map(|_| {
            x = step(x);
            (x >> 33) as u8
        })
        .collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// A zip in ESC-50's layout: `ESC-50-master/{meta/esc50.csv, audio/*.wav}`.
fn make_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    w.add_directory("ESC-50-master/", opts).unwrap();
    w.start_file("ESC-50-master/meta/esc50.csv", opts).unwrap();
    w.write_all(b"filename,fold,target,category,esc10,src_file,take\n")
        .unwrap();
    w.start_file("ESC-50-master/audio/1-100032-A-0.wav", opts)
        .unwrap();
    w.write_all(&noise(5000, 1)).unwrap();
    w.start_file(
        "ESC-50-master/audio/1-100038-A-14.wav",
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
    )
    .unwrap();
    w.write_all(&noise(3000, 2)).unwrap();
    w.finish().unwrap().into_inner()
}

enum TarEntry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    /// A file whose name is written raw (bypassing the tar crate's path checks).
    RawFile(&'a [u8], &'a [u8]),
}

fn make_tar_gz(entries: &[TarEntry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match e {
            TarEntry::File(name, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, name, *data).unwrap();
            }
            TarEntry::Dir(name) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            TarEntry::Symlink(name, target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, name, target).unwrap();
            }
            TarEntry::HardLink(name, target) => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, name, target).unwrap();
            }
            TarEntry::RawFile(name, data) => {
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// An NSynth-like tar.gz: `nsynth-test/{examples.json, audio/*.wav}`.
fn make_nsynth_tar_gz() -> Vec<u8> {
    make_tar_gz(&[
        TarEntry::Dir("nsynth-test/"),
        TarEntry::File("nsynth-test/examples.json", b"{}"),
        TarEntry::File(
            "nsynth-test/audio/bass_electronic_018-022-100.wav",
            &noise(4000, 3),
        ),
        TarEntry::File(
            "nsynth-test/audio/guitar_acoustic_010-066-127.wav",
            &noise(7000, 4),
        ),
    ])
}

struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    opts: DownloadOptions,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let mut opts = DownloadOptions::new(root.join("data/.downloads"), root.join("data"));
    opts.progress = false;
    Dirs {
        _tmp: tmp,
        root,
        opts,
    }
}

/// A resource of the "test" dataset with no md5 or size to verify.
fn unverified(url: impl Into<String>, file_name: &str, unpack: Unpack) -> Resource {
    Resource {
        url: url.into(),
        file_name: file_name.to_owned(),
        md5: None,
        size: None,
        unpack,
        dataset: "test".into(),
        roots: Vec::new(),
        expected: Expected::default(),
    }
}

/// A resource of the "test" dataset verified against `bytes` (md5 and size).
fn resource(url: String, file_name: &str, bytes: &[u8], unpack: Unpack) -> Resource {
    Resource {
        md5: Some(md5_hex(bytes)),
        size: Some(bytes.len() as u64),
        ..unverified(url, file_name, unpack)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn zip_is_fetched_verified_unpacked_and_marked() {
    let zip = make_zip();
    let server = serve(&[("ESC-50-master.zip", &zip)]);
    let d = dirs();
    let res = resource(
        server.url("ESC-50-master.zip"),
        "ESC-50-master.zip",
        &zip,
        Unpack::Zip,
    );
    let path = fetch(&res, &d.opts).unwrap();
    assert_eq!(path, d.opts.cache_dir.join("ESC-50-master.zip"));
    assert_eq!(fs::read(&path).unwrap(), zip);
    assert!(!d.opts.cache_dir.join("ESC-50-master.zip.part").exists());
    let data = d.root.join("data/ESC-50-master");
    assert_eq!(
        fs::read(data.join("audio/1-100032-A-0.wav")).unwrap(),
        noise(5000, 1)
    );
    assert_eq!(
        fs::read(data.join("audio/1-100038-A-14.wav")).unwrap(),
        noise(3000, 2)
    );
    assert!(fs::read_to_string(data.join("meta/esc50.csv"))
        .unwrap()
        .starts_with("filename,fold"));
    assert!(unpacked_marker(&d.opts.dest_dir, "ESC-50-master.zip").exists());
    assert!(d.root.join("data/.ESC-50-master.zip.unpacked").exists());
    // No temp files left behind.
    let leftovers: Vec<_> = fs::read_dir(data.join("audio"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn tar_gz_is_fetched_and_unpacked() {
    let tgz = make_nsynth_tar_gz();
    let server = serve(&[("nsynth-test.jsonwav.tar.gz", &tgz)]);
    let d = dirs();
    let res = resource(
        server.url("nsynth-test.jsonwav.tar.gz"),
        "nsynth-test.jsonwav.tar.gz",
        &tgz,
        Unpack::TarGz,
    );
    fetch(&res, &d.opts).unwrap();
    let root = d.root.join("data/nsynth-test");
    assert_eq!(fs::read(root.join("examples.json")).unwrap(), b"{}");
    assert_eq!(
        fs::read(root.join("audio/guitar_acoustic_010-066-127.wav")).unwrap(),
        noise(7000, 4)
    );
    assert!(unpacked_marker(&d.opts.dest_dir, "nsynth-test.jsonwav.tar.gz").exists());
}

#[test]
fn second_fetch_makes_no_request() {
    let zip = make_zip();
    let server = serve(&[("a.zip", &zip)]);
    let d = dirs();
    let res = resource(server.url("a.zip"), "a.zip", &zip, Unpack::Zip);
    fetch(&res, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 1);
    let again = fetch(&res, &d.opts).unwrap();
    assert_eq!(fs::read(&again).unwrap(), zip);
    assert_eq!(
        server.requests().len(),
        1,
        "the cached file was downloaded again"
    );

    // Archive deleted after unpacking: the marker is enough, nothing is downloaded.
    fs::remove_file(&again).unwrap();
    fetch(&res, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 1);

    // Marker removed: the (re-downloaded) archive is unpacked again, restoring edited files.
    let wav = d.root.join("data/ESC-50-master/audio/1-100032-A-0.wav");
    fs::write(&wav, b"clobbered").unwrap();
    fs::remove_file(unpacked_marker(&d.opts.dest_dir, "a.zip")).unwrap();
    fetch(&res, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(fs::read(&wav).unwrap(), noise(5000, 1));
}

#[test]
fn md5_mismatch_is_an_error_and_the_file_is_moved_aside() {
    let zip = make_zip();
    let server = serve(&[("a.zip", &zip)]);
    let d = dirs();
    let mut res = resource(server.url("a.zip"), "a.zip", &zip, Unpack::Zip);
    let wrong = "0123456789abcdef0123456789abcdef";
    res.md5 = Some(wrong.to_owned());
    let err = fetch(&res, &d.opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, DownloadError::Checksum { expected, actual, .. }
            if expected == wrong && *actual == md5_hex(&zip)),
        "{err:?}"
    );
    assert!(msg.contains("a.zip") && msg.contains(wrong) && msg.contains(&md5_hex(&zip)));
    let cache = &d.opts.cache_dir;
    assert!(
        !cache.join("a.zip").exists(),
        "the bad file must not stay in place"
    );
    assert_eq!(fs::read(cache.join("a.zip.bad")).unwrap(), zip);
    assert!(!unpacked_marker(&d.opts.dest_dir, "a.zip").exists());
    assert!(
        !d.root.join("data/ESC-50-master").exists(),
        "a bad file was unpacked"
    );
}

#[test]
fn size_mismatch_is_an_error() {
    let body = noise(1000, 9);
    let server = serve(&[("f.bin", &body)]);
    let d = dirs();
    let mut res = resource(server.url("f.bin"), "f.bin", &body, Unpack::None);
    res.md5 = None;
    res.size = Some(999);
    let err = fetch(&res, &d.opts).unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::Size {
                expected: 999,
                actual: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(d.opts.cache_dir.join("f.bin.bad").exists());
    assert!(!d.opts.cache_dir.join("f.bin").exists());
}

#[test]
fn not_found_names_the_status_and_url() {
    let server = serve(&[]);
    let d = dirs();
    let url = server.url("ESC-50-master.zip");
    let res = unverified(url.clone(), "ESC-50-master.zip", Unpack::Zip);
    let err = fetch(&res, &d.opts).unwrap_err();
    assert!(
        matches!(&err, DownloadError::Http { status: 404, url: u, .. } if *u == url),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("404 Not Found for {url}")), "{msg}");
    assert_eq!(server.requests().len(), 1, "a 404 must not be retried");
    assert!(!d.opts.cache_dir.join("ESC-50-master.zip").exists());
}

#[test]
fn resumes_after_a_cut_connection() {
    let body = noise(300_000, 5);
    let cut = 100_000;
    let server = Server::start(ServerConfig {
        files: HashMap::from([("/big.bin".to_owned(), body.clone())]),
        ranges: true,
        cut_first_after: Some(cut),
        no_length: false,
    });
    let d = dirs();
    let res = resource(server.url("big.bin"), "big.bin", &body, Unpack::None);
    let path = fetch(&res, &d.opts).unwrap();
    assert_eq!(fs::read(&path).unwrap(), body);
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range.as_deref(), Some(&*format!("bytes={cut}-")));
    assert_eq!(
        seen[1].if_range.as_deref(),
        Some(ETAG),
        "resume must be guarded"
    );
    assert!(!d.opts.cache_dir.join("big.bin.part").exists());
}

#[test]
fn resumes_a_part_file_left_by_an_earlier_run() {
    let body = noise(50_000, 6);
    let server = serve(&[("f.bin", &body)]);
    let d = dirs();
    fs::create_dir_all(&d.opts.cache_dir).unwrap();
    fs::write(d.opts.cache_dir.join("f.bin.part"), &body[..12_345]).unwrap();
    let res = resource(server.url("f.bin"), "f.bin", &body, Unpack::None);
    let path = fetch(&res, &d.opts).unwrap();
    assert_eq!(fs::read(path).unwrap(), body);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].range.as_deref(), Some("bytes=12345-"));
}

#[test]
fn server_without_range_support_restarts_cleanly() {
    let body = noise(200_000, 7);
    let cut = 70_000;
    let server = Server::start(ServerConfig {
        files: HashMap::from([("/f.bin".to_owned(), body.clone())]),
        ranges: false,
        cut_first_after: Some(cut),
        no_length: false,
    });
    let d = dirs();
    // No md5/size: only a clean restart (truncate, not append) gives the right bytes.
    let res = unverified(server.url("f.bin"), "f.bin", Unpack::None);
    let path = fetch(&res, &d.opts).unwrap();
    assert_eq!(fs::read(path).unwrap(), body);
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range.as_deref(), Some(&*format!("bytes={cut}-")));

    // A stale, wrong .part from some other run is discarded too.
    let d = dirs();
    fs::create_dir_all(&d.opts.cache_dir).unwrap();
    fs::write(d.opts.cache_dir.join("f.bin.part"), noise(500, 99)).unwrap();
    let path = fetch(&res, &d.opts).unwrap();
    assert_eq!(fs::read(path).unwrap(), body);
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn mirror_from_the_environment_variable_replaces_the_official_url() {
    let zip = make_zip();
    let server = serve(&[("ESC-50-master.zip", &zip)]);
    let d = dirs();
    // The official URL is unreachable: only the mirror can serve the file.
    let res = resource(
        "http://127.0.0.1:9/karoldvl/ESC-50/archive/master.zip".into(),
        "ESC-50-master.zip",
        &zip,
        Unpack::Zip,
    );
    // Only this test touches the variable.
    std::env::set_var(MIRROR_ENV, format!("{}/", server.base));
    let from_env = DownloadOptions::from_env_and_flag(None, &d.opts.cache_dir, &d.opts.dest_dir);
    let from_flag = DownloadOptions::from_env_and_flag(
        Some("http://flag.example/x".into()),
        &d.opts.cache_dir,
        &d.opts.dest_dir,
    );
    std::env::remove_var(MIRROR_ENV);
    assert_eq!(from_flag.mirror.as_deref(), Some("http://flag.example/x"));
    assert_eq!(
        from_flag.url_for(&res),
        "http://flag.example/x/ESC-50-master.zip"
    );
    assert_eq!(from_env.url_for(&res), server.url("ESC-50-master.zip"));

    let opts = DownloadOptions {
        progress: false,
        ..from_env
    };
    fetch(&res, &opts).unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/ESC-50-master.zip");
    assert!(d.root.join("data/ESC-50-master/meta/esc50.csv").exists());
}

fn assert_unsafe(archive_bytes: &[u8], name: &str, kind: Unpack, escaped: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join(name);
    fs::write(&archive, archive_bytes).unwrap();
    let dest = tmp.path().join("out");
    let err = unpack(&archive, kind, &dest).unwrap_err();
    assert!(
        matches!(err, DownloadError::UnsafeEntry { .. }),
        "{name}: {err:?}"
    );
    assert!(err.to_string().contains(name), "{err}");
    for path in escaped {
        let p = tmp.path().join(path);
        assert!(
            fs::symlink_metadata(&p).is_err(),
            "{name}: {} was written",
            p.display()
        );
    }
    assert!(!unpacked_marker(&dest, name).exists());
    assert_empty(&dest);
}

/// `dir` is missing or empty: no entry, no temp folder, no marker was left.
fn assert_empty(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        let left: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
}

#[test]
fn zip_slip_entries_are_rejected() {
    let opts = zip::write::SimpleFileOptions::default();
    type Writer = zip::ZipWriter<Cursor<Vec<u8>>>;
    let zip_with = |build: &dyn Fn(&mut Writer)| {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("ok.txt", opts).unwrap();
        w.write_all(b"fine").unwrap();
        build(&mut w);
        w.finish().unwrap().into_inner()
    };
    let dotdot = zip_with(&|w| {
        w.start_file("sub/../../evil.txt", opts).unwrap();
        w.write_all(b"pwned").unwrap();
    });
    assert_unsafe(&dotdot, "dotdot.zip", Unpack::Zip, &["evil.txt"]);
    let absolute = zip_with(&|w| {
        w.start_file("/tmp/hubert-probe-evil.txt", opts).unwrap();
        w.write_all(b"pwned").unwrap();
    });
    assert_unsafe(&absolute, "absolute.zip", Unpack::Zip, &[]);
    assert!(!Path::new("/tmp/hubert-probe-evil.txt").exists());
    let link = zip_with(&|w| {
        w.add_symlink("link", "../..", opts).unwrap();
    });
    assert_unsafe(&link, "link.zip", Unpack::Zip, &["out/link"]);
}

#[test]
fn tar_slip_entries_are_rejected() {
    let dotdot = make_tar_gz(&[
        TarEntry::File("ok.txt", b"fine"),
        TarEntry::RawFile(b"../evil.txt", b"pwned"),
    ]);
    assert_unsafe(&dotdot, "dotdot.tar.gz", Unpack::TarGz, &["evil.txt"]);
    let absolute = make_tar_gz(&[TarEntry::RawFile(b"/tmp/hubert-probe-evil2.txt", b"x")]);
    assert_unsafe(&absolute, "absolute.tar.gz", Unpack::TarGz, &[]);
    assert!(!Path::new("/tmp/hubert-probe-evil2.txt").exists());
    let link_out = make_tar_gz(&[TarEntry::Symlink("a/link", "../../outside")]);
    assert_unsafe(&link_out, "link.tar.gz", Unpack::TarGz, &["out/a/link"]);
    let link_abs = make_tar_gz(&[TarEntry::Symlink("etc", "/etc")]);
    assert_unsafe(&link_abs, "abs-link.tar.gz", Unpack::TarGz, &["out/etc"]);
    // A symlink inside is fine, but nothing may be written through it.
    let through = make_tar_gz(&[
        TarEntry::Dir("sub/"),
        TarEntry::Symlink("link", "sub"),
        TarEntry::File("link/x.txt", b"x"),
    ]);
    assert_unsafe(
        &through,
        "through.tar.gz",
        Unpack::TarGz,
        &["out/sub/x.txt"],
    );
}

#[test]
fn symlinks_are_refused_even_inside() {
    let tgz = make_tar_gz(&[
        TarEntry::File("d/a.txt", b"a"),
        TarEntry::Symlink("d/b.txt", "a.txt"),
    ]);
    assert_unsafe(&tgz, "inside.tar.gz", Unpack::TarGz, &["out/d/b.txt"]);
}

#[test]
fn corrupt_archives_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let check = |name: &str, bytes: &[u8], kind: Unpack| {
        let archive = tmp.path().join(name);
        fs::write(&archive, bytes).unwrap();
        let err = unpack(&archive, kind, &dest).unwrap_err();
        assert!(
            matches!(err, DownloadError::BadArchive { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
        assert!(!unpacked_marker(&dest, name).exists());
    };
    check("garbage.zip", &noise(3000, 11), Unpack::Zip);
    check("garbage.tar.gz", &noise(3000, 12), Unpack::TarGz);
    let zip = make_zip();
    check("truncated.zip", &zip[..zip.len() / 2], Unpack::Zip);
    let tgz = make_nsynth_tar_gz();
    check("truncated.tar.gz", &tgz[..tgz.len() / 2], Unpack::TarGz);
    // A flipped byte inside a stored entry's data: CRC mismatch.
    let mut flipped = zip.clone();
    let stored = noise(3000, 2);
    let at = flipped
        .windows(64)
        .position(|w| w == &stored[..64])
        .expect("stored entry data in the zip")
        + 1500;
    flipped[at] ^= 0xff;
    check("flipped.zip", &flipped, Unpack::Zip);

    let missing = tmp.path().join("missing.zip");
    let err = unpack(&missing, Unpack::Zip, &dest).unwrap_err();
    assert!(matches!(err, DownloadError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.zip"));
}

#[test]
fn manual_download_says_what_to_open_and_where_to_save() {
    let d = dirs();
    let res = unverified(
        "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz",
        "UrbanSound8K.tar.gz",
        Unpack::TarGz,
    );
    let err = manual_download(&res, &d.opts, "Zenodo asks for a form");
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Manual { .. }));
    assert!(msg.contains(&res.url), "{msg}");
    let target = d.opts.cache_dir.join("UrbanSound8K.tar.gz");
    assert!(msg.contains(&*target.to_string_lossy()), "{msg}");
    assert!(msg.contains("re-run"), "{msg}");

    // Following the instructions works offline: the file placed by hand is used as is.
    let tgz = make_tar_gz(&[TarEntry::File(
        "UrbanSound8K/metadata/UrbanSound8K.csv",
        b"x",
    )]);
    fs::create_dir_all(&d.opts.cache_dir).unwrap();
    fs::write(&target, &tgz).unwrap();
    let res = Resource {
        url: "http://127.0.0.1:9/unreachable".into(),
        md5: Some(md5_hex(&tgz)),
        ..res
    };
    fetch(&res, &d.opts).unwrap();
    assert!(d
        .root
        .join("data/UrbanSound8K/metadata/UrbanSound8K.csv")
        .exists());
}

#[test]
fn bad_file_names_are_rejected() {
    let d = dirs();
    let res = unverified("http://127.0.0.1:9/x", "../escape.zip", Unpack::None);
    let err = fetch(&res, &d.opts).unwrap_err();
    assert!(err.to_string().contains("escape.zip"), "{err}");
    assert!(!d.root.join("data/escape.zip").exists());
}

// ---------------------------------------------------------------------------------------------
// Hostile archives, mirrors and caches
// ---------------------------------------------------------------------------------------------

type ZipWriter = zip::ZipWriter<Cursor<Vec<u8>>>;

fn zip_of(build: &dyn Fn(&mut ZipWriter)) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    build(&mut w);
    w.finish().unwrap().into_inner()
}

fn zip_opts() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated)
}

#[test]
fn symlink_chains_and_hard_links_are_refused() {
    // The chain of the report: each link's target looks harmless by its spelling alone, and a
    // file written through the last one lands two levels above the destination.
    let chain_zip = zip_of(&|w| {
        let o = zip_opts();
        w.add_directory("a/", o).unwrap();
        w.add_symlink("a/up", "..", o).unwrap();
        w.add_symlink("l1", "a/up/..", o).unwrap();
        w.add_symlink("l2", "l1/..", o).unwrap();
        w.start_file("l2/escaped.txt", o).unwrap();
        w.write_all(b"pwned").unwrap();
    });
    assert_unsafe(
        &chain_zip,
        "chain.zip",
        Unpack::Zip,
        &["escaped.txt", "../escaped.txt", "out/a/up", "out/l1"],
    );
    let chain_tgz = make_tar_gz(&[
        TarEntry::Dir("a/"),
        TarEntry::Symlink("a/up", ".."),
        TarEntry::Symlink("l1", "a/up/.."),
        TarEntry::Symlink("l2", "l1/.."),
        TarEntry::File("l2/escaped.txt", b"pwned"),
    ]);
    assert_unsafe(
        &chain_tgz,
        "chain.tar.gz",
        Unpack::TarGz,
        &["escaped.txt", "../escaped.txt", "out/a/up", "out/l1"],
    );
    // A hard link, inside or out, is refused too (writing to it would write to its source).
    let hard_in = make_tar_gz(&[
        TarEntry::File("ok.txt", b"fine"),
        TarEntry::HardLink("h.txt", "ok.txt"),
    ]);
    assert_unsafe(&hard_in, "hard-in.tar.gz", Unpack::TarGz, &["out/h.txt"]);
    let hard_out = make_tar_gz(&[TarEntry::HardLink("passwd", "/etc/passwd")]);
    assert_unsafe(&hard_out, "hard-out.tar.gz", Unpack::TarGz, &["out/passwd"]);
    let err = {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("hard.tar.gz");
        fs::write(&archive, &hard_in).unwrap();
        unpack(&archive, Unpack::TarGz, &tmp.path().join("out")).unwrap_err()
    };
    assert!(err.to_string().contains("hard link"), "{err}");
}

/// An archive in LibriSpeech's layout: `LibriSpeech/{SPEAKERS.TXT, train-clean-100/...}`.
fn make_librispeech_tgz() -> Vec<u8> {
    make_tar_gz(&[
        TarEntry::File("LibriSpeech/SPEAKERS.TXT", b"; real speakers\n"),
        TarEntry::File(
            "LibriSpeech/train-clean-100/19/198/19-198-0001.flac",
            &noise(2000, 21),
        ),
    ])
}

fn librispeech_resource(url: String, bytes: &[u8]) -> Resource {
    Resource {
        dataset: "LibriSpeech".into(),
        roots: vec!["LibriSpeech".into()],
        size: None,
        ..resource(url, "train-clean-100.tar.gz", bytes, Unpack::TarGz)
    }
}

#[test]
fn one_archive_cannot_plant_another_datasets_files_or_marker() {
    let libri = make_librispeech_tgz();
    // A forged marker, in the right format, for the planted files (an archive cannot know the
    // md5 of the real one when it is made: it records its own).
    let planted_speakers = b"; planted\n";
    let forged = format!(
        "hubert-probe unpack marker v1\ndataset LibriSpeech\narchive train-clean-100.tar.gz\n\
         archive-size {}\narchive-sha256 00\narchive-md5 {}\nfiles 1\nfile {} \
         LibriSpeech/SPEAKERS.TXT\n",
        libri.len(),
        md5_hex(b"not the real archive"),
        planted_speakers.len()
    );
    let esc = zip_of(&|w| {
        let o = zip_opts();
        w.start_file("ESC-50-master/meta/esc50.csv", o).unwrap();
        w.write_all(b"filename,fold,target,category,esc10,src_file,take\n")
            .unwrap();
        w.start_file("LibriSpeech/SPEAKERS.TXT", o).unwrap();
        w.write_all(planted_speakers).unwrap();
        w.start_file("LibriSpeech/train-clean-100/1/2/1-2-0000.flac", o)
            .unwrap();
        w.write_all(b"fake").unwrap();
        w.start_file(".train-clean-100.tar.gz.unpacked", o).unwrap();
        w.write_all(forged.as_bytes()).unwrap();
        w.start_file(".downloads/train-clean-100.tar.gz", o)
            .unwrap();
        w.write_all(b"fake archive").unwrap();
    });
    let server = serve(&[
        ("ESC-50-master.zip", &esc),
        ("train-clean-100.tar.gz", &libri),
    ]);
    let d = dirs();
    let esc_res = Resource {
        dataset: "ESC-50".into(),
        roots: vec!["ESC-50-master".into()],
        ..resource(
            server.url("ESC-50-master.zip"),
            "ESC-50-master.zip",
            &esc,
            Unpack::Zip,
        )
    };
    fetch(&esc_res, &d.opts).unwrap();
    let data = d.root.join("data");
    assert!(data.join("ESC-50-master/meta/esc50.csv").is_file());
    assert!(
        !data.join("LibriSpeech").exists(),
        "another dataset was planted"
    );
    assert!(!unpacked_marker(&data, "train-clean-100.tar.gz").exists());
    assert!(!d.opts.cache_dir.join("train-clean-100.tar.gz").exists());
    let marker = read_marker(&unpacked_marker(&data, "ESC-50-master.zip"))
        .unwrap()
        .unwrap();
    assert_eq!(marker.dataset, "ESC-50");
    assert_eq!(
        marker.files,
        vec![("ESC-50-master/meta/esc50.csv".to_owned(), 50)]
    );

    // Even planted by other means (files and a well-formed marker), LibriSpeech is not "ready":
    // the marker's md5 is not the pinned one, so the real archive is fetched and checked.
    fs::create_dir_all(data.join("LibriSpeech")).unwrap();
    fs::write(data.join("LibriSpeech/SPEAKERS.TXT"), planted_speakers).unwrap();
    fs::write(unpacked_marker(&data, "train-clean-100.tar.gz"), &forged).unwrap();
    let libri_res = librispeech_resource(server.url("train-clean-100.tar.gz"), &libri);
    fetch(&libri_res, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 2, "the forged marker was trusted");
    assert_eq!(
        fs::read(data.join("LibriSpeech/SPEAKERS.TXT")).unwrap(),
        b"; real speakers\n"
    );
    let marker = read_marker(&unpacked_marker(&data, "train-clean-100.tar.gz"))
        .unwrap()
        .unwrap();
    assert_eq!(marker.md5, md5_hex(&libri));
}

#[test]
fn markers_record_the_archive_and_files_and_are_verified() {
    let tgz = make_nsynth_tar_gz();
    let server = serve(&[("n.tar.gz", &tgz)]);
    let d = dirs();
    let res = Resource {
        dataset: "NSynth".into(),
        roots: vec!["nsynth-test".into()],
        ..resource(server.url("n.tar.gz"), "n.tar.gz", &tgz, Unpack::TarGz)
    };
    let path = fetch(&res, &d.opts).unwrap();
    let data = d.root.join("data");
    let text = fs::read_to_string(unpacked_marker(&data, "n.tar.gz")).unwrap();
    use sha2::Digest as _;
    let sha = format!("{:x}", sha2::Sha256::digest(&tgz));
    assert!(text.contains(&format!("archive-sha256 {sha}\n")), "{text}");
    assert!(
        text.contains(&format!("archive-size {}\n", tgz.len())),
        "{text}"
    );
    assert!(text.contains("dataset NSynth\n"), "{text}");
    assert!(
        text.contains("file 4000 nsynth-test/audio/bass_electronic_018-022-100.wav\n"),
        "{text}"
    );
    // No private folder left.
    let names: Vec<_> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("unpacking")), "{names:?}");

    // The archive deleted and an unpacked file truncated: the marker no longer verifies, so the
    // archive is fetched and unpacked again.
    fs::remove_file(&path).unwrap();
    let wav = data.join("nsynth-test/audio/guitar_acoustic_010-066-127.wav");
    fs::write(&wav, b"short").unwrap();
    fetch(&res, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(fs::read(&wav).unwrap(), noise(7000, 4));
    // A marker of another dataset's name is not accepted either.
    fs::remove_file(&path).unwrap();
    let other = Resource {
        dataset: "ESC-50".into(),
        ..res.clone()
    };
    fetch(&other, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 3);
    // An old-format marker is not trusted.
    fs::remove_file(&path).unwrap();
    fs::write(unpacked_marker(&data, "n.tar.gz"), "/some/where/n.tar.gz\n").unwrap();
    fetch(&res, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 4);
}

/// A zip whose one entry is `n` zero bytes (deflated to about n/1000).
fn zip_bomb(n: usize) -> Vec<u8> {
    zip_of(&|w| {
        w.start_file("bomb/zeros.bin", zip_opts()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..n / chunk.len() {
            w.write_all(&chunk).unwrap();
        }
    })
}

#[test]
fn bombs_stop_at_the_unpack_caps() {
    let zip = zip_bomb(64 << 20);
    assert!(zip.len() < 1 << 20, "{} bytes", zip.len());
    let tgz = make_tar_gz(&[TarEntry::File("bomb/zeros.bin", &vec![0u8; 64 << 20])]);
    assert!(tgz.len() < 1 << 20, "{} bytes", tgz.len());
    let server = serve(&[("bomb.zip", &zip), ("bomb.tar.gz", &tgz)]);
    for (name, bytes, kind) in [
        ("bomb.zip", &zip, Unpack::Zip),
        ("bomb.tar.gz", &tgz, Unpack::TarGz),
    ] {
        let mut d = dirs();
        d.opts.limits.max_unpack_bytes = Some(8 << 20);
        let res = resource(server.url(name), name, bytes, kind);
        let err = fetch(&res, &d.opts).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DownloadError::Limit(_)), "{err:?}");
        assert!(
            msg.contains("--max-unpack-bytes") && msg.contains(&(8u64 << 20).to_string()),
            "{msg}"
        );
        assert!(msg.contains(name), "{msg}");
        // Nothing unpacked, no temp folder; the archive stays (raise the cap and re-run).
        let data = d.root.join("data");
        let left: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![".downloads".to_owned()], "{name}");
        assert!(d.opts.cache_dir.join(name).exists());
        // With the cap raised, it unpacks.
        d.opts.limits.max_unpack_bytes = Some(65 << 20);
        fetch(&res, &d.opts).unwrap();
        assert_eq!(
            fs::metadata(data.join("bomb/zeros.bin")).unwrap().len(),
            64 << 20
        );
    }

    // Entry count.
    let many = zip_of(&|w| {
        for i in 0..50 {
            w.start_file(format!("m/{i}.txt"), zip_opts()).unwrap();
            w.write_all(b"x").unwrap();
        }
    });
    let server = serve(&[("many.zip", &many)]);
    let mut d = dirs();
    d.opts.limits.max_entries = Some(10);
    let res = resource(server.url("many.zip"), "many.zip", &many, Unpack::Zip);
    let msg = fetch(&res, &d.opts).unwrap_err().to_string();
    assert!(msg.contains("--max-unpack-entries"), "{msg}");
    assert!(!d.root.join("data/m").exists());
}

#[test]
fn default_caps_come_from_the_known_sizes() {
    use download::{with_margin, Limits, DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_MAX_UNPACK_BYTES};
    let mut res = resource("http://x/a".into(), "a.zip", b"abc", Unpack::Zip);
    let none = Limits::default();
    assert_eq!(
        none.download_cap(&res),
        with_margin(3),
        "from the pinned size"
    );
    res.size = None;
    assert_eq!(none.download_cap(&res), DEFAULT_MAX_DOWNLOAD_BYTES);
    assert_eq!(none.unpack_cap(&res), DEFAULT_MAX_UNPACK_BYTES);
    res.expected = Expected {
        download_bytes: Some(1000),
        unpacked_bytes: Some(2000),
        entries: Some(10),
    };
    assert_eq!(none.download_cap(&res), with_margin(1000));
    assert_eq!(none.unpack_cap(&res), with_margin(2000));
    assert_eq!(none.entry_cap(&res), 1020);
    let flags = Limits {
        max_download_bytes: Some(5),
        max_unpack_bytes: Some(6),
        max_entries: Some(7),
    };
    assert_eq!(
        (
            flags.download_cap(&res),
            flags.unpack_cap(&res),
            flags.entry_cap(&res)
        ),
        (5, 6, 7)
    );
    assert_eq!(download::parse_byte_size("20G").unwrap(), 20 << 30);
    assert_eq!(download::parse_byte_size("500MiB").unwrap(), 500 << 20);
    assert_eq!(download::parse_byte_size("123").unwrap(), 123);
    assert!(download::parse_byte_size("x").is_err());
    assert!(download::parse_byte_size("0").is_err());
    assert!(download::parse_byte_size("99999999999T").is_err());
}

#[test]
fn downloads_stop_at_the_download_cap() {
    let body = noise(300_000, 31);
    for no_length in [false, true] {
        let server = Server::start(ServerConfig {
            files: HashMap::from([("/f.bin".to_owned(), body.clone())]),
            ranges: true,
            cut_first_after: None,
            no_length,
        });
        let mut d = dirs();
        d.opts.limits.max_download_bytes = Some(100_000);
        let res = unverified(server.url("f.bin"), "f.bin", Unpack::None);
        let err = fetch(&res, &d.opts).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DownloadError::Limit(_)), "{err:?}");
        assert!(
            msg.contains("--max-download-bytes") && msg.contains("100000"),
            "{msg}"
        );
        assert_eq!(server.requests().len(), 1, "a cap must not be retried");
        assert_empty(&d.opts.cache_dir);
    }
}

#[test]
fn a_bad_cached_archive_is_moved_aside_and_fetched_again() {
    let zip = make_zip();
    let html = b"<html><body>Service unavailable</body></html>";
    let server = serve(&[("a.zip", &zip)]);
    let d = dirs();
    let res = unverified(server.url("a.zip"), "a.zip", Unpack::Zip);
    fs::create_dir_all(&d.opts.cache_dir).unwrap();
    fs::write(d.opts.cache_dir.join("a.zip"), html).unwrap();
    fetch(&res, &d.opts).unwrap();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(fs::read(d.opts.cache_dir.join("a.zip.bad")).unwrap(), html);
    assert_eq!(fs::read(d.opts.cache_dir.join("a.zip")).unwrap(), zip);
    assert!(d.root.join("data/ESC-50-master/meta/esc50.csv").exists());

    // A freshly downloaded archive that does not open: an error, and moved aside so that the
    // next run downloads it again.
    let server = serve(&[("b.zip", html)]);
    let d = dirs();
    let res = unverified(server.url("b.zip"), "b.zip", Unpack::Zip);
    let err = fetch(&res, &d.opts).unwrap_err();
    assert!(matches!(err, DownloadError::BadArchive { .. }), "{err:?}");
    assert!(err.to_string().contains("b.zip.bad"), "{err}");
    assert!(!d.opts.cache_dir.join("b.zip").exists());
    assert_eq!(server.requests().len(), 1);
}

#[cfg(unix)]
#[test]
fn writers_never_follow_links_on_disk() {
    let zip = make_zip();
    let server = serve(&[("a.zip", &zip)]);
    let d = dirs();
    let res = resource(server.url("a.zip"), "a.zip", &zip, Unpack::Zip);
    let victim = d.root.join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    let data = d.root.join("data");
    fs::create_dir_all(&d.opts.cache_dir).unwrap();
    let link = |at: &Path| std::os::unix::fs::symlink(&victim, at).unwrap();
    link(&d.opts.cache_dir.join("a.zip.part"));
    link(&d.opts.cache_dir.join("a.zip.part.validator"));
    link(&d.opts.cache_dir.join("a.zip.md5-verified"));
    link(&unpacked_marker(&data, "a.zip"));
    fetch(&res, &d.opts).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    let marker = unpacked_marker(&data, "a.zip");
    assert!(fs::symlink_metadata(&marker).unwrap().is_file());
    assert!(read_marker(&marker).unwrap().is_some());

    // The helper behind ICBHI's split-file copy replaces a link at the target.
    let target = data.join("split.txt");
    link(&target);
    install_file(&d.opts.cache_dir.join("a.zip"), &target).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(fs::read(&target).unwrap(), zip);
    // And refuses a source that is not a regular file.
    let err = install_file(&d.root.join("data"), &data.join("x.txt")).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_stale_private_folder_is_removed_and_the_unpack_redone() {
    let tgz = make_nsynth_tar_gz();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("n.tar.gz");
    fs::write(&archive, &tgz).unwrap();
    let dest = tmp.path().join("out");
    let stale = dest.join(".n.tar.gz.unpacking-1-0");
    fs::create_dir_all(stale.join("nsynth-test")).unwrap();
    fs::write(stale.join("nsynth-test/half.wav"), b"half").unwrap();
    unpack(&archive, Unpack::TarGz, &dest).unwrap();
    assert!(!stale.exists());
    assert!(!dest.join("nsynth-test/half.wav").exists());
    assert_eq!(
        fs::read(dest.join("nsynth-test/examples.json")).unwrap(),
        b"{}"
    );
}
