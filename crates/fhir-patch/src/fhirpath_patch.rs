//! FHIRPath Patch (<https://hl7.org/fhir/R4/fhirpatch.html>).
//!
//! The patch is a `Parameters` resource whose parameters are all named
//! `operation`, each with the parts `type`, `path`, `name`, `value`, `index`,
//! `source` and `destination`.
//!
//! Paths are evaluated with the workspace FHIRPath engine. Its results borrow
//! the resource JSON, so each resulting node is located by address: the
//! resource is walked once, recording for every JSON value where it sits
//! (parent object, property name, array index), and the node's address is
//! looked up there. The change is then made at that location.
//!
//! In FHIR JSON an element is a value under `name` plus, for primitives, an
//! optional `_name` object holding `id` and `extension`; repeating primitives
//! keep `name` and `_name` as parallel arrays padded with `null`. All list
//! operations here work on such (value, extension) pairs, so the two arrays
//! stay aligned. Whether an element repeats, whether it is a choice element and
//! what type it has comes from the R4 model of `fhir-structure`.

use std::collections::HashMap;

use fhir_structure::model::{Kind, Model, SYSTEM_TYPE_PREFIX};
use serde_json::{Map, Value as Json};

use crate::PatchError;

/// Deepest nesting of `part`s accepted in a value.
const MAX_PART_DEPTH: usize = 64;

// ------------------------------------------------------------------ parsing

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpType {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

struct Operation {
    /// `Parameters.parameter[i]`.
    expression: String,
    kind: OpType,
    path_src: String,
    path: fhirpath::Expr,
    name: Option<String>,
    value: Option<PValue>,
    index: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

/// The `value` of an operation, before it is fitted to its target element.
#[derive(Debug, Clone)]
enum PValue {
    /// A `value[x]`: the FHIR type from the suffix, the JSON under
    /// `value[x]` and the `_value[x]` object (primitives only).
    Typed {
        ty: String,
        value: Option<Json>,
        ext: Option<Json>,
    },
    /// A `resource`.
    Resource { ty: String, json: Json },
    /// Nested `part`s, each naming a child element.
    Parts(Vec<(String, PValue)>),
}

impl PValue {
    /// The FHIR type stated by the value, if any (parts state none).
    fn type_name(&self) -> Option<&str> {
        match self {
            PValue::Typed { ty, .. } | PValue::Resource { ty, .. } => Some(ty),
            PValue::Parts(_) => None,
        }
    }
}

fn model() -> &'static Model {
    Model::r4()
}

fn parse_operations(params: &Json) -> Result<Vec<Operation>, PatchError> {
    let Some(obj) = params.as_object() else {
        return Err(PatchError::invalid(
            "a FHIRPath Patch must be a Parameters resource (a JSON object)",
            None,
        ));
    };
    match obj.get("resourceType") {
        Some(Json::String(s)) if s == "Parameters" => {}
        _ => {
            return Err(PatchError::invalid(
                "a FHIRPath Patch must be a Parameters resource (resourceType \"Parameters\")",
                None,
            ))
        }
    }
    let params = match obj.get("parameter") {
        None => return Ok(Vec::new()),
        Some(Json::Array(a)) => a,
        Some(_) => {
            return Err(PatchError::invalid(
                "Parameters.parameter must be an array",
                Some("Parameters.parameter".into()),
            ))
        }
    };
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let expression = format!("Parameters.parameter[{i}]");
            parse_operation(p, expression.clone())
                .map_err(|m| PatchError::invalid(m, Some(expression)))
        })
        .collect()
}

