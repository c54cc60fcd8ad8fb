//! Extraction throughput of hubert-core, in audio-seconds per wall-second, for the side-by-side
//! comparison with transformers that `scripts/bench_extract.sh` runs (the PyTorch side is
//! `scripts/bench_torch.py`, with the same clips, batch sizes and thread count).
//!
//! `cargo bench -p hubert-core --bench extract -- --model DIR [--seconds 1,5] [--batch 1,8]
//!  [--reps 3] [--dtype f32] [--device cpu|cuda:N]` prints one JSON line per (clip length,
//! batch size) and the process's peak RSS. `--device cuda` needs `--features cuda`.

use std::time::Instant;

use std::collections::HashMap;
use std::sync::Mutex;

use hubert_core::{parse_device, parse_dtype, Device, Hubert, LayerSelection};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Accumulates wall time per span name (inclusive of nested spans): `--profile` prints where a
/// forward pass spends its time, stage by stage.
#[derive(Default)]
struct StageTimes {
    totals: Mutex<HashMap<String, (f64, u64)>>,
}

struct Entered(Instant);

/// The stage label: the span name, with the layer index for conv layers (they differ a lot).
struct Label(String);

struct IndexField(Option<u64>);

impl tracing::field::Visit for IndexField {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "i" {
            self.0 = Some(value);
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "i" {
            self.0 = Some(value as u64);
        }
    }
    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for &'static StageTimes {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        let label = if name == "conv-layer" {
            let mut index = IndexField(None);
            attrs.record(&mut index);
            match index.0 {
                Some(i) => format!("{name} {i}"),
                None => name.to_string(),
            }
        } else {
            name.to_string()
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().replace(Label(label));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().replace(Entered(Instant::now()));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(Entered(t)) = ext.remove::<Entered>() {
                let label = ext
                    .get_mut::<Label>()
                    .map_or_else(|| span.name().to_string(), |l| l.0.clone());
                let mut totals = self.totals.lock().expect("not poisoned");
                let e = totals.entry(label).or_insert((0.0, 0));
                e.0 += t.elapsed().as_secs_f64();
                e.1 += 1;
            }
        }
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn list(s: &str) -> Vec<f64> {
    s.split(',')
        .map(|x| x.trim().parse().expect("a number"))
        .collect()
}

/// Peak resident set size of this process, from /proc (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Deterministic noise (a 64-bit LCG), the same kind of input the Python side uses.
fn clip(samples: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..samples)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn main() {
    hubert_core::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--model") {
        // `cargo bench --workspace` runs every bench target: without a model there is nothing
        // to measure, so say how to run it instead of failing.
        eprintln!("extract bench: pass --model DIR (see scripts/bench_extract.sh)");
        return;
    }
    let model = arg(&args, "--model", "models/hubert-base-random");
    let seconds = list(&arg(&args, "--seconds", "1,5"));
    let batches: Vec<usize> = list(&arg(&args, "--batch", "1,8"))
        .into_iter()
        .map(|b| b as usize)
        .collect();
    let reps: usize = arg(&args, "--reps", "3").parse().expect("--reps N");
    let dtype = parse_dtype(&arg(&args, "--dtype", "f32")).expect("--dtype");
    let device_name = arg(&args, "--device", "cpu");
    let device = parse_device(&device_name).expect("--device");
    let profile: Option<&'static StageTimes> = args
        .iter()
        .any(|a| a == "--profile")
        .then(|| &*Box::leak(Box::<StageTimes>::default()));
    if let Some(times) = profile {
        let subscriber = tracing_subscriber::registry().with(times);
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    }

    let load_start = Instant::now();
    let hubert = Hubert::load(&model, &device, dtype).expect("load model");
    let load_s = load_start.elapsed().as_secs_f64();
    eprintln!("loaded {model} in {load_s:.2} s");
    for &secs in &seconds {
        let n = (secs * 16_000.0).round() as usize;
        for &batch in &batches {
            let clips: Vec<Vec<f32>> = (0..batch).map(|i| clip(n, i as u64)).collect();
            let refs: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
            // Warm-up (allocator, caches).
            let forward = || {
                let out = hubert.embed(&refs, &LayerSelection::Last).expect("forward");
                // Copying the pooled rows to the host waits for the GPU's queue (as extraction does).
                out.to_device(&Device::Cpu).expect("to host")
            };
            forward();
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps {
                let t = Instant::now();
                std::hint::black_box(forward());
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let audio = secs * batch as f64;
            println!(
                "{{\"impl\": \"hubert-probe\", \"device\": \"{device_name}\", \"dtype\": \"{dtype:?}\", \"clip_seconds\": {secs}, \"batch\": {batch}, \"median_s\": {median:.4}, \"audio_s_per_s\": {:.2}}}",
                audio / median
            );
        }
    }
    if let Some(times) = profile {
        let totals = times.totals.lock().expect("not poisoned");
        let mut rows: Vec<_> = totals.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        eprintln!("stage (inclusive wall time over all timed and warm-up passes)");
        for (name, (secs, calls)) in rows {
            eprintln!("{name:>20} {:>9.1} ms {calls:>6} calls", secs * 1e3);
        }
    }
    println!(
        "{{\"impl\": \"hubert-probe\", \"peak_rss_mib\": {:.0}, \"load_s\": {load_s:.2}}}",
        peak_rss_mib().unwrap_or(f64::NAN)
    );
}
