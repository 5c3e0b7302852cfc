//! The GP Connect (STU3) adapter: the interactions of Foundations,
//! Appointment Management and Access Record Structured, with the Spine
//! Secure Proxy headers (`Ssp-TraceID`, `Ssp-From`, `Ssp-To`,
//! `Ssp-InteractionID`) and the unsigned GP Connect audit JWT on every
//! request, answers mapped STU3 → R4 by [`super::stu3`] and GP Connect's
//! Spine error codes kept. The `sandbox` kind is this adapter plus the
//! sandbox supplier's repeat-request extension (GP Connect STU3 has no
//! prescription ordering).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::adapter::{enc, Adapter, Upstream, UpstreamError, Window};
use super::config::{SupplierConfig, SupplierKind};
use super::http::{Client, Request, Response};
use super::stu3;

const ID: &str = "urn:nhs:names:services:gpconnect:fhir:";
pub use crate::workflow::fhir::{NHS_NUMBER, ODS_CODE as ODS};
const FHIR_JSON: &str = "application/fhir+json";

pub struct GpConnect {
    cfg: Arc<SupplierConfig>,
    client: Client,
    /// Our own base URL (the JWT's `iss`).
    issuer: String,
}

impl GpConnect {
    pub fn new(cfg: Arc<SupplierConfig>, client: Client, issuer: String) -> GpConnect {
        GpConnect {
            cfg,
            client,
            issuer,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.cfg.base_url.trim_end_matches('/'), path)
    }

    /// GP Connect's audit and provenance token: unsigned (`alg: none`),
    /// `exp` = `iat` + 5 minutes, the requesting device, organisation and
    /// practitioner (this server, acting for the practice's patient).
    fn jwt(&self, scope: &str) -> String {
        use crate::base64::{encode, Alphabet::UrlSafe};
        let iat = chrono::Utc::now().timestamp();
        let header = json!({"alg": "none", "typ": "JWT"});
        let claims = json!({
            "iss": self.issuer,
            "sub": "fhirbridge",
            "aud": self.cfg.base_url,
            "exp": iat + 300,
            "iat": iat,
            "reason_for_request": "directcare",
            "requested_scope": scope,
            "requesting_device": {
                "resourceType": "Device",
                "identifier": [{"system": "https://fhirbridge.dev/Id/device", "value": "fhirbridge"}],
                "model": "fhirbridge",
                "version": env!("CARGO_PKG_VERSION")
            },
            "requesting_organization": {
                "resourceType": "Organization",
                "identifier": [{"system": ODS, "value": self.cfg.requesting_organization}],
                "name": "fhirbridge"
            },
            "requesting_practitioner": {
                "resourceType": "Practitioner",
                "id": "fhirbridge",
                "identifier": [
                    {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "UNK"},
                    {"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": "UNK"}
                ],
                "name": [{"family": "Bridge", "given": ["Fhir"]}]
            }
        });
        format!(
            "{}.{}.",
            encode(header.to_string().as_bytes(), UrlSafe),
            encode(claims.to_string().as_bytes(), UrlSafe)
        )
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        interaction: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Upstream<(Response, Value)> {
        // The scope GP Connect ties to each interaction.
        let scope = if [":create:", ":update:", ":cancel:"]
            .iter()
            .any(|k| interaction.contains(k))
        {
            "patient/*.write"
        } else if [
            "slot-1",
            "organization-1",
            "practitioner-1",
            "location-1",
            "metadata-1",
        ]
        .iter()
        .any(|k| interaction.ends_with(k))
        {
            "organization/*.read"
        } else {
            "patient/*.read"
        };
        let mut headers = vec![
            ("Ssp-TraceID".to_owned(), uuid::Uuid::new_v4().to_string()),
            (
                "Ssp-From".to_owned(),
                self.cfg.asid_from.clone().unwrap_or_default(),
            ),
            (
                "Ssp-To".to_owned(),
                self.cfg.asid_to.clone().unwrap_or_default(),
            ),
            ("Ssp-InteractionID".to_owned(), interaction.to_owned()),
            (
                "Authorization".to_owned(),
                format!("Bearer {}", self.jwt(scope)),
            ),
            ("Accept".to_owned(), FHIR_JSON.to_owned()),
        ];
        if body.is_some() {
            headers.push((
                "Content-Type".to_owned(),
                format!("{FHIR_JSON};charset=utf-8"),
            ));
        }
        if let Some(v) = if_match {
            headers.push(("If-Match".to_owned(), format!("W/\"{v}\"")));
        }
        let req = Request {
            method,
            url: self.url(path),
            headers,
            body: body.map(|b| b.to_string().into_bytes()),
        };
        answer(self.client.send(req).await?)
    }
}

/// A supplier answer as JSON, or the error it means.
pub fn answer(resp: Response) -> Upstream<(Response, Value)> {
    let s = resp.status;
    if (300..400).contains(&s) {
        return Err(UpstreamError::Bad(format!(
            "the supplier redirected ({s}); redirects are not followed"
        )));
    }
    if matches!(s, 502..=504) || (s == 429) {
        return Err(UpstreamError::Unavailable(format!(
            "the supplier answered {s}"
        )));
    }
    let json: Option<Value> =
        if resp.body.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&resp.body).map_err(|_| {
                UpstreamError::Bad(format!("the supplier's answer ({s}) is not JSON"))
            })?)
        };
    if !(200..300).contains(&s) {
        let (code, message) = match &json {
            Some(oo)
                if oo.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") =>
            {
                (stu3::spine_code(oo), stu3::diagnostics(oo))
            }
            _ => (None, None),
        };
        if s >= 500 {
            return Err(UpstreamError::Bad(format!(
                "the supplier failed ({s}{})",
                code.map(|c| format!(" {c}")).unwrap_or_default()
            )));
        }
        return Err(UpstreamError::Refused {
            status: s,
            message: message.unwrap_or_else(|| format!("the supplier refused the request ({s})")),
            code,
        });
    }
    let json = json.ok_or_else(|| UpstreamError::Bad("the supplier's answer is empty".into()))?;
    if !json.is_object() {
        return Err(UpstreamError::Bad(
            "the supplier's answer is not a resource".into(),
        ));
    }
    Ok((resp, json))
}

