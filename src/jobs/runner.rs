//! The job runner: claims due jobs of the registered kinds, runs each in its
//! own task under a lease it renews, and records how each attempt ended.
//! [`Worker`] is the supervised loop `Application` starts (bounded by
//! `jobs.workers`); [`Runner::run_id`] runs one given job in the foreground
//! (`fhirbridge reindex`) through the same [`Runner::execute`].
//!
//! A handler that panics fails its attempt (retried with backoff) and the
//! worker lives on; if the worker loop itself panics the supervisor starts it
//! again. On shutdown running handlers stop at their next checkpoint and
//! give their jobs back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{JobContext, JobError, ProgressFn, Registry};
use crate::policy::Policy;
use crate::storage::{Backend, Job, JobState, Jobs, Lease, RequestContext, StorageResult};

/// How one attempt at a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Failed; queued again for a later attempt.
    Retry(String),
    /// Failed for good.
    Failed(String),
    /// Stopped (shutdown) and given back.
    Stopped,
    /// The lease passed to another owner; that owner goes on.
    LeaseLost,
}

/// Claims and executes jobs for one owner (this process's [`super::instance_id`]).
pub struct Runner {
    backend: Arc<dyn Backend>,
    registry: Registry,
    policy: Arc<dyn Policy>,
    owner: String,
    lease: Duration,
    poll: Duration,
}

/// The wait before attempt `attempts + 1`: 1 s doubling, at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

