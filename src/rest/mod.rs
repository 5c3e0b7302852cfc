//! The HTTP edge: the only module that knows actix-web and FHIR wire formats.
//! `configure` is the one place routes are declared.

pub mod error;
pub mod extract;
pub mod format;
pub mod interaction;
pub mod middleware;
pub mod operation;
pub mod shape;
pub(crate) mod strict;
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
    use interaction::{
        batch, capabilities, conditional, history, read, search, system as h, write,
    };
    use operation::validate;
    cfg.service(web::resource("/").route(web::get().to(h::landing)))
        .service(web::resource("/health/live").route(web::get().to(h::health_live)))
        .service(web::resource("/health/ready").route(web::get().to(h::health_ready)))
        .service(web::resource("/metrics").route(web::get().to(h::metrics)))
        .service(
            web::scope("/fhir")
                .service(
                    web::resource("")
                        .app_data(web::PayloadConfig::new(bundle_limit))
                        .route(web::post().to(batch::system_post))
                        .route(web::get().to(h::base_get))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/metadata")
                        .route(web::get().to(capabilities::metadata))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/_history")
                        .route(web::get().to(history::history_system))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}")
                        .route(web::get().to(search::search))
                        .route(web::post().to(write::create))
                        .route(web::put().to(conditional::conditional_update))
                        .route(web::delete().to(conditional::conditional_delete))
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
                        .route(web::get().to(history::history_type))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}")
                        .route(web::get().to(read::read))
                        .route(web::put().to(write::update))
                        .route(web::delete().to(write::delete))
                        .route(web::patch().to(conditional::patch))
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
                        .route(web::get().to(history::history_instance))
                        .default_service(web::to(h::method_not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/_history/{vid}")
                        .route(web::get().to(read::vread))
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
