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

use crate::fx::FxMap;
use fhir_structure::model::Model;
use once_cell::sync::Lazy;
use serde_json::{Map, Value};

use crate::nhs::{nhs_number_valid, NHS_NUMBER_SYSTEM};
use crate::registry::{DiscValue, Profile, Registry};
use crate::snapshot::{upper_first, Elem, Rules};
use crate::terminology::{self, Terminology};
use crate::{Issue, Severity, ValidatorOptions};
use std::sync::Arc;

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

    /// The invariants of the root of type `ty`'s base definition, for an
    /// element whose children the snapshot expanded.
    #[allow(clippy::too_many_arguments)]
    fn type_root_invariants(
        &mut self,
        prof: &Profile,
        ei: usize,
        elem: &Elem,
        item: Item<'_>,
        ty: &str,
        path: &P<'_>,
        ctx: Res<'_>,
    ) {
        let ti = elem.types.iter().position(|t| t.code == ty);
        let base = match ti.and_then(|i| self.type_entries(prof, ei).get(i)) {
            Some((Some(b), _)) => self.reg.profile_at_ref(*b),
            _ => self.reg.base_profile_ref(ty),
        };
        let Some(base) = base.filter(|b| !std::ptr::eq(*b, prof)) else {
            return;
        };
        if let Some(root) = base.elem(0) {
            self.constraints(&root.constraints, &elem.constraints, item, ty, path, ctx);
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

    /// Fixed and pattern values, lengths, ranges, presence, bindings.
    #[allow(clippy::too_many_arguments)]
    fn value_checks(
        &mut self,
        prof: &Profile,
        ei: usize,
        elem: &Elem,
        item: Item<'_>,
        ty: &str,
        primitive: bool,
        path: &P<'_>,
        ctx: Res<'_>,
    ) {
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
        if let Some(Value::String(s)) = item.value {
            if elem.max_length.is_some() || elem.min_length.is_some() {
                let n = s.chars().count();
                if let Some(max) = elem.max_length.filter(|m| n > *m) {
                    self.push_at(Severity::Error, "value", path, || {
                        format!("{elem_name}: value is longer than the maxLength {max}")
                    });
                }
                if let Some(min) = elem.min_length.filter(|m| n < *m) {
                    self.push_at(Severity::Error, "value", path, || {
                        format!("{elem_name}: value is shorter than the minLength {min}")
                    });
                }
            }
        }
        if elem.min_value.is_some() || elem.max_value.is_some() {
            if let Some(v) = item.value {
                self.value_range(elem, v, path);
            }
        }
        if !elem.narrative_language.is_empty() {
            if let Some(div) = item
                .value
                .and_then(|v| v.get("div"))
                .and_then(Value::as_str)
            {
                self.narrative_language(elem, div, path, ctx);
            }
        }
        if primitive
            && item.value.is_none()
            && (elem.must_have_value || !elem.value_alternatives.is_empty())
        {
            self.value_presence(elem, item, path);
        }
        if let (Some(b), Some(v)) = (&elem.binding, item.value) {
            self.binding(prof, ei, b, v, ty, path, elem_name);
        }
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

    /// `minValue[x]` / `maxValue[x]`.
    fn value_range(&mut self, elem: &Elem, v: &Value, path: &P<'_>) {
        for (bound, is_min) in [(&elem.min_value, true), (&elem.max_value, false)] {
            let Some((suffix, limit)) = bound else {
                continue;
            };
            let Some(ord) = compare_to_limit(v, suffix, limit, is_min) else {
                continue;
            };
            let bad = if is_min {
                ord == std::cmp::Ordering::Less
            } else {
                ord == std::cmp::Ordering::Greater
            };
            if bad {
                self.push_at(Severity::Error, "value", path, || {
                    format!(
                        "{}: the value {} is {} the {} {}{}",
                        elem.id,
                        compact(v),
                        if is_min { "less than" } else { "greater than" },
                        if is_min { "minValue" } else { "maxValue" },
                        compact(limit),
                        if suffix == "Duration" {
                            " (relative to now)"
                        } else {
                            ""
                        }
                    )
                });
            }
        }
    }

    /// `narrative-language-control`: language sections of the narrative.
    fn narrative_language(&mut self, elem: &Elem, div: &str, path: &P<'_>, ctx: Res<'_>) {
        let sections = crate::narrative::language_sections(div);
        for control in &elem.narrative_language {
            let problem = match control.as_str() {
                "_no" => (!sections.is_empty()).then(|| {
                    format!(
                        "the narrative has language sections ({}), but they are prohibited here",
                        sections.join(", ")
                    )
                }),
                "_yes" => sections.is_empty().then(|| {
                    "the narrative has no language sections, but they are required here".to_string()
                }),
                "_resource" => ctx
                    .resource
                    .get("language")
                    .and_then(Value::as_str)
                    .filter(|l| !sections.contains(l))
                    .map(|l| {
                        format!("the narrative has no section for the resource's language '{l}'")
                    }),
                lang => (!sections.contains(&lang))
                    .then(|| format!("the narrative has no section for the language '{lang}'")),
            };
            if let Some(m) = problem {
                self.push_at(Severity::Error, "business-rule", path, || {
                    format!("{} ({}): {m}", elem.id, "narrative-language-control")
                });
            }
        }
    }

    /// `mustHaveValue` / `valueAlternatives` on a primitive without a value.
    fn value_presence(&mut self, elem: &Elem, item: Item<'_>, path: &P<'_>) {
        if elem.must_have_value {
            self.push_at(Severity::Error, "required", path, || {
                format!("{}: a value is required (mustHaveValue)", elem.id)
            });
            return;
        }
        let urls: Vec<&str> = item
            .ext
            .and_then(|e| e.get("extension"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("url").and_then(Value::as_str))
            .collect();
        if !urls
            .iter()
            .any(|u| elem.value_alternatives.iter().any(|a| a == u))
        {
            self.push_at(Severity::Error, "required", path, || {
                format!(
                    "{}: without a value, one of the extensions {} must be present",
                    elem.id,
                    elem.value_alternatives.join(", ")
                )
            });
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
            let name = se.slice_name.as_deref().unwrap_or("");
            // items of a re-slice (`name/sub`) count for the slice too
            let n = assigned
                .iter()
                .filter(|a| {
                    a.is_some_and(|x| {
                        x == s
                            || prof
                                .elem(x)
                                .and_then(|e| e.slice_name.as_deref())
                                .and_then(|n| n.strip_prefix(name))
                                .is_some_and(|r| r.starts_with('/'))
                    })
                })
                .count() as u32;
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
        let found = self.match_slice_in(prof, c, &c.slices, None, item, ty, ctx)?;
        // re-slices (`name/sub`) of the matched slice: the most specific match wins
        let mut best = found;
        while let Some(name) = prof.elem(best).and_then(|e| e.slice_name.as_deref()) {
            let subs: Vec<usize> = c
                .slices
                .iter()
                .copied()
                .filter(|&r| {
                    prof.elem(r)
                        .and_then(|e| e.slice_name.as_deref())
                        .and_then(|n| n.strip_prefix(name))
                        .is_some_and(|rest| {
                            rest.strip_prefix('/').is_some_and(|r| !r.contains('/'))
                        })
                })
                .collect();
            if subs.is_empty() {
                break;
            }
            match self.match_slice_in(prof, c, &subs, Some(name), item, ty, ctx) {
                Some(r) => best = r,
                None => break,
            }
        }
        Some(best)
    }

    /// The first slice of `slices` the item matches; at the top level
    /// (`parent` None) re-slices are skipped.
    #[allow(clippy::too_many_arguments)]
    fn match_slice_in(
        &mut self,
        prof: &Profile,
        c: &Elem,
        slices: &[usize],
        parent: Option<&str>,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
    ) -> Option<usize> {
        let discs: &[(String, String)] = c
            .slicing
            .as_ref()
            .map(|s| s.discriminators.as_slice())
            .unwrap_or(&[]);
        for &s in slices {
            let Some(se) = prof.elem(s) else { continue };
            if parent.is_none() && se.slice_name.as_deref().is_some_and(|n| n.contains('/')) {
                continue;
            }
            let mut decided = true;
            let mut ok = true;
            if discs.is_empty() {
                decided = false;
            }
            let values = self.disc_values(prof, s, discs);
            for (k, (kind, dpath)) in discs.iter().enumerate() {
                let expected = values.get(k).and_then(Option::as_ref);
                match self.disc_match(prof, se, kind, dpath, item, ty, ctx, expected) {
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
            node: None,
            is_self: false,
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
        let Some(def) = self.reg.profile_ref(tp) else {
            return false;
        };
        if std::ptr::eq(def, prof) {
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
    #[allow(clippy::too_many_arguments)]
    fn disc_match(
        &mut self,
        prof: &Profile,
        se: &Elem,
        kind: &str,
        dpath: &str,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
        expected: Option<&DiscValue>,
    ) -> Option<bool> {
        match kind {
            "value" | "pattern" => {
                let dv = expected?;
                let v = item.value?;
                let owned;
                let actual: &[&Value] = match simple_values(v, dpath) {
                    Some(vals) => {
                        // the common case: one plain property, without allocating
                        let Some(expected) = &dv.value else {
                            return Some(vals.is_empty());
                        };
                        if dv.value_set.is_none() {
                            return Some(vals.iter().any(|a| {
                                if dv.fixed {
                                    json_equal(a, expected)
                                } else {
                                    pattern_match(expected, a)
                                }
                            }));
                        }
                        owned = vals.iter().collect::<Vec<&Value>>();
                        &owned
                    }
                    None => {
                        owned = navigate(v, dpath);
                        &owned
                    }
                };
                if let Some(vs) = &dv.value_set {
                    let exp = terminology::expand(self.reg, vs);
                    let mut any_unknown = false;
                    for a in actual {
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
                let Some(expected) = &dv.value else {
                    // prohibited in the slice (max = 0)
                    return Some(actual.is_empty());
                };
                Some(actual.iter().any(|a| {
                    if dv.fixed {
                        json_equal(a, expected)
                    } else {
                        pattern_match(expected, a)
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
                    let Some(pr) = self.reg.profile_ref(&url) else {
                        continue;
                    };
                    let rt = v.get("resourceType").and_then(Value::as_str);
                    let ok = match rt {
                        Some(rt) => {
                            pr.type_name == rt
                                && self.trial(|me| {
                                    me.resource_at(v, pr, &P::root(""), ctx.entry(v), MAX_DEPTH / 2)
                                })
                        }
                        None => self.trial(|me| {
                            let empty = P::root("");
                            let host = Host {
                                dpath: &empty,
                                ty: "",
                                epath: "",
                                base_path: "",
                                ext_url: None,
                                node: None,
                                is_self: false,
                            };
                            let item = Item {
                                value: Some(v),
                                ext: None,
                            };
                            let ty = pr.type_name.clone();
                            me.visit(
                                pr,
                                0,
                                item,
                                &ty,
                                &empty,
                                &empty,
                                &host,
                                Res::top(v),
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
    fn expected_value(&self, prof: &Profile, se: &Elem, dpath: &str) -> Option<DiscValue> {
        if let Some(sub) = find_sub(prof, se, dpath) {
            if let Some(r) = expected_of(prof, sub) {
                return Some(r);
            }
        }
        // an element of another profile (elementdefinition-profile-element)
        if let Some((lp, li)) = self.profile_element(se) {
            let root = lp.elem(li)?;
            let sub = find_sub(lp, root, dpath)?;
            return expected_of(lp, sub);
        }
        // in the slice's type profile (extension slices: url)
        let tp = se.types.first().and_then(|t| t.profiles.first())?;
        if dpath == "url" && se.types.first().is_some_and(|t| t.code == "Extension") {
            return Some(DiscValue {
                value: Some(Value::String(
                    tp.split('|').next().unwrap_or(tp).to_string(),
                )),
                fixed: true,
                value_set: None,
            });
        }
        let p = self.reg.profile_ref(tp)?;
        let root = p.elem(0)?;
        let sub = find_sub(p, root, dpath)?;
        expected_of(p, sub)
    }

    /// The cached expected values of the discriminators for slice `s`.
    fn disc_values<'p>(
        &self,
        prof: &'p Profile,
        s: usize,
        discs: &[(String, String)],
    ) -> &'p [Option<DiscValue>] {
        let Some(c) = prof.cache.get(s) else {
            return &[];
        };
        c.disc.get_or_init(|| {
            let Some(se) = prof.elem(s) else {
                return Vec::new();
            };
            discs
                .iter()
                .map(|(kind, dpath)| {
                    if matches!(kind.as_str(), "value" | "pattern") {
                        self.expected_value(prof, se, dpath)
                    } else {
                        None
                    }
                })
                .collect()
        })
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

    #[allow(clippy::too_many_arguments)]
    fn extension(
        &mut self,
        prof: &Profile,
        ei: usize,
        item: Item<'_>,
        path: &P<'_>,
        host: &Host<'_>,
        ctx: Res<'_>,
        depth: usize,
    ) {
        let Some(elem) = prof.elem(ei) else { return };
        let Some(v) = item.value else { return };
        let url = v.get("url").and_then(Value::as_str).unwrap_or("");
        let modifier = elem.path.ends_with("modifierExtension");
        let ti = elem.types.iter().position(|t| t.code == "Extension");
        let type_profile = ti
            .and_then(|i| elem.types.get(i))
            .and_then(|t| t.profiles.first());
        let lookup = type_profile.map(String::as_str).unwrap_or(url);
        let absolute = lookup.contains(':');
        let def = if !absolute {
            None
        } else if type_profile.is_some() {
            // cached: the element's type profile
            ti.and_then(|i| self.type_entries(prof, ei).get(i))
                .and_then(|(_, ids)| ids.first().copied().flatten())
                .and_then(|i| self.reg.profile_at_ref(i))
        } else {
            self.reg.profile_ref(lookup)
        };
        match def {
            Some(def) => {
                if std::ptr::eq(def, prof) {
                    return;
                }
                self.ext_context(def, url, path, host, ctx);
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
                let host = Host {
                    is_self: false,
                    ..*host
                };
                self.visit(def, 0, item, "Extension", path, &dp, &host, ctx, depth + 1);
            }
            None => {
                if !absolute && !url.is_empty() && type_profile.is_none() {
                    if host.ty == "Extension" {
                        if prof.type_name == "Extension" && prof.url != EXTENSION_SD {
                            self.push_at(Severity::Error, "structure", path, || {
                                format!(
                                    "Sub-extension url '{url}' is not defined by the extension {}",
                                    host.ext_url.unwrap_or(&prof.url)
                                )
                            });
                        }
                    } else if !host.ty.is_empty() {
                        self.push_at(Severity::Error, "structure", path, || {
                            format!("Extension.url must be an absolute URL (found '{url}')")
                        });
                    }
                }
                if absolute && !url.is_empty() {
                    if allow_unknown_extension(url, self.opts.allow_example_urls) {
                        self.push(
                            Severity::Warning,
                            "extension",
                            path,
                            format!("Unknown extension {url} (its definition is not loaded)"),
                        );
                    } else if modifier {
                        self.push(
                            Severity::Error,
                            "extension",
                            path,
                            format!("Unknown modifierExtension {url}: modifier extensions must be understood"),
                        );
                    } else if self.opts.unknown_extensions != Severity::Error {
                        self.push(
                            self.opts.unknown_extensions,
                            "extension",
                            path,
                            format!("Unknown extension {url} (its definition is not loaded, so it was not checked)"),
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
                if let Some(base) = self.reg.base_profile_ref("Extension") {
                    if !std::ptr::eq(base, prof) {
                        let dp = P::root("Extension");
                        let host = Host {
                            is_self: false,
                            ..*host
                        };
                        self.visit(base, 0, item, "Extension", path, &dp, &host, ctx, depth + 1);
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

    fn ext_context(
        &mut self,
        def: &Profile,
        url: &str,
        path: &P<'_>,
        host: &Host<'_>,
        ctx: Res<'_>,
    ) {
        if host.ty.is_empty()
            || url.starts_with("http://hl7.org/fhir/StructureDefinition/structuredefinition-")
        {
            return;
        }
        if !def.contexts.is_empty() {
            self.ext_context_kinds(def, url, path, host, ctx);
        }
        if let Some(node) = host.node {
            for (src, expr) in &def.context_invariants {
                let tx = Terminology(self.reg);
                let ectx = fhirpath::EvalContext::new()
                    .resource(ctx.resource)
                    .root_resource(ctx.root)
                    .terminology(&tx);
                let r = fhirpath::evaluate_node(expr, node, host.ty, &ectx)
                    .and_then(|r| fhirpath::collection_to_bool(&r));
                if let Ok(Some(false)) = r {
                    self.push_at(Severity::Error, "extension", path, || {
                        format!(
                            "Extension {url} is not allowed here: its context invariant '{src}' is not met"
                        )
                    });
                }
            }
        }
    }

    /// Whether the host is among the results of a `fhirpath` context
    /// (`None` when that cannot be evaluated).
    fn fhirpath_context(&self, expr: &str, host: &Host<'_>, ctx: Res<'_>) -> Option<bool> {
        let node = host.node?;
        let e = crate::registry::parse_expr(expr).ok()?;
        let tx = Terminology(self.reg);
        let ectx = fhirpath::EvalContext::new()
            .resource(ctx.resource)
            .root_resource(ctx.root)
            .terminology(&tx);
        let r = fhirpath::evaluate(&e, ctx.resource, &ectx).ok()?;
        Some(r.iter().any(|v| match v {
            fhirpath::Value::Node(n) => n.json().is_some_and(|j| std::ptr::eq(j, node)),
            _ => false,
        }))
    }

    fn ext_context_kinds(
        &mut self,
        def: &Profile,
        url: &str,
        path: &P<'_>,
        host: &Host<'_>,
        ctx: Res<'_>,
    ) {
        let mut host_dpath: Option<String> = None;
        let host_is_resource = is_resource_type(host.ty);
        let mut ok = false;
        for (kind, expr) in &def.contexts {
            ok = match kind.as_str() {
                "element" => {
                    let e = expr.as_str();
                    let e = e
                        .strip_prefix(CORE_SD)
                        .map_or(e, |x| x.trim_start_matches('#'));
                    e == host.ty
                        || e == host.epath
                        || e == host.base_path
                        || e == "Element"
                        || e == "Base"
                        || (matches!(e, "Resource" | "DomainResource") && host_is_resource)
                        || (e == "BackboneElement" && host.ty.contains('.'))
                        || id_path_eq(e, host.epath)
                        || host.dpath.eq_str(e)
                        || type_ancestor(host.ty, e)
                }
                "extension" => host.ext_url == Some(expr.as_str()),
                "fhirpath" => match self.fhirpath_context(expr, host, ctx) {
                    Some(found) => found,
                    None => {
                        // approximate: the path without function calls names the host element
                        let plain: Vec<&str> = split_disc_path(expr)
                            .into_iter()
                            .filter(|seg| !seg.contains('('))
                            .collect();
                        let plain = plain.join(".");
                        plain == host.epath || host.dpath.eq_str(&plain) || plain == host.ty
                    }
                },
                _ => true,
            };
            if ok {
                break;
            }
        }
        if !ok {
            let allowed: Vec<&str> = def.contexts.iter().map(|(_, e)| e.as_str()).collect();
            self.push(
                Severity::Error,
                "extension",
                path,
                format!(
                    "Extension {url} is not allowed here ({}); allowed contexts: {}",
                    {
                        let d = host_dpath.get_or_insert_with(|| host.dpath.render());
                        if d.is_empty() {
                            host.ty.to_string()
                        } else {
                            d.clone()
                        }
                    },
                    allowed.join(", ")
                ),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn binding(
        &mut self,
        prof: &Profile,
        ei: usize,
        b: &crate::snapshot::Binding,
        v: &Value,
        ty: &str,
        path: &P<'_>,
        elem_name: &str,
    ) {
        let strength = b.strength.as_str();
        let checked = matches!(strength, "required" | "extensible");
        if !checked && b.additional_required.is_empty() {
            return;
        }
        if !matches!(
            ty,
            "code" | "Coding" | "CodeableConcept" | "Quantity" | "string" | "uri"
        ) {
            return;
        }
        let codes = terminology::codings(v, ty);
        let reg = self.reg;
        let exps: &[Arc<terminology::Expansion>] = match prof.cache.get(ei) {
            Some(c) => c.bindings.get_or_init(|| {
                b.value_set
                    .iter()
                    .chain(b.additional_required.iter())
                    .map(|vs| terminology::expand(reg, vs))
                    .collect()
            }),
            None => &[],
        };
        let mut exps = exps.iter();
        if let Some(vs) = &b.value_set {
            let exp = exps.next();
            if checked {
                if let Some(exp) = exp {
                    self.binding_to(vs, exp, strength, &codes, v, ty, path, elem_name);
                }
            }
        }
        for (vs, exp) in b.additional_required.iter().zip(exps) {
            self.binding_to(vs, exp, "required", &codes, v, ty, path, elem_name);
        }
    }

    /// Checks codes against one value set bound with `strength`.
    #[allow(clippy::too_many_arguments)]
    fn binding_to(
        &mut self,
        vs: &str,
        exp: &terminology::Expansion,
        strength: &str,
        codes: &[(Option<&str>, &str)],
        v: &Value,
        ty: &str,
        path: &P<'_>,
        elem_name: &str,
    ) {
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
        let mut unknown = false;
        for (s, c) in codes {
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

    /// `Attachment.size` must be the size of the (base64) `data`.
    fn attachment_size(&mut self, v: Option<&Value>, path: &P<'_>) {
        let Some(v) = v else { return };
        let (Some(Value::String(data)), Some(size)) = (v.get("data"), v.get("size")) else {
            return;
        };
        let Some(stated) = size
            .as_u64()
            .or_else(|| size.as_str().and_then(|s| s.parse().ok()))
        else {
            return;
        };
        let chars = data.bytes().filter(|b| !b.is_ascii_whitespace()).count() as u64;
        let pad = data
            .trim_end()
            .bytes()
            .rev()
            .take_while(|b| *b == b'=')
            .count() as u64;
        let actual = (chars / 4 * 3).saturating_sub(pad);
        if chars.is_multiple_of(4) && actual != stated {
            self.push_at(Severity::Error, "structure", &P::child(path, "size", None), || {
                format!("Stated Attachment size {stated} does not match the size of the data ({actual})")
            });
        }
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

    fn reference_target(
        &mut self,
        elem: &Elem,
        v: Option<&Value>,
        path: &P<'_>,
        ctx: Res<'_>,
        depth: usize,
    ) {
        let Some(reference) = v.and_then(|v| v.get("reference")).and_then(Value::as_str) else {
            return;
        };
        // the resource type the reference itself shows (`Patient/1`, `…/Patient/1/_history/2`)
        let literal: Option<&str> = if reference.starts_with('#') {
            None
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
            pick.copied().filter(|t| Model::r4().is_resource_type(t))
        };
        // resolve: contained, or in the enclosing Bundle
        let mut target: Option<(&Value, Res<'_>)> = None;
        if let Some(id) = reference.strip_prefix('#') {
            target = ctx
                .root
                .get("contained")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
                })
                .map(|r| (r, Res { resource: r, ..ctx }));
        } else if let Some(b) = ctx.bundle {
            match crate::bundle::resolve(b, reference, ctx.full_url, ctx.resource) {
                crate::bundle::Resolved::One(r) => {
                    target = Some((
                        r,
                        Res {
                            resource: r,
                            root: r,
                            bundle: Some(b),
                            full_url: crate::bundle::full_url_of(b, r),
                            params: None,
                        },
                    ));
                }
                crate::bundle::Resolved::Many(n) => {
                    self.push_at(Severity::Error, "structure", path, || {
                        format!("Multiple matches ({n}) in the bundle for reference {reference}")
                    });
                    return;
                }
                crate::bundle::Resolved::None => {}
            }
        }
        if target.is_none() && !reference.starts_with('#') {
            if let (Some(pr), Some(lt)) = (ctx.params, literal) {
                // a resource of the same Parameters
                let id = reference
                    .split("/_history/")
                    .next()
                    .unwrap_or(reference)
                    .rsplit('/')
                    .next()
                    .unwrap_or("");
                if let Some(r) = parameters_resource(pr, lt, id) {
                    target = Some((
                        r,
                        Res {
                            params: Some(pr),
                            ..Res::top(r)
                        },
                    ));
                }
            }
            if target.is_none()
                && self.opts.check_references_exist
                && literal.is_some()
                && !reference.contains(':')
            {
                self.push_at(Severity::Error, "structure", path, || {
                    format!("Unable to resolve resource with reference '{reference}'")
                });
            }
        }
        let target_type = target.and_then(|(r, _)| r.get("resourceType").and_then(Value::as_str));
        if let (Some(tt), Some(lt)) = (target_type, literal) {
            if tt != lt {
                self.push_at(Severity::Error, "structure", path, || {
                    format!("Matching reference for reference {reference} has resourceType {tt}")
                });
                return;
            }
        }
        let Some(t) = elem.types.iter().find(|t| t.code == "Reference") else {
            return;
        };
        if t.target_profiles.is_empty() {
            return;
        }
        let rtype = match target_type {
            Some(tt) => tt,
            None if self.opts.check_unresolved_reference_types => match literal {
                Some(l) => l,
                None => return,
            },
            None => return,
        };
        let mut allowed: Vec<String> = Vec::new();
        let mut unknown: Vec<&str> = Vec::new();
        let mut candidates: Vec<&'r Profile> = Vec::new();
        let mut type_ok = false;
        for tp in &t.target_profiles {
            let tn = match self.reg.profile_ref(tp) {
                Some(p) => {
                    let tn = p.type_name.clone();
                    if tn == rtype && p.derivation == "constraint" {
                        candidates.push(p);
                    } else if tn == rtype || tn == "Resource" {
                        // a base definition: any resource of the type conforms
                        type_ok = true;
                        candidates.clear();
                        break;
                    }
                    tn
                }
                None => match tp.strip_prefix(CORE_SD) {
                    Some(n) => n.to_string(),
                    None => {
                        unknown.push(tp);
                        continue;
                    }
                },
            };
            if tn == "Resource" || tn == rtype {
                type_ok = true;
            }
            allowed.push(tn);
        }
        if !type_ok {
            if target.is_none() && !unknown.is_empty() {
                // cannot tell what the unknown target profiles allow
                return;
            }
            if let Some(u) = unknown.first() {
                self.push_at(Severity::Error, "structure", path, || {
                    format!(
                        "Unable to resolve the profile reference '{u}' (target of {})",
                        elem.path
                    )
                });
            }
            self.push_at(Severity::Error, "structure", path, || {
                format!(
                    "The type '{rtype}' implied by the reference is not a valid target for {} (allowed: {})",
                    elem.path,
                    allowed.join(", ")
                )
            });
            return;
        }
        // a resolved target must conform to one of the target profiles
        let Some((tres, tctx)) = target else { return };
        if candidates.is_empty() {
            return;
        }
        let taddr = tres as *const Value as usize;
        let mut ok = false;
        for p in &candidates {
            let key = (taddr, *p as *const Profile as usize);
            if self.ref_stack.contains(&key) {
                ok = true;
                break;
            }
            self.ref_stack.push(key);
            let conforms = self.trial(|me| me.resource_at(tres, p, &P::root(""), tctx, depth + 1));
            self.ref_stack.pop();
            if conforms {
                ok = true;
                break;
            }
        }
        if !ok {
            let urls: Vec<&str> = candidates.iter().map(|p| p.url.as_str()).collect();
            self.push_at(Severity::Error, "structure", path, || {
                format!(
                    "Unable to find a profile match for {reference} among choices: {}",
                    urls.join(", ")
                )
            });
        }
    }

    fn invariants(&mut self, elem: &Elem, item: Item<'_>, ty: &str, path: &P<'_>, ctx: Res<'_>) {
        self.constraints(&elem.constraints, &[], item, ty, path, ctx);
    }

    /// Evaluates `list` (but the keys also in `skip`) on an item.
    fn constraints(
        &mut self,
        list: &[crate::snapshot::Constraint],
        skip: &[crate::snapshot::Constraint],
        item: Item<'_>,
        ty: &str,
        path: &P<'_>,
        ctx: Res<'_>,
    ) {
        if list.is_empty() {
            return;
        }
        let Some(node) = item.value else { return };
        let has_contained = node.get("contained").is_some();
        let obj = node.as_object();
        for c in list {
            let Some(expr) = &c.expr else { continue };
            if let (Some(o), Some(g)) = (obj, &c.vacuous_without) {
                // trivially true without that child
                if !o.contains_key(g.as_str()) && !o.keys().any(|k| k.strip_prefix('_') == Some(g))
                {
                    continue;
                }
            }
            if skip.iter().any(|x| x.key == c.key) {
                continue;
            }
            if let (Some(o), Some(simple)) = (obj, &c.simple) {
                // presence tests only: natively
                let present = |n: &str| {
                    o.get(n).is_some_and(|v| !v.is_null())
                        || o.iter()
                            .any(|(k, v)| k.strip_prefix('_') == Some(n) && !v.is_null())
                };
                if !simple.holds(present) && (self.opts.check_base_invariants || !c.is_base()) {
                    self.push_at(c.severity, "invariant", path, || {
                        format!("Invariant {} failed: {}", c.key, c.human)
                    });
                }
                continue;
            }
            if c.key == "dom-6" && c.is_base() {
                // text.`div`.exists(), natively
                if node.get("text").and_then(|t| t.get("div")).is_none() {
                    self.push_at(c.severity, "invariant", path, || {
                        format!("Invariant dom-6 failed: {}", c.human)
                    });
                }
                continue;
            }
            if !self.opts.check_base_invariants && c.is_base() {
                continue;
            }
            if matches!(c.key.as_str(), "dom-2" | "dom-3" | "dom-4" | "dom-5")
                && (!has_contained || !self.opts.validate_contained)
            {
                continue;
            }
            if matches!(c.key.as_str(), "txt-1" | "txt-2") && c.is_base() {
                // htmlChecks(), natively
                if let Value::String(div) = node {
                    if c.key == "txt-1" {
                        if let Some(name) = crate::narrative::undeclared_entity(div) {
                            self.push_at(c.severity, "invariant", path, || {
                                format!(
                                    "Invariant txt-1 failed: {} (invalid entity in the XHTML: '&{name};')",
                                    c.human
                                )
                            });
                        }
                        if div.contains("href") {
                            let contained: Vec<&str> = ctx
                                .root
                                .get("contained")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(|r| r.get("id").and_then(Value::as_str))
                                .collect();
                            for m in crate::narrative::bad_links(div, &contained) {
                                self.push_at(c.severity, "invalid", path, || m);
                            }
                        }
                    } else if !crate::narrative::has_content(div) {
                        self.push_at(c.severity, "invariant", path, || {
                            format!("Invariant txt-2 failed: {}", c.human)
                        });
                    }
                }
                continue;
            }
            if c.key == "dom-3" && c.is_base() {
                // natively, also counting references from the narrative (img src, a href)
                if let Some(id) = unreferenced_contained(node) {
                    self.push_at(c.severity, "invariant", path, || {
                        format!(
                            "Invariant dom-3 failed: {} (contained resource '{id}' is not referenced)",
                            c.human
                        )
                    });
                }
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

    /// Whether the rendered location equals `s` (without rendering it).
    fn eq_str(&self, s: &str) -> bool {
        let mut rest = s;
        let mut cur = Some(self);
        let mut need_dot = false;
        while let Some(p) = cur {
            cur = p.parent;
            if p.name.is_empty() {
                continue;
            }
            if need_dot {
                match rest.strip_suffix('.') {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            if let Some(i) = p.index {
                let Some(r) = rest.strip_suffix(']') else {
                    return false;
                };
                let digits = r.len() - r.trim_end_matches(|c: char| c.is_ascii_digit()).len();
                let (head, num) = r.split_at(r.len() - digits);
                if num.parse::<usize>().ok() != Some(i) {
                    return false;
                }
                match head.strip_suffix('[') {
                    Some(h) => rest = h,
                    None => return false,
                }
            }
            match rest.strip_suffix(p.name) {
                Some(r) => rest = r,
                None => return false,
            }
            need_dot = true;
        }
        rest.is_empty()
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

/// The resource of type `rt` with id `id` among the parameters (and parts) of
/// a Parameters resource.
fn parameters_resource<'v>(params: &'v Value, rt: &str, id: &str) -> Option<&'v Value> {
    fn find<'v>(list: Option<&'v Value>, rt: &str, id: &str, depth: usize) -> Option<&'v Value> {
        if depth > 8 {
            return None;
        }
        list?.as_array()?.iter().find_map(|p| {
            let hit = p.get("resource").filter(|r| {
                r.get("resourceType").and_then(Value::as_str) == Some(rt)
                    && r.get("id").and_then(Value::as_str) == Some(id)
            });
            hit.or_else(|| find(p.get("part"), rt, id, depth + 1))
        })
    }
    find(params.get("parameter"), rt, id, 0)
}

/// The byte offset of the first `<` that starts what looks like an HTML tag
/// (`<name`, `</name`).
fn html_tag_start(s: &str) -> Option<usize> {
    s.match_indices('<').map(|(i, _)| i).find(|&i| {
        let rest = s.get(i + 1..).unwrap_or("");
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        rest.starts_with(|c: char| c.is_ascii_alphabetic())
    })
}

/// The id of the first contained resource that nothing in the resource
/// refers to (`#id` in a reference, canonical, uri or narrative link), and
/// that does not itself refer to its container (`#`).
fn unreferenced_contained(res: &Value) -> Option<String> {
    fn collect<'v>(v: &'v Value, key: &str, refs: &mut Vec<&'v str>, divs: &mut Vec<&'v str>) {
        match v {
            Value::String(s) => {
                if key == "div" {
                    divs.push(s);
                } else if s.starts_with('#') {
                    refs.push(s);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect(x, key, refs, divs)),
            Value::Object(o) => o.iter().for_each(|(k, x)| collect(x, k, refs, divs)),
            _ => {}
        }
    }
    let contained = res.get("contained")?.as_array()?;
    let (mut refs, mut divs) = (Vec::new(), Vec::new());
    collect(res, "", &mut refs, &mut divs);
    for c in contained {
        let Some(id) = c.get("id").and_then(Value::as_str) else {
            continue;
        };
        let target = format!("#{id}");
        if refs.iter().any(|r| *r == target) {
            continue;
        }
        let linked = divs.iter().any(|d| {
            d.match_indices(target.as_str()).any(|(i, _)| {
                matches!(
                    d.get(i + target.len()..).and_then(|r| r.chars().next()),
                    Some('"' | '\'')
                )
            })
        });
        if linked {
            continue;
        }
        let (mut inner, mut inner_divs) = (Vec::new(), Vec::new());
        collect(c, "", &mut inner, &mut inner_divs);
        if inner.contains(&"#") {
            continue;
        }
        return Some(id.to_string());
    }
    None
}

/// Unknown extensions that are tolerated anywhere (example and test domains).
fn allow_unknown_extension(url: &str, examples: bool) -> bool {
    (examples && url.contains("example.org") && !url.contains("extensions.fhir.org"))
        || (examples && url.contains("acme.com"))
        || url.contains("nema.org")
        || url.starts_with("http://hl7.org/fhir/tools/StructureDefinition/")
        || url == "http://hl7.org/fhir/StructureDefinition/structuredefinition-expression"
}

/// Whether an element id (`Patient.identifier:nhs.system`) names the element path `epath`.
fn id_path_eq(ctx: &str, epath: &str) -> bool {
    if ctx.is_empty() || !ctx.contains(':') {
        return !ctx.is_empty() && ctx == epath;
    }
    let mut a = ctx
        .split('.')
        .map(|seg| seg.split(':').next().unwrap_or(seg));
    let mut b = epath.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

/// Whether `name` is `ty` or one of its base types in the R4 model.
fn type_ancestor(ty: &str, name: &str) -> bool {
    let mut t = Model::r4().type_def(ty);
    while let Some(td) = t {
        if td.name == name {
            return true;
        }
        t = td.base.as_deref().and_then(|b| Model::r4().type_def(b));
    }
    false
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

/// The fixed/pattern value (or required binding) of an element; for a choice
/// element, of its only type slice.
fn expected_of(prof: &Profile, e: &Elem) -> Option<DiscValue> {
    if e.max == Some(0) {
        return Some(DiscValue {
            value: None,
            fixed: false,
            value_set: None,
        });
    }
    if let Some(f) = &e.fixed {
        return Some(DiscValue {
            value: Some(f.clone()),
            fixed: true,
            value_set: None,
        });
    }
    if let Some(p) = &e.pattern {
        return Some(DiscValue {
            value: Some(p.clone()),
            fixed: false,
            value_set: None,
        });
    }
    if let Some(b) = &e.binding {
        if b.strength == "required" {
            return b.value_set.clone().map(|vs| DiscValue {
                value: None,
                fixed: false,
                value_set: Some(vs),
            });
        }
    }
    if e.name.ends_with("[x]") {
        if let [s] = e.slices.as_slice() {
            let se = prof.elem(*s)?;
            if se.fixed.is_some() || se.pattern.is_some() {
                return expected_of(prof, se);
            }
        }
    }
    None
}

/// Finds the element at a discriminator path below `se` (following the
/// element tree, `extension('url')` and type profiles).
fn find_sub<'p>(prof: &'p Profile, se: &'p Elem, dpath: &str) -> Option<&'p Elem> {
    let dpath = dpath.strip_prefix("$this.").unwrap_or(dpath);
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
            // the most specific matching slice (re-slices come last), preferably expanded
            let matching: Vec<&Elem> = ext
                .slices
                .iter()
                .filter_map(|&i| prof.elem(i))
                .filter(|s| s.types.iter().any(|t| t.profiles.iter().any(|p| p == url)))
                .collect();
            cur = matching
                .iter()
                .rev()
                .find(|s| !s.children.is_empty())
                .or(matching.last())
                .copied()?;
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

/// The values of a discriminator path that names one plain property
/// (`url`, `system`): `None` for longer paths, functions or choice stems.
fn simple_values<'v>(v: &'v Value, dpath: &str) -> Option<&'v [Value]> {
    let seg = dpath.strip_prefix("$this.").unwrap_or(dpath);
    if seg.is_empty() || seg.contains(['.', '(', '$']) {
        return None;
    }
    let Value::Object(o) = v else {
        return Some(&[]);
    };
    match o.get(seg) {
        Some(Value::Array(a)) => Some(a.as_slice()),
        Some(x) => Some(std::slice::from_ref(x)),
        // maybe a choice stem (`value` for `valueCode`): the general path
        None => None,
    }
}

/// Values at a simple discriminator path (arrays flattened, choice stems matched).
fn navigate<'v>(v: &'v Value, dpath: &str) -> Vec<&'v Value> {
    let dpath = dpath.strip_prefix("$this.").unwrap_or(dpath);
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

/// Compares an instance value with a `minValue[x]`/`maxValue[x]` limit
/// (`Duration` limits are relative to now: minus for minValue, plus for maxValue).
fn compare_to_limit(
    v: &Value,
    suffix: &str,
    limit: &Value,
    is_min: bool,
) -> Option<std::cmp::Ordering> {
    use fhirpath::{DateTime, Decimal, Quantity, Time};
    let dec = |x: &Value| -> Option<Decimal> {
        match x {
            Value::Number(n) => Decimal::parse(&n.to_string()),
            Value::String(s) => Decimal::parse(s),
            _ => None,
        }
    };
    match suffix {
        "Integer" | "Decimal" | "PositiveInt" | "UnsignedInt" | "Integer64" => {
            Some(dec(v)?.cmp_num(&dec(limit)?))
        }
        "Date" | "DateTime" | "Instant" => {
            let a = DateTime::parse_fhir(v.as_str()?)?;
            let b = DateTime::parse_fhir(limit.as_str()?)?;
            a.compare(&b)
        }
        "Time" => {
            let a = Time::parse(v.as_str()?, false)?;
            let b = Time::parse(limit.as_str()?, false)?;
            a.compare(&b)
        }
        "Quantity" | "Age" | "Count" | "Distance" | "SimpleQuantity" | "MoneyQuantity" => {
            let a = fhirpath::quantity_of(v)?;
            let b = fhirpath::quantity_of(limit)?;
            a.compare(&b)
        }
        "Duration" => {
            let q = fhirpath::quantity_of(limit)?;
            let unit = match q.unit.as_str() {
                "a" => "year",
                "mo" => "month",
                u => u,
            };
            let n = q.value.to_i64_exact()?;
            let cal = Quantity::new(Decimal::from_i64(1), unit).cal_unit().ok()?;
            let a = match v {
                Value::String(s) => DateTime::parse_fhir(s)?,
                _ => {
                    let a = fhirpath::quantity_of(v)?;
                    return a.compare(&q);
                }
            };
            let bound = DateTime::now().add(if is_min { n.checked_neg()? } else { n }, cal)?;
            a.compare(&bound.with_precision(a.precision))
        }
        _ => None,
    }
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
    fn ranges() {
        use std::cmp::Ordering;
        let q = |v: &str, u: &str| json!({"value": serde_json::Number::from_string_unchecked(v.into()), "system": "http://unitsofmeasure.org", "code": u});
        assert_eq!(
            compare_to_limit(&q("-1", "g"), "Quantity", &q("0", "kg"), true),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_to_limit(&q("11000", "g"), "Quantity", &q("10", "kg"), false),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_to_limit(&json!(1000), "Decimal", &json!(999), false),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_to_limit(&json!("2020-01-02"), "Date", &json!("2020-01-01"), true),
            Some(Ordering::Greater)
        );
        let years = |n: &str| json!({"value": serde_json::Number::from_string_unchecked(n.into()), "system": "http://unitsofmeasure.org", "code": "a"});
        assert_eq!(
            compare_to_limit(&json!("1850-01-01"), "Duration", &years("100"), true),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_to_limit(&json!("2100-01-01"), "Duration", &years("10"), false),
            Some(Ordering::Greater)
        );
        // absurd limits never panic
        for n in [
            "-9223372036854775808",
            "9223372036854775807",
            "1e400",
            "-0.5",
        ] {
            let _ = compare_to_limit(&json!("2000-01-01"), "Duration", &years(n), true);
            let _ = compare_to_limit(&json!("2000-01-01"), "Duration", &years(n), false);
        }
        assert_eq!(
            compare_to_limit(&json!("x"), "Date", &json!("2020"), true),
            None
        );
    }

    #[test]
    fn locations() {
        let root = P::root("Patient");
        let a = P::child(&root, "identifier", Some(12));
        let b = P::child(&a, "system", None);
        let empty = P::root("");
        let c = P::child(&empty, "x", None);
        for (p, s) in [
            (&b, "Patient.identifier[12].system"),
            (&a, "Patient.identifier[12]"),
            (&c, "x"),
        ] {
            assert_eq!(p.render(), s);
            assert!(p.eq_str(s));
        }
        assert!(!b.eq_str("Patient.identifier[1].system"));
        assert!(!b.eq_str("Patient.identifier.system"));
        assert!(!b.eq_str("XPatient.identifier[12].system"));
        assert!(id_path_eq(
            "Patient.identifier:nhs.system",
            "Patient.identifier.system"
        ));
        assert!(!id_path_eq(
            "Patient.identifier:nhs",
            "Patient.identifier.system"
        ));
        assert!(type_ancestor("Age", "Quantity"));
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
