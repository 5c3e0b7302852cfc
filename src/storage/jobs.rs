//! The `Jobs` capability: a durable queue of background jobs with leases.
//!
//! A job is a row (kind, JSON params, state, cursor, progress). A worker
//! *claims* a due job under a lease (owner + expiry); while it runs it renews
//! the lease and commits its cursor with each unit of work
//! ([`Lease`]-guarded, so a worker that lost its lease cannot commit); it ends
//! the job with `complete`, `fail` (retried with backoff until
//! `max_attempts`) or `release` (graceful stop). A lease that runs out (the
//! owner crashed) makes the job claimable again, by any instance on the same
//! database, and the new owner resumes from the committed cursor. Every
//! claim is recorded in a run log ([`JobRun`]).
//!
//! The runner that drives these calls is `crate::jobs`; storage knows nothing
//! of what a kind does.

use std::time::Duration;

use async_trait::async_trait;

use super::{RequestContext, StorageResult};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting to be claimed (after `run_after`).
    Queued,
    /// Claimed by `lease_owner` until `lease_until` (claimable again after).
    Running,
    /// Finished.
    Done,
    /// Gave up after `max_attempts` (or a permanent error).
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Queued or running: the states a dedupe key is unique among.
    pub fn is_live(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The registered kind that runs it (`reindex`, …).
    pub kind: String,
    /// At most one live job per key: enqueueing a second returns the first.
    pub dedupe_key: Option<String>,
    /// The kind's parameters (JSON text; no patient data).
    pub params: String,
    /// Claims (crashes and failures included) before the job is `failed`.
    pub max_attempts: u32,
    /// Not claimed by a polling worker before this (Unix ms); `None`: now.
    pub run_after: Option<i64>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub dedupe_key: Option<String>,
    pub params: String,
    pub state: JobState,
    /// Claims so far that did not end in a release.
    pub attempts: u32,
    pub max_attempts: u32,
    pub lease_owner: Option<String>,
    /// Unix ms.
    pub lease_until: Option<i64>,
    /// The kind's progress marker (opaque to storage and runner).
    pub cursor: Option<String>,
    pub done_units: i64,
    pub total_units: Option<i64>,
    /// Why the last attempt failed (never patient data).
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub run_after: i64,
}

/// One claim of a job, from the run log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub owner: String,
    pub claimed_at: i64,
    pub ended_at: Option<i64>,
    /// `running`, `done`, `failed`, `retry`, `released` or `expired` (the
    /// lease ran out and another claim took over).
    pub outcome: String,
}

/// The right to work on one job: valid while `owner` is the job's lease owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
}

/// Progress to commit: absolute values, replacing the stored ones (a `None`
/// total keeps the stored total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub cursor: Option<String>,
    pub done_units: i64,
    pub total_units: Option<i64>,
}

/// The job queue. Every method that changes a leased job takes the [`Lease`]
/// and does nothing (returns `false`) when the lease was lost.
#[async_trait]
pub trait Jobs: Send + Sync {
    /// Stores `job` as queued, or returns the live job with the same dedupe
    /// key (`false`: it already existed and is unchanged).
    async fn enqueue(&self, ctx: &RequestContext, job: NewJob) -> StorageResult<(Job, bool)>;
    /// Claims the oldest due job of one of `kinds` (a queued one whose
    /// `run_after` has passed, or a running one whose lease ran out) for
    /// `owner` until now + `lease`. Concurrent claims never get the same job.
    async fn claim(
        &self,
        ctx: &RequestContext,
        owner: &str,
        kinds: &[String],
        lease: Duration,
    ) -> StorageResult<Option<Job>>;
    /// Claims job `id` if it is queued (whatever its `run_after`) or its lease
    /// ran out (a foreground run of a job this process enqueued).
    async fn claim_id(
        &self,
        ctx: &RequestContext,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> StorageResult<Option<Job>>;
    /// Extends the lease to now + `lease`; `false` if it was lost.
    async fn renew(&self, ctx: &RequestContext, lease: &Lease, by: Duration)
        -> StorageResult<bool>;
    /// Commits progress on its own (kinds whose unit of work is not a
    /// transaction of this backend; storage work commits its cursor in the
    /// same transaction, e.g. `Reindex::reindex_batch`).
    async fn checkpoint(
        &self,
        ctx: &RequestContext,
        lease: &Lease,
        progress: &Progress,
    ) -> StorageResult<bool>;
    /// Marks the job done.
    async fn complete(&self, ctx: &RequestContext, lease: &Lease) -> StorageResult<bool>;
    /// Records a failed attempt: queued again after `retry_in` if attempts
    /// remain (and `retry_in` is given), else failed. Returns the new state
    /// (`None`: the lease was lost).
    async fn fail(
        &self,
        ctx: &RequestContext,
        lease: &Lease,
        error: &str,
        retry_in: Option<Duration>,
    ) -> StorageResult<Option<JobState>>;
    /// Gives the job back (graceful stop): queued, due now, the attempt not counted.
    async fn release(&self, ctx: &RequestContext, lease: &Lease) -> StorageResult<bool>;
    /// Forgets a live job's progress (cursor and counters), unless another
    /// owner holds a lease on it that has not run out; `false` then.
    async fn reset(&self, ctx: &RequestContext, id: &str) -> StorageResult<bool>;
    /// A failed (dead-lettered) or queued job queued again now, its attempts
    /// back to 0 (`false`: running, finished or absent).
    async fn requeue(&self, ctx: &RequestContext, id: &str) -> StorageResult<bool>;
    /// Removes a job that is not running (`false`: running or absent).
    async fn discard(&self, ctx: &RequestContext, id: &str) -> StorageResult<bool>;
    async fn get(&self, ctx: &RequestContext, id: &str) -> StorageResult<Option<Job>>;
    /// Jobs of `kind` (every kind when `None`), newest first.
    async fn list(
        &self,
        ctx: &RequestContext,
        kind: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Job>>;
    /// The run log of job `id`, oldest claim first.
    async fn runs(&self, ctx: &RequestContext, id: &str) -> StorageResult<Vec<JobRun>>;
}
