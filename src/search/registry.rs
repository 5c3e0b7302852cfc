//! The search parameters this server supports, per resource type: the R4 core
//! SearchParameters (generated into `profiles/r4-search-parameters.json` by
//! `tools/gen_search_params.py` and embedded in the binary), each with its
//! compiled FHIRPath expression. The CapabilityStatement, the query parser and
//! the write-time indexer all read this one registry, so nothing is advertised
//! that is not parsed and indexed.
//!
//! Left out on purpose (and so rejected with 400 when used): `special`
//! parameters (`_text`, `_content`, `near`, `_query`…), `phonetic` (no phonetic
//! matching), and parameters whose expression does not compile.

use std::collections::BTreeMap;

use once_cell::sync::Lazy;
use serde::Deserialize;

use crate::model::ResourceType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Token,
    Reference,
    Date,
    String,
    Number,
    Quantity,
    Uri,
    Composite,
}

impl ParamKind {
    pub fn code(self) -> &'static str {
        match self {
            ParamKind::Token => "token",
            ParamKind::Reference => "reference",
            ParamKind::Date => "date",
            ParamKind::String => "string",
            ParamKind::Number => "number",
            ParamKind::Quantity => "quantity",
            ParamKind::Uri => "uri",
            ParamKind::Composite => "composite",
        }
    }

    fn parse(s: &str) -> Option<ParamKind> {
        Some(match s {
            "token" => ParamKind::Token,
            "reference" => ParamKind::Reference,
            "date" => ParamKind::Date,
            "string" => ParamKind::String,
            "number" => ParamKind::Number,
            "quantity" => ParamKind::Quantity,
            "uri" => ParamKind::Uri,
            "composite" => ParamKind::Composite,
            _ => return None,
        })
    }

    /// Whether values may carry a comparison prefix (`ge2020`, `lt5`).
    pub fn has_prefixes(self) -> bool {
        matches!(
            self,
            ParamKind::Date | ParamKind::Number | ParamKind::Quantity
        )
    }
}

/// One search parameter on one resource type (or on all of them).
#[derive(Debug)]
pub struct ParamDef {
    pub code: String,
    pub kind: ParamKind,
    /// The canonical URL of the R4 core SearchParameter.
    pub url: String,
    /// The FHIRPath expression (only this type's part of a shared one).
    pub expression: String,
    /// `None` for `_id` and `_lastUpdated`, which live on the resource row.
    pub compiled: Option<fhirpath::Expr>,
    /// When the expression is a union (`A.x | A.y`) at its top level: each
    /// operand, compiled. Index extraction evaluates them one by one and keeps
    /// every value (its rows are deduplicated instead): FHIRPath's `|` removes
    /// duplicates by comparing each value with all before it, which is
    /// quadratic in the values (15 s for an Observation of 4,000 components).
    pub parts: Vec<fhirpath::Expr>,
    /// For references: the allowed target types (empty = any).
    pub targets: Vec<ResourceType>,
    /// For tokens over `code` elements with a required binding to a ValueSet
    /// of one CodeSystem: that system, indexed with each code (so `system|code`
    /// matches and `|code` does not, as for a Coding).
    pub code_system: Option<String>,
    pub description: String,
    /// For composites: one parameter per component, in order. Each has the
    /// component's type (from the definition it names), its expression
    /// (evaluated on each element the composite's expression selects), and the
    /// code `{composite}${k}` under which its index rows are stored, grouped by
    /// element.
    pub components: Vec<ParamDef>,
    /// A composite over the resource itself (expression `Observation`) whose
    /// components are parameters of the same type: it matches when those
    /// parameters all match, so it needs no rows of its own (its components'
    /// codes are those parameters').
    pub resource_level: bool,
    /// The expression is a plain path (`Patient.birthDate`) through elements
    /// that never repeat: a resource has at most one value, so AND-ed tests on
    /// it may be checked against one index row.
    pub single_valued: bool,
    /// A composite that is the union of other composites of the same type
    /// (`combo-code-value-quantity` = `code-value-quantity` or
    /// `component-code-value-quantity`): it is searched as those and has no
    /// rows of its own.
    pub union_of: Vec<String>,
}

