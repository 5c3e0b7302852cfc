//! A Consent resource read as a rule the server applies, or the reason it
//! cannot be (a 422: a Consent the server cannot enforce is never stored).
//! The codes are part of the API (README, "Patient preferences").

use fhir_structure::primitive::parse_date_range;
use serde_json::Value;

/// `Consent.scope` codes.
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// Our `Consent.category` codes for the kinds no national code names.
pub const CATEGORY_SYSTEM: &str = "https://fhirbridge.dev/fhir/CodeSystem/consent-category";
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
pub const LOINC: &str = "http://loinc.org";
pub const CLIENT_ID_SYSTEM: &str = "https://fhir.nhs.uk/Id/client-id";
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const CONSENT_ACTION: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
pub const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";
pub const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";

/// Deepest nesting of `provision.provision` accepted (root = 1).
const MAX_DEPTH: usize = 3;

/// Which preference a Consent records: at most one `active` per patient
/// and [`Kind::key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `patient-privacy`: who may see the record, for what purpose.
    DataSharing,
    /// `patient-privacy` naming a RelatedPerson: proxy access (VRS).
    Proxy { proxy_nhs: String },
    /// `treatment` + our `organ-donation`.
    OrganDonation,
    /// `treatment` + our `end-of-life`.
    EndOfLife,
    /// `adr` + our `advance-decision` (or LOINC 75320-2).
    AdvanceDecision,
}

impl Kind {
    /// The one-active key within a patient.
    pub fn key(&self) -> String {
        match self {
            Kind::DataSharing => "data-sharing".into(),
            Kind::Proxy { proxy_nhs } => format!("proxy|{proxy_nhs}"),
            Kind::OrganDonation => "organ-donation".into(),
            Kind::EndOfLife => "end-of-life".into(),
            Kind::AdvanceDecision => "advance-decision".into(),
        }
    }
}

/// Who a data-sharing provision names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// An app: its OAuth `client_id`.
    Client(String),
    /// An organisation: its ODS code.
    Ods(String),
}

/// `[start, end)` in epoch milliseconds (either side open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Period {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl Period {
    pub fn contains(&self, now_ms: i64) -> bool {
        self.start.is_none_or(|s| now_ms >= s) && self.end.is_none_or(|e| now_ms < e)
    }
}

/// One provision of a data-sharing Consent (nested ones are exceptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub permit: bool,
    pub actors: Vec<Actor>,
    pub purposes: Vec<String>,
    pub period: Option<Period>,
    pub children: Vec<Node>,
}

/// What a proxy Consent grants its proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyGrant {
    /// `provision.class` resource types (`None`: every compartment type).
    pub types: Option<Vec<crate::model::ResourceType>>,
    /// `correct`: the proxy may also create and update.
    pub write: bool,
    pub period: Option<Period>,
}

/// A Consent read as a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The Patient id (`Consent.patient` = `Patient/{id}`).
    pub patient: String,
    pub active: bool,
    pub kind: Kind,
    /// Data sharing: the provision tree.
    pub sharing: Option<Node>,
    /// Proxy access: what it grants.
    pub proxy: Option<ProxyGrant>,
}

fn codings(v: Option<&Value>) -> Vec<(&str, &str)> {
    let concepts: Vec<&Value> = match v {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(cc) => vec![cc],
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for cc in concepts {
        for c in cc
            .get("coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(s), Some(k)) = (
                c.get("system").and_then(Value::as_str),
                c.get("code").and_then(Value::as_str),
            ) {
                out.push((s, k));
            }
        }
    }
    out
}

fn has(v: Option<&Value>, system: &str, code: &str) -> bool {
    codings(v).iter().any(|(s, c)| *s == system && *c == code)
}

/// Epoch ms bounds of a FHIR Period (`end` inclusive at its precision).
fn period(v: Option<&Value>, at: &str) -> Result<Option<Period>, String> {
    let Some(p) = v else { return Ok(None) };
    let bound = |k: &str, hi: bool| -> Result<Option<i64>, String> {
        match p.get(k).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) => parse_date_range(s)
                .map(|(lo, up)| Some(if hi { up } else { lo }))
                .ok_or_else(|| format!("{at}.{k} is not a valid dateTime")),
        }
    };
    let out = Period {
        start: bound("start", false)?,
        end: bound("end", true)?,
    };
    if let (Some(s), Some(e)) = (out.start, out.end) {
        if e <= s {
            return Err(format!("{at} ends before it starts"));
        }
    }
    Ok(Some(out))
}

