//! The job queue and its runner: claim semantics on both backends (concurrent
//! claimers never share a job, leases expire and pass on, retries back off),
//! and on PostgreSQL two real `fhirbridge serve` processes on one schema: a
//! job runs once, and when the process holding it is killed (`kill -9`) the
//! other takes it over after the lease runs out and resumes from its cursor.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fhirbridge::config::Settings;
use fhirbridge::jobs::{JobContext, JobError, JobKind, Registry, Runner, Worker};
use fhirbridge::storage::{Backend, Job, JobState, Lease, NewJob, Progress, RequestContext};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{
    db_sql, free_port, nhs_number, patient, spawn_server, ServerProcess, TestApp,
};

backend_tests!(
    concurrent_claims_never_share_a_job,
    leases_expire_and_pass_to_another_owner,
    failed_attempts_back_off_then_fail,
    released_and_deduplicated_jobs,
    workers_survive_panics_keep_leases_and_stop_gracefully
);

fn ctx() -> RequestContext {
    RequestContext::system("jobs-test", Arc::new(fhirbridge::policy::AllowAll))
}

/// Another "instance" on the test server's database (its own pool and, on
/// SQLite, its own writer gate).
fn instance(app: &TestApp) -> Arc<dyn Backend> {
    let mut settings = Settings::for_testing();
    settings.storage.database_url = app.db_url.clone();
    settings.storage.pool_size = 4;
    fhirbridge::open_backend(&settings).expect("open backend")
}

fn test_job(dedupe: Option<&str>, max_attempts: u32) -> NewJob {
    NewJob {
        kind: "test".into(),
        dedupe_key: dedupe.map(str::to_owned),
        params: "{}".into(),
        max_attempts,
        run_after: None,
    }
}

fn lease(job: &Job, owner: &str) -> Lease {
    Lease {
        job_id: job.id.clone(),
        owner: owner.into(),
    }
}

const KINDS: &[&str] = &["test"];

fn kinds() -> Vec<String> {
    KINDS.iter().map(|k| (*k).to_owned()).collect()
}

