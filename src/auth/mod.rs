//! Access control: bearer tokens (SMART on FHIR, NHS login, our own SMART
//! Backend Services token endpoint), their scopes, and the caller they make.
//! The decision on what a caller may see or do is `policy::SmartPolicy`'s
//! alone; this module only establishes who is asking.
//!
//! - [`config`]: the `auth` settings section.
//! - [`jwt`]: JWS and JWK with openssl.
//! - [`scope`]: SMART v1/v2 scopes.
//! - [`claims`]: the verified [`claims::Caller`].

pub mod claims;
pub mod config;
pub mod jwks;
pub mod jwt;
pub mod scope;
pub mod verify;

pub use claims::{Caller, CallerKind};
pub use config::{AuthMode, AuthSettings};

/// Access control as the running server holds it (present only when
/// `auth.mode = "required"`).
pub struct Auth {
    pub settings: AuthSettings,
    /// The `aud` tokens must carry.
    pub audience: String,
    pub authenticator: verify::Authenticator,
}

impl Auth {
    /// From `[auth]`; `base_url` is the server's FHIR base URL (the default
    /// audience).
    pub fn build(settings: &AuthSettings, base_url: &str) -> anyhow::Result<Auth> {
        let audience = settings
            .audience
            .clone()
            .unwrap_or_else(|| base_url.trim_end_matches('/').to_owned());
        let authenticator = verify::Authenticator::new(settings, audience.clone());
        Ok(Auth {
            settings: settings.clone(),
            audience,
            authenticator,
        })
    }
}
