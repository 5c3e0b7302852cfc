//! Inputs an interaction does not understand are errors, never silently ignored:
//! query parameters outside the interaction's own (`_format` and `_pretty` are
//! everyone's), and precondition headers it does not evaluate. Each handler names
//! what it takes; anything else is a 400 saying what to use instead.

use actix_web::HttpRequest;

use super::error::{ApiError, OoIssue};
use crate::service::search::query_pairs;

/// Headers that make a request conditional; an interaction lists the ones it honours.
const PRECONDITIONS: [&str; 6] = [
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-none-exist",
    "if-range",
];

/// Checks the query parameters and precondition headers of `req` against what
/// `interaction` takes. Returns the decoded query pairs.
pub(crate) fn only(
    req: &HttpRequest,
    interaction: &str,
    params: &[&str],
    preconditions: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let pairs = query_pairs(req.query_string())?;
    let mut issues = param_issues(&pairs, interaction, params);
    issues.extend(precondition_issues(req, interaction, preconditions));
    if issues.is_empty() {
        Ok(pairs)
    } else {
        Err(ApiError::BadRequest(issues))
    }
}

/// Only the precondition-header half of [`only`] (for interactions that check
/// their own parameters).
pub(crate) fn preconditions(
    req: &HttpRequest,
    interaction: &str,
    allowed: &[&str],
) -> Result<(), ApiError> {
    let issues = precondition_issues(req, interaction, allowed);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(issues))
    }
}

fn param_issues(pairs: &[(String, String)], interaction: &str, params: &[&str]) -> Vec<OoIssue> {
    let mut issues = Vec::new();
    for (name, _) in pairs {
        if matches!(name.as_str(), "_format" | "_pretty") || params.contains(&name.as_str()) {
            continue;
        }
        let msg = if interaction == "create" {
            format!(
                "Query parameter '{name}' is not supported on create: a conditional create \
                 sends its criteria in the If-None-Exist header (If-None-Exist: {name}=...)"
            )
        } else if params.is_empty() {
            format!("The {interaction} interaction takes no query parameters ('{name}' given)")
        } else {
            format!(
                "Query parameter '{name}' is not supported on {interaction} (supported: {})",
                params.join(", ")
            )
        };
        issues.push(OoIssue::error("not-supported", msg).at(name.clone()));
    }
    issues
}

fn precondition_issues(
    req: &HttpRequest,
    interaction: &str,
    preconditions: &[&str],
) -> Vec<OoIssue> {
    let mut issues = Vec::new();
    for h in PRECONDITIONS {
        if req.headers().contains_key(h) && !preconditions.contains(&h) {
            let hint = match (interaction, h) {
                ("update", "if-none-exist") => {
                    " (a conditional create is POST with If-None-Exist; a conditional update is PUT [type]?criteria)"
                }
                (_, "if-none-exist") => " (it applies to create only)",
                _ => "",
            };
            let msg = if preconditions.is_empty() {
                format!("The {interaction} interaction is not conditional: header {h} is not supported{hint}")
            } else {
                format!(
                    "Header {h} is not supported on {interaction} (supported: {}){hint}",
                    preconditions.join(", ")
                )
            };
            issues.push(OoIssue::error("not-supported", msg));
        }
    }
    issues
}
