//! Who is asking, about what, and under which access decision: the
//! [`RequestContext`] every service and storage call takes as its first
//! argument. It is built once per request (by `rest::extract` for HTTP, by
//! [`RequestContext::system`] for the CLI and background jobs) and never
//! defaulted: a call without a caller cannot be written.

use std::sync::Arc;

use crate::model::ResourceType;
use crate::model::StoredResource;
use crate::policy::{Action, Decision, Policy, Restriction};
use std::sync::atomic::{AtomicBool, Ordering};

/// Who is asking: nobody in particular (access control off), the server
/// itself (CLI commands, background jobs), or a verified token's caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A request that presented no credentials.
    Anonymous,
    /// The server acting for itself (`import`, `reindex`, jobs); `name` says
    /// which part (for logs), `scopes` what it may do.
    System { name: String, scopes: Vec<String> },
    /// A caller with a verified bearer token (patient, user or backend
    /// service: [`crate::auth::Caller::kind`]).
    Caller(Arc<crate::auth::Caller>),
}

impl Principal {
    /// A bounded label for logs and metrics (never an identity).
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::System { .. } => "server",
            Principal::Caller(c) => c.kind().as_str(),
        }
    }
}

/// Everything a service or storage call needs to know about its caller.
#[derive(Clone)]
pub struct RequestContext {
    /// Opaque request id, for log correlation only.
    pub request_id: String,
    pub principal: Principal,
    /// The practice (ODS code) the request is routed to, when it is about one
    /// (the GP-supplier bridge routes by it). `None`: the local store.
    pub practice: Option<String>,
    policy: Arc<dyn Policy>,
    /// Set once any authorisation decision was taken for this request (the
    /// HTTP edge refuses a response from a guarded route that has none).
    decided: Arc<AtomicBool>,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.request_id)
            .field("principal", &self.principal.kind())
            .field("practice", &self.practice)
            .finish_non_exhaustive()
    }
}

impl RequestContext {
    pub fn new(request_id: String, principal: Principal, policy: Arc<dyn Policy>) -> Self {
        RequestContext {
            request_id,
            principal,
            practice: None,
            policy,
            decided: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Shares `flag` as this request's decision marker.
    pub fn with_decision_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.decided = flag;
        self
    }

    /// Whether any authorisation decision was taken.
    pub fn decided(&self) -> bool {
        self.decided.load(Ordering::Relaxed)
    }

    /// Records that access was decided by something other than
    /// [`RequestContext::authorize`] (a bundle, whose entries are each
    /// authorised; an endpoint that reveals nothing).
    pub fn mark_decided(&self) {
        self.decided.store(true, Ordering::Relaxed);
    }

    /// 403 unless the caller may perform `action` on `ty` (its scopes).
    pub fn authorize(
        &self,
        ty: ResourceType,
        action: Action,
    ) -> Result<(), crate::service::ServiceError> {
        self.mark_decided();
        self.policy
            .authorize(self, ty, action)
            .map_err(|r| crate::service::ServiceError::Forbidden(r.0))
    }

    /// Whether `content` lies inside what the caller may `action`.
    pub fn permits(
        &self,
        ty: ResourceType,
        action: Action,
        id: &str,
        content: &serde_json::Value,
    ) -> bool {
        self.policy.permits(self, ty, action, id, content)
    }

    /// Whether a confined caller's PUT to an absent id may create it.
    pub fn may_create_by_id(&self, ty: ResourceType) -> bool {
        self.policy.may_create_by_id(self, ty)
    }

    /// Whether the caller may `action` only part of `ty`.
    pub fn confined(&self, ty: ResourceType, action: Action) -> bool {
        self.policy.confined(self, ty, action)
    }

    /// The server acting for itself (`name`: which command or job kind).
    pub fn system(name: &str, policy: Arc<dyn Policy>) -> Self {
        RequestContext::new(
            format!("{name}-{}", crate::model::LogicalId::generate()),
            Principal::System {
                name: name.to_owned(),
                scopes: vec!["system/*.*".to_owned()],
            },
            policy,
        )
    }

    /// The restriction every set this caller reads of `ty` carries (matches,
    /// includes, history, counts, conditional matches). Storage applies it in
    /// its one scope chokepoint.
    pub fn restriction(&self, ty: ResourceType) -> Restriction {
        self.policy.restrict(self, ty)
    }

    /// The final decision on one resource about to reach this caller.
    pub fn admit(&self, resource: &StoredResource) -> Decision {
        self.policy.admit(self, resource)
    }

    /// The decision on one resource of a set read under the restriction.
    pub fn admit_listed(&self, resource: &StoredResource) -> Decision {
        self.policy.admit_listed(self, resource)
    }

    /// 403 unless the caller may act for Patient `id` (proxy access).
    pub fn may_act_for(&self, id: &str) -> Result<(), crate::service::ServiceError> {
        self.policy
            .may_act_for(self, id)
            .map_err(|r| crate::service::ServiceError::Forbidden(r.0))
    }

    /// Whose AuditEvents this caller may search and read.
    pub fn audit_reach(&self) -> crate::policy::AuditReach {
        self.policy.audit_reach(self)
    }

    /// Whether the policy restricts nothing for this caller (fast paths).
    pub fn unrestricted(&self) -> bool {
        self.policy.unrestricted(self)
    }
}
