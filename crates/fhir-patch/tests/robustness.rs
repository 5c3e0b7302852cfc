//! Fuzz-ish robustness: odd and random inputs never panic, and a failing patch
//! never changes its target.

use fhir_patch::{apply_fhirpath_patch, apply_json_patch};
use serde_json::{json, Map, Value};

/// A small deterministic pseudo-random generator (64-bit LCG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const KEYS: &[&str] = &[
    "name",
    "given",
    "_given",
    "family",
    "identifier",
    "value",
    "valueQuantity",
    "valueString",
    "extension",
    "url",
    "id",
    "active",
    "birthDate",
    "_birthDate",
    "contact",
    "gender",
    "text",
    "div",
    "contained",
    "resourceType",
    "~",
    "/",
    "-",
    "0",
    "",
];

fn random_json(rng: &mut Rng, depth: usize) -> Value {
    let choice = if depth == 0 {
        rng.below(6)
    } else {
        rng.below(8)
    };
    match choice {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => json!(rng.below(5)),
        3 => {
            serde_json::from_str(rng.pick(&["-1", "1.50", "1e400", "0.0", "12345678901234567890"]))
                .unwrap_or(Value::Null)
        }
        4 | 5 => json!(rng.pick(&["", "x", "Patient", "1970-01-01", "true", "<div/>", "é"])),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(5) {
                m.insert(rng.pick(KEYS).to_string(), random_json(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

fn random_pointer(rng: &mut Rng) -> Value {
    if rng.chance(5) {
        return random_json(rng, 1);
    }
    let mut p = String::new();
    for _ in 0..rng.below(3) {
        p.push('/');
        p.push_str(rng.pick(&[
            "name",
            "0",
            "1",
            "-",
            "given",
            "01",
            "~0",
            "~1",
            "~2",
            "~",
            "active",
            "",
            "99999999999999999999",
            "x",
        ]));
    }
    Value::String(p)
}

fn random_json_patch(rng: &mut Rng) -> Value {
    if rng.chance(5) {
        return random_json(rng, 2);
    }
    let ops = (0..1 + rng.below(2))
        .map(|_| {
            let mut op = Map::new();
            if rng.chance(99) {
                op.insert(
                    "op".into(),
                    json!(rng.pick(&["add", "remove", "replace", "move", "copy", "test", "bogus"])),
                );
            }
            if rng.chance(98) {
                op.insert("path".into(), random_pointer(rng));
            }
            if rng.chance(50) {
                op.insert("from".into(), random_pointer(rng));
            }
            if rng.chance(80) {
                op.insert("value".into(), random_json(rng, 2));
            }
            Value::Object(op)
        })
        .collect();
    Value::Array(ops)
}

const PATHS: &[&str] = &[
    "Patient",
    "Patient.name",
    "Patient.name[0]",
    "Patient.name.given",
    "Patient.name[0].given[1]",
    "Patient.birthDate",
    "Patient.birthDate.extension",
    "Patient.identifier",
    "Patient.contact[0]",
    "Patient.active",
    "Patient.id",
    "Observation.value",
    "Patient.name.where(family = 'x')",
    "Patient.text.div",
    "Patient.contained[0]",
    "Patient.descendants()",
    "1 + 1",
    "%resource",
    "Patient.name.given.first().extension",
    "",
    "(((",
    "Patient.name[",
    "name",
    "'a'",
    "Patient.name.given | Patient.name.family",
    "Patient.contained.resolve()",
    "today()",
    "Patient.name.select($this)",
    "Patient.repeat(name)",
    "Patient.children()",
];

const NAMES: &[&str] = &[
    "name",
    "given",
    "family",
    "identifier",
    "extension",
    "id",
    "value",
    "gender",
    "active",
    "birthDate",
    "deceased",
    "deceasedBoolean",
    "contact",
    "contained",
    "_given",
    "x y",
    "",
];

const VALUE_KEYS: &[&str] = &[
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueDate",
    "valueCode",
    "valueHumanName",
    "valueIdentifier",
    "valueCodeableConcept",
    "valueQuantity",
    "valueDecimal",
    "valueFoo",
    "_valueString",
    "valueUri",
    "value",
];

fn random_value_part(rng: &mut Rng, depth: usize) -> Value {
    let mut p = Map::new();
    p.insert("name".into(), json!(rng.pick(NAMES)));
    match rng.below(5) {
        0 if depth > 0 => {
            let parts: Vec<Value> = (0..rng.below(4))
                .map(|_| random_value_part(rng, depth - 1))
                .collect();
            p.insert("part".into(), Value::Array(parts));
        }
        1 => {
            p.insert(
                "resource".into(),
                if rng.chance(70) {
                    json!({"resourceType": rng.pick(&["Patient", "Organization", "Nope"]), "id": "r"})
                } else {
                    random_json(rng, 2)
                },
            );
        }
        _ => {
            for _ in 0..1 + rng.below(2) {
                p.insert(rng.pick(VALUE_KEYS).to_string(), random_json(rng, 2));
            }
        }
    }
    Value::Object(p)
}

/// A well-formed operation that often applies.
fn plausible_op(rng: &mut Rng) -> Value {
    let (kind, path, extra): (&str, &str, Vec<Value>) = match rng.below(6) {
        0 => ("delete", rng.pick(PATHS), vec![]),
        1 => (
            "replace",
            rng.pick(&[
                "Patient.active",
                "Patient.name[0].given[0]",
                "Patient.id",
                "Observation.value",
            ]),
            vec![
                json!({"name": "value", rng.pick(&["valueBoolean", "valueString"]): rng.pick(&[json!(true), json!("abc")])}),
            ],
        ),
        2 => (
            "add",
            rng.pick(&[
                "Patient",
                "Patient.name[0]",
                "Patient.birthDate",
                "Observation",
            ]),
            vec![
                json!({"name": "name", "valueString": rng.pick(&["identifier", "given", "gender", "extension", "value"])}),
                json!({"name": "value", rng.pick(&["valueIdentifier", "valueString", "valueCode", "valueQuantity"]): rng.pick(&[json!({"value": "1"}), json!("male")])}),
            ],
        ),
        3 => (
            "insert",
            rng.pick(&[
                "Patient.identifier",
                "Patient.name[0].given",
                "Patient.name",
            ]),
            vec![
                json!({"name": "index", "valueInteger": rng.below(4)}),
                json!({"name": "value", rng.pick(&["valueIdentifier", "valueString", "valueHumanName"]): rng.pick(&[json!({"value": "1"}), json!("x")])}),
            ],
        ),
        4 => (
            "move",
            rng.pick(&[
                "Patient.identifier",
                "Patient.name[0].given",
                "Patient.name",
            ]),
            vec![
                json!({"name": "source", "valueInteger": rng.below(3)}),
                json!({"name": "destination", "valueInteger": rng.below(3)}),
            ],
        ),
        _ => ("delete", "Patient.name[0].given[1]", vec![]),
    };
    let mut parts = vec![
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "path", "valueString": path}),
    ];
    parts.extend(extra);
    json!({"name": "operation", "part": parts})
}

fn random_parameters(rng: &mut Rng) -> Value {
    if rng.chance(5) {
        return random_json(rng, 3);
    }
    let ops: Vec<Value> = (0..1 + rng.below(3))
        .map(|_| {
            if rng.chance(50) {
                return plausible_op(rng);
            }
            let mut parts = Vec::new();
            if rng.chance(95) {
                parts.push(json!({"name": "type", "valueCode": rng.pick(&["add", "insert", "delete", "replace", "move", "copy"])}));
            }
            if rng.chance(95) {
                parts.push(json!({"name": "path", "valueString": rng.pick(PATHS)}));
            }
            if rng.chance(60) {
                parts.push(json!({"name": "name", "valueString": rng.pick(NAMES)}));
            }
            if rng.chance(70) {
                let mut v = random_value_part(rng, 3);
                v["name"] = json!("value");
                parts.push(v);
            }
            for part in ["index", "source", "destination"] {
                if rng.chance(40) {
                    let n: Value = serde_json::from_str(rng.pick(&["0", "1", "2", "3", "-1", "1.5", "1e400", "99999999999999999999"]))
                        .unwrap_or(Value::Null);
                    parts.push(json!({"name": part, "valueInteger": n}));
                }
            }
            if rng.chance(5) {
                parts.push(random_json(rng, 2));
            }
            json!({"name": if rng.chance(97) { "operation" } else { "other" }, "part": parts})
        })
        .collect();
    json!({"resourceType": "Parameters", "parameter": ops})
}

fn resources() -> Vec<Value> {
    vec![
        json!({"resourceType": "Patient"}),
        json!({
            "resourceType": "Patient", "id": "p", "active": true,
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "name": [{"family": "A", "given": ["B", "C"], "_given": [null, {"id": "c"}]}, {"text": "T"}],
            "_birthDate": {"extension": [{"url": "http://x", "valueCode": "unknown"}]},
            "identifier": [{"value": "1"}, {"value": "2"}],
            "contact": [{"gender": "male"}],
            "contained": [{"resourceType": "Organization", "id": "o", "name": "O"}]
        }),
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "c"}, "valueQuantity": {"value": 1}}),
        json!({"resourceType": "Unknown", "name": [1, {"given": null}], "x": {"y": []}}),
        json!({"name": "not a resource"}),
        json!([1, 2, 3]),
        json!(null),
    ]
}

