//! Authentication at the HTTP edge: every request to a route that is not
//! public ([`super::is_public`]) must carry a valid bearer token when
//! `auth.mode = "required"`; the caller it names goes into the request's
//! extensions for the `Fhir` extractor. Refusals are 401 (with a
//! `WWW-Authenticate` challenge) or 403, each an OperationOutcome, counted
//! in `/metrics` by reason. After the handler, a successful response from a
//! guarded route that took no authorisation decision is replaced by a 403:
//! a route cannot forget its access check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpResponse};

use super::error::{operation_outcome, OoIssue};
use super::AppState;
use crate::auth::verify::{AuthError, PatientDirectory, NHS_NUMBER_SYSTEM};
use crate::context::{Principal, RequestContext};
use crate::model::{LogicalId, ResourceType};
use crate::service::search::SearchInput;

/// The challenge realm.
pub const REALM: &str = "fhirbridge";

/// This request's authorisation-decision marker (shared with its context).
#[derive(Clone)]
pub struct DecisionFlag(pub Arc<AtomicBool>);

/// The verified caller of this request.
#[derive(Clone)]
pub struct Authenticated(pub Principal);

/// Authenticates `req` (when access control is on and the route is
/// guarded). `Err`: the response to send instead of running the handler.
pub async fn gate(req: &ServiceRequest, state: &AppState) -> Result<(), HttpResponse> {
    req.extensions_mut()
        .insert(DecisionFlag(Arc::new(AtomicBool::new(false))));
    if state.audit.is_some() {
        req.extensions_mut().insert(crate::audit::AuditTrail::new());
    }
    let Some(auth) = state.auth.as_ref() else {
        return Ok(());
    };
    if is_public_request(req) {
        return Ok(());
    }
    let values: Vec<&[u8]> = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .collect();
    let in_query = req
        .query_string()
        .split('&')
        .any(|p| p == "access_token" || p.starts_with("access_token="));
    let directory = Directory { state };
    match auth
        .authenticator
        .authenticate(&values, in_query, &directory)
        .await
    {
        Ok(caller) => {
            req.extensions_mut()
                .insert(Authenticated(Principal::Caller(caller)));
            Ok(())
        }
        Err(e) => {
            state
                .metrics
                .auth_failures
                .with_label_values(&[e.reason()])
                .inc();
            Err(refusal(&e))
        }
    }
}

fn is_public_request(req: &ServiceRequest) -> bool {
    match req.match_pattern() {
        Some(p) => super::is_public(&p, req.method().as_str()),
        // CORS preflights never carry credentials.
        None => false,
    }
}

/// The 401/403 for an authentication failure.
pub fn refusal(e: &AuthError) -> HttpResponse {
    let (status, challenge, code, msg) = match e {
        AuthError::Missing => (
            StatusCode::UNAUTHORIZED,
            format!("Bearer realm=\"{REALM}\""),
            "login",
            "This endpoint needs a bearer token (Authorization: Bearer ...)".to_owned(),
        ),
        AuthError::Invalid(reason) => (
            StatusCode::UNAUTHORIZED,
            format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            "login",
            format!("The bearer token was refused ({reason})"),
        ),
        AuthError::Forbidden(_, msg) => (
            StatusCode::FORBIDDEN,
            format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\""),
            "forbidden",
            msg.clone(),
        ),
    };
    HttpResponse::build(status)
        .insert_header((header::WWW_AUTHENTICATE, challenge))
        .content_type(super::format::FHIR_JSON)
        .body(operation_outcome(&[OoIssue::error(code, msg)]).to_string())
}

/// Whether the response to `req` may go out: a successful answer from a
/// guarded route must have taken an authorisation decision.
pub fn decided_or_public(req: &actix_web::HttpRequest, state: &AppState) -> bool {
    if state.auth.is_none() {
        return true;
    }
    let public = req
        .match_pattern()
        .is_some_and(|p| super::is_public(&p, req.method().as_str()));
    public
        || req
            .extensions()
            .get::<DecisionFlag>()
            .is_some_and(|f| f.0.load(Ordering::Relaxed))
}

/// The refusal that replaces an undecided response.
pub fn undecided() -> HttpResponse {
    HttpResponse::Forbidden()
        .content_type(super::format::FHIR_JSON)
        .body(
            operation_outcome(&[OoIssue::error(
                "forbidden",
                "Access refused: this route took no authorisation decision (a server defect; \
                 it has been logged)",
            )])
            .to_string(),
        )
}

/// NHS number → Patient, as the server itself (the lookup must see every
/// patient to know the match is unique).
/// Built per request, so it only borrows: a cached token never looks up.
struct Directory<'s> {
    state: &'s AppState,
}

#[async_trait::async_trait(?Send)]
impl PatientDirectory for Directory<'_> {
    async fn by_nhs_number(&self, nhs_number: &str) -> Result<Option<LogicalId>, String> {
        let ctx = RequestContext::system("auth-patient-lookup", self.state.policy.clone());
        let base = self.state.settings.server.offline_base();
        let pairs = vec![
            (
                "identifier".to_owned(),
                format!("{NHS_NUMBER_SYSTEM}|{nhs_number}"),
            ),
            ("_count".to_owned(), "2".to_owned()),
            ("_elements".to_owned(), "id".to_owned()),
        ];
        let out = self
            .state
            .service
            .search(
                &ctx,
                SearchInput {
                    ty: ResourceType::Patient,
                    pairs: &pairs,
                    within: None,
                    lenient: false,
                    base_url: &base,
                },
            )
            .await
            .map_err(|e| format!("{e}"))?;
        let found = &out.page.resources;
        Ok(match found.as_slice() {
            [one] => Some(one.id.clone()),
            _ => None,
        })
    }
}
