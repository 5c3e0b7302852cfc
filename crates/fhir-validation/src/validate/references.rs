//! References: resolution of a reference (contained, in the enclosing
//! Bundle, in the enclosing Parameters), the resource type it shows or
//! resolves to against the element's target profiles, and conformance of a
//! resolved target to one of the target profiles.

use fhir_structure::model::Model;
use serde_json::Value;

use super::location::P;
use super::{Res, Run, CORE_SD};
use crate::registry::Profile;
use crate::snapshot::Elem;
use crate::Severity;

impl<'r> Run<'r> {
    pub(super) fn reference_target(
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
