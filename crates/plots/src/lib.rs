//! PNG plots of probe results, drawn with [plotters]' bitmap backend and an embedded font
//! (DejaVu Sans, Bitstream Vera licence, `assets/LICENSE-DejaVu.txt`), so no system fonts or
//! font libraries are needed at run time:
//!
//! - [`confusion_matrix`]: a heat map of a confusion matrix, coloured by row-normalised recall,
//!   class names on both axes (readable up to ~60 classes; counts printed in the cells when
//!   they are large enough);
//! - [`heat_map`]: any labelled matrix (task similarity);
//! - [`scatter`]: 2-d points coloured by class with a legend (t-SNE and UMAP of features);
//! - [`line_chart`]: one or more series over categorical x (accuracy per layer);
//! - [`bar_chart`]: one value per category (learned layer weights);
//! - [`tsne`]: exact t-SNE (van der Maaten & Hinton 2008, with sklearn's defaults where it has
//!   them), O(N²) per iteration, for the few thousand points a plot needs;
//! - [`umap()`]: UMAP (McInnes et al. 2018) as umap-learn computes it on small data (exact
//!   neighbours, fuzzy simplicial set, spectral start, SGD with negative sampling),
//!   deterministic for a seed; [`trustworthiness`] measures how faithful such an embedding is.
//!
//! ```no_run
//! let classes = vec!["dog".to_string(), "rain".to_string()];
//! plots::confusion_matrix(
//!     std::path::Path::new("confusion_linear.png"),
//!     "esc50 linear probe",
//!     &classes,
//!     &[vec![9, 1], vec![2, 8]],
//! )
//! .unwrap();
//! ```

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

mod eigen;
mod tsne;
mod umap;

pub use tsne::{tsne, TsneConfig};
pub use umap::{find_ab_params, trustworthiness, umap, Umap, UmapConfig, UmapInit};

