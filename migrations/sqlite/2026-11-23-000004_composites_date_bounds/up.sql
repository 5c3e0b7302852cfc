-- Composite search parameters: component rows of one element share a group.
ALTER TABLE idx_token ADD COLUMN grp INTEGER;
ALTER TABLE idx_date ADD COLUMN grp INTEGER;
ALTER TABLE idx_reference ADD COLUMN grp INTEGER;
ALTER TABLE idx_string ADD COLUMN grp INTEGER;
ALTER TABLE idx_number ADD COLUMN grp INTEGER;
ALTER TABLE idx_quantity ADD COLUMN grp INTEGER;
ALTER TABLE idx_uri ADD COLUMN grp INTEGER;

-- The widest stored range per date parameter: turns `ge`/`gt` into a bounded
-- scan of the `lo` index. Never narrows.
CREATE TABLE idx_date_width (
    res_type TEXT   NOT NULL,
    param    TEXT   NOT NULL,
    width    BIGINT NOT NULL,
    PRIMARY KEY (res_type, param)
);
INSERT INTO idx_date_width (res_type, param, width)
    SELECT res_type, param, MAX(hi - lo) FROM idx_date GROUP BY res_type, param;

-- Lookup indexes end with res_id, so collecting the ids that match a
-- condition reads the index alone, not one table row per match.
DROP INDEX idx_token_lookup;
CREATE INDEX idx_token_lookup ON idx_token (res_type, param, code, system, res_id);
DROP INDEX idx_reference_lookup;
CREATE INDEX idx_reference_lookup ON idx_reference (res_type, param, target_id, target_type, res_id);
DROP INDEX idx_date_lookup;
CREATE INDEX idx_date_lookup ON idx_date (res_type, param, lo, hi, res_id);
DROP INDEX idx_string_lookup;
CREATE INDEX idx_string_lookup ON idx_string (res_type, param, norm, res_id);
DROP INDEX idx_number_lookup;
CREATE INDEX idx_number_lookup ON idx_number (res_type, param, value, res_id);
DROP INDEX idx_uri_lookup;
CREATE INDEX idx_uri_lookup ON idx_uri (res_type, param, value, res_id);
