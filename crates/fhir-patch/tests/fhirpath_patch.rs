//! FHIRPath Patch: semantics, primitives with `_x` companions, choice types,
//! repeating vs single elements, error classification and atomicity.

use fhir_patch::{apply_fhirpath_patch, PatchError};
use serde_json::{json, Value};

/// One `operation` parameter from its type, path and further parts
/// (each `(name, part JSON without its name)`).
fn op(kind: &str, path: &str, parts: &[(&str, Value)]) -> Value {
    let mut all = vec![
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "path", "valueString": path}),
    ];
    for (name, body) in parts {
        let mut p = body.clone();
        p["name"] = json!(name);
        all.push(p);
    }
    json!({"name": "operation", "part": all})
}

fn params(ops: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": ops})
}

fn patched(resource: Value, ops: Vec<Value>) -> Value {
    let mut r = resource;
    apply_fhirpath_patch(&mut r, &params(ops)).unwrap_or_else(|e| panic!("{e}"));
    r
}

fn failing_doc(resource: Value, parameters: Value) -> PatchError {
    let mut work = resource.clone();
    let Err(err) = apply_fhirpath_patch(&mut work, &parameters) else {
        panic!("patch should fail: {parameters}");
    };
    assert_eq!(work, resource, "resource changed by a failing patch");
    err
}

fn failing(resource: Value, ops: Vec<Value>) -> PatchError {
    failing_doc(resource, params(ops))
}

fn assert_invalid(err: &PatchError, expression: Option<&str>) {
    assert!(
        matches!(err, PatchError::Invalid { .. }),
        "expected Invalid, got {err:?}"
    );
    assert_eq!(err.expression(), expression, "{err:?}");
}

fn assert_cannot_apply(err: &PatchError, expression: &str) {
    assert!(
        matches!(err, PatchError::CannotApply { .. }),
        "expected CannotApply, got {err:?}"
    );
    assert_eq!(err.expression(), Some(expression), "{err:?}");
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "active": true,
        "name": [
            {"family": "Smith", "given": ["Jo", "Ann"], "_given": [null, {"id": "g2"}]},
            {"text": "Jo Smith"}
        ],
        "birthDate": "1970-01-02",
        "_birthDate": {"extension": [{"url": "http://example.org/bt", "valueDateTime": "1970-01-02T10:00:00Z"}]}
    })
}

// ---------------------------------------------------------------- basics

#[test]
fn empty_parameters_change_nothing() {
    assert_eq!(patched(patient(), vec![]), patient());
    let mut p = patient();
    apply_fhirpath_patch(&mut p, &json!({"resourceType": "Parameters"})).unwrap();
    assert_eq!(p, patient());
}

#[test]
fn value_x_types_become_the_right_json() {
    let out = patched(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        vec![
            op(
                "add",
                "Observation",
                &[
                    ("name", json!({"valueString": "issued"})),
                    ("value", json!({"valueInstant": "2020-01-01T00:00:00Z"})),
                ],
            ),
            op(
                "add",
                "Observation",
                &[
                    ("name", json!({"valueString": "valueBoolean"})),
                    ("value", json!({"valueBoolean": true})),
                ],
            ),
            op(
                "add",
                "Observation",
                &[
                    ("name", json!({"valueString": "component"})),
                    (
                        "value",
                        json!({"part": [
                            {"name": "code", "valueCodeableConcept": {"text": "c"}},
                            {"name": "value", "valueInteger": 42}
                        ]}),
                    ),
                ],
            ),
            op(
                "add",
                "Observation",
                &[
                    ("name", json!({"valueString": "component"})),
                    (
                        "value",
                        json!({"part": [
                            {"name": "code", "valueCodeableConcept": {"text": "d"}},
                            {"name": "valueQuantity", "valueQuantity": serde_json::from_str::<Value>(r#"{"value": 1.50, "unit": "mg"}"#).unwrap()}
                        ]}),
                    ),
                ],
            ),
        ],
    );
    assert_eq!(out["issued"], json!("2020-01-01T00:00:00Z"));
    assert_eq!(out["valueBoolean"], json!(true));
    let expected: Value = serde_json::from_str(
        r#"[{"code": {"text": "c"}, "valueInteger": 42},
            {"code": {"text": "d"}, "valueQuantity": {"value": 1.50, "unit": "mg"}}]"#,
    )
    .unwrap();
    assert_eq!(out["component"], expected);
    // arbitrary precision keeps the decimal's lexical form
    assert_eq!(
        out["component"][1]["valueQuantity"]["value"].to_string(),
        "1.50"
    );
}

#[test]
fn string_values_are_fitted_to_the_element_type() {
    let out = patched(
        json!({"resourceType": "Patient", "active": true, "multipleBirthInteger": 1}),
        vec![
            op(
                "replace",
                "Patient.active",
                &[("value", json!({"valueString": "false"}))],
            ),
            op(
                "replace",
                "Patient.multipleBirth",
                &[("value", json!({"valueInteger": 2}))],
            ),
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "gender"})),
                    ("value", json!({"valueString": "other"})),
                ],
            ),
        ],
    );
    assert_eq!(out["active"], json!(false));
    assert_eq!(out["multipleBirthInteger"], json!(2));
    assert_eq!(out["gender"], json!("other"));
}

