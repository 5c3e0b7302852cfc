//! What every `/fhir` request must carry: the Spine Secure Proxy headers and
//! the unsigned audit JWT
//! (`pages/integration/integration_cross_organisation_audit_and_provenance.md`).

use actix_web::HttpRequest;
use serde_json::Value;

use super::outcome::GpcError;
use crate::base64::{decode, Alphabet};

const GPC: &str = "urn:nhs:names:services:gpconnect:";

pub const METADATA: &str = "urn:nhs:names:services:gpconnect:fhir:rest:read:metadata-1";
/// The Access Record Structured capability statement's own interaction.
pub const STRUCTURED_METADATA: &str =
    "urn:nhs:names:services:gpconnect:structured:fhir:rest:read:metadata-1";
pub const SEARCH_PATIENT: &str = "urn:nhs:names:services:gpconnect:fhir:rest:search:patient-1";
pub const READ_PATIENT: &str = "urn:nhs:names:services:gpconnect:fhir:rest:read:patient-1";
pub const SEARCH_PRACTITIONER: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:search:practitioner-1";
pub const READ_PRACTITIONER: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:read:practitioner-1";
pub const SEARCH_ORGANIZATION: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:search:organization-1";
pub const READ_ORGANIZATION: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:read:organization-1";
pub const READ_LOCATION: &str = "urn:nhs:names:services:gpconnect:fhir:rest:read:location-1";
pub const SEARCH_SLOT: &str = "urn:nhs:names:services:gpconnect:fhir:rest:search:slot-1";
pub const CREATE_APPOINTMENT: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:create:appointment-1";
pub const READ_APPOINTMENT: &str = "urn:nhs:names:services:gpconnect:fhir:rest:read:appointment-1";
pub const UPDATE_APPOINTMENT: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:update:appointment-1";
pub const CANCEL_APPOINTMENT: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:cancel:appointment-1";
pub const SEARCH_PATIENT_APPOINTMENTS: &str =
    "urn:nhs:names:services:gpconnect:fhir:rest:search:patient_appointments-1";
pub const GET_STRUCTURED_RECORD: &str =
    "urn:nhs:names:services:gpconnect:fhir:operation:gpc.getstructuredrecord-1";
/// Sandbox extension (not GP Connect): repeat prescription requests.
pub const CREATE_TASK: &str = "urn:fhirbridge:sandbox:rest:create:task-1";
pub const SEARCH_TASK: &str = "urn:fhirbridge:sandbox:rest:search:task-1";
pub const READ_TASK: &str = "urn:fhirbridge:sandbox:rest:read:task-1";

pub const SCOPE_PATIENT_READ: &str = "patient/*.read";
pub const SCOPE_PATIENT_WRITE: &str = "patient/*.write";
pub const SCOPE_ORGANIZATION_READ: &str = "organization/*.read";

/// The `requested_scope` an interaction needs (the spec's table).
pub fn scope_for(interaction: &str) -> &'static str {
    match interaction {
        SEARCH_PATIENT
        | READ_PATIENT
        | SEARCH_PATIENT_APPOINTMENTS
        | READ_APPOINTMENT
        | GET_STRUCTURED_RECORD
        | SEARCH_TASK
        | READ_TASK => SCOPE_PATIENT_READ,
        CREATE_APPOINTMENT | UPDATE_APPOINTMENT | CANCEL_APPOINTMENT | CREATE_TASK => {
            SCOPE_PATIENT_WRITE
        }
        _ => SCOPE_ORGANIZATION_READ,
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, GpcError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| GpcError::bad_request(format!("{name} header is not valid text"))),
    }
}

fn required<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, GpcError> {
    match header(req, name)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(GpcError::bad_request(format!("{name} header is missing"))),
    }
}

/// Checks the SSP headers; `allowed` lists the interaction IDs the request's
/// URL and verb can be. Returns the interaction ID sent.
pub fn check_headers(
    req: &HttpRequest,
    provider_asid: &str,
    allowed: &[&'static str],
) -> Result<&'static str, GpcError> {
    let trace = required(req, "Ssp-TraceID")?;
    if uuid::Uuid::try_parse(trace).is_err() {
        return Err(GpcError::bad_request(
            "Ssp-TraceID header is not a UUID".to_string(),
        ));
    }
    let from = required(req, "Ssp-From")?;
    if !from.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GpcError::bad_request(
            "Ssp-From header is not an ASID".to_string(),
        ));
    }
    let to = required(req, "Ssp-To")?;
    if to != provider_asid {
        return Err(GpcError::bad_request(format!(
            "Ssp-To header {to} is not this provider's ASID"
        )));
    }
    let interaction = required(req, "Ssp-InteractionID")?;
    match allowed.iter().find(|id| **id == interaction) {
        Some(id) => Ok(id),
        None if interaction.starts_with(GPC) || interaction.starts_with("urn:fhirbridge:") => {
            Err(GpcError::bad_request(format!(
                "Ssp-InteractionID {interaction} does not match the request"
            )))
        }
        None => Err(GpcError::bad_request(format!(
            "Ssp-InteractionID {interaction} is not a GP Connect interaction"
        ))),
    }
}

