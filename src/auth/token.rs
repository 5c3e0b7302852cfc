//! Our SMART Backend Services token endpoint (`POST /auth/token`): the
//! OAuth 2.0 client credentials grant with a `private_key_jwt` client
//! assertion (RFC 7523, SMART's `client-confidential-asymmetric`). A
//! configured client (`[[auth.clients]]`) proves itself with a short-lived
//! JWT signed by a key in its JWKS and gets an access token signed by the
//! server's key ([`super::keys`]) with scopes = requested ∩ allowed
//! (system/ scopes only). Errors are RFC 6749 §5.2 codes. Nothing here logs
//! an assertion, a token or a claim value.
//!
//! Replay: each assertion's `jti` is remembered per client until the
//! assertion expires, in memory (bounded). With several instances on one
//! database the cache is per instance: an assertion could be replayed once
//! against each other instance within its (at most five-minute) lifetime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::claims::now_secs;
use super::config::AuthSettings;
use super::jwks::{FetchLimits, KeyError, KeySource};
use super::jwt::decode_token;
use super::keys::ServerKeys;
use super::scope::{Grant, ScopeContext, Scopes};

pub const GRANT_TYPE: &str = "client_credentials";
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The longest an assertion may live: `exp` at most this far ahead.
pub const MAX_ASSERTION_SECS: i64 = 300;
/// Longest `jti` accepted.
const MAX_JTI: usize = 256;
/// Assertions remembered for replay detection (each at most
/// `MAX_ASSERTION_SECS` + leeway).
const REPLAY_ENTRIES: usize = 100_000;

/// RFC 6749 §5.2 error codes (plus `temporarily_unavailable` when the
/// replay cache is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    UnsupportedGrantType,
    InvalidScope,
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient => 401,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// A refused token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub code: ErrorCode,
    /// Bounded label for `auth_failures_total` (`token_…`).
    pub reason: &'static str,
    /// `error_description`: safe text, never a claim value.
    pub description: String,
}

fn fail(code: ErrorCode, reason: &'static str, description: &str) -> TokenError {
    TokenError {
        code,
        reason,
        description: description.to_owned(),
    }
}

fn bad_client(reason: &'static str, description: &str) -> TokenError {
    fail(ErrorCode::InvalidClient, reason, description)
}

/// A successful token response.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

impl Issued {
    /// The response body (`token_type` is `bearer`).
    pub fn to_json(&self) -> Value {
        json!({
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        })
    }
}

struct Client {
    keys: KeySource,
    jwks_uri: Option<String>,
    /// The system/ grants it may be given.
    allowed: Vec<Grant>,
    ods_code: Option<String>,
    purpose_of_use: Vec<String>,
}

/// `jti`s seen, by SHA-256 of client id and jti, with when they may be
/// forgotten.
struct ReplayCache {
    seen: HashMap<[u8; 32], i64>,
    capacity: usize,
}

impl ReplayCache {
    /// `Ok(true)`: first use; `Ok(false)`: a replay; `Err`: full.
    fn first_use(&mut self, key: [u8; 32], forget_after: i64, now: i64) -> Result<bool, ()> {
        if let Some(until) = self.seen.get(&key) {
            if *until >= now {
                return Ok(false);
            }
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, until| *until >= now);
            if self.seen.len() >= self.capacity {
                return Err(());
            }
        }
        self.seen.insert(key, forget_after);
        Ok(true)
    }
}

