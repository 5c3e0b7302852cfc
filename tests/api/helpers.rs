//! Test harness: spawns the real server on an ephemeral port and talks to it over
//! real HTTP. Every test runs against SQLite, and against PostgreSQL too when
//! `FHIRBRIDGE_TEST_POSTGRES_URL` is set (each test gets its own schema).

use std::time::Duration;

use std::sync::Arc;

use actix_web::http::Method;
use fhirbridge::config::Settings;
use fhirbridge::policy::Policy;
use serde_json::Value;

pub const PG_ENV: &str = "FHIRBRIDGE_TEST_POSTGRES_URL";

/// Runs each named `async fn(TestApp)` once per backend. `with adjust;` first
/// starts each server with `adjust(&mut Settings)` applied (a `fn` in the
/// calling module).
#[macro_export]
macro_rules! backend_tests {
    (with $adjust:ident; $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_rt::test]
                async fn sqlite() {
                    super::$name($crate::helpers::TestApp::sqlite_with(super::$adjust).await).await
                }
                #[actix_rt::test]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::postgres_with(super::$adjust).await {
                        super::$name(app).await
                    }
                }
            }
        )*
    };
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_rt::test]
                async fn sqlite() {
                    super::$name($crate::helpers::TestApp::sqlite().await).await
                }
                #[actix_rt::test]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::postgres().await {
                        super::$name(app).await
                    }
                }
            }
        )*
    };
}

pub struct TestApp {
    pub base: String,
    pub client: awc::Client,
    pub backend: &'static str,
    /// The database URL the server uses (empty for `attach`).
    pub db_url: String,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
    /// Another app whose lifetime (its PostgreSQL schema) this one shares.
    _keep: Option<Box<TestApp>>,
}

pub struct Resp {
    pub status: u16,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the body is an OperationOutcome and returns its issues.
    pub fn issues(&self) -> Vec<Value> {
        let v = self.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
        v["issue"].as_array().cloned().unwrap_or_default()
    }
}

pub fn settings_with(url: &str) -> Settings {
    let mut s = Settings::for_testing();
    s.storage.database_url = url.to_owned();
    s.storage.pool_size = 4;
    s.server.body_limit_bytes = 1024 * 1024;
    s
}

impl TestApp {
    pub async fn sqlite() -> TestApp {
        TestApp::sqlite_with(|_| {}).await
    }

