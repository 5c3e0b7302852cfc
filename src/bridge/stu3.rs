//! GP Connect STU3 (CareConnect) ↔ R4 (UK Core), in the adapter, not in
//! storage. Mapped per the GP Connect STU3→R4 notes: Appointment `reason` →
//! `reasonCode`, `indication` → `reasonReference`, `incomingReferral` →
//! `basedOn`, the cancellation-reason extension → `cancelationReason`, the
//! booking-organisation and delivery-channel extensions → UK Core's;
//! MedicationRequest `context` → `encounter`, `requester.agent` →
//! `requester`, `substitution.allowed` → `allowedBoolean`, the prescription
//! type → `courseOfTherapyType`, the repeat information → UK Core's (and
//! `dispenseRequest.numberOfRepeatsAllowed`); AllergyIntolerance status codes
//! → CodeableConcepts, `assertedDate` → `recordedDate`; `serviceCategory`
//! (0..1 in STU3) → a list. Elements R4 dropped (`MedicationStatement.taken`,
//! `Medication.isBrand`, …) are dropped; unknown extensions are kept.

use serde_json::{json, Map, Value};

pub const GPC: &str = "https://fhir.nhs.uk/STU3/StructureDefinition/";
pub const UKCORE: &str = "https://fhir.hl7.org.uk/StructureDefinition/";
pub const BOOKING_ORG_STU3: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-BookingOrganisation-1";
pub const BOOKING_ORG_R4: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-BookingOrganization";
pub const CHANNEL_STU3: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-DeliveryChannel-2";
pub const CHANNEL_STU3_V1: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-DeliveryChannel-1";
pub const CHANNEL_R4: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-DeliveryChannel";
pub const CHANNEL_SYSTEM: &str = "https://fhir.hl7.org.uk/CodeSystem/UKCore-DeliveryChannel";
pub const CANCEL_REASON_STU3: &str = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-GPConnect-AppointmentCancellationReason-1";
pub const REPEAT_INFO_STU3: &str = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-MedicationRepeatInformation-1";
pub const PRESCRIPTION_TYPE_STU3: &str =
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-PrescriptionType-1";
pub const REPEAT_INFO_R4: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation";
const COURSE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy";
const UK_COURSE_SYSTEM: &str =
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-MedicationRequestCourseOfTherapy";

/// The resource types this mapping reads from a GP Connect provider.
pub const MAPPED: [&str; 12] = [
    "Appointment",
    "Slot",
    "Schedule",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "AllergyIntolerance",
    "Patient",
    "Practitioner",
    "Location",
    "Organization",
    "PractitionerRole",
];

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn rename(o: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = o.remove(from) {
        o.insert(to.to_owned(), v);
    }
}

fn listify(o: &mut Map<String, Value>, key: &str) {
    if let Some(v) = o.get_mut(key) {
        if !v.is_array() {
            *v = Value::Array(vec![v.take()]);
        }
    }
}

/// Takes the extensions with `url` out of `o`.
fn take_ext(o: &mut Map<String, Value>, url: &str) -> Vec<Value> {
    let Some(Value::Array(list)) = o.get_mut("extension") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    list.retain(|e| {
        if e.get("url").and_then(Value::as_str) == Some(url) {
            out.push(e.clone());
            false
        } else {
            true
        }
    });
    if list.is_empty() {
        o.remove("extension");
    }
    out
}

fn push_ext(o: &mut Map<String, Value>, ext: Value) {
    match o.get_mut("extension") {
        Some(Value::Array(list)) => list.push(ext),
        _ => {
            o.insert("extension".into(), Value::Array(vec![ext]));
        }
    }
}

/// The R4 form of a STU3 meta: the server's version and time kept, STU3
/// profile claims dropped (the content is not checked against R4 profiles).
fn meta(o: &mut Map<String, Value>) {
    if let Some(Value::Object(m)) = o.get_mut("meta") {
        m.remove("profile");
        if m.is_empty() {
            o.remove("meta");
        }
    }
}

