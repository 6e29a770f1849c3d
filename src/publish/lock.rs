//! The run lock: one run at a time writes a warehouse.
//!
//! The lock is a chain of small objects under `_lock/`, numbered in sequence; the newest says
//! who holds it. Each change is a conditional create of the next number (`PutMode::Create`,
//! which every store keymart supports, local disk included), so it is a compare-and-swap: the
//! holder renews by creating the next link, a contender takes over by creating it, and of two
//! that try the same number exactly one wins. The loser of a renewal knows at once that the
//! lock is gone.
//!
//! Expiry does not trust another host's clock: a contender takes over only a lock whose chain
//! has not moved for a whole time-to-live, as it observed on its own monotonic clock; the
//! holder's wall-clock timestamp only decides whether that watch is worth starting. The holder
//! fences its own writes (`warehouse::Fence`): after a renewal it may write for two thirds of the
//! time-to-live, so a holder that stopped renewing (paused, cut off) stops writing before any
//! contender can have taken over.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::warehouse::{Layout, Location, lock_link_number};

/// How often acquiring looks again after the chain changed under it, before giving up.
const ATTEMPTS: usize = 4;

/// One link of the chain: who holds the lock from this link on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub run_id: String,
    pub command: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    /// When the holder wrote this link, by its own clock: a hint, never trusted for expiry.
    pub renewed_at: DateTime<Utc>,
    pub ttl_seconds: u64,
    /// The lock was released here (by its run, or by `keymart unlock`).
    #[serde(default)]
    pub released: bool,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} ({}) on host {} pid {}, started {}, last renewed {} (time to live {} s)",
            self.run_id,
            self.command,
            self.host,
            self.pid,
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.renewed_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.ttl_seconds
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
    /// Take the lock for `run_id`, or fail with [`Error::Locked`] naming the holder. A lock whose
    /// holder looks dead is watched for a whole time-to-live before it is taken over.
    pub async fn acquire(location: &Location, run_id: &str, command: &str, ttl: Duration) -> Result<RunLock> {
        let now = wall_now();
        let mut info = LockInfo {
            run_id: run_id.to_string(),
            command: command.to_string(),
            host: hostname(),
            pid: std::process::id(),
            started_at: now,
            renewed_at: now,
            ttl_seconds: ttl.as_secs(),
            released: false,
        };
        for _ in 0..ATTEMPTS {
            let next = match newest_link(location).await? {
                None => 1,
                Some((number, holder)) if holder.released => number + 1,
                Some((number, holder)) => {
                    let expires = i64::try_from(holder.ttl_seconds)
                        .ok()
                        .and_then(chrono::Duration::try_seconds)
                        .and_then(|ttl| holder.renewed_at.checked_add_signed(ttl));
                    let expired_by_its_clock = expires.is_some_and(|at| at < wall_now());
                    if !expired_by_its_clock {
                        return Err(locked(location, &holder));
                    }
                    match unmoved_for(location, number, &holder, ttl).await? {
                        // Renewed while watched: alive, whatever its clock says.
                        Some(Some((_, moved))) if !moved.released => return Err(locked(location, &moved)),
                        Some(_) => continue,
                        None => {}
                    }
                    tracing::warn!("taking over the lock of {holder}: it has not moved for its whole time to live");
                    number + 1
                }
            };
            info.renewed_at = wall_now();
            let started = Instant::now();
            if create_link(location, next, &info).await? {
                location.fence.arm(format!("run {run_id}"), started + lease(ttl));
                let renewal = tokio::spawn(renew(location.clone(), info.clone(), next, ttl));
                return Ok(RunLock { location: location.clone(), info, renewal });
            }
        }
        Err(Error::Locked(format!("the warehouse {} lock is contended; try again", location.display)))
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Stop renewing and release the lock if it is still ours (a lock taken over is left as is).
    pub async fn release(self) -> Result<()> {
        self.renewal.abort();
        let _ = self.renewal.await;
        self.location.fence.disarm();
        if let Some((number, holder)) = newest_link(&self.location).await?
            && holder.run_id == self.info.run_id
            && !holder.released
        {
            let released = LockInfo { released: true, renewed_at: wall_now(), ..self.info.clone() };
            create_link(&self.location, number + 1, &released).await?;
        }
        Ok(())
    }
}

/// Renew every third of the time to live by creating the next link; stop, and fence the run's
/// writes, once another run created it first.
async fn renew(location: Location, mut info: LockInfo, mut number: u64, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        info.renewed_at = wall_now();
        let started = Instant::now();
        match create_link(&location, number + 1, &info).await {
            Ok(true) => {
                number += 1;
                location.fence.extend(started + lease(ttl));
                // Older links are history: the newest is all anyone reads.
                if number > 2 {
                    let _ = location.store.delete(&Layout { location: &location }.lock_link(number - 2)).await;
                }
            }
            Ok(false) => {
                let taker = match read_link(&location, number + 1).await {
                    Ok(Some(next)) if next.released => "it was released by `keymart unlock`".to_string(),
                    Ok(Some(next)) => format!("{} took it over", next.run_id),
                    _ => "another run took it over".to_string(),
                };
                tracing::error!("run {} lost the warehouse lock: {taker}", info.run_id);
                location.fence.lose(taker);
                return;
            }
            Err(e) => tracing::warn!("cannot renew the warehouse lock (will try again): {e}"),
        }
    }
}

