//! The operator's side of a rebuild: asks a running ingest process to rebuild its read model
//! (blue/green) and shows progress until the new generation is live.

use std::io::Write;
use std::time::Duration;

use crate::IngestError;
use crate::supervisor::RebuildStatus;

/// Starts a rebuild on the ingest API at `url` (or follows the one already running) and
/// reports progress on `out` until it has switched; an error if it failed.
pub async fn rebuild(
    url: &str,
    token: &str,
    out: &mut (dyn Write + Send),
) -> crate::Result<RebuildStatus> {
    let remote =
        |what: &str, e: &dyn std::fmt::Display| IngestError::Remote(format!("{what}: {e}"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .map_err(|e| remote("the token is not a valid header value", &e))?,
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| remote("cannot build an HTTP client", &e))?;
    let url = url.trim_end_matches('/');
    let resp = http
        .post(format!("{url}/api/v1/rebuild"))
        .send()
        .await
        .map_err(|e| remote(&format!("failed to reach the ingest API at {url}"), &e))?;
    match resp.status().as_u16() {
        202 => {}
        409 => writeln!(out, "a rebuild is already running; following it")?,
        status => {
            let body = resp.text().await.unwrap_or_default();
            return Err(IngestError::Remote(format!(
                "the ingest API refused the rebuild ({status}): {body}"
            )));
        }
    }
    loop {
        let status: RebuildStatus = http
            .get(format!("{url}/api/v1/rebuild"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| remote("failed to ask for the rebuild status", &e))?
            .json()
            .await
            .map_err(|e| remote("failed to read the rebuild status", &e))?;
        write!(out, "\r{}", progress_line(&status))?;
        out.flush()?;
        match status.state.as_str() {
            "switched" => {
                writeln!(
                    out,
                    "\ngeneration {} is live (replaced generation {})",
                    status.generation, status.replacing
                )?;
                return Ok(status);
            }
            "failed" => {
                writeln!(out)?;
                return Err(IngestError::Remote(format!(
                    "the rebuild failed: {}",
                    status.error.as_deref().unwrap_or("unknown error")
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `[#########           ] 45%  45000/100000 events  212000 events/s  generation 2`
pub fn progress_line(s: &RebuildStatus) -> String {
    const WIDTH: u64 = 30;
    // A count never passes its total, whatever a (possibly older) server reports.
    let total = s.target.max(s.applied);
    let target = total.max(1);
    let filled = (s.applied * WIDTH / target).min(WIDTH);
    let percent = s.applied * 100 / target;
    format!(
        "[{}{}] {percent:>3}%  {}/{} events  {:.0} events/s  generation {}",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        s.applied,
        total,
        s.events_per_sec,
        s.generation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_the_share_applied() {
        let s = RebuildStatus {
            generation: 2,
            replacing: 1,
            state: "running".into(),
            applied: 50,
            target: 200,
            started_at_ms: 0,
            finished_at_ms: None,
            error: None,
            events_per_sec: 125.4,
        };
        let line = progress_line(&s);
        assert!(line.starts_with("[#######       "), "{line}");
        assert!(
            line.contains(" 25%  50/200 events  125 events/s  generation 2"),
            "{line}"
        );
        // The new generation read ahead of the live one: 4783 of 4783, not of 4766.
        let ahead = RebuildStatus {
            applied: 4783,
            target: 4766,
            ..s
        };
        let line = progress_line(&ahead);
        assert!(line.contains("100%  4783/4783 events"), "{line}");
    }
}
