//! Access control at the edge (issue 12 points 1, 2, 5, 7 and "Bad input"):
//! which endpoints are public, bearer token verification (algorithms, bad
//! tokens, time claims and leeway, audience, issuer, transport), SMART
//! scopes mapped onto every interaction, patient context and identity
//! proofing, discovery and our own SMART Backend Services token endpoint,
//! auth-failure metrics, misbehaving JWKS endpoints, and the real binary's
//! safe defaults and silent log. Keys and tokens come from
//! `auth_support` (openssl directly); the compartment leak suite is
//! `leaks.rs`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth_support::*;
use crate::helpers::{nhs_number, spawn_server_opts, ServeOpts, TestApp};

async fn app() -> TestApp {
    TestApp::sqlite_with(required).await
}

fn patient(id: &str, nhs: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
           "identifier": [{"system": NHS_SYSTEM, "value": nhs}],
           "name": [{"family": "Authfamily", "given": ["Test"]}]})
}

fn obs(id: &str, subject: &str, category: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "category": [{"coding": [{
               "system": "http://terminology.hl7.org/CodeSystem/observation-category",
               "code": category}]}],
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "identifier": [{"system": "urn:test:scope", "value": id}],
           "subject": {"reference": subject}})
}

fn without_id(mut v: Value) -> Value {
    v.as_object_mut().expect("object").remove("id");
    v
}

// ------------------------------------------------------------ public / 401

#[actix_rt::test]
async fn public_endpoints_need_no_token_and_everything_else_does() {
    let app = app().await;
    for path in [
        "/",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/fhir/metadata",
        "/fhir/.well-known/smart-configuration",
        "/auth/jwks",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 200, "GET {path} without a token: {}", r.text());
    }
    // The token endpoint is public: a bad request is a 400 from it, not a 401.
    let r = app
        .request(
            "POST",
            "/auth/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(b"grant_type=client_credentials".to_vec()),
        )
        .await;
    assert!(
        r.status == 400 || r.status == 401 && r.header("WWW-Authenticate").is_none(),
        "POST /auth/token: {} {}",
        r.status,
        r.text()
    );
    assert!(r.json()["error"].is_string(), "{}", r.text());

    app.admin().upsert(&patient("p1", &nhs_number(1))).await;
    for (method, path) in [
        ("GET", "/fhir/Patient"),
        ("GET", "/fhir/Patient/p1"),
        ("GET", "/fhir/Patient/p1/_history"),
        ("GET", "/fhir/Patient/p1/_history/1"),
        ("GET", "/fhir/Patient/_history"),
        ("GET", "/fhir/_history"),
        ("GET", "/fhir/Patient/p1/Observation"),
        ("GET", "/fhir/Patient/p1/$validate"),
        ("GET", "/fhir/Patient/nonexistent"),
        ("GET", "/fhir/NotAType/x"),
        ("DELETE", "/fhir/Patient/p1"),
    ] {
        let r = app.request(method, path, &[], None).await;
        assert_no_token(&r, &format!("{method} {path}"));
    }
    for (method, path) in [
        ("POST", "/fhir/Patient"),
        ("PUT", "/fhir/Patient/p1"),
        ("POST", "/fhir"),
        ("POST", "/fhir/Patient/$validate"),
    ] {
        let body = if path == "/fhir" {
            json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": "Patient/p1"}}]})
        } else {
            patient("p1", &nhs_number(1))
        };
        let r = app.send_json(method, path, &body, &[]).await;
        assert_no_token(&r, &format!("{method} {path}"));
    }
    let r = app
        .request(
            "POST",
            "/fhir/Patient/_search",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(b"_id=p1".to_vec()),
        )
        .await;
    assert_no_token(&r, "POST _search");
    // Nothing was written by the refused requests.
    let p = app.admin().get("/fhir/Patient/p1").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.json()["meta"]["versionId"], "1");
}

// ------------------------------------------------------------ tokens

#[actix_rt::test]
async fn every_algorithm_verifies_and_a_forged_signature_does_not() {
    let app = app().await;
    let f = &*FIXTURE;
    for key in &f.smart {
        let good = key.token(&claims("system/*.rs"));
        let r = app.bearer(&good).get("/fhir/Patient").await;
        assert_eq!(r.status, 200, "{}: {}", key.alg, r.text());
        // The same header and signature over other claims.
        let parts: Vec<&str> = good.split('.').collect();
        let other = b64url(claims("system/*.cruds").to_string().as_bytes());
        let forged = format!("{}.{other}.{}", parts[0], parts[2]);
        assert_invalid_token(
            &app.bearer(&forged).get("/fhir/Patient").await,
            &format!("{} forged", key.alg),
        );
        // A truncated signature.
        let cut = &good[..good.len() - 8];
        assert_invalid_token(
            &app.bearer(cut).get("/fhir/Patient").await,
            &format!("{} truncated", key.alg),
        );
    }
    app.admin().upsert(&patient("p77", &nhs_number(77))).await;
    let nhs = f.nhs_token(&nhs_number(77), "P9.Cp.Cd", "patient/Patient.rs");
    let r = app.bearer(&nhs).get("/fhir/Patient/p77").await;
    assert_eq!(r.status, 200, "NHS issuer ES256: {}", r.text());
}

