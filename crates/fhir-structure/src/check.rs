//! Structural validation of FHIR R4 JSON resources against the [`Model`].
//!
//! Owns: strict JSON parsing ([`parse_json`]: syntax errors with line/column,
//! duplicate keys, nesting depth) and the structural check of a parsed
//! resource ([`check_resource`]): known resource type, known elements, JSON
//! value kinds, cardinality shape (arrays vs single values, minimum
//! cardinality), `null`/empty values, primitive extension (`_x`) pairing,
//! choice elements, primitive lexical formats (via [`crate::primitive`]),
//! contained resources, narrative `div` and the extension value/children rule.
//!
//! The narrative `div` is checked lightly (a string starting with `<div` that
//! declares the XHTML namespace), not parsed as XHTML. Terminology bindings
//! and FHIRPath invariants are *not* checked here.
//!
//! Issue expressions are FHIRPath-like with 0-based indexes
//! (`Patient.name[0].given[1]`); choice elements are named by their JSON
//! property (`Patient.deceasedBoolean`); issues in `_x` objects use the name
//! without the underscore (`Patient.birthDate.extension[0].url`); nested
//! resources continue the path (`Bundle.entry[0].resource.name[0]`). Issues on
//! a top-level value that is not a resource use `Resource`; [`parse_json`]
//! issues have an empty expression (they concern the whole document).
//!
//! Paths are built lazily: the recursion passes a linked list of path segments
//! on the stack and a string is only rendered when an issue is reported.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::model::{Kind, Model, Prop, TypeIndex};
use crate::primitive::{self, json_type_name, Prim};

/// Severity of an [`Issue`] (mirrors FHIR `OperationOutcome.issue.severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    /// The FHIR code (`fatal`, `error`, `warning`, `information`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }

    /// Fatal or Error.
    pub fn is_error(self) -> bool {
        matches!(self, Severity::Fatal | Severity::Error)
    }
}

/// One validation finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// FHIR issue-type code: `structure`, `value`, `invalid`, `required`,
    /// `not-supported` or `too-long`.
    pub code: &'static str,
    /// FHIRPath-like location, e.g. `Patient.name[0].given[1]` (see module docs).
    pub expression: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}: {}",
            self.severity.as_str(),
            self.code,
            self.expression,
            self.message
        )
    }
}

/// At most this many issues are reported by [`check_resource`].
pub const MAX_ISSUES: usize = 100;

/// Maximum nesting of JSON arrays/objects accepted by [`parse_json`]:
/// documents nested this deep or deeper are rejected (serde_json's own
/// recursion guard uses the same limit).
pub const MAX_JSON_DEPTH: usize = 128;

/// Maximum nesting of resources (contained, `Bundle.entry.resource`,
/// `Parameters.parameter.resource`) followed by [`check_resource`].
pub const MAX_RESOURCE_DEPTH: usize = 16;

/// Maximum nesting of objects/arrays followed by [`check_resource`]; values
/// built without [`parse_json`] may be deeper, and are reported rather than
/// followed (bounding stack use).
const MAX_CHECK_DEPTH: usize = MAX_JSON_DEPTH;

// ---------------------------------------------------------------------------
// strict JSON parsing
// ---------------------------------------------------------------------------

/// The private token serde_json (with `arbitrary_precision`) uses to pass a
/// number to a visitor as a single-entry map.
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parse bytes as JSON strictly: syntax errors (with line/column in the
/// message), duplicate object keys and nesting of [`MAX_JSON_DEPTH`] levels or
/// more are rejected with a `Fatal`/`invalid` issue. A leading UTF-8 BOM is
/// ignored. Numbers keep their exact text (`arbitrary_precision`).
pub fn parse_json(bytes: &[u8]) -> Result<Value, Issue> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = ValueSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(json_issue)?;
    de.end().map_err(json_issue)?;
    Ok(value)
}

fn json_issue(e: serde_json::Error) -> Issue {
    let text = e.to_string();
    let message = if text.starts_with("recursion limit exceeded") {
        format!(
            "JSON nested too deeply (limit {MAX_JSON_DEPTH} levels) at line {} column {}",
            e.line(),
            e.column()
        )
    } else {
        format!("invalid JSON: {text}")
    };
    Issue {
        severity: Severity::Fatal,
        code: "invalid",
        expression: String::new(),
        message,
    }
}

/// Builds a `serde_json::Value`, rejecting duplicate keys and deep nesting.
#[derive(Clone, Copy)]
struct ValueSeed {
    depth: usize,
}

