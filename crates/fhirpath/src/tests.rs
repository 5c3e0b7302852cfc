//! Unit tests of the public API: evaluation semantics, typing, callbacks,
//! robustness (deep nesting, random input never panics).

use super::*;
use serde_json::json;

fn patient() -> Json {
    json!({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009"}],
        "active": true,
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
                 {"use": "usual", "given": ["Jim"]}],
        "telecom": [{"system": "phone", "value": "0123"}, {"system": "email", "value": "a@b.c"}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                       "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "deceasedBoolean": false,
        "contained": [{"resourceType": "Organization", "id": "org1", "name": "Acme"}],
        "managingOrganization": {"reference": "#org1"},
        "generalPractitioner": [{"reference": "Practitioner/123"}]
    })
}

fn ev(expr: &str, res: &Json) -> Vec<String> {
    let e = parse(expr).unwrap_or_else(|e| panic!("{}: {}", expr, e));
    let ctx = EvalContext::new();
    evaluate(&e, res, &ctx)
        .unwrap_or_else(|e| panic!("{}: {}", expr, e))
        .iter()
        .map(literal_repr)
        .collect()
}

fn ev1(expr: &str) -> String {
    ev(expr, &patient()).join(",")
}

fn fails(expr: &str) -> bool {
    match parse(expr) {
        Err(_) => true,
        Ok(e) => evaluate(&e, &patient(), &EvalContext::new()).is_err(),
    }
}

#[test]
#[cfg(feature = "r4-model")]
fn navigation_and_typing() {
    let p = patient();
    assert_eq!(ev("name.given", &p), vec!["Peter", "James", "Jim"]);
    assert_eq!(ev1("Patient.name.given.count()"), "3");
    assert_eq!(ev1("name.exists() or identifier.exists()"), "true");
    assert_eq!(ev1("deceased"), "false");
    assert_eq!(ev1("deceased.is(boolean)"), "true");
    assert_eq!(ev1("birthDate.is(date)"), "true");
    assert_eq!(ev1("birthDate > @1970"), "true");
    assert_eq!(
        ev1("gender.is(code) and gender.is(string) and gender.as(string).empty()"),
        "true"
    );
    assert_eq!(ev1("birthDate.extension('http://hl7.org/fhir/StructureDefinition/patient-birthTime').value"), "@1974-12-25T14:35:45-05:00");
    assert_eq!(ev1("birthDate.hasValue()"), "true");
    assert_eq!(ev1("name[1].given"), "Jim");
    assert_eq!(ev1("Encounter.name"), "");
    assert_eq!(ev1("Patient.name.first().family"), "Chalmers");
}

#[test]
#[cfg(feature = "r4-model")]
fn result_nodes_expose_json_and_type() {
    let p = patient();
    let e = parse("identifier | birthDate | name.given").unwrap();
    let ctx = EvalContext::new();
    let r = evaluate(&e, &p, &ctx).unwrap();
    let types: Vec<&str> = r
        .iter()
        .map(|v| v.as_node().map(|n| n.fhir_type()).unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        vec!["Identifier", "date", "string", "string", "string"]
    );
    let id = r[0].as_node().and_then(|n| n.json()).unwrap();
    assert_eq!(id["value"], "9000000009");
}

#[test]
fn three_valued_logic() {
    assert_eq!(ev1("(true and {}).empty()"), "true");
    assert_eq!(ev1("false and {}"), "false");
    assert_eq!(ev1("{} or true"), "true");
    assert_eq!(ev1("({} xor true).empty()"), "true");
    assert_eq!(ev1("false implies {}"), "true");
    assert_eq!(ev1("({} implies false).empty()"), "true");
    assert_eq!(ev1("(true and 'foo')"), "true");
    assert!(fails("(1 | 2).not()"));
}