#[actix_rt::test]
async fn bad_tokens_are_invalid_token() {
    let app = app().await;
    let f = &*FIXTURE;
    let c = claims("system/*.rs");
    let rs = f.smart_key("RS256");
    let es256 = f.smart_key("ES256");
    let es384 = f.smart_key("ES384");
    let good = rs.token(&c);
    let parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let enc = |v: &Value| b64url(v.to_string().as_bytes());
    // ES256 with a DER signature instead of JOSE's raw r||s.
    let der_es256 = {
        let header = json!({"alg": "ES256", "kid": es256.kid, "typ": "JWT"});
        let input = format!("{}.{}", enc(&header), enc(&c));
        let raw = es256.signature(input.as_bytes());
        let (r, s) = raw.split_at(32);
        let sig = openssl::ecdsa::EcdsaSig::from_private_components(
            openssl::bn::BigNum::from_slice(r).unwrap(),
            openssl::bn::BigNum::from_slice(s).unwrap(),
        )
        .unwrap()
        .to_der()
        .unwrap();
        format!("{input}.{}", b64url(&sig))
    };
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        ("three empty parts", "..".into()),
        ("three junk parts", "a.b.c".into()),
        ("four parts", format!("{good}.{}", parts[2])),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("empty signature", format!("{}.{}.", parts[0], parts[1])),
        (
            "signature not base64url",
            format!("{}.{}.!!!*", parts[0], parts[1]),
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", b64url(b"not json"), parts[1], parts[2]),
        ),
        (
            "claims not JSON",
            format!("{}.{}.{}", parts[0], b64url(b"{oops"), parts[2]),
        ),
        (
            "claims an array",
            format!("{}.{}.{}", parts[0], b64url(b"[1,2]"), parts[2]),
        ),
        ("alg none", none_token(&c)),
        (
            "alg none with a real signature",
            format!(
                "{}.{}.{}",
                enc(&json!({"alg": "none", "kid": rs.kid})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "alg missing",
            format!(
                "{}.{}.{}",
                enc(&json!({"kid": rs.kid, "typ": "JWT"})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "HS256 keyed with the RSA public key",
            hs256_token(&rs.kid, &c, &rs.public_pem()),
        ),
        (
            "HS256 keyed with a guess",
            hs256_token(&rs.kid, &c, b"secret"),
        ),
        ("PS256", {
            let h = json!({"alg": "PS256", "kid": rs.kid});
            format!("{}.{}.{}", enc(&h), parts[1], parts[2])
        }),
        ("unknown kid", f.stranger.token(&c)),
        (
            "known kid, another key's signature",
            f.stranger
                .sign_raw(&json!({"alg": "RS256", "kid": rs.kid, "typ": "JWT"}), &c),
        ),
        (
            "RS256 header naming an EC key",
            rs.sign_raw(&json!({"alg": "RS256", "kid": es256.kid}), &c),
        ),
        (
            "ES256 header naming the P-384 key",
            es384.sign_raw(&json!({"alg": "ES256", "kid": es384.kid}), &c),
        ),
        ("ES256 DER signature", der_es256),
        (
            "unknown critical header",
            rs.sign_raw(
                &json!({"alg": "RS256", "kid": rs.kid, "crit": ["exp"], "exp": 1}),
                &c,
            ),
        ),
        (
            "kid not a string",
            rs.sign_raw(&json!({"alg": "RS256", "kid": 7}), &c),
        ),
        ("spaces inside", format!("{} {}", parts[0], parts[1])),
        ("no token after Bearer", String::new()),
    ];
    for (what, token) in &cases {
        let r = app
            .request(
                "GET",
                "/fhir/Patient",
                &[("Authorization", &format!("Bearer {token}"))],
                None,
            )
            .await;
        assert_invalid_token(&r, what);
        assert!(
            token.is_empty() || !r.text().contains(token.as_str()),
            "{what}: the token is echoed"
        );
    }
    // The scheme alone.
    let r = app
        .request("GET", "/fhir/Patient", &[("Authorization", "Bearer")], None)
        .await;
    assert_invalid_token(&r, "Bearer without a token");
    // The good token itself works (so every case above failed for its flaw).
    assert_eq!(app.bearer(&good).get("/fhir/Patient").await.status, 200);
}

#[actix_rt::test]
async fn time_claims_have_sixty_seconds_leeway() {
    let app = app().await;
    let f = &*FIXTURE;
    let t = now();
    let check = |changes: Value, ok: bool, what: &'static str| {
        let token = f.token("system/*.rs", changes);
        let app = &app;
        async move {
            let r = app.bearer(&token).get("/fhir/Patient").await;
            if ok {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
            } else {
                assert_invalid_token(&r, what);
            }
        }
    };
    check(json!({"exp": t - 30}), true, "expired 30 s ago").await;
    check(json!({"exp": t - 120}), false, "expired 120 s ago").await;
    check(
        json!({"exp": t - 3600, "iat": t - 7200}),
        false,
        "expired an hour ago",
    )
    .await;
    check(json!({"nbf": t + 30}), true, "nbf 30 s ahead").await;
    check(json!({"nbf": t + 120}), false, "nbf 120 s ahead").await;
    check(json!({"iat": t + 30}), true, "iat 30 s ahead").await;
    check(json!({"iat": t + 120}), false, "iat 120 s ahead").await;
    check(json!({"exp": null}), false, "no exp").await;
    check(json!({"exp": "tomorrow"}), false, "exp not a number").await;
    // A cached verification does not outlive the token: valid now (inside
    // the leeway), refused once the leeway has passed.
    let token = f.token("system/*.rs", json!({"exp": now() - 57}));
    let r = app.bearer(&token).get("/fhir/Patient").await;
    assert_eq!(r.status, 200, "{}", r.text());
    actix_rt::time::sleep(Duration::from_secs(5)).await;
    assert_invalid_token(
        &app.bearer(&token).get("/fhir/Patient").await,
        "the same token after its leeway ran out",
    );
}

#[actix_rt::test]
async fn audience_and_issuer_must_match() {
    let app = app().await;
    let f = &*FIXTURE;
    let ok = |changes: Value| f.token("system/*.rs", changes);
    for (changes, accepted, what) in [
        (json!({"aud": AUDIENCE}), true, "aud string"),
        (
            json!({"aud": ["https://other.test", AUDIENCE]}),
            true,
            "aud array",
        ),
        (
            json!({"aud": ["https://other.test"]}),
            false,
            "aud array without us",
        ),
        (
            json!({"aud": "https://other.test/fhir"}),
            false,
            "another aud",
        ),
        (json!({"aud": []}), false, "empty aud array"),
        (json!({"aud": null}), false, "no aud"),
        (json!({"iss": "https://evil.test"}), false, "unknown iss"),
        (
            json!({"iss": format!("{SMART_ISS}/")}),
            false,
            "iss with a slash",
        ),
        (json!({"iss": null}), false, "no iss"),
        // The NHS issuer's name on a token signed by the SMART issuer's key.
        (json!({"iss": NHS_ISS}), false, "another issuer's name"),
    ] {
        let r = app.bearer(&ok(changes)).get("/fhir/Patient").await;
        if accepted {
            assert_eq!(r.status, 200, "{what}: {}", r.text());
        } else {
            assert_invalid_token(&r, what);
        }
    }
    // A v2 `scp` array instead of `scope`.
    let t = f.token("", json!({"scope": null, "scp": ["system/Patient.rs"]}));
    let r = app.bearer(&t).get("/fhir/Patient").await;
    assert_eq!(r.status, 200, "scp array: {}", r.text());
    assert_forbidden(
        &app.bearer(&t).get("/fhir/Observation").await,
        "scp array, Observation",
    );
}

#[actix_rt::test]
async fn tokens_only_travel_in_one_bearer_header() {
    let app = app().await;
    let good = FIXTURE.system_token();
    // The query string is not a place for tokens.
    let r = app.get(&format!("/fhir/Patient?access_token={good}")).await;
    assert_invalid_token(&r, "token in ?access_token=");
    let r = app
        .request(
            "POST",
            "/fhir/Patient/_search",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(format!("access_token={good}").into_bytes()),
        )
        .await;
    assert!(
        r.status == 401 || r.status == 400,
        "form access_token: {}",
        r.text()
    );
    // Basic credentials.
    let r = app
        .request(
            "GET",
            "/fhir/Patient",
            &[("Authorization", "Basic dXNlcjpwYXNzd29yZA==")],
            None,
        )
        .await;
    assert_invalid_token(&r, "Basic");
    // Two Authorization headers (even both good).
    let host = app.base.trim_start_matches("http://").to_owned();
    let req = format!(
        "GET /fhir/Patient HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {good}\r\nAuthorization: Bearer {good}\r\nConnection: close\r\n\r\n"
    );
    let (status, head, body) = raw_http(&app.base, req.into_bytes()).await;
    assert_eq!(status, 401, "two Authorization headers: {head}");
    assert!(
        head.contains("error=\"invalid_token\""),
        "two Authorization headers: {head}"
    );
    let body: Value = serde_json::from_slice(&body).expect("OperationOutcome");
    assert_eq!(body["resourceType"], "OperationOutcome");
    // One good header works.
    assert_eq!(app.bearer(&good).get("/fhir/Patient").await.status, 200);
}

#[actix_rt::test]
async fn oversized_and_binary_authorization_headers_are_a_clear_4xx() {
    let app = app().await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let good = FIXTURE.system_token();
    let parts: Vec<&str> = good.split('.').collect();
    let padding = "A".repeat(16 * 1024);
    let values: Vec<Vec<u8>> = vec![
        format!("Bearer {padding}").into_bytes(),
        format!("Bearer {}.{padding}.{}", parts[0], parts[2]).into_bytes(),
        format!("Bearer {good}{padding}").into_bytes(),
        b"Bearer \xff\xfe\x80\x81".to_vec(),
        b"Bearer abc\x01def".to_vec(),
    ];
    for v in values {
        let mut req =
            format!("GET /fhir/Patient HTTP/1.1\r\nHost: {host}\r\nAuthorization: ").into_bytes();
        req.extend_from_slice(&v);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let (status, head, _) = raw_http(&app.base, req).await;
        assert!(
            (400..500).contains(&status),
            "Authorization of {} bytes: got {status}: {head}",
            v.len()
        );
    }
    // The server is still fine.
    assert_eq!(app.bearer(&good).get("/fhir/Patient").await.status, 200);
}

// ------------------------------------------------------------ scopes

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Read,
    Vread,
    HistoryInstance,
    Search,
    SearchPost,
    HistoryType,
    Create,
    Update,
    Patch,
    Delete,
    CondCreate,
    CondUpdate,
    CondDelete,
    ValidateInstance,
    ValidateType,
}

impl Op {
    const ALL: [Op; 15] = [
        Op::Read,
        Op::Vread,
        Op::HistoryInstance,
        Op::Search,
        Op::SearchPost,
        Op::HistoryType,
        Op::Create,
        Op::Update,
        Op::Patch,
        Op::Delete,
        Op::CondCreate,
        Op::CondUpdate,
        Op::CondDelete,
        Op::ValidateInstance,
        Op::ValidateType,
    ];

    /// Alternatives: any one of these letter sets suffices.
    fn needs(self) -> &'static [&'static str] {
        match self {
            Op::Read | Op::Vread | Op::HistoryInstance | Op::ValidateInstance => &["r"],
            Op::Search | Op::SearchPost | Op::HistoryType => &["s"],
            Op::Create => &["c"],
            Op::Update | Op::Patch => &["u"],
            Op::Delete => &["d"],
            Op::CondCreate => &["cs"],
            Op::CondUpdate => &["us"],
            Op::CondDelete => &["ds"],
            Op::ValidateType => &["c", "u"],
        }
    }

    /// Letter sets that must not suffice.
    fn denied(self) -> Vec<String> {
        if self == Op::ValidateType {
            return vec!["rds".into()];
        }
        let need = self.needs()[0];
        need.chars()
            .map(|l| "cruds".chars().filter(|c| *c != l).collect())
            .collect()
    }

    fn writes(self) -> bool {
        matches!(
            self,
            Op::Create
                | Op::Update
                | Op::Patch
                | Op::Delete
                | Op::CondCreate
                | Op::CondUpdate
                | Op::CondDelete
        )
    }
}

