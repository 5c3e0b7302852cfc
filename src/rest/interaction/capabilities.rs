//! `GET [base]/metadata`: the CapabilityStatement, from what the backend declares.

use actix_web::HttpResponse;

use super::super::error::{ApiError, OoIssue};
use super::super::extract::Fhir;
use super::super::format;
use super::super::shape::Shape;
use super::super::strict;
use super::{label, ApiResult};
use crate::capability::Security;
use crate::model::ResourceType;

pub async fn metadata(fhir: Fhir) -> ApiResult {
    let req = &fhir.req;
    label(req, "capabilities", None);
    let pairs = strict::only(req, "capabilities", &["_summary", "_elements", "mode"], &[])?;
    if let Some((_, mode)) = pairs.iter().find(|(k, _)| k == "mode") {
        if mode != "full" {
            return Err(ApiError::BadRequest(vec![OoIssue::error(
                "not-supported",
                "Only mode=full is supported on metadata (no TerminologyCapabilities or normative subset)",
            )
            .at("mode")]));
        }
    }
    let shape = Shape::from_params(ResourceType::CapabilityStatement, &pairs)?;
    let out = fhir.out()?;
    let base = fhir.base();
    let token_endpoint = format!("{}/token", crate::auth::auth_base(&base));
    let state = req.app_data::<actix_web::web::Data<super::super::AppState>>();
    let access = Security {
        token_endpoint: state
            .is_some_and(|s| s.auth.is_some())
            .then_some(token_endpoint.as_str()),
        cors: fhir
            .settings()
            .server
            .cors
            .allowed_origins
            .iter()
            .any(|o| !o.is_empty()),
    };
    let cs = crate::capability::capability_statement(
        fhir.service.capabilities(),
        fhir.service.has_transactions(),
        Some(&base),
        fhir.service.validation(),
        access,
    );
    let cs = if shape.is_identity() {
        cs
    } else {
        shape.apply_value("CapabilityStatement", cs)
    };
    let (body, ct) = format::encode(&cs, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}
