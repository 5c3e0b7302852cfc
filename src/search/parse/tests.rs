use super::*;

fn pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

const PAGING: Paging = Paging {
    default_count: 20,
    max_count: 1000,
};

fn check(ty: ResourceType, q: &str) -> Result<SearchQuery, SearchError> {
    parse(ty, &pairs(q), false, PAGING).map(|p| p.query)
}

#[test]
fn escaping_splits_only_on_unescaped_separators() {
    assert_eq!(split_escaped("a,b", ','), vec!["a", "b"]);
    assert_eq!(split_escaped(r"a\,b,c", ','), vec![r"a,b", "c"]);
    assert_eq!(split_escaped(r"s\|x|c", '|'), vec![r"s|x", "c"]);
    assert_eq!(unescape(r"a\$b\\c"), r"a$b\c");
}

#[test]
fn tokens_follow_system_code_rules() {
    assert_eq!(
        parse_token("http://x|123"),
        TokenValue {
            system: Some("http://x".into()),
            code: Some("123".into())
        }
    );
    assert_eq!(
        parse_token("|123"),
        TokenValue {
            system: Some(String::new()),
            code: Some("123".into())
        }
    );
    assert_eq!(
        parse_token("http://x|"),
        TokenValue {
            system: Some("http://x".into()),
            code: None
        }
    );
    assert_eq!(
        parse_token("123"),
        TokenValue {
            system: None,
            code: Some("123".into())
        }
    );
    // No prefix parsing on tokens: `ne123` is a code.
    assert_eq!(parse_token("ne123").code.as_deref(), Some("ne123"));
}

#[test]
fn repeated_parameters_are_and_commas_are_or() {
    let q = check(
        ResourceType::Appointment,
        "status=booked,pending&status=booked",
    )
    .unwrap();
    assert_eq!(q.predicates.len(), 2);
    match &q.predicates[0] {
        Predicate::Token { any_of, .. } => assert_eq!(any_of.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dates_take_prefixes_and_precision() {
    let q = check(
        ResourceType::Appointment,
        "date=ge2024-01&date=lt2024-02-01T10:00:00Z",
    )
    .unwrap();
    match &q.predicates[0] {
        Predicate::Date { any_of, .. } => {
            assert_eq!(any_of[0].prefix, Prefix::Ge);
            assert!(any_of[0].range.hi > any_of[0].range.lo);
        }
        other => panic!("{other:?}"),
    }
    assert!(check(ResourceType::Appointment, "date=2024-13-01").is_err());
    assert!(check(ResourceType::Appointment, "date=xx2024").is_err());
}

#[test]
fn references_accept_id_type_id_and_absolute() {
    for v in ["123", "Patient/123", "http://example.org/fhir/Patient/123"] {
        let q = check(ResourceType::MedicationRequest, &format!("patient={v}")).unwrap();
        match &q.predicates[0] {
            Predicate::Reference { any_of, .. } => assert_eq!(any_of[0].id, "123"),
            other => panic!("{other:?}"),
        }
    }
    assert!(check(ResourceType::MedicationRequest, "patient=Practitioner/1").is_err());
    assert!(check(ResourceType::MedicationRequest, "patient=a b").is_err());
}

#[test]
fn unknown_parameters_and_modifiers_are_rejected_in_strict_mode() {
    let e = check(ResourceType::Patient, "foo=bar").unwrap_err();
    assert_eq!(e.param, "foo");
    assert!(check(ResourceType::Patient, "identifier:text=x").is_err());
    assert!(check(ResourceType::Patient, "status=active").is_err());
    assert!(check(ResourceType::Patient, "_count=abc").is_err());
}

#[test]
fn lenient_mode_drops_and_warns() {
    let p = parse(
        ResourceType::Patient,
        &pairs("foo=bar&identifier=x|1"),
        true,
        PAGING,
    )
    .unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.applied, vec![("identifier".to_owned(), "x|1".to_owned())]);
}

#[test]
fn count_is_capped_and_format_params_are_ignored() {
    let q = check(
        ResourceType::Patient,
        "_count=5000&_format=json&_pretty=true",
    )
    .unwrap();
    assert_eq!(q.count, 1000);
    let q = check(ResourceType::Patient, "_summary=count").unwrap();
    assert_eq!(q.count, 0);
}
