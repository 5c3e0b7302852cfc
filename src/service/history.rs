//! History at all three levels (instance, type, system). Storage computes the
//! page and its total under the caller's restriction; every entry is admitted
//! again here.

use super::{Service, ServiceError, ServiceResult};
use crate::context::RequestContext;
use crate::model::{Instant, ResourceType};
use crate::policy::Action;
use crate::storage::{HistoryPage, HistoryQuery, HistoryScope, Interaction};

/// A parsed history request.
#[derive(Debug, Clone)]
pub struct HistoryRequest {
    pub query: HistoryQuery,
    /// The parameters honoured, as given (for the `self` link).
    pub applied: Vec<(String, String)>,
    /// Parameters ignored under `handling=lenient`.
    pub warnings: Vec<String>,
}

impl Service {
    /// Parses `_count`, `_since` and `_cursor`; anything else is a 400
    /// (a warning under `lenient`).
    pub fn history_request(
        &self,
        scope: HistoryScope,
        pairs: &[(String, String)],
        lenient: bool,
    ) -> ServiceResult<HistoryRequest> {
        let search = &self.settings.search;
        let mut q = HistoryQuery {
            scope,
            since: None,
            count: search.default_count,
            before_seq: None,
        };
        let mut applied = Vec::new();
        let mut warnings = Vec::new();
        for (name, value) in pairs {
            let problem = match name.as_str() {
                "_format" | "_pretty" => None,
                "_count" => match value.parse::<usize>() {
                    Ok(n) => {
                        q.count = n.min(search.max_count);
                        applied.push((name.clone(), q.count.to_string()));
                        None
                    }
                    Err(_) => Some("_count must be a non-negative integer".to_owned()),
                },
                "_since" => match fhir_structure::primitive::parse_date_range(value) {
                    Some((lo, _)) if value.len() > 10 => {
                        q.since = Some(Instant(lo));
                        applied.push((name.clone(), value.clone()));
                        None
                    }
                    _ => Some("_since must be an instant, e.g. 2024-01-01T00:00:00Z".to_owned()),
                },
                "_cursor" => match value.parse::<i64>() {
                    Ok(seq) => {
                        q.before_seq = Some(seq);
                        None
                    }
                    Err(_) => Some("Invalid paging cursor".to_owned()),
                },
                other => Some(format!("Parameter '{other}' is not supported on history")),
            };
            if let Some(msg) = problem {
                if lenient {
                    warnings.push(msg);
                } else {
                    return Err(ServiceError::BadRequest(vec![super::OoIssue::error(
                        "not-supported",
                        msg,
                    )
                    .at(name.clone())]));
                }
            }
        }
        Ok(HistoryRequest {
            query: q,
            applied,
            warnings,
        })
    }

    /// `GET [type]/[id]/_history`, `[type]/_history`, `_history`.
    pub async fn history(
        &self,
        ctx: &RequestContext,
        query: HistoryQuery,
    ) -> ServiceResult<HistoryPage> {
        match &query.scope {
            HistoryScope::System if !self.capabilities().system_history => {
                return Err(ServiceError::MethodNotAllowed(
                    "System history is not supported".into(),
                ))
            }
            HistoryScope::System => {
                // Each type's part is restricted in storage; a caller that
                // may search no type at all is refused.
                let any = ResourceType::ALL
                    .iter()
                    .any(|t| ctx.authorize(*t, Action::Search).is_ok());
                if !any {
                    return Err(ServiceError::Forbidden(
                        "The token's scopes allow searching no resource type".into(),
                    ));
                }
            }
            HistoryScope::Type(ty) => {
                self.require(*ty, Interaction::HistoryType)?;
                ctx.authorize(*ty, Action::Search)?;
            }
            HistoryScope::Instance(ty, _) => {
                self.require(*ty, Interaction::HistoryInstance)?;
                ctx.authorize(*ty, Action::Read)?;
            }
        }
        let history = self
            .backend
            .history()
            .ok_or_else(|| ServiceError::MethodNotAllowed("history is not supported".into()))?;
        let mut page = history.history(ctx, query.clone()).await?;
        if !ctx.unrestricted() {
            page.entries
                .retain(|e| ctx.admit_listed(&e.resource) == crate::policy::Decision::Permit);
        }
        if let HistoryScope::Instance(ty, id) = &query.scope {
            if page.total == 0 {
                return Err(ServiceError::NotFound(format!("{ty}/{id} has no history")));
            }
        }
        Ok(page)
    }
}
