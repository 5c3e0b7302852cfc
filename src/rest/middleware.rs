//! Per-request cross-cutting work: request and correlation ids, the request span,
//! metrics, one access-log line per request, the body read deadline (408), request
//! `Content-Encoding` (415 unless the server decodes it), response compression, and
//! the guarantee that every error leaves as an `OperationOutcome` in the negotiated
//! format (including errors raised by actix itself, such as 413 from the body limit),
//! except the token endpoint's OAuth 2.0 errors (marked [`super::NotFhir`]).

use std::time::Instant as StdInstant;

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpResponse};
use tracing::Instrument;

use super::error::{operation_outcome, ApiError, OoIssue};
use super::format::{self, Format};
use super::{AppState, InteractionLabel, RequestId};

const X_REQUEST_ID: &str = "x-request-id";
const X_CORRELATION_ID: &str = "x-correlation-id";

fn valid_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn generic_message(status: u16, limit: usize) -> (&'static str, String) {
    match status {
        400 => ("invalid", "The request is malformed".into()),
        404 => ("not-found", "Not found".into()),
        405 => ("not-supported", "Method not allowed".into()),
        413 => (
            "too-costly",
            format!("The request body exceeds the limit of {limit} bytes"),
        ),
        408 => (
            "timeout",
            "The request body was not received in time".into(),
        ),
        415 => ("not-supported", "Unsupported media type".into()),
        s if s >= 500 => ("exception", "An internal error occurred".into()),
        _ => ("processing", "The request could not be processed".into()),
    }
}

pub async fn fhir_middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = StdInstant::now();
    let request_id = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let correlation_id = req
        .headers()
        .get(X_CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_id(v))
        .map(str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "http.request",
        http.method = %req.method(),
        http.route = %route,
        request_id = %request_id,
        fhir.interaction = tracing::field::Empty,
        fhir.resource_type = tracing::field::Empty,
        http.status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let accept_encoding = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let res = if let Some(problem) = super::transfer::unsupported_content_encoding(req.headers()) {
        error_response(req.into_parts().0, ApiError::UnsupportedMediaType(problem))
    } else {
        let expired = match state.as_ref() {
            Some(s) if super::transfer::has_body(req.headers()) => {
                let secs = s.settings.server.body_timeout_secs.max(1);
                Some(super::transfer::deadline_payload(
                    &mut req,
                    std::time::Duration::from_secs(secs),
                ))
            }
            _ => None,
        };
        let refused = match state.as_ref() {
            Some(s) => super::auth::gate(&req, s)
                .instrument(span.clone())
                .await
                .err(),
            None => None,
        };
        let res = match refused {
            Some(response) => {
                let (http, _payload) = req.into_parts();
                let mut res = ServiceResponse::new(http, response);
                // The body (if any) was not read: the connection cannot be reused.
                res.response_mut()
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                res
            }
            None => {
                let res = next
                    .call(req)
                    .instrument(span.clone())
                    .await?
                    .map_into_boxed_body();
                match state.as_ref() {
                    Some(s)
                        if res.status().as_u16() < 400
                            && !super::auth::decided_or_public(res.request(), s) =>
                    {
                        span.in_scope(|| {
                            tracing::error!("a guarded route answered without an authorisation decision; refused")
                        });
                        let (http, _) = res.into_parts();
                        ServiceResponse::new(http, super::auth::undecided())
                    }
                    _ => res,
                }
            }
        };
        match expired {
            Some(flag) if flag.load(std::sync::atomic::Ordering::Relaxed) => {
                let mut res = error_response(
                    res.into_parts().0,
                    ApiError::RequestTimeout(
                        "The request body was not received within the body timeout".into(),
                    ),
                );
                res.response_mut()
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                res
            }
            _ => res,
        }
    };
    let res = match state.as_ref() {
        Some(s) if s.audit.is_some() => audited(res, s).instrument(span.clone()).await,
        _ => res,
    };
    Ok(finish(
        res,
        started,
        &span,
        &request_id,
        correlation_id,
        state.as_ref(),
        accept_encoding.as_deref(),
    )
    .await)
}

/// An error answered by the middleware itself (the handler did not run, or its
/// answer is replaced).
fn error_response(req: actix_web::HttpRequest, err: ApiError) -> ServiceResponse<BoxBody> {
    ServiceResponse::new(req, actix_web::ResponseError::error_response(&err))
}

