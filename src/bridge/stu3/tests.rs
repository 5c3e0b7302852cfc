//! STU3 → R4 mapping, on GP Connect example resources (`fixtures/gpconnect/`)
//! and on hand-written cases for each rule.

use super::*;
use serde_json::json;

#[test]
fn appointment_extensions_and_renamed_elements() {
    let stu3 = json!({"resourceType": "Appointment", "id": "1", "status": "cancelled",
    "reason": [{"text": "r"}], "incomingReferral": [{"reference": "ReferralRequest/1"}],
    "serviceCategory": {"text": "GP"},
    "extension": [
        {"url": BOOKING_ORG_STU3, "valueReference": {"reference": "#1"}},
        {"url": CHANNEL_STU3, "valueCode": "Telephone"},
        {"url": CANCEL_REASON_STU3, "valueString": "Double booked"}
    ]});
    let r4 = to_r4(stu3).unwrap();
    assert_eq!(r4["reasonCode"][0]["text"], "r");
    assert_eq!(r4["basedOn"][0]["reference"], "ReferralRequest/1");
    assert_eq!(r4["serviceCategory"][0]["text"], "GP");
    assert_eq!(r4["cancelationReason"]["text"], "Double booked");
    let exts = r4["extension"].as_array().unwrap();
    assert!(exts
        .iter()
        .any(|e| e["url"] == BOOKING_ORG_R4 && e["valueReference"]["reference"] == "#1"));
    assert!(exts.iter().any(|e| e["url"] == CHANNEL_R4
        && e["valueCodeableConcept"]["coding"][0]["code"] == "Telephone"
        && e["valueCodeableConcept"]["coding"][0]["system"] == CHANNEL_SYSTEM));
    let back = appointment_to_stu3(r4);
    assert_eq!(back["reason"][0]["text"], "r");
    assert_eq!(back["serviceCategory"]["text"], "GP");
    let exts = back["extension"].as_array().unwrap();
    assert!(exts
        .iter()
        .any(|e| e["url"] == CANCEL_REASON_STU3 && e["valueString"] == "Double booked"));
    assert!(exts
        .iter()
        .any(|e| e["url"] == CHANNEL_STU3 && e["valueCode"] == "Telephone"));
}

#[test]
fn medication_request_plan_becomes_uk_core_repeat() {
    let stu3 = json!({"resourceType": "MedicationRequest", "id": "p1", "intent": "plan", "status": "active",
        "context": {"reference": "Encounter/e"},
        "requester": {"agent": {"reference": "Practitioner/gp"}},
        "substitution": {"allowed": false},
        "extension": [
          {"url": PRESCRIPTION_TYPE_STU3, "valueCodeableConcept": {"coding": [{"code": "repeat"}]}},
          {"url": REPEAT_INFO_STU3, "extension": [
            {"url": "numberOfRepeatPrescriptionsAllowed", "valueUnsignedInt": 6},
            {"url": "numberOfRepeatPrescriptionsIssued", "valueUnsignedInt": 1},
            {"url": "authorisationExpiryDate", "valueDateTime": "2030-01-01T00:00:00+00:00"}]}]});
    let r4 = to_r4(stu3).unwrap();
    assert_eq!(r4["encounter"]["reference"], "Encounter/e");
    assert_eq!(r4["requester"]["reference"], "Practitioner/gp");
    assert_eq!(r4["substitution"]["allowedBoolean"], false);
    assert_eq!(r4["courseOfTherapyType"]["coding"][0]["code"], "continuous");
    assert_eq!(r4["dispenseRequest"]["numberOfRepeatsAllowed"], 6);
    let info = &r4["extension"][0];
    assert_eq!(info["url"], REPEAT_INFO_R4);
    assert_eq!(info["extension"][0]["url"], "numberOfPrescriptionsIssued");
}

#[test]
fn allergy_statuses_become_codeable_concepts_and_unknown_types_are_refused() {
    let r4 = to_r4(
        json!({"resourceType": "AllergyIntolerance", "id": "a", "clinicalStatus": "active",
        "verificationStatus": "confirmed", "assertedDate": "2020-01-01",
        "reaction": [{"certainty": "likely", "manifestation": [{"text": "rash"}]}]}),
    )
    .unwrap();
    assert_eq!(r4["clinicalStatus"]["coding"][0]["code"], "active");
    assert_eq!(r4["verificationStatus"]["coding"][0]["code"], "confirmed");
    assert_eq!(r4["recordedDate"], "2020-01-01");
    assert!(r4["reaction"][0].get("certainty").is_none());
    assert!(to_r4(json!({"resourceType": "Binary", "id": "x"})).is_err());
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/fixtures/gpconnect/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

/// Structure errors of `v` as R4 (the server's own R4 type model).
fn r4_errors(v: &Value) -> Vec<String> {
    fhir_structure::check::check_resource(v)
        .into_iter()
        .filter(|i| i.severity == fhir_structure::check::Severity::Error)
        .map(|i| format!("{} {}", i.expression, i.message))
        .collect()
}

/// Every example resource of the GP Connect specification maps to
/// structurally valid R4 (no STU3-only element survives).
#[test]
fn the_specifications_examples_map_to_valid_r4() {
    for name in [
        "appointment-booked",
        "appointment-cancelled",
        "slot",
        "schedule",
        "patient",
        "medicationrequest-plan",
        "medicationrequest-order",
        "medicationstatement",
        "medication",
        "allergyintolerance",
    ] {
        let r4 = to_r4(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors = r4_errors(&r4);
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    let bundle = fixture("structured-record-bundle");
    let mut mapped = 0;
    for e in bundle["entry"].as_array().unwrap() {
        let r = &e["resource"];
        if !MAPPED.contains(&r["resourceType"].as_str().unwrap_or("")) {
            continue;
        }
        let r4 = to_r4(r.clone()).unwrap();
        assert!(
            r4_errors(&r4).is_empty(),
            "{}: {:?}",
            r["resourceType"],
            r4_errors(&r4)
        );
        mapped += 1;
    }
    assert!(mapped >= 5, "{mapped}");
}

#[test]
fn the_specifications_appointment_and_medication_examples_keep_their_meaning() {
    let booked = to_r4(fixture("appointment-booked")).unwrap();
    let exts = booked["extension"].as_array().unwrap();
    assert!(exts.iter().any(|e| e["url"] == BOOKING_ORG_R4));
    assert!(exts.iter().any(|e| e["url"] == CHANNEL_R4));
    assert!(booked["serviceCategory"].is_array());
    assert!(booked["meta"].get("profile").is_none());
    let cancelled = to_r4(fixture("appointment-cancelled")).unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(
        cancelled["cancelationReason"]["text"].is_string(),
        "{cancelled}"
    );
    let plan = to_r4(fixture("medicationrequest-plan")).unwrap();
    assert_eq!(plan["intent"], "plan");
    assert!(
        plan["courseOfTherapyType"]["coding"][0]["code"].is_string(),
        "{plan}"
    );
    assert!(plan["extension"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["url"] == REPEAT_INFO_R4));
    let order = to_r4(fixture("medicationrequest-order")).unwrap();
    assert_eq!(order["intent"], "order");
    assert!(order["basedOn"][0]["reference"].is_string());
    let allergy = to_r4(fixture("allergyintolerance")).unwrap();
    assert!(allergy["clinicalStatus"]["coding"][0]["code"].is_string());
    assert!(allergy.get("assertedDate").is_none());
    let oo = fixture("operationoutcome");
    assert_eq!(spine_code(&oo).as_deref(), Some("REFERENCE_NOT_FOUND"));
}
