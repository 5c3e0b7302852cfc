-- Current version of every resource (the "head"). `version = 0` never commits:
-- it is a placeholder row that serialises concurrent first writes of one id.
CREATE TABLE resources (
    res_type     TEXT COLLATE "C"    NOT NULL,
    res_id       TEXT COLLATE "C"    NOT NULL,
    version      BIGINT  NOT NULL,
    last_updated BIGINT  NOT NULL,
    deleted      BIGINT  NOT NULL,
    content      TEXT,
    PRIMARY KEY (res_type, res_id)
);
CREATE INDEX resources_type_updated ON resources (res_type, last_updated);

-- Every version ever written, including deletion markers (content NULL).
-- `seq` orders all writes globally (history paging, `_since`).
CREATE TABLE resource_versions (
    seq          BIGSERIAL PRIMARY KEY,
    res_type     TEXT COLLATE "C"    NOT NULL,
    res_id       TEXT COLLATE "C"    NOT NULL,
    version      BIGINT  NOT NULL,
    last_updated BIGINT  NOT NULL,
    method       TEXT COLLATE "C"    NOT NULL,
    content      TEXT,
    UNIQUE (res_type, res_id, version)
);
CREATE INDEX resource_versions_type_seq ON resource_versions (res_type, seq);
CREATE INDEX resource_versions_updated ON resource_versions (last_updated);

-- Search indexes, rewritten with every version in the same transaction.
CREATE TABLE idx_token (
    res_type TEXT COLLATE "C" NOT NULL,
    res_id   TEXT COLLATE "C" NOT NULL,
    param    TEXT COLLATE "C" NOT NULL,
    system   TEXT,
    code     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_token_lookup ON idx_token (res_type, param, code, system);
CREATE INDEX idx_token_owner ON idx_token (res_type, res_id);

CREATE TABLE idx_date (
    res_type TEXT COLLATE "C"   NOT NULL,
    res_id   TEXT COLLATE "C"   NOT NULL,
    param    TEXT COLLATE "C"   NOT NULL,
    lo       BIGINT NOT NULL,
    hi       BIGINT NOT NULL
);
CREATE INDEX idx_date_lookup ON idx_date (res_type, param, lo, hi);
CREATE INDEX idx_date_owner ON idx_date (res_type, res_id);

CREATE TABLE idx_reference (
    res_type    TEXT COLLATE "C" NOT NULL,
    res_id      TEXT COLLATE "C" NOT NULL,
    param       TEXT COLLATE "C" NOT NULL,
    target_type TEXT COLLATE "C" NOT NULL,
    target_id   TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_reference_lookup ON idx_reference (res_type, param, target_id, target_type);
CREATE INDEX idx_reference_owner ON idx_reference (res_type, res_id);
CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);
