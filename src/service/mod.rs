//! The service layer: every FHIR interaction as a typed operation, with no
//! HTTP in sight. `rest` decodes a request into a call here and encodes the
//! result; `import` and background jobs call the same operations. This is the
//! one place where:
//!
//! - a write is prepared: structure check → profile gate → index extraction
//!   ([`write`]), for a single POST/PUT, a bundle entry, a bulk create and a
//!   PATCH result alike;
//! - a resource leaves storage for a caller: every read, vread, search match,
//!   `_include`/`_revinclude` result, history entry, bundle GET entry,
//!   conditional-write match and `$validate` instance passes
//!   [`RequestContext::admit`] (the policy), and every set is computed under
//!   the policy's restriction, which storage applies in its scope chokepoint.
//!
//! Modules: [`read`] (read, vread), [`write`] (create, update, delete and the
//! write pipeline), [`search`] (type and compartment search, page tokens,
//! criteria), [`history`] (three levels), [`transaction`] (batch and
//! transaction Bundles, conditional update/delete, PATCH), [`error`].

pub mod audit;
pub mod booking;
pub mod bridged;
pub mod consent;
pub mod error;
pub mod history;
pub mod read;
pub mod repeats;
pub mod search;
pub mod transaction;
pub mod triage;
pub mod workflows;
pub mod write;

use std::sync::Arc;

pub use error::{OoIssue, ServiceError};

use crate::config::Settings;
use crate::context::RequestContext;
use crate::model::{LogicalId, ResourceType, StoredResource};
use crate::policy::Decision;
use crate::search::parse::Paging;
use crate::storage::{Backend, Capabilities, Interaction};
use crate::validation::ValidationService;

pub type ServiceResult<T> = Result<T, ServiceError>;

/// What the caller wants back from a write (`Prefer: return=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPref {
    Minimal,
    Representation,
    OperationOutcome,
}

/// The interactions over one backend, under the policy each call's
/// [`RequestContext`] carries.
pub struct Service {
    backend: Arc<dyn Backend>,
    validation: Arc<ValidationService>,
    settings: Arc<Settings>,
    /// Active Consents (the policy reads the same index).
    consents: Arc<crate::consent::ConsentIndex>,
    /// The GP suppliers whose practices' records are held remotely.
    bridge: Arc<crate::bridge::Bridge>,
}

impl Service {
    pub fn new(
        backend: Arc<dyn Backend>,
        validation: Arc<ValidationService>,
        settings: Arc<Settings>,
    ) -> Service {
        Service {
            backend,
            validation,
            settings,
            consents: Arc::new(crate::consent::ConsentIndex::new()),
            bridge: Arc::new(crate::bridge::Bridge::none()),
        }
    }

    /// Routes the practices of `bridge`'s suppliers to them.
    pub fn with_bridge(mut self, bridge: Arc<crate::bridge::Bridge>) -> Service {
        self.bridge = bridge;
        self
    }

    /// Shares `index` as the Consent index this service keeps up to date.
    pub fn with_consents(mut self, index: Arc<crate::consent::ConsentIndex>) -> Service {
        self.consents = index;
        self
    }

    /// The Consent index this service keeps up to date.
    pub fn consents(&self) -> &Arc<crate::consent::ConsentIndex> {
        &self.consents
    }

    /// What the backend declares it supports (the CapabilityStatement's source).
    pub fn capabilities(&self) -> &Capabilities {
        self.backend.capabilities()
    }

    /// Whether the backend runs multi-operation transactions.
    pub fn has_transactions(&self) -> bool {
        self.backend.transactions().is_some()
    }

