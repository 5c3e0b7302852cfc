DROP TABLE page_tokens;
