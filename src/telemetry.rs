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

/// `level`, with the audit checkpoints' line (the off-host copy of the audit anchor) kept at
/// `info` whatever the level.
fn filter_for(level: LogLevel) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.name()));
    match format!("{}=info", crate::audit::checkpoint::LOG_TARGET).parse() {
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