/// The audit facts a request carried (kept for the stats and for tests).
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub requesting_ods: String,
    pub practitioner_id: String,
}

fn claim_str<'a>(claims: &'a Value, name: &str) -> Result<&'a str, GpcError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::Null) | None => Err(GpcError::bad_request(format!(
            "JWT {name} claim is missing"
        ))),
        Some(Value::String(_)) => Err(GpcError::bad_request(format!("Empty JWT {name} claim"))),
        Some(_) => Err(GpcError::bad_request(format!(
            "JWT {name} claim is not a string"
        ))),
    }
}

fn claim_int(claims: &Value, name: &str) -> Result<i64, GpcError> {
    claims
        .get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| GpcError::bad_request(format!("JWT {name} claim is not an integer")))
}

fn claim_resource<'a>(claims: &'a Value, name: &str, kind: &str) -> Result<&'a Value, GpcError> {
    let r = claims
        .get(name)
        .filter(|v| v.is_object())
        .ok_or_else(|| GpcError::bad_request(format!("JWT {name} claim is missing")))?;
    if r.get("resourceType").and_then(Value::as_str) != Some(kind) {
        return Err(GpcError::bad_request(format!(
            "JWT {name} claim is not a {kind} resource"
        )));
    }
    Ok(r)
}

fn identifier_value<'a>(resource: &'a Value, system: Option<&str>) -> Option<&'a str> {
    resource
        .get("identifier")?
        .as_array()?
        .iter()
        .filter(|i| system.is_none_or(|s| i.get("system").and_then(Value::as_str) == Some(s)))
        .filter(|i| {
            i.get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        })
        .find_map(|i| {
            i.get("value")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        })
}

fn non_empty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
}

