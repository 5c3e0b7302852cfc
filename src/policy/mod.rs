//! The access policy: the one place an access rule goes. Every resource that
//! leaves the service for a caller passes [`Policy::admit`]; every set a
//! caller reads (search matches and totals, `_include`/`_revinclude`, history
//! at all three levels and its totals, conditional-write matches) is computed
//! under [`Policy::restrict`], which storage ANDs into the query in its one
//! scope chokepoint. Fail closed: a policy that cannot decide denies.
//!
//! Before any of that, [`Policy::authorize`] decides whether the caller may
//! perform an action on a type at all (403 otherwise), and
//! [`Policy::permits`] whether a write's old and new content lie inside
//! what the caller may write.
//!
//! Shipped: [`smart::SmartPolicy`] (SMART scopes and patient compartments,
//! the server's policy whenever `auth.mode = "required"`), [`AllowAll`]
//! (`auth.mode = "off"`), [`DenyAll`] and [`DenyResources`] (tests).

pub mod smart;

use std::collections::HashSet;

pub use crate::auth::scope::Action;
use crate::context::RequestContext;
use crate::model::StoredResource;
use crate::model::{LogicalId, ResourceType};
use crate::search::types::Predicate;

/// Whether one resource may reach the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit,
    /// The resource is treated as absent: the caller sees exactly what it
    /// would see if the resource did not exist (404, not 403; not counted).
    Deny,
}

/// What part of one resource type a caller may see.
#[derive(Debug, Clone)]
pub enum Restriction {
    /// Everything.
    None,
    /// Nothing of this type.
    Everything,
    /// Only resources matching the predicate (a search predicate on the
    /// type, e.g. patient-compartment membership or `_id:not`).
    Where(Predicate),
}

impl Restriction {
    pub fn is_none(&self) -> bool {
        matches!(self, Restriction::None)
    }
}

/// Whose AuditEvents a caller may search and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditReach {
    /// Every event (the server itself, access control off, or an explicit
    /// `system/AuditEvent.rs` / `user/AuditEvent.rs` grant).
    All,
    /// Only events about these patients (a `patient/AuditEvent.rs` grant:
    /// the caller's own record and those it is a proxy for).
    Patients(Vec<String>),
    /// None.
    Nothing,
}

/// Why an action was refused (403): a message safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    pub fn new(msg: impl Into<String>) -> Refusal {
        Refusal(msg.into())
    }
}

/// An access policy. Implementations must be consistent: a resource that
/// [`Policy::restrict`] excludes must also be denied by [`Policy::admit`].
pub trait Policy: Send + Sync {
    /// Whether the caller may perform `action` on `ty` at all (scopes).
    fn authorize(
        &self,
        _ctx: &RequestContext,
        _ty: ResourceType,
        _a: Action,
    ) -> Result<(), Refusal> {
        Ok(())
    }
    fn restrict(&self, ctx: &RequestContext, ty: ResourceType) -> Restriction;
    fn admit(&self, ctx: &RequestContext, resource: &StoredResource) -> Decision;
    /// The decision on a resource of a set computed under
    /// [`Policy::restrict`] (search matches and includes, history entries):
    /// a policy whose restriction already decides membership may check less.
    fn admit_listed(&self, ctx: &RequestContext, resource: &StoredResource) -> Decision {
        self.admit(ctx, resource)
    }
    /// Whether `content` (resource `id` of `ty`) lies inside what the caller
    /// may `action`: a write's new content, and an update's or delete's old.
    fn permits(
        &self,
        _ctx: &RequestContext,
        _ty: ResourceType,
        _action: Action,
        _id: &str,
        _content: &serde_json::Value,
    ) -> bool {
        true
    }
    /// True when the caller may `action` only part of `ty` (then a write by
    /// id to a resource it cannot see is refused, whether or not one exists).
    fn confined(&self, _ctx: &RequestContext, _ty: ResourceType, _action: Action) -> bool {
        false
    }
    /// Whether a confined caller's PUT to an id that does not exist may
    /// create it: true when its confinement comes only from patients'
    /// Consents (its scopes reach every `ty`), so a GP system one patient
    /// has opted out of still pushes new records by id.
    fn may_create_by_id(&self, _ctx: &RequestContext, _ty: ResourceType) -> bool {
        false
    }
    /// True when this policy restricts nothing for `ctx` (lets callers skip work).
    fn unrestricted(&self, _ctx: &RequestContext) -> bool {
        false
    }
    /// Whose AuditEvents the caller may search and read.
    fn audit_reach(&self, _ctx: &RequestContext) -> AuditReach {
        AuditReach::Nothing
    }
    /// Whether the caller may act for Patient `id`, which its request names
    /// (a `patient` search parameter, a compartment search): a patient-facing
    /// caller only for itself and those it is a proxy for. Decided without
    /// looking at whether that patient exists.
    fn may_act_for(&self, _ctx: &RequestContext, _id: &str) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Every caller sees everything: the server's policy until the access-control
/// issue replaces it.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn restrict(&self, _: &RequestContext, _: ResourceType) -> Restriction {
        Restriction::None
    }
    fn admit(&self, _: &RequestContext, _: &StoredResource) -> Decision {
        Decision::Permit
    }
    fn unrestricted(&self, _: &RequestContext) -> bool {
        true
    }
    fn audit_reach(&self, _: &RequestContext) -> AuditReach {
        AuditReach::All
    }
}

