//! SMART Backend Services against the real server: discovery, the token
//! endpoint, our JWKS, CapabilityStatement.rest.security, and the server's
//! signing key across restarts and rotations. Client keys are minted and
//! assertions signed with the openssl crate directly (not the server's jwt
//! module), so a bug there cannot hide itself here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fhirbridge::auth::config::{AuthMode, ClientSettings};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use serde_json::{json, Value};

use crate::helpers::{patient, spawn_server, TestApp};

const CLIENT: &str = "gp-system-a";
const ALLOWED: &str = "system/*.rs system/Patient.cu";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn b64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn unb64url(s: &str) -> Vec<u8> {
    let mut std = s.replace('-', "+").replace('_', "/");
    while std.len() % 4 != 0 {
        std.push('=');
    }
    openssl::base64::decode_block(&std).expect("base64url")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A client's key pair.
struct ClientKey {
    key: PKey<Private>,
    kid: String,
    alg: &'static str,
}

impl ClientKey {
    fn ec(kid: &str) -> ClientKey {
        let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        ClientKey {
            key: PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap(),
            kid: kid.into(),
            alg: "ES384",
        }
    }

    fn rsa(kid: &str) -> ClientKey {
        ClientKey {
            key: PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
            kid: kid.into(),
            alg: "RS384",
        }
    }

    fn jwk(&self) -> Value {
        if let Ok(ec) = self.key.ec_key() {
            let mut ctx = BigNumContext::new().unwrap();
            let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .unwrap();
            json!({"kty": "EC", "crv": "P-384", "kid": self.kid, "alg": self.alg, "use": "sig",
                "x": b64url(&x.to_vec_padded(48).unwrap()),
                "y": b64url(&y.to_vec_padded(48).unwrap())})
        } else {
            let rsa = self.key.rsa().unwrap();
            json!({"kty": "RSA", "kid": self.kid, "alg": self.alg, "use": "sig",
                "n": b64url(&rsa.n().to_vec()), "e": b64url(&rsa.e().to_vec())})
        }
    }

    /// A compact JWS of `claims` with this key (`header` extras merged).
    fn sign_with(&self, claims: &Value, header: Value) -> String {
        let mut h = json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"});
        for (k, v) in header.as_object().unwrap() {
            h[k] = v.clone();
        }
        let input = format!(
            "{}.{}",
            b64url(h.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signer = Signer::new(MessageDigest::sha384(), &self.key).unwrap();
        signer.update(input.as_bytes()).unwrap();
        let der = signer.sign_to_vec().unwrap();
        let sig = if self.alg == "ES384" {
            let s = EcdsaSig::from_der(&der).unwrap();
            let mut raw = s.r().to_vec_padded(48).unwrap();
            raw.extend(s.s().to_vec_padded(48).unwrap());
            raw
        } else {
            der
        };
        format!("{input}.{}", b64url(&sig))
    }
}

/// The client's keys and its JWKS file.
struct Client {
    ec: ClientKey,
    rsa: ClientKey,
    jwks: PathBuf,
    _dir: tempfile::TempDir,
}

fn client() -> Client {
    let dir = tempfile::tempdir().unwrap();
    let ec = ClientKey::ec("client-ec-1");
    let rsa = ClientKey::rsa("client-rsa-1");
    let jwks = dir.path().join("gp-system-a.jwks.json");
    std::fs::write(&jwks, json!({"keys": [ec.jwk(), rsa.jwk()]}).to_string()).unwrap();
    Client {
        ec,
        rsa,
        jwks,
        _dir: dir,
    }
}

fn adjust(c: &Client) -> impl FnOnce(&mut fhirbridge::config::Settings) + '_ {
    move |s| {
        s.auth.mode = Some(AuthMode::Required);
        s.auth.clients = vec![ClientSettings {
            client_id: CLIENT.into(),
            jwks_file: Some(c.jwks.display().to_string()),
            jwks_uri: None,
            scopes: ALLOWED.into(),
            ..ClientSettings::default()
        }];
    }
}

/// Assertion claims for `base` (the server's origin), patched by `extra`
/// (`null` removes a claim).
fn claims(base: &str, extra: Value) -> Value {
    let mut c = json!({"iss": CLIENT, "sub": CLIENT, "aud": format!("{base}/auth/token"),
        "exp": now() + 240, "jti": uuid::Uuid::new_v4().to_string()});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn form(assertion: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".into()),
        ("client_assertion_type", ASSERTION_TYPE.into()),
        ("client_assertion", assertion.into()),
        ("scope", scope.into()),
    ]
}

async fn post_form(
    base: &str,
    pairs: &[(&str, String)],
) -> (u16, Value, awc::http::header::HeaderMap) {
    let body = serde_urlencoded::to_string(pairs).unwrap();
    post_raw(base, "application/x-www-form-urlencoded", body.into_bytes()).await
}

async fn post_raw(
    base: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value, awc::http::header::HeaderMap) {
    let mut res = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
        .post(format!("{base}/auth/token"))
        .insert_header(("Content-Type", content_type))
        .send_body(body)
        .await
        .expect("token request");
    let bytes = res.body().limit(1 << 20).await.expect("body");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (res.status().as_u16(), v, res.headers().clone())
}

/// A token for `scope` (asserting 200).
async fn token(base: &str, key: &ClientKey, scope: &str) -> Value {
    token_at(base, base, key, scope).await
}

/// A token from the server at `base` whose public origin is `public`.
async fn token_at(base: &str, public: &str, key: &ClientKey, scope: &str) -> Value {
    let a = key.sign_with(&claims(public, json!({})), json!({}));
    let (status, v, headers) = post_form(base, &form(&a, scope)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        headers.get("cache-control").and_then(|h| h.to_str().ok()),
        Some("no-store")
    );
    assert!(headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json")));
    v
}

async fn with_token(
    app: &TestApp,
    method: &str,
    path: &str,
    tok: &str,
    body: Option<&Value>,
) -> u16 {
    let auth = format!("Bearer {tok}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", "application/fhir+json"));
    }
    app.request(
        method,
        path,
        &headers,
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
    .status
}

fn assert_oauth_error(status: u16, v: &Value, want_status: u16, want: &str) {
    assert_eq!(
        (status, v["error"].as_str()),
        (want_status, Some(want)),
        "{v}"
    );
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{v}"
    );
    assert!(
        v.get("resourceType").is_none(),
        "an OAuth error, not an OperationOutcome: {v}"
    );
}

// ---- The flow, on both backends ----

async fn backend_flow(app: TestApp) {
    let base = app.base.clone();
    let c = client_of(&app);
    // Writes with a token for system/Patient.c only.
    let w = token(&base, &c.ec, "system/Patient.c").await;
    assert_eq!(w["token_type"], "bearer");
    assert_eq!(w["scope"], "system/Patient.c");
    assert_eq!(w["expires_in"], 300);
    let wt = w["access_token"].as_str().unwrap();
    assert_eq!(
        with_token(
            &app,
            "POST",
            "/fhir/Patient",
            wt,
            Some(&patient("9000000009", "Tok"))
        )
        .await,
        201
    );
    assert_eq!(
        with_token(&app, "GET", "/fhir/Patient", wt, None).await,
        403,
        "c is not s"
    );
    // Reads with an RS384-signed assertion's token.
    let r = token(&base, &c.rsa, "system/Patient.rs").await;
    let rt = r["access_token"].as_str().unwrap();
    let res = app
        .get_with(
            "/fhir/Patient?family=Tok",
            &[("Authorization", &format!("Bearer {rt}"))],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["total"], 1);
    assert_eq!(
        with_token(&app, "GET", "/fhir/Observation", rt, None).await,
        403
    );
    assert_eq!(
        with_token(
            &app,
            "POST",
            "/fhir/Patient",
            rt,
            Some(&patient("9000000017", "No"))
        )
        .await,
        403
    );
    // Without a token: 401.
    assert_eq!(app.get("/fhir/Patient").await.status, 401);
}

/// The test app keeps its client alive (the JWKS file) through this map.
fn client_of(app: &TestApp) -> std::sync::Arc<Client> {
    CLIENTS
        .lock()
        .unwrap()
        .get(&app.base)
        .cloned()
        .expect("client registered")
}

static CLIENTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Client>>>,
> = std::sync::LazyLock::new(Default::default);

async fn started(postgres: bool) -> Option<TestApp> {
    let c = std::sync::Arc::new(client());
    let app = if postgres {
        TestApp::postgres_with(adjust(&c)).await?
    } else {
        TestApp::sqlite_with(adjust(&c)).await
    };
    CLIENTS.lock().unwrap().insert(app.base.clone(), c);
    Some(app)
}

#[actix_rt::test]
async fn flow_sqlite() {
    backend_flow(started(false).await.unwrap()).await
}

#[actix_rt::test]
async fn flow_postgres() {
    if let Some(app) = started(true).await {
        backend_flow(app).await
    }
}

// ---- SQLite only: the endpoint's answers ----

#[actix_rt::test]
async fn scopes_are_requested_within_allowed() {
    let app = started(false).await.unwrap();
    let c = client_of(&app);
    let v = token(&app.base, &c.ec, "system/*.cruds patient/*.rs openid").await;
    assert_eq!(v["scope"], "system/*.rs system/Patient.cu");
    let v = token(
        &app.base,
        &c.ec,
        "system/Patient.read system/Observation.rs",
    )
    .await;
    assert_eq!(v["scope"], "system/Patient.rs system/Observation.rs");
    for scope in [
        "patient/*.rs",
        "system/Observation.cud",
        "system/Nope.rs",
        "system/*.sr",
    ] {
        let a = c.ec.sign_with(&claims(&app.base, json!({})), json!({}));
        let (s, v, _) = post_form(&app.base, &form(&a, scope)).await;
        assert_oauth_error(s, &v, 400, "invalid_scope");
    }
}

#[actix_rt::test]
async fn refusals_follow_rfc_6749() {
    let app = started(false).await.unwrap();
    let c = client_of(&app);
    let base = app.base.as_str();
    let scope = "system/*.rs";

    // Replay: the same assertion twice.
    let a = c.ec.sign_with(&claims(base, json!({})), json!({}));
    assert_eq!(post_form(base, &form(&a, scope)).await.0, 200);
    let (s, v, h) = post_form(base, &form(&a, scope)).await;
    assert_oauth_error(s, &v, 401, "invalid_client");
    assert_eq!(
        h.get("cache-control").and_then(|h| h.to_str().ok()),
        Some("no-store")
    );

    for (extra, why) in [
        (
            json!({"exp": now() + 600}),
            "exp more than five minutes ahead",
        ),
        (json!({"exp": now() - 120}), "expired"),
        (json!({"exp": null}), "no exp"),
        (json!({"jti": null}), "no jti"),
        (
            json!({"aud": "https://elsewhere.test/auth/token"}),
            "wrong aud",
        ),
        (
            json!({"iss": "stranger", "sub": "stranger"}),
            "unknown client",
        ),
        (json!({"sub": "someone-else"}), "sub is not the client"),
    ] {
        let a = c.ec.sign_with(&claims(base, extra), json!({}));
        let (s, v, _) = post_form(base, &form(&a, scope)).await;
        assert_eq!(v["error"], "invalid_client", "{why}: {v}");
        assert_oauth_error(s, &v, 401, "invalid_client");
    }
    // Another key claiming the client's kid: the signature fails.
    let impostor = ClientKey::ec("client-ec-1");
    let a = impostor.sign_with(&claims(base, json!({})), json!({}));
    let (s, v, _) = post_form(base, &form(&a, scope)).await;
    assert_oauth_error(s, &v, 401, "invalid_client");
    // A jku the client did not register.
    let a = c.ec.sign_with(
        &claims(base, json!({})),
        json!({"jku": "https://attacker.test/jwks.json"}),
    );
    let (s, v, _) = post_form(base, &form(&a, scope)).await;
    assert_oauth_error(s, &v, 401, "invalid_client");
    // alg none and HS256 never authenticate.
    for alg in ["none", "HS256"] {
        let h = b64url(
            json!({"alg": alg, "kid": "client-ec-1"})
                .to_string()
                .as_bytes(),
        );
        let p = b64url(claims(base, json!({})).to_string().as_bytes());
        let (s, v, _) = post_form(base, &form(&format!("{h}.{p}.AAAA"), scope)).await;
        assert_oauth_error(s, &v, 401, "invalid_client");
    }

    let fresh = || c.ec.sign_with(&claims(base, json!({})), json!({}));
    let mut p = form(&fresh(), scope);
    p[0].1 = "password".into();
    let (s, v, _) = post_form(base, &p).await;
    assert_oauth_error(s, &v, 400, "unsupported_grant_type");
    let mut p = form(&fresh(), scope);
    p.remove(0);
    let (s, v, _) = post_form(base, &p).await;
    assert_oauth_error(s, &v, 400, "invalid_request");
    let mut p = form(&fresh(), scope);
    p.push(("scope", "system/Patient.rs".into()));
    let (s, v, _) = post_form(base, &p).await;
    assert_oauth_error(s, &v, 400, "invalid_request");
    let mut p = form(&fresh(), scope);
    p.remove(3);
    let (s, v, _) = post_form(base, &p).await;
    assert_oauth_error(s, &v, 400, "invalid_request");
    let mut p = form(&fresh(), scope);
    p[1].1 = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer".into();
    let (s, v, _) = post_form(base, &p).await;
    assert_oauth_error(s, &v, 401, "invalid_client");
    let p = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("scope", scope.to_owned()),
    ];
    let (s, v, _) = post_form(base, &p).await;
    assert_oauth_error(s, &v, 401, "invalid_client");

    // Not a form, junk, too large: 400, never a 500.
    let body = serde_json::to_vec(&json!({"grant_type": "client_credentials"})).unwrap();
    let (s, v, _) = post_raw(base, "application/json", body).await;
    assert_oauth_error(s, &v, 400, "invalid_request");
    let (s, v, _) = post_raw(
        base,
        "application/x-www-form-urlencoded",
        vec![0xff, b'=', 0xfe],
    )
    .await;
    assert!(s == 400 && v["error"].is_string(), "{s} {v}");
    let huge = format!(
        "grant_type=client_credentials&scope={}",
        "a".repeat(100_000)
    );
    let (s, v, _) = post_raw(base, "application/x-www-form-urlencoded", huge.into_bytes()).await;
    assert_oauth_error(s, &v, 400, "invalid_request");

    // Counted by reason; nothing of the assertion in the metrics.
    let m = app.get("/metrics").await.text();
    for reason in [
        "token_replay",
        "token_exp_too_far",
        "token_unknown_client",
        "token_signature",
    ] {
        assert!(
            m.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted:\n{m}"
        );
    }
    assert!(
        !m.contains(&a[..40]),
        "the assertion leaked into the metrics"
    );
}

