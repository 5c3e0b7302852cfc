//! A supplier's ids onto ours and back. A remote resource's id is
//! `{supplier}.{its id}` (a FHIR id: the supplier's name has no `.`, local
//! ids are UUIDs, so the two never collide); every relative reference in it
//! gets the same prefix, except references to the patient the request is
//! about, which point at our local Patient (so compartments, Consents and
//! audit see the patient they know). `meta.versionId` is the supplier's
//! when it is a positive integer, else a stable hash of it, so `If-Match`
//! can be checked against the supplier's current version. `meta.source`
//! names the supplier.

use serde_json::Value;

use crate::model::{Instant, LogicalId, ResourceType, StoredResource, VersionId};

/// The patient a request is about: the supplier's id and ours.
#[derive(Debug, Clone)]
pub struct PatientLink {
    pub remote: String,
    pub local: String,
}

/// Our version number for a supplier's `meta.versionId`.
pub fn version(remote: Option<&str>) -> VersionId {
    match remote {
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => n,
            _ => {
                // FNV-1a, folded into the positive i64 range.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in s.bytes() {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                ((h >> 1) as i64).max(1)
            }
        },
        None => 1,
    }
}

pub fn remote_version(v: &Value) -> Option<String> {
    v.pointer("/meta/versionId")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn walk_refs(
    v: &mut Value,
    f: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
) -> Result<(), String> {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference" {
                    if let Value::String(s) = x {
                        if let Some(new) = f(s)? {
                            *s = new;
                        }
                    }
                } else if k != "contained" || x.is_array() {
                    walk_refs(x, f)?;
                }
            }
            Ok(())
        }
        Value::Array(a) => {
            for x in a {
                walk_refs(x, f)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn relative(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('#') || s.contains("://") || s.starts_with("urn:") {
        return None;
    }
    let (ty, id) = s.split_once('/')?;
    if ty.parse::<ResourceType>().is_err() || id.contains('/') {
        return None;
    }
    Some((ty, id))
}

fn prefixed(supplier: &str, id: &str) -> Result<String, String> {
    let out = format!("{supplier}.{id}");
    LogicalId::parse(&out).map(|_| out).ok_or_else(|| {
        "the supplier's answer holds an id that is not a FHIR id (or too long to map)".to_owned()
    })
}

/// A supplier's R4 resource as ours.
pub fn to_local(
    v: &mut Value,
    supplier: &str,
    source: &str,
    patient: Option<&PatientLink>,
) -> Result<(), String> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or("the supplier's resource has no id")?
        .to_owned();
    let ty = v
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mine = if ty == "Patient" && patient.is_some_and(|p| p.remote == id) {
        patient.map(|p| p.local.clone()).unwrap_or_default()
    } else {
        prefixed(supplier, &id)?
    };
    v["id"] = Value::String(mine);
    walk_refs(v, &mut |s| {
        let Some((ty, id)) = relative(s) else {
            return Ok(None);
        };
        if ty == "Patient" {
            if let Some(p) = patient.filter(|p| p.remote == id) {
                return Ok(Some(format!("Patient/{}", p.local)));
            }
        }
        Ok(Some(format!("{ty}/{}", prefixed(supplier, id)?)))
    })?;
    let remote_version = remote_version(v);
    let meta = v
        .as_object_mut()
        .ok_or("not an object")?
        .entry("meta")
        .or_insert_with(|| serde_json::json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert(
            "versionId".into(),
            Value::String(version(remote_version.as_deref()).to_string()),
        );
        if !m.contains_key("lastUpdated") {
            m.insert(
                "lastUpdated".into(),
                Value::String(Instant::now().to_fhir()),
            );
        }
        m.insert("source".into(), Value::String(source.to_owned()));
    }
    Ok(())
}

/// Our R4 resource (to send to `supplier`) with the supplier's ids: our
/// prefix taken off, our patient's references pointing at the supplier's
/// patient. A reference to a local resource of another kind cannot be
/// sent: `Err`.
pub fn to_remote(
    v: &mut Value,
    supplier: &str,
    patient: Option<&PatientLink>,
) -> Result<(), String> {
    let prefix = format!("{supplier}.");
    if let Some(id) = v.get("id").and_then(Value::as_str) {
        let stripped = id.strip_prefix(&prefix).map(str::to_owned);
        match stripped {
            Some(s) => v["id"] = Value::String(s),
            None => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("id");
                }
            }
        }
    }
    walk_refs(v, &mut |s| {
        let Some((ty, id)) = relative(s) else {
            return Ok(None);
        };
        if let Some(rest) = id.strip_prefix(&prefix) {
            return Ok(Some(format!("{ty}/{rest}")));
        }
        if ty == "Patient" {
            if let Some(p) = patient.filter(|p| p.local == id) {
                return Ok(Some(format!("Patient/{}", p.remote)));
            }
        }
        Err(format!(
            "{ty}/{id} is not held by this practice's GP system, so it cannot be sent there"
        ))
    })
}

