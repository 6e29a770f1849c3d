//! The run lock: `_lock` in the warehouse, created with a conditional put so that exactly one of
//! two concurrent runs gets it. The holder renews its expiry while it runs; a lock past its expiry
//! (its run died) is taken over, and the takeover is logged.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::warehouse::Location;

pub const LOCK_KEY: &str = "_lock";

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub run_id: String,
    pub command: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} ({}) on host {} pid {}, started {}, lock expires {}",
            self.run_id,
            self.command,
            self.host,
            self.pid,
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// A held lock; renewed in the background until released.
pub struct RunLock {
    location: Location,
    info: LockInfo,
    renewal: JoinHandle<()>,
}

impl RunLock {
    /// Take the lock for `run_id`, or fail with [`Error::Locked`] naming the holder.
    pub async fn acquire(location: &Location, run_id: &str, command: &str, ttl: Duration) -> Result<RunLock> {
        let key = location.key(LOCK_KEY);
        let now = Utc::now();
        let info = LockInfo {
            run_id: run_id.to_string(),
            command: command.to_string(),
            host: hostname(),
            pid: std::process::id(),
            started_at: now,
            expires_at: now + chrono::Duration::from_std(ttl).expect("small ttl"),
        };
        for attempt in 0..2 {
            let body = serde_json::to_vec_pretty(&info).expect("lock serializes");
            let create = PutOptions { mode: PutMode::Create, ..Default::default() };
            match location.store.put_opts(&key, body.into(), create).await {
                Ok(_) => {
                    let renewal = spawn_renewal(location.clone(), info.clone(), ttl);
                    return Ok(RunLock { location: location.clone(), info, renewal });
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let holder = read(location).await?;
                    match holder {
                        Some(holder) if holder.expires_at > Utc::now() || attempt > 0 => {
                            return Err(Error::Locked(format!(
                                "the warehouse {} is locked by {holder}",
                                location.display
                            )));
                        }
                        Some(holder) => {
                            tracing::warn!("taking over the expired lock of {holder}");
                            location.delete(&key).await?;
                        }
                        // Released between our put and our read: try again.
                        None => {}
                    }
                }
                Err(e) => return Err(Error::storage(format!("creating the lock {}", location.url_of(&key)), e)),
            }
        }
        Err(Error::Locked(format!("the warehouse {} lock is contended; try again", location.display)))
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Stop renewing and remove the lock if it is still ours.
    pub async fn release(self) -> Result<()> {
        self.renewal.abort();
        if read(&self.location).await?.is_some_and(|holder| holder.run_id == self.info.run_id) {
            self.location.delete(&self.location.key(LOCK_KEY)).await?;
        }
        Ok(())
    }
}

/// Push the expiry forward every third of the time to live, while the lock is still ours.
fn spawn_renewal(location: Location, info: LockInfo, ttl: Duration) -> JoinHandle<()> {
    let location = Arc::new(location);
    tokio::spawn(async move {
        let mut info = info;
        loop {
            tokio::time::sleep(ttl / 3).await;
            match read(&location).await {
                Ok(Some(holder)) if holder.run_id == info.run_id => {}
                Ok(_) => {
                    tracing::error!("lost the warehouse lock of run {}: another run took it over", info.run_id);
                    return;
                }
                Err(e) => {
                    tracing::warn!("cannot read the warehouse lock to renew it: {e}");
                    continue;
                }
            }
            info.expires_at = Utc::now() + chrono::Duration::from_std(ttl).expect("small ttl");
            let body = serde_json::to_vec_pretty(&info).expect("lock serializes");
            if let Err(e) = location.store.put(&location.key(LOCK_KEY), body.into()).await {
                tracing::warn!("cannot renew the warehouse lock: {e}");
            }
        }
    })
}

/// The current holder, if any.
pub async fn read(location: &Location) -> Result<Option<LockInfo>> {
    let key = location.key(LOCK_KEY);
    match location.store.get(&key).await {
        Ok(result) => {
            let bytes =
                result.bytes().await.map_err(|e| Error::storage(format!("reading {}", location.url_of(&key)), e))?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::storage(format!("reading {}", location.url_of(&key)), e)),
    }
}

/// Remove the lock whoever holds it (an operator's decision); returns who held it.
pub async fn force_unlock(location: &Location) -> Result<Option<LockInfo>> {
    let holder = read(location).await?;
    location.delete(&location.key(LOCK_KEY)).await?;
    Ok(holder)
}

/// The host a run is on, as the lock and the ledger name it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}