/// An identifier (system, value) of an actor reference: on the Reference
/// itself, or on the contained resource it points to. Also the type.
fn actor_identity<'a>(
    consent: &'a Value,
    reference: &'a Value,
) -> (Option<&'a str>, Vec<(&'a str, &'a str)>) {
    let mut ty = reference.get("type").and_then(Value::as_str);
    let mut ids = Vec::new();
    let push_ids = |id: Option<&'a Value>, ids: &mut Vec<(&'a str, &'a str)>| {
        let one = |i: &'a Value| {
            Some((
                i.get("system").and_then(Value::as_str)?,
                i.get("value").and_then(Value::as_str)?,
            ))
        };
        match id {
            Some(Value::Array(a)) => ids.extend(a.iter().filter_map(one)),
            Some(i) => ids.extend(one(i)),
            None => {}
        }
    };
    push_ids(reference.get("identifier"), &mut ids);
    if let Some(r) = reference.get("reference").and_then(Value::as_str) {
        if let Some(local) = r.strip_prefix('#') {
            if let Some(c) = consent
                .get("contained")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("id").and_then(Value::as_str) == Some(local))
            {
                ty = ty.or_else(|| c.get("resourceType").and_then(Value::as_str));
                push_ids(c.get("identifier"), &mut ids);
            }
        } else {
            let t = r.rsplit('/').nth(1).filter(|t| !t.is_empty());
            ty = ty.or(t);
        }
    }
    (ty, ids)
}

fn reference_patient(consent: &Value) -> Result<String, String> {
    let r = consent
        .get("patient")
        .and_then(|p| p.get("reference"))
        .and_then(Value::as_str)
        .ok_or(
            "Consent.patient must reference the Patient (Patient/{id}) the preference belongs to",
        )?;
    let mut parts = r.rsplit('/');
    let id = parts.next().unwrap_or("");
    let ty = parts.next().unwrap_or("");
    if ty != "Patient" || id.is_empty() {
        return Err(format!(
            "Consent.patient must be a Patient/{{id}} reference, not '{}'",
            if r.len() > 64 { &r[..64] } else { r }
        ));
    }
    Ok(id.to_owned())
}

/// Reads `consent` as a rule, or says why the server cannot enforce it.
pub fn parse(consent: &Value) -> Result<Rule, String> {
    let status = consent.get("status").and_then(Value::as_str).unwrap_or("");
    let scope = consent.get("scope");
    let category = consent.get("category");
    let patient = reference_patient(consent)?;
    let provision = consent.get("provision");
    let ours = |c: &str| has(category, CATEGORY_SYSTEM, c);
    let kind = if has(scope, SCOPE_SYSTEM, "patient-privacy") {
        if !(has(category, ACT_CODE, "INFA")
            || has(category, ACT_CODE, "IDSCL")
            || has(category, LOINC, "59284-0")
            || has(category, LOINC, "64292-6"))
        {
            return Err("A patient-privacy Consent needs category v3-ActCode INFA or IDSCL (or LOINC 59284-0 / 64292-6)".into());
        }
        match proxy_of(consent)? {
            Some(nhs) => Kind::Proxy { proxy_nhs: nhs },
            None => Kind::DataSharing,
        }
    } else if has(scope, SCOPE_SYSTEM, "treatment") {
        if ours("organ-donation") {
            Kind::OrganDonation
        } else if ours("end-of-life") {
            Kind::EndOfLife
        } else {
            return Err(format!(
                "A treatment Consent needs category {CATEGORY_SYSTEM} organ-donation or end-of-life"
            ));
        }
    } else if has(scope, SCOPE_SYSTEM, "adr") {
        if ours("advance-decision") || has(category, LOINC, "75320-2") {
            Kind::AdvanceDecision
        } else {
            return Err(format!(
                "An adr Consent needs category {CATEGORY_SYSTEM} advance-decision (or LOINC 75320-2)"
            ));
        }
    } else {
        return Err(
            "Consent.scope must be consentscope patient-privacy, treatment or adr: other scopes (research) are not enforced by this server".into(),
        );
    };
    let Some(provision) = provision else {
        return Err("Consent.provision is required: it states the preference".into());
    };
    let mut rule = Rule {
        patient,
        active: status == "active",
        kind: kind.clone(),
        sharing: None,
        proxy: None,
    };
    match kind {
        Kind::DataSharing => {
            rule.sharing = Some(node(consent, provision, "Consent.provision", 1)?);
        }
        Kind::Proxy { .. } => rule.proxy = Some(proxy_grant(provision)?),
        Kind::OrganDonation => {
            let ty = provision.get("type").and_then(Value::as_str);
            if !matches!(ty, Some("permit") | Some("deny")) {
                return Err("An organ donation decision needs provision.type permit (opt in, or a nominated representative) or deny (opt out)".into());
            }
            for (i, a) in actors(provision).enumerate() {
                if !has(a.get("role"), PARTICIPATION_TYPE, "RESP") {
                    return Err(format!("Consent.provision.actor[{i}]: an organ donation actor is the nominated representative (role v3-ParticipationType RESP)"));
                }
            }
        }
        Kind::EndOfLife => {
            if provision.get("code").is_none() {
                return Err("End-of-life preferences need provision.code (the preferences, e.g. the preferred place of death)".into());
            }
        }
        Kind::AdvanceDecision => {
            if provision.get("type").and_then(Value::as_str) != Some("deny")
                || provision.get("code").is_none()
            {
                return Err("An advance decision to refuse treatment needs provision.type deny and provision.code (the treatments refused)".into());
            }
        }
    }
    Ok(rule)
}

