//! R4 AuditEvents from what a request did: one event per patient touched
//! (naming only that patient and their resources), resources about no
//! patient in a patient-less event. Codes: `type`
//! `audit-event-type|rest` (or DCM `110114` User Authentication for the
//! token endpoint, subtype DCM `110122` Login), `subtype`
//! `restful-interaction|{code}`, `action` C/R/U/D/E, `outcome` 0/4/8.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::Touch;
use crate::context::Principal;
use crate::policy::Action;
use crate::storage::AuditRecord;

pub const TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
pub const SUBTYPE_SYSTEM: &str = "http://hl7.org/fhir/restful-interaction";
pub const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
pub const CLIENT_ID_SYSTEM: &str = "https://fhir.nhs.uk/Id/client-id";
const ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/object-role";

/// The code system of an event `type` or `subtype` code we record.
pub fn system_of(code: &str) -> &'static str {
    match code {
        "rest" => TYPE_SYSTEM,
        "110114" | "110122" => DCM,
        _ => SUBTYPE_SYSTEM,
    }
}

/// What kind of event a request gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A FHIR RESTful interaction (subtype: its restful-interaction code).
    Rest(&'static str),
    /// The token endpoint.
    Login,
}

/// One finished request, as the audit sees it.
pub struct Request<'a> {
    pub kind: Kind,
    pub status: u16,
    pub principal: &'a Principal,
    /// The client a token request named (before a token exists).
    pub client: Option<String>,
    pub peer: Option<String>,
    /// The server (`source.observer`).
    pub observer: &'a str,
    /// The search parameters (`a=b&c=d`).
    pub query: Option<String>,
    pub touched: Vec<Touch>,
    /// Unix milliseconds.
    pub recorded: i64,
}

/// The restful-interaction code of a request, from its handler's label (or,
/// when no handler ran, its route and method).
pub fn subtype(label: Option<&str>, pattern: &str, method: &str) -> &'static str {
    match label {
        Some("read") => return "read",
        Some("vread") => return "vread",
        Some("search-type" | "search-compartment") => return "search-type",
        Some("search-system") => return "search-system",
        Some("history-instance") => return "history-instance",
        Some("history-type") => return "history-type",
        Some("history-system") => return "history-system",
        Some("create") => return "create",
        Some("update") => return "update",
        Some("patch") => return "patch",
        Some("delete") => return "delete",
        Some("batch") => return "batch",
        Some("transaction") => return "transaction",
        Some("operation-validate") => return "operation",
        _ => {}
    }
    let segs: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    match (segs.as_slice(), method) {
        (["fhir"], "POST") => "transaction",
        (["fhir"], _) => "search-system",
        (["fhir", "_history"], _) => "history-system",
        (["fhir", _], "POST") => "create",
        (["fhir", _], "PUT") => "update",
        (["fhir", _], "DELETE") => "delete",
        (["fhir", _], _) | (["fhir", _, "_search"], _) => "search-type",
        (["fhir", _, "_history"], _) => "history-type",
        (["fhir", _, "{id}"], "PUT") => "update",
        (["fhir", _, "{id}"], "DELETE") => "delete",
        (["fhir", _, "{id}"], "PATCH") => "patch",
        (["fhir", _, "{id}"], _) => "read",
        (["fhir", _, _, "_history"], _) => "history-instance",
        (["fhir", _, _, "_history", _], _) => "vread",
        (["fhir", _, _, t], _) if !t.starts_with('$') => "search-type",
        _ => "operation",
    }
}

fn action_of(subtype: &str) -> &'static str {
    match subtype {
        "create" => "C",
        "update" | "patch" => "U",
        "delete" => "D",
        "read" | "vread" | "search-type" | "search-system" | "history-instance"
        | "history-type" | "history-system" => "R",
        _ => "E",
    }
}

fn outcome_of(status: u16) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    }
}

