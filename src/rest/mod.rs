//! The HTTP edge: the only module that knows actix-web and FHIR wire formats.
//! `configure` is the one place routes are declared.

pub mod auth;
pub mod cors;
pub mod error;
pub mod extract;
pub mod format;
pub mod interaction;
pub mod middleware;
pub mod operation;
pub mod shape;
pub(crate) mod strict;
pub mod tls;
pub mod transfer;

use std::sync::Arc;

use actix_web::web;

use crate::config::Settings;
use crate::metrics::InstanceMetrics;
use crate::validation::ValidationService;

/// Shared application state, grouped by capability.
pub struct AppState {
    /// Every interaction; the REST layer reaches storage only through it.
    pub service: Arc<crate::service::Service>,
    pub metrics: Arc<InstanceMetrics>,
    pub validation: Arc<ValidationService>,
    pub settings: Arc<Settings>,
    /// The access policy every request is decided by.
    pub policy: Arc<dyn crate::policy::Policy>,
    /// Access control; `None` when `auth.mode = "off"`.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// The audit writer; `None` when `audit.enabled = false`.
    pub audit: Option<crate::audit::AuditWriter>,
}

/// The request id (from `X-Request-ID` or generated), stored in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// In a response's extensions: an error answer that is deliberately not an
/// `OperationOutcome` (the token endpoint's OAuth 2.0 errors, RFC 6749
/// §5.2), which the middleware leaves as it is.
#[derive(Debug, Clone, Copy)]
pub struct NotFhir;

/// Set by each handler for metrics and the request span: which FHIR interaction
/// on which resource type (bounded label values only).
#[derive(Debug, Clone, Copy)]
pub struct InteractionLabel {
    pub interaction: &'static str,
    pub resource_type: &'static str,
}

/// One route of the router: its path pattern, methods, and whether it is
/// public (answered without a token). Every other route needs a token and
/// an authorisation decision (`rest::auth`); `tests/api/routes.rs` walks
/// this list.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub path: &'static str,
    pub methods: Vec<&'static str>,
    pub public: bool,
}

struct Entry {
    path: &'static str,
    public: bool,
    /// Takes bundle-sized bodies.
    bundle: bool,
    routes: Vec<(&'static str, actix_web::Route)>,
}

fn entry(path: &'static str, public: bool, routes: Vec<(&'static str, actix_web::Route)>) -> Entry {
    Entry {
        path,
        public,
        bundle: false,
        routes,
    }
}

