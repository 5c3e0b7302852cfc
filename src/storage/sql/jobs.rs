//! `Jobs` for the SQL backend: the `jobs` table and its run log `job_runs`
//! (migration 000006). Claims lock the candidate row with
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent claimers on any
//! number of instances pass over each other's rows; on SQLite a claim is a
//! write transaction under the single writer. Every change to a leased job is
//! guarded by `lease_owner = ?`: ownership only moves by a claim, so a
//! statement that matches no row means the lease was lost.

use std::time::Duration;

use async_trait::async_trait;

use super::builder::Bind;
use super::{Conn, Dialect, Sql, SqlBackend};
use crate::model::{Instant, LogicalId};
use crate::storage::jobs::{Job, JobRun, JobState, Jobs, Lease, NewJob, Progress};
use crate::storage::{RequestContext, StorageError, StorageResult};

/// Finished jobs (and their run logs) are kept this long, then swept on enqueue.
const KEEP_FINISHED_MS: i64 = 30 * 24 * 3600 * 1000;

/// Candidates looked at per claim (jobs out of attempts are failed on the way).
const CLAIM_CANDIDATES: usize = 8;

const COLUMNS: &str = "id, kind, dedupe_key, params, state, attempts, max_attempts, lease_owner, \
     lease_until, cursor, done_units, total_units, error, created_at, updated_at, run_after";

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    kind: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    dedupe_key: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    params: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    lease_owner: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    lease_until: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    cursor: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    done_units: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    total_units: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    error: Option<String>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    created_at: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    updated_at: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    run_after: i64,
}

impl Row {
    fn into_job(self) -> StorageResult<Job> {
        let state = JobState::parse(&self.state)
            .ok_or_else(|| StorageError::Internal(anyhow::anyhow!("unknown job state")))?;
        Ok(Job {
            id: self.id,
            kind: self.kind,
            dedupe_key: self.dedupe_key,
            params: self.params,
            state,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(0),
            lease_owner: self.lease_owner,
            lease_until: self.lease_until,
            cursor: self.cursor,
            done_units: self.done_units,
            total_units: self.total_units,
            error: self.error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            run_after: self.run_after,
        })
    }
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_attempts: i32,
}

#[derive(diesel::QueryableByName)]
struct RunRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    owner: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    claimed_at: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    ended_at: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    outcome: String,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// ` AND <the job may be claimed at now>`: queued and due, or running with a
/// lease that ran out. `due` false: a queued job regardless of `run_after`.
fn claimable(sql: &mut Sql, now: i64, due: bool) {
    sql.push(" AND ((state = 'queued'");
    if due {
        sql.push(" AND run_after <= ").int(now);
    }
    sql.push(") OR (state = 'running' AND lease_until < ")
        .int(now)
        .push("))");
}

/// Inserts `job` as `id` on `conn` (inside the caller's transaction):
/// `false` when a live job has the same dedupe key.
pub(super) fn insert_job(conn: &mut Conn, id: &str, job: &NewJob, now: i64) -> StorageResult<bool> {
    // ON CONFLICT DO NOTHING: the partial unique index on live
    // dedupe keys turns a second live job into no row.
    let mut sql = Sql::new();
    sql.push(
        "INSERT INTO jobs (id, kind, dedupe_key, params, state, attempts, max_attempts, \
         done_units, created_at, updated_at, run_after) VALUES (",
    )
    .text(id)
    .push(", ")
    .text(&job.kind)
    .push(", ")
    .bind(Bind::OptText(job.dedupe_key.clone()))
    .push(", ")
    .text(&job.params)
    .push(", 'queued', 0, ")
    .int(i64::from(job.max_attempts.max(1)))
    .push(", 0, ")
    .int(now)
    .push(", ")
    .int(now)
    .push(", ")
    .int(job.run_after.unwrap_or(now))
    .push(") ON CONFLICT DO NOTHING");
    Ok(conn.exec(&sql)? == 1)
}

fn load_job(conn: &mut Conn, id: &str) -> StorageResult<Option<Job>> {
    let mut sql = Sql::new();
    sql.push("SELECT ")
        .push(COLUMNS)
        .push(" FROM jobs WHERE id = ")
        .text(id);
    conn.load::<Row>(&sql)?
        .into_iter()
        .next()
        .map(Row::into_job)
        .transpose()
}

