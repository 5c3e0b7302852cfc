//! Access Record Structured 1.6.x: `POST /Patient/$gpc.getstructuredrecord`
//! (`pages/accessrecord_structured/accessrecord_structured_development_retrieve_patient_record.md`).
//!
//! Modelled clinical areas: allergies (`includeAllergies` with
//! `includeResolvedAllergies`) and medication (`includeMedication` with
//! `includePrescriptionIssues`, default true, and `medicationSearchFromDate`).
//!
//! Parameters the sandbox does not model (`includeConsultations`,
//! `includeProblems`, `includeImmunisations`, `includeUncategorisedData`,
//! `includeInvestigations`, `includeReferrals`, `includeDiaryEntries`) and
//! parameter names it does not know at all are **accepted**: the response is
//! a 200 whose Bundle carries, as the spec's forwards-compatibility rule
//! says (`accessrecord_structured_development_version_compatibility.md`),
//! one OperationOutcome with a `NOT_IMPLEMENTED` warning per unsupported
//! parameter (and per unknown part parameter of a supported one) and no
//! List for that area (an empty List would claim "nothing recorded"). The
//! spec's parameter combinations that are never permitted (consultations or
//! problems with another area's part parameters) are still refused with 422
//! `INVALID_PARAMETER`, as are malformed values (a part without a value, a
//! wrong value type, a partial or future `medicationSearchFromDate`,
//! `includeAllergies` without `includeResolvedAllergies`). A body that is
//! not a `Parameters` resource is 422 `INVALID_RESOURCE`.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};

use super::foundations::valid_nhs_number;
use super::outcome::{unsupported_parameter_issue, GpcError, OUTCOME_PROFILE};
use super::seed::SNOMED;
use super::store::{profile_for, Store, NHS_NUMBER_SYSTEM};
use super::time::{parse_date, uk, uk_date};
use super::Reply;

/// Part parameters that may not accompany `includeConsultations` (all) or
/// `includeProblems` (all but `includeProblems.filterStatus`).
const NOT_WITH_CONSULTATIONS_OR_PROBLEMS: [(&str, &str); 7] = [
    ("includeMedication", "medicationSearchFromDate"),
    ("includeUncategorisedData", "uncategorisedDataSearchPeriod"),
    ("includeProblems", "filterStatus"),
    ("includeReferrals", "referralSearchPeriod"),
    ("includeDiaryEntries", "diaryEntriesSearchDate"),
    ("includeImmunisations", "includeNotGiven"),
    ("includeImmunisations", "includeStatus"),
];

/// What the request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordQuery {
    pub nhs_number: String,
    /// `Some(include_resolved)` when allergies are asked for.
    pub allergies: Option<bool>,
    pub medication: Option<MedicationQuery>,
    /// Unsupported parameters and part parameters, as `name` or `name.part`.
    pub unsupported: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MedicationQuery {
    pub prescription_issues: bool,
    pub from: Option<NaiveDate>,
}

fn value_key(p: &Value) -> Option<(&String, &Value)> {
    p.as_object()?.iter().find(|(k, _)| k.starts_with("value"))
}

fn parts(param: &Value, name: &str) -> Result<Vec<(String, Value)>, GpcError> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let Some(list) = param.get("part") else {
        return Ok(out);
    };
    let list = list
        .as_array()
        .ok_or_else(|| GpcError::invalid_resource(format!("{name}.part is not an array")))?;
    for part in list {
        let pname = part["name"]
            .as_str()
            .ok_or_else(|| GpcError::invalid_resource(format!("a part of {name} has no name")))?;
        if out.iter().any(|(n, _)| n == pname) {
            return Err(GpcError::invalid_parameter(format!(
                "{name}.{pname} is given more than once"
            )));
        }
        let Some((key, value)) = value_key(part) else {
            return Err(GpcError::invalid_parameter(format!(
                "{name}.{pname} has no value"
            )));
        };
        out.push((pname.to_string(), json!({ key.clone(): value.clone() })));
    }
    Ok(out)
}

