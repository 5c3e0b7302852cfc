//! Shared code of the access-control suites (auth, leaks, routes, oidc):
//! keys, tokens and JWKS minted with the `openssl` crate directly (not
//! `fhirbridge::auth`, so the server's verifier is checked by independent
//! code), the `[auth]` settings of the test issuers and clients, an HTTP
//! client that sends a token, a raw HTTP/1.1 client for requests awc will
//! not send, and a tiny JWKS server that can serve, hang, or send junk.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use fhirbridge::auth::config::{AuthMode, ClientSettings, IssuerSettings};
use fhirbridge::config::Settings;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use serde_json::{json, Map, Value};

use crate::helpers::{Resp, TestApp};

/// The `aud` every test token carries (`auth.audience`).
pub const AUDIENCE: &str = "https://fhir.test/fhir";
/// A SMART issuer: patient context in the `patient` claim.
pub const SMART_ISS: &str = "https://smart.issuer.test";
/// An NHS login-like issuer: the NHS number in `nhs_number`, P9 required.
pub const NHS_ISS: &str = "https://auth.login.nhs.test";
/// SMART Backend Services clients of the server's own token endpoint.
pub const CLIENT_RS: &str = "gp-system-a";
pub const CLIENT_ES: &str = "gp-system-b";
/// The most `CLIENT_RS` may be granted (the issue's example).
pub const CLIENT_RS_SCOPES: &str = "system/*.rs system/Appointment.cu";
pub const CLIENT_ES_SCOPES: &str = "system/Patient.rs";
/// The realm of every `WWW-Authenticate` challenge.
pub const CHALLENGE: &str = "Bearer realm=\"fhirbridge\"";
pub const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

// ---------------------------------------------------------------- base64url

pub fn b64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_owned()
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut t = s.replace('-', "+").replace('_', "/");
    while t.len() % 4 != 0 {
        t.push('=');
    }
    openssl::base64::decode_block(&t).ok()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

// ---------------------------------------------------------------- keys

/// A private signing key with its JOSE `alg` and `kid`.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    key: PKey<Private>,
}

fn digest(alg: &str) -> MessageDigest {
    match &alg[2..] {
        "256" => MessageDigest::sha256(),
        "384" => MessageDigest::sha384(),
        "512" => MessageDigest::sha512(),
        other => panic!("no digest for {other}"),
    }
}

fn ec_len(alg: &str) -> usize {
    match alg {
        "ES256" => 32,
        "ES384" => 48,
        other => panic!("{other} is not ECDSA"),
    }
}

impl TestKey {
    /// A fresh key for `alg` (RS256/384/512: RSA 2048; ES256: P-256; ES384: P-384).
    pub fn new(alg: &'static str, kid: &str) -> TestKey {
        let key = match alg {
            "RS256" | "RS384" | "RS512" => {
                PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("pkey")
            }
            "ES256" | "ES384" => {
                let nid = if alg == "ES256" {
                    Nid::X9_62_PRIME256V1
                } else {
                    Nid::SECP384R1
                };
                let group = EcGroup::from_curve_name(nid).expect("curve");
                PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("pkey")
            }
            other => panic!("unsupported test alg {other}"),
        };
        TestKey {
            kid: kid.to_owned(),
            alg,
            key,
        }
    }

    /// The public JWK (`kid`, `alg`, `use: sig`).
    pub fn jwk(&self) -> Value {
        let mut o = Map::new();
        if let Ok(ec) = self.key.ec_key() {
            let mut ctx = BigNumContext::new().expect("ctx");
            let (mut x, mut y) = (BigNum::new().expect("bn"), BigNum::new().expect("bn"));
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .expect("coordinates");
            let n = ec_len(self.alg) as i32;
            o.insert("kty".into(), json!("EC"));
            o.insert(
                "crv".into(),
                json!(if self.alg == "ES256" {
                    "P-256"
                } else {
                    "P-384"
                }),
            );
            o.insert("x".into(), json!(b64url(&x.to_vec_padded(n).expect("x"))));
            o.insert("y".into(), json!(b64url(&y.to_vec_padded(n).expect("y"))));
        } else {
            let rsa = self.key.rsa().expect("rsa");
            o.insert("kty".into(), json!("RSA"));
            o.insert("n".into(), json!(b64url(&rsa.n().to_vec())));
            o.insert("e".into(), json!(b64url(&rsa.e().to_vec())));
        }
        o.insert("kid".into(), json!(self.kid));
        o.insert("alg".into(), json!(self.alg));
        o.insert("use".into(), json!("sig"));
        Value::Object(o)
    }

