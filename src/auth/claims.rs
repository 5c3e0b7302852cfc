//! The authenticated caller a verified token describes: its kind, scopes,
//! client, patient context and identity proofing. Claim values are never
//! logged; `Debug` shows only bounded facts.

use crate::auth::scope::{ScopeContext, Scopes};
use crate::model::{LogicalId, ResourceType};

/// The clock as JWT claims count it: seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// NHS login's identity proofing levels, ordered (`P0` < `P5` < `P9`).
pub fn proofing_rank(level: &str) -> Option<u8> {
    match level {
        "P0" => Some(0),
        "P5" => Some(5),
        "P9" => Some(9),
        _ => None,
    }
}

/// The proofing level a token asserts: `identity_proofing_level`, else the
/// `P` component of `vot` (`P9.Cp.Cd`). `None`: it asserts none.
pub fn asserted_proofing(claims: &serde_json::Map<String, serde_json::Value>) -> Option<u8> {
    if let Some(l) = claims
        .get("identity_proofing_level")
        .and_then(|v| v.as_str())
    {
        return proofing_rank(l);
    }
    let vot = claims.get("vot")?.as_str()?;
    vot.split('.').find_map(proofing_rank)
}

/// What kind of caller a token is (bounded label for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// Only `patient/` scopes: confined to one patient's compartment.
    Patient,
    /// `user/` scopes (a clinician, `fhirUser`).
    User,
    /// `system/` scopes (a backend service).
    System,
}

impl CallerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallerKind::Patient => "patient",
            CallerKind::User => "user",
            CallerKind::System => "system",
        }
    }
}

/// A caller whose token was verified.
#[derive(Clone)]
pub struct Caller {
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `client_id`, else `azp`, else (our own tokens) the client's id.
    pub client_id: Option<String>,
    pub scopes: Scopes,
    /// The patient context (a Patient id), resolved from the token's patient
    /// claim or NHS number. `patient/` grants need it.
    pub patient: Option<LogicalId>,
    /// `fhirUser` as (type, id), when it names a local resource.
    pub fhir_user: Option<(ResourceType, String)>,
    /// False when the issuer requires a proofing level the token does not
    /// reach: then nothing in a patient compartment is granted.
    pub proofing_ok: bool,
    /// `exp` (seconds since the epoch).
    pub expires_at: i64,
    /// The caller's own verified NHS number (the issuer's `nhs_number_claim`):
    /// what proxy Consents name.
    pub nhs_number: Option<String>,
    /// `ods_code`: the caller organisation's ODS code.
    pub ods_code: Option<String>,
    /// `purpose_of_use`: the v3-ActReason codes the caller declares.
    pub purposes: Vec<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("kind", &self.kind().as_str())
            .field("grants", &self.scopes.grants.len())
            .field("patient_context", &self.patient.is_some())
            .finish_non_exhaustive()
    }
}

impl Caller {
    pub fn kind(&self) -> CallerKind {
        if self.scopes.has_context(ScopeContext::System) {
            CallerKind::System
        } else if self.scopes.has_context(ScopeContext::User) {
            CallerKind::User
        } else {
            CallerKind::Patient
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proofing_from_either_claim() {
        let m = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(asserted_proofing(&m(json!({"vot": "P9.Cp.Cd"}))), Some(9));
        assert_eq!(asserted_proofing(&m(json!({"vot": "P5.Cp.Ck"}))), Some(5));
        assert_eq!(
            asserted_proofing(&m(json!({"identity_proofing_level": "P0", "vot": "P9.Cm"}))),
            Some(0)
        );
        assert_eq!(asserted_proofing(&m(json!({}))), None);
        assert_eq!(asserted_proofing(&m(json!({"vot": "Cp.Cd"}))), None);
    }
}
