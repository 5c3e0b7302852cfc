//! Interaction orchestration without HTTP: checks a resource body for a write,
//! normalises it and extracts its index rows. The REST layer decides what the
//! issues mean for the response.

use fhir_structure::check::{Issue, Severity};
use serde_json::Value;

use crate::model::{LogicalId, ResourceType};
use crate::search::index;
use crate::storage::{strip_server_meta, NewContent};

/// What kind of write the body is for, which decides the `id` rules.
#[derive(Debug, Clone, Copy)]
pub enum WriteTarget<'a> {
    /// `POST`: any `id` in the body is ignored (the server assigns one).
    Create,
    /// `PUT`: the body must carry an `id` equal to the URL's.
    Update(&'a LogicalId),
}

fn issue(code: &'static str, expression: &str, message: String) -> Issue {
    Issue {
        severity: Severity::Error,
        code,
        expression: expression.to_owned(),
        message,
    }
}

/// Checks `value` as a body for a write of `ty` and prepares it for storage.
/// Returns every error found (warnings do not block and are dropped here).
pub fn prepare_write(
    ty: ResourceType,
    value: Value,
    target: WriteTarget<'_>,
    base_url: &str,
) -> Result<NewContent, Vec<Issue>> {
    let value = check_body(ty, value, target)?;
    let indexes = index::extract(ty, &value, base_url);
    Ok(NewContent {
        resource: value,
        indexes,
    })
}

/// The checks of [`prepare_write`] without index extraction (bundles extract
/// after rewriting references).
pub fn check_body(
    ty: ResourceType,
    mut value: Value,
    target: WriteTarget<'_>,
) -> Result<Value, Vec<Issue>> {
    let declared = value.get("resourceType").and_then(Value::as_str);
    match declared {
        None => {
            return Err(vec![issue(
                "required",
                "resourceType",
                "The body has no resourceType; it must be a FHIR resource".into(),
            )])
        }
        Some(t) if t != ty.as_str() => {
            return Err(vec![issue(
                "invalid",
                "resourceType",
                format!("resourceType '{t}' does not match the URL's resource type '{ty}'"),
            )])
        }
        Some(_) => {}
    }
    let mut issues: Vec<Issue> = fhir_structure::check::check_resource(&value)
        .into_iter()
        .filter(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
        .collect();
    match target {
        WriteTarget::Create => {
            if let Some(obj) = value.as_object_mut() {
                obj.shift_remove("id");
            }
        }
        WriteTarget::Update(url_id) => match value.get("id").and_then(Value::as_str) {
            None => issues.push(issue(
                "required",
                &format!("{ty}.id"),
                "An update must carry the resource id in the body".into(),
            )),
            Some(body_id) if body_id != url_id.as_str() => issues.push(issue(
                "invalid",
                &format!("{ty}.id"),
                format!("The body id '{body_id}' does not match the URL id '{url_id}'"),
            )),
            Some(_) => {}
        },
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    strip_server_meta(&mut value);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mismatched_resource_type_is_rejected_first() {
        let e = prepare_write(
            ResourceType::Patient,
            json!({"resourceType": "Slot"}),
            WriteTarget::Create,
            "http://localhost/fhir",
        )
        .unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].expression, "resourceType");
    }

    #[test]
    fn update_requires_matching_id() {
        let id = LogicalId::parse("a").unwrap();
        let e = prepare_write(
            ResourceType::Patient,
            json!({"resourceType": "Patient"}),
            WriteTarget::Update(&id),
            "http://localhost/fhir",
        )
        .unwrap_err();
        assert_eq!(e[0].code, "required");
        let e = prepare_write(
            ResourceType::Patient,
            json!({"resourceType": "Patient", "id": "b"}),
            WriteTarget::Update(&id),
            "http://localhost/fhir",
        )
        .unwrap_err();
        assert_eq!(e[0].expression, "Patient.id");
        assert!(prepare_write(
            ResourceType::Patient,
            json!({"resourceType": "Patient", "id": "a"}),
            WriteTarget::Update(&id),
            "http://localhost/fhir"
        )
        .is_ok());
    }

    #[test]
    fn create_drops_client_id_and_server_meta() {
        let c = prepare_write(
            ResourceType::Patient,
            json!({"resourceType": "Patient", "id": "x", "meta": {"versionId": "9", "lastUpdated": "2020-01-01T00:00:00Z"}}),
            WriteTarget::Create, "http://localhost/fhir"
        )
        .unwrap();
        assert_eq!(c.resource, json!({"resourceType": "Patient"}));
    }

    #[test]
    fn structural_errors_are_all_reported() {
        let e = prepare_write(
            ResourceType::Patient,
            json!({"resourceType": "Patient", "birthDate": "2020-13-45", "foo": 1}),
            WriteTarget::Create,
            "http://localhost/fhir",
        )
        .unwrap_err();
        assert!(e.len() >= 2, "{e:?}");
    }
}