    /// The public key as PEM (what an HS256 key-confusion attack uses as the
    /// HMAC secret).
    pub fn public_pem(&self) -> Vec<u8> {
        self.key.public_key_to_pem().expect("pem")
    }

    /// A compact JWS over `header` and `claims` exactly as given.
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        format!("{input}.{}", b64url(&self.signature(input.as_bytes())))
    }

    /// The JOSE signature of `input` (raw r||s for ECDSA).
    pub fn signature(&self, input: &[u8]) -> Vec<u8> {
        let mut signer = Signer::new(digest(self.alg), &self.key).expect("signer");
        signer.update(input).expect("update");
        let der = signer.sign_to_vec().expect("sign");
        if self.alg.starts_with("ES") {
            let n = ec_len(self.alg) as i32;
            let sig = EcdsaSig::from_der(&der).expect("ECDSA DER");
            let mut raw = sig.r().to_vec_padded(n).expect("r");
            raw.extend(sig.s().to_vec_padded(n).expect("s"));
            raw
        } else {
            der
        }
    }

    /// `claims` signed with the header `{alg, kid, typ: JWT}`.
    pub fn token(&self, claims: &Value) -> String {
        self.sign_raw(
            &json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

/// `{"keys": [...]}` of the keys' public JWKs.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// A token "signed" with HMAC-SHA256 under `secret` (`alg: HS256`).
pub fn hs256_token(kid: &str, claims: &Value, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let key = PKey::hmac(secret).expect("hmac key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
    signer.update(input.as_bytes()).expect("update");
    format!("{input}.{}", b64url(&signer.sign_to_vec().expect("mac")))
}

/// An unsigned token (`alg: none`, empty signature).
pub fn none_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// The (header, claims) of a compact JWS, not verified.
pub fn peek(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || -> Value {
        let p = parts.next().expect("JWS part");
        serde_json::from_slice(&b64url_decode(p).expect("base64url")).expect("JSON part")
    };
    let h = part();
    (h, part())
}

/// Verifies a compact JWS against a JWKS document with openssl (independent
/// of the server's code) and returns its claims.
pub fn verify(token: &str, jwks: &Value) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not three parts".into());
    }
    let (header, claims) = peek(token);
    let alg = header["alg"].as_str().ok_or("no alg")?.to_owned();
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .ok_or("no keys")?
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let big = |m: &str| -> Result<BigNum, String> {
        let bytes = b64url_decode(jwk[m].as_str().ok_or(format!("no {m}"))?).ok_or("bad base64")?;
        BigNum::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let key: PKey<Public> = match jwk["kty"].as_str() {
        Some("RSA") => PKey::from_rsa(
            Rsa::from_public_components(big("n")?, big("e")?).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?,
        Some("EC") => {
            let nid = match jwk["crv"].as_str() {
                Some("P-256") => Nid::X9_62_PRIME256V1,
                Some("P-384") => Nid::SECP384R1,
                other => return Err(format!("curve {other:?}")),
            };
            let group = EcGroup::from_curve_name(nid).map_err(|e| e.to_string())?;
            let (x, y) = (big("x")?, big("y")?);
            PKey::from_ec_key(
                EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?
        }
        other => return Err(format!("kty {other:?}")),
    };
    let sig = b64url_decode(parts[2]).ok_or("bad signature encoding")?;
    let sig = if alg.starts_with("ES") {
        let n = ec_len(&alg);
        if sig.len() != 2 * n {
            return Err("ECDSA signature length".into());
        }
        let r = BigNum::from_slice(&sig[..n]).map_err(|e| e.to_string())?;
        let s = BigNum::from_slice(&sig[n..]).map_err(|e| e.to_string())?;
        EcdsaSig::from_private_components(r, s)
            .and_then(|s| s.to_der())
            .map_err(|e| e.to_string())?
    } else if alg.starts_with("RS") {
        sig
    } else {
        return Err(format!("alg {alg}"));
    };
    let mut v = Verifier::new(digest(&alg), &key).map_err(|e| e.to_string())?;
    v.update(format!("{}.{}", parts[0], parts[1]).as_bytes())
        .map_err(|e| e.to_string())?;
    if v.verify(&sig).map_err(|e| e.to_string())? {
        Ok(claims)
    } else {
        Err("signature does not verify".into())
    }
}

// ---------------------------------------------------------------- fixture

/// Keys and JWKS files shared by every test in this binary (generated once).
pub struct Fixture {
    /// `SMART_ISS`'s keys, one per algorithm (kids `smart-rs256`, ...).
    pub smart: Vec<TestKey>,
    /// `NHS_ISS`'s key.
    pub nhs: TestKey,
    /// A key in no JWKS.
    pub stranger: TestKey,
    /// The clients' keys (RS384, ES384).
    pub client_rs: TestKey,
    pub client_es: TestKey,
    pub smart_jwks: PathBuf,
    pub nhs_jwks: PathBuf,
    pub client_rs_jwks: PathBuf,
    pub client_es_jwks: PathBuf,
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::Builder::new()
        .prefix("fhirbridge-auth-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let smart: Vec<TestKey> = ["RS256", "RS384", "RS512", "ES256", "ES384"]
        .into_iter()
        .map(|alg| TestKey::new(alg, &format!("smart-{}", alg.to_lowercase())))
        .collect();
    let nhs = TestKey::new("ES256", "nhs-es256");
    let stranger = TestKey::new("RS256", "stranger-rs256");
    let client_rs = TestKey::new("RS384", "client-rs384");
    let client_es = TestKey::new("ES384", "client-es384");
    let write = |name: &str, keys: &[&TestKey]| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, jwks(keys).to_string()).expect("write JWKS");
        p
    };
    let smart_refs: Vec<&TestKey> = smart.iter().collect();
    Fixture {
        smart_jwks: write("smart.jwks.json", &smart_refs),
        nhs_jwks: write("nhs.jwks.json", &[&nhs]),
        client_rs_jwks: write("client-rs.jwks.json", &[&client_rs]),
        client_es_jwks: write("client-es.jwks.json", &[&client_es]),
        smart,
        nhs,
        stranger,
        client_rs,
        client_es,
    }
});

/// A fresh `jti`.
pub fn jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Base claims of a `SMART_ISS` token with `scope`, valid for five minutes.
pub fn claims(scope: &str) -> Value {
    let t = now();
    json!({"iss": SMART_ISS, "aud": AUDIENCE, "sub": "test-subject",
           "iat": t, "exp": t + 300, "scope": scope, "jti": jti()})
}

/// `base` with `changes` applied: each key set, or removed when `null`.
pub fn with(mut base: Value, changes: Value) -> Value {
    let o = base.as_object_mut().expect("claims object");
    for (k, v) in changes.as_object().expect("changes object") {
        if v.is_null() {
            o.remove(k);
        } else {
            o.insert(k.clone(), v.clone());
        }
    }
    base
}

impl Fixture {
    /// The `SMART_ISS` key for `alg`.
    pub fn smart_key(&self, alg: &str) -> &TestKey {
        self.smart.iter().find(|k| k.alg == alg).expect("smart key")
    }

    /// `claims(scope)` with `changes`, signed RS256 by `SMART_ISS`.
    pub fn token(&self, scope: &str, changes: Value) -> String {
        self.smart_key("RS256").token(&with(claims(scope), changes))
    }

    /// A backend service token that may do everything.
    pub fn system_token(&self) -> String {
        self.token("system/*.cruds", json!({"sub": "test-backend"}))
    }

    /// A `patient/` token about Patient `pid`.
    pub fn patient_token(&self, pid: &str, scope: &str) -> String {
        self.token(scope, json!({"patient": pid}))
    }

    /// A `user/` token for Practitioner `practitioner`.
    pub fn user_token(&self, scope: &str, practitioner: &str) -> String {
        self.token(
            scope,
            json!({"fhirUser": format!("Practitioner/{practitioner}")}),
        )
    }

    /// An `NHS_ISS` token for NHS number `nhs` with `vot` (e.g. `P9.Cp.Cd`).
    pub fn nhs_token(&self, nhs: &str, vot: &str, scope: &str) -> String {
        let t = now();
        self.nhs.token(&json!({
            "iss": NHS_ISS, "aud": AUDIENCE, "sub": format!("nhs-login-{}", jti()),
            "iat": t, "exp": t + 300, "scope": scope, "nhs_number": nhs, "vot": vot,
            "jti": jti()
        }))
    }
}

/// `[auth]` for the fixture: required, `AUDIENCE`, `SMART_ISS` (file JWKS,
/// `patient` claim), `NHS_ISS` (file JWKS, `nhs_number` claim, P9), and the
/// two token-endpoint clients.
pub fn required(s: &mut Settings) {
    let f = &*FIXTURE;
    let path = |p: &Path| Some(p.display().to_string());
    s.auth.mode = Some(AuthMode::Required);
    s.auth.audience = Some(AUDIENCE.to_owned());
    s.auth.issuers = vec![
        IssuerSettings {
            issuer: SMART_ISS.into(),
            jwks_file: path(&f.smart_jwks),
            patient_claim: Some("patient".into()),
            ..IssuerSettings::default()
        },
        IssuerSettings {
            issuer: NHS_ISS.into(),
            jwks_file: path(&f.nhs_jwks),
            nhs_number_claim: Some("nhs_number".into()),
            min_identity_proofing: Some("P9".into()),
            ..IssuerSettings::default()
        },
    ];
    s.auth.clients = vec![
        ClientSettings {
            client_id: CLIENT_RS.into(),
            jwks_file: path(&f.client_rs_jwks),
            scopes: CLIENT_RS_SCOPES.into(),
            ..ClientSettings::default()
        },
        ClientSettings {
            client_id: CLIENT_ES.into(),
            jwks_file: path(&f.client_es_jwks),
            scopes: CLIENT_ES_SCOPES.into(),
            ..ClientSettings::default()
        },
    ];
}

/// The issue's `[auth]` TOML with the fixture's files (the documented shape).
pub fn auth_toml() -> String {
    let f = &*FIXTURE;
    format!(
        r#"[auth]
mode = "required"
audience = "{AUDIENCE}"

[[auth.issuers]]
issuer = "{SMART_ISS}"
jwks_file = "{smart}"
patient_claim = "patient"

[[auth.issuers]]
issuer = "{NHS_ISS}"
jwks_file = "{nhs}"
nhs_number_claim = "nhs_number"
min_identity_proofing = "P9"

[[auth.clients]]
client_id = "{CLIENT_RS}"
jwks_file = "{crs}"
scopes = "{CLIENT_RS_SCOPES}"

[[auth.clients]]
client_id = "{CLIENT_ES}"
jwks_file = "{ces}"
scopes = "{CLIENT_ES_SCOPES}"
"#,
        smart = f.smart_jwks.display(),
        nhs = f.nhs_jwks.display(),
        crs = f.client_rs_jwks.display(),
        ces = f.client_es_jwks.display(),
    )
}

// ---------------------------------------------------------------- clients

/// Requests to a `TestApp` that carry `Authorization: Bearer <token>`.
pub struct Authed<'a> {
    pub app: &'a TestApp,
    pub token: String,
}

impl TestApp {
    pub fn bearer(&self, token: &str) -> Authed<'_> {
        Authed {
            app: self,
            token: token.to_owned(),
        }
    }

    /// As the fixture's all-powerful backend service.
    pub fn admin(&self) -> Authed<'_> {
        self.bearer(&FIXTURE.system_token())
    }
}

