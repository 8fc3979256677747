//! The messages between the analytics server and its query workers, over the worker's
//! stdin and stdout: length-prefixed frames, `[tag: u8][length: u32 LE][payload]`.
//!
//! Server to worker: [`Init`] once, then per query a [`Request`] (and, for a Postgres
//! statement with parameters, a `Params` frame: one row of Arrow IPC). Worker to server:
//! `Ready` once, then per query either an `Error`, or a `Started` followed by `Data`
//! frames and an `End` (or an `Error` mid-stream). A worker that dies instead of answering
//! is that query's error; the framing never has to recover from a torn stream.

use std::io;

use serde::{Deserialize, Serialize};
use shoplens_readmodel::config::ReadModelConfig;
use shoplens_readmodel::freshness::FreshnessReport;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::AnalyticsError;
use crate::engine::{Pii, QueryConfig};
use crate::guard::GuardError;
use crate::read_model::ReadModelError;

/// The largest frame either side accepts. The worker splits result batches below it, so
/// the server's memory per running query stays bounded whatever the query returns.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What the worker aims for per `Data` frame.
pub const TARGET_FRAME: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    Init = b'I',
    Request = b'Q',
    Params = b'P',
    Ready = b'R',
    Started = b'S',
    Data = b'D',
    End = b'E',
    Error = b'X',
}

impl Tag {
    fn from_byte(b: u8) -> Option<Tag> {
        Some(match b {
            b'I' => Tag::Init,
            b'Q' => Tag::Request,
            b'P' => Tag::Params,
            b'R' => Tag::Ready,
            b'S' => Tag::Started,
            b'D' => Tag::Data,
            b'E' => Tag::End,
            b'X' => Tag::Error,
            _ => return None,
        })
    }
}

/// Everything a worker needs to open the read model and build its engine, sent once on
/// stdin (never on the command line or in the environment: it may hold the ClickHouse
/// password).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Init {
    pub read_model: ReadModelConfig,
    pub query: QueryConfig,
    /// The Postgres users the catalog (`pg_roles`) lists.
    pub pg_users: Vec<String>,
}

/// Which session a query runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// Row limit, short deadline, no spilling.
    Interactive,
    /// No row limit beyond the export cap, long deadline, spills to disk.
    Export,
}

/// The shape of a query's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// An Arrow IPC stream (the Postgres endpoint decodes it into rows).
    Arrow,
    /// The HTTP SQL endpoint's JSON document (`columns`, `row_count`, `freshness`, `rows`).
    Json,
    /// CSV with a header line.
    Csv,
    /// A Parquet file.
    Parquet,
}

/// One query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub sql: String,
    pub session: SessionKind,
    /// Whether the reader may see personal data.
    pub pii: Pii,
    pub output: Output,
    /// Encode the whole answer before `Started`, so that any error is reported before the
    /// first byte (the HTTP SQL endpoint, whose status code depends on it). Exports stream.
    pub buffered: bool,
    /// A `Params` frame follows.
    pub has_params: bool,
    /// What the JSON output says of the read model's freshness.
    pub freshness: Option<FreshnessReport>,
    /// CPU seconds the query may use (the worker's `RLIMIT_CPU` is set to what it has used
    /// so far plus this).
    pub cpu_seconds: u64,
}

/// Sent once the worker is ready for queries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub pid: u32,
    /// Address space in use after start-up; the memory cap is on top of it.
    pub baseline_bytes: u64,
}

/// Sent when a query finished.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct End {
    pub rows: u64,
    pub bytes: u64,
}

/// A query's failure as it crosses the pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    /// The SQLSTATE the Postgres endpoint reports.
    pub sqlstate: String,
    /// The limit that stopped the query (milliseconds, seconds or rows), for limit errors.
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Forbidden,
    Invalid,
    Timeout,
    CpuTime,
    TooManyRows,
    Memory,
    Busy,
    ReadModel,
    Unavailable,
    Internal,
}