fn boolean_part(name: &str, part: &str, v: &Value) -> Result<bool, GpcError> {
    v.get("valueBoolean")
        .and_then(Value::as_bool)
        .ok_or_else(|| GpcError::invalid_parameter(format!("{name}.{part} must be a valueBoolean")))
}

/// Parses and validates the `Parameters` body as of `now`.
pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<RecordQuery, GpcError> {
    if body["resourceType"].as_str() != Some("Parameters") {
        return Err(GpcError::invalid_resource(
            "the request body is not a Parameters resource",
        ));
    }
    let params = body["parameter"]
        .as_array()
        .ok_or_else(|| GpcError::invalid_parameter("Parameters.parameter is missing"))?;
    let mut seen: Vec<(String, Vec<(String, Value)>)> = Vec::new();
    let mut nhs: Option<&Value> = None;
    for p in params {
        let name = p["name"]
            .as_str()
            .ok_or_else(|| GpcError::invalid_resource("a parameter has no name"))?;
        if seen.iter().any(|(n, _)| n == name) {
            return Err(GpcError::invalid_parameter(format!(
                "{name} is given more than once"
            )));
        }
        if name == "patientNHSNumber" {
            nhs = Some(p);
        }
        seen.push((name.to_string(), parts(p, name)?));
    }
    let nhs = nhs
        .ok_or_else(|| GpcError::invalid_parameter("the patientNHSNumber parameter is required"))?;
    let identifier = nhs
        .get("valueIdentifier")
        .filter(|v| v.is_object())
        .ok_or_else(|| GpcError::invalid_parameter("patientNHSNumber must be a valueIdentifier"))?;
    if identifier["system"].as_str() != Some(NHS_NUMBER_SYSTEM) {
        return Err(GpcError::invalid_identifier_system(format!(
            "patientNHSNumber system must be {NHS_NUMBER_SYSTEM}"
        )));
    }
    let number = identifier["value"].as_str().unwrap_or_default().trim();
    if !valid_nhs_number(number) {
        return Err(GpcError::invalid_nhs_number(format!(
            "patientNHSNumber {number:?} is not a valid NHS number"
        )));
    }

    let has = |top: &str| seen.iter().any(|(n, _)| n == top);
    let has_part = |top: &str, part: &str| {
        seen.iter()
            .any(|(n, ps)| n == top && ps.iter().any(|(p, _)| p == part))
    };
    for area in ["includeConsultations", "includeProblems"] {
        if !has(area) {
            continue;
        }
        for (top, part) in NOT_WITH_CONSULTATIONS_OR_PROBLEMS {
            if area == "includeProblems" && top == "includeProblems" {
                continue;
            }
            if has_part(top, part) {
                return Err(GpcError::invalid_parameter(format!(
                    "{top}.{part} is not permitted together with {area}"
                )));
            }
        }
    }

    let mut query = RecordQuery {
        nhs_number: number.to_string(),
        allergies: None,
        medication: None,
        unsupported: Vec::new(),
    };
    for (name, ps) in &seen {
        match name.as_str() {
            "patientNHSNumber" => {}
            "includeAllergies" => {
                let mut resolved = None;
                for (part, v) in ps {
                    if part == "includeResolvedAllergies" {
                        resolved = Some(boolean_part(name, part, v)?);
                    } else {
                        query.unsupported.push(format!("{name}.{part}"));
                    }
                }
                let resolved = resolved.ok_or_else(|| {
                    GpcError::invalid_parameter(
                        "includeAllergies needs the includeResolvedAllergies part parameter",
                    )
                })?;
                query.allergies = Some(resolved);
            }
            "includeMedication" => {
                let mut med = MedicationQuery {
                    prescription_issues: true,
                    from: None,
                };
                for (part, v) in ps {
                    match part.as_str() {
                        "includePrescriptionIssues" => {
                            med.prescription_issues = boolean_part(name, part, v)?;
                        }
                        "medicationSearchFromDate" => {
                            let date = v
                                .get("valueDate")
                                .and_then(Value::as_str)
                                .and_then(parse_date)
                                .ok_or_else(|| {
                                    GpcError::invalid_parameter(
                                        "includeMedication.medicationSearchFromDate must be a whole valueDate (yyyy-mm-dd)",
                                    )
                                })?;
                            if date > uk_date(now) {
                                return Err(GpcError::invalid_parameter(
                                    "includeMedication.medicationSearchFromDate is after today",
                                ));
                            }
                            med.from = Some(date);
                        }
                        _ => query.unsupported.push(format!("{name}.{part}")),
                    }
                }
                query.medication = Some(med);
            }
            // Unmodelled areas and unknown names alike: a warning, not an error.
            other => query.unsupported.push(other.to_string()),
        }
    }
    Ok(query)
}

