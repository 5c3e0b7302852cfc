//! An independent oracle for search: the HL7 R4 examples of a set of types
//! are loaded into the server, and for each query the expected ids are
//! computed here by walking the raw example JSON with hand-written closures
//! (no use of the server's index code, parameter registry or FHIRPath), then
//! compared with what the server returns (following `next` links).
//!
//! The oracle's semantics are R4's: string = accent/case-insensitive
//! starts-with on any part; token = `[system|]code` on codes, Codings,
//! CodeableConcepts, Identifiers and booleans; dates = ranges with R4's prefix
//! definitions (eq: contained, gt/lt: extends beyond, ge/le: either, sa/eb: no
//! overlap); numbers = implicit precision; `:missing` = no searchable value.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate};
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::search_features::{enc, link, match_ids, relative};

const EXAMPLES_ENV: &str = "FHIRBRIDGE_R4_EXAMPLES_DIR";

/// The types loaded (every example file of each).
const TYPES: [&str; 11] = [
    "Patient",
    "Practitioner",
    "Organization",
    "Appointment",
    "MedicationRequest",
    "Observation",
    "Condition",
    "Encounter",
    "RiskAssessment",
    "Group",
    "Location",
];

backend_tests!(hl7_examples_search_oracle);

// --- the loaded data ---------------------------------------------------------------

struct Db {
    by_type: BTreeMap<String, Vec<Value>>,
    by_key: BTreeMap<(String, String), Value>,
}

impl Db {
    fn all(&self, ty: &str) -> &[Value] {
        self.by_type.get(ty).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The loaded resource a Reference points at.
    fn resolve(&self, reference: &Value) -> Option<&Value> {
        let (t, id) = ref_of(reference)?;
        self.by_key.get(&(t, id))
    }

    /// Resources of `ty` for which `f` holds.
    fn any_of<'a>(&'a self, ty: &str, f: impl Fn(&Value) -> bool + 'a) -> Vec<&'a Value> {
        self.all(ty).iter().filter(|r| f(r)).collect()
    }
}

fn load(dir: &str) -> Vec<Value> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{EXAMPLES_ENV}={dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((prefix, _)) = name.split_once('-') else {
            continue;
        };
        if !TYPES.contains(&prefix) || !name.ends_with(".json") {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if v["resourceType"] == prefix {
            out.push(v);
        }
    }
    out
}

// --- walking raw JSON ----------------------------------------------------------------

/// A value as a list (arrays flattened, absent = empty).
fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Null => vec![],
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

/// Every node reached by following `path` from `v`, flattening arrays.
fn at<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    let mut cur = vec![v];
    for key in path {
        cur = cur
            .into_iter()
            .flat_map(|n| items(n.get(*key).unwrap_or(&Value::Null)))
            .collect();
    }
    cur
}