#[test]
fn random_json_patches_never_panic_and_fail_atomically() {
    let mut rng = Rng(0x5eed);
    let mut docs = resources();
    for _ in 0..20 {
        docs.push(random_json(&mut rng, 4));
    }
    let mut ok = 0;
    for i in 0..4000 {
        let doc = docs[i % docs.len()].clone();
        let patch = random_json_patch(&mut rng);
        let mut work = doc.clone();
        match apply_json_patch(&mut work, &patch) {
            Ok(()) => ok += 1,
            Err(e) => {
                assert_eq!(
                    work, doc,
                    "failing patch {patch} changed the document ({e})"
                );
                assert!(!e.message().is_empty());
            }
        }
    }
    println!("{ok} of 4000 random JSON patches applied");
    // the generator is not so wild that nothing ever applies
    assert!(ok > 100, "only {ok} patches applied");
}

#[test]
fn random_fhirpath_patches_never_panic_and_fail_atomically() {
    let mut rng = Rng(0xf41e);
    let docs = resources();
    let mut ok = 0;
    for i in 0..3000 {
        let doc = docs[i % docs.len()].clone();
        let params = random_parameters(&mut rng);
        let mut work = doc.clone();
        match apply_fhirpath_patch(&mut work, &params) {
            Ok(()) => ok += 1,
            Err(e) => {
                assert_eq!(
                    work, doc,
                    "failing patch {params} changed the resource ({e})"
                );
                assert!(!e.message().is_empty());
            }
        }
    }
    println!("{ok} of 3000 random FHIRPath patches applied");
    assert!(ok > 50, "only {ok} patches applied");
}