    pub fn validation(&self) -> &Arc<ValidationService> {
        &self.validation
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Readiness: can the backend serve requests now?
    pub async fn ping(&self) -> ServiceResult<()> {
        self.backend.ping().await.map_err(ServiceError::from)
    }

    /// Pool gauges: (connections in use, idle connections).
    pub fn pool_state(&self) -> (u32, u32) {
        self.backend.pool_state()
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.capabilities().backend
    }

    pub(crate) fn paging(&self) -> Paging {
        Paging {
            default_count: self.settings.search.default_count,
            max_count: self.settings.search.max_count,
        }
    }

    /// `name` as a resource type this server serves (404 otherwise).
    pub fn resource_type(&self, name: &str) -> ServiceResult<ResourceType> {
        let ty: ResourceType = name.parse().map_err(|_| {
            if fhir_structure::model::Model::r4().is_resource_type(name) {
                ServiceError::NotFound(format!(
                    "Resource type '{name}' is not supported by this server"
                ))
            } else {
                ServiceError::NotFound(format!("Unknown resource type '{name}'"))
            }
        })?;
        if !self.capabilities().supports_type(ty) {
            return Err(ServiceError::NotFound(format!(
                "Resource type '{name}' is not supported by this server"
            )));
        }
        Ok(ty)
    }

    /// Who may run `$validate`: on a type, a caller that may create or
    /// update it; on an instance, a caller that may read that instance (a
    /// confined caller gets 404 for one it cannot see, as for a read).
    pub async fn authorize_validate(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        instance: Option<&LogicalId>,
    ) -> ServiceResult<()> {
        use crate::policy::Action;
        match instance {
            None => ctx
                .authorize(ty, Action::Create)
                .or_else(|_| ctx.authorize(ty, Action::Update)),
            Some(id) => {
                ctx.authorize(ty, Action::Read)?;
                if ctx.confined(ty, Action::Read) {
                    self.read_current(ctx, ty, id).await?;
                }
                Ok(())
            }
        }
    }

    /// 405 unless the backend declares `interaction` for `ty`.
    pub fn require(&self, ty: ResourceType, interaction: Interaction) -> ServiceResult<()> {
        if self.capabilities().supports(ty, interaction) {
            Ok(())
        } else {
            Err(ServiceError::MethodNotAllowed(format!(
                "The {} interaction is not supported for {ty}",
                interaction.code()
            )))
        }
    }
}

/// ANDs the caller's restriction on the query's type into it (query
/// rewriting: matches, totals and counts then hold only what the caller may
/// see). A type the caller may not see at all matches nothing.
///
/// Chains and `_has` look into other resources: their inner predicates are
/// restricted the same way, so a chain through a resource the caller may
/// not see never matches (`subject.identifier=…` of another patient,
/// `_has:Observation:performer:subject=…`).
pub(crate) fn restrict(ctx: &RequestContext, query: &mut crate::search::types::SearchQuery) {
    use crate::policy::Restriction;
    if ctx.unrestricted() {
        return;
    }
    for p in query.predicates.iter_mut() {
        restrict_inner(ctx, p);
    }
    match ctx.restriction(query.resource_type) {
        Restriction::None => {}
        Restriction::Everything => query.predicates.push(nothing()),
        // A query that already asks for no more than the restriction allows
        // (`MedicationRequest?patient=X` by X's own token) runs unchanged.
        Restriction::Where(p) => {
            // Each ANDed part on its own: the parts the query already
            // satisfies are skipped (a patient's compartment), the rest
            // (withheld labels, Consent denials) are tested per candidate.
            let mut parts = Vec::new();
            flatten_all(p, &mut parts);
            for p in parts {
                if !implied(&query.predicates, &p) {
                    query.predicates.push(p);
                }
            }
        }
    }
}

/// The conjuncts of `p` (nested `AllOf`s opened).
fn flatten_all(p: crate::search::types::Predicate, out: &mut Vec<crate::search::types::Predicate>) {
    match p {
        crate::search::types::Predicate::AllOf(parts) => {
            for q in parts {
                flatten_all(q, out);
            }
        }
        p => out.push(p),
    }
}

/// Whether the AND of `have` implies `want` (a sound, syntactic check: false
/// when unsure). Used to skip a restriction the query already satisfies.
fn implied(
    have: &[crate::search::types::Predicate],
    want: &crate::search::types::Predicate,
) -> bool {
    use crate::search::types::{Predicate, Test};
    match want {
        Predicate::AnyOf(alts) => alts.iter().any(|a| implied(have, a)),
        Predicate::AllOf(parts) => parts.iter().all(|a| implied(have, a)),
        Predicate::Id { ids, not: false } => have.iter().any(|h| {
            matches!(h, Predicate::Id { ids: hs, not: false }
                if !hs.is_empty() && hs.iter().all(|x| ids.contains(x)))
        }),
        Predicate::Index {
            param: q,
            test: Test::Reference(wanted),
            not: false,
        } => {
            let [w] = wanted.as_slice() else {
                return false;
            };
            if w.url || w.target_type.is_none() {
                return false;
            }
            have.iter().any(|h| match h {
                Predicate::Index {
                    param: p,
                    test: Test::Reference(vals),
                    not: false,
                } => {
                    // p's values are q's narrowed by a filter
                    // (`X.subject.where(resolve() is Patient)` ⊆ `X.subject`).
                    let rest = if p.code == q.code {
                        Some("")
                    } else {
                        p.expression
                            .strip_prefix(q.expression.as_str())
                            .filter(|r| r.starts_with(".where("))
                    };
                    let Some(rest) = rest else {
                        return false;
                    };
                    // `.where(resolve() is T)`: every value is a T.
                    let only = rest
                        .strip_prefix(".where(resolve() is ")
                        .and_then(|r| r.strip_suffix(')'));
                    let typed = |t: ResourceType| p.targets == [t] || only == Some(t.as_str());
                    !vals.is_empty()
                        && vals.iter().all(|v| {
                            !v.url
                                && v.id == w.id
                                && (v.target_type == w.target_type
                                    || (v.target_type.is_none()
                                        && w.target_type.is_some_and(typed)))
                        })
                }
                _ => false,
            })
        }
        other => have.iter().any(|h| h == other),
    }
}

fn nothing() -> crate::search::types::Predicate {
    crate::search::types::Predicate::Id {
        ids: Vec::new(),
        not: false,
    }
}

/// ANDs the caller's restriction on a chain's targets and a `_has`
/// source into their inner predicates (recursively).
fn restrict_inner(ctx: &RequestContext, p: &mut crate::search::types::Predicate) {
    use crate::policy::Restriction;
    use crate::search::types::Predicate;
    let and = |ty, inner: &mut Box<Predicate>| {
        restrict_inner(ctx, inner);
        match ctx.restriction(ty) {
            Restriction::None => {}
            Restriction::Everything => **inner = nothing(),
            Restriction::Where(r) => {
                let old = std::mem::replace(&mut **inner, nothing());
                **inner = Predicate::AllOf(vec![old, r]);
            }
        }
    };
    match p {
        Predicate::Chain { targets, .. } => {
            for (ty, inner) in targets.iter_mut() {
                and(*ty, inner);
            }
        }
        Predicate::Has { source, inner, .. } => and(*source, inner),
        Predicate::AllOf(ps) | Predicate::AnyOf(ps) => {
            for p in ps {
                restrict_inner(ctx, p);
            }
        }
        _ => {}
    }
}

/// `query` under the caller's restriction, copied only when there is one.
pub(crate) fn restricted<'q>(
    ctx: &RequestContext,
    query: &'q crate::search::types::SearchQuery,
) -> std::borrow::Cow<'q, crate::search::types::SearchQuery> {
    if ctx.unrestricted() {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut q = query.clone();
    restrict(ctx, &mut q);
    std::borrow::Cow::Owned(q)
}

