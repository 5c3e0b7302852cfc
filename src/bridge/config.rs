//! `[[suppliers]]`: the GP systems this server bridges to, each holding the
//! records of the practices (ODS codes) it names, for the types it names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::model::ResourceType;

/// What protocol a supplier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SupplierKind {
    /// A GP Connect (STU3) provider behind the Spine Secure Proxy.
    Gpconnect,
    /// An R4 FHIR server as the system of record for the configured types.
    Fhir,
    /// `fhirbridge sandbox-supplier`: GP Connect STU3 plus its repeat-request extension.
    Sandbox,
}

impl SupplierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SupplierKind::Gpconnect => "gpconnect",
            SupplierKind::Fhir => "fhir",
            SupplierKind::Sandbox => "sandbox",
        }
    }

    /// The types a supplier of this kind can hold (what its adapter can
    /// read, search or write for a practice).
    pub fn holdable(self) -> &'static [ResourceType] {
        type R = ResourceType;
        const GPC: [R; 6] = [
            R::Appointment,
            R::Slot,
            R::Schedule,
            R::MedicationRequest,
            R::MedicationStatement,
            R::AllergyIntolerance,
        ];
        const WITH_TASK: [R; 7] = [
            R::Appointment,
            R::Slot,
            R::Schedule,
            R::MedicationRequest,
            R::MedicationStatement,
            R::AllergyIntolerance,
            R::Task,
        ];
        match self {
            SupplierKind::Gpconnect => &GPC,
            SupplierKind::Sandbox | SupplierKind::Fhir => &WITH_TASK,
        }
    }
}

/// How the server authenticates to a supplier. Secrets come from an
/// environment variable or a file, never from the config text itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupplierAuth {
    /// Environment variable holding a bearer token (`fhir` suppliers).
    pub bearer_token_env: Option<String>,
    /// File holding a bearer token (re-read at each start).
    pub bearer_token_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// CA bundle the supplier's certificate must chain to (default: the system's).
    pub ca_file: Option<PathBuf>,
}

/// One `[[suppliers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplierConfig {
    /// Label in logs and metrics, and the prefix of the ids of its resources.
    pub name: String,
    pub kind: SupplierKind,
    pub base_url: String,
    /// The practices whose records this supplier holds.
    pub ods_codes: Vec<String>,
    /// The types held remotely; everything else stays local.
    pub types: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// GP Connect: `Ssp-From` (our ASID) and `Ssp-To` (the provider's).
    pub asid_from: Option<String>,
    pub asid_to: Option<String>,
    /// GP Connect JWT `requesting_organization` (our ODS code).
    #[serde(default = "default_requesting_org")]
    pub requesting_organization: String,
    #[serde(default)]
    pub auth: SupplierAuth,
    /// Largest response body accepted (bigger: 502).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Seconds a read is served from the cache, per type (defaults per type).
    #[serde(default)]
    pub cache_ttl_secs: BTreeMap<String, u64>,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before one trial request.
    #[serde(default = "default_breaker_open")]
    pub breaker_open_secs: u64,
    /// Delivery attempts of an outbox item before it is dead-lettered.
    #[serde(default = "default_outbox_attempts")]
    pub outbox_max_attempts: u32,
}

