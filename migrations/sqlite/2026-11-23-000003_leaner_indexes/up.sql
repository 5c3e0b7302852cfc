-- Fewer secondary indexes on the write path (each costs a B-tree insert per
-- index row): every reference query names res_type and param, so the lookup
-- index serves it; `url` is set only for external references; `:text` scans
-- the parameter's rows through the lookup index instead of its own index.
DROP INDEX idx_reference_target;
DROP INDEX idx_reference_url;
CREATE INDEX idx_reference_url ON idx_reference (res_type, param, url) WHERE url IS NOT NULL;
DROP INDEX idx_token_text;
