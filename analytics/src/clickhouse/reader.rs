//! The streaming reader of one answer: `JSONEachRow` decoded with Arrow's JSON decoder while
//! the body arrives, batch by batch, and an error ClickHouse writes after the rows it began
//! with reported as such.

use bytes::{Buf, Bytes};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::error::{DataFusionError, Result as DfResult};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::client::{Inner, corrupt, http_error, read_some, unavailable};
use super::scan::ScanQuery;
use crate::read_model::ReadModelError;
use arrow_array::RecordBatch;

/// An answer being read: the body as it arrives and the JSON decoder over it.
pub(super) struct Reader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Bytes,
    decoder: Decoder,
    ended: bool,
}

fn external(e: ReadModelError) -> DataFusionError {
    e.into()
}

impl Reader {
    pub(super) async fn open(
        model: &Inner,
        query: &ScanQuery,
        batch_size: usize,
    ) -> DfResult<Reader> {
        let decoder = ReaderBuilder::new(query.wire.clone())
            .with_batch_size(batch_size)
            // A field we did not ask for (a current server's `{"exception": ..}` row) is an
            // error, never a row of NULLs.
            .with_strict_mode(true)
            .build_decoder()?;
        let response = model
            .send(query.sql.clone(), false)
            .await
            .map_err(|e| external(e.into()))?;
        Ok(Reader {
            body: response.bytes_stream().boxed(),
            buf: Bytes::new(),
            decoder,
            ended: false,
        })
    }

    /// The next batch of at most the batch size rows; `None` at the end of the answer.
    pub(super) async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        loop {
            if self.buf.is_empty() {
                if self.ended {
                    return Ok(self.decoder.flush()?);
                }
                match self.body.next().await {
                    Some(Ok(chunk)) => self.buf = chunk,
                    Some(Err(e)) => {
                        return Err(external(unavailable(format!(
                            "reading ClickHouse's answer: {}",
                            http_error(e)
                        ))));
                    }
                    None => {
                        self.ended = true;
                        if self.decoder.has_partial_record() {
                            return Err(external(corrupt(
                                "ClickHouse's answer ended in the middle of a row",
                            )));
                        }
                    }
                }
                continue;
            }
            let read = match self.decoder.decode(&self.buf) {
                Ok(read) => read,
                Err(e) => return Err(external(self.failed(e).await)),
            };
            self.buf.advance(read);
            if !self.buf.is_empty() {
                // A batch is full.
                return Ok(self.decoder.flush()?);
            }
        }
    }

    /// Why the answer could not be decoded: ClickHouse reports an error that happens after
    /// it began answering (memory, timeout) as text after the rows.
    async fn failed(&mut self, e: datafusion::arrow::error::ArrowError) -> ReadModelError {
        let body = std::mem::replace(&mut self.body, futures::stream::empty().boxed());
        let mut text = String::from_utf8_lossy(&self.buf[..self.buf.len().min(4096)]).into_owned();
        text.push_str(&read_some(body, 4096).await);
        self.buf = Bytes::new();
        self.ended = true;
        match text.find("Code: ").or_else(|| text.find("Exception")) {
            Some(at) => unavailable(format!(
                "ClickHouse failed while answering: {}",
                text[at..].trim()
            )),
            None => corrupt(format!("cannot read ClickHouse's answer: {e}")),
        }
    }
}