#[actix_rt::test]
async fn discovery_and_capability_statement() {
    let app = started(false).await.unwrap();
    let c = client_of(&app);
    let r = app
        .get_with(
            "/fhir/.well-known/smart-configuration",
            &[("Accept", "application/fhir+xml")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let d = r.json();
    let base = &app.base;
    assert_eq!(d["issuer"], format!("{base}/auth"));
    assert_eq!(d["token_endpoint"], format!("{base}/auth/token"));
    assert_eq!(d["jwks_uri"], format!("{base}/auth/jwks"));
    assert_eq!(d["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    let algs = d["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(
        algs.contains(&json!("RS384")) && algs.contains(&json!("ES384")),
        "{d}"
    );
    let caps = d["capabilities"].as_array().unwrap();
    for cap in [
        "client-confidential-asymmetric",
        "permission-v1",
        "permission-v2",
    ] {
        assert!(caps.contains(&json!(cap)), "{cap}: {d}");
    }
    // No issuer configured: no patient/ or user/ tokens can exist here.
    assert!(!caps.contains(&json!("permission-patient")), "{d}");
    let scopes = d["scopes_supported"].as_array().unwrap();
    assert!(scopes.contains(&json!("system/*.rs")), "{d}");
    assert!(
        scopes
            .iter()
            .all(|s| s.as_str().unwrap().starts_with("system/")),
        "{d}"
    );
    for absent in [
        "authorization_endpoint",
        "response_types_supported",
        "code_challenge_methods_supported",
    ] {
        assert!(d.get(absent).is_none(), "{absent} advertised: {d}");
    }
    // The advertised endpoint is the one that works.
    let a = c.ec.sign_with(
        &claims(base, json!({"aud": d["token_endpoint"].clone()})),
        json!({}),
    );
    assert_eq!(post_form(base, &form(&a, "system/*.rs")).await.0, 200);

    let m = app.get("/fhir/metadata").await;
    assert_eq!(m.status, 200);
    let sec = &m.json()["rest"][0]["security"];
    assert_eq!(
        sec["service"][0]["coding"][0],
        json!({"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"})
    );
    let ext = &sec["extension"][0];
    assert_eq!(
        ext["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    assert_eq!(
        ext["extension"],
        json!([{"url": "token", "valueUri": d["token_endpoint"]}])
    );
    assert!(sec["description"]
        .as_str()
        .is_some_and(|s| s.contains("SMART")));
    assert_eq!(sec["cors"], false, "no CORS origins configured: {sec}");
}

#[actix_rt::test]
async fn with_access_control_off_nothing_is_advertised() {
    let app = TestApp::sqlite_with(|s| {
        s.server.cors.allowed_origins = vec!["https://app.test".into()];
    })
    .await;
    for path in ["/fhir/.well-known/smart-configuration", "/auth/jwks"] {
        let r = app.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.text().contains("Access control is off"),
            "{path}: {}",
            r.text()
        );
    }
    let (s, _, _) = post_form(&app.base, &form("x", "system/*.rs")).await;
    assert_eq!(s, 404);
    let sec = app.get("/fhir/metadata").await.json()["rest"][0]["security"].clone();
    assert_eq!(sec["cors"], true, "CORS is configured: {sec}");
    assert!(sec.get("service").is_none(), "{sec}");
    assert!(sec.get("extension").is_none(), "{sec}");
    assert!(
        sec["description"]
            .as_str()
            .is_some_and(|d| d.contains("Access control is off")),
        "{sec}"
    );
}

/// Verifies `token` (ES384) against `jwks` with openssl alone; its claims.
fn verify_with_jwks(token: &str, jwks: &Value) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&unb64url(parts[0])).unwrap();
    assert_eq!(header["alg"], "ES384");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} not in the JWKS {jwks}", header["kid"]));
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("EC"), Some("P-384"))
    );
    assert!(jwk.get("d").is_none(), "a private key is published: {jwk}");
    let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    let x = BigNum::from_slice(&unb64url(jwk["x"].as_str().unwrap())).unwrap();
    let y = BigNum::from_slice(&unb64url(jwk["y"].as_str().unwrap())).unwrap();
    let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y).unwrap();
    let key = PKey::from_ec_key(ec).unwrap();
    let sig = unb64url(parts[2]);
    assert_eq!(sig.len(), 96);
    let der = EcdsaSig::from_private_components(
        BigNum::from_slice(&sig[..48]).unwrap(),
        BigNum::from_slice(&sig[48..]).unwrap(),
    )
    .unwrap()
    .to_der()
    .unwrap();
    let mut v = Verifier::new(MessageDigest::sha384(), &key).unwrap();
    v.update(format!("{}.{}", parts[0], parts[1]).as_bytes())
        .unwrap();
    assert!(
        v.verify(&der).unwrap(),
        "the token does not verify with the JWKS"
    );
    serde_json::from_slice(&unb64url(parts[1])).unwrap()
}

