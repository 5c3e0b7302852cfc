//! The GP-supplier bridge: each practice's patients are served from its own
//! GP system for the types its supplier holds (`[[suppliers]]`), everything
//! else from the local store.
//!
//! - [`config`]: the `[[suppliers]]` entries and their validation.
//! - [`adapter`]: the seam (`Adapter`) the protocols implement: [`gpconnect`]
//!   (GP Connect STU3, also the `sandbox` kind) and [`fhir`] (an R4
//!   upstream). [`stu3`] maps STU3 ↔ R4; [`http`] is each supplier's
//!   client thread (deadline, size limit, no redirects).
//! - [`Supplier`]: one configured supplier: its adapter behind a circuit
//!   breaker ([`breaker`]), a bounded read cache ([`cache`]), metrics, and
//!   the mapping of its ids onto ours ([`ids`]).
//! - [`outbox`]: the durable outbox of deferred writes (a job kind).
//!
//! The service decides *whether* a request is routed (`service::bridged`);
//! this module only talks to suppliers.

pub mod adapter;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod fhir;
pub mod gpconnect;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod outbox;
pub mod stu3;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use adapter::{Adapter, Upstream, UpstreamError, Window};
pub use config::{SupplierConfig, SupplierKind};

use crate::model::ResourceType;

/// One configured supplier.
pub struct Supplier {
    pub cfg: Arc<SupplierConfig>,
    adapter: Box<dyn Adapter>,
    pub breaker: breaker::Breaker,
    pub cache: cache::Cache,
    held: Vec<ResourceType>,
    metrics: Arc<metrics::BridgeMetrics>,
    /// NHS number → the supplier's patient id.
    patients: Mutex<HashMap<String, String>>,
    /// (type, supplier id) of a record resource → the NHS number and local
    /// patient id it was read for (GP Connect has no single read of them).
    owners: Mutex<HashMap<(ResourceType, String), (String, String)>>,
}

const MAX_OWNERS: usize = 200_000;

impl Supplier {
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn kind(&self) -> SupplierKind {
        self.cfg.kind
    }

    pub fn holds(&self, ty: ResourceType) -> bool {
        self.held.contains(&ty)
    }

    pub fn held(&self) -> &[ResourceType] {
        &self.held
    }

    /// Runs one adapter call behind the breaker, with metrics. A fault
    /// (down, timeout, broken answer) counts against the breaker; a refusal
    /// does not.
    pub async fn guarded<T, F>(&self, op: &'static str, f: F) -> Upstream<T>
    where
        F: std::future::Future<Output = Upstream<T>>,
    {
        let trial = self.breaker.admit().map_err(|wait| {
            self.metrics
                .observe(&self.cfg.name, op, "circuit_open", 0.0);
            UpstreamError::Unavailable(format!(
                "the circuit breaker is open (retry in {} s)",
                wait.as_secs().max(1)
            ))
        })?;
        let start = std::time::Instant::now();
        let out = f.await;
        let secs = start.elapsed().as_secs_f64();
        let outcome = match &out {
            Ok(_) => "ok",
            Err(UpstreamError::Unavailable(_)) => "unavailable",
            Err(UpstreamError::Bad(_)) => "bad_response",
            // Refusals by status (bounded: the statuses GP Connect uses).
            Err(UpstreamError::Refused { status, .. }) => match status {
                400 => "refused_400",
                403 => "refused_403",
                404 => "refused_404",
                409 => "refused_409",
                412 => "refused_412",
                422 => "refused_422",
                _ => "refused_other",
            },
            Err(UpstreamError::NotSupported(_)) => "not_supported",
        };
        self.metrics.observe(&self.cfg.name, op, outcome, secs);
        match &out {
            Err(e) if e.is_fault() => self.breaker.failure(trial),
            _ => self.breaker.success(trial),
        }
        self.metrics.circuit(&self.cfg.name, self.breaker.state());
        out
    }

    /// Counts a read answered from a stale cached copy.
    pub fn stale_answer(&self) {
        self.metrics
            .stale
            .with_label_values(&[&self.cfg.name])
            .inc();
    }

    pub fn adapter(&self) -> &dyn Adapter {
        self.adapter.as_ref()
    }

    /// The supplier's id of the patient with NHS number `nhs` (cached).
    pub async fn remote_patient(&self, nhs: &str) -> Upstream<Option<String>> {
        if let Some(id) = self.patients.lock().ok().and_then(|m| m.get(nhs).cloned()) {
            return Ok(Some(id));
        }
        let found = self
            .guarded("find_patient", self.adapter.find_patient(nhs))
            .await?;
        if let (Some(id), Ok(mut m)) = (&found, self.patients.lock()) {
            if m.len() > MAX_OWNERS {
                m.clear();
            }
            m.insert(nhs.to_owned(), id.clone());
        }
        Ok(found)
    }

    /// Remembers which patient a record resource belongs to.
    pub fn remember_owner(&self, ty: ResourceType, rid: &str, nhs: &str, local: &str) {
        if let Ok(mut m) = self.owners.lock() {
            if m.len() > MAX_OWNERS {
                m.clear();
            }
            m.insert((ty, rid.to_owned()), (nhs.to_owned(), local.to_owned()));
        }
    }

    pub fn owner(&self, ty: ResourceType, rid: &str) -> Option<(String, String)> {
        self.owners.lock().ok()?.get(&(ty, rid.to_owned())).cloned()
    }

    /// Seconds a client should wait before retrying (the breaker's open time
    /// left, or 5 s).
    pub fn retry_after(&self) -> u64 {
        self.breaker
            .open_for()
            .map(|d| d.as_secs().max(1))
            .unwrap_or(5)
    }

    /// Health for `/health/ready`: `up`, `degraded` (half-open, or failing
    /// below the threshold) or `down` (open).
    pub fn health(&self) -> &'static str {
        self.breaker.health()
    }
}

