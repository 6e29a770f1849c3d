//! Writing one Parquet file to the warehouse from blocking code, streamed (multipart upload on
//! object stores, a staged file renamed into place on local disk), with the settings DESIGN.md fixes.

use std::io::Write;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio_util::io::SyncIoBridge;

use super::Location;
use crate::error::{Error, Result};

/// zstd at a low level: most of the size gain at a fraction of the time of higher levels.
const ZSTD_LEVEL: i32 = 1;

/// The settings every file is written with: row groups of `row_group_rows`, and `plain_columns`
/// without a dictionary.
///
/// A dictionary pays for columns of few distinct values (statuses, dates, categories). For
/// columns of mostly distinct values (identifiers, amounts) it is hashed value by value until it
/// fills up and is abandoned in every row group, and zstd packs the plain values smaller
/// (BENCHMARKS.md).
pub fn writer_properties(row_group_rows: usize, plain_columns: &[String]) -> WriterProperties {
    let builder = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level")));
    plain_columns
        .iter()
        .fold(builder, |b, column| b.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false))
        .build()
}

/// A file being written; nothing is visible at `key` until [`ParquetFile::finish`] succeeds.
pub struct ParquetFile {
    writer: ArrowWriter<Counting<SyncIoBridge<BufWriter>>>,
    key: Path,
    url: String,
    rows: u64,
}

/// A finished file.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub key: Path,
    pub rows: u64,
    pub bytes: u64,
}

impl ParquetFile {
    /// Must be called on a thread that may block, inside the Tokio runtime (`spawn_blocking`).
    pub fn create(location: &Location, key: Path, schema: SchemaRef, plain_columns: &[String]) -> Result<ParquetFile> {
        let url = location.url_of(&key);
        let upload = BufWriter::with_capacity(location.store.clone(), key.clone(), 8 << 20);
        let sink = Counting { inner: SyncIoBridge::new(upload), bytes: 0 };
        let writer =
            ArrowWriter::try_new(sink, schema, Some(writer_properties(location.row_group_rows, plain_columns)))
                .map_err(|e| Error::parquet(format!("starting {url}"), e))?;
        Ok(ParquetFile { writer, key, url, rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).map_err(|e| Error::parquet(format!("writing {}", self.url), e))
    }

    pub fn finish(self) -> Result<WrittenFile> {
        let url = self.url;
        let mut sink = self.writer.into_inner().map_err(|e| Error::parquet(format!("closing {url}"), e))?;
        sink.inner.shutdown().map_err(|e| Error::Internal(format!("completing the upload of {url}: {e}")))?;
        Ok(WrittenFile { key: self.key, rows: self.rows, bytes: sink.bytes })
    }
}

/// Counts the bytes that pass through, for the ledger.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write a stream of record batches as one Parquet file at `key` (async; the object appears
/// whole when the upload completes).
pub async fn write_stream(
    location: &Location,
    key: Path,
    schema: SchemaRef,
    mut batches: datafusion::physical_plan::SendableRecordBatchStream,
) -> Result<WrittenFile> {
    use datafusion::parquet::arrow::async_writer::AsyncArrowWriter;
    use futures::StreamExt;
    use object_store::ObjectStoreExt;

    let url = location.url_of(&key);
    let sink = BufWriter::with_capacity(location.store.clone(), key.clone(), 8 << 20);
    let mut writer = AsyncArrowWriter::try_new(sink, schema, Some(writer_properties(location.row_group_rows, &[])))
        .map_err(|e| Error::parquet(format!("starting {url}"), e))?;
    let mut rows = 0u64;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| crate::error::engine_error(format!("computing {url}"), e))?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await.map_err(|e| Error::parquet(format!("writing {url}"), e))?;
    }
    let bytes_before_close = writer.bytes_written() as u64;
    writer.close().await.map_err(|e| Error::parquet(format!("closing {url}"), e))?;
    let bytes = location.store.head(&key).await.map(|m| m.size).unwrap_or(bytes_before_close);
    Ok(WrittenFile { key, rows, bytes })
}
