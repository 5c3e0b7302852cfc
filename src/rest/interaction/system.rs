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

/// Ready when the database answers. Each GP supplier is reported (`up`,
/// `degraded`, `down`) without failing readiness: one bad supplier must not
/// take the server (and every other practice) out of the load balancer.
pub async fn health_ready(state: web::Data<AppState>) -> HttpResponse {
    let (db, suppliers) =
        futures_util::future::join(state.service.ping(), state.service.supplier_health()).await;
    let ok = match db {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            false
        }
    };
    let mut body = serde_json::json!({
        "status": if ok { "pass" } else { "fail" },
        "checks": {"database": if ok { "pass" } else { "fail" }},
    });
    if !suppliers.is_empty() {
        body["checks"]["suppliers"] = suppliers
            .into_iter()
            .map(|(name, s)| (name, serde_json::Value::String(s.into())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let mut resp = if ok {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    resp.content_type("application/json").body(body.to_string())
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.service.refresh_outbox_metrics().await;
    let (in_use, idle) = state.service.pool_state();
    state
        .metrics
        .set_pool(state.service.backend_name(), in_use, idle);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