#[test]
fn equality_and_dates() {
    assert_eq!(ev1("@2012-04-15 = @2012-04-15T10:00:00"), "");
    assert_eq!(ev1("@2012-04-15 ~ @2012-04-15T10:00:00"), "false");
    assert_eq!(
        ev1("@2017-11-05T01:30:00.0-04:00 = @2017-11-05T00:30:00.0-05:00"),
        "true"
    );
    assert_eq!(ev1("'a' ~ 'A'"), "true");
    assert_eq!(ev1("1.2 / 1.8 ~ 0.67"), "true");
    assert_eq!(ev1("4 'g' = 4000 'mg'"), "true");
    assert_eq!(ev1("@1973-12-25 + 7 days"), "@1974-01-01");
    assert_eq!(ev1("@2020-01-31 + 1 month"), "@2020-02-29");
    assert_eq!(
        ev1("@1973-12-25T00:00:00.000+10:00 + 1 hour"),
        "@1973-12-25T01:00:00.000+10:00"
    );
    assert!(fails("@1973-12-25 + 1 'mo'"));
    assert_eq!(ev1("name.given = name.given"), "true");
}

#[test]
#[cfg(feature = "r4-model")]
fn functions() {
    assert_eq!(ev1("'abc'.substring(1)"), "bc");
    assert_eq!(ev1("'abc'.replace('', 'x')"), "xaxbxcx");
    assert_eq!(ev1("'abc123'.replaceMatches('[0-9]', '-')"), "abc---");
    assert_eq!(ev1("'A,,C'.split(',').join('|')"), "A||C");
    assert_eq!(ev1("'test'.encode('base64').decode('base64')"), "test");
    assert_eq!(ev1("(3 | 1 | 2).sort()"), "1,2,3");
    assert_eq!(ev1("(1 | 2 | 3).aggregate($this + $total, 0)"), "6");
    assert_eq!(ev1("telecom.where(system = 'phone').value"), "0123");
    assert_eq!(
        ev1("telecom.select(iif(system = 'email', $index, {}))"),
        "1"
    );
    assert_eq!(ev1("1.587.lowBoundary(2)"), "1.58");
    assert_eq!(ev1("1.587.highBoundary(2)"), "1.59");
    assert_eq!(ev1("2.power(10)"), "1024");
    assert_eq!(ev1("16.log(2)"), "4");
    assert_eq!(ev1("'1 \\'mg\\''.toQuantity() = 1 'mg'"), "true");
    assert_eq!(ev1("children().count() > 5"), "true");
    assert_eq!(ev1("descendants().where($this is Identifier).count()"), "1");
    assert_eq!(ev1("1.type().name"), "Integer");
    assert_eq!(ev1("name.type().name.first()"), "HumanName");
}

#[test]
fn resolve_and_stubs() {
    assert_eq!(ev1("managingOrganization.resolve().name"), "Acme");
    assert_eq!(
        ev1("managingOrganization.resolve() is Organization"),
        "true"
    );
    assert_eq!(
        ev1("generalPractitioner.where(resolve() is Practitioner).count()"),
        "1"
    );
    assert_eq!(
        ev1("generalPractitioner.where(resolve() is Organization).count()"),
        "0"
    );
    // references into an enclosing Bundle
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "a", "gender": "female"}},
        {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Observation", "id": "o",
            "subject": {"reference": "urn:uuid:1"}, "performer": [{"reference": "Patient/a"}]}}]});
    let obs = &bundle["entry"][1]["resource"];
    let ctx = EvalContext::new().bundle(&bundle);
    let e = parse("subject.resolve().gender | performer.resolve().gender").unwrap();
    let r = evaluate(&e, obs, &ctx).unwrap();
    assert_eq!(
        r.iter().map(literal_repr).collect::<Vec<_>>(),
        vec!["female"]
    );
}

struct Vs;
impl TerminologyProvider for Vs {
    fn member_of(&self, value: &Json, _t: &str, vs: &str) -> Result<Option<bool>, String> {
        Ok(Some(
            vs.ends_with("administrative-gender") && value.as_str() == Some("male"),
        ))
    }
}

