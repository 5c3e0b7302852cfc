//! Bearer-token authentication: from an `Authorization` header to a
//! [`Caller`], or the reason it is refused. Signature, issuer, audience and
//! time checks, then the patient context. A verified token is remembered
//! (by its SHA-256, never its text) until it expires, so a hot path checks
//! each signature once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::claims::{asserted_proofing, now_secs, proofing_rank, Caller};
use super::config::{AuthSettings, IssuerSettings};
use super::jwks::{FetchLimits, KeyError, KeySource};
use super::jwt::{decode_token, JwtError, MAX_TOKEN_BYTES};
use super::scope::{ScopeContext, Scopes};
use crate::model::{LogicalId, ResourceType};

/// NHS number identifier system.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// How long a patient context found by NHS number is trusted before it is
/// looked up again (a merged or re-numbered record is noticed this fast).
const PATIENT_LOOKUP_TTL: Duration = Duration::from_secs(60);

/// Why a request was refused before reaching the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials: 401 with a `realm` challenge.
    Missing,
    /// Bad credentials: 401 `error="invalid_token"`; the reason is a
    /// bounded label (metrics), never the token or a claim value.
    Invalid(&'static str),
    /// Valid credentials that cannot be used: 403 (the message is safe).
    Forbidden(&'static str, String),
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid(r) | AuthError::Forbidden(r, _) => r,
        }
    }
}

/// Finds the one Patient with an NHS number (the patient context of NHS
/// login tokens): `Ok(None)` when none or several match.
#[async_trait::async_trait(?Send)]
pub trait PatientDirectory {
    async fn by_nhs_number(&self, nhs_number: &str) -> Result<Option<LogicalId>, String>;
}

struct Issuer {
    settings: IssuerSettings,
    keys: KeySource,
    min_proofing: Option<u8>,
}

struct Cached {
    caller: Arc<Caller>,
    /// When this entry must be verified again.
    until: Instant,
}

/// Verifies bearer tokens for the configured issuers (and our own).
pub struct Authenticator {
    audience: String,
    leeway: i64,
    issuers: Vec<Issuer>,
    cache: RwLock<HashMap<[u8; 32], Cached>>,
    cache_entries: usize,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.issuers.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// From `[auth]`; `audience` is the resolved audience (the setting, or
    /// the server's base URL).
    pub fn new(settings: &AuthSettings, audience: String) -> Authenticator {
        let limits = FetchLimits {
            timeout: Duration::from_millis(settings.jwks_timeout_ms),
            max_bytes: settings.jwks_max_bytes,
            min_refresh: Duration::from_secs(settings.jwks_min_refresh_secs),
            max_age: Duration::from_secs(settings.jwks_max_age_secs),
        };
        let issuers = settings
            .issuers
            .iter()
            .map(|i| Issuer {
                keys: match (&i.jwks_file, &i.jwks_uri) {
                    (Some(f), _) => KeySource::file(f),
                    (None, Some(u)) => KeySource::uri(u, limits),
                    (None, None) => KeySource::fixed(Default::default()),
                },
                min_proofing: i.min_identity_proofing.as_deref().and_then(proofing_rank),
                settings: i.clone(),
            })
            .collect();
        Authenticator {
            audience,
            leeway: settings.leeway_secs as i64,
            issuers,
            cache: RwLock::new(HashMap::new()),
            cache_entries: settings.token_cache_entries.max(1),
        }
    }

