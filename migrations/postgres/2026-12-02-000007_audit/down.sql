DROP TRIGGER IF EXISTS audit_events_no_change ON audit_events;
DROP FUNCTION IF EXISTS audit_events_append_only();
DROP TABLE audit_events;