/// Sets an operation part, rejecting repeats.
fn set_once<T>(slot: &mut Option<T>, value: T, part: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("the operation has more than one \"{part}\" part"));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_operation(p: &Json, expression: String) -> Result<Operation, String> {
    let Some(obj) = p.as_object() else {
        return Err("a parameter must be a JSON object".into());
    };
    match obj.get("name") {
        Some(Json::String(n)) if n == "operation" => {}
        Some(Json::String(n)) => {
            return Err(format!(
                "unexpected parameter \"{n}\": every parameter of a FHIRPath Patch must be named \"operation\""
            ))
        }
        _ => return Err("the parameter has no name (expected \"operation\")".into()),
    }
    let Some(Json::Array(parts)) = obj.get("part") else {
        return Err("the operation has no parts".into());
    };
    let mut ty = None;
    let mut path = None;
    let mut name = None;
    let mut value = None;
    let mut index = None;
    let mut source = None;
    let mut destination = None;
    for (j, part) in parts.iter().enumerate() {
        let Some(po) = part.as_object() else {
            return Err(format!("part[{j}] must be a JSON object"));
        };
        let Some(pname) = po.get("name").and_then(Json::as_str) else {
            return Err(format!("part[{j}] has no name"));
        };
        match pname {
            "type" => set_once(&mut ty, string_part(po, pname)?, pname)?,
            "path" => set_once(&mut path, string_part(po, pname)?, pname)?,
            "name" => {
                let n = string_part(po, pname)?;
                check_element_name(&n)?;
                set_once(&mut name, n, pname)?
            }
            "value" => set_once(&mut value, parse_value(po, 0)?, pname)?,
            "index" => set_once(&mut index, integer_part(po, pname)?, pname)?,
            "source" => set_once(&mut source, integer_part(po, pname)?, pname)?,
            "destination" => set_once(&mut destination, integer_part(po, pname)?, pname)?,
            other => return Err(format!("unknown operation part \"{other}\"")),
        }
    }
    let kind = match ty.as_deref() {
        Some("add") => OpType::Add,
        Some("insert") => OpType::Insert,
        Some("delete") => OpType::Delete,
        Some("replace") => OpType::Replace,
        Some("move") => OpType::Move,
        Some(other) => {
            return Err(format!(
                "unknown operation type \"{other}\" (expected add, insert, delete, replace or move)"
            ))
        }
        None => return Err("the operation has no \"type\" part".into()),
    };
    let Some(path_src) = path else {
        return Err("the operation has no \"path\" part".into());
    };
    let path = fhirpath::parse(&path_src).map_err(|e| {
        let shown: String = path_src.chars().take(80).collect();
        let more = if shown.len() < path_src.len() {
            "..."
        } else {
            ""
        };
        format!("the path \"{shown}{more}\" is not valid FHIRPath: {e}")
    })?;
    let need = |present: bool, part: &str| -> Result<(), String> {
        if present {
            Ok(())
        } else {
            Err(format!(
                "a \"{}\" operation needs a \"{part}\" part",
                ty.as_deref().unwrap_or_default()
            ))
        }
    };
    match kind {
        OpType::Add => {
            need(name.is_some(), "name")?;
            need(value.is_some(), "value")?;
        }
        OpType::Insert => {
            need(index.is_some(), "index")?;
            need(value.is_some(), "value")?;
        }
        OpType::Replace => need(value.is_some(), "value")?,
        OpType::Move => {
            need(source.is_some(), "source")?;
            need(destination.is_some(), "destination")?;
        }
        OpType::Delete => {}
    }
    Ok(Operation {
        expression,
        kind,
        path_src,
        path,
        name,
        value,
        index,
        source,
        destination,
    })
}

/// An element name as used in `name` parts: letters and digits, starting with a letter.
fn check_element_name(n: &str) -> Result<(), String> {
    let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && n.chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("\"{n}\" is not a valid element name"))
    }
}

/// The `value[x]` member of a part: (type suffix, JSON), and `_value[x]`.
type ValueMembers<'a> = (Option<(&'a str, &'a Json)>, Option<(&'a str, &'a Json)>);

fn value_members(po: &Map<String, Json>) -> Result<ValueMembers<'_>, String> {
    let mut value = None;
    let mut ext = None;
    for (k, v) in po {
        let (slot, suffix) = if let Some(s) = k.strip_prefix("_value") {
            (&mut ext, s)
        } else if let Some(s) = k.strip_prefix("value") {
            (&mut value, s)
        } else {
            continue;
        };
        if !suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        if slot.is_some() {
            return Err("a part has more than one value[x]".into());
        }
        *slot = Some((suffix, v));
    }
    if let (Some((a, _)), Some((b, _))) = (value, ext) {
        if a != b {
            return Err(format!("value{a} and _value{b} do not match"));
        }
    }
    Ok((value, ext))
}

/// A string-valued part (`type`, `path`, `name`): any value[x] holding a JSON string.
fn string_part(po: &Map<String, Json>, part: &str) -> Result<String, String> {
    match value_members(po)?.0 {
        Some((_, Json::String(s))) => Ok(s.clone()),
        _ => Err(format!(
            "the \"{part}\" part must have a string value (e.g. valueString)"
        )),
    }
}

/// An integer-valued part (`index`, `source`, `destination`).
fn integer_part(po: &Map<String, Json>, part: &str) -> Result<usize, String> {
    match value_members(po)?.0 {
        Some((_, Json::Number(n))) => n
            .as_u64()
            .and_then(|u| usize::try_from(u).ok())
            .ok_or_else(|| format!("the \"{part}\" part must be a non-negative integer, not {n}")),
        _ => Err(format!(
            "the \"{part}\" part must have an integer value (valueInteger)"
        )),
    }
}

/// The FHIR type named by a `value[x]` suffix: `CodeableConcept`, or
/// `date` for `Date`.
fn type_from_suffix(suffix: &str) -> Result<String, String> {
    let m = model();
    if let Some(t) = m.type_def(suffix) {
        if t.kind == Kind::ComplexType {
            return Ok(suffix.to_string());
        }
    }
    let mut chars = suffix.chars();
    let lower: String = match chars.next() {
        Some(c) => c.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    };
    match m.type_def(&lower) {
        Some(t) if t.kind == Kind::PrimitiveType => Ok(lower),
        _ => Err(format!(
            "value{suffix}: \"{suffix}\" is not a FHIR data type"
        )),
    }
}