    /// Trusts tokens from `issuer` signed by `keys` (our own token endpoint:
    /// scopes as issued, no patient claim).
    pub fn trust(&mut self, issuer: String, keys: KeySource) {
        self.issuers.push(Issuer {
            settings: IssuerSettings {
                issuer,
                // What our own tokens carry (`fhirbridge demo token`): the
                // SMART launch's `patient` and the NHS number.
                patient_claim: Some("patient".into()),
                nhs_number_claim: Some("nhs_number".into()),
                ..IssuerSettings::default()
            },
            keys,
            min_proofing: None,
        });
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The caller of a request with these `Authorization` header values.
    /// `token_in_query`: the query string carries `access_token` (refused:
    /// tokens in URLs end up in logs and histories).
    pub async fn authenticate(
        &self,
        authorization: &[&[u8]],
        token_in_query: bool,
        directory: &dyn PatientDirectory,
    ) -> Result<Arc<Caller>, AuthError> {
        if token_in_query {
            return Err(AuthError::Invalid("token_in_query"));
        }
        let header = match authorization {
            [] => return Err(AuthError::Missing),
            [one] => *one,
            _ => return Err(AuthError::Invalid("malformed")),
        };
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Invalid("malformed"))?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthError::Invalid("malformed"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Invalid("scheme"));
        }
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("malformed"));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let (caller, until) = self.verify(token, directory).await?;
        let caller = Arc::new(caller);
        self.remember(key, caller.clone(), until);
        Ok(caller)
    }

    /// Drops every remembered verification (benches measure the cold path).
    pub fn forget_all(&self) {
        if let Ok(mut c) = self.cache.write() {
            c.clear();
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Arc<Caller>> {
        let cache = self.cache.read().ok()?;
        let hit = cache.get(key)?;
        (hit.until > Instant::now()).then(|| hit.caller.clone())
    }

    fn remember(&self, key: [u8; 32], caller: Arc<Caller>, until: Instant) {
        let Ok(mut cache) = self.cache.write() else {
            return;
        };
        if cache.len() >= self.cache_entries {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            if cache.len() >= self.cache_entries {
                cache.clear();
            }
        }
        cache.insert(key, Cached { caller, until });
    }

    async fn verify(
        &self,
        token: &str,
        directory: &dyn PatientDirectory,
    ) -> Result<(Caller, Instant), AuthError> {
        let jwt = decode_token(token).map_err(|e| AuthError::Invalid(e.reason()))?;
        let claims = &jwt.claims;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AuthError::Invalid("issuer"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.settings.issuer == iss)
            .ok_or(AuthError::Invalid("issuer"))?;
        let key = issuer
            .keys
            .find(jwt.kid.as_deref(), jwt.alg)
            .await
            .map_err(|e| match e {
                KeyError::UnknownKey => AuthError::Invalid(JwtError::UnknownKey.reason()),
                KeyError::Unavailable(_) => AuthError::Invalid("jwks_unavailable"),
            })?;
        jwt.verify(&key)
            .map_err(|e| AuthError::Invalid(e.reason()))?;
        let now = now_secs();
        let exp = self.check_times(claims, now)?;
        if !audience_matches(claims.get("aud"), &self.audience) {
            return Err(AuthError::Invalid("audience"));
        }
        let scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) => Scopes::parse(s),
            (None, Some(Value::Array(a))) => Scopes::parse(
                &a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            (None, Some(Value::String(s))) => Scopes::parse(s),
            (None, None) => Scopes::default(),
            _ => return Err(AuthError::Invalid("malformed")),
        };
        let text = |k: &str| claims.get(k).and_then(Value::as_str);
        let client_id = text("client_id").or_else(|| text("azp")).map(str::to_owned);
        let proofing_ok = match issuer.min_proofing {
            None => true,
            Some(min) => asserted_proofing(claims).is_some_and(|l| l >= min),
        };
        let fhir_user = text("fhirUser").and_then(crate::search::index::split_reference);
        let mut lifetime_cap = None;
        let patient = match self.patient_context(issuer, claims, directory).await? {
            PatientContext::Claim(id) => Some(id),
            PatientContext::Looked(id) => {
                lifetime_cap = Some(PATIENT_LOOKUP_TTL);
                Some(id)
            }
            PatientContext::None => None,
        };
        if patient.is_none() && scopes.has_context(ScopeContext::Patient) {
            return Err(AuthError::Forbidden(
                "no_patient_context",
                "The token has patient/ scopes but no patient context".into(),
            ));
        }
        let caller = Caller {
            issuer: iss.to_owned(),
            subject: text("sub").unwrap_or_default().to_owned(),
            client_id,
            scopes,
            patient,
            fhir_user: fhir_user.filter(|(t, _)| {
                matches!(
                    *t,
                    ResourceType::Practitioner
                        | ResourceType::PractitionerRole
                        | ResourceType::Patient
                        | ResourceType::RelatedPerson
                )
            }),
            proofing_ok,
            expires_at: exp,
            nhs_number: issuer
                .settings
                .nhs_number_claim
                .as_deref()
                .and_then(text)
                .filter(|n| n.len() <= 32 && n.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned),
            ods_code: text("ods_code")
                .filter(|o| !o.is_empty() && o.len() <= 16)
                .map(str::to_owned),
            purposes: match claims.get("purpose_of_use") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(AuthError::Invalid("malformed"))?,
                Some(_) => return Err(AuthError::Invalid("malformed")),
            },
        };
        let remaining = (exp + self.leeway - now).max(0) as u64;
        let mut ttl = Duration::from_secs(remaining);
        if let Some(cap) = lifetime_cap {
            ttl = ttl.min(cap);
        }
        Ok((caller, Instant::now() + ttl))
    }

    /// `exp` (required), `nbf`, `iat`, each with the leeway.
    fn check_times(&self, claims: &Map<String, Value>, now: i64) -> Result<i64, AuthError> {
        let num = |k: &str| -> Result<Option<i64>, AuthError> {
            match claims.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| Some(f as i64))
                    .ok_or(AuthError::Invalid("malformed")),
            }
        };
        let exp = num("exp")?.ok_or(AuthError::Invalid("expired"))?;
        if now > exp + self.leeway {
            return Err(AuthError::Invalid("expired"));
        }
        if num("nbf")?.is_some_and(|nbf| nbf > now + self.leeway) {
            return Err(AuthError::Invalid("not_yet_valid"));
        }
        if num("iat")?.is_some_and(|iat| iat > now + self.leeway) {
            return Err(AuthError::Invalid("issued_in_future"));
        }
        Ok(exp)
    }

    async fn patient_context(
        &self,
        issuer: &Issuer,
        claims: &Map<String, Value>,
        directory: &dyn PatientDirectory,
    ) -> Result<PatientContext, AuthError> {
        if let Some(claim) = &issuer.settings.patient_claim {
            if let Some(v) = claims.get(claim) {
                let id = v
                    .as_str()
                    .and_then(LogicalId::parse)
                    .ok_or(AuthError::Invalid("malformed"))?;
                return Ok(PatientContext::Claim(id));
            }
        }
        if let Some(claim) = &issuer.settings.nhs_number_claim {
            if let Some(v) = claims.get(claim) {
                let nhs = v.as_str().ok_or(AuthError::Invalid("malformed"))?;
                if nhs.is_empty() || nhs.len() > 32 || !nhs.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(AuthError::Forbidden(
                        "no_patient_context",
                        "The token's NHS number names no patient here".into(),
                    ));
                }
                return match directory.by_nhs_number(nhs).await {
                    Ok(Some(id)) => Ok(PatientContext::Looked(id)),
                    Ok(None) => Err(AuthError::Forbidden(
                        "no_patient_context",
                        "The token's NHS number does not name exactly one patient here".into(),
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "patient lookup for a token failed");
                        Err(AuthError::Forbidden(
                            "patient_lookup_failed",
                            "The token's patient could not be looked up; retry".into(),
                        ))
                    }
                };
            }
        }
        Ok(PatientContext::None)
    }
}

