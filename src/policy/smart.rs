//! The server's access policy under `auth.mode = "required"`: SMART scopes
//! and the patient compartment, decided in one place for every path.
//!
//! A caller's *visible set* of a type for some actions is the union, over
//! its grants allowing one of the actions, of:
//! - everything (a `user/` or `system/` grant, or a `patient/` grant on a
//!   shared type such as Practitioner or Slot — read and search only), or
//! - the members of its patient's compartment (a `patient/` grant on a
//!   compartment type; none when the token has no patient context or is
//!   proofed below the issuer's minimum),
//!
//! each ANDed with the grant's v2 query refinement. Sets (search matches,
//! totals, includes, history) are restricted to it in storage; single
//! resources (reads, a write's old and new content) are checked against the
//! same predicate in memory ([`crate::search::matcher`]). Types in neither
//! group are invisible to `patient/` grants. Anything undecidable denies.

use std::sync::Arc;

use crate::auth::scope::{Action, Grant, ScopeContext};
use crate::auth::Caller;
use crate::consent::{ConsentIndex, Subject};
use crate::context::{Principal, RequestContext};
use crate::model::{ResourceType, StoredResource};
use crate::search::compartment;
use crate::search::types::Predicate;
use crate::search::types::{Test, TokenValue};

use super::{AuditReach, Decision, Policy, Refusal, Restriction};

/// Types outside any patient's compartment that `patient/` grants reach
/// (directories and booking: who, where, when).
pub const SHARED_TYPES: [ResourceType; 7] = [
    ResourceType::Practitioner,
    ResourceType::PractitionerRole,
    ResourceType::Organization,
    ResourceType::Location,
    ResourceType::Schedule,
    ResourceType::Slot,
    ResourceType::Medication,
];

/// SMART scopes and patient compartments, with the patients' Consents.
#[derive(Clone)]
pub struct SmartPolicy {
    /// This server's base URL (absolute references under it are local).
    base_url: String,
    /// Active data-sharing and proxy Consents.
    consents: Arc<ConsentIndex>,
    /// `meta.security` labels never shown to `patient/` grants.
    withheld: Vec<(String, String)>,
}

impl std::fmt::Debug for SmartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartPolicy")
            .field("consents", &self.consents.len())
            .finish_non_exhaustive()
    }
}

/// What a caller may see of one type.
#[derive(Debug, Clone)]
enum Visible {
    Nothing,
    All,
    Where(Predicate),
}

impl SmartPolicy {
    /// No Consents in force and only the standard withheld labels.
    pub fn new(base_url: impl Into<String>) -> SmartPolicy {
        SmartPolicy::with_consents(
            base_url,
            Arc::new(ConsentIndex::new()),
            crate::consent::ConsentSettings::default().withheld(),
        )
    }

    pub fn with_consents(
        base_url: impl Into<String>,
        consents: Arc<ConsentIndex>,
        withheld: Vec<(String, String)>,
    ) -> SmartPolicy {
        SmartPolicy {
            base_url: base_url.into(),
            consents,
            withheld,
        }
    }

    /// The caller facts a data-sharing Consent can name.
    fn subject(caller: &Caller) -> Subject {
        Subject {
            client: caller.client_id.clone(),
            ods: caller.ods_code.clone(),
            purposes: caller.purposes.clone(),
            own_patient: caller.patient.as_ref().map(|p| p.as_str().to_owned()),
        }
    }

    /// "Carries none of the withheld labels" (for `patient/` grants).
    fn unlabelled(&self, ty: ResourceType) -> Option<Predicate> {
        let param = crate::search::registry::lookup(ty, "_security")?;
        Some(Predicate::Index {
            param,
            test: Test::Token(
                self.withheld
                    .iter()
                    .map(|(s, c)| TokenValue {
                        system: Some(s.clone()),
                        code: Some(c.clone()),
                    })
                    .collect(),
            ),
            not: true,
        })
    }

