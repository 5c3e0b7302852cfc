//! Profile validation as the server applies it: which profiles apply to which
//! resource type, and the per-type policy (`off | warn | enforce`) that decides
//! whether error issues block a write. The engine itself is the
//! `fhir-validation` crate; this module only wires it to settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use fhir_validation::{Registry, Severity, ValidationReport, Validator, ValidatorOptions};
use serde_json::Value;

use crate::config::ValidationSettings;
use crate::model::ResourceType;

/// What validation does to a write of one resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No profile validation (structural checks still apply).
    Off,
    /// Validate; issues are reported but never block.
    Warn,
    /// Validate; any error blocks the write with 422.
    Enforce,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "off" => Some(Policy::Off),
            "warn" => Some(Policy::Warn),
            "enforce" => Some(Policy::Enforce),
            _ => None,
        }
    }
}

/// The UK Core profile every resource of a type is validated against.
pub fn uk_core_profile(ty: ResourceType) -> Option<&'static str> {
    match ty {
        ResourceType::Patient => Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"),
        ResourceType::Appointment => {
            Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-Appointment")
        }
        ResourceType::MedicationRequest => {
            Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationRequest")
        }
        ResourceType::Consent => Some("https://fhir.hl7.org.uk/StructureDefinition/UKCore-Consent"),
        _ => None,
    }
}

/// Validation as configured for this server instance.
pub struct ValidationService {
    validator: Option<Validator>,
    /// The UK Core profiles actually loaded (a type whose profile is missing is
    /// validated against the R4 base and its claimed profiles only).
    loaded_uk_core: Vec<&'static str>,
    policies: BTreeMap<ResourceType, Policy>,
    /// Why the engine is unavailable, when it is.
    pub unavailable_reason: Option<String>,
}

impl ValidationService {
    /// Builds the registry from the core package (installing it first when
    /// allowed and missing) and the profile directory.
    pub fn from_settings(settings: &ValidationSettings) -> anyhow::Result<ValidationService> {
        let mut policies = BTreeMap::new();
        for ty in ResourceType::ALL {
            let default = if uk_core_profile(ty).is_some() {
                Policy::Enforce
            } else {
                Policy::Warn
            };
            let policy = match settings.policy.get(ty.as_str()) {
                Some(p) => Policy::parse(p).with_context(|| {
                    format!("validation.policy.{ty}: '{p}' is not off, warn or enforce")
                })?,
                None => default,
            };
            policies.insert(ty, policy);
        }
        if !settings.enabled {
            return Ok(ValidationService {
                validator: None,
                loaded_uk_core: Vec::new(),
                policies,
                unavailable_reason: Some("validation is disabled in settings".into()),
            });
        }
        let core = match locate_core_package(settings) {
            Ok(dir) => dir,
            // An explicitly configured core package must be there: a server
            // that was asked to validate never silently stops validating.
            Err(reason) if settings.core_package_dir.is_some() => anyhow::bail!(reason),
            Err(reason) => {
                tracing::warn!(%reason, "profile validation unavailable; structural checks only");
                return Ok(ValidationService {
                    validator: None,
                    loaded_uk_core: Vec::new(),
                    policies,
                    unavailable_reason: Some(reason),
                });
            }
        };
        let started = std::time::Instant::now();
        let registry = build_registry(&core, settings.profiles_dir.as_deref().map(Path::new))?;
        tracing::info!(
            core = %core.display(),
            profiles = registry.profile_urls().len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "validation profiles loaded"
        );
        let mut loaded_uk_core: Vec<&'static str> = Vec::new();
        for url in ResourceType::ALL.iter().filter_map(|t| uk_core_profile(*t)) {
            if registry.profile(url).is_none() {
                anyhow::bail!("UK Core profile {url} could not be loaded");
            }
            loaded_uk_core.push(url);
        }
        let options = validator_options(settings);
        Ok(ValidationService {
            validator: Some(Validator::new(Arc::new(registry), options)),
            loaded_uk_core,
            policies,
            unavailable_reason: None,
        })
    }

    /// A service that validates nothing (for tests and tools).
    pub fn disabled() -> ValidationService {
        ValidationService {
            validator: None,
            loaded_uk_core: Vec::new(),
            policies: ResourceType::ALL
                .iter()
                .map(|t| (*t, Policy::Off))
                .collect(),
            unavailable_reason: Some("validation is disabled".into()),
        }
    }

    pub fn is_available(&self) -> bool {
        self.validator.is_some()
    }

