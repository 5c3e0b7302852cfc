-- Opaque page tokens: the parameters of a search whose values must not appear in
-- URLs (POST [type]/_search), kept server-side so every instance can follow them.
CREATE TABLE page_tokens (
    token TEXT PRIMARY KEY NOT NULL,
    res_type TEXT NOT NULL,
    params TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX page_tokens_expiry ON page_tokens (expires_at);
