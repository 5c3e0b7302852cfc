//! `[auth]`: who may call the server. The shape is the documented contract
//! (README, "Access control"): trusted token issuers, the SMART Backend
//! Services clients of our own token endpoint, and whether a token is
//! required at all.

use serde::Deserialize;

use crate::auth::scope::ScopeContext;

/// Whether requests must carry a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request to the FHIR API needs a valid token (the default on any
    /// listen address that is not loopback).
    Required,
    /// No token is read: every caller is anonymous and sees everything. Only
    /// for local development (loopback), or with `--allow-anonymous`.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `None`: `required` unless the listen address is loopback.
    pub mode: Option<AuthMode>,
    /// The `aud` every token must carry (default: the server's base URL).
    pub audience: Option<String>,
    pub issuers: Vec<IssuerSettings>,
    pub clients: Vec<ClientSettings>,
    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Timeout of one JWKS fetch, in milliseconds.
    pub jwks_timeout_ms: u64,
    /// Largest JWKS document accepted, in bytes.
    pub jwks_max_bytes: usize,
    /// Least time between two fetches of one JWKS (an unknown `kid` triggers
    /// at most one refresh per this many seconds).
    pub jwks_min_refresh_secs: u64,
    /// How long a fetched JWKS is used before it is fetched again, in seconds.
    pub jwks_max_age_secs: u64,
    /// Verified tokens remembered (a hot path checks a signature once).
    pub token_cache_entries: usize,
    /// Lifetime of the access tokens our token endpoint issues, in seconds.
    pub access_token_lifetime_secs: u64,
    /// The server's own signing key (PEM), generated on first start. Default:
    /// `server-signing-key.pem` beside the SQLite database (in `data/` for
    /// PostgreSQL); an in-memory database gets an ephemeral key.
    pub signing_key_file: Option<String>,
    /// Set by `--allow-anonymous` (not a file key): lets `mode = "off"` run
    /// on an address that is not loopback.
    #[serde(skip)]
    pub allow_anonymous: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            mode: None,
            audience: None,
            issuers: Vec::new(),
            clients: Vec::new(),
            leeway_secs: 60,
            jwks_timeout_ms: 3_000,
            jwks_max_bytes: 256 * 1024,
            jwks_min_refresh_secs: 30,
            jwks_max_age_secs: 3_600,
            token_cache_entries: 10_000,
            access_token_lifetime_secs: 300,
            signing_key_file: None,
            allow_anonymous: false,
        }
    }
}

/// A trusted token issuer (NHS login, an API gateway, an OpenID provider).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerSettings {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
    /// Claim holding a FHIR Patient id (SMART launch context).
    pub patient_claim: Option<String>,
    /// Claim holding an NHS number (NHS login).
    pub nhs_number_claim: Option<String>,
    /// `P0`, `P5` or `P9`: tokens proofed below it get 403 for record access.
    pub min_identity_proofing: Option<String>,
}

/// A SMART Backend Services client of our token endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    pub client_id: String,
    pub jwks_file: Option<String>,
    pub jwks_uri: Option<String>,
    /// Space-separated: the most this client may be granted.
    pub scopes: String,
    /// The client organisation's ODS code, issued as the `ods_code` claim
    /// (what data-sharing Consents can name).
    pub ods_code: Option<String>,
    /// v3-ActReason codes issued as the `purpose_of_use` claim.
    pub purpose_of_use: Vec<String>,
}

/// Whether `listen` (`HOST:PORT`) is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

impl AuthSettings {
    /// The mode in force for a server listening on `listen`.
    pub fn effective_mode(&self, listen: &str) -> AuthMode {
        self.mode
            .unwrap_or(if is_loopback(listen) || self.allow_anonymous {
                AuthMode::Off
            } else {
                AuthMode::Required
            })
    }

