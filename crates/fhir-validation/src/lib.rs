//! StructureDefinition-driven FHIR R4 profile validation, offline.
//!
//! * [`package`] locates (and, on request, installs) the R4 core package.
//! * [`Registry`] holds StructureDefinitions, ValueSets and CodeSystems (and
//!   the global profiles of ImplementationGuides): core definitions are
//!   indexed and parsed lazily; added profiles get snapshots generated from
//!   their differentials.
//! * [`Validator`] checks a resource: structure (via `fhir-structure`), the
//!   base definition of its type, explicit profiles, `meta.profile` and
//!   global profiles (cardinality, types and type profiles, fixed/pattern
//!   values, min/max values and lengths, slicing and re-slicing, extensions
//!   and their contexts, bindings, FHIRPath invariants), references (target
//!   types and profiles of contained and Bundle-resolved targets), Bundle
//!   rules (fullUrl, links, document references and reachability), narrative
//!   rules (entities, links, content), the snapshots of StructureDefinition
//!   instances, and NHS number Modulus 11.

#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod bundle;
mod fx;
mod narrative;
pub mod nhs;
pub mod package;
mod registry;
mod snapshot;
mod terminology;
mod validate;

pub use fhir_structure::check::{Issue, Severity};
pub use registry::{xml_to_json, Profile, Registry, RegistryBuilder};

use std::sync::Arc;

/// Options of a [`Validator`].
#[derive(Debug, Clone)]
pub struct ValidatorOptions {
    /// Severity of NHS number Modulus 11 failures (default `Error`).
    pub nhs_number: Severity,
    /// Whether base R4 invariants (dom-*, ref-1, per-1, …) are evaluated (default true).
    pub check_base_invariants: bool,
    /// Whether the resource type of a reference that cannot be resolved
    /// locally (not contained, not in the enclosing Bundle) is checked
    /// against the element's target profiles, as far as the reference itself
    /// (`Patient/123`) shows it (default true).
    pub check_unresolved_reference_types: bool,
    /// Whether relative references (`Patient/1`) must resolve in the
    /// enclosing Bundle or Parameters (default false: a server resolves them
    /// against its store, which the validator cannot see).
    pub check_references_exist: bool,
    /// Whether markdown may contain what looks like embedded HTML tags (default true).
    pub allow_html_in_markdown: bool,
    /// Whether contained resources are validated (default true). When false,
    /// they are ignored altogether: not walked, their structural issues
    /// dropped, and the dom-2…dom-5 invariants about them not evaluated.
    pub validate_contained: bool,
    /// Whether example URLs (`example.org`) are tolerated (default true):
    /// when false, uri/url/canonical values naming example.org are errors and
    /// unknown example.org extensions are not tolerated.
    pub allow_example_urls: bool,
    /// Severity of an extension whose definition is not loaded and whose URL
    /// is from a domain no loaded definition comes from (default `Error`, as
    /// the HL7 Java validator does; `Warning` for open extension slicing, as
    /// UK Core has). Unknown extensions from known domains are always
    /// warnings, and unknown modifierExtensions always errors.
    pub unknown_extensions: Severity,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        ValidatorOptions {
            nhs_number: Severity::Error,
            check_base_invariants: true,
            check_unresolved_reference_types: true,
            check_references_exist: false,
            allow_html_in_markdown: true,
            validate_contained: true,
            allow_example_urls: true,
            unknown_extensions: Severity::Error,
        }
    }
}

/// The outcome of [`Validator::validate`].
#[derive(Debug, Clone, Default)]
pub struct ValidationReport {
    pub issues: Vec<Issue>,
}

impl ValidationReport {
    /// No `Error` or `Fatal` issue.
    pub fn is_valid(&self) -> bool {
        !self.issues.iter().any(|i| i.severity.is_error())
    }
}

/// Validates resources against the definitions of a [`Registry`].
#[derive(Debug, Clone)]
pub struct Validator {
    registry: Arc<Registry>,
    options: ValidatorOptions,
}

impl Validator {
    pub fn new(registry: Arc<Registry>, options: ValidatorOptions) -> Validator {
        Validator { registry, options }
    }

    /// Structural checks + base definition of the resource's type + each
    /// profile in `profiles` + every profile in `meta.profile`.
    pub fn validate(&self, resource: &serde_json::Value, profiles: &[&str]) -> ValidationReport {
        let mut issues = fhir_structure::check::check_resource(resource);
        if !self.options.validate_contained {
            let rt = resource
                .get("resourceType")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            let prefix = format!("{rt}.contained[");
            issues.retain(|i| !i.expression.starts_with(&prefix));
        }
        if issues.iter().any(|i| i.severity == Severity::Fatal) {
            return ValidationReport { issues };
        }
        let rt = resource
            .get("resourceType")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let mut run = validate::Run::new(&self.registry, &self.options);
        // the profiles to apply
        let mut applied: Vec<Arc<Profile>> = Vec::new();
        let meta_profiles: Vec<&str> = resource
            .get("meta")
            .and_then(|m| m.get("profile"))
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        let requested = profiles
            .iter()
            .map(|p| (*p, true))
            .chain(meta_profiles.iter().map(|p| (*p, false)))
            .chain(
                self.registry
                    .global_profiles(rt)
                    .iter()
                    .map(|p| (p.as_str(), false)),
            );
        for (url, explicit) in requested {
            match self.registry.profile(url) {
                Some(p) => {
                    if p.type_name != rt {
                        issues.push(Issue {
                            severity: Severity::Error,
                            code: "processing",
                            expression: rt.to_string(),
                            message: format!(
                                "Profile {url} is for {} resources, not {rt}",
                                p.type_name
                            ),
                        });
                    } else if !applied.iter().any(|a| Arc::ptr_eq(a, &p)) {
                        applied.push(p);
                    }
                }
                None => issues.push(Issue {
                    severity: if explicit {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    code: "not-found",
                    expression: if explicit {
                        rt.to_string()
                    } else {
                        format!("{rt}.meta.profile")
                    },
                    message: format!("Profile {url} is not known, so it cannot be checked"),
                }),
            }
        }
        match self.registry.base_profile(rt) {
            Some(base) => {
                if !applied.iter().any(|p| p.derives_from(&base.url)) {
                    applied.insert(0, base);
                }
            }
            None => issues.push(Issue {
                severity: Severity::Information,
                code: "not-found",
                expression: rt.to_string(),
                message: format!(
                    "No base definition for {rt} is loaded; only structural checks were made"
                ),
            }),
        }
        for p in &applied {
            run.resource(resource, p, rt, 0);
        }
        if rt == "StructureDefinition" {
            for w in self.registry.snapshot_problems(resource) {
                issues.push(Issue {
                    severity: Severity::Error,
                    code: "invalid",
                    expression: rt.to_string(),
                    message: format!("Error generating the snapshot: {w}"),
                });
            }
        }
        issues.extend(run.issues);
        let mut seen = std::collections::HashSet::new();
        issues
            .retain(|i| seen.insert((i.severity, i.code, i.expression.clone(), i.message.clone())));
        ValidationReport { issues }
    }
}
