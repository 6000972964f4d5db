//! The sweep's curves as SVG (plotters): server CPU per participant against N, and the
//! mouth-to-ear delay the server adds against N, one line per server and conference shape.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::run::RunResult;

/// A line: its label, colour, dashed or not, and its points.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const COMET: RGBColor = RGBColor(0, 114, 178);
const COMET_SMALL: RGBColor = RGBColor(86, 180, 233);
const JANUS: RGBColor = RGBColor(213, 94, 0);
const JANUS_SMALL: RGBColor = RGBColor(230, 159, 0);

fn color(target: &str, small: bool) -> RGBColor {
    match (target, small) {
        ("comet", false) => COMET,
        ("comet", true) => COMET_SMALL,
        (_, false) => JANUS,
        (_, true) => JANUS_SMALL,
    }
}

fn shape_name(small: bool) -> &'static str {
    if small {
        "conferences of 4"
    } else {
        "one conference"
    }
}

/// Lines of `value` by (target, shape), over runs that joined everyone.
fn lines(results: &[RunResult], value: impl Fn(&RunResult) -> Option<f64>) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for target in ["comet", "janus"] {
        for small in [false, true] {
            let mut points: Vec<(f64, f64)> = results
                .iter()
                .filter(|r| r.target == target && (r.conferences > 1) == small)
                .filter_map(|r| Some((r.total() as f64, value(r)?)))
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !points.is_empty() {
                let name = if target == "comet" {
                    "comet-server"
                } else {
                    "Janus AudioBridge"
                };
                out.push(Line {
                    label: format!("{name}, {}", shape_name(small)),
                    color: color(target, small),
                    points,
                });
            }
        }
    }
    out
}

fn draw(
    path: &Path,
    title: &str,
    y_desc: &str,
    log_y: bool,
    series: &[(Vec<Line>, bool)],
) -> Result<()> {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(ls, _)| ls.iter().flat_map(|l| l.points.iter().copied()))
        .collect();
    if all.is_empty() {
        return Err(anyhow!("nothing to plot for {}", path.display()));
    }
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.5;
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max);
    let y_min = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("participants (N)")
                .y_desc(y_desc)
                .draw()
                .map_err(|e| anyhow!("{e:?}"))?;
            for (ls, dashed) in series {
                for l in ls {
                    let c = l.color;
                    let label = if *dashed {
                        format!("{} (p99)", l.label)
                    } else {
                        l.label.clone()
                    };
                    if *dashed {
                        chart
                            .draw_series(DashedLineSeries::new(
                                l.points.iter().copied(),
                                6,
                                4,
                                c.stroke_width(2),
                            ))
                            .map_err(|e| anyhow!("{e:?}"))?
                            .label(label)
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1))
                            });
                    } else {
                        chart
                            .draw_series(LineSeries::new(
                                l.points.iter().copied(),
                                c.stroke_width(2),
                            ))
                            .map_err(|e| anyhow!("{e:?}"))?
                            .label(label)
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                            });
                    }
                    chart
                        .draw_series(l.points.iter().map(|p| Circle::new(*p, 4, c.filled())))
                        .map_err(|e| anyhow!("{e:?}"))?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(&WHITE.mix(0.9))
                .border_style(&BLACK)
                .draw()
                .map_err(|e| anyhow!("{e:?}"))?;
        }};
    }
    if log_y {
        let lo = (y_min / 2.0).max(1e-4);
        let hi = y_max * 3.0;
        body!(
            builder
                .build_cartesian_2d((2f64..x_max).log_scale(), (lo..hi).log_scale())
                .map_err(|e| anyhow!("{e:?}"))?
        );
    } else {
        body!(
            builder
                .build_cartesian_2d((2f64..x_max).log_scale(), 0f64..y_max * 1.15)
                .map_err(|e| anyhow!("{e:?}"))?
        );
    }
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Writes `cpu_per_participant.svg` and `delay.svg` into `dir`; returns their paths.
pub fn plot(results: &[RunResult], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let cpu = dir.join("cpu_per_participant.svg");
    draw(
        &cpu,
        "Server CPU per audio participant (2-core machine, same run)",
        "server CPU per participant, % of one core (log)",
        true,
        &[(
            lines(results, |r| {
                (r.joined > 0).then_some(r.server_cpu_per_participant)
            }),
            false,
        )],
    )?;
    let delay = dir.join("delay.svg");
    draw(
        &delay,
        "Mouth-to-ear delay added by the server (marker bursts), p50 solid, p99 dashed",
        "delay, ms",
        false,
        &[
            (lines(results, |r| r.delay_ms_p50), false),
            (lines(results, |r| r.delay_ms_p99), true),
        ],
    )?;
    Ok(vec![cpu, delay])
}
