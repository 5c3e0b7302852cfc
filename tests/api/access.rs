//! The lead's own end-to-end checks of access control (the broad leak suite
//! is `leaks.rs`): tokens minted with the server's signing code against a
//! JWKS file, two patients, patient/user/system callers.

use fhirbridge::auth::config::{AuthMode, IssuerSettings};
use fhirbridge::auth::jwt::SigningKey;
use serde_json::{json, Value};

use crate::helpers::{entry_ids, TestApp};

const AUD: &str = "https://fhir.test/fhir";
const ISS: &str = "https://login.test";

struct Keys {
    key: SigningKey,
    _dir: tempfile::TempDir,
    jwks: std::path::PathBuf,
}

fn keys() -> Keys {
    let key = SigningKey::generate_es384().expect("key");
    let dir = tempfile::tempdir().expect("dir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [key.public_jwk().expect("jwk")]}).to_string(),
    )
    .expect("write");
    Keys {
        key,
        _dir: dir,
        jwks,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn token(k: &Keys, extra: Value) -> String {
    let mut claims =
        json!({"iss": ISS, "aud": AUD, "sub": "user-1", "iat": now(), "exp": now() + 300});
    for (key, v) in extra.as_object().expect("object") {
        claims[key] = v.clone();
    }
    k.key.sign(&claims, "JWT").expect("sign")
}

fn adjust(k: &Keys) -> impl FnOnce(&mut fhirbridge::config::Settings) + '_ {
    move |s| {
        s.auth.mode = Some(AuthMode::Required);
        s.auth.audience = Some(AUD.into());
        s.auth.issuers = vec![IssuerSettings {
            issuer: ISS.into(),
            jwks_file: Some(k.jwks.display().to_string()),
            patient_claim: Some("patient".into()),
            nhs_number_claim: Some("nhs_number".into()),
            min_identity_proofing: Some("P9".into()),
            ..IssuerSettings::default()
        }];
    }
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    tok: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {tok}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/fhir+json"));
    }
    let r = app
        .request(
            method,
            path,
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

async fn seed(app: &TestApp, system: &str) {
    for (pid, nhs) in [("pa", "9000000009"), ("pb", "9000000017")] {
        let p = json!({"resourceType": "Patient", "id": pid,
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}]});
        let (s, _) = call(
            app,
            "PUT",
            &format!("/fhir/Patient/{pid}"),
            system,
            Some(&p),
        )
        .await;
        assert!(s == 201 || s == 200, "{s}");
        let mr = json!({"resourceType": "MedicationRequest", "id": format!("mr-{pid}"),
            "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": format!("Patient/{pid}")}});
        let (s, _) = call(
            app,
            "PUT",
            &format!("/fhir/MedicationRequest/mr-{pid}"),
            system,
            Some(&mr),
        )
        .await;
        assert!(s == 201 || s == 200, "{s}");
    }
    let org = json!({"resourceType": "Organization", "id": "org1", "name": "Practice"});
    call(app, "PUT", "/fhir/Organization/org1", system, Some(&org)).await;
}