// ---------------------------------------------------------------- arrays vs single

#[test]
fn add_appends_to_repeating_elements_and_sets_single_ones() {
    let out = patched(
        json!({"resourceType": "Patient"}),
        vec![
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "identifier"})),
                    ("value", json!({"valueIdentifier": {"value": "1"}})),
                ],
            ),
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "identifier"})),
                    ("value", json!({"valueIdentifier": {"value": "2"}})),
                ],
            ),
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "maritalStatus"})),
                    ("value", json!({"valueCodeableConcept": {"text": "M"}})),
                ],
            ),
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "name"})),
                    (
                        "value",
                        json!({"part": [
                            {"name": "family", "valueString": "Smith"},
                            {"name": "given", "valueString": "Jo"},
                            {"name": "given", "valueString": "Ann"}
                        ]}),
                    ),
                ],
            ),
            op(
                "add",
                "Patient.name[0]",
                &[
                    ("name", json!({"valueString": "given"})),
                    ("value", json!({"valueString": "Kim"})),
                ],
            ),
        ],
    );
    assert_eq!(out["identifier"], json!([{"value": "1"}, {"value": "2"}]));
    assert_eq!(out["maritalStatus"], json!({"text": "M"}));
    assert_eq!(
        out["name"],
        json!([{"family": "Smith", "given": ["Jo", "Ann", "Kim"]}])
    );
}

#[test]
fn add_to_a_single_element_that_has_a_value_cannot_apply() {
    let err = failing(
        patient(),
        vec![
            op(
                "replace",
                "Patient.active",
                &[("value", json!({"valueBoolean": false}))],
            ),
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "birthDate"})),
                    ("value", json!({"valueDate": "2000"})),
                ],
            ),
        ],
    );
    assert_cannot_apply(&err, "Parameters.parameter[1]");
    assert!(err.message().contains("already has a value"), "{err}");
    // a value under `_birthDate` alone also counts
    let err = failing(
        json!({"resourceType": "Patient", "_birthDate": {"id": "x"}}),
        vec![op(
            "add",
            "Patient",
            &[
                ("name", json!({"valueString": "birthDate"})),
                ("value", json!({"valueDate": "2000"})),
            ],
        )],
    );
    assert_cannot_apply(&err, "Parameters.parameter[0]");
}

#[test]
fn insert_and_move_work_on_lists() {
    let out = patched(
        json!({"resourceType": "Patient", "identifier": [{"value": "a"}, {"value": "b"}, {"value": "c"}]}),
        vec![
            op(
                "insert",
                "Patient.identifier",
                &[
                    ("index", json!({"valueInteger": 3})),
                    ("value", json!({"valueIdentifier": {"value": "d"}})),
                ],
            ),
            op(
                "move",
                "Patient.identifier",
                &[
                    ("source", json!({"valueInteger": 0})),
                    ("destination", json!({"valueInteger": 2})),
                ],
            ),
        ],
    );
    assert_eq!(
        out["identifier"],
        json!([{"value": "b"}, {"value": "c"}, {"value": "a"}, {"value": "d"}])
    );
}