enum PatientContext {
    Claim(LogicalId),
    Looked(LogicalId),
    None,
}

fn audience_matches(aud: Option<&Value>, want: &str) -> bool {
    // Exact string comparison (RFC 7519 §4.1.3).
    let same = |a: &str| a == want;
    match aud {
        Some(Value::String(a)) => same(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(same),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::{JwkSet, SigningKey};
    use serde_json::json;

    struct NoPatients;
    #[async_trait::async_trait(?Send)]
    impl PatientDirectory for NoPatients {
        async fn by_nhs_number(&self, _: &str) -> Result<Option<LogicalId>, String> {
            Ok(None)
        }
    }

    fn auth_with(key: &SigningKey) -> Authenticator {
        let mut a = Authenticator::new(&AuthSettings::default(), "https://fhir.test/fhir".into());
        let set = JwkSet::parse(
            json!({"keys": [key.public_jwk().unwrap()]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        a.trust("https://iss.test".into(), KeySource::fixed(Arc::new(set)));
        a
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn claims_are_checked() {
        let key = SigningKey::generate_es384().unwrap();
        let a = auth_with(&key);
        let now = now_secs();
        let good = json!({"iss": "https://iss.test", "aud": ["x", "https://fhir.test/fhir"],
            "exp": now + 300, "iat": now, "sub": "s", "scope": "system/*.rs"});
        let run = |claims: &Value| {
            let t = format!("Bearer {}", key.sign(claims, "JWT").unwrap());
            block(a.authenticate(&[t.as_bytes()], false, &NoPatients))
        };
        assert!(run(&good).is_ok());
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        assert_eq!(
            run(&with("exp", json!(now - 61))).unwrap_err(),
            AuthError::Invalid("expired")
        );
        assert!(run(&with("exp", json!(now - 30))).is_ok(), "within leeway");
        assert_eq!(
            run(&with("nbf", json!(now + 120))).unwrap_err(),
            AuthError::Invalid("not_yet_valid")
        );
        assert_eq!(
            run(&with("iat", json!(now + 120))).unwrap_err(),
            AuthError::Invalid("issued_in_future")
        );
        assert_eq!(
            run(&with("aud", json!("https://other/fhir"))).unwrap_err(),
            AuthError::Invalid("audience")
        );
        assert_eq!(
            run(&with("iss", json!("https://evil"))).unwrap_err(),
            AuthError::Invalid("issuer")
        );
        assert_eq!(
            run(&with("scope", json!("patient/*.rs")))
                .unwrap_err()
                .reason(),
            "no_patient_context"
        );
        assert_eq!(
            block(a.authenticate(&[], false, &NoPatients)).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            block(a.authenticate(&[b"Basic eDp5"], false, &NoPatients)).unwrap_err(),
            AuthError::Invalid("scheme")
        );
        let other = SigningKey::generate_es384().unwrap();
        let t = format!("Bearer {}", other.sign(&good, "JWT").unwrap());
        assert_eq!(
            block(a.authenticate(&[t.as_bytes()], false, &NoPatients)).unwrap_err(),
            AuthError::Invalid("unknown_key")
        );
    }
}