/// A test policy: the listed resources do not exist for any caller (they are
/// still stored, and the server's own System jobs still see them).
#[derive(Debug, Default, Clone)]
pub struct DenyResources {
    denied: HashSet<(ResourceType, String)>,
}

impl DenyResources {
    pub fn new(denied: impl IntoIterator<Item = (ResourceType, LogicalId)>) -> Self {
        DenyResources {
            denied: denied
                .into_iter()
                .map(|(t, id)| (t, id.as_str().to_owned()))
                .collect(),
        }
    }

    fn applies(ctx: &RequestContext) -> bool {
        !matches!(ctx.principal, crate::context::Principal::System { .. })
    }
}

impl Policy for DenyResources {
    fn audit_reach(&self, _: &RequestContext) -> AuditReach {
        AuditReach::All
    }
    fn restrict(&self, ctx: &RequestContext, ty: ResourceType) -> Restriction {
        if !Self::applies(ctx) {
            return Restriction::None;
        }
        let ids: Vec<String> = self
            .denied
            .iter()
            .filter(|(t, _)| *t == ty)
            .map(|(_, id)| id.clone())
            .collect();
        if ids.is_empty() {
            Restriction::None
        } else {
            Restriction::Where(Predicate::Id { ids, not: true })
        }
    }

    fn admit(&self, ctx: &RequestContext, r: &StoredResource) -> Decision {
        if Self::applies(ctx)
            && self
                .denied
                .contains(&(r.resource_type, r.id.as_str().to_owned()))
        {
            Decision::Deny
        } else {
            Decision::Permit
        }
    }
}

/// Nobody sees anything (what a request gets when no policy is installed:
/// failing closed).
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyAll;

impl Policy for DenyAll {
    fn authorize(&self, _: &RequestContext, _: ResourceType, _: Action) -> Result<(), Refusal> {
        Err(Refusal::new("Access denied"))
    }
    fn permits(
        &self,
        _: &RequestContext,
        _: ResourceType,
        _: Action,
        _: &str,
        _: &serde_json::Value,
    ) -> bool {
        false
    }
    fn confined(&self, _: &RequestContext, _: ResourceType, _: Action) -> bool {
        true
    }
    fn restrict(&self, _: &RequestContext, _: ResourceType) -> Restriction {
        Restriction::Everything
    }
    fn admit(&self, _: &RequestContext, _: &StoredResource) -> Decision {
        Decision::Deny
    }
}