#[test]
fn odd_inputs() {
    let patient = json!({"resourceType": "Patient", "name": [{"given": ["a"]}]});
    // deeply nested value parts are rejected, not recursed into without bound
    let mut value = json!({"name": "family", "valueString": "x"});
    for _ in 0..200 {
        value = json!({"name": "name", "part": [value]});
    }
    value["name"] = json!("value");
    let params = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "name"},
        value
    ]}]});
    let mut work = patient.clone();
    let err = apply_fhirpath_patch(&mut work, &params).unwrap_err();
    assert!(err.is_invalid(), "{err:?}");
    assert_eq!(work, patient);

    for odd in [
        json!(null),
        json!(0),
        json!(""),
        json!([]),
        json!({}),
        json!({"resourceType": "Parameters", "parameter": [null]}),
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": null}]}),
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [null, 1]}]}),
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [{"name": 1}]}]}),
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
            {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.name.given.where($this.length() > 'x')"}]}]}),
    ] {
        let mut work = patient.clone();
        let _ = apply_fhirpath_patch(&mut work, &odd);
        let mut work2 = patient.clone();
        let _ = apply_json_patch(&mut work2, &odd);
    }
    let mut work = patient.clone();
    // a whole-document replacement is allowed by JSON Patch
    apply_json_patch(
        &mut work,
        &json!([{"op": "replace", "path": "", "value": null}]),
    )
    .unwrap();
    assert_eq!(work, json!(null));
}
