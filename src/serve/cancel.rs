//! Cancel requests. A client asks to cancel on a connection of its own, naming the session by the
//! process id and secret key the server gave it at startup; the statement the session is running
//! then stops with 57014 whether it waits for a slot, plans, computes or streams rows (pgwire's
//! own cancel reaches only until the first row, so keymart keeps the sessions' keys itself).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// The sessions that can be cancelled, by (process id, secret key).
#[derive(Default)]
pub(crate) struct Cancels {
    sessions: Mutex<HashMap<(i32, Bytes), Arc<Requests>>>,
}

/// A session's cancel requests: how many came, and a wake-up for the statement running.
#[derive(Default)]
pub(crate) struct Requests {
    count: AtomicU64,
    arrived: Notify,
}

/// A session's place in [`Cancels`], given up when the session ends.
pub(crate) struct Registered {
    cancels: Arc<Cancels>,
    key: (i32, Bytes),
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.key);
    }
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, Bytes), Arc<Requests>>> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(self: &Arc<Self>, pid: i32, secret: Bytes) -> (Arc<Requests>, Registered) {
        let requests = Arc::new(Requests::default());
        self.lock().insert((pid, secret.clone()), requests.clone());
        (requests, Registered { cancels: self.clone(), key: (pid, secret) })
    }

    /// A cancel request: the named session's running statement stops (a wrong key does nothing).
    pub fn cancel(&self, pid: i32, secret: Bytes) {
        let requests = self.lock().get(&(pid, secret)).cloned();
        if let Some(requests) = requests {
            requests.count.fetch_add(1, Ordering::SeqCst);
            requests.arrived.notify_waiters();
        }
    }
}

/// What a statement watches: its session's requests, and how many there were when it started
/// (a request between statements cancels nothing, as in PostgreSQL).
pub(crate) struct Watch {
    requests: Arc<Requests>,
    before: u64,
}

impl Watch {
    pub fn start(requests: Arc<Requests>) -> Watch {
        let before = requests.count.load(Ordering::SeqCst);
        Watch { requests, before }
    }

    /// Resolves once a cancel request has come since the statement started.
    pub async fn cancelled(&self) {
        loop {
            // Registered before the count is read, so a request in between is not missed.
            let arrived = self.requests.arrived.notified();
            if self.requests.count.load(Ordering::SeqCst) != self.before {
                return;
            }
            arrived.await;
        }
    }
}