/// `v` must be a `want`; anything else is a bad answer.
pub fn expect(v: &Value, want: &str) -> Upstream<()> {
    match v.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == want => Ok(()),
        Some(t) => Err(UpstreamError::Bad(format!(
            "the supplier answered a {} where a {want} was expected",
            t.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(40)
                .collect::<String>()
        ))),
        None => Err(UpstreamError::Bad(
            "the supplier's answer has no resourceType".into(),
        )),
    }
}

/// The resources of a Bundle (searchset or collection), each mapped to R4;
/// OperationOutcome entries dropped.
fn entries(mut bundle: Value) -> Upstream<Vec<Value>> {
    expect(&bundle, "Bundle")?;
    let mut out = Vec::new();
    let list = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    for mut e in list {
        let Some(r) = e.get_mut("resource").map(Value::take) else {
            continue;
        };
        let ty = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
        if ty == "OperationOutcome" || ty == "List" {
            continue;
        }
        if !stu3::MAPPED.contains(&ty) {
            return Err(UpstreamError::Bad(
                "the supplier's Bundle holds a resource of an unexpected type".into(),
            ));
        }
        out.push(stu3::to_r4(r).map_err(UpstreamError::Bad)?);
    }
    Ok(out)
}

fn one(v: Value, want: &str) -> Upstream<Value> {
    expect(&v, want)?;
    stu3::to_r4(v).map_err(UpstreamError::Bad)
}

#[async_trait]
impl Adapter for GpConnect {
    fn kind(&self) -> SupplierKind {
        self.cfg.kind
    }

    async fn find_patient(&self, nhs: &str) -> Upstream<Option<String>> {
        let (_, b) = self
            .call(
                "GET",
                &format!("Patient?identifier={}", enc(&format!("{NHS_NUMBER}|{nhs}"))),
                &format!("{ID}rest:search:patient-1"),
                None,
                None,
            )
            .await?;
        let found = entries(b)?;
        Ok(found
            .iter()
            .find(|p| p.get("resourceType").and_then(Value::as_str) == Some("Patient"))
            .and_then(|p| p.get("id").and_then(Value::as_str))
            .map(str::to_owned))
    }

    async fn record(&self, nhs: &str, _remote_patient: &str) -> Upstream<Vec<Value>> {
        let params = json!({"resourceType": "Parameters", "parameter": [
            {"name": "patientNHSNumber", "valueIdentifier": {"system": NHS_NUMBER, "value": nhs}},
            {"name": "includeAllergies", "part": [{"name": "includeResolvedAllergies", "valueBoolean": true}]},
            {"name": "includeMedication", "part": [{"name": "includePrescriptionIssues", "valueBoolean": true}]}
        ]});
        let (_, b) = self
            .call(
                "POST",
                "Patient/$gpc.getstructuredrecord",
                &format!("{ID}operation:gpc.getstructuredrecord-1"),
                Some(params),
                None,
            )
            .await?;
        entries(b)
    }

    async fn appointments(&self, remote_patient: &str, w: &Window) -> Upstream<Vec<Value>> {
        let (_, b) = self
            .call(
                "GET",
                &format!(
                    "Patient/{}/Appointment?start=ge{}&start=le{}",
                    enc(remote_patient),
                    enc(&w.from),
                    enc(&w.to)
                ),
                &format!("{ID}rest:search:patient_appointments-1"),
                None,
                None,
            )
            .await?;
        entries(b)
    }

