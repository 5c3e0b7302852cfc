CREATE TABLE reindex_state (
    name    TEXT COLLATE "C" PRIMARY KEY,
    res_type TEXT COLLATE "C" NOT NULL,
    res_id  TEXT COLLATE "C" NOT NULL
);
INSERT INTO reindex_state (name, res_type, res_id)
SELECT dedupe_key, split_part(cursor, '/', 1), substr(cursor, strpos(cursor, '/') + 1)
FROM jobs
WHERE kind = 'reindex' AND state IN ('queued', 'running') AND dedupe_key IS NOT NULL
  AND cursor IS NOT NULL AND strpos(cursor, '/') > 0;
DROP TABLE job_runs;
DROP TABLE jobs;
