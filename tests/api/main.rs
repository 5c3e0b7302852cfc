//! The black-box HTTP test suite: one binary, real server, real HTTP.
//! Each test in a `backend_tests!` list runs on SQLite and, when
//! `FHIRBRIDGE_TEST_POSTGRES_URL` is set, on PostgreSQL.

mod auth_support;
mod helpers;

mod access;
mod audit;
mod auth;
mod booking;
mod bridge;
mod bundles;
mod cli;
mod concurrency;
mod consent;
mod crud;
mod demo;
mod durability;
mod enforce;
mod errors;
mod examples;
mod fidelity_search;
mod history;
mod http;
mod interop;
mod jobs;
mod leaks;
mod oidc;
mod ops;
mod page_tokens;
mod policy;
mod proxy;
mod realdata;
mod reindex;
mod repeats;
mod routes;
mod seam;
mod search;
mod search_features;
mod search_oracle;
mod tls;
mod token;
mod validation;