/// Everything after the handler: the OperationOutcome guarantee, ids, compression,
/// metrics and the access-log line.
async fn finish(
    res: ServiceResponse<impl MessageBody + 'static>,
    started: StdInstant,
    span: &tracing::Span,
    request_id: &str,
    correlation_id: Option<String>,
    state: Option<&web::Data<AppState>>,
    accept_encoding: Option<&str>,
) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let label = res
        .request()
        .extensions()
        .get::<InteractionLabel>()
        .copied()
        .unwrap_or(InteractionLabel {
            interaction: "other",
            resource_type: "none",
        });
    if status.is_server_error() {
        if let Some(err) = res.response().error() {
            match err.as_error::<ApiError>() {
                Some(ApiError::Internal(source)) => span
                    .in_scope(|| tracing::error!(error = %format!("{source:#}"), "request failed")),
                _ => span.in_scope(|| tracing::warn!(error = %err, "request failed")),
            }
        }
    }

    let is_fhir = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.starts_with("application/fhir+"))
        .unwrap_or(false);
    let wants_xml = status.as_u16() >= 400
        && format::negotiate(res.request()).ok().map(|o| o.format) == Some(Format::Xml);
    let not_fhir = res
        .response()
        .extensions()
        .get::<super::NotFhir>()
        .is_some();
    let mut res = if status.as_u16() >= 400 && !not_fhir && (!is_fhir || wants_xml) {
        let limit = state
            .map(|s| s.settings.server.body_limit_bytes)
            .unwrap_or(0);
        let (req, response) = res.into_parts();
        let mut headers = response.headers().clone();
        let body = to_bytes(response.into_body()).await.unwrap_or_default();
        let oo = if is_fhir {
            serde_json::from_slice(&body).unwrap_or_else(|_| {
                let (code, msg) = generic_message(status.as_u16(), limit);
                operation_outcome(&[OoIssue::error(code, msg)])
            })
        } else {
            let (code, msg) = generic_message(status.as_u16(), limit);
            operation_outcome(&[OoIssue::error(code, msg)])
        };
        let out = format::Output {
            format: if wants_xml { Format::Xml } else { Format::Json },
            pretty: false,
        };
        let (text, ct) =
            format::encode(&oo, out).unwrap_or_else(|_| (oo.to_string(), format::FHIR_JSON));
        headers.remove(header::CONTENT_LENGTH);
        let mut builder = HttpResponse::build(status);
        for (k, v) in headers.iter() {
            if k != header::CONTENT_TYPE {
                builder.append_header((k.clone(), v.clone()));
            }
        }
        let response = builder.content_type(ct).body(text);
        ServiceResponse::new(req, response)
    } else {
        res.map_into_boxed_body()
    };

    if let (Some(state), Some(accept)) = (state, accept_encoding) {
        res =
            super::transfer::compress(res, accept, state.settings.server.compress_min_bytes).await;
    }
    let headers = res.headers_mut();
    if let Some(state) = state {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "timeout={}",
            state.settings.server.keep_alive_secs.max(1)
        )) {
            headers.insert(header::HeaderName::from_static("keep-alive"), v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static(X_REQUEST_ID), v);
    }
    if let Some(c) = correlation_id.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(HeaderName::from_static(X_CORRELATION_ID), c);
    }

    let elapsed = started.elapsed();
    if let Some(state) = state {
        state.metrics.observe(
            label.interaction,
            label.resource_type,
            status.as_u16(),
            elapsed.as_secs_f64(),
        );
    }
    span.record("fhir.interaction", label.interaction);
    span.record("fhir.resource_type", label.resource_type);
    span.record("http.status", status.as_u16());
    span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
            "request"
        )
    });
    res
}

/// Records the AuditEvents of a finished request (every guarded FHIR route,
/// including its 401/403 refusals, and the token endpoint) and waits until
/// they are committed; a request whose access cannot be audited answers 503
/// instead (fail closed).
async fn audited(res: ServiceResponse<BoxBody>, state: &AppState) -> ServiceResponse<BoxBody> {
    use crate::audit::event::{self, Kind};
    let Some(writer) = &state.audit else {
        return res;
    };
    let req = res.request();
    let Some(pattern) = req.match_pattern() else {
        return res;
    };
    let method = req.method().as_str();
    let login = pattern == "/auth/token";
    if !login && (!pattern.starts_with("/fhir") || super::is_public(&pattern, method)) {
        return res;
    }
    let (trail, principal, label) = {
        let ext = req.extensions();
        (
            ext.get::<crate::audit::AuditTrail>()
                .cloned()
                .unwrap_or_default(),
            ext.get::<super::auth::Authenticated>()
                .map(|a| a.0.clone())
                .unwrap_or(crate::context::Principal::Anonymous),
            ext.get::<InteractionLabel>().map(|l| l.interaction),
        )
    };
    let kind = if login {
        Kind::Login
    } else {
        Kind::Rest(
            trail
                .subtype()
                .unwrap_or_else(|| event::subtype(label, &pattern, method)),
        )
    };
    let query = trail.query().or_else(|| {
        let searching = matches!(kind, Kind::Rest(s) if s.starts_with("search"));
        (searching && !req.query_string().is_empty()).then(|| req.query_string().to_owned())
    });
    let observer = state.settings.server.offline_base();
    let events = event::build(event::Request {
        kind,
        status: res.status().as_u16(),
        principal: &principal,
        client: trail.client(),
        peer: req.peer_addr().map(|a| a.ip().to_string()),
        observer: &observer,
        query,
        touched: trail.touched(),
        recorded: crate::model::Instant::now().0,
    });
    match writer.record(events).await {
        Ok(()) => res,
        Err(_) => {
            let (http, _) = res.into_parts();
            let response = HttpResponse::ServiceUnavailable()
                .content_type(format::FHIR_JSON)
                .body(
                    operation_outcome(&[OoIssue::error(
                        "transient",
                        "The access could not be audited, so nothing is returned; try again",
                    )])
                    .to_string(),
                );
            ServiceResponse::new(http, response)
        }
    }
}