/// The events of one request.
pub fn build(r: Request<'_>) -> Vec<AuditRecord> {
    let (type_code, type_display, subtype, subtype_display) = match r.kind {
        Kind::Rest(s) => ("rest", "RESTful Operation", s, s),
        Kind::Login => ("110114", "User Authentication", "110122", "Login"),
    };
    let action = match r.kind {
        Kind::Rest(s) => action_of(s),
        Kind::Login => "E",
    };
    let outcome = outcome_of(r.status);
    let (client, who) = identities(r.principal);
    let client = client.or(r.client);

    // Group the touched resources by patient.
    let mut groups: BTreeMap<Option<String>, Vec<&Touch>> = BTreeMap::new();
    for t in &r.touched {
        if t.patients.is_empty() {
            groups.entry(None).or_default().push(t);
        }
        for p in &t.patients {
            groups.entry(Some(p.clone())).or_default().push(t);
        }
    }
    // The query may name other patients: it goes into the one event, or
    // (several patients) into the patient-less one.
    if groups.is_empty() || (r.query.is_some() && groups.len() > 1) {
        groups.entry(None).or_default();
    }
    let single = groups.len() == 1;
    let recorded = crate::model::Instant(r.recorded).to_fhir();

    let mut agents = Vec::new();
    let mut client_agent = json!({
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "code": "datacollector", "display": "data collector"}]},
        "requestor": true,
    });
    match &client {
        Some(c) => {
            client_agent["who"] = json!({"identifier": {"system": CLIENT_ID_SYSTEM, "value": c}});
        }
        None => {
            client_agent["who"] = json!({"display": match r.principal {
                Principal::Anonymous => "anonymous (access control off)",
                Principal::System { .. } => "fhirbridge",
                Principal::Caller(_) => "unidentified client",
            }});
        }
    }
    if let Some(peer) = &r.peer {
        client_agent["network"] = json!({"address": peer, "type": "2"});
    }
    agents.push(client_agent);
    let nhs = match r.principal {
        Principal::Caller(c) => c.nhs_number.clone(),
        _ => None,
    };
    if who.is_some() || nhs.is_some() {
        let mut w = json!({});
        if let Some(who) = &who {
            w["reference"] = json!(who);
        }
        if let Some(n) = &nhs {
            // The person acting (a proxy acts under their own NHS number).
            w["identifier"] = json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": n});
        }
        agents.push(json!({
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP", "display": "information recipient"}]},
            "who": w,
            "requestor": true,
        }));
    }

    groups
        .into_iter()
        .map(|(patient, touched)| {
            let id = uuid::Uuid::new_v4().to_string();
            let mut entities = Vec::new();
            let mut refs = Vec::new();
            if let Some(p) = &patient {
                let what = format!("Patient/{p}");
                entities.push(json!({
                    "what": {"reference": what},
                    "role": {"system": ROLE_SYSTEM, "code": "1", "display": "Patient"},
                }));
                refs.push(what);
            }
            for t in touched {
                let what = t.reference();
                let mut entity = json!({
                    "what": {"reference": what},
                    "role": {"system": ROLE_SYSTEM, "code": "4", "display": "Domain Resource"},
                    "lifecycle": {"system": "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle",
                        "code": lifecycle(t.action)},
                });
                // A resource held by a GP system names the supplier it came from.
                if let Some(src) = &t.source {
                    entity["detail"] = json!([{"type": "supplier", "valueString": src}]);
                }
                entities.push(entity);
                refs.push(what);
            }
            if let Some(q) = r.query.as_deref().filter(|_| single || patient.is_none()) {
                entities.push(json!({
                    "role": {"system": ROLE_SYSTEM, "code": "24", "display": "Query"},
                    "query": crate::base64::encode(q.as_bytes(), crate::base64::Alphabet::Standard),
                }));
            }
            let mut event = json!({
                "resourceType": "AuditEvent",
                "id": id,
                "meta": {"versionId": "1", "lastUpdated": recorded},
                "type": {"system": system_of(type_code), "code": type_code, "display": type_display},
                "subtype": [{"system": system_of(subtype), "code": subtype, "display": subtype_display}],
                "action": action,
                "recorded": recorded,
                "outcome": outcome,
                "agent": agents,
                "source": {
                    "observer": {"display": r.observer},
                    "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                        "code": "4", "display": "Application Server"}],
                },
            });
            if !entities.is_empty() {
                event["entity"] = Value::Array(entities);
            }
            AuditRecord {
                id,
                recorded: r.recorded,
                patient_id: patient,
                type_code: type_code.to_owned(),
                subtype: subtype.to_owned(),
                action: action.to_owned(),
                outcome: outcome.to_owned(),
                agent: client.clone(),
                entities: refs,
                content: event.to_string(),
            }
        })
        .collect()
}

/// DICOM lifecycle codes: 6 access/use, 1 origination, 3 amendment, 14 logical deletion.
fn lifecycle(a: Action) -> &'static str {
    match a {
        Action::Create => "1",
        Action::Update => "3",
        Action::Delete => "14",
        Action::Read | Action::Search => "6",
    }
}

/// The caller's client id and the user's or patient's reference.
fn identities(p: &Principal) -> (Option<String>, Option<String>) {
    match p {
        Principal::Caller(c) => {
            let who = match (&c.fhir_user, &c.patient) {
                (Some((ty, id)), _) => Some(format!("{ty}/{id}")),
                (None, Some(pid)) if c.kind().as_str() == "patient" => {
                    Some(format!("Patient/{pid}"))
                }
                _ => None,
            };
            (c.client_id.clone(), who)
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::subtype;

    #[test]
    fn subtypes_from_routes() {
        assert_eq!(subtype(None, "/fhir/{type}/{id}", "GET"), "read");
        assert_eq!(subtype(None, "/fhir/{type}", "POST"), "create");
        assert_eq!(
            subtype(None, "/fhir/{type}/{id}/_history/{vid}", "GET"),
            "vread"
        );
        assert_eq!(subtype(None, "/fhir", "POST"), "transaction");
        assert_eq!(
            subtype(None, "/fhir/{type}/{id}/$validate", "POST"),
            "operation"
        );
        assert_eq!(subtype(Some("search-compartment"), "", ""), "search-type");
    }
}
