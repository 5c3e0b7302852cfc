//! Tracing subscriber setup. Log lines carry request ids, routes, interactions
//! and resource types, never patient data: no bodies, identifiers, names, dates
//! of birth or raw query strings.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber (`RUST_LOG` overrides `filter`). Safe to call
/// more than once: later calls are ignored.
pub fn init(filter: &str, format: &str) {
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let result = if format == "json" {
        fmt()
            .json()
            .with_env_filter(env_filter)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .try_init()
    } else {
        fmt()
            .with_env_filter(env_filter)
            // Colour codes only on a terminal, not in log files.
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init()
    };
    let _ = result;
}
