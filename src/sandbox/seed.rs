//! The deterministic seed: for each ODS code a practice (Organization,
//! Location, a GP and a nurse, a Schedule each, weekday 15-minute slots
//! 09:00–12:00 UTC), and at the first two practices two patients each with
//! repeat medication and one allergy. Only the dates depend on the day.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc, Weekday};
use serde_json::{json, Value};

use super::store::{
    meta, Practice, SlotRec, Store, NHS_NUMBER_SYSTEM, ODS_SYSTEM, PRACTITIONER_ROLE_URL,
    SDS_USER_SYSTEM,
};
use super::time::uk;

pub const SNOMED: &str = "http://snomed.info/sct";
/// The namespace of the sandbox's own record identifiers.
pub const PROVIDER_ID_SYSTEM: &str = "https://sandbox.fhirbridge.invalid/Id/record";
const SDS_JOB_ROLE: &str = "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-SDSJobRoleName-1";

/// The seeded patients: NHS number, given, family, prefix, gender, birth date.
pub const PATIENTS: [(&str, &str, &str, &str, &str, &str); 4] = [
    ("9000000009", "Jane", "Smith", "Mrs", "female", "1968-03-14"),
    ("9000000017", "Peter", "Jones", "Mr", "male", "1955-11-02"),
    (
        "9000000025",
        "Amira",
        "Taylor",
        "Ms",
        "female",
        "1990-07-21",
    ),
    ("9000000033", "Oliver", "Brown", "Mr", "male", "2001-01-30"),
];

/// Repeat medicines: dm+d VMP (SNOMED) code, name, dosage, quantity, unit.
const DRUGS: [(&str, &str, &str, u32, &str); 6] = [
    (
        "319773006",
        "Aspirin 75mg dispersible tablets",
        "One tablet once a day",
        28,
        "tablet",
    ),
    (
        "320000009",
        "Atorvastatin 20mg tablets",
        "One tablet at night",
        28,
        "tablet",
    ),
    (
        "318906001",
        "Ramipril 5mg capsules",
        "One capsule once a day",
        28,
        "capsule",
    ),
    (
        "325278007",
        "Metformin 500mg tablets",
        "One tablet twice a day with food",
        56,
        "tablet",
    ),
    (
        "317335000",
        "Omeprazole 20mg gastro-resistant capsules",
        "One capsule once a day before breakfast",
        28,
        "capsule",
    ),
    (
        "322236009",
        "Paracetamol 500mg tablets",
        "One or two tablets up to four times a day",
        100,
        "tablet",
    ),
];

/// Allergies: SNOMED code, display, category, reaction code, reaction display.
const ALLERGIES: [(&str, &str, &str, &str, &str); 4] = [
    (
        "91936005",
        "Allergy to penicillin",
        "medication",
        "126485001",
        "Urticaria",
    ),
    (
        "91935009",
        "Allergy to peanut",
        "food",
        "271807003",
        "Eruption of skin",
    ),
    (
        "293586001",
        "Allergy to aspirin",
        "medication",
        "271807003",
        "Eruption of skin",
    ),
    (
        "300916003",
        "Latex allergy",
        "environment",
        "126485001",
        "Urticaria",
    ),
];

const PRACTICE_NAMES: [&str; 4] = [
    "The Elms Medical Centre",
    "Riverside Surgery",
    "Oak Tree Health Centre",
    "Hillview Practice",
];

/// (given, family, prefix, gender) for a practice's GP and nurse.
const STAFF: [[(&str, &str, &str, &str); 2]; 2] = [
    [
        ("Amelia", "Hart", "Dr", "female"),
        ("Daniel", "Okafor", "Mr", "male"),
    ],
    [
        ("Rajesh", "Patel", "Dr", "male"),
        ("Claire", "Wilson", "Mrs", "female"),
    ],
];