#[test]
fn insert_into_a_missing_list_creates_it() {
    let out = patched(
        json!({"resourceType": "Patient"}),
        vec![op(
            "insert",
            "Patient.identifier",
            &[
                ("index", json!({"valueInteger": 0})),
                ("value", json!({"valueIdentifier": {"value": "a"}})),
            ],
        )],
    );
    assert_eq!(out["identifier"], json!([{"value": "a"}]));
    let err = failing(
        json!({"resourceType": "Patient"}),
        vec![op(
            "insert",
            "Patient.identifier",
            &[
                ("index", json!({"valueInteger": 1})),
                ("value", json!({"valueIdentifier": {"value": "a"}})),
            ],
        )],
    );
    assert_cannot_apply(&err, "Parameters.parameter[0]");
}

#[test]
fn list_operations_on_single_elements_cannot_apply() {
    for o in [
        op(
            "insert",
            "Patient.birthDate",
            &[
                ("index", json!({"valueInteger": 0})),
                ("value", json!({"valueDate": "2000"})),
            ],
        ),
        op(
            "move",
            "Patient.active",
            &[
                ("source", json!({"valueInteger": 0})),
                ("destination", json!({"valueInteger": 0})),
            ],
        ),
        op(
            "move",
            "Patient.name.given | Patient.name.family",
            &[
                ("source", json!({"valueInteger": 0})),
                ("destination", json!({"valueInteger": 1})),
            ],
        ),
        op(
            "insert",
            "Patient.name",
            &[
                ("index", json!({"valueInteger": 3})),
                ("value", json!({"valueHumanName": {"text": "x"}})),
            ],
        ),
        op(
            "move",
            "Patient.name",
            &[
                ("source", json!({"valueInteger": 0})),
                ("destination", json!({"valueInteger": 2})),
            ],
        ),
    ] {
        let err = failing(patient(), vec![op("delete", "Patient.id", &[]), o.clone()]);
        assert_cannot_apply(&err, "Parameters.parameter[1]");
    }
}

// ---------------------------------------------------------------- primitives with _x

#[test]
fn replacing_a_primitive_replaces_its_extensions_too() {
    let out = patched(
        patient(),
        vec![op(
            "replace",
            "Patient.birthDate",
            &[("value", json!({"valueDate": "1980-05-06"}))],
        )],
    );
    assert_eq!(out["birthDate"], json!("1980-05-06"));
    assert!(out.get("_birthDate").is_none(), "{out}");

    let out = patched(
        patient(),
        vec![op(
            "replace",
            "Patient.birthDate",
            &[(
                "value",
                json!({"valueDate": "1980", "_valueDate": {"id": "d1"}}),
            )],
        )],
    );
    assert_eq!(out["birthDate"], json!("1980"));
    assert_eq!(out["_birthDate"], json!({"id": "d1"}));
}