impl Authed<'_> {
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let auth = format!("Bearer {}", self.token);
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(headers);
        self.app.request(method, path, &h, body).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None).await
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

    /// A JSON Patch.
    pub async fn patch(&self, path: &str, ops: &Value) -> Resp {
        self.request(
            "PATCH",
            path,
            &[("Content-Type", "application/json-patch+json")],
            Some(ops.to_string().into_bytes()),
        )
        .await
    }

    /// `POST [type]/_search` with a form body.
    pub async fn post_search(&self, path: &str, form: &str) -> Resp {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form.as_bytes().to_vec()),
        )
        .await
    }

    /// `PUT` of `resource` to its own `Type/id`, asserting 200/201.
    pub async fn upsert(&self, resource: &Value) -> Value {
        let path = format!(
            "/fhir/{}/{}",
            resource["resourceType"].as_str().expect("resourceType"),
            resource["id"].as_str().expect("id")
        );
        let r = self.put(&path, resource).await;
        assert!(
            r.status == 200 || r.status == 201,
            "PUT {path}: {} {}",
            r.status,
            r.text()
        );
        r.json()
    }

    /// `Bundle.total` of a search (asserting 200).
    pub async fn total(&self, path: &str) -> i64 {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()["total"]
            .as_i64()
            .unwrap_or_else(|| panic!("{path}: no total"))
    }
}

