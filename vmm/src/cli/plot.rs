//! SVG plots of crash rates (sweep, explore) with `plotters`: a file that
//! opens in any browser with no network.
use plotters::prelude::*;
use std::path::Path;

/// One point: x, the rate, its 95% interval; `None` rate: no valid run.
pub struct RatePoint {
    pub x: f64,
    pub rate: Option<f64>,
    pub ci: Option<(f64, f64)>,
}

/// Crash rate (%) against `x_label`, with interval bars; `x_names`
/// labels integer x ticks (sites) when given.
pub fn rate_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    pts: &[RatePoint],
    x_names: Option<&[String]>,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let (mut lo, mut hi) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.x), b.max(p.x)));
    if pts.is_empty() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(0.5);
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d((lo - pad)..(hi + pad), 0f64..105f64)
        .map_err(|e| err(&e))?;
    let name_of = |x: &f64| match x_names {
        Some(n) if (x.round() - x).abs() < 1e-9 && *x >= 0.0 => {
            n.get(x.round() as usize).cloned().unwrap_or_default()
        }
        Some(_) => String::new(),
        None => format!("{x}"),
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("crash rate (%), 95% interval")
        .x_label_formatter(&name_of)
        .draw()
        .map_err(|e| err(&e))?;
    let valid: Vec<(f64, f64, (f64, f64))> = pts
        .iter()
        .filter_map(|p| {
            Some((
                p.x,
                p.rate? * 100.0,
                p.ci.map(|(a, b)| (a * 100.0, b * 100.0))?,
            ))
        })
        .collect();
    chart
        .draw_series(LineSeries::new(
            valid.iter().map(|(x, r, _)| (*x, *r)),
            &BLUE,
        ))
        .map_err(|e| err(&e))?;
    // The bar's own marker is the point.
    chart
        .draw_series(
            valid
                .iter()
                .map(|(x, r, (a, b))| ErrorBar::new_vertical(*x, *a, *r, *b, BLUE.filled(), 8)),
        )
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
