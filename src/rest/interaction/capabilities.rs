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
    let cs = with_suppliers(cs, fhir.service.bridge());
    let cs = if shape.is_identity() {
        cs
    } else {
        shape.apply_value("CapabilityStatement", cs)
    };
    let (body, ct) = format::encode(&cs, out)?;
    Ok(HttpResponse::Ok().content_type(ct).body(body))
}

/// With `[[suppliers]]`, `rest.documentation` says what the practices on GP
/// systems serve: their resources (ids `{supplier}.{id}`) are read and
/// searched (each parameter evaluated on the supplier's answer), booked,
/// amended and cancelled (Appointment PUT), never vread, history, PATCH or
/// DELETE; repeat requests reach them through the outbox.
fn with_suppliers(mut cs: serde_json::Value, bridge: &crate::bridge::Bridge) -> serde_json::Value {
    if bridge.is_empty() {
        return cs;
    }
    let list: Vec<String> = bridge
        .suppliers()
        .iter()
        .map(|s| {
            format!(
                "{} ({}; practices {}; {})",
                s.name(),
                s.kind().as_str(),
                s.cfg.ods_codes.join(", "),
                s.held()
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    let text = format!(
        " Practices on GP systems: {}. For their patients these types are served from the GP system: \
         resources with ids '{{supplier}}.{{id}}' support read and search (a parameter the bridge cannot \
         evaluate on the supplier's answer is a 400), Appointment create (booking) and update (amend, \
         cancel); not vread, history, PATCH or DELETE (405/501). Repeat requests (Task) for their plans \
         are delivered through a durable outbox.",
        list.join("; ")
    );
    if let Some(rest) = cs.pointer_mut("/rest/0") {
        let old = rest
            .get("documentation")
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .to_owned();
        rest["documentation"] = serde_json::Value::String(format!("{old}{text}"));
    }
    cs
}
