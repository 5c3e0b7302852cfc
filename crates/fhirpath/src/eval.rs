//! Tree-walking evaluator: navigation over JSON (choice types, `_x`
//! primitive siblings, contained resources), operators and variables.

use crate::context::EvalContext;
use crate::decimal::Decimal;
use crate::ops;
use crate::parser::{Ast, BinOp, TypeSpec};
use crate::temporal::DateTime;
use crate::types::{self, TypeProvider};
use crate::value::{NodeRef, Prim, TypeInfo, Value};
use crate::EvalError;
use serde_json::{Map, Value as Json};
use std::cell::{Cell, OnceCell};

/// Maximum evaluation recursion depth.
const MAX_EVAL_DEPTH: u32 = 160;

pub(crate) type Coll<'a> = Vec<Value<'a>>;

/// Per-iteration variables.
#[derive(Clone, Copy)]
pub(crate) struct Frame<'f, 'a> {
    pub this: &'f [Value<'a>],
    pub index: Option<usize>,
    pub total: Option<&'f [Value<'a>]>,
}

pub(crate) struct Evaluator<'a, 'c> {
    pub ctx: &'c EvalContext<'a>,
    pub types: &'a dyn TypeProvider,
    pub input: &'c [Value<'a>],
    pub resource: Option<Value<'a>>,
    pub root_resource: Option<Value<'a>>,
    pub now: OnceCell<DateTime>,
    depth: Cell<u32>,
}

pub(crate) fn err<T>(m: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError::new(m))
}

fn lookup_underscore<'m>(map: &'m Map<String, Json>, name: &str) -> Option<&'m Json> {
    let mut buf = [0u8; 80];
    let n = name.len();
    if n + 1 > buf.len() {
        return map.get(&format!("_{}", name));
    }
    buf[0] = b'_';
    buf[1..=n].copy_from_slice(name.as_bytes());
    let key = std::str::from_utf8(&buf[..=n]).ok()?;
    map.get(key)
}

fn may_have_ext(v: &Json) -> bool {
    match v {
        Json::Object(_) => false,
        Json::Array(a) => !a.iter().any(|x| x.is_object()),
        _ => true,
    }
}

pub(crate) fn resource_node(v: &Json) -> Value<'_> {
    let t = v.get("resourceType").and_then(|t| t.as_str()).unwrap_or("");
    Value::Node(NodeRef::new(v, t))
}

