-- SearchParameter-driven indexing: every R4 parameter type gets a table.
ALTER TABLE idx_token ADD COLUMN text TEXT;
CREATE INDEX idx_token_text ON idx_token (res_type, param, text);
ALTER TABLE idx_reference ADD COLUMN url TEXT;
CREATE INDEX idx_reference_url ON idx_reference (res_type, param, url);

CREATE TABLE idx_string (
    res_type TEXT NOT NULL,
    res_id   TEXT NOT NULL,
    param    TEXT NOT NULL,
    norm     TEXT NOT NULL,
    exact    TEXT NOT NULL
);
CREATE INDEX idx_string_lookup ON idx_string (res_type, param, norm);
CREATE INDEX idx_string_owner ON idx_string (res_type, res_id);

CREATE TABLE idx_number (
    res_type TEXT NOT NULL,
    res_id   TEXT NOT NULL,
    param    TEXT NOT NULL,
    value    REAL NOT NULL
);
CREATE INDEX idx_number_lookup ON idx_number (res_type, param, value);
CREATE INDEX idx_number_owner ON idx_number (res_type, res_id);

CREATE TABLE idx_quantity (
    res_type TEXT NOT NULL,
    res_id   TEXT NOT NULL,
    param    TEXT NOT NULL,
    system   TEXT,
    code     TEXT,
    unit     TEXT,
    value    REAL NOT NULL
);
CREATE INDEX idx_quantity_lookup ON idx_quantity (res_type, param, value);
CREATE INDEX idx_quantity_owner ON idx_quantity (res_type, res_id);

CREATE TABLE idx_uri (
    res_type TEXT NOT NULL,
    res_id   TEXT NOT NULL,
    param    TEXT NOT NULL,
    value    TEXT NOT NULL
);
CREATE INDEX idx_uri_lookup ON idx_uri (res_type, param, value);
CREATE INDEX idx_uri_owner ON idx_uri (res_type, res_id);

-- Reindexing progress (`fhirbridge reindex` resumes from here).
CREATE TABLE reindex_state (
    name    TEXT PRIMARY KEY,
    res_type TEXT NOT NULL,
    res_id  TEXT NOT NULL
);