    /// "In none of these patients' compartments" (`None`: `ty` has no
    /// compartment members, so nothing of it belongs to a patient).
    fn outside(ty: ResourceType, patients: &[String]) -> Option<Predicate> {
        if patients.is_empty() || !compartment::in_patient_compartment(ty) {
            return None;
        }
        let mut all = Vec::new();
        if ty == ResourceType::Patient {
            all.push(Predicate::Id {
                ids: patients.to_vec(),
                not: true,
            });
        }
        for code in crate::search::registry::registry().patient_compartment(ty) {
            if let Some(def) = crate::search::registry::lookup(ty, code)
                .filter(|d| d.kind == crate::search::registry::ParamKind::Reference)
            {
                all.push(Predicate::Index {
                    param: def,
                    test: Test::Reference(
                        patients
                            .iter()
                            .map(|p| crate::search::types::ReferenceValue {
                                target_type: Some(ResourceType::Patient),
                                id: p.clone(),
                                url: false,
                            })
                            .collect(),
                    ),
                    not: true,
                });
            }
        }
        Some(Predicate::AllOf(all))
    }

    /// The patients `caller` may act for as a proxy, for `ty` and `actions`.
    fn proxied(&self, caller: &Caller, ty: ResourceType, actions: &[Action]) -> Vec<String> {
        let Some(nhs) = &caller.nhs_number else {
            return Vec::new();
        };
        let write = actions
            .iter()
            .any(|a| !matches!(a, Action::Read | Action::Search));
        self.consents
            .proxied(nhs)
            .into_iter()
            .filter(|p| p.covers(ty, write))
            .filter(|_| actions.iter().all(|a| *a != Action::Delete))
            .map(|p| p.patient)
            .filter(|p| caller.patient.as_ref().is_none_or(|own| own.as_str() != p))
            .collect()
    }

    /// The patients whose Consent denies `caller`, when any has records of
    /// `ty` (`None`: nothing of `ty` is withheld by a Consent).
    fn denied_for(&self, caller: &Caller, ty: ResourceType) -> Option<Arc<Vec<String>>> {
        if self.consents.is_empty() || !compartment::in_patient_compartment(ty) {
            return None;
        }
        let d = self.consents.denied(&Self::subject(caller));
        (!d.is_empty()).then_some(d)
    }

    /// Whether the resource `content` (of `ty`, id `id`) belongs to one of
    /// the `denied` patients (sorted): it is the Patient, or one of its
    /// patient-compartment references names one.
    fn belongs_to(
        &self,
        ty: ResourceType,
        id: &str,
        content: &serde_json::Value,
        denied: &[String],
    ) -> bool {
        let hit = |p: &str| denied.binary_search_by(|d| d.as_str().cmp(p)).is_ok();
        if ty == ResourceType::Patient && hit(id) {
            return true;
        }
        let codes: Vec<&str> = crate::search::registry::registry()
            .patient_compartment(ty)
            .iter()
            .map(String::as_str)
            .collect();
        crate::search::index::extract_params(ty, content, &self.base_url, &codes)
            .iter()
            .any(|r| match &r.value {
                crate::search::rows::IndexValue::Reference {
                    target_type,
                    target_id,
                    ..
                } => target_type == "Patient" && hit(target_id),
                _ => false,
            })
    }

    /// The scopes' visible set, minus the records of patients whose Consent
    /// denies the caller (the restriction of sets).
    fn visible(&self, caller: &Caller, ty: ResourceType, actions: &[Action]) -> Visible {
        let v = self.visible_by_scopes(caller, ty, actions);
        if matches!(v, Visible::Nothing) {
            return v;
        }
        let Some(denied) = self.denied_for(caller, ty) else {
            return v;
        };
        let Some(outside) = Self::outside(ty, &denied) else {
            return v;
        };
        match v {
            Visible::All => Visible::Where(outside),
            Visible::Where(p) => Visible::Where(Predicate::AllOf(vec![p, outside])),
            Visible::Nothing => Visible::Nothing,
        }
    }