#[test]
fn extensions_can_be_added_to_and_deleted_from_primitives() {
    let out = patched(
        json!({"resourceType": "Patient", "birthDate": "1970"}),
        vec![op(
            "add",
            "Patient.birthDate",
            &[
                ("name", json!({"valueString": "extension"})),
                (
                    "value",
                    json!({"part": [
                        {"name": "url", "valueUri": "http://example.org/x"},
                        {"name": "value", "valueString": "hello"}
                    ]}),
                ),
            ],
        )],
    );
    assert_eq!(
        out,
        json!({"resourceType": "Patient", "birthDate": "1970",
               "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "hello"}]}})
    );
    let back = patched(out, vec![op("delete", "Patient.birthDate.extension", &[])]);
    assert_eq!(
        back,
        json!({"resourceType": "Patient", "birthDate": "1970"})
    );
}

#[test]
fn repeating_primitives_keep_their_extensions_aligned() {
    // delete the first given name: its neighbour keeps its `_given` entry
    let out = patched(
        patient(),
        vec![op("delete", "Patient.name[0].given[0]", &[])],
    );
    assert_eq!(out["name"][0]["given"], json!(["Ann"]));
    assert_eq!(out["name"][0]["_given"], json!([{"id": "g2"}]));

    // insert a given name with an id in front: both arrays shift
    let out = patched(
        patient(),
        vec![op(
            "insert",
            "Patient.name[0].given",
            &[
                ("index", json!({"valueInteger": 0})),
                (
                    "value",
                    json!({"valueString": "Al", "_valueString": {"id": "g0"}}),
                ),
            ],
        )],
    );
    assert_eq!(out["name"][0]["given"], json!(["Al", "Jo", "Ann"]));
    assert_eq!(
        out["name"][0]["_given"],
        json!([{"id": "g0"}, null, {"id": "g2"}])
    );

    // move the one with the id to the front
    let out = patched(
        patient(),
        vec![op(
            "move",
            "Patient.name[0].given",
            &[
                ("source", json!({"valueInteger": 1})),
                ("destination", json!({"valueInteger": 0})),
            ],
        )],
    );
    assert_eq!(out["name"][0]["given"], json!(["Ann", "Jo"]));
    assert_eq!(out["name"][0]["_given"], json!([{"id": "g2"}, null]));

    // deleting the only id removes `_given` altogether
    let out = patched(
        patient(),
        vec![op("delete", "Patient.name[0].given[1].id", &[])],
    );
    assert_eq!(out["name"][0]["given"], json!(["Jo", "Ann"]));
    assert!(out["name"][0].get("_given").is_none(), "{out}");

    // adding an id to the first given name
    let out = patched(
        patient(),
        vec![op(
            "add",
            "Patient.name[0].given[0]",
            &[
                ("name", json!({"valueString": "id"})),
                ("value", json!({"valueString": "g1"})),
            ],
        )],
    );
    assert_eq!(
        out["name"][0]["_given"],
        json!([{"id": "g1"}, {"id": "g2"}])
    );
}

#[test]
fn primitive_with_only_an_extension_is_found_and_deleted() {
    let r = json!({"resourceType": "Patient", "active": true,
                   "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}});
    let out = patched(r.clone(), vec![op("delete", "Patient.birthDate", &[])]);
    assert_eq!(out, json!({"resourceType": "Patient", "active": true}));
    let out = patched(
        r,
        vec![op(
            "replace",
            "Patient.birthDate",
            &[("value", json!({"valueDate": "1999"}))],
        )],
    );
    assert_eq!(
        out,
        json!({"resourceType": "Patient", "active": true, "birthDate": "1999"})
    );
}

#[test]
fn deletes_remove_emptied_parents() {
    let out = patched(
        json!({"resourceType": "Patient", "contact": [{"name": {"text": "a"}}, {"gender": "male"}]}),
        vec![op("delete", "Patient.contact[0].name.text", &[])],
    );
    assert_eq!(
        out,
        json!({"resourceType": "Patient", "contact": [{"gender": "male"}]})
    );
    let out = patched(out, vec![op("delete", "Patient.contact.gender", &[])]);
    assert_eq!(out, json!({"resourceType": "Patient"}));
}

#[test]
fn delete_of_nothing_is_a_no_op_but_of_several_is_an_error() {
    assert_eq!(
        patched(patient(), vec![op("delete", "Patient.telecom", &[])]),
        patient()
    );
    let err = failing(patient(), vec![op("delete", "Patient.name", &[])]);
    assert_cannot_apply(&err, "Parameters.parameter[0]");
    assert!(err.message().contains("2 elements"), "{err}");
}

// ---------------------------------------------------------------- choice types

fn observation() -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
           "valueQuantity": {"value": 60, "unit": "/min"}})
}

#[test]
fn replacing_a_choice_element_can_change_its_type() {
    let out = patched(
        observation(),
        vec![op(
            "replace",
            "Observation.value",
            &[("value", json!({"valueString": "normal"}))],
        )],
    );
    assert_eq!(out["valueString"], json!("normal"));
    assert!(out.get("valueQuantity").is_none(), "{out}");

    let out = patched(
        observation(),
        vec![op(
            "replace",
            "Observation.value.ofType(Quantity).value",
            &[("value", json!({"valueDecimal": 72.5}))],
        )],
    );
    assert_eq!(out["valueQuantity"], json!({"value": 72.5, "unit": "/min"}));
}

#[test]
fn choice_elements_are_added_by_base_name_or_full_name() {
    let base = json!({"resourceType": "Observation", "status": "final", "code": {"text": "hr"}});
    let out = patched(
        base.clone(),
        vec![
            op(
                "add",
                "Observation",
                &[
                    ("name", json!({"valueString": "value"})),
                    ("value", json!({"valueQuantity": {"value": 1}})),
                ],
            ),
            op(
                "add",
                "Observation",
                &[
                    ("name", json!({"valueString": "effectiveDateTime"})),
                    ("value", json!({"valueDateTime": "2020"})),
                ],
            ),
        ],
    );
    assert_eq!(out["valueQuantity"], json!({"value": 1}));
    assert_eq!(out["effectiveDateTime"], json!("2020"));
    // a second variant of the same choice element is a second value
    let err = failing(
        out,
        vec![op(
            "add",
            "Observation",
            &[
                ("name", json!({"valueString": "value"})),
                ("value", json!({"valueString": "x"})),
            ],
        )],
    );
    assert_cannot_apply(&err, "Parameters.parameter[0]");
    // a type the choice does not allow
    let err = failing(
        base,
        vec![op(
            "add",
            "Observation",
            &[
                ("name", json!({"valueString": "value"})),
                ("value", json!({"valueAttachment": {"url": "http://x"}})),
            ],
        )],
    );
    assert_cannot_apply(&err, "Parameters.parameter[0]");
    assert!(err.message().contains("not allowed"), "{err}");
}

#[test]
fn delete_a_choice_element() {
    let out = patched(observation(), vec![op("delete", "Observation.value", &[])]);
    assert!(out.get("valueQuantity").is_none());
    assert_eq!(out["status"], json!("final"));
}

// ---------------------------------------------------------------- resources inside resources

#[test]
fn contained_resources_are_typed_by_their_resource_type() {
    let out = patched(
        json!({"resourceType": "Patient"}),
        vec![
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "contained"})),
                    (
                        "value",
                        json!({"resource": {"resourceType": "Organization", "id": "o1"}}),
                    ),
                ],
            ),
            op(
                "add",
                "Patient.contained[0]",
                &[
                    ("name", json!({"valueString": "name"})),
                    ("value", json!({"valueString": "Acme"})),
                ],
            ),
            op(
                "add",
                "Patient.contained[0]",
                &[
                    ("name", json!({"valueString": "alias"})),
                    ("value", json!({"valueString": "A"})),
                ],
            ),
        ],
    );
    assert_eq!(
        out["contained"],
        json!([{"resourceType": "Organization", "id": "o1", "name": "Acme", "alias": ["A"]}])
    );
    let err = failing(
        out,
        vec![op(
            "add",
            "Patient.contained[0]",
            &[
                ("name", json!({"valueString": "birthDate"})),
                ("value", json!({"valueDate": "2000"})),
            ],
        )],
    );
    assert_cannot_apply(&err, "Parameters.parameter[0]");
}

