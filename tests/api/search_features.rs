//! Search features, one test per feature family, each with real data and the
//! exact expected result set (ids are chosen by the test through PUT, so the
//! expectations read as data). Every test runs on SQLite and PostgreSQL.

use serde_json::{json, Value};

use crate::backend_tests;
use crate::helpers::{Resp, TestApp};

backend_tests!(
    string_default_exact_and_contains,
    token_forms_not_text_of_type_and_missing,
    reference_forms,
    chains_and_reverse_chains,
    date_prefixes_precision_and_offsets,
    numbers_and_quantities,
    uri_below_and_above,
    meta_parameters,
    and_or_and_escaping,
    sort_with_paging_forward_and_back,
    keyset_paging_is_stable_under_inserts,
    total_modes,
    summary_and_elements,
    include_and_revinclude,
    patient_compartment_search,
    post_search_with_form_body_and_url_parameters,
    strict_and_lenient_handling,
    cost_bounds,
    updates_and_deletes_leave_no_stale_matches,
    cursors_are_checked,
    composites_match_within_one_element,
    default_total_is_exact_below_the_cap,
    and_of_several_lookups,
);

// --- helpers -----------------------------------------------------------------

/// Percent-encodes the query part of `path` (everything but the structure:
/// `&`, `=`, `,`, `:`, `/` and unreserved characters), so tests can write
/// `\`, `|`, `$`, `+`, spaces and non-ASCII literally.
pub fn enc(path: &str) -> String {
    let Some((p, q)) = path.split_once('?') else {
        return path.to_owned();
    };
    let mut out = format!("{p}?");
    for b in q.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'&'
            | b'='
            | b':'
            | b'/'
            | b','
            | b'*' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The server-relative part (`/fhir/...`) of an absolute link.
pub fn relative(url: &str) -> String {
    url[url.find("/fhir/").expect("link under /fhir/")..].to_owned()
}

pub fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .map(|l| l["url"].as_str().expect("link url").to_owned())
}

/// Ids of the `match` entries, in order.
pub fn match_ids(bundle: &Value) -> Vec<String> {
    entries_with_mode(bundle, "match")
        .iter()
        .map(|e| e["resource"]["id"].as_str().expect("id").to_owned())
        .collect()
}

fn entries_with_mode(bundle: &Value, mode: &str) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == mode)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// `Type/id` of the `include` entries, sorted.
fn included(bundle: &Value) -> Vec<String> {
    let mut v: Vec<String> = entries_with_mode(bundle, "include")
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let r = app.get(&enc(path)).await;
    assert_eq!(r.status, 200, "[{}] {path}: {}", app.backend, r.text());
    r.json()
}

/// Every matching id, following `next` links (in server order).
async fn all_ids(app: &TestApp, path: &str) -> Vec<String> {
    let first = get_ok(app, path).await;
    let total = first["total"].as_u64();
    let mut out = match_ids(&first);
    let mut next = link(&first, "next");
    let mut pages = 1;
    while let Some(url) = next {
        let b = app.get(&relative(&url)).await;
        assert_eq!(b.status, 200, "{url}: {}", b.text());
        let b = b.json();
        out.extend(match_ids(&b));
        next = link(&b, "next");
        pages += 1;
        assert!(pages < 200, "runaway paging for {path}");
    }
    if let Some(t) = total {
        assert_eq!(t as usize, out.len(), "[{}] total of {path}", app.backend);
    }
    out
}

/// Asserts the exact set of ids `path` finds (each once).
async fn expect(app: &TestApp, path: &str, expected: &[&str]) {
    let got = all_ids(app, path).await;
    let mut sorted = got.clone();
    sorted.sort();
    let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(sorted, want, "[{}] {path}", app.backend);
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        got.len(),
        "[{}] duplicates in {path}",
        app.backend
    );
}

/// Creates or replaces `resource` under its own id.
async fn put(app: &TestApp, resource: Value) -> Value {
    let ty = resource["resourceType"].as_str().expect("resourceType");
    let id = resource["id"].as_str().expect("id");
    let r = app.put(&format!("/fhir/{ty}/{id}"), &resource).await;
    assert!(
        r.status == 200 || r.status == 201,
        "PUT {ty}/{id}: {} {}",
        r.status,
        r.text()
    );
    r.json()
}

async fn put_all(app: &TestApp, resources: Vec<Value>) {
    for r in resources {
        put(app, r).await;
    }
}

/// Asserts a 400 OperationOutcome whose first issue points at `expression`.
async fn expect_400(app: &TestApp, path: &str, expression: &str) -> Resp {
    let r = app.get(&enc(path)).await;
    assert_eq!(r.status, 400, "[{}] {path}: {}", app.backend, r.text());
    let issues = r.issues();
    assert_eq!(issues[0]["severity"], "error", "{path}");
    assert_eq!(
        issues[0]["expression"][0], expression,
        "[{}] {path}: {issues:?}",
        app.backend
    );
    r
}

fn patient(id: &str, family: &str, given: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": [given]}]})
}

// --- string ----------------------------------------------------------------------

async fn string_default_exact_and_contains(app: TestApp) {
    put_all(
        &app,
        vec![
            patient("bronte", "Brontë", "Charlotte"),
            patient("bronson", "Bronson", "Charles"),
            patient("abrontes", "Abrontës", "Anne"),
            patient("obrien", "O'Brien", "Émile"),
            json!({"resourceType": "Patient", "id": "leeds",
                "name": [{"family": "Smith", "given": ["John"], "prefix": ["Dr"]}],
                "address": [{"line": ["1 High St"], "city": "Leeds", "postalCode": "LS1 4AP"}]}),
        ],
    )
    .await;
    // Default: case- and accent-insensitive starts-with, in both directions.
    expect(&app, "/fhir/Patient?family=bronte", &["bronte"]).await;
    expect(&app, "/fhir/Patient?family=BRONTË", &["bronte"]).await;
    expect(&app, "/fhir/Patient?family=bron", &["bronte", "bronson"]).await;
    expect(&app, "/fhir/Patient?family=ront", &[]).await;
    expect(&app, "/fhir/Patient?given=emile", &["obrien"]).await;
    expect(&app, "/fhir/Patient?given=charl", &["bronte", "bronson"]).await;
    expect(&app, "/fhir/Patient?family=o'b", &["obrien"]).await;
    // `name` covers family, given, prefix; `address` every part.
    expect(&app, "/fhir/Patient?name=dr", &["leeds"]).await;
    expect(&app, "/fhir/Patient?name=anne", &["abrontes"]).await;
    expect(&app, "/fhir/Patient?address=ls1 4", &["leeds"]).await;
    expect(&app, "/fhir/Patient?address=high", &[]).await;
    expect(&app, "/fhir/Patient?address=1 high", &["leeds"]).await;
    expect(&app, "/fhir/Patient?address-city=LEEDS", &["leeds"]).await;
    // :exact: whole value, case and accents significant.
    expect(&app, "/fhir/Patient?family:exact=Brontë", &["bronte"]).await;
    expect(&app, "/fhir/Patient?family:exact=Bronte", &[]).await;
    expect(&app, "/fhir/Patient?family:exact=brontë", &[]).await;
    expect(&app, "/fhir/Patient?family:exact=Bront", &[]).await;
    // :contains: anywhere, case- and accent-insensitive.
    expect(
        &app,
        "/fhir/Patient?family:contains=RONT",
        &["bronte", "abrontes"],
    )
    .await;
    expect(&app, "/fhir/Patient?family:contains=tes", &["abrontes"]).await;
    expect(
        &app,
        "/fhir/Patient?name:contains=harl",
        &["bronte", "bronson"],
    )
    .await;
    // LIKE wildcards in the value are literal.
    expect(&app, "/fhir/Patient?family:contains=%", &[]).await;
    expect(&app, "/fhir/Patient?family:contains=_", &[]).await;
}

// --- token -----------------------------------------------------------------------

fn observation(id: &str, code: Value) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final", "code": code})
}

async fn token_forms_not_text_of_type_and_missing(app: TestApp) {
    let loinc = "http://loinc.org";
    let sct = "http://snomed.info/sct";
    put_all(
        &app,
        vec![
            observation(
                "loinc-1234",
                json!({"coding": [{"system": loinc, "code": "1234"}]}),
            ),
            observation(
                "sct-1234",
                json!({"coding": [{"system": sct, "code": "1234", "display": "Blood glucose"}]}),
            ),
            observation("nosys-1234", json!({"coding": [{"code": "1234"}]})),
            observation(
                "loinc-9999",
                json!({"coding": [{"system": loinc, "code": "9999"}], "text": "Heart rate"}),
            ),
            observation("text-only", json!({"text": "Something else"})),
        ],
    )
    .await;
    let all = [
        "loinc-1234",
        "sct-1234",
        "nosys-1234",
        "loinc-9999",
        "text-only",
    ];
    expect(
        &app,
        "/fhir/Observation?code=1234",
        &["loinc-1234", "sct-1234", "nosys-1234"],
    )
    .await;
    expect(
        &app,
        &format!("/fhir/Observation?code={loinc}|1234"),
        &["loinc-1234"],
    )
    .await;
    expect(&app, "/fhir/Observation?code=|1234", &["nosys-1234"]).await;
    expect(
        &app,
        &format!("/fhir/Observation?code={loinc}|"),
        &["loinc-1234", "loinc-9999"],
    )
    .await;
    // :not includes resources with no coding at all.
    expect(
        &app,
        &format!("/fhir/Observation?code:not={loinc}|1234"),
        &["sct-1234", "nosys-1234", "loinc-9999", "text-only"],
    )
    .await;
    expect(
        &app,
        "/fhir/Observation?code:not=1234",
        &["loinc-9999", "text-only"],
    )
    .await;
    // :text matches CodeableConcept.text or Coding.display (starts-with, normalised).
    expect(&app, "/fhir/Observation?code:text=heart", &["loinc-9999"]).await;
    expect(&app, "/fhir/Observation?code:text=BLOOD", &["sct-1234"]).await;
    expect(&app, "/fhir/Observation?code:text=rate", &[]).await;
    expect(&app, "/fhir/Observation?code:missing=false", &all[..4]).await;
    // A CodeableConcept with text only has no token value.
    expect(&app, "/fhir/Observation?code:missing=true", &["text-only"]).await;

    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    put_all(
        &app,
        vec![
            json!({"resourceType": "Patient", "id": "mr", "gender": "female", "birthDate": "1970",
                "active": true,
                "identifier": [{"type": {"coding": [{"system": v2, "code": "MR"}], "text": "Medical record"},
                    "system": "urn:mrn", "value": "123"}]}),
            json!({"resourceType": "Patient", "id": "dl", "gender": "male", "active": false,
                "identifier": [{"type": {"coding": [{"system": v2, "code": "DL"}]},
                    "system": "urn:dl", "value": "123"}]}),
            json!({"resourceType": "Patient", "id": "none"}),
        ],
    )
    .await;
    expect(
        &app,
        &format!("/fhir/Patient?identifier:of-type={v2}|MR|123"),
        &["mr"],
    )
    .await;
    expect(
        &app,
        &format!("/fhir/Patient?identifier:of-type={v2}|DL|123"),
        &["dl"],
    )
    .await;
    expect(
        &app,
        &format!("/fhir/Patient?identifier:of-type={v2}|MR|999"),
        &[],
    )
    .await;
    expect(&app, "/fhir/Patient?identifier:text=medical", &["mr"]).await;
    expect(&app, "/fhir/Patient?identifier=123", &["mr", "dl"]).await;
    expect(&app, "/fhir/Patient?gender:not=male", &["mr", "none"]).await;
    expect(&app, "/fhir/Patient?gender=female,male", &["mr", "dl"]).await;
    expect(&app, "/fhir/Patient?active=true", &["mr"]).await;
    expect(&app, "/fhir/Patient?active=false", &["dl"]).await;
    expect(&app, "/fhir/Patient?active:missing=true", &["none"]).await;
    expect(
        &app,
        "/fhir/Patient?birthdate:missing=true",
        &["dl", "none"],
    )
    .await;
    expect(&app, "/fhir/Patient?birthdate:missing=false", &["mr"]).await;
    expect(&app, "/fhir/Patient?gender:missing=false", &["mr", "dl"]).await;
}

