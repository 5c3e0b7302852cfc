//! The profile walker: validates a JSON resource against a [`Profile`]
//! snapshot, element by element.
//!
//! For each element the walker collects the instance items (arrays, choice
//! variants `valueQuantity`, primitive `_x` extension objects), checks
//! cardinality (where tighter than the base, which the structural check
//! already covers), assigns items to slices (value/pattern/type/exists/
//! profile discriminators, cached per slice, falling back to trial
//! validation; re-slices `a/b` count for their slice), then checks each item:
//! fixed and pattern values, min/max values and lengths, bindings (also R5
//! additional required bindings), FHIRPath invariants (also the root
//! invariants of a type whose children the snapshot expanded; a few base
//! ones natively: dom-3, dom-6, txt-1, txt-2), reference targets (type and,
//! for contained and Bundle-resolved targets, target profiles), NHS numbers,
//! and recurses into children — the profile's own children when the snapshot
//! has them, else the snapshot of the item's type profile (one of several
//! must match) or base datatype. Extensions are resolved by URL (unknown →
//! warning for HL7/NHS/example domains, else error; error for
//! `modifierExtension`), relative URLs must name a sub-extension of the
//! enclosing extension, and `context` / `contextInvariant` are checked
//! against the host element.
//!
//! Registry look-ups of an element (type profiles, base types, binding
//! expansions, discriminator values) are cached in the [`Profile`] on first
//! use, so repeated validations do no URL look-ups for them.
//!
//! The walk and its shared types (the resource context, extension hosts,
//! issue collection, trial mode) are here; each kind of check is in a
//! submodule: [`values`] (fixed/pattern values, min/max values and lengths,
//! value presence, narrative language), [`bindings`] (terminology bindings
//! and codes of known code systems), [`slicing`] (discriminators, slice
//! matching and slice cardinality), [`extensions`] (extension resolution,
//! modifier and context checks), [`references`] (reference targets),
//! [`invariants`] (FHIRPath constraints), [`datatypes`] (NHS numbers,
//! Attachment sizes, markdown) and [`location`] (issue locations).

use crate::fx::FxMap;
use fhir_structure::model::Model;
use once_cell::sync::Lazy;
use serde_json::{Map, Value};

use crate::registry::{Profile, Registry};
use crate::snapshot::{upper_first, Elem};
use crate::{Issue, Severity, ValidatorOptions};

mod bindings;
mod datatypes;
mod extensions;
mod invariants;
mod location;
mod references;
mod slicing;
mod values;

#[cfg(test)]
mod tests;

use datatypes::html_tag_start;
use location::{Loc, P};

pub(crate) use values::json_equal;

const MAX_DEPTH: usize = 48;
const MAX_ISSUES: usize = 500;
const SYSTEM_PREFIX: &str = "http://hl7.org/fhirpath/System.";
const CORE_SD: &str = "http://hl7.org/fhir/StructureDefinition/";
const EXTENSION_SD: &str = "http://hl7.org/fhir/StructureDefinition/Extension";

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
#[derive(Clone, Copy)]
struct Host<'h> {
    /// Path relative to the nearest datatype/resource (`ContactPoint.system`).
    dpath: &'h P<'h>,
    /// The host's FHIR type.
    ty: &'h str,
    /// The host's element path in the profile walked.
    epath: &'h str,
    /// The host's base element path (`DomainResource.text`).
    base_path: &'h str,
    /// The host's URL when it is an extension (or the value of one).
    ext_url: Option<&'h str>,
    /// The host's JSON value.
    node: Option<&'h Value>,
    /// This host describes the item itself (a descent into the item's type
    /// definition): element 0 of that definition keeps it for its children.
    is_self: bool,
}

/// Resource context for FHIRPath.
#[derive(Clone, Copy)]
struct Res<'a> {
    resource: &'a Value,
    root: &'a Value,
    /// The Bundle whose entry holds the resource (or its container).
    bundle: Option<&'a Value>,
    /// That entry's `fullUrl`.
    full_url: Option<&'a str>,
    /// The Parameters resource whose parameter holds the resource.
    params: Option<&'a Value>,
}