impl Runner {
    pub fn new(
        backend: Arc<dyn Backend>,
        registry: Registry,
        policy: Arc<dyn Policy>,
        owner: &str,
        lease: Duration,
        poll: Duration,
    ) -> Runner {
        Runner {
            backend,
            registry,
            policy,
            owner: owner.to_owned(),
            lease: lease.max(Duration::from_millis(100)),
            poll: poll.max(Duration::from_millis(10)),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn queue(&self) -> Option<&dyn Jobs> {
        self.backend.jobs()
    }

    fn system_ctx(&self, name: &str) -> RequestContext {
        RequestContext::system(name, self.policy.clone())
    }

    /// Claims the next due job of a registered kind.
    pub async fn claim(&self) -> StorageResult<Option<Job>> {
        let Some(jobs) = self.queue() else {
            return Ok(None);
        };
        let ctx = self.system_ctx("jobs");
        jobs.claim(&ctx, &self.owner, &self.registry.names(), self.lease)
            .await
    }

    /// Claims job `id` and executes it; `None` when it cannot be claimed now
    /// (another owner's lease has not run out, or it is finished). Returns the
    /// job as claimed (its cursor says where this run resumed).
    pub async fn run_id(
        &self,
        id: &str,
        stop: watch::Receiver<bool>,
        progress: Option<ProgressFn>,
    ) -> StorageResult<Option<(Job, Outcome)>> {
        let Some(jobs) = self.queue() else {
            return Ok(None);
        };
        let ctx = self.system_ctx("jobs");
        let Some(job) = jobs.claim_id(&ctx, id, &self.owner, self.lease).await? else {
            return Ok(None);
        };
        let outcome = self.execute(job.clone(), stop, progress).await;
        Ok(Some((job, outcome)))
    }

    /// Runs a job this runner has claimed to the end of the attempt: renews
    /// the lease meanwhile, catches a panic, and records the outcome.
    pub async fn execute(
        &self,
        job: Job,
        stop: watch::Receiver<bool>,
        progress: Option<ProgressFn>,
    ) -> Outcome {
        let lease = Lease {
            job_id: job.id.clone(),
            owner: self.owner.clone(),
        };
        let kind_name = job.kind.clone();
        let ctx = self.system_ctx(&kind_name);
        let Some(jobs) = self.queue() else {
            return Outcome::LeaseLost;
        };
        let Some(kind) = self.registry.get(&kind_name) else {
            // Claimed only by name from the registry, so not expected.
            return self
                .record(
                    jobs,
                    &ctx,
                    &lease,
                    &job,
                    Err(JobError::permanent("unknown job kind")),
                )
                .await;
        };
        tracing::info!(
            job = %job.id,
            kind = %kind_name,
            attempt = job.attempts,
            resumed = job.cursor.is_some(),
            "job started"
        );
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn(renew(
            self.backend.clone(),
            ctx.clone(),
            lease.clone(),
            self.lease,
            lost.clone(),
        ));
        let jc = Arc::new(JobContext {
            job: job.clone(),
            lease: lease.clone(),
            ctx: ctx.clone(),
            backend: self.backend.clone(),
            stop,
            lost,
            progress,
        });
        let handler = {
            let jc = jc.clone();
            tokio::spawn(async move { kind.run(&jc).await })
        };
        let result = match handler.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(JobError::Failed {
                message: "the job panicked".into(),
                retry: true,
            }),
            Err(_) => Err(JobError::Stopped),
        };
        renewal.abort();
        self.record(jobs, &ctx, &lease, &job, result).await
    }

    async fn record(
        &self,
        jobs: &dyn Jobs,
        ctx: &RequestContext,
        lease: &Lease,
        job: &Job,
        result: Result<(), JobError>,
    ) -> Outcome {
        let recorded = match result {
            Ok(()) => jobs.complete(ctx, lease).await.map(|ok| {
                if ok {
                    Outcome::Done
                } else {
                    Outcome::LeaseLost
                }
            }),
            Err(JobError::Stopped) => jobs.release(ctx, lease).await.map(|ok| {
                if ok {
                    Outcome::Stopped
                } else {
                    Outcome::LeaseLost
                }
            }),
            Err(JobError::LeaseLost) => Ok(Outcome::LeaseLost),
            Err(JobError::Failed { message, retry }) => {
                let wait = retry.then(|| {
                    self.registry
                        .get(&job.kind)
                        .map(|k| k.retry_delay(job.attempts))
                        .unwrap_or_else(|| backoff(job.attempts))
                });
                jobs.fail(ctx, lease, &message, wait)
                    .await
                    .map(|state| match state {
                        Some(JobState::Queued) => Outcome::Retry(message),
                        Some(_) => Outcome::Failed(message),
                        None => Outcome::LeaseLost,
                    })
            }
        };
        let outcome = match recorded {
            Ok(o) => o,
            Err(e) => {
                // The lease runs out and the job is claimed again.
                tracing::warn!(job = %job.id, kind = %job.kind, error = %e, "job outcome not recorded");
                Outcome::LeaseLost
            }
        };
        match &outcome {
            Outcome::Done => tracing::info!(job = %job.id, kind = %job.kind, "job done"),
            Outcome::Stopped => {
                tracing::info!(job = %job.id, kind = %job.kind, "job stopped; it resumes later")
            }
            Outcome::LeaseLost => {
                tracing::warn!(job = %job.id, kind = %job.kind, "job lease lost; another instance has it")
            }
            Outcome::Retry(m) => {
                tracing::warn!(job = %job.id, kind = %job.kind, error = %m, "job attempt failed; retrying later")
            }
            Outcome::Failed(m) => {
                tracing::error!(job = %job.id, kind = %job.kind, error = %m, "job failed")
            }
        }
        outcome
    }
}

/// Renews `lease` every third of its length until aborted; sets `lost` when
/// it was lost (or could not be renewed before it ran out).
async fn renew(
    backend: Arc<dyn Backend>,
    ctx: RequestContext,
    lease: Lease,
    length: Duration,
    lost: Arc<AtomicBool>,
) {
    let Some(jobs) = backend.jobs() else {
        return;
    };
    let every = length / 3;
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match jobs.renew(&ctx, &lease, length).await {
            Ok(true) => renewed = std::time::Instant::now(),
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(job = %lease.job_id, error = %e, "job lease not renewed");
                if renewed.elapsed() >= length {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

/// The supervised worker: at most `slots` jobs at once. Dropping it does not
/// stop it; [`Worker::shutdown`] does.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts the worker on the current runtime.
    pub fn spawn(runner: Arc<Runner>, slots: usize) -> Worker {
        let (stop, rx) = watch::channel(false);
        let slots = slots.max(1);
        tracing::info!(owner = %runner.owner(), slots, "job worker started");
        let task = tokio::spawn(async move {
            loop {
                let run = tokio::spawn(work(runner.clone(), slots, rx.clone())).await;
                match run {
                    Err(e) if e.is_panic() && !*rx.borrow() => {
                        tracing::error!("job worker panicked; restarting it");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    _ => break,
                }
            }
        });
        Worker { stop, task }
    }

    /// Asks running jobs to stop at their next checkpoint and waits for them
    /// (at most `within`; a job still running then keeps its lease until it
    /// runs out, and another instance takes it over).
    pub async fn shutdown(self, within: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(within, self.task).await.is_err() {
            tracing::warn!("job worker did not stop in time");
        }
    }
}

/// The worker loop: claim while there is a free slot, else wait for a poll
/// tick, a finished job or the stop signal.
async fn work(runner: Arc<Runner>, slots: usize, mut stop: watch::Receiver<bool>) {
    let mut running: JoinSet<()> = JoinSet::new();
    while !*stop.borrow() {
        if running.len() < slots {
            match runner.claim().await {
                Ok(Some(job)) => {
                    let runner = runner.clone();
                    let stop = stop.clone();
                    running.spawn(async move {
                        runner.execute(job, stop, None).await;
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "job queue not readable");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(runner.poll) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("a job task panicked outside its handler");
                    }
                }
            }
        }
    }
    while running.join_next().await.is_some() {}
}
