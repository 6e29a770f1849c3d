//! A test hook for crash tests: `KEYMART_PAUSE_AT=<point>:<marker file>` makes the process write
//! the marker file when it reaches `<point>` and then wait, so that a test can kill it exactly
//! there (for example between writing a snapshot's files and committing it). Unset in production.

pub fn pause(point: &str) {
    let Ok(setting) = std::env::var("KEYMART_PAUSE_AT") else { return };
    let Some((wanted, marker)) = setting.split_once(':') else { return };
    if wanted == point {
        let _ = std::fs::write(marker, point);
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
