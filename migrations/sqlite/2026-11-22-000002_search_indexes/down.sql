DROP TABLE reindex_state;
DROP TABLE idx_uri;
DROP TABLE idx_quantity;
DROP TABLE idx_number;
DROP TABLE idx_string;
DROP INDEX idx_reference_url;
ALTER TABLE idx_reference DROP COLUMN url;
DROP INDEX idx_token_text;
ALTER TABLE idx_token DROP COLUMN text;
