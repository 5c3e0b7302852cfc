//! Search for free slots
//! (`pages/appointments/appointments_use_case_search_for_free_slots.md`).

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::outcome::GpcError;
use super::store::{SlotRec, Store};
use super::time::{parse_date, parse_offset_datetime, uk_midnight};
use super::{searchset, Reply};

/// The longest `start`..`end` window a consumer may ask for.
pub const MAX_WINDOW_DAYS: i64 = 14;

/// A `start`/`end` bound: a whole UK date or an instant.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    Date(chrono::NaiveDate),
    Instant(DateTime<Utc>),
}

fn parse_bound(name: &str, raw: &str, prefix: &str) -> Result<Bound, GpcError> {
    let Some(value) = raw.strip_prefix(prefix) else {
        return Err(GpcError::invalid_parameter(format!(
            "{name}={raw}: the {name} parameter needs the {prefix} prefix"
        )));
    };
    if let Some(d) = parse_date(value) {
        return Ok(Bound::Date(d));
    }
    if let Some(t) = parse_offset_datetime(value) {
        return Ok(Bound::Instant(t));
    }
    Err(GpcError::invalid_parameter(format!(
        "{name}={raw}: not a date (yyyy-mm-dd) or dateTime (yyyy-mm-ddThh:mm:ss+hh:mm)"
    )))
}

/// The validated search: the window and which includes were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotQuery {
    /// Slots starting at or after this instant.
    pub from: DateTime<Utc>,
    /// Slots ending at or before this instant.
    pub to: DateTime<Utc>,
    pub practitioners: bool,
    pub locations: bool,
}

/// Validates the parameters by the spec's rules: `status=free`, `start`
/// (`ge`) and `end` (`le`) once each, `_include=Slot:schedule`, a window of
/// 0 to 14 days; missing parameters are 400 `BAD_REQUEST`, bad values 422
/// `INVALID_PARAMETER`. `searchFilter` and unknown parameters are accepted
/// and ignored (no slot is restricted by booking organisation).
pub fn parse_query(query: &[(String, String)]) -> Result<SlotQuery, GpcError> {
    let values = |name: &str| -> Vec<&str> {
        query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |name: &str| -> Result<&str, GpcError> {
        match values(name).as_slice() {
            [] => Err(GpcError::bad_request(format!(
                "the {name} parameter is required"
            ))),
            [v] => Ok(*v),
            _ => Err(GpcError::invalid_parameter(format!(
                "the {name} parameter may only be given once"
            ))),
        }
    };
    let status = one("status")?;
    if status != "free" {
        return Err(GpcError::invalid_parameter(format!(
            "status={status}: only status=free may be searched"
        )));
    }
    let start = parse_bound("start", one("start")?, "ge")?;
    let end = parse_bound("end", one("end")?, "le")?;
    if !values("_include").contains(&"Slot:schedule") {
        return Err(GpcError::bad_request(
            "the _include=Slot:schedule parameter is required",
        ));
    }
    let from = match start {
        Bound::Date(d) => uk_midnight(d),
        Bound::Instant(t) => t,
    };
    // The window is measured between the two values as given (whole dates
    // from midnight to midnight); the end of an `le` date is its last instant.
    let (window_end, to) = match end {
        Bound::Date(d) => (uk_midnight(d), uk_midnight(d + TimeDelta::days(1))),
        Bound::Instant(t) => (t, t),
    };
    let window = window_end - from;
    if window < TimeDelta::zero() {
        return Err(GpcError::invalid_parameter(
            "the end of the search period is before its start",
        ));
    }
    if window > TimeDelta::days(MAX_WINDOW_DAYS) {
        return Err(GpcError::invalid_parameter(format!(
            "the search period is longer than {MAX_WINDOW_DAYS} days"
        )));
    }
    let recurse = values("_include:recurse");
    Ok(SlotQuery {
        from,
        to,
        practitioners: recurse.contains(&"Schedule:actor:Practitioner"),
        locations: recurse.contains(&"Schedule:actor:Location"),
    })
}

/// The free slots inside the window, earliest first.
pub fn matching<'a>(store: &'a Store, q: &SlotQuery) -> Vec<&'a SlotRec> {
    let mut found: Vec<&SlotRec> = store
        .slots
        .values()
        .filter(|s| s.free && s.start >= q.from && s.end <= q.to)
        .collect();
    found.sort_by(|a, b| (a.start, &a.schedule).cmp(&(b.start, &b.schedule)));
    found
}

