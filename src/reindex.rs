//! `fhirbridge reindex`: rebuilds the search index of stored resources from
//! their content, with the current SearchParameter definitions. Needed after an
//! upgrade that changes what is indexed; safe while the server runs (each batch
//! is one write transaction). The run is a `reindex` job ([`crate::jobs`]):
//! by default this process enqueues it and runs it in the foreground, with
//! progress; `--background` only enqueues it for a running server's job
//! worker. Resumable: the cursor is committed with each batch, so a run that
//! is interrupted continues where it stopped (a server's worker takes over a
//! foreground run whose process died, once its lease runs out).

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::jobs::reindex::{self as kind, ReindexKind};
use crate::jobs::{JobProgress, Outcome, Registry, Runner};
use crate::model::ResourceType;
use crate::storage::{Job, RequestContext};

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub resources: u64,
    pub seconds: f64,
    /// Where an earlier, interrupted run had stopped (this run went on from there).
    pub resumed_after: Option<String>,
    /// Stopped by Ctrl-C (the job resumes from its cursor next time).
    pub stopped: bool,
    /// Another process was running the job; this one waited for it instead.
    pub ran_elsewhere: bool,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        self.resources as f64 / self.seconds.max(1e-9)
    }
}

/// The cursor's name: one per set of types, so runs over different sets do
/// not resume each other (the reindex job's dedupe key).
pub fn job_name(types: &[ResourceType]) -> String {
    kind::dedupe_key(types)
}

fn system_ctx() -> RequestContext {
    RequestContext::system("reindex", Arc::new(crate::policy::AllowAll))
}

/// Enqueues a reindex of `types` for a server's job worker (or returns the
/// live one over the same types). `restart` forgets its progress. Returns the
/// job and whether it is new.
pub async fn enqueue(
    settings: &Settings,
    types: &[ResourceType],
    batch: usize,
    restart: bool,
) -> anyhow::Result<(Job, bool)> {
    let backend = crate::open_backend(settings)?;
    let jobs = backend
        .jobs()
        .ok_or_else(|| anyhow::anyhow!("this storage backend has no job queue"))?;
    let ctx = system_ctx();
    let (job, created) = jobs
        .enqueue(&ctx, kind::new_job(types, Some(batch), None, None))
        .await?;
    if restart && !created && !jobs.reset(&ctx, &job.id).await? {
        anyhow::bail!("the reindex is running in another process now; --restart cannot apply");
    }
    Ok((job, created))
}

/// Reindexes the current resources of `types` (all when empty), `batch` per
/// transaction, as a job run in this process. `restart` ignores an earlier
/// run's cursor.
pub async fn reindex(
    settings: &Settings,
    types: &[ResourceType],
    batch: usize,
    restart: bool,
    progress: bool,
) -> anyhow::Result<Summary> {
    let backend = crate::open_backend(settings)?;
    if backend.reindex().is_none() {
        anyhow::bail!("this storage backend cannot reindex");
    }
    let jobs = backend
        .jobs()
        .ok_or_else(|| anyhow::anyhow!("this storage backend has no job queue"))?;
    let ctx = system_ctx();
    let lease = settings.jobs.lease();
    // Not due for polling workers until this run's lease would have run out:
    // this process claims it first.
    let hold = crate::model::Instant::now()
        .0
        .saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let (job, _) = jobs
        .enqueue(&ctx, kind::new_job(types, Some(batch), None, Some(hold)))
        .await?;
    if restart && !jobs.reset(&ctx, &job.id).await? {
        anyhow::bail!("the reindex is running in another process now; --restart cannot apply");
    }
    let mut registry = Registry::new();
    registry.register(Arc::new(
        ReindexKind::new(settings.server.offline_base()).with_batch(batch),
    ));
    let runner = Runner::new(
        backend.clone(),
        registry,
        Arc::new(crate::policy::AllowAll),
        crate::jobs::instance_id(),
        lease,
        settings.jobs.poll(),
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    actix_web::rt::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });

    let started = Instant::now();
    let done = Arc::new(Mutex::new(0u64));
    let report = progress_line(progress, started, done.clone());
    let mut summary = Summary::default();
    let outcome = match runner.run_id(&job.id, stop.clone(), Some(report)).await? {
        Some((claimed, outcome)) => {
            summary.resumed_after = claimed.cursor.clone();
            outcome
        }
        None => {
            summary.ran_elsewhere = true;
            follow(jobs, &ctx, &job.id, stop).await?
        }
    };
    if progress && std::io::stderr().is_terminal() && !summary.ran_elsewhere {
        eprintln!();
    }
    summary.resources = *done.lock().unwrap_or_else(|p| p.into_inner());
    summary.seconds = started.elapsed().as_secs_f64();
    match outcome {
        Outcome::Done => Ok(summary),
        Outcome::Stopped => {
            summary.stopped = true;
            Ok(summary)
        }
        Outcome::LeaseLost => {
            anyhow::bail!("another process took this reindex over (it goes on there)")
        }
        Outcome::Retry(m) => anyhow::bail!(
            "reindex failed: {m}; it is queued again (a server's job worker or the next run resumes it)"
        ),
        Outcome::Failed(m) => anyhow::bail!("reindex failed: {m}"),
    }
}

/// Waits for a job another process holds (`Done` when it finished there).
async fn follow(
    jobs: &dyn crate::storage::Jobs,
    ctx: &RequestContext,
    id: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Outcome> {
    eprintln!("fhirbridge reindex: another process is running this reindex; waiting for it");
    loop {
        let Some(job) = jobs.get(ctx, id).await? else {
            anyhow::bail!("the reindex job disappeared");
        };
        match job.state {
            crate::storage::JobState::Done => return Ok(Outcome::Done),
            crate::storage::JobState::Failed => {
                return Ok(Outcome::Failed(job.error.unwrap_or_default()))
            }
            _ if *stop.borrow() => return Ok(Outcome::Stopped),
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The progress reporter: a redrawn line on a terminal; elsewhere a plain
/// line every few seconds. Counts this run's resources into `done`.
fn progress_line(
    progress: bool,
    started: Instant,
    done: Arc<Mutex<u64>>,
) -> crate::jobs::ProgressFn {
    let tty = std::io::stderr().is_terminal();
    let last_line = Mutex::new(Instant::now());
    Arc::new(move |p: JobProgress| {
        *done.lock().unwrap_or_else(|e| e.into_inner()) = p.run_units;
        if !progress {
            return;
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = p.run_units as f64 / secs.max(1e-9);
        let total = p.total_units.unwrap_or(0);
        if tty {
            eprint!(
                "\r{} of {} resources reindexed, {rate:.0} resources/s   ",
                p.run_units, total
            );
            let _ = std::io::stderr().flush();
        } else {
            let mut last = last_line.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!(
                    "reindex: {} of {} resources, {rate:.0} resources/s",
                    p.run_units, total
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_depend_on_the_type_set_only() {
        assert_eq!(job_name(&[]), "reindex");
        assert_eq!(
            job_name(&[ResourceType::Patient, ResourceType::Consent]),
            job_name(&[ResourceType::Consent, ResourceType::Patient])
        );
        assert_eq!(job_name(&[ResourceType::Patient]), "reindex:Patient");
    }
}
