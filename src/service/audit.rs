//! AuditEvent read and search, served from the audit trail (never from the
//! resource store): authorised as `AuditEvent` read/search, then limited to
//! the caller's [`crate::policy::AuditReach`] (for `Patients`, another
//! patient's event is absent: 404 on read, omitted from searches).
//! AuditEvents are never written through the API (405).

use super::{Service, ServiceError, ServiceResult};
use crate::context::RequestContext;
use crate::model::ResourceType;
use crate::policy::{Action, AuditReach};
use crate::storage::audit::Cmp;
use crate::storage::{AuditCursor, AuditFilter, AuditPage, AuditPageRequest, StoredAudit};

/// A parsed AuditEvent search.
#[derive(Debug, Clone)]
pub struct AuditSearch {
    pub filter: AuditFilter,
    pub page: AuditPageRequest,
    /// The parameters applied (for page links), without `_cursor`.
    pub applied: Vec<(String, String)>,
}

fn bad(param: &str, msg: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest(vec![
        super::OoIssue::error("invalid", msg).at(param.to_owned())
    ])
}

/// `patient` / `entity` reference values: `Patient/x`, `x`, or an absolute URL.
fn reference(v: &str, default_type: Option<&str>) -> Option<String> {
    let v = v.trim();
    let tail: Vec<&str> = v.rsplitn(3, '/').collect();
    match (tail.as_slice(), default_type) {
        ([id], Some(t)) if !id.is_empty() => Some(format!("{t}/{id}")),
        ([id, ty, ..], _) if !id.is_empty() && ty.parse::<ResourceType>().is_ok() => {
            Some(format!("{ty}/{id}"))
        }
        _ => None,
    }
}

/// A token value (`system|code` or `code`) for one of our coded columns.
fn token(param: &str, v: &str) -> ServiceResult<Option<String>> {
    match v.split_once('|') {
        None => Ok(Some(v.to_owned())),
        Some((system, code)) => {
            let ok = match param {
                "agent" => system == crate::audit::event::CLIENT_ID_SYSTEM,
                "outcome" => {
                    system.is_empty() || system == "http://hl7.org/fhir/audit-event-outcome"
                }
                _ => system.is_empty() || system == crate::audit::event::system_of(code),
            };
            if code.is_empty() {
                return Err(bad(param, format!("'{param}' needs a code")));
            }
            // A system we never record matches nothing.
            Ok(ok.then(|| code.to_owned()))
        }
    }
}

