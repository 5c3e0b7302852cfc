//! The storage seam: capability traits that SQLite, PostgreSQL and (later) supplier
//! adapters implement. A backend declares what it supports in [`Capabilities`]; the
//! REST layer answers 405/501 for the rest and the CapabilityStatement is derived
//! from the same declaration.
//!
//! Storage never sees HTTP or raw query strings: it receives typed requests
//! ([`CreateRequest`], [`SearchQuery`], …) and already-extracted index rows.

pub mod jobs;
pub mod sql;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Instant, LogicalId, ResourceType, VersionId};
use crate::search::types::SearchQuery;

pub use crate::context::RequestContext;
pub use crate::model::StoredResource;
pub use jobs::{Job, JobRun, JobState, Jobs, Lease, NewJob, Progress};

/// Longest index value (in bytes) stored verbatim in an equality-matched
/// column (token system and code, URI, reference URL, exact string,
/// quantity system/code/unit). A B-tree entry must fit in a page (PostgreSQL:
/// about 2,700 bytes for the whole key), so longer values are stored as
/// [`index_key`] makes them.
pub const MAX_INDEX_VALUE: usize = 512;

/// How much of a longer value [`index_key`] keeps verbatim (at least this
/// many bytes, rounded up to a character boundary): prefix tests (`:below`,
/// `:above`) are exact for values up to this long.
pub const INDEX_PREFIX: usize = 448;

/// The stored form of an equality-matched index value: the value itself up to
/// [`MAX_INDEX_VALUE`] bytes; a longer one as its first [`INDEX_PREFIX`]-odd
/// bytes, `#` and the SHA-256 of the whole value in hex. That form is longer
/// than [`MAX_INDEX_VALUE`] bytes, so it never equals a value stored verbatim,
/// and equal forms mean equal values: comparing forms is exact matching. The
/// search side compares `index_key(value)` with the column.
pub fn index_key(s: &str) -> std::borrow::Cow<'_, str> {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    if s.len() <= MAX_INDEX_VALUE {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = INDEX_PREFIX;
    while !s.is_char_boundary(end) {
        end += 1;
    }
    let mut out = String::with_capacity(end + 65);
    out.push_str(&s[..end]);
    out.push('#');
    for b in Sha256::digest(s.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    std::borrow::Cow::Owned(out)
}

/// [`index_key`] of an optional value.
pub fn opt_index_key(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|v| index_key(v).into_owned())
}

/// A value extracted from a resource for one search parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    Token {
        system: Option<String>,
        code: String,
        /// Normalised display text (`CodeableConcept.text`, `Coding.display`,
        /// `Identifier.type.text`) for `:text`.
        text: Option<String>,
    },
    Date {
        lo: i64,
        hi: i64,
    },
    Reference {
        /// Empty when the reference is a URL that names no local resource.
        target_type: String,
        target_id: String,
        /// The reference verbatim when it is absolute (or canonical).
        url: Option<String>,
    },
    String {
        /// Lower-case, accents removed.
        norm: String,
        exact: String,
    },
    Number {
        value: f64,
    },
    Quantity {
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
        value: f64,
    },
    Uri {
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// The parameter code, or a derived key (`identifier:of-type`,
    /// `subject:identifier`) for modifier-specific rows.
    pub param: String,
    pub value: IndexValue,
    /// For a composite's component rows: which element of the composite's
    /// expression the value came from (components match within one element).
    pub group: Option<u32>,
}

/// A resource body ready to store: JSON without server-owned meta, plus its index rows.
#[derive(Debug, Clone)]
pub struct NewContent {
    pub resource: serde_json::Value,
    pub indexes: Vec<IndexRow>,
}

#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub resource_type: ResourceType,
    pub content: NewContent,
    /// `If-None-Exist`: create only if nothing matches (checked atomically).
    pub if_none_exist: Option<SearchQuery>,
}

#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub resource_type: ResourceType,
    pub id: LogicalId,
    pub content: NewContent,
    pub precondition: Precondition,
}

#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub resource_type: ResourceType,
    pub id: LogicalId,
    pub precondition: Precondition,
}

/// Version preconditions from `If-Match` / `If-None-Match: *`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    #[default]
    None,
    /// `If-Match: W/"n"`: the current version must be `n`.
    VersionIs(VersionId),
    /// `If-None-Match: *` on PUT: the resource must not currently exist.
    MustNotExist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Created,
    Updated,
    /// The update was identical to the current version; no version was written.
    Unchanged,
    /// A conditional create matched an existing resource; nothing was written.
    Existing,
    Deleted,
    /// Delete of something already deleted or never created: nothing was written.
    NothingToDelete,
}

