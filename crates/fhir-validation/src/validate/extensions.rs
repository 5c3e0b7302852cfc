//! Extensions: resolution of an extension's definition by URL (known,
//! unknown from a known or an unknown domain, tolerated example domains),
//! modifier / non-modifier use, relative sub-extension URLs, and the
//! `context` and `contextInvariant` checks against the host element.

use fhir_structure::model::Model;
use serde_json::Value;

use super::location::P;
use super::slicing::split_disc_path;
use super::{Host, Item, Res, Run, CORE_SD, EXTENSION_SD};
use crate::registry::Profile;
use crate::terminology::Terminology;
use crate::Severity;

impl<'r> Run<'r> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn extension(
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
}

fn is_resource_type(t: &str) -> bool {
    t == "Resource" || t == "DomainResource" || Model::r4().is_resource_type(t)
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
pub(super) fn id_path_eq(ctx: &str, epath: &str) -> bool {
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
pub(super) fn type_ancestor(ty: &str, name: &str) -> bool {
    let mut t = Model::r4().type_def(ty);
    while let Some(td) = t {
        if td.name == name {
            return true;
        }
        t = td.base.as_deref().and_then(|b| Model::r4().type_def(b));
    }
    false
}
