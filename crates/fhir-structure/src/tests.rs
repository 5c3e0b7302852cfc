//! Unit tests: data-driven structural checks (`check(json, expected_expressions)`),
//! primitive lexical rules, date ranges, strict JSON parsing, the model, and an
//! optional run over the official R4 examples (`FHIRBRIDGE_R4_EXAMPLES_DIR`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{json, Value};

use crate::check::{check_resource, parse_json, Issue, Severity, MAX_ISSUES, MAX_JSON_DEPTH};
use crate::model::{Kind, Model};
use crate::primitive::{check_primitive, parse_date_range};

/// Parse `json` strictly, check it, and compare the sorted expressions of all
/// Error/Fatal issues with `expected`.
fn check(json: &str, expected: &[&str]) {
    let value = parse_json(json.as_bytes()).unwrap_or_else(|e| panic!("parse: {e}\n{json}"));
    let issues = check_resource(&value);
    let mut got: Vec<&str> = issues
        .iter()
        .filter(|i| i.severity.is_error())
        .map(|i| i.expression.as_str())
        .collect();
    got.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(
        got,
        want,
        "\njson: {json}\nissues:\n{}",
        issues
            .iter()
            .map(Issue::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The issues for a JSON text (must parse).
fn issues_of(json: &str) -> Vec<Issue> {
    check_resource(&parse_json(json.as_bytes()).unwrap())
}

/// Wrap Patient properties into a Patient resource.
fn patient(props: &str) -> String {
    if props.is_empty() {
        r#"{"resourceType":"Patient"}"#.to_string()
    } else {
        format!(r#"{{"resourceType":"Patient",{props}}}"#)
    }
}

// ---------------------------------------------------------------------------
// model
// ---------------------------------------------------------------------------

#[test]
fn model_loads_all_types() {
    let m = Model::r4();
    let count = |k: Kind| m.types().filter(|t| t.kind == k).count();
    assert_eq!(count(Kind::PrimitiveType), 20);
    assert!(count(Kind::Resource) >= 148, "146 concrete + 2 abstract");
    assert!(count(Kind::ComplexType) >= 40);
    assert!(count(Kind::Backbone) > 400);
    assert!(m.is_resource_type("Patient"));
    assert!(m.is_resource_type("Bundle"));
    assert!(!m.is_resource_type("DomainResource"));
    assert!(!m.is_resource_type("Resource"));
    assert!(!m.is_resource_type("HumanName"));
    assert!(!m.is_resource_type("Patient.contact"));
    assert!(!m.is_resource_type("NoSuchThing"));
}

#[test]
fn model_type_defs() {
    let m = Model::r4();
    let p = m.type_def("Patient").unwrap();
    assert_eq!(p.kind, Kind::Resource);
    assert_eq!(p.base.as_deref(), Some("DomainResource"));
    assert!(!p.is_abstract);
    assert!(
        p.elements.iter().all(|e| e.name != "id"),
        "no inherited elements"
    );
    let gender = p.elements.iter().find(|e| e.name == "gender").unwrap();
    let b = gender.binding.as_ref().unwrap();
    assert_eq!(b.strength, "required");
    assert_eq!(
        b.value_set,
        "http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1"
    );
    assert!(gender.summary);
    let contact = p.elements.iter().find(|e| e.name == "contact").unwrap();
    assert_eq!(contact.types, vec!["Patient.contact"]);
    assert_eq!(contact.max, None);
    let c = m.type_def("Patient.contact").unwrap();
    assert_eq!(c.kind, Kind::Backbone);
    assert_eq!(c.base.as_deref(), Some("BackboneElement"));
    assert!(m.type_def("Bundle.entry.request").is_some());
    let date = m.type_def("date").unwrap();
    assert_eq!(date.kind, Kind::PrimitiveType);
    assert!(date.regex.is_some());
    let code = m.type_def("code").unwrap();
    assert_eq!(code.base.as_deref(), Some("string"));
    assert!(code.regex.is_some());
    assert!(m.type_def("DomainResource").unwrap().is_abstract);
    assert_eq!(m.type_def("Element").unwrap().base, None);
    // contentReference resolves to the backbone type
    let item = m.element("Questionnaire.item", "item").unwrap();
    assert_eq!(item.type_name, "Questionnaire.item");
    // preferred bindings are omitted
    let lang = m.element("Patient", "language").unwrap();
    assert!(lang.def.binding.is_none());
}

#[test]
fn model_element_resolution() {
    let m = Model::r4();
    let d = m.element("Patient", "deceasedBoolean").unwrap();
    assert_eq!(d.def.name, "deceased[x]");
    assert_eq!(d.type_name, "boolean");
    assert!(d.choice && !d.is_array);
    assert!(d.def.modifier);
    let d = m.element("Patient", "deceasedDateTime").unwrap();
    assert_eq!(d.type_name, "dateTime");
    assert!(m.element("Patient", "deceasedString").is_none());
    assert!(m.element("Patient", "deceased").is_none());
    // inherited, through DomainResource and Resource
    let id = m.element("Patient", "id").unwrap();
    assert_eq!(id.type_name, "http://hl7.org/fhirpath/System.String");
    let text = m.element("Patient", "text").unwrap();
    assert_eq!(text.type_name, "Narrative");
    let name = m.element("Patient", "name").unwrap();
    assert!(name.is_array && !name.choice);
    // datatypes and backbones inherit from Element / BackboneElement
    assert!(m.element("HumanName", "extension").is_some());
    assert!(m.element("Patient.contact", "modifierExtension").is_some());
    assert!(m.element("HumanName", "modifierExtension").is_none());
    // Age specialises Quantity
    assert_eq!(m.element("Age", "value").unwrap().type_name, "decimal");
    let v = m.element("Observation", "valueCodeableConcept").unwrap();
    assert_eq!(v.type_name, "CodeableConcept");
    assert!(m.element("Nope", "id").is_none());
}

#[test]
fn model_all_elements_base_first() {
    let m = Model::r4();
    let names: Vec<&str> = m
        .all_elements("Patient")
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        &names[..9],
        &[
            "id",
            "meta",
            "implicitRules",
            "language",
            "text",
            "contained",
            "extension",
            "modifierExtension",
            "identifier"
        ]
    );
    assert!(names.contains(&"deceased[x]"));
    assert!(names.contains(&"link"));
    assert!(m.all_elements("Nope").is_empty());
    let hn: Vec<&str> = m
        .all_elements("HumanName")
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(&hn[..2], &["id", "extension"]);
    assert!(hn.contains(&"given"));
}

#[test]
fn model_from_json_rejects_garbage() {
    assert!(Model::from_json("{}").is_err());
    assert!(Model::from_json("nope").is_err());
    assert!(Model::from_json(
        r#"{"types":{"A":{"kind":"complex-type","base":"Missing","elements":[]}}}"#
    )
    .is_err());
}

// ---------------------------------------------------------------------------
// resource level
// ---------------------------------------------------------------------------

#[test]
fn valid_patient() {
    check(
        &patient(
            r#""id":"example","meta":{"versionId":"1","lastUpdated":"2020-01-01T10:00:00.123+01:00"},
            "text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "identifier":[{"system":"urn:oid:1.2.36.146.595.217.0.1","value":"12345"}],
            "active":true,"name":[{"use":"official","family":"Chalmers","given":["Peter","James"]}],
            "telecom":[{"system":"phone","value":"(03) 5555 6473","use":"work","rank":1}],
            "gender":"male","birthDate":"1974-12-25","deceasedBoolean":false,
            "address":[{"line":["534 Erewhon St"],"city":"PleasantVille","postalCode":"3999","period":{"start":"1974-12-25"}}],
            "multipleBirthInteger":2,
            "contact":[{"relationship":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0131","code":"N"}]}],
                "name":{"family":"du Marché","_family":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/humanname-own-prefix","valueString":"VV"}]}},
                "gender":"female"}],
            "managingOrganization":{"reference":"Organization/1"}"#,
        ),
        &[],
    );
}

#[test]
fn top_level_shape() {
    for (json, code) in [
        ("[]", "structure"),
        ("\"Patient\"", "structure"),
        ("{}", "required"),
        (r#"{"resourceType":1}"#, "structure"),
        (r#"{"resourceType":"Foo"}"#, "not-supported"),
        (r#"{"resourceType":"HumanName"}"#, "not-supported"),
        (r#"{"resourceType":"DomainResource"}"#, "invalid"),
        (r#"{"resourceType":"Resource"}"#, "invalid"),
    ] {
        let issues = issues_of(json);
        assert_eq!(issues.len(), 1, "{json}: {issues:?}");
        assert_eq!(issues[0].code, code, "{json}");
        assert_eq!(issues[0].severity, Severity::Fatal);
        assert_eq!(issues[0].expression, "Resource");
    }
    check(r#"{"resourceType":"Patient"}"#, &[]);
    check(r#"{"resourceType":"Basic","code":{"text":"x"}}"#, &[]);
}

#[test]
fn resource_id() {
    check(&patient(r#""id":"a-b.c9""#), &[]);
    check(&patient(r#""id":"a b$c""#), &["Patient.id"]);
    check(&patient(r#""id":"""#), &["Patient.id"]);
    check(
        &patient(&format!(r#""id":"{}""#, "x".repeat(65))),
        &["Patient.id"],
    );
    check(&patient(r#""id":12"#), &["Patient.id"]);
    // Element.id is a plain string
    check(&patient(r#""name":[{"id":"a b$c","family":"x"}]"#), &[]);
}

#[test]
fn unknown_elements() {
    check(&patient(r#""foo":1"#), &["Patient.foo"]);
    check(
        &patient(r#""name":[{"family":"x","bar":true}]"#),
        &["Patient.name[0].bar"],
    );
    check(&patient(r#""_foo":{"id":"x"}"#), &["Patient._foo"]);
    // `_x` of a complex element
    check(
        &patient(r#""name":[{"family":"x"}],"_name":[{"id":"1"}]"#),
        &["Patient._name"],
    );
    // `_x` objects: only id and extension
    check(
        &patient(r#""birthDate":"2000-01-01","_birthDate":{"id":"x"}"#),
        &[],
    );
    check(
        &patient(r#""birthDate":"2000-01-01","_birthDate":{"value":"2000"}"#),
        &["Patient.birthDate.value"],
    );
    // resourceType inside a non-resource
    check(
        &patient(r#""name":[{"resourceType":"HumanName","family":"x"}]"#),
        &["Patient.name[0].resourceType"],
    );
    // ... unless the type defines such an element
    check(
        r#"{"resourceType":"ExampleScenario","status":"draft","instance":[{"resourceId":"a","resourceType":"Patient"}]}"#,
        &[],
    );
    check(
        r#"{"resourceType":"ExampleScenario","status":"draft","instance":[{"resourceId":"a"}]}"#,
        &["ExampleScenario.instance[0].resourceType"],
    );
    // modifierExtension is not allowed on datatypes
    check(
        &patient(
            r#""name":[{"family":"x","modifierExtension":[{"url":"http://x","valueBoolean":true}]}]"#,
        ),
        &["Patient.name[0].modifierExtension"],
    );
}

#[test]
fn wrong_json_types() {
    check(&patient(r#""active":"true""#), &["Patient.active"]);
    check(&patient(r#""active":1"#), &["Patient.active"]);
    check(&patient(r#""gender":true"#), &["Patient.gender"]);
    check(&patient(r#""birthDate":20200101"#), &["Patient.birthDate"]);
    check(
        &patient(r#""multipleBirthInteger":"2""#),
        &["Patient.multipleBirthInteger"],
    );
    check(
        &patient(r#""multipleBirthInteger":2.5"#),
        &["Patient.multipleBirthInteger"],
    );
    check(
        &patient(r#""multipleBirthInteger":1e2"#),
        &["Patient.multipleBirthInteger"],
    );
    check(
        &patient(r#""multipleBirthInteger":2147483648"#),
        &["Patient.multipleBirthInteger"],
    );
    check(&patient(r#""multipleBirthInteger":-2147483648"#), &[]);
    check(
        &patient(r#""managingOrganization":"Organization/1""#),
        &["Patient.managingOrganization"],
    );
    check(&patient(r#""name":["Peter"]"#), &["Patient.name[0]"]);
    check(
        &patient(r#""birthDate":{"value":"2000"}"#),
        &["Patient.birthDate"],
    );
    // positiveInt / unsignedInt / decimal
    check(
        r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50,"unit":"mg"}}"#,
        &[],
    );
    check(
        r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"1.5"}}"#,
        &["Observation.valueQuantity.value"],
    );
    check(
        &patient(r#""telecom":[{"value":"x","rank":0}]"#),
        &["Patient.telecom[0].rank"],
    );
    check(&patient(r#""telecom":[{"value":"x","rank":1}]"#), &[]);
    check(
        r#"{"resourceType":"Attachment"}"#.replace("Attachment", "Media").as_str(),
        &["Media.content", "Media.status"],
    );
    check(
        r#"{"resourceType":"Media","status":"completed","content":{"contentType":"image/png","size":0}}"#,
        &[],
    );
    check(
        r#"{"resourceType":"Media","status":"completed","content":{"size":-1}}"#,
        &["Media.content.size"],
    );
}

#[test]
fn cardinality_shape() {
    check(&patient(r#""gender":["male"]"#), &["Patient.gender"]);
    check(&patient(r#""name":{"family":"x"}"#), &["Patient.name"]);
    check(
        &patient(r#""name":[{"given":"Peter"}]"#),
        &["Patient.name[0].given"],
    );
    check(
        &patient(r#""name":[{"family":["x"]}]"#),
        &["Patient.name[0].family"],
    );
    check(
        &patient(r#""managingOrganization":[{"reference":"x"}]"#),
        &["Patient.managingOrganization"],
    );
    check(&patient(r#""name":[{"given":["Peter"]}]"#), &[]);
}

#[test]
fn required_elements() {
    check(
        &patient(r#""link":[{"type":"seealso"}]"#),
        &["Patient.link[0].other"],
    );
    check(
        &patient(r#""link":[{"other":{"reference":"Patient/1"},"type":"seealso"}]"#),
        &[],
    );
    // satisfied by an extension-only primitive
    check(
        &patient(
            r#""link":[{"other":{"reference":"Patient/1"},"_type":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"unknown"}]}}]"#,
        ),
        &[],
    );
    let issues = issues_of(&patient(r#""communication":[{"preferred":true}]"#));
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].code, "required");
    assert_eq!(issues[0].expression, "Patient.communication[0].language");
    // required choice element
    check(
        r#"{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","enableWhen":[{"question":"q","operator":"="}]}]}"#,
        &["Questionnaire.item[0].enableWhen[0].answer"],
    );
    check(
        r#"{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","enableWhen":[{"question":"q","operator":"=","answerBoolean":true}]}]}"#,
        &[],
    );
}

#[test]
fn nulls_and_empties() {
    check(&patient(r#""active":null"#), &["Patient.active"]);
    check(&patient(r#""name":null"#), &["Patient.name"]);
    check(&patient(r#""name":[null]"#), &["Patient.name[0]"]);
    check(
        &patient(r#""managingOrganization":null"#),
        &["Patient.managingOrganization"],
    );
    check(&patient(r#""name":[]"#), &["Patient.name"]);
    check(&patient(r#""name":[{}]"#), &["Patient.name[0]"]);
    check(
        &patient(r#""managingOrganization":{}"#),
        &["Patient.managingOrganization"],
    );
    check(&patient(r#""gender":"""#), &["Patient.gender"]);
    check(
        &patient(r#""name":[{"family":""}]"#),
        &["Patient.name[0].family"],
    );
    check(
        &patient(r#""name":[{"given":[]}]"#),
        &["Patient.name[0].given"],
    );
    check(
        &patient(r#""birthDate":"2000-01-01","_birthDate":{}"#),
        &["Patient.birthDate"],
    );
    check(
        &patient(r#""name":[{"given":["a",null]}]"#),
        &["Patient.name[0].given[1]"],
    );
}

#[test]
fn primitive_extension_arrays() {
    let ext = r#"{"extension":[{"url":"http://example.org/x","valueString":"y"}]}"#;
    check(
        &patient(&format!(
            r#""name":[{{"given":["a",null],"_given":[null,{ext}]}}]"#
        )),
        &[],
    );
    check(
        &patient(&format!(
            r#""name":[{{"given":["a","b"],"_given":[{ext},null]}}]"#
        )),
        &[],
    );
    // _given alone (extension-only values)
    check(&patient(&format!(r#""name":[{{"_given":[{ext}]}}]"#)), &[]);
    // null paired with null
    check(
        &patient(&format!(
            r#""name":[{{"given":["a",null],"_given":[{ext},null]}}]"#
        )),
        &["Patient.name[0].given[1]"],
    );
    // length mismatch
    check(
        &patient(&format!(
            r#""name":[{{"given":["a","b"],"_given":[{ext}]}}]"#
        )),
        &["Patient.name[0].given"],
    );
    // _given must be an array
    check(
        &patient(&format!(r#""name":[{{"given":["a"],"_given":{ext}}}]"#)),
        &["Patient.name[0].given"],
    );
    // issues inside _given items
    check(
        &patient(r#""name":[{"given":["a"],"_given":[{"extension":[{"valueString":"y"}]}]}]"#),
        &["Patient.name[0].given[0].extension[0].url"],
    );
    // an extension-only primitive without extensions
    check(
        &patient(r#""_birthDate":{"id":"x"}"#),
        &["Patient.birthDate"],
    );
    check(&patient(&format!(r#""_birthDate":{ext}"#)), &[]);
}

#[test]
fn choice_elements() {
    check(&patient(r#""deceasedBoolean":true"#), &[]);
    check(
        &patient(r#""deceasedDateTime":"2015-02-14T13:42:00+10:00""#),
        &[],
    );
    check(
        &patient(r#""deceasedString":"yes""#),
        &["Patient.deceasedString"],
    );
    let issues = issues_of(&patient(r#""deceasedString":"yes""#));
    assert!(
        issues[0].message.contains("deceased[x]"),
        "{}",
        issues[0].message
    );
    let issues = issues_of(&patient(
        r#""deceasedBoolean":true,"deceasedDateTime":"2015-02-14""#,
    ));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].expression, "Patient.deceasedDateTime");
    // extension-only variant counts as a variant
    check(
        &patient(
            r#""deceasedBoolean":true,"_deceasedDateTime":{"extension":[{"url":"http://x","valueCode":"u"}]}"#,
        ),
        &["Patient._deceasedDateTime"],
    );
    check(
        &patient(r#""deceasedBoolean":"true""#),
        &["Patient.deceasedBoolean"],
    );
    check(&patient(r#""deceased":true"#), &["Patient.deceased"]);
}

#[test]
fn primitive_formats_in_resources() {
    check(
        &patient(r#""birthDate":"2020-13-45""#),
        &["Patient.birthDate"],
    );
    check(
        &patient(r#""birthDate":"2020-02-30""#),
        &["Patient.birthDate"],
    );
    check(&patient(r#""birthDate":"2020-02-29""#), &[]);
    check(
        &patient(r#""birthDate":"2019-02-29""#),
        &["Patient.birthDate"],
    );
    check(&patient(r#""birthDate":"2020""#), &[]);
    check(&patient(r#""birthDate":"2020-02""#), &[]);
    check(
        &patient(r#""birthDate":"2020-02-01T10:00:00Z""#),
        &["Patient.birthDate"],
    );
    check(&patient(r#""gender":" male""#), &["Patient.gender"]);
    check(&patient(r#""gender":"ma  le""#), &["Patient.gender"]);
    check(
        &patient(r#""contact":[{"telecom":[{"system":"phone","value":"1"},{"system":" x"}]}]"#),
        &["Patient.contact[0].telecom[1].system"],
    );
    check(
        &patient(r#""meta":{"lastUpdated":"2020-01-01T10:00:00"}"#),
        &["Patient.meta.lastUpdated"],
    );
    check(
        &patient(r#""meta":{"lastUpdated":"2020-01-01"}"#),
        &["Patient.meta.lastUpdated"],
    );
    check(
        &patient(r#""meta":{"profile":["http://x y"]}"#),
        &["Patient.meta.profile[0]"],
    );
    check(
        &patient(r#""implicitRules":"http://example.org/rules""#),
        &[],
    );
    check(
        &patient(r#""photo":[{"data":"not base64!"}]"#),
        &["Patient.photo[0].data"],
    );
    check(&patient(r#""photo":[{"data":"aGVsbG8="}]"#), &[]);
}

#[test]
fn narrative_div() {
    let ok = r#""text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>x</p></div>"}"#;
    check(&patient(ok), &[]);
    check(
        &patient(r#""text":{"status":"generated","div":"<p>x</p>"}"#),
        &["Patient.text.div"],
    );
    check(
        &patient(r#""text":{"status":"generated","div":"<div>x</div>"}"#),
        &["Patient.text.div"],
    );
    check(
        &patient(r#""text":{"status":"generated"}"#),
        &["Patient.text.div"],
    );
    check(
        &patient(r#""text":{"status":"generated","div":{"p":"x"}}"#),
        &["Patient.text.div"],
    );
}

#[test]
fn extensions() {
    check(
        &patient(r#""extension":[{"url":"http://example.org/a","valueString":"x"}]"#),
        &[],
    );
    check(
        &patient(
            r#""extension":[{"url":"http://example.org/a","extension":[{"url":"b","valueInteger":1}]}]"#,
        ),
        &[],
    );
    // neither
    check(
        &patient(r#""extension":[{"url":"http://example.org/a"}]"#),
        &["Patient.extension[0]"],
    );
    // both
    check(
        &patient(
            r#""extension":[{"url":"http://example.org/a","valueString":"x","extension":[{"url":"b","valueInteger":1}]}]"#,
        ),
        &["Patient.extension[0]"],
    );
    // missing url
    check(
        &patient(r#""extension":[{"valueString":"x"}]"#),
        &["Patient.extension[0].url"],
    );
    // bad url
    check(
        &patient(r#""extension":[{"url":"http://a b","valueString":"x"}]"#),
        &["Patient.extension[0].url"],
    );
    // extension must be an array
    check(
        &patient(r#""extension":{"url":"http://example.org/a","valueString":"x"}"#),
        &["Patient.extension"],
    );
    // two values
    check(
        &patient(
            r#""extension":[{"url":"http://example.org/a","valueString":"x","valueBoolean":true}]"#,
        ),
        &["Patient.extension[0].valueBoolean"],
    );
    check(
        &patient(r#""modifierExtension":[{"url":"http://example.org/a"}]"#),
        &["Patient.modifierExtension[0]"],
    );
    // value[x] of an unsupported type
    check(
        &patient(r#""extension":[{"url":"http://example.org/a","valueNarrative":{"status":"x"}}]"#),
        &[
            "Patient.extension[0]",
            "Patient.extension[0].valueNarrative",
        ],
    );
}

#[test]
fn contained_resources() {
    check(
        &patient(
            r##""contained":[{"resourceType":"Organization","id":"o1","name":"Acme"}],"managingOrganization":{"reference":"#o1"}"##,
        ),
        &[],
    );
    check(
        &patient(r#""contained":[{"resourceType":"Organization","id":"o1","foo":1}]"#),
        &["Patient.contained[0].foo"],
    );
    check(
        &patient(r#""contained":[{"id":"o1"}]"#),
        &["Patient.contained[0]"],
    );
    check(
        &patient(r#""contained":[{"resourceType":"Nope","id":"o1"}]"#),
        &["Patient.contained[0]"],
    );
    check(&patient(r#""contained":["x"]"#), &["Patient.contained[0]"]);
    check(
        &patient(
            r#""contained":[{"resourceType":"Organization","id":"o1","contained":[{"resourceType":"Organization","id":"o2"}]}]"#,
        ),
        &["Patient.contained[0].contained"],
    );
}

#[test]
fn bundle_entries() {
    check(
        r#"{"resourceType":"Bundle","type":"collection","entry":[
            {"fullUrl":"urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a","resource":{"resourceType":"Patient","active":true}},
            {"resource":{"resourceType":"Patient","active":"yes"}},
            {"resource":{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","gender":["x"]}}]}}
        ]}"#,
        &[
            "Bundle.entry[1].resource.active",
            "Bundle.entry[2].resource.entry[0].resource.gender",
        ],
    );
    check(
        r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"}}]}"#,
        &[],
    );
    check(
        r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"url":"Patient"}}]}"#,
        &["Bundle.entry[0].request.method"],
    );
    check(
        r#"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:ABC"}]}"#,
        &[],
    );
}

#[test]
fn deeply_nested_resources_are_bounded() {
    let mut v = json!({"resourceType": "Patient"});
    for _ in 0..40 {
        v = json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": v}]});
    }
    let issues = check_resource(&v);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].message.contains("nested"));
    // deep non-resource nesting built without parse_json
    // (built by hand: `json!` re-serialises interpolated values)
    let mut ext = json!({"url": "http://x", "valueString": "y"});
    for _ in 0..1000 {
        let mut m = serde_json::Map::new();
        m.insert("url".into(), json!("http://x"));
        m.insert("extension".into(), Value::Array(vec![ext]));
        ext = Value::Object(m);
    }
    let mut p = serde_json::Map::new();
    p.insert("resourceType".into(), json!("Patient"));
    p.insert("extension".into(), Value::Array(vec![ext]));
    let issues = check_resource(&Value::Object(p));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].message.contains("nested"));
}

#[test]
fn deepest_parseable_resource_checks_without_overflow() {
    // Patient (1) > extension array (2) > Extension (3) > ... : each nested
    // extension adds two JSON levels; 62 of them make a 127-level document.
    let doc = |levels: usize| {
        let mut text = r#"{"url":"http://x","valueString":"y"}"#.to_string();
        for _ in 0..levels {
            text = format!(r#"{{"url":"http://x","extension":[{text}]}}"#);
        }
        format!(r#"{{"resourceType":"Patient","extension":[{text}]}}"#)
    };
    let levels = (MAX_JSON_DEPTH - 1) / 2 - 1;
    let value = parse_json(doc(levels).as_bytes()).unwrap();
    let issues = check_resource(&value);
    assert!(issues.is_empty(), "{issues:?}");
    assert!(parse_json(doc(levels + 1).as_bytes()).is_err());
}

#[test]
fn issues_are_capped() {
    let props: Vec<String> = (0..300).map(|i| format!(r#""foo{i}":1"#)).collect();
    let issues = issues_of(&patient(&props.join(",")));
    assert_eq!(issues.len(), MAX_ISSUES);
    let names: Vec<String> = (0..300).map(|_| r#"{"family":""}"#.to_string()).collect();
    let issues = issues_of(&patient(&format!(r#""name":[{}]"#, names.join(","))));
    assert_eq!(issues.len(), MAX_ISSUES);
    assert_eq!(issues[99].expression, "Patient.name[99].family");
}

#[test]
fn reports_all_issues() {
    check(
        &patient(
            r#""active":"true","gender":["male"],"birthDate":"2020-13-45","foo":1,"name":[],"id":"a b$c""#,
        ),
        &[
            "Patient.active",
            "Patient.birthDate",
            "Patient.foo",
            "Patient.gender",
            "Patient.id",
            "Patient.name",
        ],
    );
}

#[test]
fn issue_codes() {
    let code_of = |props: &str| {
        let issues = issues_of(&patient(props));
        assert_eq!(issues.len(), 1, "{issues:?}");
        issues[0].code
    };
    assert_eq!(code_of(r#""foo":1"#), "structure");
    assert_eq!(code_of(r#""active":"true""#), "structure");
    assert_eq!(code_of(r#""birthDate":"2020-13-45""#), "value");
    assert_eq!(code_of(r#""link":[{"type":"seealso"}]"#), "required");
    let long = "x".repeat(1024 * 1024 + 1);
    assert_eq!(
        code_of(&format!(r#""name":[{{"family":"{long}"}}]"#)),
        "too-long"
    );
    let max = "x".repeat(1024 * 1024);
    assert!(issues_of(&patient(&format!(r#""name":[{{"family":"{max}"}}]"#))).is_empty());
}

// ---------------------------------------------------------------------------
// primitives
// ---------------------------------------------------------------------------

#[test]
fn primitives_table() {
    let ok = |t: &str, v: Value| {
        assert!(
            check_primitive(t, &v).is_ok(),
            "{t} {v} should be valid: {:?}",
            check_primitive(t, &v)
        )
    };
    let bad =
        |t: &str, v: Value| assert!(check_primitive(t, &v).is_err(), "{t} {v} should be invalid");
    ok("boolean", json!(true));
    bad("boolean", json!("true"));
    ok("integer", json!(-5));
    ok("integer", json!(0));
    bad("integer", json!(1.0));
    bad("integer", json!(2_147_483_648_i64));
    ok("positiveInt", json!(1));
    bad("positiveInt", json!(0));
    ok("unsignedInt", json!(0));
    bad("unsignedInt", json!(-1));
    ok("decimal", json!(1.5));
    ok("decimal", parse_json(b"1.50e3").unwrap());
    bad("decimal", json!("1.5"));
    ok("date", json!("2024-02-29"));
    bad("date", json!("2023-02-29"));
    ok("date", json!("2000-02-29"));
    bad("date", json!("1900-02-29"));
    bad("date", json!("2020-04-31"));
    ok("date", json!("2020-04-30"));
    bad("date", json!("0000"));
    bad("date", json!("2020-1-1"));
    ok("dateTime", json!("2020"));
    ok("dateTime", json!("2020-01-01T00:00:00Z"));
    ok("dateTime", json!("2020-01-01T23:59:60.123456-14:00"));
    bad("dateTime", json!("2020-01-01T10:00:00"));
    bad("dateTime", json!("2020-01-01T10:00Z"));
    bad("dateTime", json!("2020-02-30T10:00:00Z"));
    bad("dateTime", json!("2020-01-01T24:00:00Z"));
    ok("instant", json!("2020-01-01T10:00:00.000+01:00"));
    bad("instant", json!("2020-01-01"));
    bad("instant", json!("2020-01-01T10:00:00"));
    ok("time", json!("10:00:00"));
    ok("time", json!("23:59:59.999"));
    bad("time", json!("10:00"));
    bad("time", json!("25:00:00"));
    ok("id", json!("abc-123.X"));
    bad("id", json!("abc_123"));
    ok("code", json!("a b"));
    bad("code", json!("a  b"));
    bad("code", json!(" a"));
    bad("code", json!("a "));
    ok("code", json!("a\nb"));
    bad("code", json!("a\n\nb"));
    bad("code", json!("a\t"));
    ok("uri", json!("urn:x"));
    bad("uri", json!("http://a b"));
    bad("uri", json!(""));
    ok("url", json!("http://example.org/a"));
    ok("canonical", json!("http://example.org/a|1.0"));
    ok("oid", json!("urn:oid:1.2.3"));
    bad("oid", json!("1.2.3"));
    bad("oid", json!("urn:oid:3.2"));
    ok(
        "uuid",
        json!("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
    );
    bad("uuid", json!("61ebe359-bfdc-4613-8bf2-c5e300945f0a"));
    ok("base64Binary", json!("aGVsbG8gd29ybGQ="));
    bad("base64Binary", json!("abc"));
    ok("string", json!("  padded \u{a0} text "));
    bad("string", json!(""));
    bad("string", json!(1));
    ok("markdown", json!("# x\n\n* y"));
    ok(
        "xhtml",
        json!("<div xmlns=\"http://www.w3.org/1999/xhtml\"/>"),
    );
    bad(
        "xhtml",
        json!("<span xmlns=\"http://www.w3.org/1999/xhtml\"/>"),
    );
    ok("http://hl7.org/fhirpath/System.String", json!("x"));
    ok("http://hl7.org/fhirpath/System.Boolean", json!(false));
    bad("HumanName", json!({}));
    bad("nonsense", json!("x"));
}

#[test]
fn date_ranges() {
    const DAY: i64 = 86_400_000;
    // 2020-01-01T00:00:00Z = 1577836800000
    let y2020 = 1_577_836_800_000;
    assert_eq!(parse_date_range("2020"), Some((y2020, y2020 + 366 * DAY)));
    assert_eq!(
        parse_date_range("2020-02"),
        Some((y2020 + 31 * DAY, y2020 + 60 * DAY))
    );
    assert_eq!(
        parse_date_range("2021-02").map(|(l, h)| (h - l) / DAY),
        Some(28)
    );
    assert_eq!(
        parse_date_range("2020-02-29"),
        Some((y2020 + 59 * DAY, y2020 + 60 * DAY))
    );
    assert_eq!(parse_date_range("2021-02-29"), None);
    assert_eq!(parse_date_range("1970-01-01"), Some((0, DAY)));
    assert_eq!(parse_date_range("1969-12-31"), Some((-DAY, 0)));
    assert_eq!(
        parse_date_range("2020-01-01T10:00:00Z"),
        Some((y2020 + 36_000_000, y2020 + 36_001_000))
    );
    assert_eq!(
        parse_date_range("2020-01-01T10:00:00+01:00"),
        Some((y2020 + 32_400_000, y2020 + 32_401_000))
    );
    assert_eq!(
        parse_date_range("2020-01-01T10:00:00.5-01:30"),
        Some((y2020 + 41_400_500, y2020 + 41_400_600))
    );
    assert_eq!(
        parse_date_range("2020-01-01T10:00:00.123456Z"),
        Some((y2020 + 36_000_123, y2020 + 36_000_124))
    );
    // no timezone: UTC
    assert_eq!(
        parse_date_range("2020-01-01T10:00"),
        Some((y2020 + 36_000_000, y2020 + 36_060_000))
    );
    for bad in [
        "",
        "20",
        "2020-",
        "2020-13",
        "2020-00-01",
        "2020-01-32",
        "2020-01-01T",
        "2020-01-01T10",
        "2020-01-01T25:00:00Z",
        "2020-01-01T10:00:00.Z",
        "2020-01-01T10:00:00+1:00",
        "2020-01-01T10:00:00+15:00",
        "2020-01-01Z",
        "2020/01/01",
        "2020-01-01T10:00:00Zjunk",
        "２０２０",
    ] {
        assert_eq!(parse_date_range(bad), None, "{bad}");
    }
}

// ---------------------------------------------------------------------------
// strict JSON parsing
// ---------------------------------------------------------------------------

#[test]
fn parse_json_rejects_syntax_errors_with_position() {
    let e = parse_json(b"{\n  \"resourceType\": \"Patient\",\n  \"active\": tru\n}").unwrap_err();
    assert_eq!(e.severity, Severity::Fatal);
    assert_eq!(e.code, "invalid");
    assert!(e.message.contains("line 4 column 0"), "{}", e.message);
    let e = parse_json(b"{\n  \"a\": 1\n  \"b\": 2}").unwrap_err();
    assert!(e.message.contains("line 3 column 3"), "{}", e.message);
    assert!(parse_json(b"").is_err());
    assert!(parse_json(b"{} x").is_err());
    assert!(parse_json(b"{\"a\":1,}").is_err());
    assert!(parse_json(b"\xff").is_err());
    assert!(parse_json(b"\"\xff\"").is_err());
    assert!(parse_json(b"\xEF\xBB\xBF{}").is_ok(), "BOM tolerated");
}

#[test]
fn parse_json_rejects_duplicate_keys() {
    let e = parse_json(br#"{"resourceType":"Patient","active":true,"active":false}"#).unwrap_err();
    assert!(
        e.message.contains("duplicate key \"active\""),
        "{}",
        e.message
    );
    assert!(e.message.contains("line 1"), "{}", e.message);
    let e = parse_json(br#"{"a":[{"b":1,"c":{"d":1,"d":2}}]}"#).unwrap_err();
    assert!(e.message.contains("\"d\""));
    // same key in different objects is fine
    assert!(parse_json(br#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
}

#[test]
fn parse_json_depth_limit() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(parse_json(nest(100).as_bytes()).is_ok());
    assert!(parse_json(nest(127).as_bytes()).is_ok());
    let e = parse_json(nest(128).as_bytes()).unwrap_err();
    assert!(e.message.contains("nested too deeply"), "{}", e.message);
    let e = parse_json(nest(100_000).as_bytes()).unwrap_err();
    assert!(e.message.contains("nested too deeply"), "{}", e.message);
    let objs = format!("{}1{}", r#"{"a":"#.repeat(5000), "}".repeat(5000));
    assert!(parse_json(objs.as_bytes()).is_err());
}

#[test]
fn parse_json_values() {
    let v = parse_json(
        br#"{"a":1.50,"b":-0,"c":12345678901234567890123,"d":[true,null,"x\u00e9"],"e":{}}"#,
    )
    .unwrap();
    assert_eq!(v["a"].to_string(), "1.50");
    assert_eq!(v["c"].to_string(), "12345678901234567890123");
    assert_eq!(v["d"][2], json!("xé"));
    assert_eq!(v["e"], json!({}));
    assert_eq!(v["d"][1], Value::Null);
    // key order is preserved
    let v = parse_json(br#"{"z":1,"a":2}"#).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a"]);
}

#[test]
fn never_panics_on_odd_values() {
    for v in [
        json!(null),
        json!(1),
        json!({"resourceType": null}),
        json!({"resourceType": "Patient", "name": [[[]]]}),
        json!({"resourceType": "Patient", "_name": null, "_active": [null]}),
        json!({"resourceType": "Patient", "_": 1, "": 2, "__active": 3}),
        json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "contained": null}]}),
        json!({"resourceType": "Parameters", "parameter": [{"name": "x", "resource": {"resourceType": "Patient", "active": 1}}]}),
        json!({"resourceType": "Patient", "name": [{"given": [null, null], "_given": [null]}]}),
        json!({"resourceType": "Patient", "name": [{"_given": [1, "x", [], {}]}]}),
        json!({"resourceType": "Patient", "birthDate": "2020-01-01", "_birthDate": [{}]}),
    ] {
        let _ = check_resource(&v);
    }
    let long_key = format!(r#"{{"resourceType":"Patient","{}":1}}"#, "k".repeat(500));
    assert_eq!(issues_of(&long_key).len(), 1);
    let long_prim = format!(
        r#"{{"resourceType":"Patient","{0}":1,"_{0}":{{}}}}"#,
        "k".repeat(500)
    );
    assert_eq!(issues_of(&long_prim).len(), 2);
}

// ---------------------------------------------------------------------------
// official examples
// ---------------------------------------------------------------------------

/// Official examples that are genuinely invalid, by file name, with the reason.
const EXAMPLE_ALLOWLIST: &[(&str, &str)] = &[];

const EXAMPLE_TYPES: &[&str] = &[
    "Patient",
    "Appointment",
    "MedicationRequest",
    "Consent",
    "Slot",
    "Schedule",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Medication",
    "Bundle",
];

/// With `FHIRBRIDGE_R4_EXAMPLES_DIR` pointing at a directory of R4 JSON
/// examples (e.g. the unpacked `hl7.fhir.r4.examples` package), every
/// `Type-*.json` of the types above must check without errors.
#[test]
fn official_examples_have_no_errors() {
    let Ok(dir) = std::env::var("FHIRBRIDGE_R4_EXAMPLES_DIR") else {
        eprintln!(
            "skipping official_examples_have_no_errors: FHIRBRIDGE_R4_EXAMPLES_DIR is not set"
        );
        return;
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in entries {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("")
            .to_string();
        let Some(ty) = EXAMPLE_TYPES
            .iter()
            .find(|t| file.starts_with(&format!("{t}-")) && file.ends_with(".json"))
        else {
            continue;
        };
        if EXAMPLE_ALLOWLIST.iter().any(|(f, _)| *f == file) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let value = match parse_json(&bytes) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        if value.get("resourceType").and_then(Value::as_str) != Some(ty) {
            continue;
        }
        checked += 1;
        for issue in check_resource(&value)
            .iter()
            .filter(|i| i.severity.is_error())
        {
            failures.push(format!("{file}: {issue}"));
        }
    }
    eprintln!("checked {checked} official examples");
    assert!(checked > 0, "no examples found in {dir}");
    assert!(
        failures.is_empty(),
        "{} issues:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Release-mode timing of `check_resource` on `Patient-example.json`
/// (`cargo test --release -- --ignored --nocapture bench_check_patient`).
#[test]
#[ignore]
fn bench_check_patient() {
    let dir = std::env::var("FHIRBRIDGE_R4_EXAMPLES_DIR").unwrap_or("/tmp/r4pkg/package".into());
    let bytes = std::fs::read(format!("{dir}/Patient-example.json")).unwrap();
    let value = parse_json(&bytes).unwrap();
    assert!(check_resource(&value).is_empty());
    let n = 200_000;
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..n {
        total += check_resource(std::hint::black_box(&value)).len();
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let start = std::time::Instant::now();
    for _ in 0..n / 10 {
        total += parse_json(std::hint::black_box(&bytes)).map_or(1, |_| 0);
    }
    let parse = start.elapsed().as_secs_f64() * 1e6 / f64::from(n / 10);
    eprintln!(
        "Patient-example.json ({} bytes): check_resource {per:.2} µs/op, parse_json {parse:.2} µs/op ({total})",
        bytes.len()
    );
}

#[test]
fn xml_schema_regex_translation() {
    use crate::primitive::translate_xml_regex;
    let compile =
        |re: &str| regex::Regex::new(&format!("^(?:{})$", translate_xml_regex(re))).unwrap();
    // string/markdown: with XML Schema semantics the spec regex accepts any
    // non-empty string (which is why check_string skips it)
    let string = compile(
        Model::r4()
            .type_def("string")
            .unwrap()
            .regex
            .as_deref()
            .unwrap(),
    );
    for s in ["x", " ", "\u{a0}", "\u{b}\u{c}", "\u{1}", "a\r\n\tb", "😀"] {
        assert!(string.is_match(s), "{s:?}");
    }
    assert!(!string.is_match(""));
    assert_eq!(
        translate_xml_regex(r"[^\s]+(\s[^\s]+)*"),
        r"[^\x20\t\n\r]+([\x20\t\n\r][^\x20\t\n\r]+)*"
    );
    assert_eq!(
        translate_xml_regex(r"[ \r\n\t\S]+"),
        r"[ \r\n\t[^\x20\t\n\r]]+"
    );
    assert_eq!(translate_xml_regex(r"\S*"), r"[^\x20\t\n\r]*");
    let code = compile(r"[^\s]+(\s[^\s]+)*");
    assert!(code.is_match("a\u{a0}b"));
    assert!(!code.is_match("a  b"));
}

#[test]
fn primitive_extension_forms_with_ids_and_nulls() {
    let ext = r#"{"id":"e1","extension":[{"url":"http://example.org/x","valueString":"y"}]}"#;
    // values with ids and extensions, nulls on either side
    check(
        &patient(&format!(
            r#""name":[{{"given":["a",null,"c"],"_given":[{{"id":"g0"}},{ext},null]}}]"#
        )),
        &[],
    );
    // _x alone, for single and repeating elements
    check(
        &patient(&format!(
            r#""_gender":{ext},"name":[{{"_given":[{ext},{ext}]}}]"#
        )),
        &[],
    );
    // a null in _given where given has no item at all
    check(
        &patient(&format!(r#""name":[{{"_given":[{ext},null]}}]"#)),
        &["Patient.name[0].given[1]"],
    );
    // longer _given than given
    check(
        &patient(&format!(
            r#""name":[{{"given":["a"],"_given":[null,{ext}]}}]"#
        )),
        &["Patient.name[0].given"],
    );
    // an id alone is not content
    check(
        &patient(r#""name":[{"given":[null],"_given":[{"id":"x"}]}]"#),
        &["Patient.name[0].given[0]"],
    );
}

#[test]
fn control_characters_in_strings_are_rejected() {
    for (json, at) in [
        (patient(r#""gender":"fe\u0000male""#), "Patient.gender"),
        (
            patient(r#""name":[{"given":["a","b\u0001"]}]"#),
            "Patient.name[0].given[1]",
        ),
        (
            patient(
                r#""name":[{"_given":[{"extension":[{"url":"http://x","valueString":"\u001f"}]}]}]"#,
            ),
            "Patient.name[0].given[0].extension[0].valueString",
        ),
        (
            patient(
                r#""text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">\u0000</div>"}"#,
            ),
            "Patient.text.div",
        ),
        (patient(r#""birthDate":"1970\u0000""#), "Patient.birthDate"),
    ] {
        check(&json, &[at]);
        let issues = issues_of(&json);
        assert!(
            issues[0].message.contains("control character"),
            "{}",
            issues[0]
        );
    }
    // tab, CR and LF are allowed in strings
    check(&patient(r#""name":[{"text":"a\tb\r\nc"}]"#), &[]);
    // keys with control characters are unknown elements, quoted safely
    let issues = issues_of(&patient(r#""gen\u0000der":"x""#));
    assert!(issues[0].message.contains("\\0"), "{}", issues[0]);
    assert!(!issues[0].message.contains('\u{0}'));
}