/// A STU3 resource from a GP Connect provider as R4. `Err`: a type this
/// mapping does not know (the caller treats it as a bad answer).
pub fn to_r4(mut v: Value) -> Result<Value, String> {
    let ty = v
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or("a resource without resourceType")?
        .to_owned();
    let o = obj(&mut v).ok_or("not an object")?;
    meta(o);
    if let Some(Value::Array(contained)) = o.get_mut("contained") {
        for c in contained.iter_mut() {
            *c = to_r4(c.take())?;
        }
    }
    match ty.as_str() {
        "Appointment" => appointment(o),
        "Slot" => {
            listify(o, "serviceCategory");
            channel(o);
        }
        "Schedule" => listify(o, "serviceCategory"),
        "MedicationRequest" => medication_request(o),
        "MedicationStatement" => {
            o.remove("taken");
            rename(o, "reasonNotTaken", "statusReason");
            rename(o, "reasonNotGiven", "statusReason");
        }
        "Medication" => {
            o.remove("isBrand");
            o.remove("isOverTheCounter");
            o.remove("package");
            if let Some(Value::Array(ings)) = o.get_mut("ingredient") {
                for i in ings.iter_mut().filter_map(Value::as_object_mut) {
                    rename(i, "amount", "strength");
                }
            }
        }
        "AllergyIntolerance" => allergy(o),
        "Patient" => {
            o.remove("animal");
        }
        "Practitioner" | "PractitionerRole" | "Location" | "Organization" | "OperationOutcome" => {}
        other => return Err(format!("a {other} is not a resource this bridge maps")),
    }
    Ok(v)
}

fn channel(o: &mut Map<String, Value>) {
    for url in [CHANNEL_STU3, CHANNEL_STU3_V1] {
        for e in take_ext(o, url) {
            let code = e
                .get("valueCode")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    e.pointer("/valueCodeableConcept/coding/0/code")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            if let Some(code) = code {
                push_ext(
                    o,
                    json!({"url": CHANNEL_R4, "valueCodeableConcept": {"coding": [
                        {"system": CHANNEL_SYSTEM, "code": code, "display": code}]}}),
                );
            }
        }
    }
}

fn appointment(o: &mut Map<String, Value>) {
    rename(o, "reason", "reasonCode");
    rename(o, "indication", "reasonReference");
    rename(o, "incomingReferral", "basedOn");
    listify(o, "serviceCategory");
    for e in take_ext(o, BOOKING_ORG_STU3) {
        if let Some(r) = e.get("valueReference") {
            push_ext(o, json!({"url": BOOKING_ORG_R4, "valueReference": r}));
        }
    }
    channel(o);
    for e in take_ext(o, CANCEL_REASON_STU3) {
        if let Some(s) = e.get("valueString") {
            o.insert("cancelationReason".into(), json!({"text": s}));
        }
    }
}