/// DejaVu Sans (Bitstream Vera licence), registered as the `sans-serif` family.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Errors from drawing or from inconsistent inputs.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The inputs do not describe a plot (mismatched lengths, nothing to draw).
    #[error("invalid plot input: {0}")]
    Input(String),
    /// Drawing or writing the PNG failed.
    #[error("{}: cannot draw the plot: {reason}", path.display())]
    Draw {
        /// The PNG being written.
        path: PathBuf,
        /// What plotters reported.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, PlotError>;

/// A standard normal draw (Box-Muller).
pub(crate) fn normal(rng: &mut rand_chacha::ChaCha8Rng) -> f64 {
    use rand::Rng;
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("embedded DejaVu Sans is a valid TTF"));
    });
}

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// A colour per class: hues evenly spread, lightness cycled so neighbours differ.
pub fn class_color(class: usize, n_classes: usize) -> RGBColor {
    let n = n_classes.max(1);
    let hue = (class as f64 * 0.618_033_988_75) % 1.0;
    let hue = if n <= 10 {
        class as f64 / n as f64
    } else {
        hue
    };
    let lightness = [0.45, 0.62, 0.32][class % 3];
    hsl_to_rgb(hue, 0.75, lightness)
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> RGBColor {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h * 6.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to = |v: f64| ((v + m).clamp(0.0, 1.0) * 255.0).round() as u8;
    RGBColor(to(r), to(g), to(b))
}

/// Sequential colour map (light -> dark blue, like matplotlib's `Blues`) for `t` in [0, 1].
fn blues(t: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.25, [198.0, 219.0, 239.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (0.75, [33.0, 113.0, 181.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let i = STOPS.iter().rposition(|(s, _)| *s <= t).unwrap_or(0).min(3);
    let (t0, c0) = STOPS[i];
    let (t1, c1) = STOPS[i + 1];
    let f = (t - t0) / (t1 - t0);
    let mix = |k: usize| (c0[k] + f * (c1[k] - c0[k])).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// Shortens a label to `max` characters (with an ellipsis).
fn shorten(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// Approximate rendered width of `text` at `size` px in DejaVu Sans.
fn text_width(text: &str, size: f64) -> i32 {
    (text.chars().count() as f64 * size * 0.62).ceil() as i32
}

/// A labelled matrix to draw as a heat map.
#[derive(Debug, Clone)]
pub struct HeatMap<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Row labels (top to bottom).
    pub rows: &'a [String],
    /// Column labels (left to right).
    pub cols: &'a [String],
    /// `values[r][c]`, mapped to colour over `range`.
    pub values: &'a [Vec<f64>],
    /// Values mapped to the lightest and darkest colour.
    pub range: (f64, f64),
    /// Text printed in each cell (when the cells are large enough), e.g. counts.
    pub annotations: Option<&'a [Vec<String>]>,
    /// Axis title of the rows (drawn vertically on the left).
    pub row_title: &'a str,
    /// Axis title of the columns (drawn below).
    pub col_title: &'a str,
    /// Label of the colour bar.
    pub colorbar_label: &'a str,
}

/// Draws `map` to the PNG `path`. Cell size adapts to the number of rows and columns (50 x 50
/// gives 14 px cells with 11 px labels); labels longer than 28 characters are shortened.
pub fn heat_map(path: &Path, map: &HeatMap<'_>) -> Result<()> {
    register_font();
    let (nr, nc) = (map.rows.len(), map.cols.len());
    if nr == 0 || nc == 0 {
        return Err(PlotError::Input("heat map with no rows or columns".into()));
    }
    if map.values.len() != nr || map.values.iter().any(|r| r.len() != nc) {
        return Err(PlotError::Input(format!(
            "heat map values are not {nr} x {nc}"
        )));
    }
    let cell = (720 / nr.max(nc)).clamp(14, 90) as i32;
    let label_size = (f64::from(cell) * 0.8).clamp(10.0, 15.0);
    let max_label = 28;
    let row_labels: Vec<String> = map.rows.iter().map(|s| shorten(s, max_label)).collect();
    let col_labels: Vec<String> = map.cols.iter().map(|s| shorten(s, max_label)).collect();
    let row_w = row_labels
        .iter()
        .map(|s| text_width(s, label_size))
        .max()
        .unwrap_or(0)
        + 8;
    let col_h = col_labels
        .iter()
        .map(|s| text_width(s, label_size))
        .max()
        .unwrap_or(0)
        + 8;
    let (grid_w, grid_h) = (cell * nc as i32, cell * nr as i32);
    let left = 34 + row_w;
    let top = 48;
    let width = (left + grid_w + 110).max(480);
    let bar_h = grid_h.clamp(120, 400);
    let height = (top + grid_h + col_h + 40).max(top + bar_h + 40).max(320);
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let err = draw_err(path);
    root.fill(&WHITE).map_err(&err)?;
    root.draw(&Text::new(
        map.title.to_string(),
        (width / 2, 16),
        font(18.0).pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(&err)?;
    let (lo, hi) = map.range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let annotate = map.annotations.filter(|_| cell >= 26);
    let cell_font = (f64::from(cell) * 0.36).clamp(9.0, 16.0);
    for (r, row) in map.values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let t = (v - lo) / span;
            let (x0, y0) = (left + c as i32 * cell, top + r as i32 * cell);
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell, y0 + cell)],
                blues(t).filled(),
            ))
            .map_err(&err)?;
            if let Some(text) = annotate.and_then(|a| a.get(r)).and_then(|row| row.get(c)) {
                let color = if t > 0.55 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    text.clone(),
                    (x0 + cell / 2, y0 + cell / 2),
                    font(cell_font)
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))
                .map_err(&err)?;
            }
        }
    }
    let grid_line = RGBColor(200, 200, 200);
    root.draw(&Rectangle::new(
        [(left, top), (left + grid_w, top + grid_h)],
        grid_line.stroke_width(1),
    ))
    .map_err(&err)?;
    for (r, label) in row_labels.iter().enumerate() {
        root.draw(&Text::new(
            label.clone(),
            (left - 4, top + r as i32 * cell + cell / 2),
            font(label_size).pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(&err)?;
    }
    for (c, label) in col_labels.iter().enumerate() {
        // Rotated 90° clockwise: the text runs downwards from just below the grid.
        root.draw(&Text::new(
            label.clone(),
            (
                left + c as i32 * cell + cell / 2 + (label_size * 0.45) as i32,
                top + grid_h + 4,
            ),
            font(label_size).transform(FontTransform::Rotate90),
        ))
        .map_err(&err)?;
    }
    root.draw(&Text::new(
        map.col_title.to_string(),
        (left + grid_w / 2, height - 14),
        font(14.0).pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(&err)?;
    let row_title_w = text_width(map.row_title, 14.0);
    root.draw(&Text::new(
        map.row_title.to_string(),
        (8, top + grid_h / 2 + row_title_w / 2),
        font(14.0).transform(FontTransform::Rotate270),
    ))
    .map_err(&err)?;
    // Colour bar.
    let (bx, bh) = (left + grid_w + 18, bar_h);
    for i in 0..bh {
        let t = 1.0 - f64::from(i) / f64::from(bh - 1);
        root.draw(&Rectangle::new(
            [(bx, top + i), (bx + 14, top + i + 1)],
            blues(t).filled(),
        ))
        .map_err(&err)?;
    }
    root.draw(&Rectangle::new(
        [(bx, top), (bx + 14, top + bh)],
        grid_line.stroke_width(1),
    ))
    .map_err(&err)?;
    for (frac, value) in [(0.0, hi), (0.5, lo + span / 2.0), (1.0, lo)] {
        root.draw(&Text::new(
            format_tick(value),
            (bx + 18, top + (frac * f64::from(bh)) as i32),
            font(11.0).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(&err)?;
    }
    root.draw(&Text::new(
        map.colorbar_label.to_string(),
        (bx, top + bh + 14),
        font(11.0).pos(Pos::new(HPos::Left, VPos::Center)),
    ))
    .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

fn format_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Draws a confusion matrix (`counts[true][predicted]`) as a heat map coloured by the row
/// fraction (recall of the true class; rows without items stay white), with the counts printed
/// when the cells are large enough (up to ~27 classes).
pub fn confusion_matrix(
    path: &Path,
    title: &str,
    classes: &[String],
    counts: &[Vec<u64>],
) -> Result<()> {
    if counts.len() != classes.len() || counts.iter().any(|r| r.len() != classes.len()) {
        return Err(PlotError::Input(format!(
            "confusion matrix is not {n} x {n} for {n} classes",
            n = classes.len()
        )));
    }
    let fractions: Vec<Vec<f64>> = counts
        .iter()
        .map(|row| {
            let total: u64 = row.iter().sum();
            row.iter()
                .map(|&v| {
                    if total == 0 {
                        0.0
                    } else {
                        v as f64 / total as f64
                    }
                })
                .collect()
        })
        .collect();
    let annotations: Vec<Vec<String>> = counts
        .iter()
        .map(|row| row.iter().map(|v| v.to_string()).collect())
        .collect();
    heat_map(
        path,
        &HeatMap {
            title,
            rows: classes,
            cols: classes,
            values: &fractions,
            range: (0.0, 1.0),
            annotations: Some(&annotations),
            row_title: "true class",
            col_title: "predicted class",
            colorbar_label: "row fraction",
        },
    )
}

/// Draws 2-d `points` coloured by `labels` (indices into `classes`) with a legend of the
/// classes on the right; the axes are `{axis} 1` and `{axis} 2` (e.g. `t-SNE`, `UMAP`).
pub fn scatter(
    path: &Path,
    title: &str,
    axis: &str,
    points: &[[f32; 2]],
    labels: &[usize],
    classes: &[String],
) -> Result<()> {
    register_font();
    if points.len() != labels.len() || points.is_empty() {
        return Err(PlotError::Input(format!(
            "scatter: {} points and {} labels",
            points.len(),
            labels.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes.len()) {
        return Err(PlotError::Input(format!(
            "scatter: label {bad} for {} classes",
            classes.len()
        )));
    }
    let n = classes.len();
    let legend_size = if n > 30 { 11.0 } else { 13.0 };
    let line = (legend_size * 1.35) as i32;
    let legend_w = classes
        .iter()
        .map(|c| text_width(&shorten(c, 24), legend_size))
        .max()
        .unwrap_or(0)
        + 40;
    let height = (60 + line * n as i32 + 20).max(720);
    let plot_w = 760;
    let width = plot_w + legend_w;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let err = draw_err(path);
    root.fill(&WHITE).map_err(&err)?;
    let (plot, legend) = root.split_horizontally(plot_w);
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in points {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    let pad = |a: f32, b: f32| {
        let m = ((b - a) * 0.05).max(1e-3);
        (a - m, b + m)
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = pad(y0, y1);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, font(18.0))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .label_style(font(11.0))
        .x_desc(format!("{axis} 1"))
        .y_desc(format!("{axis} 2"))
        .draw()
        .map_err(&err)?;
    let radius = if points.len() > 800 { 3 } else { 4 };
    chart
        .draw_series(
            points.iter().zip(labels).map(|(p, &l)| {
                Circle::new((p[0], p[1]), radius, class_color(l, n).mix(0.85).filled())
            }),
        )
        .map_err(&err)?;
    draw_legend(&legend, classes, legend_size, line, path)?;
    root.present().map_err(&err)?;
    Ok(())
}

fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    classes: &[String],
    size: f64,
    line: i32,
    path: &Path,
) -> Result<()> {
    let err = draw_err(path);
    let n = classes.len();
    for (i, class) in classes.iter().enumerate() {
        let y = 50 + i as i32 * line;
        area.draw(&Circle::new((12, y), 5, class_color(i, n).filled()))
            .map_err(&err)?;
        area.draw(&Text::new(
            shorten(class, 24),
            (24, y),
            font(size).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(&err)?;
    }
    Ok(())
}

/// One named series of a [`line_chart`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// One value per x category.
    pub values: Vec<f64>,
    /// Optional ± band (e.g. standard deviation over folds) per value.
    pub spread: Option<Vec<f64>>,
}

/// Draws `series` over categorical x (`x_labels`, e.g. hidden-state indices), marking each
/// series' maximum with a larger point. `y_range` fixes the y axis (e.g. 0..1 for accuracy).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_title: &str,
    y_title: &str,
    x_labels: &[String],
    series: &[Series],
    y_range: (f64, f64),
) -> Result<()> {
    register_font();
    let n = x_labels.len();
    if n == 0 || series.is_empty() || series.iter().any(|s| s.values.len() != n) {
        return Err(PlotError::Input(format!(
            "line chart needs every series to have {n} values"
        )));
    }
    let root = BitMapBackend::new(path, (820, 500)).into_drawing_area();
    let err = draw_err(path);
    root.fill(&WHITE).map_err(&err)?;
    let axes = (x_title, y_title);
    let mut chart = category_axes(
        &root,
        path,
        title,
        x_labels,
        axes,
        y_range.0..y_range.1,
        true,
    )?;
    for (k, s) in series.iter().enumerate() {
        let color = class_color(k, series.len().max(3));
        if let Some(spread) = &s.spread {
            let band: Vec<(f64, f64)> = s
                .values
                .iter()
                .zip(spread)
                .enumerate()
                .map(|(i, (v, d))| (i as f64, v + d))
                .chain(
                    s.values
                        .iter()
                        .zip(spread)
                        .enumerate()
                        .rev()
                        .map(|(i, (v, d))| (i as f64, v - d)),
                )
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))
                .map_err(&err)?;
        }
        chart
            .draw_series(LineSeries::new(
                s.values.iter().enumerate().map(|(i, &v)| (i as f64, v)),
                color.stroke_width(2),
            ))
            .map_err(&err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                s.values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Circle::new((i as f64, v), 3, color.filled())),
            )
            .map_err(&err)?;
        let best = s
            .values
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        chart
            .draw_series(std::iter::once(Circle::new(
                (best.0 as f64, best.1),
                7,
                color.stroke_width(2),
            )))
            .map_err(&err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(font(13.0))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// Draws one bar per category with its value printed above it.
pub fn bar_chart(
    path: &Path,
    title: &str,
    x_title: &str,
    y_title: &str,
    labels: &[String],
    values: &[f64],
) -> Result<()> {
    register_font();
    if labels.is_empty() || labels.len() != values.len() {
        return Err(PlotError::Input(format!(
            "bar chart: {} labels and {} values",
            labels.len(),
            values.len()
        )));
    }
    let n = labels.len();
    let max = values.iter().cloned().fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.18 } else { 1.0 };
    let root = BitMapBackend::new(path, (820, 480)).into_drawing_area();
    let err = draw_err(path);
    root.fill(&WHITE).map_err(&err)?;
    let axes = (x_title, y_title);
    let mut chart = category_axes(&root, path, title, labels, axes, 0.0..top, false)?;
    let color = RGBColor(49, 130, 189);
    chart
        .draw_series(values.iter().enumerate().map(|(i, &v)| {
            Rectangle::new(
                [(i as f64 - 0.35, 0.0), (i as f64 + 0.35, v)],
                color.filled(),
            )
        }))
        .map_err(&err)?;
    let value_size = if n > 16 { 10.0 } else { 12.0 };
    chart
        .draw_series(values.iter().enumerate().map(|(i, &v)| {
            Text::new(
                format!("{v:.3}"),
                (i as f64, v + top * 0.02),
                font(value_size).pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// The chart of `line_chart` and `bar_chart` on `root`: the caption `title`, one category per
/// name along x (at 0, 1, ...), `y` up the side, and the mesh drawn with the names and the axis
/// titles `(x, y)` (vertical grid lines only with `x_mesh`).
fn category_axes<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    path: &Path,
    title: &str,
    names: &[String],
    (x_title, y_title): (&str, &str),
    y: std::ops::Range<f64>,
    x_mesh: bool,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let err = draw_err(path);
    let n = names.len();
    let mut chart = ChartBuilder::on(root)
        .caption(title, font(18.0))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), y)
        .map_err(&err)?;
    let label = |x: &f64| category_label(names, *x);
    let mut mesh = chart.configure_mesh();
    mesh.x_labels(n.min(30)).x_label_formatter(&label);
    if !x_mesh {
        mesh.disable_x_mesh();
    }
    mesh.label_style(font(12.0))
        .axis_desc_style(font(14.0))
        .x_desc(x_title)
        .y_desc(y_title)
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(&err)?;
    Ok(chart)
}

/// The label of a categorical x axis at `x`: the category's name at whole positions, nothing
/// between them (plotters asks for labels at fractional positions too).
fn category_label(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
        names[i as usize].clone()
    } else {
        String::new()
    }
}

/// How many points of a 2-d embedding have their nearest other point (Euclidean) in the same
/// class: the tests' measure of a t-SNE or UMAP layout keeping clusters apart.
#[cfg(test)]
pub(crate) fn neighbour_agreement(e: &[[f32; 2]], y: &[usize]) -> usize {
    (0..e.len())
        .filter(|&i| {
            let nn = (0..e.len())
                .filter(|&j| j != i)
                .min_by(|&a, &b| {
                    let d = |j: usize| (e[i][0] - e[j][0]).powi(2) + (e[i][1] - e[j][1]).powi(2);
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            y[nn] == y[i]
        })
        .count()
}

/// Checks that `x` holds whole rows of `dim` finite values and returns the row count; errors
/// are prefixed with `method` ("t-SNE", "UMAP").
fn count_rows(x: &[f32], dim: usize, method: &str) -> Result<usize> {
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(PlotError::Input(format!(
            "{method}: {} values are not rows of {dim}",
            x.len()
        )));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(PlotError::Input(format!("{method}: non-finite feature")));
    }
    Ok(x.len() / dim)
}

/// Draws one horizontal bar per category (`labels`, top to bottom) with a `±errors` whisker and
/// the value printed after it; the height grows with the number of bars, the label column
/// with the longest label (e.g. ablation cells: accuracy mean ± std).
pub fn error_bar_chart(
    path: &Path,
    title: &str,
    value_title: &str,
    labels: &[String],
    values: &[f64],
    errors: &[f64],
) -> Result<()> {
    register_font();
    let n = labels.len();
    if n == 0 || values.len() != n || errors.len() != n {
        return Err(PlotError::Input(format!(
            "error bar chart: {n} labels, {} values, {} errors",
            values.len(),
            errors.len()
        )));
    }
    let label_width = labels
        .iter()
        .map(|l| text_width(l, 12.0))
        .max()
        .unwrap_or(0)
        .clamp(60, 420) as u32;
    let height = (90 + 24 * n as u32).max(240);
    let root = BitMapBackend::new(path, (560 + label_width, height)).into_drawing_area();
    let err = draw_err(path);
    root.fill(&WHITE).map_err(&err)?;
    let top = values
        .iter()
        .zip(errors)
        .map(|(v, e)| v + e.max(0.0))
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, font(18.0))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(label_width + 12)
        .build_cartesian_2d(0.0..top, -0.5..(n as f64 - 0.5))
        .map_err(&err)?;
    // Row 0 at the top.
    let names: Vec<String> = labels.iter().rev().cloned().collect();
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| category_label(&names, *y))
        .disable_y_mesh()
        .label_style(font(12.0))
        .axis_desc_style(font(14.0))
        .x_desc(value_title)
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(&err)?;
    let row = |i: usize| (n - 1 - i) as f64;
    let color = RGBColor(49, 130, 189);
    chart
        .draw_series(values.iter().enumerate().map(|(i, &v)| {
            Rectangle::new(
                [(0.0, row(i) - 0.32), (v.max(0.0), row(i) + 0.32)],
                color.filled(),
            )
        }))
        .map_err(&err)?;
    for (i, (&v, &e)) in values.iter().zip(errors).enumerate() {
        let (lo, hi) = ((v - e).max(0.0), (v + e).min(top));
        let y = row(i);
        chart
            .draw_series([
                PathElement::new(vec![(lo, y), (hi, y)], BLACK.stroke_width(1)),
                PathElement::new(vec![(lo, y - 0.2), (lo, y + 0.2)], BLACK.stroke_width(1)),
                PathElement::new(vec![(hi, y - 0.2), (hi, y + 0.2)], BLACK.stroke_width(1)),
            ])
            .map_err(&err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{v:.3} ± {e:.3}"),
                (hi + top * 0.01, y),
                font(11.0).pos(Pos::new(HPos::Left, VPos::Center)),
            )))
            .map_err(&err)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's IHDR chunk, checking the signature.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        (be(16), be(20))
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class_{i}")).collect()
    }

    #[test]
    fn every_plot_kind_writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        for n in [3, 50] {
            let p = dir.path().join(format!("cm{n}.png"));
            let counts: Vec<Vec<u64>> = (0..n)
                .map(|r| {
                    (0..n)
                        .map(|c| if r == c { 8 } else { (r + c) as u64 % 2 })
                        .collect()
                })
                .collect();
            confusion_matrix(&p, "confusion", &names(n), &counts).unwrap();
            let (w, h) = png_size(&p);
            assert!(w >= 480 && h >= 320 && w < 2000 && h < 2000, "{w}x{h}");
        }
        let p = dir.path().join("one.png");
        confusion_matrix(&p, "one class", &names(1), &[vec![3]]).unwrap();
        assert!(png_size(&p).1 >= 48 + 120 + 40, "the colour bar fits");
        let p = dir.path().join("scatter.png");
        let pts: Vec<[f32; 2]> = (0..40).map(|i| [i as f32, (i % 7) as f32]).collect();
        let labels: Vec<usize> = (0..40).map(|i| i % 4).collect();
        scatter(&p, "scatter", "t-SNE", &pts, &labels, &names(4)).unwrap();
        assert_eq!(
            png_size(&p),
            (760 + text_width("class_0", 13.0) as u32 + 40, 720)
        );
        let p = dir.path().join("line.png");
        let s = Series {
            name: "linear".into(),
            values: vec![0.2, 0.5, 0.4],
            spread: Some(vec![0.05; 3]),
        };
        line_chart(
            &p,
            "per layer",
            "layer",
            "accuracy",
            &names(3),
            &[s],
            (0.0, 1.0),
        )
        .unwrap();
        assert_eq!(png_size(&p), (820, 500));
        let p = dir.path().join("bar.png");
        bar_chart(
            &p,
            "weights",
            "layer",
            "weight",
            &names(3),
            &[0.2, 0.3, 0.5],
        )
        .unwrap();
        assert_eq!(png_size(&p), (820, 480));
        let p = dir.path().join("errors.png");
        error_bar_chart(
            &p,
            "ablation",
            "accuracy",
            &names(3),
            &[0.2, 0.5, 0.4],
            &[0.05, 0.0, 0.1],
        )
        .unwrap();
        let (w, h) = png_size(&p);
        assert!(w > 560 && h == 240, "{w}x{h}");
        assert!(error_bar_chart(&p, "", "", &names(2), &[1.0, 2.0], &[0.1]).is_err());
    }

    #[test]
    fn inconsistent_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        assert!(confusion_matrix(&p, "", &names(2), &[vec![1, 2]]).is_err());
        assert!(scatter(&p, "", "t-SNE", &[[0.0, 0.0]], &[3], &names(2)).is_err());
        assert!(bar_chart(&p, "", "", "", &names(2), &[1.0]).is_err());
        assert!(!p.exists());
    }

    #[test]
    fn colour_map_and_palette() {
        assert_eq!(blues(0.0), RGBColor(247, 251, 255));
        assert_eq!(blues(1.0), RGBColor(8, 48, 107));
        assert_eq!(blues(f64::NAN), blues(0.0));
        let colours: std::collections::HashSet<_> = (0..50)
            .map(|i| {
                let c = class_color(i, 50);
                (c.0, c.1, c.2)
            })
            .collect();
        assert_eq!(colours.len(), 50, "distinct colours for 50 classes");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
