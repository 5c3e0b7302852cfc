//! `fhirbridge demo seed` as a user runs it: twice on one SQLite database
//! (the second run adds nothing), then a server on it finds the practice's
//! free slots with the printed tokens.

use std::process::Command;
use std::time::Duration;

use crate::helpers::{spawn_server, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_fhirbridge");

#[actix_rt::test]
async fn demo_seed_is_idempotent_and_its_slots_and_tokens_serve() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    // A fixed base URL: the tokens' iss and aud do not depend on the port.
    // Validation as configured by default, without installing anything.
    let config = dir.path().join("demo.toml");
    std::fs::write(
        &config,
        "[server]\nbase_url = \"http://demo.test/fhir\"\n[auth]\nmode = \"required\"\n\
         [validation]\nauto_install = false\n",
    )
    .unwrap();
    let seed = || {
        let out = Command::new(BIN)
            .args(["demo", "seed", "--database", &db, "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .env_remove("FHIRBRIDGE_DATABASE_URL")
            .env_remove("FHIRBRIDGE_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "demo seed failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = seed();
    let slots: usize = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("Slot"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Slot count:\n{first}"));
    // Up to 10 weekdays x 3 clinicians x 40 slots, from now on.
    assert!(slots <= 1200 && slots % 3 == 0, "{first}");
    assert!(first.contains("ODS A81001"), "{first}");
    let second = seed();
    assert!(
        second.contains(": 0 resources written"),
        "the second run adds nothing:\n{second}"
    );
    let token = |name: &str| -> String {
        second
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name}:\n{second}"))
            .to_owned()
    };
    let (system, clinician) = (token("SYSTEM_TOKEN"), token("CLINICIAN_TOKEN"));
    assert!(second.contains("DEMO CREDENTIALS"), "{second}");

    let server = spawn_server(&db, Some(&config), Duration::from_secs(60)).await;
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let app = TestApp::attach(port);
    let search = "/fhir/Slot?status=free&schedule.actor:Location.organization.identifier=\
                  https://fhir.nhs.uk/Id/ods-organization-code|A81001";
    let bearer = format!("Bearer {system}");
    let r = app
        .get_with(
            &format!("{search}&_summary=count"),
            &[("Authorization", &bearer)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["total"],
        slots,
        "every seeded slot is free and found"
    );
    let r = app
        .get_with(
            &format!("{search}&_include=Slot:schedule&_count=5"),
            &[("Authorization", &bearer)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let entries = r.json()["entry"].as_array().cloned().unwrap_or_default();
    let of = |ty: &str| {
        entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == ty)
            .count()
    };
    assert_eq!(of("Slot"), 5.min(slots));
    assert!(slots == 0 || of("Schedule") >= 1, "{entries:?}");
    let r = app
        .get_with(
            "/fhir/Patient/demo-patient-1",
            &[("Authorization", &format!("Bearer {clinician}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app.get("/fhir/Patient/demo-patient-1").await;
    assert_eq!(r.status, 401, "access control is on");
}
