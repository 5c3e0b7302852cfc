//! ElementDefinitions as the validator uses them ([`Elem`]), snapshot
//! generation from a differential against the base snapshot
//! ([`generate_snapshot`]) and compilation of a snapshot into an element tree
//! ([`link_tree`]).
//!
//! Elements are identified by their ElementDefinition `id`
//! (`Patient.identifier:nhsNumber.system`). Differential elements without a
//! usable `id` get one computed from `path` and the slice context (the most
//! recent `sliceName` seen on each path prefix). Elements under a datatype
//! that the base snapshot does not expand (`Patient.identifier.system`) are
//! created by copying the snapshot of the element's type (or of its type
//! profile) under the element.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::fx::FxMap;
use crate::Severity;

/// A `type` entry of an ElementDefinition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TypeRef {
    /// Type code (`string`, `CodeableConcept`, `Extension`, `BackboneElement`,
    /// `http://hl7.org/fhirpath/System.String`, …).
    pub code: String,
    pub profiles: Vec<String>,
    pub target_profiles: Vec<String>,
    /// `elementdefinition-profile-element` of the first profile: the id of the
    /// element of that profile that the type refers to.
    pub profile_element: Option<String>,
}

/// A binding of a coded element.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Binding {
    pub strength: String,
    pub value_set: Option<String>,
    /// R5 additional bindings (as extensions) with purpose `required`: value sets
    /// every coded value must also come from.
    pub additional_required: Vec<String>,
}

/// One invariant.
#[derive(Debug, Clone)]
pub(crate) struct Constraint {
    pub key: String,
    pub severity: Severity,
    pub human: String,
    pub expression: Option<String>,
    /// `constraint.source` (the definition that introduced it).
    pub source: Option<String>,
    /// Parsed expression (filled by [`compile_constraints`]); `Err` keeps the parse error.
    pub expr: Option<Result<Arc<fhirpath::Expr>, String>>,
    /// A child element whose absence makes the invariant trivially true
    /// (`x.empty() or …`, `x.exists() implies …`, `x.hasValue().not() or …`).
    pub vacuous_without: Option<String>,
    /// The invariant in a form checked natively on the JSON object.
    pub simple: Option<Simple>,
}

/// Invariants made only of child presence tests: `a.exists()`, `b.empty()`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Simple {
    /// `t1 or t2 or …`
    AnyOf(Vec<(String, bool)>),
    /// `t1 implies t2`
    Implies((String, bool), (String, bool)),
}

/// `name.exists()` → (name, true); `name.empty()` → (name, false).
fn presence_term(t: &str) -> Option<(String, bool)> {
    let t = t.trim();
    let (name, exists) = if let Some(n) = t.strip_suffix(".exists()") {
        (n, true)
    } else if let Some(n) = t.strip_suffix(".empty()") {
        (n, false)
    } else {
        return None;
    };
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| (name.to_string(), exists))
}

impl Simple {
    /// Recognises `t or t or …` and `t implies t` over presence terms.
    pub fn parse(src: &str) -> Option<Simple> {
        if let Some((a, b)) = src.split_once(" implies ") {
            return Some(Simple::Implies(presence_term(a)?, presence_term(b)?));
        }
        let terms: Option<Vec<(String, bool)>> = src.split(" or ").map(presence_term).collect();
        let terms = terms?;
        (terms.len() >= 2).then_some(Simple::AnyOf(terms))
    }

    /// Evaluates on an object (`present(name)`: the child exists).
    pub fn holds(&self, present: impl Fn(&str) -> bool) -> bool {
        let term = |(n, exists): &(String, bool)| present(n) == *exists;
        match self {
            Simple::AnyOf(ts) => ts.iter().any(term),
            Simple::Implies(a, b) => !term(a) || term(b),
        }
    }
}

impl Constraint {
    /// Fills [`Constraint::vacuous_without`] and [`Constraint::simple`] from the expression.
    pub fn find_guard(&mut self) {
        let Some(src) = self.expression.as_deref() else {
            return;
        };
        let src = src.trim();
        self.simple = Simple::parse(src);
        let end = src
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(src.len());
        let (name, rest) = src.split_at(end);
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return;
        }
        let rest = rest.trim_start();
        let guarded = [
            ".empty() or ",
            ".exists() implies ",
            ".hasValue().not() or ",
        ]
        .iter()
        .any(|p| rest.starts_with(p));
        if guarded {
            self.vacuous_without = Some(name.to_string());
        }
    }
}

impl Constraint {
    /// Whether this is a base R4 invariant (from a core definition).
    pub fn is_base(&self) -> bool {
        match &self.source {
            Some(s) => s.starts_with("http://hl7.org/fhir/StructureDefinition/"),
            None => {
                let prefix = self.key.split('-').next().unwrap_or("");
                !prefix.is_empty()
                    && prefix.len() <= 4
                    && self
                        .key
                        .get(prefix.len()..)
                        .is_some_and(|r| r.starts_with('-'))
                    && self
                        .key
                        .get(prefix.len() + 1..)
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            }
        }
    }
}