fn kid_of(token: &str) -> String {
    let header: Value =
        serde_json::from_slice(&unb64url(token.split('.').next().unwrap())).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn the_jwks_verifies_issued_tokens() {
    let app = started(false).await.unwrap();
    let c = client_of(&app);
    let t = token(&app.base, &c.ec, "system/Patient.rs").await;
    let t = t["access_token"].as_str().unwrap();
    let r = app.get("/auth/jwks").await;
    assert_eq!(r.status, 200);
    let jwks = r.json();
    let claims = verify_with_jwks(t, &jwks);
    assert_eq!(claims["iss"], format!("{}/auth", app.base));
    assert_eq!(claims["aud"], format!("{}/fhir", app.base));
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some(CLIENT), Some(CLIENT))
    );
    assert_eq!(claims["scope"], "system/Patient.rs");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((iat - now()).abs() < 60 && exp - iat == 300, "{claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    // Tampering breaks it (the check above can fail).
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    parts[1] = b64url(
        json!({"iss": claims["iss"], "scope": "system/*.cruds"})
            .to_string()
            .as_bytes(),
    );
    let forged = parts.join(".");
    assert_eq!(
        with_token(&app, "GET", "/fhir/Patient", &forged, None).await,
        401
    );
}

// ---- The key on disk: restarts and rotation (the real binary) ----

