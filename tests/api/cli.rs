//! The real binary's command line: settings errors, the start-up report, the
//! shutdown bound and `import` progress output (SQLite; these test the process,
//! not a storage backend).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_fhirbridge");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A settings file for tests: no validation (no core package, no network).
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let file = dir.join("test.toml");
    std::fs::write(&file, format!("{extra}\n[validation]\nenabled = false\n")).unwrap();
    file
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// Starts `serve` in `cwd` with stderr to `log`, and waits until it is ready.
fn serve(cwd: &Path, args: &[&str], log: &Path) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", &listen])
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .env_remove("FHIRBRIDGE_DATABASE_URL")
        .env_remove("FHIRBRIDGE_CONFIG")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Some(status) = p.0.try_wait().unwrap() {
            panic!(
                "serve exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        if ready(port) {
            return (p, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "serve not ready:\n{}",
        std::fs::read_to_string(log).unwrap()
    );
}

fn sigterm(p: &Proc) {
    let pid = p.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

fn wait_exit(p: &mut Proc, within: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(s) = p.0.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn every_settings_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten_adress = \"127.0.0.1:1\"\nworkers = \"four\"\n\
         [storage]\npool_size = 0\n[telemetry]\nlog_format = \"xml\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--database", "mysql://db/x"])
        .env_remove("FHIRBRIDGE_DATABASE_URL")
        .env_remove("FHIRBRIDGE_LISTEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "invalid settings (5 problems)",
        "server.listen_adress: unknown field `listen_adress`",
        "server.workers: invalid type: string \"four\"",
        "storage.pool_size must be between 1 and 256",
        "telemetry.log_format must be 'pretty' or 'json'",
        "storage.database_url must start with",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
}

#[test]
fn start_up_log_names_the_base_url_and_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    let log = dir.path().join("serve.log");
    // A relative SQLite path is reported made absolute.
    let (mut p, port) = serve(
        dir.path(),
        &["--config", cfg, "--database", "sqlite://db/x.db"],
        &log,
    );
    sigterm(&p);
    assert!(wait_exit(&mut p, Duration::from_secs(15)).is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    let db = dir.path().canonicalize().unwrap().join("db/x.db");
    assert!(
        text.contains(&format!("FHIR base URL http://127.0.0.1:{port}/fhir")),
        "{text}"
    );
    assert!(
        text.contains(&format!("database created: SQLite {}", db.display()))
            && text.contains("migrations applied)"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "no colour codes in a log file");
    let (mut p, _) = serve(
        dir.path(),
        &["--config", cfg, "--database", "sqlite://db/x.db"],
        &log,
    );
    sigterm(&p);
    assert!(wait_exit(&mut p, Duration::from_secs(15)).is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "database opened: SQLite {} (schema up to date)",
            db.display()
        )),
        "{text}"
    );
}

#[test]
fn serve_help_shows_defaults_and_environment_variables() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env("FHIRBRIDGE_DATABASE_URL", "postgres://u:secret@db/x")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "[default: 127.0.0.1:8080]",
        "[env: FHIRBRIDGE_LISTEN]",
        "[default: sqlite://data/fhirbridge.db]",
        "[env: FHIRBRIDGE_DATABASE_URL]",
        "[env: FHIRBRIDGE_CONFIG]",
        "FHIRBRIDGE_BASE_URL",
        "FHIR_PACKAGE_CACHE",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    assert!(!help.contains("secret"), "help must not print env values");
}

#[test]
fn sigterm_exits_within_the_shutdown_timeout_despite_stalled_requests() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[server]\nshutdown_timeout_secs = 2");
    let path = dir.path().join("t.db");
    let db = format!("sqlite://{}", path.display());
    let log = dir.path().join("serve.log");
    let (mut p, port) = serve(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "--database", &db],
        &log,
    );
    // Another process holds the SQLite write lock: each create now blocks in
    // a database call on the blocking pool (10 s busy timeout, one after the
    // other), well past the shutdown timeout.
    let mut holder = diesel::sqlite::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    holder.batch_execute("BEGIN IMMEDIATE").unwrap();
    let body = r#"{"resourceType":"Patient","name":[{"family":"Stalled"}]}"#;
    let mut writers = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            format!(
                "POST /fhir/Patient HTTP/1.1\r\nHost: t\r\nContent-Type: application/fhir+json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        writers.push(s);
    }
    // And a POST whose body trickles in, a byte at a time, and never completes.
    let mut trickling = TcpStream::connect(("127.0.0.1", port)).unwrap();
    trickling
        .write_all(
            b"POST /fhir/Patient HTTP/1.1\r\nHost: t\r\nContent-Type: application/fhir+json\r\n\
              Content-Length: 1000000\r\n\r\n{\"resourceType\":",
        )
        .unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..600 {
            if trickling.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&p);
    let exited = wait_exit(&mut p, Duration::from_secs(15));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        exited.is_some(),
        "still running 15 s after SIGTERM with shutdown_timeout_secs = 2:\n{text}"
    );
    let _ = holder.batch_execute("ROLLBACK");
    drop(writers);
    let _ = trickle.join();
}

#[test]
fn import_progress_to_a_pipe_has_no_carriage_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .arg("import")
        .arg("--config")
        .arg(&cfg)
        .arg("--database")
        .arg(format!("sqlite://{}", dir.path().join("i.db").display()))
        .arg(root.join("fixtures/examples/transaction.json"))
        .arg(root.join("fixtures/examples/patient.json"))
        .env_remove("FHIRBRIDGE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("imported 3 resources from 2 files"),
        "{stdout}"
    );
    assert!(
        !stderr.contains('\r'),
        "progress redraws in a pipe: {stderr:?}"
    );
}