impl ValueSeed {
    fn nested<E: de::Error>(self) -> Result<ValueSeed, E> {
        let depth = self.depth + 1;
        if depth >= MAX_JSON_DEPTH {
            return Err(E::custom(format_args!(
                "JSON nested too deeply (limit {MAX_JSON_DEPTH} levels)"
            )));
        }
        Ok(ValueSeed { depth })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Value::Object(Map::new()));
        };
        if first == SERDE_JSON_NUMBER_TOKEN {
            let text: String = map.next_value()?;
            return text
                .parse::<Number>()
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        let inner = self.nested()?;
        let mut out = Map::new();
        let v = map.next_value_seed(inner)?;
        out.insert(first, v);
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {}",
                    primitive::quote(&key)
                )));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

// ---------------------------------------------------------------------------
// structural check
// ---------------------------------------------------------------------------

/// A lazily rendered FHIRPath-like location (linked list on the stack).
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a str),
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut s = String::with_capacity(48);
        self.write(&mut s);
        s
    }

    fn write(&self, out: &mut String) {
        match self {
            Path::Root(n) => out.push_str(n),
            Path::Field(p, n) => {
                p.write(out);
                out.push('.');
                out.push_str(n);
            }
            Path::Index(p, i) => {
                p.write(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

/// Full structural check of a resource (any R4 resource type). Contained
/// resources, `Bundle.entry.resource` and `Parameters.parameter.resource` are
/// checked recursively, up to [`MAX_RESOURCE_DEPTH`] levels. Returns all
/// issues found, at most [`MAX_ISSUES`]; an empty vector means the resource is
/// structurally valid.
pub fn check_resource(value: &Value) -> Vec<Issue> {
    let mut c = Checker::new(Model::r4());
    c.resource(value, None, 0, 0, false);
    c.issues
}

/// Bits for "element seen" tracking (flattened element index < 256).
#[derive(Default)]
struct Seen([u64; 4]);

impl Seen {
    /// Marks `i`; returns whether it was already set.
    fn mark(&mut self, i: u16) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        match self.0.get_mut(w) {
            Some(word) => {
                let was = *word & (1 << b) != 0;
                *word |= 1 << b;
                was
            }
            None => false,
        }
    }

    fn get(&self, i: u16) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.0.get(w).is_some_and(|word| word & (1 << b) != 0)
    }
}

struct Checker<'m> {
    m: &'m Model,
    issues: Vec<Issue>,
    /// Type ids of special types.
    resource_tid: Option<u32>,
    element_tid: Option<u32>,
    extension_tid: Option<u32>,
    /// Flattened indexes of Extension.extension and Extension.value[x].
    ext_children_flat: Option<u16>,
    ext_value_flat: Option<u16>,
}

impl<'m> Checker<'m> {
    fn new(m: &'m Model) -> Self {
        let extension_tid = m.type_id("Extension");
        let flat = |name: &str| extension_tid.and_then(|t| m.prop(t, name)).map(|p| p.flat);
        Checker {
            m,
            issues: Vec::new(),
            resource_tid: m.type_id("Resource"),
            element_tid: m.type_id("Element"),
            extension_tid,
            ext_children_flat: flat("extension"),
            ext_value_flat: flat("valueString"),
        }
    }

    fn full(&self) -> bool {
        self.issues.len() >= MAX_ISSUES
    }

    fn push(&mut self, severity: Severity, code: &'static str, path: &Path, message: String) {
        if self.full() {
            return;
        }
        self.issues.push(Issue {
            severity,
            code,
            expression: path.render(),
            message,
        });
    }

    fn error(&mut self, code: &'static str, path: &Path, message: String) {
        self.push(Severity::Error, code, path, message);
    }

    /// Check a value that must be a resource. `path` is `None` at top level.
    fn resource(
        &mut self,
        v: &Value,
        path: Option<&Path>,
        res_depth: usize,
        depth: usize,
        contained: bool,
    ) {
        let top = Path::Root("Resource");
        let at = path.unwrap_or(&top);
        let sev = if path.is_none() {
            Severity::Fatal
        } else {
            Severity::Error
        };
        if res_depth > MAX_RESOURCE_DEPTH {
            self.push(
                sev,
                "structure",
                at,
                format!("resources nested more than {MAX_RESOURCE_DEPTH} levels deep"),
            );
            return;
        }
        let Value::Object(obj) = v else {
            self.push(
                sev,
                "structure",
                at,
                format!(
                    "a resource must be a JSON object, found {}",
                    json_type_name(v)
                ),
            );
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                self.push(
                    sev,
                    "structure",
                    at,
                    format!(
                        "resourceType must be a string, found {}",
                        json_type_name(other)
                    ),
                );
                return;
            }
            None => {
                self.push(sev, "required", at, "missing resourceType".to_string());
                return;
            }
        };
        let Some((tid, t)) = self
            .m
            .type_id(rt)
            .and_then(|id| Some((id, self.m.type_by_id(id)?)))
            .filter(|(_, t)| t.kind == Kind::Resource)
        else {
            self.push(
                sev,
                "not-supported",
                at,
                format!("unknown resource type {}", primitive::quote(rt)),
            );
            return;
        };
        if t.is_abstract {
            self.push(
                sev,
                "invalid",
                at,
                format!("{rt} is an abstract type and cannot be instantiated"),
            );
            return;
        }
        let root = Path::Root(t.name.as_str());
        let here = path.unwrap_or(&root);
        let ctx = Ctx {
            is_resource: true,
            contained,
        };
        self.object(tid, obj, here, depth, res_depth, ctx);
    }

    /// Check the properties of an object of type `tid`.
    fn object(
        &mut self,
        tid: u32,
        obj: &Map<String, Value>,
        path: &Path,
        depth: usize,
        res_depth: usize,
        ctx: Ctx,
    ) {
        let m = self.m;
        if depth > MAX_CHECK_DEPTH {
            self.error(
                "structure",
                path,
                format!("content nested more than {MAX_CHECK_DEPTH} levels deep"),
            );
            return;
        }
        if obj.is_empty() {
            self.error("structure", path, "empty object is not allowed".to_string());
            return;
        }
        let Some(ix) = m.type_index(tid) else {
            return;
        };
        let has_underscore = obj.keys().any(|k| k.starts_with('_'));
        let mut seen = Seen::default();
        for (key, val) in obj {
            if self.full() {
                return;
            }
            let key = key.as_str();
            if key == "resourceType" && ctx.is_resource {
                continue; // already checked by `resource`
            }
            if let Some(base) = key.strip_prefix('_') {
                if obj.contains_key(base) && ix.props.contains_key(base) {
                    continue; // checked (or reported) together with the value
                }
                match ix.props.get(base) {
                    Some(p) if p.prim.is_some() => {
                        if seen.mark(p.flat) && p.choice {
                            self.multiple_choice(path, key, p);
                        }
                        let fpath = Path::Field(path, base);
                        self.primitive_element(p, None, Some(val), &fpath, depth, res_depth);
                    }
                    _ => self.unknown_element(tid, ix, path, key),
                }
                continue;
            }
            let Some(p) = ix.props.get(key) else {
                self.unknown_element(tid, ix, path, key);
                continue;
            };
            if seen.mark(p.flat) && p.choice {
                self.multiple_choice(path, key, p);
            }
            let fpath = Path::Field(path, key);
            if ctx.contained && key == "contained" {
                self.error(
                    "structure",
                    &fpath,
                    "a contained resource must not contain resources".to_string(),
                );
                continue;
            }
            let ext = if has_underscore {
                underscore_get(obj, key)
            } else {
                None
            };
            if p.prim.is_some() {
                self.primitive_element(p, Some(val), ext, &fpath, depth, res_depth);
            } else {
                if ext.is_some() {
                    self.error(
                        "structure",
                        &Path::Field(path, &format!("_{key}")),
                        format!("_{key} is only allowed for primitive elements"),
                    );
                }
                self.complex_element(p, val, &fpath, depth, res_depth, key == "contained");
            }
        }
        // minimum cardinality
        for &f in &ix.required {
            if seen.get(f) {
                continue;
            }
            let Some(def) = ix.flat.get(f as usize).and_then(|&(o, e)| m.elem_def(o, e)) else {
                continue;
            };
            let name = def.name.strip_suffix("[x]").unwrap_or(&def.name);
            self.error(
                "required",
                &Path::Field(path, name),
                format!(
                    "missing required element {} (minimum cardinality {})",
                    def.name, def.min
                ),
            );
        }
        // Extension: value[x] xor nested extensions
        if Some(tid) == self.extension_tid {
            let has_value = self.ext_value_flat.is_some_and(|f| seen.get(f));
            let has_children = self.ext_children_flat.is_some_and(|f| seen.get(f));
            if has_value == has_children {
                let msg = if has_value {
                    "an extension must have either extensions or value[x], not both"
                } else {
                    "an extension must have either extensions or a value[x]"
                };
                self.error("structure", path, msg.to_string());
            }
        }
    }

    fn multiple_choice(&mut self, path: &Path, key: &str, p: &Prop) {
        let name = self
            .m
            .elem_def(p.owner, p.elem)
            .map_or("?", |d| d.name.as_str());
        self.error(
            "structure",
            &Path::Field(path, key),
            format!("more than one variant of choice element {name}"),
        );
    }

    fn unknown_element(&mut self, tid: u32, ix: &TypeIndex, path: &Path, key: &str) {
        let m = self.m;
        let tname = m.type_by_id(tid).map_or("?", |t| t.name.as_str());
        let bare = key.strip_prefix('_').unwrap_or(key);
        // a choice element with a type that is not allowed?
        let choice = ix
            .flat
            .iter()
            .filter_map(|&(o, e)| m.elem_def(o, e))
            .find(|d| {
                d.name.strip_suffix("[x]").is_some_and(|prefix| {
                    bare.strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
                })
            });
        let message = match choice {
            _ if key == "resourceType" => {
                format!("resourceType is only allowed on resources, not in {tname}")
            }
            Some(d) => format!(
                "{key}: type not allowed for choice element {tname}.{} (allowed: {})",
                d.name,
                d.types.join(", ")
            ),
            None if key.starts_with('_') && ix.props.contains_key(bare) => {
                format!("{key}: {bare} is not a primitive element")
            }
            None => format!("unknown element {} on type {tname}", primitive::quote(key)),
        };
        self.error("structure", &Path::Field(path, key), message);
    }

    /// A primitive element: its value (`given`) and/or its `_given` companion.
    fn primitive_element(
        &mut self,
        p: &Prop,
        val: Option<&Value>,
        ext: Option<&Value>,
        path: &Path,
        depth: usize,
        res_depth: usize,
    ) {
        let Some(prim) = p.prim else {
            return;
        };
        if !p.is_array {
            let mut has_value = false;
            match val {
                None => {}
                Some(Value::Array(_)) => self.error(
                    "structure",
                    path,
                    "must be a single value, not an array (max cardinality 1)".to_string(),
                ),
                Some(Value::Null) => self.null_value(path),
                Some(v) => {
                    has_value = true;
                    self.primitive_value(prim, v, path);
                }
            }
            match ext {
                None => {}
                Some(Value::Object(o)) => self.primitive_ext(o, has_value, path, depth, res_depth),
                Some(Value::Null) => self.null_value(path),
                Some(other) => self.error(
                    "structure",
                    path,
                    format!(
                        "the _ companion of a single primitive must be an object, found {}",
                        json_type_name(other)
                    ),
                ),
            }
            return;
        }
        let vals = match val {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(Value::Null) => {
                self.null_value(path);
                return;
            }
            Some(_) => {
                self.error(
                    "structure",
                    path,
                    "must be an array (element repeats), even with a single item".to_string(),
                );
                return;
            }
        };
        let exts = match ext {
            None => None,
            Some(Value::Array(a)) => Some(a),
            Some(other) => {
                self.error(
                    "structure",
                    path,
                    format!(
                        "the _ companion of a repeating primitive must be an array, found {}",
                        json_type_name(other)
                    ),
                );
                return;
            }
        };
        let vlen = vals.map_or(0, |a| a.len());
        let elen = exts.map_or(0, |a| a.len());
        if vals.is_some_and(|a| a.is_empty()) || exts.is_some_and(|a| a.is_empty()) {
            self.error("structure", path, "empty array is not allowed".to_string());
        }
        if let (Some(_), Some(_)) = (vals, exts) {
            if vlen != elen {
                self.error(
                    "structure",
                    path,
                    format!("value array and _ array have different lengths ({vlen} and {elen})"),
                );
            }
        }
        self.check_max(p, vlen.max(elen), path);
        for i in 0..vlen.max(elen) {
            if self.full() {
                return;
            }
            let v = vals.and_then(|a| a.get(i)).filter(|v| !v.is_null());
            let e = exts.and_then(|a| a.get(i)).filter(|v| !v.is_null());
            let ip = Path::Index(path, i);
            if v.is_none() && e.is_none() {
                self.null_value(&ip);
                continue;
            }
            if let Some(v) = v {
                self.primitive_value(prim, v, &ip);
            }
            match e {
                None => {}
                Some(Value::Object(o)) => {
                    self.primitive_ext(o, v.is_some(), &ip, depth + 1, res_depth)
                }
                Some(other) => self.error(
                    "structure",
                    &ip,
                    format!(
                        "items of the _ array must be objects or null, found {}",
                        json_type_name(other)
                    ),
                ),
            }
        }
    }

    fn null_value(&mut self, path: &Path) {
        self.error(
            "structure",
            path,
            "null is not allowed (except paired with an extension in a primitive array)"
                .to_string(),
        );
    }

    fn primitive_value(&mut self, prim: Prim, v: &Value, path: &Path) {
        if let Err(e) = primitive::check(prim, v) {
            self.error(e.code, path, e.message);
        }
    }

    /// The `_x` object of a primitive: only `id` and `extension`.
    fn primitive_ext(
        &mut self,
        o: &Map<String, Value>,
        has_value: bool,
        path: &Path,
        depth: usize,
        res_depth: usize,
    ) {
        let Some(etid) = self.element_tid else {
            return;
        };
        if !has_value && !o.is_empty() && !o.contains_key("extension") {
            self.error(
                "structure",
                path,
                "a primitive element must have a value or extensions".to_string(),
            );
        }
        let ctx = Ctx {
            is_resource: false,
            contained: false,
        };
        self.object(etid, o, path, depth + 1, res_depth, ctx);
    }

    fn check_max(&mut self, p: &Prop, len: usize, path: &Path) {
        let Some(max) = self.m.elem_def(p.owner, p.elem).and_then(|d| d.max) else {
            return;
        };
        if len > max as usize {
            self.error(
                "structure",
                path,
                format!("{len} items exceed the maximum cardinality {max}"),
            );
        }
    }

    fn complex_element(
        &mut self,
        p: &Prop,
        val: &Value,
        path: &Path,
        depth: usize,
        res_depth: usize,
        contained: bool,
    ) {
        let Some(tid) = p.type_id else {
            return;
        };
        if !p.is_array {
            match val {
                Value::Array(_) => self.error(
                    "structure",
                    path,
                    "must be a single value, not an array (max cardinality 1)".to_string(),
                ),
                Value::Null => self.null_value(path),
                v => self.complex_value(tid, v, path, depth, res_depth, contained),
            }
            return;
        }
        match val {
            Value::Array(items) => {
                if items.is_empty() {
                    self.error("structure", path, "empty array is not allowed".to_string());
                    return;
                }
                self.check_max(p, items.len(), path);
                for (i, item) in items.iter().enumerate() {
                    if self.full() {
                        return;
                    }
                    let ip = Path::Index(path, i);
                    if item.is_null() {
                        self.null_value(&ip);
                    } else {
                        self.complex_value(tid, item, &ip, depth + 1, res_depth, contained);
                    }
                }
            }
            Value::Null => self.null_value(path),
            _ => self.error(
                "structure",
                path,
                "must be an array (element repeats), even with a single item".to_string(),
            ),
        }
    }

    fn complex_value(
        &mut self,
        tid: u32,
        v: &Value,
        path: &Path,
        depth: usize,
        res_depth: usize,
        contained: bool,
    ) {
        if Some(tid) == self.resource_tid {
            self.resource(v, Some(path), res_depth + 1, depth + 1, contained);
            return;
        }
        match v {
            Value::Object(o) => {
                let ctx = Ctx {
                    is_resource: false,
                    contained: false,
                };
                self.object(tid, o, path, depth + 1, res_depth, ctx);
            }
            other => {
                let tname = self.m.type_by_id(tid).map_or("?", |t| t.name.as_str());
                self.error(
                    "structure",
                    path,
                    format!(
                        "{tname} must be a JSON object, found {}",
                        json_type_name(other)
                    ),
                );
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Ctx {
    /// The object is a resource (may carry `resourceType`).
    is_resource: bool,
    /// The object is a contained resource (must not contain `contained`).
    contained: bool,
}

/// `obj["_" + key]` without allocating for ordinary key lengths.
fn underscore_get<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    let mut buf = [0u8; 128];
    let n = key.len() + 1;
    match buf.get_mut(..n) {
        Some(dst) => {
            let (first, rest) = dst.split_first_mut()?;
            *first = b'_';
            rest.copy_from_slice(key.as_bytes());
            let k = std::str::from_utf8(dst).ok()?;
            obj.get(k)
        }
        None => obj.get(&format!("_{key}")),
    }
}
