//! `supervisor tune --plot FILE`: the two curves tune reads, throughput
//! against workers (at one chunk size) and against the chunk size (at the
//! workers of the knee), drawn with plotters as an SVG or a PNG.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::sweep::{Findings, Knob};
use super::trial::Chunking;

const SIZE: (u32, u32) = (1100, 440);
/// Where a TrueType font for the labels is looked for: plotters draws a
/// PNG's text with one, and measures an SVG's with it.
const FONTS: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Draws `findings` to `path`: SVG or PNG by its extension. `unit` names
/// what the throughput counts.
pub fn draw(path: &Path, findings: &Findings, unit: &str) -> anyhow::Result<()> {
    register_font()?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            charts(&root, findings, unit)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        Some("png") => {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            charts(&root, findings, unit)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        _ => bail!(
            "{}: the plot is drawn as .svg or .png, by the file's extension",
            path.display()
        ),
    }
    .with_context(|| format!("cannot draw {}", path.display()))
}

/// Registers the first font found as plotters' sans-serif, once.
fn register_font() -> anyhow::Result<()> {
    static FONT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let found: Option<(PathBuf, Vec<u8>)> = FONTS
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|bytes| (PathBuf::from(p), bytes)));
        let Some((path, bytes)) = found else {
            return Err(format!(
                "no TrueType font for the plot's labels (looked for {}); install one, e.g. \
                 `apt-get install fonts-dejavu-core`",
                FONTS.join(", ")
            ));
        };
        // Plotters keeps a registered font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a font plotters can use", path.display()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn charts<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    findings: &Findings,
    unit: &str,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let workers: Vec<(f64, f64)> = findings
        .trials
        .iter()
        .filter(|t| matches!(t.knob, Knob::Serial | Knob::Workers))
        .map(|t| (t.measured.setting.workers as f64, t.measured.throughput()))
        .collect();
    let mut chunks: Vec<(f64, f64)> = findings
        .trials
        .iter()
        .filter(|t| t.measured.setting.workers == findings.knee_workers)
        .filter_map(|t| match t.measured.setting.chunking {
            Chunking::Fixed(chunk) => Some((chunk as f64, t.measured.throughput())),
            Chunking::Auto(_) => None,
        })
        .collect();
    chunks.sort_by(|a, b| a.0.total_cmp(&b.0));
    chunks.dedup_by(|a, b| a.0 == b.0);
    let auto = findings
        .trials
        .iter()
        .find(|t| t.knob == Knob::Auto)
        .map(|t| t.measured.throughput());
    curve(
        &left,
        &format!("{unit}/s by workers (chunk {})", findings.first_chunk),
        "workers",
        &workers,
        None,
    )?;
    curve(
        &right,
        &format!("{unit}/s by chunk size ({} workers)", findings.knee_workers),
        "chunk (log scale)",
        &chunks,
        Some(auto),
    )?;
    Ok(())
}

fn curve<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    points: &[(f64, f64)],
    // A log-scale x axis, and the throughput of `chunk = "auto"` as a line.
    log_x: Option<Option<f64>>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let error = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let x_min = points.iter().map(|p| p.0).fold(x_max, f64::min);
    let auto = log_x.flatten();
    let y_max = points.iter().map(|p| p.1).chain(auto).fold(1.0, f64::max) * 1.15;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let style = ShapeStyle::from(&BLUE).stroke_width(2);
    if log_x.is_some() {
        let (from, to) = (x_min * 0.5, x_max * 2.0);
        let mut chart = builder
            .build_cartesian_2d((from..to).log_scale(), 0.0..y_max)
            .map_err(error)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_label_formatter(&|y| super::table::si(*y))
            .x_label_formatter(&|x| super::table::si(*x))
            .draw()
            .map_err(error)?;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(error)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(error)?;
        if let Some(rate) = auto {
            chart
                .draw_series(DashedLineSeries::new(
                    [(from, rate), (to, rate)],
                    8,
                    6,
                    ShapeStyle::from(&RED).stroke_width(2),
                ))
                .map_err(error)?
                .label("chunk = \"auto\"")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(error)?;
        }
    } else {
        let mut chart = builder
            .build_cartesian_2d(0.0..x_max + 1.0, 0.0..y_max)
            .map_err(error)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_label_formatter(&|y| super::table::si(*y))
            .draw()
            .map_err(error)?;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(error)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
            .map_err(error)?;
    }
    Ok(())
}
