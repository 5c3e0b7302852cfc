//! Proxy access (issue 13 point 3, CONTRACT.md "Proxy"): a parent acting
//! for a child and a carer acting for an adult through an active proxy
//! Consent naming the proxy's NHS number (a RelatedPerson identifier). The
//! proxy's token is an NHS login patient token carrying its own NHS number
//! and `patient/` scopes. Grant, the patient chosen per request, 403 for a
//! patient neither its own nor proxied (existing or not), expiry,
//! revocation, `provision.class` and `provision.action`. Both backends.

use serde_json::{json, Value};

use crate::auth_support::*;
use crate::consent::{
    assert_same_as_absent, id_of, record, search_ids, strs, withdraw, ACT_CODE, CONFIDENTIALITY,
    SCOPE_SYS,
};
use crate::helpers::{nhs_number, Resp, TestApp};

const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";
const CONSENT_ACTION: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
const ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";

const PARENT: &str = "px-parent";
const CHILD: &str = "px-child";
const CARER: &str = "px-carer";
const ADULT: &str = "px-adult";
const OTHER: &str = "px-other";

fn nhs(pid: &str) -> String {
    let n = match pid {
        PARENT => 501,
        CHILD => 502,
        CARER => 503,
        ADULT => 504,
        OTHER => 505,
        _ => panic!("{pid}"),
    };
    nhs_number(n)
}

fn mr(id: &str, subject: &str) -> Value {
    json!({"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
           "medicationCodeableConcept": {"text": "paracetamol"},
           "subject": {"reference": format!("Patient/{subject}")}})
}

fn new_mr(subject: &str, tag: &str) -> Value {
    let mut m = mr("x", subject);
    m.as_object_mut().unwrap().remove("id");
    m["identifier"] = json!([{"system": "urn:px:new", "value": tag}]);
    m
}

fn obs(id: &str, subject: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": "urn:px:code", "code": "weight"}]},
           "subject": {"reference": format!("Patient/{subject}")}})
}

/// Five patients, each with a MedicationRequest and an Observation; the
/// child also has a MedicationRequest withheld from online access (R).
async fn seed(app: &TestApp) {
    let admin = app.admin();
    for pid in [PARENT, CHILD, CARER, ADULT, OTHER] {
        admin
            .upsert(&json!({"resourceType": "Patient", "id": pid,
                "identifier": [{"system": NHS_SYSTEM, "value": nhs(pid)}],
                "name": [{"family": pid, "given": ["Proxy"]}]}))
            .await;
        admin.upsert(&mr(&format!("mr-{pid}"), pid)).await;
        admin.upsert(&obs(&format!("obs-{pid}"), pid)).await;
    }
    let mut r = mr("mr-px-child-r", CHILD);
    r["meta"] = json!({"security": [{"system": CONFIDENTIALITY, "code": "R"}]});
    admin.upsert(&r).await;
}

/// A proxy Consent for `patient` naming `proxy_nhs` on the Reference;
/// `extra` is merged into `provision`.
fn grant(patient: &str, proxy_nhs: &str, role: &str, extra: Value) -> Value {
    let mut provision = json!({"type": "permit", "actor": [{
        "role": {"coding": [{"system": ROLE_CODE, "code": role}]},
        "reference": {"type": "RelatedPerson",
                      "identifier": {"system": NHS_SYSTEM, "value": proxy_nhs}}}]});
    for (k, v) in extra.as_object().expect("object") {
        provision[k] = v.clone();
    }
    json!({"resourceType": "Consent", "status": "active",
           "scope": {"coding": [{"system": SCOPE_SYS, "code": "patient-privacy"}]},
           "category": [{"coding": [{"system": ACT_CODE, "code": "INFA"}]}],
           "patient": {"reference": format!("Patient/{patient}")},
           "dateTime": "2024-03-01T10:00:00Z",
           "policyRule": {"text": "proxy access"},
           "provision": provision})
}