fn strs(nodes: Vec<&Value>) -> Vec<String> {
    nodes
        .into_iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

/// Lower case without accents.
fn fold(s: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    s.nfd()
        .filter(|c| !is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase()
}

/// Every string part of the HumanNames at `path`.
fn name_parts(v: &Value, path: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for n in at(v, path) {
        for k in ["family", "given", "prefix", "suffix", "text"] {
            out.extend(strs(items(n.get(k).unwrap_or(&Value::Null))));
        }
    }
    out
}

fn starts(values: &[String], q: &str) -> bool {
    let q = fold(q);
    values.iter().any(|v| fold(v).starts_with(&q))
}

fn contains(values: &[String], q: &str) -> bool {
    let q = fold(q);
    values.iter().any(|v| fold(v).contains(&q))
}

type Tok = (Option<String>, String);

/// Token values of the nodes at `path`.
fn toks(v: &Value, path: &[&str]) -> Vec<Tok> {
    let mut out = Vec::new();
    let coding = |c: &Value, out: &mut Vec<Tok>| {
        if let Some(code) = c["code"].as_str() {
            out.push((c["system"].as_str().map(str::to_owned), code.to_owned()));
        }
    };
    for n in at(v, path) {
        match n {
            Value::String(s) => out.push((None, s.clone())),
            Value::Bool(b) => out.push((None, b.to_string())),
            Value::Object(o) if o.contains_key("coding") => {
                for c in items(&n["coding"]) {
                    coding(c, &mut out);
                }
            }
            Value::Object(o) if o.contains_key("code") => coding(n, &mut out),
            Value::Object(o) if o.contains_key("value") => {
                if let Some(val) = n["value"].as_str() {
                    out.push((n["system"].as_str().map(str::to_owned), val.to_owned()));
                }
            }
            _ => {}
        }
    }
    out
}

/// `[system|]code` against token values.
fn tok_match(values: &[Tok], q: &str) -> bool {
    let (system, code) = match q.split_once('|') {
        None => (None, Some(q)),
        Some((s, c)) => (Some(s), (!c.is_empty()).then_some(c)),
    };
    values.iter().any(|(vs, vc)| {
        code.is_none_or(|c| c == vc)
            && match system {
                None => true,
                Some("") => vs.is_none(),
                Some(s) => vs.as_deref() == Some(s),
            }
    })
}

/// Display texts a `:text` search looks at.
fn tok_texts(v: &Value, path: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for n in at(v, path) {
        out.extend(strs(vec![&n["text"]]));
        out.extend(strs(at(n, &["coding", "display"])));
    }
    out
}

/// A literal relative reference `Type/id[/_history/n]` → (type, id).
fn ref_of(r: &Value) -> Option<(String, String)> {
    let s = r["reference"].as_str()?;
    let s = s.split("/_history/").next()?;
    let (t, id) = s.split_once('/')?;
    if t.is_empty() || id.contains('/') || !t.chars().next()?.is_ascii_uppercase() {
        return None;
    }
    Some((t.to_owned(), id.to_owned()))
}

fn refs(v: &Value, path: &[&str]) -> Vec<(String, String)> {
    at(v, path).into_iter().filter_map(ref_of).collect()
}

/// `Type/id` or a bare id against references.
fn ref_match(values: &[(String, String)], q: &str) -> bool {
    let (t, id) = match q.split_once('/') {
        Some((t, id)) => (Some(t), id),
        None => (None, q),
    };
    values
        .iter()
        .any(|(vt, vid)| vid == id && t.is_none_or(|t| t == vt))
}

// --- dates ---------------------------------------------------------------------------

const DAY: i64 = 86_400_000;

fn day_ms(y: i32, m: u32, d: u32) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(y, m, d)?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The interval a date, dateTime or instant covers, in epoch ms (no timezone = UTC).
fn range(s: &str) -> Option<(i64, i64)> {
    match s.len() {
        4 => {
            let y: i32 = s.parse().ok()?;
            Some((day_ms(y, 1, 1)?, day_ms(y + 1, 1, 1)?))
        }
        7 => {
            let y: i32 = s[..4].parse().ok()?;
            let m: u32 = s[5..].parse().ok()?;
            let next = if m == 12 {
                day_ms(y + 1, 1, 1)?
            } else {
                day_ms(y, m + 1, 1)?
            };
            Some((day_ms(y, m, 1)?, next))
        }
        10 => {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            let lo = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
            Some((lo, lo + DAY))
        }
        _ => {
            let t = DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis();
            let width = if s.contains('.') { 1 } else { 1000 };
            Some((t, t + width))
        }
    }
}

/// Date ranges of the nodes at `path` (strings and Periods; open ends unbounded).
fn dates(v: &Value, path: &[&str]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for n in at(v, path) {
        match n {
            Value::String(s) => out.extend(range(s)),
            Value::Object(_) => {
                let lo = n["start"].as_str().and_then(range).map(|r| r.0);
                let hi = n["end"].as_str().and_then(range).map(|r| r.1);
                if lo.is_some() || hi.is_some() {
                    out.push((lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX)));
                }
            }
            _ => {}
        }
    }
    out
}

fn split_prefix(q: &str) -> (&str, &str) {
    let known = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];
    match q.get(..2) {
        Some(p) if known.contains(&p) => (p, &q[2..]),
        _ => ("eq", q),
    }
}

/// R4 prefix semantics between a target range and the searched range.
fn date_match(values: &[(i64, i64)], q: &str) -> bool {
    let (prefix, rest) = split_prefix(q);
    let (lo, hi) = range(rest).expect("oracle date");
    values.iter().any(|&(a, b)| {
        let eq = a >= lo && b <= hi;
        match prefix {
            "eq" => eq,
            "ne" => !eq,
            "gt" => b > hi,
            "lt" => a < lo,
            "ge" => b > hi || eq,
            "le" => a < lo || eq,
            "sa" => a >= hi,
            "eb" => b <= lo,
            _ => panic!("oracle has no {prefix} for dates"),
        }
    })
}

// --- numbers and quantities ----------------------------------------------------------------

fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.to_string().parse().ok())
}

/// R4 number semantics with the value's implicit precision.
fn num_match(values: &[f64], q: &str) -> bool {
    let (prefix, rest) = split_prefix(q);
    let x: f64 = rest.parse().expect("oracle number");
    let decimals = rest.split_once('.').map(|(_, f)| f.len()).unwrap_or(0) as i32;
    let half = 0.5 * 10f64.powi(-decimals);
    values.iter().any(|&v| match prefix {
        "eq" => v >= x - half && v < x + half,
        "ne" => !(v >= x - half && v < x + half),
        "gt" => v > x,
        "lt" => v < x,
        "ge" => v >= x,
        "le" => v <= x,
        "sa" => v >= x + half,
        "eb" => v < x - half,
        "ap" => (v - x).abs() <= (x.abs() * 0.1).max(2.0 * half),
        _ => unreachable!(),
    })
}

struct Qty {
    value: f64,
    system: Option<String>,
    code: Option<String>,
    unit: Option<String>,
}

fn quantities(v: &Value, path: &[&str]) -> Vec<Qty> {
    at(v, path)
        .into_iter()
        .filter_map(|n| {
            Some(Qty {
                value: number(n.get("value")?)?,
                system: n["system"].as_str().map(str::to_owned),
                code: n["code"].as_str().map(str::to_owned),
                unit: n["unit"].as_str().map(str::to_owned),
            })
        })
        .collect()
}

/// `[prefix]number[|system|code]`; with no system, the code may be the unit text.
fn qty_match(values: &[Qty], q: &str) -> bool {
    let parts: Vec<&str> = q.split('|').collect();
    let (num, system, code) = match parts.as_slice() {
        [n] => (*n, "", ""),
        [n, s, c] => (*n, *s, *c),
        _ => panic!("oracle quantity {q}"),
    };
    values.iter().any(|v| {
        num_match(&[v.value], num)
            && (system.is_empty() || v.system.as_deref() == Some(system))
            && (code.is_empty()
                || v.code.as_deref() == Some(code)
                || (system.is_empty() && v.unit.as_deref() == Some(code)))
    })
}

// --- the queries -----------------------------------------------------------------------------

type Pred = Box<dyn Fn(&Db, &Value) -> bool>;

struct Case {
    query: String,
    expect: Pred,
}

fn case(query: &str, f: impl Fn(&Db, &Value) -> bool + 'static) -> Case {
    Case {
        query: query.to_owned(),
        expect: Box::new(f),
    }
}

fn is_type(r: &(String, String), t: &str) -> bool {
    r.0 == t
}

/// The references of `path` to a loaded resource of type `t` that satisfies `f`.
fn chain(db: &Db, v: &Value, path: &[&str], t: &str, f: impl Fn(&Value) -> bool) -> bool {
    at(v, path)
        .into_iter()
        .any(|r| ref_of(r).is_some_and(|k| k.0 == t) && db.resolve(r).is_some_and(&f))
}