/// The guard every resource passes on its way to a caller: `Some` when the
/// policy admits it, `None` when the caller must not learn it exists.
pub(crate) fn admitted(ctx: &RequestContext, r: StoredResource) -> Option<StoredResource> {
    match ctx.admit(&r) {
        Decision::Permit => {
            ctx.audit_touch(&r, crate::policy::Action::Read);
            Some(r)
        }
        Decision::Deny => None,
    }
}

/// [`admitted`] over a list, counting what was dropped (a policy whose
/// `admit` drops what its `restrict` let through is inconsistent: logged).
pub(crate) fn admit_all(ctx: &RequestContext, list: Vec<StoredResource>) -> Vec<StoredResource> {
    if ctx.unrestricted() {
        for r in &list {
            ctx.audit_touch(r, crate::policy::Action::Read);
        }
        return list;
    }
    let before = list.len();
    let out: Vec<StoredResource> = list
        .into_iter()
        .filter(|r| ctx.admit_listed(r) == Decision::Permit)
        .collect();
    for r in &out {
        ctx.audit_touch(r, crate::policy::Action::Read);
    }
    if out.len() != before {
        tracing::warn!(
            dropped = before - out.len(),
            "policy admit dropped resources its restriction let through"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::implied;
    use crate::model::ResourceType;
    use crate::search::compartment;

    fn query(ty: ResourceType, q: &str) -> Vec<crate::search::types::Predicate> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap();
        crate::search::parse::parse(
            ty,
            &pairs,
            crate::search::parse::Options {
                lenient: false,
                paging: crate::search::parse::Paging {
                    default_count: 10,
                    max_count: 10,
                },
                base_url: "http://x/fhir",
            },
        )
        .unwrap()
        .query
        .predicates
    }

    #[test]
    fn a_query_inside_the_compartment_implies_it() {
        let mr = ResourceType::MedicationRequest;
        let within = compartment::patient(mr, "p1").unwrap();
        for q in [
            "patient=p1",
            "patient=Patient/p1",
            "subject=Patient/p1",
            "patient=p1&status=active",
        ] {
            assert!(implied(&query(mr, q), &within), "{q}");
        }
        for q in [
            "patient=p2",
            "patient=p1,p2",
            "subject=p1",
            "status=active",
            "requester=Patient/p1",
        ] {
            assert!(!implied(&query(mr, q), &within), "{q}");
        }
        let pat = compartment::patient(ResourceType::Patient, "p1").unwrap();
        assert!(implied(&query(ResourceType::Patient, "_id=p1"), &pat));
        assert!(!implied(&query(ResourceType::Patient, "_id=p1,p2"), &pat));
    }
}