pub use crate::helpers::entry_ids;

/// Asserts a 401 for a bad token: the `invalid_token` challenge and an
/// OperationOutcome.
pub fn assert_invalid_token(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let www = r
        .header("WWW-Authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    assert!(
        www.starts_with(CHALLENGE) && www.contains("error=\"invalid_token\""),
        "{what}: WWW-Authenticate: {www}"
    );
    assert!(!r.issues().is_empty(), "{what}");
}

/// Asserts a 401 for a request without a token: the bare challenge (no
/// error code, RFC 6750 §3.1) and an OperationOutcome.
pub fn assert_no_token(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let www = r
        .header("WWW-Authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    assert!(
        www.starts_with(CHALLENGE) && !www.contains("error="),
        "{what}: WWW-Authenticate: {www}"
    );
    assert!(!r.issues().is_empty(), "{what}");
}

/// Asserts a 403 `forbidden` OperationOutcome with the `insufficient_scope`
/// challenge.
pub fn assert_forbidden(r: &Resp, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    let issues = r.issues();
    assert!(
        issues.iter().any(|i| i["code"] == "forbidden"),
        "{what}: {issues:?}"
    );
    let www = r.header("WWW-Authenticate").unwrap_or_default();
    assert!(
        www.contains("error=\"insufficient_scope\""),
        "{what}: WWW-Authenticate: {www:?}"
    );
}