fn actors(p: &Value) -> impl Iterator<Item = &Value> {
    p.get("actor")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The proxy's NHS number when the Consent names a RelatedPerson.
fn proxy_of(consent: &Value) -> Result<Option<String>, String> {
    let Some(p) = consent.get("provision") else {
        return Ok(None);
    };
    let mut found = None;
    for a in actors(p) {
        let Some(r) = a.get("reference") else {
            continue;
        };
        let (ty, ids) = actor_identity(consent, r);
        if ty == Some("RelatedPerson") {
            let nhs = ids
                .iter()
                .find(|(s, _)| *s == NHS_NUMBER_SYSTEM)
                .map(|(_, v)| v.to_string())
                .ok_or("A proxy Consent's RelatedPerson must carry the proxy's NHS number (identifier https://fhir.nhs.uk/Id/nhs-number)")?;
            if found.replace(nhs).is_some() {
                return Err("A proxy Consent names exactly one RelatedPerson".into());
            }
        }
    }
    Ok(found)
}

fn proxy_grant(p: &Value) -> Result<ProxyGrant, String> {
    if p.get("type").and_then(Value::as_str) != Some("permit") {
        return Err("A proxy Consent's provision.type must be permit".into());
    }
    if p.get("provision").is_some() {
        return Err("A proxy Consent cannot carry nested provisions".into());
    }
    let mut types = Vec::new();
    for (i, c) in p
        .get("class")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let code = c.get("code").and_then(Value::as_str).unwrap_or("");
        let ty = (c.get("system").and_then(Value::as_str) == Some(RESOURCE_TYPES))
            .then(|| code.parse::<crate::model::ResourceType>().ok())
            .flatten()
            .ok_or_else(|| {
                format!("Consent.provision.class[{i}] must be a resource type ({RESOURCE_TYPES})")
            })?;
        types.push(ty);
    }
    let mut write = false;
    for (s, c) in codings(p.get("action")) {
        match (s, c) {
            (CONSENT_ACTION, "access") => {}
            (CONSENT_ACTION, "correct") => write = true,
            _ => return Err(format!("Consent.provision.action {s}|{c} is not enforced (use consentaction access or correct)")),
        }
    }
    Ok(ProxyGrant {
        types: (!types.is_empty()).then_some(types),
        write,
        period: period(p.get("period"), "Consent.provision.period")?,
    })
}

