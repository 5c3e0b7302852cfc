//! The endpoints around FHIR: the landing page, `GET [base]`, health,
//! metrics, and the 404/405 fallbacks.

use actix_web::{web, HttpRequest, HttpResponse};

use super::super::error::ApiError;
use super::super::extract::base_url;
use super::super::AppState;
use super::{label, ApiResult};

/// `GET [base]`: system-level search is not supported; say what is.
pub async fn base_get(req: HttpRequest) -> ApiResult {
    label(&req, "search-system", None);
    Err(ApiError::MethodNotAllowedOnly(
        "POST",
        "GET [base] is system-level search, which this server does not support. Search one \
         type with GET [base]/[type]?..., read the CapabilityStatement at [base]/metadata, and \
         POST batch or transaction Bundles to [base]"
            .into(),
    ))
}

/// `GET /`: a small page that points at the FHIR base and the operational endpoints.
pub async fn landing(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    label(&req, "landing", None);
    let base = base_url(&req, &state);
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let base = esc(&base);
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>fhirbridge</title></head>\n\
         <body><h1>fhirbridge</h1>\n<p>A FHIR R4 server. The FHIR base URL is <code>{base}</code>.</p>\n<ul>\n\
         <li><a href=\"{base}/metadata\">CapabilityStatement</a> (<code>{base}/metadata</code>; \
         <a href=\"{base}/metadata?_summary=true\">summary</a>)</li>\n\
         <li><a href=\"/health/live\">/health/live</a> and <a href=\"/health/ready\">/health/ready</a></li>\n\
         <li><a href=\"/metrics\">/metrics</a> (Prometheus)</li>\n</ul></body></html>\n"
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// The body (if any) is read first so that the connection stays usable after the 405.
pub async fn method_not_allowed(req: HttpRequest, _body: web::Bytes) -> ApiResult {
    label(&req, "unsupported", None);
    Err(ApiError::MethodNotAllowed(format!(
        "Method {} is not allowed on this endpoint",
        req.method()
    )))
}

/// The body (if any) is read first so that the connection stays usable after the 404.
pub async fn not_found(req: HttpRequest, _body: web::Bytes) -> ApiResult {
    label(&req, "unknown", None);
    Err(ApiError::NotFound("No such endpoint".into()))
}

pub async fn health_live() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"pass"}"#)
}

pub async fn health_ready(state: web::Data<AppState>) -> HttpResponse {
    match state.service.ping().await {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"status":"pass","checks":{"database":"pass"}}"#),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .content_type("application/json")
                .body(r#"{"status":"fail","checks":{"database":"fail"}}"#)
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (in_use, idle) = state.service.pool_state();
    state
        .metrics
        .set_pool(state.service.backend_name(), in_use, idle);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
