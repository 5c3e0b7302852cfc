//! Settings: built-in defaults, then an optional TOML file, then environment
//! variables, then command-line flags (each layer overrides the one before).
//! Unknown keys in the file are errors, and `Settings::validate` names the key
//! at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

/// All server settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub search: SearchSettings,
    pub validation: ValidationSettings,
    pub telemetry: TelemetrySettings,
    pub jobs: JobsSettings,
    pub auth: crate::auth::AuthSettings,
    pub consent: crate::consent::ConsentSettings,
    pub audit: AuditSettings,
    /// The GP systems this server bridges to (`[[suppliers]]`).
    pub suppliers: Vec<crate::bridge::SupplierConfig>,
}

/// The audit trail (`crate::audit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Record an AuditEvent for every access (durable before the response).
    pub enabled: bool,
    /// Most events the writer commits in one transaction.
    pub max_batch: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            max_batch: 512,
        }
    }
}

/// The background job worker (`crate::jobs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSettings {
    /// Jobs this instance runs at once (0: it runs none; other instances on
    /// the same database still do).
    pub workers: usize,
    /// Seconds a claimed job's lease lasts; renewed while the job runs, so
    /// another instance takes a job over this long after its owner died.
    pub lease_secs: u64,
    /// Milliseconds between polls of the queue when it is idle.
    pub poll_ms: u64,
}

impl Default for JobsSettings {
    fn default() -> Self {
        JobsSettings {
            workers: 1,
            lease_secs: 30,
            poll_ms: 1_000,
        }
    }
}

impl JobsSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSettings {
    /// Profile validation on/off (structural checks always run).
    pub enabled: bool,
    /// FHIR package cache holding `hl7.fhir.r4.examples#4.0.1` (default `~/.fhir/packages`,
    /// or `$FHIR_PACKAGE_CACHE`).
    pub package_cache: Option<String>,
    /// An unpacked core package directory to use instead of the cache.
    pub core_package_dir: Option<String>,
    /// Install the core package into the cache on first start if it is missing (uses npm).
    pub auto_install: bool,
    /// A directory of further profiles, extensions, ValueSets and CodeSystems
    /// (`*.json`, `*.xml`) loaded in addition to the UK Core definitions built
    /// into the binary; one with the same canonical URL replaces the built-in one
    /// (`FHIRBRIDGE_PROFILES_DIR`). Unset by default; a directory that is set but
    /// cannot be loaded is a startup error.
    pub profiles_dir: Option<String>,
    /// `error` (default) or `warning`: how an NHS number failing Modulus 11 is reported.
    pub nhs_number: String,
    /// `warning` (default) or `error`: how an extension the server has no
    /// definition for (from a domain none of its definitions come from) is
    /// reported. UK Core's extension slicing is open, so vendors' and
    /// generators' own extensions are accepted with a warning; `error` is the
    /// HL7 Java validator's strict behaviour. Unknown modifierExtensions are
    /// always errors, and known extensions are always fully validated.
    pub unknown_extensions: String,
    /// Per-type policy `off | warn | enforce`; default `enforce` for Patient,
    /// Appointment, MedicationRequest and Consent, `warn` for the others.
    pub policy: std::collections::BTreeMap<String, String>,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        ValidationSettings {
            enabled: true,
            package_cache: None,
            core_package_dir: None,
            auto_install: true,
            profiles_dir: None,
            nhs_number: "error".into(),
            unknown_extensions: "warning".into(),
            policy: std::collections::BTreeMap::new(),
        }
    }
}

impl ServerSettings {
    /// The configured base URL without a trailing slash, if any.
    pub fn configured_base(&self) -> Option<String> {
        self.base_url
            .as_deref()
            .map(|b| b.trim_end_matches('/').to_owned())
    }

    /// The base URL where there is no request to derive it from (`import`,
    /// `reindex`): the configured one, else `http(s)://{listen}/fhir`.
    pub fn offline_base(&self) -> String {
        self.configured_base()
            .unwrap_or_else(|| format!("{}://{}/fhir", self.scheme(), self.listen))
    }

    /// `https` when the server listens with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// `[server.tls]`: HTTPS (TLS 1.2+) on `server.listen` instead of plain HTTP
/// (`crate::rest::tls`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first (`--tls-cert`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of that certificate (`--tls-key`).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s): when set, every client must present a
    /// certificate signed by one of them (mTLS), or the handshake fails.
    pub ca_file: Option<PathBuf>,
}

