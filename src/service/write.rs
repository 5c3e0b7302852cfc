//! Create, update and delete, and the one write pipeline every write goes
//! through, whatever its origin (a single POST/PUT, a bundle entry, a bulk
//! create, a PATCH result): structure check ([`check_body`]) → profile gate
//! ([`Service::gate`]) → index extraction ([`extract`]) → store.

use fhir_structure::check::{Issue, Severity};
use serde_json::Value;

use super::{Service, ServiceError, ServiceResult};
use crate::context::RequestContext;
use crate::model::{LogicalId, ResourceType, VersionId};
use crate::policy::Action;
use crate::search::index;
use crate::search::types::SearchQuery;
use crate::storage::StorageError;
use crate::storage::{
    strip_server_meta, CreateRequest, DeleteRequest, NewContent, Precondition, StoredResource,
    UpdateRequest, WriteKind,
};

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
    let indexes = extract(ty, &value, base_url);
    Ok(NewContent {
        resource: value,
        indexes,
    })
}

/// The pipeline's extraction step: the resource's search index rows.
pub fn extract(
    ty: ResourceType,
    value: &Value,
    base_url: &str,
) -> Vec<crate::search::rows::IndexRow> {
    index::extract(ty, value, base_url)
}

/// Structure-check issues as a 400.
pub(crate) fn structure_error(issues: Vec<Issue>) -> ServiceError {
    ServiceError::BadRequest(issues.iter().map(super::OoIssue::from_issue).collect())
}

/// Profile validation as configured for `ty`: 422 with every issue under
/// `enforce`, nothing otherwise.
pub(crate) fn gate(
    validation: &crate::validation::ValidationService,
    ty: ResourceType,
    resource: &Value,
) -> ServiceResult<()> {
    use crate::validation::Policy;
    if let Some((Policy::Enforce, report)) = validation.check_write(ty, resource) {
        if !report.is_valid() {
            return Err(ServiceError::Unprocessable(
                report
                    .issues
                    .iter()
                    .map(super::OoIssue::from_issue)
                    .collect(),
            ));
        }
    }
    Ok(())
}

/// A stored write's result.
#[derive(Debug, Clone)]
pub struct Written {
    pub kind: WriteKind,
    /// The version now current; for a delete, the deletion marker if one was written.
    pub stored: Option<StoredResource>,
}

impl Service {
    /// The pipeline's profile gate: under `enforce`, 422 with every issue.
    pub fn gate(&self, ty: ResourceType, resource: &Value) -> ServiceResult<()> {
        gate(&self.validation, ty, resource)
    }

    /// Structure check and profile gate (extraction follows once references
    /// are final: at once for a single write, after rewriting in a bundle).
    pub fn checked(
        &self,
        ty: ResourceType,
        value: Value,
        target: WriteTarget<'_>,
    ) -> ServiceResult<Value> {
        let value = check_body(ty, value, target).map_err(structure_error)?;
        self.gate(ty, &value)?;
        super::consent::check(ty, &value)?;
        super::workflows::check_content(ty, &value)?;
        Ok(value)
    }

    /// The whole pipeline up to the store.
    pub fn prepare(
        &self,
        ty: ResourceType,
        value: Value,
        target: WriteTarget<'_>,
        base_url: &str,
    ) -> ServiceResult<NewContent> {
        let value = self.checked(ty, value, target)?;
        let indexes = extract(ty, &value, base_url);
        Ok(NewContent {
            resource: value,
            indexes,
        })
    }

