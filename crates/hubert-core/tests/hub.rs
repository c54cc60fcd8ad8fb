//! Loading by hub id through hf-hub, against a local server that speaks the hub's `resolve`
//! protocol (Range requests, `etag`, `x-repo-commit`, `Content-Range`), with `HF_ENDPOINT` and
//! `HF_HOME` pointing at it; then `HF_HUB_OFFLINE=1` loads from the cache and names what is
//! missing. Everything stays on 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hubert_core::{DType, Device, Hubert, ModelFiles};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "facebook/hubert-tiny-test";

/// Serves `files` at `/{REPO}/resolve/main/{name}`; counts requests; answers at most 64.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(stream) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut range_start = 0usize;
            let mut range_end: Option<usize> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range_start = a.parse().unwrap();
                    range_end = b.parse().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let prefix = format!("/{REPO}/resolve/main/");
            let mut out = stream;
            match path.strip_prefix(&prefix).and_then(|f| files.get(f)) {
                Some(body) => {
                    let end = range_end.unwrap_or(body.len() - 1).min(body.len() - 1);
                    let part = &body[range_start..=end];
                    write!(
                        out,
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {range_start}-{end}/{}\r\netag: \"{:x}\"\r\nx-repo-commit: {COMMIT}\r\nConnection: close\r\n\r\n",
                        part.len(),
                        body.len(),
                        body.len()
                    )
                    .unwrap();
                    out.write_all(part).unwrap();
                }
                None => {
                    write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nx-error-code: EntryNotFound\r\nConnection: close\r\n\r\n").unwrap();
                }
            }
        }
    });
    (url, count)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny-base")
            .join(name),
    )
    .unwrap()
}

/// One test: the environment variables it sets are process-wide.
#[test]
fn hub_id_downloads_into_hf_home_then_loads_offline() {
    let files: HashMap<String, Vec<u8>> = [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
    ]
    .into_iter()
    .map(|f| (f.to_string(), fixture(f)))
    .collect();
    let (url, requests) = serve(files);
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_ENDPOINT", &url);
    std::env::remove_var("HF_HUB_OFFLINE");

    let files = ModelFiles::resolve(REPO).unwrap();
    assert_eq!(files.revision.as_deref(), Some(COMMIT));
    assert!(
        files.weights.starts_with(home.path().join("hub")),
        "{:?}",
        files.weights
    );
    assert!(files.weights.ends_with("model.safetensors"));
    let hubert = Hubert::from_files(files, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(hubert.config().hidden_size, 32);
    let online = requests.load(Ordering::SeqCst);
    assert!(
        online >= 3,
        "config, preprocessor and weights fetched ({online} requests)"
    );

    // Offline: the cache is enough, and the server is not asked again.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let cached = Hubert::load(REPO, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(cached.files.revision.as_deref(), Some(COMMIT));
    assert_eq!(requests.load(Ordering::SeqCst), online);

    // Offline with an uncached model: the error names it and the reason.
    let err = Hubert::load("facebook/not-cached", &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("facebook/not-cached") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );

    // Online, a repository the server does not have: the error names the repo.
    std::env::remove_var("HF_HUB_OFFLINE");
    let err = Hubert::load("facebook/missing-model", &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("facebook/missing-model") && err.contains("config.json"),
        "{err}"
    );
    std::env::remove_var("HF_ENDPOINT");
    std::env::remove_var("HF_HOME");
}