fn medication_request(o: &mut Map<String, Value>) {
    rename(o, "context", "encounter");
    if let Some(agent) = o
        .get_mut("requester")
        .and_then(|r| r.get_mut("agent"))
        .map(Value::take)
    {
        o.insert("requester".into(), agent);
    }
    if let Some(Value::Object(s)) = o.get_mut("substitution") {
        rename(s, "allowed", "allowedBoolean");
    }
    for e in take_ext(o, PRESCRIPTION_TYPE_STU3) {
        let code = e
            .pointer("/valueCoding/code")
            .or_else(|| e.pointer("/valueCodeableConcept/coding/0/code"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let course = match code {
            "acute" | "delayed-prescribing" => {
                Some((COURSE_SYSTEM, "acute", "Short course (acute) therapy"))
            }
            "repeat" => Some((COURSE_SYSTEM, "continuous", "Continuous long term therapy")),
            "repeat-dispensing" => Some((
                UK_COURSE_SYSTEM,
                "continuous-repeating-dispensing",
                "Continuous long term (repeat dispensing)",
            )),
            _ => None,
        };
        if let Some((system, code, display)) = course {
            o.insert(
                "courseOfTherapyType".into(),
                json!({"coding": [{"system": system, "code": code, "display": display}]}),
            );
        }
    }
    for e in take_ext(o, REPEAT_INFO_STU3) {
        let part = |name: &str| {
            e.get("extension")
                .and_then(Value::as_array)
                .and_then(|l| {
                    l.iter()
                        .find(|p| p.get("url").and_then(Value::as_str) == Some(name))
                })
                .cloned()
        };
        let mut parts = Vec::new();
        // The spec's examples use positiveInt and unsignedInt alike.
        if let Some(n) = part("numberOfRepeatPrescriptionsIssued").and_then(|p| {
            p.get("valueUnsignedInt")
                .or(p.get("valuePositiveInt"))
                .cloned()
        }) {
            parts.push(json!({"url": "numberOfPrescriptionsIssued", "valueUnsignedInt": n}));
        }
        if let Some(d) =
            part("authorisationExpiryDate").and_then(|p| p.get("valueDateTime").cloned())
        {
            parts.push(json!({"url": "authorisationExpiryDate", "valueDateTime": d}));
        }
        if let Some(n) = part("numberOfRepeatPrescriptionsAllowed").and_then(|p| {
            p.get("valuePositiveInt")
                .or(p.get("valueUnsignedInt"))
                .cloned()
        }) {
            let dr = o.entry("dispenseRequest").or_insert_with(|| json!({}));
            if let Some(d) = dr.as_object_mut() {
                d.insert("numberOfRepeatsAllowed".into(), n);
            }
        }
        if !parts.is_empty() {
            push_ext(o, json!({"url": REPEAT_INFO_R4, "extension": parts}));
        }
    }
}

fn allergy(o: &mut Map<String, Value>) {
    for (key, system) in [
        (
            "clinicalStatus",
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
        ),
        (
            "verificationStatus",
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
        ),
    ] {
        if let Some(code) = o.get(key).and_then(Value::as_str).map(str::to_owned) {
            o.insert(
                key.into(),
                json!({"coding": [{"system": system, "code": code}]}),
            );
        }
    }
    rename(o, "assertedDate", "recordedDate");
    if let Some(Value::Array(rs)) = o.get_mut("reaction") {
        for r in rs.iter_mut().filter_map(Value::as_object_mut) {
            r.remove("certainty");
        }
    }
}

/// An R4 Appointment (references already the supplier's) as the STU3
/// `GPConnect-Appointment-1` to book, amend or cancel.
pub fn appointment_to_stu3(mut v: Value) -> Value {
    let Some(o) = v.as_object_mut() else {
        return v;
    };
    o.remove("meta");
    o.insert(
        "meta".into(),
        json!({"profile": [format!("{GPC}GPConnect-Appointment-1")]}),
    );
    o.remove("text");
    rename(o, "reasonCode", "reason");
    rename(o, "reasonReference", "indication");
    rename(o, "basedOn", "incomingReferral");
    if let Some(Value::Array(cats)) = o.get_mut("serviceCategory") {
        let first = cats.first().cloned();
        match first {
            Some(c) => {
                o.insert("serviceCategory".into(), c);
            }
            None => {
                o.remove("serviceCategory");
            }
        }
    }
    for e in take_ext(o, BOOKING_ORG_R4) {
        if let Some(r) = e.get("valueReference") {
            push_ext(o, json!({"url": BOOKING_ORG_STU3, "valueReference": r}));
        }
    }
    for e in take_ext(o, CHANNEL_R4) {
        if let Some(code) = e
            .pointer("/valueCodeableConcept/coding/0/code")
            .and_then(Value::as_str)
        {
            push_ext(o, json!({"url": CHANNEL_STU3, "valueCode": code}));
        }
    }
    if let Some(reason) = o.remove("cancelationReason") {
        let text = reason
            .get("text")
            .and_then(Value::as_str)
            .or_else(|| reason.pointer("/coding/0/display").and_then(Value::as_str))
            .unwrap_or("Cancelled by the patient")
            .to_owned();
        push_ext(o, json!({"url": CANCEL_REASON_STU3, "valueString": text}));
    }
    if let Some(Value::Array(contained)) = o.get_mut("contained") {
        for c in contained.iter_mut().filter_map(Value::as_object_mut) {
            c.remove("meta");
            if c.get("resourceType").and_then(Value::as_str) == Some("Organization") {
                c.insert(
                    "meta".into(),
                    json!({"profile": [format!("{GPC}CareConnect-GPC-Organization-1")]}),
                );
            }
        }
    }
    v
}

/// An R4 renewal Task as the STU3 Task the sandbox supplier takes.
pub fn task_to_stu3(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("meta");
        o.remove("text");
        o.remove("businessStatus");
        o.remove("output");
    }
    v
}

/// The Spine error code of a GP Connect OperationOutcome.
pub fn spine_code(oo: &Value) -> Option<String> {
    oo.pointer("/issue/0/details/coding/0/code")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The diagnostics of a GP Connect OperationOutcome, cut short (a supplier
/// message is shown to the client: bounded, control characters removed).
pub fn diagnostics(oo: &Value) -> Option<String> {
    let d = oo
        .pointer("/issue/0/diagnostics")
        .or_else(|| oo.pointer("/issue/0/details/coding/0/display"))
        .and_then(Value::as_str)?;
    Some(d.chars().filter(|c| !c.is_control()).take(200).collect())
}

#[cfg(test)]
mod tests;