impl<'a> Res<'a> {
    fn top(res: &'a Value) -> Res<'a> {
        Res {
            resource: res,
            root: res,
            bundle: None,
            full_url: None,
            params: None,
        }
    }

    /// The context of a resource nested in element `elem` of this context's resource.
    fn nested(self, elem: &Elem, v: &'a Value) -> Res<'a> {
        if elem.path.ends_with(".contained") {
            return Res {
                resource: v,
                ..self
            };
        }
        if elem.path.ends_with("entry.resource")
            && self.resource.get("resourceType").and_then(Value::as_str) == Some("Bundle")
        {
            return Res {
                resource: v,
                root: v,
                bundle: Some(self.resource),
                full_url: crate::bundle::full_url_of(self.resource, v),
                params: None,
            };
        }
        if elem.path.ends_with(".resource")
            && self.resource.get("resourceType").and_then(Value::as_str) == Some("Parameters")
        {
            return Res {
                params: Some(self.resource),
                ..Res::top(v)
            };
        }
        Res::top(v)
    }

    /// The context of a resource found below this context's resource by a
    /// discriminator path (`Bundle.entry` → `resource`).
    fn entry(self, v: &'a Value) -> Res<'a> {
        if self.resource.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            return Res {
                resource: v,
                root: v,
                bundle: Some(self.resource),
                full_url: crate::bundle::full_url_of(self.resource, v),
                params: None,
            };
        }
        Res::top(v)
    }
}

pub(crate) struct Run<'r> {
    pub reg: &'r Registry,
    pub opts: &'r ValidatorOptions,
    pub issues: Vec<Issue>,
    /// Trial mode (slice matching): stop at the first error.
    trial: bool,
    failed: bool,
    /// Bundles whose Bundle rules were checked (by address).
    bundles_checked: Vec<usize>,
    /// Reference targets being validated against target profiles:
    /// (target address, profile address), to break cycles.
    ref_stack: Vec<(usize, usize)>,
}

impl<'r> Run<'r> {
    pub fn new(reg: &'r Registry, opts: &'r ValidatorOptions) -> Run<'r> {
        Run {
            reg,
            opts,
            issues: Vec::new(),
            trial: false,
            failed: false,
            bundles_checked: Vec::new(),
            ref_stack: Vec::new(),
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
    pub fn resource(&mut self, res: &Value, prof: &Profile, root_name: &str, depth: usize) {
        let path = P::root(root_name);
        self.resource_at(res, prof, &path, Res::top(res), depth);
    }

    fn resource_at(
        &mut self,
        res: &Value,
        prof: &Profile,
        path: &P<'_>,
        ctx: Res<'_>,
        depth: usize,
    ) {
        let rt = res
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        if rt == "Bundle" && !self.trial {
            let addr = res as *const Value as usize;
            if !self.bundles_checked.contains(&addr) {
                self.bundles_checked.push(addr);
                for (at, sev, msg) in crate::bundle::check(res) {
                    let mut loc = path.render();
                    if !loc.is_empty() {
                        loc.push('.');
                    }
                    loc.push_str(&at);
                    self.push(sev, "invalid", &loc, msg);
                }
            }
        }
        let dp = P::root(rt);
        let host = Host {
            dpath: &dp,
            ty: rt,
            epath: rt,
            base_path: rt,
            ext_url: None,
            node: Some(res),
            is_self: false,
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

        if elem.value_checks {
            self.value_checks(prof, ei, elem, item, ty, primitive, path, ctx);
        }
        if ty == "Identifier" {
            self.nhs_number(item.value, path);
        }
        if ty == "Reference" {
            self.reference_target(elem, item.value, path, ctx, depth);
        }
        if ty == "Coding" {
            self.coding_code(item.value, path);
        }
        if ty == "Attachment" {
            self.attachment_size(item.value, path);
        }
        if !self.opts.allow_html_in_markdown && ty == "markdown" {
            if let Some(Value::String(md)) = item.value {
                if let Some(i) = html_tag_start(md) {
                    let start: String = md.get(i..).unwrap_or("").chars().take(2).collect();
                    self.push_at(Severity::Error, "invalid", path, || {
                        format!("The markdown contains content that appears to be an embedded HTML tag starting at '{start}'")
                    });
                }
            }
        }
        if !self.opts.allow_example_urls && matches!(ty, "uri" | "url" | "canonical") {
            if let Some(Value::String(u)) = item.value {
                if u.contains("example.org") {
                    self.push_at(Severity::Error, "invalid", path, || {
                        format!("Example URLs are not allowed in this context ({u})")
                    });
                }
            }
        }
        if elem.has_invariants {
            self.invariants(elem, item, ty, path, ctx);
        }

        // an element of another profile (elementdefinition-profile-element)
        let profile_element = if elem.has_profile_element {
            self.profile_element(elem)
        } else {
            None
        };
        if let Some((lp, li)) = &profile_element {
            if !(std::ptr::eq(*lp, prof) && *li == ei) {
                self.visit(lp, *li, item, ty, path, dpath, host, ctx, depth + 1);
            }
        }

        // children
        if primitive && item.ext.is_none() {
            return;
        }
        // resources nested in a resource element (contained, entry.resource)
        let mut ctx = ctx;
        if ei != 0 && elem.holds_resources {
            if !self.opts.validate_contained && elem.path.ends_with(".contained") {
                return;
            }
            if let Some(v) = item.value {
                self.nested_resource(elem, v, path, ctx, depth);
                if elem.children.is_empty() {
                    return;
                }
                ctx = ctx.nested(elem, v);
            } else {
                return;
            }
        }
        // the host for the item's children (extension contexts)
        let ext_url = if ty == "Extension" {
            item.value
                .and_then(|v| v.get("url"))
                .and_then(Value::as_str)
        } else if host.ty == "Extension" && elem.name.starts_with("value") {
            host.ext_url
        } else {
            None
        };
        let me = if ei == 0 && host.is_self {
            Host {
                is_self: false,
                ..*host
            }
        } else {
            Host {
                dpath,
                ty,
                epath: &elem.path,
                base_path: &elem.base_path,
                ext_url,
                node: item.value.or(item.ext),
                is_self: false,
            }
        };
        let mut owner: &Elem = elem;
        let base_holder;
        let mut walk_prof: &Profile = prof;
        if elem.children.is_empty() {
            if let Some(cr) = &elem.content_reference {
                let id = cr.rsplit('#').next().unwrap_or(cr);
                // a content reference means the base definition of that element
                base_holder = if prof.derivation == "constraint" {
                    self.reg.base_profile_ref(&prof.type_name)
                } else {
                    None
                };
                if let Some(bp) = base_holder {
                    walk_prof = bp;
                }
                if let Some(t) = walk_prof.by_id.get(id).and_then(|&i| walk_prof.elem(i)) {
                    owner = t;
                }
            }
        }
        if !owner.children.is_empty() {
            if ei != 0
                && !primitive
                && !matches!(ty, "BackboneElement" | "Element" | "Extension")
                && !ty.contains('.')
                && !elem.holds_resources
            {
                // the snapshot expanded the type: its root invariants still apply
                self.type_root_invariants(prof, ei, elem, item, ty, path, ctx);
            }
            if ty != "Extension" {
                // the children come from the snapshot; the type profile must still be known
                if let Some(ti) = elem.types.iter().position(|t| t.code == ty) {
                    let t = elem.types.get(ti);
                    let unknown = t
                        .is_some_and(|t| !t.profiles.is_empty() && t.profile_element.is_none())
                        && self.type_entries(prof, ei).get(ti).is_some_and(|(_, ids)| {
                            !ids.iter()
                                .any(|x| x.and_then(|i| self.reg.profile_at_ref(i)).is_some())
                        });
                    if let (true, Some(t)) = (unknown, t) {
                        self.unknown_type_profile(elem, &t.profiles, path);
                    }
                }
            }
            let reset = P::root(ty);
            let child_dpath = if !primitive
                && !matches!(ty, "BackboneElement" | "Element")
                && !ty.contains('.')
            {
                &reset
            } else {
                dpath
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
            self.extension(prof, ei, item, path, host, ctx, depth);
            return;
        }
        if profile_element.is_some() {
            return;
        }
        let me = Host {
            is_self: true,
            ..me
        };
        let ti = elem
            .types
            .iter()
            .position(|t| t.code == ty)
            .or(if elem.types.len() == 1 { Some(0) } else { None });
        let tref = ti.and_then(|i| elem.types.get(i));
        let profiles: &[String] = tref.map_or(&[], |t| t.profiles.as_slice());
        let cached = ti.and_then(|i| self.type_entries(prof, ei).get(i));
        let reg = self.reg;
        let mut known = cached
            .map_or(&[][..], |(_, ids)| ids.as_slice())
            .iter()
            .filter_map(|x| x.and_then(|i| reg.profile_at_ref(i)))
            .filter(|p| !std::ptr::eq(*p, prof));
        let first = known.next();
        let second = known.next();
        if let (Some(a), Some(b)) = (first, second) {
            // several profiles: the item must conform to one of them
            let mut targets: Vec<&'r Profile> = vec![a, b];
            targets.extend(known);
            let found = targets.iter().position(|p| {
                self.trial(|me2| me2.visit(p, 0, item, ty, path, dpath, &me, ctx, depth + 1))
            });
            if let Some(i) = found {
                targets = targets.into_iter().skip(i).take(1).collect();
            }
            for p in &targets {
                self.visit(p, 0, item, ty, path, dpath, &me, ctx, depth + 1);
            }
            return;
        }
        let target = match first {
            Some(p) => Some(p),
            None => {
                if !profiles.is_empty()
                    && !profiles.iter().any(|u| {
                        self.reg
                            .profile_ref(u)
                            .is_some_and(|p| std::ptr::eq(p, prof))
                    })
                {
                    self.unknown_type_profile(elem, profiles, path);
                }
                if profiles.is_empty()
                    && (ei == 0 || matches!(ty, "BackboneElement" | "Element") || ty.contains('.'))
                {
                    return;
                }
                match (cached, tref) {
                    (Some((Some(b), _)), Some(t)) if t.code == ty => self.reg.profile_at_ref(*b),
                    _ => self.reg.base_profile_ref(ty),
                }
            }
        };
        if let Some(p) = target.filter(|p| !std::ptr::eq(*p, prof)) {
            self.visit(p, 0, item, ty, path, dpath, &me, ctx, depth + 1);
        }
    }

    fn unknown_type_profile(&mut self, elem: &Elem, profiles: &[String], path: &P<'_>) {
        self.push_at(Severity::Error, "structure", path, || {
            format!(
                "Unknown profile {} (type profile of {}), so it cannot be checked",
                profiles.join(", "),
                elem.id
            )
        });
    }

    /// The element of another profile that an element's type points to
    /// (`elementdefinition-profile-element`).
    fn profile_element(&self, elem: &Elem) -> Option<(&'r Profile, usize)> {
        let t = elem.types.iter().find(|t| t.profile_element.is_some())?;
        let id = t.profile_element.as_deref()?;
        let p = self.reg.profile_ref(t.profiles.first()?)?;
        let i = *p.by_id.get(id)?;
        Some((p, i))
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
        let nctx = ctx.nested(elem, v);
        let type_allowed = elem.types.is_empty()
            || elem.types.iter().any(|t| {
                if t.profiles.is_empty() {
                    matches!(t.code.as_str(), "Resource" | "DomainResource") || t.code == rt
                } else {
                    t.profiles
                        .iter()
                        .any(|u| self.reg.profile_ref(u).is_none_or(|p| p.type_name == rt))
                }
            });
        if !type_allowed {
            let allowed: Vec<String> = elem
                .types
                .iter()
                .flat_map(|t| {
                    if t.profiles.is_empty() {
                        vec![t.code.clone()]
                    } else {
                        t.profiles
                            .iter()
                            .filter_map(|u| self.reg.profile_ref(u).map(|p| p.type_name.clone()))
                            .collect()
                    }
                })
                .collect();
            self.push_at(Severity::Error, "structure", path, || {
                format!(
                    "The type '{rt}' is not valid here - must be {} ({})",
                    allowed.join(" or "),
                    elem.id
                )
            });
        }
        let mut targets: Vec<&'r Profile> = elem
            .types
            .iter()
            .flat_map(|t| t.profiles.iter())
            .filter_map(|url| self.reg.profile_ref(url))
            .filter(|p| p.type_name == rt)
            .collect();
        if targets.len() > 1 {
            // several profiles: the resource must conform to one of them
            let found = targets
                .iter()
                .position(|p| self.trial(|me| me.resource_at(v, p, path, nctx, depth + 1)));
            if let Some(i) = found {
                targets = targets.into_iter().skip(i).take(1).collect();
            }
        }
        if targets.is_empty() {
            targets.extend(self.reg.base_profile_ref(rt));
        }
        for p in &targets {
            self.resource_at(v, p, path, nctx, depth + 1);
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
        let mut ext_key = String::new();
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
                ext_key.clear();
                ext_key.push('_');
                ext_key.push_str(name);
                (Some(v), obj.get(ext_key.as_str()))
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

    /// The cached registry entries of element `ei`'s types: (base definition of
    /// the type code, profiles).
    fn type_entries<'p>(&self, prof: &'p Profile, ei: usize) -> &'p [crate::registry::TypeEntries] {
        let (Some(c), Some(elem)) = (prof.cache.get(ei), prof.elem(ei)) else {
            return &[];
        };
        c.types.get_or_init(|| {
            elem.types
                .iter()
                .map(|t| {
                    (
                        self.reg.base_index(&t.code),
                        t.profiles.iter().map(|u| self.reg.find_sd(u)).collect(),
                    )
                })
                .collect()
        })
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