/// `[server.cors]`: which browser origins may call the API (`crate::rest::cors`).
/// No origins (the default): no CORS headers at all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Exact origins (`https://app.example`, `http://localhost:3000`), or `"*"`
    /// for any origin (only without `allow_credentials`).
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, TLS client
    /// certificates and `Authorization` set by the browser itself).
    pub allow_credentials: bool,
    /// Seconds a browser may cache a preflight answer (`Access-Control-Max-Age`).
    pub max_age_secs: u64,
}

impl Default for CorsSettings {
    fn default() -> Self {
        CorsSettings {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            max_age_secs: 600,
        }
    }
}

impl CorsSettings {
    /// Whether `origin` (a request's `Origin` header) may call the API.
    pub fn allows(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    /// Whether any origin is allowed (`"*"`).
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }

    fn problems(&self, out: &mut Vec<String>) {
        for o in &self.allowed_origins {
            if o == "*" {
                if self.allow_credentials {
                    out.push(
                        "server.cors.allowed_origins: \"*\" cannot be combined with \
                         allow_credentials = true (browsers refuse it); list the origins"
                            .into(),
                    );
                }
            } else if !is_origin(o) {
                out.push(format!(
                    "server.cors.allowed_origins: '{o}' is not an origin \
                     (scheme://host[:port], no path or trailing slash)"
                ));
            }
        }
        if self.max_age_secs > 86_400 {
            out.push("server.cors.max_age_secs must be at most 86400".into());
        }
    }
}

/// `scheme://host[:port]`, as a browser sends it in `Origin` (`null` is not
/// accepted: sandboxed frames and files send it, so allowing it allows them all).
fn is_origin(o: &str) -> bool {
    let Some((scheme, authority)) = o.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok
        || authority
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '\\' | '?' | '#' | '@' | '*'))
    {
        return false;
    }
    // host[:port], the host possibly an [IPv6] literal.
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, after)) => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return false,
            },
            None => return false,
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok() && !p.starts_with('+'));
    !host.is_empty() && port_ok
}

impl TlsSettings {
    fn problems(&self, out: &mut Vec<String>) {
        match (&self.cert_file, &self.key_file) {
            (None, None) => {
                out.push("server.tls: cert_file and key_file are required".into());
            }
            (Some(_), None) => out.push(
                "server.tls.key_file is required with server.tls.cert_file (--tls-key)".into(),
            ),
            (None, Some(_)) => out.push(
                "server.tls.cert_file is required with server.tls.key_file (--tls-cert)".into(),
            ),
            (Some(_), Some(_)) => {}
        }
        for (key, file) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("ca_file", &self.ca_file),
        ] {
            let Some(path) = file else { continue };
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => out.push(format!(
                    "server.tls.{key}: {} is not a file",
                    path.display()
                )),
                Err(e) => out.push(format!("server.tls.{key}: {}: {e}", path.display())),
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on (`FHIRBRIDGE_LISTEN`, `--listen`).
    pub listen: String,
    /// Public base URL used in `Location` headers and Bundle links, e.g.
    /// `https://fhir.example.nhs.uk/fhir`. When unset it is derived from the request.
    pub base_url: Option<String>,
    /// Largest accepted request body in bytes, after decompression.
    pub body_limit_bytes: usize,
    /// Largest accepted batch/transaction Bundle body (`POST /fhir`) in bytes.
    pub bundle_body_limit_bytes: usize,
    /// Most entries in one batch/transaction Bundle.
    pub max_bundle_entries: usize,
    /// Most resources one conditional delete may remove (more → 412).
    pub max_conditional_delete: usize,
    /// HTTP worker threads (0 = one per CPU core).
    pub workers: usize,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Seconds a client has to send a request's head (request line and headers).
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body (then 408).
    pub body_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open (announced in `Keep-Alive`).
    pub keep_alive_secs: u64,
    /// Responses at least this large are compressed (gzip or br) when the client accepts it.
    pub compress_min_bytes: usize,
    /// HTTPS instead of HTTP (`[server.tls]`, `--tls-cert`/`--tls-key`).
    pub tls: Option<TlsSettings>,
    /// Browser origins allowed to call the API (`[server.cors]`).
    pub cors: CorsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://…`
    /// (`FHIRBRIDGE_DATABASE_URL`, `--database`).
    pub database_url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Milliseconds to wait for a free connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// SQLite: fsync every commit (`synchronous=FULL`) to survive power loss.
    /// The default (`NORMAL`, WAL) survives a crash or `kill -9` of the server.
    pub sqlite_synchronous_full: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSettings {
    /// Page size when the client gives no `_count`.
    pub default_count: usize,
    /// Upper bound on `_count`.
    pub max_count: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// `tracing` filter, e.g. `info` or `fhirbridge=debug` (`RUST_LOG` overrides).
    pub log_filter: String,
    /// `pretty` for humans or `json` for log shippers.
    pub log_format: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            base_url: None,
            body_limit_bytes: 10 * 1024 * 1024,
            bundle_body_limit_bytes: 256 * 1024 * 1024,
            max_bundle_entries: 20_000,
            max_conditional_delete: 100,
            workers: 0,
            shutdown_timeout_secs: 30,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            keep_alive_secs: 75,
            compress_min_bytes: 1024,
            tls: None,
            cors: CorsSettings::default(),
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            database_url: "sqlite://data/fhirbridge.db".into(),
            pool_size: 8,
            acquire_timeout_ms: 5_000,
            sqlite_synchronous_full: false,
        }
    }
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            default_count: 20,
            max_count: 1_000,
        }
    }
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_filter: "info".into(),
            log_format: "pretty".into(),
        }
    }
}

