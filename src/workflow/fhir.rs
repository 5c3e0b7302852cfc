//! Small readers of FHIR JSON shared by the workflows: references, codings,
//! extensions and date-times.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

/// The id of a literal reference `{ty}/{id}` (relative, absolute on any
/// base, or with `/_history/…`), `None` for another type or a contained one.
pub fn ref_id(reference: &Value, ty: &str) -> Option<String> {
    let r = reference.get("reference")?.as_str()?;
    let r = r.split("/_history/").next().unwrap_or(r);
    let mut parts = r.rsplit('/');
    let id = parts.next()?;
    let t = parts.next()?;
    (t == ty && !id.is_empty()).then(|| id.to_owned())
}

/// The NHS number and ODS code identifier systems.
pub const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const ODS_CODE: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// The values of `v.identifier` (a list, or one Identifier as in a
/// Reference) in `system`.
pub fn identifiers<'a>(v: &'a Value, system: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let list: &'a [Value] = match v.get("identifier") {
        Some(Value::Array(list)) => list,
        Some(one) => std::slice::from_ref(one),
        None => &[],
    };
    list.iter()
        .filter(move |i| i.get("system").and_then(Value::as_str) == Some(system))
        .filter_map(|i| i.get("value").and_then(Value::as_str))
}

/// The first value of `v.identifier` in `system`.
pub fn identifier<'a>(v: &'a Value, system: &'a str) -> Option<&'a str> {
    identifiers(v, system).next()
}

/// The ids of an Appointment's Patient participants.
pub fn participant_patients(v: &Value) -> Vec<String> {
    v.get("participant")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| ref_id(p.get("actor")?, "Patient"))
        .collect()
}

/// How a Patient's `generalPractitioner` names a practice, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// An identifier-only reference carrying the ODS code.
    Ods(String),
    /// A local Organization (which carries the ODS code).
    Organization(String),
}

/// The practices `patient.generalPractitioner` names, in order.
pub fn registered(patient: &Value) -> Vec<Registered> {
    patient
        .get("generalPractitioner")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|gp| match identifier(gp, ODS_CODE) {
            Some(ods) => Some(Registered::Ods(ods.to_owned())),
            None => ref_id(gp, "Organization").map(Registered::Organization),
        })
        .collect()
}

/// The ids of every `{ty}` reference in the array `field` of `v`.
pub fn ref_ids(v: &Value, field: &str, ty: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| ref_id(r, ty)).collect())
        .unwrap_or_default()
}

/// `system|code` of every coding of a CodeableConcept.
pub fn codings(cc: &Value) -> Vec<(String, String)> {
    cc.get("coding")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    Some((
                        c.get("system")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        c.get("code")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the CodeableConcept has a coding with this code (and system, when given).
pub fn has_code(cc: &Value, system: Option<&str>, code: &str) -> bool {
    codings(cc)
        .iter()
        .any(|(s, c)| c == code && system.is_none_or(|sys| sys == s))
}

/// The extensions of `v` with this url.
pub fn extensions<'a>(v: &'a Value, url: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    v.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| e.get("url").and_then(Value::as_str) == Some(url))
}

/// A FHIR `instant`, `dateTime` or `date` as the instant it starts at (UTC;
/// a date or a date-time without an offset is read as UTC).
pub fn instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    let d = match s.len() {
        4 => NaiveDate::parse_from_str(&format!("{s}-01-01"), "%Y-%m-%d").ok()?,
        7 => NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?,
        _ => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?,
    };
    Some(d.and_hms_opt(0, 0, 0)?.and_utc())
}

/// The instant `v[field]` names.
pub fn instant_at(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    instant(v.get(field)?.as_str()?)
}

/// The end of the period a FHIR `date`/`dateTime` denotes (a day's date
/// lasts until the next midnight): what an expiry date means.
pub fn until(s: &str) -> Option<DateTime<Utc>> {
    let start = instant(s)?;
    Some(match s.len() {
        4 => start + chrono::Months::new(12),
        7 => start + chrono::Months::new(1),
        10 => start + chrono::Duration::days(1),
        _ => start,
    })
}

/// `v` without the server-managed and narrative elements, for comparing
/// what a client changed.
pub fn comparable(v: &Value) -> serde_json::Map<String, Value> {
    let mut m = v.as_object().cloned().unwrap_or_default();
    for k in ["meta", "text", "id"] {
        m.remove(k);
    }
    m
}

/// The top-level elements that differ between `old` and `new`.
pub fn changed(old: &Value, new: &Value) -> Vec<String> {
    let (a, b) = (comparable(old), comparable(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_and_dates() {
        assert_eq!(
            ref_id(&json!({"reference": "Slot/a1"}), "Slot").as_deref(),
            Some("a1")
        );
        assert_eq!(
            ref_id(
                &json!({"reference": "https://x/fhir/Slot/a1/_history/2"}),
                "Slot"
            )
            .as_deref(),
            Some("a1")
        );
        assert_eq!(ref_id(&json!({"reference": "Patient/a1"}), "Slot"), None);
        assert_eq!(ref_id(&json!({"reference": "#c"}), "Slot"), None);
        assert!(instant("2026-12-02T10:00:00+01:00").is_some());
        assert!(instant("2026-12-02T10:00:00").is_some());
        assert_eq!(
            instant("2026-12-02").unwrap().to_rfc3339(),
            "2026-12-02T00:00:00+00:00"
        );
        assert_eq!(
            until("2026-12-02").unwrap().to_rfc3339(),
            "2026-12-03T00:00:00+00:00"
        );
        assert!(instant("soon").is_none());
        assert_eq!(
            changed(
                &json!({"id": "1", "a": 1, "b": 2}),
                &json!({"a": 1, "b": 3, "c": 1})
            ),
            vec!["b", "c"]
        );
    }
}
