//! Background jobs: the [`JobKind`] trait each kind of job implements, the
//! [`Registry`] that maps a kind's name to its handler, and the supervised
//! worker that claims and runs them ([`runner`]). Reindex is the first kind
//! ([`reindex`]); the outbox, subscription delivery and bulk export will be
//! kinds too, registered in [`registry`] without touching the runner.
//!
//! The queue itself (leases, claims, cursors) is storage's [`Jobs`]
//! capability. A kind's handler gets a [`JobContext`]: the claimed job (its
//! params and committed cursor), the backend, a `System` [`RequestContext`]
//! and the lease, and checks [`JobContext::should_stop`] between units of
//! work. Nothing a job logs or stores as its error holds patient data.

pub mod reindex;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::config::Settings;
use crate::storage::{Backend, Job, Jobs, Lease, RequestContext, StorageError};

pub use runner::{Outcome, Runner, Worker};

/// This process's name as a job lease owner: random per process (with the
/// pid, for operators), so a restarted server never mistakes an old lease
/// for its own.
pub fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("fhirbridge-{}-{}", std::process::id(), &random[..12])
    })
}

/// Why a job's handler stopped before it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Shutdown (or the foreground run's Ctrl-C): the job is given back and
    /// resumes from its cursor.
    Stopped,
    /// Another owner holds the job now; nothing more may be committed.
    LeaseLost,
    /// The attempt failed. `retry`: worth another attempt (with backoff)
    /// while attempts remain. `message` is stored and logged: no patient data.
    Failed { message: String, retry: bool },
}

impl JobError {
    /// A failure that no retry can fix (bad parameters, missing capability).
    pub fn permanent(message: &str) -> JobError {
        JobError::Failed {
            message: message.to_owned(),
            retry: false,
        }
    }
}

impl From<StorageError> for JobError {
    fn from(e: StorageError) -> JobError {
        match e {
            StorageError::LeaseLost => JobError::LeaseLost,
            // The Display of a storage error never includes its source (where
            // a database message could quote values).
            other => JobError::Failed {
                message: other.to_string(),
                retry: true,
            },
        }
    }
}

/// What a running job reports after each unit of work (for a foreground
/// run's progress line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress {
    /// Units done by this run (not counting earlier runs of the job).
    pub run_units: u64,
    /// All units, when the kind knows.
    pub total_units: Option<u64>,
}

/// Receives [`JobProgress`] reports.
pub type ProgressFn = Arc<dyn Fn(JobProgress) + Send + Sync>;

/// Everything a handler needs to run one claimed job.
pub struct JobContext {
    /// The job as claimed: params, the committed cursor and counters.
    pub job: Job,
    pub lease: Lease,
    /// `System` principal, named after the kind.
    pub ctx: RequestContext,
    pub backend: Arc<dyn Backend>,
    stop: tokio::sync::watch::Receiver<bool>,
    lost: Arc<AtomicBool>,
    progress: Option<ProgressFn>,
}

impl JobContext {
    /// `Some` when the handler must stop at this checkpoint: shutdown was
    /// requested, or the lease was lost.
    pub fn should_stop(&self) -> Option<JobError> {
        if self.lost.load(Ordering::SeqCst) {
            Some(JobError::LeaseLost)
        } else if *self.stop.borrow() {
            Some(JobError::Stopped)
        } else {
            None
        }
    }

    /// Reports progress (shown by a foreground run; a no-op otherwise).
    pub fn report(&self, progress: JobProgress) {
        if let Some(f) = &self.progress {
            f(progress);
        }
    }

    /// The job's params, parsed; unreadable params fail the job for good.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_str(&self.job.params)
            .map_err(|_| JobError::permanent("the job's parameters are not readable"))
    }

    /// The backend's job queue (present: a job could not be claimed otherwise).
    pub fn jobs(&self) -> Result<&dyn Jobs, JobError> {
        self.backend
            .jobs()
            .ok_or_else(|| JobError::permanent("this storage backend has no job queue"))
    }
}

/// A kind of job: its name (the `kind` column) and its handler. A handler
/// works in units, each committing the job's cursor (in the unit's own
/// transaction where it can), and checks [`JobContext::should_stop`] between
/// them; it resumes from `job.cursor` when a job is taken over.
#[async_trait]
pub trait JobKind: Send + Sync {
    fn name(&self) -> &'static str;
    /// Claims before a job of this kind is given up (crashes included).
    fn max_attempts(&self) -> u32 {
        5
    }
    /// The wait before attempt `attempts + 1` after a failed one (default:
    /// 1 s doubling, at most 5 minutes).
    fn retry_delay(&self, attempts: u32) -> std::time::Duration {
        runner::backoff(attempts)
    }
    async fn run(&self, job: &JobContext) -> Result<(), JobError>;
}

/// Kind name → handler. The runner claims only the kinds registered here.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn JobKind>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds (or replaces) the handler of `kind.name()`.
    pub fn register(&mut self, kind: Arc<dyn JobKind>) -> &mut Registry {
        self.kinds.insert(kind.name(), kind);
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn JobKind>> {
        self.kinds.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.kinds.keys().map(|k| (*k).to_owned()).collect()
    }
}

/// The kinds this server runs. New kinds are registered here.
pub fn registry(settings: &Settings) -> Registry {
    let mut r = Registry::new();
    r.register(Arc::new(reindex::ReindexKind::new(
        settings.server.offline_base(),
    )));
    r
}
