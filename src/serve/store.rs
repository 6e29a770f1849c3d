//! The warehouse store as the server reads it: the answer to a HEAD of a mart's data file is
//! kept. DataFusion HEADs every file of a table at every scan, and a `_history` table names every
//! file of every snapshot; a mart's data files are never rewritten (each run writes new names),
//! so their size and time cannot go stale. A file removed once no table version names it is not
//! asked for again: the catalog stops serving a snapshot before its files can expire.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Kept answers at most; past it the cache starts over (each entry is a key and its metadata).
const MAX_KEPT: usize = 200_000;

#[derive(Debug)]
pub struct KeptHeads {
    inner: Arc<dyn ObjectStore>,
    /// Keys under this prefix ending in `.parquet` are immutable.
    marts: Path,
    kept: Mutex<HashMap<Path, ObjectMeta>>,
}

impl KeptHeads {
    pub fn wrap(inner: Arc<dyn ObjectStore>, marts: Path) -> Arc<dyn ObjectStore> {
        Arc::new(KeptHeads { inner, marts, kept: Mutex::default() })
    }

    fn immutable(&self, location: &Path) -> bool {
        location.prefix_matches(&self.marts) && location.as_ref().ends_with(".parquet")
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<Path, ObjectMeta>> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Display for KeptHeads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// A HEAD's answer: the metadata, no body.
fn head_result(meta: ObjectMeta) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(Box::pin(futures::stream::empty())),
        range: 0..meta.size,
        meta,
        attributes: Default::default(),
    }
}

#[async_trait]
impl ObjectStore for KeptHeads {
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // Only a plain HEAD: one with preconditions asks about the object now.
        let plain_head = options.head
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if !plain_head || !self.immutable(location) {
            return self.inner.get_opts(location, options).await;
        }
        if let Some(meta) = self.kept().get(location).cloned() {
            return Ok(head_result(meta));
        }
        let answer = self.inner.get_opts(location, options).await?;
        let mut kept = self.kept();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(location.clone(), answer.meta.clone());
        Ok(answer)
    }

    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use crate::warehouse::counting::CountingStore;

    #[tokio::test]
    async fn a_mart_files_head_is_asked_once_and_nothing_else_is_kept() {
        let (counted, requests) = CountingStore::wrap(Arc::new(InMemory::new()));
        for key in ["wh/marts/m/as_of=2024-06-01/part-0.parquet", "wh/marts/m/_delta_log/00000000000000000000.json"] {
            counted.put(&Path::from(key), PutPayload::from_static(b"1234")).await.unwrap();
        }
        let store = KeptHeads::wrap(counted, Path::from("wh/marts"));
        let data = Path::from("wh/marts/m/as_of=2024-06-01/part-0.parquet");
        let log = Path::from("wh/marts/m/_delta_log/00000000000000000000.json");
        for _ in 0..3 {
            assert_eq!(store.head(&data).await.unwrap().size, 4);
            assert_eq!(store.head(&log).await.unwrap().size, 4);
        }
        // One HEAD of the data file, three of the log's commit; reads always reach the store.
        assert_eq!(requests.snapshot().get("head"), Some(&4));
        assert_eq!(store.get(&data).await.unwrap().bytes().await.unwrap().as_ref(), b"1234");
        assert_eq!(requests.snapshot().get("get"), Some(&1));
        // A missing file is not remembered as missing.
        let missing = Path::from("wh/marts/m/as_of=2024-06-02/part-0.parquet");
        assert!(store.head(&missing).await.is_err());
        assert!(store.head(&missing).await.is_err());
        assert_eq!(requests.snapshot().get("head"), Some(&6));
    }
}
