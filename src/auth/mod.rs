//! Access control: bearer tokens (SMART on FHIR, NHS login, our own SMART
//! Backend Services token endpoint), their scopes, and the caller they make.
//! The decision on what a caller may see or do is `policy::SmartPolicy`'s
//! alone; this module only establishes who is asking.
//!
//! - [`config`]: `[auth]`.
//! - [`jwt`]: JWS and JWK with openssl.
//! - [`scope`]: SMART v1/v2 scopes.
//! - [`claims`]: the verified [`claims::Caller`].

pub mod claims;
pub mod config;
pub mod jwt;
pub mod scope;

pub use claims::{Caller, CallerKind};
pub use config::{AuthMode, AuthSettings};