    /// Every problem with `[auth]`, each naming its key.
    pub fn problems(&self, listen: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.effective_mode(listen) == AuthMode::Off
            && !is_loopback(listen)
            && !self.allow_anonymous
        {
            out.push(format!(
                "auth.mode: \"off\" on {listen}, which is not a loopback address: \
                 every caller could read every record; set auth.mode = \"required\" \
                 or start with --allow-anonymous"
            ));
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            let key = format!("auth.issuers[{i}]");
            if iss.issuer.trim().is_empty() {
                out.push(format!("{key}.issuer is required"));
            }
            match (&iss.jwks_uri, &iss.jwks_file) {
                (None, None) => out.push(format!("{key}: jwks_uri or jwks_file is required")),
                (Some(_), Some(_)) => {
                    out.push(format!("{key}: give jwks_uri or jwks_file, not both"))
                }
                (Some(u), None) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                    out.push(format!("{key}.jwks_uri must be an http(s) URL"))
                }
                _ => {}
            }
            if let Some(p) = &iss.min_identity_proofing {
                if crate::auth::claims::proofing_rank(p).is_none() {
                    out.push(format!(
                        "{key}.min_identity_proofing: '{p}' is not P0, P5 or P9"
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let key = format!("auth.clients[{i}]");
            if c.client_id.trim().is_empty() {
                out.push(format!("{key}.client_id is required"));
            } else if !seen.insert(c.client_id.clone()) {
                out.push(format!("{key}.client_id '{}' is listed twice", c.client_id));
            }
            match (&c.jwks_uri, &c.jwks_file) {
                (None, None) => out.push(format!("{key}: jwks_uri or jwks_file is required")),
                (Some(_), Some(_)) => {
                    out.push(format!("{key}: give jwks_uri or jwks_file, not both"))
                }
                _ => {}
            }
            match crate::auth::scope::Scopes::parse_strict(&c.scopes) {
                Err(e) => out.push(format!("{key}.scopes: {e}")),
                Ok(s) => {
                    if s.grants.iter().any(|g| g.context != ScopeContext::System)
                        || !s.other.is_empty()
                    {
                        out.push(format!(
                            "{key}.scopes: backend clients can only be granted system/ scopes"
                        ));
                    }
                }
            }
        }
        if self.leeway_secs > 300 {
            out.push("auth.leeway_secs must be at most 300".into());
        }
        if self.access_token_lifetime_secs == 0 || self.access_token_lifetime_secs > 3_600 {
            out.push("auth.access_token_lifetime_secs must be 1..=3600".into());
        }
        if self.jwks_timeout_ms == 0 {
            out.push("auth.jwks_timeout_ms must be positive".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        for l in [
            "127.0.0.1:8080",
            "localhost:80",
            "[::1]:8080",
            "127.0.0.2:1",
        ] {
            assert!(is_loopback(l), "{l}");
        }
        for l in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.1:80",
            "example.org:443",
        ] {
            assert!(!is_loopback(l), "{l}");
        }
    }

    #[test]
    fn off_on_a_public_address_needs_allow_anonymous() {
        let mut a = AuthSettings {
            mode: Some(AuthMode::Off),
            ..AuthSettings::default()
        };
        assert_eq!(a.problems("0.0.0.0:8080").len(), 1);
        assert!(a.problems("127.0.0.1:8080").is_empty());
        a.allow_anonymous = true;
        assert!(a.problems("0.0.0.0:8080").is_empty());
        let d = AuthSettings::default();
        assert_eq!(d.effective_mode("0.0.0.0:8080"), AuthMode::Required);
        assert_eq!(d.effective_mode("127.0.0.1:8080"), AuthMode::Off);
    }

    #[test]
    fn backend_clients_get_system_scopes_only() {
        let client = |scopes: &str| AuthSettings {
            clients: vec![ClientSettings {
                client_id: "c".into(),
                jwks_file: Some("c.json".into()),
                jwks_uri: None,
                scopes: scopes.into(),
                ..ClientSettings::default()
            }],
            ..AuthSettings::default()
        };
        assert!(client("system/*.rs system/Appointment.cu")
            .problems("127.0.0.1:1")
            .is_empty());
        for bad in ["patient/*.rs", "system/*.rs user/Patient.rs", "openid"] {
            let p = client(bad).problems("127.0.0.1:1");
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert!(p[0].contains("auth.clients[0].scopes"), "{p:?}");
        }
    }
}
