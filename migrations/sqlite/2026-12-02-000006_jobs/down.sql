CREATE TABLE reindex_state (
    name    TEXT PRIMARY KEY,
    res_type TEXT NOT NULL,
    res_id  TEXT NOT NULL
);
INSERT INTO reindex_state (name, res_type, res_id)
SELECT dedupe_key, substr(cursor, 1, instr(cursor, '/') - 1), substr(cursor, instr(cursor, '/') + 1)
FROM jobs
WHERE kind = 'reindex' AND state IN ('queued', 'running') AND dedupe_key IS NOT NULL
  AND cursor IS NOT NULL AND instr(cursor, '/') > 0;
DROP TABLE job_runs;
DROP TABLE jobs;