/// Asserts a 403 `forbidden` OperationOutcome (a decision about content,
/// not scopes: no particular challenge required).
pub fn assert_refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    let issues = r.issues();
    assert!(
        issues.iter().any(|i| i["code"] == "forbidden"),
        "{what}: {issues:?}"
    );
}

// ---------------------------------------------------------------- raw HTTP

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) to
/// `base` and returns (status, head, body). Status 0: the server closed
/// the connection without an answer.
pub async fn raw_http(base: &str, request: Vec<u8>) -> (u16, String, Vec<u8>) {
    let addr = base.trim_start_matches("http://").to_owned();
    actix_rt::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let _ = s.write_all(&request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |p| p + 4);
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head, out[split..].to_vec())
    })
    .await
    .expect("raw HTTP thread")
}

// ---------------------------------------------------------------- JWKS server

/// What the test JWKS server answers.
#[derive(Clone, Debug)]
pub enum Jwks {
    /// 200 with this body.
    Serve(String),
    /// Accepts, reads the request, then says nothing for a minute.
    Hang,
    /// 200 with a body that is not JSON.
    Junk,
    /// 200 with a JSON document of this many bytes.
    Huge(usize),
    /// This status with an empty body.
    Status(u16),
}

/// A tiny HTTP server on loopback serving one JWKS (or misbehaving).
pub struct JwksServer {
    pub url: String,
    mode: Arc<Mutex<Jwks>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub fn start(mode: Jwks) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind JWKS server");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(AtomicUsize::new(0));
        let (m, h) = (mode.clone(), hits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (m, h) = (m.clone(), h.clone());
                std::thread::spawn(move || serve_one(conn, &m, &h));
            }
        });
        JwksServer { url, mode, hits }
    }

    pub fn set(&self, mode: Jwks) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve_one(mut conn: TcpStream, mode: &Mutex<Jwks>, hits: &AtomicUsize) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let mode = mode.lock().expect("mode").clone();
    let respond = |conn: &mut TcpStream, status: u16, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(body);
    };
    match mode {
        Jwks::Serve(body) => respond(&mut conn, 200, body.as_bytes()),
        Jwks::Hang => std::thread::sleep(Duration::from_secs(60)),
        Jwks::Junk => respond(&mut conn, 200, b"<html>\x00\xff not a JWKS {{{"),
        Jwks::Status(s) => respond(&mut conn, s, b""),
        Jwks::Huge(n) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            );
            if conn.write_all(head.as_bytes()).is_err() {
                return;
            }
            let mut body = br#"{"keys": [], "padding": ""#.to_vec();
            body.resize(n.saturating_sub(2), b'x');
            body.extend_from_slice(b"\"}");
            for c in body.chunks(16 * 1024) {
                if conn.write_all(c).is_err() {
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- metrics

/// The sum of `fhirbridge_auth_failures_total` over every label set in a
/// Prometheus text exposition.
pub fn auth_failures(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("fhirbridge_auth_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