// ---------------------------------------------------------------- errors

#[test]
fn malformed_parameters_are_invalid() {
    let r = patient();
    for (doc, at) in [
        (json!([]), None),
        (json!({"resourceType": "Patient"}), None),
        (
            json!({"resourceType": "Parameters", "parameter": {}}),
            Some("Parameters.parameter"),
        ),
    ] {
        assert_invalid(&failing_doc(r.clone(), doc), at);
    }
    let good = op("delete", "Patient.id", &[]);
    let bad_ops = [
        json!("x"),
        json!({"name": "op", "part": []}),
        json!({"name": "operation"}),
        json!({"name": "operation", "part": [{"name": "path", "valueString": "Patient"}]}),
        op("remove", "Patient.id", &[]),
        json!({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}]}),
        op("delete", "Patient.name[", &[]),
        op("delete", "", &[]),
        op("add", "Patient", &[("value", json!({"valueString": "x"}))]),
        op(
            "add",
            "Patient",
            &[("name", json!({"valueString": "gender"}))],
        ),
        op(
            "add",
            "Patient",
            &[
                ("name", json!({"valueString": "_gender"})),
                ("value", json!({"valueCode": "x"})),
            ],
        ),
        op("replace", "Patient.id", &[]),
        op(
            "insert",
            "Patient.name",
            &[("value", json!({"valueHumanName": {}}))],
        ),
        op(
            "insert",
            "Patient.name",
            &[
                ("index", json!({"valueInteger": -1})),
                ("value", json!({"valueHumanName": {}})),
            ],
        ),
        op(
            "insert",
            "Patient.name",
            &[
                ("index", json!({"valueInteger": 1.5})),
                ("value", json!({"valueHumanName": {}})),
            ],
        ),
        op(
            "insert",
            "Patient.name",
            &[
                ("index", json!({"valueString": "1"})),
                ("value", json!({"valueHumanName": {}})),
            ],
        ),
        op(
            "move",
            "Patient.name",
            &[("source", json!({"valueInteger": 0}))],
        ),
        op(
            "replace",
            "Patient.active",
            &[("value", json!({"valueBoolean": "yes"}))],
        ),
        op(
            "replace",
            "Patient.active",
            &[("value", json!({"valueFrobnicate": true}))],
        ),
        op(
            "replace",
            "Patient.active",
            &[("value", json!({"valueBoolean": true, "valueString": "x"}))],
        ),
        op("replace", "Patient.active", &[("value", json!({}))]),
        op(
            "replace",
            "Patient.name[0]",
            &[("value", json!({"part": []}))],
        ),
        op(
            "replace",
            "Patient.name[0]",
            &[("value", json!({"part": [{"valueString": "x"}]}))],
        ),
        op(
            "replace",
            "Patient.name[0]",
            &[("value", json!({"resource": {"resourceType": "Nope"}}))],
        ),
        op(
            "replace",
            "Patient.id",
            &[
                ("value", json!({"valueId": "a"})),
                ("value", json!({"valueId": "b"})),
            ],
        ),
        op(
            "replace",
            "Patient.id",
            &[
                ("value", json!({"valueId": "a"})),
                ("colour", json!({"valueId": "b"})),
            ],
        ),
    ];
    for bad in bad_ops {
        let err = failing_doc(r.clone(), params(vec![good.clone(), bad.clone()]));
        assert_invalid(&err, Some("Parameters.parameter[1]"));
        assert!(err.is_invalid());
        assert!(err.to_string().starts_with("invalid patch: "), "{err}");
    }
}

