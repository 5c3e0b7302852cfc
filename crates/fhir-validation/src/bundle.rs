//! Bundle rules that are not invariants: `fullUrl` requirements, link
//! relations, reference resolution inside a Bundle (the FHIR rules: absolute
//! references match `fullUrl`, relative ones are resolved against the base of
//! the referencing entry's RESTful `fullUrl`, `_history` matches
//! `meta.versionId`) and, for documents, that the Composition's references
//! resolve and that every entry is reachable from the Composition.

use fhir_structure::model::Model;
use serde_json::Value;

use crate::Severity;

/// The entries of a Bundle.
pub(crate) fn entries(bundle: &Value) -> &[Value] {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// The `fullUrl` of the entry holding `resource` (by identity).
pub(crate) fn full_url_of<'v>(bundle: &'v Value, resource: &Value) -> Option<&'v str> {
    entries(bundle)
        .iter()
        .find(|e| e.get("resource").is_some_and(|r| std::ptr::eq(r, resource)))
        .and_then(|e| str_of(e, "fullUrl"))
}

/// Whether a reference or URL is absolute (has a scheme: `urn:…`, `https://…`).
fn is_absolute(u: &str) -> bool {
    u.split_once(':').is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// Splits `…/_history/v` off a reference.
fn split_history(r: &str) -> (&str, Option<&str>) {
    match r.split_once("/_history/") {
        Some((base, v)) => (base, Some(v)),
        None => (r, None),
    }
}

/// `(type, id)` of a RESTful URL or relative reference (`[base/]Type/id`).
fn type_and_id(u: &str) -> Option<(&str, &str)> {
    let (u, _) = split_history(u);
    let mut it = u.rsplit('/');
    let id = it.next()?;
    let ty = it.next()?;
    (Model::r4().is_resource_type(ty) && !id.is_empty()).then_some((ty, id))
}

/// The outcome of resolving a reference in a Bundle.
pub(crate) enum Resolved<'v> {
    /// Not found (or no rule applies).
    None,
    /// Exactly one entry (its resource).
    One(&'v Value),
    /// Several entries match.
    Many(usize),
}

/// The full URL that a reference made from the entry with `source_url`
/// (holding `source`) designates, by the Bundle resolution rules.
fn target_url(reference: &str, source_url: Option<&str>, source: &Value) -> Option<String> {
    let (r, _) = split_history(reference);
    if is_absolute(r) {
        return Some(r.to_string());
    }
    let (_, id) = type_and_id(r)?;
    let fu = source_url?;
    if fu.starts_with("urn:uuid:") {
        // the Java validator's rule: `Type/id` from a urn:uuid entry means urn:uuid:id
        return Some(format!("urn:uuid:{id}"));
    }
    // the base of a RESTful fullUrl that matches the source's type and id
    let st = str_of(source, "resourceType")?;
    let sid = str_of(source, "id")?;
    let (fu, _) = split_history(fu);
    let base = fu.strip_suffix(&format!("{st}/{sid}"))?;
    Some(format!("{base}{r}"))
}

/// Resolves `reference` (made from `source`, in the entry with `source_url`) in `bundle`.
pub(crate) fn resolve<'v>(
    bundle: &'v Value,
    reference: &str,
    source_url: Option<&str>,
    source: &Value,
) -> Resolved<'v> {
    if reference.starts_with('#') {
        return Resolved::None;
    }
    let Some(target) = target_url(reference, source_url, source) else {
        return Resolved::None;
    };
    let (_, version) = split_history(reference);
    let mut found = None;
    let mut n = 0;
    for e in entries(bundle) {
        let Some(res) = e.get("resource") else {
            continue;
        };
        if str_of(e, "fullUrl") != Some(target.as_str()) {
            continue;
        }
        if let Some(v) = version {
            let vid = res
                .get("meta")
                .and_then(|m| m.get("versionId"))
                .and_then(Value::as_str);
            if vid != Some(v) {
                continue;
            }
        }
        n += 1;
        found.get_or_insert(res);
    }
    match (n, found) {
        (1, Some(r)) => Resolved::One(r),
        (0, _) | (_, None) => Resolved::None,
        (n, _) => Resolved::Many(n),
    }
}

