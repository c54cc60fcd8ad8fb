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
    fetch, manual_download, unpack, unpacked_marker, DownloadError, DownloadOptions, Resource,
    Unpack, MIRROR_ENV,
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
    })
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
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

fn resource(url: String, file_name: &str, bytes: &[u8], unpack: Unpack) -> Resource {
    Resource {
        url,
        file_name: file_name.to_owned(),
        md5: Some(md5_hex(bytes)),
        size: Some(bytes.len() as u64),
        unpack,
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
    let res = Resource {
        url: url.clone(),
        file_name: "ESC-50-master.zip".into(),
        md5: None,
        size: None,
        unpack: Unpack::Zip,
    };
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
    });
    let d = dirs();
    // No md5/size: only a clean restart (truncate, not append) gives the right bytes.
    let res = Resource {
        url: server.url("f.bin"),
        file_name: "f.bin".into(),
        md5: None,
        size: None,
        unpack: Unpack::None,
    };
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
fn safe_symlinks_inside_are_kept() {
    let tgz = make_tar_gz(&[
        TarEntry::File("d/a.txt", b"a"),
        TarEntry::Symlink("d/b.txt", "a.txt"),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("ok.tar.gz");
    fs::write(&archive, tgz).unwrap();
    let dest = tmp.path().join("out");
    unpack(&archive, Unpack::TarGz, &dest).unwrap();
    assert_eq!(fs::read(dest.join("d/b.txt")).unwrap(), b"a");
    // Unpacking again (e.g. after an interrupted run) replaces everything cleanly.
    unpack(&archive, Unpack::TarGz, &dest).unwrap();
    assert_eq!(fs::read(dest.join("d/b.txt")).unwrap(), b"a");
    assert!(unpacked_marker(&dest, "ok.tar.gz").exists());
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
    let res = Resource {
        url: "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz".into(),
        file_name: "UrbanSound8K.tar.gz".into(),
        md5: None,
        size: None,
        unpack: Unpack::TarGz,
    };
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
    let res = Resource {
        url: "http://127.0.0.1:9/x".into(),
        file_name: "../escape.zip".into(),
        md5: None,
        size: None,
        unpack: Unpack::None,
    };
    let err = fetch(&res, &d.opts).unwrap_err();
    assert!(err.to_string().contains("escape.zip"), "{err}");
    assert!(!d.root.join("data/escape.zip").exists());
}