/// How a primitive type is written in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PrimKind {
    Bool,
    Number,
    String,
}

fn prim_kind(ty: &str) -> PrimKind {
    match ty {
        "boolean" => PrimKind::Bool,
        "integer" | "decimal" | "positiveInt" | "unsignedInt" => PrimKind::Number,
        _ => PrimKind::String,
    }
}

fn is_primitive(ty: &str) -> bool {
    model()
        .type_def(ty)
        .is_some_and(|t| t.kind == Kind::PrimitiveType)
}

fn parse_value(po: &Map<String, Json>, depth: usize) -> Result<PValue, String> {
    if depth > MAX_PART_DEPTH {
        return Err("value parts are nested too deeply".into());
    }
    let (value, ext) = value_members(po)?;
    let resource = po.get("resource");
    let parts = po.get("part");
    let forms = usize::from(value.is_some() || ext.is_some())
        + usize::from(resource.is_some())
        + usize::from(parts.is_some());
    if forms > 1 {
        return Err("a value part must have exactly one of value[x], resource or part".into());
    }
    if let Some((suffix, _)) = value.or(ext) {
        let ty = type_from_suffix(suffix)?;
        let value = value.map(|(_, v)| v).filter(|v| !v.is_null());
        let ext = ext.map(|(_, v)| v).filter(|v| !v.is_null());
        if let Some(v) = value {
            let ok = if is_primitive(&ty) {
                match prim_kind(&ty) {
                    PrimKind::Bool => v.is_boolean(),
                    PrimKind::Number => v.is_number(),
                    PrimKind::String => v.is_string(),
                }
            } else {
                v.is_object()
            };
            if !ok {
                return Err(format!("value{suffix} has the wrong JSON form: {v}"));
            }
        }
        if let Some(e) = ext {
            if !is_primitive(&ty) || !e.is_object() {
                return Err(format!(
                    "_value{suffix} must be an object on a primitive value"
                ));
            }
        }
        if value.is_none() && ext.is_none() {
            return Err(format!("value{suffix} is null"));
        }
        return Ok(PValue::Typed {
            ty,
            value: value.cloned(),
            ext: ext.cloned(),
        });
    }
    if let Some(r) = resource {
        let ty = r
            .get("resourceType")
            .and_then(Json::as_str)
            .filter(|t| model().is_resource_type(t))
            .ok_or("the \"resource\" of a value part is not a FHIR resource")?;
        return Ok(PValue::Resource {
            ty: ty.to_string(),
            json: r.clone(),
        });
    }
    match parts {
        Some(Json::Array(items)) if !items.is_empty() => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Some(io) = item.as_object() else {
                    return Err("a value part must be a JSON object".into());
                };
                let Some(name) = io.get("name").and_then(Json::as_str) else {
                    return Err("a value part has no name".into());
                };
                check_element_name(name)?;
                out.push((name.to_string(), parse_value(io, depth + 1)?));
            }
            Ok(PValue::Parts(out))
        }
        Some(_) => Err("the parts of a value must be a non-empty array".into()),
        None => Err("the value part has no value (value[x], resource or part)".into()),
    }
}

// ------------------------------------------------------------------ locations

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Where an element sits in the resource JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Loc {
    /// The resource itself.
    Root,
    /// Property `key` (without `_`) of the object at `parent`, item `index` if
    /// the property is an array.
    Elem {
        parent: Vec<Seg>,
        key: String,
        index: Option<usize>,
    },
}

/// Every JSON value of a resource by address.
fn index_nodes(root: &Json) -> HashMap<*const Json, Loc> {
    let mut map = HashMap::new();
    map.insert(root as *const Json, Loc::Root);
    let mut path = Vec::new();
    index_children(root, &mut path, &mut map);
    map
}

fn index_children(v: &Json, path: &mut Vec<Seg>, map: &mut HashMap<*const Json, Loc>) {
    let Json::Object(obj) = v else { return };
    for (k, child) in obj {
        if k == "resourceType" {
            continue;
        }
        let key = k.strip_prefix('_').unwrap_or(k);
        let parent = path.clone();
        path.push(Seg::Key(k.clone()));
        match child {
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    map.insert(
                        item as *const Json,
                        Loc::Elem {
                            parent: parent.clone(),
                            key: key.to_string(),
                            index: Some(i),
                        },
                    );
                    if item.is_object() {
                        path.push(Seg::Index(i));
                        index_children(item, path, map);
                        path.pop();
                    }
                }
            }
            _ => {
                map.insert(
                    child as *const Json,
                    Loc::Elem {
                        parent,
                        key: key.to_string(),
                        index: None,
                    },
                );
                index_children(child, path, map);
            }
        }
        path.pop();
    }
}

