//! The latency-over-time picture (SVG): HTTP response time, accept → submit_sm and
//! accept → final per kind, and throughput, against the intended send time.

use std::{collections::BTreeMap, path::Path};

use plotters::prelude::*;

use super::{
    config::Kind,
    error::LoadgenError,
    report::{Point, Report},
};

fn colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Otp => RGBColor(214, 39, 40),
        Kind::Transactional => RGBColor(31, 119, 180),
        Kind::Marketing => RGBColor(44, 160, 44),
    }
}

/// One line: its label, colour, width and points.
struct Line {
    label: String,
    colour: RGBColor,
    width: u32,
    points: Vec<(f64, f64)>,
}

fn per_kind_lines(
    timeline: &[Point],
    half_width: f64,
    pick: impl Fn(&Point) -> &BTreeMap<String, f64>,
    what: &str,
    width: u32,
) -> Vec<Line> {
    Kind::ALL
        .iter()
        .filter_map(|&kind| {
            let points: Vec<(f64, f64)> = timeline
                .iter()
                .filter_map(|p| pick(p).get(kind.as_str()).map(|v| (p.t_s + half_width, *v)))
                .collect();
            (!points.is_empty()).then(|| Line {
                label: format!("{kind} {what}"),
                colour: colour(kind),
                width,
                points,
            })
        })
        .collect()
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Line],
) -> Result<(), String> {
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (intended send time)")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    if lines.is_empty() {
        return Ok(());
    }
    for line in lines {
        // Thin lines (p50, final) are drawn lighter than the thick p99 ones.
        let opacity = if line.width > 1 { 1.0 } else { 0.55 };
        let style = ShapeStyle::from(line.colour.mix(opacity)).stroke_width(line.width);
        let legend = style;
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), style))
            .map_err(|e| e.to_string())?
            .label(line.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], legend));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the report's timeline to an SVG file.
pub fn svg(report: &Report, path: &Path) -> Result<(), LoadgenError> {
    draw(report, path).map_err(LoadgenError::Plot)
}

fn draw(report: &Report, path: &Path) -> Result<(), String> {
    let width = report.timeline_width_s.max(1) as f64;
    let half = width / 2.0;
    let x_max = report
        .timeline
        .last()
        .map_or(1.0, |p| p.t_s + width)
        .max(1.0);
    let t = &report.timeline;

    let mut http = per_kind_lines(t, half, |p| &p.http_p99_ms, "p99", 2);
    http.extend(per_kind_lines(t, half, |p| &p.http_p50_ms, "p50", 1));
    let submit = per_kind_lines(t, half, |p| &p.submit_p99_ms, "p99", 2);
    let fin = per_kind_lines(t, half, |p| &p.final_p99_ms, "p99", 2);
    let rate = |label: &str, colour: RGBColor, pick: fn(&Point) -> f64| Line {
        label: label.to_owned(),
        colour,
        width: 2,
        points: t.iter().map(|p| (p.t_s + half, pick(p))).collect(),
    };
    let throughput = vec![
        rate("sent/s", RGBColor(127, 127, 127), |p| p.sent_rate),
        rate("accepted/s", RGBColor(31, 119, 180), |p| p.accepted_rate),
        rate("refused/s", RGBColor(214, 39, 40), |p| p.refused_rate),
    ];

    let mut panels: Vec<(&str, &str, Vec<Line>)> = vec![(
        "HTTP response time (from the intended send time)",
        "ms",
        http,
    )];
    if !submit.is_empty() {
        panels.push(("accept → submit_sm at smsc-sim", "ms", submit));
    }
    if !fin.is_empty() {
        panels.push(("accept → final status", "ms", fin));
    }
    panels.push(("throughput", "messages/s", throughput));

    let height = 60 + 320 * panels.len() as u32;
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!("loadgen {} → {}", report.run_id, report.url);
    let root = root
        .titled(&title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((panels.len(), 1));
    for (area, (title, unit, lines)) in areas.iter().zip(&panels) {
        panel(area, title, unit, x_max, lines)?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
