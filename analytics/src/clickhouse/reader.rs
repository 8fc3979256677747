//! The streaming reader of one answer: `FORMAT Native` blocks decoded into Arrow arrays as
//! the body arrives (`native`), cut into batches of the session's size, and an error
//! ClickHouse writes after the blocks it began with reported as such.

use std::collections::VecDeque;

use arrow_array::RecordBatch;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result as DfResult};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::client::{Inner, corrupt, http_error, read_some, unavailable};
use super::native::{Blocks, NativeError};
use super::scan::ScanQuery;
use crate::read_model::ReadModelError;

/// An answer being read: the body as it arrives and the blocks decoded from it.
pub(super) struct Reader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    blocks: Blocks,
    ended: bool,
    batch_size: usize,
    /// Batches of a decoded block not handed out yet.
    ready: VecDeque<RecordBatch>,
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
        let response = model
            .send(query.sql.clone(), false)
            .await
            .map_err(|e| external(e.into()))?;
        Ok(Reader {
            body: response.bytes_stream().boxed(),
            blocks: Blocks::new(query.wire.clone()),
            ended: false,
            batch_size: batch_size.max(1),
            ready: VecDeque::new(),
        })
    }

    /// The next batch of at most the batch size rows; `None` at the end of the answer.
    pub(super) async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            match self.blocks.next_block(self.ended) {
                Ok(Some(block)) => {
                    let rows = block.num_rows();
                    let mut at = 0;
                    while at < rows {
                        let n = self.batch_size.min(rows - at);
                        self.ready.push_back(block.slice(at, n));
                        at += n;
                    }
                }
                Ok(None) if self.ended => return Ok(None),
                Ok(None) => match self.body.next().await {
                    Some(Ok(chunk)) => self.blocks.push(&chunk),
                    Some(Err(e)) => {
                        return Err(external(unavailable(format!(
                            "reading ClickHouse's answer: {}",
                            http_error(e)
                        ))));
                    }
                    None => self.ended = true,
                },
                Err(e) => return Err(external(self.failed(e).await)),
            }
        }
    }

    /// Why the answer could not be decoded: ClickHouse reports an error that happens after
    /// it began answering (memory, timeout) as text after the blocks.
    async fn failed(&mut self, e: NativeError) -> ReadModelError {
        let body = std::mem::replace(&mut self.body, futures::stream::empty().boxed());
        let mut text = self.blocks.rest_as_text();
        text.push_str(&read_some(body, 4096).await);
        self.ended = true;
        match text.find("Code: ").or_else(|| text.find("Exception")) {
            Some(at) => unavailable(format!(
                "ClickHouse failed while answering: {}",
                text[at..].trim()
            )),
            None => corrupt(format!("cannot read ClickHouse's answer: {e:?}")),
        }
    }
}
