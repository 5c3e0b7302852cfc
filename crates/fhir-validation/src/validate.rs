//! The profile walker: validates a JSON resource against a [`Profile`]
//! snapshot, element by element.
//!
//! For each element the walker collects the instance items (arrays, choice
//! variants `valueQuantity`, primitive `_x` extension objects), checks
//! cardinality (where tighter than the base, which the structural check
//! already covers), assigns items to slices (value/pattern/type/exists/
//! profile discriminators, falling back to trial validation), then checks each
//! item: fixed and pattern values, bindings, FHIRPath invariants, max length,
//! reference targets, NHS numbers, and recurses into children — the
//! profile's own children when the snapshot has them, else the snapshot of the
//! item's type profile or base datatype. Extensions are resolved by URL
//! (unknown → warning, error for `modifierExtension` and core URLs) and their
//! `context` is checked against the host element.

use crate::fx::FxMap;
use fhir_structure::model::Model;
use once_cell::sync::Lazy;
use serde_json::{Map, Value};
use std::sync::Arc;

use crate::nhs::{nhs_number_valid, NHS_NUMBER_SYSTEM};
use crate::registry::{Profile, Registry};
use crate::snapshot::{upper_first, Elem, Rules};
use crate::terminology::{self, Terminology};
use crate::{Issue, Severity, ValidatorOptions};

const MAX_DEPTH: usize = 48;
const MAX_ISSUES: usize = 500;
const SYSTEM_PREFIX: &str = "http://hl7.org/fhirpath/System.";
const CORE_SD: &str = "http://hl7.org/fhir/StructureDefinition/";

/// Choice suffix (`Quantity`, `DateTime`) → type name (`Quantity`, `dateTime`).
static SUFFIX_TYPES: Lazy<FxMap<String, String>> = Lazy::new(|| {
    let mut m = FxMap::default();
    for t in Model::r4().types() {
        if t.kind != fhir_structure::model::Kind::Backbone {
            m.insert(upper_first(&t.name), t.name.clone());
        }
    }
    m
});

fn is_primitive(t: &str) -> bool {
    t.starts_with(SYSTEM_PREFIX)
        || t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        || t == "xhtml"
}

fn is_resource_type(t: &str) -> bool {
    t == "Resource" || t == "DomainResource" || Model::r4().is_resource_type(t)
}

/// One instance value of an element.
#[derive(Clone, Copy)]
struct Item<'a> {
    /// The JSON value (object for complex types, primitive for primitives).
    value: Option<&'a Value>,
    /// The `_name` object of a primitive.
    ext: Option<&'a Value>,
}

impl<'a> Item<'a> {
    /// The object holding child elements.
    fn object(&self, primitive: bool) -> Option<&'a Map<String, Value>> {
        if primitive {
            self.ext.and_then(Value::as_object)
        } else {
            self.value.and_then(Value::as_object)
        }
    }
}

/// Where an extension is used, for `context` checks.
struct Host<'h> {
    /// Path relative to the nearest datatype/resource (`ContactPoint.system`).
    dpath: &'h P<'h>,
    /// The host's FHIR type.
    ty: &'h str,
    /// The host's element path in the profile walked.
    epath: &'h str,
    /// The host's base element path (`DomainResource.text`).
    base_path: &'h str,
    /// The host's URL when it is an extension.
    ext_url: Option<&'h str>,
}

/// Resource context for FHIRPath.
#[derive(Clone, Copy)]
struct Res<'a> {
    resource: &'a Value,
    root: &'a Value,
}

pub(crate) struct Run<'r> {
    pub reg: &'r Registry,
    pub opts: &'r ValidatorOptions,
    pub issues: Vec<Issue>,
    /// Trial mode (slice matching): stop at the first error.
    trial: bool,
    failed: bool,
}

