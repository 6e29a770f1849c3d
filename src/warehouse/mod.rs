//! Object-store locations (warehouse, landing zone) and the warehouse layout of DESIGN.md.

pub mod counting;
pub mod delta;
mod fence;
mod layout;
pub mod parquet;
pub mod snapshot;
pub mod store;

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

pub use crate::config::StorageSettings;
pub use fence::Fence;
pub use layout::{Layout, Shelf, is_manifest, is_table_log, load_date_of, lock_link_number, snapshot_date};

use crate::error::{Error, Result};

/// A root in an object store: the warehouse, or the landing zone.
#[derive(Debug, Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    /// Scheme and authority only (`file:///`, `s3://bucket`): what DataFusion registers a store under.
    pub store_url: Url,
    /// Key prefix of the root inside the store (no leading or trailing slash).
    pub root: Path,
    /// The location as the user wrote it, resolved; safe to print (carries no secrets).
    pub display: String,
    /// Requests made to the store so far (shared by every location on the same store).
    pub requests: Arc<counting::RequestCounts>,
    /// Checked before every commit and delete: set while a run holds the warehouse lock.
    pub fence: Fence,
    /// Rows per row group of the Parquet files written here (`row_group_rows`).
    pub row_group_rows: usize,
}

impl Location {
    /// Open a plain path (relative to `base_dir`) or a URL (`file://`, `s3://`, `gs://`, `az://`, …).
    pub fn open(spec: &str, base_dir: &FsPath, settings: &StorageSettings) -> Result<Location> {
        let url = match Url::parse(spec) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme (or a Windows drive letter): a local path.
            _ => {
                let dir = base_dir.join(spec);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                let dir = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
                Url::from_directory_path(&dir)
                    .map_err(|_| Error::Usage(format!("`{}` is not a usable directory", dir.display())))?
            }
        };
        if url.scheme() == "file"
            && let Ok(dir) = url.to_file_path()
        {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let (store, root) = store::open(&url, settings)?;
        let (store, requests) = counting::CountingStore::wrap(store);
        let mut store_url = url.clone();
        store_url.set_path("/");
        store_url.set_query(None);
        store_url.set_fragment(None);
        let _ = store_url.set_username("");
        let _ = store_url.set_password(None);
        Ok(Location {
            store,
            store_url,
            root,
            display: store::without_secrets(&url),
            requests,
            fence: Fence::default(),
            row_group_rows: crate::config::DEFAULT_ROW_GROUP_ROWS as usize,
        })
    }

    /// A location below this one.
    pub fn child(&self, relative: &str) -> Location {
        Location {
            store: self.store.clone(),
            store_url: self.store_url.clone(),
            root: self.key(relative),
            display: format!("{}/{}", self.display, relative.trim_matches('/')),
            requests: self.requests.clone(),
            fence: self.fence.clone(),
            row_group_rows: self.row_group_rows,
        }
    }

    /// The store key of a path relative to this root.
    pub fn key(&self, relative: &str) -> Path {
        relative.split('/').filter(|part| !part.is_empty()).fold(self.root.clone(), |key, part| key.clone().join(part))
    }

    /// The key relative to this root, for messages and ledgers.
    pub fn relative(&self, key: &Path) -> String {
        match key.prefix_match(&self.root) {
            Some(parts) => parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
            None => key.to_string(),
        }
    }

    /// A full URL for a key, as readers outside keymart would write it.
    pub fn url_of(&self, key: &Path) -> String {
        format!("{}{}", self.store_url, key)
    }

