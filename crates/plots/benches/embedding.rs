//! Wall time of the 2-d embeddings behind `tsne.png` and `umap.png`, on a seeded Gaussian
//! mixture in 768 dimensions (HuBERT's width): 500 points in 10 classes and 2,000 (the plots'
//! cap, ESC-50's size) in 50.
//!
//! ```text
//! cargo bench -p plots --bench embedding -- [--method umap|tsne] [--points 500|2000] [--repeats R]
//! ```
//! Prints one JSON line per method and size: the median and minimum seconds of `R` runs
//! (default 3) after one warm-up run, and the thread count (rayon's; set `RAYON_NUM_THREADS`).
//! `scripts/umap_check.py` times umap-learn on the same kind of data.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIM: usize = 768;

/// `n` points in `classes` clusters: a 32-d mixture with unequal spreads mapped to 768-d by a
/// random projection and tanh, plus noise (the construction of `scripts/umap_check.py`).
fn mixture(n: usize, classes: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let mut normal = move || -> f32 {
        let u1: f32 = rng.random_range(f32::MIN_POSITIVE..1.0);
        let u2: f32 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    };
    let latent = 32;
    let centres: Vec<f32> = (0..classes * latent).map(|_| normal()).collect();
    let spread: Vec<f32> = (0..classes)
        .map(|c| 0.5 + 1.5 * c as f32 / classes as f32)
        .collect();
    let proj: Vec<f32> = (0..latent * DIM)
        .map(|_| normal() / (latent as f32).sqrt())
        .collect();
    let mut x = Vec::with_capacity(n * DIM);
    for i in 0..n {
        let c = i % classes;
        let z: Vec<f32> = (0..latent)
            .map(|l| centres[c * latent + l] + spread[c] * normal())
            .collect();
        for d in 0..DIM {
            let v: f32 = (0..latent).map(|l| z[l] * proj[l * DIM + d]).sum();
            x.push(v.tanh() + 0.5 * normal());
        }
    }
    x
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The value after the first `name` (other arguments, such as cargo's `--bench`, are ignored).
    let arg = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let repeats: usize = arg("--repeats").map_or(3, |r| r.parse().expect("--repeats R"));
    let method = arg("--method");
    let points: Option<usize> = arg("--points").map(|p| p.parse().expect("--points N"));
    for (n, classes) in [(500, 10), (2000, 50)] {
        if points.is_some_and(|p| p != n) {
            continue;
        }
        let x = mixture(n, classes);
        for name in ["umap", "tsne"] {
            if method.as_deref().is_some_and(|m| m != name) {
                continue;
            }
            let run = || match name {
                "umap" => {
                    plots::umap(&x, DIM, &plots::UmapConfig::default()).unwrap();
                }
                _ => {
                    plots::tsne(&x, DIM, &plots::TsneConfig::default()).unwrap();
                }
            };
            run();
            let mut seconds: Vec<f64> = (0..repeats.max(1))
                .map(|_| {
                    let start = Instant::now();
                    run();
                    start.elapsed().as_secs_f64()
                })
                .collect();
            seconds.sort_by(f64::total_cmp);
            println!(
                "{{\"method\": \"{name}\", \"points\": {n}, \"dim\": {DIM}, \"threads\": {}, \"median_s\": {:.3}, \"min_s\": {:.3}, \"repeats\": {}}}",
                rayon::current_num_threads(),
                seconds[seconds.len() / 2],
                seconds[0],
                seconds.len()
            );
        }
    }
}