/// A UUID-shaped identifier derived from `seed` (the same on every run).
pub fn stable_uuid(seed: &str) -> String {
    fn fnv(s: &str, basis: u64) -> u64 {
        s.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
    // splitmix64's finaliser spreads FNV's near-identical hashes of similar ids.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let hi = mix(fnv(seed, 0xcbf2_9ce4_8422_2325));
    let lo = mix(fnv(seed, hi ^ 0x9e37_79b9_7f4a_7c15));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// An EPS short-form prescription id (`XXXXXX-ODSODS-XXXXXC`) with its
/// ISO/IEC 7064 MOD 37-2 check character.
pub fn eps_prescription_id(seed: &str, ods: &str) -> String {
    let hex: String = stable_uuid(seed)
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(11)
        .collect::<String>()
        .to_ascii_uppercase();
    let ods: String = format!("{ods:0>6}").chars().take(6).collect();
    let body = format!("{}-{}-{}", &hex[..6], ods.to_ascii_uppercase(), &hex[6..11]);
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+";
    let total = body.bytes().filter(|b| *b != b'-').fold(0usize, |t, b| {
        let v = CHARS.iter().position(|c| *c == b).unwrap_or(0);
        ((t + v) * 2) % 37
    });
    let check = (38 - total) % 37;
    format!("{body}{}", CHARS[check] as char)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

fn address(index: usize) -> Value {
    let streets = ["1 Elm Row", "22 River Street", "5 Oak Lane", "9 Hill Road"];
    let postcodes = ["LS1 4AP", "LS2 7EW", "LS6 2QD", "LS8 1LF"];
    json!({
        "use": "work",
        "line": [streets[index % 4]],
        "city": "Leeds",
        "district": "West Yorkshire",
        "postalCode": postcodes[index % 4],
    })
}

fn seed_practice(store: &mut Store, index: usize, ods: &str, now: DateTime<Utc>) -> Practice {
    let name = if index < PRACTICE_NAMES.len() {
        PRACTICE_NAMES[index].to_string()
    } else {
        format!("Sandbox Practice {ods}")
    };
    let practice = Practice {
        ods: ods.to_string(),
        organization: format!("org-{ods}"),
        location: format!("loc-{ods}"),
        gp: format!("prac-{ods}-gp"),
        nurse: format!("prac-{ods}-nurse"),
        gp_role: format!("role-{ods}-gp"),
        gp_schedule: format!("sched-{ods}-gp"),
        nurse_schedule: format!("sched-{ods}-nurse"),
    };
    let phone = format!("0113 496 {:04}", 100 + index);
    store.put(json!({
        "resourceType": "Organization",
        "id": practice.organization,
        "meta": meta("Organization", 1, now),
        "identifier": [{"system": ODS_SYSTEM, "value": ods}],
        "type": [coding("https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-OrganisationType-1", "gp-practice", "GP Practice")],
        "name": name,
        "telecom": [{"system": "phone", "value": phone, "use": "work"}],
        "address": [address(index)],
    }));
    store.put(json!({
        "resourceType": "Location",
        "id": practice.location,
        "meta": meta("Location", 1, now),
        "status": "active",
        "name": name,
        "telecom": [{"system": "phone", "value": phone, "use": "work"}],
        "address": address(index),
        "managingOrganization": {"reference": format!("Organization/{}", practice.organization)},
    }));
    let staff = STAFF[index % 2];
    let suffix = if index < 2 {
        String::new()
    } else {
        format!("-{}", index + 1)
    };
    for (k, id) in [&practice.gp, &practice.nurse].into_iter().enumerate() {
        let (given, family, prefix, gender) = staff[k];
        store.put(json!({
            "resourceType": "Practitioner",
            "id": id,
            "meta": meta("Practitioner", 1, now),
            "identifier": [{"system": SDS_USER_SYSTEM, "value": format!("{}", 555_000_000_000u64 + 10 * (index as u64 + 1) + k as u64 + 1)}],
            "name": [{"use": "usual", "family": format!("{family}{suffix}"), "given": [given], "prefix": [prefix]}],
            "gender": gender,
        }));
    }
    let gp_role = gp_role_concept();
    store.put(json!({
        "resourceType": "PractitionerRole",
        "id": practice.gp_role,
        "meta": meta("PractitionerRole", 1, now),
        "practitioner": {"reference": format!("Practitioner/{}", practice.gp)},
        "organization": {"reference": format!("Organization/{}", practice.organization)},
        "code": [gp_role.clone()],
    }));

    // Slots: weekdays from today for `days` days, 09:00–12:00 UTC.
    let today = now.date_naive();
    let days: Vec<NaiveDate> = (0..i64::from(store.opts.days))
        .map(|d| today + TimeDelta::days(d))
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .collect();
    let schedules = [
        (
            practice.gp_schedule.clone(),
            practice.gp.clone(),
            "gp",
            "General Practitioner Appointment",
            "Morning surgery",
            gp_role,
        ),
        (
            practice.nurse_schedule.clone(),
            practice.nurse.clone(),
            "nurse",
            "Nurse clinic",
            "Practice nurse clinic",
            json!({"text": "Practice Nurse"}),
        ),
    ];
    for (schedule, practitioner, kind, service_type, category, role) in schedules {
        let (first, last) = match (days.first(), days.last()) {
            (Some(f), Some(l)) => (at(*f, 9, 0), at(*l, 12, 0)),
            _ => (at(today, 9, 0), at(today, 12, 0)),
        };
        store.put(json!({
            "resourceType": "Schedule",
            "id": schedule,
            "meta": meta("Schedule", 1, now),
            "extension": [{"url": PRACTITIONER_ROLE_URL, "valueCodeableConcept": role}],
            "active": true,
            "serviceCategory": {"text": category},
            "serviceType": [{"text": service_type}],
            "actor": [
                {"reference": format!("Location/{}", practice.location)},
                {"reference": format!("Practitioner/{practitioner}")},
            ],
            "planningHorizon": {"start": uk(first), "end": uk(last)},
        }));
        for day in &days {
            for q in 0..12u32 {
                let start = at(*day, 9 + q / 4, (q % 4) * 15);
                let channel = channel_for(kind, q);
                let id = format!(
                    "slot-{ods}-{kind}-{}-{}",
                    day.format("%Y%m%d"),
                    start.format("%H%M")
                );
                store.slots.insert(
                    id.clone(),
                    SlotRec {
                        id,
                        schedule: schedule.clone(),
                        start,
                        end: start + TimeDelta::minutes(15),
                        channel,
                        service_type: service_type.to_string(),
                        free: true,
                        version: 1,
                        updated: now,
                    },
                );
            }
        }
    }
    practice
}

/// The delivery channel of the `q`-th quarter hour after 09:00: the GP's
/// first hour in person, second by telephone, third by video; the nurse's
/// first two hours in person, the third by telephone.
fn channel_for(kind: &str, q: u32) -> &'static str {
    match (kind, q / 4) {
        ("gp", 0) | ("nurse", 0) | ("nurse", 1) => "In-person",
        ("gp", 1) | ("nurse", _) => "Telephone",
        _ => "Video",
    }
}

fn gp_role_concept() -> Value {
    coding(SDS_JOB_ROLE, "R0260", "General Medical Practitioner")
}

fn at(day: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(hour, minute, 0).unwrap_or_default())
}

fn date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn seed_patient(store: &mut Store, k: usize, practice: &Practice, now: DateTime<Utc>) {
    let (nhs, given, family, prefix, gender, birth) = PATIENTS[k];
    let id = format!("pat-{nhs}");
    let today = now.date_naive();
    store.put(json!({
        "resourceType": "Patient",
        "id": id,
        "meta": meta("Patient", 1, now),
        "extension": [{
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1",
            "extension": [
                {"url": "registrationPeriod", "valuePeriod": {"start": format!("{}T00:00:00+00:00", date(today - TimeDelta::days(3650 + 365 * k as i64)))}},
                {"url": "preferredBranchSurgery", "valueReference": {"reference": format!("Location/{}", practice.location)}},
            ],
        }],
        "identifier": [{
            "extension": [{
                "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-NHSNumberVerificationStatus-1",
                "valueCodeableConcept": coding("https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1", "01", "Number present and verified"),
            }],
            "system": NHS_NUMBER_SYSTEM,
            "value": nhs,
        }],
        "active": true,
        "name": [{
            "use": "official",
            "text": format!("{} {given} ({prefix})", family.to_uppercase()),
            "family": family,
            "given": [given],
            "prefix": [prefix],
        }],
        "telecom": [{"system": "phone", "value": format!("07700 900{:03}", 100 + k), "use": "mobile"}],
        "gender": gender,
        "birthDate": birth,
        "address": [{"use": "home", "type": "physical", "line": [format!("{} Park Avenue", 10 + k)], "city": "Leeds", "district": "West Yorkshire", "postalCode": "LS8 2JH"}],
        "generalPractitioner": [{"reference": format!("Practitioner/{}", practice.gp)}],
        "managingOrganization": {"reference": format!("Organization/{}", practice.organization)},
    }));

    let patient_ref = json!({"reference": format!("Patient/{id}")});
    let gp_ref = json!({"reference": format!("Practitioner/{}", practice.gp)});
    let org_ref = json!({"reference": format!("Organization/{}", practice.organization)});
    for n in 0..store.opts.repeat_plans {
        let (code, name, dosage, quantity, unit) = DRUGS[(k + n) % DRUGS.len()];
        let medication = format!("med-{code}");
        store.put(json!({
            "resourceType": "Medication",
            "id": medication,
            "meta": meta("Medication", 1, now),
            "code": {"coding": [{"system": SNOMED, "code": code, "display": name}]},
        }));
        let med_ref = json!({"reference": format!("Medication/{medication}")});
        let authored = today - TimeDelta::days(60 + 7 * n as i64);
        let expiry = authored + TimeDelta::days(365);
        let issued = authored;
        let plan = format!("medreq-{nhs}-{}-plan", n + 1);
        let issue = format!("medreq-{nhs}-{}-issue-1", n + 1);
        let statement = format!("medstmt-{nhs}-{}", n + 1);
        let supply =
            json!({"value": 28, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"});
        let qty = json!({"value": quantity, "unit": unit, "system": SNOMED, "code": if unit == "tablet" { "428673006" } else { "428641000" }});
        let rx_type = json!({
            "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-PrescriptionType-1",
            "valueCodeableConcept": coding("https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-PrescriptionType-1", "repeat", "Repeat"),
        });
        store.put(json!({
            "resourceType": "MedicationRequest",
            "id": plan,
            "meta": meta("MedicationRequest", 1, now),
            "extension": [
                {
                    "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-MedicationRepeatInformation-1",
                    "extension": [
                        {"url": "numberOfRepeatPrescriptionsAllowed", "valuePositiveInt": 6},
                        {"url": "numberOfRepeatPrescriptionsIssued", "valueUnsignedInt": 1},
                        {"url": "authorisationExpiryDate", "valueDateTime": date(expiry)},
                    ],
                },
                rx_type.clone(),
            ],
            "identifier": [{"system": PROVIDER_ID_SYSTEM, "value": stable_uuid(&plan)}],
            "status": "active",
            "intent": "plan",
            "medicationReference": med_ref.clone(),
            "subject": patient_ref.clone(),
            "authoredOn": date(authored),
            "requester": {"agent": gp_ref.clone(), "onBehalfOf": org_ref.clone()},
            "recorder": gp_ref.clone(),
            "dosageInstruction": [{"text": dosage, "patientInstruction": dosage}],
            "dispenseRequest": {
                "validityPeriod": {"start": date(authored), "end": date(expiry)},
                "quantity": qty.clone(),
                "expectedSupplyDuration": supply.clone(),
            },
        }));
        store.put(json!({
            "resourceType": "MedicationRequest",
            "id": issue,
            "meta": meta("MedicationRequest", 1, now),
            "extension": [rx_type],
            "identifier": [
                {"system": PROVIDER_ID_SYSTEM, "value": stable_uuid(&issue)},
                {"system": "https://fhir.nhs.uk/Id/prescription-order-item-number", "value": stable_uuid(&format!("{issue}#eps-item"))},
            ],
            "basedOn": [{"reference": format!("MedicationRequest/{plan}")}],
            "groupIdentifier": {"system": "https://fhir.nhs.uk/Id/prescription-order-number", "value": eps_prescription_id(&issue, &practice.ods)},
            "status": "completed",
            "intent": "order",
            "medicationReference": med_ref.clone(),
            "subject": patient_ref.clone(),
            "authoredOn": date(issued),
            "requester": {"agent": gp_ref.clone(), "onBehalfOf": org_ref.clone()},
            "recorder": gp_ref.clone(),
            "dosageInstruction": [{"text": dosage, "patientInstruction": dosage}],
            "dispenseRequest": {
                "validityPeriod": {"start": date(issued), "end": date(issued + TimeDelta::days(28))},
                "quantity": qty,
                "expectedSupplyDuration": supply,
            },
        }));
        store.put(json!({
            "resourceType": "MedicationStatement",
            "id": statement,
            "meta": meta("MedicationStatement", 1, now),
            "extension": [
                {"url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-MedicationStatementLastIssueDate-1", "valueDateTime": date(issued)},
                {
                    "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-PrescribingAgency-1",
                    "valueCodeableConcept": coding("https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-PrescribingAgency-1", "prescribed-at-gp-practice", "Prescribed at GP practice"),
                },
            ],
            "identifier": [{"system": PROVIDER_ID_SYSTEM, "value": stable_uuid(&statement)}],
            "basedOn": [{"reference": format!("MedicationRequest/{plan}")}],
            "status": "active",
            "medicationReference": med_ref,
            "effectivePeriod": {"start": date(authored), "end": date(expiry)},
            "dateAsserted": date(authored),
            "informationSource": gp_ref.clone(),
            "subject": patient_ref.clone(),
            "taken": "unk",
            "dosage": [{"text": dosage, "patientInstruction": dosage}],
        }));
    }

    let (code, display, category, reaction, reaction_display) = ALLERGIES[k % ALLERGIES.len()];
    let allergy = format!("allergy-{nhs}-1");
    let onset = today - TimeDelta::days(900 + 30 * k as i64);
    store.put(json!({
        "resourceType": "AllergyIntolerance",
        "id": allergy,
        "meta": meta("AllergyIntolerance", 1, now),
        "identifier": [{"system": PROVIDER_ID_SYSTEM, "value": stable_uuid(&allergy)}],
        "clinicalStatus": "active",
        "verificationStatus": "unconfirmed",
        "category": [category],
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        "patient": patient_ref,
        "onsetDateTime": date(onset),
        "assertedDate": format!("{}T10:00:00+00:00", date(onset)),
        "recorder": gp_ref,
        "reaction": [{
            "manifestation": [{"coding": [{"system": SNOMED, "code": reaction, "display": reaction_display}]}],
            "severity": "moderate",
        }],
    }));
}

/// Fills `store` with the seeded state.
pub fn seed(store: &mut Store, now: DateTime<Utc>) {
    let codes = store.opts.ods_codes.clone();
    for (index, ods) in codes.iter().enumerate() {
        let practice = seed_practice(store, index, ods, now);
        if index < 2 {
            for k in [2 * index, 2 * index + 1] {
                seed_patient(store, k, &practice, now);
            }
        }
        store.practices.push(practice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids() {
        assert_eq!(stable_uuid("a"), stable_uuid("a"));
        assert_ne!(stable_uuid("a"), stable_uuid("b"));
        assert!(uuid::Uuid::try_parse(&stable_uuid("x")).is_ok());
        let eps = eps_prescription_id("x", "A81002");
        assert_eq!(eps.len(), 20);
        assert_eq!(&eps[7..13], "A81002");
    }
}