/// Evaluates the operation's path and locates every resulting element.
fn locate(doc: &Json, op: &Operation) -> Result<Vec<Loc>, String> {
    let ctx = fhirpath::EvalContext::new();
    let results = fhirpath::evaluate(&op.path, doc, &ctx)
        .map_err(|e| format!("evaluating the path {} failed: {e}", op.path_src))?;
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let index = index_nodes(doc);
    let mut out = Vec::new();
    for r in &results {
        let fhirpath::Value::Node(n) = r else {
            return Err(format!(
                "the path {} gives a value that is not an element of the resource",
                op.path_src
            ));
        };
        let loc = n
            .json()
            .and_then(|v| index.get(&(v as *const Json)))
            .or_else(|| {
                n.primitive_extension()
                    .and_then(|e| index.get(&(e as *const Json)))
            })
            .ok_or_else(|| {
                format!(
                    "the path {} gives an element that is not part of the resource",
                    op.path_src
                )
            })?;
        if !out.contains(loc) {
            out.push(loc.clone());
        }
    }
    Ok(out)
}

fn nav<'a>(v: &'a Json, path: &[Seg]) -> Option<&'a Json> {
    path.iter().try_fold(v, |cur, seg| match seg {
        Seg::Key(k) => cur.get(k.as_str()),
        Seg::Index(i) => cur.get(*i),
    })
}

fn nav_mut<'a>(v: &'a mut Json, path: &[Seg]) -> Option<&'a mut Json> {
    path.iter().try_fold(v, |cur, seg| match seg {
        Seg::Key(k) => cur.get_mut(k.as_str()),
        Seg::Index(i) => cur.get_mut(*i),
    })
}

fn object_at<'a>(doc: &'a mut Json, path: &[Seg]) -> Result<&'a mut Map<String, Json>, String> {
    nav_mut(doc, path)
        .and_then(Json::as_object_mut)
        .ok_or_else(|| "the target element is not a JSON object".to_string())
}

// ------------------------------------------------------------------ types

/// The resource type of a JSON object, if it is a resource.
fn resource_type(v: &Json) -> Option<String> {
    v.get("resourceType")
        .and_then(Json::as_str)
        .filter(|t| model().is_resource_type(t))
        .map(str::to_string)
}

/// The FHIR type of the JSON property `json_name` of `parent` (system types
/// mapped to FHIR primitives).
fn element_type(parent: &str, json_name: &str) -> Option<String> {
    let e = model().element(parent, json_name)?;
    Some(match e.type_name.strip_prefix(SYSTEM_TYPE_PREFIX) {
        Some(sys) => system_to_fhir(parent, json_name, sys).to_string(),
        None => e.type_name.to_string(),
    })
}

fn system_to_fhir(parent: &str, json_name: &str, sys: &str) -> &'static str {
    match (json_name, sys) {
        ("id", _)
            if model()
                .type_def(parent)
                .is_some_and(|d| d.kind == Kind::Resource) =>
        {
            "id"
        }
        ("id", _) => "string",
        ("url", "String") => "uri",
        (_, "Boolean") => "boolean",
        (_, "Integer") => "integer",
        (_, "Decimal") => "decimal",
        (_, "Date") => "date",
        (_, "DateTime") => "dateTime",
        (_, "Time") => "time",
        _ => "string",
    }
}

/// The FHIR type of the JSON value at `path` (an object or an array item),
/// following the model from the resource root; nested resources (`contained`,
/// `Bundle.entry.resource`) take their own `resourceType`.
fn type_at(root: &Json, path: &[Seg]) -> Option<String> {
    let mut cur = root;
    let mut ty = resource_type(root);
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let name = k.strip_prefix('_').unwrap_or(k);
                ty = ty.as_deref().and_then(|t| element_type(t, name));
                cur = cur.get(k.as_str())?;
            }
            Seg::Index(i) => cur = cur.get(*i)?,
        }
        if let Some(rt) = resource_type(cur) {
            ty = Some(rt);
        }
    }
    ty
}

