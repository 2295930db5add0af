//! `hypergrad plot` (SPEC §10): traces (`run --trace` JSONL files) drawn as line charts, SVG or
//! PNG, with no Python and no system fonts (text uses the bundled DejaVu Sans).
//!
//! One panel per y field, stacked; in each, one line per trace, named in the legend by the
//! trace's label. An axis whose positive values span more than two decades is logarithmic.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::{Error, Result};

/// One trace: its label and its records' (x, y) values for each field.
pub struct Trace {
    pub label: String,
    /// For each requested y field, the (x, y) points in file order.
    pub points: Vec<Vec<(f64, f64)>>,
}

/// What to draw.
pub struct Figure {
    /// The x field (`step` or `seconds`).
    pub x: String,
    /// The y fields, one panel each.
    pub y: Vec<String>,
    pub traces: Vec<Trace>,
}

/// Reads the fields `x` and each of `ys` from every line of a JSONL trace. A line that is
/// not a JSON object, or that lacks a field (or has a non-number there), is an error naming
/// the file and line; `null` (e.g. `test_accuracy` of a regression run) skips the point.
pub fn read_trace(path: &Path, label: String, x: &str, ys: &[String]) -> Result<Trace> {
    let text = crate::data::read_text(path)?;
    let mut points = vec![Vec::new(); ys.len()];
    let mut records = 0;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::parse(path, number, format!("not a JSON trace record: {e}")))?;
        let field = |name: &str| -> Result<Option<f64>> {
            match value.get(name) {
                None => Err(Error::parse(
                    path,
                    number,
                    format!("the record has no field '{name}'"),
                )),
                Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                    Error::parse(path, number, format!("field '{name}' is {v}, not a number"))
                }),
            }
        };
        let xv = field(x)?;
        for (k, y) in ys.iter().enumerate() {
            if let (Some(xv), Some(yv)) = (xv, field(y)?) {
                if xv.is_finite() && yv.is_finite() {
                    points[k].push((xv, yv));
                }
            }
        }
        records += 1;
    }
    if records == 0 {
        return Err(Error::parse(path, 1, "the trace has no records"));
    }
    Ok(Trace { label, points })
}

/// Draws `figure` to `out`: SVG for `.svg`, PNG for `.png`; anything else is refused.
pub fn draw(figure: &Figure, out: &Path) -> Result<()> {
    register_fonts();
    let height = 60 + 300 * figure.y.len() as u32;
    let size = (900, height);
    let fail = |e: String| Error::Backend(format!("cannot draw {}: {e}", out.display()));
    match extension(out).as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(out, size).into_drawing_area();
            draw_on(&root, figure).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))
        }
        Some("png") => {
            let root = BitMapBackend::new(out, size).into_drawing_area();
            draw_on(&root, figure).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))
        }
        _ => Err(Error::option(
            "-o",
            format!(
                "{}: the figure's name must end in .svg or .png",
                out.display()
            ),
        )),
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// The label of a trace file: its name without `.jsonl`.
pub fn default_label(path: &Path) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    name.strip_suffix(".jsonl")
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name)
        .to_string()
}

/// The path `figure` would be written to, checked before any trace is read.
pub fn check_output(out: &Path) -> Result<PathBuf> {
    match extension(out).as_deref() {
        Some("svg") | Some("png") => Ok(out.to_path_buf()),
        _ => Err(Error::option(
            "-o",
            format!(
                "{}: the figure's name must end in .svg or .png",
                out.display()
            ),
        )),
    }
}

static FONTS: Once = Once::new();

/// plotters draws text with fonts registered by name; DejaVu Sans is compiled in.
fn register_fonts() {
    FONTS.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
        // The bundled file is a valid TrueType font; registering it cannot fail.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// An axis: its range and whether it is logarithmic (positive values spanning more than two
/// decades).
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

fn axis(values: impl Iterator<Item = f64>) -> Axis {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return Axis {
            lo: 0.0,
            hi: 1.0,
            log: false,
        };
    }
    if lo > 0.0 && hi / lo > 100.0 {
        return Axis {
            lo: lo / 1.5,
            hi: hi * 1.5,
            log: true,
        };
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        lo.abs().max(1.0) * 0.05
    };
    Axis {
        lo: lo - pad,
        hi: hi + pad,
        log: false,
    }
}

type DrawResult = std::result::Result<(), String>;