async fn perform(c: &Authed<'_>, op: Op, id: &str) -> crate::helpers::Resp {
    let path = format!("/fhir/Observation/{id}");
    let crit = format!("identifier=urn:test:scope|{id}");
    let fresh = obs(&format!("new-{id}"), "Patient/p1", "exam");
    match op {
        Op::Read => c.get(&path).await,
        Op::Vread => c.get(&format!("{path}/_history/1")).await,
        Op::HistoryInstance => c.get(&format!("{path}/_history")).await,
        Op::Search => c.get(&format!("/fhir/Observation?{crit}")).await,
        Op::SearchPost => c.post_search("/fhir/Observation/_search", &crit).await,
        Op::HistoryType => c.get("/fhir/Observation/_history").await,
        Op::Create => c.post("/fhir/Observation", &without_id(fresh)).await,
        Op::Update => c.put(&path, &obs(id, "Patient/p1", "exam")).await,
        Op::Patch => {
            c.patch(
                &path,
                &json!([{"op": "replace", "path": "/status", "value": "amended"}]),
            )
            .await
        }
        Op::Delete => c.delete(&path).await,
        Op::CondCreate => {
            c.send_json(
                "POST",
                "/fhir/Observation",
                &without_id(obs(id, "Patient/p1", "exam")),
                &[("If-None-Exist", &crit)],
            )
            .await
        }
        Op::CondUpdate => {
            c.put(
                &format!("/fhir/Observation?{crit}"),
                &without_id(obs(id, "Patient/p1", "exam")),
            )
            .await
        }
        Op::CondDelete => c.delete(&format!("/fhir/Observation?{crit}")).await,
        Op::ValidateInstance => c.get(&format!("{path}/$validate")).await,
        Op::ValidateType => {
            c.post("/fhir/Observation/$validate", &without_id(fresh))
                .await
        }
    }
}

async fn scopes_map_onto_interactions(app: TestApp) {
    let admin = app.admin();
    admin.upsert(&patient("p1", &nhs_number(1))).await;
    let mut n = 0;
    for op in Op::ALL {
        for letters in op.denied() {
            n += 1;
            let id = format!("scope-{n}");
            admin.upsert(&obs(&id, "Patient/p1", "laboratory")).await;
            let token = FIXTURE.token(&format!("system/Observation.{letters}"), json!({}));
            let r = perform(&app.bearer(&token), op, &id).await;
            assert_forbidden(&r, &format!("{op:?} with system/Observation.{letters}"));
            if op.writes() {
                let now = admin.get(&format!("/fhir/Observation/{id}")).await;
                assert_eq!(now.status, 200, "{op:?} refused, yet the resource changed");
                assert_eq!(
                    now.json()["meta"]["versionId"],
                    "1",
                    "{op:?} refused, yet written"
                );
                assert_eq!(
                    admin
                        .total(&format!(
                            "/fhir/Observation?identifier=urn:test:scope|new-{id}"
                        ))
                        .await,
                    0,
                    "{op:?} refused, yet created"
                );
            }
        }
        for letters in op.needs() {
            n += 1;
            let id = format!("scope-{n}");
            admin.upsert(&obs(&id, "Patient/p1", "laboratory")).await;
            let token = FIXTURE.token(&format!("system/Observation.{letters}"), json!({}));
            let r = perform(&app.bearer(&token), op, &id).await;
            assert!(
                (200..300).contains(&r.status),
                "{op:?} with system/Observation.{letters}: {} {}",
                r.status,
                r.text()
            );
        }
    }
    // System history needs `s` (on every type the caller asks about).
    let r = app
        .bearer(&FIXTURE.token("system/*.r", json!({})))
        .get("/fhir/_history")
        .await;
    assert_forbidden(&r, "system history with system/*.r");
    let r = app
        .bearer(&FIXTURE.token("system/*.s", json!({})))
        .get("/fhir/_history")
        .await;
    assert_eq!(
        r.status,
        200,
        "system history with system/*.s: {}",
        r.text()
    );
    // A scope on one type grants nothing on another.
    let t = FIXTURE.token("system/Observation.cruds", json!({}));
    assert_forbidden(
        &app.bearer(&t).get("/fhir/Patient/p1").await,
        "Patient with Observation scope",
    );
    assert_forbidden(
        &app.bearer(&t).get("/fhir/Patient").await,
        "Patient search with Observation scope",
    );
    // Only openid/profile: nothing at all.
    let t = FIXTURE.token("openid profile fhirUser launch/patient", json!({}));
    assert_forbidden(
        &app.bearer(&t).get("/fhir/Patient/p1").await,
        "openid only, read",
    );
    assert_forbidden(
        &app.bearer(&t).get("/fhir/Observation").await,
        "openid only, search",
    );
    // Malformed clinical scopes grant nothing.
    for bad in [
        "system/*.xyz",
        "system/Observation",
        "system/Observation.srd",
        "system/Nonsense.rs",
        "system/*.rs?category",
    ] {
        let t = FIXTURE.token(bad, json!({}));
        let r = app.bearer(&t).get("/fhir/Observation").await;
        assert!(
            r.status == 403 || r.status == 401,
            "scope {bad}: {} {}",
            r.status,
            r.text()
        );
    }
}