#[test]
fn callbacks_and_variables() {
    let p = patient();
    let vs = Vs;
    let ctx = EvalContext::new()
        .terminology(&vs)
        .string_variable("who", "Jim");
    let e =
        parse("gender.memberOf(%`vs-administrative-gender`) and name.given contains %who").unwrap();
    assert_eq!(evaluate_to_bool(&e, &p, &ctx).unwrap(), Some(true));
    let e = parse("gender.memberOf('http://x')").unwrap();
    assert!(
        evaluate(&e, &p, &EvalContext::new()).is_err(),
        "no terminology provider"
    );
    assert!(fails("%undefinedVariable"));
    assert_eq!(
        ev1("conformsTo('http://hl7.org/fhir/StructureDefinition/Patient')"),
        "true"
    );
    assert!(fails("conformsTo('http://trash')"));
}

#[test]
fn evaluate_on_element() {
    let p = patient();
    let e = parse("family.exists() or given.exists()").unwrap();
    let ctx = EvalContext::new();
    let r = evaluate_node(&e, &p["name"][1], "HumanName", &ctx).unwrap();
    assert_eq!(collection_to_bool(&r).unwrap(), Some(true));
}

#[test]
#[cfg(feature = "r4-model")]
fn strict_mode() {
    let p = patient();
    let ctx = EvalContext::new().strict(true);
    for bad in [
        "name.given1",
        "Encounter.name",
        "deceasedBoolean",
        "children().first()",
    ] {
        let e = parse(bad).unwrap();
        assert!(
            evaluate(&e, &p, &ctx).is_err(),
            "{} should fail in strict mode",
            bad
        );
    }
    let e = parse("deceased.exists()").unwrap();
    assert!(evaluate(&e, &p, &ctx).is_ok());
}

#[test]
fn deep_nesting_is_rejected_or_evaluated_without_overflow() {
    // long chains and deep nesting must not overflow the (2 MiB) test-thread stack
    let chain = vec!["1"; 20_000].join(" + ");
    assert!(parse(&chain).is_err());
    let members = "name".to_string() + &".given".repeat(20_000);
    assert!(parse(&members).is_err());
    let parens = "(".repeat(10_000) + "1" + &")".repeat(10_000);
    assert!(parse(&parens).is_err());
    // the deepest accepted expressions still evaluate
    let chain = vec!["1"; 100].join(" + ");
    assert_eq!(ev1(&chain), "100");
    let mut nested = String::from("true");
    for _ in 0..42 {
        nested = format!("true.where({}).exists()", nested);
    }
    assert_eq!(ev1(&nested), "true");
    let mut sel = String::from("$this");
    for _ in 0..95 {
        sel = format!("(1).select({})", sel);
    }
    assert_eq!(ev1(&sel), "1");
}

#[test]
fn repeat_terminates_on_cycles() {
    assert_eq!(ev1("(1 | 2).repeat($this)"), "1,2");
    assert_eq!(ev1("name.repeat('x')"), "x");
    let ctx = EvalContext::new().max_collection(1000);
    let e = parse("(1 | 2 | 3).select((1|2|3|4|5|6|7|8|9|10).select((1|2|3|4|5|6|7|8|9|10).select(1|2|3|4|5|6|7|8|9|10)))").unwrap();
    assert!(evaluate(&e, &patient(), &ctx).is_err());
}

/// Deterministic pseudo-random generator for the no-panic fuzz test.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

