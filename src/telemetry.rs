//! Logging setup: `tracing` to stderr as text or JSON lines, with a level that a reload can change.
//!
//! `RUST_LOG`, when set, wins over `[log] level` (at start and on reload). The format is chosen
//! once, at start: a subscriber cannot change its output format safely while events flow.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat, LogLevel};

type FilterHandle = reload::Handle<EnvFilter, Registry>;

static FILTER: OnceLock<FilterHandle> = OnceLock::new();

/// The target of log lines kept at `info` whatever `[log] level` says: the audit checkpoints'
/// lines, the off-host copy of the audit anchor (`audit::checkpoint::log_line`).
pub const ANCHOR_TARGET: &str = "sesame::audit::anchor";

/// `level`, with [`ANCHOR_TARGET`] kept at `info`.
fn filter_for(level: LogLevel) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.name()));
    match format!("{ANCHOR_TARGET}=info").parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// Text logs at `info` (or `RUST_LOG`): for the commands that read no `[log]` section.
pub fn init() {
    init_with(&LogConfig {
        format: LogFormat::Text,
        level: LogLevel::Info,
    });
}

/// Installs the global subscriber once, as `[log]` says; later calls are ignored.
pub fn init_with(log: &LogConfig) {
    let (filter, handle) = reload::Layer::new(filter_for(log.level));
    let output = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Applies a new `[log] level` (a reload); the format stays what it was at start.
pub fn set_level(level: LogLevel) {
    if let Some(handle) = FILTER.get() {
        if let Err(e) = handle.reload(filter_for(level)) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}

/// A tracing writer that keeps what it is given in memory: what a subscriber wrote, read back
/// (tests capture the lines an operator's journal would hold). Clones share the buffer.
#[derive(Clone, Default)]
pub struct MemoryLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl MemoryLog {
    /// Everything written so far (lossy UTF-8).
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for MemoryLog {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_anchor_line_passes_any_level() {
        let buf = MemoryLog::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(filter_for(LogLevel::Error))
            .with(tracing_subscriber::fmt::layer().with_writer(move || w.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("filtered out at error");
            tracing::info!(target: ANCHOR_TARGET, "SESAME_AUDIT_CHECKPOINT {{}}");
        });
        let text = buf.text();
        assert!(text.contains("SESAME_AUDIT_CHECKPOINT"), "{text}");
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(!text.contains("filtered out"), "{text}");
        }
    }
}
