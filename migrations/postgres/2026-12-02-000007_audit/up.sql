-- The audit trail: one row per R4 AuditEvent, append-only (the server never
-- updates or deletes a row; a trigger refuses it). `seq` orders rows as they
-- were committed; `recorded` is Unix milliseconds; `patient_id` names the one
-- patient the event is about (NULL: none); `entity_refs` holds the entity
-- references as `|Type/id|Type/id/_history/v|` for the `entity` search.
CREATE TABLE audit_events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT COLLATE "C" NOT NULL UNIQUE,
    recorded    BIGINT NOT NULL,
    patient_id  TEXT COLLATE "C",
    type        TEXT NOT NULL,
    subtype     TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    agent       TEXT,
    entity_refs TEXT NOT NULL,
    content     TEXT NOT NULL
);
-- "Who looked at my record", newest first.
CREATE INDEX audit_events_patient ON audit_events (patient_id, recorded DESC, seq DESC)
    WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_recorded ON audit_events (recorded, seq);
CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
