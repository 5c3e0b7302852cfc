//! Typed extractors: the prologue every FHIR handler shares. [`Fhir`] builds
//! the request's [`RequestContext`] once (request id, caller, the policy),
//! with the service, the base URL and the request itself; [`TypeParam`] is
//! the `{type}` path segment as a resource type this server serves (404
//! otherwise). Negotiation and `Prefer` are methods, so each handler keeps
//! its order of checks.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::error::ApiError;
use super::format::{self, Output, Prefer};
use super::{AppState, RequestId};
use crate::context::{Principal, RequestContext};
use crate::model::ResourceType;
use crate::service::Service;

/// One FHIR request: its context, the service, and how to answer.
pub struct Fhir {
    pub req: HttpRequest,
    pub ctx: RequestContext,
    pub service: Arc<Service>,
    state: web::Data<AppState>,
}

impl Fhir {
    fn from_req(req: &HttpRequest) -> Result<Fhir, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        // The caller `rest::auth::gate` verified (anonymous when access
        // control is off); the installed policy decides what it may do.
        let (principal, flag, trail) = {
            let ext = req.extensions();
            (
                ext.get::<super::auth::Authenticated>()
                    .map(|a| a.0.clone())
                    .unwrap_or(Principal::Anonymous),
                ext.get::<super::auth::DecisionFlag>().map(|f| f.0.clone()),
                ext.get::<crate::audit::AuditTrail>().cloned(),
            )
        };
        let mut ctx = RequestContext::new(request_id, principal, state.policy.clone());
        if let Some(flag) = flag {
            ctx = ctx.with_decision_flag(flag);
        }
        if let Some(trail) = trail {
            ctx = ctx.with_audit(trail);
        }
        Ok(Fhir {
            req: req.clone(),
            ctx,
            service: state.service.clone(),
            state,
        })
    }

    /// The FHIR base URL (`…/fhir`) as this client sees it.
    pub fn base(&self) -> String {
        base_url(&self.req, &self.state)
    }

    /// The response format (`Accept`, `_format`); 406 when none fits.
    pub fn out(&self) -> Result<Output, ApiError> {
        format::negotiate(&self.req)
    }

    /// `Prefer` (`return`, `handling`); 400 on a bad value.
    pub fn prefer(&self) -> Result<Prefer, ApiError> {
        format::prefer(self.req.headers())
    }

    pub fn settings(&self) -> &crate::config::Settings {
        &self.state.settings
    }
}

/// The FHIR base URL (`…/fhir`) as clients see it.
pub fn base_url(req: &HttpRequest, state: &AppState) -> String {
    match state.settings.server.configured_base() {
        Some(b) => b,
        None => {
            let info = req.connection_info();
            format!("{}://{}/fhir", info.scheme(), info.host())
        }
    }
}

impl FromRequest for Fhir {
    type Error = ApiError;
    type Future = Ready<Result<Fhir, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Fhir::from_req(req))
    }
}

/// The `{type}` path segment, as a resource type this server serves (or the
/// 404 to answer). Extraction itself never fails, so a body is still read
/// before the error is answered and the connection stays usable.
#[derive(Debug)]
pub struct TypeParam(pub Result<ResourceType, ApiError>);

impl FromRequest for TypeParam {
    type Error = ApiError;
    type Future = Ready<Result<TypeParam, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(TypeParam(segment_type(req, "type"))))
    }
}

/// The named path segment as a served resource type.
pub fn segment_type(req: &HttpRequest, name: &str) -> Result<ResourceType, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
    let text = req.match_info().get(name).unwrap_or_default();
    state.service.resource_type(text)
}

/// A path segment by name (empty when the route has none).
pub fn segment<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or_default()
}
