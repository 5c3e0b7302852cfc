//! Search: type search, compartment search, the criteria of conditional
//! interactions, and the server-side page tokens of `POST _search`. Matches,
//! totals and `_include`/`_revinclude` are computed under the caller's
//! restriction (storage applies it); every resource is admitted again here.

use super::{admit_all, restrict, Service, ServiceError, ServiceResult};
use crate::context::RequestContext;
use crate::model::{LogicalId, ResourceType};
use crate::search::parse::{self as search_parse, Options, ParsedSearch};
use crate::search::types::{Predicate, SearchQuery};
use crate::storage::{Interaction, PageTokens, SearchPage};

/// How long the page links of a `POST _search` stay valid.
pub const PAGE_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A search request: the client's parameters, already decoded.
#[derive(Debug, Clone)]
pub struct SearchInput<'a> {
    pub ty: ResourceType,
    pub pairs: &'a [(String, String)],
    /// A predicate the request's path adds (compartment membership).
    pub within: Option<Predicate>,
    pub lenient: bool,
    pub base_url: &'a str,
}

/// A search's parsed request and its page of results.
#[derive(Debug)]
pub struct SearchOutput {
    pub parsed: ParsedSearch,
    pub page: SearchPage,
}

/// The Patient ids a query names through a `patient` parameter (or the
/// compartment predicate of `Patient/[id]/[type]`, or `Patient?_id=`).
fn named_patients(preds: &[Predicate]) -> Vec<String> {
    use crate::search::types::Test;
    let mut out = Vec::new();
    let refs = |test: &Test, out: &mut Vec<String>| {
        if let Test::Reference(vs) = test {
            for v in vs {
                if !v.url && v.target_type.is_none_or(|t| t == ResourceType::Patient) {
                    out.push(v.id.clone());
                }
            }
        }
    };
    for p in preds {
        match p {
            Predicate::Index {
                param,
                test,
                not: false,
            } if param.code == "patient" => refs(test, &mut out),
            Predicate::AnyOf(alts) => {
                // The compartment predicate: every alternative names the patient.
                if let Some(Predicate::Index {
                    test, not: false, ..
                }) = alts.first()
                {
                    if alts.iter().all(|a| {
                        matches!(
                            a,
                            Predicate::Index { not: false, .. } | Predicate::Id { not: false, .. }
                        )
                    }) {
                        refs(test, &mut out);
                    }
                } else if let Some(Predicate::Id { ids, not: false }) = alts.first() {
                    out.extend(ids.iter().cloned());
                }
            }
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) fn search_error(e: search_parse::SearchError) -> ServiceError {
    let mut issue = super::OoIssue::error(
        if e.param.is_empty() {
            "too-costly"
        } else {
            "invalid"
        },
        e.message,
    );
    if !e.param.is_empty() {
        issue = issue.at(e.param);
    }
    ServiceError::BadRequest(vec![issue])
}

/// A query string as decoded parameter pairs.
pub fn query_pairs(query: &str) -> ServiceResult<Vec<(String, String)>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).map_err(|_| {
        ServiceError::bad_request("invalid", "The query string is not valid URL encoding")
    })
}

/// Parses conditional-interaction criteria (`If-None-Exist`, `PUT/DELETE
/// [type]?…`, bundle `ifNoneExist`/conditional URLs): strict, selection only.
pub fn criteria(
    paging: search_parse::Paging,
    base: &str,
    ty: ResourceType,
    text: &str,
    what: &str,
) -> ServiceResult<SearchQuery> {
    let text = text.trim_start_matches('?');
    let text = text.strip_prefix(&format!("{ty}?")).unwrap_or(text);
    let pairs = query_pairs(text)?;
    let parsed = search_parse::parse(
        ty,
        &pairs,
        Options {
            lenient: false,
            paging,
            base_url: base,
        },
    )
    .map_err(|e| ServiceError::bad_request("invalid", format!("{what}: {}", e.message)))?;
    if parsed.query.predicates.is_empty() {
        return Err(ServiceError::bad_request(
            "invalid",
            format!("{what} must contain search criteria"),
        ));
    }
    Ok(parsed.query)
}

impl Service {
    /// [`criteria`] with this server's paging settings.
    pub fn parse_criteria(
        &self,
        base: &str,
        ty: ResourceType,
        text: &str,
        what: &str,
    ) -> ServiceResult<SearchQuery> {
        criteria(self.paging(), base, ty, text, what)
    }

