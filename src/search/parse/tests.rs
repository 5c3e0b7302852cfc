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

fn opts(lenient: bool) -> Options<'static> {
    Options {
        lenient,
        paging: PAGING,
        base_url: "http://localhost:8080/fhir",
    }
}

fn check(ty: ResourceType, q: &str) -> Result<SearchQuery, SearchError> {
    parse(ty, &pairs(q), opts(false)).map(|p| p.query)
}

fn test_of(p: &Predicate) -> &Test {
    match p {
        Predicate::Index { test, .. } => test,
        other => panic!("not an index predicate: {other:?}"),
    }
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
    match test_of(&q.predicates[0]) {
        Test::Token(v) => assert_eq!(v.len(), 2),
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
    match test_of(&q.predicates[0]) {
        Test::Date(v) => {
            assert_eq!(v[0].prefix, Prefix::Ge);
            assert!(v[0].range.hi > v[0].range.lo);
        }
        other => panic!("{other:?}"),
    }
    assert!(check(ResourceType::Appointment, "date=2024-13-01").is_err());
    assert!(check(ResourceType::Appointment, "date=xx2024").is_err());
    assert!(check(ResourceType::Appointment, "date=2024-02-30").is_err());
}

#[test]
fn numbers_carry_their_precision() {
    let n = parse_number_value("p", "100").unwrap();
    assert_eq!((n.lo, n.hi), (99.5, 100.5));
    let n = parse_number_value("p", "ge1.50").unwrap();
    assert_eq!(n.prefix, Prefix::Ge);
    assert!((n.lo - 1.495).abs() < 1e-9 && (n.hi - 1.505).abs() < 1e-9);
    let n = parse_number_value("p", "1e2").unwrap();
    assert_eq!((n.lo, n.hi), (50.0, 150.0));
    assert!(parse_number_value("p", "abc").is_err());
    assert!(parse_number_value("p", "NaN").is_err());
    assert!(parse_number_value("p", "inf").is_err());
}

#[test]
fn references_accept_id_type_id_and_absolute() {
    for v in [
        "123",
        "Patient/123",
        "http://localhost:8080/fhir/Patient/123",
        "Patient/123/_history/2",
    ] {
        let q = check(ResourceType::MedicationRequest, &format!("patient={v}")).unwrap();
        match test_of(&q.predicates[0]) {
            Test::Reference(r) => {
                assert_eq!(r[0].id, "123");
                assert!(!r[0].url);
            }
            other => panic!("{other:?}"),
        }
    }
    // Another server's URL is matched verbatim.
    let q = check(
        ResourceType::MedicationRequest,
        "subject=http://elsewhere.org/fhir/Patient/9",
    )
    .unwrap();
    match test_of(&q.predicates[0]) {
        Test::Reference(r) => assert!(r[0].url),
        other => panic!("{other:?}"),
    }
    assert!(check(ResourceType::MedicationRequest, "patient=Practitioner/1").is_err());
    assert!(check(ResourceType::MedicationRequest, "patient=a b").is_err());
    assert!(check(ResourceType::MedicationRequest, "subject:Patient=1").is_ok());
    assert!(check(ResourceType::MedicationRequest, "subject:Practitioner=1").is_err());
    assert!(check(
        ResourceType::MedicationRequest,
        "requester:identifier=urn:x|1"
    )
    .is_ok());
}

#[test]
fn modifiers_are_checked_per_type() {
    for ok in [
        "family:exact=Smith",
        "family:contains=mit",
        "identifier:not=x|1",
        "gender:text=male",
        "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|123",
        "birthdate:missing=true",
        "_profile:below=https://fhir.hl7.org.uk",
    ] {
        assert!(check(ResourceType::Patient, ok).is_ok(), "{ok}");
    }
    for bad in [
        "family:not=x",
        "birthdate:exact=2020",
        "gender:contains=m",
        "identifier:of-type=MR|123",
        "birthdate:missing=maybe",
        "family:foo=x",
        "gender:above=x",
    ] {
        assert!(check(ResourceType::Patient, bad).is_err(), "{bad}");
    }
}

#[test]
fn chains_and_has_resolve_through_reference_parameters() {
    let q = check(
        ResourceType::MedicationRequest,
        "subject:Patient.family=smith",
    )
    .unwrap();
    match &q.predicates[0] {
        Predicate::Chain { targets, .. } => assert_eq!(targets[0].0, ResourceType::Patient),
        other => panic!("{other:?}"),
    }
    assert!(check(
        ResourceType::MedicationRequest,
        "patient.general-practitioner.name=jones"
    )
    .is_ok());
    assert!(check(ResourceType::MedicationRequest, "status.family=x").is_err());
    assert!(check(ResourceType::MedicationRequest, "patient.nonsense=x").is_err());
    let q = check(
        ResourceType::Patient,
        "_has:MedicationRequest:subject:status=active",
    )
    .unwrap();
    assert!(matches!(q.predicates[0], Predicate::Has { .. }));
    assert!(check(
        ResourceType::Patient,
        "_has:MedicationRequest:status:status=x"
    )
    .is_err());
    // Depth is bounded.
    assert!(check(
        ResourceType::MedicationRequest,
        "patient.organization.partof.partof.partof.name=x"
    )
    .is_err());
}

#[test]
fn result_parameters() {
    let p = parse(
        ResourceType::MedicationRequest,
        &pairs("_sort=-authoredon,_id&_include=MedicationRequest:patient&_revinclude=Provenance:target&_elements=status,subject&_total=none&_summary=data"),
        opts(false),
    )
    .unwrap();
    assert_eq!(p.query.sort.len(), 2);
    assert!(p.query.sort[0].descending);
    assert_eq!(p.query.include.len(), 1);
    assert_eq!(p.query.revinclude.len(), 1);
    assert_eq!(p.elements.as_deref().map(<[String]>::len), Some(2));
    assert_eq!(p.query.total, TotalMode::None);
    assert_eq!(p.summary, Some(Summary::Data));
    for bad in [
        "_sort=nonsense",
        "_include=Patient:organization",
        "_include=MedicationRequest:status",
        "_elements=nonsense",
        "_summary=maybe",
        "_total=some",
        "_text=x",
        "_cursor=!!",
    ] {
        assert!(
            check(ResourceType::MedicationRequest, bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn cursors_round_trip() {
    let c = Cursor {
        backwards: true,
        keys: vec![
            KeyValue::Text("smith".into()),
            KeyValue::Null,
            KeyValue::Int(-5),
            KeyValue::Real(1.25),
        ],
        id: "abc-1".into(),
    };
    assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
    assert_eq!(decode_cursor("not base64!"), None);
}

#[test]
fn unknown_parameters_are_rejected_in_strict_mode() {
    let e = check(ResourceType::Patient, "foo=bar").unwrap_err();
    assert_eq!(e.param, "foo");
    assert!(check(ResourceType::Patient, "status=active").is_err());
    assert!(check(ResourceType::Patient, "phonetic=smith").is_err());
    assert!(check(ResourceType::Patient, "_count=abc").is_err());
}

#[test]
fn lenient_mode_drops_and_warns() {
    let p = parse(
        ResourceType::Patient,
        &pairs("foo=bar&identifier=x|1"),
        opts(true),
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

#[test]
fn errors_inside_chains_name_the_whole_parameter() {
    let e = check(
        ResourceType::MedicationRequest,
        "patient.organization.partof.partof.name=x",
    )
    .unwrap_err();
    assert_eq!(e.param, "patient.organization.partof.partof.name");
    let e = check(
        ResourceType::MedicationRequest,
        "subject:Patient.family:foo=x",
    )
    .unwrap_err();
    assert_eq!(e.param, "subject:Patient.family:foo");
    let e = check(ResourceType::Patient, "_has:Observation:subject:code:foo=x").unwrap_err();
    assert_eq!(e.param, "_has:Observation:subject:code:foo");
}

#[test]
fn cursors_must_fit_the_sort() {
    let text = encode_cursor(&Cursor {
        backwards: false,
        keys: vec![KeyValue::Text("smith".into())],
        id: "a".into(),
    });
    let int = encode_cursor(&Cursor {
        backwards: false,
        keys: vec![KeyValue::Int(5)],
        id: "a".into(),
    });
    let null = encode_cursor(&Cursor {
        backwards: true,
        keys: vec![KeyValue::Null],
        id: "a".into(),
    });
    assert!(check(
        ResourceType::Patient,
        &format!("_sort=family&_cursor={text}")
    )
    .is_ok());
    assert!(check(
        ResourceType::Patient,
        &format!("_sort=birthdate&_cursor={int}")
    )
    .is_ok());
    assert!(check(
        ResourceType::Patient,
        &format!("_sort=birthdate&_cursor={null}")
    )
    .is_ok());
    for bad in [
        format!("_sort=birthdate&_cursor={text}"),
        format!("_sort=family&_cursor={int}"),
        format!("_cursor={text}"),
        format!("_sort=family,given&_cursor={text}"),
    ] {
        let e = check(ResourceType::Patient, &bad).unwrap_err();
        assert_eq!(e.param, "_cursor", "{bad}");
    }
    // Lenient: the cursor is dropped (first page) with a warning.
    let p = parse(
        ResourceType::Patient,
        &pairs(&format!("_sort=birthdate&_cursor={text}")),
        opts(true),
    )
    .unwrap();
    assert!(p.query.cursor.is_none());
    assert_eq!(p.warnings.len(), 1);
}
