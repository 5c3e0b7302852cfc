//! Local terminology: ValueSet expansion from the CodeSystems in the
//! registry and code membership checks (also for FHIRPath `memberOf()`).
//!
//! Supported: `compose.include` with a system and a concept list, whole code
//! systems (when the CodeSystem is present with `content = complete`),
//! filters `is-a`, `descendent-of`, `is-not-a`, `=` (on `concept` or a
//! property) and `in`, nested `valueSet` imports, `compose.exclude` with
//! concept lists, and stored `expansion.contains`. Value sets that need
//! anything else (SNOMED CT, LOINC, ECL, unknown code systems) are marked
//! not expandable, and membership is then unknown (`None`), never an error.
//! BCP-47 language tags, MIME types and UCUM units, whose code systems are
//! grammars rather than lists, are checked for syntax only.

use once_cell::sync::Lazy;
use regex::Regex;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::fx::{FxMap, FxSet};
use crate::registry::{guarded, RType, Registry};

/// A (possibly incomplete) local expansion of a value set.
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    /// system → codes.
    pub codes: FxMap<String, FxSet<String>>,
    /// Systems included as a whole that are checked by grammar.
    pub grammar_systems: Vec<String>,
    /// Whether the expansion is complete (membership can be decided).
    pub complete: bool,
    /// Why not complete.
    pub reason: String,
}

const BCP47: &str = "urn:ietf:bcp:47";
const MIME: &str = "urn:ietf:bcp:13";
const UCUM: &str = "http://unitsofmeasure.org";

