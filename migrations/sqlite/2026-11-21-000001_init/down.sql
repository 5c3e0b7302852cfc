DROP TABLE idx_reference;
DROP TABLE idx_date;
DROP TABLE idx_token;
DROP TABLE resource_versions;
DROP TABLE resources;