/// Slicing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    Open,
    Closed,
    OpenAtEnd,
}

/// `ElementDefinition.slicing`.
#[derive(Debug, Clone)]
pub(crate) struct Slicing {
    /// (type, path): `value`/`pattern`/`type`/`profile`/`exists`.
    pub discriminators: Vec<(String, String)>,
    pub rules: Rules,
    pub ordered: bool,
}

/// One element of a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Elem {
    pub id: String,
    pub path: String,
    pub slice_name: Option<String>,
    pub min: u32,
    /// `None` = `*`.
    pub max: Option<u32>,
    pub base_path: String,
    pub base_min: u32,
    pub base_max: Option<u32>,
    pub types: Vec<TypeRef>,
    /// (`fixedUri` → "Uri", value).
    pub fixed: Option<Value>,
    pub pattern: Option<Value>,
    pub binding: Option<Binding>,
    pub constraints: Vec<Constraint>,
    pub slicing: Option<Slicing>,
    pub content_reference: Option<String>,
    pub is_modifier: bool,
    pub max_length: Option<usize>,
    /// `minLength` extension.
    pub min_length: Option<usize>,
    /// `minValue[x]` / `maxValue[x]` (also R5 `…Duration`): (type suffix, value).
    pub min_value: Option<(String, Value)>,
    pub max_value: Option<(String, Value)>,
    /// R5 `mustHaveValue` (as extension): a primitive must have a value.
    pub must_have_value: bool,
    /// R5 `valueAlternatives` (as extension): extensions allowed in place of a value.
    pub value_alternatives: Vec<String>,
    /// `narrative-language-control` codes (`_no`, `_yes`, `_resource`, or languages).
    pub narrative_language: Vec<String>,
    /// Tree (filled by [`link_tree`]): indexes of child elements (not slices).
    pub children: Vec<usize>,
    /// Indexes of the slices of this element.
    pub slices: Vec<usize>,
    /// Name of the element (last path segment, e.g. `value[x]`).
    pub name: String,
    /// JSON property name → child index (not for choice children).
    pub child_names: FxMap<String, usize>,
    /// Choice children: (stem, index), e.g. (`value`, 7).
    pub choice_children: Vec<(String, usize)>,
    /// Children that must be counted even when absent (min tighter than base,
    /// or slices with a minimum).
    pub must_count: Vec<usize>,
    /// The FHIR type of instances when the element has a single type (backbone
    /// elements: their model name such as `Patient.contact`); empty otherwise.
    pub fhir_type: String,
    /// Whether the element holds resources (`contained`, `entry.resource`).
    pub holds_resources: bool,
    /// Filled by [`link_tree`]: whether items need value checks (fixed,
    /// pattern, lengths, ranges, presence, binding).
    pub value_checks: bool,
    /// Filled by [`link_tree`]: whether there are invariants evaluated via FHIRPath.
    pub has_invariants: bool,
    /// Filled by [`link_tree`]: whether a type refers to an element of another profile.
    pub has_profile_element: bool,
}

fn parse_max(v: Option<&Value>) -> Option<Option<u32>> {
    let s = v?.as_str()?;
    if s == "*" {
        Some(None)
    } else {
        s.parse::<u32>().ok().map(Some)
    }
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn as_u32(v: Option<&Value>) -> Option<u32> {
    let v = v?;
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

const PROFILE_ELEMENT: &str =
    "http://hl7.org/fhir/StructureDefinition/elementdefinition-profile-element";
const ADDITIONAL_BINDING: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-ElementDefinition.binding.additional";
const NARRATIVE_LANGUAGE: &str =
    "http://hl7.org/fhir/StructureDefinition/narrative-language-control";
const MIN_LENGTH: &str = "http://hl7.org/fhir/StructureDefinition/minLength";
const MUST_HAVE_VALUE: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-ElementDefinition.mustHaveValue";
const VALUE_ALTERNATIVES: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-ElementDefinition.valueAlternatives";

/// The `value[x]` of every extension of `v` with the given URL.
fn ext_values<'v>(v: &'v Value, url: &'v str) -> impl Iterator<Item = &'v Value> + 'v {
    v.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| e.get("url").and_then(Value::as_str) == Some(url))
        .filter_map(|e| {
            e.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value"))
                .map(|(_, v)| v)
        })
}

/// The `value[x]` of the first extension of `v` with the given URL.
fn ext_value<'v>(v: &'v Value, url: &'v str) -> Option<&'v Value> {
    ext_values(v, url).next()
}

