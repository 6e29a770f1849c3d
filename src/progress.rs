//! Progress of long steps: bars on a terminal, plain log lines otherwise (cron, CI, files).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Hands out progress tasks. Cheap to clone.
#[derive(Clone, Default)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Bars drawn on standard error (use when it is a terminal).
    pub fn bars() -> Self {
        Progress { bars: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())) }
    }

    /// No bars: each task logs a line when it starts and when it ends.
    pub fn lines() -> Self {
        Progress { bars: None }
    }

    /// A task measured in bytes.
    pub fn bytes(&self, label: impl Into<String>, total: u64) -> Task {
        self.task(label.into(), total, "{bytes}/{total_bytes} {bytes_per_sec}", "bytes")
    }

    /// A task measured in steps of some unit (days, files).
    pub fn steps(&self, label: impl Into<String>, total: u64, unit: &'static str) -> Task {
        self.task(label.into(), total, "{pos}/{len}", unit)
    }

    fn task(&self, label: String, total: u64, counter: &str, unit: &str) -> Task {
        let bar = self.bars.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(&format!("{{prefix:>24}} [{{bar:30}}] {counter} {{msg}}"))
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            tracing::info!("{label}: started ({total} {unit})");
        }
        Task { bar, label, started: Instant::now() }
    }

    /// A writer for log lines that does not tear the bars apart.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter { bars: self.bars.clone().map(Arc::new) }
    }
}

pub struct Task {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
}

impl Task {
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn finish(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(message.to_string()),
            None => tracing::info!("{}: {message} in {:.1}s", self.label, self.started.elapsed().as_secs_f64()),
        }
    }
}

/// `tracing` writer that suspends the bars while a line is printed.
#[derive(Clone)]
pub struct LogWriter {
    bars: Option<Arc<MultiProgress>>,
}

/// Each log line is scrubbed of credentials (`error::secrets`): a line may quote a store's or
/// an engine's error that never became a keymart error.
impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let line = crate::error::secrets::scrub(&text);
        match &self.bars {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(line.as_bytes())).map(|_| buf.len()),
            None => std::io::stderr().write_all(line.as_bytes()).map(|_| buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}