/// Whether a value of type `ty` may fill an element of type `target`.
fn type_compatible(ty: &str, target: &str) -> bool {
    if ty == target || matches!(target, "Element" | "BackboneElement") {
        return true;
    }
    let m = model();
    let mut cur = m.type_def(ty);
    let mut steps = 0;
    while let Some(t) = cur {
        if t.name == target {
            return true;
        }
        steps += 1;
        if steps > 32 {
            break;
        }
        cur = t.base.as_deref().and_then(|b| m.type_def(b));
    }
    false
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// An element of a type, resolved from an element name.
#[derive(Debug)]
struct ElemInfo {
    /// JSON property name (`deceasedBoolean` for `deceased` given a boolean).
    key: String,
    /// FHIR type of the element, if known.
    ty: Option<String>,
    /// Whether the element repeats, if known.
    is_array: Option<bool>,
    /// For choice elements: the JSON names of all variants.
    variants: Vec<String>,
}

/// Resolves element `name` of type `parent_ty`. For a choice element named by
/// its base (`value`), the type of the value picks the variant.
fn resolve_elem(
    parent_ty: Option<&str>,
    name: &str,
    value_ty: Option<&str>,
) -> Result<ElemInfo, String> {
    let m = model();
    let Some(pt) = parent_ty.filter(|t| m.type_def(t).is_some()) else {
        return Ok(ElemInfo {
            key: name.to_string(),
            ty: value_ty.map(str::to_string),
            is_array: None,
            variants: Vec::new(),
        });
    };
    if is_primitive(pt) && name == "value" {
        return Err(format!(
            "the value of a {pt} element cannot be added; use replace"
        ));
    }
    let variants_of = |def: &fhir_structure::model::ElementDef| -> Vec<String> {
        let base = def.name.trim_end_matches("[x]");
        def.types
            .iter()
            .map(|t| format!("{base}{}", capitalize(t)))
            .collect()
    };
    if let Some(er) = m.element(pt, name) {
        return Ok(ElemInfo {
            key: name.to_string(),
            ty: element_type(pt, name),
            is_array: Some(er.is_array),
            variants: if er.choice {
                variants_of(er.def)
            } else {
                Vec::new()
            },
        });
    }
    let choice = format!("{name}[x]");
    if let Some(def) = m.all_elements(pt).into_iter().find(|d| d.name == choice) {
        let Some(vt) = value_ty else {
            return Err(format!(
                "{pt}.{name} is a choice element: the value must state its type (value[x]), or name the element in full (e.g. {name}{})",
                def.types.first().map(|t| capitalize(t)).unwrap_or_default()
            ));
        };
        if !def.types.iter().any(|t| t == vt) {
            return Err(format!(
                "type {vt} is not allowed for {pt}.{choice} (allowed: {})",
                def.types.join(", ")
            ));
        }
        return Ok(ElemInfo {
            key: format!("{name}{}", capitalize(vt)),
            ty: Some(vt.to_string()),
            is_array: Some(def.is_array()),
            variants: variants_of(def),
        });
    }
    Err(format!("{pt} has no element named \"{name}\""))
}

// ------------------------------------------------------------------ items

/// One element in FHIR JSON form: the value under `name` and the `_name`
/// object (primitives only).
#[derive(Clone, Debug, Default)]
struct Item {
    value: Option<Json>,
    ext: Option<Json>,
}

impl Item {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.ext.is_none()
    }
}

fn ext_key(key: &str) -> String {
    format!("_{key}")
}

fn as_items(v: Option<&Json>) -> Vec<Option<Json>> {
    match v {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a
            .iter()
            .map(|x| Some(x.clone()).filter(|x| !x.is_null()))
            .collect(),
        Some(x) => vec![Some(x.clone())],
    }
}

/// The list of items of element `key` (a single value counts as a list of one).
fn take_list(obj: &Map<String, Json>, key: &str) -> Vec<Item> {
    let values = as_items(obj.get(key));
    let exts = as_items(obj.get(&ext_key(key)));
    let n = values.len().max(exts.len());
    (0..n)
        .map(|i| Item {
            value: values.get(i).cloned().flatten(),
            ext: exts.get(i).cloned().flatten(),
        })
        .collect()
}

fn set_or_remove(obj: &mut Map<String, Json>, key: &str, v: Option<Json>) {
    match v {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.shift_remove(key);
        }
    }
}

/// Writes the list of items of element `key`, as parallel `key`/`_key` arrays.
fn put_list(obj: &mut Map<String, Json>, key: &str, items: Vec<Item>) {
    let items: Vec<Item> = items.into_iter().filter(|i| !i.is_empty()).collect();
    let any_value = items.iter().any(|i| i.value.is_some());
    let any_ext = items.iter().any(|i| i.ext.is_some());
    let mut values = Vec::with_capacity(items.len());
    let mut exts = Vec::with_capacity(items.len());
    for i in items {
        values.push(i.value.unwrap_or(Json::Null));
        exts.push(i.ext.unwrap_or(Json::Null));
    }
    set_or_remove(obj, key, any_value.then_some(Json::Array(values)));
    set_or_remove(obj, &ext_key(key), any_ext.then_some(Json::Array(exts)));
}

fn get_single(obj: &Map<String, Json>, key: &str) -> Item {
    Item {
        value: obj.get(key).filter(|v| !v.is_null()).cloned(),
        ext: obj.get(&ext_key(key)).filter(|v| !v.is_null()).cloned(),
    }
}

fn put_single(obj: &mut Map<String, Json>, key: &str, item: Item) {
    set_or_remove(obj, key, item.value);
    set_or_remove(obj, &ext_key(key), item.ext);
}

fn has_element(obj: &Map<String, Json>, key: &str) -> bool {
    !get_single(obj, key).is_empty()
}

/// Changes one item of element `key` in place.
fn modify_item(
    obj: &mut Map<String, Json>,
    key: &str,
    index: Option<usize>,
    f: impl FnOnce(&mut Item) -> Result<(), String>,
) -> Result<(), String> {
    match index {
        Some(i) => {
            let mut list = take_list(obj, key);
            let item = list
                .get_mut(i)
                .ok_or_else(|| format!("{key}[{i}] does not exist"))?;
            f(item)?;
            put_list(obj, key, list);
        }
        None => {
            let mut item = get_single(obj, key);
            f(&mut item)?;
            put_single(obj, key, item);
        }
    }
    Ok(())
}