    /// The objects under a relative prefix whose keys sort after `after` (relative too), sorted:
    /// on S3 one LIST that starts there.
    pub async fn list_after(&self, relative_prefix: &str, after: &str) -> Result<Vec<ObjectMeta>> {
        let (prefix, offset) = (self.key(relative_prefix), self.key(after));
        let mut objects: Vec<ObjectMeta> = self
            .store
            .list_with_offset(Some(&prefix), &offset)
            .try_collect()
            .await
            .map_err(|e| Error::storage(format!("listing {}/{relative_prefix}", self.display), e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// Every object under a relative prefix, sorted by key.
    pub async fn list(&self, relative_prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.key(relative_prefix);
        let mut objects: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::storage(format!("listing {}/{relative_prefix}", self.display), e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// Write an object that commits something (a manifest): fenced by the run's lock.
    pub async fn put_bytes(&self, key: &Path, bytes: Vec<u8>) -> Result<()> {
        self.fence.check(&format!("writing {}", self.url_of(key)))?;
        self.put_own(key, bytes).await
    }

    /// Write an object no other run writes (the run's own ledger): not fenced, so that a run
    /// that lost its lock still records why it stopped.
    pub async fn put_own(&self, key: &Path, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(key, bytes.into())
            .await
            .map_err(|e| Error::storage(format!("writing {}", self.url_of(key)), e))?;
        Ok(())
    }

    pub async fn get_bytes(&self, key: &Path) -> Result<bytes::Bytes> {
        let result =
            self.store.get(key).await.map_err(|e| Error::storage(format!("reading {}", self.url_of(key)), e))?;
        result.bytes().await.map_err(|e| Error::storage(format!("reading {}", self.url_of(key)), e))
    }

    /// Move an object into place; the destination appears whole or not at all.
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.fence.check(&format!("moving {} into place", self.url_of(to)))?;
        self.store
            .rename(from, to)
            .await
            .map_err(|e| Error::storage(format!("moving {} to {}", self.url_of(from), self.url_of(to)), e))
    }

    /// The file behind a key, when this location is on local disk.
    fn local_path(&self, key: &Path) -> Option<std::path::PathBuf> {
        if self.store_url.scheme() != "file" {
            return None;
        }
        Url::parse(&self.url_of(key)).ok()?.to_file_path().ok()
    }

    /// Open an object for reading from blocking code: a local file directly, else a streamed GET.
    /// Must run inside the Tokio runtime (on a `spawn_blocking` thread).
    pub fn open_read_blocking(&self, key: &Path) -> Result<Box<dyn std::io::Read + Send>> {
        let url = self.url_of(key);
        if let Some(path) = self.local_path(key) {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            return Ok(Box::new(file));
        }
        let result = tokio::runtime::Handle::current()
            .block_on(self.store.get(key))
            .map_err(|e| Error::storage(format!("reading {url}"), e))?;
        let stream = result.into_stream().map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream))))
    }

    /// Delete one object; a missing object is fine.
    pub async fn delete(&self, key: &Path) -> Result<()> {
        self.fence.check(&format!("deleting {}", self.url_of(key)))?;
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(format!("deleting {}", self.url_of(key)), e)),
        }
    }

    /// Delete every object under a relative prefix (missing objects are fine).
    pub async fn delete_prefix(&self, relative_prefix: &str) -> Result<()> {
        for object in self.list(relative_prefix).await? {
            self.delete(&object.location).await?;
        }
        // On disk, folders emptied by renames (not deletes) stay behind; object stores have none.
        if let Some(dir) = self.local_path(&self.key(relative_prefix)) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        Ok(())
    }
}

/// The warehouse: its location and the layout of keys inside it.
#[derive(Debug, Clone)]
pub struct Warehouse {
    pub location: Location,
}

impl Warehouse {
    pub fn open(spec: &str, base_dir: &FsPath, settings: &StorageSettings) -> Result<Warehouse> {
        Ok(Warehouse { location: Location::open(spec, base_dir, settings)? })
    }

    pub fn layout(&self) -> Layout<'_> {
        Layout { location: &self.location }
    }

    /// The landing zone: the one configured, else `<warehouse>/landing`.
    pub fn landing(&self, spec: Option<&str>, base_dir: &FsPath, settings: &StorageSettings) -> Result<Location> {
        match spec {
            Some(spec) => Location::open(spec, base_dir, settings),
            None => Ok(self.location.child("landing")),
        }
    }
}