impl ParamDef {
    /// Columns of `_id` / `_lastUpdated` are on the resource row, not in an index table.
    pub fn is_resource_column(&self) -> bool {
        self.code == "_id" || self.code == "_lastUpdated"
    }
}

#[derive(Deserialize)]
struct RawParam {
    code: String,
    #[serde(rename = "type")]
    kind: String,
    url: String,
    expression: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    components: Vec<RawComponent>,
    #[serde(default, rename = "codeSystem")]
    code_system: Option<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, Clone)]
struct RawComponent {
    definition: String,
    expression: String,
    #[serde(default, rename = "codeSystem")]
    code_system: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFile {
    common: Vec<RawParam>,
    params: BTreeMap<String, Vec<RawParam>>,
    patient_compartment: BTreeMap<String, Vec<String>>,
}

/// All parameters, indexed by type.
pub struct Registry {
    per_type: Vec<Vec<ParamDef>>,
    common: Vec<ParamDef>,
    patient_compartment: Vec<Vec<String>>,
}

const SOURCE: &str = include_str!("../../profiles/r4-search-parameters.json");
/// Our own parameters (over UK Core extensions), merged into the core table.
const OURS: &str = include_str!("../../profiles/fhirbridge-search-parameters.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OurFile {
    params: BTreeMap<String, Vec<RawParam>>,
    /// Types added to the R4 patient compartment, with their parameters.
    #[serde(default)]
    patient_compartment: BTreeMap<String, Vec<String>>,
}
const EXCLUDED: [&str; 1] = ["phonetic"];

/// See `ParamDef::single_valued`. Choice elements (`Observation.effective`)
/// and anything beyond a dotted path count as possibly repeating.
fn single_valued(expression: &str) -> bool {
    let mut steps = expression.split('.');
    let Some(mut ty) = steps.next().map(str::to_owned) else {
        return false;
    };
    let model = fhir_structure::model::Model::r4();
    if !model.is_resource_type(&ty) {
        return false;
    }
    let mut any = false;
    for step in steps {
        if step.is_empty() || !step.chars().all(|c| c.is_ascii_alphanumeric()) {
            return false;
        }
        match model.element(&ty, step) {
            Some(e) if !e.is_array && !e.choice => ty = e.type_name.to_owned(),
            _ => return false,
        }
        any = true;
    }
    any
}

/// The operands of a union at the top level of `expression`, compiled; empty
/// when it is not one. Conservative: an expression with any operator that
/// binds looser than `|` at its top level (comparisons, `and`, `or`, `xor`,
/// `implies`, `in`, `contains`) is left whole, and so is one whose operands
/// do not all compile.
pub fn union_parts(expression: &str) -> Vec<fhirpath::Expr> {
    const LOOSER: [&str; 6] = ["and", "or", "xor", "implies", "in", "contains"];
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    let mut word = String::new();
    let mut word_after_space = false;
    let mut prev = ' ';
    for (i, c) in expression.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            prev = c;
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            if word.is_empty() {
                word_after_space = prev.is_whitespace();
            }
            word.push(c);
        } else {
            if depth == 0 && word_after_space && LOOSER.contains(&word.as_str()) {
                return Vec::new();
            }
            word.clear();
        }
        match c {
            '\'' | '"' | '`' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '=' | '<' | '>' | '~' | '!' if depth == 0 => return Vec::new(),
            '|' if depth == 0 => {
                parts.push(&expression[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        prev = c;
    }
    if depth == 0 && word_after_space && LOOSER.contains(&word.as_str()) {
        return Vec::new();
    }
    if parts.is_empty() {
        return Vec::new();
    }
    parts.push(&expression[start..]);
    parts
        .iter()
        .map(|p| fhirpath::parse(p.trim()).ok())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// Kind and targets of every definition, by canonical URL (what composite
/// components name).
type ByUrl = BTreeMap<String, (ParamKind, Vec<ResourceType>)>;

fn targets_of(raw: &[String]) -> Vec<ResourceType> {
    raw.iter()
        .filter_map(|t| t.parse::<ResourceType>().ok())
        .collect()
}

/// A composite's components; `None` (the composite is left out: a 400, not
/// advertised) when one names an unknown definition or a composite.
fn components(raw: &RawParam, by_url: &ByUrl) -> Option<Vec<ParamDef>> {
    if raw.components.len() < 2 {
        return None;
    }
    raw.components
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let (kind, targets) = by_url.get(&c.definition)?;
            if *kind == ParamKind::Composite {
                return None;
            }
            Some(ParamDef {
                code: format!("{}${k}", raw.code),
                kind: *kind,
                url: c.definition.clone(),
                expression: c.expression.clone(),
                compiled: Some(fhirpath::parse(&c.expression).ok()?),
                parts: union_parts(&c.expression),
                targets: targets.clone(),
                code_system: c.code_system.clone(),
                description: String::new(),
                components: Vec::new(),
                resource_level: false,
                single_valued: false,
                union_of: Vec::new(),
            })
        })
        .collect()
}

fn build(raw: RawParam, by_url: &ByUrl) -> Option<ParamDef> {
    let kind = ParamKind::parse(&raw.kind)?;
    if EXCLUDED.contains(&raw.code.as_str()) {
        return None;
    }
    let compiled = match raw.code.as_str() {
        "_id" | "_lastUpdated" => None,
        _ => Some(fhirpath::parse(&raw.expression).ok()?),
    };
    let components = if kind == ParamKind::Composite {
        components(&raw, by_url)?
    } else {
        Vec::new()
    };
    Some(ParamDef {
        parts: if compiled.is_some() {
            union_parts(&raw.expression)
        } else {
            Vec::new()
        },
        union_of: Vec::new(),
        single_valued: single_valued(&raw.expression),
        components,
        resource_level: false,
        kind,
        targets: targets_of(&raw.targets),
        code_system: raw.code_system,
        compiled,
        code: raw.code,
        url: raw.url,
        expression: raw.expression,
        description: raw.description,
    })
}

/// Marks `ty`'s resource-level composites (see `ParamDef::resource_level`) and
/// points their components at the parameters they are defined by.
fn share_component_rows(ty: ResourceType, list: &mut [ParamDef]) {
    let own: BTreeMap<String, (String, ParamKind)> = list
        .iter()
        .filter(|p| p.kind != ParamKind::Composite)
        .map(|p| (p.url.clone(), (p.code.clone(), p.kind)))
        .collect();
    for def in list.iter_mut() {
        if def.kind != ParamKind::Composite || def.expression != ty.as_str() {
            continue;
        }
        let codes: Option<Vec<String>> = def
            .components
            .iter()
            .map(|c| match own.get(&c.url) {
                Some((code, kind)) if *kind == c.kind => Some(code.clone()),
                _ => None,
            })
            .collect();
        if let Some(codes) = codes {
            for (c, code) in def.components.iter_mut().zip(codes) {
                c.code = code;
            }
            def.resource_level = true;
        }
    }
}

/// R4's `combo-` composites on Observation: the expression `Observation |
/// Observation.component` is the union of the two composites over
/// `Observation` and over `Observation.component` with the same value type.
const UNIONS: [(&str, [&str; 2]); 2] = [
    (
        "combo-code-value-quantity",
        ["code-value-quantity", "component-code-value-quantity"],
    ),
    (
        "combo-code-value-concept",
        ["code-value-concept", "component-code-value-concept"],
    ),
];

/// Sets `union_of` where the parts exist with the same component types.
fn mark_unions(ty: ResourceType, list: &mut [ParamDef]) {
    if ty != ResourceType::Observation {
        return;
    }
    for (combo, parts) in UNIONS {
        let kinds = |code: &str| -> Option<Vec<ParamKind>> {
            let p = list.iter().find(|p| p.code == code)?;
            (p.kind == ParamKind::Composite).then(|| p.components.iter().map(|c| c.kind).collect())
        };
        let Some(want) = kinds(combo) else {
            continue;
        };
        if parts.iter().all(|p| kinds(p).as_ref() == Some(&want)) {
            if let Some(def) = list.iter_mut().find(|p| p.code == combo) {
                def.union_of = parts.iter().map(|p| (*p).to_owned()).collect();
            }
        }
    }
}

/// Sorts by code and keeps one parameter per code. The HL7 package also ships
/// example SearchParameters (`.../SearchParameter/example-reference` is a second
/// `Condition.subject` limited to Organization); a core definition wins over them.
fn dedup_codes(list: &mut Vec<ParamDef>) {
    let is_example = |p: &ParamDef| {
        p.url
            .rsplit('/')
            .next()
            .is_some_and(|last| last.starts_with("example"))
    };
    list.sort_by(|a, b| {
        a.code
            .cmp(&b.code)
            .then_with(|| is_example(a).cmp(&is_example(b)))
    });
    list.dedup_by(|later, first| later.code == first.code);
}

impl Registry {
    fn load() -> Registry {
        let mut raw: RawFile = match serde_json::from_str(SOURCE) {
            Ok(r) => r,
            Err(e) => panic!("embedded search parameter table is invalid: {e}"),
        };
        let ours: OurFile = match serde_json::from_str(OURS) {
            Ok(r) => r,
            Err(e) => panic!("embedded fhirbridge search parameter table is invalid: {e}"),
        };
        for (ty, list) in ours.params {
            raw.params.entry(ty).or_default().extend(list);
        }
        for (ty, list) in ours.patient_compartment {
            raw.patient_compartment.entry(ty).or_default().extend(list);
        }
        let by_url: ByUrl = raw
            .params
            .values()
            .flatten()
            .chain(raw.common.iter())
            .filter_map(|p| {
                Some((
                    p.url.clone(),
                    (ParamKind::parse(&p.kind)?, targets_of(&p.targets)),
                ))
            })
            .collect();
        let mut per_type: Vec<Vec<ParamDef>> =
            ResourceType::ALL.iter().map(|_| Vec::new()).collect();
        let mut patient_compartment: Vec<Vec<String>> =
            ResourceType::ALL.iter().map(|_| Vec::new()).collect();
        for (ty, params) in raw.params {
            let Ok(t) = ty.parse::<ResourceType>() else {
                continue;
            };
            let list = &mut per_type[t.index()];
            for p in params {
                if let Some(def) = build(p, &by_url) {
                    list.push(def);
                }
            }
            dedup_codes(list);
            share_component_rows(t, list);
            mark_unions(t, list);
        }
        for (ty, params) in raw.patient_compartment {
            if let Ok(t) = ty.parse::<ResourceType>() {
                patient_compartment[t.index()] = params;
            }
        }
        let mut common: Vec<ParamDef> = raw
            .common
            .into_iter()
            .filter_map(|p| build(p, &by_url))
            .collect();
        dedup_codes(&mut common);
        Registry {
            per_type,
            common,
            patient_compartment,
        }
    }

    /// The parameter `code` on type `ty` (type-specific first, then common).
    pub fn lookup(&self, ty: ResourceType, code: &str) -> Option<&ParamDef> {
        let list = &self.per_type[ty.index()];
        list.binary_search_by(|p| p.code.as_str().cmp(code))
            .ok()
            .map(|i| &list[i])
            .or_else(|| self.common.iter().find(|p| p.code == code))
    }

    /// The type-specific parameters of `ty`, by code.
    pub fn for_type(&self, ty: ResourceType) -> impl Iterator<Item = &ParamDef> {
        self.per_type[ty.index()].iter()
    }

    /// The parameters every type has (`_id`, `_lastUpdated`, `_tag`, …).
    pub fn common(&self) -> impl Iterator<Item = &ParamDef> {
        self.common.iter()
    }

    /// Every parameter that is extracted into index tables for `ty`.
    pub fn indexed(&self, ty: ResourceType) -> impl Iterator<Item = &ParamDef> {
        self.for_type(ty)
            .chain(self.common())
            .filter(|p| p.compiled.is_some())
    }

    /// The parameters that put a `ty` resource in a patient's compartment
    /// (empty: `ty` is not in the patient compartment).
    pub fn patient_compartment(&self, ty: ResourceType) -> &[String] {
        &self.patient_compartment[ty.index()]
    }
}

static REGISTRY: Lazy<Registry> = Lazy::new(Registry::load);

/// The process-wide registry (parsed and compiled on first use).
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// The parameter `code` on type `ty`, if supported.
pub fn lookup(ty: ResourceType, code: &str) -> Option<&'static ParamDef> {
    registry().lookup(ty, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_core_parameters() {
        let r = registry();
        let p = r.lookup(ResourceType::Patient, "family").expect("family");
        assert_eq!(p.kind, ParamKind::String);
        assert_eq!(p.expression, "Patient.name.family");
        assert!(r.lookup(ResourceType::Patient, "phonetic").is_none());
        assert!(r.lookup(ResourceType::Patient, "_tag").is_some());
        assert!(r.lookup(ResourceType::Patient, "nonsense").is_none());
        let mr = r
            .lookup(ResourceType::MedicationRequest, "patient")
            .expect("patient");
        assert!(mr.targets.contains(&ResourceType::Patient));
        let cvq = r
            .lookup(ResourceType::Observation, "code-value-quantity")
            .expect("composite");
        assert!(cvq.resource_level);
        let codes: Vec<_> = cvq.components.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["code", "value-quantity"]);
        let per_component = r
            .lookup(ResourceType::Observation, "component-code-value-quantity")
            .expect("composite");
        assert!(!per_component.resource_level);
        assert_eq!(per_component.components[1].kind, ParamKind::Quantity);
        // Single-valued paths allow one-row range tests.
        let single = |ty, code| r.lookup(ty, code).expect(code).single_valued;
        assert!(single(ResourceType::Patient, "birthdate"));
        assert!(single(ResourceType::Appointment, "date"));
        assert!(!single(ResourceType::Patient, "family"));
        assert!(!single(ResourceType::Observation, "date"));
        // Every type has an identifier-like or at least the common parameters.
        for ty in ResourceType::ALL {
            assert!(r.lookup(ty, "_id").is_some(), "{ty}");
        }
        assert_eq!(r.patient_compartment(ResourceType::Appointment), ["actor"]);
        // One definition per code: the core Condition.subject, not the example.
        let subjects: Vec<_> = r
            .for_type(ResourceType::Condition)
            .filter(|p| p.code == "subject")
            .collect();
        assert_eq!(subjects.len(), 1);
        assert!(subjects[0].targets.contains(&ResourceType::Patient));
        for ty in ResourceType::ALL {
            let codes: Vec<_> = r.for_type(ty).map(|p| p.code.as_str()).collect();
            assert!(codes.windows(2).all(|w| w[0] < w[1]), "{ty}");
        }
        assert!(r.patient_compartment(ResourceType::Organization).is_empty());
        // Codes with one implicit system (generated from required bindings).
        let system = |ty, code| r.lookup(ty, code).expect(code).code_system.as_deref();
        assert_eq!(
            system(ResourceType::Patient, "gender"),
            Some("http://hl7.org/fhir/administrative-gender")
        );
        assert_eq!(
            system(ResourceType::Appointment, "status"),
            Some("http://hl7.org/fhir/appointmentstatus")
        );
        assert_eq!(system(ResourceType::Observation, "code"), None);
        assert_eq!(system(ResourceType::Task, "intent"), None);
        // Unions are evaluated operand by operand.
        let combo = r
            .lookup(ResourceType::Observation, "combo-code")
            .expect("combo");
        assert_eq!(combo.parts.len(), 2);
        assert!(r
            .lookup(ResourceType::Patient, "family")
            .expect("family")
            .parts
            .is_empty());
        let total: usize = ResourceType::ALL
            .iter()
            .map(|t| r.for_type(*t).count())
            .sum();
        assert!(total > 1600, "{total}");
    }

    #[test]
    fn union_operands() {
        let n = |e: &str| union_parts(e).len();
        assert_eq!(n("Observation.code | Observation.component.code"), 2);
        assert_eq!(
            n("(Observation.value as Quantity) | (Observation.value as SampledData) | Observation.component.value"),
            3
        );
        assert_eq!(n("Patient.name"), 0);
        assert_eq!(n("(A.x | A.y)"), 0);
        assert_eq!(n("A.x.where(y = 'a|b') | A.z"), 2);
        assert_eq!(n("A.x | A.y = A.z"), 0);
        assert_eq!(n("A.x | A.y and A.z"), 0);
        assert_eq!(n("A.x | A.y contains 'q'"), 0);
        assert_eq!(n("A.x.contains('q') | A.y"), 2);
        assert_eq!(n("A.x | 'a\\'|b' | A.y"), 3);
    }
}
