//! SMART on FHIR endpoints: discovery (`GET [base]/.well-known/smart-configuration`),
//! our Backend Services token endpoint (`POST /auth/token`) and its JWKS
//! (`GET /auth/jwks`). All three are public routes (no token needed to get
//! one). With `auth.mode = "off"` they answer 404: there is no
//! authorization server to describe, and advertising one would be untrue.
//!
//! URLs are absolute and derived from the request's base URL
//! ([`extract::base_url`]: `server.base_url` when configured, else the
//! request's scheme and host), so a client is sent back to the address it
//! used. The `issuer` is fixed at start-up (it is the `iss` of every token
//! we sign); setting `server.base_url` makes both agree.

use actix_web::http::header;
use actix_web::HttpMessage as _;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::super::error::ApiError;
use super::super::extract::base_url;
use super::super::strict;
use super::super::{AppState, NotFhir};
use super::{label, ApiResult};
use crate::auth::jwt::Alg;
use crate::auth::token::{ErrorCode, TokenError};
use crate::auth::{auth_base, Auth};

/// Largest token request body read, in bytes (an assertion is at most
/// 16 KiB).
const MAX_FORM_BYTES: usize = 64 * 1024;

const OFF: &str = "Access control is off (auth.mode = \"off\"): this server has no \
                   SMART authorization server, token endpoint or JWKS";

fn enabled(state: &AppState) -> Result<&Auth, ApiError> {
    state
        .auth
        .as_deref()
        .ok_or_else(|| ApiError::NotFound(OFF.into()))
}

/// The signature algorithms accepted on client assertions, the two SMART
/// requires first.
pub fn assertion_algs() -> Vec<&'static str> {
    let first = [Alg::RS384, Alg::ES384];
    first
        .iter()
        .chain(Alg::ALL.iter().filter(|a| !first.contains(a)))
        .map(|a| a.as_str())
        .collect()
}

/// The discovery document for a server whose FHIR base (as this request
/// reached it) is `base`.
pub fn configuration_document(auth: &Auth, base: &str) -> Value {
    let endpoints = auth_base(base);
    // The scopes a client may hold here: system/ (our token endpoint);
    // patient/ and user/ only come from configured issuers.
    let mut contexts = vec!["system"];
    let mut capabilities = vec![
        "client-confidential-asymmetric",
        "permission-v1",
        "permission-v2",
    ];
    if !auth.settings.issuers.is_empty() {
        contexts.extend(["patient", "user"]);
        capabilities.extend(["permission-patient", "permission-user"]);
    }
    let scopes: Vec<String> = contexts
        .iter()
        .flat_map(|c| {
            ["cruds", "rs", "read", "write"]
                .into_iter()
                .map(move |p| format!("{c}/*.{p}"))
        })
        .collect();
    json!({
        "issuer": auth.issuer,
        "jwks_uri": format!("{endpoints}/jwks"),
        "token_endpoint": format!("{endpoints}/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs(),
        "scopes_supported": scopes,
        "capabilities": capabilities,
    })
}

/// `GET [base]/.well-known/smart-configuration`: always JSON, whatever the
/// `Accept` header (SMART App Launch 2.x, Conformance).
pub async fn configuration(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    label(&req, "smart-configuration", None);
    strict::only(&req, "smart-configuration", &[], &[])?;
    let auth = enabled(&state)?;
    let doc = configuration_document(auth, &base_url(&req, &state));
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(doc.to_string()))
}

/// `GET /auth/jwks`: the public keys our access tokens are signed with
/// (the current key and, after a rotation, the previous one).
pub async fn jwks(req: HttpRequest, state: web::Data<AppState>) -> ApiResult {
    label(&req, "jwks", None);
    strict::only(&req, "jwks", &[], &[])?;
    let auth = enabled(&state)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "max-age=60"))
        .body(auth.keys.jwks().to_string()))
}

/// An RFC 6749 §5.2 error response (JSON, not an OperationOutcome).
fn oauth_error(state: &AppState, e: &TokenError) -> HttpResponse {
    state
        .metrics
        .auth_failures
        .with_label_values(&[e.reason])
        .inc();
    let status = actix_web::http::StatusCode::from_u16(e.code.status())
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut b = HttpResponse::build(status);
    b.content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if e.code == ErrorCode::TemporarilyUnavailable {
        b.insert_header((header::RETRY_AFTER, "1"));
    }
    let mut res =
        b.body(json!({"error": e.code.as_str(), "error_description": e.description}).to_string());
    res.extensions_mut().insert(NotFhir);
    res
}

fn invalid_request(description: &str) -> TokenError {
    TokenError {
        code: ErrorCode::InvalidRequest,
        reason: "token_invalid_request",
        description: description.to_owned(),
    }
}

/// Reads at most [`MAX_FORM_BYTES`]; `None` when the body is larger.
async fn read_bounded(mut payload: web::Payload) -> Result<Option<Vec<u8>>, ()> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ())?;
        if body.len() + chunk.len() > MAX_FORM_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// `POST /auth/token`: SMART Backend Services (client credentials with a
/// signed client assertion). Never logs the assertion or the token.
pub async fn token(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult {
    label(&req, "token", None);
    let body = read_bounded(payload).await;
    let auth = enabled(&state)?;
    let refuse = |e: TokenError| -> ApiResult { Ok(oauth_error(&state, &e)) };
    let body = match body {
        Ok(Some(b)) => b,
        Ok(None) => {
            let mut res = oauth_error(
                &state,
                &invalid_request("The token request body is larger than 64 KiB"),
            );
            res.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return Ok(res);
        }
        Err(()) => return refuse(invalid_request("The token request body could not be read")),
    };
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if form_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return refuse(invalid_request(
            "A token request is a POST with Content-Type application/x-www-form-urlencoded",
        ));
    }
    if !req.query_string().is_empty() {
        return refuse(invalid_request(
            "Token request parameters go in the form-encoded body, not the URL",
        ));
    }
    if req.headers().contains_key(header::AUTHORIZATION) {
        return refuse(invalid_request(
            "Use one client authentication method: the client assertion, not an \
             Authorization header",
        ));
    }
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return refuse(invalid_request(
            "The body is not application/x-www-form-urlencoded",
        ));
    };
    // The aud a client may use: this endpoint as the request reached it,
    // and as the configured or start-up base names it.
    let mut urls = vec![format!("{}/token", auth_base(&base_url(&req, &state)))];
    let own = format!("{}/token", auth.issuer);
    if !urls.contains(&own) {
        urls.push(own);
    }
    let issued = auth.token.issue(&params, &urls).await;
    // For the login AuditEvent: the client the request names (verified
    // when a token was issued).
    if let Some(trail) = req.extensions().get::<crate::audit::AuditTrail>() {
        if let Some(c) = claimed_client(&params) {
            trail.set_client(c);
        }
    }
    match issued {
        Ok(issued) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .body(issued.to_json().to_string())),
        Err(e) => refuse(e),
    }
}

/// The client a token request names: `client_id`, else the client
/// assertion's `iss` (read, not verified: `issue` verifies it).
fn claimed_client(params: &[(String, String)]) -> Option<String> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    if let Some(c) = get("client_id") {
        return Some(c.chars().take(128).collect());
    }
    let payload = get("client_assertion")?.split('.').nth(1)?;
    let bytes = crate::base64::decode(payload, crate::base64::Alphabet::UrlSafe)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("iss")
        .and_then(|v| v.as_str())
        .map(|s| s.chars().take(128).collect())
}
