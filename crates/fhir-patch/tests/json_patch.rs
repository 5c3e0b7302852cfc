//! RFC 6902 JSON Patch: results, error classification and atomicity.

use fhir_patch::{apply_json_patch, PatchError};
use serde_json::{json, Value};

fn patched(doc: Value, patch: Value) -> Value {
    let mut doc = doc;
    apply_json_patch(&mut doc, &patch).unwrap_or_else(|e| panic!("{e}"));
    doc
}

/// Applies a failing patch, checks the document is unchanged and returns the error.
fn failing(doc: Value, patch: Value) -> PatchError {
    let mut work = doc.clone();
    let err = apply_json_patch(&mut work, &patch).expect_err("patch should fail");
    assert_eq!(work, doc, "document changed by a failing patch");
    err
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

#[test]
fn all_six_operations() {
    let doc = json!({"resourceType": "Patient", "name": [{"given": ["a", "b"]}], "active": true});
    let out = patched(
        doc,
        json!([
            {"op": "test", "path": "/active", "value": true},
            {"op": "add", "path": "/name/0/given/-", "value": "c"},
            {"op": "add", "path": "/name/0/given/0", "value": "z"},
            {"op": "remove", "path": "/name/0/given/1"},
            {"op": "replace", "path": "/active", "value": false},
            {"op": "copy", "from": "/name/0", "path": "/name/-"},
            {"op": "move", "from": "/name/1/given", "path": "/alias"},
            {"op": "test", "path": "/alias", "value": ["z", "b", "c"]}
        ]),
    );
    assert_eq!(
        out,
        json!({"resourceType": "Patient", "name": [{"given": ["z", "b", "c"]}, {}],
               "active": false, "alias": ["z", "b", "c"]})
    );
}

#[test]
fn whole_document_operations() {
    assert_eq!(
        patched(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "", "value": [1]}])
        ),
        json!([1])
    );
    assert_eq!(
        patched(
            json!({"a": 1}),
            json!([{"op": "add", "path": "", "value": {"b": 2}}])
        ),
        json!({"b": 2})
    );
    assert_eq!(
        patched(
            json!({"a": 1}),
            json!([{"op": "test", "path": "", "value": {"a": 1.0}}])
        ),
        json!({"a": 1})
    );
    let err = failing(json!({"a": 1}), json!([{"op": "remove", "path": ""}]));
    assert_cannot_apply(&err, "/0");
}

#[test]
fn test_compares_numbers_by_value_and_objects_without_order() {
    let doc: Value = serde_json::from_str(r#"{"n": 1.50, "o": {"x": 1, "y": [2]}}"#).unwrap();
    patched(
        doc.clone(),
        json!([
            {"op": "test", "path": "/n", "value": 1.5},
            {"op": "test", "path": "/o", "value": {"y": [2.0], "x": 1}}
        ]),
    );
    let err = failing(doc, json!([{"op": "test", "path": "/n", "value": "1.5"}]));
    assert_cannot_apply(&err, "/0");
    assert!(err.to_string().contains("test failed"), "{err}");
}

#[test]
fn malformed_documents_are_invalid() {
    let doc = json!({"a": [1, 2]});
    assert_invalid(&failing(doc.clone(), json!({"op": "add"})), None);
    assert_invalid(&failing(doc.clone(), json!("nope")), None);
    for (patch, at) in [
        (json!([1]), "/0"),
        (json!([{"path": "/a"}]), "/0"),
        (json!([{"op": 3, "path": "/a"}]), "/0"),
        (json!([{"op": "frobnicate", "path": "/a"}]), "/0"),
        (json!([{"op": "remove"}]), "/0"),
        (json!([{"op": "remove", "path": 7}]), "/0"),
        (json!([{"op": "add", "path": "/b"}]), "/0"),
        (json!([{"op": "replace", "path": "/a"}]), "/0"),
        (json!([{"op": "test", "path": "/a"}]), "/0"),
        (json!([{"op": "move", "path": "/b"}]), "/0"),
        (json!([{"op": "copy", "from": "/a"}]), "/0"),
        (json!([{"op": "remove", "path": "a"}]), "/0"),
        (json!([{"op": "remove", "path": "/a~2"}]), "/0"),
        (
            json!([{"op": "test", "path": "/a", "value": [1, 2]}, {"op": "move", "from": "/a", "path": "/a/0"}]),
            "/1",
        ),
    ] {
        let err = failing(doc.clone(), patch.clone());
        assert_invalid(&err, Some(at));
        assert!(!err.message().is_empty(), "{patch}");
    }
}

#[test]
fn a_malformed_operation_anywhere_is_reported_before_applying() {
    // the first operation would fail to apply, but the second is malformed
    let err = failing(
        json!({}),
        json!([{"op": "remove", "path": "/missing"}, {"op": "nope"}]),
    );
    assert_invalid(&err, Some("/1"));
}

#[test]
fn inapplicable_operations_cannot_apply() {
    let doc = json!({"a": [1, 2], "o": {"k": "v"}, "s": "str"});
    for (patch, at) in [
        (json!([{"op": "remove", "path": "/missing"}]), "/0"),
        (
            json!([{"op": "replace", "path": "/missing", "value": 1}]),
            "/0",
        ),
        (
            json!([{"op": "add", "path": "/missing/x", "value": 1}]),
            "/0",
        ),
        (json!([{"op": "add", "path": "/a/3", "value": 1}]), "/0"),
        (json!([{"op": "add", "path": "/a/01", "value": 1}]), "/0"),
        (json!([{"op": "add", "path": "/a/x", "value": 1}]), "/0"),
        (json!([{"op": "remove", "path": "/a/-"}]), "/0"),
        (json!([{"op": "replace", "path": "/a/2", "value": 0}]), "/0"),
        (json!([{"op": "add", "path": "/s/x", "value": 1}]), "/0"),
        (json!([{"op": "move", "from": "/nope", "path": "/x"}]), "/0"),
        (json!([{"op": "copy", "from": "/a/9", "path": "/x"}]), "/0"),
        (
            json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/x", "value": 2}]),
            "/1",
        ),
    ] {
        let err = failing(doc.clone(), patch.clone());
        assert_cannot_apply(&err, at);
    }
}

#[test]
fn failing_patch_leaves_target_unchanged() {
    let doc = json!({"resourceType": "Patient", "active": true, "name": [{"family": "A"}]});
    let err = failing(
        doc,
        json!([
            {"op": "replace", "path": "/active", "value": false},
            {"op": "remove", "path": "/name/0"},
            {"op": "remove", "path": "/name/0"}
        ]),
    );
    assert_cannot_apply(&err, "/2");
    assert!(err.to_string().contains("(at /2)"), "{err}");
}

#[test]
fn escaped_pointers() {
    let out = patched(
        json!({"a/b": 1, "m~n": 2}),
        json!([
            {"op": "replace", "path": "/a~1b", "value": 10},
            {"op": "remove", "path": "/m~0n"},
            {"op": "add", "path": "/~0~1", "value": 3}
        ]),
    );
    assert_eq!(out, json!({"a/b": 10, "~/": 3}));
}

#[test]
fn move_to_the_same_place_is_a_no_op_and_keeps_order() {
    let doc = json!({"x": 1, "y": 2, "z": 3});
    let out = patched(doc, json!([{"op": "move", "from": "/y", "path": "/y"}]));
    assert_eq!(
        out.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["x", "y", "z"]
    );
    let out = patched(out, json!([{"op": "remove", "path": "/x"}]));
    assert_eq!(
        out.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["y", "z"]
    );
}