/// One finding: (location relative to the Bundle, e.g. `entry[0]`, severity, message).
pub(crate) type Finding = (String, Severity, String);

/// All `reference` strings in a resource (not `#…` ones), with their locations.
fn references<'v>(v: &'v Value, at: &str, out: &mut Vec<(String, &'v str)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "reference" {
                    if let Value::String(s) = x {
                        if !s.starts_with('#') {
                            out.push((at.to_string(), s));
                        }
                    }
                    continue;
                }
                if k == "resource" {
                    // resources nested in an entry resource are their own business
                    continue;
                }
                references(x, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                references(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The Bundle rules; locations are relative to the Bundle.
pub(crate) fn check(bundle: &Value) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let btype = str_of(bundle, "type").unwrap_or("");
    let es = entries(bundle);
    for (i, e) in es.iter().enumerate() {
        let at = format!("entry[{i}]");
        let res = e.get("resource");
        let fu = str_of(e, "fullUrl");
        match fu {
            None => {
                let outcome = e
                    .get("search")
                    .and_then(|s| s.get("mode"))
                    .and_then(Value::as_str)
                    == Some("outcome");
                if res.is_some()
                    && !outcome
                    && !matches!(
                        btype,
                        "transaction" | "batch" | "transaction-response" | "batch-response"
                    )
                {
                    out.push((
                        at,
                        Severity::Error,
                        "Except for transactions and batches, each entry in a Bundle must have a fullUrl which is the identity of the resource in the entry".into(),
                    ));
                }
            }
            Some(fu) if !is_absolute(fu) => out.push((
                at,
                Severity::Error,
                format!("The fullUrl must be an absolute URL (not '{fu}')"),
            )),
            Some(fu) => {
                let Some(res) = res else { continue };
                if fu.starts_with("urn:") {
                    continue;
                }
                let Some((_, _)) = type_and_id(fu) else {
                    continue;
                };
                let rt = str_of(res, "resourceType").unwrap_or("");
                match str_of(res, "id") {
                    None => out.push((
                        at,
                        Severity::Error,
                        format!("The fullUrl '{fu}' looks like a RESTful server URL, but the resource has no id"),
                    )),
                    Some(id) => {
                        let (plain, _) = split_history(fu);
                        if !plain.ends_with(&format!("/{rt}/{id}")) && plain != format!("{rt}/{id}")
                        {
                            out.push((
                                at,
                                Severity::Error,
                                format!("The fullUrl '{fu}' looks like a RESTful server URL, so it must end with the correct type and id (/{rt}/{id})"),
                            ));
                        }
                    }
                }
            }
        }
    }
    // link relations occur once
    if let Some(Value::Array(links)) = bundle.get("link") {
        let mut seen: Vec<&str> = Vec::new();
        for (i, l) in links.iter().enumerate() {
            let Some(rel) = str_of(l, "relation") else {
                continue;
            };
            if seen.contains(&rel) {
                out.push((
                    format!("link[{i}]"),
                    Severity::Error,
                    format!("The link relationship type '{rel}' can only occur once"),
                ));
            } else {
                seen.push(rel);
            }
        }
    }
    if btype == "document" {
        document(bundle, es, &mut out);
    }
    out
}

/// Adds the references of an element (single or array) to `refs`.
fn add_refs<'v>(
    v: Option<&'v Value>,
    at: String,
    name: &'static str,
    refs: &mut Vec<(String, &'v str, &'static str)>,
) {
    match v {
        Some(Value::Array(a)) => {
            for (i, x) in a.iter().enumerate() {
                if let Some(r) = str_of(x, "reference") {
                    refs.push((format!("{at}[{i}]"), r, name));
                }
            }
        }
        Some(x) => {
            if let Some(r) = str_of(x, "reference") {
                refs.push((at, r, name));
            }
        }
        None => {}
    }
}