    async fn read(&self, ty: &str, id: &str) -> Upstream<Option<Value>> {
        let interaction = match ty {
            "Appointment" => "rest:read:appointment-1",
            "Practitioner" => "rest:read:practitioner-1",
            "Location" => "rest:read:location-1",
            "Organization" => "rest:read:organization-1",
            "Patient" => "rest:read:patient-1",
            _ => {
                return Err(UpstreamError::NotSupported(format!(
                    "GP Connect has no read of {ty}"
                )))
            }
        };
        match self
            .call(
                "GET",
                &format!("{ty}/{}", enc(id)),
                &format!("{ID}{interaction}"),
                None,
                None,
            )
            .await
        {
            Ok((_, v)) => one(v, ty).map(Some),
            Err(UpstreamError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn free_slots(&self, w: &Window) -> Upstream<Vec<Value>> {
        let q = format!(
            "Slot?status=free&start=ge{}&end=le{}&_include=Slot:schedule\
             &_include:recurse=Schedule:actor:Practitioner&_include:recurse=Schedule:actor:Location\
             &_include:recurse=Location:managingOrganization&searchFilter={}&searchFilter={}",
            enc(&w.from),
            enc(&w.to),
            enc(&format!("{ODS}|{}", self.cfg.requesting_organization)),
            enc("https://fhir.nhs.uk/STU3/CodeSystem/GPConnect-OrganisationType-1|gp-practice"),
        );
        let (_, b) = self
            .call("GET", &q, &format!("{ID}rest:search:slot-1"), None, None)
            .await?;
        entries(b)
    }

    async fn book(&self, appointment: Value) -> Upstream<Value> {
        let mut body = stu3::appointment_to_stu3(appointment);
        if body.get("created").is_none() {
            body["created"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        let (_, v) = self
            .call(
                "POST",
                "Appointment",
                &format!("{ID}rest:create:appointment-1"),
                Some(body),
                None,
            )
            .await?;
        one(v, "Appointment")
    }

    /// GP Connect's amend and cancel change only what they may (description
    /// and comment; status and the cancellation reason): the supplier's
    /// current STU3 Appointment with those elements taken from ours, at the
    /// version the caller saw.
    async fn update_appointment(
        &self,
        id: &str,
        version: &str,
        appointment: Value,
        cancel: bool,
    ) -> Upstream<Value> {
        let (_, mut body) = self
            .call(
                "GET",
                &format!("Appointment/{}", enc(id)),
                &format!("{ID}rest:read:appointment-1"),
                None,
                None,
            )
            .await?;
        expect(&body, "Appointment")?;
        let o = body
            .as_object_mut()
            .ok_or_else(|| UpstreamError::Bad("not an object".into()))?;
        let interaction = if cancel {
            o.insert("status".into(), json!("cancelled"));
            let reason = appointment
                .pointer("/cancelationReason/text")
                .or_else(|| appointment.pointer("/cancelationReason/coding/0/display"))
                .and_then(Value::as_str)
                .unwrap_or("Cancelled through fhirbridge")
                .to_owned();
            let ext = o.entry("extension").or_insert_with(|| json!([]));
            if let Some(list) = ext.as_array_mut() {
                list.retain(|e| {
                    e.get("url").and_then(Value::as_str) != Some(stu3::CANCEL_REASON_STU3)
                });
                list.push(json!({"url": stu3::CANCEL_REASON_STU3, "valueString": reason}));
            }
            "rest:cancel:appointment-1"
        } else {
            for k in ["description", "comment"] {
                match appointment.get(k) {
                    Some(v) => {
                        o.insert(k.into(), v.clone());
                    }
                    None => {
                        o.remove(k);
                    }
                }
            }
            "rest:update:appointment-1"
        };
        let (_, v) = self
            .call(
                "PUT",
                &format!("Appointment/{}", enc(id)),
                &format!("{ID}{interaction}"),
                Some(body),
                Some(version),
            )
            .await?;
        one(v, "Appointment")
    }

    async fn request_repeat(&self, task: Value) -> Upstream<Value> {
        if self.cfg.kind != SupplierKind::Sandbox {
            return Err(UpstreamError::NotSupported(
                "GP Connect STU3 has no prescription ordering".into(),
            ));
        }
        let (_, v) = self
            .call(
                "POST",
                "Task",
                "urn:fhirbridge:sandbox:rest:create:task-1",
                Some(stu3::task_to_stu3(task)),
                None,
            )
            .await?;
        expect(&v, "Task")?;
        Ok(v)
    }

    async fn ping(&self) -> Upstream<()> {
        let (_, v) = self
            .call(
                "GET",
                "metadata",
                &format!("{ID}rest:read:metadata-1"),
                None,
                None,
            )
            .await?;
        expect(&v, "CapabilityStatement")
    }
}