fn draw_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    figure: &Figure,
) -> DrawResult {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((figure.y.len(), 1));
    for (k, (panel, field)) in panels.iter().zip(&figure.y).enumerate() {
        let series: Vec<(&str, &[(f64, f64)])> = figure
            .traces
            .iter()
            .map(|t| (t.label.as_str(), t.points[k].as_slice()))
            .collect();
        let x = axis(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)));
        let y = axis(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
        let labels = (figure.x.as_str(), field.as_str());
        // Linear and logarithmic axes are different types to plotters: one call per pair.
        match (x.log, y.log) {
            (false, false) => panel_on(panel, x.lo..x.hi, y.lo..y.hi, labels, &series),
            (false, true) => panel_on(panel, x.lo..x.hi, (y.lo..y.hi).log_scale(), labels, &series),
            (true, false) => panel_on(panel, (x.lo..x.hi).log_scale(), y.lo..y.hi, labels, &series),
            (true, true) => panel_on(
                panel,
                (x.lo..x.hi).log_scale(),
                (y.lo..y.hi).log_scale(),
                labels,
                &series,
            ),
        }?;
    }
    Ok(())
}

fn panel_on<DB, X, Y>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: X,
    y: Y,
    (x_name, y_name): (&str, &str),
    series: &[(&str, &[(f64, f64)])],
) -> DrawResult
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(y_name, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_name)
        .y_desc(y_name)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).mix(0.95);
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 18, y)],
                    ShapeStyle::from(&color).stroke_width(2),
                )
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

/// A horizontal bar chart of one quantity (what `bench … --plot` draws).
pub struct Bars {
    pub title: String,
    /// The quantity and its unit, for the x axis.
    pub quantity: String,
    /// (name, value), drawn top to bottom.
    pub bars: Vec<(String, f64)>,
}

/// Draws `bars` to `out` (`.svg` or `.png`).
pub fn draw_bars(bars: &Bars, out: &Path) -> Result<()> {
    register_fonts();
    check_output(out)?;
    let size = (900, 80 + 34 * bars.bars.len().max(1) as u32);
    let fail = |e: String| Error::Backend(format!("cannot draw {}: {e}", out.display()));
    if extension(out).as_deref() == Some("svg") {
        let root = SVGBackend::new(out, size).into_drawing_area();
        bars_on(&root, bars).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))
    } else {
        let root = BitMapBackend::new(out, size).into_drawing_area();
        bars_on(&root, bars).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))
    }
}

fn bars_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    bars: &Bars,
) -> DrawResult {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = bars.bars.len();
    let max = bars
        .bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let max = if max > 0.0 { 1.15 * max } else { 1.0 };
    let mut chart = ChartBuilder::on(root)
        .caption(&bars.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(8)
        .build_cartesian_2d(0.0..max, 0.0..n.max(1) as f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(bars.quantity.as_str())
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, value)) in bars.bars.iter().enumerate() {
        // Top to bottom: the first bar at the top.
        let top = (n - i) as f64 - 0.15;
        let color = Palette99::pick(i).mix(0.8);
        let v = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, top - 0.7), (v, top)],
                color.filled(),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{name}  {value:.4}"),
                (0.01 * max, top - 0.35),
                ("sans-serif", 13).into_font().color(&BLACK),
            )))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// A tick label with at most three significant digits: plotters' own formatting prints the
/// rounding of a log axis's ticks (`0.0999999999998` for 0.1, `9.99999999997e-6` for 1e-5).
/// Plain decimals from 0.001 to 9999, scientific notation outside (`1e-11`, `2.5e6`).
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    if (-3..4).contains(&magnitude) {
        let decimals = (2 - magnitude).max(0) as usize;
        trim_zeros(format!("{v:.decimals$}"))
    } else {
        let text = format!("{v:.2e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) => format!("{}e{exponent}", trim_zeros(mantissa.into())),
            None => text,
        }
    }
}

/// `2.50` → `2.5`, `1.00` → `1`; integers are left alone.
fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn ticks_have_three_significant_digits_at_most() {
        let cases = [
            (0.0999999999998, "0.1"),
            (9.99999999997e-6, "1e-5"),
            (1e-11, "1e-11"),
            (0.65, "0.65"),
            (0.001, "0.001"),
            (5.0, "5"),
            (45.0, "45"),
            (2500.0, "2500"),
            (100000.0, "1e5"),
            (2.5e6, "2.5e6"),
            (-0.125, "-0.125"),
            (0.0, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(tick(v), want, "tick({v})");
        }
    }
}