/// The references of Composition sections (author, focus, entry), recursively.
fn sections<'v>(
    v: Option<&'v Value>,
    at: &str,
    depth: usize,
    refs: &mut Vec<(String, &'v str, &'static str)>,
) {
    let Some(Value::Array(ss)) = v else { return };
    if depth > 16 {
        return;
    }
    for (i, s) in ss.iter().enumerate() {
        let sat = format!("{at}.section[{i}]");
        add_refs(
            s.get("author"),
            format!("{sat}.author"),
            "Section Author",
            refs,
        );
        add_refs(
            s.get("focus"),
            format!("{sat}.focus"),
            "Section Focus",
            refs,
        );
        add_refs(
            s.get("entry"),
            format!("{sat}.entry"),
            "Section Entry",
            refs,
        );
        sections(s.get("section"), &sat, depth + 1, refs);
    }
}

/// Document rules: the Composition's references resolve; every entry is reachable.
fn document(bundle: &Value, es: &[Value], out: &mut Vec<Finding>) {
    let Some(first) = es.first() else { return };
    let Some(comp) = first.get("resource") else {
        return;
    };
    if str_of(comp, "resourceType") != Some("Composition") {
        return;
    }
    let comp_url = str_of(first, "fullUrl");
    // the Composition's own references
    let mut refs: Vec<(String, &str, &'static str)> = Vec::new();
    let cat = "entry[0].resource";
    add_refs(
        comp.get("subject"),
        format!("{cat}.subject"),
        "Composition.subject",
        &mut refs,
    );
    add_refs(
        comp.get("encounter"),
        format!("{cat}.encounter"),
        "Composition.encounter",
        &mut refs,
    );
    add_refs(
        comp.get("author"),
        format!("{cat}.author"),
        "Composition.author",
        &mut refs,
    );
    add_refs(
        comp.get("custodian"),
        format!("{cat}.custodian"),
        "Composition.custodian",
        &mut refs,
    );
    if let Some(Value::Array(att)) = comp.get("attester") {
        for (i, a) in att.iter().enumerate() {
            add_refs(
                a.get("party"),
                format!("{cat}.attester[{i}].party"),
                "Composition.attester.party",
                &mut refs,
            );
        }
    }
    sections(comp.get("section"), cat, 0, &mut refs);
    for (at, r, name) in &refs {
        match resolve(bundle, r, comp_url, comp) {
            Resolved::One(_) => {}
            Resolved::None => out.push((
                at.clone(),
                Severity::Error,
                format!("Can't find '{r}' in the bundle ({name})"),
            )),
            Resolved::Many(n) => out.push((
                at.clone(),
                Severity::Error,
                format!("Found {n} matches for '{r}' in the bundle ({name})"),
            )),
        }
    }
    // reachability from the Composition, following references forward or backward
    let n = es.len();
    let mut links: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, e) in es.iter().enumerate() {
        let Some(res) = e.get("resource") else {
            continue;
        };
        let mut rs = Vec::new();
        references(res, "", &mut rs);
        let fu = str_of(e, "fullUrl");
        for (_, r) in rs {
            let target = target_url(r, fu, res);
            let (_, version) = split_history(r);
            for (j, f) in es.iter().enumerate() {
                let hit = target
                    .as_deref()
                    .is_some_and(|t| str_of(f, "fullUrl") == Some(t))
                    && version.is_none_or(|v| {
                        f.get("resource")
                            .and_then(|x| x.get("meta"))
                            .and_then(|m| m.get("versionId"))
                            .and_then(Value::as_str)
                            == Some(v)
                    });
                if hit {
                    if let Some(l) = links.get_mut(i) {
                        l.push(j);
                    }
                }
            }
        }
    }
    let mut reached = vec![false; n];
    if let Some(r) = reached.first_mut() {
        *r = true;
    }
    loop {
        let mut changed = false;
        for i in 0..n {
            let here = reached.get(i).copied().unwrap_or(false);
            let targets = links.get(i).map_or(&[][..], Vec::as_slice);
            if here {
                // forward
                for &j in targets {
                    if let Some(r) = reached.get_mut(j) {
                        if !*r {
                            *r = true;
                            changed = true;
                        }
                    }
                }
            } else if targets
                .iter()
                .any(|j| reached.get(*j).copied().unwrap_or(false))
            {
                // backward: refers to something reached
                if let Some(r) = reached.get_mut(i) {
                    *r = true;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (i, e) in es.iter().enumerate() {
        if reached.get(i).copied().unwrap_or(true) || e.get("resource").is_none() {
            continue;
        }
        let name = str_of(e, "fullUrl").unwrap_or("?");
        out.push((
            format!("entry[{i}]"),
            Severity::Error,
            format!("Entry '{name}' isn't reachable by traversing links (forward or backward) from the Composition"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "resourceType": "Bundle", "type": "document",
            "link": [{"relation": "self", "url": "a"}, {"relation": "self", "url": "b"}],
            "entry": [
                {"fullUrl": "http://x/fhir/Composition/c", "resource": {"resourceType": "Composition", "id": "c",
                  "subject": {"reference": "Patient/p"}, "author": [{"reference": "Practitioner/missing"}],
                  "section": [{"entry": [{"reference": "Observation/o/_history/2"}]}]}},
                {"fullUrl": "http://x/fhir/Patient/p", "resource": {"resourceType": "Patient", "id": "p"}},
                {"fullUrl": "http://x/fhir/Observation/o", "resource": {"resourceType": "Observation", "id": "o", "meta": {"versionId": "1"}}},
                {"fullUrl": "http://x/fhir/Observation/o", "resource": {"resourceType": "Observation", "id": "o", "meta": {"versionId": "2"}}},
                {"fullUrl": "http://x/fhir/Provenance/v", "resource": {"resourceType": "Provenance", "id": "v", "target": [{"reference": "Patient/p"}]}},
                {"fullUrl": "http://x/fhir/Basic/lonely", "resource": {"resourceType": "Basic", "id": "other"}},
                {"fullUrl": "Basic/rel", "resource": {"resourceType": "Basic", "id": "rel"}},
                {"resource": {"resourceType": "Basic"}}
            ]
        })
    }

    #[test]
    fn resolution() {
        let b = doc();
        let comp = &b["entry"][0]["resource"];
        let url = Some("http://x/fhir/Composition/c");
        assert!(matches!(
            resolve(&b, "Patient/p", url, comp),
            Resolved::One(_)
        ));
        assert!(matches!(
            resolve(&b, "http://x/fhir/Patient/p", None, comp),
            Resolved::One(_)
        ));
        assert!(matches!(
            resolve(&b, "Observation/o", url, comp),
            Resolved::Many(2)
        ));
        match resolve(&b, "Observation/o/_history/1", url, comp) {
            Resolved::One(r) => assert_eq!(r["meta"]["versionId"], "1"),
            _ => panic!("versioned reference not resolved"),
        }
        assert!(matches!(
            resolve(&b, "Patient/p", Some("urn:uuid:1"), comp),
            Resolved::None
        ));
        // no base when the fullUrl does not end with the source's type and id
        let anon = json!({"resourceType": "Composition"});
        assert!(matches!(
            resolve(&b, "Patient/p", url, &anon),
            Resolved::None
        ));
        assert!(matches!(resolve(&b, "#x", url, comp), Resolved::None));
    }

    #[test]
    fn rules() {
        let found = check(&doc());
        let has = |at: &str, text: &str| found.iter().any(|(a, _, m)| a == at && m.contains(text));
        assert!(has("link[1]", "'self' can only occur once"));
        assert!(has("entry[5]", "must end with the correct type and id"));
        assert!(has("entry[6]", "must be an absolute URL"));
        assert!(has("entry[7]", "must have a fullUrl"));
        assert!(has(
            "entry[0].resource.author[0]",
            "Can't find 'Practitioner/missing'"
        ));
        assert!(has("entry[5]", "isn't reachable"));
        // the other version of the Observation is not referenced; the
        // Provenance is reachable backwards
        assert!(has("entry[2]", "isn't reachable"));
        assert!(!found
            .iter()
            .any(|(a, _, _)| a == "entry[4]" || a == "entry[1]"));
        assert!(
            is_absolute("urn:uuid:1") && is_absolute("uin:uuid:1") && !is_absolute("Patient/1")
        );
    }
}
