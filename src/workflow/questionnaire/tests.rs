use super::*;
use serde_json::json;

const FORM: &str = include_str!("../../../fixtures/triage/questionnaire-triage.json");
const EXAMPLE: &str = include_str!("../../../fixtures/triage/questionnaireresponse-example.json");

fn form() -> Value {
    serde_json::from_str(FORM).unwrap()
}

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

fn messages(p: &[Problem]) -> String {
    p.iter()
        .map(|p| format!("{}: {}", p.expression, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_fixture_example_is_valid() {
    let p = validate(&form(), &example());
    assert!(p.is_empty(), "{}", messages(&p));
}

#[test]
fn a_missing_required_answer_is_named() {
    let mut r = example();
    r["item"].as_array_mut().unwrap().remove(0);
    let p = validate(&form(), &r);
    assert_eq!(p.len(), 1, "{}", messages(&p));
    assert!(p[0].message.contains("'reason'"), "{}", messages(&p));
    // In progress, nothing is required yet.
    r["status"] = json!("in-progress");
    assert!(validate(&form(), &r).is_empty());
}

#[test]
fn a_required_item_inside_an_enabled_group() {
    let mut r = example();
    r["item"][4]["item"] = json!([]);
    let p = validate(&form(), &r);
    assert!(
        p.iter().any(|x| x.message.contains("'pain-score'")),
        "{}",
        messages(&p)
    );
    // Disabled group: its required items are not.
    r["item"][3]["answer"][0]["valueBoolean"] = json!(false);
    r["item"].as_array_mut().unwrap().remove(4);
    let p = validate(&form(), &r);
    assert!(p.is_empty(), "{}", messages(&p));
}

#[test]
fn a_disabled_item_must_not_be_answered() {
    let mut r = example();
    r["item"][3]["answer"][0]["valueBoolean"] = json!(false);
    let p = validate(&form(), &r);
    assert!(
        p.iter().any(|x| x.message.contains("not enabled")),
        "{}",
        messages(&p)
    );
}

#[test]
fn wrong_answer_types_options_and_lengths() {
    let mut r = example();
    r["item"][2]["answer"][0] = json!({"valueString": "no"});
    r["item"][1]["answer"][0]["valueCoding"]["code"] = json!("years");
    r["item"][0]["answer"][0]["valueString"] = json!("x".repeat(501));
    let p = validate(&form(), &r);
    assert_eq!(p.len(), 3, "{}", messages(&p));
    assert!(messages(&p).contains("cannot take a valueString"));
    assert!(messages(&p).contains("not one of its options"));
    assert!(messages(&p).contains("longer than 500"));
    // Never the answer itself.
    assert!(!messages(&p).contains("xxxx"));
}

#[test]
fn repeats_order_and_unknown_items() {
    let mut r = example();
    r["item"][0]["answer"] = json!([{"valueString": "a"}, {"valueString": "b"}]);
    let p = validate(&form(), &r);
    assert!(
        p.iter().any(|x| x.message.contains("takes one answer")),
        "{}",
        messages(&p)
    );
    let mut r = example();
    r["item"].as_array_mut().unwrap().swap(0, 1);
    r["item"]
        .as_array_mut()
        .unwrap()
        .push(json!({"linkId": "surprise", "answer": [{"valueBoolean": true}]}));
    let p = validate(&form(), &r);
    assert!(
        p.iter()
            .any(|x| x.message.contains("out of the Questionnaire's order")),
        "{}",
        messages(&p)
    );
    assert!(
        p.iter().any(|x| x.message.contains("'surprise'")),
        "{}",
        messages(&p)
    );
}

#[test]
fn enable_when_any_and_all_and_operators() {
    let q = json!({"resourceType": "Questionnaire", "item": [
        {"linkId": "a", "type": "integer"},
        {"linkId": "b", "type": "boolean"},
        {"linkId": "c", "type": "string", "required": true, "enableBehavior": "any",
         "enableWhen": [{"question": "a", "operator": ">", "answerInteger": 5},
                        {"question": "b", "operator": "exists", "answerBoolean": true}]},
        {"linkId": "d", "type": "string", "required": true,
         "enableWhen": [{"question": "a", "operator": ">=", "answerInteger": 5},
                        {"question": "b", "operator": "!=", "answerBoolean": true}]}
    ]});
    let r = |items: Value| json!({"resourceType": "QuestionnaireResponse", "status": "completed", "item": items});
    // a = 3, b absent: c (any: a>5 no, b exists no) off; d (a>=5 no) off.
    assert!(validate(
        &q,
        &r(json!([{"linkId": "a", "answer": [{"valueInteger": 3}]}]))
    )
    .is_empty());
    // a = 7, b absent: c on (a>5), d on (a>=5 and b != true): both required.
    let p = validate(
        &q,
        &r(json!([{"linkId": "a", "answer": [{"valueInteger": 7}]}])),
    );
    assert_eq!(p.len(), 2, "{}", messages(&p));
    // b = true: c on through exists; d off (b != true fails).
    let p = validate(
        &q,
        &r(json!([{"linkId": "a", "answer": [{"valueInteger": 7}]},
                                   {"linkId": "b", "answer": [{"valueBoolean": true}]},
                                   {"linkId": "c", "answer": [{"valueString": "x"}]}])),
    );
    assert!(p.is_empty(), "{}", messages(&p));
}

#[test]
fn nested_answer_items() {
    let q = json!({"resourceType": "Questionnaire", "item": [
        {"linkId": "smoke", "type": "boolean", "item": [{"linkId": "per-day", "type": "integer"}]}]});
    let good = json!({"resourceType": "QuestionnaireResponse", "status": "completed", "item": [
        {"linkId": "smoke", "answer": [{"valueBoolean": true, "item": [{"linkId": "per-day", "answer": [{"valueInteger": 5}]}]}]}]});
    assert!(validate(&q, &good).is_empty());
    let mut bad = good.clone();
    bad["item"][0]["answer"][0]["item"][0]["answer"][0] = json!({"valueDecimal": 5.5});
    assert_eq!(validate(&q, &bad).len(), 1);
}

#[test]
fn hostile_shapes_never_panic() {
    let deep = (0..200).fold(
        json!({"linkId": "g", "type": "group"}),
        |inner, _| json!({"linkId": "g", "type": "group", "item": [inner]}),
    );
    let q = json!({"resourceType": "Questionnaire", "item": [deep.clone()]});
    let r = json!({"resourceType": "QuestionnaireResponse", "status": "completed", "item": [deep]});
    let p = validate(&q, &r);
    assert!(p.iter().any(|x| x.message.contains("nested too deeply")));
    for junk in [
        json!({"resourceType": "QuestionnaireResponse", "item": "x"}),
        json!({"resourceType": "QuestionnaireResponse", "item": [{"linkId": "reason", "answer": 3}]}),
        json!({"resourceType": "QuestionnaireResponse", "item": [{"answer": [{}]}]}),
        json!({"resourceType": "Patient"}),
    ] {
        assert!(!validate(&form(), &junk).is_empty());
    }
}
