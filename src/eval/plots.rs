//! PNG plots of training runs and results with `plotters` (bitmap backend only).
//!
//! Text is drawn by `ab_glyph` with DejaVu Sans registered from the bytes the `dejavu` crate
//! embeds, so plots render identically on a machine without any installed fonts.

use std::fmt::Display;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::eval::comparison::DifferenceRow;
use crate::eval::error::EvalError;
use crate::eval::stats::PairedDifference;
use crate::eval::table::ResultsTable;
use crate::train::metrics_log::MetricRow;

/// Font family the plots use; registered by [`register_fonts`].
pub const FONT: &str = "sans-serif";

/// Pixel size of a PNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlotSize {
    pub width: u32,
    pub height: u32,
}

impl PlotSize {
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }
}

/// One panel of [`plot_training_curves`]: a title and the metric keys drawn in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurvePanel {
    pub title: String,
    pub keys: Vec<String>,
}

impl CurvePanel {
    pub fn new(title: &str, keys: &[&str]) -> Self {
        Self {
            title: title.to_string(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    /// Loss, reward margin, and forward/reverse KL: the curves that show a preference run
    /// training or diverging (metric names as `firempo-losses` logs them).
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::new("loss", &["loss"]),
            Self::new("reward margin", &["rewards/margin"]),
            Self::new("KL", &["kl/forward", "kl/reverse"]),
        ]
    }
}

/// Registers DejaVu Sans (regular and bold) as [`FONT`] with plotters, once per process.
pub fn register_fonts() -> Result<(), EvalError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ok.then_some(()).ok_or_else(|| EvalError::Plot {
        path: "<fonts>".into(),
        reason: "the embedded DejaVu Sans font could not be parsed".into(),
    })
}

/// Draws one panel per [`CurvePanel`] side by side, one line per run (and per key, the second
/// key of a panel in a lighter shade), x = the row's `step` (else its 1-based index), with a
/// legend. Non-finite values (NaN from a `null` in `metrics.jsonl`) leave gaps.
pub fn plot_training_curves(
    runs: &[(&str, &[MetricRow])],
    panels: &[CurvePanel],
    path: &Path,
    size: PlotSize,
) -> Result<(), EvalError> {
    register_fonts()?;
    let root = BitMapBackend::new(path, (size.width, size.height)).into_drawing_area();
    root.fill(&WHITE).at(path)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        // (label, colour index, shade, segments of finite points)
        let mut series = Vec::new();
        for (run_index, (run, rows)) in runs.iter().enumerate() {
            for (key_index, key) in panel.keys.iter().enumerate() {
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, row)| {
                        let y = *row.get(key)?;
                        Some((row.get("step").copied().unwrap_or(i as f64 + 1.0), y))
                    })
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let label = if panel.keys.len() > 1 {
                    format!("{run} {key}")
                } else {
                    run.to_string()
                };
                series.push((label, run_index, key_index, finite_segments(&points)));
            }
        }
        let all = series.iter().flat_map(|s| s.3.iter().flatten());
        let (x_range, y_range) = bounds(all);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FONT, 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range, y_range)
            .at(path)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x}")) // steps print as 20, not 20.0
            .light_line_style(BLACK.mix(0.04))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .at(path)?;
        if series.is_empty() {
            let (x, y) = area.get_pixel_range();
            area.draw(&Text::new(
                "no data",
                ((x.start + x.end) / 2 - 30, (y.start + y.end) / 2),
                (FONT, 16),
            ))
            .at(path)?;
            continue;
        }
        for (label, run_index, key_index, segments) in series {
            let color = Palette99::pick(run_index).to_rgba();
            let color = if key_index == 0 {
                color
            } else {
                color.mix(0.45)
            };
            let style = color.stroke_width(2);
            chart
                .draw_series(
                    segments
                        .into_iter()
                        .map(move |s| PathElement::new(s, style)),
                )
                .at(path)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .at(path)?;
    }
    root.present().at(path)
}

/// Metrics that are not percentages (nats, reward margins): [`plot_results_bars`] draws them on
/// a panel of their own, so the percentages keep a 0–100 axis.
pub const UNSCALED_METRICS: [&str; 2] = ["logp_drop", "pair_margin"];

