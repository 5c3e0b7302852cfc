//! The storage seam: capability traits that SQLite, PostgreSQL and (later) supplier
//! adapters implement. A backend declares what it supports in [`Capabilities`]; the
//! REST layer answers 405/501 for the rest and the CapabilityStatement is derived
//! from the same declaration.
//!
//! Storage never sees HTTP or raw query strings: it receives typed requests
//! ([`CreateRequest`], [`SearchQuery`], …) and already-extracted index rows.

pub mod audit;
pub mod jobs;
pub mod sql;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Instant, LogicalId, ResourceType, VersionId};
use crate::search::types::SearchQuery;

pub use crate::context::RequestContext;
pub use crate::model::StoredResource;
/// Index rows are the search layer's (`search::rows`); storage stores them as
/// given. Re-exported because callers build [`NewContent`] with them.
pub use crate::search::rows::IndexRow;
pub use audit::{
    Audit, AuditCursor, AuditFilter, AuditPage, AuditPageRequest, AuditRecord, StoredAudit,
};
pub use jobs::{Job, JobRun, JobState, Jobs, Lease, NewJob, Progress};

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
    /// Accepted for later delivery: the write was queued in the outbox, and
    /// `stored` is the local Task that tracks it (202).
    Queued,
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

/// Which search parameters a backend evaluates.
#[derive(Debug, Clone)]
pub enum SearchParams {
    /// Every parameter of the search registry (the SQL backends).
    Registry,
    /// Only these codes per type (`_id`, `_lastUpdated` included only if
    /// listed): what a supplier adapter can translate.
    Only(std::collections::BTreeMap<ResourceType, BTreeSet<String>>),
}

/// What a backend declares it can do.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub backend: &'static str,
    pub types: Vec<(ResourceType, BTreeSet<Interaction>)>,
    pub system_history: bool,
    pub conditional_create: bool,
    pub update_create: bool,
    /// The search parameters it evaluates (the CapabilityStatement lists
    /// these; a search using another is a 400).
    pub search_params: SearchParams,
}

impl Capabilities {
    pub fn supports_param(&self, ty: ResourceType, code: &str) -> bool {
        match &self.search_params {
            SearchParams::Registry => true,
            SearchParams::Only(map) => map.get(&ty).is_some_and(|s| s.contains(code)),
        }
    }

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
    /// The caller the transaction runs for (its restriction applies to
    /// [`TxOps::search`]'s includes; the service restricts matches).
    fn ctx(&self) -> &RequestContext;
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
    /// Enqueues a job in this transaction (the outbox: a deferred write is
    /// queued with the local record it belongs to, or not at all). Returns
    /// the job's id, or `None` when a live job has the same dedupe key.
    fn enqueue(&mut self, job: jobs::NewJob) -> StorageResult<Option<String>> {
        let _ = job;
        Err(StorageError::Unsupported(
            "this storage backend has no job queue".into(),
        ))
    }
}

/// Work to run in one transaction: `Ok` commits, an error rolls back.
pub type TxWork = Box<dyn FnOnce(&mut dyn TxOps) -> StorageResult<()> + Send>;

/// Runs `work` in one transaction of `backend` and hands back its typed
/// result: `Ok` commits (a failed commit is the storage error), `Err` rolls
/// back and is returned as is. 501 when the backend has no transactions.
pub async fn transact<T, E>(
    backend: Arc<dyn Backend>,
    ctx: RequestContext,
    work: impl FnOnce(&mut dyn TxOps) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StorageError> + Send + 'static,
{
    let txs = backend.transactions().ok_or_else(|| {
        E::from(StorageError::Unsupported(
            "This backend does not support transactions".into(),
        ))
    })?;
    // The result crosses from the blocking thread through a one-slot channel,
    // sent before the transaction ends.
    let (send, recv) = std::sync::mpsc::sync_channel::<Result<T, E>>(1);
    let ran = txs
        .transaction(
            &ctx,
            Box::new(move |tx| {
                let result = work(tx);
                let ok = result.is_ok();
                let _ = send.send(result);
                if ok {
                    Ok(())
                } else {
                    Err(StorageError::Aborted)
                }
            }),
        )
        .await;
    let sent = recv.try_recv().ok();
    match (ran, sent) {
        (Ok(()), Some(result)) => result,
        (Err(StorageError::Aborted), Some(Err(e))) => Err(e),
        (Err(e), _) => Err(E::from(e)),
        (Ok(()), None) => Err(E::from(StorageError::Internal(anyhow::anyhow!(
            "a transaction committed without a result"
        )))),
    }
}

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
    async fn transaction(&self, ctx: &RequestContext, work: TxWork) -> StorageResult<()>;
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
    /// The append-only audit trail (`crate::audit`).
    fn audit(&self) -> Option<&dyn Audit> {
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