    fn visible_by_scopes(&self, caller: &Caller, ty: ResourceType, actions: &[Action]) -> Visible {
        self.visible_scoped(caller, ty, actions, true)
    }

    /// [`Self::visible_by_scopes`]; `labels: false` leaves out the withheld
    /// labels test (for a resource known to carry none of them).
    fn visible_scoped(
        &self,
        caller: &Caller,
        ty: ResourceType,
        actions: &[Action],
        labels: bool,
    ) -> Visible {
        let mut alternatives = Vec::new();
        for g in &caller.scopes.grants {
            if !g.covers(ty) || !actions.iter().any(|a| g.perms.has(*a)) {
                continue;
            }
            // The audit trail is reached only by grants that name it.
            if ty == ResourceType::AuditEvent && g.resource_type.is_none() {
                continue;
            }
            let Some(mut parts) = self.refinement(ty, g) else {
                continue;
            };
            if g.context == ScopeContext::Patient {
                // Directories and the diary are the practice's: a patient
                // reads them and books through Appointment, never writes them.
                let reads = actions
                    .iter()
                    .any(|a| matches!(a, Action::Read | Action::Search) && g.perms.has(*a));
                if SHARED_TYPES.contains(&ty) && !reads {
                    continue;
                }
                if !SHARED_TYPES.contains(&ty) {
                    if !caller.proofing_ok {
                        continue;
                    }
                    // Their own record, and those they are a proxy for.
                    let mut members: Vec<Predicate> = caller
                        .patient
                        .iter()
                        .map(|p| p.as_str().to_owned())
                        .chain(self.proxied(caller, ty, actions))
                        .filter_map(|p| compartment::patient(ty, &p))
                        .collect();
                    match members.len() {
                        0 => continue,
                        1 => parts.insert(0, members.remove(0)),
                        _ => parts.insert(0, Predicate::AnyOf(members)),
                    }
                }
                // Withheld from online (patient-facing) access (patient data:
                // the shared directories and diary carry none).
                if let Some(p) = self
                    .unlabelled(ty)
                    .filter(|_| labels && !SHARED_TYPES.contains(&ty))
                {
                    parts.push(p);
                }
            }
            match parts.len() {
                0 => return Visible::All,
                1 => alternatives.extend(parts),
                _ => alternatives.push(Predicate::AllOf(parts)),
            }
        }
        match alternatives.len() {
            0 => Visible::Nothing,
            1 => Visible::Where(alternatives.pop().unwrap_or(Predicate::AnyOf(Vec::new()))),
            _ => Visible::Where(Predicate::AnyOf(alternatives)),
        }
    }

    /// A grant's query refinement as predicates (`Some(empty)`: none).
    /// `None`: the refinement is not one this server can enforce, so the
    /// grant grants nothing.
    fn refinement(&self, ty: ResourceType, g: &Grant) -> Option<Vec<Predicate>> {
        let Some(q) = &g.refinement else {
            return Some(Vec::new());
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).ok()?;
        if pairs.is_empty()
            || pairs.iter().any(|(k, _)| {
                k.starts_with('_')
                    && !matches!(k.as_str(), "_id" | "_tag" | "_security" | "_profile")
            })
        {
            return None;
        }
        let parsed = crate::search::parse::parse(
            ty,
            &pairs,
            crate::search::parse::Options {
                lenient: false,
                paging: crate::search::parse::Paging {
                    default_count: 1,
                    max_count: 1,
                },
                base_url: &self.base_url,
            },
        )
        .ok()?;
        let preds = parsed.query.predicates;
        // Only what the in-memory evaluator can decide (chains and _has
        // cannot be checked on a single resource).
        if preds.iter().any(|p| {
            matches!(
                p,
                Predicate::Chain { .. } | Predicate::Has { .. } | Predicate::Composite { .. }
            )
        }) {
            return None;
        }
        Some(preds)
    }