/// The route table, in matching order (the first pattern that matches wins).
fn table() -> Vec<Entry> {
    use interaction::{
        audit, batch, capabilities, conditional, history, read, search, smart, system as h, write,
    };
    use operation::validate;
    let (get, post, put, delete, patch) = (web::get, web::post, web::put, web::delete, web::patch);
    vec![
        entry("/", true, vec![("GET", get().to(h::landing))]),
        entry(
            "/health/live",
            true,
            vec![("GET", get().to(h::health_live))],
        ),
        entry(
            "/health/ready",
            true,
            vec![("GET", get().to(h::health_ready))],
        ),
        entry("/metrics", true, vec![("GET", get().to(h::metrics))]),
        entry("/auth/token", true, vec![("POST", post().to(smart::token))]),
        entry("/auth/jwks", true, vec![("GET", get().to(smart::jwks))]),
        Entry {
            bundle: true,
            ..entry(
                "/fhir",
                false,
                vec![
                    ("POST", post().to(batch::system_post)),
                    ("GET", get().to(h::base_get)),
                ],
            )
        },
        entry(
            "/fhir/metadata",
            true,
            vec![("GET", get().to(capabilities::metadata))],
        ),
        entry(
            "/fhir/.well-known/smart-configuration",
            true,
            vec![("GET", get().to(smart::configuration))],
        ),
        entry(
            "/fhir/_history",
            false,
            vec![("GET", get().to(history::history_system))],
        ),
        // AuditEvent: read and search only, from the audit trail; every
        // other method is a 405 (before the generic routes).
        entry(
            "/fhir/AuditEvent",
            false,
            vec![("GET", get().to(audit::search))],
        ),
        entry(
            "/fhir/AuditEvent/_search",
            false,
            vec![
                ("POST", post().to(audit::search_post)),
                ("GET", get().to(audit::search)),
            ],
        ),
        entry(
            "/fhir/AuditEvent/_history",
            false,
            vec![("GET", get().to(h::method_not_allowed))],
        ),
        entry(
            "/fhir/AuditEvent/{id}",
            false,
            vec![("GET", get().to(audit::read))],
        ),
        entry(
            "/fhir/{type}",
            false,
            vec![
                ("GET", get().to(search::search)),
                ("POST", post().to(write::create)),
                ("PUT", put().to(conditional::conditional_update)),
                ("DELETE", delete().to(conditional::conditional_delete)),
            ],
        ),
        entry(
            "/fhir/{type}/$validate",
            false,
            vec![("POST", post().to(validate::validate_type))],
        ),
        entry(
            "/fhir/{type}/_search",
            false,
            vec![
                ("POST", post().to(search::search_post)),
                ("GET", get().to(search::search)),
            ],
        ),
        entry(
            "/fhir/{type}/_history",
            false,
            vec![("GET", get().to(history::history_type))],
        ),
        entry(
            "/fhir/{type}/{id}",
            false,
            vec![
                ("GET", get().to(read::read)),
                ("PUT", put().to(write::update)),
                ("DELETE", delete().to(write::delete)),
                ("PATCH", patch().to(conditional::patch)),
            ],
        ),
        entry(
            "/fhir/{type}/{id}/$validate",
            false,
            vec![
                ("POST", post().to(validate::validate_instance)),
                ("GET", get().to(validate::validate_instance)),
            ],
        ),
        entry(
            "/fhir/{type}/{id}/_history",
            false,
            vec![("GET", get().to(history::history_instance))],
        ),
        entry(
            "/fhir/{type}/{id}/_history/{vid}",
            false,
            vec![("GET", get().to(read::vread))],
        ),
        entry(
            "/fhir/{type}/{id}/{target}",
            false,
            vec![("GET", get().to(search::compartment_search))],
        ),
    ]
}

/// Every route, for the route-walk test and the public-route check.
pub fn routes() -> Vec<RouteInfo> {
    table()
        .into_iter()
        .map(|e| RouteInfo {
            path: e.path,
            methods: e.routes.iter().map(|(m, _)| *m).collect(),
            public: e.public,
        })
        .collect()
}

/// Whether the route with this pattern and method is public.
pub fn is_public(pattern: &str, method: &str) -> bool {
    static PUBLIC: std::sync::OnceLock<Vec<(&'static str, &'static str)>> =
        std::sync::OnceLock::new();
    PUBLIC
        .get_or_init(|| {
            routes()
                .into_iter()
                .filter(|r| r.public)
                .flat_map(|r| r.methods.into_iter().map(move |m| (r.path, m)))
                .collect()
        })
        .iter()
        .any(|(p, m)| *p == pattern && (*m == method || (method == "HEAD" && *m == "GET")))
}

/// Declares every route (from [`table`]); an unknown path is a 404, a
/// known one with another method a 405.
pub fn configure(cfg: &mut web::ServiceConfig, bundle_limit: usize) {
    use interaction::system as h;
    for e in table() {
        let mut resource = web::resource(e.path);
        if e.bundle {
            resource = resource.app_data(web::PayloadConfig::new(bundle_limit));
        }
        for (_, route) in e.routes {
            resource = resource.route(route);
        }
        if e.path.starts_with("/fhir") || e.path.starts_with("/auth") {
            resource = resource.default_service(web::to(h::method_not_allowed));
        }
        cfg.service(resource);
    }
    cfg.default_service(web::to(h::not_found));
}