/// A mapped resource as a stored one (for the policy and the encoders).
pub fn stored(v: &Value) -> Option<StoredResource> {
    let ty: ResourceType = v.get("resourceType")?.as_str()?.parse().ok()?;
    let id = LogicalId::parse(v.get("id")?.as_str()?)?;
    let version = v
        .pointer("/meta/versionId")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let last_updated = v
        .pointer("/meta/lastUpdated")
        .and_then(Value::as_str)
        .and_then(crate::workflow::fhir::instant)
        .map(|t| Instant(t.timestamp_millis()))
        .unwrap_or_else(Instant::now);
    Some(StoredResource {
        resource_type: ty,
        id,
        version,
        last_updated,
        content: Some(v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_and_references_round_trip() {
        let p = PatientLink {
            remote: "2".into(),
            local: "pat-1".into(),
        };
        let mut a = json!({"resourceType": "Appointment", "id": "148", "meta": {"versionId": "3"},
            "slot": [{"reference": "Slot/9"}], "contained": [{"resourceType": "Organization", "id": "1"}],
            "participant": [{"actor": {"reference": "Patient/2"}}, {"actor": {"reference": "Location/17"}}],
            "extension": [{"url": "x", "valueReference": {"reference": "#1"}}]});
        to_local(&mut a, "gp-a", "https://gp.example/fhir", Some(&p)).unwrap();
        assert_eq!(a["id"], "gp-a.148");
        assert_eq!(a["slot"][0]["reference"], "Slot/gp-a.9");
        assert_eq!(a["participant"][0]["actor"]["reference"], "Patient/pat-1");
        assert_eq!(a["extension"][0]["valueReference"]["reference"], "#1");
        assert_eq!(a["contained"][0]["id"], "1");
        assert_eq!(a["meta"]["versionId"], "3");
        assert_eq!(a["meta"]["source"], "https://gp.example/fhir");
        to_remote(&mut a, "gp-a", Some(&p)).unwrap();
        assert_eq!(a["id"], "148");
        assert_eq!(a["participant"][0]["actor"]["reference"], "Patient/2");
        assert_eq!(a["participant"][1]["actor"]["reference"], "Location/17");
        let mut bad =
            json!({"resourceType": "Appointment", "slot": [{"reference": "Slot/local-1"}]});
        assert!(to_remote(&mut bad, "gp-a", Some(&p)).is_err());
    }

    #[test]
    fn versions_are_stable() {
        assert_eq!(version(Some("7")), 7);
        let h = version(Some("W/abc"));
        assert!(h > 0);
        assert_eq!(h, version(Some("W/abc")));
        let mut long = json!({"resourceType": "Slot", "id": "x".repeat(60)});
        assert!(to_local(&mut long, "gp-a", "s", None).is_err());
    }
}
