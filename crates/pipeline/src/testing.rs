//! Test support for task crates (feature `testing`): a local HTTP server that serves files made
//! by the test, WAV writers at real sample rates and encodings, synthetic class-dependent audio,
//! and the tiny fixture model. Nothing here reaches beyond 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The tiny random HuBERT (base layout: group norm, post-LN) that hubert-core's parity tests use.
pub fn tiny_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hubert-core/tests/fixtures/tiny-base")
}

/// [`tiny_model_dir`] as a command-line argument (`--model`).
pub fn tiny_model_arg() -> String {
    tiny_model_dir().display().to_string()
}

/// The tiny random WavLM (gated relative position bias) of hubert-core's parity tests: a second
/// model family, to run every task with a model other than the study's.
pub fn tiny_wavlm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hubert-core/tests/fixtures/tiny-wavlm")
}

/// The slug of [`tiny_model_dir`]'s files (its folder's name).
pub const TINY_SLUG: &str = "tiny-base";

/// The slug of [`tiny_wavlm_dir`]'s files.
pub const TINY_WAVLM_SLUG: &str = "tiny-wavlm";

/// Runs `<bin> run --model <tiny WavLM> --epochs 2 --no-plots --data-dir <data>` and `args`,
/// with every folder under `dir` ([`task_in`]), and checks what a model other than the study's gets:
/// its own store `features/<task>_features_tiny-wavlm[_<layers>].safetensors`, its results in
/// `results/<task>/tiny-wavlm/` (results.json and report.md recording the model, slug, family
/// `wavlm`), its probes `models/<task>_tiny-wavlm_{linear,three}_classifier.safetensors`. Every
/// other file already under `dir` (another model's) is left byte for byte as it was. Returns
/// results.json.
pub fn run_tiny_wavlm(
    bin: &str,
    dir: &Path,
    data: &Path,
    task_name: &str,
    args: &[&str],
) -> serde_json::Value {
    let before = files_under(dir);
    let model = tiny_wavlm_dir().display().to_string();
    let out = task_in(
        bin,
        dir,
        &["run", "--model", &model, "--epochs", "2", "--no-plots"],
    )
    .arg("--data-dir")
    .arg(data)
    .args(args)
    .output()
    .expect("the task binary runs");
    assert_success(out);
    let results_dir = dir.join("results").join(task_name).join(TINY_WAVLM_SLUG);
    let text = std::fs::read_to_string(results_dir.join("results.json")).expect("results.json");
    let r: serde_json::Value = serde_json::from_str(&text).expect("results.json is JSON");
    assert_eq!(r["task"], task_name);
    assert_eq!(r["features"]["model"], model);
    assert_eq!(r["features"]["slug"], TINY_WAVLM_SLUG);
    assert_eq!(r["features"]["family"], "wavlm");
    let store = r["features"]["path"].as_str().expect("store path");
    let store_name = Path::new(store).file_name().unwrap().to_string_lossy();
    assert!(
        store_name.starts_with(&format!("{task_name}_features_{TINY_WAVLM_SLUG}")),
        "{store}"
    );
    let report = std::fs::read_to_string(results_dir.join("report.md")).expect("report.md");
    assert!(
        report.contains(&format!(
            "- Model: `{model}` — slug `{TINY_WAVLM_SLUG}`, family wavlm"
        )),
        "{report}"
    );
    for probe in ["linear", "three"] {
        let path = dir.join("models").join(format!(
            "{task_name}_{TINY_WAVLM_SLUG}_{probe}_classifier.safetensors"
        ));
        assert!(path.is_file(), "{}", path.display());
    }
    let after = files_under(dir);
    for (path, bytes) in &before {
        assert_eq!(
            after.get(path),
            Some(bytes),
            "{} was changed by another model's run",
            path.display()
        );
    }
    r
}

/// A task end to end on the tiny WavLM in a fresh folder: `corpus` writes the dataset under the
/// folder it is given and returns the `--data-dir`; then [`run_tiny_wavlm`] with `args`.
pub fn tiny_wavlm_end_to_end(
    bin: &str,
    task_name: &str,
    corpus: impl FnOnce(&Path) -> PathBuf,
    args: &[&str],
) -> serde_json::Value {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let data = corpus(tmp.path());
    run_tiny_wavlm(bin, tmp.path(), &data, task_name, args)
}

/// Every file under `dir` and its bytes, less hidden ones (caches shared by every model, such
/// as the weights' sha256 cache in the features folder).
fn files_under(dir: &Path) -> HashMap<PathBuf, Vec<u8>> {
    let mut files = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// Environment variables that change what a task binary does; [`task`] removes them so a test
/// sees the defaults whatever the shell that runs it has set.
pub const ENV_TO_CLEAR: [&str; 3] = [
    "HUBERT_PROBE_MIRROR",
    "HUBERT_PROBE_SKIP_CHECKSUMS",
    "HUBERT_PROBE_THROTTLE_MS",
];

/// The command every task test runs: the task binary `bin` (`env!("CARGO_BIN_EXE_<task>")`) with
/// `args`, and none of [`ENV_TO_CLEAR`]. Add folders and further flags to it.
pub fn task(bin: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args);
    for var in ENV_TO_CLEAR {
        cmd.env_remove(var);
    }
    cmd
}