/// Checks `Authorization: Bearer <JWT>`: an unsecured (`alg: none`) JWT of
/// three base64url parts with an empty signature, whose claims are those the
/// spec lists, `exp` = `iat` + 300, `iat` not in the future, not expired,
/// `reason_for_request` = `directcare` and `requested_scope` the one the
/// interaction needs. `now` is UNIX seconds.
pub fn check_jwt(
    authorization: Option<&str>,
    required_scope: &str,
    now: i64,
) -> Result<Audit, GpcError> {
    let auth = authorization
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| GpcError::bad_request("Authorization header is missing"))?;
    let token = match auth.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(GpcError::bad_request(
                "Authorization header is not a Bearer token",
            ))
        }
    };
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(GpcError::bad_request(
            "JWT is not three base64url parts separated by dots",
        ));
    }
    if !parts[2].is_empty() {
        return Err(GpcError::bad_request(
            "JWT signature is not empty (GP Connect tokens are unsigned)",
        ));
    }
    let part = |i: usize, what: &str| -> Result<Value, GpcError> {
        let bytes = decode(parts[i], Alphabet::UrlSafe)
            .ok_or_else(|| GpcError::bad_request(format!("JWT {what} is not base64url")))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| GpcError::bad_request(format!("JWT {what} is not valid JSON")))?;
        if v.is_object() {
            Ok(v)
        } else {
            Err(GpcError::bad_request(format!(
                "JWT {what} is not a JSON object"
            )))
        }
    };
    let head = part(0, "header")?;
    if head.get("alg").and_then(Value::as_str) != Some("none") {
        return Err(GpcError::bad_request("JWT alg is not \"none\""));
    }
    if let Some(typ) = head.get("typ") {
        if typ.as_str() != Some("JWT") {
            return Err(GpcError::bad_request("JWT typ is not \"JWT\""));
        }
    }
    let claims = part(1, "payload")?;
    claim_str(&claims, "iss")?;
    let sub = claim_str(&claims, "sub")?;
    let aud = claim_str(&claims, "aud")?;
    if !(aud.starts_with("https://") || aud.starts_with("http://")) {
        return Err(GpcError::bad_request(
            "JWT aud claim is not the provider's service root URL",
        ));
    }
    let exp = claim_int(&claims, "exp")?;
    let iat = claim_int(&claims, "iat")?;
    if exp - iat != 300 {
        return Err(GpcError::bad_request(
            "JWT exp claim is not 5 minutes after iat",
        ));
    }
    if iat > now {
        return Err(GpcError::bad_request("JWT iat claim is in the future"));
    }
    if now >= exp {
        return Err(GpcError::bad_request("JWT has expired"));
    }
    if claim_str(&claims, "reason_for_request")? != "directcare" {
        return Err(GpcError::bad_request(
            "JWT reason_for_request claim is not directcare",
        ));
    }
    let scope = claim_str(&claims, "requested_scope")?;
    if ![
        SCOPE_PATIENT_READ,
        SCOPE_PATIENT_WRITE,
        SCOPE_ORGANIZATION_READ,
    ]
    .contains(&scope)
    {
        return Err(GpcError::bad_request(format!(
            "JWT requested_scope {scope} is not a GP Connect scope"
        )));
    }
    if scope != required_scope {
        return Err(GpcError::bad_request(format!(
            "JWT requested_scope {scope} does not match the interaction (needs {required_scope})"
        )));
    }
    let device = claim_resource(&claims, "requesting_device", "Device")?;
    if identifier_value(device, None).is_none()
        || !non_empty_str(device.get("model"))
        || !non_empty_str(device.get("version"))
    {
        return Err(GpcError::bad_request(
            "JWT requesting_device needs an identifier, model and version",
        ));
    }
    let org = claim_resource(&claims, "requesting_organization", "Organization")?;
    let ods = identifier_value(org, Some("https://fhir.nhs.uk/Id/ods-organization-code"))
        .ok_or_else(|| {
            GpcError::bad_request("JWT requesting_organization has no ODS code identifier")
        })?;
    if !non_empty_str(org.get("name")) {
        return Err(GpcError::bad_request(
            "JWT requesting_organization has no name",
        ));
    }
    let prac = claim_resource(&claims, "requesting_practitioner", "Practitioner")?;
    if prac.get("id").and_then(Value::as_str) != Some(sub) {
        return Err(GpcError::bad_request(
            "JWT sub claim does not match requesting_practitioner.id",
        ));
    }
    if identifier_value(prac, Some("https://fhir.nhs.uk/Id/sds-user-id")).is_none() {
        return Err(GpcError::bad_request(
            "JWT requesting_practitioner has no SDS user id identifier",
        ));
    }
    let named = prac
        .get("name")
        .and_then(Value::as_array)
        .is_some_and(|names| {
            names.iter().any(|n| {
                non_empty_str(n.get("family"))
                    && n.get("given")
                        .and_then(Value::as_array)
                        .is_some_and(|g| g.iter().any(|g| non_empty_str(Some(g))))
            })
        });
    if !named {
        return Err(GpcError::bad_request(
            "JWT requesting_practitioner needs a name with family and given",
        ));
    }
    Ok(Audit {
        requesting_ods: ods.to_string(),
        practitioner_id: sub.to_string(),
    })
}

/// A GP Connect audit JWT for tests and demos: `scope`, issued `iat`.
pub fn test_token(scope: &str, iat: i64) -> String {
    let head = serde_json::json!({"alg": "none", "typ": "JWT"});
    let claims = serde_json::json!({
        "iss": "https://consumer.example/",
        "sub": "10019",
        "aud": "https://provider.example/fhir",
        "exp": iat + 300,
        "iat": iat,
        "reason_for_request": "directcare",
        "requested_scope": scope,
        "requesting_device": {
            "resourceType": "Device",
            "identifier": [{"system": "https://consumer.example/Id/device", "value": "dev-1"}],
            "model": "fhirbridge",
            "version": "0.1.0"
        },
        "requesting_organization": {
            "resourceType": "Organization",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A1001"}],
            "name": "Test Consumer"
        },
        "requesting_practitioner": {
            "resourceType": "Practitioner",
            "id": "10019",
            "identifier": [
                {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "111222333444"},
                {"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "444555666777"}
            ],
            "name": [{"family": "Jones", "given": ["Claire"], "prefix": ["Dr"]}]
        }
    });
    let enc = |v: &Value| crate::base64::encode(v.to_string().as_bytes(), Alphabet::UrlSafe);
    format!("{}.{}.", enc(&head), enc(&claims))
}
