//! Invariants: evaluation of an element's FHIRPath constraints (and the
//! root constraints of a type whose children the snapshot expanded), with
//! presence-only constraints and a few base ones (dom-3, dom-6, txt-1,
//! txt-2) checked natively.

use serde_json::Value;

use super::location::P;
use super::{Item, Res, Run};
use crate::registry::Profile;
use crate::snapshot::Elem;
use crate::terminology::Terminology;
use crate::Severity;

impl<'r> Run<'r> {
    /// The invariants of the root of type `ty`'s base definition, for an
    /// element whose children the snapshot expanded.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn type_root_invariants(
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

    pub(super) fn invariants(
        &mut self,
        elem: &Elem,
        item: Item<'_>,
        ty: &str,
        path: &P<'_>,
        ctx: Res<'_>,
    ) {
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