async fn compartments_hold(app: TestApp, k: &Keys) {
    // No token: 401 with the realm challenge.
    let r = app.get("/fhir/Patient/pa").await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Bearer realm="));
    // Public routes answer without one.
    for path in ["/fhir/metadata", "/health/live", "/", "/fhir/metadata/"] {
        assert_eq!(app.get(path).await.status, 200, "{path}");
    }
    let system = token(k, json!({"scope": "system/*.cruds"}));
    seed(&app, &system).await;

    let a = token(
        k,
        json!({"scope": "patient/*.rs patient/MedicationRequest.cu", "patient": "pa", "vot": "P9.Cp.Cd"}),
    );
    let (s, _) = call(&app, "GET", "/fhir/Patient/pa", &a, None).await;
    assert_eq!(s, 200);
    let (s_b, b_body) = call(&app, "GET", "/fhir/Patient/pb", &a, None).await;
    let (s_none, none_body) = call(&app, "GET", "/fhir/Patient/nope", &a, None).await;
    assert_eq!((s_b, s_none), (404, 404));
    assert_eq!(b_body["issue"], none_body["issue"]);
    let (_, bundle) = call(
        &app,
        "GET",
        "/fhir/MedicationRequest?_total=accurate",
        &a,
        None,
    )
    .await;
    assert_eq!(entry_ids(&bundle), ["MedicationRequest/mr-pa"]);
    assert_eq!(bundle["total"], 1);
    let (_, bundle) = call(
        &app,
        "GET",
        "/fhir/MedicationRequest?subject.identifier=9000000017",
        &a,
        None,
    )
    .await;
    assert!(entry_ids(&bundle).is_empty());
    let (_, bundle) = call(
        &app,
        "GET",
        "/fhir/Patient?_revinclude=MedicationRequest:subject",
        &a,
        None,
    )
    .await;
    assert_eq!(
        entry_ids(&bundle),
        ["MedicationRequest/mr-pa", "Patient/pa"]
    );
    let (_, bundle) = call(&app, "GET", "/fhir/Patient/pb/MedicationRequest", &a, None).await;
    assert!(entry_ids(&bundle).is_empty());
    let (_, bundle) = call(&app, "GET", "/fhir/_history", &a, None).await;
    let seen = entry_ids(&bundle);
    assert!(seen.iter().all(|i| !i.ends_with("pb")), "{seen:?}");
    assert!(seen.contains(&"Organization/org1".to_owned()), "{seen:?}");
    // Writes into another compartment: 403; into one's own: 201.
    let mr_b = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"text": "y"}, "subject": {"reference": "Patient/pb"}});
    let (s, body) = call(&app, "POST", "/fhir/MedicationRequest", &a, Some(&mr_b)).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["issue"][0]["code"], "forbidden");
    let mut mine = mr_b.clone();
    mine["subject"]["reference"] = json!("Patient/pa");
    let (s, _) = call(&app, "POST", "/fhir/MedicationRequest", &a, Some(&mine)).await;
    assert_eq!(s, 201);
    let mut moved = mine.clone();
    moved["id"] = json!("mr-pa");
    moved["subject"]["reference"] = json!("Patient/pb");
    let (s, _) = call(
        &app,
        "PUT",
        "/fhir/MedicationRequest/mr-pa",
        &a,
        Some(&moved),
    )
    .await;
    assert_eq!(s, 403);
    let mut over = mine.clone();
    over["id"] = json!("mr-pb");
    over["subject"]["reference"] = json!("Patient/pa");
    let (s, _) = call(
        &app,
        "PUT",
        "/fhir/MedicationRequest/mr-pb",
        &a,
        Some(&over),
    )
    .await;
    let (s2, _) = {
        let mut absent = over.clone();
        absent["id"] = json!("mr-none");
        call(
            &app,
            "PUT",
            "/fhir/MedicationRequest/mr-none",
            &a,
            Some(&absent),
        )
        .await
    };
    assert_eq!((s, s2), (403, 403));
    // Scope letters: no delete.
    let (s, _) = call(&app, "DELETE", "/fhir/MedicationRequest/mr-pa", &a, None).await;
    assert_eq!(s, 403);
    // Transaction with one forbidden entry fails whole.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": mine, "request": {"method": "POST", "url": "MedicationRequest"}},
        {"resource": mr_b, "request": {"method": "POST", "url": "MedicationRequest"}}]});
    let (s, _) = call(&app, "POST", "/fhir", &a, Some(&tx)).await;
    assert_eq!(s, 403);
    let (_, bundle) = call(
        &app,
        "GET",
        "/fhir/MedicationRequest?_summary=count",
        &system,
        None,
    )
    .await;
    assert_eq!(bundle["total"], 3);
    // NHS number patient context; low proofing refused for record access.
    let by_nhs = token(
        k,
        json!({"scope": "patient/*.rs", "nhs_number": "9000000017", "identity_proofing_level": "P9"}),
    );
    let (_, bundle) = call(&app, "GET", "/fhir/MedicationRequest", &by_nhs, None).await;
    assert_eq!(entry_ids(&bundle), ["MedicationRequest/mr-pb"]);
    let low = token(
        k,
        json!({"scope": "patient/*.rs", "patient": "pa", "vot": "P5.Cp.Cd"}),
    );
    let (s, body) = call(&app, "GET", "/fhir/MedicationRequest", &low, None).await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = call(&app, "GET", "/fhir/Organization/org1", &low, None).await;
    assert_eq!(s, 200);
    let none = token(k, json!({"scope": "patient/*.rs"}));
    let (s, _) = call(&app, "GET", "/fhir/Organization/org1", &none, None).await;
    assert_eq!(s, 403);
    // A user token sees across patients within its scopes.
    let user = token(
        k,
        json!({"scope": "user/MedicationRequest.rs", "fhirUser": "Practitioner/dr1"}),
    );
    let (_, bundle) = call(
        &app,
        "GET",
        "/fhir/MedicationRequest?_summary=count",
        &user,
        None,
    )
    .await;
    assert_eq!(bundle["total"], 3);
    let (s, _) = call(&app, "GET", "/fhir/Patient/pa", &user, None).await;
    assert_eq!(s, 403);
    // Bad tokens: 401 invalid_token.
    for bad in [
        "garbage",
        "a.b.c",
        &format!("{}x", &system[..system.len() - 2]),
    ] {
        let (s, _) = call(&app, "GET", "/fhir/Patient/pa", bad, None).await;
        assert_eq!(s, 401, "{bad}");
    }
}

mod compartments_hold {
    #[actix_rt::test]
    async fn sqlite() {
        let k = super::keys();
        let app = crate::helpers::TestApp::sqlite_with(super::adjust(&k)).await;
        super::compartments_hold(app, &k).await;
    }
    #[actix_rt::test]
    async fn postgres() {
        let k = super::keys();
        if let Some(app) = crate::helpers::TestApp::postgres_with(super::adjust(&k)).await {
            super::compartments_hold(app, &k).await;
        }
    }
}
