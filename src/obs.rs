//! tortie's own log: `tracing` events written by `tracing-subscriber` to
//! stderr, with timestamps and levels, as text or JSON lines. The level
//! comes from `RUST_LOG` (any `tracing` filter, e.g. `tortie=debug`), else
//! from FelixConfiguration `logSeverityScreen` / `FELIX_LOGSEVERITYSCREEN`
//! (Felix's names: Debug, Info, Warning, Error, Fatal), else `info`.
//! (Logged *packets* are a different stream: `crate::logging`.)

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown log format `{s}`: use text or json")),
        }
    }
}

/// The `tracing` level for a Felix `logSeverityScreen` value.
pub fn felix_severity(s: &str) -> Option<&'static str> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => return None,
    })
}

/// The filter in force: `RUST_LOG` when set (and valid), else `severity`
/// (a Felix severity name), else `info`.
pub fn filter(rust_log: Option<&str>, severity: Option<&str>) -> EnvFilter {
    if let Some(f) = rust_log.and_then(|r| EnvFilter::try_new(r).ok()) {
        return f;
    }
    let level = severity.and_then(felix_severity).unwrap_or("info");
    EnvFilter::new(level)
}

/// Changes the level later, when FelixConfiguration `logSeverityScreen`
/// arrives (`RUST_LOG`, when set, always wins).
#[derive(Clone)]
pub struct Level {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    pinned: bool,
}

impl std::fmt::Debug for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Level")
            .field("pinned", &self.pinned)
            .finish()
    }
}

impl Level {
    /// Applies a Felix severity name; unknown names are ignored.
    pub fn set_felix_severity(&self, severity: &str) {
        if self.pinned {
            return;
        }
        if let (Some(h), Some(level)) = (&self.handle, felix_severity(severity)) {
            let _ = h.reload(EnvFilter::new(level));
        }
    }
}

/// Installs the global subscriber (once; a second call changes nothing and
/// returns a handle that does nothing).
pub fn init(format: Format, severity: Option<&str>) -> Level {
    let rust_log = std::env::var("RUST_LOG").ok();
    let pinned = rust_log
        .as_deref()
        .is_some_and(|r| EnvFilter::try_new(r).is_ok());
    let (filter, handle) = reload::Layer::new(filter(rust_log.as_deref(), severity));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match format {
        Format::Text => Registry::default()
            .with(filter)
            .with(fmt.with_ansi(false))
            .try_init(),
        Format::Json => Registry::default()
            .with(filter)
            .with(fmt.json().flatten_event(true))
            .try_init(),
    };
    Level {
        handle: installed.is_ok().then_some(handle),
        pinned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn felix_severities_map_to_levels_and_rust_log_wins() {
        assert_eq!(felix_severity("Warning"), Some("warn"));
        assert_eq!(felix_severity("FATAL"), Some("error"));
        assert_eq!(felix_severity("loud"), None);
        assert_eq!(filter(None, Some("Debug")).to_string(), "debug");
        assert_eq!(
            filter(Some("tortie=trace"), Some("Error")).to_string(),
            "tortie=trace"
        );
        // An unparsable RUST_LOG falls back to the configured severity.
        assert_eq!(filter(Some("=[bad"), Some("Error")).to_string(), "error");
        assert_eq!(filter(None, None).to_string(), "info");
    }
}
