//! The query worker: a child process of the analytics server (the same program, started
//! with the argument `query-worker`) that runs ad-hoc queries one at a time under operating
//! system limits, and streams each answer back to the server.
//!
//! Start-up: read [`Init`] from stdin, enter the idle scheduling class and lower the
//! priority (before any thread starts, so every thread inherits them), open the read model,
//! build the engine and warm it up, then cap the address space at what start-up took plus
//! the configured budget, and say `Ready`. Per query: move the CPU-time limit to what has
//! been used plus the query's budget, run it, and send the answer. Whatever a query does,
//! the worst it can do is end this process; the server reports that as the query's error
//! and starts another worker.

use std::io::{self, Read};

use arrow_array::{ArrayRef, RecordBatch};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::common::{ParamValues, ScalarValue};
use futures::StreamExt;
use tokio::io::AsyncWrite;

use super::os;
use super::protocol::{
    self, End, Init, MAX_FRAME, Output, Ready, Request, TARGET_FRAME, Tag, read_frame, write_frame,
    write_json,
};
use crate::AnalyticsError;
use crate::engine::{Engine, Pii, QueryConfig};
use crate::export::Encoder;

/// The first argument that makes a program a query worker.
pub const SUBCOMMAND: &str = "query-worker";

/// Result batches are cut to about this size before they are sent, so the server decodes
/// one small piece at a time.
const TARGET_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Runs the query worker and exits, when this process was started as one; returns
/// otherwise. Call it first thing in `main` of every program that hosts an analytics
/// server (the server starts its workers from its own program by default).
pub fn run_if_requested() {
    if std::env::args_os().nth(1).is_some_and(|a| a == SUBCOMMAND) {
        std::process::exit(main());
    }
}

fn main() -> i32 {
    os::die_with_parent();
    let init = match read_init() {
        Ok(init) => init,
        Err(e) => {
            eprintln!("query worker: cannot read its start-up message: {e}");
            return 2;
        }
    };
    if init.query.workers.idle_class
        && let Err(e) = os::idle_class()
    {
        eprintln!("query worker: {e}; only its nice value lowers its priority");
    }
    os::lower_priority(init.query.workers.nice);
    if !init.query.workers.cpus.is_empty()
        && let Err(e) = os::pin_to(&init.query.workers.cpus)
    {
        eprintln!(
            "query worker: cannot keep to CPUs {:?}: {e}",
            init.query.workers.cpus
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("query worker: cannot start its runtime: {e}");
            return 2;
        }
    };
    match runtime.block_on(serve(init)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("query worker: {e}");
            1
        }
    }
}

/// The `Init` frame, read before any thread exists.
fn read_init() -> io::Result<Init> {
    let mut stdin = io::stdin().lock();
    let mut head = [0u8; 5];
    stdin.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head[0] != Tag::Init as u8 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected an Init frame",
        ));
    }
    let mut payload = vec![0u8; len];
    stdin.read_exact(&mut payload)?;
    protocol::parse(&payload)
}

/// The engine's limits inside a worker: the interactive memory pool is `memory_limit_mb`
/// but at most a share of the worker's address-space budget, so an ordinary large query
/// fails with a clean memory error before the hard cap ends the process.
pub fn worker_query_config(config: &QueryConfig) -> QueryConfig {
    let budget_mb = usize::try_from(config.workers.memory_mb).unwrap_or(usize::MAX);
    QueryConfig {
        memory_limit_mb: config.memory_limit_mb.min(budget_mb / 10 * 6).max(4),
        export_memory_limit_mb: config.export_memory_limit_mb.min(budget_mb / 2).max(16),
        ..config.clone()
    }
}

