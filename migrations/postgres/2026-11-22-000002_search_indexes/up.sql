-- SearchParameter-driven indexing: every R4 parameter type gets a table.
ALTER TABLE idx_token ADD COLUMN text TEXT COLLATE "C";
CREATE INDEX idx_token_text ON idx_token (res_type, param, text);
ALTER TABLE idx_reference ADD COLUMN url TEXT COLLATE "C";
CREATE INDEX idx_reference_url ON idx_reference (res_type, param, url);

CREATE TABLE idx_string (
    res_type TEXT COLLATE "C" NOT NULL,
    res_id   TEXT COLLATE "C" NOT NULL,
    param    TEXT COLLATE "C" NOT NULL,
    norm     TEXT COLLATE "C" NOT NULL,
    exact    TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_string_lookup ON idx_string (res_type, param, norm);
CREATE INDEX idx_string_owner ON idx_string (res_type, res_id);

CREATE TABLE idx_number (
    res_type TEXT COLLATE "C" NOT NULL,
    res_id   TEXT COLLATE "C" NOT NULL,
    param    TEXT COLLATE "C" NOT NULL,
    value    DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_number_lookup ON idx_number (res_type, param, value);
CREATE INDEX idx_number_owner ON idx_number (res_type, res_id);

CREATE TABLE idx_quantity (
    res_type TEXT COLLATE "C" NOT NULL,
    res_id   TEXT COLLATE "C" NOT NULL,
    param    TEXT COLLATE "C" NOT NULL,
    system   TEXT COLLATE "C",
    code     TEXT COLLATE "C",
    unit     TEXT COLLATE "C",
    value    DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_quantity_lookup ON idx_quantity (res_type, param, value);
CREATE INDEX idx_quantity_owner ON idx_quantity (res_type, res_id);

CREATE TABLE idx_uri (
    res_type TEXT COLLATE "C" NOT NULL,
    res_id   TEXT COLLATE "C" NOT NULL,
    param    TEXT COLLATE "C" NOT NULL,
    value    TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_uri_lookup ON idx_uri (res_type, param, value);
CREATE INDEX idx_uri_owner ON idx_uri (res_type, res_id);

-- Reindexing progress (`fhirbridge reindex` resumes from here).
CREATE TABLE reindex_state (
    name    TEXT COLLATE "C" PRIMARY KEY,
    res_type TEXT COLLATE "C" NOT NULL,
    res_id  TEXT COLLATE "C" NOT NULL
);