/// [`task`] with every output folder under `dir`: `--features-dir <dir>/features`,
/// `--results-dir <dir>/results`, `--models-dir <dir>/models` (every subcommand takes them).
pub fn task_in(bin: &str, dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = task(bin, args);
    cmd.arg("--features-dir")
        .arg(dir.join("features"))
        .arg("--results-dir")
        .arg(dir.join("results"))
        .arg("--models-dir")
        .arg(dir.join("models"));
    cmd
}

/// Runs `<bin> extract --model <tiny model> --data-dir <data>` with every folder under `dir`
/// ([`task_in`]) and returns its output: the start of every task's broken-layout test.
pub fn extract_output(bin: &str, dir: &Path, data: &Path) -> std::process::Output {
    task_in(bin, dir, &["extract", "--model", &tiny_model_arg()])
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("the task binary runs")
}

/// Asserts that a finished command succeeded, showing its stdout and stderr when it did not.
pub fn assert_success(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "command failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts that a finished command failed with every one of `needles` in its stderr, and
/// without a panic.
pub fn assert_fails_with(out: std::process::Output, needles: &[&str]) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A file server on 127.0.0.1 for download tests; stops when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Serves `files` (name -> bytes) at `/<name>`; other paths get 404.
    pub fn serve(files: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (req, st) = (Arc::clone(&requests), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            // Bounded: a test server answers at most 1,000 requests.
            for stream in listener.incoming().take(1000) {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    req.fetch_add(1, Ordering::SeqCst);
                    let _ = respond(stream, &files);
                }
            }
        });
        Self {
            url: format!("http://{addr}"),
            requests,
            stop,
            addr,
            handle: Some(handle),
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn respond(stream: TcpStream, files: &HashMap<String, Vec<u8>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/');
    let mut out = stream;
    match files.get(name) {
        Some(body) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
        }
        None => {
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
    }
    out.flush()
}

/// A WAV sample encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavEncoding {
    /// 16-bit signed PCM.
    Pcm16,
    /// 24-bit signed PCM.
    Pcm24,
    /// 32-bit IEEE float.
    Float32,
}

/// Writes `channels`-interleaved `samples` (in [-1, 1]) as a WAV file, creating parent folders.
pub fn write_wav(
    path: &Path,
    sample_rate: u32,
    channels: u16,
    encoding: WavEncoding,
    samples: &[f32],
) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create folders");
    }
    let (bits, format) = match encoding {
        WavEncoding::Pcm16 => (16, hound::SampleFormat::Int),
        WavEncoding::Pcm24 => (24, hound::SampleFormat::Int),
        WavEncoding::Float32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: bits,
        sample_format: format,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in samples {
        let s = s.clamp(-1.0, 1.0);
        match encoding {
            WavEncoding::Pcm16 => w.write_sample((s * 32767.0) as i16),
            WavEncoding::Pcm24 => w.write_sample((s * 8_388_607.0) as i32),
            WavEncoding::Float32 => w.write_sample(s),
        }
        .expect("write sample");
    }
    w.finalize().expect("finalize wav");
}

/// A class-dependent test signal: a tone at `200 * (class + 1)` Hz with a little seeded noise,
/// `seconds` long at `sample_rate`, mono.
pub fn class_tone(class: usize, seed: u64, seconds: f64, sample_rate: u32) -> Vec<f32> {
    let n = (seconds * sample_rate as f64).round() as usize;
    let freq = 200.0 * (class as f64 + 1.0);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            let t = i as f64 / sample_rate as f64;
            (0.4 * (2.0 * std::f64::consts::PI * freq * t).sin() + 0.05 * noise) as f32
        })
        .collect()
}

/// Zips every file under `root` (paths relative to `root`'s parent, so the archive has `root`'s
/// name as its top folder, like GitHub's branch archives).
pub fn zip_dir(root: &Path) -> Vec<u8> {
    let base = root.parent().expect("root has a parent");
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut stack = vec![root.to_path_buf()];
        let mut files = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files.sort();
        for path in files {
            let name = path
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .replace('\\', "/");
            zip.start_file(name, options).expect("zip entry");
            zip.write_all(&std::fs::read(&path).expect("read file"))
                .expect("zip write");
        }
        zip.finish().expect("zip finish");
    }
    buf.into_inner()
}

/// Tars and gzips every file under `root` (top folder = `root`'s name).
pub fn tar_gz_dir(root: &Path) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(enc);
    let name = root.file_name().expect("root has a name");
    tar.append_dir_all(name, root).expect("tar dir");
    tar.into_inner()
        .expect("tar finish")
        .finish()
        .expect("gzip finish")
}