// --- reference --------------------------------------------------------------------

fn med_request(id: &str, status: &str, subject: Value) -> Value {
    json!({"resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
        "medicationCodeableConcept": {"text": "x"}, "subject": subject})
}

async fn reference_forms(app: TestApp) {
    let base = format!("{}/fhir", app.base);
    put_all(
        &app,
        vec![
            patient("p1", "One", "A"),
            patient("p2", "Two", "B"),
            med_request("m1", "active", json!({"reference": "Patient/p1"})),
            med_request(
                "m2",
                "active",
                json!({"reference": format!("{base}/Patient/p2")}),
            ),
            med_request("m3", "active", json!({"reference": "Group/p1"})),
            med_request(
                "m4",
                "active",
                json!({"reference": "http://other.example.org/fhir/Patient/p1"}),
            ),
            med_request(
                "m5",
                "active",
                json!({"reference": "Patient/p1/_history/1"}),
            ),
            json!({"resourceType": "MedicationRequest", "id": "m6", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/p2"},
                "requester": {"identifier": {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "U1"}}}),
        ],
    )
    .await;
    // A bare id matches any allowed target type.
    expect(
        &app,
        "/fhir/MedicationRequest?subject=p1",
        &["m1", "m3", "m5"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?subject=Patient/p1",
        &["m1", "m5"],
    )
    .await;
    expect(&app, "/fhir/MedicationRequest?subject=Group/p1", &["m3"]).await;
    // An absolute URL under this server's base is a local reference, both ways.
    expect(
        &app,
        &format!("/fhir/MedicationRequest?subject={base}/Patient/p1"),
        &["m1", "m5"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?subject=Patient/p2",
        &["m2", "m6"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?subject=Patient/p2/_history/7",
        &["m2", "m6"],
    )
    .await;
    // Other servers' URLs match verbatim only.
    expect(
        &app,
        "/fhir/MedicationRequest?subject=http://other.example.org/fhir/Patient/p1",
        &["m4"],
    )
    .await;
    // :[type]
    expect(
        &app,
        "/fhir/MedicationRequest?subject:Patient=p1",
        &["m1", "m5"],
    )
    .await;
    expect(&app, "/fhir/MedicationRequest?subject:Group=p1", &["m3"]).await;
    // `patient` only counts Patient subjects.
    expect(&app, "/fhir/MedicationRequest?patient=p1", &["m1", "m5"]).await;
    // :identifier
    expect(
        &app,
        "/fhir/MedicationRequest?requester:identifier=https://fhir.nhs.uk/Id/sds-user-id|U1",
        &["m6"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?requester:identifier=U1",
        &["m6"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?requester:identifier=urn:other|U1",
        &[],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?requester:missing=true",
        &["m1", "m2", "m3", "m4", "m5"],
    )
    .await;
    // Wrong target types are errors.
    expect_400(
        &app,
        "/fhir/MedicationRequest?subject:Practitioner=p1",
        "subject:Practitioner",
    )
    .await;
    expect_400(
        &app,
        "/fhir/MedicationRequest?subject=Practitioner/p1",
        "subject",
    )
    .await;
    expect_400(
        &app,
        "/fhir/MedicationRequest?subject=Nonsense/p1",
        "subject",
    )
    .await;
}

// --- chains -------------------------------------------------------------------------

async fn chains_and_reverse_chains(app: TestApp) {
    put_all(
        &app,
        vec![
            json!({"resourceType": "Organization", "id": "parent", "name": "Parent Trust"}),
            json!({"resourceType": "Organization", "id": "grandparent", "name": "Grand Holdings"}),
            json!({"resourceType": "Organization", "id": "acme", "name": "Acme Health",
                "partOf": {"reference": "Organization/parent"}}),
            json!({"resourceType": "Organization", "id": "beta", "name": "Beta Care",
                "partOf": {"reference": "Organization/grandparent"}}),
            json!({"resourceType": "Practitioner", "id": "jones", "name": [{"family": "Jones"}]}),
            json!({"resourceType": "Patient", "id": "alpha", "name": [{"family": "Alpha"}],
                "identifier": [{"system": "urn:ids", "value": "alpha"}],
                "generalPractitioner": [{"reference": "Practitioner/jones"}],
                "managingOrganization": {"reference": "Organization/acme"}}),
            json!({"resourceType": "Patient", "id": "betty", "name": [{"family": "Beta"}],
                "generalPractitioner": [{"reference": "Organization/beta"}],
                "managingOrganization": {"reference": "Organization/beta"}}),
            json!({"resourceType": "Group", "id": "grp", "type": "person", "actual": true,
                "identifier": [{"system": "urn:ids", "value": "alpha"}]}),
            med_request("ma", "active", json!({"reference": "Patient/alpha"})),
            med_request("mb", "completed", json!({"reference": "Patient/betty"})),
            med_request("mg", "active", json!({"reference": "Group/grp"})),
            med_request("mx", "active", json!({"reference": "Patient/missing"})),
        ],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?subject:Patient.family=alpha",
        &["ma"],
    )
    .await;
    // Without a type: every allowed target type that has the parameter.
    expect(&app, "/fhir/MedicationRequest?subject.family=beta", &["mb"]).await;
    expect(&app, "/fhir/MedicationRequest?subject.name=alpha", &["ma"]).await;
    expect(
        &app,
        "/fhir/MedicationRequest?subject.identifier=urn:ids|alpha",
        &["ma", "mg"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?subject:Group.type=person",
        &["mg"],
    )
    .await;
    expect_400(
        &app,
        "/fhir/MedicationRequest?subject:Group.name=alpha",
        "subject:Group.name",
    )
    .await;
    // Two levels, through each target type of general-practitioner.
    expect(
        &app,
        "/fhir/MedicationRequest?patient.general-practitioner.family=jones",
        &["ma"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?patient.general-practitioner:Organization.name=beta",
        &["mb"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?patient.general-practitioner.name=beta,jones",
        &["ma", "mb"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?patient.organization.name=acme",
        &["ma"],
    )
    .await;
    // Three levels (the most allowed).
    expect(
        &app,
        "/fhir/MedicationRequest?patient.organization.partof.name=parent",
        &["ma"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?patient.organization.partof.name=grand",
        &["mb"],
    )
    .await;
    // Chains combine with other parameters (AND).
    expect(
        &app,
        "/fhir/MedicationRequest?patient.organization.name=acme,beta&status=completed",
        &["mb"],
    )
    .await;
    // Chained :missing and modifiers.
    expect(
        &app,
        "/fhir/MedicationRequest?subject:Patient.family:exact=Alpha",
        &["ma"],
    )
    .await;
    expect(
        &app,
        "/fhir/MedicationRequest?subject:Patient.general-practitioner:missing=false",
        &["ma", "mb"],
    )
    .await;
    // Reverse chaining.
    expect(
        &app,
        "/fhir/Patient?_has:MedicationRequest:subject:status=active",
        &["alpha"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient?_has:MedicationRequest:patient:status=active,completed",
        &["alpha", "betty"],
    )
    .await;
    expect(
        &app,
        "/fhir/Group?_has:MedicationRequest:subject:status=active",
        &["grp"],
    )
    .await;
    // Nested _has: organizations managing a patient with an active prescription.
    expect(
        &app,
        "/fhir/Organization?_has:Patient:organization:_has:MedicationRequest:subject:status=active",
        &["acme"],
    )
    .await;
    expect(
        &app,
        "/fhir/Organization?_has:Organization:partof:_has:Patient:organization:family=beta",
        &["grandparent"],
    )
    .await;
    // _has with a chain inside.
    expect(
        &app,
        "/fhir/Practitioner?_has:Patient:general-practitioner:organization.name=acme",
        &["jones"],
    )
    .await;
    // Chain into _has.
    expect(
        &app,
        "/fhir/MedicationRequest?subject:Patient._has:MedicationRequest:subject:status=completed",
        &["mb"],
    )
    .await;
    expect_400(
        &app,
        "/fhir/MedicationRequest?status.family=x",
        "status.family",
    )
    .await;
    expect_400(
        &app,
        "/fhir/Patient?_has:MedicationRequest:status:status=active",
        "_has:MedicationRequest:status:status",
    )
    .await;
}

// --- date ---------------------------------------------------------------------------

async fn date_prefixes_precision_and_offsets(app: TestApp) {
    put_all(
        &app,
        vec![
            json!({"resourceType": "Patient", "id": "y1980", "birthDate": "1980"}),
            json!({"resourceType": "Patient", "id": "d0517", "birthDate": "1980-05-17"}),
            json!({"resourceType": "Patient", "id": "d0518", "birthDate": "1980-05-18"}),
            json!({"resourceType": "Patient", "id": "d1981", "birthDate": "1981-01-01"}),
            json!({"resourceType": "Patient", "id": "m1980", "birthDate": "1980-05"}),
            json!({"resourceType": "Patient", "id": "nodate"}),
        ],
    )
    .await;
    let q = |v: &str| format!("/fhir/Patient?birthdate={v}");
    // eq: the value's range contains the resource's range.
    expect(&app, &q("1980"), &["y1980", "d0517", "d0518", "m1980"]).await;
    expect(&app, &q("1980-05"), &["d0517", "d0518", "m1980"]).await;
    expect(&app, &q("eq1980-05-17"), &["d0517"]).await;
    expect(&app, &q("1980-05-17"), &["d0517"]).await;
    expect(&app, &q("1980-05-17T10:00:00Z"), &[]).await;
    // ne: everything with a value that is not within the range.
    expect(
        &app,
        &q("ne1980-05-17"),
        &["y1980", "d0518", "d1981", "m1980"],
    )
    .await;
    // gt / lt: the resource's range extends beyond the value's.
    expect(
        &app,
        &q("gt1980-05-17"),
        &["y1980", "d0518", "d1981", "m1980"],
    )
    .await;
    expect(&app, &q("lt1980-05-17"), &["y1980", "m1980"]).await;
    expect(&app, &q("gt1980"), &["d1981"]).await;
    expect(&app, &q("lt1981"), &["y1980", "d0517", "d0518", "m1980"]).await;
    // ge / le add eq.
    expect(
        &app,
        &q("ge1980-05-17"),
        &["y1980", "d0517", "d0518", "d1981", "m1980"],
    )
    .await;
    expect(&app, &q("le1980-05-17"), &["y1980", "d0517", "m1980"]).await;
    expect(&app, &q("le1980-05-16"), &["y1980", "m1980"]).await;
    // sa / eb: strictly after / before, no overlap.
    expect(&app, &q("sa1980-05-17"), &["d0518", "d1981"]).await;
    expect(&app, &q("sa1980"), &["d1981"]).await;
    expect(&app, &q("eb1980-05-18"), &["d0517"]).await;
    expect(&app, &q("eb1981"), &["y1980", "d0517", "d0518", "m1980"]).await;
    // ap: approximately (within 10% of the distance from now).
    expect(
        &app,
        &q("ap1980-05-17"),
        &["y1980", "d0517", "d0518", "d1981", "m1980"],
    )
    .await;
    expect(&app, &q("ap1960"), &[]).await;
    // A range by AND, a choice by OR.
    expect(
        &app,
        "/fhir/Patient?birthdate=ge1980-05-17&birthdate=le1980-05-18",
        &["y1980", "d0517", "d0518", "m1980"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient?birthdate=sa1980-05-16&birthdate=eb1980-05-19",
        &["d0517", "d0518"],
    )
    .await;
    expect(&app, &q("1980-05-17,1981"), &["d0517", "d1981"]).await;
    expect_400(&app, &q("1980-13"), "birthdate").await;
    expect_400(&app, &q("xx1980"), "birthdate").await;

    // dateTimes with offsets are compared as instants.
    put_all(
        &app,
        vec![
            json!({"resourceType": "Observation", "id": "late", "status": "final", "code": {"text": "x"},
                "effectiveDateTime": "2024-01-01T23:30:00+02:00"}),
            json!({"resourceType": "Observation", "id": "after-midnight", "status": "final", "code": {"text": "x"},
                "effectiveDateTime": "2024-01-02T01:00:00+02:00"}),
            json!({"resourceType": "Observation", "id": "period", "status": "final", "code": {"text": "x"},
                "effectivePeriod": {"start": "2024-01-02T10:00:00Z", "end": "2024-01-03T10:00:00Z"}}),
            json!({"resourceType": "Observation", "id": "open", "status": "final", "code": {"text": "x"},
                "effectivePeriod": {"start": "2024-01-05"}}),
        ],
    )
    .await;
    let o = |v: &str| format!("/fhir/Observation?date={v}");
    expect(&app, &o("2024-01-01T21:30:00Z"), &["late"]).await;
    expect(&app, &o("2024-01-01T23:30:00+02:00"), &["late"]).await;
    expect(&app, &o("2024-01-01T16:30:00-05:00"), &["late"]).await;
    expect(&app, &o("2024-01-01T23:30:00Z"), &[]).await;
    // 01:00+02:00 on the 2nd is 23:00Z on the 1st.
    expect(&app, &o("2024-01-01"), &["late", "after-midnight"]).await;
    expect(&app, &o("2024-01-02"), &[]).await;
    expect(&app, &o("lt2024-01-01T22:00:00Z"), &["late"]).await;
    expect(
        &app,
        &o("gt2024-01-01T22:00:00+01:00"),
        &["late", "after-midnight", "period", "open"],
    )
    .await;
    expect(&app, &o("lt2024-01-01T22:00:00+01:00"), &[]).await;
    // Periods: overlap for gt/lt, containment for eq, open ends go on forever.
    expect(&app, &o("2024-01"), &["late", "after-midnight", "period"]).await;
    expect(&app, &o("ge2024-01-02"), &["period", "open"]).await;
    // R4 defines ge as "gt or eq": a period that only partly overlaps the
    // value's range (ends during 2024-01-03) is neither.
    expect(&app, &o("ge2024-01-03"), &["open"]).await;
    expect(
        &app,
        &o("le2024-01-03"),
        &["late", "after-midnight", "period"],
    )
    .await;
    expect(&app, &o("gt2030"), &["open"]).await;
    expect(&app, &o("sa2024-01-02"), &["open"]).await;
    expect(&app, &o("eb2024-01-02"), &["late", "after-midnight"]).await;
}

// --- number and quantity ---------------------------------------------------------------

async fn numbers_and_quantities(app: TestApp) {
    let risk = |id: &str, probs: &[f64]| {
        let mut r = json!({"resourceType": "RiskAssessment", "id": id, "status": "final",
            "subject": {"reference": "Patient/x"}});
        if !probs.is_empty() {
            r["prediction"] = probs
                .iter()
                .map(|p| json!({"probabilityDecimal": p}))
                .collect();
        }
        r
    };
    put_all(
        &app,
        vec![
            risk("r30", &[0.3]),
            risk("r55", &[0.55]),
            risk("r10-80", &[0.1, 0.8]),
            risk("none", &[]),
            risk("r100", &[100.0]),
        ],
    )
    .await;
    let q = |v: &str| format!("/fhir/RiskAssessment?probability={v}");
    expect(&app, &q("0.3"), &["r30"]).await;
    expect(&app, &q("0.30"), &["r30"]).await;
    expect(&app, &q("0.55"), &["r55"]).await;
    // Implicit precision: 0.5 means [0.45, 0.55).
    expect(&app, &q("0.5"), &[]).await;
    expect(&app, &q("1e-1"), &["r10-80"]).await;
    expect(&app, &q("1e2"), &["r100"]).await;
    expect(&app, &q("gt0.5"), &["r55", "r10-80", "r100"]).await;
    expect(&app, &q("lt0.2"), &["r10-80"]).await;
    expect(&app, &q("ge0.8"), &["r10-80", "r100"]).await;
    expect(&app, &q("le0.3"), &["r30", "r10-80"]).await;
    expect(&app, &q("ne0.3"), &["r55", "r10-80", "r100"]).await;
    expect(&app, &q("sa0.5"), &["r55", "r10-80", "r100"]).await;
    expect(&app, &q("eb0.5"), &["r30", "r10-80"]).await;
    expect(&app, &q("ap0.3"), &["r30"]).await;
    expect(&app, &q("ap100"), &["r100"]).await;
    expect(&app, &q("0.3,0.55"), &["r30", "r55"]).await;
    expect(
        &app,
        "/fhir/RiskAssessment?probability=gt0.2&probability=lt0.5",
        &["r30", "r10-80"],
    )
    .await;
    expect(
        &app,
        "/fhir/RiskAssessment?probability:missing=true",
        &["none"],
    )
    .await;
    expect_400(&app, &q("abc"), "probability").await;
    expect_400(&app, &q("zz0.3"), "probability").await;

    let ucum = "http://unitsofmeasure.org";
    let obs = |id: &str, q: Value| json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"}, "valueQuantity": q});
    put_all(
        &app,
        vec![
            obs("mg54", json!({"value": 5.4, "unit": "mg", "system": ucum, "code": "mg"})),
            obs("mg54-unit-only", json!({"value": 5.4, "unit": "mg"})),
            obs("mg10", json!({"value": 10, "unit": "mg", "system": ucum, "code": "mg"})),
            obs("g54", json!({"value": 5.4, "unit": "g", "system": ucum, "code": "g"})),
            obs("mg1", json!({"value": 1, "unit": "milligram", "system": ucum, "code": "mg"})),
            json!({"resourceType": "Observation", "id": "string", "status": "final", "code": {"text": "x"}, "valueString": "5.4"}),
        ],
    )
    .await;
    let v = |q: &str| format!("/fhir/Observation?value-quantity={q}");
    expect(&app, &v(&format!("5.4|{ucum}|mg")), &["mg54"]).await;
    expect(&app, &v("5.4||mg"), &["mg54", "mg54-unit-only"]).await;
    expect(&app, &v("5.4"), &["mg54", "mg54-unit-only", "g54"]).await;
    expect(&app, &v(&format!("ge5.4|{ucum}|mg")), &["mg54", "mg10"]).await;
    expect(&app, &v(&format!("gt5.4|{ucum}|mg")), &["mg10"]).await;
    expect(&app, &v(&format!("lt6|{ucum}|")), &["mg54", "g54", "mg1"]).await;
    expect(&app, &v("le5.4||milligram"), &["mg1"]).await;
    expect(&app, &v(&format!("ap5|{ucum}|mg")), &["mg54"]).await;
    expect(&app, &v(&format!("ne5.4|{ucum}|mg")), &["mg10", "mg1"]).await;
    expect(&app, &v("5.4||g,10||mg"), &["g54", "mg10"]).await;
    expect(
        &app,
        "/fhir/Observation?value-quantity:missing=true",
        &["string"],
    )
    .await;
    expect_400(&app, &v("5.4|mg"), "value-quantity").await;
}

// --- uri --------------------------------------------------------------------------------

async fn uri_below_and_above(app: TestApp) {
    let vs = |id: &str, url: &str| json!({"resourceType": "ValueSet", "id": id, "status": "active", "url": url});
    put_all(
        &app,
        vec![
            vs("a", "http://example.org/fhir/ValueSet/a"),
            vs("ab", "http://example.org/fhir/ValueSet/a/b"),
            vs("other", "http://other.org/ValueSet/c"),
            vs("urn", "urn:oid:1.2.3"),
        ],
    )
    .await;
    expect(
        &app,
        "/fhir/ValueSet?url=http://example.org/fhir/ValueSet/a",
        &["a"],
    )
    .await;
    expect(
        &app,
        "/fhir/ValueSet?url=http://example.org/fhir/ValueSet",
        &[],
    )
    .await;
    expect(&app, "/fhir/ValueSet?url=urn:oid:1.2.3", &["urn"]).await;
    expect(
        &app,
        "/fhir/ValueSet?url:below=http://example.org/fhir",
        &["a", "ab"],
    )
    .await;
    expect(
        &app,
        "/fhir/ValueSet?url:below=http://example.org/fhir/ValueSet/a/",
        &["ab"],
    )
    .await;
    expect(
        &app,
        "/fhir/ValueSet?url:above=http://example.org/fhir/ValueSet/a/b/c",
        &["a", "ab"],
    )
    .await;
    expect(
        &app,
        "/fhir/ValueSet?url:above=http://example.org/fhir/ValueSet/a",
        &["a"],
    )
    .await;
    expect(&app, "/fhir/ValueSet?url:above=http://example.org", &[]).await;
    expect(&app, "/fhir/ValueSet?url:below=HTTP://EXAMPLE.ORG", &[]).await;
}

// --- meta ---------------------------------------------------------------------------------

async fn meta_parameters(app: TestApp) {
    let conf = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
    let uk = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient";
    put_all(
        &app,
        vec![
            json!({"resourceType": "Patient", "id": "tagged", "meta": {
                "tag": [{"system": "urn:tags", "code": "red"}, {"code": "blue"}],
                "security": [{"system": conf, "code": "R"}],
                "profile": [uk],
                "source": "https://source.example.org/app#123"}}),
            json!({"resourceType": "Patient", "id": "other", "meta": {
                "tag": [{"system": "urn:other", "code": "red"}],
                "security": [{"system": conf, "code": "N"}],
                "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient-Extra", "http://hl7.org/fhir/StructureDefinition/Patient"],
                "source": "https://source.example.org/other"}}),
            json!({"resourceType": "Patient", "id": "plain"}),
        ],
    )
    .await;
    expect(&app, "/fhir/Patient?_tag=red", &["tagged", "other"]).await;
    expect(&app, "/fhir/Patient?_tag=urn:tags|red", &["tagged"]).await;
    expect(&app, "/fhir/Patient?_tag=|blue", &["tagged"]).await;
    expect(&app, "/fhir/Patient?_tag=urn:other|", &["other"]).await;
    expect(
        &app,
        "/fhir/Patient?_tag:not=urn:tags|red",
        &["other", "plain"],
    )
    .await;
    expect(&app, "/fhir/Patient?_tag:missing=true", &["plain"]).await;
    expect(
        &app,
        &format!("/fhir/Patient?_security={conf}|R"),
        &["tagged"],
    )
    .await;
    expect(&app, "/fhir/Patient?_security=R,N", &["tagged", "other"]).await;
    expect(&app, &format!("/fhir/Patient?_profile={uk}"), &["tagged"]).await;
    expect(
        &app,
        "/fhir/Patient?_profile:below=https://fhir.hl7.org.uk/StructureDefinition/UKCore-",
        &["tagged", "other"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient?_profile=http://hl7.org/fhir/StructureDefinition/Patient",
        &["other"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient?_source=https://source.example.org/app#123",
        &["tagged"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient?_source:below=https://source.example.org/",
        &["tagged", "other"],
    )
    .await;
    expect(&app, "/fhir/Patient?_source:missing=true", &["plain"]).await;
}

// --- AND / OR / escaping ---------------------------------------------------------------------

async fn and_or_and_escaping(app: TestApp) {
    put_all(
        &app,
        vec![
            patient("comma", "Smith,Jones", "A"),
            patient("smith", "Smith", "B"),
            patient("jones", "Jones", "A"),
            patient("pipe", "x|y", "C"),
            patient("dollar", "pay$5", "D"),
            patient("backslash", "back\\slash", "E"),
            json!({"resourceType": "Patient", "id": "ident",
                "identifier": [{"system": "urn:s", "value": "a|b"}, {"system": "urn:t", "value": "c,d"}]}),
            json!({"resourceType": "Organization", "id": "ent", "name": "Burgers UMC Ear,Nose,Throat unit"}),
        ],
    )
    .await;
    // OR by comma, AND by repetition.
    expect(
        &app,
        "/fhir/Patient?family:exact=Smith,Jones",
        &["smith", "jones"],
    )
    .await;
    expect(&app, "/fhir/Patient?family=smith", &["comma", "smith"]).await;
    expect(&app, "/fhir/Patient?family=smith&given=a", &["comma"]).await;
    expect(
        &app,
        "/fhir/Patient?family=smith,jones&given=a",
        &["comma", "jones"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient?family=smith,jones&family=jones",
        &["jones"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient?_id=comma,smith,jones&_id=smith,jones&_id=jones,pipe",
        &["jones"],
    )
    .await;
    // Escaped separators are literal.
    expect(&app, "/fhir/Patient?family:exact=Smith\\,Jones", &["comma"]).await;
    expect(
        &app,
        "/fhir/Patient?family:exact=Smith\\,Jones,Jones",
        &["comma", "jones"],
    )
    .await;
    expect(&app, "/fhir/Patient?family:exact=x\\|y", &["pipe"]).await;
    expect(&app, "/fhir/Patient?family:exact=x|y", &["pipe"]).await;
    expect(&app, "/fhir/Patient?family:exact=pay\\$5", &["dollar"]).await;
    expect(
        &app,
        "/fhir/Patient?family:exact=back\\\\slash",
        &["backslash"],
    )
    .await;
    expect(&app, "/fhir/Patient?family:contains=\\,", &["comma"]).await;
    expect(&app, "/fhir/Patient?identifier=urn:s|a\\|b", &["ident"]).await;
    expect(&app, "/fhir/Patient?identifier=a\\|b", &["ident"]).await;
    expect(&app, "/fhir/Patient?identifier=urn:t|c\\,d", &["ident"]).await;
    expect(&app, "/fhir/Patient?identifier=urn:t|c,d", &[]).await;
    expect(
        &app,
        "/fhir/Organization?name:exact=Burgers UMC Ear\\,Nose\\,Throat unit",
        &["ent"],
    )
    .await;
    expect(
        &app,
        "/fhir/Organization?name=burgers umc ear\\,nose",
        &["ent"],
    )
    .await;
}

// --- sorting and paging -----------------------------------------------------------------------

/// Walks `path` forward through `next` links and back through `previous`
/// links, asserting the exact order both ways and the link structure.
async fn walk_both_ways(app: &TestApp, path: &str, expected: &[String], page_size: usize) {
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut url = enc(path);
    let last = loop {
        let r = app.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let b = r.json();
        let ids = match_ids(&b);
        assert!(ids.len() <= page_size, "{url}");
        if pages.is_empty() {
            assert!(link(&b, "previous").is_none(), "first page has no previous");
        } else {
            assert!(
                link(&b, "previous").is_some(),
                "page {} has previous",
                pages.len()
            );
        }
        pages.push(ids);
        match link(&b, "next") {
            Some(n) => url = relative(&n),
            None => break b,
        }
        assert!(pages.len() <= expected.len() + 2, "runaway paging");
    };
    let forward: Vec<String> = pages.concat();
    assert_eq!(
        forward, expected,
        "[{}] forward order of {path}",
        app.backend
    );
    assert_eq!(pages.len(), expected.len().div_ceil(page_size).max(1));

    // Back from the last page.
    let mut back_pages: Vec<Vec<String>> = vec![match_ids(&last)];
    let mut prev = link(&last, "previous");
    while let Some(p) = prev {
        let r = app.get(&relative(&p)).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        let b = r.json();
        let ids = match_ids(&b);
        assert!(!ids.is_empty(), "a previous page is never empty");
        assert!(link(&b, "next").is_some(), "a previous page links forward");
        back_pages.push(ids);
        prev = link(&b, "previous");
        assert!(back_pages.len() <= expected.len() + 2, "runaway paging");
    }
    back_pages.reverse();
    assert_eq!(
        back_pages.concat(),
        expected,
        "[{}] backward walk of {path}",
        app.backend
    );
    assert_eq!(back_pages, pages, "pages are the same both ways");
}

async fn sort_with_paging_forward_and_back(app: TestApp) {
    // (family, birthDate, gender); None = missing.
    let data: [(Option<&str>, Option<&str>, Option<&str>); 23] = [
        (Some("Baker"), Some("1990-01-01"), Some("male")),
        (Some("adams"), Some("1985-06-01"), Some("female")),
        (Some("Adams"), Some("1985-06-01"), Some("male")),
        (None, Some("2000-01-01"), Some("female")),
        (Some("Clark"), None, None),
        (Some("baker"), Some("1990-01-01"), Some("female")),
        (Some("Baker"), None, Some("other")),
        (Some("Evans"), Some("1970-03-03"), Some("male")),
        (Some("Davis"), Some("1970-03-03"), None),
        (None, None, Some("male")),
        (Some("Clark"), Some("1999-12-31"), Some("female")),
        (Some("Adams"), Some("2001-01-01"), Some("male")),
        (Some("Evans"), Some("1970-03-04"), Some("female")),
        (Some("Baker"), Some("1989-12-31"), Some("male")),
        (None, Some("1950-01-01"), None),
        (Some("Fox"), Some("1960-07-07"), Some("male")),
        (Some("Clark"), Some("1999-12-31"), Some("male")),
        (Some("Davis"), None, Some("female")),
        (Some("adams"), None, Some("male")),
        (Some("Green"), Some("1940-02-02"), Some("female")),
        (Some("Fox"), Some("1960-07-07"), Some("female")),
        (None, None, None),
        (Some("Green"), Some("1940-02-03"), Some("male")),
    ];
    for (i, (family, birth, gender)) in data.iter().enumerate() {
        let mut p = json!({"resourceType": "Patient", "id": format!("s{i:02}")});
        if let Some(f) = family {
            p["name"] = json!([{"family": f}]);
        }
        if let Some(b) = birth {
            p["birthDate"] = json!(b);
        }
        if let Some(g) = gender {
            p["gender"] = json!(g);
        }
        put(&app, p).await;
    }
    let id = |i: usize| format!("s{i:02}");
    // Nulls last on every key, whatever the direction; then id ascending.
    fn opt_cmp<T: Ord>(a: &Option<T>, b: &Option<T>, desc: bool) -> std::cmp::Ordering {
        match (a, b) {
            (Some(x), Some(y)) => {
                if desc {
                    y.cmp(x)
                } else {
                    x.cmp(y)
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
    let fam = |i: usize| data[i].0.map(str::to_lowercase);

    // family ascending, birthdate descending.
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by(|&a, &b| {
        opt_cmp(&fam(a), &fam(b), false)
            .then(opt_cmp(&data[a].1, &data[b].1, true))
            .then(id(a).cmp(&id(b)))
    });
    let expected: Vec<String> = order.iter().map(|&i| id(i)).collect();
    walk_both_ways(
        &app,
        "/fhir/Patient?_sort=family,-birthdate&_count=4",
        &expected,
        4,
    )
    .await;

    // Three keys: gender, family descending, then _id descending.
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by(|&a, &b| {
        opt_cmp(&data[a].2, &data[b].2, false)
            .then(opt_cmp(&fam(a), &fam(b), true))
            .then(id(b).cmp(&id(a)))
    });
    let expected: Vec<String> = order.iter().map(|&i| id(i)).collect();
    walk_both_ways(
        &app,
        "/fhir/Patient?_sort=gender,-family,-_id&_count=5",
        &expected,
        5,
    )
    .await;

    // Birthdate ascending with a page size that leaves nulls split over pages.
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by(|&a, &b| opt_cmp(&data[a].1, &data[b].1, false).then(id(a).cmp(&id(b))));
    let expected: Vec<String> = order.iter().map(|&i| id(i)).collect();
    walk_both_ways(&app, "/fhir/Patient?_sort=birthdate&_count=3", &expected, 3).await;

    // _id descending alone; one big page.
    let mut expected: Vec<String> = (0..data.len()).map(id).collect();
    expected.reverse();
    walk_both_ways(&app, "/fhir/Patient?_sort=-_id&_count=100", &expected, 100).await;

    // A number key (real-valued cursors), descending, with missing values.
    let probs: [Option<f64>; 9] = [
        Some(0.25),
        None,
        Some(0.125),
        Some(0.25),
        Some(1e-7),
        None,
        Some(0.9),
        Some(0.1 + 0.2),
        Some(0.3),
    ];
    for (i, p) in probs.iter().enumerate() {
        let mut r = json!({"resourceType": "RiskAssessment", "id": format!("r{i}"), "status": "final",
            "subject": {"reference": "Patient/s00"}});
        if let Some(p) = p {
            r["prediction"] = json!([{"probabilityDecimal": p}]);
        }
        put(&app, r).await;
    }
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| {
        match (probs[a], probs[b]) {
            (Some(x), Some(y)) => y.partial_cmp(&x).unwrap(),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then(a.cmp(&b))
    });
    let expected: Vec<String> = order.iter().map(|&i| format!("r{i}")).collect();
    walk_both_ways(
        &app,
        "/fhir/RiskAssessment?_sort=-probability&_count=2",
        &expected,
        2,
    )
    .await;

    // _lastUpdated follows write order.
    let expected: Vec<String> = (0..probs.len()).map(|i| format!("r{i}")).collect();
    let got = all_ids(&app, "/fhir/RiskAssessment?_sort=_lastUpdated,_id&_count=4").await;
    // Writes in the same millisecond tie on _lastUpdated and fall back to _id,
    // which is also write order here.
    assert_eq!(got, expected);

    expect_400(&app, "/fhir/Patient?_sort=nonsense", "_sort").await;
    expect_400(&app, "/fhir/Patient?_sort=family,,given", "_sort").await;
}

async fn keyset_paging_is_stable_under_inserts(app: TestApp) {
    for i in 0..12 {
        put(&app, patient(&format!("k{i:02}"), &format!("K{i:02}"), "x")).await;
    }
    let originals: Vec<String> = (0..12).map(|i| format!("k{i:02}")).collect();

    // Sorted by family.
    let first = get_ok(&app, "/fhir/Patient?_sort=family&_count=5").await;
    let mut seen = match_ids(&first);
    assert_eq!(seen, originals[..5]);
    // Inserted before the cursor (never shown), and after it (shown once).
    put(&app, patient("early", "A-early", "x")).await;
    put(&app, patient("k02x", "K02x", "x")).await;
    put(&app, patient("k07x", "K07x", "x")).await;
    put(&app, patient("late", "Z-late", "x")).await;
    // The next page starts after the last key seen, whatever was written since.
    let second = app
        .get(&relative(&link(&first, "next").unwrap()))
        .await
        .json();
    let page2 = match_ids(&second);
    assert_eq!(page2, ["k05", "k06", "k07", "k07x", "k08"]);
    seen.extend(page2);
    put(&app, patient("k06y", "K06y", "x")).await;
    let mut next = link(&second, "next");
    while let Some(n) = next {
        let b = app.get(&relative(&n)).await.json();
        seen.extend(match_ids(&b));
        next = link(&b, "next");
        put(&app, patient(&format!("n{}", seen.len()), "K99", "x")).await;
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no duplicates: {seen:?}");
    let originals_seen: Vec<&String> = seen.iter().filter(|s| originals.contains(s)).collect();
    assert_eq!(
        originals_seen,
        originals.iter().collect::<Vec<_>>(),
        "{seen:?}"
    );
    assert!(!seen.contains(&"early".to_owned()));
    assert!(!seen.contains(&"k02x".to_owned()));
    assert!(!seen.contains(&"k06y".to_owned()));
    assert!(seen.contains(&"late".to_owned()));

    // Default order (by id) with inserts on both sides of the cursor.
    let first = get_ok(&app, "/fhir/Patient?_count=4").await;
    let mut seen = match_ids(&first);
    let before: Vec<String> = all_ids(&app, "/fhir/Patient?_count=500").await;
    put(&app, patient("a-first", "x", "x")).await;
    put(&app, patient("zz-last", "x", "x")).await;
    let mut next = link(&first, "next");
    while let Some(n) = next {
        let b = app.get(&relative(&n)).await.json();
        seen.extend(match_ids(&b));
        next = link(&b, "next");
    }
    let mut want = before.clone();
    want.push("zz-last".into());
    want.sort();
    assert_eq!(seen, want);
    assert!(!seen.contains(&"a-first".to_owned()));
}

// --- totals, _summary, _elements --------------------------------------------------------------

async fn total_modes(app: TestApp) {
    for i in 0..7 {
        put(&app, patient(&format!("t{i}"), "Total", "x")).await;
    }
    put(&app, patient("u", "Other", "x")).await;
    let b = get_ok(&app, "/fhir/Patient?family=total&_count=3").await;
    assert_eq!(b["total"], 7);
    let b = get_ok(&app, "/fhir/Patient?family=total&_count=3&_total=accurate").await;
    assert_eq!(b["total"], 7);
    assert!(link(&b, "next").unwrap().contains("_total=accurate"));
    let b = get_ok(&app, "/fhir/Patient?family=total&_count=3&_total=estimate").await;
    assert!(b["total"].as_i64().unwrap() >= 3);
    let b = get_ok(&app, "/fhir/Patient?family=total&_count=3&_total=none").await;
    assert!(b.get("total").is_none(), "{b}");
    assert_eq!(match_ids(&b).len(), 3);
    // The next link keeps _total=none.
    let n = link(&b, "next").unwrap();
    let b2 = app.get(&relative(&n)).await.json();
    assert!(b2.get("total").is_none());
    assert_eq!(
        all_ids(&app, "/fhir/Patient?family=total&_total=none&_count=2")
            .await
            .len(),
        7
    );
    expect_400(&app, "/fhir/Patient?_total=some", "_total").await;
}

async fn summary_and_elements(app: TestApp) {
    put(
        &app,
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Hb 7.2</div>"},
            "meta": {"tag": [{"system": "urn:t", "code": "keep"}]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-01-01",
            "valueQuantity": {"value": 7.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
            "note": [{"text": "not a summary element"}]}),
    )
    .await;
    put(&app, patient("p1", "Summary", "x")).await;
    let one = |b: &Value| {
        let e = entries_with_mode(b, "match");
        assert_eq!(e.len(), 1, "{b}");
        e[0]["resource"].clone()
    };
    let subsetted = |r: &Value| {
        r["meta"]["tag"]
            .as_array()
            .is_some_and(|t| t.iter().any(|c| c["code"] == "SUBSETTED"))
    };

    let b = get_ok(&app, "/fhir/Observation?_summary=count").await;
    assert_eq!(b["total"], 1);
    assert!(b.get("entry").is_none(), "{b}");

    let full = one(&get_ok(&app, "/fhir/Observation?_id=o1").await);
    assert!(!subsetted(&full));
    assert!(full.get("note").is_some() && full.get("text").is_some());

    let r = one(&get_ok(&app, "/fhir/Observation?_summary=true").await);
    assert!(subsetted(&r), "{r}");
    for k in [
        "id",
        "meta",
        "status",
        "code",
        "subject",
        "effectiveDateTime",
        "valueQuantity",
    ] {
        assert!(r.get(k).is_some(), "_summary=true keeps {k}: {r}");
    }
    for k in ["note", "text"] {
        assert!(r.get(k).is_none(), "_summary=true drops {k}: {r}");
    }
    // Client tags survive next to SUBSETTED.
    assert!(r["meta"]["tag"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["code"] == "keep"));

    let r = one(&get_ok(&app, "/fhir/Observation?_summary=text").await);
    assert!(subsetted(&r), "{r}");
    for k in ["id", "meta", "text", "status", "code"] {
        assert!(r.get(k).is_some(), "_summary=text keeps {k}: {r}");
    }
    for k in ["subject", "valueQuantity", "note", "effectiveDateTime"] {
        assert!(r.get(k).is_none(), "_summary=text drops {k}: {r}");
    }

    let r = one(&get_ok(&app, "/fhir/Observation?_summary=data").await);
    assert!(subsetted(&r), "{r}");
    assert!(r.get("text").is_none());
    for k in ["note", "valueQuantity", "subject", "status", "code"] {
        assert!(r.get(k).is_some(), "_summary=data keeps {k}: {r}");
    }

    let r = one(&get_ok(&app, "/fhir/Observation?_summary=false").await);
    assert_eq!(r, full);

    let r = one(&get_ok(&app, "/fhir/Observation?_elements=subject,note").await);
    assert!(subsetted(&r), "{r}");
    // Mandatory elements (status, code) are kept whether asked for or not.
    for k in [
        "resourceType",
        "id",
        "meta",
        "subject",
        "note",
        "status",
        "code",
    ] {
        assert!(r.get(k).is_some(), "_elements keeps {k}: {r}");
    }
    for k in ["valueQuantity", "text", "effectiveDateTime"] {
        assert!(r.get(k).is_none(), "_elements drops {k}: {r}");
    }
    // A choice element by its base name; `Type.` prefixes are accepted.
    let r = one(&get_ok(
        &app,
        "/fhir/Observation?_elements=Observation.value,effective",
    )
    .await);
    assert!(
        r.get("valueQuantity").is_some() && r.get("effectiveDateTime").is_some(),
        "{r}"
    );
    assert!(r.get("subject").is_none());
    expect_400(&app, "/fhir/Observation?_elements=nonsense", "_elements").await;
    expect_400(&app, "/fhir/Observation?_summary=maybe", "_summary").await;
}

// --- includes ----------------------------------------------------------------------------------

async fn include_and_revinclude(app: TestApp) {
    put_all(
        &app,
        vec![
            json!({"resourceType": "Organization", "id": "o1", "name": "Org"}),
            json!({"resourceType": "Practitioner", "id": "d1", "name": [{"family": "Doc"}]}),
            json!({"resourceType": "Practitioner", "id": "d2", "name": [{"family": "Other"}]}),
            json!({"resourceType": "Patient", "id": "p1",
                "generalPractitioner": [{"reference": "Practitioner/d1"}],
                "managingOrganization": {"reference": "Organization/o1"}}),
            json!({"resourceType": "Patient", "id": "p2"}),
            json!({"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/p1"},
                "requester": {"reference": "Practitioner/d2"}}),
            json!({"resourceType": "MedicationRequest", "id": "m2", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/p2"}}),
            json!({"resourceType": "MedicationRequest", "id": "m3", "status": "stopped", "intent": "order",
                "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
            json!({"resourceType": "Observation", "id": "obs1", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/d1"}]}),
        ],
    )
    .await;
    let b = get_ok(
        &app,
        "/fhir/MedicationRequest?_id=m1&_include=MedicationRequest:subject",
    )
    .await;
    assert_eq!(match_ids(&b), ["m1"]);
    assert_eq!(b["total"], 1, "included resources are not counted");
    assert_eq!(included(&b), ["Patient/p1"]);
    for e in entries_with_mode(&b, "include") {
        assert!(e["fullUrl"].as_str().unwrap().ends_with("/Patient/p1"));
    }
    // Targets are included once even if several matches point at them.
    let b = get_ok(
        &app,
        "/fhir/MedicationRequest?subject=p1&_include=MedicationRequest:patient",
    )
    .await;
    assert_eq!(match_ids(&b).len(), 2);
    assert_eq!(included(&b), ["Patient/p1"]);
    // A target type restriction.
    let b = get_ok(
        &app,
        "/fhir/MedicationRequest?_id=m1&_include=MedicationRequest:subject:Group",
    )
    .await;
    assert!(included(&b).is_empty());
    // Several includes.
    let b = get_ok(
        &app,
        "/fhir/MedicationRequest?_id=m1&_include=MedicationRequest:subject&_include=MedicationRequest:requester",
    )
    .await;
    assert_eq!(included(&b), ["Patient/p1", "Practitioner/d2"]);
    // :iterate follows included resources too.
    let b = get_ok(
        &app,
        "/fhir/MedicationRequest?_id=m1&_include=MedicationRequest:subject&_include:iterate=Patient:general-practitioner&_include:iterate=Patient:organization",
    )
    .await;
    assert_eq!(
        included(&b),
        ["Organization/o1", "Patient/p1", "Practitioner/d1"]
    );
    // Without :iterate the second hop is not taken.
    let r = app
        .get(&enc("/fhir/MedicationRequest?_id=m1&_include=MedicationRequest:subject&_include=Patient:organization"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // * includes every reference parameter of the searched type.
    let b = get_ok(&app, "/fhir/MedicationRequest?_id=m1&_include=*").await;
    assert_eq!(included(&b), ["Patient/p1", "Practitioner/d2"]);
    // _revinclude.
    let b = get_ok(
        &app,
        "/fhir/Patient?_id=p1&_revinclude=MedicationRequest:subject",
    )
    .await;
    assert_eq!(match_ids(&b), ["p1"]);
    assert_eq!(
        included(&b),
        ["MedicationRequest/m1", "MedicationRequest/m3"]
    );
    let b = get_ok(
        &app,
        "/fhir/Patient?_id=p1,p2&_revinclude=MedicationRequest:subject&_revinclude=Observation:subject",
    )
    .await;
    assert_eq!(
        included(&b),
        [
            "MedicationRequest/m1",
            "MedicationRequest/m2",
            "MedicationRequest/m3",
            "Observation/obs1"
        ]
    );
    // _revinclude, then :iterate forward from what it brought in.
    let b = get_ok(
        &app,
        "/fhir/Patient?_id=p1&_revinclude=MedicationRequest:subject&_include:iterate=MedicationRequest:requester",
    )
    .await;
    assert_eq!(
        included(&b),
        [
            "MedicationRequest/m1",
            "MedicationRequest/m3",
            "Practitioner/d2"
        ]
    );
    // :iterate on _revinclude: practitioners -> patients -> their observations.
    let b = get_ok(
        &app,
        "/fhir/Practitioner?_id=d1&_revinclude=Patient:general-practitioner&_revinclude:iterate=Observation:subject",
    )
    .await;
    assert_eq!(match_ids(&b), ["d1"]);
    assert_eq!(included(&b), ["Observation/obs1", "Patient/p1"]);
    // Includes restricted to the page's matches.
    let b = get_ok(
        &app,
        "/fhir/MedicationRequest?_sort=_id&_count=1&_include=MedicationRequest:subject",
    )
    .await;
    assert_eq!(match_ids(&b), ["m1"]);
    assert_eq!(included(&b), ["Patient/p1"]);
    let n = link(&b, "next").unwrap();
    assert!(n.contains("_include=MedicationRequest"), "{n}");
    let b2 = app.get(&relative(&n)).await.json();
    assert_eq!(match_ids(&b2), ["m2"]);
    assert_eq!(included(&b2), ["Patient/p2"]);
    // A matched resource is never repeated as an include.
    let b = get_ok(
        &app,
        "/fhir/Patient?_id=p1&_revinclude=MedicationRequest:subject&_include:iterate=MedicationRequest:subject",
    )
    .await;
    assert_eq!(match_ids(&b), ["p1"]);
    assert_eq!(
        included(&b),
        ["MedicationRequest/m1", "MedicationRequest/m3"]
    );
    expect_400(
        &app,
        "/fhir/MedicationRequest?_include=MedicationRequest:status",
        "_include",
    )
    .await;
    expect_400(
        &app,
        "/fhir/MedicationRequest?_include=Nonsense:subject",
        "_include",
    )
    .await;
    expect_400(
        &app,
        "/fhir/MedicationRequest?_include:foo=MedicationRequest:subject",
        "_include:foo",
    )
    .await;
}

// --- compartment ---------------------------------------------------------------------------------

async fn patient_compartment_search(app: TestApp) {
    put_all(
        &app,
        vec![
            patient("p1", "One", "x"),
            patient("p2", "Two", "x"),
            med_request("a1", "active", json!({"reference": "Patient/p1"})),
            med_request("a2", "completed", json!({"reference": "Patient/p1"})),
            med_request("a3", "active", json!({"reference": "Patient/p1"})),
            med_request("b1", "active", json!({"reference": "Patient/p2"})),
            json!({"resourceType": "Observation", "id": "o-subj", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p1"}}),
            json!({"resourceType": "Observation", "id": "o-perf", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p2"}, "performer": [{"reference": "Patient/p1"}]}),
            json!({"resourceType": "Observation", "id": "o-other", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p2"}}),
        ],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient/p1/MedicationRequest",
        &["a1", "a2", "a3"],
    )
    .await;
    expect(
        &app,
        "/fhir/Patient/p1/MedicationRequest?status=active",
        &["a1", "a3"],
    )
    .await;
    expect(&app, "/fhir/Patient/p2/MedicationRequest", &["b1"]).await;
    expect(&app, "/fhir/Patient/nobody/MedicationRequest", &[]).await;
    // Membership through any compartment parameter (subject or performer).
    expect(&app, "/fhir/Patient/p1/Observation", &["o-subj", "o-perf"]).await;
    expect(&app, "/fhir/Patient/p2/Observation", &["o-perf", "o-other"]).await;
    expect(&app, "/fhir/Patient/p1/Patient", &["p1"]).await;
    // Links keep the compartment path; paging stays inside it.
    let b = get_ok(
        &app,
        "/fhir/Patient/p1/MedicationRequest?_count=2&_sort=_id",
    )
    .await;
    assert_eq!(match_ids(&b), ["a1", "a2"]);
    let s = link(&b, "self").unwrap();
    assert!(s.contains("/fhir/Patient/p1/MedicationRequest?"), "{s}");
    let n = link(&b, "next").unwrap();
    assert!(n.contains("/fhir/Patient/p1/MedicationRequest?"), "{n}");
    let b2 = app.get(&relative(&n)).await.json();
    assert_eq!(match_ids(&b2), ["a3"]);
    assert!(link(&b2, "next").is_none());
    let r = app.get("/fhir/Patient/p1/Organization").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = app.get("/fhir/Patient/p1/MedicationRequest?foo=bar").await;
    assert_eq!(r.status, 400);
}

// --- POST _search ----------------------------------------------------------------------------------

async fn post_search_with_form_body_and_url_parameters(app: TestApp) {
    put_all(
        &app,
        vec![
            json!({"resourceType": "Patient", "id": "f1", "gender": "female", "name": [{"family": "Smith", "given": ["Ann"]}]}),
            json!({"resourceType": "Patient", "id": "f2", "gender": "female", "name": [{"family": "Smith", "given": ["Beth"]}]}),
            json!({"resourceType": "Patient", "id": "f3", "gender": "female", "name": [{"family": "Smyth", "given": ["Cat"]}]}),
            json!({"resourceType": "Patient", "id": "m1", "gender": "male", "name": [{"family": "Smith", "given": ["Dan"]}]}),
        ],
    )
    .await;
    let form = |body: &str| {
        (
            Some(body.as_bytes().to_vec()),
            [("Content-Type", "application/x-www-form-urlencoded")],
        )
    };
    let (body, h) = form("family=smith&_sort=-given&_count=1");
    let r = app
        .request("POST", "/fhir/Patient/_search?gender=female", &h, body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["total"], 2);
    assert_eq!(match_ids(&b), ["f2"]);
    // The links are GET links to an opaque token holding both the URL's and the
    // body's parameters: the body's values never appear in a URL (issue 11).
    let s = link(&b, "self").unwrap();
    assert!(
        s.contains("_page=") && !s.contains("family") && !s.contains("smith"),
        "{s}"
    );
    let n = link(&b, "next").unwrap();
    let b2 = app.get(&relative(&n)).await.json();
    assert_eq!(match_ids(&b2), ["f1"]);
    // Escapes and OR in a form body.
    let (body, h) = form("family%3Aexact=Smyth%2CNobody&given=c");
    let r = app.request("POST", "/fhir/Patient/_search", &h, body).await;
    assert_eq!(match_ids(&r.json()), ["f3"]);
    // An empty body searches everything.
    let r = app
        .request("POST", "/fhir/Patient/_search", &h, Some(Vec::new()))
        .await;
    assert_eq!(r.json()["total"], 4);
    let (body, h) = form("nonsense=1");
    let r = app.request("POST", "/fhir/Patient/_search", &h, body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.issues()[0]["expression"][0], "nonsense");
}

// --- strictness -----------------------------------------------------------------------------------

async fn strict_and_lenient_handling(app: TestApp) {
    put(&app, patient("p", "Smith", "x")).await;
    expect_400(&app, "/fhir/Patient?foo=bar", "foo").await;
    expect_400(&app, "/fhir/Patient?family:foo=x", "family:foo").await;
    expect_400(&app, "/fhir/Patient?gender:exact=male", "gender:exact").await;
    expect_400(
        &app,
        "/fhir/Patient?birthdate:contains=1980",
        "birthdate:contains",
    )
    .await;
    expect_400(&app, "/fhir/Patient?family:below=x", "family:below").await;
    expect_400(&app, "/fhir/Patient?birthdate=zz1980", "birthdate").await;
    expect_400(
        &app,
        "/fhir/Patient?organization=gtOrganization/1",
        "organization",
    )
    .await;
    expect_400(
        &app,
        "/fhir/Patient?birthdate:missing=maybe",
        "birthdate:missing",
    )
    .await;
    expect_400(&app, "/fhir/Patient?family=", "family").await;
    expect_400(&app, "/fhir/Patient?family=a,,b", "family").await;
    expect_400(&app, "/fhir/Patient?_count=abc", "_count").await;
    expect_400(&app, "/fhir/Patient?phonetic=smith", "phonetic").await;
    expect_400(&app, "/fhir/Patient?_text=smith", "_text").await;
    expect_400(&app, "/fhir/Patient?status=active", "status").await;
    // Prefixes are only read on date, number and quantity parameters: on a
    // token or string parameter `ge…` is part of the value, as FHIR says.
    expect(&app, "/fhir/Patient?gender=gemale", &[]).await;
    expect(&app, "/fhir/Patient?family=gtsmith", &[]).await;

    // Lenient: unknown things are dropped, reported, and absent from `self`.
    let r = app
        .get_with(
            &enc("/fhir/Patient?foo=bar&family:foo=x&family=smith&birthdate=zz1980&_count=5"),
            &[("Prefer", "handling=lenient")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(match_ids(&b), ["p"]);
    let s = link(&b, "self").unwrap();
    assert!(s.contains("family=smith"), "{s}");
    assert!(s.contains("_count=5"), "{s}");
    for ignored in ["foo", "family%3Afoo", "family:foo", "birthdate", "zz1980"] {
        assert!(!s.contains(ignored), "{ignored} in {s}");
    }
    let outcome = entries_with_mode(&b, "outcome");
    assert_eq!(outcome.len(), 1, "{b}");
    let issues = outcome[0]["resource"]["issue"].as_array().unwrap();
    let mut exprs: Vec<&str> = issues
        .iter()
        .map(|i| {
            assert_eq!(i["severity"], "warning");
            i["expression"][0].as_str().unwrap()
        })
        .collect();
    exprs.sort();
    assert_eq!(exprs, ["birthdate", "family:foo", "foo"]);
    // Strict is the default, and can be asked for.
    let r = app
        .get_with("/fhir/Patient?foo=bar", &[("Prefer", "handling=strict")])
        .await;
    assert_eq!(r.status, 400);
    // No warnings: no outcome entry.
    let r = app
        .get_with(
            "/fhir/Patient?family=smith",
            &[("Prefer", "handling=lenient")],
        )
        .await;
    assert!(entries_with_mode(&r.json(), "outcome").is_empty());
}

async fn cost_bounds(app: TestApp) {
    put(&app, patient("p", "Smith", "x")).await;
    // Three chained hops are allowed, four are not.
    let r = app
        .get("/fhir/MedicationRequest?patient.organization.partof.name=x")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    expect_400(
        &app,
        "/fhir/MedicationRequest?patient.organization.partof.partof.name=x",
        "patient.organization.partof.partof.name",
    )
    .await;
    let r = app
        .get("/fhir/Patient?_has:Observation:subject:_has:Observation:has-member:_has:Observation:has-member:status=final")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app
        .get("/fhir/Patient?_has:Observation:subject:_has:Observation:has-member:_has:Observation:has-member:_has:Observation:has-member:status=final")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // OR-ed values: 100 are fine, 101 are too many.
    let values = |n: usize| {
        (0..n)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let r = app
        .get(&format!("/fhir/Patient?family={}", values(100)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    expect_400(
        &app,
        &format!("/fhir/Patient?family={}", values(101)),
        "family",
    )
    .await;
    // Too many parameters.
    let many = (0..31)
        .map(|i| format!("family=s{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let r = app.get(&format!("/fhir/Patient?{many}")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.issues()[0]["code"], "too-costly");
    // Too many includes.
    let inc = (0..11)
        .map(|_| "_include=Patient:organization")
        .collect::<Vec<_>>()
        .join("&");
    expect_400(&app, &format!("/fhir/Patient?{inc}"), "_include").await;
    // _count is capped rather than refused.
    let b = get_ok(&app, "/fhir/Patient?_count=100000").await;
    assert!(link(&b, "first").unwrap().contains("_count=1000"), "{b}");
    assert!(!link(&b, "first").unwrap().contains("_count=10000"), "{b}");
}

// --- writes and search -------------------------------------------------------------------------

async fn updates_and_deletes_leave_no_stale_matches(app: TestApp) {
    put_all(
        &app,
        vec![
            json!({"resourceType": "Organization", "id": "o", "name": "Org"}),
            json!({"resourceType": "Patient", "id": "p", "name": [{"family": "Old"}],
                "managingOrganization": {"reference": "Organization/o"}}),
            med_request("m", "active", json!({"reference": "Patient/p"})),
        ],
    )
    .await;
    expect(&app, "/fhir/Patient?family=old", &["p"]).await;
    put(
        &app,
        json!({"resourceType": "Patient", "id": "p", "name": [{"family": "New"}],
            "managingOrganization": {"reference": "Organization/o"}}),
    )
    .await;
    expect(&app, "/fhir/Patient?family=old", &[]).await;
    expect(&app, "/fhir/Patient?family=new", &["p"]).await;
    expect(&app, "/fhir/MedicationRequest?subject.family=new", &["m"]).await;
    expect(&app, "/fhir/MedicationRequest?subject.family=old", &[]).await;
    expect(
        &app,
        "/fhir/Patient?_has:MedicationRequest:subject:status=active",
        &["p"],
    )
    .await;

    // A deleted target: the reference still matches by id, chains and
    // includes no longer see it.
    let d = app.delete("/fhir/Organization/o").await.status;
    assert!(d == 200 || d == 204, "{d}");
    expect(&app, "/fhir/Organization?name=org", &[]).await;
    expect(&app, "/fhir/Patient?organization=o", &["p"]).await;
    expect(&app, "/fhir/Patient?organization.name=org", &[]).await;
    let b = get_ok(&app, "/fhir/Patient?_id=p&_include=Patient:organization").await;
    assert!(included(&b).is_empty(), "{b}");

    // A deleted source: gone from its own searches, _has and _revinclude.
    let d = app.delete("/fhir/MedicationRequest/m").await.status;
    assert!(d == 200 || d == 204, "{d}");
    expect(&app, "/fhir/MedicationRequest?subject=p", &[]).await;
    expect(&app, "/fhir/MedicationRequest", &[]).await;
    expect(
        &app,
        "/fhir/Patient?_has:MedicationRequest:subject:status=active",
        &[],
    )
    .await;
    let b = get_ok(
        &app,
        "/fhir/Patient?_id=p&_revinclude=MedicationRequest:subject",
    )
    .await;
    assert!(included(&b).is_empty(), "{b}");
    expect(&app, "/fhir/Patient/p/MedicationRequest", &[]).await;

    // Re-created after deletion: found again, once.
    put(
        &app,
        med_request("m", "completed", json!({"reference": "Patient/p"})),
    )
    .await;
    expect(&app, "/fhir/MedicationRequest?subject=p", &["m"]).await;
    expect(&app, "/fhir/MedicationRequest?status=active", &[]).await;
    expect(
        &app,
        "/fhir/Patient?_has:MedicationRequest:subject:status=completed",
        &["p"],
    )
    .await;
}

async fn cursors_are_checked(app: TestApp) {
    for (i, f) in ["Ann", "Bob", "Cid", "Dee", "Eve"].iter().enumerate() {
        let mut p = patient(&format!("c{i}"), f, "x");
        p["birthDate"] = json!(format!("200{i}-01-01"));
        put(&app, p).await;
    }
    let b = get_ok(&app, "/fhir/Patient?_sort=family&_count=2").await;
    let next = relative(&link(&b, "next").unwrap());
    assert!(next.contains("_sort=family"), "{next}");
    assert_eq!(match_ids(&app.get(&next).await.json()), ["c2", "c3"]);
    // A cursor only fits the sort it was made for: another sort's keys
    // (here a text key where a date is expected) are refused, not misread.
    for tampered in [
        next.replace("_sort=family", "_sort=birthdate"),
        next.replace("_sort=family", "_sort=family%2Cbirthdate"),
        next.replace("_sort=family&", ""),
    ] {
        let r = app.get(&tampered).await;
        assert_eq!(r.status, 400, "{tampered}: {}", r.text());
        assert_eq!(r.issues()[0]["expression"][0], "_cursor", "{tampered}");
    }
    expect_400(&app, "/fhir/Patient?_cursor=!!!", "_cursor").await;
    // Valid base64url, wrong content.
    expect_400(&app, "/fhir/Patient?_cursor=WzEsMiwzXQ", "_cursor").await;
    // _count=0 is a count without entries.
    let b = get_ok(&app, "/fhir/Patient?_count=0").await;
    assert_eq!(b["total"], 5);
    assert!(b.get("entry").is_none(), "{b}");
    assert!(link(&b, "next").is_none());
}

// --- composite ---------------------------------------------------------------

async fn composites_match_within_one_element(app: TestApp) {
    let loinc = |code: &str| json!({"coding": [{"system": "http://loinc.org", "code": code}]});
    let qty = |v: f64| json!({"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"});
    let obs = |id: &str, code: &str, value: Option<f64>| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": loinc(code)});
        if let Some(v) = value {
            o["valueQuantity"] = qty(v);
        }
        o
    };
    let mut panel = obs("bp", "85354-9", None);
    panel["component"] = json!([
        {"code": loinc("8480-6"), "valueQuantity": qty(130.0)},
        {"code": loinc("8462-4"), "valueQuantity": qty(85.0)}
    ]);
    let mut smoker = obs("smoker", "72166-2", None);
    smoker["valueCodeableConcept"] =
        json!({"coding": [{"system": "http://snomed.info/sct", "code": "77176002"}]});
    put_all(
        &app,
        vec![
            obs("sys120", "8480-6", Some(120.0)),
            obs("sys90", "8480-6", Some(90.0)),
            obs("dia120", "8462-4", Some(120.0)),
            panel,
            smoker,
        ],
    )
    .await;
    let q = |p: &str| format!("/fhir/Observation?{p}");
    expect(
        &app,
        &q("code-value-quantity=http://loinc.org|8480-6$gt100"),
        &["sys120"],
    )
    .await;
    expect(
        &app,
        &q("code-value-quantity=8480-6$le120"),
        &["sys120", "sys90"],
    )
    .await;
    // OR over whole tuples.
    expect(
        &app,
        &q("code-value-quantity=http://loinc.org|8480-6$gt100,http://loinc.org|8462-4$gt100"),
        &["sys120", "dia120"],
    )
    .await;
    // AND of two tuples on the same resource.
    expect(
        &app,
        &q("component-code-value-quantity=http://loinc.org|8480-6$gt125&component-code-value-quantity=http://loinc.org|8462-4$lt90"),
        &["bp"],
    )
    .await;
    expect(
        &app,
        &q("component-code-value-quantity=http://loinc.org|8480-6$gt125"),
        &["bp"],
    )
    .await;
    // 130 belongs to the systolic component, not to the diastolic one.
    expect(
        &app,
        &q("component-code-value-quantity=http://loinc.org|8462-4$gt125"),
        &[],
    )
    .await;
    // combo: the observation's own code/value or any component's.
    expect(
        &app,
        &q("combo-code-value-quantity=http://loinc.org|8480-6$gt100"),
        &["sys120", "bp"],
    )
    .await;
    expect(
        &app,
        &q("code-value-concept=http://loinc.org|72166-2$http://snomed.info/sct|77176002"),
        &["smoker"],
    )
    .await;
    expect(
        &app,
        &q("code-value-concept=http://loinc.org|72166-2$|1"),
        &[],
    )
    .await;
    // :missing looks at whole tuples.
    expect(
        &app,
        &q("code-value-quantity:missing=false"),
        &["sys120", "sys90", "dia120"],
    )
    .await;
    expect(
        &app,
        &q("code-value-quantity:missing=true"),
        &["bp", "smoker"],
    )
    .await;
    // A `\$` is part of a value, not a separator.
    expect(&app, &q("code-value-quantity=8480\\$6$gt1"), &[]).await;

    expect_400(
        &app,
        &q("code-value-quantity=http://loinc.org|8480-6"),
        "code-value-quantity",
    )
    .await;
    expect_400(
        &app,
        &q("code-value-quantity=8480-6$gt1$2"),
        "code-value-quantity",
    )
    .await;
    expect_400(
        &app,
        &q("code-value-quantity=8480-6$big"),
        "code-value-quantity",
    )
    .await;
    expect_400(
        &app,
        &q("code-value-quantity:exact=8480-6$1"),
        "code-value-quantity:exact",
    )
    .await;
    expect_400(&app, &q("_sort=code-value-quantity"), "_sort").await;
    // The CapabilityStatement advertises them.
    let cs = get_ok(&app, "/fhir/metadata").await;
    let obs_cs = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap()
        .clone();
    let composite = obs_cs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "code-value-quantity")
        .unwrap()
        .clone();
    assert_eq!(composite["type"], "composite");
}

// --- default _total ------------------------------------------------------------

async fn default_total_is_exact_below_the_cap(app: TestApp) {
    // 1,010 `many` and 10 `few`, in one transaction.
    let entries: Vec<Value> = (0..1020)
        .map(|i| {
            let code = if i < 10 { "few" } else { "many" };
            json!({"resource": {"resourceType": "Basic",
                    "code": {"coding": [{"system": "urn:cap", "code": code}]}},
                   "request": {"method": "POST", "url": "Basic"}})
        })
        .collect();
    let r = app
        .post(
            "/fhir",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Above the cap the default leaves the total out (the pages still go on).
    let b = get_ok(&app, "/fhir/Basic?code=urn:cap|many&_count=5").await;
    assert!(b.get("total").is_none(), "{}", b["total"]);
    assert_eq!(match_ids(&b).len(), 5);
    assert!(link(&b, "next").is_some());
    let b = get_ok(
        &app,
        "/fhir/Basic?code=urn:cap|many&_count=5&_total=estimate",
    )
    .await;
    assert!(b.get("total").is_none());
    // Asked for, it is always counted.
    let b = get_ok(
        &app,
        "/fhir/Basic?code=urn:cap|many&_count=5&_total=accurate",
    )
    .await;
    assert_eq!(b["total"], 1010);
    assert_eq!(
        app.total("/fhir/Basic?code=urn:cap|many&_summary=count")
            .await,
        1010
    );
    // Below the cap: exact, over several pages or on one.
    let b = get_ok(&app, "/fhir/Basic?code=urn:cap|few&_count=3").await;
    assert_eq!(b["total"], 10);
    let b = get_ok(&app, "/fhir/Basic?code=urn:cap|few").await;
    assert_eq!(b["total"], 10);
    assert_eq!(match_ids(&b).len(), 10);
}

// --- AND of several selective lookups (intersected in memory) -----------------

fn appointment(id: &str, start: &str, status: &str, actors: &[&str]) -> Value {
    let participant: Vec<Value> = actors
        .iter()
        .map(|a| json!({"actor": {"reference": a}, "status": "accepted"}))
        .collect();
    json!({"resourceType": "Appointment", "id": id, "status": status, "start": start,
           "end": start.replace(":00:00Z", ":10:00Z"), "participant": participant})
}

async fn and_of_several_lookups(app: TestApp) {
    put_all(
        &app,
        vec![
            json!({"resourceType": "Practitioner", "id": "gp1"}),
            json!({"resourceType": "Practitioner", "id": "gp2"}),
            json!({"resourceType": "Patient", "id": "pa"}),
            json!({"resourceType": "Patient", "id": "pb"}),
            // gp1 twice in one appointment: two matching index rows, one match.
            appointment(
                "a1",
                "2026-03-02T09:00:00Z",
                "booked",
                &["Patient/pa", "Practitioner/gp1", "Practitioner/gp1"],
            ),
            appointment(
                "a2",
                "2026-03-03T09:00:00Z",
                "booked",
                &["Patient/pb", "Practitioner/gp1"],
            ),
            appointment(
                "a3",
                "2026-03-04T09:00:00Z",
                "cancelled",
                &["Patient/pa", "Practitioner/gp1"],
            ),
            appointment(
                "a4",
                "2026-03-12T09:00:00Z",
                "booked",
                &["Patient/pa", "Practitioner/gp1"],
            ),
            appointment(
                "a5",
                "2026-03-03T10:00:00Z",
                "booked",
                &["Patient/pa", "Practitioner/gp2"],
            ),
        ],
    )
    .await;
    let week = "date=ge2026-03-01&date=lt2026-03-08";
    expect(
        &app,
        &format!("/fhir/Appointment?actor=Practitioner/gp1&{week}"),
        &["a1", "a2", "a3"],
    )
    .await;
    // Three lookups, and a coarse condition checked per candidate.
    expect(
        &app,
        &format!("/fhir/Appointment?actor=Practitioner/gp1&patient=Patient/pa&{week}"),
        &["a1", "a3"],
    )
    .await;
    expect(
        &app,
        &format!("/fhir/Appointment?actor=Practitioner/gp1&{week}&status=booked"),
        &["a1", "a2"],
    )
    .await;
    // OR inside one lookup, AND across lookups.
    expect(
        &app,
        &format!(
            "/fhir/Appointment?actor=Practitioner/gp1,Practitioner/gp2&patient=Patient/pa&{week}"
        ),
        &["a1", "a3", "a5"],
    )
    .await;
    // Nothing in common: no match, total 0.
    let b = get_ok(
        &app,
        "/fhir/Appointment?actor=Practitioner/gp2&patient=Patient/pb",
    )
    .await;
    assert_eq!(b["total"], 0, "[{}] {b}", app.backend);
    assert!(match_ids(&b).is_empty());
    // Paging both ways over an intersection, in id order and sorted by date.
    let all: Vec<String> = ["a1", "a2", "a3"].iter().map(|s| s.to_string()).collect();
    walk_both_ways(
        &app,
        &format!("/fhir/Appointment?actor=Practitioner/gp1&{week}&_count=1"),
        &all,
        1,
    )
    .await;
    let by_date_desc: Vec<String> = ["a3", "a2", "a1"].iter().map(|s| s.to_string()).collect();
    walk_both_ways(
        &app,
        &format!("/fhir/Appointment?actor=Practitioner/gp1&{week}&_sort=-date&_count=2"),
        &by_date_desc,
        2,
    )
    .await;
    // Counting only.
    let b = get_ok(
        &app,
        &format!("/fhir/Appointment?actor=Practitioner/gp1&{week}&_summary=count"),
    )
    .await;
    assert_eq!(b["total"], 3, "[{}] {b}", app.backend);
    // A deleted match leaves the intersection.
    assert_eq!(app.delete("/fhir/Appointment/a2").await.status, 204);
    expect(
        &app,
        &format!("/fhir/Appointment?actor=Practitioner/gp1&{week}"),
        &["a1", "a3"],
    )
    .await;
}
