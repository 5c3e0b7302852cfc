//! The `reindex` job kind: rebuilds the search index of the current
//! resources of some types (every type when none), in batches; each batch
//! and the job's cursor (`Type/id`, the last resource done) commit in one
//! transaction, so a run taken over after a crash resumes after the last
//! committed batch and no batch is committed by an owner that lost the lease.
//! Parameters: `{"types": ["Patient", …], "batch": 500, "pause_ms": 0}`
//! (`pause_ms` waits between batches, to leave room for live traffic).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{JobContext, JobError, JobKind, JobProgress};
use crate::model::{LogicalId, ResourceType};
use crate::storage::{Extractor, NewJob, Progress, ResourceKey};

/// The kind's name in the `kind` column.
pub const KIND: &str = "reindex";

/// Resources per transaction when the params give none.
pub const DEFAULT_BATCH: usize = 500;

/// The job's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Resource type names; empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<u64>,
}

/// The dedupe key: one live reindex per set of types (order and repeats
/// aside), so runs over different sets do not resume each other.
pub fn dedupe_key(types: &[ResourceType]) -> String {
    if types.is_empty() {
        return KIND.to_owned();
    }
    let mut names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    format!("{KIND}:{}", names.join(","))
}

/// A reindex job of `types` (`run_after`: see [`NewJob::run_after`]).
pub fn new_job(
    types: &[ResourceType],
    batch: Option<usize>,
    pause_ms: Option<u64>,
    run_after: Option<i64>,
) -> NewJob {
    let mut names: Vec<String> = types.iter().map(|t| t.as_str().to_owned()).collect();
    names.sort_unstable();
    names.dedup();
    let params = Params {
        types: names,
        batch,
        pause_ms: pause_ms.filter(|p| *p > 0),
    };
    NewJob {
        kind: KIND.to_owned(),
        dedupe_key: Some(dedupe_key(types)),
        params: serde_json::to_string(&params).unwrap_or_else(|_| "{}".to_owned()),
        max_attempts: ReindexKind::MAX_ATTEMPTS,
        run_after,
    }
}

/// A cursor as stored (`Type/id`); `None` when unreadable.
pub fn parse_cursor(cursor: &str) -> Option<ResourceKey> {
    let (ty, id) = cursor.split_once('/')?;
    Some((ty.parse().ok()?, LogicalId::parse(id)?))
}

/// The handler. `base` resolves relative references while extracting index
/// rows (as the server does for writes).
pub struct ReindexKind {
    base: String,
    batch: Option<usize>,
}

impl ReindexKind {
    pub const MAX_ATTEMPTS: u32 = 5;

    pub fn new(base: String) -> ReindexKind {
        ReindexKind { base, batch: None }
    }

    /// Uses `batch` resources per transaction whatever the params say (a
    /// foreground run's `--batch`).
    pub fn with_batch(mut self, batch: usize) -> ReindexKind {
        self.batch = Some(batch);
        self
    }
}

#[async_trait]
impl JobKind for ReindexKind {
    fn name(&self) -> &'static str {
        KIND
    }

    fn max_attempts(&self) -> u32 {
        ReindexKind::MAX_ATTEMPTS
    }

    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let params: Params = job.params()?;
        let mut types = Vec::with_capacity(params.types.len());
        for t in &params.types {
            types.push(
                t.parse::<ResourceType>()
                    .map_err(|_| JobError::permanent("unknown resource type in the parameters"))?,
            );
        }
        let batch = self.batch.or(params.batch).unwrap_or(DEFAULT_BATCH).max(1);
        let pause = Duration::from_millis(params.pause_ms.unwrap_or(0));
        let store = job
            .backend
            .reindex()
            .ok_or_else(|| JobError::permanent("this storage backend cannot reindex"))?;
        let mut after = match &job.job.cursor {
            Some(c) => Some(
                parse_cursor(c).ok_or_else(|| JobError::permanent("unreadable reindex cursor"))?,
            ),
            None => None,
        };
        let base = self.base.clone();
        let extract: Extractor = Arc::new(move |ty, v| crate::search::index::extract(ty, v, &base));
        let total = store.reindex_total(&job.ctx, &types).await?;
        let mut done = job.job.done_units;
        // Records the total (and checks the lease) before the first batch.
        let progress = Progress {
            cursor: job.job.cursor.clone(),
            done_units: done,
            total_units: i64::try_from(total).ok(),
        };
        if !job
            .jobs()?
            .checkpoint(&job.ctx, &job.lease, &progress)
            .await?
        {
            return Err(JobError::LeaseLost);
        }
        let mut run_units = 0u64;
        loop {
            if let Some(stop) = job.should_stop() {
                return Err(stop);
            }
            let step = store
                .reindex_batch(
                    &job.ctx,
                    &job.lease,
                    &types,
                    after.clone(),
                    batch,
                    done,
                    extract.clone(),
                )
                .await?;
            let Some(last) = step.last else {
                break;
            };
            done = done.saturating_add(step.done as i64);
            run_units += step.done as u64;
            after = Some(last);
            job.report(JobProgress {
                run_units,
                total_units: Some(total),
            });
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keys_depend_on_the_type_set_only() {
        assert_eq!(dedupe_key(&[]), "reindex");
        assert_eq!(
            dedupe_key(&[ResourceType::Patient, ResourceType::Consent]),
            dedupe_key(&[ResourceType::Consent, ResourceType::Patient])
        );
        assert_eq!(dedupe_key(&[ResourceType::Patient]), "reindex:Patient");
    }

    #[test]
    fn cursors_round_trip() {
        let id = LogicalId::parse("abc-1").unwrap();
        let key = (ResourceType::Patient, id.clone());
        assert_eq!(parse_cursor(&format!("Patient/{id}")), Some(key));
        assert_eq!(parse_cursor("Nonsense/x"), None);
        assert_eq!(parse_cursor("Patient"), None);
    }

    #[test]
    fn params_written_by_new_job_read_back() {
        let job = new_job(&[ResourceType::Patient], Some(5), Some(0), None);
        let p: Params = serde_json::from_str(&job.params).unwrap();
        assert_eq!(p.types, vec!["Patient".to_owned()]);
        assert_eq!(p.batch, Some(5));
        assert_eq!(p.pause_ms, None);
        assert_eq!(job.dedupe_key.as_deref(), Some("reindex:Patient"));
    }
}
