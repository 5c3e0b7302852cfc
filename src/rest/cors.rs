//! CORS for browser apps (`[server.cors]`), wrapped outside
//! [`super::middleware::fhir_middleware`] so a preflight is answered here,
//! before authentication, which browsers never send with one.
//!
//! - No origins configured: nothing is added and nothing is answered here.
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   from an allowed origin: 204 with the allowed methods, request headers and
//!   `Access-Control-Max-Age`. From any other origin: 403 with an
//!   `OperationOutcome` (`forbidden`) and no `Access-Control-*` header, so the
//!   browser refuses the request and a developer reading the response sees why.
//! - Any other request from an allowed origin: the handler's response plus
//!   `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` (the
//!   headers FHIR clients read: `Location`, `ETag`, …, `WWW-Authenticate`).
//!   From another origin, or without `Origin`: no `Access-Control-*` header.
//! - `Access-Control-Allow-Origin` echoes the request's origin, except for an
//!   `"*"` configuration (never combined with credentials: config validation
//!   refuses it), which answers `*`.
//! - Every response carries `Vary: Origin` while origins are configured, since
//!   each depends on the request's `Origin`.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};

use super::error::{operation_outcome, OoIssue};
use super::AppState;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, If-Match, If-None-Exist, \
     If-None-Match, If-Modified-Since, Prefer, X-Request-ID";
const EXPOSE_HEADERS: &str =
    "Location, ETag, Last-Modified, Content-Location, X-Request-ID, WWW-Authenticate";

/// The CORS middleware (see the module docs).
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some(cors) = state
        .as_ref()
        .map(|s| &s.settings.server.cors)
        .filter(|c| !c.allowed_origins.is_empty())
    else {
        return respond(req, next).await;
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .filter(|o| cors.allows(o))
        .is_some();
    let allow_origin = match origin {
        Some(_) if allowed && cors.any_origin() => Some(HeaderValue::from_static("*")),
        Some(o) if allowed => Some(o),
        _ => None,
    };
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let response = match &allow_origin {
            Some(_) => {
                let mut r = HttpResponse::NoContent();
                r.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
                    .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
                    .insert_header((
                        header::ACCESS_CONTROL_MAX_AGE,
                        cors.max_age_secs.to_string(),
                    ));
                r.finish()
            }
            None => {
                let oo = operation_outcome(&[OoIssue::error(
                    "forbidden",
                    "Cross-origin requests from this origin are not allowed \
                     (server.cors.allowed_origins)",
                )]);
                HttpResponse::build(StatusCode::FORBIDDEN)
                    .content_type(super::format::FHIR_JSON)
                    .body(oo.to_string())
            }
        };
        let mut res = req.into_response(response);
        decorate(
            res.headers_mut(),
            allow_origin,
            cors.allow_credentials,
            false,
        );
        return Ok(res);
    }
    let mut res = respond(req, next).await?;
    decorate(
        res.headers_mut(),
        allow_origin,
        cors.allow_credentials,
        true,
    );
    Ok(res)
}

/// `Vary: Origin`, and for an allowed origin the `Access-Control-*` headers
/// every CORS response carries (`expose` on actual requests only).
fn decorate(
    headers: &mut HeaderMap,
    allow_origin: Option<HeaderValue>,
    credentials: bool,
    expose: bool,
) {
    let varies = headers.get_all(header::VARY).any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(origin) = allow_origin else { return };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if expose {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

/// The inner service's response, its body boxed.
pub(super) async fn respond(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    Ok(next.call(req).await?.map_into_boxed_body())
}
