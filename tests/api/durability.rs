//! An acknowledged write survives `kill -9` of the real server binary (SQLite).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{free_port, nhs_number, patient, spawn_server, ServerProcess};

async fn start(db: &str) -> ServerProcess {
    spawn_server(db, None, Duration::from_secs(10)).await
}

#[actix_rt::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("durable.db").display());
    let client = awc::Client::default();
    let mut server = start(&db).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut r = client
            .post(format!("{}/fhir/Patient", server.base))
            .insert_header(("Content-Type", "application/fhir+json"))
            .send_body(patient(&nhs_number(i), "Durable").to_string())
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = serde_json::from_slice(&r.body().await.unwrap()).unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // SIGKILL: no graceful shutdown, no chance to flush anything.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = start(&db).await;
    for id in &ids {
        let r = client
            .get(format!("{}/fhir/Patient/{id}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "Patient/{id} lost after kill -9");
    }
}

#[actix_rt::test]
async fn default_database_is_created_under_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
        .current_dir(dir.path())
        .env_remove("FHIRBRIDGE_DATABASE_URL")
        .env("FHIRBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = awc::Client::default();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await
        {
            ready = r.status() == 200;
            if ready {
                break;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ready,
        "`fhirbridge` with no arguments serves on FHIRBRIDGE_LISTEN"
    );
    assert!(dir.path().join("data/fhirbridge.db").exists());
}

#[actix_rt::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("term.db").display());
    let mut server = start(&db).await;
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(s) = server.child.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("server exits within 5 s of SIGTERM");
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}