/// Every configured supplier, and the practice (ODS code) → supplier map.
pub struct Bridge {
    suppliers: Vec<Arc<Supplier>>,
    by_ods: HashMap<String, usize>,
    pub metrics: Arc<metrics::BridgeMetrics>,
}

impl Bridge {
    /// A bridge with no suppliers: everything is local.
    pub fn none() -> Bridge {
        Bridge {
            suppliers: Vec::new(),
            by_ods: HashMap::new(),
            metrics: Arc::new(metrics::BridgeMetrics::new().expect("static metric definitions")),
        }
    }

    /// Starts one client thread per supplier. `issuer` is our base URL (GP
    /// Connect's JWT `iss`).
    pub fn start(list: &[SupplierConfig], issuer: &str) -> anyhow::Result<Bridge> {
        let metrics = Arc::new(metrics::BridgeMetrics::new()?);
        let mut suppliers = Vec::new();
        let mut by_ods = HashMap::new();
        for (i, cfg) in list.iter().enumerate() {
            let cfg = Arc::new(cfg.clone());
            let tls = http::Tls {
                cert_file: cfg.auth.client_cert_file.clone(),
                key_file: cfg.auth.client_key_file.clone(),
                ca_file: cfg.auth.ca_file.clone(),
            };
            let client = http::Client::start(
                &cfg.name,
                Duration::from_millis(cfg.timeout_ms),
                cfg.max_body_bytes,
                tls,
            )?;
            let adapter: Box<dyn Adapter> = match cfg.kind {
                SupplierKind::Gpconnect | SupplierKind::Sandbox => Box::new(
                    gpconnect::GpConnect::new(cfg.clone(), client, issuer.to_owned()),
                ),
                SupplierKind::Fhir => {
                    let token = bearer_token(&cfg.auth)?;
                    Box::new(fhir::FhirUpstream::new(cfg.clone(), client, token))
                }
            };
            for c in &cfg.ods_codes {
                by_ods.insert(c.clone(), i);
            }
            metrics.circuit(&cfg.name, breaker::State::Closed);
            suppliers.push(Arc::new(Supplier {
                held: cfg.held_types(),
                breaker: breaker::Breaker::new(
                    cfg.breaker_failures,
                    Duration::from_secs(cfg.breaker_open_secs),
                ),
                cache: cache::Cache::new(4096),
                adapter,
                metrics: metrics.clone(),
                patients: Mutex::new(HashMap::new()),
                owners: Mutex::new(HashMap::new()),
                cfg,
            }));
        }
        Ok(Bridge {
            suppliers,
            by_ods,
            metrics,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.suppliers.is_empty()
    }

    pub fn suppliers(&self) -> &[Arc<Supplier>] {
        &self.suppliers
    }

    /// The supplier holding practice `ods`'s records.
    pub fn for_practice(&self, ods: &str) -> Option<&Arc<Supplier>> {
        self.by_ods.get(ods).map(|i| &self.suppliers[*i])
    }

    pub fn named(&self, name: &str) -> Option<&Arc<Supplier>> {
        self.suppliers.iter().find(|s| s.cfg.name == name)
    }

    /// Whether any supplier holds `ty` (so a request about a type no
    /// supplier holds never looks for a route).
    pub fn any_holds(&self, ty: ResourceType) -> bool {
        self.suppliers.iter().any(|s| s.holds(ty))
    }

    /// `{supplier}.{id}` → the supplier and its own id, when `id` names a
    /// configured supplier.
    pub fn remote_id<'a>(&self, id: &'a str) -> Option<(&Arc<Supplier>, &'a str)> {
        if self.suppliers.is_empty() {
            return None;
        }
        let (name, rest) = id.split_once('.')?;
        let s = self.named(name)?;
        (!rest.is_empty()).then_some((s, rest))
    }
}

fn bearer_token(auth: &config::SupplierAuth) -> anyhow::Result<Option<String>> {
    if let Some(var) = &auth.bearer_token_env {
        let t = std::env::var(var)
            .map_err(|_| anyhow::anyhow!("the supplier token variable ${var} is not set"))?;
        return Ok(Some(t.trim().to_owned()));
    }
    if let Some(f) = &auth.bearer_token_file {
        let t = std::fs::read_to_string(f).map_err(|_| {
            anyhow::anyhow!("the supplier token file {} is not readable", f.display())
        })?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(None)
}

/// The resource type of a JSON resource, when it is one we serve.
pub fn type_of(v: &Value) -> Option<ResourceType> {
    v.get("resourceType")?.as_str()?.parse().ok()
}