    /// `POST [type]` (with `If-None-Exist` criteria when given).
    pub async fn create(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        body: Value,
        if_none_exist: Option<SearchQuery>,
        base_url: &str,
    ) -> ServiceResult<Written> {
        self.require(ty, crate::storage::Interaction::Create)?;
        if let Some(w) = self.bridged_create(ctx, ty, &body, base_url).await? {
            return Ok(w);
        }
        if super::workflows::in_tx(ty) {
            let single = super::transaction::SingleWrite::Create {
                ty,
                body,
                if_none_exist,
            };
            return self.write_in_tx(ctx, base_url, single).await;
        }
        ctx.authorize(ty, Action::Create)?;
        if if_none_exist.is_some() {
            ctx.authorize(ty, Action::Search)?;
        }
        let content = self.prepare(ty, body, WriteTarget::Create, base_url)?;
        if !ctx.permits(ty, Action::Create, "", &content.resource) {
            return Err(outside(ty, "create"));
        }
        // The caller's If-None-Exist sees only what the caller may see.
        let if_none_exist = if_none_exist.map(|mut q| {
            super::restrict(ctx, &mut q);
            q
        });
        let writer = self
            .backend
            .writer()
            .ok_or_else(|| ServiceError::MethodNotAllowed("create is not supported".into()))?;
        let out = writer
            .create(
                ctx,
                CreateRequest {
                    resource_type: ty,
                    content,
                    if_none_exist,
                },
            )
            .await?;
        Ok(Written {
            kind: out.kind,
            stored: out.stored,
        })
    }

    /// `PUT [type]/[id]`.
    pub async fn update(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: LogicalId,
        body: Value,
        precondition: Precondition,
        base_url: &str,
    ) -> ServiceResult<Written> {
        self.require(ty, crate::storage::Interaction::Update)?;
        if let Some((s, rid)) = self.bridge.remote_id(id.as_str()) {
            let s = s.clone();
            let if_match = match precondition {
                Precondition::None => None,
                Precondition::VersionIs(v) => Some(v),
                _ => {
                    return Err(ServiceError::PreconditionFailed(
                        "A resource held by a GP system is updated with If-Match or none".into(),
                    ))
                }
            };
            return self.bridged_update(ctx, ty, &s, rid, body, if_match).await;
        }
        if super::workflows::in_tx(ty) {
            let single = super::transaction::SingleWrite::Update {
                ty,
                id,
                body,
                precondition,
            };
            return self.write_in_tx(ctx, base_url, single).await;
        }
        ctx.authorize(ty, Action::Update)?;
        let content = self.prepare(ty, body, WriteTarget::Update(&id), base_url)?;
        if !ctx.permits(ty, Action::Update, id.as_str(), &content.resource) {
            return Err(outside(ty, "update"));
        }
        let writer = self
            .backend
            .writer()
            .ok_or_else(|| ServiceError::MethodNotAllowed("update is not supported".into()))?;
        let confined = ctx.confined(ty, Action::Update);
        // A confined caller updates only what it may update now: the check
        // and the write are tied by the version checked (retried when
        // someone else wrote in between).
        for _ in 0..3 {
            let precondition = if confined {
                match self.current_within(ctx, ty, &id, Action::Update).await? {
                    Within::Inside(current) => match precondition {
                        Precondition::None => (Precondition::VersionIs(current.version), true),
                        p => (p, false),
                    },
                    // Created only if it still does not exist when written.
                    Within::Absent
                        if ctx.may_create_by_id(ty)
                            && matches!(precondition, Precondition::None) =>
                    {
                        (Precondition::MustNotExist, true)
                    }
                    _ => return Err(forbidden_update(ty, &id)),
                }
            } else {
                (precondition, false)
            };
            let out = writer
                .update(
                    ctx,
                    UpdateRequest {
                        resource_type: ty,
                        id: id.clone(),
                        content: content.clone(),
                        precondition: precondition.0,
                    },
                )
                .await;
            match out {
                Err(StorageError::VersionConflict { .. }) if precondition.1 => continue,
                // Created by someone else since the check: decide again.
                Err(StorageError::PreconditionFailed(_))
                    if precondition.1 && matches!(precondition.0, Precondition::MustNotExist) =>
                {
                    continue
                }
                out => {
                    let out = out?;
                    return Ok(Written {
                        kind: out.kind,
                        stored: out.stored,
                    });
                }
            }
        }
        Err(ServiceError::Conflict(format!(
            "{ty}/{id} is being changed concurrently; retry"
        )))
    }