#[actix_rt::test]
async fn v1_scopes() {
    let app = app().await;
    let admin = app.admin();
    admin.upsert(&patient("p1", &nhs_number(1))).await;
    admin.upsert(&obs("o1", "Patient/p1", "laboratory")).await;
    let read = app.bearer(&FIXTURE.token("system/Observation.read", json!({})));
    assert_eq!(read.get("/fhir/Observation/o1").await.status, 200);
    assert_eq!(read.get("/fhir/Observation?_id=o1").await.status, 200);
    assert_forbidden(
        &read
            .post(
                "/fhir/Observation",
                &without_id(obs("x", "Patient/p1", "exam")),
            )
            .await,
        ".read creating",
    );
    assert_forbidden(&read.delete("/fhir/Observation/o1").await, ".read deleting");
    let write = app.bearer(&FIXTURE.token("system/Observation.write", json!({})));
    assert_forbidden(&write.get("/fhir/Observation/o1").await, ".write reading");
    assert_forbidden(
        &write.get("/fhir/Observation?_id=o1").await,
        ".write searching",
    );
    let r = write
        .post(
            "/fhir/Observation",
            &without_id(obs("x", "Patient/p1", "exam")),
        )
        .await;
    assert_eq!(r.status, 201, ".write creating: {}", r.text());
    let r = write
        .put("/fhir/Observation/o1", &obs("o1", "Patient/p1", "exam"))
        .await;
    assert_eq!(r.status, 200, ".write updating: {}", r.text());
    let all = app.bearer(&FIXTURE.token("system/Observation.*", json!({})));
    assert_eq!(all.get("/fhir/Observation/o1").await.status, 200);
    assert_eq!(all.get("/fhir/Observation?_id=o1").await.status, 200);
    let r = all.delete("/fhir/Observation/o1").await;
    assert!((200..300).contains(&r.status), ".* deleting: {}", r.text());
    assert_forbidden(
        &all.get("/fhir/Patient/p1").await,
        "Observation.* reading a Patient",
    );
    let star = app.bearer(&FIXTURE.token("system/*.read", json!({})));
    assert_eq!(star.get("/fhir/Patient/p1").await.status, 200);
    assert_forbidden(
        &star
            .put("/fhir/Patient/p1", &patient("p1", &nhs_number(1)))
            .await,
        "*.read updating",
    );
}

#[actix_rt::test]
async fn query_refinements_narrow_what_a_scope_grants() {
    let app = app().await;
    let admin = app.admin();
    admin.upsert(&patient("p1", &nhs_number(1))).await;
    admin
        .upsert(&obs("lab-1", "Patient/p1", "laboratory"))
        .await;
    admin
        .upsert(&obs("vs-1", "Patient/p1", "vital-signs"))
        .await;
    let t = FIXTURE.patient_token("p1", "patient/Observation.rs?category=laboratory");
    let c = app.bearer(&t);
    assert_eq!(c.get("/fhir/Observation/lab-1").await.status, 200);
    let vs = c.get("/fhir/Observation/vs-1").await;
    let none = c.get("/fhir/Observation/never-was").await;
    assert_eq!(vs.status, 404, "outside the refinement: {}", vs.text());
    assert_eq!(none.status, 404);
    let s = c.get("/fhir/Observation").await.json();
    assert_eq!(entry_ids(&s), vec!["Observation/lab-1"]);
    assert_eq!(s["total"], 1);
    assert_eq!(c.total("/fhir/Observation?category=vital-signs").await, 0);
    assert_eq!(c.total("/fhir/Observation?_summary=count").await, 1);
    // The same refinement on a system scope.
    let t = FIXTURE.token("system/Observation.rs?category=vital-signs", json!({}));
    let s = app.bearer(&t).get("/fhir/Observation").await.json();
    assert_eq!(entry_ids(&s), vec!["Observation/vs-1"]);
    // No grant on Patient.
    assert_forbidden(
        &c.get("/fhir/Patient/p1").await,
        "refined Observation scope reading Patient",
    );
}