/// The same with the RelatedPerson contained in the Consent.
fn contained_grant(patient: &str, proxy_nhs: &str, extra: Value) -> Value {
    let mut c = grant(patient, proxy_nhs, "GUARD", extra);
    c["provision"]["actor"][0]["reference"] = json!({"reference": "#proxy"});
    c["contained"] = json!([{"resourceType": "RelatedPerson", "id": "proxy",
        "patient": {"reference": format!("Patient/{patient}")},
        "identifier": [{"system": NHS_SYSTEM, "value": proxy_nhs}],
        "name": [{"family": "Carer"}]}]);
    c
}

fn classes(types: &[&str]) -> Value {
    json!(types
        .iter()
        .map(|t| json!({"system": RESOURCE_TYPES, "code": t}))
        .collect::<Vec<_>>())
}

fn actions(codes: &[&str]) -> Value {
    json!(codes
        .iter()
        .map(|c| json!({"coding": [{"system": CONSENT_ACTION, "code": c}]}))
        .collect::<Vec<_>>())
}

/// An NHS login token for `pid`'s NHS number with `scope`.
fn proxy_token(pid: &str, scope: &str) -> String {
    FIXTURE.nhs_token(&nhs(pid), "P9.Cp.Cd", scope)
}

fn year() -> i32 {
    1970 + (now() / 31_557_600) as i32
}

fn assert_403(r: &Resp, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    assert!(!r.issues().is_empty(), "{what}");
}

/// 403 for a patient neither own nor proxied, the same for one that does
/// not exist (no existence oracle).
async fn assert_not_reachable(caller: &Authed<'_>, pid: &str, what: &str) {
    for q in [
        format!("MedicationRequest?patient={pid}"),
        format!("Observation?patient={pid}"),
        format!("Patient/{pid}/MedicationRequest"),
    ] {
        let h = caller.get(&format!("/fhir/{q}")).await;
        assert_403(&h, &format!("{what}: {q}"));
        let x = caller
            .get(&format!("/fhir/{}", q.replace(pid, "px-nobody")))
            .await;
        assert_403(&x, &format!("{what}: {q} (no such patient)"));
        assert_same_as_absent(&h, &x, pid, "px-nobody", &format!("{what}: {q}"));
    }
    let r = caller.get(&format!("/fhir/Patient/{pid}")).await;
    assert_eq!(r.status, 404, "{what}: read Patient/{pid}: {}", r.text());
    let r = caller
        .get(&format!("/fhir/MedicationRequest/mr-{pid}"))
        .await;
    assert_eq!(r.status, 404, "{what}: read mr-{pid}: {}", r.text());
}

/// The proxy reaches `pid`'s MedicationRequests (and, when `all_types`,
/// Observations) every way it can name the patient.
async fn assert_reaches(caller: &Authed<'_>, pid: &str, all_types: bool, what: &str) {
    // (The child's R-labelled one is withheld from proxies too.)
    let mrs = vec![format!("MedicationRequest/mr-{pid}")];
    for q in [
        format!("MedicationRequest?patient={pid}&_total=accurate"),
        format!("MedicationRequest?patient=Patient/{pid}"),
        format!("Patient/{pid}/MedicationRequest"),
    ] {
        assert_eq!(
            search_ids(caller, &format!("/fhir/{q}"), what).await,
            mrs,
            "{what}: {q}"
        );
    }
    let r = caller
        .get(&format!("/fhir/MedicationRequest/mr-{pid}"))
        .await;
    assert_eq!(r.status, 200, "{what}: read mr-{pid}: {}", r.text());
    assert_eq!(
        caller
            .total(&format!(
                "/fhir/MedicationRequest?patient={pid}&_summary=count"
            ))
            .await,
        1,
        "{what}: count"
    );
    if all_types {
        let r = caller.get(&format!("/fhir/Patient/{pid}")).await;
        assert_eq!(r.status, 200, "{what}: read Patient/{pid}: {}", r.text());
        assert_eq!(
            search_ids(caller, &format!("/fhir/Observation?patient={pid}"), what).await,
            vec![format!("Observation/obs-{pid}")],
            "{what}: Observation?patient"
        );
        assert_eq!(
            search_ids(
                caller,
                &format!(
                    "/fhir/MedicationRequest?patient={pid}&_include=MedicationRequest:subject"
                ),
                what
            )
            .await,
            strs(&[
                &format!("MedicationRequest/mr-{pid}"),
                &format!("Patient/{pid}")
            ]),
            "{what}: _include"
        );
    }
}