/// The token endpoint's state: clients, our issuer and key, the replay cache.
pub struct TokenEndpoint {
    clients: HashMap<String, Client>,
    issuer: String,
    audience: String,
    lifetime: u64,
    leeway: i64,
    keys: Arc<ServerKeys>,
    replay: Mutex<ReplayCache>,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// The greatest grant both `a` and `b` allow (same context), if any: the
/// narrower type, the common permissions, the one refinement.
pub fn meet(a: &Grant, b: &Grant) -> Option<Grant> {
    if a.context != b.context {
        return None;
    }
    let resource_type = match (a.resource_type, b.resource_type) {
        (None, t) | (t, None) => t,
        (Some(x), Some(y)) if x == y => Some(x),
        _ => return None,
    };
    let perms = a.perms.intersect(b.perms);
    if perms.is_empty() {
        return None;
    }
    let refinement = match (&a.refinement, &b.refinement) {
        (None, r) | (r, None) => r.clone(),
        (Some(x), Some(y)) if x == y => Some(x.clone()),
        // Two different refinements: SMART cannot say "both".
        _ => return None,
    };
    Some(Grant {
        context: a.context,
        resource_type,
        perms,
        refinement,
    })
}

/// requested ∩ allowed: every system/ grant that both allow, without the
/// ones another granted scope already includes.
pub fn intersect(requested: &Scopes, allowed: &[Grant]) -> Vec<Grant> {
    let mut out: Vec<Grant> = Vec::new();
    for r in requested
        .grants
        .iter()
        .filter(|g| g.context == ScopeContext::System)
    {
        for a in allowed {
            if let Some(g) = meet(r, a) {
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    let all = out.clone();
    out.retain(|g| {
        !all.iter()
            .any(|other| other != g && other.includes(g) && !g.includes(other))
    });
    out
}

impl TokenEndpoint {
    /// `issuer`: the `iss` of our tokens; `audience`: their `aud`.
    pub fn new(
        settings: &AuthSettings,
        issuer: String,
        audience: String,
        keys: Arc<ServerKeys>,
    ) -> TokenEndpoint {
        let limits = FetchLimits {
            timeout: Duration::from_millis(settings.jwks_timeout_ms),
            max_bytes: settings.jwks_max_bytes,
            min_refresh: Duration::from_secs(settings.jwks_min_refresh_secs),
            max_age: Duration::from_secs(settings.jwks_max_age_secs),
        };
        let clients = settings
            .clients
            .iter()
            .map(|c| {
                let keys = match (&c.jwks_file, &c.jwks_uri) {
                    (Some(f), _) => KeySource::file(f),
                    (None, Some(u)) => KeySource::uri(u, limits),
                    (None, None) => KeySource::fixed(Default::default()),
                };
                let allowed = Scopes::parse(&c.scopes)
                    .grants
                    .into_iter()
                    .filter(|g| g.context == ScopeContext::System)
                    .collect();
                (
                    c.client_id.clone(),
                    Client {
                        keys,
                        jwks_uri: c.jwks_uri.clone(),
                        allowed,
                        ods_code: c.ods_code.clone(),
                        purpose_of_use: c.purpose_of_use.clone(),
                    },
                )
            })
            .collect();
        TokenEndpoint {
            clients,
            issuer,
            audience,
            lifetime: settings.access_token_lifetime_secs,
            leeway: settings.leeway_secs as i64,
            keys,
            replay: Mutex::new(ReplayCache {
                seen: HashMap::new(),
                capacity: REPLAY_ENTRIES,
            }),
        }
    }

    /// Answers one token request: `params` are the form's pairs as sent;
    /// `token_urls` the URLs a client assertion's `aud` may name (this
    /// endpoint as the request reached it, and as the server's configured
    /// or start-up base names it).
    pub async fn issue(
        &self,
        params: &[(String, String)],
        token_urls: &[String],
    ) -> Result<Issued, TokenError> {
        let mut form: HashMap<&str, &str> = HashMap::new();
        for (k, v) in params {
            if form.insert(k.as_str(), v.as_str()).is_some() {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "token_invalid_request",
                    "A parameter is given more than once",
                ));
            }
        }
        // RFC 6749 §3.2: a parameter sent without a value is treated as
        // omitted.
        let get = |k: &str| form.get(k).copied().filter(|v| !v.is_empty());
        match get("grant_type") {
            None => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "token_invalid_request",
                    "grant_type is required (client_credentials)",
                ))
            }
            Some(GRANT_TYPE) => {}
            Some(_) => {
                return Err(fail(
                    ErrorCode::UnsupportedGrantType,
                    "token_unsupported_grant_type",
                    "Only the client_credentials grant is supported",
                ))
            }
        }
        let assertion = match (get("client_assertion_type"), get("client_assertion")) {
            (None, None) => {
                return Err(bad_client(
                    "token_no_client_authentication",
                    "Client authentication is required: client_assertion_type \
                     urn:ietf:params:oauth:client-assertion-type:jwt-bearer and a signed \
                     client_assertion",
                ))
            }
            (Some(ASSERTION_TYPE), Some(a)) => a,
            (Some(_), Some(_)) => {
                return Err(bad_client(
                    "token_unsupported_authentication",
                    "client_assertion_type must be \
                     urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ))
            }
            _ => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "token_invalid_request",
                    "client_assertion_type and client_assertion go together",
                ))
            }
        };
        let Some(scope) = get("scope") else {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "token_invalid_request",
                "scope is required (e.g. system/*.rs)",
            ));
        };
        let client_id = self
            .authenticate(assertion, get("client_id"), token_urls)
            .await?;
        let client = &self.clients[&client_id];
        let requested = Scopes::parse_strict(scope).map_err(|_| {
            fail(
                ErrorCode::InvalidScope,
                "token_invalid_scope",
                "The scope is malformed (SMART scopes such as system/*.rs or \
                 system/Patient.read)",
            )
        })?;
        let granted = intersect(&requested, &client.allowed);
        if granted.is_empty() {
            return Err(fail(
                ErrorCode::InvalidScope,
                "token_invalid_scope",
                "None of the requested scopes can be granted to this client \
                 (backend clients get system/ scopes within their allowed set)",
            ));
        }
        let scope = granted
            .iter()
            .map(Grant::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let now = now_secs();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.lifetime as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
            "scope": scope,
        });
        if let Some(ods) = &client.ods_code {
            claims["ods_code"] = json!(ods);
        }
        if !client.purpose_of_use.is_empty() {
            claims["purpose_of_use"] = json!(client.purpose_of_use);
        }
        let access_token = self
            .keys
            .signing_key()
            .sign(&claims, "at+jwt")
            .map_err(|_| {
                tracing::error!("signing an access token failed");
                fail(
                    ErrorCode::TemporarilyUnavailable,
                    "token_signing_failed",
                    "The token could not be signed; retry",
                )
            })?;
        Ok(Issued {
            access_token,
            expires_in: self.lifetime,
            scope,
        })
    }

    /// Checks the client assertion; the client's id when it holds.
    async fn authenticate(
        &self,
        assertion: &str,
        client_id_param: Option<&str>,
        token_urls: &[String],
    ) -> Result<String, TokenError> {
        let jwt = decode_token(assertion).map_err(|e| {
            bad_client(
                match e.reason() {
                    "algorithm" => "token_algorithm",
                    _ => "token_malformed",
                },
                "The client assertion is not a JWS signed RS256, RS384, RS512, ES256 or ES384",
            )
        })?;
        let c = &jwt.claims;
        let text = |k: &str| c.get(k).and_then(Value::as_str);
        let (Some(iss), Some(sub)) = (text("iss"), text("sub")) else {
            return Err(bad_client(
                "token_malformed",
                "The client assertion needs iss and sub (both the client_id)",
            ));
        };
        if iss != sub {
            return Err(bad_client(
                "token_malformed",
                "The client assertion's iss and sub must both be the client_id",
            ));
        }
        let Some(client) = self.clients.get(iss) else {
            return Err(bad_client("token_unknown_client", "Unknown client"));
        };
        if client_id_param.is_some_and(|p| p != iss) {
            return Err(bad_client(
                "token_client_mismatch",
                "client_id does not match the client assertion's iss",
            ));
        }
        if jwt.kid.is_none() {
            return Err(bad_client(
                "token_malformed",
                "The client assertion's header needs the kid of the signing key",
            ));
        }
        match jwt.header.get("jku") {
            None => {}
            Some(Value::String(jku)) if client.jwks_uri.as_deref() == Some(jku.as_str()) => {}
            Some(_) => {
                return Err(bad_client(
                    "token_jku",
                    "The client assertion's jku is not the client's registered JWKS URL",
                ))
            }
        }
        let key = client
            .keys
            .find(jwt.kid.as_deref(), jwt.alg)
            .await
            .map_err(|e| match e {
                KeyError::UnknownKey => bad_client(
                    "token_unknown_key",
                    "No key of the client's JWKS matches the assertion's kid and alg",
                ),
                KeyError::Unavailable(_) => bad_client(
                    "token_jwks_unavailable",
                    "The client's JWKS could not be read",
                ),
            })?;
        jwt.verify(&key).map_err(|_| {
            bad_client(
                "token_signature",
                "The client assertion's signature does not verify",
            )
        })?;
        // Signed by the client: now its claims count.
        let now = now_secs();
        let num = |k: &str| -> Result<Option<i64>, TokenError> {
            match c.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| Some(f as i64))
                    .ok_or_else(|| bad_client("token_malformed", "exp, nbf and iat are numbers")),
            }
        };
        let Some(exp) = num("exp")? else {
            return Err(bad_client(
                "token_malformed",
                "The client assertion needs exp",
            ));
        };
        if now > exp + self.leeway {
            return Err(bad_client(
                "token_expired",
                "The client assertion has expired",
            ));
        }
        if exp > now + MAX_ASSERTION_SECS + self.leeway {
            return Err(bad_client(
                "token_exp_too_far",
                "The client assertion's exp is more than five minutes ahead",
            ));
        }
        if num("nbf")?.is_some_and(|nbf| nbf > now + self.leeway)
            || num("iat")?.is_some_and(|iat| iat > now + self.leeway)
        {
            return Err(bad_client(
                "token_not_yet_valid",
                "The client assertion is not valid yet (nbf or iat in the future)",
            ));
        }
        let same = |a: &str| {
            token_urls
                .iter()
                .any(|u| u.trim_end_matches('/') == a.trim_end_matches('/'))
        };
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => same(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(same),
            _ => false,
        };
        if !aud_ok {
            return Err(bad_client(
                "token_audience",
                "The client assertion's aud must be this token endpoint's URL",
            ));
        }
        let jti = match text("jti") {
            Some(j) if !j.is_empty() && j.len() <= MAX_JTI => j,
            _ => {
                return Err(bad_client(
                    "token_malformed",
                    "The client assertion needs a jti (a unique string of at most 256 bytes)",
                ))
            }
        };
        let mut h = Sha256::new();
        h.update(iss.as_bytes());
        h.update([0u8]);
        h.update(jti.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        let first = {
            let mut cache = match self.replay.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            cache.first_use(key, exp + self.leeway, now)
        };
        match first {
            Ok(true) => Ok(iss.to_owned()),
            Ok(false) => Err(bad_client(
                "token_replay",
                "This client assertion (its jti) was used before",
            )),
            Err(()) => Err(fail(
                ErrorCode::TemporarilyUnavailable,
                "token_replay_cache_full",
                "Too many token requests; retry shortly",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::ClientSettings;
    use crate::auth::jwt::{JwkSet, SigningKey};
    use crate::auth::keys::KeyLocation;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn grants(s: &str) -> Vec<String> {
        let allowed = Scopes::parse("system/*.rs system/Appointment.cu");
        intersect(&Scopes::parse_strict(s).unwrap(), &allowed.grants)
            .iter()
            .map(Grant::to_string)
            .collect()
    }

    #[test]
    fn requested_meets_allowed() {
        assert_eq!(grants("system/Patient.rs"), ["system/Patient.rs"]);
        assert_eq!(
            grants("system/*.cruds"),
            ["system/*.rs", "system/Appointment.cu"]
        );
        assert_eq!(
            grants("system/*.read system/Observation.rs"),
            ["system/*.rs"],
            "included scopes are not repeated"
        );
        assert_eq!(grants("system/Patient.cud"), Vec::<String>::new());
        assert_eq!(
            grants("patient/*.rs user/*.rs openid"),
            Vec::<String>::new()
        );
        assert_eq!(
            grants("system/Observation.rs?category=laboratory"),
            ["system/Observation.rs?category=laboratory"]
        );
        let refined = Scopes::parse("system/Observation.rs?category=vital-signs");
        let got = intersect(
            &Scopes::parse("system/*.rs?category=laboratory"),
            &refined.grants,
        );
        assert!(got.is_empty(), "two different refinements meet in nothing");
    }

    struct Fixture {
        endpoint: TokenEndpoint,
        client_key: SigningKey,
        _dir: tempfile::TempDir,
    }

    const URL: &str = "https://fhir.test/auth/token";

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let client_key = SigningKey::generate_es384().unwrap();
        let jwks = dir.path().join("c.jwks.json");
        std::fs::write(
            &jwks,
            json!({"keys": [client_key.public_jwk().unwrap()]}).to_string(),
        )
        .unwrap();
        let settings = AuthSettings {
            clients: vec![ClientSettings {
                client_id: "gp".into(),
                jwks_file: Some(jwks.display().to_string()),
                jwks_uri: None,
                scopes: "system/*.rs".into(),
                ..ClientSettings::default()
            }],
            ..AuthSettings::default()
        };
        let keys = Arc::new(ServerKeys::open(KeyLocation::Ephemeral).unwrap());
        Fixture {
            endpoint: TokenEndpoint::new(
                &settings,
                "https://fhir.test/auth".into(),
                "https://fhir.test/fhir".into(),
                keys,
            ),
            client_key,
            _dir: dir,
        }
    }

    fn assertion(key: &SigningKey, patch: impl FnOnce(&mut Value)) -> String {
        let now = now_secs();
        let mut c = json!({"iss": "gp", "sub": "gp", "aud": URL, "exp": now + 240,
            "jti": uuid::Uuid::new_v4().to_string()});
        patch(&mut c);
        key.sign(&c, "JWT").unwrap()
    }

    fn form(assertion: &str, scope: &str) -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), GRANT_TYPE.into()),
            ("client_assertion_type".into(), ASSERTION_TYPE.into()),
            ("client_assertion".into(), assertion.into()),
            ("scope".into(), scope.into()),
        ]
    }

    fn run(f: &Fixture, params: &[(String, String)]) -> Result<Issued, TokenError> {
        block(f.endpoint.issue(params, &[URL.to_owned()]))
    }

    #[test]
    fn issues_a_token_our_keys_verify() {
        let f = fixture();
        let a = assertion(&f.client_key, |_| {});
        let issued = run(&f, &form(&a, "system/Patient.rs system/Patient.d")).unwrap();
        assert_eq!(issued.scope, "system/Patient.rs");
        assert_eq!(issued.expires_in, 300);
        let t = decode_token(&issued.access_token).unwrap();
        let set: Arc<JwkSet> = crate::auth::jwks::KeyProvider::keys(&*f.endpoint.keys);
        t.verify(set.find(t.kid.as_deref(), t.alg).unwrap())
            .unwrap();
        assert_eq!(t.claims["iss"], "https://fhir.test/auth");
        assert_eq!(t.claims["aud"], "https://fhir.test/fhir");
        assert_eq!(t.claims["client_id"], "gp");
        assert_eq!(t.claims["sub"], "gp");
        assert_eq!(t.claims["scope"], "system/Patient.rs");
        let (iat, exp) = (
            t.claims["iat"].as_i64().unwrap(),
            t.claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(exp - iat, 300);
        assert!(t.claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    }

    #[test]
    fn each_refusal_has_its_code() {
        let f = fixture();
        let code = |r: Result<Issued, TokenError>| r.unwrap_err().code;
        let reason = |r: Result<Issued, TokenError>| r.unwrap_err().reason;
        let a = assertion(&f.client_key, |_| {});
        assert!(run(&f, &form(&a, "system/*.rs")).is_ok());
        assert_eq!(reason(run(&f, &form(&a, "system/*.rs"))), "token_replay");
        let now = now_secs();
        for (patch, why) in [
            (json!({"exp": now + 301 + 60}), "token_exp_too_far"),
            (json!({"exp": now - 61}), "token_expired"),
            (json!({"aud": "https://other/auth/token"}), "token_audience"),
            (
                json!({"iss": "nobody", "sub": "nobody"}),
                "token_unknown_client",
            ),
            (json!({"sub": "other"}), "token_malformed"),
            (json!({"jti": ""}), "token_malformed"),
            (json!({"exp": null}), "token_malformed"),
            (json!({"iat": now + 120}), "token_not_yet_valid"),
        ] {
            let a = assertion(&f.client_key, |c| {
                for (k, v) in patch.as_object().unwrap() {
                    if v.is_null() {
                        c.as_object_mut().unwrap().remove(k);
                    } else {
                        c[k] = v.clone();
                    }
                }
            });
            let e = run(&f, &form(&a, "system/*.rs")).unwrap_err();
            assert_eq!(
                (e.code, e.reason),
                (ErrorCode::InvalidClient, why),
                "{patch}"
            );
        }
        // A within-leeway exp is fine; an array aud naming us too.
        let a = assertion(&f.client_key, |c| {
            c["exp"] = json!(now + 330);
            c["aud"] = json!(["x", URL]);
        });
        assert!(run(&f, &form(&a, "system/*.rs")).is_ok());
        let stranger = SigningKey::generate_es384().unwrap();
        let mut forged = assertion(&stranger, |_| {});
        // Same kid as the client's key, another key's signature.
        let mut parts: Vec<String> = forged.split('.').map(str::to_owned).collect();
        let real = assertion(&f.client_key, |_| {});
        parts[0] = real.split('.').next().unwrap().to_owned();
        forged = parts.join(".");
        assert_eq!(
            reason(run(&f, &form(&forged, "system/*.rs"))),
            "token_signature"
        );
        let a = assertion(&stranger, |_| {});
        assert_eq!(
            reason(run(&f, &form(&a, "system/*.rs"))),
            "token_unknown_key"
        );
        let a = assertion(&f.client_key, |_| {});
        assert_eq!(
            code(run(&f, &form(&a, "patient/*.rs"))),
            ErrorCode::InvalidScope
        );
        let a = assertion(&f.client_key, |_| {});
        assert_eq!(
            code(run(&f, &form(&a, "system/*.xyz"))),
            ErrorCode::InvalidScope
        );
        let mut p = form(&assertion(&f.client_key, |_| {}), "system/*.rs");
        p[0].1 = "authorization_code".into();
        assert_eq!(code(run(&f, &p)), ErrorCode::UnsupportedGrantType);
        let mut p = form(&assertion(&f.client_key, |_| {}), "system/*.rs");
        p.push(("scope".into(), "system/*.rs".into()));
        assert_eq!(code(run(&f, &p)), ErrorCode::InvalidRequest);
        let mut p = form(&assertion(&f.client_key, |_| {}), "system/*.rs");
        p.remove(3);
        assert_eq!(code(run(&f, &p)), ErrorCode::InvalidRequest);
        let mut p = form(&assertion(&f.client_key, |_| {}), "system/*.rs");
        p.remove(2);
        p.remove(1);
        assert_eq!(code(run(&f, &p)), ErrorCode::InvalidClient);
        let mut p = form(&assertion(&f.client_key, |_| {}), "system/*.rs");
        p[1].1 = "urn:other".into();
        assert_eq!(code(run(&f, &p)), ErrorCode::InvalidClient);
        let mut p = form(&assertion(&f.client_key, |_| {}), "system/*.rs");
        p.push(("client_id".into(), "other".into()));
        assert_eq!(reason(run(&f, &p)), "token_client_mismatch");
        assert_eq!(
            reason(run(&f, &form("garbage", "system/*.rs"))),
            "token_malformed"
        );
    }

    #[test]
    fn replay_cache_is_bounded() {
        let mut c = ReplayCache {
            seen: HashMap::new(),
            capacity: 2,
        };
        assert_eq!(c.first_use([1; 32], 100, 0), Ok(true));
        assert_eq!(c.first_use([1; 32], 100, 50), Ok(false));
        assert_eq!(c.first_use([2; 32], 10, 0), Ok(true));
        assert_eq!(
            c.first_use([3; 32], 100, 5),
            Err(()),
            "full of live entries"
        );
        assert_eq!(
            c.first_use([3; 32], 100, 20),
            Ok(true),
            "expired ones make room"
        );
    }
}