    fn holds(&self, v: &Visible, ty: ResourceType, id: &str, content: &serde_json::Value) -> bool {
        match v {
            Visible::Nothing => false,
            Visible::All => true,
            Visible::Where(p) => {
                crate::search::matcher::matches(ty, id, content, &self.base_url, p) == Some(true)
            }
        }
    }
}

fn caller(ctx: &RequestContext) -> Result<Option<&Caller>, ()> {
    match &ctx.principal {
        Principal::System { .. } => Ok(None),
        Principal::Caller(c) => Ok(Some(c)),
        Principal::Anonymous => Err(()),
    }
}

const READ: [Action; 2] = [Action::Read, Action::Search];

impl Policy for SmartPolicy {
    fn authorize(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        action: Action,
    ) -> Result<(), Refusal> {
        let c = match caller(ctx) {
            Ok(None) => return Ok(()),
            Ok(Some(c)) => c,
            Err(()) => return Err(Refusal::new("A token is required")),
        };
        if matches!(self.visible_by_scopes(c, ty, &[action]), Visible::Nothing) {
            let low_proofing = !c.proofing_ok
                && compartment::in_patient_compartment(ty)
                && c.scopes
                    .granting(ty, action)
                    .any(|g| g.context == ScopeContext::Patient);
            return Err(Refusal::new(if low_proofing {
                format!("The token's identity proofing level is too low for {ty} records")
            } else {
                format!(
                    "The token's scopes do not allow '{}' on {ty}",
                    action.letter()
                )
            }));
        }
        Ok(())
    }

    fn restrict(&self, ctx: &RequestContext, ty: ResourceType) -> Restriction {
        match caller(ctx) {
            Ok(None) => Restriction::None,
            Err(()) => Restriction::Everything,
            Ok(Some(c)) => match self.visible(c, ty, &READ) {
                Visible::Nothing => Restriction::Everything,
                Visible::All => Restriction::None,
                Visible::Where(p) => Restriction::Where(p),
            },
        }
    }

    fn admit(&self, ctx: &RequestContext, r: &StoredResource) -> Decision {
        let c = match caller(ctx) {
            Ok(None) => return Decision::Permit,
            Err(()) => return Decision::Deny,
            Ok(Some(c)) => c,
        };
        let denied = self.denied_for(c, r.resource_type);
        let parsed: std::cell::OnceCell<Option<serde_json::Value>> = std::cell::OnceCell::new();
        let parse = || serde_json::from_str(r.content.as_deref()?).ok();
        // Parsed once: the scope test and the Consent test share it.
        let content = || -> Option<serde_json::Value> {
            if denied.is_none() {
                return parse();
            }
            parsed.get_or_init(parse).clone()
        };
        // A resource whose text names none of the withheld labels' systems
        // carries none of them: the labels test needs no parse.
        let labels = r.content.as_deref().is_some_and(|t| {
            self.withheld
                .iter()
                .any(|(sys, _)| t.contains(sys.as_str()))
        });
        let mut ok = match self.visible_scoped(c, r.resource_type, &READ, labels) {
            Visible::All => true,
            Visible::Nothing => false,
            // Parsed only if a test needs the content (the patient's own
            // Patient is admitted by id alone). A deletion marker has no
            // content: only an id test can admit it.
            Visible::Where(p) => {
                crate::search::matcher::matches_lazy(
                    r.resource_type,
                    r.id.as_str(),
                    content,
                    &self.base_url,
                    &p,
                ) == Some(true)
            }
        };
        if ok {
            if let Some(d) = denied {
                // A deletion marker of a denied patient's record stays absent.
                ok = match parsed.get_or_init(parse) {
                    Some(v) => !self.belongs_to(r.resource_type, r.id.as_str(), v, &d),
                    None => false,
                };
            }
        }
        if ok {
            Decision::Permit
        } else {
            Decision::Deny
        }
    }