/// Closes the open run log rows of `job_id` with `outcome`.
fn end_runs(
    conn: &mut Conn,
    job_id: &str,
    owner: Option<&str>,
    outcome: &str,
    now: i64,
) -> StorageResult<()> {
    let mut sql = Sql::new();
    sql.push("UPDATE job_runs SET ended_at = ")
        .int(now)
        .push(", outcome = ")
        .text(outcome)
        .push(" WHERE job_id = ")
        .text(job_id)
        .push(" AND ended_at IS NULL");
    if let Some(owner) = owner {
        sql.push(" AND owner = ").text(owner);
    }
    conn.exec(&sql)?;
    Ok(())
}

/// Claims the first claimable of `candidates` (locked by the caller where
/// the dialect needs it) inside the caller's write transaction.
fn claim_in_tx(
    conn: &mut Conn,
    candidates: Vec<Id>,
    owner: &str,
    lease: Duration,
    due: bool,
) -> StorageResult<Option<Job>> {
    let now = Instant::now().0;
    for c in candidates {
        if c.attempts >= c.max_attempts {
            // Its last attempt's lease ran out (a crash): give up on it.
            let mut sql = Sql::new();
            sql.push(
                "UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_until = NULL, \
                 error = 'the lease of the last attempt ran out', updated_at = ",
            )
            .int(now)
            .push(" WHERE id = ")
            .text(&c.id);
            claimable(&mut sql, now, due);
            if conn.exec(&sql)? == 1 {
                end_runs(conn, &c.id, None, "expired", now)?;
            }
            continue;
        }
        let mut sql = Sql::new();
        sql.push("UPDATE jobs SET state = 'running', lease_owner = ")
            .text(owner)
            .push(", lease_until = ")
            .int(now.saturating_add(ms(lease)))
            .push(", attempts = attempts + 1, updated_at = ")
            .int(now)
            .push(" WHERE id = ")
            .text(&c.id);
        claimable(&mut sql, now, due);
        if conn.exec(&sql)? != 1 {
            continue;
        }
        end_runs(conn, &c.id, None, "expired", now)?;
        let mut sql = Sql::new();
        sql.push("INSERT INTO job_runs (job_id, owner, claimed_at, outcome) VALUES (")
            .text(&c.id)
            .push(", ")
            .text(owner)
            .push(", ")
            .int(now)
            .push(", 'running')");
        conn.exec(&sql)?;
        return load_job(conn, &c.id);
    }
    Ok(None)
}

/// Commits `progress` for the job `lease` names, inside the caller's
/// transaction (so a unit of work and its cursor commit together); a `None`
/// total keeps the stored one. `false`: the lease was lost, and the caller
/// must roll back.
pub(super) fn checkpoint_tx(
    conn: &mut Conn,
    lease: &Lease,
    progress: &Progress,
) -> StorageResult<bool> {
    let mut sql = Sql::prepared();
    sql.push("UPDATE jobs SET cursor = ")
        .bind(Bind::OptText(progress.cursor.clone()))
        .push(", done_units = ")
        .int(progress.done_units)
        .push(", total_units = COALESCE(")
        .bind(Bind::OptInt(progress.total_units))
        .push(", total_units)")
        .push(", updated_at = ")
        .int(Instant::now().0)
        .push(" WHERE id = ")
        .text(&lease.job_id)
        .push(" AND state = 'running' AND lease_owner = ")
        .text(&lease.owner);
    Ok(conn.exec(&sql)? == 1)
}

/// Ends a leased job with the assignments begun in `set`, and closes its run row.
fn finish(
    conn: &mut Conn,
    lease: &Lease,
    set: &mut Sql,
    outcome: &str,
    now: i64,
) -> StorageResult<bool> {
    set.push(", lease_owner = NULL, lease_until = NULL, updated_at = ")
        .int(now)
        .push(" WHERE id = ")
        .text(&lease.job_id)
        .push(" AND state = 'running' AND lease_owner = ")
        .text(&lease.owner);
    if conn.exec(set)? != 1 {
        return Ok(false);
    }
    end_runs(conn, &lease.job_id, Some(&lease.owner), outcome, now)?;
    Ok(true)
}

/// An error message bounded to what the column should hold.
fn bounded(error: &str) -> String {
    error.chars().take(500).collect()
}

