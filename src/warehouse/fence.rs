//! The fence a run's lock puts around the warehouse: while a run holds the lock, every commit
//! and every delete it makes first checks that the lock is still its own (not taken over, and
//! renewed recently enough that no other run can have taken it over yet). A run that lost its
//! lock stops at its next commit or delete with [`Error::LockLost`], before it can hide or
//! remove another run's files.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, Result};

/// Shared by every clone of a warehouse location: armed by the lock, checked by the writes.
#[derive(Debug, Clone, Default)]
pub struct Fence(Arc<Mutex<Option<Lease>>>);

#[derive(Debug, Clone)]
struct Lease {
    /// Who holds it, for messages: `run <id> (lock generation <g>)`.
    holder: String,
    /// Until when (this process's monotonic clock) no other run can have taken the lock over.
    valid_until: Instant,
    /// Why the lock is known to be lost.
    lost: Option<String>,
}

impl Fence {
    /// Start fencing writes for `holder`, whose lease holds until `valid_until`.
    pub fn arm(&self, holder: String, valid_until: Instant) {
        *self.lease() = Some(Lease { holder, valid_until, lost: None });
    }

    /// The lease was renewed: it holds until `valid_until`.
    pub fn extend(&self, valid_until: Instant) {
        if let Some(lease) = self.lease().as_mut() {
            lease.valid_until = lease.valid_until.max(valid_until);
        }
    }

    /// The lock is known to be someone else's now.
    pub fn lose(&self, why: String) {
        if let Some(lease) = self.lease().as_mut() {
            lease.lost.get_or_insert(why);
        }
    }

    /// Stop fencing (the lock was released).
    pub fn disarm(&self) {
        *self.lease() = None;
    }

    /// `Ok` when no lock is held (nothing to fence) or the lock is still this run's.
    pub fn check(&self, operation: &str) -> Result<()> {
        let Some(lease) = self.lease().clone() else { return Ok(()) };
        let why = match lease.lost {
            Some(why) => why,
            None if Instant::now() >= lease.valid_until => {
                "it could not be renewed in time, so another run may have taken it over".to_string()
            }
            None => return Ok(()),
        };
        Err(Error::LockLost(format!("{} lost the warehouse lock ({why}): stopped before {operation}", lease.holder)))
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Option<Lease>> {
        // A panic while holding this small lock leaves valid data: take it anyway.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_unarmed_fence_lets_everything_through_and_a_lost_or_lapsed_lease_stops_it() {
        let fence = Fence::default();
        assert!(fence.check("deleting x").is_ok());
        fence.arm("run r1 (lock generation 3)".into(), Instant::now() + Duration::from_secs(60));
        assert!(fence.check("deleting x").is_ok());
        fence.lose("run r2 took it over".into());
        let error = fence.check("deleting x").unwrap_err().to_string();
        assert_eq!(
            error,
            "run r1 (lock generation 3) lost the warehouse lock (run r2 took it over): stopped before deleting x"
        );

        let lapsed = Fence::default();
        lapsed.arm("run r1".into(), Instant::now());
        assert!(lapsed.check("committing").unwrap_err().to_string().contains("could not be renewed in time"));
        lapsed.extend(Instant::now() + Duration::from_secs(60));
        assert!(lapsed.check("committing").is_ok(), "a renewal extends the lease");
        lapsed.disarm();
        assert!(lapsed.check("committing").is_ok());
    }
}
