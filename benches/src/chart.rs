//! Small self-contained SVG line charts for the results (no plotting library): a few
//! series of (x, y) points, linear or log-scale axes, a legend.

use std::fmt::Write as _;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 110.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Where `v` lies between `lo` and `hi`, 0..1, on a linear or log scale.
fn frac(v: f64, lo: f64, hi: f64, log: bool) -> f64 {
    let (v, lo, hi) = if log {
        (v.log10(), lo.log10(), hi.log10())
    } else {
        (v, lo, hi)
    };
    if hi > lo { (v - lo) / (hi - lo) } else { 0.5 }
}

/// Axis ticks: powers of ten on a log scale, five even steps otherwise.
fn ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (a..=b).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5).map(|i| lo + (hi - lo) * i as f64 / 5.0).collect()
    }
}

fn label(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

impl Chart {
    /// The chart as an SVG document. Points that are not finite (or not positive on a log
    /// axis) are left out.
    pub fn svg(&self) -> String {
        let usable = |x: f64, y: f64| {
            x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0) && (!self.log_y || y > 0.0)
        };
        let all: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(x, y)| usable(x, y))
            .collect();
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            W / 2.0,
            escape(&self.title)
        );
        if all.is_empty() {
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
                W / 2.0,
                H / 2.0
            );
            return svg;
        }
        let fold = |f: fn(&(f64, f64)) -> f64| {
            all.iter()
                .map(f)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                })
        };
        let (mut x0, mut x1) = fold(|p| p.0);
        let (mut y0, mut y1) = fold(|p| p.1);
        if self.log_y {
            y0 = 10f64.powf(y0.log10().floor());
            y1 = 10f64.powf(y1.log10().ceil());
        } else {
            y0 = y0.min(0.0);
            y1 *= 1.1;
        }
        if self.log_x {
            x0 = 10f64.powf(x0.log10().floor());
            x1 = 10f64.powf(x1.log10().ceil());
        } else if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let px = |x: f64| LEFT + frac(x, x0, x1, self.log_x) * pw;
        let py = |y: f64| TOP + ph - frac(y, y0, y1, self.log_y) * ph;
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
        );
        for t in ticks(y0, y1, self.log_y) {
            let y = py(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for t in ticks(x0, x1, self.log_x) {
            let x = px(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                label(t)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            TOP + ph + 34.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<String> = s
                .points
                .iter()
                .filter(|&&(x, y)| usable(x, y))
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
            let ly = TOP + ph + 52.0 + 16.0 * (i / 2) as f64;
            let lx = LEFT + (i % 2) as f64 * pw / 2.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="3"/><text x="{}" y="{ly}">{}</text>"#,
                ly - 4.0,
                lx + 20.0,
                ly - 4.0,
                lx + 26.0,
                escape(&s.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_and_skips_unusable_points() {
        let chart = Chart {
            title: "p99 <by> load".into(),
            x_label: "offered".into(),
            y_label: "ms".into(),
            log_x: false,
            log_y: true,
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(1.0, 2.0), (2.0, 20.0), (3.0, f64::NAN)],
                },
                Series {
                    name: "b".into(),
                    points: vec![(1.0, 0.0), (2.0, 300.0)],
                },
            ],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("p99 &lt;by&gt; load"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // NaN and a zero on the log axis are left out: 2 + 1 points.
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(!svg.contains("NaN"));
        let empty = Chart {
            series: vec![],
            ..chart
        };
        assert!(empty.svg().contains("no data"));
    }
}