/// Grouped bar chart of a [`ResultsTable`]: one group per metric, one bar per method (its mean
/// across seeds, with a ±std error bar when there are several seeds); empty cells are skipped.
/// Percentages are drawn on a 0–100 axis; [`UNSCALED_METRICS`] on a second panel to the right,
/// on their own axis.
pub fn plot_results_bars(
    table: &ResultsTable,
    title: &str,
    path: &Path,
    size: PlotSize,
) -> Result<(), EvalError> {
    register_fonts()?;
    let (percent, unscaled) = split_by_unit(table.metrics());
    let root = BitMapBackend::new(path, (size.width, size.height)).into_drawing_area();
    root.fill(&WHITE).at(path)?;
    let root = root.titled(title, (FONT, 24)).at(path)?;
    let percent_axis = Some(0.0..100.0);
    if unscaled.is_empty() {
        draw_bar_panel(&root, table, &percent, "%", percent_axis, path)?;
    } else if percent.is_empty() {
        draw_bar_panel(&root, table, &unscaled, "", None, path)?;
    } else {
        let share = percent.len() as f64 / (percent.len() + unscaled.len()) as f64;
        let (left, right) = root.split_horizontally((size.width as f64 * share).round() as i32);
        draw_bar_panel(&left, table, &percent, "%", percent_axis, path)?;
        draw_bar_panel(&right, table, &unscaled, "nats / margin", None, path)?;
    }
    root.present().at(path)
}

/// The percentage metrics and the [`UNSCALED_METRICS`] among `metrics`, each in order.
fn split_by_unit(metrics: &[String]) -> (Vec<&str>, Vec<&str>) {
    metrics
        .iter()
        .map(String::as_str)
        .partition(|m| !UNSCALED_METRICS.contains(m))
}

/// One panel of [`plot_results_bars`]: the `metrics` of every method, on `y_fixed` (then
/// extended to the error bars and the legend) or a range fitted to the bars.
fn draw_bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    table: &ResultsTable,
    metrics: &[&str],
    y_label: &str,
    y_fixed: Option<std::ops::Range<f64>>,
    path: &Path,
) -> Result<(), EvalError>
where
    DB::ErrorType: 'static,
{
    let methods: Vec<&str> = table.methods().collect();
    let extremes: Vec<(f64, f64)> = methods
        .iter()
        .flat_map(|method| {
            metrics.iter().filter_map(move |metric| {
                let cell = table.cell(method, metric)?;
                let (m, s) = (cell.mean()?, cell.std().unwrap_or(0.0));
                Some([(0.0, m - s), (0.0, m + s), (0.0, 0.0)])
            })
        })
        .flatten()
        .collect();
    let (_, fitted) = bounds(extremes.iter());
    let mut y_range = match y_fixed {
        Some(fixed) => fixed.start.min(fitted.start)..fixed.end.max(fitted.end),
        None => fitted,
    };
    if extremes.iter().all(|&(_, y)| y >= 0.0) {
        y_range.start = 0.0; // bars stand on the axis
    }
    // Headroom above the bars for the legend (about 22 px per method in a plot area of
    // roughly `height − 110` px), so it never hides a bar.
    let height = area.dim_in_pixel().1 as f64;
    let legend_px = 22.0 * methods.len() as f64 + 24.0;
    let plot_px = (height - 80.0).max(2.0 * legend_px);
    let span = y_range.end - y_range.start;
    y_range.end += span * legend_px / (plot_px - legend_px);
    let n_groups = metrics.len().max(1);
    let x_range = -0.5..n_groups as f64 - 0.5;

    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range.clone())
        .at(path)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0) // metric names are drawn below the groups instead
        .y_desc(y_label)
        .light_line_style(BLACK.mix(0.04))
        .label_style((FONT, 14))
        .draw()
        .at(path)?;
    let y_floor = y_range.start;
    let name_style = TextStyle::from((FONT, 14)).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, metric) in metrics.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, y_floor));
        area.draw(&Text::new(*metric, (px, py + 8), name_style.clone()))
            .at(path)?;
    }

    let bar_width = 0.8 / methods.len().max(1) as f64;
    for (j, method) in methods.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let mut bars = Vec::new();
        let mut whiskers = Vec::new();
        for (i, metric) in metrics.iter().enumerate() {
            let Some(cell) = table.cell(method, metric) else {
                continue;
            };
            let Some(mean) = cell.mean() else {
                continue;
            };
            let left = i as f64 - 0.4 + j as f64 * bar_width;
            let (x0, x1) = (left + 0.05 * bar_width, left + 0.95 * bar_width);
            bars.push(Rectangle::new([(x0, 0.0), (x1, mean)], color.filled()));
            if let Some(std) = cell.std() {
                whiskers.extend(whisker(
                    (x0 + x1) / 2.0,
                    0.2 * bar_width,
                    mean - std,
                    mean + std,
                ));
            }
        }
        chart
            .draw_series(bars)
            .at(path)?
            .label(*method)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        chart.draw_series(whiskers).at(path)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .at(path)?;
    Ok(())
}

