//! The one interface every scenario's results are written through: each results type
//! renders its own section of `RESULTS.md`, and [`write`] puts it and the JSON (and charts)
//! where they belong. Scenarios depend on this module and on `results`, never the reverse.

use std::path::Path;

use anyhow::Context;

use crate::chart::Chart;
use crate::results::{data_dir, write_section};

/// A scenario's results, as they are written down.
pub trait Report: serde::Serialize {
    /// The `## {title}` section of `RESULTS.md` this report owns.
    fn title(&self) -> &str;
    /// The name of its JSON file, `results/{stem}.json`.
    fn stem(&self) -> &str;
    /// The section's text, without its heading.
    fn markdown(&self) -> String;
    /// Charts, each written as `results/{name}.svg`.
    fn charts(&self) -> Vec<(String, Chart)> {
        Vec::new()
    }
}

/// Writes the report's charts, `results/{stem}.json` and its section of `RESULTS.md` in
/// `dir` (the section last: it links the others).
pub fn write(dir: &Path, report: &impl Report) -> anyhow::Result<()> {
    let data = data_dir(dir);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("failed to create {}", data.display()))?;
    for (name, chart) in report.charts() {
        let path = data.join(format!("{name}.svg"));
        std::fs::write(&path, chart.svg())
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let json = data.join(format!("{}.json", report.stem()));
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("failed to write {}", json.display()))?;
    write_section(dir, report.title(), &report.markdown())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::Series;

    #[derive(serde::Serialize)]
    struct Tiny {
        figure: u32,
    }

    impl Report for Tiny {
        fn title(&self) -> &str {
            "Tiny"
        }
        fn stem(&self) -> &str {
            "tiny"
        }
        fn markdown(&self) -> String {
            format!("figure {}", self.figure)
        }
        fn charts(&self) -> Vec<(String, Chart)> {
            let chart = Chart {
                title: "figures".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                log_x: false,
                log_y: false,
                series: vec![Series {
                    name: "figure".into(),
                    points: vec![(1.0, 1.0), (2.0, f64::from(self.figure))],
                }],
            };
            vec![("tiny-figures".into(), chart)]
        }
    }

    #[test]
    fn a_report_writes_its_json_charts_and_section() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &Tiny { figure: 7 }).unwrap();
        let json = std::fs::read_to_string(dir.path().join("results/tiny.json")).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            serde_json::json!({"figure": 7})
        );
        let svg = std::fs::read_to_string(dir.path().join("results/tiny-figures.svg")).unwrap();
        assert!(svg.contains("<polyline"), "{svg}");
        let md = std::fs::read_to_string(dir.path().join("RESULTS.md")).unwrap();
        assert!(md.contains("## Tiny\n\nfigure 7\n"), "{md}");
    }
}