#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub kind: WriteKind,
    /// The version now current (for deletes: the deletion marker, if any).
    pub stored: Option<StoredResource>,
}

/// Which versions a history request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    System,
    Type(ResourceType),
    Instance(ResourceType, LogicalId),
}

#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub scope: HistoryScope,
    /// Only versions with `lastUpdated >= since`.
    pub since: Option<Instant>,
    pub count: usize,
    /// Keyset cursor: versions written before this sequence number.
    pub before_seq: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub seq: i64,
    pub resource: StoredResource,
    /// `POST`, `PUT` or `DELETE`.
    pub method: String,
}

#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub total: i64,
    pub next_before_seq: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct SearchPage {
    pub resources: Vec<StoredResource>,
    /// `_include` / `_revinclude` results (not counted in `total`).
    pub included: Vec<StoredResource>,
    /// Whether includes stopped at the cap.
    pub include_truncated: bool,
    pub total: Option<i64>,
    /// Cursors for the `next` and `previous` links.
    pub next: Option<crate::search::types::Cursor>,
    pub previous: Option<crate::search::types::Cursor>,
}

/// Errors from any backend. Messages are safe to show to clients; internal
/// detail stays in the `#[source]` chain, which only the logs see.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("resource not found")]
    NotFound,
    #[error("resource was deleted")]
    Gone {
        version: VersionId,
        last_updated: Instant,
    },
    #[error("version conflict")]
    VersionConflict { current: Option<VersionId> },
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("storage unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("storage busy, try again")]
    Busy,
    #[error("{0}")]
    Unsupported(String),
    /// The caller's own logic abandoned a transaction (it keeps the reason).
    #[error("transaction aborted")]
    Aborted,
    /// A job's lease passed to another owner; the work was not committed.
    #[error("job lease lost")]
    LeaseLost,
    #[error("internal storage error")]
    Internal(#[source] anyhow::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// FHIR interactions a backend can carry out for a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Interaction {
    Read,
    Vread,
    Update,
    Delete,
    HistoryInstance,
    HistoryType,
    Create,
    SearchType,
}

impl Interaction {
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::Create => "create",
            Interaction::SearchType => "search-type",
        }
    }
}

/// What a backend declares it can do.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub backend: &'static str,
    pub types: Vec<(ResourceType, BTreeSet<Interaction>)>,
    pub system_history: bool,
    pub conditional_create: bool,
    pub update_create: bool,
}

impl Capabilities {
    pub fn supports(&self, ty: ResourceType, interaction: Interaction) -> bool {
        self.types
            .iter()
            .any(|(t, set)| *t == ty && set.contains(&interaction))
    }

    pub fn supports_type(&self, ty: ResourceType) -> bool {
        self.types.iter().any(|(t, _)| *t == ty)
    }
}

#[async_trait]
pub trait ResourceRead: Send + Sync {
    /// The current version; `Gone` if its latest version is a deletion.
    async fn read(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
    ) -> StorageResult<StoredResource>;
    /// One version; `Gone` if that version is a deletion marker.
    async fn vread(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
        version: VersionId,
    ) -> StorageResult<StoredResource>;
}

#[async_trait]
pub trait ResourceWrite: Send + Sync {
    async fn create(&self, ctx: &RequestContext, req: CreateRequest)
        -> StorageResult<WriteOutcome>;
    async fn update(&self, ctx: &RequestContext, req: UpdateRequest)
        -> StorageResult<WriteOutcome>;
    async fn delete(&self, ctx: &RequestContext, req: DeleteRequest)
        -> StorageResult<WriteOutcome>;
}

#[async_trait]
pub trait History: Send + Sync {
    async fn history(
        &self,
        ctx: &RequestContext,
        query: HistoryQuery,
    ) -> StorageResult<HistoryPage>;
}

#[async_trait]
pub trait Search: Send + Sync {
    async fn search(&self, ctx: &RequestContext, query: &SearchQuery) -> StorageResult<SearchPage>;
}

/// Opaque page tokens for searches whose parameters must not appear in URLs
/// (`POST [type]/_search` keeps an NHS number out of URLs and logs): the
/// parameters of each page link are kept server-side under a random token.
#[async_trait]
pub trait PageTokens: Send + Sync {
    /// Stores each of `params` (opaque text) for `ttl`; returns one new token each.
    async fn put_pages(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        params: Vec<String>,
        ttl: std::time::Duration,
    ) -> StorageResult<Vec<String>>;
    /// The type and parameters of a token that has not expired.
    async fn get_page(
        &self,
        ctx: &RequestContext,
        token: &str,
    ) -> StorageResult<Option<(ResourceType, String)>>;
}

