//! Triage before booking: a QuestionnaireResponse is checked against its
//! Questionnaire (when the server holds it) on every write, and a booking
//! of a service the practice triages must reference the patient's
//! completed, recent response to the practice's form.

use chrono::Duration;
use serde_json::Value;

use super::workflows::{now, query, read_ref, refuse, status, Change};
use super::{OoIssue, ServiceError, ServiceResult};
use crate::model::ResourceType;
use crate::storage::TxOps;
use crate::workflow::fhir::{instant_at, ref_id, ref_ids};
use crate::workflow::practice::Triage;
use crate::workflow::questionnaire;

/// The Questionnaire a response answers, when the server holds it (by
/// canonical `url`, and `version` when the reference carries one).
fn questionnaire_of(tx: &mut dyn TxOps, response: &Value) -> ServiceResult<Option<Value>> {
    let Some(canonical) = response.get("questionnaire").and_then(Value::as_str) else {
        return Ok(None);
    };
    if let Some(id) = canonical.strip_prefix("Questionnaire/") {
        return Ok(read_ref(tx, ResourceType::Questionnaire, id)?.map(|(_, v)| v));
    }
    let (url, version) = match canonical.split_once('|') {
        Some((u, v)) => (u, Some(v)),
        None => (canonical, None),
    };
    let mut pairs = vec![("url", url.to_owned())];
    if let Some(v) = version {
        pairs.push(("version", v.to_owned()));
    }
    let q = query(ResourceType::Questionnaire, &pairs, "")?;
    let found = tx.find(&q, 20).map_err(super::transaction::storage_err)?;
    // The newest active one (or the newest written) stands for the url.
    let mut best: Option<(bool, crate::model::Instant, Value)> = None;
    for s in found {
        let v = super::workflows::content(&s)?;
        let active = status(&v) == "active";
        if best
            .as_ref()
            .is_none_or(|(a, t, _)| (active, s.last_updated) > (*a, *t))
        {
            best = Some((active, s.last_updated, v));
        }
    }
    Ok(best.map(|(_, _, v)| v))
}

fn problems_422(problems: Vec<questionnaire::Problem>) -> ServiceError {
    ServiceError::Unprocessable(
        problems
            .into_iter()
            .map(|p| OoIssue::error("invalid", p.message).at(p.expression))
            .collect(),
    )
}

/// Every write of a QuestionnaireResponse: valid against its Questionnaire.
pub(crate) fn response(tx: &mut dyn TxOps, change: Change<'_>) -> ServiceResult<()> {
    let Some(new) = change.new.as_deref() else {
        return Ok(());
    };
    if let Some(q) = questionnaire_of(tx, new)? {
        let problems = questionnaire::validate(&q, new);
        if !problems.is_empty() {
            return Err(problems_422(problems));
        }
    }
    Ok(())
}

/// The booking `appt` of `patient` references a completed response of that
/// patient to `rule`'s Questionnaire, authored within its validity, valid.
pub(crate) fn require_completed(
    tx: &mut dyn TxOps,
    appt: &Value,
    patient: &str,
    rule: &Triage,
) -> ServiceResult<()> {
    let mut ids = ref_ids(appt, "supportingInformation", "QuestionnaireResponse");
    ids.extend(ref_ids(appt, "basedOn", "QuestionnaireResponse"));
    let mut why = format!(
        "this service needs the practice's online consultation first: reference a completed QuestionnaireResponse to {} in Appointment.supportingInformation",
        rule.questionnaire
    );
    for id in ids {
        // Absent and another patient's answer alike (no oracle over ids).
        let not_theirs =
            format!("QuestionnaireResponse/{id} is not a triage response of the booking patient");
        let Some((_, r)) = read_ref(tx, ResourceType::QuestionnaireResponse, &id)? else {
            why = not_theirs;
            continue;
        };
        if r.get("subject")
            .and_then(|s| ref_id(s, "Patient"))
            .as_deref()
            != Some(patient)
        {
            why = not_theirs;
            continue;
        }
        let canonical = r.get("questionnaire").and_then(Value::as_str).unwrap_or("");
        let url = canonical.split('|').next().unwrap_or("");
        if url != rule.questionnaire {
            why = format!(
                "QuestionnaireResponse/{id} does not answer {}",
                rule.questionnaire
            );
            continue;
        }
        if status(&r) != "completed" && status(&r) != "amended" {
            why = format!("QuestionnaireResponse/{id} is not completed");
            continue;
        }
        let recent = now() - Duration::days(i64::from(rule.valid_days));
        if instant_at(&r, "authored").is_none_or(|t| t < recent) {
            why = format!(
                "QuestionnaireResponse/{id} was not authored within the last {} days",
                rule.valid_days
            );
            continue;
        }
        match questionnaire_of(tx, &r)? {
            Some(q) if questionnaire::validate(&q, &r).is_empty() => return Ok(()),
            Some(_) => why = format!("QuestionnaireResponse/{id} does not answer the form validly"),
            None => {
                why = format!(
                    "the practice's triage form {} is not on this server",
                    rule.questionnaire
                )
            }
        }
    }
    Err(refuse("triage", why))
}
