//! Foundations: the capability statement, find/read a patient, practitioner
//! and organisation, read a location (`pages/foundations/*`).

use serde_json::{json, Value};

use super::outcome::GpcError;
use super::store::{Store, NHS_NUMBER_SYSTEM, ODS_SYSTEM, SDS_USER_SYSTEM};
use super::{searchset, Reply};

/// Whether `nhs` is ten digits whose last is the mod-11 check digit of the
/// first nine (`https://www.datadictionary.nhs.uk/attributes/nhs_number.html`).
pub fn valid_nhs_number(nhs: &str) -> bool {
    let digits: Vec<u32> = nhs.chars().filter_map(|c| c.to_digit(10)).collect();
    if nhs.len() != 10 || digits.len() != 10 {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .enumerate()
        .map(|(i, d)| d * (10 - i as u32))
        .sum();
    let check = 11 - sum % 11;
    match check {
        11 => digits[9] == 0,
        10 => false,
        c => digits[9] == c,
    }
}

/// The single `identifier=[system]|[value]` parameter of a find request.
fn identifier_param(query: &[(String, String)]) -> Result<(String, String), GpcError> {
    let values: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "identifier")
        .map(|(_, v)| v.as_str())
        .collect();
    let raw = match values.as_slice() {
        [one] => *one,
        [] => {
            return Err(GpcError::bad_request(
                "the identifier parameter is required",
            ))
        }
        _ => {
            return Err(GpcError::bad_request(
                "the identifier parameter may be given once",
            ))
        }
    };
    match raw.split_once('|') {
        Some((system, value)) if !system.is_empty() => Ok((system.to_string(), value.to_string())),
        _ => Err(GpcError::invalid_identifier_system(format!(
            "identifier {raw} has no system (expected system|value)"
        ))),
    }
}

pub fn find_patient(
    store: &Store,
    query: &[(String, String)],
    base: &str,
) -> Result<Reply, GpcError> {
    let (system, value) = identifier_param(query)?;
    if system != NHS_NUMBER_SYSTEM {
        return Err(GpcError::invalid_identifier_system(format!(
            "identifier system {system} is not supported (use {NHS_NUMBER_SYSTEM})"
        )));
    }
    if value.is_empty() {
        return Err(GpcError::invalid_identifier_value(
            "the NHS number is empty",
        ));
    }
    if !valid_nhs_number(&value) {
        return Err(GpcError::invalid_nhs_number(format!(
            "{value} is not a valid NHS number"
        )));
    }
    let found: Vec<Value> = store
        .patient_by_nhs(&value)
        .filter(|p| p["active"] == json!(true))
        .cloned()
        .into_iter()
        .collect();
    Ok(Reply::ok(searchset(base, found, Vec::new())))
}

pub fn read(store: &Store, resource_type: &str, id: &str) -> Result<Reply, GpcError> {
    match store.get(resource_type, id) {
        Some(r) => Ok(Reply::ok(r.clone())),
        None => {
            let d = format!("{resource_type}/{id} does not exist");
            Err(match resource_type {
                "Patient" => GpcError::patient_not_found(d),
                "Practitioner" => GpcError::practitioner_not_found(d),
                "Organization" => GpcError::organisation_not_found(d),
                _ => GpcError::no_record_found(d),
            })
        }
    }
}

/// Find a practitioner (`sds-user-id`) or an organisation (ODS code).
pub fn find_by_identifier(
    store: &Store,
    resource_type: &str,
    query: &[(String, String)],
    base: &str,
) -> Result<Reply, GpcError> {
    let (system, value) = identifier_param(query)?;
    let expected = if resource_type == "Practitioner" {
        SDS_USER_SYSTEM
    } else {
        ODS_SYSTEM
    };
    if system != expected {
        return Err(GpcError::invalid_identifier_system(format!(
            "identifier system {system} is not supported (use {expected})"
        )));
    }
    if value.is_empty() {
        return Err(GpcError::invalid_identifier_value(
            "the identifier value is empty",
        ));
    }
    let found: Vec<Value> = store
        .all(resource_type)
        .filter(|r| {
            r["identifier"].as_array().is_some_and(|ids| {
                ids.iter().any(|i| {
                    i["system"].as_str() == Some(expected) && i["value"].as_str() == Some(&value)
                })
            })
        })
        .cloned()
        .collect();
    Ok(Reply::ok(searchset(base, found, Vec::new())))
}

/// The STU3 CapabilityStatement.
pub fn capability_statement(now: &str) -> Value {
    let resource = |kind: &str, interactions: &[&str], params: Value| {
        let mut r = json!({
            "type": kind,
            "profile": {"reference": super::store::profile_for(kind)},
            "interaction": interactions.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
        });
        if params.as_array().is_some_and(|p| !p.is_empty()) {
            r["searchParam"] = params;
        }
        r
    };
    let token = |name: &str| json!({"name": name, "type": "token"});
    json!({
        "resourceType": "CapabilityStatement",
        "version": "1.2.7",
        "name": "GP Connect sandbox",
        "status": "active",
        "date": now,
        "publisher": "fhirbridge",
        "description": "Simulated GP system: GP Connect Foundations and Appointment Management 1.2.7, Access Record Structured 1.6.2 (allergies and medication); sandbox extension: Task for repeat prescription requests",
        "kind": "instance",
        "software": {"name": "fhirbridge GP Connect sandbox", "version": env!("CARGO_PKG_VERSION")},
        "fhirVersion": "3.0.1",
        "acceptUnknown": "both",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "resource": [
                resource("Patient", &["read", "search-type"], json!([token("identifier")])),
                resource("Organization", &["read", "search-type"], json!([token("identifier")])),
                resource("Practitioner", &["read", "search-type"], json!([token("identifier")])),
                resource("Location", &["read"], json!([])),
                resource("Slot", &["search-type"], json!([
                    token("status"),
                    {"name": "start", "type": "date"},
                    {"name": "end", "type": "date"},
                    token("searchFilter"),
                ])),
                resource("Appointment", &["read", "create", "update", "search-type"], json!([{"name": "start", "type": "date"}])),
                resource("Task", &["read", "create", "search-type"], json!([token("identifier")])),
            ],
            "operation": [{
                "name": "gpc.getstructuredrecord",
                "definition": {"reference": "https://fhir.nhs.uk/STU3/OperationDefinition/GPConnect-GetStructuredRecord-Operation-1"},
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_number_check_digit() {
        for ok in [
            "9000000009",
            "9000000017",
            "9000000025",
            "9000000033",
            "9476719931",
        ] {
            assert!(valid_nhs_number(ok), "{ok}");
        }
        for bad in [
            "9000000001",
            "900000000",
            "90000000090",
            "900000000X",
            "",
            "1234567890",
        ] {
            assert!(!valid_nhs_number(bad), "{bad}");
        }
    }
}