    /// SQLite with adjusted settings.
    pub async fn sqlite_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let mut settings = settings_with(&url);
        adjust(&mut settings);
        TestApp::start(settings, "sqlite", Some(dir), None)
    }

    /// None (with a message) when PostgreSQL tests are not configured; panics when
    /// they are configured but the server is unreachable.
    pub async fn postgres() -> Option<TestApp> {
        TestApp::postgres_with(|_| {}).await
    }

    /// PostgreSQL with adjusted settings (None when not configured, as
    /// [`TestApp::postgres`]).
    pub async fn postgres_with(adjust: impl FnOnce(&mut Settings)) -> Option<TestApp> {
        init_logs();
        let Ok(base_url) = std::env::var(PG_ENV) else {
            eprintln!("skipping PostgreSQL run: {PG_ENV} is not set");
            return None;
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin_sql(&base_url, &format!("CREATE SCHEMA {schema}"));
        let sep = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{sep}options=-csearch_path%3D{schema}");
        let mut settings = settings_with(&url);
        // The server's signing key goes in the test's own directory, not
        // the default `data/` of the working directory.
        let dir = tempfile::tempdir().expect("tempdir");
        settings.auth.signing_key_file = Some(
            dir.path()
                .join("server-signing-key.pem")
                .display()
                .to_string(),
        );
        adjust(&mut settings);
        Some(TestApp::start(
            settings,
            "postgres",
            Some(dir),
            Some((base_url, schema)),
        ))
    }

    /// SQLite under an access policy.
    pub async fn sqlite_with_policy(policy: Arc<dyn Policy>) -> TestApp {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestApp::start_with(settings_with(&url), "sqlite", Some(dir), None, policy)
    }

    /// PostgreSQL under an access policy (None when not configured).
    pub async fn postgres_with_policy(policy: Arc<dyn Policy>) -> Option<TestApp> {
        let app = TestApp::postgres().await?;
        // Re-open the same schema under the policy (the first server stays idle).
        let settings = settings_with(&app.db_url);
        let pg = app.pg_schema.clone();
        let mut policed = TestApp::start_with(settings, "postgres", None, pg, policy);
        policed._keep = Some(Box::new(app));
        Some(policed)
    }

    pub fn start(
        settings: Settings,
        backend: &'static str,
        dir: Option<tempfile::TempDir>,
        pg_schema: Option<(String, String)>,
    ) -> TestApp {
        TestApp::start_inner(settings, backend, dir, pg_schema, None)
    }

    pub fn start_with(
        settings: Settings,
        backend: &'static str,
        dir: Option<tempfile::TempDir>,
        pg_schema: Option<(String, String)>,
        policy: Arc<dyn Policy>,
    ) -> TestApp {
        TestApp::start_inner(settings, backend, dir, pg_schema, Some(policy))
    }

    /// `policy`: `None` installs what `[auth]` calls for (as the server does).
    fn start_inner(
        settings: Settings,
        backend: &'static str,
        dir: Option<tempfile::TempDir>,
        pg_schema: Option<(String, String)>,
        policy: Option<Arc<dyn Policy>>,
    ) -> TestApp {
        let db_url = settings.storage.database_url.clone();
        let store = fhirbridge::open_backend(&settings).expect("storage opens");
        let app = match policy {
            Some(p) => fhirbridge::Application::build_with(settings, store, p),
            None => fhirbridge::Application::build_with_backend(settings, store),
        }
        .expect("server builds");
        let port = app.port();
        actix_rt::spawn(app.run_until_stopped());
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            client,
            backend,
            db_url,
            _dir: dir,
            pg_schema,
            _keep: None,
        }
    }

    /// A client for a server started elsewhere in the test.
    pub fn attach(port: u16) -> TestApp {
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish(),
            backend: "attached",
            db_url: String::new(),
            _dir: None,
            pg_schema: None,
            _keep: None,
        }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut res = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        let body = res.body().limit(64 * 1024 * 1024).await.expect("body");
        Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: body.to_vec(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers, None).await
    }

    pub async fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut h = vec![("Content-Type", "application/fhir+json")];
        h.extend_from_slice(headers);
        self.request(method, path, &h, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send_json("POST", path, body, &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send_json("PUT", path, body, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, &[], None).await
    }

    /// `Bundle.total` of a search (asserting 200).
    pub async fn total(&self, path: &str) -> i64 {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()["total"].as_i64().expect("total")
    }

    /// Creates a resource and returns the stored JSON (asserting 201).
    pub async fn create(&self, resource: &Value) -> Value {
        let ty = resource["resourceType"].as_str().expect("resourceType");
        let r = self.post(&format!("/fhir/{ty}"), resource).await;
        assert_eq!(r.status, 201, "create failed: {}", r.text());
        r.json()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.pg_schema {
            admin_sql(url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// Runs SQL directly on the test server's database (to set up states the API
/// cannot produce, such as index rows written by an older version).
pub fn db_sql(app: &TestApp, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let url = &app.db_url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut conn = diesel::sqlite::SqliteConnection::establish(path).expect("open SQLite");
        conn.batch_execute(&format!("PRAGMA busy_timeout = 10000; {sql}"))
            .expect("SQL");
    } else {
        let mut conn = diesel::pg::PgConnection::establish(url).expect("open PostgreSQL");
        conn.batch_execute(sql).expect("SQL");
    }
}

fn admin_sql(url: &str, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn = diesel::pg::PgConnection::establish(url)
        .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}"));
    conn.batch_execute(sql).expect("admin SQL");
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        fhirbridge::telemetry::init("debug", "pretty");
    }
}

/// The `n`-th NHS number of the 999 test range that passes Modulus 11.
pub fn nhs_number(n: u32) -> String {
    let mut base = 900_000_000u64 + u64::from(n) * 7;
    loop {
        let digits: Vec<u64> = format!("{base:09}")
            .bytes()
            .map(|b| u64::from(b - b'0'))
            .collect();
        let sum: u64 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = (11 - sum % 11) % 11;
        if check != 10 {
            return format!("{base:09}{check}");
        }
        base += 1;
    }
}

pub fn patient(nhs: &str, family: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
        "name": [{"family": family, "given": ["Test"]}],
        "gender": "female",
        "birthDate": "1980-05-17"
    })
}

