//! Embeds a feature matrix with this crate's UMAP, for `scripts/umap_check.py` (which compares
//! it with umap-learn on the same features):
//!
//! ```sh
//! cargo run --release -p plots --example umap_embed -- IN.safetensors OUT.safetensors [SEED]
//! ```
//!
//! `IN` holds `features` `[n, dim]` f32; `OUT` gets `embedding` `[n, 2]` f32. One JSON line on
//! stdout: the wall time of the embedding (`seconds`, without reading and writing), how the
//! layout was initialised, the neighbours, epochs and edges used, and the fitted `a`, `b`.

use std::time::Instant;

use safetensors::{Dtype, SafeTensors};

fn main() {
    if let Err(e) = run() {
        eprintln!("umap_embed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, rest @ ..] = args.as_slice() else {
        return Err("usage: umap_embed IN.safetensors OUT.safetensors [SEED]".into());
    };
    let seed = match rest.first() {
        Some(s) => s.parse().map_err(|e| format!("seed {s:?}: {e}"))?,
        None => 42,
    };
    let bytes = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{input}: {e}"))?;
    let t = st
        .tensor("features")
        .map_err(|e| format!("{input}: no `features` tensor: {e}"))?;
    let (&[n, dim], Dtype::F32) = (t.shape(), t.dtype()) else {
        return Err(format!(
            "{input}: `features` must be [n, dim] f32, not {:?} {:?}",
            t.shape(),
            t.dtype()
        ));
    };
    let x: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let cfg = plots::UmapConfig {
        seed,
        ..plots::UmapConfig::default()
    };
    let start = Instant::now();
    let u = plots::umap(&x, dim, &cfg).map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let data: Vec<u8> = u
        .points
        .iter()
        .flat_map(|p| p.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![n, 2], &data)
        .map_err(|e| e.to_string())?;
    safetensors::serialize_to_file([("embedding", view)], None, output.as_ref())
        .map_err(|e| format!("{output}: {e}"))?;
    let summary = serde_json::json!({
        "seconds": seconds,
        "init": format!("{:?}", u.init),
        "n_neighbors": u.n_neighbors,
        "n_epochs": u.n_epochs,
        "edges": u.edges,
        "a": u.a,
        "b": u.b,
    });
    println!("{summary}");
    Ok(())
}
