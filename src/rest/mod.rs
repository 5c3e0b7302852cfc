//! The HTTP edge: the only module that knows actix-web and FHIR wire formats.
//! `configure` is the one place routes are declared.

pub mod bundle;
pub mod error;
pub mod format;
pub mod handlers;
pub mod middleware;
pub mod search;
pub mod shape;
pub(crate) mod strict;
pub mod transfer;
pub mod validate;

use std::sync::Arc;

use actix_web::web;

use crate::config::Settings;
use crate::metrics::InstanceMetrics;
use crate::storage::Backend;
use crate::validation::ValidationService;

/// Shared application state, grouped by capability.
pub struct AppState {
    pub backend: Arc<dyn Backend>,
    pub metrics: Arc<InstanceMetrics>,
    pub validation: Arc<ValidationService>,
    pub settings: Arc<Settings>,
    /// The access policy every request is decided by.
    pub policy: Arc<dyn crate::policy::Policy>,
}

/// The request id (from `X-Request-ID` or generated), stored in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Set by each handler for metrics and the request span: which FHIR interaction
/// on which resource type (bounded label values only).
#[derive(Debug, Clone, Copy)]
pub struct InteractionLabel {
    pub interaction: &'static str,
    pub resource_type: &'static str,
}

/// Declares every route.
pub fn configure(cfg: &mut web::ServiceConfig, bundle_limit: usize) {
    use handlers as h;
    cfg.service(web::resource("/").route(web::get().to(h::landing)))
        .service(web::resource("/health/live").route(web::get().to(h::health_live)))
        .service(web::resource("/health/ready").route(web::get().to(h::health_ready)))
        .service(web::resource("/metrics").route(web::get().to(h::metrics)))
        .service(
            web::scope("/fhir")
                .service(
                    web::resource("")
                        .app_data(web::PayloadConfig::new(bundle_limit))
                        .route(web::post().to(bundle::system_post))
                        .route(web::get().to(h::base_get))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/metadata")
                        .route(web::get().to(h::metadata))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/_history")
                        .route(web::get().to(h::history_system))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}")
                        .route(web::get().to(search::search))
                        .route(web::post().to(h::create))
                        .route(web::put().to(bundle::conditional_update))
                        .route(web::delete().to(bundle::conditional_delete))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/$validate")
                        .route(web::post().to(validate::validate_type))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/_search")
                        .route(web::post().to(search::search_post))
                        .route(web::get().to(search::search))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/_history")
                        .route(web::get().to(h::history_type))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}")
                        .route(web::get().to(h::read))
                        .route(web::put().to(h::update))
                        .route(web::delete().to(h::delete))
                        .route(web::patch().to(bundle::patch))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/$validate")
                        .route(web::post().to(validate::validate_instance))
                        .route(web::get().to(validate::validate_instance))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/_history")
                        .route(web::get().to(h::history_instance))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/_history/{vid}")
                        .route(web::get().to(h::vread))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/{target}")
                        .route(web::get().to(search::compartment_search))
                        .default_service(web::to(h::method_not_allowed)),
                ),
        )
        .default_service(web::to(h::not_found));
}