/// A structured-record resource as the spec wants it in the Bundle: the
/// clinical profiles carry no `meta.versionId` or `meta.lastUpdated`.
fn for_bundle(resource: &Value) -> Value {
    let mut r = resource.clone();
    let clinical = matches!(
        r["resourceType"].as_str(),
        Some("MedicationStatement" | "MedicationRequest" | "Medication" | "AllergyIntolerance")
    );
    if clinical {
        if let Some(m) = r.get_mut("meta").and_then(Value::as_object_mut) {
            m.remove("versionId");
            m.remove("lastUpdated");
        }
    }
    r
}

fn list(title: &str, code: &str, patient: &str, now: DateTime<Utc>, items: Vec<Value>) -> Value {
    let mut l = json!({
        "resourceType": "List",
        "meta": {"profile": [profile_for("List")]},
        "extension": [{
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-ClinicalSetting-1",
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "1060971000000108", "display": "General practice service"}]},
        }],
        "status": "current",
        "mode": "snapshot",
        "title": title,
        "code": {"coding": [{"system": SNOMED, "code": code, "display": title}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "date": uk(now),
        "orderedBy": {"coding": [{"system": "http://hl7.org/fhir/list-order", "code": "event-date", "display": "Sorted by Event Date"}]},
    });
    if items.is_empty() {
        l["emptyReason"] = json!({"coding": [{"system": "http://hl7.org/fhir/list-empty-reason", "code": "no-content-recorded", "display": "No Content Recorded"}]});
        l["note"] = json!([{"text": "Information not available"}]);
    } else {
        l["entry"] = Value::Array(items);
    }
    l
}

fn item(resource: &Value) -> Value {
    json!({"item": {"reference": format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    )}})
}

fn local_ref<'a>(v: &'a Value, prefix: &str) -> Option<&'a str> {
    v["reference"].as_str()?.strip_prefix(prefix)
}