/// A proxy is never refused a `?patient=` of its own.
async fn assert_own(caller: &Authed<'_>, pid: &str, what: &str) {
    assert_eq!(
        search_ids(
            caller,
            &format!("/fhir/MedicationRequest?patient={pid}"),
            what
        )
        .await,
        vec![format!("MedicationRequest/mr-{pid}")],
        "{what}: own"
    );
    let r = caller.get(&format!("/fhir/Patient/{pid}")).await;
    assert_eq!(r.status, 200, "{what}: own Patient: {}", r.text());
}

// ------------------------------------------------------------ tests

async fn a_parent_acts_for_the_child(app: TestApp) {
    seed(&app).await;
    let parent = app.bearer(&proxy_token(PARENT, "patient/*.rs"));
    // No Consent yet: the child is a patient like any other.
    assert_own(&parent, PARENT, "parent before").await;
    assert_not_reachable(&parent, CHILD, "parent before the grant").await;
    // The practice records the parent's proxy access (VRS).
    let c = record(&app.admin(), &grant(CHILD, &nhs(PARENT), "PRN", json!({}))).await;
    assert_eq!(c["status"], "active");
    assert_reaches(&parent, CHILD, true, "parent").await;
    assert_own(&parent, PARENT, "parent").await;
    // The child's withheld record stays withheld from the proxy.
    let r = parent.get("/fhir/MedicationRequest/mr-px-child-r").await;
    assert_eq!(r.status, 404, "R-labelled: {}", r.text());
    let r = parent.get("/fhir/Patient/px-child/MedicationRequest").await;
    assert!(!r.text().contains("mr-px-child-r"), "{}", r.text());
    // Without a patient parameter: own and proxied data at most, never others'.
    let r = parent.get("/fhir/MedicationRequest").await;
    if r.status == 200 {
        let got = crate::helpers::entry_ids(&r.json());
        assert!(
            got.contains(&"MedicationRequest/mr-px-parent".to_string()),
            "{got:?}"
        );
        for id in &got {
            assert!(
                id == "MedicationRequest/mr-px-parent" || id == "MedicationRequest/mr-px-child",
                "unparameterised search reveals {id}: {got:?}"
            );
        }
    } else {
        assert_403(&r, "unparameterised search");
    }
    // Others stay out of reach, whether or not they exist.
    assert_not_reachable(&parent, OTHER, "parent for other").await;
    assert_not_reachable(&parent, CARER, "parent for carer").await;
    // The child's own token does not reach the parent.
    let child = app.bearer(&proxy_token(CHILD, "patient/*.rs"));
    assert_own(&child, CHILD, "child").await;
    assert_not_reachable(&child, PARENT, "child for parent").await;
    // Another adult without a Consent does not reach the child.
    let carer = app.bearer(&proxy_token(CARER, "patient/*.rs"));
    assert_not_reachable(&carer, CHILD, "unrelated adult").await;
    // `access` only (the default): no writes into the child's record.
    let parent_w = app.bearer(&proxy_token(PARENT, "patient/*.cruds"));
    assert_reaches(&parent_w, CHILD, true, "parent (cruds)").await;
    assert_refused(
        &parent_w
            .post("/fhir/MedicationRequest", &new_mr(CHILD, "p1"))
            .await,
        "parent creating for the child without correct",
    );
    let mut changed = mr("mr-px-child", CHILD);
    changed["status"] = json!("stopped");
    assert_refused(
        &parent_w
            .put("/fhir/MedicationRequest/mr-px-child", &changed)
            .await,
        "parent updating the child's without correct",
    );
    let admin = app.admin();
    assert_eq!(
        admin
            .get("/fhir/MedicationRequest/mr-px-child")
            .await
            .json()["meta"]["versionId"],
        "1"
    );
    assert_eq!(
        admin
            .total("/fhir/MedicationRequest?identifier=urn:px:new|p1")
            .await,
        0
    );
    // Its own record it may still write.
    let r = parent_w
        .post("/fhir/MedicationRequest", &new_mr(PARENT, "p2"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

async fn a_carer_acts_for_an_adult_within_class_and_action(app: TestApp) {
    seed(&app).await;
    let adult = app.bearer(&FIXTURE.patient_token(ADULT, "patient/*.rs patient/Consent.cu"));
    let carer = app.bearer(&proxy_token(CARER, "patient/*.cruds"));
    assert_not_reachable(&carer, ADULT, "carer before").await;
    // The adult names the carer (contained RelatedPerson): medicines only, read only.
    let first = record(
        &adult,
        &contained_grant(
            ADULT,
            &nhs(CARER),
            json!({"class": classes(&["MedicationRequest"]), "action": actions(&["access"])}),
        ),
    )
    .await;
    assert_reaches(&carer, ADULT, false, "carer (MedicationRequest)").await;
    assert_own(&carer, CARER, "carer").await;
    // Types outside the class are not reached.
    let r = carer.get("/fhir/Observation/obs-px-adult").await;
    assert_eq!(r.status, 404, "outside the class: {}", r.text());
    for q in [
        "Observation?patient=px-adult",
        "Patient/px-adult/Observation",
    ] {
        let r = carer.get(&format!("/fhir/{q}")).await;
        if r.status == 200 {
            assert_eq!(r.json()["total"], 0, "{q}: {}", r.text());
            assert!(!r.text().contains("obs-px-adult"), "{q}: {}", r.text());
        } else {
            assert_403(&r, q);
        }
    }
    // No `correct`: no writes.
    assert_refused(
        &carer
            .post("/fhir/MedicationRequest", &new_mr(ADULT, "c1"))
            .await,
        "carer creating without correct",
    );
    // The adult widens it: medicines, read and write.
    let second = record(
        &adult,
        &contained_grant(
            ADULT,
            &nhs(CARER),
            json!({"class": classes(&["MedicationRequest"]),
                   "action": actions(&["access", "correct"])}),
        ),
    )
    .await;
    // One active per patient per proxy.
    let admin = app.admin();
    assert_eq!(
        admin
            .get(&format!("/fhir/Consent/{}", id_of(&first)))
            .await
            .json()["status"],
        "inactive"
    );
    assert_eq!(
        search_ids(
            &admin,
            "/fhir/Consent?patient=px-adult&status=active",
            "active"
        )
        .await,
        vec![format!("Consent/{}", id_of(&second))]
    );
    let r = carer
        .post("/fhir/MedicationRequest", &new_mr(ADULT, "c2"))
        .await;
    assert_eq!(r.status, 201, "carer creating with correct: {}", r.text());
    assert_eq!(
        admin
            .total("/fhir/MedicationRequest?identifier=urn:px:new|c2&patient=px-adult")
            .await,
        1
    );
    let mut changed = mr("mr-px-adult", ADULT);
    changed["status"] = json!("on-hold");
    let r = carer
        .put("/fhir/MedicationRequest/mr-px-adult", &changed)
        .await;
    assert_eq!(r.status, 200, "carer updating with correct: {}", r.text());
    // The class still limits writes.
    let mut o = obs("x", ADULT);
    o.as_object_mut().unwrap().remove("id");
    assert_refused(
        &carer.post("/fhir/Observation", &o).await,
        "carer writing an Observation outside the class",
    );
    // Nobody else's record.
    assert_refused(
        &carer
            .post("/fhir/MedicationRequest", &new_mr(OTHER, "c3"))
            .await,
        "carer writing for another patient",
    );
    assert_not_reachable(&carer, OTHER, "carer for other").await;
    // The adult sees the carer's MedicationRequest; the carer does not
    // reach the adult's Consent (not in the class).
    assert_eq!(
        adult
            .total("/fhir/MedicationRequest?patient=px-adult")
            .await,
        2
    );
}

async fn expiry_and_revocation(app: TestApp) {
    seed(&app).await;
    let admin = app.admin();
    let parent = app.bearer(&proxy_token(PARENT, "patient/*.rs"));
    let y = year();
    // Expired.
    record(
        &admin,
        &grant(
            CHILD,
            &nhs(PARENT),
            "PRN",
            json!({"period": {"start": "2015-01-01", "end": "2020-12-31"}}),
        ),
    )
    .await;
    assert_not_reachable(&parent, CHILD, "expired").await;
    // Not yet begun.
    record(
        &admin,
        &grant(
            CHILD,
            &nhs(PARENT),
            "PRN",
            json!({"period": {"start": format!("{}-01-01", y + 5)}}),
        ),
    )
    .await;
    assert_not_reachable(&parent, CHILD, "not yet begun").await;
    // Current.
    let current = record(
        &admin,
        &grant(
            CHILD,
            &nhs(PARENT),
            "PRN",
            json!({"period": {"start": "2015-01-01", "end": format!("{}-12-31", y + 1)}}),
        ),
    )
    .await;
    assert_reaches(&parent, CHILD, true, "current period").await;
    // Revoked (PUT inactive): the very next request is refused.
    withdraw(&admin, &current).await;
    let r = parent.get("/fhir/MedicationRequest?patient=px-child").await;
    assert_403(&r, "revoked");
    assert_not_reachable(&parent, CHILD, "revoked").await;
    // Granted again, then deleted.
    let again = record(&admin, &grant(CHILD, &nhs(PARENT), "PRN", json!({}))).await;
    assert_reaches(&parent, CHILD, true, "granted again").await;
    let r = admin
        .delete(&format!("/fhir/Consent/{}", id_of(&again)))
        .await;
    assert!((200..300).contains(&r.status), "{}", r.text());
    assert_not_reachable(&parent, CHILD, "deleted").await;
}

async fn two_proxies_for_one_child(app: TestApp) {
    seed(&app).await;
    let admin = app.admin();
    // Both parents (the carer acting as second parent) named separately.
    let first = record(&admin, &grant(CHILD, &nhs(PARENT), "PRN", json!({}))).await;
    let second = record(&admin, &grant(CHILD, &nhs(CARER), "PRN", json!({}))).await;
    assert_eq!(
        search_ids(
            &admin,
            "/fhir/Consent?patient=px-child&status=active",
            "active"
        )
        .await,
        strs(&[
            &format!("Consent/{}", id_of(&first)),
            &format!("Consent/{}", id_of(&second))
        ]),
        "one active per patient per proxy NHS number"
    );
    let p1 = app.bearer(&proxy_token(PARENT, "patient/*.rs"));
    let p2 = app.bearer(&proxy_token(CARER, "patient/*.rs"));
    assert_reaches(&p1, CHILD, true, "first parent").await;
    assert_reaches(&p2, CHILD, true, "second parent").await;
    // A data-sharing Consent of the child is another kind: both stay active.
    record(&admin, &crate::consent::deny_app(CHILD, "some-app")).await;
    assert_eq!(
        admin
            .total("/fhir/Consent?patient=px-child&status=active")
            .await,
        3
    );
    // Revoking one leaves the other.
    withdraw(&admin, &first).await;
    assert_not_reachable(&p1, CHILD, "first parent revoked").await;
    assert_reaches(
        &p2,
        CHILD,
        true,
        "second parent after the first's revocation",
    )
    .await;
}

crate::backend_tests!(with required;
    a_parent_acts_for_the_child,
    a_carer_acts_for_an_adult_within_class_and_action,
    expiry_and_revocation,
    two_proxies_for_one_child,
);
