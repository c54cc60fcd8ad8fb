//! Draws one plot of each kind from synthetic data into a folder (default `target/plots-gallery`),
//! to look at the layout: `cargo run -p plots --example gallery -- DIR`.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/plots-gallery".into()),
    );
    std::fs::create_dir_all(&dir).expect("create the output folder");
    for n in [5, 50] {
        let classes: Vec<String> = (0..n).map(|i| format!("class_name_{i}")).collect();
        let counts: Vec<Vec<u64>> = (0..n)
            .map(|r| {
                (0..n)
                    .map(|c| {
                        if r == c {
                            30
                        } else {
                            ((r * 7 + c * 3) % 11) as u64 / 5
                        }
                    })
                    .collect()
            })
            .collect();
        plots::confusion_matrix(
            &dir.join(format!("confusion_{n}.png")),
            "confusion",
            &classes,
            &counts,
        )
        .expect("confusion matrix");
        // Gaussian-ish blobs in 16-d, one per class.
        let per = if n == 5 { 40 } else { 20 };
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n * per {
            let c = i % n;
            for d in 0..16 {
                let centre = ((c * 31 + d * 17) % 13) as f32;
                x.push(centre + ((i * 7919 + d * 104_729) % 1000) as f32 / 500.0);
            }
            labels.push(c);
        }
        let points = plots::tsne(&x, 16, &plots::TsneConfig::default()).expect("t-SNE");
        plots::scatter(
            &dir.join(format!("tsne_{n}.png")),
            "t-SNE",
            "t-SNE",
            &points,
            &labels,
            &classes,
        )
        .expect("scatter");
        let umap = plots::umap(&x, 16, &plots::UmapConfig::default()).expect("UMAP");
        plots::scatter(
            &dir.join(format!("umap_{n}.png")),
            "UMAP",
            "UMAP",
            &umap.points,
            &labels,
            &classes,
        )
        .expect("scatter");
    }
    let layers: Vec<String> = (0..13).map(|i| i.to_string()).collect();
    let curve = |shift: f64| plots::Series {
        name: if shift > 0.0 {
            "mlp".into()
        } else {
            "linear".into()
        },
        values: (0..13)
            .map(|i| 0.5 + shift + 0.3 * (-(i as f64 - 8.0).powi(2) / 20.0).exp())
            .collect(),
        spread: Some(vec![0.03; 13]),
    };
    plots::line_chart(
        &dir.join("per_layer.png"),
        "accuracy per layer",
        "hidden state",
        "accuracy",
        &layers,
        &[curve(0.0), curve(0.05)],
        (0.0, 1.0),
    )
    .expect("line chart");
    let w: Vec<f64> = (0..13).map(|i| (1.0 + i as f64) / 91.0).collect();
    plots::bar_chart(
        &dir.join("layer_weights.png"),
        "learned layer weights",
        "hidden state",
        "softmax weight",
        &layers,
        &w,
    )
    .expect("bar chart");
    println!("{}", dir.display());
}
