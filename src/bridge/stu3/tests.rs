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
