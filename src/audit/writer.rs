//! The group-commit audit writer. Requests submit their events and wait;
//! one writer task takes whatever is queued (up to `audit.max_batch`
//! events), appends it in one storage transaction and then answers every
//! submitter, so concurrent requests share commits instead of queueing on
//! the database writer. A submitter hears `Ok` only after its events are
//! committed (an acknowledged access survives `kill -9`); an error means
//! the request must fail (fail closed).
//!
//! The writer runs on its own thread (with its own small runtime), so it
//! serves every actix worker alike; it ends when the last handle is dropped,
//! after committing everything queued. [`AuditWriter::flush`] waits for
//! everything submitted before it.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant as StdInstant;

use prometheus::{Histogram, IntCounter};
use tokio::sync::{mpsc, oneshot};

use crate::context::RequestContext;
use crate::storage::{AuditRecord, Backend};

/// Why events could not be recorded (safe to show: no detail).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the access could not be audited")]
pub struct AuditFailed;

struct Submission {
    events: Vec<AuditRecord>,
    done: oneshot::Sender<Result<(), AuditFailed>>,
}

/// The writer's metrics.
#[derive(Clone)]
pub struct WriterMetrics {
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub events: IntCounter,
}

/// The longest a batch waits for more requests' events.
const MAX_LINGER: Duration = Duration::from_millis(2);

/// A handle to the writer (cheap to clone).
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::UnboundedSender<Submission>,
}

impl AuditWriter {
    /// Starts the writer over `backend`'s audit trail (an error when the
    /// backend has none).
    pub fn start(
        backend: Arc<dyn Backend>,
        policy: Arc<dyn crate::policy::Policy>,
        max_batch: usize,
        metrics: WriterMetrics,
    ) -> anyhow::Result<AuditWriter> {
        if backend.audit().is_none() {
            anyhow::bail!("audit.enabled is true but the storage backend keeps no audit trail");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                rt.block_on(run(backend, policy, rx, max_batch.max(1), metrics));
            })?;
        Ok(AuditWriter { tx })
    }

    /// Records `events` durably; returns once they are committed.
    pub async fn record(&self, events: Vec<AuditRecord>) -> Result<(), AuditFailed> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Submission { events, done })
            .map_err(|_| AuditFailed)?;
        wait.await.map_err(|_| AuditFailed)?
    }

    /// Waits until everything submitted before this call is committed.
    pub async fn flush(&self) -> Result<(), AuditFailed> {
        self.record(Vec::new()).await
    }
}

async fn run(
    backend: Arc<dyn Backend>,
    policy: Arc<dyn crate::policy::Policy>,
    mut rx: mpsc::UnboundedReceiver<Submission>,
    max_batch: usize,
    metrics: WriterMetrics,
) {
    let ctx = RequestContext::system("audit-writer", policy);
    let Some(audit) = backend.audit() else {
        return;
    };
    // Under concurrency, gather for as long as the last commit took (at
    // most MAX_LINGER): a commit costs about the same for 2 events as for
    // 20, so larger batches leave the CPU to the requests. A lone request
    // (the last batch had one submitter) is committed at once.
    let mut linger = Duration::ZERO;
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first.done];
        let mut batch = first.events;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(s) => {
                    batch.extend(s.events);
                    waiting.push(s.done);
                }
                Err(_) => break,
            }
        }
        if !linger.is_zero() && batch.len() < max_batch {
            let until = tokio::time::Instant::now() + linger;
            while batch.len() < max_batch {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(s)) => {
                        batch.extend(s.events);
                        waiting.push(s.done);
                    }
                    _ => break,
                }
            }
        }
        let n = batch.len();
        let started = StdInstant::now();
        let result = if n == 0 {
            Ok(())
        } else {
            audit.append(&ctx, batch).await
        };
        if n > 0 {
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.batch_size.observe(n as f64);
        }
        let ack = match result {
            Ok(()) => {
                metrics.events.inc_by(n as u64);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, events = n, "audit write failed; the requests are refused");
                Err(AuditFailed)
            }
        };
        linger = if waiting.len() > 1 {
            started.elapsed().min(MAX_LINGER)
        } else {
            Duration::ZERO
        };
        for w in waiting {
            let _ = w.send(ack.clone());
        }
    }
}
