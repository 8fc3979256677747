//! Report export: named reports and ad-hoc queries as CSV or Parquet, streamed batch by
//! batch so memory stays bounded whatever the size (the export session spills to disk;
//! Parquet row groups are kept small).

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use shoplens_readmodel::freshness::FreshnessReport;

use crate::AnalyticsError;
use crate::dashboard::{BadParam, DateRange};
pub use crate::isolation::protocol::Output;

mod csv;
pub use csv::CsvEncoder;

/// Rows per Parquet row group: what the writer holds in memory at most.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// A file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Parquet,
}

impl ExportFormat {
    pub fn parse(field: &'static str, s: &str) -> Result<ExportFormat, BadParam> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "parquet" => Ok(ExportFormat::Parquet),
            other => Err(BadParam {
                field,
                message: format!(
                    "must be `csv` or `parquet`, got `{}`",
                    other.chars().take(20).collect::<String>()
                ),
            }),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Parquet => "parquet",
        }
    }

    /// The encoder output of this file format.
    pub fn output(self) -> Output {
        match self {
            ExportFormat::Csv => Output::Csv,
            ExportFormat::Parquet => Output::Parquet,
        }
    }
}

/// A named report: a query over a date range.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Report {
    pub name: &'static str,
    pub description: &'static str,
    #[serde(skip)]
    sql: fn(&DateRange) -> String,
}

impl Report {
    /// The report's SQL for `range`.
    pub fn sql(&self, range: &DateRange) -> String {
        (self.sql)(range)
    }
}

/// Raw rows of the range: `occurred_at` on a day of the range (UTC).
fn times(range: &DateRange, column: &str) -> String {
    let end = range.to.succ_opt().unwrap_or(range.to);
    format!(
        "{column} >= TIMESTAMP '{}T00:00:00Z' AND {column} < TIMESTAMP '{end}T00:00:00Z'",
        range.from
    )
}

/// Every named report.
pub const REPORTS: &[Report] = &[
    Report {
        name: "daily_sales",
        description: "Orders placed and paid, items sold and revenue per day",
        sql: |r| {
            format!(
                "SELECT day, orders_placed, orders_paid, items_sold, revenue FROM daily_sales \
                 WHERE {} ORDER BY day",
                r.sql("day")
            )
        },
    },
    Report {
        name: "top_products",
        description: "Units, revenue and order lines per product over the range, by revenue",
        sql: |r| {
            format!(
                "SELECT s.product_id, p.sku, p.name, p.category, SUM(s.units) AS units, \
                        SUM(s.revenue) AS revenue, SUM(s.order_lines) AS order_lines \
                 FROM product_sales_daily s LEFT JOIN products p ON s.product_id = p.product_id \
                 WHERE {} GROUP BY s.product_id, p.sku, p.name, p.category \
                 ORDER BY revenue DESC, s.product_id",
                r.sql("s.day")
            )
        },
    },
    Report {
        name: "top_customers",
        description: "Paid orders and revenue per customer over the range, by revenue",
        sql: |r| {
            format!(
                "SELECT s.customer_id, c.name, c.email, c.country, \
                        SUM(s.orders_paid) AS orders_paid, SUM(s.revenue) AS revenue \
                 FROM customer_spend_daily s LEFT JOIN customers c ON s.customer_id = c.customer_id \
                 WHERE {} GROUP BY s.customer_id, c.name, c.email, c.country \
                 ORDER BY revenue DESC, s.customer_id",
                r.sql("s.day")
            )
        },
    },
    Report {
        name: "monthly_sales",
        description: "Orders, items and revenue per month overlapping the range",
        sql: |r| {
            format!(
                "SELECT month, orders_placed, orders_paid, items_sold, revenue, \
                        CASE WHEN orders_paid = 0 THEN NULL \
                             ELSE CAST(revenue / orders_paid AS DECIMAL(38, 2)) END \
                          AS average_order_value \
                 FROM monthly_sales \
                 WHERE month BETWEEN date_trunc('month', DATE '{}') AND DATE '{}' ORDER BY month",
                r.from, r.to
            )
        },
    },
    Report {
        name: "yearly_sales",
        description: "Orders, items and revenue per year overlapping the range",
        sql: |r| {
            use chrono::Datelike;
            format!(
                "SELECT year, orders_placed, orders_paid, items_sold, revenue, \
                        CASE WHEN orders_paid = 0 THEN NULL \
                             ELSE CAST(revenue / orders_paid AS DECIMAL(38, 2)) END \
                          AS average_order_value \
                 FROM yearly_sales WHERE year BETWEEN {} AND {} ORDER BY year",
                r.from.year(),
                r.to.year()
            )
        },
    },
    Report {
        name: "orders_detail",
        description: "Every order placed in the range (one row per order, as placed)",
        sql: |r| {
            format!(
                "SELECT order_id, customer_id, occurred_at AS placed_at, line_count, item_count, \
                        total, currency, event_id FROM orders WHERE {}",
                times(r, "occurred_at")
            )
        },
    },
    Report {
        name: "product_sales_detail",
        description: "Every product sold in the range (one row per paid order line)",
        sql: |r| {
            format!(
                "SELECT order_id, line_no, customer_id, product_id, quantity, unit_price, \
                        revenue, currency, occurred_at AS paid_at, event_id \
                 FROM product_purchases WHERE {}",
                times(r, "occurred_at")
            )
        },
    },
];