/// Removes server-owned meta, for comparing what went in with what came out.
pub fn without_server_meta(mut v: Value) -> Value {
    fhirbridge::storage::strip_server_meta(&mut v);
    v
}

/// A minimal Patient valid against UK Core.
pub fn uk_patient(nhs: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
        "name": [{"use": "official", "family": "Smith", "given": ["Jane"]}],
        "gender": "female",
        "birthDate": "1968-07-24"
    })
}

/// OperationOutcome issues as one line each, for assertion messages.
/// `Type/id` of every entry's resource, sorted.
pub fn entry_ids(bundle: &Value) -> Vec<String> {
    let mut v: Vec<String> = bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| {
                    let r = &e["resource"];
                    Some(format!(
                        "{}/{}",
                        r["resourceType"].as_str()?,
                        r["id"].as_str()?
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn messages(issues: &[Value]) -> String {
    issues
        .iter()
        .map(|i| {
            format!(
                "{} @ {}: {}",
                i["severity"], i["expression"][0], i["diagnostics"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A TCP port free on loopback now (for servers started as separate processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `fhirbridge serve` process (killed and reaped on drop).
pub struct ServerProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary on `db` (with `config` as `--config` when given)
/// and waits up to `ready_within` for `/health/ready`.
pub async fn spawn_server(
    db: &str,
    config: Option<&std::path::Path>,
    ready_within: Duration,
) -> ServerProcess {
    spawn_server_opts(&ServeOpts {
        db,
        config,
        ready_within,
        ..ServeOpts::default()
    })
    .await
    .unwrap_or_else(|| panic!("server did not become ready within {ready_within:?}"))
}

/// How [`spawn_server_opts`] starts the real binary.
pub struct ServeOpts<'a> {
    pub db: &'a str,
    pub config: Option<&'a std::path::Path>,
    /// The listen host (the port is chosen free); readiness is polled on
    /// 127.0.0.1 whatever the host.
    pub host: &'a str,
    /// Further arguments after `serve ...`.
    pub args: &'a [&'a str],
    /// `RUST_LOG` of the process.
    pub log: &'a str,
    /// Where its stderr goes (discarded when `None`).
    pub stderr: Option<&'a std::path::Path>,
    pub ready_within: Duration,
}

impl Default for ServeOpts<'_> {
    fn default() -> Self {
        ServeOpts {
            db: "sqlite::memory:",
            config: None,
            host: "127.0.0.1",
            args: &[],
            log: "warn",
            stderr: None,
            ready_within: Duration::from_secs(60),
        }
    }
}

/// Starts the real binary as `opts` says; `None` when it did not become
/// ready in time (or exited).
pub async fn spawn_server_opts(opts: &ServeOpts<'_>) -> Option<ServerProcess> {
    use std::process::{Command, Stdio};
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirbridge"));
    cmd.args([
        "serve",
        "--listen",
        &format!("{}:{port}", opts.host),
        "--database",
        opts.db,
    ]);
    if let Some(c) = opts.config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(opts.args);
    let stderr = match opts.stderr {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("stderr file")),
        None => Stdio::null(),
    };
    let child = cmd
        .env("RUST_LOG", opts.log)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn server binary");
    let mut server = ServerProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = awc::Client::default();
    let deadline = std::time::Instant::now() + opts.ready_within;
    while std::time::Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("{}/health/ready", server.base))
            .send()
            .await
        {
            if r.status() == 200 {
                return Some(server);
            }
        }
        if let Ok(Some(_)) = server.child.try_wait() {
            return None;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
