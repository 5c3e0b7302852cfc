//! fhirbridge: a FHIR R4 server for the NHS England ecosystem.
//!
//! Reading order: [`config`] → [`model`] → [`storage`] (the seam) → [`search`] →
//! [`service`] → [`rest`] (the only HTTP-aware module) → [`capability`].

pub mod audit;
pub mod auth;
pub mod base64;
pub mod bridge;
pub mod capability;
pub mod cli;
pub mod config;
pub mod consent;
pub mod context;
pub mod demo;
pub mod import;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod reindex;
pub mod rest;
pub mod sandbox;
pub mod search;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod validation;
pub mod workflow;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::{from_fn, NormalizePath, TrailingSlash};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use config::Settings;
use storage::sql::{SqlBackend, SqlOptions};
use storage::Backend;

/// Opens the configured storage backend (creating and migrating the database).
pub fn open_backend(settings: &Settings) -> anyhow::Result<Arc<dyn Backend>> {
    let before = startup::DatabaseBefore::probe(&settings.storage.database_url);
    let backend = SqlBackend::open(&SqlOptions {
        url: settings.effective_database_url(),
        pool_size: settings.storage.pool_size,
        acquire_timeout: settings.acquire_timeout(),
        sqlite_synchronous_full: settings.storage.sqlite_synchronous_full,
    })?;
    tracing::info!("{}", before.describe(backend.migrations_applied()));
    Ok(Arc::new(backend))
}

/// A bound, ready-to-run server, with its job worker (started when it runs).
pub struct Application {
    port: u16,
    server: Server,
    /// `None` when `jobs.workers` is 0 or the backend has no job queue.
    jobs: Option<(Arc<jobs::Runner>, usize)>,
    /// The audit writer, flushed at shutdown.
    audit: Option<audit::AuditWriter>,
    shutdown_timeout: Duration,
    /// The Consent index and the service that refreshes it.
    consents: (Arc<service::Service>, Arc<consent::ConsentIndex>, Duration),
}