/// The `GPConnect-StructuredRecord-Bundle-1` for `query`; `trace_id` is the
/// request's `Ssp-TraceID` (the spec makes it the Bundle id).
pub fn build(
    store: &Store,
    query: &RecordQuery,
    trace_id: &str,
    now: DateTime<Utc>,
) -> Result<Reply, GpcError> {
    let patient = store
        .patient_by_nhs(&query.nhs_number)
        .filter(|p| p["active"] == json!(true))
        .ok_or_else(|| {
            GpcError::patient_not_found(format!(
                "no patient with NHS number {} is registered here",
                query.nhs_number
            ))
        })?;
    let pid = patient["id"].as_str().unwrap_or_default().to_string();
    let mut entries: Vec<Value> = vec![patient.clone()];
    let org = local_ref(&patient["managingOrganization"], "Organization/")
        .and_then(|id| store.get("Organization", id));
    entries.extend(org.cloned());
    let gp = patient["generalPractitioner"]
        .as_array()
        .and_then(|g| g.first())
        .and_then(|r| local_ref(r, "Practitioner/"))
        .and_then(|id| store.get("Practitioner", id));
    if let Some(gp) = gp {
        entries.push(gp.clone());
        let gp_ref = format!("Practitioner/{}", gp["id"].as_str().unwrap_or_default());
        entries.extend(
            store
                .all("PractitionerRole")
                .filter(|r| r["practitioner"]["reference"].as_str() == Some(gp_ref.as_str()))
                .cloned(),
        );
    }
    let patient_ref = format!("Patient/{pid}");
    let mine =
        |r: &&Value, field: &str| r[field]["reference"].as_str() == Some(patient_ref.as_str());

    if let Some(include_resolved) = query.allergies {
        let active: Vec<&Value> = store
            .all("AllergyIntolerance")
            .filter(|a| mine(a, "patient"))
            .filter(|a| a["clinicalStatus"].as_str() == Some("active"))
            .collect();
        entries.push(list(
            "Allergies and adverse reactions",
            "886921000000105",
            &pid,
            now,
            active.iter().map(|a| item(a)).collect(),
        ));
        entries.extend(active.iter().map(|a| for_bundle(a)));
        if include_resolved {
            // Ended allergies are contained in their List (none are seeded).
            let resolved: Vec<Value> = store
                .all("AllergyIntolerance")
                .filter(|a| mine(a, "patient"))
                .filter(|a| a["clinicalStatus"].as_str() == Some("resolved"))
                .map(for_bundle)
                .collect();
            let items = resolved
                .iter()
                .map(|a| json!({"item": {"reference": format!("#{}", a["id"].as_str().unwrap_or_default())}}))
                .collect();
            let mut ended = list("Ended allergies", "1103671000000101", &pid, now, items);
            if !resolved.is_empty() {
                ended["contained"] = Value::Array(resolved);
            }
            entries.push(ended);
        }
    }

    if let Some(med) = &query.medication {
        let statements: Vec<&Value> = store
            .all("MedicationStatement")
            .filter(|s| mine(s, "subject"))
            .filter(|s| match med.from {
                None => true,
                // Active on or after the date: no end, or an end on/after it.
                Some(from) => s["effectivePeriod"]["end"]
                    .as_str()
                    .and_then(parse_date)
                    .is_none_or(|end| end >= from),
            })
            .collect();
        entries.push(list(
            "Medications and medical devices",
            "933361000000108",
            &pid,
            now,
            statements.iter().map(|s| item(s)).collect(),
        ));
        let plan_ids: Vec<&str> = statements
            .iter()
            .filter_map(|s| s["basedOn"].as_array()?.first())
            .filter_map(|r| local_ref(r, "MedicationRequest/"))
            .collect();
        let plans: Vec<&Value> = plan_ids
            .iter()
            .filter_map(|id| store.get("MedicationRequest", id))
            .collect();
        let orders: Vec<&Value> = if med.prescription_issues {
            store
                .all("MedicationRequest")
                .filter(|r| r["intent"].as_str() == Some("order"))
                .filter(|r| {
                    r["basedOn"].as_array().is_some_and(|b| {
                        b.iter()
                            .filter_map(|r| local_ref(r, "MedicationRequest/"))
                            .any(|p| plan_ids.contains(&p))
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut medications: Vec<&str> = statements
            .iter()
            .filter_map(|s| local_ref(&s["medicationReference"], "Medication/"))
            .collect();
        medications.sort_unstable();
        medications.dedup();
        entries.extend(statements.iter().map(|s| for_bundle(s)));
        entries.extend(plans.iter().map(|p| for_bundle(p)));
        entries.extend(orders.iter().map(|o| for_bundle(o)));
        entries.extend(
            medications
                .iter()
                .filter_map(|id| store.get("Medication", id))
                .map(for_bundle),
        );
    }

    if !query.unsupported.is_empty() {
        entries.push(json!({
            "resourceType": "OperationOutcome",
            "id": uuid::Uuid::new_v4().to_string(),
            "meta": {"profile": [OUTCOME_PROFILE]},
            "issue": query.unsupported.iter().map(|n| unsupported_parameter_issue(n)).collect::<Vec<_>>(),
        }));
    }
    Ok(Reply::ok(json!({
        "resourceType": "Bundle",
        "id": trace_id,
        "meta": {"profile": ["https://fhir.nhs.uk/STU3/StructureDefinition/GPConnect-StructuredRecord-Bundle-1"]},
        "type": "collection",
        "entry": entries.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>(),
    })))
}
