//! Who is asking, about what, and under which access decision: the
//! [`RequestContext`] every service and storage call takes as its first
//! argument. It is built once per request (by `rest::extract` for HTTP, by
//! [`RequestContext::system`] for the CLI and background jobs) and never
//! defaulted: a call without a caller cannot be written.

use std::sync::Arc;

use crate::model::ResourceType;
use crate::model::StoredResource;
use crate::policy::{Decision, Policy, Restriction};

/// The authenticated caller. Only `Anonymous` (no credentials) and `System`
/// (the server itself: CLI commands, background jobs) exist until the access
/// control issue adds patients, users and backend-service clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A request that presented no credentials.
    Anonymous,
    /// The server acting for itself (`import`, `reindex`, jobs); `name` says
    /// which part (for logs), `scopes` what it may do.
    System { name: String, scopes: Vec<String> },
}

impl Principal {
    /// A bounded label for logs and metrics (never an identity).
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::System { .. } => "system",
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
        }
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

    /// Whether the policy restricts nothing for this caller (fast paths).
    pub fn unrestricted(&self) -> bool {
        self.policy.unrestricted(self)
    }
}
