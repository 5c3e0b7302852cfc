//! Prometheus metrics. Labels are bounded: interaction names, supported resource
//! types and status classes, never ids or parameter values.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics, registered in their own registry.
pub struct InstanceMetrics {
    registry: Registry,
    /// Requests served, by FHIR interaction, resource type and status class (2xx…5xx).
    pub requests: IntCounterVec,
    /// Request latency in seconds, by interaction, resource type and status class.
    pub latency: HistogramVec,
    /// Database pool connections by state (`in_use`, `idle`), per backend.
    pub pool: IntGaugeVec,
    /// Refused credentials, by reason (`missing`, `expired`, `signature`, ...).
    pub auth_failures: IntCounterVec,
    /// Events per audit commit.
    pub audit_batch_size: prometheus::Histogram,
    /// Seconds per audit commit.
    pub audit_commit_seconds: prometheus::Histogram,
    /// AuditEvents committed.
    pub audit_events: prometheus::IntCounter,
}

impl InstanceMetrics {
    /// The registry (other components register their metrics here).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn new() -> anyhow::Result<InstanceMetrics> {
        let registry = Registry::new_custom(Some("fhirbridge".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &["interaction", "resource_type", "status_class"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            &["interaction", "resource_type", "status_class"],
        )?;
        let pool = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state"),
            &["backend", "state"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Requests refused at authentication or authorisation, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(pool.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        let audit_batch_size = prometheus::Histogram::with_opts(
            HistogramOpts::new("audit_batch_size", "AuditEvents per audit commit").buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        )?;
        let audit_commit_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new("audit_commit_seconds", "Seconds per audit commit").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        let audit_events =
            prometheus::IntCounter::new("audit_events_total", "AuditEvents committed")?;
        registry.register(Box::new(audit_batch_size.clone()))?;
        registry.register(Box::new(audit_commit_seconds.clone()))?;
        registry.register(Box::new(audit_events.clone()))?;
        Ok(InstanceMetrics {
            audit_batch_size,
            audit_commit_seconds,
            audit_events,
            registry,
            requests,
            latency,
            pool,
            auth_failures,
        })
    }

    /// The audit writer's metrics.
    pub fn audit_writer(&self) -> crate::audit::writer::WriterMetrics {
        crate::audit::writer::WriterMetrics {
            batch_size: self.audit_batch_size.clone(),
            commit_seconds: self.audit_commit_seconds.clone(),
            events: self.audit_events.clone(),
        }
    }

    pub fn observe(&self, interaction: &str, resource_type: &str, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = [interaction, resource_type, class];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(seconds);
    }

    pub fn set_pool(&self, backend: &str, in_use: u32, idle: u32) {
        self.pool
            .with_label_values(&[backend, "in_use"])
            .set(i64::from(in_use));
        self.pool
            .with_label_values(&[backend, "idle"])
            .set(i64::from(idle));
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