/// Overrides given on the command line (they beat everything else).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    /// `--allow-anonymous`: `auth.mode = "off"` on a non-loopback address.
    pub allow_anonymous: bool,
    /// `--tls-cert` (`server.tls.cert_file`).
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` (`server.tls.key_file`).
    pub tls_key: Option<PathBuf>,
}

/// Every problem found in the settings, one per line when displayed.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid settings ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses a TOML settings file, reporting every bad section, key and value
/// (serde stops at the first): each key is tried on its own, and the keys
/// that are good still apply, so `validate` can report on the rest too.
fn parse_file(text: &str) -> (Settings, Vec<String>) {
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        // A syntax error: nothing after it can be trusted.
        Err(e) => {
            return (
                Settings::default(),
                vec![e.to_string().trim_end().to_owned()],
            )
        }
    };
    if let Ok(s) = toml::from_str::<Settings>(text) {
        return (s, Vec::new());
    }
    let one_line = |e: toml::de::Error| e.message().trim_end().replace('\n', " ");
    let try_table = |t: toml::Table| Settings::deserialize(toml::Value::Table(t));
    let mut problems = Vec::new();
    let mut good = toml::Table::new();
    for (section, value) in &table {
        let Some(keys) = value.as_table() else {
            let mut t = toml::Table::new();
            t.insert(section.clone(), value.clone());
            match try_table(t) {
                Err(e) => problems.push(format!("{section}: {}", one_line(e))),
                Ok(_) => problems.push(format!("{section}: expected a [{section}] table")),
            }
            continue;
        };
        let mut probe = toml::Table::new();
        probe.insert(section.clone(), toml::Value::Table(toml::Table::new()));
        if let Err(e) = try_table(probe) {
            problems.push(format!("[{section}]: {}", one_line(e)));
            continue;
        }
        let mut good_keys = toml::Table::new();
        for (key, v) in keys {
            let mut inner = toml::Table::new();
            inner.insert(key.clone(), v.clone());
            let mut t = toml::Table::new();
            t.insert(section.clone(), toml::Value::Table(inner));
            match try_table(t) {
                Ok(_) => {
                    good_keys.insert(key.clone(), v.clone());
                }
                Err(e) => problems.push(format!("{section}.{key}: {}", one_line(e))),
            }
        }
        good.insert(section.clone(), toml::Value::Table(good_keys));
    }
    match try_table(good) {
        Ok(s) => {
            if problems.is_empty() {
                // Not expected: every key passed alone; report serde's own message.
                if let Err(e) = toml::from_str::<Settings>(text) {
                    problems.push(one_line(e));
                }
            }
            (s, problems)
        }
        Err(e) => {
            problems.push(one_line(e));
            (Settings::default(), problems)
        }
    }
}

impl Settings {
    /// Defaults ← file (if any) ← environment ← flags, then validation.
    /// Every problem is reported at once ([`ConfigErrors`]): each bad key or
    /// value in the file and each setting that fails [`Settings::validate`].
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> anyhow::Result<Settings> {
        let mut problems = Vec::new();
        let mut settings = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("Failed to read config file {}", path.display()))?;
                let (settings, file_problems) = parse_file(&text);
                problems.extend(
                    file_problems
                        .into_iter()
                        .map(|p| format!("{}: {p}", path.display())),
                );
                settings
            }
            None => Settings::default(),
        };
        if let Some(v) = env("FHIRBRIDGE_LISTEN") {
            settings.server.listen = v;
        }
        if let Some(v) = env("FHIRBRIDGE_DATABASE_URL") {
            settings.storage.database_url = v;
        }
        if let Some(v) = env("FHIRBRIDGE_PROFILES_DIR") {
            settings.validation.profiles_dir = Some(v);
        }
        if let Some(v) = env("FHIRBRIDGE_BASE_URL") {
            settings.server.base_url = Some(v);
        }
        if let Some(v) = &flags.listen {
            settings.server.listen = v.clone();
        }
        if let Some(v) = &flags.database_url {
            settings.storage.database_url = v.clone();
        }
        if flags.allow_anonymous {
            settings.auth.allow_anonymous = true;
        }
        if flags.tls_cert.is_some() || flags.tls_key.is_some() {
            let tls = settings.server.tls.get_or_insert_with(TlsSettings::default);
            if let Some(v) = &flags.tls_cert {
                tls.cert_file = Some(v.clone());
            }
            if let Some(v) = &flags.tls_key {
                tls.key_file = Some(v.clone());
            }
        }
        problems.extend(settings.problems());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigErrors(problems).into())
        }
    }

    /// Settings for tests: in-memory SQLite, an ephemeral port, quiet logs.
    pub fn for_testing() -> Settings {
        let mut s = Settings::default();
        s.server.listen = "127.0.0.1:0".into();
        s.server.workers = 2;
        s.server.shutdown_timeout_secs = 1;
        s.storage.database_url = "sqlite::memory:".into();
        s.validation.enabled = false;
        s.validation.auto_install = false;
        // Tests that want a job worker start one; the others stay deterministic.
        s.jobs.workers = 0;
        s
    }

    /// Checks every setting; the error lists every problem found.
    pub fn validate(&self) -> anyhow::Result<()> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems).into())
        }
    }

    /// Every problem with these settings, each naming the key at fault.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.server.listen.parse::<std::net::SocketAddr>().is_err()
            && !self.server.listen.contains(':')
        {
            out.push(format!(
                "server.listen: '{}' is not HOST:PORT",
                self.server.listen
            ));
        }
        if self.server.body_limit_bytes < 1024 {
            out.push("server.body_limit_bytes must be at least 1024".into());
        }
        for (key, v) in [
            ("header_timeout_secs", self.server.header_timeout_secs),
            ("body_timeout_secs", self.server.body_timeout_secs),
            ("keep_alive_secs", self.server.keep_alive_secs),
        ] {
            if v == 0 || v > 3600 {
                out.push(format!("server.{key} must be between 1 and 3600"));
            }
        }
        let url = &self.storage.database_url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            out.push(
                "storage.database_url must start with sqlite://, sqlite::memory: or postgres://"
                    .into(),
            );
        }
        if self.storage.pool_size == 0 || self.storage.pool_size > 256 {
            out.push("storage.pool_size must be between 1 and 256".into());
        }
        if self.search.default_count == 0 || self.search.default_count > self.search.max_count {
            out.push("search.default_count must be between 1 and search.max_count".into());
        }
        if !matches!(self.validation.nhs_number.as_str(), "error" | "warning") {
            out.push("validation.nhs_number must be 'error' or 'warning'".into());
        }
        if !matches!(
            self.validation.unknown_extensions.as_str(),
            "error" | "warning"
        ) {
            out.push("validation.unknown_extensions must be 'warning' or 'error'".into());
        }
        for (ty, policy) in &self.validation.policy {
            if ty.parse::<crate::model::ResourceType>().is_err() {
                out.push(format!(
                    "validation.policy: '{ty}' is not a supported resource type"
                ));
            }
            if !matches!(policy.as_str(), "off" | "warn" | "enforce") {
                out.push(format!(
                    "validation.policy.{ty} must be off, warn or enforce"
                ));
            }
        }
        if self.audit.max_batch == 0 || self.audit.max_batch > 100_000 {
            out.push("audit.max_batch must be between 1 and 100000".into());
        }
        if self.jobs.workers > 64 {
            out.push("jobs.workers must be between 0 and 64".into());
        }
        if self.jobs.lease_secs == 0 || self.jobs.lease_secs > 3600 {
            out.push("jobs.lease_secs must be between 1 and 3600".into());
        }
        if self.jobs.poll_ms < 10 || self.jobs.poll_ms > 600_000 {
            out.push("jobs.poll_ms must be between 10 and 600000".into());
        }
        if !matches!(self.telemetry.log_format.as_str(), "pretty" | "json") {
            out.push("telemetry.log_format must be 'pretty' or 'json'".into());
        }
        if let Some(base) = &self.server.base_url {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                out.push("server.base_url must be an http(s) URL".into());
            }
        }
        if let Some(tls) = &self.server.tls {
            tls.problems(&mut out);
        }
        self.server.cors.problems(&mut out);
        out.extend(self.auth.problems(&self.server.listen));
        out.extend(self.consent.problems());
        out.extend(crate::bridge::config::problems(&self.suppliers));
        out
    }

    /// The database URL with a safe TLS default: a remote PostgreSQL server gets
    /// `sslmode=verify-full` unless the URL says otherwise.
    pub fn effective_database_url(&self) -> String {
        let url = &self.storage.database_url;
        let is_pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !is_pg || url.contains("sslmode=") {
            return url.clone();
        }
        let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or("");
        let authority = after_scheme.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        let local = matches!(host, "" | "localhost" | "127.0.0.1" | "[::1]");
        if local {
            return url.clone();
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}sslmode=verify-full")
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.storage.acquire_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_the_documented_contract() {
        let s = Settings::load(None, &no_env, &Overrides::default()).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.storage.database_url, "sqlite://data/fhirbridge.db");
        assert_eq!(s.server.body_limit_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1\"\n[storage]\ndatabase_url = \"sqlite::memory:\"\n",
        )
        .unwrap();
        let env = |k: &str| (k == "FHIRBRIDGE_LISTEN").then(|| "127.0.0.1:2".to_owned());
        let s = Settings::load(Some(&file), &env, &Overrides::default()).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:2");
        assert_eq!(s.storage.database_url, "sqlite::memory:");
        let flags = Overrides {
            listen: Some("127.0.0.1:3".into()),
            ..Overrides::default()
        };
        let s = Settings::load(Some(&file), &env, &flags).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:3");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nlisten_addr = \"x\"\n").unwrap();
        assert!(Settings::load(Some(&file), &no_env, &Overrides::default()).is_err());
        let flags = Overrides {
            listen: None,
            database_url: Some("mysql://x".into()),
            ..Overrides::default()
        };
        let e = Settings::load(None, &no_env, &flags).unwrap_err();
        assert!(e.to_string().contains("storage.database_url"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nlisten_addr = \"x\"\nbody_limit_bytes = \"lots\"\nworkers = 2\n\
             [storage]\npool_size = 0\n\
             [serch]\ndefault_count = 5\n\
             [telemetry]\nlog_format = \"xml\"\ncolour = true\n",
        )
        .unwrap();
        let flags = Overrides {
            listen: None,
            database_url: Some("mysql://x".into()),
            ..Overrides::default()
        };
        let e = Settings::load(Some(&file), &no_env, &flags).unwrap_err();
        let problems = &e.downcast_ref::<ConfigErrors>().unwrap().0;
        let msg = e.to_string();
        for needle in [
            "server.listen_addr: unknown field `listen_addr`",
            "server.body_limit_bytes: invalid type: string \"lots\"",
            "[serch]: unknown field `serch`",
            "telemetry.colour: unknown field `colour`",
            // Values that parse but fail validation, from the file and from flags.
            "storage.pool_size must be between 1 and 256",
            "telemetry.log_format must be 'pretty' or 'json'",
            "storage.database_url must start with",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from:\n{msg}");
        }
        assert_eq!(problems.len(), 7, "{msg}");
        assert!(
            msg.starts_with("invalid settings (7 problems):\n  - "),
            "{msg}"
        );
        // A syntax error is reported alone, with its position.
        std::fs::write(&file, "[server\nlisten = 1\n").unwrap();
        let e = Settings::load(Some(&file), &no_env, &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn validation_settings_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let s = Settings::load(None, &no_env, &Overrides::default()).unwrap();
        assert_eq!(s.validation.unknown_extensions, "warning");
        assert_eq!(s.validation.profiles_dir, None);
        std::fs::write(
            &file,
            "[validation]\nunknown_extensions = \"error\"\nprofiles_dir = \"/x\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), &no_env, &Overrides::default()).unwrap();
        assert_eq!(s.validation.unknown_extensions, "error");
        assert_eq!(s.validation.profiles_dir.as_deref(), Some("/x"));
        std::fs::write(&file, "[validation]\nunknown_extensions = \"ignore\"\n").unwrap();
        let e = Settings::load(Some(&file), &no_env, &Overrides::default()).unwrap_err();
        assert!(
            e.to_string().contains("validation.unknown_extensions"),
            "{e}"
        );
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        for o in [
            "https://app.example",
            "http://localhost:3000",
            "https://[::1]:8443",
            "capacitor://localhost",
        ] {
            assert!(is_origin(o), "{o}");
        }
        for o in [
            "null",
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://*.example",
            "https://user@app.example",
            "https://app.example:",
            "https://app.example:99999",
            "https://",
            "https://[::1",
            "https://app.example?x",
            "://app.example",
        ] {
            assert!(!is_origin(o), "{o}");
        }
        let mut s = Settings::default();
        s.server.cors.allowed_origins = vec!["*".into()];
        assert!(s.problems().is_empty());
        s.server.cors.allow_credentials = true;
        assert_eq!(s.problems().len(), 1);
        assert!(s.problems()[0].starts_with("server.cors.allowed_origins: \"*\""));
        s.server.cors.allowed_origins = vec!["https://App.Example".into()];
        assert!(s.problems().is_empty());
        assert!(s.server.cors.allows("https://app.example"));
        assert!(!s.server.cors.allows("https://app.example.evil"));
        s.server.cors.max_age_secs = 86_401;
        assert!(s.problems()[0].starts_with("server.cors.max_age_secs"));
    }

    #[test]
    fn tls_needs_both_files_and_the_flags_fill_them_in() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("[server.tls]\ncert_file = {cert:?}\n")).unwrap();
        let e = Settings::load(Some(&file), &no_env, &Overrides::default()).unwrap_err();
        assert!(
            e.to_string().contains("server.tls.key_file is required"),
            "{e}"
        );
        let flags = Overrides {
            tls_key: Some(key.clone()),
            ..Overrides::default()
        };
        let s = Settings::load(Some(&file), &no_env, &flags).unwrap();
        let tls = s.server.tls.as_ref().unwrap();
        assert_eq!(
            (tls.cert_file.as_ref(), tls.key_file.as_ref()),
            (Some(&cert), Some(&key))
        );
        assert_eq!(s.server.offline_base(), "https://127.0.0.1:8080/fhir");
        std::fs::write(
            &file,
            "[server.tls]\nca_file = \"/no/such/ca.pem\"\nciphers = \"x\"\n",
        )
        .unwrap();
        let e = Settings::load(Some(&file), &no_env, &Overrides::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("server.tls: unknown field `ciphers`"), "{msg}");
        let s = Settings {
            server: ServerSettings {
                tls: Some(TlsSettings {
                    ca_file: Some("/no/such/ca.pem".into()),
                    ..TlsSettings::default()
                }),
                ..ServerSettings::default()
            },
            ..Settings::default()
        };
        let p = s.problems();
        assert!(
            p.iter()
                .any(|p| p == "server.tls: cert_file and key_file are required"),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("server.tls.ca_file: /no/such/ca.pem: ")),
            "{p:?}"
        );
    }

    #[test]
    fn remote_postgres_defaults_to_verify_full() {
        let mut s = Settings::default();
        s.storage.database_url = "postgres://u@db.example.org:5432/fhir".into();
        assert!(s.effective_database_url().ends_with("?sslmode=verify-full"));
        s.storage.database_url = "postgres://u@127.0.0.1:5432/fhir".into();
        assert!(!s.effective_database_url().contains("sslmode"));
        s.storage.database_url = "postgres://u@db/fhir?sslmode=disable".into();
        assert!(s.effective_database_url().ends_with("sslmode=disable"));
    }
}