/// How [`TxOps::create_many`] records its creates in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMethod {
    Post,
    Put,
}

/// Operations available inside one storage transaction (all synchronous: the
/// work runs on a blocking thread while the transaction is open).
pub trait TxOps {
    /// `id`: a pre-assigned id for the new resource (else one is generated).
    fn create(&mut self, req: CreateRequest, id: Option<LogicalId>) -> StorageResult<WriteOutcome>;
    fn update(&mut self, req: UpdateRequest) -> StorageResult<WriteOutcome>;
    /// Many unconditional creates with ids that have no head row yet, in
    /// order (a bulk fast path; the default runs them one by one). `method`
    /// is what history records: `POST`, or `PUT` for an update that creates.
    fn create_many(
        &mut self,
        reqs: Vec<(CreateRequest, LogicalId)>,
        method: CreateMethod,
    ) -> StorageResult<Vec<WriteOutcome>> {
        reqs.into_iter()
            .map(|(r, id)| match method {
                CreateMethod::Post => self.create(r, Some(id)),
                CreateMethod::Put => self.update(UpdateRequest {
                    resource_type: r.resource_type,
                    id,
                    content: r.content,
                    precondition: Precondition::None,
                }),
            })
            .collect()
    }
    /// Which of `ids` have a head row (current, deleted or being created):
    /// the others can be created by [`TxOps::create_many`].
    fn existing_ids(
        &mut self,
        ty: ResourceType,
        ids: &[&LogicalId],
    ) -> StorageResult<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for id in ids {
            match self.read(ty, id) {
                Err(StorageError::NotFound) => {}
                Ok(_) | Err(StorageError::Gone { .. }) => {
                    out.insert(id.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    fn delete(&mut self, req: DeleteRequest) -> StorageResult<WriteOutcome>;
    fn read(&mut self, ty: ResourceType, id: &LogicalId) -> StorageResult<StoredResource>;
    fn vread(
        &mut self,
        ty: ResourceType,
        id: &LogicalId,
        version: VersionId,
    ) -> StorageResult<StoredResource>;
    /// Up to `limit` current matches (for conditional interactions).
    fn find(&mut self, query: &SearchQuery, limit: usize) -> StorageResult<Vec<StoredResource>>;
    fn search(&mut self, query: &SearchQuery) -> StorageResult<SearchPage>;
    /// Serialises transactions that use the same key until commit (conditional
    /// writes on the same criteria). A no-op where writes are already serial.
    fn lock(&mut self, key: &str) -> StorageResult<()>;
}

/// Work to run in one transaction; its result is handed back as is.
pub type TxWork =
    Box<dyn FnOnce(&mut dyn TxOps) -> StorageResult<Box<dyn std::any::Any + Send>> + Send>;

/// Drops `value` on a short-lived thread when `large`: freeing thousands of
/// JSON trees or index rows is not work for a writer holding the write lock.
pub fn drop_off_thread<T: Send + 'static>(value: T, large: bool) {
    if large {
        std::thread::spawn(move || drop(value));
    }
}

/// A stored resource's position in reindex order (type, then id).
pub type ResourceKey = (ResourceType, LogicalId);

/// Computes a resource's index rows (the search layer owns extraction; storage
/// only stores what it is given).
pub type Extractor = Arc<dyn Fn(ResourceType, &serde_json::Value) -> Vec<IndexRow> + Send + Sync>;

/// One step of a reindex run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexStep {
    /// Resources whose index rows were rebuilt.
    pub done: usize,
    /// The last key done; `None` when nothing was left.
    pub last: Option<ResourceKey>,
}

/// Rebuilds the search index of stored resources in resumable batches. A run
/// is a job (`crate::jobs::reindex`); each batch commits the job's cursor
/// (`Type/id`, under the job's [`Lease`]) in its own transaction, so an
/// interrupted run resumes where it stopped and a run whose lease was lost
/// commits nothing more.
#[async_trait]
pub trait Reindex: Send + Sync {
    /// Current (not deleted) resources of `types` (every type when empty).
    async fn reindex_total(
        &self,
        ctx: &RequestContext,
        types: &[ResourceType],
    ) -> StorageResult<u64>;
    /// In one transaction: the next `limit` current resources of `types` after
    /// `after` (in key order) get their index rows replaced by `extract`'s,
    /// and the job's progress moves to the last of them (`done` more units).
    /// [`StorageError::LeaseLost`] (nothing written) when `lease` was lost.
    #[allow(clippy::too_many_arguments)]
    async fn reindex_batch(
        &self,
        ctx: &RequestContext,
        lease: &Lease,
        types: &[ResourceType],
        after: Option<ResourceKey>,
        limit: usize,
        done_before: i64,
        extract: Extractor,
    ) -> StorageResult<ReindexStep>;
}

/// Atomic multi-operation units: everything `work` writes commits together, or
/// (on any error) nothing does.
#[async_trait]
pub trait Transactions: Send + Sync {
    async fn transaction(
        &self,
        ctx: &RequestContext,
        work: TxWork,
    ) -> StorageResult<Box<dyn std::any::Any + Send>>;
}

/// A storage backend: declared capabilities plus the traits it implements.
#[async_trait]
pub trait Backend: Send + Sync {
    fn capabilities(&self) -> &Capabilities;
    fn reader(&self) -> Option<&dyn ResourceRead>;
    fn writer(&self) -> Option<&dyn ResourceWrite>;
    fn history(&self) -> Option<&dyn History>;
    fn search(&self) -> Option<&dyn Search>;
    /// Multi-operation transactions (bundles, conditional update/delete).
    fn transactions(&self) -> Option<&dyn Transactions> {
        None
    }
    /// Rebuilding the search index of stored resources (`fhirbridge reindex`).
    fn reindex(&self) -> Option<&dyn Reindex> {
        None
    }
    /// Server-side page tokens (`POST [type]/_search` links).
    fn page_tokens(&self) -> Option<&dyn PageTokens> {
        None
    }
    /// The durable job queue (`crate::jobs` runs it).
    fn jobs(&self) -> Option<&dyn Jobs> {
        None
    }
    /// Readiness probe: can the backend serve requests now?
    async fn ping(&self) -> StorageResult<()>;
    /// Pool gauges for `/metrics`: (connections in use, idle connections).
    fn pool_state(&self) -> (u32, u32);
}

/// Sets the server-owned `meta.versionId` and `meta.lastUpdated` on a resource,
/// and puts `resourceType`, `id` and `meta` first, as FHIR JSON conventionally has them.
pub fn stamp_meta(resource: &mut serde_json::Value, version: VersionId, at: Instant) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let mut meta = match obj.shift_remove("meta") {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    meta.shift_remove("versionId");
    meta.shift_remove("lastUpdated");
    let mut stamped = serde_json::Map::with_capacity(meta.len() + 2);
    stamped.insert(
        "versionId".into(),
        serde_json::Value::String(version.to_string()),
    );
    stamped.insert(
        "lastUpdated".into(),
        serde_json::Value::String(at.to_fhir()),
    );
    stamped.extend(meta);
    let mut ordered = serde_json::Map::with_capacity(obj.len() + 1);
    for key in ["resourceType", "id"] {
        if let Some(v) = obj.shift_remove(key) {
            ordered.insert(key.into(), v);
        }
    }
    ordered.insert("meta".into(), serde_json::Value::Object(stamped));
    ordered.extend(std::mem::take(obj));
    *obj = ordered;
}

/// Removes the server-owned meta elements (and an emptied `meta`), for comparing
/// an incoming body with the stored one.
pub fn strip_server_meta(resource: &mut serde_json::Value) {
    if let Some(obj) = resource.as_object_mut() {
        let empty = match obj.get_mut("meta").and_then(|m| m.as_object_mut()) {
            Some(m) => {
                m.shift_remove("versionId");
                m.shift_remove("lastUpdated");
                m.is_empty()
            }
            None => false,
        };
        if empty {
            obj.shift_remove("meta");
        }
    }
}

/// The lock key of a conditional write: every conditional path (create, update,
/// delete, patch, a bundle entry or not) takes [`TxOps::lock`] (or the backend's
/// equivalent) on this key for its criteria, so they serialise with each other.
pub fn conditional_lock_key(criteria: &crate::search::types::SearchQuery) -> String {
    format!("cond:{}", criteria.selection_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_are_bounded_and_exact() {
        assert_eq!(index_key("urn:s"), "urn:s");
        let at_limit = "a".repeat(MAX_INDEX_VALUE);
        assert_eq!(index_key(&at_limit), at_limit);
        let long = format!("{}b", "a".repeat(5_000_000));
        let near = format!("{}c", "a".repeat(5_000_000));
        let (k, n) = (index_key(&long), index_key(&near));
        assert!(k.len() > MAX_INDEX_VALUE && k.len() <= INDEX_PREFIX + 4 + 65);
        assert!(k.starts_with(&long[..INDEX_PREFIX]));
        assert_ne!(k, n);
        assert_eq!(k, index_key(&long));
        // Cut at a character boundary, never inside one.
        let wide = "é".repeat(1000);
        assert!(index_key(&wide).starts_with(&"é".repeat(INDEX_PREFIX / 2)));
    }
}