/// Whether some `source` resource refers to `v` through `path` and satisfies `f`.
fn has(db: &Db, v: &Value, source: &str, path: &[&str], f: impl Fn(&Value) -> bool) -> bool {
    let me = (
        v["resourceType"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    );
    !db.any_of(source, |s| refs(s, path).contains(&me) && f(s))
        .is_empty()
}

fn cases() -> Vec<Case> {
    let loinc = "http://loinc.org";
    let sct = "http://snomed.info/sct";
    let ucum = "http://unitsofmeasure.org";
    vec![
        // Patient: string
        case("Patient?family=donald", |_, p| {
            starts(&strs(at(p, &["name", "family"])), "donald")
        }),
        case("Patient?family=VAN", |_, p| {
            starts(&strs(at(p, &["name", "family"])), "van")
        }),
        case("Patient?name=peter", |_, p| starts(&name_parts(p, &["name"]), "peter")),
        case("Patient?given=jim,jacen", |_, p| {
            let g = strs(at(p, &["name", "given"]));
            starts(&g, "jim") || starts(&g, "jacen")
        }),
        case("Patient?family:exact=Solo", |_, p| {
            strs(at(p, &["name", "family"])).iter().any(|f| f == "Solo")
        }),
        case("Patient?family:contains=WOMAN", |_, p| {
            contains(&strs(at(p, &["name", "family"])), "woman")
        }),
        case("Patient?family=solo&given=leia", |_, p| {
            starts(&strs(at(p, &["name", "family"])), "solo")
                && starts(&strs(at(p, &["name", "given"])), "leia")
        }),
        // Patient: token
        case("Patient?gender=male", |_, p| p["gender"] == "male"),
        case("Patient?gender:not=male", |_, p| p["gender"] != "male"),
        case("Patient?gender:missing=true", |_, p| p.get("gender").is_none()),
        case("Patient?active=true", |_, p| p["active"] == true),
        case("Patient?deceased=true", |_, p| {
            p.get("deceasedDateTime").is_some() || p["deceasedBoolean"] == true
        }),
        case(
            "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345",
            |_, p| tok_match(&toks(p, &["identifier"]), "urn:oid:1.2.36.146.595.217.0.1|12345"),
        ),
        case("Patient?identifier=urn:oid:2.16.840.1.113883.2.4.6.3|", |_, p| {
            tok_match(&toks(p, &["identifier"]), "urn:oid:2.16.840.1.113883.2.4.6.3|")
        }),
        // Patient: date
        case("Patient?birthdate=1974-12-25", |_, p| {
            date_match(&dates(p, &["birthDate"]), "1974-12-25")
        }),
        case("Patient?birthdate=lt1960", |_, p| {
            date_match(&dates(p, &["birthDate"]), "lt1960")
        }),
        case("Patient?birthdate=ge2017-05-15", |_, p| {
            date_match(&dates(p, &["birthDate"]), "ge2017-05-15")
        }),
        case("Patient?birthdate=sa1970&birthdate=eb2000", |_, p| {
            let d = dates(p, &["birthDate"]);
            date_match(&d, "sa1970") && date_match(&d, "eb2000")
        }),
        case("Patient?birthdate=ne1932-09-24", |_, p| {
            date_match(&dates(p, &["birthDate"]), "ne1932-09-24")
        }),
        case("Patient?birthdate:missing=true", |_, p| p.get("birthDate").is_none()),
        // Patient: reference, chain, _has
        case("Patient?organization=Organization/1", |_, p| {
            ref_match(&refs(p, &["managingOrganization"]), "Organization/1")
        }),
        case("Patient?organization=hl7", |_, p| {
            ref_match(&refs(p, &["managingOrganization"]), "hl7")
        }),
        case("Patient?general-practitioner:missing=false", |_, p| {
            !refs(p, &["generalPractitioner"]).is_empty()
        }),
        case("Patient?organization.name=health", |db, p| {
            chain(db, p, &["managingOrganization"], "Organization", |o| {
                starts(&strs(at(o, &["name"])), "health")
                    || starts(&strs(at(o, &["alias"])), "health")
            })
        }),
        case(
            "Patient?_has:Observation:subject:code=http://loinc.org|85354-9",
            move |db, p| {
                has(db, p, "Observation", &["subject"], |o| {
                    tok_match(&toks(o, &["code"]), &format!("{loinc}|85354-9"))
                })
            },
        ),
        case(
            "Patient?_has:MedicationRequest:subject:status=active",
            |db, p| has(db, p, "MedicationRequest", &["subject"], |m| m["status"] == "active"),
        ),
        // Practitioner
        case("Practitioner?family=van", |_, p| {
            starts(&strs(at(p, &["name", "family"])), "van")
        }),
        case("Practitioner?gender=female", |_, p| p["gender"] == "female"),
        case("Practitioner?name=van den", |_, p| {
            starts(&name_parts(p, &["name"]), "van den")
        }),
        case("Practitioner?address-city=den", |_, p| {
            starts(&strs(at(p, &["address", "city"])), "den")
        }),
        case(
            "Practitioner?_has:Encounter:participant:status=finished",
            |db, p| {
                has(db, p, "Encounter", &["participant", "individual"], |e| {
                    e["status"] == "finished"
                })
            },
        ),
        // Organization
        case("Organization?name=burgers", |_, o| {
            starts(&strs(at(o, &["name"])), "burgers")
        }),
        case("Organization?name=abc", |_, o| {
            starts(&strs(at(o, &["name"])), "abc") || starts(&strs(at(o, &["alias"])), "abc")
        }),
        case(
            "Organization?name:exact=Burgers UMC Ear\\,Nose\\,Throat unit",
            |_, o| o["name"] == "Burgers UMC Ear,Nose,Throat unit",
        ),
        case("Organization?partof=f001", |_, o| {
            ref_match(&refs(o, &["partOf"]), "f001")
        }),
        case("Organization?partof:missing=true", |_, o| refs(o, &["partOf"]).is_empty()),
        case("Organization?active=true", |_, o| o["active"] == true),
        case("Organization?identifier=http://www.acme.org.au/units|", |_, o| {
            tok_match(&toks(o, &["identifier"]), "http://www.acme.org.au/units|")
        }),
        case("Organization?_has:Patient:organization:gender=female", |db, o| {
            has(db, o, "Patient", &["managingOrganization"], |p| p["gender"] == "female")
        }),
        case(
            "Organization?_has:Patient:organization:_has:Observation:subject:code=http://loinc.org|85354-9",
            move |db, o| {
                has(db, o, "Patient", &["managingOrganization"], |p| {
                    has(db, p, "Observation", &["subject"], |obs| {
                        tok_match(&toks(obs, &["code"]), &format!("{loinc}|85354-9"))
                    })
                })
            },
        ),
        // Appointment
        case("Appointment?date=2013-12-09", |_, a| {
            date_match(&dates(a, &["start"]), "2013-12-09")
        }),
        case("Appointment?date=gt2013-12-09T10:00:00Z", |_, a| {
            date_match(&dates(a, &["start"]), "gt2013-12-09T10:00:00Z")
        }),
        case("Appointment?date:missing=true", |_, a| a.get("start").is_none()),
        case("Appointment?actor=Practitioner/example", |_, a| {
            ref_match(&refs(a, &["participant", "actor"]), "Practitioner/example")
        }),
        case("Appointment?patient=example", |_, a| {
            refs(a, &["participant", "actor"])
                .iter()
                .any(|r| is_type(r, "Patient") && r.1 == "example")
        }),
        case("Appointment?location=1", |_, a| {
            refs(a, &["participant", "actor"])
                .iter()
                .any(|r| is_type(r, "Location") && r.1 == "1")
        }),
        case("Appointment?practitioner.family=maas", |db, a| {
            chain(db, a, &["participant", "actor"], "Practitioner", |p| {
                starts(&strs(at(p, &["name", "family"])), "maas")
            })
        }),
        case("Appointment?status=proposed,booked", |_, a| {
            a["status"] == "proposed" || a["status"] == "booked"
        }),
        case("Appointment?part-status=needs-action", |_, a| {
            at(a, &["participant", "status"])
                .iter()
                .any(|s| *s == "needs-action")
        }),
        // MedicationRequest
        case("MedicationRequest?status=on-hold", |_, m| m["status"] == "on-hold"),
        case("MedicationRequest?status:not=active", |_, m| m["status"] != "active"),
        case(
            "MedicationRequest?code=http://www.nlm.nih.gov/research/umls/rxnorm|884308",
            |_, m| {
                tok_match(
                    &toks(m, &["medicationCodeableConcept"]),
                    "http://www.nlm.nih.gov/research/umls/rxnorm|884308",
                )
            },
        ),
        case("MedicationRequest?code:text=azithro", |_, m| {
            starts(&tok_texts(m, &["medicationCodeableConcept"]), "azithro")
        }),
        case("MedicationRequest?authoredon=2015-03-01", |_, m| {
            date_match(&dates(m, &["authoredOn"]), "2015-03-01")
        }),
        case("MedicationRequest?authoredon=lt2015-02", |_, m| {
            date_match(&dates(m, &["authoredOn"]), "lt2015-02")
        }),
        case("MedicationRequest?encounter=f001", |_, m| {
            ref_match(&refs(m, &["encounter"]), "f001")
        }),
        case("MedicationRequest?encounter:missing=true", |_, m| {
            refs(m, &["encounter"]).is_empty()
        }),
        case("MedicationRequest?priority:missing=false", |_, m| {
            m.get("priority").is_some()
        }),
        case(
            "MedicationRequest?identifier=http://www.bmc.nl/portal/prescriptions|12345",
            |_, m| {
                tok_match(
                    &toks(m, &["identifier"]),
                    "http://www.bmc.nl/portal/prescriptions|12345",
                )
            },
        ),
        case("MedicationRequest?requester:Practitioner.family=heps", |db, m| {
            chain(db, m, &["requester"], "Practitioner", |p| {
                starts(&strs(at(p, &["name", "family"])), "heps")
            })
        }),
        case("MedicationRequest?encounter.status=finished", |db, m| {
            chain(db, m, &["encounter"], "Encounter", |e| e["status"] == "finished")
        }),
        case(
            "MedicationRequest?encounter.service-provider.name=burgers",
            |db, m| {
                chain(db, m, &["encounter"], "Encounter", |e| {
                    chain(db, e, &["serviceProvider"], "Organization", |o| {
                        starts(&strs(at(o, &["name"])), "burgers")
                    })
                })
            },
        ),
        case(
            "MedicationRequest?encounter.participant.name=voigt&status=active",
            |db, m| {
                m["status"] == "active"
                    && chain(db, m, &["encounter"], "Encounter", |e| {
                        chain(db, e, &["participant", "individual"], "Practitioner", |p| {
                            starts(&name_parts(p, &["name"]), "voigt")
                        })
                    })
            },
        ),
        // Observation
        case("Observation?code=http://loinc.org|8302-2", move |_, o| {
            tok_match(&toks(o, &["code"]), &format!("{loinc}|8302-2"))
        }),
        case("Observation?code=85354-9,9279-1", |_, o| {
            let t = toks(o, &["code"]);
            tok_match(&t, "85354-9") || tok_match(&t, "9279-1")
        }),
        case("Observation?code:not=http://loinc.org|", move |_, o| {
            !tok_match(&toks(o, &["code"]), &format!("{loinc}|"))
        }),
        case("Observation?code:text=blood", |_, o| {
            starts(&tok_texts(o, &["code"]), "blood")
        }),
        case("Observation?code:missing=true", |_, o| toks(o, &["code"]).is_empty()),
        case("Observation?component-code=http://loinc.org|8480-6", move |_, o| {
            tok_match(&toks(o, &["component", "code"]), &format!("{loinc}|8480-6"))
        }),
        case("Observation?category=vital-signs", |_, o| {
            tok_match(&toks(o, &["category"]), "vital-signs")
        }),
        case("Observation?status:not=final", |_, o| o["status"] != "final"),
        case("Observation?value-quantity=lt10", |_, o| {
            qty_match(&quantities(o, &["valueQuantity"]), "lt10")
        }),
        case(
            "Observation?value-quantity=16.2|http://unitsofmeasure.org|kg/m2",
            move |_, o| {
                qty_match(
                    &quantities(o, &["valueQuantity"]),
                    &format!("16.2|{ucum}|kg/m2"),
                )
            },
        ),
        case("Observation?value-quantity=gt5||mmol/L", |_, o| {
            qty_match(&quantities(o, &["valueQuantity"]), "gt5||mmol/L")
        }),
        case(
            "Observation?value-quantity=ap10|http://unitsofmeasure.org|{score}",
            move |_, o| {
                qty_match(
                    &quantities(o, &["valueQuantity"]),
                    &format!("ap10|{ucum}|{{score}}"),
                )
            },
        ),
        case("Observation?value-quantity=ne13", |_, o| {
            qty_match(&quantities(o, &["valueQuantity"]), "ne13")
        }),
        case("Observation?date=1999-07-02", |_, o| {
            date_match(&effective(o), "1999-07-02")
        }),
        case("Observation?date=ge2018-01-01", |_, o| {
            date_match(&effective(o), "ge2018-01-01")
        }),
        case("Observation?date=2013-04", |_, o| date_match(&effective(o), "2013-04")),
        case("Observation?date=lt2013-04-02T09:00:00Z", |_, o| {
            date_match(&effective(o), "lt2013-04-02T09:00:00Z")
        }),
        case("Observation?date=le2014-12-05T08:30:10Z", |_, o| {
            date_match(&effective(o), "le2014-12-05T08:30:10Z")
        }),
        case("Observation?date=2017-05-03T19:54:26Z", |_, o| {
            date_match(&effective(o), "2017-05-03T19:54:26Z")
        }),
        case("Observation?subject=Patient/example", |_, o| {
            ref_match(&refs(o, &["subject"]), "Patient/example")
        }),
        case("Observation?patient=f001", |_, o| {
            refs(o, &["subject"])
                .iter()
                .any(|r| is_type(r, "Patient") && r.1 == "f001")
        }),
        case("Observation?subject:Group=herd1", |_, o| {
            ref_match(&refs(o, &["subject"]), "Group/herd1")
        }),
        // Only R4's target types count (Observation/clinical-gender names an
        // Encounter as performer, which R4 does not allow).
        case("Observation?performer:missing=true", |_, o| {
            const TARGETS: [&str; 6] = [
                "CareTeam",
                "Organization",
                "Patient",
                "Practitioner",
                "PractitionerRole",
                "RelatedPerson",
            ];
            !refs(o, &["performer"])
                .iter()
                .any(|r| TARGETS.contains(&r.0.as_str()))
        }),
        case("Observation?performer:Practitioner.family=careful", |db, o| {
            chain(db, o, &["performer"], "Practitioner", |p| {
                starts(&strs(at(p, &["name", "family"])), "careful")
            })
        }),
        case("Observation?subject:Patient.gender=female", |db, o| {
            chain(db, o, &["subject"], "Patient", |p| p["gender"] == "female")
        }),
        case("Observation?has-member:missing=false", |_, o| {
            !refs(o, &["hasMember"]).is_empty()
        }),
        case("Observation?_has:Observation:has-member:status=final", |db, o| {
            has(db, o, "Observation", &["hasMember"], |p| p["status"] == "final")
        }),
        // Condition
        case("Condition?clinical-status=active", |_, c| {
            tok_match(&toks(c, &["clinicalStatus"]), "active")
        }),
        case("Condition?onset-date=lt2012", |_, c| {
            date_match(&dates(c, &["onsetDateTime"]), "lt2012")
        }),
        case("Condition?severity=http://snomed.info/sct|24484000", move |_, c| {
            tok_match(&toks(c, &["severity"]), &format!("{sct}|24484000"))
        }),
        case("Condition?subject=Patient/f201", |_, c| {
            ref_match(&refs(c, &["subject"]), "Patient/f201")
        }),
        case("Condition?asserter:Practitioner=f201", |_, c| {
            ref_match(&refs(c, &["asserter"]), "Practitioner/f201")
        }),
        case("Condition?code:not=http://snomed.info/sct|368009", move |_, c| {
            !tok_match(&toks(c, &["code"]), &format!("{sct}|368009"))
        }),
        case("Condition?recorded-date:missing=true", |_, c| {
            c.get("recordedDate").is_none()
        }),
        case("Condition?onset-age=52|http://unitsofmeasure.org|a", move |_, c| {
            qty_match(&quantities(c, &["onsetAge"]), &format!("52|{ucum}|a"))
        }),
        case("Condition?subject.family=bor", |db, c| {
            chain(db, c, &["subject"], "Patient", |p| {
                starts(&strs(at(p, &["name", "family"])), "bor")
            })
        }),
        // Encounter
        case(
            "Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB",
            |_, e| {
                tok_match(
                    &toks(e, &["class"]),
                    "http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB",
                )
            },
        ),
        case("Encounter?length=gt100|http://unitsofmeasure.org|min", move |_, e| {
            qty_match(&quantities(e, &["length"]), &format!("gt100|{ucum}|min"))
        }),
        case("Encounter?length=56", |_, e| {
            qty_match(&quantities(e, &["length"]), "56")
        }),
        case("Encounter?date=2015-01-17", |_, e| {
            date_match(&dates(e, &["period"]), "2015-01-17")
        }),
        case("Encounter?date=ge2017", |_, e| {
            date_match(&dates(e, &["period"]), "ge2017")
        }),
        case("Encounter?date=lt2017-02-01", |_, e| {
            date_match(&dates(e, &["period"]), "lt2017-02-01")
        }),
        case("Encounter?date=2017-01-31", |_, e| {
            date_match(&dates(e, &["period"]), "2017-01-31")
        }),
        case("Encounter?service-provider.name=burgers", |db, e| {
            chain(db, e, &["serviceProvider"], "Organization", |o| {
                starts(&strs(at(o, &["name"])), "burgers")
            })
        }),
        case("Encounter?participant.family=voigt", |db, e| {
            chain(db, e, &["participant", "individual"], "Practitioner", |p| {
                starts(&strs(at(p, &["name", "family"])), "voigt")
            })
        }),
        case("Encounter?_has:MedicationRequest:encounter:status=active", |db, e| {
            has(db, e, "MedicationRequest", &["encounter"], |m| m["status"] == "active")
        }),
        case("Encounter?status=finished&class=AMB", |_, e| {
            e["status"] == "finished" && tok_match(&toks(e, &["class"]), "AMB")
        }),
        // RiskAssessment: number
        case("RiskAssessment?probability=gt0.001", |_, r| {
            num_match(&probabilities(r), "gt0.001")
        }),
        case("RiskAssessment?probability=0.02", |_, r| {
            num_match(&probabilities(r), "0.02")
        }),
        case("RiskAssessment?probability=lt0.0002", |_, r| {
            num_match(&probabilities(r), "lt0.0002")
        }),
        case("RiskAssessment?probability=0.000368", |_, r| {
            num_match(&probabilities(r), "0.000368")
        }),
        case("RiskAssessment?probability:missing=true", |_, r| {
            probabilities(r).is_empty()
        }),
        case("RiskAssessment?risk=moderate", |_, r| {
            tok_match(&toks(r, &["prediction", "qualitativeRisk"]), "moderate")
        }),
    ]
}

/// Observation.effective[x] as date ranges.
fn effective(o: &Value) -> Vec<(i64, i64)> {
    let mut d = dates(o, &["effectiveDateTime"]);
    d.extend(dates(o, &["effectivePeriod"]));
    d.extend(dates(o, &["effectiveInstant"]));
    d
}

fn probabilities(r: &Value) -> Vec<f64> {
    at(r, &["prediction", "probabilityDecimal"])
        .into_iter()
        .filter_map(number)
        .collect()
}

// --- the test ------------------------------------------------------------------------------------

async fn server_ids(app: &TestApp, query: &str) -> Result<Vec<String>, String> {
    let sep = if query.contains('?') { '&' } else { '?' };
    let mut url = enc(&format!("/fhir/{query}{sep}_count=500"));
    let mut out = Vec::new();
    for _ in 0..50 {
        let r = app.get(&url).await;
        if r.status != 200 {
            return Err(format!("HTTP {}: {}", r.status, r.text()));
        }
        let b = r.json();
        out.extend(match_ids(&b));
        match link(&b, "next") {
            Some(n) => url = relative(&n),
            None => return Ok(out),
        }
    }
    Err("runaway paging".into())
}

async fn hl7_examples_search_oracle(app: TestApp) {
    let Ok(dir) = std::env::var(EXAMPLES_ENV) else {
        eprintln!("skipping the HL7 examples search oracle: {EXAMPLES_ENV} is not set");
        return;
    };
    let examples = load(&dir);
    let mut db = Db {
        by_type: BTreeMap::new(),
        by_key: BTreeMap::new(),
    };
    for ex in examples {
        let ty = ex["resourceType"].as_str().unwrap().to_owned();
        let id = ex["id"].as_str().unwrap().to_owned();
        let r = app.put(&format!("/fhir/{ty}/{id}"), &ex).await;
        assert!(
            r.status == 200 || r.status == 201,
            "PUT {ty}/{id}: {} {}",
            r.status,
            r.text()
        );
        db.by_key.insert((ty.clone(), id), ex.clone());
        db.by_type.entry(ty).or_default().push(ex);
    }
    for t in TYPES {
        assert!(!db.all(t).is_empty(), "no {t} examples in {dir}");
    }
    let loaded: usize = db.by_type.values().map(Vec::len).sum();

    let cases = cases();
    let mut failures = Vec::new();
    let mut matched = 0;
    let mut non_trivial = 0;
    for c in &cases {
        let ty = c.query.split('?').next().unwrap();
        let all = db.all(ty);
        let want: BTreeSet<String> = all
            .iter()
            .filter(|r| (c.expect)(&db, r))
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        if !want.is_empty() && want.len() < all.len() {
            non_trivial += 1;
        }
        match server_ids(&app, &c.query).await {
            Err(e) => failures.push(format!("{}: {e}", c.query)),
            Ok(got) => {
                let got_set: BTreeSet<String> = got.iter().cloned().collect();
                if got_set.len() != got.len() {
                    failures.push(format!("{}: duplicate ids {got:?}", c.query));
                } else if got_set != want {
                    failures.push(format!(
                        "{}: missing {:?}, unexpected {:?}",
                        c.query,
                        want.difference(&got_set).collect::<Vec<_>>(),
                        got_set.difference(&want).collect::<Vec<_>>()
                    ));
                } else {
                    matched += want.len();
                }
            }
        }
    }
    eprintln!(
        "search oracle ({}): {} examples loaded, {} queries, {} agree ({} with a non-trivial result), {} matching resources checked",
        app.backend,
        loaded,
        cases.len(),
        cases.len() - failures.len(),
        non_trivial,
        matched
    );
    assert!(cases.len() >= 40);
    assert!(
        non_trivial * 10 >= cases.len() * 8,
        "too many queries with an empty or everything result: {non_trivial} of {}",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} queries disagree with the oracle:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