#[async_trait]
impl Jobs for SqlBackend {
    async fn enqueue(&self, _ctx: &RequestContext, job: NewJob) -> StorageResult<(Job, bool)> {
        let id = LogicalId::generate().to_string();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let now = Instant::now().0;
                let mut sweep = Sql::prepared();
                sweep
                    .push("DELETE FROM job_runs WHERE job_id IN (SELECT id FROM jobs WHERE state IN ('done', 'failed') AND updated_at < ")
                    .int(now - KEEP_FINISHED_MS)
                    .push(")");
                conn.exec(&sweep)?;
                let mut sweep = Sql::prepared();
                sweep
                    .push("DELETE FROM jobs WHERE state IN ('done', 'failed') AND updated_at < ")
                    .int(now - KEEP_FINISHED_MS);
                conn.exec(&sweep)?;
                let created = insert_job(conn, &id, &job, now)?;
                if created {
                    return load_job(conn, &id)?.map(|j| (j, true)).ok_or_else(|| {
                        StorageError::Internal(anyhow::anyhow!("enqueued job not found"))
                    });
                }
                let mut sql = Sql::new();
                sql.push("SELECT ")
                    .push(COLUMNS)
                    .push(" FROM jobs WHERE dedupe_key = ")
                    .bind(Bind::OptText(job.dedupe_key.clone()))
                    .push(" AND state IN ('queued', 'running')");
                match conn.load::<Row>(&sql)?.into_iter().next() {
                    Some(r) => Ok((r.into_job()?, false)),
                    // The live job finished between the insert and the read.
                    None => Err(StorageError::Busy),
                }
            })
        })
        .await
    }

    async fn claim(
        &self,
        _ctx: &RequestContext,
        owner: &str,
        kinds: &[String],
        lease: Duration,
    ) -> StorageResult<Option<Job>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let owner = owner.to_owned();
        let kinds = kinds.to_vec();
        self.blocking(move |mut conn| {
            let select = |now: i64, lock: bool| {
                let mut sql = Sql::new();
                sql.push("SELECT id, attempts, max_attempts FROM jobs WHERE kind IN (")
                    .text_list(&kinds)
                    .push(")");
                claimable(&mut sql, now, true);
                sql.push(" ORDER BY run_after, created_at LIMIT ")
                    .int(CLAIM_CANDIDATES as i64);
                if lock {
                    sql.push(" FOR UPDATE SKIP LOCKED");
                }
                sql
            };
            // A read first: polling an idle queue takes no write lock.
            if conn
                .load::<Id>(&select(Instant::now().0, false))?
                .is_empty()
            {
                return Ok(None);
            }
            conn.write_tx(|conn| {
                let lock = conn.dialect() == Dialect::Postgres;
                let candidates = conn.load::<Id>(&select(Instant::now().0, lock))?;
                claim_in_tx(conn, candidates, &owner, lease, true)
            })
        })
        .await
    }

    async fn claim_id(
        &self,
        _ctx: &RequestContext,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> StorageResult<Option<Job>> {
        let id = id.to_owned();
        let owner = owner.to_owned();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let mut sql = Sql::new();
                sql.push("SELECT id, attempts, max_attempts FROM jobs WHERE id = ")
                    .text(&id);
                claimable(&mut sql, Instant::now().0, false);
                if conn.dialect() == Dialect::Postgres {
                    sql.push(" FOR UPDATE SKIP LOCKED");
                }
                let candidates = conn.load::<Id>(&sql)?;
                claim_in_tx(conn, candidates, &owner, lease, false)
            })
        })
        .await
    }

    async fn renew(
        &self,
        _ctx: &RequestContext,
        lease: &Lease,
        by: Duration,
    ) -> StorageResult<bool> {
        let lease = lease.clone();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let now = Instant::now().0;
                let mut sql = Sql::prepared();
                sql.push("UPDATE jobs SET lease_until = ")
                    .int(now.saturating_add(ms(by)))
                    .push(", updated_at = ")
                    .int(now)
                    .push(" WHERE id = ")
                    .text(&lease.job_id)
                    .push(" AND state = 'running' AND lease_owner = ")
                    .text(&lease.owner);
                Ok(conn.exec(&sql)? == 1)
            })
        })
        .await
    }

    async fn checkpoint(
        &self,
        _ctx: &RequestContext,
        lease: &Lease,
        progress: &Progress,
    ) -> StorageResult<bool> {
        let lease = lease.clone();
        let progress = progress.clone();
        self.blocking(move |mut conn| conn.write_tx(|conn| checkpoint_tx(conn, &lease, &progress)))
            .await
    }

    async fn complete(&self, _ctx: &RequestContext, lease: &Lease) -> StorageResult<bool> {
        let lease = lease.clone();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let mut set = Sql::new();
                set.push("UPDATE jobs SET state = 'done', error = NULL");
                finish(conn, &lease, &mut set, "done", Instant::now().0)
            })
        })
        .await
    }

    async fn fail(
        &self,
        _ctx: &RequestContext,
        lease: &Lease,
        error: &str,
        retry_in: Option<Duration>,
    ) -> StorageResult<Option<JobState>> {
        let lease = lease.clone();
        let error = bounded(error);
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let now = Instant::now().0;
                let Some(job) = load_job(conn, &lease.job_id)? else {
                    return Ok(None);
                };
                let retry = retry_in.filter(|_| job.attempts < job.max_attempts);
                let mut set = Sql::new();
                let (state, outcome) = match retry {
                    Some(wait) => {
                        set.push("UPDATE jobs SET state = 'queued', run_after = ")
                            .int(now.saturating_add(ms(wait)));
                        (JobState::Queued, "retry")
                    }
                    None => {
                        set.push("UPDATE jobs SET state = 'failed'");
                        (JobState::Failed, "failed")
                    }
                };
                set.push(", error = ").text(&error);
                Ok(finish(conn, &lease, &mut set, outcome, now)?.then_some(state))
            })
        })
        .await
    }

    async fn release(&self, _ctx: &RequestContext, lease: &Lease) -> StorageResult<bool> {
        let lease = lease.clone();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let now = Instant::now().0;
                let mut set = Sql::new();
                set.push(
                    "UPDATE jobs SET state = 'queued', attempts = CASE WHEN attempts > 0 \
                     THEN attempts - 1 ELSE 0 END, run_after = ",
                )
                .int(now);
                finish(conn, &lease, &mut set, "released", now)
            })
        })
        .await
    }

    async fn reset(&self, _ctx: &RequestContext, id: &str) -> StorageResult<bool> {
        let id = id.to_owned();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let now = Instant::now().0;
                let mut sql = Sql::new();
                sql.push(
                    "UPDATE jobs SET cursor = NULL, done_units = 0, total_units = NULL, updated_at = ",
                )
                .int(now)
                .push(" WHERE id = ")
                .text(&id);
                claimable(&mut sql, now, false);
                Ok(conn.exec(&sql)? == 1)
            })
        })
        .await
    }

    async fn requeue(&self, _ctx: &RequestContext, id: &str) -> StorageResult<bool> {
        let id = id.to_owned();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let now = Instant::now().0;
                let mut sql = Sql::new();
                sql.push(
                    "UPDATE jobs SET state = 'queued', attempts = 0, error = NULL, run_after = ",
                )
                .int(now)
                .push(", updated_at = ")
                .int(now)
                .push(" WHERE id = ")
                .text(&id)
                .push(" AND state IN ('failed', 'queued')");
                Ok(conn.exec(&sql)? == 1)
            })
        })
        .await
    }

    async fn discard(&self, _ctx: &RequestContext, id: &str) -> StorageResult<bool> {
        let id = id.to_owned();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let now = Instant::now().0;
                let mut sql = Sql::new();
                sql.push("DELETE FROM jobs WHERE id = ")
                    .text(&id)
                    .push(" AND (state IN ('failed', 'queued', 'done') OR lease_until < ")
                    .int(now)
                    .push(")");
                let gone = conn.exec(&sql)? == 1;
                if gone {
                    let mut runs = Sql::new();
                    runs.push("DELETE FROM job_runs WHERE job_id = ").text(&id);
                    conn.exec(&runs)?;
                }
                Ok(gone)
            })
        })
        .await
    }

    async fn get(&self, _ctx: &RequestContext, id: &str) -> StorageResult<Option<Job>> {
        let id = id.to_owned();
        self.blocking(move |mut conn| load_job(&mut conn, &id))
            .await
    }

    async fn list(
        &self,
        _ctx: &RequestContext,
        kind: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<Job>> {
        let kind = kind.map(str::to_owned);
        self.blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT ").push(COLUMNS).push(" FROM jobs");
            if let Some(kind) = &kind {
                sql.push(" WHERE kind = ").text(kind);
            }
            sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
                .int(limit.max(1) as i64);
            conn.load::<Row>(&sql)?
                .into_iter()
                .map(Row::into_job)
                .collect()
        })
        .await
    }

    async fn runs(&self, _ctx: &RequestContext, id: &str) -> StorageResult<Vec<JobRun>> {
        let id = id.to_owned();
        self.blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT owner, claimed_at, ended_at, outcome FROM job_runs WHERE job_id = ")
                .text(&id)
                .push(" ORDER BY claimed_at, owner");
            Ok(conn
                .load::<RunRow>(&sql)?
                .into_iter()
                .map(|r| JobRun {
                    owner: r.owner,
                    claimed_at: r.claimed_at,
                    ended_at: r.ended_at,
                    outcome: r.outcome,
                })
                .collect())
        })
        .await
    }
}
