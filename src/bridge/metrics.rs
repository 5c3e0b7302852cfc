//! Per-supplier metrics. Labels: the supplier's configured name, the
//! operation (`find_patient`, `record`, `free_slots`, `book`, …), the
//! outcome class; never ids, parameters or credentials.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::breaker::State;

pub struct BridgeMetrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub circuit: IntGaugeVec,
    pub outbox_depth: IntGaugeVec,
    pub outbox_oldest: IntGaugeVec,
    pub stale: IntCounterVec,
}

impl BridgeMetrics {
    pub fn new() -> prometheus::Result<BridgeMetrics> {
        Ok(BridgeMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "supplier_requests_total",
                    "Calls to GP suppliers by operation and outcome",
                ),
                &["supplier", "operation", "outcome"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "supplier_request_duration_seconds",
                    "GP supplier call latency",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["supplier", "operation"],
            )?,
            circuit: IntGaugeVec::new(
                Opts::new(
                    "supplier_circuit_state",
                    "Circuit breaker: 0 closed, 1 half-open, 2 open",
                ),
                &["supplier"],
            )?,
            outbox_depth: IntGaugeVec::new(
                Opts::new(
                    "outbox_depth",
                    "Deferred writes not yet delivered (queued, running, dead-lettered)",
                ),
                &["supplier", "state"],
            )?,
            outbox_oldest: IntGaugeVec::new(
                Opts::new(
                    "outbox_oldest_age_seconds",
                    "Age of the oldest undelivered deferred write",
                ),
                &["supplier"],
            )?,
            stale: IntCounterVec::new(
                Opts::new(
                    "supplier_stale_answers_total",
                    "Reads answered from a stale cached copy",
                ),
                &["supplier"],
            )?,
        })
    }

    pub fn register(&self, r: &Registry) -> prometheus::Result<()> {
        r.register(Box::new(self.requests.clone()))?;
        r.register(Box::new(self.latency.clone()))?;
        r.register(Box::new(self.circuit.clone()))?;
        r.register(Box::new(self.outbox_depth.clone()))?;
        r.register(Box::new(self.outbox_oldest.clone()))?;
        r.register(Box::new(self.stale.clone()))?;
        Ok(())
    }

    pub fn observe(&self, supplier: &str, op: &str, outcome: &str, secs: f64) {
        self.requests
            .with_label_values(&[supplier, op, outcome])
            .inc();
        if outcome != "circuit_open" {
            self.latency
                .with_label_values(&[supplier, op])
                .observe(secs);
        }
    }

    pub fn circuit(&self, supplier: &str, state: State) {
        self.circuit
            .with_label_values(&[supplier])
            .set(state.gauge());
    }
}