pub(crate) fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Parses an ElementDefinition. Missing `min`/`max` are `None` in the
/// returned flags (for differential merging).
pub(crate) struct RawElem {
    pub elem: Elem,
    pub has_min: bool,
    pub has_max: bool,
    pub has_types: bool,
    pub given_id: Option<String>,
    pub raw: Map<String, Value>,
}

pub(crate) fn parse_elem(v: &Value) -> Option<RawElem> {
    let o = v.as_object()?;
    let path = o.get("path")?.as_str()?.to_string();
    let given_id = o.get("id").and_then(Value::as_str).map(str::to_string);
    let slice_name = o
        .get("sliceName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let min = as_u32(o.get("min"));
    let max = parse_max(o.get("max"));
    let base = o.get("base");
    let base_path = base
        .and_then(|b| b.get("path"))
        .and_then(Value::as_str)
        .unwrap_or(&path)
        .to_string();
    let base_min = as_u32(base.and_then(|b| b.get("min"))).unwrap_or(min.unwrap_or(0));
    let base_max = parse_max(base.and_then(|b| b.get("max"))).unwrap_or(max.unwrap_or(None));
    let types: Vec<TypeRef> = match o.get("type") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| {
                let code = t.get("code")?.as_str()?.to_string();
                let profile_element = t
                    .get("_profile")
                    .and_then(|p| match p {
                        Value::Array(a) => a.first(),
                        other => Some(other),
                    })
                    .and_then(|p| ext_value(p, PROFILE_ELEMENT))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Some(TypeRef {
                    code,
                    profiles: str_list(t.get("profile")),
                    target_profiles: str_list(t.get("targetProfile")),
                    profile_element,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut fixed = None;
    let mut pattern = None;
    let mut min_value = None;
    let mut max_value = None;
    let upper = |r: &str| r.starts_with(|c: char| c.is_ascii_uppercase());
    for (k, val) in o {
        if let Some(rest) = k.strip_prefix("fixed") {
            if upper(rest) {
                fixed = Some(val.clone());
            }
        } else if let Some(rest) = k.strip_prefix("pattern") {
            if upper(rest) {
                pattern = Some(val.clone());
            }
        } else if let Some(rest) = k.strip_prefix("minValue") {
            if upper(rest) {
                min_value = Some((rest.to_string(), val.clone()));
            }
        } else if let Some(rest) = k.strip_prefix("maxValue") {
            if upper(rest) {
                max_value = Some((rest.to_string(), val.clone()));
            }
        }
    }
    let min_length = ext_value(v, MIN_LENGTH)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok());
    let must_have_value = ext_value(v, MUST_HAVE_VALUE)
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let value_alternatives: Vec<String> = ext_values(v, VALUE_ALTERNATIVES)
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let narrative_language: Vec<String> = ext_values(v, NARRATIVE_LANGUAGE)
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let binding = o.get("binding").and_then(|b| {
        let additional_required = b
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.get("url").and_then(Value::as_str) == Some(ADDITIONAL_BINDING))
            .filter(|e| ext_value(e, "purpose").and_then(Value::as_str) == Some("required"))
            .filter_map(|e| ext_value(e, "valueSet").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        Some(Binding {
            additional_required,
            strength: b.get("strength")?.as_str()?.to_string(),
            value_set: b
                .get("valueSet")
                .or_else(|| b.get("valueSetUri"))
                .or_else(|| b.get("valueSetReference").and_then(|r| r.get("reference")))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    });
    let constraints = match o.get("constraint") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|c| {
                let key = c.get("key")?.as_str()?.to_string();
                let severity = match c.get("severity").and_then(Value::as_str) {
                    Some("warning") => Severity::Warning,
                    Some("information") => Severity::Information,
                    _ => Severity::Error,
                };
                Some(Constraint {
                    key,
                    severity,
                    human: c
                        .get("human")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    expression: c
                        .get("expression")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    source: c.get("source").and_then(Value::as_str).map(str::to_string),
                    expr: None,
                    vacuous_without: None,
                    simple: None,
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let slicing = o.get("slicing").map(|s| {
        let discriminators = match s.get("discriminator") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|d| {
                    Some((
                        d.get("type")?.as_str()?.to_string(),
                        d.get("path")?.as_str()?.to_string(),
                    ))
                })
                .collect(),
            _ => Vec::new(),
        };
        let rules = match s.get("rules").and_then(Value::as_str) {
            Some("closed") => Rules::Closed,
            Some("openAtEnd") => Rules::OpenAtEnd,
            _ => Rules::Open,
        };
        Slicing {
            discriminators,
            rules,
            ordered: s.get("ordered").and_then(Value::as_bool).unwrap_or(false),
        }
    });
    let name = last_segment(&path).to_string();
    let elem = Elem {
        id: given_id.clone().unwrap_or_else(|| path.clone()),
        path,
        slice_name,
        min: min.unwrap_or(0),
        max: max.unwrap_or(None),
        base_path,
        base_min,
        base_max,
        types,
        fixed,
        pattern,
        binding,
        constraints,
        slicing,
        content_reference: o
            .get("contentReference")
            .and_then(Value::as_str)
            .map(str::to_string),
        is_modifier: o
            .get("isModifier")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        max_length: as_u32(o.get("maxLength")).map(|n| n as usize),
        min_length,
        min_value,
        max_value,
        must_have_value,
        value_alternatives,
        narrative_language,
        children: Vec::new(),
        slices: Vec::new(),
        name,
        child_names: FxMap::default(),
        choice_children: Vec::new(),
        must_count: Vec::new(),
        fhir_type: String::new(),
        holds_resources: false,
        value_checks: false,
        has_invariants: false,
        has_profile_element: false,
    };
    Some(RawElem {
        elem,
        has_min: min.is_some(),
        has_max: max.is_some(),
        has_types: o.contains_key("type"),
        given_id,
        raw: o.clone(),
    })
}

/// Parses an element list (`snapshot.element`).
pub(crate) fn parse_elements(list: &Value) -> Vec<Elem> {
    match list {
        Value::Array(a) => a
            .iter()
            .filter_map(parse_elem)
            .map(|mut r| {
                if r.given_id.is_none() {
                    r.elem.id = r.elem.path.clone();
                }
                r.elem
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Strips slice names from an id: `Patient.identifier:nhs.system` → `Patient.identifier.system`.
pub(crate) fn id_to_path(id: &str) -> String {
    id.split('.')
        .map(|seg| seg.split(':').next().unwrap_or(seg))
        .collect::<Vec<_>>()
        .join(".")
}

/// Splits an id into (parent id, last segment).
fn split_id(id: &str) -> Option<(&str, &str)> {
    let (p, l) = id.rsplit_once('.')?;
    Some((p, l))
}

/// Looks up the snapshot of a type or profile while generating snapshots.
pub(crate) trait SnapshotSource {
    /// Snapshot elements of the profile `url` or of the base definition of type `code`.
    fn type_snapshot(&self, code: &str, profile: Option<&str>) -> Option<Arc<Vec<Elem>>>;
}

/// Computes ids for differential elements (using given ids when they agree with the path).
fn diff_ids(diff: &[RawElem]) -> Vec<String> {
    let mut ctx: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(diff.len());
    for d in diff {
        let path = &d.elem.path;
        // update slice context
        ctx.retain(|k, _| !(k.len() > path.len() && k.starts_with(path.as_str())));
        match &d.elem.slice_name {
            Some(s) => {
                ctx.insert(path.clone(), s.clone());
            }
            None => {
                ctx.remove(path);
            }
        }
        if let Some(id) = &d.given_id {
            if id_to_path(id) == *path {
                out.push(id.clone());
                continue;
            }
        }
        // build from the context
        let segs: Vec<&str> = path.split('.').collect();
        let mut id = String::new();
        let mut prefix = String::new();
        for (i, seg) in segs.iter().enumerate() {
            if i > 0 {
                prefix.push('.');
                id.push('.');
            }
            prefix.push_str(seg);
            id.push_str(seg);
            if let Some(s) = ctx.get(&prefix) {
                id.push(':');
                id.push_str(s);
            }
        }
        out.push(id);
    }
    out
}

fn merge(e: &mut Elem, d: &RawElem) {
    if d.has_min {
        e.min = d.elem.min;
    }
    if d.has_max {
        e.max = d.elem.max;
    }
    if d.has_types && !d.elem.types.is_empty() {
        e.types = d.elem.types.clone();
    }
    if d.elem.fixed.is_some() {
        e.fixed = d.elem.fixed.clone();
    }
    if d.elem.pattern.is_some() {
        e.pattern = d.elem.pattern.clone();
    }
    if let Some(b) = &d.elem.binding {
        e.binding = Some(b.clone());
    }
    for c in &d.elem.constraints {
        if !e.constraints.iter().any(|x| x.key == c.key) {
            e.constraints.push(c.clone());
        }
    }
    if d.elem.slicing.is_some() {
        e.slicing = d.elem.slicing.clone();
    }
    if d.raw.contains_key("isModifier") {
        e.is_modifier = d.elem.is_modifier;
    }
    if d.elem.max_length.is_some() {
        e.max_length = d.elem.max_length;
    }
    if d.elem.min_length.is_some() {
        e.min_length = d.elem.min_length;
    }
    if d.elem.min_value.is_some() {
        e.min_value = d.elem.min_value.clone();
    }
    if d.elem.max_value.is_some() {
        e.max_value = d.elem.max_value.clone();
    }
    if d.elem.must_have_value {
        e.must_have_value = true;
    }
    if !d.elem.value_alternatives.is_empty() {
        e.value_alternatives = d.elem.value_alternatives.clone();
    }
    if !d.elem.narrative_language.is_empty() {
        e.narrative_language = d.elem.narrative_language.clone();
    }
    if d.elem.content_reference.is_some() {
        e.content_reference = d.elem.content_reference.clone();
    }
    if d.elem.slice_name.is_some() && e.slice_name.is_none() {
        e.slice_name = d.elem.slice_name.clone();
    }
}

/// Snapshot generator state.
struct Gen<'s> {
    snap: Vec<Elem>,
    /// The base snapshot (content references copy from it, unconstrained).
    base: &'s [Elem],
    src: &'s dyn SnapshotSource,
    warnings: Vec<String>,
}

impl Gen<'_> {
    fn find(&self, id: &str) -> Option<usize> {
        self.snap.iter().position(|e| e.id == id)
    }

    /// End (exclusive) of the region of `idx`: its descendants and slices.
    fn region_end(&self, idx: usize) -> usize {
        let Some(e) = self.snap.get(idx) else {
            return idx;
        };
        let dot = format!("{}.", e.id);
        let colon = format!("{}:", e.id);
        let mut end = idx + 1;
        while let Some(x) = self.snap.get(end) {
            if x.id.starts_with(&dot) || x.id.starts_with(&colon) {
                end += 1;
            } else {
                break;
            }
        }
        end
    }

    fn has_children(&self, idx: usize) -> bool {
        let Some(e) = self.snap.get(idx) else {
            return false;
        };
        let dot = format!("{}.", e.id);
        self.snap
            .get(idx + 1)
            .is_some_and(|x| x.id.starts_with(&dot))
    }

    /// Copies the children of the element's type (or type profile, or content reference).
    fn expand(&mut self, idx: usize) -> bool {
        let Some(e) = self.snap.get(idx) else {
            return false;
        };
        let (pid, ppath) = (e.id.clone(), e.path.clone());
        let mut copies: Vec<Elem> = Vec::new();
        if let Some(cr) = &e.content_reference {
            let target = cr.trim_start_matches('#').to_string();
            let target = target
                .rsplit_once('#')
                .map_or(target.clone(), |(_, t)| t.to_string());
            let base = self.base;
            if let Some(t) = base.iter().position(|x| x.id == target) {
                let tid = format!("{target}.");
                let end = base
                    .iter()
                    .skip(t + 1)
                    .position(|x| {
                        !x.id.starts_with(&tid) && !x.id.starts_with(&format!("{target}:"))
                    })
                    .map_or(base.len(), |n| t + 1 + n);
                for x in base.get(t + 1..end).unwrap_or(&[]) {
                    if !x.id.starts_with(&tid) || x.id.contains(':') {
                        continue;
                    }
                    let mut c = x.clone();
                    c.id = format!("{pid}.{}", x.id.get(tid.len()..).unwrap_or(""));
                    c.path = format!("{ppath}.{}", x.path.get(tid.len()..).unwrap_or(""));
                    copies.push(c);
                }
            }
        } else {
            if e.types.len() != 1 {
                // choice or untyped: cannot expand (unless all share a type profile)
                if e.types.is_empty() {
                    return false;
                }
            }
            let Some(t) = e.types.first() else {
                return false;
            };
            let profile = t.profiles.first().map(String::as_str);
            let code = t.code.clone();
            let snap = match self.src.type_snapshot(&code, profile) {
                Some(s) => s,
                None => {
                    if profile.is_some() {
                        match self.src.type_snapshot(&code, None) {
                            Some(s) => s,
                            None => return false,
                        }
                    } else {
                        return false;
                    }
                }
            };
            let Some(root) = snap.first() else {
                return false;
            };
            let rid = format!("{}.", root.id);
            let rpath = format!("{}.", root.path);
            for x in snap.iter().skip(1) {
                let (Some(idr), Some(pr)) = (x.id.strip_prefix(&rid), x.path.strip_prefix(&rpath))
                else {
                    continue;
                };
                let mut c = x.clone();
                c.id = format!("{pid}.{idr}");
                c.path = format!("{ppath}.{pr}");
                copies.push(c);
            }
        }
        if copies.is_empty() {
            return false;
        }
        let at = idx + 1;
        self.snap.splice(at..at, copies);
        true
    }

    /// Finds or creates the element with id `id`.
    fn ensure(&mut self, id: &str, depth: usize) -> Option<usize> {
        if let Some(i) = self.find(id) {
            return Some(i);
        }
        if depth > 64 {
            return None;
        }
        let (parent, last) = split_id(id)?;
        let (name, slice) = match last.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (last, None),
        };
        if let Some(slice) = slice {
            let unsliced = format!("{parent}.{name}");
            let u = self.ensure(&unsliced, depth + 1)?;
            let end = self.region_end(u);
            let src: Vec<Elem> = self
                .snap
                .get(u..self.region_end_children(u))
                .unwrap_or(&[])
                .to_vec();
            let uid = self.snap.get(u)?.id.clone();
            let mut copies = Vec::with_capacity(src.len());
            for (k, x) in src.into_iter().enumerate() {
                let mut c = x;
                if k == 0 {
                    c.id = id.to_string();
                    c.slice_name = Some(slice.to_string());
                    c.slicing = None;
                    // a type slice of a choice element: valueQuantity
                    if name.ends_with("[x]") {
                        let stem = name.trim_end_matches("[x]");
                        if let Some(tn) = slice.strip_prefix(stem) {
                            let keep: Vec<TypeRef> = c
                                .types
                                .iter()
                                .filter(|t| upper_first(&t.code) == tn)
                                .cloned()
                                .collect();
                            if !keep.is_empty() {
                                c.types = keep;
                            }
                        }
                    }
                } else {
                    c.id = format!("{id}{}", c.id.get(uid.len()..).unwrap_or(""));
                }
                copies.push(c);
            }
            // slicing on a choice element without declared slicing: by type
            if let Some(ue) = self.snap.get_mut(u) {
                if ue.slicing.is_none() && name.ends_with("[x]") {
                    ue.slicing = Some(Slicing {
                        discriminators: vec![("type".into(), "$this".into())],
                        rules: Rules::Open,
                        ordered: false,
                    });
                }
            }
            self.snap.splice(end..end, copies);
            return self.find(id);
        }
        let p = self.ensure(parent, depth + 1)?;
        if !self.has_children(p) {
            self.expand(p);
            if let Some(i) = self.find(id) {
                return Some(i);
            }
        }
        // choice renamed: valueQuantity → value[x]:valueQuantity
        let pe = self.snap.get(p)?;
        let ppath = pe.id.clone();
        let stem_match = self
            .snap
            .iter()
            .skip(p + 1)
            .take_while(|x| x.id.starts_with(&format!("{ppath}.")))
            .find(|x| {
                split_id(&x.id).is_some_and(|(pp, l)| {
                    pp == ppath
                        && l.ends_with("[x]")
                        && name
                            .strip_prefix(l.trim_end_matches("[x]"))
                            .is_some_and(|suffix| {
                                !suffix.is_empty()
                                    && (x.types.is_empty()
                                        || x.types.iter().any(|t| upper_first(&t.code) == suffix))
                            })
                })
            })
            .map(|x| x.id.clone());
        if let Some(choice) = stem_match {
            let sid = format!("{choice}:{name}");
            return self.ensure(&sid, depth + 1);
        }
        None
    }

    /// End of the descendants of `idx` (not its slices).
    fn region_end_children(&self, idx: usize) -> usize {
        let Some(e) = self.snap.get(idx) else {
            return idx;
        };
        let dot = format!("{}.", e.id);
        let mut end = idx + 1;
        while let Some(x) = self.snap.get(end) {
            if x.id.starts_with(&dot) {
                end += 1;
            } else {
                break;
            }
        }
        end
    }
}

fn tighter_max(a: Option<u32>, b: Option<u32>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x < y,
        (Some(_), None) => true,
        _ => false,
    }
}

pub(crate) fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Generates a snapshot: the base snapshot with the differential merged in.
/// Returns the snapshot and warnings (differential elements that could not be placed).
pub(crate) fn generate_snapshot(
    base: &[Elem],
    differential: &Value,
    src: &dyn SnapshotSource,
) -> (Vec<Elem>, Vec<String>) {
    let diff: Vec<RawElem> = match differential {
        Value::Array(a) => a.iter().filter_map(parse_elem).collect(),
        _ => Vec::new(),
    };
    let ids = diff_ids(&diff);
    let mut g = Gen {
        snap: base.to_vec(),
        base,
        src,
        warnings: Vec::new(),
    };
    // A profile on a type whose root path differs (e.g. base "Element"): re-root the diff.
    for (d, id) in diff.iter().zip(ids.iter()) {
        match g.ensure(id, 0) {
            Some(i) => {
                if let Some(e) = g.snap.get_mut(i) {
                    if let (Some(bf), Some(df)) = (&e.fixed, &d.elem.fixed) {
                        if !crate::validate::json_equal(bf, df) {
                            g.warnings.push(format!(
                                "{id}: value is {df} but is fixed to {bf} in the base definition"
                            ));
                        }
                    }
                    merge(e, d);
                }
                // a type profile must describe that type
                for t in &d.elem.types {
                    if matches!(t.code.as_str(), "Resource" | "DomainResource") {
                        continue;
                    }
                    for p in &t.profiles {
                        let root = src
                            .type_snapshot(&t.code, Some(p))
                            .and_then(|s| s.first().map(|r| r.path.clone()));
                        if let Some(rp) = root.filter(|rp| *rp != t.code) {
                            g.warnings.push(format!(
                                "{id}: profile {p} is for type {rp}, but the element's type is {}",
                                t.code
                            ));
                        }
                    }
                }
                // an extension's own definition caps its cardinality (e.g. max 1)
                let ext_profile = g.snap.get(i).and_then(|e| {
                    e.types
                        .iter()
                        .find(|t| t.code == "Extension")
                        .and_then(|t| t.profiles.first().cloned())
                });
                if let Some(url) = ext_profile {
                    let root_max = src
                        .type_snapshot("Extension", Some(&url))
                        .and_then(|s| s.first().map(|r| r.max));
                    if let (Some(Some(m)), Some(e)) = (root_max, g.snap.get_mut(i)) {
                        if !d.has_max && tighter_max(Some(m), e.max) {
                            e.max = Some(m);
                        }
                    }
                }
            }
            None => g
                .warnings
                .push(format!("differential element {id} not found in the base")),
        }
    }
    (g.snap, g.warnings)
}

/// Fills `children`/`slices`/`name` of every element.
pub(crate) fn link_tree(elems: &mut [Elem]) {
    let mut by_id: HashMap<String, usize> = HashMap::with_capacity(elems.len());
    for (i, e) in elems.iter().enumerate() {
        by_id.entry(e.id.clone()).or_insert(i);
    }
    let mut links: Vec<(usize, usize, bool)> = Vec::new();
    for (i, e) in elems.iter().enumerate() {
        if i == 0 {
            continue;
        }
        let Some((parent, last)) = split_id(&e.id) else {
            continue;
        };
        if let Some((name, _slice)) = last.split_once(':') {
            let unsliced = format!("{parent}.{name}");
            if let Some(&u) = by_id.get(&unsliced) {
                links.push((u, i, true));
                continue;
            }
        }
        if let Some(&p) = by_id.get(parent) {
            links.push((p, i, false));
        }
    }
    for e in elems.iter_mut() {
        e.children.clear();
        e.slices.clear();
        e.name = last_segment(&e.path).to_string();
    }
    for (p, c, slice) in links {
        if let Some(pe) = elems.get_mut(p) {
            if slice {
                pe.slices.push(c);
            } else {
                pe.children.push(c);
            }
        }
    }
    // lookup tables
    type Tables = (FxMap<String, usize>, Vec<(String, usize)>, Vec<usize>);
    let mut tables: Vec<Tables> = Vec::with_capacity(elems.len());
    for e in elems.iter() {
        let mut names = FxMap::default();
        let mut choices = Vec::new();
        let mut must = Vec::new();
        for &c in &e.children {
            let Some(ce) = elems.get(c) else { continue };
            match ce.name.strip_suffix("[x]") {
                Some(stem) => choices.push((stem.to_string(), c)),
                None => {
                    names.entry(ce.name.clone()).or_insert(c);
                }
            }
            let slice_min = ce
                .slices
                .iter()
                .any(|&s| elems.get(s).is_some_and(|se| se.min > 0));
            if ce.min > ce.base_min || slice_min {
                must.push(c);
            }
        }
        tables.push((names, choices, must));
    }
    for e in elems.iter_mut() {
        // extensions are always sliced by url (implicit in many differentials)
        if e.slicing.is_none()
            && !e.slices.is_empty()
            && matches!(e.name.as_str(), "extension" | "modifierExtension")
        {
            e.slicing = Some(Slicing {
                discriminators: vec![("value".into(), "url".into())],
                rules: Rules::Open,
                ordered: false,
            });
        }
    }
    for (e, (names, choices, must)) in elems.iter_mut().zip(tables) {
        e.value_checks = e.fixed.is_some()
            || e.pattern.is_some()
            || e.max_length.is_some()
            || e.min_length.is_some()
            || e.min_value.is_some()
            || e.max_value.is_some()
            || e.must_have_value
            || !e.value_alternatives.is_empty()
            || !e.narrative_language.is_empty()
            || e.binding.is_some();
        e.has_invariants = e
            .constraints
            .iter()
            .any(|c| !crate::registry::native_invariant(&c.key));
        e.has_profile_element = e.types.iter().any(|t| t.profile_element.is_some());
        e.child_names = names;
        e.choice_children = choices;
        e.must_count = must;
        e.holds_resources = e.types.iter().any(|t| {
            t.code == "Resource"
                || t.code == "DomainResource"
                || fhir_structure::model::Model::r4().is_resource_type(&t.code)
        });
        e.fhir_type = match e.types.as_slice() {
            [t] if t.code == "BackboneElement" || t.code == "Element" => {
                if fhir_structure::model::Model::r4()
                    .type_def(&e.base_path)
                    .is_some()
                {
                    e.base_path.clone()
                } else {
                    t.code.clone()
                }
            }
            [t] => t.code.clone(),
            [] => {
                let r = e.content_reference.as_deref().unwrap_or("");
                let r = r.rsplit('#').next().unwrap_or(r);
                if fhir_structure::model::Model::r4().type_def(r).is_some() {
                    r.to_string()
                } else {
                    "BackboneElement".to_string()
                }
            }
            _ => String::new(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct NoTypes;
    impl SnapshotSource for NoTypes {
        fn type_snapshot(&self, code: &str, _p: Option<&str>) -> Option<Arc<Vec<Elem>>> {
            if code == "Identifier" {
                Some(Arc::new(parse_elements(&json!([
                    {"id": "Identifier", "path": "Identifier", "min": 0, "max": "*"},
                    {"id": "Identifier.system", "path": "Identifier.system", "min": 0, "max": "1", "type": [{"code": "uri"}]},
                    {"id": "Identifier.value", "path": "Identifier.value", "min": 0, "max": "1", "type": [{"code": "string"}]}
                ]))))
            } else {
                None
            }
        }
    }

    #[test]
    fn merge_slices_and_expand_types() {
        let base = parse_elements(&json!([
            {"id": "Patient", "path": "Patient", "min": 0, "max": "*"},
            {"id": "Patient.identifier", "path": "Patient.identifier", "min": 0, "max": "*", "type": [{"code": "Identifier"}]},
            {"id": "Patient.active", "path": "Patient.active", "min": 0, "max": "1", "type": [{"code": "boolean"}]}
        ]));
        let diff = json!([
            {"id": "Patient.identifier", "path": "Patient.identifier",
             "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}},
            {"path": "Patient.identifier", "sliceName": "nhs", "max": "1"},
            {"path": "Patient.identifier.system", "min": 1, "fixedUri": "https://fhir.nhs.uk/Id/nhs-number"},
            {"id": "Patient.identifier:nhs.value", "path": "Patient.identifier.value", "min": 1},
            {"id": "Patient.active", "path": "Patient.active", "min": 1}
        ]);
        let (mut snap, warnings) = generate_snapshot(&base, &diff, &NoTypes);
        assert!(warnings.is_empty(), "{warnings:?}");
        let ids: Vec<&str> = snap.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "Patient",
                "Patient.identifier",
                "Patient.identifier:nhs",
                "Patient.identifier:nhs.system",
                "Patient.identifier:nhs.value",
                "Patient.active"
            ]
        );
        link_tree(&mut snap);
        let ident = &snap[1];
        assert_eq!(ident.slices, vec![2]);
        assert!(ident.slicing.is_some());
        assert_eq!(snap[2].max, Some(1));
        assert_eq!(snap[2].children, vec![3, 4]);
        assert_eq!(snap[3].min, 1);
        assert_eq!(
            snap[3].fixed,
            Some(json!("https://fhir.nhs.uk/Id/nhs-number"))
        );
        assert_eq!(snap[5].min, 1);
        assert_eq!(snap[0].children, vec![1, 5]);
    }

    #[test]
    fn simple_invariants() {
        let s = Simple::parse("value.empty() or system.exists()").unwrap();
        assert!(s.holds(|n| n == "system"));
        assert!(s.holds(|_| false));
        assert!(!s.holds(|n| n == "value"));
        let pat1 = Simple::parse(
            "name.exists() or telecom.exists() or address.exists() or organization.exists()",
        )
        .unwrap();
        assert!(!pat1.holds(|_| false));
        assert!(pat1.holds(|n| n == "organization"));
        let imp = Simple::parse("a.exists() implies b.empty()").unwrap();
        assert!(imp.holds(|_| false));
        assert!(!imp.holds(|_| true));
        assert!(
            Simple::parse("start.hasValue().not() or end.hasValue().not() or (start <= end)")
                .is_none()
        );
        assert!(Simple::parse("duration.exists() implies duration >= 0").is_none());
        assert!(Simple::parse("name.exists()").is_none());
        assert!(Simple::parse("a.b.exists() or c.exists()").is_none());
    }

    #[test]
    fn choice_type_slice() {
        let base = parse_elements(&json!([
            {"id": "Observation", "path": "Observation"},
            {"id": "Observation.value[x]", "path": "Observation.value[x]", "min": 0, "max": "1",
             "type": [{"code": "Quantity"}, {"code": "string"}]}
        ]));
        let diff = json!([{"path": "Observation.valueString", "maxLength": 5}]);
        let (mut snap, w) = generate_snapshot(&base, &diff, &NoTypes);
        assert!(w.is_empty());
        link_tree(&mut snap);
        assert_eq!(snap[2].id, "Observation.value[x]:valueString");
        assert_eq!(snap[2].types.len(), 1);
        assert_eq!(snap[2].max_length, Some(5));
        assert_eq!(snap[1].slices, vec![2]);
    }
}
