//! `fhirbridge validate`: validates files offline and prints a report in the
//! style of the HL7 validator (or JSON). Exit code 0 valid, 1 invalid, 2 usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use fhir_validation::{Issue, Registry, Severity, Validator};
use serde_json::{json, Value};

use crate::config::ValidationSettings;

pub struct ValidateCli {
    validator: Validator,
}

/// One file's result.
pub struct FileReport {
    pub file: String,
    pub issues: Vec<Issue>,
}

impl FileReport {
    pub fn count(&self, f: impl Fn(Severity) -> bool) -> usize {
        self.issues.iter().filter(|i| f(i.severity)).count()
    }

    pub fn is_valid(&self) -> bool {
        self.count(Severity::is_error) == 0
    }
}

fn issue(severity: Severity, code: &'static str, message: String) -> Issue {
    Issue {
        severity,
        code,
        expression: String::new(),
        message,
    }
}

/// Reads a JSON or XML resource (XML when the first non-blank byte is `<`).
pub fn read_resource(bytes: &[u8]) -> Result<Value, Issue> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'<') {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            issue(
                Severity::Fatal,
                "structure",
                "the XML file is not UTF-8".into(),
            )
        })?;
        fhirbolt_shim::xml_to_json(text)
            .map_err(|e| issue(Severity::Fatal, "structure", e.to_string()))
    } else {
        fhir_structure::check::parse_json(bytes)
    }
}

impl ValidateCli {
    pub fn new(registry: Registry, settings: &ValidationSettings) -> ValidateCli {
        ValidateCli {
            validator: Validator::new(
                Arc::new(registry),
                crate::validation::validator_options(settings),
            ),
        }
    }

    pub fn validate_file(&self, path: &Path, profiles: &[String]) -> FileReport {
        let file = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                return FileReport {
                    file,
                    issues: vec![issue(
                        Severity::Fatal,
                        "not-found",
                        format!("cannot read file: {e}"),
                    )],
                }
            }
        };
        let resource = match read_resource(&bytes) {
            Ok(v) => v,
            Err(i) => {
                return FileReport {
                    file,
                    issues: vec![i],
                }
            }
        };
        let ty = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut urls: Vec<&str> = ty
            .parse::<crate::model::ResourceType>()
            .ok()
            .and_then(crate::validation::uk_core_profile)
            .into_iter()
            .collect();
        urls.extend(profiles.iter().map(String::as_str));
        FileReport {
            file,
            issues: self.validator.validate(&resource, &urls).issues,
        }
    }

    /// Validates every file, prints the report, returns the exit code.
    pub fn run(&self, files: &[PathBuf], profiles: &[String], json_format: bool) -> ExitCode {
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            eprintln!("fhirbridge validate: no such file: {}", missing.display());
            return ExitCode::from(2);
        }
        let reports: Vec<FileReport> = files
            .iter()
            .map(|f| self.validate_file(f, profiles))
            .collect();
        if json_format {
            println!("{}", render_json(&reports));
        } else {
            print!("{}", render_text(&reports));
        }
        if reports.iter().all(FileReport::is_valid) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

pub fn render_text(reports: &[FileReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let errors = r.count(Severity::is_error);
        let warnings = r.count(|s| s == Severity::Warning);
        let notes = r.count(|s| s == Severity::Information);
        out.push_str(&format!(
            "-- {} {}\n",
            r.file,
            "-".repeat(60usize.saturating_sub(r.file.len()))
        ));
        out.push_str(&format!(
            "{}: {errors} errors, {warnings} warnings, {notes} notes\n",
            if errors == 0 { "Success" } else { "*FAILURE*" }
        ));
        for i in &r.issues {
            let sev = match i.severity {
                Severity::Fatal => "Fatal",
                Severity::Error => "Error",
                Severity::Warning => "Warning",
                Severity::Information => "Information",
            };
            let at = if i.expression.is_empty() {
                ""
            } else {
                i.expression.as_str()
            };
            out.push_str(&format!("  {sev} @ {at} ({}): {}\n", i.code, i.message));
        }
    }
    let valid = reports.iter().filter(|r| r.is_valid()).count();
    out.push_str(&format!(
        "{} file(s): {valid} valid, {} invalid\n",
        reports.len(),
        reports.len() - valid
    ));
    out
}

pub fn render_json(reports: &[FileReport]) -> String {
    let files: Vec<Value> = reports
        .iter()
        .map(|r| {
            let mut issues: Vec<Value> = r
                .issues
                .iter()
                .map(|i| {
                    let mut v = json!({"severity": i.severity.as_str(), "code": i.code, "diagnostics": i.message});
                    if !i.expression.is_empty() {
                        v["expression"] = json!([i.expression]);
                    }
                    v
                })
                .collect();
            if issues.is_empty() {
                issues.push(json!({"severity": "information", "code": "informational", "diagnostics": "No issues detected"}));
            }
            json!({
                "file": r.file,
                "valid": r.is_valid(),
                "outcome": {
                    "resourceType": "OperationOutcome",
                    "issue": issues,
                },
            })
        })
        .collect();
    serde_json::to_string_pretty(&files).unwrap_or_default()
}