#[test]
fn random_expressions_never_panic() {
    const TOKS: &[&str] = &[
        "name",
        "given",
        "birthDate",
        "telecom",
        "value",
        "deceased",
        "Patient",
        "(",
        ")",
        "[",
        "]",
        ".",
        ",",
        "+",
        "-",
        "*",
        "/",
        "|",
        "&",
        "=",
        "!=",
        "~",
        "<",
        ">=",
        " and ",
        " or ",
        " xor ",
        " implies ",
        " is ",
        " as ",
        " in ",
        " contains ",
        " div ",
        " mod ",
        "1",
        "0",
        "-1",
        "2.5",
        "'a'",
        "''",
        "@2014",
        "@2014-01-01T10:00",
        "@T10:30",
        "{}",
        "true",
        "$this",
        "$index",
        "$total",
        "%resource",
        "%context",
        "5 'mg'",
        "3 days",
        "where(",
        "select(",
        "exists(",
        "all(",
        "repeat(",
        "first()",
        "last()",
        "tail()",
        "skip(",
        "take(",
        "count()",
        "distinct()",
        "iif(",
        "substring(",
        "indexOf(",
        "matches(",
        "replaceMatches(",
        "split(",
        "join(",
        "toString()",
        "toInteger()",
        "toDecimal()",
        "toQuantity(",
        "lowBoundary(",
        "highBoundary(",
        "precision()",
        "sort(",
        "aggregate(",
        "children()",
        "descendants()",
        "resolve()",
        "ofType(",
        "as(",
        "is(",
        "extension(",
        "hasValue()",
        "not()",
        "empty()",
        "power(",
        "round(",
        "sqrt()",
        "log(",
        "exp()",
        "combine(",
        "union(",
        "intersect(",
        "exclude(",
        "subsetOf(",
        "trace(",
        "type()",
        "encode(",
        "decode(",
        "Quantity",
        "string",
        "System.Integer",
        "FHIR.Patient",
        "'[0-9]+'",
        "'(('",
        "9223372036854775807",
        "99999999999999999999999999999999999999999",
        "0.0000000000000000000000000000001",
        "@2014-02-30",
    ];
    let p = patient();
    let ctx = EvalContext::new().max_collection(10_000);
    let mut rng = Lcg(0x5eed);
    let mut evaluated = 0;
    for _ in 0..20_000 {
        let n = 1 + rng.next() % 12;
        let mut src = String::new();
        for _ in 0..n {
            src.push_str(TOKS[rng.next() % TOKS.len()]);
        }
        if let Ok(e) = parse(&src) {
            evaluated += 1;
            let _ = evaluate(&e, &p, &ctx);
        }
    }
    assert!(
        evaluated > 100,
        "fuzz produced too few valid expressions ({})",
        evaluated
    );
}

#[test]
fn mutated_expressions_never_panic() {
    let seeds = [
        "Patient.name.where(use = 'official').given.first() & ' ' & name.family",
        "telecom.where(system = 'phone').value.matches('^[0-9 ]+$')",
        "(birthDate + 1 year).toString().substring(0, 4).toInteger() > 1900",
        "iif(deceased is boolean, deceased, deceased.exists())",
        "@2014-01-01T08.highBoundary(17) - 3 'h' > @2014-01-01",
    ];
    let p = patient();
    let ctx = EvalContext::new();
    let mut rng = Lcg(42);
    let alphabet: Vec<char> = "()[].,'`@%$ +-*/|&=<>~!0123456789aTZ:\\{}é"
        .chars()
        .collect();
    for seed in seeds {
        for _ in 0..2_000 {
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..(1 + rng.next() % 3) {
                let pos = rng.next() % (chars.len() + 1);
                match rng.next() % 3 {
                    0 if pos < chars.len() => {
                        chars.remove(pos);
                    }
                    _ => chars.insert(pos.min(chars.len()), alphabet[rng.next() % alphabet.len()]),
                }
            }
            let src: String = chars.into_iter().collect();
            if let Ok(e) = parse(&src) {
                let _ = evaluate(&e, &p, &ctx);
            }
        }
    }
}

#[test]
fn expr_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expr>();
    assert_send_sync::<Engine>();
}
