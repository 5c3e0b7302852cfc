//! Terminology checks: bindings (required and extensible, and R5 additional
//! required bindings) against cached value set expansions, and codes of
//! code systems that are loaded.

use serde_json::Value;
use std::sync::Arc;

use super::location::P;
use super::Run;
use crate::registry::Profile;
use crate::terminology;
use crate::Severity;

impl<'r> Run<'r> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn binding(
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

    pub(super) fn coding_code(&mut self, v: Option<&Value>, path: &P<'_>) {
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
}
