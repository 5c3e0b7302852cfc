CREATE INDEX idx_token_text ON idx_token (res_type, param, text);
DROP INDEX idx_reference_url;
CREATE INDEX idx_reference_url ON idx_reference (res_type, param, url);
CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);