/// `e` as it crosses the pipe.
pub fn to_wire(e: &AnalyticsError) -> WireError {
    let (kind, limit) = match e {
        AnalyticsError::Forbidden(_) => (ErrorKind::Forbidden, None),
        AnalyticsError::Invalid { .. } => (ErrorKind::Invalid, None),
        AnalyticsError::Limit(GuardError::Timeout(d)) => {
            (ErrorKind::Timeout, Some(d.as_millis() as u64))
        }
        AnalyticsError::Limit(GuardError::CpuTime(s)) => (ErrorKind::CpuTime, Some(*s)),
        AnalyticsError::Limit(GuardError::TooManyRows(n)) => (ErrorKind::TooManyRows, Some(*n)),
        AnalyticsError::Memory(_) => (ErrorKind::Memory, None),
        AnalyticsError::Busy(_) => (ErrorKind::Busy, None),
        AnalyticsError::ReadModel(_) => (ErrorKind::ReadModel, None),
        AnalyticsError::Unavailable(_) => (ErrorKind::Unavailable, None),
        // What no query worker sends: carried as internal errors with their message.
        AnalyticsError::Internal(_)
        | AnalyticsError::Usage(_)
        | AnalyticsError::Output(_)
        | AnalyticsError::ReconcileNotConfigured
        | AnalyticsError::SourceOfTruth(_)
        | AnalyticsError::Remote(_)
        | AnalyticsError::Listen { .. }
        | AnalyticsError::Refused(_) => (ErrorKind::Internal, None),
    };
    let message = match e {
        // Their own wording is added back on the other side.
        AnalyticsError::Memory(m)
        | AnalyticsError::Internal(m)
        | AnalyticsError::Unavailable(m)
        | AnalyticsError::Busy(m)
        | AnalyticsError::Forbidden(m) => m.clone(),
        AnalyticsError::ReadModel(ReadModelError::Unavailable(m))
        | AnalyticsError::ReadModel(ReadModelError::Corrupt(m)) => m.clone(),
        other => other.to_string(),
    };
    WireError {
        kind,
        message,
        sqlstate: e.sqlstate().to_owned(),
        limit,
    }
}

/// The error `w` describes.
pub fn from_wire(w: WireError) -> AnalyticsError {
    let limit = w.limit.unwrap_or(0);
    match w.kind {
        ErrorKind::Forbidden => AnalyticsError::Forbidden(w.message),
        ErrorKind::Invalid => AnalyticsError::Invalid {
            message: w.message,
            sqlstate: w.sqlstate,
        },
        ErrorKind::Timeout => {
            AnalyticsError::Limit(GuardError::Timeout(std::time::Duration::from_millis(limit)))
        }
        ErrorKind::CpuTime => AnalyticsError::Limit(GuardError::CpuTime(limit)),
        ErrorKind::TooManyRows => AnalyticsError::Limit(GuardError::TooManyRows(limit)),
        ErrorKind::Memory => AnalyticsError::Memory(w.message),
        ErrorKind::Busy => AnalyticsError::Busy(w.message),
        ErrorKind::ReadModel => AnalyticsError::ReadModel(ReadModelError::Unavailable(w.message)),
        ErrorKind::Unavailable => AnalyticsError::Unavailable(w.message),
        ErrorKind::Internal => AnalyticsError::Internal(w.message),
    }
}

/// Reads one frame: `Ok(None)` at a clean end of stream (the other side closed its end).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(Tag, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let tag =
        Tag::from_byte(head[0]).ok_or_else(|| bad(format!("unknown frame tag {}", head[0])))?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((tag, payload)))
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    tag: Tag,
    payload: &[u8],
) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(bad(format!(
            "frame of {} bytes exceeds {MAX_FRAME}",
            payload.len()
        )));
    }
    let mut head = [0u8; 5];
    head[0] = tag as u8;
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Writes `value` as a JSON frame.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    tag: Tag,
    value: &T,
) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_frame(w, tag, &bytes).await
}

/// A JSON frame's payload as `T`.
pub fn parse<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> io::Result<T> {
    serde_json::from_slice(payload).map_err(|e| bad(format!("bad frame: {e}")))
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Tag::Data, b"hello").await.unwrap();
        write_json(&mut buf, Tag::End, &End { rows: 3, bytes: 5 })
            .await
            .unwrap();
        let mut r = buf.as_slice();
        let (tag, payload) = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((tag, payload.as_slice()), (Tag::Data, &b"hello"[..]));
        let (tag, payload) = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(tag, Tag::End);
        assert_eq!(parse::<End>(&payload).unwrap().rows, 3);
        assert!(read_frame(&mut r).await.unwrap().is_none());

        let mut huge = vec![b'D'];
        huge.extend_from_slice(&((MAX_FRAME + 1) as u32).to_le_bytes());
        let err = read_frame(&mut huge.as_slice()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut torn = buf[..7].to_vec();
        torn.truncate(7);
        assert!(read_frame(&mut torn.as_slice()).await.is_err());
    }

    #[test]
    fn errors_cross_the_pipe_with_their_kind_limit_and_sqlstate() {
        use std::time::Duration;
        for e in [
            AnalyticsError::Forbidden("no".into()),
            AnalyticsError::Invalid {
                message: "table 'x' not found".into(),
                sqlstate: "42P01".into(),
            },
            AnalyticsError::Limit(GuardError::Timeout(Duration::from_millis(1500))),
            AnalyticsError::Limit(GuardError::CpuTime(30)),
            AnalyticsError::Limit(GuardError::TooManyRows(1000)),
            AnalyticsError::Memory("pool".into()),
            AnalyticsError::Busy("busy".into()),
            AnalyticsError::ReadModel(ReadModelError::Unavailable("down".into())),
            AnalyticsError::Internal("boom".into()),
        ] {
            let back = from_wire(to_wire(&e));
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.sqlstate(), e.sqlstate());
        }
    }
}
