//! README.md's examples run as written, from the repository root, against the
//! real binary: every command line of every ```sh block is run with bash,
//! rewriting only the base URL (`http://127.0.0.1:8080` → the test server),
//! `cargo run --release --` (→ the binary under test) and the placeholder `ID`
//! (→ the id from the first create's `Location` header). Each curl must get a
//! 2xx and each CLI command must exit 0. Lines that cannot run here are listed
//! in [`SKIP`] with the reason; any other line the test does not know how to run
//! fails it, so a new README example cannot go untested by accident.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// README lines this test does not run, by prefix, and why.
const SKIP: &[(&str, &str)] = &[
    (
        "cargo test --workspace",
        "the suite this test is part of (it would run itself)",
    ),
    (
        "cargo bench",
        "benchmarks take minutes; they run by hand or in benches/",
    ),
    (
        "benches/",
        "benchmark scripts take minutes and need wrk/python; run by hand",
    ),
    ("docker ", "no Docker engine on the test machines"),
];

const README_BASE: &str = "http://127.0.0.1:8080";
const CARGO_RUN: &str = "cargo run --release --";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command lines of README.md's ```sh blocks, continuation lines joined,
/// comments and blank lines left out.
fn sh_commands(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        let trimmed = line.trim();
        if !in_sh {
            in_sh = trimmed == "```sh";
            continue;
        }
        if trimmed.starts_with("```") {
            assert!(pending.is_empty(), "unterminated continuation: {pending}");
            in_sh = false;
            continue;
        }
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        out.push(std::mem::take(&mut pending));
    }
    out
}

fn skip_reason(cmd: &str) -> Option<&'static str> {
    SKIP.iter()
        .find(|(prefix, _)| cmd.starts_with(prefix))
        .map(|(_, why)| *why)
}

/// Replaces the placeholder `ID` where it stands as a word.
fn replace_id(line: &str, id: &str) -> String {
    let re = regex::Regex::new(r"\bID\b").unwrap();
    re.replace_all(line, id).into_owned()
}

fn require_curl() {
    let ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "curl is not installed: the README examples need it (.ci/run installs it)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bash(root: &Path, env: &[(&str, String)], line: &str) -> std::process::Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(line).current_dir(root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().expect("run bash")
}

fn wait_ready(base: &str, server: &mut Server, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!(
                "the README's serve command exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("{base}/health/ready")])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "server not ready within 120 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn core_package_installed() -> bool {
    let cache = std::env::var_os("FHIR_PACKAGE_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(fhir_validation::package::default_cache_dir);
    fhir_validation::package::locate_core(&cache).is_some()
}

#[test]
fn readme_examples_run_as_written() {
    require_curl();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_fhirbridge");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = sh_commands(&readme);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Never reach the network from a test: use the core package if it is
    // installed (.ci/run installs it), else run with structural checks only.
    let config = dir.path().join("readme.toml");
    std::fs::write(&config, "[validation]\nauto_install = false\n").unwrap();
    let validating = core_package_installed();
    if !validating {
        eprintln!("NOTE: the FHIR R4 core package is not installed: UK Core validation is off for this run");
    }
    let log = dir.path().join("server.log");
    let env = [
        ("FHIRBRIDGE_LISTEN", format!("127.0.0.1:{port}")),
        (
            "FHIRBRIDGE_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("readme.db").display()),
        ),
        ("FHIRBRIDGE_CONFIG", config.display().to_string()),
        ("RUST_LOG", "info".to_owned()),
    ];

    let mut server: Option<Server> = None;
    let mut id: Option<String> = None;
    let (mut curls, mut clis) = (0, 0);
    for cmd in &commands {
        if let Some(why) = skip_reason(cmd) {
            eprintln!("skipped: {cmd}  ({why})");
            continue;
        }
        let mut line = cmd.replace(README_BASE, &base).replace(CARGO_RUN, bin);
        if line.contains("ID") {
            let id = id
                .as_deref()
                .unwrap_or_else(|| panic!("`{cmd}` uses ID before any create"));
            line = replace_id(&line, id);
        }
        if line == format!("{bin} serve") {
            assert!(server.is_none(), "README starts the server twice");
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new("bash");
            child
                .arg("-c")
                .arg(format!("exec {line}"))
                .current_dir(root)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            for (k, v) in &env {
                child.env(k, v);
            }
            let mut s = Server(child.spawn().expect("start the README's serve command"));
            wait_ready(&base, &mut s, &log);
            server = Some(s);
            continue;
        }
        if line.starts_with("curl ") {
            assert!(
                server.is_some(),
                "`{cmd}` runs before the README starts the server"
            );
            let probe = format!("{line} --max-time 120 -w '\\nHTTP_STATUS:%{{http_code}}'");
            let out = bash(root, &env, &probe);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let status = stdout
                .rsplit_once("HTTP_STATUS:")
                .map(|(_, s)| s.trim().to_owned())
                .unwrap_or_default();
            assert!(
                out.status.success() && status.starts_with('2'),
                "`{cmd}` got HTTP {status:?} (curl exit {:?}):\n{stdout}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            if id.is_none() {
                id = stdout.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    if !name.eq_ignore_ascii_case("location") {
                        return None;
                    }
                    let path = value.trim().split("/fhir/").nth(1)?;
                    Some(path.split('/').nth(1)?.to_owned())
                });
            }
            curls += 1;
            continue;
        }
        if line.starts_with(bin) {
            if line.starts_with(&format!("{bin} validate")) && !validating {
                eprintln!("skipped: {cmd}  (needs the FHIR R4 core package, not installed here)");
                continue;
            }
            let out = bash(root, &env, &line);
            assert!(
                out.status.success(),
                "`{cmd}` exited {:?}:\n{}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            clis += 1;
            continue;
        }
        panic!("README command this test does not know how to run (add it to SKIP with a reason?): {cmd}");
    }
    assert!(server.is_some(), "README has no serve command");
    assert!(id.is_some(), "no create in README gave a Location header");
    assert!(curls >= 10, "only {curls} curl examples found in README.md");
    assert!(clis >= 1, "no CLI example ran");
    // The start-up log says where the server is and what it opened.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("FHIR base URL {base}/fhir")),
        "start-up log:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "database created: SQLite {}",
            dir.path().join("readme.db").display()
        )),
        "start-up log:\n{text}"
    );
    if validating {
        assert!(
            text.contains("validation profiles loaded")
                && text.contains("hl7.fhir.r4.examples#4.0.1"),
            "the start-up log names the core package it uses:\n{text}"
        );
    }
}

#[test]
fn sh_blocks_are_parsed_with_continuations() {
    let md = "text\n```sh\n# comment\ncurl -s \\\n  -H 'A: b' x\n\ncargo run --release -- serve\n```\n```json\n{}\n```\n";
    assert_eq!(
        sh_commands(md),
        vec!["curl -s -H 'A: b' x", "cargo run --release -- serve"]
    );
    assert_eq!(
        replace_id("GET /Patient/ID/_history \"id\":\"ID\" X-IDX", "p1"),
        "GET /Patient/p1/_history \"id\":\"p1\" X-IDX"
    );
}
