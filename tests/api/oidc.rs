//! End to end with a real OpenID provider (issue 12 "Tests"): the npm
//! package `oidc-provider` (OpenID Certified), started by
//! `tests/oidc/provider.mjs`, issues a JWT access token by the
//! client_credentials grant for our audience with a `patient` claim; the
//! server, configured with the provider's discovered `jwks_uri`, accepts it
//! and confines it to that patient. Needs `FHIRBRIDGE_OIDC_PROVIDER_DIR`
//! (the directory holding `node_modules/oidc-provider`; `.ci/run` installs
//! it); skipped with a message when unset.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fhirbridge::auth::config::IssuerSettings;
use serde_json::{json, Value};

use crate::auth_support::*;
use crate::helpers::{free_port, nhs_number, TestApp};

pub const OIDC_ENV: &str = "FHIRBRIDGE_OIDC_PROVIDER_DIR";

/// The node process, killed on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider(dir: &str, patient: &str) -> Provider {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/provider.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(port.to_string())
        .arg(patient)
        .arg(AUDIENCE)
        .env(OIDC_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (is Node.js installed?)");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(issuer) = line.strip_prefix("ready ") {
                let _ = tx.send(issuer.trim().to_owned());
            }
        }
    });
    let mut provider = Provider {
        child,
        issuer: String::new(),
    };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(issuer) => provider.issuer = issuer,
        Err(_) => panic!(
            "oidc-provider did not start (exit: {:?})",
            provider.child.try_wait()
        ),
    }
    provider
}

async fn get_json(app: &TestApp, url: &str) -> Value {
    let mut r = app.client.get(url).send().await.expect("provider answers");
    assert_eq!(r.status(), 200, "{url}");
    r.json::<Value>().limit(1 << 20).await.expect("JSON")
}

#[actix_rt::test]
async fn a_token_from_oidc_provider_is_accepted_and_patient_scoped() {
    let Ok(dir) = std::env::var(OIDC_ENV) else {
        eprintln!("skipping the oidc-provider end-to-end test: {OIDC_ENV} is not set");
        return;
    };
    let provider = start_provider(&dir, "pat-oidc");
    // Discovery, as a real client would do it.
    let probe = TestApp::attach(0);
    let discovery = get_json(
        &probe,
        &format!("{}/.well-known/openid-configuration", provider.issuer),
    )
    .await;
    assert_eq!(discovery["issuer"], provider.issuer.as_str());
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri").to_owned();
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .expect("token_endpoint")
        .to_owned();
    let issuer = IssuerSettings {
        issuer: provider.issuer.clone(),
        jwks_uri: Some(jwks_uri.clone()),
        patient_claim: Some("patient".into()),
        ..IssuerSettings::default()
    };
    let app = TestApp::sqlite_with(move |s| {
        required(s);
        s.auth.issuers.push(issuer);
    })
    .await;
    let admin = app.admin();
    for (id, n) in [("pat-oidc", 1), ("pat-other", 2)] {
        admin
            .upsert(&json!({"resourceType": "Patient", "id": id,
                "identifier": [{"system": NHS_SYSTEM, "value": nhs_number(600 + n)}]}))
            .await;
        admin
            .upsert(
                &json!({"resourceType": "Observation", "id": format!("obs-{id}"),
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": format!("Patient/{id}")}}),
            )
            .await;
    }
    // A client_credentials token for our audience.
    let form = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("scope", "patient/*.rs"),
        ("resource", AUDIENCE),
    ])
    .unwrap();
    let mut r = app
        .client
        .post(&token_endpoint)
        .basic_auth("fhirbridge-e2e", "e2e-secret-not-a-real-one")
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(form)
        .await
        .expect("token request");
    let body: Value = r.json().limit(1 << 20).await.expect("token JSON");
    assert_eq!(r.status(), 200, "{body}");
    let token = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    // It is a JWT from the provider, checked here independently too.
    let jwks = get_json(&probe, &jwks_uri).await;
    let claims = verify(&token, &jwks).expect("the provider's signature verifies");
    assert_eq!(claims["iss"], provider.issuer.as_str());
    assert_eq!(claims["patient"], "pat-oidc");
    assert_eq!(claims["aud"], AUDIENCE);
    // The server accepts it, for its patient only.
    let c = app.bearer(&token);
    let r = c.get("/fhir/Patient/pat-oidc").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.get("/fhir/Patient/pat-other").await.status, 404);
    let r = c.get("/fhir/Observation").await;
    assert_eq!(entry_ids(&r.json()), vec!["Observation/obs-pat-oidc"]);
    assert_eq!(
        c.total("/fhir/Observation?subject=Patient/pat-other").await,
        0
    );
    // Read scopes only.
    assert_forbidden(
        &c.post(
            "/fhir/Observation",
            &json!({"resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": "Patient/pat-oidc"}}),
        )
        .await,
        "oidc token writing",
    );
    // The provider's token with another patient claim, re-signed by us: refused.
    let forged = FIXTURE.stranger.sign_raw(
        &peek(&token).0,
        &with(claims.clone(), json!({"patient": "pat-other"})),
    );
    assert_invalid_token(
        &app.bearer(&forged).get("/fhir/Patient/pat-other").await,
        "forged provider token",
    );
    drop(provider);
}
