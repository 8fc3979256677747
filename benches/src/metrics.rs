//! Reading the system's Prometheus `/metrics` pages: the counters a scenario takes
//! differences of (downstream calls, cache hits, time spent in applies).

/// The sum of every sample of `name` (any labels) in a Prometheus text page.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            (rest.starts_with('{') || rest.starts_with(' ')).then_some(())?;
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_one_name_are_summed_whatever_their_labels() {
        let page = "# HELP calls_total Calls.\n\
                    calls_total{service=\"order\"} 3\n\
                    calls_total{service=\"customer\"} 4.5\n\
                    calls_total_other 100\n\
                    calls_total 1\n";
        assert_eq!(sum_metric(page, "calls_total"), 8.5);
        assert_eq!(sum_metric(page, "missing"), 0.0);
    }
}