async fn serve(init: Init) -> io::Result<()> {
    let config = worker_query_config(&init.query);
    let budget = config.workers.memory_mb.saturating_mul(1024 * 1024);
    let read_model = crate::startup::read_model_within(&init.read_model, Some(budget))
        .await
        .map_err(|e| io::Error::other(format!("cannot open the read model: {e}")))?;
    let engine = Engine::new(read_model, &config)
        .await
        .map_err(|e| io::Error::other(format!("cannot build the engine: {e}")))?;
    for ctx in engine.contexts() {
        crate::pg::install_catalog(&ctx, &init.pg_users)
            .await
            .map_err(|e| io::Error::other(format!("cannot set up pg_catalog: {e}")))?;
    }
    // The first query of a session sets up what every later one reuses.
    for pii in [Pii::Visible, Pii::Masked] {
        let _ = engine.collect(pii, "SELECT 1").await;
    }

    let baseline = os::address_space_bytes().unwrap_or(0);
    let spill = config.spill_quota_mb.saturating_mul(1024 * 1024);
    os::cap_memory_and_files(baseline.saturating_add(budget), spill.max(1024 * 1024))?;

    let mut input = tokio::io::stdin();
    let mut output = tokio::io::stdout();
    let ready = Ready {
        pid: std::process::id(),
        baseline_bytes: baseline,
    };
    write_json(&mut output, Tag::Ready, &ready).await?;
    loop {
        let Some((tag, payload)) = read_frame(&mut input).await? else {
            return Ok(()); // the server closed our stdin: retire
        };
        if tag != Tag::Request {
            return Err(io::Error::other(format!("unexpected {tag:?} frame")));
        }
        let request: Request = protocol::parse(&payload)?;
        let params = if request.has_params {
            match read_frame(&mut input).await? {
                Some((Tag::Params, payload)) => Some(decode_params(&payload)),
                _ => return Err(io::Error::other("expected a Params frame")),
            }
        } else {
            None
        };
        os::allow_cpu_seconds(request.cpu_seconds)?;
        match params {
            Some(Err(e)) => send_error(&mut output, &e).await?,
            Some(Ok(params)) => answer(&engine, &request, Some(params), &mut output).await?,
            None => answer(&engine, &request, None, &mut output).await?,
        }
    }
}

async fn send_error<W: AsyncWrite + Unpin>(out: &mut W, e: &AnalyticsError) -> io::Result<()> {
    write_json(out, Tag::Error, &protocol::to_wire(e)).await
}

/// Runs one query and sends its answer. Only an I/O error on stdout is returned (the
/// server went away); the query's own errors are sent.
async fn answer<W: AsyncWrite + Unpin>(
    engine: &Engine,
    request: &Request,
    params: Option<ParamValues>,
    out: &mut W,
) -> io::Result<()> {
    let mut stream = match engine
        .run_in(request.session, request.pii, &request.sql, params)
        .await
    {
        Ok(stream) => crate::export::read_ahead(stream),
        Err(e) => return send_error(out, &e).await,
    };
    let mut encoder =
        match Encoder::for_output(request.output, stream.schema(), request.freshness.clone()) {
            Ok(encoder) => encoder,
            Err(e) => return send_error(out, &e).await,
        };
    let mut sent = End::default();
    let mut pending: Vec<u8> = encoder.head();
    // A streamed Arrow answer goes out batch by batch (the Postgres endpoint sends rows as
    // they come); files go out in larger chunks.
    let flush_at = if request.output == Output::Arrow {
        1
    } else {
        TARGET_FRAME
    };
    if !request.buffered {
        write_frame(out, Tag::Started, b"").await?;
        sent.bytes += send_data(out, &std::mem::take(&mut pending)).await?;
    }
    while let Some(batch) = stream.next().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => return send_error(out, &AnalyticsError::from(e)).await,
        };
        sent.rows += batch.num_rows() as u64;
        for piece in pieces(&batch, request.output) {
            let bytes = match encoder.write(&piece) {
                Ok(bytes) => bytes,
                Err(e) => return send_error(out, &e).await,
            };
            if request.output == Output::Arrow && bytes.len() > MAX_FRAME {
                let e = AnalyticsError::Invalid {
                    message: format!(
                        "a result row is larger than {} MiB; select less of it",
                        MAX_FRAME / (1024 * 1024)
                    ),
                    sqlstate: "54000".into(),
                };
                return send_error(out, &e).await;
            }
            pending.extend_from_slice(&bytes);
            if !request.buffered && pending.len() >= flush_at {
                sent.bytes += send_data(out, &std::mem::take(&mut pending)).await?;
            }
        }
    }
    match encoder.finish() {
        Ok(bytes) => pending.extend_from_slice(&bytes),
        Err(e) => return send_error(out, &e).await,
    }
    if request.buffered {
        write_frame(out, Tag::Started, b"").await?;
    }
    sent.bytes += send_data(out, &pending).await?;
    write_json(out, Tag::End, &sent).await
}