fn node(consent: &Value, p: &Value, at: &str, depth: usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: provisions nest at most {MAX_DEPTH} deep"));
    }
    let permit = match p.get("type").and_then(Value::as_str) {
        Some("permit") | None if depth == 1 => true,
        Some("permit") => true,
        Some("deny") => false,
        _ => return Err(format!("{at}.type must be permit or deny")),
    };
    for k in [
        "class",
        "code",
        "data",
        "dataPeriod",
        "securityLabel",
        "action",
    ] {
        if p.get(k).is_some() {
            return Err(format!(
                "{at}.{k} is not enforced by this server: a data-sharing provision names actors, purposes and a period"
            ));
        }
    }
    let mut out_actors = Vec::new();
    for (i, a) in actors(p).enumerate() {
        let at = format!("{at}.actor[{i}]");
        let r = a
            .get("reference")
            .ok_or_else(|| format!("{at}.reference is required"))?;
        let (ty, ids) = actor_identity(consent, r);
        if !matches!(ty, Some("Organization") | Some("Device") | None) {
            return Err(format!(
                "{at}: a data-sharing actor is an Organization or Device (an app or organisation), not {}",
                ty.unwrap_or("?")
            ));
        }
        let before = out_actors.len();
        for (s, v) in ids {
            match s {
                CLIENT_ID_SYSTEM => out_actors.push(Actor::Client(v.to_owned())),
                ODS_SYSTEM => out_actors.push(Actor::Ods(v.to_owned())),
                _ => {}
            }
        }
        if out_actors.len() == before {
            return Err(format!("{at} must identify the app ({CLIENT_ID_SYSTEM}) or organisation ({ODS_SYSTEM}) by identifier, on the reference or a contained resource"));
        }
    }
    let mut purposes = Vec::new();
    for (i, c) in p
        .get("purpose")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match (
            c.get("system").and_then(Value::as_str),
            c.get("code").and_then(Value::as_str),
        ) {
            (Some(ACT_REASON), Some(code)) if !code.is_empty() => purposes.push(code.to_owned()),
            _ => {
                return Err(format!(
                    "{at}.purpose[{i}] must be a v3-ActReason code ({ACT_REASON})"
                ))
            }
        }
    }
    let period = period(p.get("period"), &format!("{at}.period"))?;
    let mut children = Vec::new();
    for (i, c) in p
        .get("provision")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        children.push(node(
            consent,
            c,
            &format!("{at}.provision[{i}]"),
            depth + 1,
        )?);
    }
    Ok(Node {
        permit,
        actors: out_actors,
        purposes,
        period,
        children,
    })
}

/// The caller facts a data-sharing decision reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Subject {
    pub client: Option<String>,
    pub ods: Option<String>,
    pub purposes: Vec<String>,
    /// The caller's own patient (actor-less provisions do not apply to it).
    pub own_patient: Option<String>,
}

impl Node {
    /// Whether this provision applies to `s` at `now_ms`.
    fn applies(&self, s: &Subject, patient: &str, now_ms: i64) -> bool {
        if self.actors.is_empty() {
            if s.own_patient.as_deref() == Some(patient) {
                return false;
            }
        } else if !self.actors.iter().any(|a| match a {
            Actor::Client(c) => s.client.as_deref() == Some(c),
            Actor::Ods(o) => s.ods.as_deref() == Some(o),
        }) {
            return false;
        }
        if !self.purposes.is_empty() && !self.purposes.iter().any(|p| s.purposes.contains(p)) {
            return false;
        }
        self.period.is_none_or(|p| p.contains(now_ms))
    }

    /// `Some(permit)` of the deepest applying provision.
    fn decide(&self, s: &Subject, patient: &str, now_ms: i64) -> Option<bool> {
        if !self.applies(s, patient, now_ms) {
            return None;
        }
        for c in &self.children {
            if let Some(d) = c.decide(s, patient, now_ms) {
                return Some(d);
            }
        }
        Some(self.permit)
    }

    /// Whether `s` is denied `patient`'s data at `now_ms`. The root's own
    /// type is the default only for the subjects it applies to.
    pub fn denies(&self, s: &Subject, patient: &str, now_ms: i64) -> bool {
        self.decide(s, patient, now_ms) == Some(false)
    }