/// The named report, or an error naming `report` and listing the known ones.
pub fn report(name: &str) -> Result<&'static Report, BadParam> {
    REPORTS
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| BadParam {
            field: "report",
            message: format!(
                "unknown report `{}`; known: {}",
                name.chars().take(40).collect::<String>(),
                REPORTS
                    .iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// A `Write` whose bytes are taken out after every batch.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes batches into one answer's bytes, chunk by chunk, in any [`Output`] format: the
/// files of exports, the HTTP SQL endpoint's answers, and the Arrow IPC stream query
/// workers send back.
pub struct Encoder {
    buffer: Buffer,
    inner: EncoderKind,
    rows: u64,
}

enum EncoderKind {
    Csv(CsvEncoder),
    Parquet(Box<ArrowWriter<Buffer>>),
    Arrow(Box<StreamWriter<Buffer>>),
    /// The rows so far as a JSON array's elements; the document's head needs the row
    /// count, so JSON is written whole by `finish`.
    Json {
        rows: Box<datafusion::arrow::json::ArrayWriter<Buffer>>,
        schema: arrow_schema::SchemaRef,
        freshness: Option<FreshnessReport>,
    },
}

impl Encoder {
    /// A file of `format` (exports).
    pub fn new(format: ExportFormat, schema: arrow_schema::SchemaRef) -> crate::Result<Encoder> {
        Encoder::for_output(format.output(), schema, None)
    }

    /// An answer in `output`; `freshness` is what a JSON answer says of the read model.
    pub fn for_output(
        output: Output,
        schema: arrow_schema::SchemaRef,
        freshness: Option<FreshnessReport>,
    ) -> crate::Result<Encoder> {
        let buffer = Buffer::default();
        let inner = match output {
            Output::Csv => EncoderKind::Csv(CsvEncoder::new()),
            Output::Parquet => {
                let props = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                EncoderKind::Parquet(Box::new(
                    ArrowWriter::try_new(buffer.clone(), schema, Some(props)).map_err(encoding)?,
                ))
            }
            Output::Arrow => EncoderKind::Arrow(Box::new(
                StreamWriter::try_new(buffer.clone(), &schema).map_err(encoding)?,
            )),
            Output::Json => EncoderKind::Json {
                rows: Box::new(datafusion::arrow::json::ArrayWriter::new(buffer.clone())),
                schema,
                freshness,
            },
        };
        Ok(Encoder {
            buffer,
            inner,
            rows: 0,
        })
    }

    /// The bytes written on creation (an Arrow stream's schema), if any.
    pub fn head(&mut self) -> Vec<u8> {
        match self.inner {
            EncoderKind::Json { .. } => Vec::new(),
            _ => self.buffer.take(),
        }
    }

    /// Encodes one batch; returns the bytes ready so far (may be empty for Parquet until a
    /// row group is full, and is always empty for JSON).
    pub fn write(&mut self, batch: &RecordBatch) -> crate::Result<Vec<u8>> {
        match &mut self.inner {
            EncoderKind::Csv(w) => {
                let mut bytes = Vec::new();
                w.write(batch, &mut bytes).map_err(encoding)?;
                self.rows += batch.num_rows() as u64;
                return Ok(bytes);
            }
            EncoderKind::Parquet(w) => w.write(batch).map_err(encoding)?,
            EncoderKind::Arrow(w) => w.write(batch).map_err(encoding)?,
            EncoderKind::Json { rows, .. } => {
                rows.write(batch).map_err(encoding)?;
                self.rows += batch.num_rows() as u64;
                return Ok(Vec::new());
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(self.buffer.take())
    }

    /// Finishes the answer; returns its last bytes (all of a JSON answer).
    pub fn finish(self) -> crate::Result<Vec<u8>> {
        match self.inner {
            EncoderKind::Csv(_) => {}
            EncoderKind::Parquet(w) => {
                w.close().map_err(encoding)?;
            }
            EncoderKind::Arrow(mut w) => w.finish().map_err(encoding)?,
            EncoderKind::Json {
                mut rows,
                schema,
                freshness,
            } => {
                rows.finish().map_err(encoding)?;
                drop(rows);
                let mut body = self.buffer.take();
                if body.is_empty() {
                    body = b"[]".to_vec();
                }
                return json_document(&schema, self.rows, freshness.as_ref(), body);
            }
        }
        Ok(self.buffer.take())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// An answer that could not be encoded (a bug, or a value the format cannot hold).
fn encoding(e: impl std::fmt::Display) -> AnalyticsError {
    AnalyticsError::Internal(format!("cannot encode the answer: {e}"))
}

/// The columns of a schema as the API lists them.
#[derive(Debug, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
}

pub fn columns(schema: &arrow_schema::Schema) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// `{"columns": [...], "row_count": N, "freshness": {...}, "rows": [{...}]}`.
fn json_document(
    schema: &arrow_schema::SchemaRef,
    row_count: u64,
    freshness: Option<&FreshnessReport>,
    rows: Vec<u8>,
) -> crate::Result<Vec<u8>> {
    let head = serde_json::json!({
        "columns": columns(schema),
        "row_count": row_count,
        "freshness": freshness,
    });
    let mut out = serde_json::to_vec(&head).map_err(encoding)?;
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"rows\":");
    out.extend(rows);
    out.push(b'}');
    Ok(out)
}

/// Batches a read-ahead task pulls from the query while the caller encodes.
const READ_AHEAD_BATCHES: usize = 2;

/// `stream` read by a task of its own, [`READ_AHEAD_BATCHES`] ahead of the caller: reading
/// and decoding the answer (ClickHouse's blocks, the store's files) then runs on one core
/// while the caller encodes on the other. Dropping the stream stops the task.
pub fn read_ahead(mut stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let mut builder = RecordBatchReceiverStream::builder(stream.schema(), READ_AHEAD_BATCHES);
    let tx = builder.tx();
    builder.spawn(async move {
        while let Some(batch) = stream.next().await {
            if tx.send(batch).await.is_err() {
                break; // the reader went away
            }
        }
        Ok(())
    });
    builder.build()
}

/// Writes the stream's rows to `out`, calling `progress` with the rows so far after every
/// batch; returns the row count.
pub async fn write_stream(
    stream: SendableRecordBatchStream,
    format: ExportFormat,
    out: &mut (dyn Write + Send),
    mut progress: impl FnMut(u64),
) -> crate::Result<u64> {
    let output =
        |e: std::io::Error| AnalyticsError::Output(format!("cannot write the export: {e}"));
    let mut encoder = Encoder::new(format, stream.schema())?;
    let mut stream = read_ahead(stream);
    while let Some(batch) = stream.next().await {
        let bytes = encoder.write(&batch?)?;
        out.write_all(&bytes).map_err(output)?;
        progress(encoder.rows());
    }
    let rows = encoder.rows();
    out.write_all(&encoder.finish()?).map_err(output)?;
    out.flush().map_err(output)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_found_by_name_and_unknown_ones_named() {
        assert_eq!(report("daily_sales").unwrap().name, "daily_sales");
        let e = report("nope").unwrap_err();
        assert_eq!(e.field, "report");
        assert!(e.message.contains("orders_detail"), "{}", e.message);
        assert_eq!(
            ExportFormat::parse("format", "xlsx").unwrap_err().field,
            "format"
        );
    }
}