#[actix_rt::test]
async fn patient_context_and_identity_proofing() {
    let app = app().await;
    let admin = app.admin();
    let (n1, n2, dup) = (nhs_number(11), nhs_number(12), nhs_number(13));
    admin.upsert(&patient("p1", &n1)).await;
    admin.upsert(&patient("p2", &n2)).await;
    admin.upsert(&patient("dup-1", &dup)).await;
    admin.upsert(&patient("dup-2", &dup)).await;
    admin.upsert(&obs("o1", "Patient/p1", "laboratory")).await;
    let f = &*FIXTURE;
    let scope = "patient/*.rs";
    // patient/ scopes without a patient: 403.
    let t = f.token(scope, json!({}));
    assert_refused(
        &app.bearer(&t).get("/fhir/Observation").await,
        "no patient context, search",
    );
    assert_refused(
        &app.bearer(&t).get("/fhir/Patient/p1").await,
        "no patient context, read",
    );
    // A patient claim that is not one Patient id: refused, never widened.
    for bad in [
        json!(["p1", "p2"]),
        json!(7),
        json!(""),
        json!("../p2"),
        json!({"id": "p1"}),
    ] {
        let t = f.token(scope, json!({"patient": bad}));
        let c = app.bearer(&t);
        for path in ["/fhir/Patient/p1", "/fhir/Patient/p2", "/fhir/Observation"] {
            let r = c.get(path).await;
            assert!(
                r.status == 401 || r.status == 403,
                "patient claim {bad}: {path}: {} {}",
                r.status,
                r.text()
            );
        }
    }
    // NHS number → exactly one Patient.
    let t = f.nhs_token(&n1, "P9.Cp.Cd", scope);
    let c = app.bearer(&t);
    assert_eq!(c.get("/fhir/Patient/p1").await.status, 200);
    assert_eq!(c.get("/fhir/Patient/p2").await.status, 404);
    assert_eq!(
        entry_ids(&c.get("/fhir/Observation").await.json()),
        vec!["Observation/o1"]
    );
    let t = f.nhs_token(&n2, "P9.Cp.Cd", scope);
    assert_eq!(app.bearer(&t).total("/fhir/Observation").await, 0);
    assert_eq!(app.bearer(&t).get("/fhir/Patient/p2").await.status, 200);
    for (nhs, what) in [
        (nhs_number(14), "no Patient"),
        (dup.clone(), "two Patients"),
    ] {
        let t = f.nhs_token(&nhs, "P9.Cp.Cd", scope);
        assert_refused(&app.bearer(&t).get("/fhir/Observation").await, what);
        assert_refused(&app.bearer(&t).get("/fhir/Patient/dup-1").await, what);
    }
    // No NHS number at all.
    let mut c1 = claims(scope);
    c1["iss"] = json!(NHS_ISS);
    c1["vot"] = json!("P9.Cp.Cd");
    let t = f.nhs.token(&c1);
    assert_refused(
        &app.bearer(&t).get("/fhir/Observation").await,
        "no nhs_number claim",
    );
    // Identity proofing: P9 required by the NHS issuer.
    let t = f.nhs_token(&n1, "P5.Cp.Ck", scope);
    assert_refused(&app.bearer(&t).get("/fhir/Patient/p1").await, "P5 reading");
    assert_refused(
        &app.bearer(&t).get("/fhir/Observation").await,
        "P5 searching",
    );
    let level = |lvl: Option<&str>| {
        let t0 = now();
        let mut c = json!({"iss": NHS_ISS, "aud": AUDIENCE, "sub": "nhs-login-x",
                           "iat": t0, "exp": t0 + 300, "scope": scope, "nhs_number": n1});
        if let Some(l) = lvl {
            c["identity_proofing_level"] = json!(l);
        }
        f.nhs.token(&c)
    };
    assert_eq!(
        app.bearer(&level(Some("P9")))
            .get("/fhir/Patient/p1")
            .await
            .status,
        200,
        "identity_proofing_level P9"
    );
    assert_refused(
        &app.bearer(&level(Some("P0"))).get("/fhir/Patient/p1").await,
        "identity_proofing_level P0",
    );
    assert_refused(
        &app.bearer(&level(None)).get("/fhir/Patient/p1").await,
        "no proofing claim",
    );
}

// ------------------------------------------------------------ discovery and token endpoint

async fn smart_configuration(app: &TestApp) -> Value {
    let r = app.get("/fhir/.well-known/smart-configuration").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A client assertion of `client` signed by `key`, with `changes`.
fn assertion(key: &TestKey, client: &str, aud: &str, changes: Value) -> String {
    let t = now();
    key.token(&with(
        json!({"iss": client, "sub": client, "aud": aud, "iat": t, "exp": t + 120, "jti": jti()}),
        changes,
    ))
}

fn token_form(assertion: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".into()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        ),
        ("client_assertion", assertion.into()),
        ("scope", scope.into()),
    ]
}

async fn post_token(app: &TestApp, form: &[(&str, String)]) -> crate::helpers::Resp {
    let body = serde_urlencoded::to_string(form).expect("form");
    app.request(
        "POST",
        "/auth/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(body.into_bytes()),
    )
    .await
}