/// Parses AuditEvent search parameters (400 on anything unknown).
pub fn parse_search(
    pairs: &[(String, String)],
    default_count: usize,
    max_count: usize,
) -> ServiceResult<AuditSearch> {
    let mut filter = AuditFilter::default();
    let mut page = AuditPageRequest {
        count: default_count,
        ascending: false,
        after: None,
    };
    let mut applied = Vec::new();
    // A parameter whose values can match nothing.
    let mut impossible = false;
    for (k, v) in pairs {
        let values = || v.split(',').map(str::trim).filter(|s| !s.is_empty());
        match k.as_str() {
            "_format" | "_pretty" => continue,
            "_count" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(k, "_count must be a non-negative integer"))?;
                page.count = n.min(max_count);
            }
            "_sort" => match v.as_str() {
                "-date" => page.ascending = false,
                "date" => page.ascending = true,
                _ => return Err(bad(k, "AuditEvent searches sort by date or -date only")),
            },
            "_cursor" => {
                let (r, s) = v
                    .split_once('.')
                    .and_then(|(r, s)| Some((r.parse().ok()?, s.parse().ok()?)))
                    .ok_or_else(|| bad(k, "Invalid paging cursor"))?;
                page.after = Some(AuditCursor {
                    recorded: r,
                    seq: s,
                });
                continue;
            }
            "_id" => filter.ids.extend(values().map(str::to_owned)),
            "patient" => {
                for p in values() {
                    let r = reference(p, Some("Patient"))
                        .filter(|r| r.starts_with("Patient/"))
                        .ok_or_else(|| bad(k, "patient takes a Patient reference"))?;
                    filter.patients.push(r["Patient/".len()..].to_owned());
                }
            }
            "entity" => {
                for e in values() {
                    // `Type/id`, or a bare id (any type).
                    let r = reference(e, None)
                        .or_else(|| crate::model::LogicalId::parse(e).map(|id| id.to_string()))
                        .ok_or_else(|| bad(k, "entity takes a reference (Type/id) or an id"))?;
                    filter.entities.push(r);
                }
            }
            "date" => {
                use crate::search::types::Prefix;
                // The prefixes and date forms of every other date search.
                let d = crate::search::parse::parse_date_value(k, v)
                    .map_err(super::search::search_error)?;
                let (lo, hi) = (d.range.lo, d.range.hi);
                match d.prefix {
                    Prefix::Ge => filter.dates.push((Cmp::Ge, lo)),
                    Prefix::Gt => filter.dates.push((Cmp::Ge, hi)),
                    Prefix::Le => filter.dates.push((Cmp::Lt, hi)),
                    Prefix::Lt => filter.dates.push((Cmp::Lt, lo)),
                    Prefix::Eq => {
                        filter.dates.push((Cmp::Ge, lo));
                        filter.dates.push((Cmp::Lt, hi));
                    }
                    _ => {
                        return Err(bad(
                            k,
                            "AuditEvent date takes the prefixes eq, ge, gt, le and lt",
                        ))
                    }
                }
            }
            "type" | "subtype" | "outcome" | "agent" => {
                let mut codes = Vec::new();
                for t in values() {
                    if let Some(c) = token(k, t)? {
                        codes.push(c);
                    }
                }
                if codes.is_empty() {
                    impossible = true;
                }
                match k.as_str() {
                    "type" => filter.type_codes.extend(codes),
                    "subtype" => filter.subtypes.extend(codes),
                    "outcome" => filter.outcomes.extend(codes),
                    _ => filter.agents.extend(codes),
                }
            }
            other => {
                return Err(bad(
                    other,
                    format!(
                        "Unknown search parameter '{other}' for AuditEvent (supported: {}, \
                         _count, _sort)",
                        crate::audit::SEARCH_PARAMS.join(", ")
                    ),
                ))
            }
        }
        applied.push((k.clone(), v.clone()));
    }
    if impossible {
        filter.ids = vec![String::new()];
    }
    Ok(AuditSearch {
        filter,
        page,
        applied,
    })
}

impl Service {
    fn audit_store(&self) -> ServiceResult<&dyn crate::storage::Audit> {
        self.backend
            .audit()
            .ok_or_else(|| ServiceError::NotImplemented("This backend keeps no audit trail".into()))
    }

    /// `GET AuditEvent/{id}`: 404 when absent or outside the caller's reach.
    pub async fn audit_read(&self, ctx: &RequestContext, id: &str) -> ServiceResult<StoredAudit> {
        ctx.authorize(ResourceType::AuditEvent, Action::Read)?;
        let store = self.audit_store()?;
        let missing = || ServiceError::NotFound(format!("AuditEvent/{id} not found"));
        let found = match ctx.audit_reach() {
            AuditReach::Nothing => None,
            AuditReach::All => store.read_audit(ctx, id, None).await?,
            AuditReach::Patients(ids) => store.read_audit(ctx, id, Some(&ids)).await?,
        };
        found.ok_or_else(missing)
    }

    /// An AuditEvent search, within the caller's reach.
    pub async fn audit_search(
        &self,
        ctx: &RequestContext,
        mut search: AuditSearch,
    ) -> ServiceResult<AuditPage> {
        ctx.authorize(ResourceType::AuditEvent, Action::Search)?;
        let store = self.audit_store()?;
        match ctx.audit_reach() {
            AuditReach::All => {}
            AuditReach::Patients(ids) => search.filter.reach = Some(ids),
            AuditReach::Nothing => search.filter.reach = Some(Vec::new()),
        }
        Ok(store
            .search_audit(ctx, &search.filter, &search.page)
            .await?)
    }
}