/// Adds an item as element `info.key` of `obj`: appended if the element
/// repeats, else set if it has no value yet.
fn insert_item(obj: &mut Map<String, Json>, info: &ElemInfo, item: Item) -> Result<(), String> {
    let occupied = has_element(obj, &info.key) || info.variants.iter().any(|k| has_element(obj, k));
    let repeats = match info.is_array {
        Some(r) => r,
        // unknown type: follow the JSON, and make a list rather than lose a value
        None => occupied,
    };
    if repeats {
        let mut list = take_list(obj, &info.key);
        list.push(item);
        put_list(obj, &info.key, list);
        return Ok(());
    }
    if occupied {
        return Err(format!(
            "element \"{}\" already has a value and does not repeat",
            info.variants
                .iter()
                .find(|k| has_element(obj, k))
                .unwrap_or(&info.key)
        ));
    }
    put_single(obj, &info.key, item);
    Ok(())
}

/// Converts a primitive's JSON to the form of the target primitive type.
fn coerce(v: &Json, target: &str) -> Result<Json, String> {
    let fail = || format!("the value {v} cannot be used for an element of type {target}");
    match (prim_kind(target), v) {
        (PrimKind::Bool, Json::Bool(_))
        | (PrimKind::Number, Json::Number(_))
        | (PrimKind::String, Json::String(_)) => Ok(v.clone()),
        (PrimKind::Bool, Json::String(s)) => match s.as_str() {
            "true" => Ok(Json::Bool(true)),
            "false" => Ok(Json::Bool(false)),
            _ => Err(fail()),
        },
        (PrimKind::Number, Json::String(s)) => match serde_json::from_str::<Json>(s.trim()) {
            Ok(n @ Json::Number(_)) if s.trim() == s => Ok(n),
            _ => Err(fail()),
        },
        (PrimKind::String, Json::Number(n)) => Ok(Json::String(n.to_string())),
        (PrimKind::String, Json::Bool(b)) => Ok(Json::String(b.to_string())),
        _ => Err(fail()),
    }
}

/// Fits a patch value to an element of type `target` (unknown: `None`).
fn build_item(v: &PValue, target: Option<&str>) -> Result<Item, String> {
    match v {
        PValue::Typed { ty, value, ext } => {
            let target = target.unwrap_or(ty);
            match (is_primitive(ty), is_primitive(target)) {
                (true, true) => {
                    let value = value.as_ref().map(|j| coerce(j, target)).transpose()?;
                    if let Some(v) = &value {
                        fhir_structure::check_primitive(target, v)
                            .map_err(|e| format!("the value {v} is not a valid {target}: {e}"))?;
                    }
                    Ok(Item {
                        value,
                        ext: ext.clone(),
                    })
                }
                (false, false) if type_compatible(ty, target) => Ok(Item {
                    value: value.clone(),
                    ext: None,
                }),
                _ => Err(format!(
                    "a {ty} value cannot be used for an element of type {target}"
                )),
            }
        }
        PValue::Resource { ty, json } => match target {
            Some(t) if !type_compatible(ty, t) => Err(format!(
                "a {ty} resource cannot be used for an element of type {t}"
            )),
            _ => Ok(Item {
                value: Some(json.clone()),
                ext: None,
            }),
        },
        PValue::Parts(parts) => {
            if let Some(t) = target.filter(|t| is_primitive(t)) {
                return Err(format!(
                    "a value given as parts cannot be used for the primitive type {t}"
                ));
            }
            let mut obj = Map::new();
            for (name, pv) in parts {
                let info = resolve_elem(target, name, pv.type_name())?;
                let item = build_item(pv, info.ty.as_deref())?;
                insert_item(&mut obj, &info, item)?;
            }
            Ok(Item {
                value: Some(Json::Object(obj)),
                ext: None,
            })
        }
    }
}

// ------------------------------------------------------------------ operations

pub(crate) fn apply(
    target: &mut Json,
    params: &Json,
    limits: &crate::Limits,
) -> Result<(), PatchError> {
    let ops = parse_operations(params)?;
    if ops.is_empty() {
        return Ok(());
    }
    let mut work = target.clone();
    for op in &ops {
        apply_operation(&mut work, op)
            .map_err(|m| PatchError::cannot_apply(m, Some(op.expression.clone())))?;
    }
    // Values come from the patch itself (no operation duplicates content),
    // so the result grows by at most the patch's size: checked once.
    let m = crate::size::measure(&work, limits.max_bytes, limits.max_depth);
    if let Some(message) = crate::over_limits(m, limits) {
        return Err(PatchError::cannot_apply(message, None));
    }
    *target = work;
    Ok(())
}

