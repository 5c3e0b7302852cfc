//! Read and vread, through the policy: a resource the policy denies is
//! answered exactly as an absent one (404, same message).

use super::{admitted, Service, ServiceError, ServiceResult};
use crate::context::RequestContext;
use crate::model::{Instant, LogicalId, ResourceType, StoredResource, VersionId};
use crate::storage::{Interaction, StorageError};

/// What a read found.
#[derive(Debug, Clone)]
pub enum Found {
    Current(StoredResource),
    /// The current version is a deletion (410, with its version and time).
    Deleted {
        version: VersionId,
        last_updated: Instant,
    },
}

/// Whether the caller may learn that `ty/id` has a deletion at `version` (a
/// deletion of a resource the caller may not see answers as absent).
fn deletion_admitted(
    ctx: &RequestContext,
    ty: ResourceType,
    id: &LogicalId,
    version: VersionId,
    last_updated: Instant,
) -> bool {
    let marker = StoredResource {
        resource_type: ty,
        id: id.clone(),
        version,
        last_updated,
        content: None,
    };
    admitted(ctx, marker).is_some()
}

impl Service {
    /// `GET [type]/[id]`.
    pub async fn read(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
    ) -> ServiceResult<Found> {
        self.require(ty, Interaction::Read)?;
        ctx.authorize(ty, crate::policy::Action::Read)?;
        if let Some((s, rid)) = self.bridge.remote_id(id.as_str()) {
            let s = s.clone();
            return self.bridged_read(ctx, ty, &s, rid).await;
        }
        let reader = self
            .backend
            .reader()
            .ok_or_else(|| ServiceError::MethodNotAllowed("read is not supported".into()))?;
        match reader.read(ctx, ty, id).await {
            Ok(s) => admitted(ctx, s)
                .map(Found::Current)
                .ok_or_else(|| ServiceError::NotFound("Resource not found".into())),
            Err(StorageError::Gone {
                version,
                last_updated,
            }) if deletion_admitted(ctx, ty, id, version, last_updated) => Ok(Found::Deleted {
                version,
                last_updated,
            }),
            Err(StorageError::Gone { .. }) => {
                Err(ServiceError::NotFound("Resource not found".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The current version, or the error a read gives (deleted → 410).
    pub async fn read_current(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
    ) -> ServiceResult<StoredResource> {
        match self.read(ctx, ty, id).await? {
            Found::Current(s) => Ok(s),
            Found::Deleted { .. } => Err(ServiceError::Gone(format!("{ty}/{id} was deleted"))),
        }
    }

    /// `GET [type]/[id]/_history/[vid]`.
    pub async fn vread(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
        version: VersionId,
    ) -> ServiceResult<StoredResource> {
        self.require(ty, Interaction::Vread)?;
        ctx.authorize(ty, crate::policy::Action::Read)?;
        let reader = self
            .backend
            .reader()
            .ok_or_else(|| ServiceError::MethodNotAllowed("vread is not supported".into()))?;
        let absent = || ServiceError::NotFound(format!("{ty}/{id} has no version {version}"));
        let stored = reader
            .vread(ctx, ty, id, version)
            .await
            .map_err(|e| match e {
                StorageError::NotFound => absent(),
                StorageError::Gone { last_updated, .. }
                    if deletion_admitted(ctx, ty, id, version, last_updated) =>
                {
                    ServiceError::Gone(format!("Version {version} of {ty}/{id} is a deletion"))
                }
                StorageError::Gone { .. } => absent(),
                other => other.into(),
            })?;
        admitted(ctx, stored).ok_or_else(absent)
    }
}