/// A vertical error bar at `x` from `low` to `high` with caps `cap` wide on each side.
fn whisker(x: f64, cap: f64, low: f64, high: f64) -> [PathElement<(f64, f64)>; 3] {
    [
        vec![(x, low), (x, high)],
        vec![(x - cap, low), (x + cap, low)],
        vec![(x - cap, high), (x + cap, high)],
    ]
    .map(|segment| PathElement::new(segment, BLACK.stroke_width(1)))
}

/// Forest plot of difference rows: one line per `method − baseline` on `metric`, a dot at the
/// difference of the means and a bar over its bootstrap CI, against a vertical line at 0; rows
/// without the metric are left out. An interval that excludes 0 is drawn in red.
pub fn plot_differences_forest(
    rows: &[DifferenceRow],
    metric: &str,
    title: &str,
    path: &Path,
    size: PlotSize,
) -> Result<(), EvalError> {
    register_fonts()?;
    let shown: Vec<(String, &PairedDifference)> = rows
        .iter()
        .filter_map(|row| {
            let d = row.differences.get(metric)?;
            Some((format!("{} − {}", row.method, row.baseline), d))
        })
        .collect();
    let extremes: Vec<(f64, f64)> = shown
        .iter()
        .flat_map(|(_, d)| [(d.low, 0.0), (d.high, 0.0), (0.0, 0.0)])
        .collect();
    let (x_range, _) = bounds(extremes.iter());
    let n = shown.len().max(1) as f64;
    let root = BitMapBackend::new(path, (size.width, size.height)).into_drawing_area();
    root.fill(&WHITE).at(path)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(260)
        .build_cartesian_2d(x_range, -0.5..n - 0.5)
        .at(path)?;
    let labels: Vec<String> = shown.iter().map(|(label, _)| label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(shown.len().max(1))
        .y_label_formatter(&|y| {
            let i = y.round();
            let row = (n - 1.0 - i) as usize;
            if (y - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(row).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc(format!("{metric}: difference, 95% CI"))
        .label_style((FONT, 14))
        .draw()
        .at(path)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, -0.5), (0.0, n - 0.5)],
            BLACK.mix(0.5).stroke_width(1),
        )))
        .at(path)?;
    for (k, (_, d)) in shown.iter().enumerate() {
        let y = n - 1.0 - k as f64;
        let color = if d.low > 0.0 || d.high < 0.0 {
            RED
        } else {
            BLUE
        };
        chart
            .draw_series([
                PathElement::new(vec![(d.low, y), (d.high, y)], color.stroke_width(2)),
                PathElement::new(
                    vec![(d.low, y - 0.15), (d.low, y + 0.15)],
                    color.stroke_width(2),
                ),
                PathElement::new(
                    vec![(d.high, y - 0.15), (d.high, y + 0.15)],
                    color.stroke_width(2),
                ),
            ])
            .at(path)?;
        chart
            .draw_series(std::iter::once(Circle::new((d.mean, y), 4, color.filled())))
            .at(path)?;
    }
    root.present().at(path)
}

/// Turns a plotters error into an [`EvalError::Plot`] naming the file being drawn.
trait PlotResult<T> {
    fn at(self, path: &Path) -> Result<T, EvalError>;
}

impl<T, E: Display> PlotResult<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, EvalError> {
        self.map_err(|e| EvalError::Plot {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Splits a polyline at non-finite points.
fn finite_segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut segments = vec![Vec::new()];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            segments.last_mut().expect("non-empty").push((x, y));
        } else if !segments.last().expect("non-empty").is_empty() {
            segments.push(Vec::new());
        }
    }
    segments.retain(|s| !s.is_empty());
    segments
}