    /// Sets reach the service already restricted by [`Policy::restrict`]
    /// (the query carries the predicate; storage applies it to includes and
    /// history): a listed resource is re-checked by type, not re-evaluated.
    fn admit_listed(&self, ctx: &RequestContext, r: &StoredResource) -> Decision {
        match caller(ctx) {
            Ok(None) => Decision::Permit,
            Err(()) => Decision::Deny,
            Ok(Some(c)) => match self.visible_by_scopes(c, r.resource_type, &READ) {
                Visible::Nothing => Decision::Deny,
                _ => Decision::Permit,
            },
        }
    }

    fn permits(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        action: Action,
        id: &str,
        content: &serde_json::Value,
    ) -> bool {
        match caller(ctx) {
            Ok(None) => true,
            Err(()) => false,
            Ok(Some(c)) => {
                self.holds(&self.visible_by_scopes(c, ty, &[action]), ty, id, content)
                    && self
                        .denied_for(c, ty)
                        .is_none_or(|d| !self.belongs_to(ty, id, content, &d))
            }
        }
    }

    fn unrestricted(&self, ctx: &RequestContext) -> bool {
        match caller(ctx) {
            Ok(None) => true,
            Err(()) => false,
            Ok(Some(c)) => {
                // Every action on every type, unrefined, across patients.
                let all = c
                    .scopes
                    .grants
                    .iter()
                    .filter(|g| {
                        g.context != ScopeContext::Patient
                            && g.resource_type.is_none()
                            && g.refinement.is_none()
                    })
                    .fold(crate::auth::scope::Perms::default(), |acc, g| {
                        acc.union(g.perms)
                    });
                all == crate::auth::scope::Perms::ALL
                    && (self.consents.is_empty()
                        || self.consents.denied(&Self::subject(c)).is_empty())
            }
        }
    }

    fn may_act_for(&self, ctx: &RequestContext, id: &str) -> Result<(), Refusal> {
        let Ok(Some(c)) = caller(ctx) else {
            return Ok(());
        };
        if c.kind() != crate::auth::CallerKind::Patient
            || c.patient.as_ref().is_some_and(|p| p.as_str() == id)
        {
            return Ok(());
        }
        let proxied = c
            .nhs_number
            .as_deref()
            .is_some_and(|n| self.consents.proxied(n).iter().any(|p| p.patient == id));
        if proxied {
            Ok(())
        } else {
            Err(Refusal::new(
                "This token may not act for that patient: no active proxy Consent names its holder",
            ))
        }
    }

    fn audit_reach(&self, ctx: &RequestContext) -> AuditReach {
        let c = match caller(ctx) {
            Ok(None) => return AuditReach::All,
            Err(()) => return AuditReach::Nothing,
            Ok(Some(c)) => c,
        };
        let mut patient = false;
        for g in c.scopes.granting(ResourceType::AuditEvent, Action::Search) {
            if g.resource_type != Some(ResourceType::AuditEvent) {
                continue;
            }
            match g.context {
                ScopeContext::Patient => patient = true,
                _ => return AuditReach::All,
            }
        }
        if !(patient && c.proofing_ok) {
            return AuditReach::Nothing;
        }
        let mut ids: Vec<String> = c.patient.iter().map(|p| p.as_str().to_owned()).collect();
        ids.extend(self.proxied(c, ResourceType::AuditEvent, &[Action::Search]));
        if ids.is_empty() {
            AuditReach::Nothing
        } else {
            AuditReach::Patients(ids)
        }
    }

    fn may_create_by_id(&self, ctx: &RequestContext, ty: ResourceType) -> bool {
        match caller(ctx) {
            Ok(None) => true,
            Err(()) => false,
            Ok(Some(c)) => matches!(
                self.visible_by_scopes(c, ty, &[Action::Update]),
                Visible::All
            ),
        }
    }

    fn confined(&self, ctx: &RequestContext, ty: ResourceType, action: Action) -> bool {
        match caller(ctx) {
            Ok(None) => false,
            Err(()) => true,
            Ok(Some(c)) => {
                !matches!(self.visible_by_scopes(c, ty, &[action]), Visible::All)
                    || self.denied_for(c, ty).is_some()
            }
        }
    }
}
