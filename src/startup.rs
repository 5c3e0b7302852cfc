//! What the server tells its operator: the full FHIR base URL, which database it
//! opened (an SQLite path made absolute, or a PostgreSQL host and database
//! without credentials) and what it did to it (created, migrated, up to date),
//! and a hard bound on shutdown.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::ServerSettings;

/// The state of the database before `open`, to tell "created" from "migrated".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBefore {
    /// An SQLite file at this (absolute) path; `existed` if it had content.
    Sqlite { path: PathBuf, existed: bool },
    /// A private in-memory SQLite database.
    Memory,
    /// A PostgreSQL database, as `host:port/db` (no user, password or parameters).
    Postgres { location: String },
}

impl DatabaseBefore {
    /// Looks at the database `url` names without opening it.
    pub fn probe(url: &str) -> DatabaseBefore {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return DatabaseBefore::Postgres {
                location: postgres_location(url),
            };
        }
        if matches!(url, "sqlite::memory:" | "sqlite://:memory:" | ":memory:") {
            return DatabaseBefore::Memory;
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = PathBuf::from(path);
        let path = std::path::absolute(&path).unwrap_or(path);
        let existed = std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        DatabaseBefore::Sqlite { path, existed }
    }

    /// One line for the log: where the database is and what `open` did to it.
    pub fn describe(&self, migrations_applied: usize) -> String {
        let migrations = match migrations_applied {
            0 => "schema up to date".to_owned(),
            1 => "1 migration applied".to_owned(),
            n => format!("{n} migrations applied"),
        };
        match self {
            DatabaseBefore::Sqlite {
                path,
                existed: false,
            } => format!("database created: SQLite {} ({migrations})", path.display()),
            DatabaseBefore::Sqlite {
                path,
                existed: true,
            } => {
                let what = if migrations_applied > 0 {
                    "migrated"
                } else {
                    "opened"
                };
                format!("database {what}: SQLite {} ({migrations})", path.display())
            }
            DatabaseBefore::Memory => {
                format!("database: SQLite in memory, lost on exit ({migrations})")
            }
            DatabaseBefore::Postgres { location } => {
                let what = if migrations_applied > 0 {
                    "migrated"
                } else {
                    "opened"
                };
                format!("database {what}: PostgreSQL {location} ({migrations})")
            }
        }
    }
}

/// `host:port/db` of a PostgreSQL URL: no user, password or query parameters
/// (which may hold a password too).
pub fn postgres_location(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.is_empty() { "localhost" } else { host };
    if db.is_empty() {
        format!("{host} (default database)")
    } else {
        format!("{host}/{db}")
    }
}

/// The FHIR base URL clients should use: the configured `server.base_url`, else
/// `http://{listen host}:{bound port}/fhir` (`https://` with `[server.tls]`;
/// `localhost` when listening on every interface).
pub fn base_url(server: &ServerSettings, port: u16) -> String {
    if let Some(base) = server.configured_base() {
        return base;
    }
    let host = server
        .listen
        .rsplit_once(':')
        .map_or(server.listen.as_str(), |(h, _)| h);
    let host = match host {
        "" | "0.0.0.0" | "[::]" | "::" => "localhost",
        h => h,
    };
    format!("{}://{host}:{port}/fhir", server.scheme())
}

/// Waits for SIGTERM or SIGINT (the server drains on the same signals), then
/// starts a timer that ends the process `timeout` + 1 s later whatever is
/// still running: a stalled request body or a blocking database call would
/// otherwise keep it alive past `server.shutdown_timeout_secs`.
pub async fn bound_shutdown(timeout: Duration) {
    let name = wait_for_stop_signal().await;
    let secs = timeout.as_secs();
    tracing::info!(
        "{name} received: stopping; the process exits within {} s",
        secs + 1
    );
    let spawned = std::thread::Builder::new()
        .name("shutdown-timer".into())
        .spawn(move || {
            std::thread::sleep(timeout + Duration::from_secs(1));
            tracing::warn!("requests still running {secs} s after {name}; exiting anyway");
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the shutdown timer");
    }
}

#[cfg(unix)]
async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    let term_recv = Box::pin(term.recv());
    let int_recv = Box::pin(int.recv());
    let name = match futures_util::future::select(term_recv, int_recv).await {
        futures_util::future::Either::Left(_) => "SIGTERM",
        futures_util::future::Either::Right(_) => "SIGINT",
    };
    name
}

#[cfg(not(unix))]
async fn wait_for_stop_signal() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "Ctrl-C",
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_location_has_no_credentials() {
        assert_eq!(
            postgres_location("postgres://alice:s3cret@db.example.org:5432/fhir?password=x"),
            "db.example.org:5432/fhir"
        );
        assert_eq!(
            postgres_location("postgresql://u@127.0.0.1/test"),
            "127.0.0.1/test"
        );
        assert_eq!(
            postgres_location("postgres://u:p@host"),
            "host (default database)"
        );
    }

    #[test]
    fn sqlite_paths_are_made_absolute() {
        match DatabaseBefore::probe("sqlite://data/no-such-dir/x.db") {
            DatabaseBefore::Sqlite { path, existed } => {
                assert!(path.is_absolute());
                assert!(path.ends_with("data/no-such-dir/x.db"));
                assert!(!existed);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            DatabaseBefore::probe("sqlite::memory:"),
            DatabaseBefore::Memory
        );
        let before = DatabaseBefore::Sqlite {
            path: "/d/x.db".into(),
            existed: false,
        };
        assert_eq!(
            before.describe(5),
            "database created: SQLite /d/x.db (5 migrations applied)"
        );
    }

    #[test]
    fn base_url_is_complete() {
        let mut s = ServerSettings {
            listen: "0.0.0.0:0".into(),
            ..ServerSettings::default()
        };
        assert_eq!(base_url(&s, 8080), "http://localhost:8080/fhir");
        s.listen = "127.0.0.1:8080".into();
        assert_eq!(base_url(&s, 8080), "http://127.0.0.1:8080/fhir");
        s.tls = Some(crate::config::TlsSettings::default());
        assert_eq!(base_url(&s, 8443), "https://127.0.0.1:8443/fhir");
        s.base_url = Some("https://fhir.example.nhs.uk/fhir/".into());
        assert_eq!(base_url(&s, 8080), "https://fhir.example.nhs.uk/fhir");
    }
}