static BCP47_RE: Lazy<Option<Regex>> =
    Lazy::new(|| Regex::new(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$").ok());
static MIME_RE: Lazy<Option<Regex>> = Lazy::new(|| {
    Regex::new(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;.*)?$").ok()
});

fn grammar_ok(system: &str, code: &str) -> bool {
    match system {
        BCP47 => BCP47_RE.as_ref().is_some_and(|r| r.is_match(code)),
        MIME => MIME_RE.as_ref().is_some_and(|r| r.is_match(code)),
        _ => !code.is_empty() && !code.contains(char::is_whitespace),
    }
}

fn is_grammar_system(s: &str) -> bool {
    matches!(s, BCP47 | MIME | UCUM)
}

impl Expansion {
    fn incomplete(reason: impl Into<String>) -> Expansion {
        Expansion {
            complete: false,
            reason: reason.into(),
            ..Default::default()
        }
    }

    /// Membership of a code: `Some(true/false)` when decidable, `None` when unknown.
    pub fn contains(&self, system: Option<&str>, code: &str) -> Option<bool> {
        match system {
            Some(s) => {
                if self.codes.get(s).is_some_and(|c| c.contains(code)) {
                    return Some(true);
                }
                if self.grammar_systems.iter().any(|g| g == s) {
                    return Some(grammar_ok(s, code));
                }
                if self.complete {
                    Some(false)
                } else {
                    None
                }
            }
            None => {
                if self.codes.values().any(|c| c.contains(code)) {
                    return Some(true);
                }
                if let Some(g) = self.grammar_systems.first() {
                    if self.codes.is_empty() && self.grammar_systems.len() == 1 {
                        return Some(grammar_ok(g, code));
                    }
                }
                if self.complete {
                    Some(false)
                } else {
                    None
                }
            }
        }
    }

    fn add(&mut self, system: &str, code: &str) {
        self.codes
            .entry(system.to_string())
            .or_default()
            .insert(code.to_string());
    }

    fn merge(&mut self, other: &Expansion) {
        for (s, cs) in &other.codes {
            self.codes
                .entry(s.clone())
                .or_default()
                .extend(cs.iter().cloned());
        }
        for g in &other.grammar_systems {
            if !self.grammar_systems.contains(g) {
                self.grammar_systems.push(g.clone());
            }
        }
        if !other.complete {
            self.complete = false;
            if self.reason.is_empty() {
                self.reason = other.reason.clone();
            }
        }
    }
}

/// The concepts of a CodeSystem.
struct CodeSystemInfo {
    content: String,
    /// code → parent codes.
    parents: HashMap<String, Vec<String>>,
    /// (code, property, value-as-string).
    props: Vec<(String, String, String)>,
    order: Vec<String>,
}

fn code_system_info(cs: &Value) -> CodeSystemInfo {
    let mut info = CodeSystemInfo {
        content: cs
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("complete")
            .to_string(),
        parents: HashMap::new(),
        props: Vec::new(),
        order: Vec::new(),
    };
    fn walk(info: &mut CodeSystemInfo, list: &Value, parent: Option<&str>, depth: usize) {
        let Value::Array(a) = list else { return };
        if depth > 64 {
            return;
        }
        for c in a {
            let Some(code) = c.get("code").and_then(Value::as_str) else {
                continue;
            };
            info.order.push(code.to_string());
            let ps = info.parents.entry(code.to_string()).or_default();
            if let Some(p) = parent {
                ps.push(p.to_string());
            }
            if let Some(Value::Array(props)) = c.get("property") {
                for p in props {
                    let Some(pc) = p.get("code").and_then(Value::as_str) else {
                        continue;
                    };
                    let val = p
                        .as_object()
                        .into_iter()
                        .flat_map(|o| o.iter())
                        .find(|(k, _)| k.starts_with("value"))
                        .map(|(_, v)| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .unwrap_or_default();
                    if pc == "parent" || pc == "subsumedBy" {
                        if let Some(ps) = info.parents.get_mut(code) {
                            ps.push(val.clone());
                        }
                    }
                    info.props.push((code.to_string(), pc.to_string(), val));
                }
            }
            if let Some(children) = c.get("concept") {
                walk(info, children, Some(code), depth + 1);
            }
        }
    }
    if let Some(list) = cs.get("concept") {
        walk(&mut info, list, None, 0);
    }
    info
}

impl CodeSystemInfo {
    fn is_a(&self, code: &str, ancestor: &str) -> bool {
        let mut stack = vec![code];
        let mut seen = HashSet::new();
        while let Some(c) = stack.pop() {
            if c == ancestor {
                return true;
            }
            if !seen.insert(c) {
                continue;
            }
            if let Some(ps) = self.parents.get(c) {
                stack.extend(ps.iter().map(String::as_str));
            }
        }
        false
    }
}

fn filter_codes(info: &CodeSystemInfo, filters: &[Value]) -> Option<Vec<String>> {
    let mut codes: Vec<String> = info.order.clone();
    for f in filters {
        let prop = f.get("property").and_then(Value::as_str)?;
        let op = f.get("op").and_then(Value::as_str)?;
        let value = f.get("value").and_then(Value::as_str)?;
        codes.retain(|c| match (prop, op) {
            (_, "is-a") => info.is_a(c, value),
            (_, "descendent-of") => c != value && info.is_a(c, value),
            (_, "is-not-a") => !info.is_a(c, value),
            ("concept" | "code", "=") => c == value,
            ("concept" | "code", "in") => value.split(',').any(|v| v.trim() == c),
            (p, "=") => info
                .props
                .iter()
                .any(|(pc, pp, pv)| pc == c && pp == p && pv == value),
            (p, "in") => info
                .props
                .iter()
                .any(|(pc, pp, pv)| pc == c && pp == p && value.split(',').any(|v| v.trim() == pv)),
            _ => false,
        });
        if !matches!(op, "is-a" | "descendent-of" | "is-not-a" | "=" | "in") {
            return None;
        }
    }
    Some(codes)
}

fn code_list(include: &Value) -> Vec<String> {
    match include.get("concept") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|c| c.get("code").and_then(Value::as_str).map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Expands the include/exclude component into `out`.
fn expand_component(reg: &Registry, inc: &Value, out: &mut Expansion) {
    let system = inc.get("system").and_then(Value::as_str);
    let imports: Vec<&str> = match inc.get("valueSet") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    };
    let mut part = Expansion {
        complete: true,
        ..Default::default()
    };
    if let Some(system) = system {
        let concepts = code_list(inc);
        let filters: Vec<Value> = match inc.get("filter") {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        if !concepts.is_empty() {
            for c in concepts {
                part.add(system, &c);
            }
        } else if is_grammar_system(system) && filters.is_empty() {
            part.grammar_systems.push(system.to_string());
        } else {
            match reg.resource_json(system, RType::CodeSystem) {
                Some((_, cs)) => {
                    let info = code_system_info(&cs);
                    if info.content != "complete" {
                        part = Expansion::incomplete(format!(
                            "code system {system} is not complete here ({})",
                            info.content
                        ));
                    } else if filters.is_empty() {
                        for c in &info.order {
                            part.add(system, c);
                        }
                    } else {
                        match filter_codes(&info, &filters) {
                            Some(codes) => {
                                for c in codes {
                                    part.add(system, &c);
                                }
                            }
                            None => {
                                part =
                                    Expansion::incomplete(format!("unsupported filter on {system}"))
                            }
                        }
                    }
                }
                None => {
                    part = Expansion::incomplete(format!(
                        "code system {system} is not available locally"
                    ));
                }
            }
        }
    }
    for (k, vs) in imports.iter().enumerate() {
        let sub = expand(reg, vs);
        if system.is_none() && k == 0 {
            part = Expansion {
                codes: sub.codes.clone(),
                grammar_systems: sub.grammar_systems.clone(),
                complete: sub.complete,
                reason: sub.reason.clone(),
            };
        } else {
            // intersection
            for (s, cs) in part.codes.iter_mut() {
                let other = sub.codes.get(s);
                cs.retain(|c| other.is_some_and(|o| o.contains(c)));
            }
            if !sub.complete {
                part.complete = false;
                part.reason = sub.reason.clone();
            }
        }
    }
    out.merge(&part);
}

fn do_expand(reg: &Registry, vs: &Value) -> Expansion {
    if let Some(compose) = vs.get("compose") {
        let mut out = Expansion {
            complete: true,
            ..Default::default()
        };
        if let Some(Value::Array(incs)) = compose.get("include") {
            for inc in incs {
                expand_component(reg, inc, &mut out);
            }
        }
        if let Some(Value::Array(excs)) = compose.get("exclude") {
            for exc in excs {
                let mut ex = Expansion {
                    complete: true,
                    ..Default::default()
                };
                expand_component(reg, exc, &mut ex);
                if !ex.complete || !ex.grammar_systems.is_empty() {
                    out.complete = false;
                    out.reason = "exclude not expandable".into();
                }
                for (s, cs) in &ex.codes {
                    if let Some(mine) = out.codes.get_mut(s) {
                        mine.retain(|c| !cs.contains(c));
                    }
                }
            }
        }
        return out;
    }
    if let Some(Value::Array(contains)) = vs.get("expansion").and_then(|e| e.get("contains")) {
        let mut out = Expansion {
            complete: true,
            ..Default::default()
        };
        fn walk(out: &mut Expansion, list: &[Value], depth: usize) {
            for c in list {
                if let (Some(s), Some(code)) = (
                    c.get("system").and_then(Value::as_str),
                    c.get("code").and_then(Value::as_str),
                ) {
                    out.add(s, code);
                }
                if let Some(Value::Array(sub)) = c.get("contains") {
                    if depth < 32 {
                        walk(out, sub, depth + 1);
                    }
                }
            }
        }
        walk(&mut out, contains, 0);
        return out;
    }
    Expansion::incomplete("value set has no compose or expansion")
}

/// The (cached) local expansion of a value set.
pub(crate) fn expand(reg: &Registry, url: &str) -> Arc<Expansion> {
    // the cached expansion first, without touching the JSON
    if let Some(e) = reg
        .find(url, RType::ValueSet)
        .and_then(|i| reg.entry(i))
        .and_then(|e| e.expansion.get())
    {
        return e.clone();
    }
    let Some((i, json)) = reg.resource_json(url, RType::ValueSet) else {
        return Arc::new(Expansion::incomplete(format!(
            "value set {url} is not available locally"
        )));
    };
    let Some(entry) = reg.entry(i) else {
        return Arc::new(Expansion::incomplete("no entry"));
    };
    if let Some(e) = entry.expansion.get() {
        return e.clone();
    }
    match guarded(i, 1, || do_expand(reg, &json)) {
        Some(e) => {
            let _ = entry.expansion.set(Arc::new(e));
            entry
                .expansion
                .get()
                .cloned()
                .unwrap_or_else(|| Arc::new(Expansion::incomplete("race")))
        }
        None => Arc::new(Expansion::incomplete(format!(
            "value set {url} includes itself"
        ))),
    }
}

/// The codes of a locally known CodeSystem (cached; incomplete unless `content = complete`).
fn system_codes(reg: &Registry, system: &str) -> Option<Arc<Expansion>> {
    let i = reg.find(system, RType::CodeSystem)?;
    let entry = reg.entry(i)?;
    if let Some(e) = entry.expansion.get() {
        return Some(e.clone());
    }
    let cs = entry.json()?;
    let content = cs
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("complete");
    let mut exp = if content == "complete" {
        Expansion {
            complete: true,
            ..Default::default()
        }
    } else {
        Expansion::incomplete(format!("code system {system} is {content} here"))
    };
    let info = code_system_info(&cs);
    let ci = cs.get("caseSensitive").and_then(Value::as_bool) == Some(false);
    for c in &info.order {
        if ci {
            exp.add(system, &c.to_lowercase());
        } else {
            exp.add(system, c);
        }
    }
    if ci {
        exp.reason = "case-insensitive".into();
    }
    let _ = entry.expansion.set(Arc::new(exp));
    entry.expansion.get().cloned()
}

/// Whether a CodeSystem is locally known and complete; then `Some(contains code)`.
pub(crate) fn code_in_system(reg: &Registry, system: &str, code: &str) -> Option<bool> {
    if is_grammar_system(system) {
        return Some(grammar_ok(system, code));
    }
    let exp = system_codes(reg, system)?;
    if !exp.complete {
        return None;
    }
    if exp.reason == "case-insensitive" {
        return exp.contains(Some(system), &code.to_lowercase());
    }
    exp.contains(Some(system), code)
}

/// Codings of a coded value: (system, code) pairs.
pub(crate) fn codings<'v>(value: &'v Value, fhir_type: &str) -> Vec<(Option<&'v str>, &'v str)> {
    let pair = |c: &'v Value| -> Option<(Option<&'v str>, &'v str)> {
        Some((
            c.get("system").and_then(Value::as_str),
            c.get("code").and_then(Value::as_str)?,
        ))
    };
    match value {
        Value::String(s) => vec![(None, s.as_str())],
        Value::Object(o) => {
            if let Some(Value::Array(cs)) = o.get("coding") {
                cs.iter().filter_map(pair).collect()
            } else if fhir_type == "CodeableConcept" {
                Vec::new()
            } else {
                pair(value).into_iter().collect()
            }
        }
        _ => Vec::new(),
    }
}

/// `memberOf()` support.
pub(crate) struct Terminology<'r>(pub &'r Registry);

impl fhirpath::TerminologyProvider for Terminology<'_> {
    fn member_of(
        &self,
        value: &Value,
        fhir_type: &str,
        value_set: &str,
    ) -> Result<Option<bool>, String> {
        let exp = expand(self.0, value_set);
        let cs = codings(value, fhir_type);
        let mut unknown = false;
        for (s, c) in &cs {
            match exp.contains(*s, c) {
                Some(true) => return Ok(Some(true)),
                Some(false) => {}
                None => unknown = true,
            }
        }
        if unknown || cs.is_empty() {
            Ok(None)
        } else {
            Ok(Some(false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryBuilder;
    use serde_json::json;

    fn registry() -> Registry {
        let mut b = RegistryBuilder::new();
        b.add_resource(json!({
            "resourceType": "CodeSystem", "url": "http://example.org/cs", "content": "complete",
            "concept": [
                {"code": "a", "concept": [{"code": "a1"}, {"code": "a2", "concept": [{"code": "a2x"}]}]},
                {"code": "b", "property": [{"code": "status", "valueCode": "retired"}]}
            ]
        }))
        .unwrap();
        b.add_resource(json!({
            "resourceType": "ValueSet", "url": "http://example.org/vs-all",
            "compose": {"include": [{"system": "http://example.org/cs"}]}
        }))
        .unwrap();
        b.add_resource(json!({
            "resourceType": "ValueSet", "url": "http://example.org/vs-isa",
            "compose": {"include": [{"system": "http://example.org/cs",
                "filter": [{"property": "concept", "op": "is-a", "value": "a2"}]}]}
        }))
        .unwrap();
        b.add_resource(json!({
            "resourceType": "ValueSet", "url": "http://example.org/vs-import",
            "compose": {"include": [{"valueSet": ["http://example.org/vs-isa"]},
                                    {"system": "http://other.org", "concept": [{"code": "z"}]}],
                        "exclude": [{"system": "http://example.org/cs", "concept": [{"code": "a2x"}]}]}
        }))
        .unwrap();
        b.add_resource(json!({
            "resourceType": "ValueSet", "url": "http://example.org/vs-snomed",
            "compose": {"include": [{"system": "http://snomed.info/sct",
                "filter": [{"property": "concept", "op": "is-a", "value": "1"}]}]}
        }))
        .unwrap();
        b.build().unwrap()
    }

    #[test]
    fn expansion() {
        let r = registry();
        let all = expand(&r, "http://example.org/vs-all");
        assert!(all.complete);
        assert_eq!(
            all.contains(Some("http://example.org/cs"), "a2x"),
            Some(true)
        );
        assert_eq!(
            all.contains(Some("http://example.org/cs"), "c"),
            Some(false)
        );
        assert_eq!(all.contains(None, "b"), Some(true));
        let isa = expand(&r, "http://example.org/vs-isa");
        assert_eq!(
            isa.contains(Some("http://example.org/cs"), "a2"),
            Some(true)
        );
        assert_eq!(
            isa.contains(Some("http://example.org/cs"), "a2x"),
            Some(true)
        );
        assert_eq!(
            isa.contains(Some("http://example.org/cs"), "a1"),
            Some(false)
        );
        let imp = expand(&r, "http://example.org/vs-import");
        assert!(imp.complete);
        assert_eq!(
            imp.contains(Some("http://example.org/cs"), "a2"),
            Some(true)
        );
        assert_eq!(
            imp.contains(Some("http://example.org/cs"), "a2x"),
            Some(false)
        );
        assert_eq!(imp.contains(Some("http://other.org"), "z"), Some(true));
        let sn = expand(&r, "http://example.org/vs-snomed");
        assert!(!sn.complete);
        assert_eq!(sn.contains(Some("http://snomed.info/sct"), "1"), None);
        let missing = expand(&r, "http://example.org/nope");
        assert_eq!(missing.contains(None, "x"), None);
    }

    #[test]
    fn grammars() {
        assert!(grammar_ok(BCP47, "en-GB"));
        assert!(!grammar_ok(BCP47, "en GB"));
        assert!(grammar_ok(MIME, "text/plain; charset=utf-8"));
        assert!(!grammar_ok(MIME, "textplain"));
    }
}