#[test]
fn inapplicable_operations_cannot_apply() {
    let r = patient();
    let bad_ops = [
        op(
            "add",
            "Patient.identifier",
            &[
                ("name", json!({"valueString": "system"})),
                ("value", json!({"valueUri": "x"})),
            ],
        ),
        op(
            "add",
            "Patient.name",
            &[
                ("name", json!({"valueString": "text"})),
                ("value", json!({"valueString": "x"})),
            ],
        ),
        op(
            "add",
            "Patient",
            &[
                ("name", json!({"valueString": "colour"})),
                ("value", json!({"valueString": "x"})),
            ],
        ),
        op(
            "add",
            "Patient.birthDate",
            &[
                ("name", json!({"valueString": "value"})),
                ("value", json!({"valueDate": "2000"})),
            ],
        ),
        op(
            "replace",
            "Patient.telecom",
            &[("value", json!({"valueContactPoint": {}}))],
        ),
        op(
            "replace",
            "Patient.name",
            &[("value", json!({"valueHumanName": {}}))],
        ),
        op(
            "replace",
            "Patient.birthDate",
            &[("value", json!({"valueBoolean": true}))],
        ),
        op(
            "replace",
            "Patient.birthDate",
            &[("value", json!({"valueCoding": {"code": "x"}}))],
        ),
        op(
            "replace",
            "Patient.name[0]",
            &[("value", json!({"valueString": "x"}))],
        ),
        op(
            "replace",
            "Patient.name[0]",
            &[("value", json!({"valueIdentifier": {"value": "x"}}))],
        ),
        op(
            "replace",
            "Patient.name[0]",
            &[(
                "value",
                json!({"part": [{"name": "colour", "valueString": "x"}]}),
            )],
        ),
        op(
            "replace",
            "Patient.active",
            &[("value", json!({"valueString": "maybe"}))],
        ),
        op(
            "replace",
            "Patient.birthDate",
            &[("value", json!({"valueString": "next tuesday"}))],
        ),
        op(
            "replace",
            "Patient.gender",
            &[("value", json!({"valueString": " male"}))],
        ),
        op(
            "replace",
            "Patient",
            &[("value", json!({"resource": {"resourceType": "Patient"}}))],
        ),
        op("delete", "Patient", &[]),
        op("replace", "1 + 1", &[("value", json!({"valueInteger": 3}))]),
        op("delete", "Patient.name.single()", &[]),
        op(
            "move",
            "Patient.name",
            &[
                ("source", json!({"valueInteger": 5})),
                ("destination", json!({"valueInteger": 0})),
            ],
        ),
        op(
            "move",
            "Patient.identifier",
            &[
                ("source", json!({"valueInteger": 0})),
                ("destination", json!({"valueInteger": 0})),
            ],
        ),
        op(
            "insert",
            "Patient.name | Patient.name.given",
            &[
                ("index", json!({"valueInteger": 0})),
                ("value", json!({"valueString": "x"})),
            ],
        ),
    ];
    for bad in bad_ops {
        let err = failing(
            r.clone(),
            vec![op("delete", "Patient.id", &[]), bad.clone()],
        );
        assert_cannot_apply(&err, "Parameters.parameter[1]");
        assert!(
            err.to_string().starts_with("patch cannot be applied: "),
            "{err}"
        );
    }
}

