//! Access control: bearer tokens (SMART on FHIR, NHS login, our own SMART
//! Backend Services token endpoint), their scopes, and the caller they make.
//! The decision on what a caller may see or do is `policy::SmartPolicy`'s
//! alone; this module only establishes who is asking.
//!
//! - [`config`]: the `auth` settings section.
//! - [`jwt`]: JWS and JWK with openssl.
//! - [`scope`]: SMART v1/v2 scopes.
//! - [`claims`]: the verified [`claims::Caller`].
//! - [`keys`]: the server's own signing key (created, read, rotated).
//! - [`token`]: our SMART Backend Services token endpoint.

pub mod claims;
pub mod config;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod scope;
pub mod token;
pub mod verify;

use std::sync::Arc;

pub use claims::{Caller, CallerKind};
pub use config::{AuthMode, AuthSettings};

/// Access control as the running server holds it (present only when
/// `auth.mode = "required"`).
pub struct Auth {
    pub settings: AuthSettings,
    /// The `aud` tokens must carry.
    pub audience: String,
    pub authenticator: verify::Authenticator,
    /// The `iss` of the access tokens our token endpoint issues: the
    /// start-up base's [`auth_base`].
    pub issuer: String,
    /// Our signing keys (published at `/auth/jwks`).
    pub keys: Arc<keys::ServerKeys>,
    pub token: token::TokenEndpoint,
}

/// Where the `/auth` endpoints of a server with this FHIR base URL are:
/// the base without its final `/fhir` (`https://h/fhir` → `https://h/auth`,
/// `https://h/api/fhir` → `https://h/api/auth`), else its origin + `/auth`.
pub fn auth_base(fhir_base: &str) -> String {
    let base = fhir_base.trim_end_matches('/');
    if let Some(prefix) = base.strip_suffix("/fhir") {
        if prefix.contains("://") && !prefix.ends_with('/') {
            return format!("{prefix}/auth");
        }
    }
    let origin = match base.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            format!("{scheme}://{host}")
        }
        None => base.to_owned(),
    };
    format!("{origin}/auth")
}

impl Auth {
    /// From `[auth]`; `base_url` is the server's FHIR base URL (the default
    /// audience, and where our issuer is); `key` where our signing key is
    /// ([`keys::location`]).
    pub fn build(
        settings: &AuthSettings,
        base_url: &str,
        key: keys::KeyLocation,
    ) -> anyhow::Result<Auth> {
        let audience = settings
            .audience
            .clone()
            .unwrap_or_else(|| base_url.trim_end_matches('/').to_owned());
        let issuer = auth_base(base_url);
        if let Some(i) = settings.issuers.iter().position(|i| i.issuer == issuer) {
            anyhow::bail!(
                "auth.issuers[{i}].issuer is this server's own issuer ({issuer}): its tokens \
                 are verified with the server's key already"
            );
        }
        let keys = Arc::new(keys::ServerKeys::open(key)?);
        let mut authenticator = verify::Authenticator::new(settings, audience.clone());
        authenticator.trust(issuer.clone(), jwks::KeySource::provided(keys.clone()));
        let token =
            token::TokenEndpoint::new(settings, issuer.clone(), audience.clone(), keys.clone());
        Ok(Auth {
            settings: settings.clone(),
            audience,
            authenticator,
            issuer,
            keys,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_base_from_the_fhir_base() {
        for (base, want) in [
            ("http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/auth"),
            ("https://h.example/fhir/", "https://h.example/auth"),
            ("https://h.example/api/fhir", "https://h.example/api/auth"),
            ("https://h.example/r4", "https://h.example/auth"),
            ("https://h.example", "https://h.example/auth"),
        ] {
            assert_eq!(auth_base(base), want, "{base}");
        }
    }
}
