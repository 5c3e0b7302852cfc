//! Patient preferences as Consent the server enforces: [`rule`] reads a
//! Consent as a rule (or the 422 reason it cannot be enforced), [`index`]
//! keeps the active ones keyed for per-request decisions. The policy
//! (`policy::smart`) applies them; the service (`service::consent`) keeps one
//! active Consent per patient and kind and the index in step with storage.

pub mod index;
pub mod rule;

use serde::Deserialize;

pub use index::{ConsentIndex, Proxied};
pub use rule::{Kind, Rule, Subject};

/// The v3-Confidentiality system.
pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// `[consent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentSettings {
    /// Further `meta.security` labels (`system|code`) withheld from
    /// patient-facing access, besides v3-Confidentiality `R` and `V`.
    pub withheld_labels: Vec<String>,
    /// Milliseconds between refreshes of the Consent index from the database
    /// (picks up Consents written by other instances on one PostgreSQL
    /// database; this instance's own writes apply at once).
    pub refresh_ms: u64,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        ConsentSettings {
            withheld_labels: Vec::new(),
            refresh_ms: 1_000,
        }
    }
}

impl ConsentSettings {
    /// Every withheld label as (system, code).
    pub fn withheld(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (CONFIDENTIALITY.to_owned(), "R".to_owned()),
            (CONFIDENTIALITY.to_owned(), "V".to_owned()),
        ];
        for l in &self.withheld_labels {
            if let Some((s, c)) = l.split_once('|') {
                out.push((s.to_owned(), c.to_owned()));
            }
        }
        out.dedup();
        out
    }

    /// Problems with the settings (for `Settings::validate`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.withheld_labels {
            match l.split_once('|') {
                Some((s, c)) if !s.is_empty() && !c.is_empty() => {}
                _ => out.push(format!("consent.withheld_labels: '{l}' is not system|code")),
            }
        }
        if self.refresh_ms == 0 {
            out.push("consent.refresh_ms must be at least 1".into());
        }
        out
    }
}
