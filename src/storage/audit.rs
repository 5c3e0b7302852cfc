//! The `Audit` capability: the append-only audit trail (`audit_events`).
//! A batch of events is appended in one transaction (the group-commit
//! writer, `crate::audit::writer`, sends many requests' events at once);
//! events are read by id and searched by patient, date, codes, agent and
//! entity, newest first by default, with keyset paging. Nothing updates or
//! deletes an event.

use async_trait::async_trait;

use super::{RequestContext, StorageResult};

/// One AuditEvent to append.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// The event's logical id (a UUID).
    pub id: String,
    /// Unix milliseconds (`AuditEvent.recorded`).
    pub recorded: i64,
    /// The one patient the event is about.
    pub patient_id: Option<String>,
    /// `type` code (`rest`, `110114`).
    pub type_code: String,
    /// `subtype` code (`read`, `search-type`, `110122`, ...).
    pub subtype: String,
    /// `C`, `R`, `U`, `D`, `E`.
    pub action: String,
    /// `0`, `4`, `8`.
    pub outcome: String,
    /// The client id of the requesting agent.
    pub agent: Option<String>,
    /// Every `entity.what` reference (`Patient/1`, `Observation/2/_history/3`).
    pub entities: Vec<String>,
    /// The AuditEvent JSON.
    pub content: String,
}

/// A comparison on `recorded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
}

/// Which events a search returns (every field ANDed; lists ORed).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// `_id`.
    pub ids: Vec<String>,
    /// The caller's reach: only events about these patients (`None`: all).
    pub reach: Option<Vec<String>>,
    /// `patient`.
    pub patients: Vec<String>,
    /// `date` bounds, Unix milliseconds.
    pub dates: Vec<(Cmp, i64)>,
    pub type_codes: Vec<String>,
    pub subtypes: Vec<String>,
    pub outcomes: Vec<String>,
    pub agents: Vec<String>,
    /// `entity`: `Type/id` (or a bare id, of any type); matches its versions.
    pub entities: Vec<String>,
}

/// A page position: events strictly after this one in the sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub recorded: i64,
    pub seq: i64,
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct AuditPageRequest {
    pub count: usize,
    /// Oldest first (`_sort=date`) instead of newest first.
    pub ascending: bool,
    pub after: Option<AuditCursor>,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct StoredAudit {
    pub id: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<StoredAudit>,
    /// Where the next page starts, when there is one.
    pub next: Option<AuditCursor>,
}

#[async_trait]
pub trait Audit: Send + Sync {
    /// Appends every record in one transaction (all or none).
    async fn append(&self, ctx: &RequestContext, batch: Vec<AuditRecord>) -> StorageResult<()>;
    /// The event with this id, if `reach` (when given) names its patient.
    async fn read_audit(
        &self,
        ctx: &RequestContext,
        id: &str,
        reach: Option<&[String]>,
    ) -> StorageResult<Option<StoredAudit>>;
    /// One page of the events `filter` selects.
    async fn search_audit(
        &self,
        ctx: &RequestContext,
        filter: &AuditFilter,
        page: &AuditPageRequest,
    ) -> StorageResult<AuditPage>;
}
