//! Domain vocabulary shared by every layer: resource types, logical ids, versions
//! and instants. Nothing here knows HTTP or SQL.

use std::fmt;
use std::str::FromStr;

/// The resource types this server stores and serves. Anything else is rejected
/// with 404 before it reaches storage, and is absent from the CapabilityStatement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Patient,
    Appointment,
    MedicationRequest,
    Consent,
    Slot,
    Schedule,
    Practitioner,
    PractitionerRole,
    Organization,
    Location,
    Medication,
}

impl ResourceType {
    pub const ALL: [ResourceType; 11] = [
        ResourceType::Patient,
        ResourceType::Appointment,
        ResourceType::MedicationRequest,
        ResourceType::Consent,
        ResourceType::Slot,
        ResourceType::Schedule,
        ResourceType::Practitioner,
        ResourceType::PractitionerRole,
        ResourceType::Organization,
        ResourceType::Location,
        ResourceType::Medication,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Patient => "Patient",
            ResourceType::Appointment => "Appointment",
            ResourceType::MedicationRequest => "MedicationRequest",
            ResourceType::Consent => "Consent",
            ResourceType::Slot => "Slot",
            ResourceType::Schedule => "Schedule",
            ResourceType::Practitioner => "Practitioner",
            ResourceType::PractitionerRole => "PractitionerRole",
            ResourceType::Organization => "Organization",
            ResourceType::Location => "Location",
            ResourceType::Medication => "Medication",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ResourceType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or(())
    }
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogicalId(String);

impl LogicalId {
    pub fn parse(s: &str) -> Option<LogicalId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        ok.then(|| LogicalId(s.to_owned()))
    }

    /// A fresh server-assigned id (a UUID v4, which is a valid FHIR id).
    pub fn generate() -> LogicalId {
        LogicalId(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LogicalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Server-owned version number of a resource (`meta.versionId`), starting at 1.
pub type VersionId = i64;

/// Milliseconds since the Unix epoch, UTC. The server's clock for `meta.lastUpdated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub i64);

impl Instant {
    pub fn now() -> Instant {
        Instant(chrono::Utc::now().timestamp_millis())
    }

    /// FHIR `instant` form, e.g. `2026-11-21T10:00:00.123Z`.
    pub fn to_fhir(self) -> String {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            None => "1970-01-01T00:00:00.000Z".to_owned(),
        }
    }

    /// HTTP-date form for `Last-Modified`.
    pub fn to_http_date(self) -> String {
        let secs = u64::try_from(self.0.div_euclid(1000)).unwrap_or(0);
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }

    /// Whole seconds, for comparisons with HTTP dates (which have no fraction).
    pub fn seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids() {
        assert!(LogicalId::parse("abc-1.2").is_some());
        assert!(LogicalId::parse("").is_none());
        assert!(LogicalId::parse("a b").is_none());
        assert!(LogicalId::parse("a/b").is_none());
        assert!(LogicalId::parse(&"x".repeat(65)).is_none());
        assert!(LogicalId::parse(&"x".repeat(64)).is_some());
        assert!(LogicalId::parse(LogicalId::generate().as_str()).is_some());
    }

    #[test]
    fn resource_types_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(t.as_str().parse::<ResourceType>(), Ok(t));
        }
        assert!("Observation".parse::<ResourceType>().is_err());
    }

    #[test]
    fn instants_format() {
        assert_eq!(Instant(0).to_fhir(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Instant(1_500).to_http_date(),
            "Thu, 01 Jan 1970 00:00:01 GMT"
        );
    }
}