impl<'r> Run<'r> {
    pub fn new(reg: &'r Registry, opts: &'r ValidatorOptions) -> Run<'r> {
        Run {
            reg,
            opts,
            issues: Vec::new(),
            trial: false,
            failed: false,
        }
    }

    fn push(&mut self, severity: Severity, code: &'static str, at: &dyn Loc, message: String) {
        if severity.is_error() {
            self.failed = true;
        }
        if self.trial || self.issues.len() >= MAX_ISSUES {
            return;
        }
        self.issues.push(Issue {
            severity,
            code,
            expression: at.render(),
            message,
        });
    }

    fn push_at(
        &mut self,
        severity: Severity,
        code: &'static str,
        at: &P<'_>,
        message: impl FnOnce() -> String,
    ) {
        if severity.is_error() {
            self.failed = true;
        }
        if self.trial || self.issues.len() >= MAX_ISSUES {
            return;
        }
        self.issues.push(Issue {
            severity,
            code,
            expression: at.render(),
            message: message(),
        });
    }

    fn stop(&self) -> bool {
        (self.trial && self.failed) || self.issues.len() >= MAX_ISSUES
    }

    /// Validates a resource against a profile.
    pub fn resource(
        &mut self,
        res: &Value,
        prof: &Profile,
        root_name: &str,
        root: &Value,
        depth: usize,
    ) {
        let path = P::root(root_name);
        self.resource_at(res, prof, &path, root, depth);
    }

    fn resource_at(
        &mut self,
        res: &Value,
        prof: &Profile,
        path: &P<'_>,
        root: &Value,
        depth: usize,
    ) {
        let rt = res
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let ctx = Res {
            resource: res,
            root,
        };
        let dp = P::root(rt);
        let host = Host {
            dpath: &dp,
            ty: rt,
            epath: rt,
            base_path: rt,
            ext_url: None,
        };
        self.visit(
            prof,
            0,
            Item {
                value: Some(res),
                ext: None,
            },
            rt,
            path,
            &dp,
            &host,
            ctx,
            depth,
        );
    }

    /// Validates `item` (of FHIR type `ty`, at `path`) against element `ei` of `prof`.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        prof: &Profile,
        ei: usize,
        item: Item<'_>,
        ty: &str,
        path: &P<'_>,
        dpath: &P<'_>,
        host: &Host<'_>,
        ctx: Res<'_>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH || self.stop() {
            return;
        }
        let Some(elem) = prof.elem(ei) else { return };
        let primitive = is_primitive(ty);
        let elem_name = elem.id.as_str();

        // fixed / pattern
        if let Some(fixed) = &elem.fixed {
            match item.value {
                Some(v) if json_equal(v, fixed) => {}
                _ => self.push_at(Severity::Error, "value", path, || {
                    format!(
                        "{}: value must be exactly {} (fixed value of {elem_name})",
                        slice_prefix(elem),
                        compact(fixed)
                    )
                }),
            }
        }
        if let Some(pattern) = &elem.pattern {
            match item.value {
                Some(v) if pattern_match(pattern, v) => {}
                _ => self.push_at(Severity::Error, "value", path, || {
                    format!(
                        "{}: value must match the pattern {} ({elem_name})",
                        slice_prefix(elem),
                        compact(pattern)
                    )
                }),
            }
        }
        if let (Some(max), Some(Value::String(s))) = (elem.max_length, item.value) {
            if s.chars().count() > max {
                self.push_at(Severity::Error, "value", path, || {
                    format!("{elem_name}: value is longer than the maxLength {max}")
                });
            }
        }
        if let (Some(b), Some(v)) = (&elem.binding, item.value) {
            self.binding(b, v, ty, path, elem_name);
        }
        if ty == "Identifier" {
            self.nhs_number(item.value, path);
        }
        if ty == "Reference" {
            self.reference_target(elem, item.value, path, ctx);
        }
        if ty == "Coding" {
            self.coding_code(item.value, path);
        }
        self.invariants(elem, item, ty, path, ctx);

        // children
        if primitive && item.ext.is_none() {
            return;
        }
        // resources nested in a resource element (contained, entry.resource)
        let mut ctx = ctx;
        if ei != 0 && elem.holds_resources {
            if let Some(v) = item.value {
                self.nested_resource(elem, v, path, ctx, depth);
                if elem.children.is_empty() {
                    return;
                }
                let contained = elem.path.ends_with(".contained");
                ctx = Res {
                    resource: v,
                    root: if contained { ctx.root } else { v },
                };
            } else {
                return;
            }
        }
        let mut owner: &Elem = elem;
        let base_holder;
        let mut walk_prof: &Profile = prof;
        if elem.children.is_empty() {
            if let Some(cr) = &elem.content_reference {
                let id = cr.rsplit('#').next().unwrap_or(cr);
                // a content reference means the base definition of that element
                base_holder = if prof.derivation == "constraint" {
                    self.reg.base_profile(&prof.type_name)
                } else {
                    None
                };
                if let Some(bp) = base_holder.as_deref() {
                    walk_prof = bp;
                }
                if let Some(t) = walk_prof.by_id.get(id).and_then(|&i| walk_prof.elem(i)) {
                    owner = t;
                }
            }
        }
        if !owner.children.is_empty() {
            let reset = P::root(ty);
            let child_dpath = if !primitive
                && !matches!(ty, "BackboneElement" | "Element")
                && !ty.contains('.')
            {
                &reset
            } else {
                dpath
            };
            let me = Host {
                dpath,
                ty,
                epath: &elem.path,
                base_path: &elem.base_path,
                ext_url: if ty == "Extension" {
                    item.value
                        .and_then(|v| v.get("url"))
                        .and_then(Value::as_str)
                } else {
                    None
                },
            };
            self.children(
                walk_prof,
                owner,
                item,
                primitive,
                path,
                child_dpath,
                &me,
                ctx,
                depth,
            );
            return;
        }
        // no children in this snapshot: the type's own definition
        if ty == "Extension" {
            self.extension(prof, elem, item, path, host, ctx, depth);
            return;
        }
        let type_profile = elem
            .types
            .iter()
            .find(|t| t.code == ty)
            .or_else(|| {
                if elem.types.len() == 1 {
                    elem.types.first()
                } else {
                    None
                }
            })
            .and_then(|t| t.profiles.first());
        let target = match type_profile {
            Some(url) => self.reg.profile(url).or_else(|| self.reg.base_profile(ty)),
            None => {
                if ei == 0 || matches!(ty, "BackboneElement" | "Element") || ty.contains('.') {
                    None
                } else {
                    self.reg.base_profile(ty)
                }
            }
        };
        if let Some(p) = target {
            if !std::ptr::eq(Arc::as_ptr(&p), prof) {
                self.visit(&p, 0, item, ty, path, dpath, host, ctx, depth + 1);
            }
        }
    }

    fn nested_resource(
        &mut self,
        elem: &Elem,
        v: &Value,
        path: &P<'_>,
        ctx: Res<'_>,
        depth: usize,
    ) {
        let Some(rt) = v.get("resourceType").and_then(Value::as_str) else {
            return;
        };
        let contained = elem.path.ends_with(".contained");
        let root = if contained { ctx.root } else { v };
        let mut done_base = false;
        for t in &elem.types {
            for url in &t.profiles {
                if let Some(p) = self.reg.profile(url) {
                    if p.type_name == rt {
                        done_base = true;
                        self.resource_at(v, &p, path, root, depth + 1);
                    }
                }
            }
        }
        if !done_base {
            if let Some(p) = self.reg.base_profile(rt) {
                self.resource_at(v, &p, path, root, depth + 1);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn children(
        &mut self,
        prof: &Profile,
        owner: &Elem,
        item: Item<'_>,
        primitive: bool,
        path: &P<'_>,
        dpath: &P<'_>,
        me: &Host<'_>,
        ctx: Res<'_>,
        depth: usize,
    ) {
        let Some(obj) = item.object(primitive) else {
            return;
        };
        // group the properties by child element, in instance order
        // child element index per group (in order of first appearance), and
        // the items, tagged with their group
        let mut groups: Vec<usize> = Vec::new();
        let mut flat: Vec<(usize, Entry<'_>)> = Vec::new();
        let has_underscore = obj.keys().any(|k| k.starts_with('_'));
        for (key, v) in obj.iter() {
            let (name, is_ext) = match key.strip_prefix('_') {
                Some(n) => (n, true),
                None => (key.as_str(), false),
            };
            if is_ext && obj.contains_key(name) {
                continue; // handled with the value
            }
            let (val, ext) = if is_ext {
                (None, Some(v))
            } else if has_underscore {
                (Some(v), obj.get(&format!("_{name}")))
            } else {
                (Some(v), None)
            };
            if let Some(&ci) = owner.child_names.get(name) {
                if primitive && name == "value" {
                    continue;
                }
                let Some(c) = prof.elem(ci) else { continue };
                let ty: &str = child_type(c, val);
                let gi = group_index(&mut groups, ci);
                push_items(&mut flat, gi, val, ext, ty, c.name.as_str());
                continue;
            }
            // choice element
            for (stem, ci) in &owner.choice_children {
                let Some(suffix) = name.strip_prefix(stem.as_str()) else {
                    continue;
                };
                if !suffix.starts_with(|ch: char| ch.is_ascii_uppercase()) {
                    continue;
                }
                let Some(tn) = SUFFIX_TYPES.get(suffix) else {
                    continue;
                };
                let Some(c) = prof.elem(*ci) else { continue };
                let allowed =
                    c.types.is_empty() || c.types.iter().any(|t| t.code == *tn || t.code == "*");
                if !allowed {
                    let names: Vec<&str> = c.types.iter().map(|t| t.code.as_str()).collect();
                    self.push(
                        Severity::Error,
                        "structure",
                        &P::child(path, name, None).render(),
                        format!(
                            "Type {tn} is not allowed for {} (allowed: {})",
                            c.id,
                            names.join(", ")
                        ),
                    );
                    break;
                }
                let gi = group_index(&mut groups, *ci);
                flat.push((gi, (Item { value: val, ext }, tn.as_str(), name, None)));
                break;
            }
        }
        for &ci in &owner.must_count {
            if !groups.contains(&ci) {
                groups.push(ci);
            }
        }
        // items grouped by child element, instance order kept within a group
        flat.sort_by_key(|(gi, _)| *gi);
        let mut rest: &[(usize, Entry<'_>)] = &flat;
        for (gi, ci) in groups.into_iter().enumerate() {
            let n_items = rest.iter().take_while(|(g, _)| *g == gi).count();
            let (items, tail) = rest.split_at(n_items);
            rest = tail;
            if self.stop() {
                return;
            }
            let Some(c) = prof.elem(ci) else { continue };
            let n = items.len() as u32;
            if c.min > c.base_min || tighter(c.max, c.base_max) {
                if n < c.min {
                    self.push(
                        Severity::Error,
                        "required",
                        &P::child(path, &c.name, None).render(),
                        format!("{}: minimum required = {}, but only found {n}", c.id, c.min),
                    );
                }
                if let Some(max) = c.max {
                    if n > max {
                        self.push(
                            Severity::Error,
                            "structure",
                            &P::child(path, &c.name, None).render(),
                            format!("{}: maximum allowed = {max}, but found {n}", c.id),
                        );
                    }
                }
            }
            let assigned: Vec<Option<usize>> = if c.slices.is_empty() {
                Vec::new()
            } else {
                let a: Vec<Option<usize>> = items
                    .iter()
                    .map(|(_, (it, t, _, _))| self.match_slice(prof, c, *it, t, ctx))
                    .collect();
                self.slice_counts(prof, c, &a, items, path);
                a
            };
            for (k, (_, (it, t, name, index))) in items.iter().enumerate() {
                let slice = assigned.get(k).copied().flatten();
                let ipath = P::child(path, name, *index);
                let cdpath = P::child(dpath, name, None);
                let target = slice.unwrap_or(ci);
                self.visit(prof, target, *it, t, &ipath, &cdpath, me, ctx, depth + 1);
            }
        }
    }

    fn slice_counts(
        &mut self,
        prof: &Profile,
        c: &Elem,
        assigned: &[Option<usize>],
        items: &[(usize, Entry<'_>)],
        path: &P<'_>,
    ) {
        let at = P::child(path, &c.name, None);
        let item_at = |i: usize| -> String {
            match items.get(i) {
                Some((_, (_, _, name, idx))) => P::child(path, name, *idx).render(),
                None => at.render(),
            }
        };
        for &s in &c.slices {
            let Some(se) = prof.elem(s) else { continue };
            let n = assigned.iter().filter(|a| **a == Some(s)).count() as u32;
            let name = se.slice_name.as_deref().unwrap_or("");
            if n < se.min {
                self.push(
                    Severity::Error,
                    "required",
                    &at,
                    format!(
                        "Slice '{name}': minimum required = {}, but only found {n} ({})",
                        se.min, c.path
                    ),
                );
            }
            if let Some(max) = se.max {
                if n > max {
                    self.push(
                        Severity::Error,
                        "structure",
                        &at,
                        format!(
                            "Slice '{name}': maximum allowed = {max}, but found {n} ({})",
                            c.path
                        ),
                    );
                }
            }
        }
        let Some(slicing) = &c.slicing else { return };
        match slicing.rules {
            Rules::Closed => {
                for (i, a) in assigned.iter().enumerate() {
                    if a.is_none() {
                        self.push(
                            Severity::Error,
                            "structure",
                            &item_at(i),
                            format!(
                                "{}: the item does not match any slice and the slicing is closed",
                                c.path
                            ),
                        );
                    }
                }
            }
            Rules::OpenAtEnd => {
                let mut seen_open = false;
                for (i, a) in assigned.iter().enumerate() {
                    if a.is_none() {
                        seen_open = true;
                    } else if seen_open {
                        self.push(
                            Severity::Error,
                            "structure",
                            &item_at(i),
                            format!(
                                "{}: sliced item after an unsliced one (slicing is openAtEnd)",
                                c.path
                            ),
                        );
                    }
                }
            }
            Rules::Open => {}
        }
        if slicing.ordered {
            let pos = |s: usize| c.slices.iter().position(|x| *x == s);
            let mut last = 0;
            for (i, a) in assigned.iter().enumerate() {
                if let Some(p) = a.and_then(pos) {
                    if p < last {
                        self.push(
                            Severity::Error,
                            "structure",
                            &item_at(i),
                            format!("{}: slices are out of order (slicing is ordered)", c.path),
                        );
                    }
                    last = last.max(p);
                }
            }
        }
    }

    /// The slice of `c` an item belongs to.
    fn match_slice(
        &mut self,
        prof: &Profile,
        c: &Elem,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
    ) -> Option<usize> {
        let discs: &[(String, String)] = c
            .slicing
            .as_ref()
            .map(|s| s.discriminators.as_slice())
            .unwrap_or(&[]);
        for &s in &c.slices {
            let Some(se) = prof.elem(s) else { continue };
            let mut decided = true;
            let mut ok = true;
            if discs.is_empty() {
                decided = false;
            }
            for (kind, dpath) in discs {
                match self.disc_match(prof, se, kind, dpath, item, ty) {
                    Some(true) => {}
                    Some(false) => {
                        ok = false;
                        break;
                    }
                    None => {
                        decided = false;
                    }
                }
            }
            if !ok {
                continue;
            }
            if decided {
                return Some(s);
            }
            // trial validation
            if self.trial_conforms(prof, s, item, ty, ctx) {
                return Some(s);
            }
        }
        None
    }

    /// Runs `f` in trial mode; whether it found no error.
    fn trial(&mut self, f: impl FnOnce(&mut Self)) -> bool {
        let saved_trial = self.trial;
        let saved_failed = self.failed;
        self.trial = true;
        self.failed = false;
        f(self);
        let ok = !self.failed;
        self.trial = saved_trial;
        self.failed = saved_failed;
        ok
    }

    fn trial_conforms(
        &mut self,
        prof: &Profile,
        s: usize,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
    ) -> bool {
        if self.issues.len() < MAX_ISSUES && self.extension_url_mismatch(prof, s, item, ty) {
            return false;
        }
        let saved_trial = self.trial;
        let saved_failed = self.failed;
        self.trial = true;
        self.failed = false;
        let empty = P::root("");
        let host = Host {
            dpath: &empty,
            ty: "",
            epath: "",
            base_path: "",
            ext_url: None,
        };
        self.visit(prof, s, item, ty, &empty, &empty, &host, ctx, MAX_DEPTH / 2);
        let ok = !self.failed;
        self.trial = saved_trial;
        self.failed = saved_failed;
        ok
    }

    /// Whether a trial validation of `item` against extension slice `s` is
    /// certain to fail because the item's `url` differs from the fixed `url`
    /// of the slice's extension definition (a shortcut for [`Self::trial_conforms`]
    /// that follows exactly the path the full walk would take to that error).
    fn extension_url_mismatch(&self, prof: &Profile, s: usize, item: Item<'_>, ty: &str) -> bool {
        if ty != "Extension" {
            return false;
        }
        let Some(se) = prof.elem(s) else { return false };
        if !se.children.is_empty() || se.content_reference.is_some() || se.holds_resources {
            return false;
        }
        let Some(obj) = item.value.and_then(Value::as_object) else {
            return false;
        };
        let Some(url @ Value::String(_)) = obj.get("url") else {
            return false;
        };
        let Some(tp) = se
            .types
            .iter()
            .find(|t| t.code == "Extension")
            .and_then(|t| t.profiles.first())
        else {
            return false;
        };
        if !tp.contains(':') {
            return false;
        }
        let Some(def) = self.reg.profile(tp) else {
            return false;
        };
        if std::ptr::eq(Arc::as_ptr(&def), prof) {
            return false;
        }
        let Some(root) = def.elem(0) else {
            return false;
        };
        if root.children.is_empty() {
            return false;
        }
        let Some(uc) = root.child_names.get("url").and_then(|&i| def.elem(i)) else {
            return false;
        };
        if !uc.slices.is_empty() {
            return false;
        }
        match &uc.fixed {
            Some(fixed) => !json_equal(url, fixed),
            None => false,
        }
    }

    /// Evaluates one discriminator: `None` when it cannot be decided.
    fn disc_match(
        &mut self,
        prof: &Profile,
        se: &Elem,
        kind: &str,
        dpath: &str,
        item: Item<'_>,
        ty: &str,
    ) -> Option<bool> {
        match kind {
            "value" | "pattern" => {
                let (expected, is_fixed, binding) = self.expected_value(prof, se, dpath)?;
                let actual = navigate(item.value?, dpath);
                if let Some(vs) = binding {
                    let exp = terminology::expand(self.reg, &vs);
                    let mut any_unknown = false;
                    for a in &actual {
                        for (sys, code) in terminology::codings(a, "") {
                            match exp.contains(sys, code) {
                                Some(true) => return Some(true),
                                None => any_unknown = true,
                                _ => {}
                            }
                        }
                    }
                    return if any_unknown { None } else { Some(false) };
                }
                let Some(expected) = expected else {
                    // prohibited in the slice (max = 0)
                    return Some(actual.is_empty());
                };
                Some(actual.iter().any(|a| {
                    if is_fixed {
                        json_equal(a, &expected)
                    } else {
                        pattern_match(&expected, a)
                    }
                }))
            }
            "type" => {
                let want: Vec<&str> = if dpath == "$this" {
                    se.types.iter().map(|t| t.code.as_str()).collect()
                } else {
                    let sub = find_sub(prof, se, dpath)?;
                    sub.types.iter().map(|t| t.code.as_str()).collect()
                };
                if want.is_empty() {
                    return None;
                }
                let actual_ty = if dpath == "$this" {
                    ty.to_string()
                } else {
                    let v = navigate(item.value?, dpath);
                    let v = v.first()?;
                    v.get("resourceType").and_then(Value::as_str)?.to_string()
                };
                Some(want.iter().any(|w| *w == actual_ty))
            }
            "profile" => {
                let p = dpath.strip_prefix("$this.").unwrap_or(dpath);
                let sub = find_sub(prof, se, p)?;
                let urls: Vec<String> = sub
                    .types
                    .iter()
                    .flat_map(|t| t.profiles.iter().cloned())
                    .collect();
                if urls.is_empty() {
                    return None;
                }
                let values = navigate(item.value?, p);
                let v = *values.first()?;
                for url in urls {
                    let Some(pr) = self.reg.profile(&url) else {
                        continue;
                    };
                    let rt = v.get("resourceType").and_then(Value::as_str);
                    let ok = match rt {
                        Some(rt) => {
                            pr.type_name == rt
                                && self.trial(|me| me.resource(v, &pr, "", v, MAX_DEPTH / 2))
                        }
                        None => self.trial(|me| {
                            let empty = P::root("");
                            let host = Host {
                                dpath: &empty,
                                ty: "",
                                epath: "",
                                base_path: "",
                                ext_url: None,
                            };
                            let item = Item {
                                value: Some(v),
                                ext: None,
                            };
                            let ty = pr.type_name.clone();
                            me.visit(
                                &pr,
                                0,
                                item,
                                &ty,
                                &empty,
                                &empty,
                                &host,
                                Res {
                                    resource: v,
                                    root: v,
                                },
                                MAX_DEPTH / 2,
                            );
                        }),
                    };
                    if ok {
                        return Some(true);
                    }
                }
                Some(false)
            }
            "exists" => {
                let sub = find_sub(prof, se, dpath)?;
                let present = item.value.is_some_and(|v| !navigate(v, dpath).is_empty());
                if sub.min >= 1 {
                    Some(present)
                } else if sub.max == Some(0) {
                    Some(!present)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// The fixed/pattern value (or required binding) of the element at `dpath` in slice `se`.
    #[allow(clippy::type_complexity)]
    fn expected_value(
        &self,
        prof: &Profile,
        se: &Elem,
        dpath: &str,
    ) -> Option<(Option<Value>, bool, Option<String>)> {
        let from = |e: &Elem| -> Option<(Option<Value>, bool, Option<String>)> {
            if e.max == Some(0) {
                return Some((None, false, None));
            }
            if let Some(f) = &e.fixed {
                return Some((Some(f.clone()), true, None));
            }
            if let Some(p) = &e.pattern {
                return Some((Some(p.clone()), false, None));
            }
            if let Some(b) = &e.binding {
                if b.strength == "required" {
                    return b.value_set.clone().map(|vs| (None, false, Some(vs)));
                }
            }
            None
        };
        if let Some(sub) = find_sub(prof, se, dpath) {
            if let Some(r) = from(sub) {
                return Some(r);
            }
        }
        // in the slice's type profile (extension slices: url)
        let tp = se.types.first().and_then(|t| t.profiles.first())?;
        if dpath == "url" && se.types.first().is_some_and(|t| t.code == "Extension") {
            return Some((
                Some(Value::String(
                    tp.split('|').next().unwrap_or(tp).to_string(),
                )),
                true,
                None,
            ));
        }
        let p = self.reg.profile(tp)?;
        let root = p.elem(0)?;
        let sub = find_sub(&p, root, dpath)?;
        from(sub)
    }

    #[allow(clippy::too_many_arguments)]
    fn extension(
        &mut self,
        prof: &Profile,
        elem: &Elem,
        item: Item<'_>,
        path: &P<'_>,
        host: &Host<'_>,
        ctx: Res<'_>,
        depth: usize,
    ) {
        let Some(v) = item.value else { return };
        let url = v.get("url").and_then(Value::as_str).unwrap_or("");
        let modifier = elem.path.ends_with("modifierExtension");
        let type_profile = elem
            .types
            .iter()
            .find(|t| t.code == "Extension")
            .and_then(|t| t.profiles.first());
        let lookup = type_profile.map(String::as_str).unwrap_or(url);
        let absolute = lookup.contains(':');
        let def = if absolute {
            self.reg.profile(lookup)
        } else {
            None
        };
        match def {
            Some(def) => {
                if std::ptr::eq(Arc::as_ptr(&def), prof) {
                    return;
                }
                self.ext_context(&def, url, path, host);
                let is_mod = def.elem(0).is_some_and(|r| r.is_modifier);
                if modifier && !is_mod {
                    self.push(
                        Severity::Error,
                        "structure",
                        path,
                        format!("Extension {url} is not a modifier extension but is used as modifierExtension"),
                    );
                } else if !modifier && is_mod && elem.path.ends_with("extension") {
                    self.push(
                        Severity::Error,
                        "structure",
                        path,
                        format!("Extension {url} is a modifier extension but is used as extension"),
                    );
                }
                let dp = P::root("Extension");
                self.visit(&def, 0, item, "Extension", path, &dp, host, ctx, depth + 1);
            }
            None => {
                if absolute && !url.is_empty() {
                    if modifier {
                        self.push(
                            Severity::Error,
                            "extension",
                            path,
                            format!("Unknown modifierExtension {url}: modifier extensions must be understood"),
                        );
                    } else if self.known_domain(url) {
                        self.push(
                            Severity::Warning,
                            "extension",
                            path,
                            format!("Unknown extension {url} (its definition is not loaded)"),
                        );
                    } else {
                        self.push(
                            Severity::Error,
                            "extension",
                            path,
                            format!("Unknown extension {url}: it could not be found, so it is not allowed here"),
                        );
                    }
                }
                if let Some(base) = self.reg.base_profile("Extension") {
                    if !std::ptr::eq(Arc::as_ptr(&base), prof) {
                        let dp = P::root("Extension");
                        self.visit(&base, 0, item, "Extension", path, &dp, host, ctx, depth + 1);
                    }
                }
            }
        }
    }

    /// Whether unknown extensions from this URL's domain are tolerated (HL7,
    /// HL7 UK, NHS England, or a domain some loaded definition comes from).
    fn known_domain(&self, url: &str) -> bool {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        matches!(host, "hl7.org" | "fhir.hl7.org.uk" | "fhir.nhs.uk")
            || self
                .reg
                .profile_urls()
                .iter()
                .any(|p| p.split("://").nth(1).and_then(|r| r.split('/').next()) == Some(host))
    }

    fn ext_context(&mut self, def: &Profile, url: &str, path: &P<'_>, host: &Host<'_>) {
        if def.contexts.is_empty()
            || host.ty.is_empty()
            || url.starts_with("http://hl7.org/fhir/StructureDefinition/structuredefinition-")
        {
            return;
        }
        let host_dpath = host.dpath.render();
        let host_is_resource = is_resource_type(host.ty);
        let mut ancestors: Vec<&str> = Vec::new();
        let mut t = Model::r4().type_def(host.ty);
        while let Some(td) = t {
            ancestors.push(td.name.as_str());
            t = td.base.as_deref().and_then(|b| Model::r4().type_def(b));
        }
        let ok = def.contexts.iter().any(|(kind, expr)| match kind.as_str() {
            "element" => {
                let e = expr.as_str();
                let e = e
                    .strip_prefix(CORE_SD)
                    .map_or(e, |x| x.trim_start_matches('#'));
                e == host_dpath
                    || e == host.ty
                    || e == host.epath
                    || id_path_eq(e, host.epath)
                    || e == host.base_path
                    || ancestors.contains(&e)
                    || e == "Element"
                    || (matches!(e, "Resource" | "DomainResource") && host_is_resource)
                    || e == "Base"
                    || (e == "BackboneElement" && host.ty.contains('.'))
            }
            "extension" => host.ext_url == Some(expr.as_str()),
            "fhirpath" => {
                // approximate: the path without function calls names the host element
                let plain: Vec<&str> = split_disc_path(expr)
                    .into_iter()
                    .filter(|seg| !seg.contains('('))
                    .collect();
                let plain = plain.join(".");
                plain == host.epath || plain == host_dpath || plain == host.ty
            }
            _ => true,
        });
        if !ok {
            let allowed: Vec<&str> = def.contexts.iter().map(|(_, e)| e.as_str()).collect();
            self.push(
                Severity::Error,
                "extension",
                path,
                format!(
                    "Extension {url} is not allowed here ({}); allowed contexts: {}",
                    if host_dpath.is_empty() {
                        host.ty
                    } else {
                        host_dpath.as_str()
                    },
                    allowed.join(", ")
                ),
            );
        }
    }

    fn binding(
        &mut self,
        b: &crate::snapshot::Binding,
        v: &Value,
        ty: &str,
        path: &P<'_>,
        elem_name: &str,
    ) {
        let strength = b.strength.as_str();
        if !matches!(strength, "required" | "extensible") {
            return;
        }
        if !matches!(
            ty,
            "code" | "Coding" | "CodeableConcept" | "Quantity" | "string" | "uri"
        ) {
            return;
        }
        let Some(vs) = &b.value_set else { return };
        let codes = terminology::codings(v, ty);
        if codes.is_empty() {
            if strength == "required" && ty == "CodeableConcept" && v.get("text").is_some() {
                self.push(
                    Severity::Warning,
                    "code-invalid",
                    path,
                    format!("No code provided, and a code is required from the value set {vs} ({elem_name})"),
                );
            }
            return;
        }
        let exp = terminology::expand(self.reg, vs);
        let mut unknown = false;
        for (s, c) in &codes {
            match exp.contains(*s, c) {
                Some(true) => return,
                Some(false) => {}
                None => unknown = true,
            }
        }
        let shown: Vec<String> = codes
            .iter()
            .map(|(s, c)| match s {
                Some(s) => format!("{s}#{c}"),
                None => (*c).to_string(),
            })
            .collect();
        if unknown {
            self.push(
                Severity::Information,
                "code-invalid",
                path,
                format!(
                    "Binding to {vs} ({strength}) not checked: the value set cannot be expanded locally ({})",
                    exp.reason
                ),
            );
            return;
        }
        let sev = if strength == "required" {
            Severity::Error
        } else {
            Severity::Warning
        };
        self.push(
            sev,
            "code-invalid",
            path,
            format!(
                "The code {} is not in the {strength} value set {vs} ({elem_name})",
                shown.join(", ")
            ),
        );
    }

    fn coding_code(&mut self, v: Option<&Value>, path: &P<'_>) {
        let Some(v) = v else { return };
        let (Some(s), Some(c)) = (
            v.get("system").and_then(Value::as_str),
            v.get("code").and_then(Value::as_str),
        ) else {
            return;
        };
        if terminology::code_in_system(self.reg, s, c) == Some(false) {
            self.push(
                Severity::Error,
                "code-invalid",
                path,
                format!("Unknown code '{c}' in the code system {s}"),
            );
        }
    }

    fn nhs_number(&mut self, v: Option<&Value>, path: &P<'_>) {
        let Some(v) = v else { return };
        let system = v.get("system").and_then(Value::as_str);
        if let Some(s) = system.filter(|s| *s != NHS_NUMBER_SYSTEM && near_nhs_system(s)) {
            self.push(
                Severity::Error,
                "value",
                &P::child(path, "system", None),
                format!(
                    "Slice 'nhsNumber': system must be {NHS_NUMBER_SYSTEM} (found '{s}', which is not exactly the NHS number system)"
                ),
            );
            return;
        }
        if system != Some(NHS_NUMBER_SYSTEM) {
            return;
        }
        match v.get("value").and_then(Value::as_str) {
            Some(n) if nhs_number_valid(n) => {}
            Some(n) => self.push(
                self.opts.nhs_number,
                "value",
                &P::child(path, "value", None),
                format!("NHS number fails the Modulus 11 check (must be 10 digits with a valid check digit): '{n}'"),
            ),
            None => {}
        }
    }

    fn reference_target(&mut self, elem: &Elem, v: Option<&Value>, path: &P<'_>, ctx: Res<'_>) {
        let Some(reference) = v.and_then(|v| v.get("reference")).and_then(Value::as_str) else {
            return;
        };
        let Some(t) = elem.types.iter().find(|t| t.code == "Reference") else {
            return;
        };
        if t.target_profiles.is_empty() {
            return;
        }
        let rtype: Option<String> = if let Some(id) = reference.strip_prefix('#') {
            ctx.root
                .get("contained")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
                })
                .and_then(|r| r.get("resourceType"))
                .and_then(Value::as_str)
                .map(str::to_string)
        } else {
            let segs: Vec<&str> = reference.split('/').collect();
            let n = segs.len();
            let pick = if n >= 4 && segs.get(n - 2) == Some(&"_history") {
                segs.get(n - 4)
            } else if n >= 2 {
                segs.get(n - 2)
            } else {
                None
            };
            pick.filter(|t| Model::r4().is_resource_type(t))
                .map(|t| t.to_string())
        };
        let Some(rtype) = rtype else { return };
        let mut allowed = Vec::new();
        for tp in &t.target_profiles {
            let tn = match tp.strip_prefix(CORE_SD) {
                Some(n) => n.to_string(),
                None => match self.reg.profile(tp) {
                    Some(p) => p.type_name.clone(),
                    None => return,
                },
            };
            if tn == "Resource" || tn == rtype {
                return;
            }
            allowed.push(tn);
        }
        self.push(
            Severity::Error,
            "structure",
            path,
            format!(
                "The type '{rtype}' implied by the reference is not a valid target for {} (allowed: {})",
                elem.path,
                allowed.join(", ")
            ),
        );
    }

    fn invariants(&mut self, elem: &Elem, item: Item<'_>, ty: &str, path: &P<'_>, ctx: Res<'_>) {
        if elem.constraints.is_empty() {
            return;
        }
        let Some(node) = item.value else { return };
        let has_contained = node.get("contained").is_some();
        for c in &elem.constraints {
            let Some(expr) = &c.expr else { continue };
            if !self.opts.check_base_invariants && c.is_base() {
                continue;
            }
            if matches!(c.key.as_str(), "dom-2" | "dom-3" | "dom-4" | "dom-5") && !has_contained {
                continue;
            }
            let expr = match expr {
                Ok(e) => e,
                Err(err) => {
                    self.push(
                        Severity::Information,
                        "processing",
                        path,
                        format!(
                            "Invariant {} not checked: cannot parse its expression ({err})",
                            c.key
                        ),
                    );
                    continue;
                }
            };
            let tx = Terminology(self.reg);
            let ectx = fhirpath::EvalContext::new()
                .resource(ctx.resource)
                .root_resource(ctx.root)
                .terminology(&tx);
            let result = fhirpath::evaluate_node(expr, node, ty, &ectx)
                .and_then(|r| fhirpath::collection_to_bool(&r));
            match result {
                Ok(Some(false)) => self.push(
                    c.severity,
                    "invariant",
                    path,
                    format!("Invariant {} failed: {}", c.key, c.human),
                ),
                Ok(_) => {}
                Err(e) => self.push(
                    Severity::Information,
                    "processing",
                    path,
                    format!("Invariant {} could not be evaluated: {}", c.key, e.message),
                ),
            }
        }
    }
}

/// One item of a child element: (item, FHIR type, JSON name, array index).
type Entry<'a> = (Item<'a>, &'a str, &'a str, Option<usize>);

fn group_index(groups: &mut Vec<usize>, ci: usize) -> usize {
    match groups.iter().position(|c| *c == ci) {
        Some(p) => p,
        None => {
            groups.push(ci);
            groups.len() - 1
        }
    }
}

fn push_items<'a>(
    g: &mut Vec<(usize, Entry<'a>)>,
    gi: usize,
    val: Option<&'a Value>,
    ext: Option<&'a Value>,
    ty: &'a str,
    name: &'a str,
) {
    match (val, ext) {
        (Some(Value::Array(a)), e) => {
            let ea = e.and_then(Value::as_array);
            for (i, x) in a.iter().enumerate() {
                let ex = ea.and_then(|ea| ea.get(i)).filter(|x| !x.is_null());
                g.push((
                    gi,
                    (
                        Item {
                            value: if x.is_null() { None } else { Some(x) },
                            ext: ex,
                        },
                        resource_type_of(ty, x),
                        name,
                        Some(i),
                    ),
                ));
            }
        }
        (None, Some(Value::Array(ea))) => {
            for (i, ex) in ea.iter().enumerate() {
                g.push((
                    gi,
                    (
                        Item {
                            value: None,
                            ext: Some(ex),
                        },
                        ty,
                        name,
                        Some(i),
                    ),
                ));
            }
        }
        (v, e) => {
            let rty = v.map_or(ty, |x| resource_type_of(ty, x));
            g.push((gi, (Item { value: v, ext: e }, rty, name, None)));
        }
    }
}

/// Something that renders as an issue location.
trait Loc {
    fn render(&self) -> String;
}

impl Loc for str {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Loc for String {
    fn render(&self) -> String {
        self.clone()
    }
}

impl Loc for P<'_> {
    fn render(&self) -> String {
        P::render(self)
    }
}

/// A lazily rendered FHIRPath location.
#[derive(Clone, Copy)]
struct P<'a> {
    parent: Option<&'a P<'a>>,
    name: &'a str,
    index: Option<usize>,
}

impl<'a> P<'a> {
    fn root(name: &'a str) -> P<'a> {
        P {
            parent: None,
            name,
            index: None,
        }
    }

    fn child(parent: &'a P<'a>, name: &'a str, index: Option<usize>) -> P<'a> {
        P {
            parent: Some(parent),
            name,
            index,
        }
    }

    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            segs.push(p);
            cur = p.parent;
        }
        let mut out = String::new();
        for p in segs.iter().rev() {
            if p.name.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p.name);
            if let Some(i) = p.index {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
        out
    }
}

/// A misspelling of the NHS number system: other case, `http`, trailing slash or spaces.
fn near_nhs_system(s: &str) -> bool {
    let norm = |x: &str| {
        let x = x.trim().trim_end_matches('/').to_ascii_lowercase();
        x.strip_prefix("https://")
            .or_else(|| x.strip_prefix("http://"))
            .map(str::to_string)
            .unwrap_or(x)
    };
    norm(s) == norm(NHS_NUMBER_SYSTEM)
}

fn id_path_eq(ctx: &str, epath: &str) -> bool {
    !ctx.is_empty() && crate::snapshot::id_to_path(ctx) == epath
}

fn slice_prefix(e: &Elem) -> String {
    match &e.slice_name {
        Some(s) => format!("Slice '{s}'"),
        None => e.path.clone(),
    }
}

fn tighter(max: Option<u32>, base: Option<u32>) -> bool {
    match (max, base) {
        (Some(m), Some(b)) => m < b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The FHIR type of a non-choice child element.
fn child_type<'a>(c: &'a Elem, v: Option<&'a Value>) -> &'a str {
    if !c.fhir_type.is_empty() {
        return &c.fhir_type;
    }
    v.and_then(|v| v.get("resourceType"))
        .and_then(Value::as_str)
        .unwrap_or("Resource")
}

fn resource_type_of<'a>(ty: &'a str, v: &'a Value) -> &'a str {
    if ty == "Resource" || ty == "DomainResource" {
        if let Some(rt) = v.get("resourceType").and_then(Value::as_str) {
            return rt;
        }
    }
    ty
}

/// Finds the element at a discriminator path below `se` (following the
/// element tree, `extension('url')` and type profiles).
fn find_sub<'p>(prof: &'p Profile, se: &'p Elem, dpath: &str) -> Option<&'p Elem> {
    if dpath == "$this" || dpath.is_empty() {
        return Some(se);
    }
    let mut cur = se;
    for seg in split_disc_path(dpath) {
        let seg = seg.trim();
        if let Some(rest) = seg.strip_prefix("extension(") {
            let url = rest
                .trim_end_matches(')')
                .trim_matches(|c| c == '\'' || c == '"');
            let ext = cur
                .children
                .iter()
                .filter_map(|&i| prof.elem(i))
                .find(|e| e.name == "extension")?;
            cur = ext
                .slices
                .iter()
                .filter_map(|&i| prof.elem(i))
                .find(|s| s.types.iter().any(|t| t.profiles.iter().any(|p| p == url)))?;
            continue;
        }
        if seg.starts_with("resolve(") || seg.starts_with("ofType(") || seg.starts_with("as(") {
            return None;
        }
        let next = cur
            .children
            .iter()
            .filter_map(|&i| prof.elem(i))
            .find(|e| {
                e.name == seg || e.name.strip_suffix("[x]").is_some_and(|stem| seg == stem)
            })?;
        cur = next;
    }
    Some(cur)
}

fn split_disc_path(p: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, ch) in p.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            '.' if depth == 0 => {
                if let Some(s) = p.get(start..i) {
                    out.push(s);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(s) = p.get(start..) {
        out.push(s);
    }
    out
}

/// Values at a simple discriminator path (arrays flattened, choice stems matched).
fn navigate<'v>(v: &'v Value, dpath: &str) -> Vec<&'v Value> {
    let mut cur: Vec<&Value> = vec![v];
    if dpath == "$this" {
        return cur;
    }
    for seg in split_disc_path(dpath) {
        let mut next = Vec::new();
        if let Some(rest) = seg.strip_prefix("extension(") {
            let url = rest
                .trim_end_matches(')')
                .trim_matches(|c| c == '\'' || c == '"');
            for x in &cur {
                if let Some(Value::Array(a)) = x.get("extension") {
                    next.extend(
                        a.iter()
                            .filter(|e| e.get("url").and_then(Value::as_str) == Some(url)),
                    );
                }
            }
            cur = next;
            continue;
        }
        for x in &cur {
            let Value::Object(o) = x else { continue };
            let found = match o.get(seg) {
                Some(f) => Some(f),
                None => o
                    .iter()
                    .find(|(k, _)| {
                        k.strip_prefix(seg)
                            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_uppercase()))
                    })
                    .map(|(_, v)| v),
            };
            match found {
                Some(Value::Array(a)) => next.extend(a.iter()),
                Some(f) => next.push(f),
                None => {}
            }
        }
        cur = next;
    }
    cur
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 200 {
        let t: String = s.chars().take(200).collect();
        format!("{t}…")
    } else {
        s
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    a.as_str() == b.as_str()
        || match (a.as_str().parse::<f64>(), b.as_str().parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

/// Fixed-value equality (objects: same keys and values).
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equal(v, w))
        }
        _ => a == b,
    }
}

/// Pattern matching: every property of the pattern is present in the value
/// (recursively); arrays: each pattern item matches some value item.
pub(crate) fn pattern_match(pattern: &Value, v: &Value) -> bool {
    match (pattern, v) {
        (Value::Object(p), Value::Object(o)) => p
            .iter()
            .all(|(k, pv)| o.get(k).is_some_and(|ov| pattern_match(pv, ov))),
        (Value::Array(p), Value::Array(a)) => {
            p.iter().all(|pi| a.iter().any(|ai| pattern_match(pi, ai)))
        }
        (Value::Array(p), single) => p.iter().all(|pi| pattern_match(pi, single)),
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        _ => pattern == v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns() {
        let p = json!({"coding": [{"system": "http://loinc.org", "code": "1-8"}]});
        let v = json!({"coding": [{"system": "x", "code": "y"}, {"system": "http://loinc.org", "code": "1-8", "display": "d"}], "text": "t"});
        assert!(pattern_match(&p, &v));
        let v2 = json!({"coding": [{"system": "http://loinc.org", "code": "2"}]});
        assert!(!pattern_match(&p, &v2));
        assert!(json_equal(&json!(1.0), &json!(1)));
        assert!(!json_equal(&json!({"a": 1, "b": 2}), &json!({"a": 1})));
    }

    #[test]
    fn navigation() {
        let v = json!({"coding": [{"system": "a", "code": "1"}, {"system": "b"}], "valueString": "x",
                       "extension": [{"url": "u", "valueCode": "c"}]});
        assert_eq!(navigate(&v, "coding.system").len(), 2);
        assert_eq!(navigate(&v, "value"), vec![&json!("x")]);
        assert_eq!(navigate(&v, "extension('u').value"), vec![&json!("c")]);
        assert_eq!(
            split_disc_path("extension('a.b').value"),
            vec!["extension('a.b')", "value"]
        );
    }
}