impl Application {
    /// Opens storage, binds the listener and builds the HTTP server.
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        let backend = open_backend(&settings)?;
        Application::build_with_backend(settings, backend)
    }

    /// Builds the server on `backend` under the policy `[auth]` calls for:
    /// [`policy::smart::SmartPolicy`] when tokens are required,
    /// [`policy::AllowAll`] when access control is off.
    pub fn build_with_backend(
        settings: Settings,
        backend: Arc<dyn Backend>,
    ) -> anyhow::Result<Application> {
        Application::build_inner(settings, backend, None)
    }

    /// Builds the server on `backend` under an explicit access `policy`
    /// (tests install their own).
    pub fn build_with(
        settings: Settings,
        backend: Arc<dyn Backend>,
        policy: Arc<dyn policy::Policy>,
    ) -> anyhow::Result<Application> {
        Application::build_inner(settings, backend, Some(policy))
    }

    fn build_inner(
        settings: Settings,
        backend: Arc<dyn Backend>,
        policy: Option<Arc<dyn policy::Policy>>,
    ) -> anyhow::Result<Application> {
        let tls = settings
            .server
            .tls
            .as_ref()
            .map(rest::tls::acceptor)
            .transpose()?;
        let listener = TcpListener::bind(&settings.server.listen)
            .with_context(|| format!("Failed to bind {}", settings.server.listen))?;
        let port = listener.local_addr()?.port();
        let base = startup::base_url(&settings.server, port);
        let required =
            settings.auth.effective_mode(&settings.server.listen) == auth::AuthMode::Required;
        let auth = if required {
            tracing::info!(
                issuers = settings.auth.issuers.len(),
                clients = settings.auth.clients.len(),
                "access control on: every FHIR request needs a bearer token"
            );
            let key = auth::keys::location(&settings.auth, &settings.storage.database_url);
            Some(Arc::new(auth::Auth::build(&settings.auth, &base, key)?))
        } else {
            tracing::warn!(
                "access control OFF (auth.mode = \"off\"): every caller can read and change \
                 every record; for local development only"
            );
            None
        };
        let consents = Arc::new(consent::ConsentIndex::new());
        let policy: Arc<dyn policy::Policy> = match policy {
            Some(p) => p,
            None if required => Arc::new(policy::smart::SmartPolicy::with_consents(
                base.clone(),
                consents.clone(),
                settings.consent.withheld(),
            )),
            None => Arc::new(policy::AllowAll),
        };
        let metrics = Arc::new(metrics::InstanceMetrics::new()?);
        let validation = Arc::new(validation::ValidationService::from_settings(
            &settings.validation,
        )?);
        let audit = if settings.audit.enabled {
            Some(audit::AuditWriter::start(
                backend.clone(),
                policy.clone(),
                settings.audit.max_batch,
                metrics.audit_writer(),
            )?)
        } else {
            None
        };
        let bridge = Arc::new(bridge::Bridge::start(&settings.suppliers, &base)?);
        bridge.metrics.register(metrics.registry())?;
        for s in bridge.suppliers() {
            tracing::info!(
                supplier = %s.name(),
                kind = s.kind().as_str(),
                practices = s.cfg.ods_codes.len(),
                "GP supplier bridged"
            );
        }
        let shutdown_timeout = Duration::from_secs(settings.server.shutdown_timeout_secs);
        let settings = Arc::new(settings);
        let service = Arc::new(
            service::Service::new(backend.clone(), validation.clone(), settings.clone())
                .with_consents(consents.clone())
                .with_bridge(bridge.clone()),
        );
        let jobs = (settings.jobs.workers > 0 && backend.jobs().is_some()).then(|| {
            let mut registry = jobs::registry(&settings);
            if !bridge.is_empty() {
                registry.register(Arc::new(bridge::outbox::OutboxKind::new(service.clone())));
            }
            let runner = jobs::Runner::new(
                backend.clone(),
                registry,
                policy.clone(),
                jobs::instance_id(),
                settings.jobs.lease(),
                settings.jobs.poll(),
            );
            (Arc::new(runner), settings.jobs.workers)
        });
        // Every active Consent is in the index before the first request.
        let loaded = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(service::consent::load(&service, &consents))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("loading the Consent index panicked"))?
        })
        .context("Failed to load the Consent index")?;
        tracing::info!(
            consents = loaded,
            in_force = consents.len(),
            "consent index loaded"
        );
        let consent_refresh = Duration::from_millis(settings.consent.refresh_ms.max(1));
        let state_service = service.clone();
        let state = web::Data::new(rest::AppState {
            service,
            metrics,
            validation,
            settings: settings.clone(),
            policy,
            auth,
            audit: audit.clone(),
        });
        let limit = settings.server.body_limit_bytes;
        let bundle_limit = settings.server.bundle_body_limit_bytes.max(limit);
        let server_settings = &settings.server;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(limit))
                .wrap(from_fn(rest::middleware::fhir_middleware))
                // Outside the FHIR middleware (and its authentication): preflights
                // are answered without credentials, as browsers send them.
                .wrap(from_fn(rest::cors::cors))
                .wrap(from_fn(rest::tls::hsts))
                // Outermost: `/fhir/` and `/fhir/Patient/` are the same endpoints as
                // `/fhir` and `/fhir/Patient` (FHIR clients add the slash).
                .wrap(NormalizePath::new(TrailingSlash::Trim))
                .configure(|cfg| rest::configure(cfg, bundle_limit))
        })
        .keep_alive(Duration::from_secs(server_settings.keep_alive_secs.max(1)))
        .client_request_timeout(Duration::from_secs(
            server_settings.header_timeout_secs.max(1),
        ))
        .client_disconnect_timeout(Duration::from_secs(2));
        server = match tls {
            Some(acceptor) => server.listen_openssl(listener, acceptor)?,
            None => server.listen(listener)?,
        }
        .shutdown_timeout(server_settings.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Application {
            port,
            server: server.run(),
            jobs,
            audit,
            shutdown_timeout,
            consents: (state_service, consents, consent_refresh),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves (and runs the job worker) until SIGINT/SIGTERM, then drains
    /// in-flight requests and stops the worker (running jobs stop at their
    /// next checkpoint and are given back).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let worker = self
            .jobs
            .map(|(runner, slots)| jobs::Worker::spawn(runner, slots));
        // Consents written by other instances on the same database.
        let (svc, index, every) = self.consents;
        let refresher = tokio::spawn(async move {
            let mut since = model::Instant::now();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Overlap the window: a version committed late with an
                // earlier lastUpdated is still seen.
                let from = model::Instant(since.0 - 5_000);
                match service::consent::refresh(&svc, &index, from).await {
                    Ok(newest) => since = since.max(newest),
                    Err(e) => tracing::warn!(error = %e, "consent index refresh failed"),
                }
            }
        });
        let result = self.server.await;
        refresher.abort();
        if let Some(worker) = worker {
            worker.shutdown(self.shutdown_timeout).await;
        }
        // Every request answered has had its events committed; this drains
        // anything still queued.
        if let Some(audit) = &self.audit {
            let _ = tokio::time::timeout(self.shutdown_timeout, audit.flush()).await;
        }
        result
    }
}