/// The configured public origin of the restarted servers (their ports
/// change; their issuer and audience must not).
const PUBLIC: &str = "https://fhir.test";

fn config_file(dir: &Path, jwks: &Path) -> PathBuf {
    let config = dir.join("token.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbase_url = \"{PUBLIC}/fhir\"\n\
             [validation]\nenabled = false\nauto_install = false\n\
             [auth]\nmode = \"required\"\n\
             [[auth.clients]]\nclient_id = \"{CLIENT}\"\njwks_file = \"{}\"\nscopes = \"{ALLOWED}\"\n",
            jwks.display()
        ),
    )
    .unwrap();
    config
}

async fn jwks_kids(base: &str) -> Vec<String> {
    let mut r = awc::Client::default()
        .get(format!("{base}/auth/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&r.body().await.unwrap()).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn status_with(base: &str, tok: &str) -> u16 {
    awc::Client::default()
        .get(format!("{base}/fhir/Patient"))
        .insert_header(("Authorization", format!("Bearer {tok}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn rotate(config: &Path, db: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
        .args(["rotate-signing-key", "--database", db, "--config"])
        .arg(config)
        .output()
        .expect("run rotate-signing-key");
    assert!(
        out.status.success(),
        "rotate-signing-key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[actix_rt::test]
async fn the_key_survives_restarts_and_rotation_keeps_old_tokens() {
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &c.jwks);
    let db = format!("sqlite://{}", dir.path().join("fb.db").display());
    let ready = Duration::from_secs(30);

    let first = spawn_server(&db, Some(&config), ready).await;
    let old = token_at(&first.base, PUBLIC, &c.ec, "system/Patient.rs").await;
    let old = old["access_token"].as_str().unwrap().to_owned();
    let k1 = kid_of(&old);
    assert_eq!(jwks_kids(&first.base).await, vec![k1.clone()]);
    assert_eq!(status_with(&first.base, &old).await, 200);
    let key_file = dir.path().join("server-signing-key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file)
            .expect("the key is beside the database")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    drop(first);

    // Restarted: the same key, and the token from before still works.
    let second = spawn_server(&db, Some(&config), ready).await;
    assert_eq!(jwks_kids(&second.base).await, vec![k1.clone()]);
    assert_eq!(status_with(&second.base, &old).await, 200);

    // Rotated while running: new tokens get the new key, the old one verifies.
    let said = rotate(&config, &db);
    assert!(said.contains(&k1), "{said}");
    let kids = jwks_kids(&second.base).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(kids[1], k1);
    let k2 = kids[0].clone();
    let new = token_at(&second.base, PUBLIC, &c.ec, "system/Patient.rs").await;
    let new = new["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(&new), k2);
    assert_eq!(status_with(&second.base, &new).await, 200);
    drop(second);

    // And after a restart.
    let third = spawn_server(&db, Some(&config), ready).await;
    assert_eq!(jwks_kids(&third.base).await, [k2.clone(), k1.clone()]);
    assert_eq!(status_with(&third.base, &old).await, 200);
    assert_eq!(status_with(&third.base, &new).await, 200);

    // A second rotation drops the first key: its token is refused by a
    // server that has not verified it before (a running one remembers
    // the tokens it verified until they expire).
    rotate(&config, &db);
    let kids = jwks_kids(&third.base).await;
    assert!(!kids.contains(&k1) && kids[1] == k2, "{kids:?}");
    drop(third);
    let fourth = spawn_server(&db, Some(&config), ready).await;
    assert_eq!(status_with(&fourth.base, &old).await, 401);
    assert_eq!(status_with(&fourth.base, &new).await, 200);
}