    /// `GET [type]?…` / `POST [type]/_search` / a compartment search.
    pub async fn search(
        &self,
        ctx: &RequestContext,
        input: SearchInput<'_>,
    ) -> ServiceResult<SearchOutput> {
        self.require(input.ty, Interaction::SearchType)?;
        ctx.authorize(input.ty, crate::policy::Action::Search)?;
        let mut parsed = search_parse::parse(
            input.ty,
            input.pairs,
            Options {
                lenient: input.lenient,
                paging: self.paging(),
                base_url: input.base_url,
            },
        )
        .map_err(search_error)?;
        self.check_supported(input.ty, &parsed.query)?;
        // A patient's free-slot search is bounded (GP Connect's window) and
        // never shows past slots.
        if input.ty == ResourceType::Slot
            && super::workflows::Actor::of(ctx) == super::workflows::Actor::Patient
        {
            let rules = self.practice_rules(input.pairs).await?;
            super::booking::free_slot_query(&mut parsed.query, rules.as_ref())?;
        }
        if let Some(p) = input.within.clone() {
            parsed.query.predicates.push(p);
        }
        // The patients the request names must be ones the caller may act for.
        for id in named_patients(&parsed.query.predicates) {
            ctx.may_act_for(&id)?;
        }
        // The query as run carries the caller's restriction.
        restrict(ctx, &mut parsed.query);
        // A practice on a GP system answers from there, under the same restriction.
        if !self.bridge.is_empty() {
            let patients = named_patients(&parsed.query.predicates);
            if let Some(page) = self
                .bridged_search(ctx, &input, &mut parsed, &patients)
                .await?
            {
                return Ok(SearchOutput { parsed, page });
            }
        }
        let searcher = self
            .backend
            .search()
            .ok_or_else(|| ServiceError::MethodNotAllowed("search is not supported".into()))?;
        let mut page = searcher.search(ctx, &parsed.query).await?;
        page.resources = admit_all(ctx, std::mem::take(&mut page.resources));
        page.included = admit_all(ctx, std::mem::take(&mut page.included));
        Ok(SearchOutput { parsed, page })
    }

    /// The predicate of `Patient/[id]/[ty]`: membership of the patient's
    /// compartment (the R4 CompartmentDefinition's parameters, OR-ed).
    pub fn patient_compartment(
        &self,
        comp: ResourceType,
        id: &LogicalId,
        ty: ResourceType,
    ) -> ServiceResult<Predicate> {
        if comp != ResourceType::Patient {
            return Err(ServiceError::bad_request(
                "not-supported",
                format!("Only the Patient compartment is supported, not {comp}"),
            ));
        }
        crate::search::compartment::patient(ty, id.as_str()).ok_or_else(|| {
            ServiceError::bad_request(
                "not-supported",
                format!("{ty} is not in the Patient compartment"),
            )
        })
    }

    /// 400 when the query uses a parameter the backend does not declare.
    fn check_supported(&self, ty: ResourceType, query: &SearchQuery) -> ServiceResult<()> {
        fn codes<'q>(p: &'q Predicate, out: &mut Vec<&'q str>) {
            match p {
                Predicate::Id { .. } => out.push("_id"),
                Predicate::LastUpdated(_) => out.push("_lastUpdated"),
                Predicate::Index { param, .. }
                | Predicate::Missing { param, .. }
                | Predicate::Chain { param, .. }
                | Predicate::Composite { param, .. } => out.push(&param.code),
                Predicate::Has { .. } => out.push("_has"),
                Predicate::AllOf(ps) | Predicate::AnyOf(ps) => {
                    for p in ps {
                        codes(p, out);
                    }
                }
            }
        }
        let caps = self.capabilities();
        if matches!(caps.search_params, crate::storage::SearchParams::Registry) {
            return Ok(());
        }
        let mut used = Vec::new();
        for p in &query.predicates {
            codes(p, &mut used);
        }
        match used.into_iter().find(|c| !caps.supports_param(ty, c)) {
            Some(code) => Err(ServiceError::BadRequest(vec![super::OoIssue::error(
                "not-supported",
                format!("The search parameter '{code}' is not supported for {ty} by this backend"),
            )
            .at(code.to_owned())])),
            None => Ok(()),
        }
    }

    fn page_store(&self) -> ServiceResult<&dyn PageTokens> {
        self.backend
            .page_tokens()
            .ok_or_else(|| ServiceError::NotImplemented("page tokens are not supported".into()))
    }

    /// Stores the parameters of each page link; one opaque token each.
    pub async fn put_pages(
        &self,
        ctx: &RequestContext,
        ty: ResourceType,
        params: Vec<String>,
    ) -> ServiceResult<Vec<String>> {
        Ok(self
            .page_store()?
            .put_pages(ctx, ty, params, PAGE_TOKEN_TTL)
            .await?)
    }

    /// The type and parameters behind a page token (`None`: unknown or expired).
    pub async fn get_page(
        &self,
        ctx: &RequestContext,
        token: &str,
    ) -> ServiceResult<Option<(ResourceType, String)>> {
        Ok(self.page_store()?.get_page(ctx, token).await?)
    }
}