    /// `DELETE [type]/[id]`.
    pub async fn delete(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: LogicalId,
        if_match: Option<VersionId>,
    ) -> ServiceResult<Written> {
        self.require(ty, crate::storage::Interaction::Delete)?;
        if let Some((s, _)) = self.bridge.remote_id(id.as_str()) {
            ctx.authorize(ty, Action::Delete)?;
            return Err(ServiceError::MethodNotAllowed(format!(
                "{ty} resources held by a GP system ({}) are not deleted; an Appointment is cancelled (status cancelled)",
                s.name()
            )));
        }
        if super::workflows::in_tx(ty) {
            let single = super::transaction::SingleWrite::Delete { ty, id, if_match };
            return self.write_in_tx(ctx, "", single).await;
        }
        ctx.authorize(ty, Action::Delete)?;
        let writer = self
            .backend
            .writer()
            .ok_or_else(|| ServiceError::MethodNotAllowed("delete is not supported".into()))?;
        let confined = ctx.confined(ty, Action::Delete);
        for _ in 0..3 {
            let requested = match if_match {
                Some(v) => Precondition::VersionIs(v),
                None => Precondition::None,
            };
            let (precondition, pinned) = if confined {
                match self.current_within(ctx, ty, &id, Action::Delete).await? {
                    Within::Inside(current) if if_match.is_none() => {
                        (Precondition::VersionIs(current.version), true)
                    }
                    Within::Inside(_) | Within::Absent => (requested, false),
                    Within::Hidden => {
                        // Answered exactly as a resource that never existed.
                        if if_match.is_some() {
                            return Err(StorageError::VersionConflict { current: None }.into());
                        }
                        return Ok(Written {
                            kind: WriteKind::NothingToDelete,
                            stored: None,
                        });
                    }
                }
            } else {
                (requested, false)
            };
            let out = writer
                .delete(
                    ctx,
                    DeleteRequest {
                        resource_type: ty,
                        id: id.clone(),
                        precondition,
                    },
                )
                .await;
            match out {
                Err(StorageError::VersionConflict { .. }) if pinned => continue,
                out => {
                    let out = out?;
                    return Ok(Written {
                        kind: out.kind,
                        stored: out.stored,
                    });
                }
            }
        }
        Err(ServiceError::Conflict(format!(
            "{ty}/{id} is being changed concurrently; retry"
        )))
    }

    /// Where the current version of `ty/id` stands for a caller about to
    /// `action` it (one read).
    async fn current_within(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
        action: Action,
    ) -> ServiceResult<Within> {
        let reader = self
            .backend
            .reader()
            .ok_or_else(|| ServiceError::MethodNotAllowed("read is not supported".into()))?;
        match reader.read(ctx, ty, id).await {
            Ok(current) => {
                let inside = current
                    .content
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .is_some_and(|v| ctx.permits(ty, action, id.as_str(), &v));
                Ok(if inside {
                    Within::Inside(current)
                } else {
                    Within::Hidden
                })
            }
            Err(StorageError::NotFound | StorageError::Gone { .. }) => Ok(Within::Absent),
            Err(e) => Err(e.into()),
        }
    }
}

/// A resource's current version as a confined writer stands to it.
enum Within {
    /// None, or deleted.
    Absent,
    /// It exists, outside what the caller may write (the caller must not
    /// learn that).
    Hidden,
    Inside(StoredResource),
}

/// 403 for a confined caller's write by id to a resource it may not write,
/// whether or not it exists (absent and hidden answer alike).
pub(crate) fn forbidden_update(ty: ResourceType, id: &LogicalId) -> ServiceError {
    ServiceError::Forbidden(format!("The token does not allow updating {ty}/{id}"))
}

/// 403: the new content lies outside what the caller may write.
pub(crate) fn outside(ty: ResourceType, what: &str) -> ServiceError {
    ServiceError::Forbidden(format!(
        "The token does not allow this {what}: the {ty} would lie outside what it may write \
         (another patient's compartment, or outside its scopes)"
    ))
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
