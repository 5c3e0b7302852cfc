//! The seam every supplier adapter implements. Adapters speak their
//! supplier's protocol and return **R4** resources with the supplier's own
//! ids and references; the bridge ([`super::Supplier`]) maps ids onto ours,
//! filters, caches and guards every call.

use async_trait::async_trait;
use serde_json::Value;

use super::config::SupplierKind;

/// Why a supplier call did not give a usable answer. Messages never hold
/// credentials, patient data or supplier bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Down, timed out, circuit open: 503 with `Retry-After`.
    Unavailable(String),
    /// A malformed or hostile answer: 502, nothing of it used.
    Bad(String),
    /// The supplier refused the request: its status and Spine error code,
    /// mapped to the R4 OperationOutcome with the same meaning.
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The supplier's protocol has no such interaction: 501.
    NotSupported(String),
}

impl UpstreamError {
    /// Whether this failure counts against the supplier's health (the
    /// circuit breaker): unavailability and broken answers, not refusals.
    pub fn is_fault(&self) -> bool {
        matches!(self, UpstreamError::Unavailable(_) | UpstreamError::Bad(_))
    }
}

pub type Upstream<T> = Result<T, UpstreamError>;

impl From<super::http::Failure> for UpstreamError {
    fn from(f: super::http::Failure) -> UpstreamError {
        match f {
            super::http::Failure::Unavailable(m) => UpstreamError::Unavailable(m),
            super::http::Failure::Bad(m) => UpstreamError::Bad(m),
        }
    }
}

/// A query-string value, percent-encoded.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A free-slot window (GP Connect: at most 14 days).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    /// FHIR dates or dateTimes.
    pub from: String,
    pub to: String,
}

/// What one supplier protocol can do.
#[async_trait]
pub trait Adapter: Send + Sync {
    fn kind(&self) -> SupplierKind;
    /// The supplier's id of the patient with this NHS number.
    async fn find_patient(&self, nhs: &str) -> Upstream<Option<String>>;
    /// The patient's medication (plans, issues, statements, medications) and
    /// allergies, as R4 resources.
    async fn record(&self, nhs: &str, remote_patient: &str) -> Upstream<Vec<Value>>;
    /// The patient's appointments in a window.
    async fn appointments(&self, remote_patient: &str, window: &Window) -> Upstream<Vec<Value>>;
    /// Reads one resource (Appointment, and the directory types).
    async fn read(&self, ty: &str, id: &str) -> Upstream<Option<Value>>;
    /// Free slots with their schedules and the schedules' actors (and the
    /// locations' managing organisations).
    async fn free_slots(&self, window: &Window) -> Upstream<Vec<Value>>;
    /// Books an appointment (synchronous: the patient needs to know).
    async fn book(&self, appointment: Value) -> Upstream<Value>;
    /// Amends or cancels an appointment at the supplier's version `version`.
    async fn update_appointment(
        &self,
        id: &str,
        version: &str,
        appointment: Value,
        cancel: bool,
    ) -> Upstream<Value>;
    /// Delivers a repeat prescription request (idempotent by its identifier).
    async fn request_repeat(&self, task: Value) -> Upstream<Value>;
    /// A cheap liveness probe (the supplier's CapabilityStatement).
    async fn ping(&self) -> Upstream<()>;
}