fn default_timeout() -> u64 {
    5_000
}
fn default_requesting_org() -> String {
    "FHIRBRIDGE".into()
}
fn default_max_body() -> usize {
    8 * 1024 * 1024
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open() -> u64 {
    10
}
fn default_outbox_attempts() -> u32 {
    super::outbox::MAX_ATTEMPTS
}

/// The built-in cache TTL of a type (seconds): free slots change fast,
/// medication and allergies slowly.
pub fn default_ttl(ty: ResourceType) -> u64 {
    match ty {
        ResourceType::Slot => 10,
        ResourceType::Appointment | ResourceType::Task => 15,
        _ => 60,
    }
}

impl SupplierConfig {
    /// The configured held types (only valid after [`problems`] passed).
    pub fn held_types(&self) -> Vec<ResourceType> {
        self.types.iter().filter_map(|t| t.parse().ok()).collect()
    }

    pub fn ttl(&self, ty: ResourceType) -> u64 {
        self.cache_ttl_secs
            .get(ty.as_str())
            .copied()
            .unwrap_or_else(|| default_ttl(ty))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 24
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_ods(c: &str) -> bool {
    (3..=10).contains(&c.len())
        && c.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Every problem with the `[[suppliers]]` list, each naming the key at fault.
pub fn problems(list: &[SupplierConfig]) -> Vec<String> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut ods = std::collections::HashMap::new();
    for (i, s) in list.iter().enumerate() {
        let at = format!("suppliers[{i}]");
        if !valid_name(&s.name) {
            out.push(format!(
                "{at}.name must be 1-24 characters of a-z, 0-9 and '-', starting with a letter"
            ));
        } else if !names.insert(s.name.clone()) {
            out.push(format!("{at}.name '{}' is used twice", s.name));
        }
        if !(s.base_url.starts_with("http://") || s.base_url.starts_with("https://"))
            || s.base_url.contains('?')
            || s.base_url.contains('#')
        {
            out.push(format!(
                "{at}.base_url must be an http(s) URL without query"
            ));
        }
        if s.ods_codes.is_empty() {
            out.push(format!("{at}.ods_codes must name at least one practice"));
        }
        for c in &s.ods_codes {
            if !valid_ods(c) {
                out.push(format!("{at}.ods_codes: '{c}' is not an ODS code"));
            } else if let Some(other) = ods.insert(c.clone(), i) {
                out.push(format!(
                    "{at}.ods_codes: '{c}' is already held by suppliers[{other}]"
                ));
            }
        }
        if s.types.is_empty() {
            out.push(format!("{at}.types must name at least one resource type"));
        }
        for t in &s.types {
            match t.parse::<ResourceType>() {
                Ok(ty) if s.kind.holdable().contains(&ty) => {}
                Ok(_) => out.push(format!(
                    "{at}.types: a {} supplier cannot hold {t} (it can hold {})",
                    s.kind.as_str(),
                    s.kind
                        .holdable()
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(_) => out.push(format!("{at}.types: '{t}' is not a resource type")),
            }
        }
        for t in s.cache_ttl_secs.keys() {
            if !s.types.contains(t) {
                out.push(format!(
                    "{at}.cache_ttl_secs: '{t}' is not one of this supplier's types"
                ));
            }
        }
        if s.timeout_ms == 0 || s.timeout_ms > 120_000 {
            out.push(format!("{at}.timeout_ms must be between 1 and 120000"));
        }
        if s.max_body_bytes < 1024 || s.max_body_bytes > 256 * 1024 * 1024 {
            out.push(format!(
                "{at}.max_body_bytes must be between 1024 and 268435456"
            ));
        }
        if s.outbox_max_attempts == 0 || s.outbox_max_attempts > 1000 {
            out.push(format!(
                "{at}.outbox_max_attempts must be between 1 and 1000"
            ));
        }
        if s.breaker_failures == 0 {
            out.push(format!("{at}.breaker_failures must be at least 1"));
        }
        if s.breaker_open_secs == 0 || s.breaker_open_secs > 3600 {
            out.push(format!("{at}.breaker_open_secs must be between 1 and 3600"));
        }
        if matches!(s.kind, SupplierKind::Gpconnect | SupplierKind::Sandbox) {
            for (k, v) in [("asid_from", &s.asid_from), ("asid_to", &s.asid_to)] {
                match v {
                    Some(a)
                        if !a.is_empty()
                            && a.len() <= 20
                            && a.chars().all(|c| c.is_ascii_digit()) => {}
                    Some(_) => out.push(format!("{at}.{k} must be an ASID (digits)")),
                    None => out.push(format!(
                        "{at}.{k} is required for a {} supplier",
                        s.kind.as_str()
                    )),
                }
            }
        }
        let a = &s.auth;
        if a.bearer_token_env.is_some() && a.bearer_token_file.is_some() {
            out.push(format!(
                "{at}.auth: give bearer_token_env or bearer_token_file, not both"
            ));
        }
        if a.client_cert_file.is_some() != a.client_key_file.is_some() {
            out.push(format!(
                "{at}.auth: client_cert_file and client_key_file go together"
            ));
        }
        if let Some(var) = &a.bearer_token_env {
            if std::env::var_os(var).is_none() {
                out.push(format!("{at}.auth.bearer_token_env: ${var} is not set"));
            }
        }
        for (k, f) in [
            ("bearer_token_file", &a.bearer_token_file),
            ("client_cert_file", &a.client_cert_file),
            ("client_key_file", &a.client_key_file),
            ("ca_file", &a.ca_file),
        ] {
            if let Some(p) = f {
                if !p.is_file() {
                    out.push(format!(
                        "{at}.auth.{k}: {} is not a readable file",
                        p.display()
                    ));
                }
            }
        }
        if (a.client_cert_file.is_some() || a.ca_file.is_some())
            && !s.base_url.starts_with("https://")
        {
            out.push(format!(
                "{at}.auth: client certificates need an https base_url"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<SupplierConfig> {
        #[derive(Deserialize)]
        struct W {
            suppliers: Vec<SupplierConfig>,
        }
        toml::from_str::<W>(text).unwrap().suppliers
    }

    #[test]
    fn the_documented_shape_parses_and_validates() {
        let list = parse(
            r#"
[[suppliers]]
name = "practice-a"
kind = "gpconnect"
base_url = "https://gp.example/gpconnect/fhir"
ods_codes = ["A81001", "A81002"]
types = ["Appointment", "Slot", "Schedule", "MedicationRequest", "MedicationStatement", "AllergyIntolerance"]
timeout_ms = 5000
asid_from = "200000000359"
asid_to = "918999198993"
"#,
        );
        assert_eq!(problems(&list), Vec::<String>::new());
        assert_eq!(list[0].ttl(ResourceType::Slot), 10);
    }

    #[test]
    fn every_problem_names_its_key() {
        let list = parse(
            r#"
[[suppliers]]
name = "Bad Name"
kind = "gpconnect"
base_url = "ftp://x"
ods_codes = ["a1"]
types = ["Patient", "Nope"]
timeout_ms = 0
[[suppliers]]
name = "b"
kind = "fhir"
base_url = "http://x/fhir"
ods_codes = ["A81001"]
types = ["Task"]
"#,
        );
        let p = problems(&list).join("\n");
        for want in [
            "suppliers[0].name",
            "suppliers[0].base_url",
            "'a1' is not an ODS code",
            "cannot hold Patient",
            "'Nope' is not a resource type",
            "suppliers[0].timeout_ms",
            "suppliers[0].asid_from is required",
        ] {
            assert!(p.contains(want), "{want} missing from {p}");
        }
        assert!(!p.contains("suppliers[1]"), "{p}");
    }
}