fn apply_operation(doc: &mut Json, op: &Operation) -> Result<(), String> {
    if doc.get("resourceType").and_then(Json::as_str).is_none() {
        return Err("the target is not a FHIR resource".into());
    }
    let locs = locate(doc, op)?;
    let src = op.path_src.as_str();
    let single = |verb: &str| -> Result<&Loc, String> {
        match locs.as_slice() {
            [l] => Ok(l),
            [] => Err(format!("No content found at {src} when {verb}")),
            _ => Err(format!(
                "the path {src} matches {} elements; {verb} needs exactly one",
                locs.len()
            )),
        }
    };
    let value = || op.value.as_ref().ok_or("the operation has no value");
    match op.kind {
        OpType::Delete => match locs.as_slice() {
            [] => Ok(()),
            [l] => delete(doc, l),
            _ => Err(format!(
                "the path {src} matches {} elements; delete needs at most one",
                locs.len()
            )),
        },
        OpType::Add => {
            let loc = single("adding")?;
            let name = op.name.as_deref().ok_or("the operation has no name")?;
            add(doc, loc, name, value()?)
        }
        OpType::Replace => replace(doc, single("replacing")?, value()?),
        OpType::Insert => {
            let index = op.index.ok_or("the operation has no index")?;
            let (parent, key) = if locs.is_empty() {
                empty_list_target(doc, op, index)?
            } else {
                list_target(&locs, src)?
            };
            let target_ty = type_at(doc, &parent).and_then(|t| element_type(&t, &key));
            let item = build_item(value()?, target_ty.as_deref())?;
            let obj = object_at(doc, &parent)?;
            let mut list = take_list(obj, &key);
            if index > list.len() {
                return Err(format!(
                    "index {index} is out of range: the list at {src} has {} element(s)",
                    list.len()
                ));
            }
            list.insert(index, item);
            put_list(obj, &key, list);
            Ok(())
        }
        OpType::Move => {
            if locs.is_empty() {
                return Err(format!("No content found at {src} when moving"));
            }
            let (source, destination) = match (op.source, op.destination) {
                (Some(s), Some(d)) => (s, d),
                _ => return Err("the operation has no source or destination".into()),
            };
            let (parent, key) = list_target(&locs, src)?;
            let obj = object_at(doc, &parent)?;
            let mut list = take_list(obj, &key);
            let n = list.len();
            if source >= n || destination >= n {
                return Err(format!(
                    "cannot move from {source} to {destination}: the list at {src} has {n} element(s)"
                ));
            }
            let item = list.remove(source);
            list.insert(destination, item);
            put_list(obj, &key, list);
            Ok(())
        }
    }
}

/// The list (parent object and property) that all `locs` are items of.
fn list_target(locs: &[Loc], src: &str) -> Result<(Vec<Seg>, String), String> {
    let mut target: Option<(&Vec<Seg>, &String)> = None;
    for l in locs {
        let Loc::Elem {
            parent,
            key,
            index: Some(_),
        } = l
        else {
            return Err(format!("the path {src} does not identify a list"));
        };
        match target {
            None => target = Some((parent, key)),
            Some((p, k)) if p == parent && k == key => {}
            Some(_) => {
                return Err(format!(
                    "the path {src} identifies elements of more than one list"
                ))
            }
        }
    }
    target
        .map(|(p, k)| (p.clone(), k.clone()))
        .ok_or_else(|| format!("No content found at {src}"))
}

/// For `insert` at index 0 into a list that does not exist yet: a path of the
/// form `<expression>.<name>` whose expression identifies one element.
fn empty_list_target(
    doc: &Json,
    op: &Operation,
    index: usize,
) -> Result<(Vec<Seg>, String), String> {
    let src = op.path_src.trim();
    let not_found = || format!("No content found at {src} when inserting");
    let (prefix, name) = src.rsplit_once('.').ok_or_else(not_found)?;
    if index != 0 || check_element_name(name).is_err() || prefix.trim().is_empty() {
        return Err(not_found());
    }
    let Ok(expr) = fhirpath::parse(prefix) else {
        return Err(not_found());
    };
    let parent_op = Operation {
        expression: op.expression.clone(),
        kind: op.kind,
        path_src: prefix.to_string(),
        path: expr,
        name: None,
        value: None,
        index: None,
        source: None,
        destination: None,
    };
    let locs = locate(doc, &parent_op)?;
    let [loc] = locs.as_slice() else {
        return Err(not_found());
    };
    let path = complex_path(doc, loc).ok_or_else(not_found)?;
    let ty = type_at(doc, &path);
    if let Some(t) = ty.as_deref() {
        match model().element(t, name) {
            Some(e) if e.is_array => {}
            Some(_) => return Err(format!("the path {src} does not identify a list")),
            None => return Err(format!("{t} has no element named \"{name}\"")),
        }
    }
    Ok((path, name.to_string()))
}

/// The JSON path of a located object (the resource or a complex element).
fn complex_path(doc: &Json, loc: &Loc) -> Option<Vec<Seg>> {
    let path = match loc {
        Loc::Root => Vec::new(),
        Loc::Elem { parent, key, index } => {
            let mut p = parent.clone();
            p.push(Seg::Key(key.clone()));
            if let Some(i) = index {
                p.push(Seg::Index(*i));
            }
            p
        }
    };
    nav(doc, &path).filter(|v| v.is_object()).map(|_| path)
}