    /// The UK Core profile enforced for `ty`, if it is loaded.
    pub fn profile_for(&self, ty: ResourceType) -> Option<&'static str> {
        uk_core_profile(ty).filter(|p| self.loaded_uk_core.contains(p))
    }

    pub fn policy(&self, ty: ResourceType) -> Policy {
        if self.validator.is_none() {
            return Policy::Off;
        }
        self.policies.get(&ty).copied().unwrap_or(Policy::Off)
    }

    /// Validates `resource` of type `ty` against its UK Core profile (if any),
    /// `extra` profiles and the profiles it claims. None when the engine is unavailable.
    pub fn validate(
        &self,
        ty: ResourceType,
        resource: &Value,
        extra: &[&str],
    ) -> Option<ValidationReport> {
        let validator = self.validator.as_ref()?;
        let mut profiles: Vec<&str> = uk_core_profile(ty)
            .filter(|p| self.loaded_uk_core.contains(p))
            .into_iter()
            .collect();
        profiles.extend_from_slice(extra);
        Some(validator.validate(resource, &profiles))
    }

    /// The write-time check: Some(report) when the policy asks for validation.
    pub fn check_write(
        &self,
        ty: ResourceType,
        resource: &Value,
    ) -> Option<(Policy, ValidationReport)> {
        match self.policy(ty) {
            Policy::Off => None,
            p => self.validate(ty, resource, &[]).map(|r| (p, r)),
        }
    }
}

/// Engine options from settings.
pub fn validator_options(settings: &ValidationSettings) -> ValidatorOptions {
    ValidatorOptions {
        nhs_number: if settings.nhs_number == "warning" {
            Severity::Warning
        } else {
            Severity::Error
        },
        unknown_extensions: if settings.unknown_extensions == "error" {
            Severity::Error
        } else {
            Severity::Warning
        },
        ..ValidatorOptions::default()
    }
}

/// The core package directory: explicit setting, else the package cache
/// (installing into it when `auto_install` is on).
pub fn locate_core_package(settings: &ValidationSettings) -> Result<PathBuf, String> {
    if let Some(dir) = &settings.core_package_dir {
        let dir = PathBuf::from(dir);
        return if dir.join("package.json").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "validation.core_package_dir {} has no package.json",
                dir.display()
            ))
        };
    }
    let cache = settings
        .package_cache
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(fhir_validation::package::default_cache_dir);
    if let Some(dir) = fhir_validation::package::locate_core(&cache) {
        return Ok(dir);
    }
    if settings.auto_install {
        tracing::info!(cache = %cache.display(), "installing the FHIR R4 core package (first start)");
        let installed = fhir_validation::package::install_core(&cache);
        if let Ok(dir) = &installed {
            tracing::info!("FHIR R4 core package installed in {}", dir.display());
        }
        return installed;
    }
    Err(format!(
        "the FHIR R4 core package is not installed in {}; run `fhirbridge packages install`",
        cache.display()
    ))
}

include!(concat!(env!("OUT_DIR"), "/ukcore_profiles.rs"));

/// Core definitions, the UK Core definitions built into the binary
/// ([`EMBEDDED_PROFILES`]), then every profile, extension, ValueSet and
/// CodeSystem in `profiles_dir` (which replace built-in ones with the same
/// canonical URL). A `profiles_dir` that cannot be read or holds no
/// definitions is an error.
pub fn build_registry(core: &Path, profiles_dir: Option<&Path>) -> anyhow::Result<Registry> {
    let mut builder = Registry::from_core_package(core)
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("Failed to index the core package at {}", core.display()))?;
    for (name, text) in EMBEDDED_PROFILES {
        let value: Value = serde_json::from_str(text)
            .with_context(|| format!("built-in profile {name} is not JSON"))?;
        builder
            .add_resource(value)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("built-in profile {name}"))?;
    }
    if let Some(dir) = profiles_dir {
        let n = builder
            .add_dir(dir)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| {
                format!(
                    "validation.profiles_dir: failed to load profiles from {}",
                    dir.display()
                )
            })?;
        if n == 0 {
            anyhow::bail!(
                "validation.profiles_dir: {} holds no StructureDefinition, ValueSet or CodeSystem",
                dir.display()
            );
        }
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!(e))
        .context("Failed to build profile snapshots")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_uk_core_definition_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/ukcore");
        let on_disk = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        assert_eq!(EMBEDDED_PROFILES.len(), on_disk);
        let urls: Vec<String> = EMBEDDED_PROFILES
            .iter()
            .map(|(name, text)| {
                let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
                v["url"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        for ty in ResourceType::ALL {
            if let Some(url) = uk_core_profile(ty) {
                assert!(urls.iter().any(|u| u == url), "{url} is not built in");
            }
        }
    }
}