fn scope_set(s: &str) -> std::collections::BTreeSet<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[actix_rt::test]
async fn smart_discovery_and_capability_security() {
    let app = app().await;
    let c = smart_configuration(&app).await;
    for key in ["issuer", "jwks_uri", "token_endpoint"] {
        assert!(
            c[key].as_str().is_some_and(|s| s.starts_with("http")),
            "{key}: {c}"
        );
    }
    let has = |key: &str, v: &str| c[key].as_array().is_some_and(|a| a.iter().any(|x| x == v));
    assert!(has("grant_types_supported", "client_credentials"), "{c}");
    assert!(
        has("token_endpoint_auth_methods_supported", "private_key_jwt"),
        "{c}"
    );
    assert!(
        has("token_endpoint_auth_signing_alg_values_supported", "RS384"),
        "{c}"
    );
    assert!(
        has("token_endpoint_auth_signing_alg_values_supported", "ES384"),
        "{c}"
    );
    assert!(
        c["scopes_supported"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{c}"
    );
    assert!(
        c["capabilities"].as_array().is_some_and(|a| !a.is_empty()),
        "{c}"
    );
    let token_endpoint = c["token_endpoint"].as_str().unwrap();
    assert!(token_endpoint.ends_with("/auth/token"), "{token_endpoint}");
    assert!(
        c["jwks_uri"].as_str().unwrap().ends_with("/auth/jwks"),
        "{c}"
    );
    // The published JWKS holds public keys only.
    let jwks = app.get("/auth/jwks").await.json();
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty());
    for k in keys {
        assert!(k["kid"].is_string(), "{k}");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                k.get(private).is_none(),
                "private member {private} published"
            );
        }
    }
    // CapabilityStatement.rest.security.
    let cs = app.get("/fhir/metadata").await.json();
    let sec = &cs["rest"][0]["security"];
    let codes: Vec<&Value> = sec["service"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["coding"].as_array().into_iter().flatten())
        .map(|c| &c["code"])
        .collect();
    assert!(codes.iter().any(|c| *c == "SMART-on-FHIR"), "{sec}");
    let oauth = sec["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        })
        .unwrap_or_else(|| panic!("no oauth-uris extension: {sec}"));
    let token = oauth["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == "token")
        .unwrap_or_else(|| panic!("no token uri: {oauth}"));
    assert_eq!(token["valueUri"], token_endpoint);
}

#[actix_rt::test]
async fn token_endpoint_issues_scoped_short_lived_tokens() {
    let app = app().await;
    app.admin().upsert(&patient("p1", &nhs_number(1))).await;
    app.admin()
        .upsert(&obs("o1", "Patient/p1", "laboratory"))
        .await;
    let conf = smart_configuration(&app).await;
    let endpoint = conf["token_endpoint"].as_str().unwrap().to_owned();
    let jwks = app.get("/auth/jwks").await.json();
    let f = &*FIXTURE;
    for (key, client, requested, granted) in [
        (
            &f.client_rs,
            CLIENT_RS,
            "system/Patient.rs system/Observation.c",
            "system/Patient.rs",
        ),
        (&f.client_rs, CLIENT_RS, CLIENT_RS_SCOPES, CLIENT_RS_SCOPES),
        (
            &f.client_es,
            CLIENT_ES,
            "system/Patient.rs system/*.rs",
            "system/Patient.rs",
        ),
    ] {
        let a = assertion(key, client, &endpoint, json!({}));
        let r = post_token(&app, &token_form(&a, requested)).await;
        let what = format!("{client} asking for {requested}");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert!(
            r.header("Cache-Control")
                .is_some_and(|v| v.contains("no-store")),
            "{what}: Cache-Control {:?}",
            r.header("Cache-Control")
        );
        let body = r.json();
        assert!(
            body["token_type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("bearer")),
            "{body}"
        );
        let expires = body["expires_in"].as_i64().expect("expires_in");
        assert!(
            expires > 0 && expires <= 300,
            "{what}: expires_in {expires}"
        );
        assert_eq!(
            scope_set(body["scope"].as_str().expect("scope")),
            scope_set(granted),
            "{what}"
        );
        let access = body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        // Independently verified against the published JWKS.
        let claims = verify(&access, &jwks).unwrap_or_else(|e| panic!("{what}: {e}"));
        let aud_ok = claims["aud"] == AUDIENCE
            || claims["aud"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == AUDIENCE));
        assert!(aud_ok, "{what}: aud {}", claims["aud"]);
        assert_eq!(claims["iss"], conf["issuer"], "{what}");
        let exp = claims["exp"].as_i64().expect("exp");
        assert!(exp > now() && exp <= now() + 305, "{what}: exp {exp}");
        // It works against the API, within its granted scopes only.
        let c = app.bearer(&access);
        assert_eq!(c.get("/fhir/Patient/p1").await.status, 200, "{what}");
        if !granted.contains("*.rs") {
            assert_forbidden(&c.get("/fhir/Observation/o1").await, &what);
        } else {
            assert_eq!(c.get("/fhir/Observation/o1").await.status, 200, "{what}");
        }
        assert_forbidden(
            &c.post(
                "/fhir/Observation",
                &without_id(obs("x", "Patient/p1", "exam")),
            )
            .await,
            &what,
        );
    }
}

#[actix_rt::test]
async fn token_endpoint_errors_follow_rfc6749() {
    let app = app().await;
    let endpoint = smart_configuration(&app).await["token_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let f = &*FIXTURE;
    let scope = "system/Patient.rs";
    let expect = |r: &crate::helpers::Resp, status: u16, error: &str, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], error, "{what}: {}", r.text());
    };
    // Replay: the same assertion twice, and a new assertion reusing a jti.
    let a = assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({}));
    assert_eq!(post_token(&app, &token_form(&a, scope)).await.status, 200);
    expect(
        &post_token(&app, &token_form(&a, scope)).await,
        401,
        "invalid_client",
        "replayed assertion",
    );
    let (_, first) = peek(&a);
    let again = assertion(
        &f.client_rs,
        CLIENT_RS,
        &endpoint,
        json!({"jti": first["jti"], "exp": now() + 200}),
    );
    expect(
        &post_token(&app, &token_form(&again, scope)).await,
        401,
        "invalid_client",
        "replayed jti",
    );
    let cases: Vec<(String, &str)> = vec![
        (
            f.stranger.sign_raw(
                &json!({"alg": "RS384", "kid": f.client_rs.kid, "typ": "JWT"}),
                &json!({"iss": CLIENT_RS, "sub": CLIENT_RS, "aud": endpoint, "iat": now(), "exp": now() + 60, "jti": jti()}),
            ),
            "bad signature",
        ),
        (assertion(&f.client_es, CLIENT_RS, &endpoint, json!({})), "another client's key"),
        (assertion(&f.client_rs, "nobody", &endpoint, json!({})), "unknown client"),
        (assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({"exp": now() + 600})), "exp too far"),
        (assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({"exp": now() - 120})), "expired"),
        (assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({"exp": null})), "no exp"),
        (assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({"jti": null})), "no jti"),
        (assertion(&f.client_rs, CLIENT_RS, "https://other.test/token", json!({})), "wrong aud"),
        (assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({"sub": CLIENT_ES})), "sub is not iss"),
        (none_token(&json!({"iss": CLIENT_RS, "sub": CLIENT_RS, "aud": endpoint, "exp": now() + 60, "jti": jti()})), "alg none"),
        ("garbage".into(), "garbage"),
    ];
    for (a, what) in &cases {
        expect(
            &post_token(&app, &token_form(a, scope)).await,
            401,
            "invalid_client",
            what,
        );
    }
    // Nothing allowed among the requested scopes.
    let a = assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({}));
    expect(
        &post_token(&app, &token_form(&a, "system/Observation.d patient/*.rs")).await,
        400,
        "invalid_scope",
        "no allowed scope",
    );
    // Wrong grant type.
    let a = assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({}));
    let mut form = token_form(&a, scope);
    form[0].1 = "password".into();
    expect(
        &post_token(&app, &form).await,
        400,
        "unsupported_grant_type",
        "grant_type=password",
    );
    // Missing parameters: a 400 or 401 with an RFC 6749 error, never a 500.
    let a = assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({}));
    let full = token_form(&a, scope);
    for drop in ["client_assertion", "client_assertion_type", "grant_type"] {
        let form: Vec<(&str, String)> = full.iter().filter(|(k, _)| *k != drop).cloned().collect();
        let r = post_token(&app, &form).await;
        assert!(
            r.status == 400 || r.status == 401,
            "without {drop}: {}",
            r.text()
        );
        assert!(
            r.json()["error"].is_string(),
            "without {drop}: {}",
            r.text()
        );
    }
    let r = app
        .request(
            "POST",
            "/auth/token",
            &[("Content-Type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert!(
        r.status == 400 || r.status == 415,
        "JSON body: {}",
        r.text()
    );
}

// ------------------------------------------------------------ metrics

#[actix_rt::test]
async fn auth_failures_are_counted_by_reason() {
    let app = app().await;
    let f = &*FIXTURE;
    let before = auth_failures(&app.get("/metrics").await.text());
    let bad = [
        "garbage-token-for-metrics".to_owned(),
        f.token("system/*.rs", json!({"exp": now() - 3600})),
        f.stranger.token(&claims("system/*.rs")),
        f.token("system/*.rs", json!({"aud": "https://other.test"})),
    ];
    for t in &bad {
        assert_eq!(app.bearer(t).get("/fhir/Patient").await.status, 401);
    }
    let text = app.get("/metrics").await.text();
    let after = auth_failures(&text);
    assert!(
        after >= before + bad.len() as f64,
        "auth failures went from {before} to {after}:\n{text}"
    );
    let reasons: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fhirbridge_auth_failures_total{"))
        .collect();
    assert!(
        reasons.iter().all(|l| l.contains("reason=\"")),
        "{reasons:?}"
    );
    // Different failures have different reasons.
    assert!(reasons.len() >= 2, "{reasons:?}");
    for t in &bad {
        assert!(!text.contains(t.as_str()), "a token is in /metrics");
    }
}

// ------------------------------------------------------------ JWKS endpoints

/// An issuer with a `jwks_uri`.
fn uri_issuer(iss: &str, url: &str) -> fhirbridge::auth::config::IssuerSettings {
    fhirbridge::auth::config::IssuerSettings {
        issuer: iss.into(),
        jwks_uri: Some(url.into()),
        patient_claim: Some("patient".into()),
        ..Default::default()
    }
}

fn token_of(key: &TestKey, iss: &str) -> String {
    key.token(&with(claims("system/*.rs"), json!({"iss": iss})))
}

#[actix_rt::test]
async fn misbehaving_jwks_endpoints_give_401_within_the_timeout() {
    let key = TestKey::new("ES256", "uri-key");
    let good = JwksServer::start(Jwks::Serve(jwks(&[&key]).to_string()));
    let hang = JwksServer::start(Jwks::Hang);
    let junk = JwksServer::start(Jwks::Junk);
    let huge = JwksServer::start(Jwks::Huge(1024 * 1024));
    let error = JwksServer::start(Jwks::Status(500));
    let notjwks = JwksServer::start(Jwks::Serve(r#"{"keys": "no"}"#.into()));
    let servers = [
        ("https://good.test", &good),
        ("https://hang.test", &hang),
        ("https://junk.test", &junk),
        ("https://huge.test", &huge),
        ("https://error.test", &error),
        ("https://notjwks.test", &notjwks),
    ];
    let issuers: Vec<_> = servers.iter().map(|(i, s)| uri_issuer(i, &s.url)).collect();
    let app = TestApp::sqlite_with(|s| {
        required(s);
        s.auth.issuers.extend(issuers);
        s.auth.jwks_timeout_ms = 500;
        s.auth.jwks_max_bytes = 64 * 1024;
    })
    .await;
    let r = app
        .bearer(&token_of(&key, "https://good.test"))
        .get("/fhir/Patient")
        .await;
    assert_eq!(r.status, 200, "a jwks_uri issuer: {}", r.text());
    for (iss, server) in &servers[1..] {
        for attempt in 0..2 {
            let started = Instant::now();
            let r = app.bearer(&token_of(&key, iss)).get("/fhir/Patient").await;
            let took = started.elapsed();
            assert_invalid_token(&r, &format!("{iss} attempt {attempt}"));
            assert!(
                took < Duration::from_millis(3_000),
                "{iss} attempt {attempt} took {took:?}"
            );
        }
        assert!(server.hits() >= 1, "{iss} was never asked");
    }
    // The file issuer is unaffected.
    assert_eq!(app.admin().get("/fhir/Patient").await.status, 200);
}

#[actix_rt::test]
async fn a_hanging_jwks_does_not_delay_other_issuers() {
    let key = TestKey::new("RS256", "hang-key");
    let hang = JwksServer::start(Jwks::Hang);
    let url = hang.url.clone();
    let app = TestApp::sqlite_with(|s| {
        required(s);
        s.auth.issuers.push(uri_issuer("https://hang.test", &url));
        s.auth.jwks_timeout_ms = 2_500;
    })
    .await;
    let hung_token = token_of(&key, "https://hang.test");
    let good = FIXTURE.system_token();
    // Warm up the file issuer.
    assert_eq!(app.bearer(&good).get("/fhir/Patient").await.status, 200);
    let started = Instant::now();
    let hung = async {
        let r = app.bearer(&hung_token).get("/fhir/Patient").await;
        (r.status, started.elapsed())
    };
    let hung2 = async {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        let r = app.bearer(&hung_token).get("/fhir/Patient").await;
        (r.status, started.elapsed())
    };
    let others = async {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let t = Instant::now();
            let r = app.bearer(&good).get("/fhir/Patient").await;
            assert_eq!(r.status, 200, "{}", r.text());
            slowest = slowest.max(t.elapsed());
        }
        (slowest, started.elapsed())
    };
    let ((s1, t1), (s2, t2), (slowest, others_done)) = tokio::join!(hung, hung2, others);
    assert_eq!(s1, 401);
    assert_eq!(s2, 401);
    assert!(
        t1 < Duration::from_secs(6) && t2 < Duration::from_secs(6),
        "{t1:?} {t2:?}"
    );
    assert!(
        slowest < Duration::from_millis(1_000),
        "another issuer's request took {slowest:?}"
    );
    assert!(
        others_done < t1,
        "the other issuer's requests ({others_done:?}) waited for the hung fetch ({t1:?})"
    );
}

#[actix_rt::test]
async fn jwks_is_cached_and_refreshed_at_most_once_per_unknown_kid() {
    let k1 = TestKey::new("RS256", "rot-1");
    let k2 = TestKey::new("ES384", "rot-2");
    let k3 = TestKey::new("ES256", "rot-3");
    let server = JwksServer::start(Jwks::Serve(jwks(&[&k1]).to_string()));
    let url = server.url.clone();
    let app = TestApp::sqlite_with(|s| {
        required(s);
        s.auth.issuers.push(uri_issuer("https://rot.test", &url));
        s.auth.jwks_min_refresh_secs = 1;
    })
    .await;
    for _ in 0..10 {
        let r = app
            .bearer(&token_of(&k1, "https://rot.test"))
            .get("/fhir/Patient")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(server.hits(), 1, "the JWKS is cached");
    // A rotation: a new kid triggers one refresh.
    actix_rt::time::sleep(Duration::from_millis(1_200)).await;
    server.set(Jwks::Serve(jwks(&[&k1, &k2]).to_string()));
    let r = app
        .bearer(&token_of(&k2, "https://rot.test"))
        .get("/fhir/Patient")
        .await;
    assert_eq!(r.status, 200, "rotated key: {}", r.text());
    let after_rotation = server.hits();
    assert_eq!(after_rotation, 2, "one refresh for the new kid");
    // A storm of unknown kids refreshes at most once more.
    for _ in 0..10 {
        let r = app
            .bearer(&token_of(&k3, "https://rot.test"))
            .get("/fhir/Patient")
            .await;
        assert_invalid_token(&r, "unknown kid");
    }
    assert!(
        server.hits() <= after_rotation + 1,
        "unknown kids fetched the JWKS {} times",
        server.hits() - after_rotation
    );
    // Known keys keep working.
    let r = app
        .bearer(&token_of(&k1, "https://rot.test"))
        .get("/fhir/Patient")
        .await;
    assert_eq!(r.status, 200);
}

#[actix_rt::test]
async fn a_jwks_file_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotating.jwks.json");
    let k1 = TestKey::new("RS384", "file-1");
    let k2 = TestKey::new("ES256", "file-2");
    std::fs::write(&path, jwks(&[&k1]).to_string()).unwrap();
    let p = path.display().to_string();
    let app = TestApp::sqlite_with(|s| {
        required(s);
        s.auth
            .issuers
            .push(fhirbridge::auth::config::IssuerSettings {
                issuer: "https://file.test".into(),
                jwks_file: Some(p),
                ..Default::default()
            });
        s.auth.jwks_min_refresh_secs = 1;
    })
    .await;
    let t1 = token_of(&k1, "https://file.test");
    let t2 = token_of(&k2, "https://file.test");
    assert_eq!(app.bearer(&t1).get("/fhir/Patient").await.status, 200);
    assert_invalid_token(
        &app.bearer(&t2).get("/fhir/Patient").await,
        "key not yet in the file",
    );
    actix_rt::time::sleep(Duration::from_millis(1_100)).await;
    std::fs::write(&path, jwks(&[&k2]).to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let r = app.bearer(&t2).get("/fhir/Patient").await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new key was never picked up: {}",
            r.text()
        );
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
    // The removed key is gone too (once the reload happened).
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let r = app
            .bearer(&token_of(&k1, "https://file.test"))
            .get("/fhir/Patient")
            .await;
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the removed key still works");
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
}

// ------------------------------------------------------------ configuration

#[actix_rt::test]
async fn the_documented_toml_shape_configures_auth() {
    let text = auth_toml();
    let settings: fhirbridge::config::Settings =
        toml::from_str(&text).expect("the documented TOML parses");
    let a = &settings.auth;
    assert_eq!(a.mode, Some(fhirbridge::auth::AuthMode::Required));
    assert_eq!(a.audience.as_deref(), Some(AUDIENCE));
    assert_eq!(a.issuers.len(), 2);
    assert_eq!(a.issuers[1].nhs_number_claim.as_deref(), Some("nhs_number"));
    assert_eq!(a.issuers[1].min_identity_proofing.as_deref(), Some("P9"));
    assert_eq!(a.clients[0].scopes, CLIENT_RS_SCOPES);
    // Through Settings::load, as `--config` reads it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fhirbridge.toml");
    std::fs::write(&file, &text).unwrap();
    let loaded = fhirbridge::config::Settings::load(
        Some(&file),
        &|_| None,
        &fhirbridge::config::Overrides::default(),
    )
    .expect("the documented TOML loads");
    // A mistyped key is an error naming it.
    std::fs::write(&file, text.replace("patient_claim", "patient_claims")).unwrap();
    let err = fhirbridge::config::Settings::load(
        Some(&file),
        &|_| None,
        &fhirbridge::config::Overrides::default(),
    )
    .expect_err("an unknown key in [[auth.issuers]]");
    assert!(format!("{err:#}").contains("patient_claims"), "{err:#}");
    let auth = loaded.auth.clone();
    let app = TestApp::sqlite_with(move |s| s.auth = auth).await;
    assert_no_token(&app.get("/fhir/Patient").await, "TOML-configured, no token");
    app.admin().upsert(&patient("p1", &nhs_number(21))).await;
    let t = FIXTURE.nhs_token(&nhs_number(21), "P9.Cp.Cd", "patient/*.rs");
    assert_eq!(app.bearer(&t).get("/fhir/Patient/p1").await.status, 200);
}

// ------------------------------------------------------------ the real binary

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

#[actix_rt::test]
async fn the_server_log_holds_no_token_claim_or_nhs_number() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fhirbridge.toml");
    std::fs::write(&config, auth_toml()).unwrap();
    let log = dir.path().join("stderr.log");
    let db = format!("sqlite://{}", dir.path().join("log.db").display());
    let server = spawn_server_opts(&ServeOpts {
        db: &db,
        config: Some(&config),
        log: "trace",
        stderr: Some(&log),
        ..ServeOpts::default()
    })
    .await
    .expect("server starts with the documented [auth]");
    let app = TestApp::attach(port_of(&server.base));
    let f = &*FIXTURE;
    let nhs = nhs_number(4242);
    let secret_sub = "sub-secret-5c1d2a";
    let admin_token = f.token("system/*.cruds", json!({"sub": secret_sub}));
    let admin = app.bearer(&admin_token);
    let mut p = patient("logged", &nhs);
    p["name"][0]["family"] = json!("Secretfamily");
    admin.upsert(&p).await;
    assert_eq!(
        admin
            .total(&format!("/fhir/Patient?identifier={NHS_SYSTEM}|{nhs}"))
            .await,
        1
    );
    let patient_token = f.nhs_token(&nhs, "P9.Cp.Cd", "patient/*.rs");
    assert_eq!(
        app.bearer(&patient_token)
            .get("/fhir/Patient/logged")
            .await
            .status,
        200
    );
    let low_token = f.nhs_token(&nhs, "P5.Cp.Ck", "patient/*.rs");
    assert_eq!(
        app.bearer(&low_token)
            .get("/fhir/Patient/logged")
            .await
            .status,
        403
    );
    let expired = f.token(
        "system/*.rs",
        json!({"exp": now() - 3600, "sub": secret_sub}),
    );
    assert_eq!(app.bearer(&expired).get("/fhir/Patient").await.status, 401);
    let garbage = "garbage-secret-token-9f8e7d";
    assert_eq!(app.bearer(garbage).get("/fhir/Patient").await.status, 401);
    let forged = {
        let parts: Vec<&str> = patient_token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64url(br#"{"nhs_number":"forged"}"#),
            parts[2]
        )
    };
    assert_eq!(app.bearer(&forged).get("/fhir/Patient").await.status, 401);
    let endpoint = smart_configuration(&app).await["token_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = assertion(&f.client_rs, CLIENT_RS, &endpoint, json!({}));
    let r = post_token(&app, &token_form(&a, "system/Patient.rs")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.bearer(&access).get("/fhir/Patient/logged").await.status,
        200
    );
    // A replay (logged as a failure, without the assertion).
    assert_eq!(
        post_token(&app, &token_form(&a, "system/Patient.rs"))
            .await
            .status,
        401
    );
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() > 200, "the trace log is nearly empty: {text}");
    let mut secrets: Vec<(String, &str)> = vec![
        (nhs.clone(), "NHS number"),
        (secret_sub.into(), "sub claim"),
        ("Secretfamily".into(), "a patient's name"),
        (garbage.into(), "garbage token"),
    ];
    for (t, what) in [
        (&admin_token, "admin token"),
        (&patient_token, "patient token"),
        (&low_token, "P5 token"),
        (&expired, "expired token"),
        (&forged, "forged token"),
        (&a, "client assertion"),
        (&access, "issued access token"),
    ] {
        let parts: Vec<&str> = t.split('.').collect();
        secrets.push((parts[1].to_owned(), what));
        secrets.push((parts[2].to_owned(), what));
    }
    for (s, what) in &secrets {
        assert!(!text.contains(s.as_str()), "the log holds the {what}");
    }
}

#[actix_rt::test]
async fn a_public_address_requires_a_token_by_default() {
    let server = spawn_server_opts(&ServeOpts {
        host: "0.0.0.0",
        ..ServeOpts::default()
    })
    .await
    .expect("serve on 0.0.0.0 without [auth] starts");
    let app = TestApp::attach(port_of(&server.base));
    assert_no_token(&app.get("/fhir/Patient").await, "0.0.0.0 without [auth]");
    assert_eq!(app.get("/fhir/metadata").await.status, 200);
    // Loopback without [auth]: open, for local development, and it says so.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let local = spawn_server_opts(&ServeOpts {
        stderr: Some(&log),
        log: "info",
        ..ServeOpts::default()
    })
    .await
    .expect("serve on loopback starts");
    let app = TestApp::attach(port_of(&local.base));
    assert_eq!(app.get("/fhir/Patient").await.status, 200);
    drop(local);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.to_lowercase().contains("access control off")),
        "an open server does not say so: {text}"
    );
}

#[actix_rt::test]
async fn mode_off_on_a_public_address_needs_allow_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("off.toml");
    std::fs::write(&config, "[auth]\nmode = \"off\"\n").unwrap();
    let port = crate::helpers::free_port();
    let stderr = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
        .args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--database",
            "sqlite::memory:",
        ])
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mode = off on 0.0.0.0 started without --allow-anonymous");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(err.contains("allow-anonymous"), "{err}");
    let server = spawn_server_opts(&ServeOpts {
        host: "0.0.0.0",
        config: Some(&config),
        args: &["--allow-anonymous"],
        ..ServeOpts::default()
    })
    .await
    .expect("mode = off with --allow-anonymous starts");
    let app = TestApp::attach(port_of(&server.base));
    assert_eq!(app.get("/fhir/Patient").await.status, 200);
}

crate::backend_tests!(with required; scopes_map_onto_interactions);
