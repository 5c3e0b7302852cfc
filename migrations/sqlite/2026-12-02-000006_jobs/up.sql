-- Background jobs (reindex first; outbox, subscription delivery and bulk export
-- later): one row per job, claimed under a lease that another instance takes
-- over when it expires. `cursor` is the job's progress, committed with each
-- unit of work. Times are Unix milliseconds. `error` never holds patient data.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    dedupe_key   TEXT,
    params       TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT,
    cursor       TEXT,
    done_units   BIGINT NOT NULL DEFAULT 0,
    total_units  BIGINT,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    run_after    BIGINT NOT NULL
);
-- One live (queued or running) job per dedupe key.
CREATE UNIQUE INDEX jobs_live_dedupe ON jobs (dedupe_key)
    WHERE state IN ('queued', 'running');
-- Claiming: queued jobs that are due, running jobs whose lease ran out.
CREATE INDEX jobs_claim_queued ON jobs (kind, run_after) WHERE state = 'queued';
CREATE INDEX jobs_claim_running ON jobs (lease_until) WHERE state = 'running';

-- Every claim of a job: which instance ran it, from when, and how it ended
-- (running, done, failed, retry, released, expired).
CREATE TABLE job_runs (
    job_id     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    ended_at   BIGINT,
    outcome    TEXT NOT NULL
);
CREATE INDEX job_runs_job ON job_runs (job_id, claimed_at);

-- A live reindex cursor becomes a queued reindex job that resumes from it.
INSERT INTO jobs (id, kind, dedupe_key, params, state, attempts, max_attempts,
                  cursor, created_at, updated_at, run_after)
SELECT 'migrated:' || name, 'reindex', name,
       CASE WHEN name = 'reindex' THEN '{"types":[]}'
            ELSE '{"types":["' || replace(substr(name, 9), ',', '","') || '"]}' END,
       'queued', 0, 5, res_type || '/' || res_id,
       CAST(strftime('%s', 'now') AS INTEGER) * 1000,
       CAST(strftime('%s', 'now') AS INTEGER) * 1000,
       CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM reindex_state;
DROP TABLE reindex_state;