fn add(doc: &mut Json, loc: &Loc, name: &str, value: &PValue) -> Result<(), String> {
    if let Loc::Elem { parent, key, index } = loc {
        let node_ty = type_at(doc, parent).and_then(|t| element_type(&t, key));
        let primitive = match node_ty.as_deref() {
            Some(t) => is_primitive(t),
            None => {
                let obj = nav(doc, parent).and_then(Json::as_object);
                let item = match index {
                    Some(i) => obj.and_then(|o| take_list(o, key).into_iter().nth(*i)),
                    None => obj.map(|o| get_single(o, key)),
                };
                !item.is_some_and(|i| i.value.is_some_and(|v| v.is_object()))
            }
        };
        if primitive {
            // id and extensions of a primitive live in its `_name` companion
            let info = resolve_elem(node_ty.as_deref(), name, value.type_name())?;
            let item = build_item(value, info.ty.as_deref())?;
            let obj = object_at(doc, parent)?;
            return modify_item(obj, key, *index, |it| {
                let mut ext = match it.ext.take() {
                    Some(Json::Object(m)) => m,
                    None => Map::new(),
                    Some(_) => return Err(format!("_{key} is not a JSON object")),
                };
                insert_item(&mut ext, &info, item)?;
                it.ext = Some(Json::Object(ext));
                Ok(())
            });
        }
    }
    let path = complex_path(doc, loc).ok_or("the element at the path is not a JSON object")?;
    let ty = type_at(doc, &path);
    let info = resolve_elem(ty.as_deref(), name, value.type_name())?;
    let item = build_item(value, info.ty.as_deref())?;
    insert_item(object_at(doc, &path)?, &info, item)
}

fn replace(doc: &mut Json, loc: &Loc, value: &PValue) -> Result<(), String> {
    let Loc::Elem { parent, key, index } = loc else {
        return Err("the resource itself cannot be replaced".into());
    };
    let parent_ty = type_at(doc, parent);
    let resolved = parent_ty
        .as_deref()
        .and_then(|t| model().element(t, key).map(|e| (t, e)));
    let (new_key, target_ty) = match resolved {
        Some((pt, e)) if e.choice => {
            let base = e.def.name.trim_end_matches("[x]");
            match value.type_name() {
                Some(vt) => {
                    if !e.def.types.iter().any(|t| t == vt) {
                        return Err(format!(
                            "type {vt} is not allowed for {pt}.{} (allowed: {})",
                            e.def.name,
                            e.def.types.join(", ")
                        ));
                    }
                    (format!("{base}{}", capitalize(vt)), Some(vt.to_string()))
                }
                None => (key.clone(), element_type(pt, key)),
            }
        }
        Some((pt, _)) => (key.clone(), element_type(pt, key)),
        None => (key.clone(), None),
    };
    let item = build_item(value, target_ty.as_deref())?;
    let obj = object_at(doc, parent)?;
    match index {
        Some(_) => modify_item(obj, key, *index, |it| {
            *it = item;
            Ok(())
        }),
        None => {
            if new_key != *key {
                put_single(obj, key, Item::default());
            }
            put_single(obj, &new_key, item);
            Ok(())
        }
    }
}

fn delete(doc: &mut Json, loc: &Loc) -> Result<(), String> {
    let Loc::Elem { parent, key, index } = loc else {
        return Err("the resource itself cannot be deleted".into());
    };
    let obj = object_at(doc, parent)?;
    match index {
        Some(i) => {
            let mut list = take_list(obj, key);
            if *i < list.len() {
                list.remove(*i);
            }
            put_list(obj, key, list);
        }
        None => put_single(obj, key, Item::default()),
    }
    prune(doc, parent.clone());
    Ok(())
}

/// Removes objects left empty by a deletion, from `path` upwards (FHIR JSON
/// has no empty objects or arrays). The resource itself is never removed.
fn prune(doc: &mut Json, mut path: Vec<Seg>) {
    loop {
        if path.is_empty() {
            return;
        }
        let empty = nav(doc, &path)
            .and_then(Json::as_object)
            .is_some_and(Map::is_empty);
        if !empty {
            return;
        }
        match path.pop() {
            Some(Seg::Key(k)) => {
                if let Some(obj) = nav_mut(doc, &path).and_then(Json::as_object_mut) {
                    obj.shift_remove(&k);
                }
            }
            Some(Seg::Index(i)) => {
                let Some(Seg::Key(k)) = path.pop() else {
                    return;
                };
                let Some(obj) = nav_mut(doc, &path).and_then(Json::as_object_mut) else {
                    return;
                };
                let (name, is_ext) = match k.strip_prefix('_') {
                    Some(n) => (n, true),
                    None => (k.as_str(), false),
                };
                let mut list = take_list(obj, name);
                if let Some(item) = list.get_mut(i) {
                    if is_ext {
                        item.ext = None;
                    } else {
                        item.value = None;
                    }
                }
                put_list(obj, name, list);
            }
            None => return,
        }
    }
}
