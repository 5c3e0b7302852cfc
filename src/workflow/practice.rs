//! A practice's booking rules, stored as data: an extension on the
//! practice's Organization (the one with its ODS code, which its
//! Locations' `managingOrganization` names).
//!
//! ```json
//! {"url": "https://fhirbridge.dev/fhir/StructureDefinition/practice-booking-rules",
//!  "extension": [{"url": "maxFutureAppointments", "valueUnsignedInt": 2}, …]}
//! ```
//! Parts: `maxFutureAppointments` (unsignedInt; default: no maximum),
//! `bookingHorizonDays` (unsignedInt; default 28), `minimumLeadMinutes`
//! (unsignedInt; default 0), `onlineServiceType` (0..*, Coding or string
//! matching `Slot.serviceType`; none listed = all bookable online), and
//! `triage` (0..*: `serviceType` Coding or string, `questionnaire`
//! canonical, `validDays` unsignedInt, default 7).

use serde_json::Value;

use super::fhir::extensions;

pub const RULES_URL: &str =
    "https://fhirbridge.dev/fhir/StructureDefinition/practice-booking-rules";
pub const DEFAULT_HORIZON_DAYS: u32 = 28;
pub const DEFAULT_TRIAGE_VALID_DAYS: u32 = 7;

/// A service type as the rules name it: a coding or the slot's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceMatch {
    Coding { system: String, code: String },
    Text(String),
}