    /// The index keys under which this tree can deny anyone: for every
    /// deny provision, the actors (else the purposes) some provision on its
    /// path names (a provision applies only where its ancestors do), or
    /// `open` when nothing on the path narrows it. A tree with no deny
    /// provision has no keys: it never denies.
    pub fn keys(&self, actors: &mut Vec<Actor>, purposes: &mut Vec<String>, open: &mut bool) {
        fn walk<'n>(
            n: &'n Node,
            path_actors: Option<&'n [Actor]>,
            path_purposes: Option<&'n [String]>,
            out: (&mut Vec<Actor>, &mut Vec<String>, &mut bool),
        ) {
            let pa = path_actors.or((!n.actors.is_empty()).then_some(&n.actors[..]));
            let pp = path_purposes.or((!n.purposes.is_empty()).then_some(&n.purposes[..]));
            let (actors, purposes, open) = out;
            if !n.permit {
                match (pa, pp) {
                    (Some(a), _) => actors.extend(a.iter().cloned()),
                    (None, Some(p)) => purposes.extend(p.iter().cloned()),
                    (None, None) => *open = true,
                }
            }
            for c in &n.children {
                walk(c, pa, pp, (&mut *actors, &mut *purposes, &mut *open));
            }
        }
        walk(self, None, None, (actors, purposes, open));
        actors.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        actors.dedup();
        purposes.sort();
        purposes.dedup();
    }

    /// The period boundaries after `now_ms` (when a cached decision expires).
    pub fn next_boundary(&self, now_ms: i64) -> Option<i64> {
        let own = self
            .period
            .iter()
            .flat_map(|p| [p.start, p.end])
            .flatten()
            .filter(|b| *b > now_ms);
        own.chain(self.children.iter().filter_map(|c| c.next_boundary(now_ms)))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn privacy(provision: Value) -> Value {
        json!({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": ACT_CODE, "code": "INFA"}]}],
            "patient": {"reference": "Patient/p1"},
            "provision": provision
        })
    }

    fn subject(client: &str, purposes: &[&str]) -> Subject {
        Subject {
            client: Some(client.into()),
            purposes: purposes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn deny_of_an_app_by_client_id() {
        let c = privacy(
            json!({"type": "permit", "provision": [{"type": "deny", "actor": [{"reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": "app-x"}}}]}]}),
        );
        let r = parse(&c).unwrap();
        assert_eq!(r.kind, Kind::DataSharing);
        let n = r.sharing.unwrap();
        assert!(n.denies(&subject("app-x", &[]), "p1", 0));
        assert!(!n.denies(&subject("app-y", &[]), "p1", 0));
    }

    #[test]
    fn purpose_deny_and_period_permit() {
        let c =
            privacy(json!({"type": "deny", "purpose": [{"system": ACT_REASON, "code": "HRESCH"}]}));
        let n = parse(&c).unwrap().sharing.unwrap();
        assert!(n.denies(&subject("a", &["HRESCH"]), "p1", 0));
        assert!(!n.denies(&subject("a", &["TREAT"]), "p1", 0));
        let c = privacy(
            json!({"type": "deny", "provision": [{"type": "permit", "period": {"start": "2020-01-01", "end": "2020-12-31"}, "actor": [{"reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": "x"}}}]}]}),
        );
        let n = parse(&c).unwrap().sharing.unwrap();
        let inside = parse_date_range("2020-06-01").unwrap().0;
        let after = parse_date_range("2021-01-01").unwrap().0;
        assert!(!n.denies(&subject("x", &[]), "p1", inside));
        assert!(n.denies(&subject("x", &[]), "p1", after));
        // The patient's own app is not caught by an actor-less deny.
        let own = Subject {
            own_patient: Some("p1".into()),
            ..subject("x", &[])
        };
        assert!(!n.denies(&own, "p1", after));
    }

    #[test]
    fn unenforceable_consents_say_why() {
        let bad = |c: Value| parse(&c).unwrap_err();
        let mut c = privacy(json!({"type": "deny"}));
        c["scope"]["coding"][0]["code"] = json!("research");
        assert!(bad(c).contains("research"));
        assert!(bad(privacy(
            json!({"type": "deny", "actor": [{"reference": {"reference": "Practitioner/1"}}]})
        ))
        .contains("Organization or Device"));
        assert!(bad(privacy(
            json!({"type": "deny", "actor": [{"reference": {"display": "an app"}}]})
        ))
        .contains("identifier"));
        assert!(bad(privacy(
            json!({"type": "deny", "purpose": [{"system": "urn:x", "code": "y"}]})
        ))
        .contains("v3-ActReason"));
        let mut c = privacy(json!({"type": "deny"}));
        c.as_object_mut().unwrap().remove("patient");
        assert!(bad(c).contains("Consent.patient"));
    }

    #[test]
    fn proxy_consent_names_the_proxy() {
        let c = privacy(json!({"type": "permit",
            "actor": [{"reference": {"type": "RelatedPerson", "identifier": {"system": NHS_NUMBER_SYSTEM, "value": "9000000009"}}}],
            "class": [{"system": RESOURCE_TYPES, "code": "MedicationRequest"}]}));
        let r = parse(&c).unwrap();
        assert_eq!(
            r.kind,
            Kind::Proxy {
                proxy_nhs: "9000000009".into()
            }
        );
        let g = r.proxy.unwrap();
        assert_eq!(
            g.types,
            Some(vec![crate::model::ResourceType::MedicationRequest])
        );
        assert!(!g.write);
    }
}
