//! A test hook for crash tests: `KEYMART_PAUSE_AT=<point>:<marker file>` makes the process write
//! the marker file when it reaches `<point>`, then wait until the file is removed (or a minute has
//! passed), so that a test can act exactly there: kill the process between writing a snapshot's
//! files and committing it, or cut its storage off. Unset in production.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The pause happens once per process: at the first time the point is reached.
static PAUSED: AtomicBool = AtomicBool::new(false);

pub fn pause(point: &str) {
    let Ok(setting) = std::env::var("KEYMART_PAUSE_AT") else { return };
    let Some((wanted, marker)) = setting.split_once(':') else { return };
    if wanted != point || PAUSED.swap(true, Ordering::SeqCst) || std::fs::write(marker, point).is_err() {
        return;
    }
    let started = Instant::now();
    while std::path::Path::new(marker).exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
}