impl<'a, 'c> Evaluator<'a, 'c> {
    pub fn new(ctx: &'c EvalContext<'a>, input: &'c [Value<'a>]) -> Self {
        let resource = ctx
            .resource
            .map(resource_node)
            .or_else(|| input.first().cloned());
        let root_resource = ctx
            .root_resource
            .map(resource_node)
            .or_else(|| resource.clone());
        Evaluator {
            ctx,
            types: ctx.types,
            input,
            resource,
            root_resource,
            now: OnceCell::new(),
            depth: Cell::new(0),
        }
    }

    pub fn now(&self) -> DateTime {
        *self
            .now
            .get_or_init(|| self.ctx.now.unwrap_or_else(DateTime::now))
    }

    pub fn eval(&self, ast: &Ast, f: Frame<'_, 'a>) -> Result<Coll<'a>, EvalError> {
        let d = self.depth.get() + 1;
        if d > MAX_EVAL_DEPTH {
            return err("expression evaluation nested too deeply");
        }
        self.depth.set(d);
        let r = self.eval_inner(ast, f);
        self.depth.set(d - 1);
        r
    }

    pub fn check_size(&self, n: usize) -> Result<(), EvalError> {
        if n > self.ctx.max_collection {
            err(format!(
                "collection exceeds {} items",
                self.ctx.max_collection
            ))
        } else {
            Ok(())
        }
    }

    fn eval_inner(&self, ast: &Ast, f: Frame<'_, 'a>) -> Result<Coll<'a>, EvalError> {
        match ast {
            Ast::Lit(v) => Ok(vec![v.clone()]),
            Ast::Empty => Ok(Vec::new()),
            Ast::Ident(name) => self.ident(name, f),
            Ast::Member(base, name) => {
                if self.ctx.strict {
                    self.strict_member_after_cast(base, name)?;
                }
                let b = self.eval(base, f)?;
                self.members(&b, name)
            }
            Ast::Call(c) => self.call(c, f),
            Ast::This => Ok(f.this.to_vec()),
            Ast::Index => Ok(f
                .index
                .map(|i| vec![Value::Integer(i as i64)])
                .unwrap_or_default()),
            Ast::Total => Ok(f.total.map(|t| t.to_vec()).unwrap_or_default()),
            Ast::Var(name) => self.var(name),
            Ast::Indexer(base, idx) => {
                let b = self.eval(base, f)?;
                let i = self.eval(idx, f)?;
                if i.is_empty() {
                    return Ok(Vec::new());
                }
                if i.len() > 1 {
                    return err("indexer requires a single integer");
                }
                let n = match i[0].prim() {
                    Prim::Int(n) => n,
                    _ => return err("indexer requires an integer"),
                };
                if n < 0 {
                    return Ok(Vec::new());
                }
                Ok(b.into_iter().nth(n as usize).into_iter().collect())
            }
            Ast::Neg(e) => {
                let v = self.eval(e, f)?;
                match v.len() {
                    0 => Ok(Vec::new()),
                    1 => Ok(vec![ops::negate(&v[0])?]),
                    _ => err("unary minus requires a single value"),
                }
            }
            Ast::Bin(op, l, r) => self.binary(*op, l, r, f),
            Ast::TypeOp(is, e, ty) => {
                let v = self.eval(e, f)?;
                self.check_type_known(ty)?;
                match v.len() {
                    0 => Ok(Vec::new()),
                    1 if *is => Ok(vec![Value::Boolean(self.is_type(&v[0], ty, false))]),
                    _ if !*is && (v.len() == 1 || !self.ctx.strict) => Ok(v
                        .into_iter()
                        .filter(|x| self.is_type(x, ty, true))
                        .collect()),
                    _ => err(format!(
                        "'{}' requires a single item, got {}",
                        if *is { "is" } else { "as" },
                        v.len()
                    )),
                }
            }
        }
    }

    // ---------------------------------------------------------------- variables

    fn var(&self, name: &str) -> Result<Coll<'a>, EvalError> {
        for (n, v) in &self.ctx.variables {
            if n == name {
                return Ok(v.clone());
            }
        }
        let s = |v: &str| Ok(vec![Value::String(v.to_string())]);
        match name {
            "context" => Ok(self.input.to_vec()),
            "resource" => Ok(self.resource.iter().cloned().collect()),
            "rootResource" => Ok(self.root_resource.iter().cloned().collect()),
            "ucum" => s("http://unitsofmeasure.org"),
            "sct" => s("http://snomed.info/sct"),
            "loinc" => s("http://loinc.org"),
            _ => {
                if let Some(rest) = name.strip_prefix("vs-") {
                    s(&format!("http://hl7.org/fhir/ValueSet/{}", rest))
                } else if let Some(rest) = name.strip_prefix("ext-") {
                    s(&format!("http://hl7.org/fhir/StructureDefinition/{}", rest))
                } else if let Some(rest) = name.strip_prefix("cs-") {
                    s(&format!("http://hl7.org/fhir/{}", rest))
                } else {
                    err(format!("undefined environment variable %{}", name))
                }
            }
        }
    }

    // ---------------------------------------------------------------- navigation

    fn ident(&self, name: &str, f: Frame<'_, 'a>) -> Result<Coll<'a>, EvalError> {
        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
            let mut out = Vec::new();
            let mut typed_nodes = false;
            for item in f.this {
                if let Value::Node(n) = item {
                    if !n.type_name.is_empty() {
                        typed_nodes = true;
                        if types::is_subtype(self.types, n.type_name, name) {
                            out.push(item.clone());
                        }
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if typed_nodes
                && (self.types.is_resource_type(name)
                    || matches!(name, "Resource" | "DomainResource")
                    || self.types.is_known_type(name))
            {
                if self.ctx.strict {
                    return err(format!("type '{}' does not match the context", name));
                }
                return Ok(Vec::new());
            }
        }
        self.members(f.this, name)
    }

    pub fn members(&self, items: &[Value<'a>], name: &str) -> Result<Coll<'a>, EvalError> {
        let mut out = Vec::new();
        for item in items {
            self.child(item, name, &mut out)?;
        }
        Ok(out)
    }

    pub fn child(&self, item: &Value<'a>, name: &str, out: &mut Coll<'a>) -> Result<(), EvalError> {
        match item {
            Value::Node(n) => self.node_child(n, name, out),
            Value::TypeInfo(t) => {
                match name {
                    "name" => out.push(Value::String(t.name.clone())),
                    "namespace" => out.push(Value::String(t.namespace.to_string())),
                    _ => {}
                }
                Ok(())
            }
            Value::Quantity(q) => {
                match name {
                    "value" => out.push(Value::Decimal(q.value)),
                    "unit" | "code" => out.push(Value::String(q.unit.clone())),
                    _ => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn strict_check(&self, parent: &str, name: &str) -> Result<(), EvalError> {
        if !self.ctx.strict || parent.is_empty() {
            return Ok(());
        }
        if let Some(et) = self.types.element_type(parent, name) {
            if et.choice {
                return err(format!(
                    "choice element '{}' must be accessed by its base name (strict mode)",
                    name
                ));
            }
            return Ok(());
        }
        if self.types.is_typed()
            && self.types.is_known_type(parent)
            && !self.has_choice_base(parent, name)
        {
            return err(format!("'{}' is not an element of {}", name, parent));
        }
        Ok(())
    }

    /// Strict mode: `(x as T).name` requires `name` to be an element of `T`.
    fn strict_member_after_cast(&self, base: &Ast, name: &str) -> Result<(), EvalError> {
        let ty = match base {
            Ast::TypeOp(false, _, ty) => ty,
            Ast::Call(c)
                if matches!(
                    c.func,
                    crate::parser::Func::As | crate::parser::Func::OfType
                ) =>
            {
                match &c.ty {
                    Some(t) => t,
                    None => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        if ty.namespace.as_deref() == Some("System") || !self.types.is_typed() {
            return Ok(());
        }
        let t = ty.name.as_str();
        if self.types.is_known_type(t)
            && !types::is_primitive(t)
            && self.types.element_type(t, name).is_none()
            && !self.has_choice_base(t, name)
        {
            return err(format!(
                "'{}' is not an element of {} (strict mode)",
                name, t
            ));
        }
        Ok(())
    }

    fn has_choice_base(&self, parent: &str, name: &str) -> bool {
        // a choice base name is valid if any expansion is known
        for t in types::PRIMITIVES.iter().chain(types::DATA_TYPES.iter()) {
            let mut key = String::with_capacity(name.len() + t.len());
            key.push_str(name);
            let mut cs = t.chars();
            if let Some(c) = cs.next() {
                key.push(c.to_ascii_uppercase());
                key.push_str(cs.as_str());
            }
            if self
                .types
                .element_type(parent, &key)
                .is_some_and(|e| e.choice)
            {
                return true;
            }
        }
        false
    }

    fn node_child(&self, n: &NodeRef<'a>, name: &str, out: &mut Coll<'a>) -> Result<(), EvalError> {
        match n.value {
            Some(Json::Object(map)) => {
                self.strict_check(n.type_name, name)?;
                if let Some(v) = map.get(name) {
                    let ext = if may_have_ext(v) {
                        lookup_underscore(map, name)
                    } else {
                        None
                    };
                    let t = self.element_type(n.type_name, name);
                    self.push_typed(t, Some(v), ext, out);
                    return Ok(());
                }
                // a known non-choice element that is absent: only a `_name`
                // sibling (primitives) can still supply it
                let known = if n.type_name.is_empty() {
                    None
                } else {
                    self.types
                        .element_type(n.type_name, name)
                        .filter(|k| !k.choice)
                };
                if known.is_some_and(|k| !types::is_primitive(k.type_name)) {
                    return Ok(());
                }
                if let Some(e) = lookup_underscore(map, name) {
                    let t = self.element_type(n.type_name, name);
                    self.push_typed(t, None, Some(e), out);
                    return Ok(());
                }
                if known.is_none() {
                    self.choice_child(n.type_name, map, name, out);
                }
                Ok(())
            }
            _ => {
                if let Some(Json::Object(ext)) = n.ext {
                    if let Some(v) = ext.get(name) {
                        let t = match name {
                            "extension" => "Extension",
                            "id" => "string",
                            _ => "",
                        };
                        self.push_typed(t, Some(v), None, out);
                    }
                }
                Ok(())
            }
        }
    }

    fn element_type(&self, parent: &'a str, name: &str) -> &'a str {
        if parent.is_empty() {
            return "";
        }
        match self.types.element_type(parent, name) {
            Some(e) => e.type_name,
            None => match name {
                "extension" | "modifierExtension" => "Extension",
                _ => "",
            },
        }
    }

    fn choice_child(
        &self,
        parent: &'a str,
        map: &'a Map<String, Json>,
        name: &str,
        out: &mut Coll<'a>,
    ) {
        for (k, v) in map.iter() {
            let (key, is_ext) = match k.strip_prefix('_') {
                Some(rest) => (rest, true),
                None => (k.as_str(), false),
            };
            if key.len() <= name.len()
                || !key.starts_with(name)
                || !key.as_bytes()[name.len()].is_ascii_uppercase()
            {
                continue;
            }
            let suffix = &key[name.len()..];
            let t: Option<&'a str> = if !parent.is_empty() && self.types.is_typed() {
                match self.types.element_type(parent, key) {
                    Some(e) if e.choice => Some(e.type_name),
                    Some(_) => None,
                    None => types::choice_suffix_type(suffix),
                }
            } else {
                types::choice_suffix_type(suffix)
            };
            let t = match t {
                Some(t) => t,
                None => continue,
            };
            if is_ext {
                if map.contains_key(key) {
                    continue;
                }
                self.push_typed(t, None, Some(v), out);
            } else {
                let ext = if may_have_ext(v) {
                    lookup_underscore(map, key)
                } else {
                    None
                };
                self.push_typed(t, Some(v), ext, out);
            }
            return;
        }
    }

    fn node_type(t: &'a str, v: Option<&'a Json>) -> &'a str {
        if let Some(Json::Object(m)) = v {
            if let Some(Json::String(rt)) = m.get("resourceType") {
                if t.is_empty()
                    || t == "Resource"
                    || t == "DomainResource"
                    || !t.contains('.') && t == rt
                {
                    return rt;
                }
                if t.starts_with(|c: char| c.is_ascii_uppercase())
                    && !types::DATA_TYPES.contains(&t)
                {
                    return rt;
                }
            }
        }
        t
    }

    pub fn push_typed(
        &self,
        t: &'a str,
        v: Option<&'a Json>,
        ext: Option<&'a Json>,
        out: &mut Coll<'a>,
    ) {
        match (v, ext) {
            (Some(Json::Array(arr)), _) => {
                let exts = ext.and_then(|e| e.as_array());
                for (i, item) in arr.iter().enumerate() {
                    let iv = if item.is_null() { None } else { Some(item) };
                    let ie = exts.and_then(|a| a.get(i)).filter(|x| !x.is_null());
                    if iv.is_none() && ie.is_none() {
                        continue;
                    }
                    out.push(Value::Node(NodeRef {
                        value: iv,
                        ext: ie,
                        type_name: Self::node_type(t, iv),
                    }));
                }
            }
            (None, Some(Json::Array(exts))) => {
                for e in exts.iter().filter(|x| !x.is_null()) {
                    out.push(Value::Node(NodeRef {
                        value: None,
                        ext: Some(e),
                        type_name: t,
                    }));
                }
            }
            (Some(Json::Null), None) | (None, None) => {}
            (v, ext) => {
                let v = v.filter(|x| !x.is_null());
                out.push(Value::Node(NodeRef {
                    value: v,
                    ext,
                    type_name: Self::node_type(t, v),
                }));
            }
        }
    }

    /// All child elements of a node (for `children()`).
    pub fn all_children(&self, item: &Value<'a>, out: &mut Coll<'a>) {
        let n = match item {
            Value::Node(n) => n,
            _ => return,
        };
        match n.value {
            Some(Json::Object(map)) => {
                for (k, v) in map.iter() {
                    if k == "resourceType" {
                        continue;
                    }
                    if let Some(base) = k.strip_prefix('_') {
                        if map.contains_key(base) {
                            continue;
                        }
                        let t = self.child_type(n.type_name, base);
                        self.push_typed(t, None, Some(v), out);
                        continue;
                    }
                    let ext = if may_have_ext(v) {
                        lookup_underscore(map, k)
                    } else {
                        None
                    };
                    let t = self.child_type(n.type_name, k);
                    self.push_typed(t, Some(v), ext, out);
                }
            }
            _ => {
                if let Some(Json::Object(ext)) = n.ext {
                    for (k, v) in ext.iter() {
                        let t = match k.as_str() {
                            "extension" => "Extension",
                            "id" => "string",
                            _ => "",
                        };
                        self.push_typed(t, Some(v), None, out);
                    }
                }
            }
        }
    }

    fn child_type(&self, parent: &'a str, key: &str) -> &'a str {
        let t = self.element_type(parent, key);
        if !t.is_empty() {
            return t;
        }
        // untyped: decode a choice suffix
        if let Some(pos) = key.find(|c: char| c.is_ascii_uppercase()) {
            if pos > 0 {
                if let Some(ct) = types::choice_suffix_type(&key[pos..]) {
                    return ct;
                }
            }
        }
        ""
    }

    // ---------------------------------------------------------------- types

    pub fn check_type_known(&self, ty: &TypeSpec) -> Result<(), EvalError> {
        let ok = match ty.namespace.as_deref() {
            Some("System") => true,
            Some("FHIR") => {
                self.types.is_known_type(&ty.name) || types::builtin_base(&ty.name).is_some()
            }
            Some(_) => false,
            None => {
                types::SYSTEM_TYPES.contains(&ty.name.as_str())
                    || self.types.is_known_type(&ty.name)
                    || types::is_primitive(&ty.name)
                    || types::DATA_TYPES.contains(&ty.name.as_str())
                    || matches!(ty.name.as_str(), "Resource" | "DomainResource")
            }
        };
        if ok {
            Ok(())
        } else {
            err(format!("unknown type '{}'", ty.name))
        }
    }

    /// Type test. `exact` is used by `as`/`ofType`: FHIR primitives must match
    /// exactly, complex types may be subtypes.
    pub fn is_type(&self, v: &Value<'a>, ty: &TypeSpec, exact: bool) -> bool {
        let ns = ty.namespace.as_deref();
        let name = ty.name.as_str();
        match v {
            Value::Node(n) => {
                if ns == Some("System") {
                    return false;
                }
                let mut t = n.type_name;
                if t.is_empty() {
                    // untyped: infer primitive kinds from JSON
                    t = match n.value {
                        Some(Json::Bool(_)) => "boolean",
                        Some(Json::String(_)) => "string",
                        Some(Json::Number(x)) => {
                            if x.is_i64() {
                                "integer"
                            } else {
                                "decimal"
                            }
                        }
                        _ => return false,
                    };
                }
                if t == name {
                    return true;
                }
                if exact && types::is_primitive(t) {
                    return false;
                }
                if t.contains('.') {
                    return matches!(name, "BackboneElement" | "Element");
                }
                types::is_subtype(self.types, t, name)
            }
            _ => {
                if ns == Some("FHIR") {
                    return false;
                }
                let (_, tn) = v.type_info();
                tn == name
            }
        }
    }

    pub fn type_of(&self, v: &Value<'a>) -> Value<'a> {
        let (ns, name) = v.type_info();
        Value::TypeInfo(Box::new(TypeInfo {
            namespace: ns,
            name: name.into_owned(),
        }))
    }

    // ---------------------------------------------------------------- operators

    pub fn to_bool(&self, c: &[Value<'a>], what: &str) -> Result<Option<bool>, EvalError> {
        match c.len() {
            0 => Ok(None),
            1 => Ok(Some(match c[0].prim() {
                Prim::Bool(b) => b,
                _ => true,
            })),
            n => err(format!(
                "{} expects a single boolean, got {} items",
                what, n
            )),
        }
    }

    fn binary(&self, op: BinOp, l: &Ast, r: &Ast, f: Frame<'_, 'a>) -> Result<Coll<'a>, EvalError> {
        let b = |x: bool| Ok(vec![Value::Boolean(x)]);
        match op {
            BinOp::And => {
                let lv = self.to_bool(&self.eval(l, f)?, "and")?;
                if lv == Some(false) {
                    return b(false);
                }
                let rv = self.to_bool(&self.eval(r, f)?, "and")?;
                match (lv, rv) {
                    (_, Some(false)) => b(false),
                    (Some(true), Some(true)) => b(true),
                    _ => Ok(Vec::new()),
                }
            }
            BinOp::Or => {
                let lv = self.to_bool(&self.eval(l, f)?, "or")?;
                if lv == Some(true) {
                    return b(true);
                }
                let rv = self.to_bool(&self.eval(r, f)?, "or")?;
                match (lv, rv) {
                    (_, Some(true)) => b(true),
                    (Some(false), Some(false)) => b(false),
                    _ => Ok(Vec::new()),
                }
            }
            BinOp::Xor => {
                let lv = self.to_bool(&self.eval(l, f)?, "xor")?;
                let rv = self.to_bool(&self.eval(r, f)?, "xor")?;
                match (lv, rv) {
                    (Some(x), Some(y)) => b(x != y),
                    _ => Ok(Vec::new()),
                }
            }
            BinOp::Implies => {
                let lv = self.to_bool(&self.eval(l, f)?, "implies")?;
                if lv == Some(false) {
                    return b(true);
                }
                let rv = self.to_bool(&self.eval(r, f)?, "implies")?;
                match (lv, rv) {
                    (Some(true), Some(x)) => b(x),
                    (None, Some(true)) => b(true),
                    _ => Ok(Vec::new()),
                }
            }
            _ => {
                let lv = self.eval(l, f)?;
                let rv = self.eval(r, f)?;
                self.binary_values(op, lv, rv)
            }
        }
    }

    pub fn binary_values(
        &self,
        op: BinOp,
        lv: Coll<'a>,
        rv: Coll<'a>,
    ) -> Result<Coll<'a>, EvalError> {
        let b = |x: bool| Ok(vec![Value::Boolean(x)]);
        match op {
            BinOp::Union => {
                let mut out = Vec::with_capacity(lv.len() + rv.len());
                for v in lv.into_iter().chain(rv) {
                    push_distinct(&mut out, v);
                }
                Ok(out)
            }
            BinOp::Eq => Ok(ops::collection_eq(&lv, &rv)
                .map(Value::Boolean)
                .into_iter()
                .collect()),
            BinOp::Ne => Ok(ops::collection_eq(&lv, &rv)
                .map(|x| Value::Boolean(!x))
                .into_iter()
                .collect()),
            BinOp::Equiv => b(ops::collection_equiv(&lv, &rv)),
            BinOp::NotEquiv => b(!ops::collection_equiv(&lv, &rv)),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                if lv.is_empty() || rv.is_empty() {
                    return Ok(Vec::new());
                }
                if lv.len() > 1 || rv.len() > 1 {
                    return err("comparison operands must be single values");
                }
                let o = match ops::compare_values(&lv[0], &rv[0])? {
                    Some(o) => o,
                    None => return Ok(Vec::new()),
                };
                use std::cmp::Ordering::*;
                b(match op {
                    BinOp::Lt => o == Less,
                    BinOp::Le => o != Greater,
                    BinOp::Gt => o == Greater,
                    _ => o != Less,
                })
            }
            BinOp::In | BinOp::Contains => {
                let (item, coll) = if op == BinOp::In { (lv, rv) } else { (rv, lv) };
                match item.len() {
                    0 => Ok(Vec::new()),
                    1 => b(coll
                        .iter()
                        .any(|c| ops::eq_values(&item[0], c) == Some(true))),
                    _ => err("membership operand must be a single value"),
                }
            }
            BinOp::Concat => {
                if lv.len() > 1 || rv.len() > 1 {
                    return err("& operands must be single values");
                }
                let ls = match lv.first() {
                    Some(v) => ops::as_str(v, "&")?.into_owned(),
                    None => String::new(),
                };
                let rs = match rv.first() {
                    Some(v) => ops::as_str(v, "&")?,
                    None => "".into(),
                };
                Ok(vec![Value::String(ls + &rs)])
            }
            _ => {
                if lv.is_empty() || rv.is_empty() {
                    return Ok(Vec::new());
                }
                if lv.len() > 1 || rv.len() > 1 {
                    return err(format!("operator {:?} requires single values", op));
                }
                Ok(ops::arith(op, &lv[0], &rv[0])?.into_iter().collect())
            }
        }
    }
}

/// Appends `v` unless an equal item is already present.
pub(crate) fn push_distinct<'a>(out: &mut Coll<'a>, v: Value<'a>) {
    if !out.iter().any(|o| ops::eq_values(o, &v) == Some(true)) {
        out.push(v);
    }
}

/// Integer argument helper.
pub(crate) fn as_int(v: &Value<'_>) -> Option<i64> {
    match v.prim() {
        Prim::Int(i) => Some(i),
        Prim::Dec(d) => d.to_i64_exact(),
        _ => None,
    }
}

/// Decimal view helper.
pub(crate) fn as_dec(v: &Value<'_>) -> Option<Decimal> {
    match v.prim() {
        Prim::Int(i) => Some(Decimal::from_i64(i)),
        Prim::Dec(d) => Some(d),
        _ => None,
    }
}