/// Sends `bytes` as `Data` frames of at most [`TARGET_FRAME`] bytes.
async fn send_data<W: AsyncWrite + Unpin>(out: &mut W, bytes: &[u8]) -> io::Result<u64> {
    for chunk in bytes.chunks(TARGET_FRAME) {
        write_frame(out, Tag::Data, chunk).await?;
    }
    Ok(bytes.len() as u64)
}

/// `batch` cut into pieces of about [`TARGET_BATCH_BYTES`] (Arrow output only: the other
/// formats are bytes the server passes on without decoding).
fn pieces(batch: &RecordBatch, output: Output) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let bytes = batch.get_array_memory_size();
    if output != Output::Arrow || bytes <= TARGET_BATCH_BYTES || rows <= 1 {
        return vec![batch.clone()];
    }
    let per_piece = (rows * TARGET_BATCH_BYTES / bytes).max(1);
    (0..rows)
        .step_by(per_piece)
        .map(|offset| batch.slice(offset, per_piece.min(rows - offset)))
        .collect()
}

/// Positional parameters as one row of Arrow IPC: column `i` holds `$i+1`.
pub fn encode_params(params: &ParamValues) -> Result<Vec<u8>, AnalyticsError> {
    let values: Vec<ScalarValue> = match params {
        ParamValues::List(list) => list.iter().map(|p| p.value.clone()).collect(),
        ParamValues::Map(_) => {
            return Err(AnalyticsError::invalid(
                "named parameters are not supported; use $1, $2, ...",
            ));
        }
    };
    let internal = |e: datafusion::error::DataFusionError| AnalyticsError::Internal(e.to_string());
    let columns: Vec<(String, ArrayRef)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Ok((
                format!("p{}", i + 1),
                v.to_array_of_size(1).map_err(internal)?,
            ))
        })
        .collect::<Result<_, AnalyticsError>>()?;
    let mut out = Vec::new();
    if columns.is_empty() {
        return Ok(out);
    }
    let batch =
        RecordBatch::try_from_iter(columns).map_err(|e| AnalyticsError::Internal(e.to_string()))?;
    let mut writer =
        datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
            .map_err(|e| AnalyticsError::Internal(e.to_string()))?;
    writer
        .write(&batch)
        .and_then(|()| writer.finish())
        .map_err(|e| AnalyticsError::Internal(e.to_string()))?;
    drop(writer);
    Ok(out)
}

/// The inverse of [`encode_params`].
pub fn decode_params(bytes: &[u8]) -> Result<ParamValues, AnalyticsError> {
    if bytes.is_empty() {
        return Ok(ParamValues::List(Vec::new()));
    }
    let bad = |e: String| AnalyticsError::Internal(format!("bad parameters: {e}"));
    let mut reader = StreamReader::try_new(bytes, None).map_err(|e| bad(e.to_string()))?;
    let batch = reader
        .next()
        .ok_or_else(|| bad("no row".into()))?
        .map_err(|e| bad(e.to_string()))?;
    let values = batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0).map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ParamValues::from(values))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn parameters_round_trip_through_arrow() {
        let params = ParamValues::from(vec![
            ScalarValue::Int64(Some(42)),
            ScalarValue::Utf8(Some("o'brien".into())),
            ScalarValue::Utf8(None),
        ]);
        let bytes = encode_params(&params).unwrap();
        let back = decode_params(&bytes).unwrap();
        match back {
            ParamValues::List(list) => {
                let values: Vec<_> = list.into_iter().map(|p| p.value).collect();
                assert_eq!(
                    values,
                    vec![
                        ScalarValue::Int64(Some(42)),
                        ScalarValue::Utf8(Some("o'brien".into())),
                        ScalarValue::Utf8(None),
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_params(&[]).unwrap(),
            ParamValues::List(l) if l.is_empty()
        ));
    }

    #[test]
    fn big_batches_are_cut_for_arrow_output_only() {
        let strings: Vec<String> = (0..1000).map(|_| "x".repeat(10_000)).collect();
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(arrow_array::StringArray::from(strings)) as ArrayRef,
        )])
        .unwrap();
        let cut = pieces(&batch, Output::Arrow);
        assert!(cut.len() >= 2, "{}", cut.len());
        assert_eq!(cut.iter().map(RecordBatch::num_rows).sum::<usize>(), 1000);
        assert_eq!(pieces(&batch, Output::Csv).len(), 1);
    }
}