/// The searchset: Slots, their Schedules, the Practitioners and Locations
/// when asked for, and always the practice Organizations.
pub fn search(store: &Store, query: &[(String, String)], base: &str) -> Result<Reply, GpcError> {
    let q = parse_query(query)?;
    let slots = matching(store, &q);
    let mut schedules: Vec<&str> = slots.iter().map(|s| s.schedule.as_str()).collect();
    schedules.sort_unstable();
    schedules.dedup();
    let mut includes: Vec<Value> = Vec::new();
    let mut practitioners = Vec::new();
    let mut locations = Vec::new();
    let mut organizations = Vec::new();
    for id in &schedules {
        let Some(schedule) = store.get("Schedule", id) else {
            continue;
        };
        includes.push(schedule.clone());
        for actor in schedule["actor"].as_array().into_iter().flatten() {
            let reference = actor["reference"].as_str().unwrap_or_default();
            if let Some(pid) = reference.strip_prefix("Practitioner/") {
                if q.practitioners && !practitioners.contains(&pid) {
                    practitioners.push(pid);
                }
            } else if let Some(lid) = reference.strip_prefix("Location/") {
                if !locations.contains(&lid) {
                    locations.push(lid);
                }
                let org = store
                    .get("Location", lid)
                    .and_then(|l| l["managingOrganization"]["reference"].as_str())
                    .and_then(|r| r.strip_prefix("Organization/"));
                if let Some(org) = org {
                    if !organizations.contains(&org) {
                        organizations.push(org);
                    }
                }
            }
        }
    }
    for id in practitioners {
        includes.extend(store.get("Practitioner", id).cloned());
    }
    if q.locations {
        for id in &locations {
            includes.extend(store.get("Location", id).cloned());
        }
    }
    for id in organizations {
        includes.extend(store.get("Organization", id).cloned());
    }
    let matches = slots.iter().map(|s| s.to_resource()).collect();
    Ok(Reply::ok(searchset(base, matches, includes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base(start: &str, end: &str) -> Vec<(String, String)> {
        q(&[
            ("status", "free"),
            ("start", start),
            ("end", end),
            ("_include", "Slot:schedule"),
        ])
    }

    #[test]
    fn window_is_at_most_fourteen_days() {
        assert!(parse_query(&base("ge2030-01-07", "le2030-01-21")).is_ok());
        let e = parse_query(&base("ge2030-01-07", "le2030-01-22")).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "INVALID_PARAMETER"));
        let e = parse_query(&base("ge2030-01-07", "le2030-01-06")).unwrap_err();
        assert_eq!(e.code, "INVALID_PARAMETER");
        assert!(parse_query(&base(
            "ge2030-01-07T12:00:00+00:00",
            "le2030-01-21T12:00:00+00:00"
        ))
        .is_ok());
        let e = parse_query(&base(
            "ge2030-01-07T12:00:00+00:00",
            "le2030-01-21T12:00:01+00:00",
        ))
        .unwrap_err();
        assert_eq!(e.code, "INVALID_PARAMETER");
        // An le date covers the whole day.
        let ok = parse_query(&base("ge2030-01-07", "le2030-01-07")).unwrap();
        assert_eq!(ok.to - ok.from, TimeDelta::days(1));
    }

    #[test]
    fn parameter_rules() {
        let code = |pairs: Vec<(String, String)>| {
            let e = parse_query(&pairs).unwrap_err();
            (e.status.as_u16(), e.code)
        };
        for (start, end) in [
            ("gt2030-01-07", "le2030-01-08"),
            ("ge2030-01-07", "lt2030-01-08"),
            ("2030-01-07", "le2030-01-08"),
            ("ge2030-01", "le2030-01-08"),
            ("ge2030-01-07T10:00:00Z", "le2030-01-08"),
            ("ge", "le2030-01-08"),
        ] {
            assert_eq!(
                code(base(start, end)),
                (422, "INVALID_PARAMETER"),
                "{start} {end}"
            );
        }
        let mut busy = base("ge2030-01-07", "le2030-01-08");
        busy[0].1 = "busy".into();
        assert_eq!(code(busy), (422, "INVALID_PARAMETER"));
        for drop in ["status", "start", "end", "_include"] {
            let pairs: Vec<_> = base("ge2030-01-07", "le2030-01-08")
                .into_iter()
                .filter(|(k, _)| k != drop)
                .collect();
            assert_eq!(code(pairs), (400, "BAD_REQUEST"), "{drop}");
        }
        let mut twice = base("ge2030-01-07", "le2030-01-08");
        twice.push(("start".into(), "ge2030-01-07".into()));
        assert_eq!(code(twice), (422, "INVALID_PARAMETER"));
        let mut filters = base("ge2030-01-07", "le2030-01-08");
        filters.push((
            "searchFilter".into(),
            "https://fhir.nhs.uk/Id/ods-organization-code|A1001".into(),
        ));
        filters.push((
            "searchFilter".into(),
            "https://example.org/disposition|Dx12".into(),
        ));
        filters.push(("searchFilter".into(), "nonsense".into()));
        assert!(parse_query(&filters).is_ok());
    }
}