async fn concurrent_claims_never_share_a_job(app: TestApp) {
    let instances: Vec<Arc<dyn Backend>> = (0..3).map(|_| instance(&app)).collect();
    let q = instances[0].jobs().expect("job queue");
    let ctx = ctx();
    // One job, twelve claimers on three instances: exactly one wins, five times.
    for trial in 0..5 {
        let (job, created) = q.enqueue(&ctx, test_job(None, 3)).await.unwrap();
        assert!(created);
        let claims = (0..12).map(|i| {
            let b = instances[i % 3].clone();
            async move {
                let ctx =
                    RequestContext::system("jobs-test", Arc::new(fhirbridge::policy::AllowAll));
                b.jobs()
                    .unwrap()
                    .claim(
                        &ctx,
                        &format!("owner-{i}"),
                        &kinds(),
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap()
            }
        });
        let won: Vec<Job> = futures_util::future::join_all(claims)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(won.len(), 1, "trial {trial}: {won:?}");
        assert_eq!(won[0].id, job.id);
        assert_eq!(won[0].state, JobState::Running);
        assert_eq!(won[0].attempts, 1);
        let owner = won[0].lease_owner.clone().unwrap();
        assert!(q.complete(&ctx, &lease(&job, &owner)).await.unwrap());
    }
    // Eight jobs drained by twelve looping claimers: each claimed exactly once.
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(q.enqueue(&ctx, test_job(None, 3)).await.unwrap().0.id);
    }
    let drains = (0..12).map(|i| {
        let b = instances[i % 3].clone();
        async move {
            let ctx = RequestContext::system("jobs-test", Arc::new(fhirbridge::policy::AllowAll));
            let mut got = Vec::new();
            while let Some(job) = b
                .jobs()
                .unwrap()
                .claim(
                    &ctx,
                    &format!("drain-{i}"),
                    &kinds(),
                    Duration::from_secs(60),
                )
                .await
                .unwrap()
            {
                got.push(job.id);
            }
            got
        }
    });
    let mut claimed: Vec<String> = futures_util::future::join_all(drains)
        .await
        .into_iter()
        .flatten()
        .collect();
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids);
    // Kinds nobody registered are never claimed.
    q.enqueue(&ctx, test_job(None, 3)).await.unwrap();
    let other = vec!["other".to_owned()];
    assert!(q
        .claim(&ctx, "o", &other, Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
}

async fn leases_expire_and_pass_to_another_owner(app: TestApp) {
    let (a, b) = (instance(&app), instance(&app));
    let (qa, qb) = (a.jobs().unwrap(), b.jobs().unwrap());
    let ctx = ctx();
    let short = Duration::from_millis(1000);
    let (job, _) = qa.enqueue(&ctx, test_job(None, 5)).await.unwrap();
    let got = qa.claim(&ctx, "A", &kinds(), short).await.unwrap().unwrap();
    assert_eq!(got.id, job.id);
    let la = lease(&job, "A");
    let progress = Progress {
        cursor: Some("first".into()),
        done_units: 1,
        total_units: Some(3),
    };
    assert!(qa.checkpoint(&ctx, &la, &progress).await.unwrap());
    assert!(qa.renew(&ctx, &la, short).await.unwrap());
    // Held: nobody else gets it.
    assert!(qb
        .claim(&ctx, "B", &kinds(), short)
        .await
        .unwrap()
        .is_none());
    assert!(qb
        .claim_id(&ctx, &job.id, "B", short)
        .await
        .unwrap()
        .is_none());
    assert!(!qb.reset(&ctx, &job.id).await.unwrap());
    // A stops renewing: after the lease runs out B takes over, from A's cursor.
    actix_rt::time::sleep(Duration::from_millis(1300)).await;
    let taken = qb
        .claim(&ctx, "B", &kinds(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.id, job.id);
    assert_eq!(taken.lease_owner.as_deref(), Some("B"));
    assert_eq!(taken.cursor.as_deref(), Some("first"));
    assert_eq!(taken.done_units, 1);
    assert_eq!(taken.total_units, Some(3));
    assert_eq!(taken.attempts, 2);
    // A's lease is gone: nothing A does lands.
    assert!(!qa.renew(&ctx, &la, short).await.unwrap());
    assert!(!qa
        .checkpoint(&ctx, &la, &Progress::default())
        .await
        .unwrap());
    assert!(!qa.complete(&ctx, &la).await.unwrap());
    assert_eq!(qa.fail(&ctx, &la, "x", None).await.unwrap(), None);
    assert!(!qa.release(&ctx, &la).await.unwrap());
    let lb = lease(&job, "B");
    let done = Progress {
        cursor: Some("last".into()),
        done_units: 3,
        total_units: None,
    };
    assert!(qb.checkpoint(&ctx, &lb, &done).await.unwrap());
    assert!(qb.complete(&ctx, &lb).await.unwrap());
    let end = qa.get(&ctx, &job.id).await.unwrap().unwrap();
    assert_eq!(end.state, JobState::Done);
    assert_eq!(end.done_units, 3);
    assert_eq!(
        end.total_units,
        Some(3),
        "a None total keeps the stored one"
    );
    assert_eq!(end.lease_owner, None);
    let runs = qa.runs(&ctx, &job.id).await.unwrap();
    let log: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r.owner.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(log, vec![("A", "expired"), ("B", "done")]);
    assert!(runs.iter().all(|r| r.ended_at.is_some()));
    // Finished jobs are not claimed again, by id either.
    assert!(qb
        .claim_id(&ctx, &job.id, "C", short)
        .await
        .unwrap()
        .is_none());

    // A job whose last attempt's lease runs out is failed, not claimed.
    let (last, _) = qa.enqueue(&ctx, test_job(None, 1)).await.unwrap();
    qa.claim(&ctx, "A", &kinds(), Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    actix_rt::time::sleep(Duration::from_millis(250)).await;
    assert!(qb
        .claim(&ctx, "B", &kinds(), short)
        .await
        .unwrap()
        .is_none());
    let last = qb.get(&ctx, &last.id).await.unwrap().unwrap();
    assert_eq!(last.state, JobState::Failed);
    assert!(last.error.unwrap().contains("lease"));
}

async fn failed_attempts_back_off_then_fail(app: TestApp) {
    let q_backend = instance(&app);
    let q = q_backend.jobs().unwrap();
    let ctx = ctx();
    let (job, _) = q.enqueue(&ctx, test_job(None, 2)).await.unwrap();
    q.claim(&ctx, "A", &kinds(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let la = lease(&job, "A");
    let state = q
        .fail(
            &ctx,
            &la,
            "upstream unavailable",
            Some(Duration::from_millis(1000)),
        )
        .await
        .unwrap();
    assert_eq!(state, Some(JobState::Queued));
    // Not due yet.
    assert!(q
        .claim(&ctx, "B", &kinds(), Duration::from_secs(60))
        .await
        .unwrap()
        .is_none());
    actix_rt::time::sleep(Duration::from_millis(1200)).await;
    let again = q
        .claim(&ctx, "B", &kinds(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempts, 2);
    assert_eq!(again.error.as_deref(), Some("upstream unavailable"));
    let lb = lease(&job, "B");
    let state = q
        .fail(
            &ctx,
            &lb,
            "still unavailable",
            Some(Duration::from_millis(1)),
        )
        .await
        .unwrap();
    assert_eq!(state, Some(JobState::Failed), "out of attempts");
    let end = q.get(&ctx, &job.id).await.unwrap().unwrap();
    assert_eq!(end.state, JobState::Failed);
    assert_eq!(end.error.as_deref(), Some("still unavailable"));
    let outcomes: Vec<String> = q
        .runs(&ctx, &job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, vec!["retry", "failed"]);
    // A permanent failure (no retry) fails at once.
    let (p, _) = q.enqueue(&ctx, test_job(None, 5)).await.unwrap();
    q.claim(&ctx, "A", &kinds(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let state = q
        .fail(&ctx, &lease(&p, "A"), "bad parameters", None)
        .await
        .unwrap();
    assert_eq!(state, Some(JobState::Failed));
}

async fn released_and_deduplicated_jobs(app: TestApp) {
    let backend = instance(&app);
    let q = backend.jobs().unwrap();
    let ctx = ctx();
    let (job, created) = q.enqueue(&ctx, test_job(Some("k"), 3)).await.unwrap();
    assert!(created);
    let (same, created) = q.enqueue(&ctx, test_job(Some("k"), 3)).await.unwrap();
    assert!(!created);
    assert_eq!(same.id, job.id);
    // A release gives the job back at once, the attempt not counted.
    q.claim(&ctx, "A", &kinds(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(q.release(&ctx, &lease(&job, "A")).await.unwrap());
    let again = q
        .claim(&ctx, "B", &kinds(), Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 1);
    // Still live while running: no second job under the key.
    let (same, created) = q.enqueue(&ctx, test_job(Some("k"), 3)).await.unwrap();
    assert!(!created);
    assert_eq!(same.id, job.id);
    assert!(q.complete(&ctx, &lease(&job, "B")).await.unwrap());
    // Finished: the key is free again.
    let (next, created) = q.enqueue(&ctx, test_job(Some("k"), 3)).await.unwrap();
    assert!(created);
    assert_ne!(next.id, job.id);
    // A job held back for a foreground run is not due for polling workers,
    // but its enqueuer can claim it by id.
    let mut held = test_job(Some("held"), 3);
    held.run_after = Some(fhirbridge::model::Instant::now().0 + 60_000);
    let (held, _) = q.enqueue(&ctx, held).await.unwrap();
    let polled = q
        .claim(&ctx, "W", &kinds(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(polled.map(|j| j.id), Some(next.id));
    let mine = q
        .claim_id(&ctx, &held.id, "CLI", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(mine.map(|j| j.id), Some(held.id.clone()));
    let listed = q.list(&ctx, Some("test"), 10).await.unwrap();
    assert_eq!(listed.len(), 3);
}

/// Panics on its first attempt, then succeeds.
struct PanicsOnce;

#[async_trait::async_trait]
impl JobKind for PanicsOnce {
    fn name(&self) -> &'static str {
        "panics-once"
    }
    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        if job.job.attempts == 1 {
            panic!("a bug in a job handler");
        }
        Ok(())
    }
}

/// Works in 50 ms units for `units`, committing its cursor after each.
struct Slow {
    units: i64,
}

#[async_trait::async_trait]
impl JobKind for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    async fn run(&self, job: &JobContext) -> Result<(), JobError> {
        let mut done = job.job.done_units;
        while done < self.units {
            if let Some(stop) = job.should_stop() {
                return Err(stop);
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
            done += 1;
            let progress = Progress {
                cursor: Some(done.to_string()),
                done_units: done,
                total_units: Some(self.units),
            };
            if !job
                .jobs()?
                .checkpoint(&job.ctx, &job.lease, &progress)
                .await?
            {
                return Err(JobError::LeaseLost);
            }
        }
        Ok(())
    }
}

fn worker(backend: Arc<dyn Backend>, owner: &str, units: i64) -> Worker {
    let mut registry = Registry::new();
    registry.register(Arc::new(PanicsOnce));
    registry.register(Arc::new(Slow { units }));
    let runner = Runner::new(
        backend,
        registry,
        Arc::new(fhirbridge::policy::AllowAll),
        owner,
        Duration::from_millis(1000),
        Duration::from_millis(20),
    );
    Worker::spawn(Arc::new(runner), 2)
}

fn kind_job(kind: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        ..test_job(None, 3)
    }
}

async fn workers_survive_panics_keep_leases_and_stop_gracefully(app: TestApp) {
    let (a, b) = (instance(&app), instance(&app));
    let ctx = ctx();
    let q = a.jobs().unwrap();
    // Forty 50 ms units (2 s) under a 1 s lease, with a second worker
    // polling every 20 ms: renewal keeps the job with its first owner.
    let (slow, _) = q.enqueue(&ctx, kind_job("slow")).await.unwrap();
    let (panics, _) = q.enqueue(&ctx, kind_job("panics-once")).await.unwrap();
    let wa = worker(a.clone(), "A", 40);
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    let wb = worker(b.clone(), "B", 40);
    let end = wait_for(&a, &slow.id, 30, |j| !j.state.is_live()).await;
    assert_eq!(end.state, JobState::Done, "{end:?}");
    assert_eq!(end.done_units, 40);
    let runs = q.runs(&ctx, &slow.id).await.unwrap();
    assert_eq!(runs.len(), 1, "never taken over while renewed: {runs:?}");
    assert_eq!(runs[0].outcome, "done");
    // The panic failed its attempt (retried after a 1 s backoff), and the
    // workers went on.
    let end = wait_for(&a, &panics.id, 30, |j| !j.state.is_live()).await;
    assert_eq!(end.state, JobState::Done, "{end:?}");
    assert_eq!(end.attempts, 2);
    let outcomes: Vec<String> = q
        .runs(&ctx, &panics.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(outcomes, vec!["retry", "done"]);
    // A stop gives a running job back at its next checkpoint.
    wb.shutdown(Duration::from_secs(5)).await;
    let (long, _) = q.enqueue(&ctx, kind_job("slow")).await.unwrap();
    wait_for(&a, &long.id, 30, |j| j.done_units >= 2).await;
    wa.shutdown(Duration::from_secs(5)).await;
    let given_back = q.get(&ctx, &long.id).await.unwrap().unwrap();
    assert_eq!(given_back.state, JobState::Queued, "{given_back:?}");
    assert_eq!(given_back.lease_owner, None);
    assert_eq!(given_back.attempts, 0);
    assert!(given_back.done_units >= 2 && given_back.done_units < 40);
    let runs = q.runs(&ctx, &long.id).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, "released");
    // Another worker resumes it from its cursor.
    let wc = worker(b.clone(), "C", 40);
    let end = wait_for(&a, &long.id, 30, |j| !j.state.is_live()).await;
    assert_eq!(end.state, JobState::Done);
    assert_eq!(end.done_units, 40);
    wc.shutdown(Duration::from_secs(5)).await;
}

// ---- Two real server processes on one PostgreSQL schema ----

/// A `fhirbridge serve` child process; killed (SIGKILL) when dropped.
/// Starts `fhirbridge serve` on `db` with a small lease and poll.
async fn serve(db: &str, dir: &std::path::Path, lease_secs: u64) -> ServerProcess {
    let port = free_port();
    let config = dir.join(format!("jobs-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "[jobs]\nworkers = 2\nlease_secs = {lease_secs}\npoll_ms = 100\n\
             [validation]\nenabled = false\nauto_install = false\n\
             [storage]\npool_size = 4\n"
        ),
    )
    .unwrap();
    spawn_server(db, Some(&config), Duration::from_secs(20)).await
}

/// Stores `n` Patients (family `Jobs…`) in transactions of 200.
async fn seed_patients(app: &TestApp, n: u32) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let entries: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                json!({
                    "resource": patient(&nhs_number(2000 + i), &format!("Jobs{i}")),
                    "request": {"method": "POST", "url": "Patient"}
                })
            })
            .collect();
        let r = app
            .post(
                "/fhir",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Polls job `id` until `done` holds (at most `secs`).
async fn wait_for(
    backend: &Arc<dyn Backend>,
    id: &str,
    secs: u64,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let ctx = ctx();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let job = backend
            .jobs()
            .unwrap()
            .get(&ctx, id)
            .await
            .unwrap()
            .unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job did not get there in {secs} s: {job:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pid_of(owner: &str) -> u32 {
    owner
        .split('-')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("owner without a pid: {owner}"))
}

#[actix_rt::test]
async fn two_servers_run_each_job_once() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    seed_patients(&app, 600).await;
    app.create(&json!({"resourceType": "Location", "name": "Jobs room"}))
        .await;
    db_sql(&app, "DELETE FROM idx_string;");
    assert_eq!(app.total("/fhir/Patient?family=Jobs").await, 0);
    let servers = [
        serve(&app.db_url, dir.path(), 5).await,
        serve(&app.db_url, dir.path(), 5).await,
    ];
    // Three jobs queued through the CLI for the servers' workers.
    for types in [&[][..], &["--type", "Patient"], &["--type", "Location"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
            .args([
                "reindex",
                "--background",
                "--batch",
                "2",
                "--database",
                &app.db_url,
            ])
            .args(types)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("queued reindex job"), "{text}");
    }
    // The same set again while it is live is not queued twice.
    let out = Command::new(env!("CARGO_BIN_EXE_fhirbridge"))
        .args(["reindex", "--background", "--database", &app.db_url])
        .args(["--type", "Location"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("already") || text.contains("queued reindex job"),
        "{text}"
    );

    let backend = instance(&app);
    let ctx = ctx();
    let jobs = backend
        .jobs()
        .unwrap()
        .list(&ctx, Some("reindex"), 10)
        .await
        .unwrap();
    assert!(jobs.len() >= 3, "{jobs:?}");
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    for job in &jobs {
        let end = wait_for(&backend, &job.id, 120, |j| !j.state.is_live()).await;
        assert_eq!(end.state, JobState::Done, "{end:?}");
        assert_eq!(end.attempts, 1, "{end:?}");
        assert_eq!(Some(end.done_units), end.total_units, "{end:?}");
        let runs = backend.jobs().unwrap().runs(&ctx, &job.id).await.unwrap();
        assert_eq!(runs.len(), 1, "claimed once: {runs:?}");
        assert_eq!(runs[0].outcome, "done");
        assert!(pids.contains(&pid_of(&runs[0].owner)), "{runs:?}");
    }
    assert_eq!(app.total("/fhir/Patient?family=Jobs").await, 600);
    assert_eq!(app.total("/fhir/Location?name=jobs").await, 1);
    drop(servers);
}

#[actix_rt::test]
async fn a_killed_owners_job_is_taken_over_and_resumed() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    seed_patients(&app, 400).await;
    db_sql(&app, "DELETE FROM idx_string;");
    let backend = instance(&app);
    let ctx = ctx();
    let mut servers = vec![
        serve(&app.db_url, dir.path(), 2).await,
        serve(&app.db_url, dir.path(), 2).await,
    ];
    // Two at a time, 20 ms apart: about 4 s of work.
    let (job, _) = backend
        .jobs()
        .unwrap()
        .enqueue(
            &ctx,
            fhirbridge::jobs::reindex::new_job(
                &[fhirbridge::model::ResourceType::Patient],
                Some(2),
                Some(20),
                None,
            ),
        )
        .await
        .unwrap();
    let running = wait_for(&backend, &job.id, 60, |j| j.done_units >= 40).await;
    let owner = running.lease_owner.clone().unwrap();
    let victim = servers
        .iter()
        .position(|s| s.child.id() == pid_of(&owner))
        .expect("one of the two servers holds the job");
    let killed = servers.remove(victim);
    drop(killed); // SIGKILL mid-job
    let at_kill = backend
        .jobs()
        .unwrap()
        .get(&ctx, &job.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        at_kill.state.is_live() && at_kill.done_units < 400,
        "{at_kill:?}"
    );

    let end = wait_for(&backend, &job.id, 120, |j| !j.state.is_live()).await;
    assert_eq!(end.state, JobState::Done, "{end:?}");
    // Resumed from the cursor: the units add up to the total exactly (a
    // restart from the beginning would have counted the first part twice).
    assert_eq!(end.done_units, 400, "{end:?}");
    assert_eq!(end.total_units, Some(400));
    assert_eq!(end.attempts, 2);
    let runs = backend.jobs().unwrap().runs(&ctx, &job.id).await.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].owner, owner);
    assert_eq!(runs[0].outcome, "expired");
    assert_eq!(pid_of(&runs[1].owner), servers[0].child.id());
    assert_eq!(runs[1].outcome, "done");
    // The second claim came after the first lease ran out, not alongside it.
    assert!(
        runs[1].claimed_at >= at_kill.lease_until.unwrap(),
        "{runs:?} {at_kill:?}"
    );
    assert_eq!(app.total("/fhir/Patient?family=Jobs").await, 400);
}