impl ServiceMatch {
    /// Whether one of `service_types` (Slot.serviceType CodeableConcepts) is this one.
    pub fn matches(&self, service_types: &[Value]) -> bool {
        service_types.iter().any(|cc| match self {
            ServiceMatch::Coding { system, code } => super::fhir::codings(cc)
                .iter()
                .any(|(s, c)| c == code && (system.is_empty() || s == system)),
            ServiceMatch::Text(t) => cc
                .get("text")
                .and_then(Value::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(t)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triage {
    pub service: ServiceMatch,
    /// The Questionnaire's canonical url (without `|version`).
    pub questionnaire: String,
    pub valid_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub max_future: Option<u32>,
    pub horizon_days: u32,
    pub lead_minutes: u32,
    pub online: Vec<ServiceMatch>,
    pub triage: Vec<Triage>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            max_future: None,
            horizon_days: DEFAULT_HORIZON_DAYS,
            lead_minutes: 0,
            online: Vec::new(),
            triage: Vec::new(),
        }
    }
}

fn unsigned(part: &Value, name: &str) -> Result<u32, String> {
    part.get("valueUnsignedInt")
        .or_else(|| part.get("valuePositiveInt"))
        .or_else(|| part.get("valueInteger"))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{name} needs a valueUnsignedInt"))
}

fn service(part: &Value, name: &str) -> Result<ServiceMatch, String> {
    if let Some(c) = part.get("valueCoding") {
        let code = c.get("code").and_then(Value::as_str);
        return match code {
            Some(code) => Ok(ServiceMatch::Coding {
                system: c
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                code: code.to_owned(),
            }),
            None => Err(format!("{name} valueCoding needs a code")),
        };
    }
    match part.get("valueString").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => Ok(ServiceMatch::Text(t.trim().to_owned())),
        _ => Err(format!("{name} needs a valueCoding or a valueString")),
    }
}

/// The rules of an Organization (defaults when it has none), or why its
/// rules extension cannot be read.
pub fn parse(org: &Value) -> Result<Rules, String> {
    let mut rules = Rules::default();
    let mut found = extensions(org, RULES_URL);
    let Some(ext) = found.next() else {
        return Ok(rules);
    };
    if found.next().is_some() {
        return Err("an Organization has at most one practice-booking-rules extension".into());
    }
    let parts = ext
        .get("extension")
        .and_then(Value::as_array)
        .ok_or("practice-booking-rules needs its parts as extensions")?;
    let mut seen: Vec<&str> = Vec::new();
    for part in parts {
        let name = part.get("url").and_then(Value::as_str).unwrap_or("");
        let once = matches!(
            name,
            "maxFutureAppointments" | "bookingHorizonDays" | "minimumLeadMinutes"
        );
        if once && seen.contains(&name) {
            return Err(format!("practice-booking-rules: {name} is given twice"));
        }
        seen.push(name);
        match name {
            "maxFutureAppointments" => rules.max_future = Some(unsigned(part, name)?),
            "bookingHorizonDays" => rules.horizon_days = unsigned(part, name)?,
            "minimumLeadMinutes" => rules.lead_minutes = unsigned(part, name)?,
            "onlineServiceType" => rules.online.push(service(part, name)?),
            "triage" => {
                let mut svc = None;
                let mut q = None;
                let mut days = DEFAULT_TRIAGE_VALID_DAYS;
                for sub in part
                    .get("extension")
                    .and_then(Value::as_array)
                    .ok_or("triage needs serviceType and questionnaire parts")?
                {
                    match sub.get("url").and_then(Value::as_str).unwrap_or("") {
                        "serviceType" => svc = Some(service(sub, "triage.serviceType")?),
                        "questionnaire" => {
                            q = sub
                                .get("valueCanonical")
                                .or_else(|| sub.get("valueUri"))
                                .and_then(Value::as_str)
                                .map(|s| s.split('|').next().unwrap_or(s).to_owned())
                        }
                        "validDays" => days = unsigned(sub, "triage.validDays")?,
                        other => return Err(format!("triage has an unknown part '{other}'")),
                    }
                }
                rules.triage.push(Triage {
                    service: svc.ok_or("triage needs a serviceType")?,
                    questionnaire: q.ok_or("triage needs a questionnaire (valueCanonical)")?,
                    valid_days: days,
                });
            }
            other => {
                return Err(format!(
                    "practice-booking-rules has an unknown part '{other}'"
                ))
            }
        }
    }
    if rules.horizon_days == 0 {
        return Err("bookingHorizonDays must be at least 1".into());
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_parts() {
        assert_eq!(
            parse(&json!({"resourceType": "Organization"})),
            Ok(Rules::default())
        );
        let org = json!({"resourceType": "Organization", "extension": [{"url": RULES_URL, "extension": [
            {"url": "maxFutureAppointments", "valueUnsignedInt": 2},
            {"url": "bookingHorizonDays", "valueUnsignedInt": 14},
            {"url": "onlineServiceType", "valueCoding": {"system": "s", "code": "gp"}},
            {"url": "onlineServiceType", "valueString": "Nurse clinic"},
            {"url": "triage", "extension": [
                {"url": "serviceType", "valueCoding": {"system": "s", "code": "gp"}},
                {"url": "questionnaire", "valueCanonical": "https://q|1"}]}
        ]}]});
        let r = parse(&org).unwrap();
        assert_eq!(r.max_future, Some(2));
        assert_eq!(r.horizon_days, 14);
        assert_eq!(r.online.len(), 2);
        assert_eq!(r.triage[0].questionnaire, "https://q");
        assert_eq!(r.triage[0].valid_days, 7);
        assert!(r.online[1].matches(&[json!({"text": "nurse clinic"})]));
        assert!(r.online[0].matches(&[json!({"coding": [{"system": "s", "code": "gp"}]})]));
    }

    #[test]
    fn malformed_rules_say_why() {
        let bad = |parts: Value| {
            parse(&json!({"extension": [{"url": RULES_URL, "extension": parts}]})).unwrap_err()
        };
        assert!(
            bad(json!([{"url": "maxFutureAppointments", "valueString": "2"}]))
                .contains("maxFutureAppointments")
        );
        assert!(bad(json!([{"url": "surprise", "valueString": "2"}])).contains("surprise"));
        assert!(bad(
            json!([{"url": "triage", "extension": [{"url": "serviceType", "valueString": "x"}]}])
        )
        .contains("questionnaire"));
        assert!(
            bad(json!([{"url": "bookingHorizonDays", "valueUnsignedInt": 0}]))
                .contains("at least 1")
        );
    }
}