#[test]
fn missing_path_message_follows_the_reference_implementation() {
    let err = failing(
        json!({"resourceType": "Patient", "identifier": [{"use": "official", "value": "123"}]}),
        vec![op(
            "add",
            "Patient.identifier.where(use = 'official').period",
            &[
                ("name", json!({"valueString": "end"})),
                ("value", json!({"valueDate": "2021-12-01"})),
            ],
        )],
    );
    assert_eq!(
        err.message(),
        "No content found at Patient.identifier.where(use = 'official').period when adding"
    );
}

#[test]
fn a_failing_operation_undoes_the_earlier_ones() {
    let mut r = patient();
    let before = r.clone();
    let err = apply_fhirpath_patch(
        &mut r,
        &params(vec![
            op("delete", "Patient.birthDate", &[]),
            op(
                "replace",
                "Patient.active",
                &[("value", json!({"valueBoolean": false}))],
            ),
            op(
                "add",
                "Patient",
                &[
                    ("name", json!({"valueString": "active"})),
                    ("value", json!({"valueBoolean": true})),
                ],
            ),
        ]),
    )
    .unwrap_err();
    assert_eq!(r, before);
    assert_cannot_apply(&err, "Parameters.parameter[2]");
}

#[test]
fn targets_that_are_not_resources() {
    let parameters = params(vec![op("delete", "name", &[])]);
    for target in [
        json!(null),
        json!([1]),
        json!("Patient"),
        json!({"name": "x"}),
    ] {
        let err = failing_doc(target, parameters.clone());
        assert!(matches!(err, PatchError::CannotApply { .. }), "{err:?}");
    }
}

#[test]
fn results_over_the_limits_are_refused_and_leave_the_resource_untouched() {
    let resource = json!({"resourceType": "Patient", "active": true});
    let ops = vec![op(
        "add",
        "Patient",
        &[
            ("name", json!({"valueString": "birthDate"})),
            ("value", json!({"valueDate": "1970-01-02"})),
        ],
    )];
    let mut r = resource.clone();
    let limits = fhir_patch::Limits::with_max_bytes(40);
    let e =
        fhir_patch::apply_fhirpath_patch_within(&mut r, &params(ops.clone()), &limits).unwrap_err();
    assert!(!e.is_invalid());
    assert!(e.message().contains("limit of 40 bytes"), "{e}");
    assert_eq!(r, resource);
    let limits = fhir_patch::Limits::with_max_bytes(100);
    fhir_patch::apply_fhirpath_patch_within(&mut r, &params(ops), &limits).unwrap();
    assert_eq!(r["birthDate"], "1970-01-02");
    // a deeply nested path expression is an invalid patch, not a stack overflow
    let deep = format!("{}Patient{}", "(".repeat(10_000), ")".repeat(10_000));
    let e = failing(
        resource,
        vec![op(
            "add",
            &deep,
            &[
                ("name", json!({"valueString": "gender"})),
                ("value", json!({"valueCode": "male"})),
            ],
        )],
    );
    assert!(e.is_invalid(), "{e}");
    assert!(e.message().len() < 300, "{e}");
}