/// How long after a link's creation began its holder may still write: two thirds of the time to
/// live, so that a holder that stopped renewing stops writing a third of it before a contender,
/// who watches for the whole of it, can take over.
fn lease(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

/// Watch the chain for a whole time to live (the longer of ours and the holder's): `None` when
/// it did not move, so its holder is dead; else the newest link it moved to.
async fn unmoved_for(
    location: &Location,
    number: u64,
    holder: &LockInfo,
    ttl: Duration,
) -> Result<Option<Option<(u64, LockInfo)>>> {
    // The holder's own time to live, from a file: capped as keymart.yaml's is.
    let watch = ttl.max(Duration::from_secs(holder.ttl_seconds.min(*crate::config::LOCK_TTL_SECONDS.end())));
    tracing::info!("the lock of {holder} looks expired; watching it for {} s before taking it over", watch.as_secs());
    let started = Instant::now();
    while started.elapsed() < watch {
        tokio::time::sleep((watch / 8).max(Duration::from_millis(50))).await;
        let newest = newest_link(location).await?;
        if newest.as_ref().map(|(n, _)| *n) != Some(number) {
            return Ok(Some(newest));
        }
    }
    Ok(None)
}

/// Create link `number`: `Ok(false)` when it exists already (someone else moved the chain).
async fn create_link(location: &Location, number: u64, info: &LockInfo) -> Result<bool> {
    let key = Layout { location }.lock_link(number);
    let body = serde_json::to_vec_pretty(info).expect("lock serializes");
    let create = PutOptions { mode: PutMode::Create, ..Default::default() };
    match location.store.put_opts(&key, body.into(), create).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(Error::storage(format!("writing the lock {}", location.url_of(&key)), e)),
    }
}

/// The newest link of the chain and its number, if the warehouse was ever locked.
async fn newest_link(location: &Location) -> Result<Option<(u64, LockInfo)>> {
    let layout = Layout { location };
    let links = location.list(layout.lock_dir()).await?;
    let Some(number) = links.iter().filter_map(|o| lock_link_number(&o.location)).max() else {
        return Ok(None);
    };
    match read_link(location, number).await? {
        Some(info) => Ok(Some((number, info))),
        // Pruned by its holder between the listing and the read: a newer one exists.
        None => Box::pin(newest_link(location)).await,
    }
}

async fn read_link(location: &Location, number: u64) -> Result<Option<LockInfo>> {
    let key = Layout { location }.lock_link(number);
    match location.store.get(&key).await {
        Ok(result) => {
            let bytes =
                result.bytes().await.map_err(|e| Error::storage(format!("reading {}", location.url_of(&key)), e))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Internal(format!("{} is not a keymart lock: {e}", location.url_of(&key))))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::storage(format!("reading {}", location.url_of(&key)), e)),
    }
}

fn locked(location: &Location, holder: &LockInfo) -> Error {
    Error::Locked(format!("the warehouse {} is locked by {holder}", location.display))
}

/// The current holder, if the lock is held.
pub async fn read(location: &Location) -> Result<Option<LockInfo>> {
    Ok(newest_link(location).await?.map(|(_, info)| info).filter(|info| !info.released))
}

/// Release the lock whoever holds it (an operator's decision after a crash); returns who held
/// it. A run still holding it finds out at its next renewal and stops before its next write.
pub async fn force_unlock(location: &Location) -> Result<Option<LockInfo>> {
    for _ in 0..ATTEMPTS {
        let Some((number, holder)) = newest_link(location).await? else { return Ok(None) };
        if holder.released {
            return Ok(None);
        }
        let operator = LockInfo {
            run_id: "keymart unlock".into(),
            command: "unlock".into(),
            host: hostname(),
            pid: std::process::id(),
            started_at: wall_now(),
            renewed_at: wall_now(),
            ttl_seconds: 0,
            released: true,
        };
        if create_link(location, number + 1, &operator).await? {
            return Ok(Some(holder));
        }
    }
    Err(Error::Locked(format!("the warehouse {} lock is contended; try again", location.display)))
}

/// This host's wall clock, shifted by `KEYMART_CLOCK_SKEW_SECONDS` (a test's stand-in for a host
/// whose clock is wrong; unset in production).
fn wall_now() -> DateTime<Utc> {
    let skew = std::env::var("KEYMART_CLOCK_SKEW_SECONDS").ok().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
    Utc::now() + chrono::Duration::seconds(skew.into())
}

/// The host a run is on, as the lock and the ledger name it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}