/// Axis ranges covering the finite points, padded by 5% (a unit range around a constant).
fn bounds<'a>(
    points: impl Iterator<Item = &'a (f64, f64)>,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let mut x = (f64::INFINITY, f64::NEG_INFINITY);
    let mut y = (f64::INFINITY, f64::NEG_INFINITY);
    for &(px, py) in points {
        if px.is_finite() && py.is_finite() {
            x = (x.0.min(px), x.1.max(px));
            y = (y.0.min(py), y.1.max(py));
        }
    }
    let pad = |(lo, hi): (f64, f64)| {
        if !lo.is_finite() {
            0.0..1.0
        } else if hi - lo < 1e-12 {
            let half = (lo.abs() * 0.1).max(0.5);
            lo - half..hi + half
        } else {
            let margin = 0.05 * (hi - lo);
            lo - margin..hi + margin
        }
    };
    (pad(x), pad(y))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::PathBuf;

    use super::*;

    fn out_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("firempo-plots-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Decodes a PNG: (width, height, bytes).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buf).unwrap();
        buf.truncate(frame.buffer_size());
        (frame.width, frame.height, buf)
    }

    fn variance(bytes: &[u8]) -> f64 {
        let n = bytes.len() as f64;
        let mean = bytes.iter().map(|&b| b as f64).sum::<f64>() / n;
        bytes
            .iter()
            .map(|&b| (b as f64 - mean).powi(2))
            .sum::<f64>()
            / n
    }

    fn run(steps: usize, scale: f64) -> Vec<MetricRow> {
        (1..=steps)
            .map(|step| {
                let t = step as f64;
                MetricRow::from([
                    ("step".to_string(), t),
                    ("loss".to_string(), scale * (0.69 - 0.01 * t)),
                    ("rewards/margin".to_string(), 0.02 * t),
                    (
                        "kl/forward".to_string(),
                        if step == 5 { f64::NAN } else { 0.001 * t },
                    ),
                    ("kl/reverse".to_string(), 0.0008 * t),
                ])
            })
            .collect()
    }

    #[test]
    fn embedded_font_renders_text() {
        register_fonts().unwrap();
        let path = out_dir("font").join("text.png");
        {
            let root = BitMapBackend::new(&path, (200, 60)).into_drawing_area();
            root.fill(&WHITE).unwrap();
            root.draw(&Text::new("FiRe-MPO 69.7", (5, 15), (FONT, 24)))
                .unwrap();
            root.present().unwrap();
        }
        let (w, h, bytes) = decode(&path);
        assert_eq!((w, h), (200, 60));
        let inked = bytes
            .chunks(3)
            .filter(|px| px.iter().any(|&c| c < 128))
            .count();
        assert!(inked > 100, "only {inked} dark pixels: text was not drawn");
    }

    #[test]
    fn training_curves_png() {
        let (a, b) = (run(20, 1.0), run(12, 0.8));
        let runs = [("DPO", a.as_slice()), ("FiRe-MPO", b.as_slice())];
        let path = out_dir("curves").join("curves.png");
        plot_training_curves(
            &runs,
            &CurvePanel::defaults(),
            &path,
            PlotSize::new(1200, 400),
        )
        .unwrap();
        let (w, h, bytes) = decode(&path);
        assert_eq!((w, h), (1200, 400));
        assert!(variance(&bytes) > 0.0);
    }

    /// A panel whose key only some rows have (an evaluation every K steps, as the held-out
    /// reward accuracy is logged) draws from those rows.
    #[test]
    fn training_curves_with_a_sparse_panel() {
        let mut rows = run(20, 1.0);
        for row in rows
            .iter_mut()
            .filter(|r| (r["step"] as usize).is_multiple_of(5))
        {
            row.insert("held_out/reward_acc".into(), row["step"] / 25.0);
        }
        let mut panels = CurvePanel::defaults();
        panels.push(CurvePanel::new(
            "held-out reward accuracy",
            &["held_out/reward_acc"],
        ));
        let path = out_dir("sparse").join("curves.png");
        plot_training_curves(&[("DPO", &rows)], &panels, &path, PlotSize::new(1600, 400)).unwrap();
        let (w, _, bytes) = decode(&path);
        assert_eq!(w, 1600);
        // The fourth panel (the right quarter) holds a coloured line (axes and text are grey).
        let coloured = |px: &[u8]| px.iter().max().unwrap() - px.iter().min().unwrap() > 60;
        let line_pixels = bytes
            .chunks(3)
            .enumerate()
            .filter(|(i, px)| i % 1600 >= 1250 && coloured(px))
            .count();
        assert!(
            line_pixels > 100,
            "{line_pixels} coloured pixels in the held-out panel"
        );
    }

    #[test]
    fn training_curves_tolerate_missing_keys() {
        let rows = [MetricRow::from([("step".to_string(), 1.0)])];
        let path = out_dir("empty").join("curves.png");
        plot_training_curves(
            &[("x", &rows)],
            &CurvePanel::defaults(),
            &path,
            PlotSize::new(600, 200),
        )
        .unwrap();
        assert_eq!(decode(&path).0, 600);
    }

    #[test]
    fn results_bars_png() {
        let mut table = ResultsTable::new(["SLAKE closed", "VQA-RAD open", "IU-Xray F1"]);
        for (i, method) in ["SFT", "DPO", "RRPO", "FiRe-MPO"].iter().enumerate() {
            for (k, metric) in table.metrics().to_vec().iter().enumerate() {
                let base = 50.0 + 5.0 * i as f64 + 3.0 * k as f64;
                table
                    .insert(method, metric, vec![base, base + 2.0])
                    .unwrap();
            }
        }
        let path = out_dir("bars").join("bars.png");
        plot_results_bars(&table, "methods", &path, PlotSize::new(900, 500)).unwrap();
        let (w, h, bytes) = decode(&path);
        assert_eq!((w, h), (900, 500));
        assert!(variance(&bytes) > 0.0);
    }

    #[test]
    fn results_bars_with_gaps_and_negative_values() {
        // Single seeds (no error bars), one missing cell, a negative mean (log-prob drop).
        let mut table = ResultsTable::new(["accuracy", "log-prob drop"]);
        table.insert("SFT", "accuracy", vec![61.2]).unwrap();
        table.insert("FiRe-MPO", "accuracy", vec![69.7]).unwrap();
        table
            .insert("FiRe-MPO", "log-prob drop", vec![-1.5])
            .unwrap();
        let path = out_dir("bars-gaps").join("bars.png");
        plot_results_bars(&table, "gaps", &path, PlotSize::new(640, 360)).unwrap();
        let (w, h, bytes) = decode(&path);
        assert_eq!((w, h), (640, 360));
        assert!(variance(&bytes) > 0.0);
    }

    #[test]
    fn percentages_and_other_units_get_their_own_panels() {
        let metrics: Vec<String> = ["closed_acc", "logp_drop", "avg", "pair_margin"]
            .map(String::from)
            .to_vec();
        let (percent, unscaled) = split_by_unit(&metrics);
        assert_eq!(percent, ["closed_acc", "avg"]);
        assert_eq!(unscaled, ["logp_drop", "pair_margin"]);
        // Both panels, and a chart of one unit only.
        let mut table = ResultsTable::new(metrics.iter().map(String::as_str));
        for metric in &metrics {
            table.insert("SFT", metric, vec![42.0, 40.0]).unwrap();
        }
        let path = out_dir("bars-units").join("bars.png");
        plot_results_bars(&table, "units", &path, PlotSize::new(900, 400)).unwrap();
        assert!(variance(&decode(&path).2) > 0.0);
        let mut only = ResultsTable::new(["logp_drop"]);
        only.insert("SFT", "logp_drop", vec![0.3]).unwrap();
        plot_results_bars(&only, "nats", &path, PlotSize::new(400, 300)).unwrap();
        assert_eq!(decode(&path).0, 400);
    }

    #[test]
    fn forest_plot_of_differences() {
        let difference = |mean: f64, low: f64, high: f64| PairedDifference {
            mean,
            low,
            high,
            level: 0.95,
            n: 100,
        };
        let row = |method: &str, d: Option<PairedDifference>| DifferenceRow {
            method: method.into(),
            baseline: "SFT".into(),
            differences: d
                .map(|d| ("closed_acc".to_string(), d))
                .into_iter()
                .collect(),
            mcnemar_p: None,
        };
        let rows = [
            row("DPO", Some(difference(-2.0, -4.0, -0.5))),
            row("FiRe-MPO", Some(difference(0.5, -1.0, 2.0))),
            row("no closed questions", None),
        ];
        let path = out_dir("forest").join("forest.png");
        plot_differences_forest(
            &rows,
            "closed_acc",
            "Δ closed",
            &path,
            PlotSize::new(700, 300),
        )
        .unwrap();
        let (w, h, bytes) = decode(&path);
        assert_eq!((w, h), (700, 300));
        // The interval that excludes 0 is drawn in red.
        let red = bytes
            .chunks(3)
            .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
            .count();
        assert!(red > 20, "{red} red pixels");
    }

    #[test]
    fn segments_split_at_nan() {
        let pts = [(1.0, 1.0), (2.0, f64::NAN), (3.0, 3.0), (4.0, 4.0)];
        assert_eq!(
            finite_segments(&pts),
            vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]
        );
    }
}
