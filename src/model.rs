//! Domain vocabulary shared by every layer: resource types, logical ids, versions
//! and instants. Nothing here knows HTTP or SQL.

use std::fmt;
use std::str::FromStr;

/// An R4 resource type. Every concrete R4 type can be stored, searched and
/// exchanged in bundles; the [`ResourceType::WORKFLOW`] types are the ones the
/// NHS workflows (and UK Core validation) centre on. Anything that is not an R4
/// resource type is rejected with 404 before it reaches storage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(u8);

/// Every concrete R4 resource type, sorted (generated from the R4 package by
/// tools/gen_search_params.py; the order is the type's index).
static NAMES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

#[allow(non_upper_case_globals)]
impl ResourceType {
    pub const Account: ResourceType = ResourceType(0);
    pub const ActivityDefinition: ResourceType = ResourceType(1);
    pub const AdverseEvent: ResourceType = ResourceType(2);
    pub const AllergyIntolerance: ResourceType = ResourceType(3);
    pub const Appointment: ResourceType = ResourceType(4);
    pub const AppointmentResponse: ResourceType = ResourceType(5);
    pub const AuditEvent: ResourceType = ResourceType(6);
    pub const Basic: ResourceType = ResourceType(7);
    pub const Binary: ResourceType = ResourceType(8);
    pub const BiologicallyDerivedProduct: ResourceType = ResourceType(9);
    pub const BodyStructure: ResourceType = ResourceType(10);
    pub const Bundle: ResourceType = ResourceType(11);
    pub const CapabilityStatement: ResourceType = ResourceType(12);
    pub const CarePlan: ResourceType = ResourceType(13);
    pub const CareTeam: ResourceType = ResourceType(14);
    pub const CatalogEntry: ResourceType = ResourceType(15);
    pub const ChargeItem: ResourceType = ResourceType(16);
    pub const ChargeItemDefinition: ResourceType = ResourceType(17);
    pub const Claim: ResourceType = ResourceType(18);
    pub const ClaimResponse: ResourceType = ResourceType(19);
    pub const ClinicalImpression: ResourceType = ResourceType(20);
    pub const CodeSystem: ResourceType = ResourceType(21);
    pub const Communication: ResourceType = ResourceType(22);
    pub const CommunicationRequest: ResourceType = ResourceType(23);
    pub const CompartmentDefinition: ResourceType = ResourceType(24);
    pub const Composition: ResourceType = ResourceType(25);
    pub const ConceptMap: ResourceType = ResourceType(26);
    pub const Condition: ResourceType = ResourceType(27);
    pub const Consent: ResourceType = ResourceType(28);
    pub const Contract: ResourceType = ResourceType(29);
    pub const Coverage: ResourceType = ResourceType(30);
    pub const CoverageEligibilityRequest: ResourceType = ResourceType(31);
    pub const CoverageEligibilityResponse: ResourceType = ResourceType(32);
    pub const DetectedIssue: ResourceType = ResourceType(33);
    pub const Device: ResourceType = ResourceType(34);
    pub const DeviceDefinition: ResourceType = ResourceType(35);
    pub const DeviceMetric: ResourceType = ResourceType(36);
    pub const DeviceRequest: ResourceType = ResourceType(37);
    pub const DeviceUseStatement: ResourceType = ResourceType(38);
    pub const DiagnosticReport: ResourceType = ResourceType(39);
    pub const DocumentManifest: ResourceType = ResourceType(40);
    pub const DocumentReference: ResourceType = ResourceType(41);
    pub const EffectEvidenceSynthesis: ResourceType = ResourceType(42);
    pub const Encounter: ResourceType = ResourceType(43);
    pub const Endpoint: ResourceType = ResourceType(44);
    pub const EnrollmentRequest: ResourceType = ResourceType(45);
    pub const EnrollmentResponse: ResourceType = ResourceType(46);
    pub const EpisodeOfCare: ResourceType = ResourceType(47);
    pub const EventDefinition: ResourceType = ResourceType(48);
    pub const Evidence: ResourceType = ResourceType(49);
    pub const EvidenceVariable: ResourceType = ResourceType(50);
    pub const ExampleScenario: ResourceType = ResourceType(51);
    pub const ExplanationOfBenefit: ResourceType = ResourceType(52);
    pub const FamilyMemberHistory: ResourceType = ResourceType(53);
    pub const Flag: ResourceType = ResourceType(54);
    pub const Goal: ResourceType = ResourceType(55);
    pub const GraphDefinition: ResourceType = ResourceType(56);
    pub const Group: ResourceType = ResourceType(57);
    pub const GuidanceResponse: ResourceType = ResourceType(58);
    pub const HealthcareService: ResourceType = ResourceType(59);
    pub const ImagingStudy: ResourceType = ResourceType(60);
    pub const Immunization: ResourceType = ResourceType(61);
    pub const ImmunizationEvaluation: ResourceType = ResourceType(62);
    pub const ImmunizationRecommendation: ResourceType = ResourceType(63);
    pub const ImplementationGuide: ResourceType = ResourceType(64);
    pub const InsurancePlan: ResourceType = ResourceType(65);
    pub const Invoice: ResourceType = ResourceType(66);
    pub const Library: ResourceType = ResourceType(67);
    pub const Linkage: ResourceType = ResourceType(68);
    pub const List: ResourceType = ResourceType(69);
    pub const Location: ResourceType = ResourceType(70);
    pub const Measure: ResourceType = ResourceType(71);
    pub const MeasureReport: ResourceType = ResourceType(72);
    pub const Media: ResourceType = ResourceType(73);
    pub const Medication: ResourceType = ResourceType(74);
    pub const MedicationAdministration: ResourceType = ResourceType(75);
    pub const MedicationDispense: ResourceType = ResourceType(76);
    pub const MedicationKnowledge: ResourceType = ResourceType(77);
    pub const MedicationRequest: ResourceType = ResourceType(78);
    pub const MedicationStatement: ResourceType = ResourceType(79);
    pub const MedicinalProduct: ResourceType = ResourceType(80);
    pub const MedicinalProductAuthorization: ResourceType = ResourceType(81);
    pub const MedicinalProductContraindication: ResourceType = ResourceType(82);
    pub const MedicinalProductIndication: ResourceType = ResourceType(83);
    pub const MedicinalProductIngredient: ResourceType = ResourceType(84);
    pub const MedicinalProductInteraction: ResourceType = ResourceType(85);
    pub const MedicinalProductManufactured: ResourceType = ResourceType(86);
    pub const MedicinalProductPackaged: ResourceType = ResourceType(87);
    pub const MedicinalProductPharmaceutical: ResourceType = ResourceType(88);
    pub const MedicinalProductUndesirableEffect: ResourceType = ResourceType(89);
    pub const MessageDefinition: ResourceType = ResourceType(90);
    pub const MessageHeader: ResourceType = ResourceType(91);
    pub const MolecularSequence: ResourceType = ResourceType(92);
    pub const NamingSystem: ResourceType = ResourceType(93);
    pub const NutritionOrder: ResourceType = ResourceType(94);
    pub const Observation: ResourceType = ResourceType(95);
    pub const ObservationDefinition: ResourceType = ResourceType(96);
    pub const OperationDefinition: ResourceType = ResourceType(97);
    pub const OperationOutcome: ResourceType = ResourceType(98);
    pub const Organization: ResourceType = ResourceType(99);
    pub const OrganizationAffiliation: ResourceType = ResourceType(100);
    pub const Parameters: ResourceType = ResourceType(101);
    pub const Patient: ResourceType = ResourceType(102);
    pub const PaymentNotice: ResourceType = ResourceType(103);
    pub const PaymentReconciliation: ResourceType = ResourceType(104);
    pub const Person: ResourceType = ResourceType(105);
    pub const PlanDefinition: ResourceType = ResourceType(106);
    pub const Practitioner: ResourceType = ResourceType(107);
    pub const PractitionerRole: ResourceType = ResourceType(108);
    pub const Procedure: ResourceType = ResourceType(109);
    pub const Provenance: ResourceType = ResourceType(110);
    pub const Questionnaire: ResourceType = ResourceType(111);
    pub const QuestionnaireResponse: ResourceType = ResourceType(112);
    pub const RelatedPerson: ResourceType = ResourceType(113);
    pub const RequestGroup: ResourceType = ResourceType(114);
    pub const ResearchDefinition: ResourceType = ResourceType(115);
    pub const ResearchElementDefinition: ResourceType = ResourceType(116);
    pub const ResearchStudy: ResourceType = ResourceType(117);
    pub const ResearchSubject: ResourceType = ResourceType(118);
    pub const RiskAssessment: ResourceType = ResourceType(119);
    pub const RiskEvidenceSynthesis: ResourceType = ResourceType(120);
    pub const Schedule: ResourceType = ResourceType(121);
    pub const SearchParameter: ResourceType = ResourceType(122);
    pub const ServiceRequest: ResourceType = ResourceType(123);
    pub const Slot: ResourceType = ResourceType(124);
    pub const Specimen: ResourceType = ResourceType(125);
    pub const SpecimenDefinition: ResourceType = ResourceType(126);
    pub const StructureDefinition: ResourceType = ResourceType(127);
    pub const StructureMap: ResourceType = ResourceType(128);
    pub const Subscription: ResourceType = ResourceType(129);
    pub const Substance: ResourceType = ResourceType(130);
    pub const SubstanceNucleicAcid: ResourceType = ResourceType(131);
    pub const SubstancePolymer: ResourceType = ResourceType(132);
    pub const SubstanceProtein: ResourceType = ResourceType(133);
    pub const SubstanceReferenceInformation: ResourceType = ResourceType(134);
    pub const SubstanceSourceMaterial: ResourceType = ResourceType(135);
    pub const SubstanceSpecification: ResourceType = ResourceType(136);
    pub const SupplyDelivery: ResourceType = ResourceType(137);
    pub const SupplyRequest: ResourceType = ResourceType(138);
    pub const Task: ResourceType = ResourceType(139);
    pub const TerminologyCapabilities: ResourceType = ResourceType(140);
    pub const TestReport: ResourceType = ResourceType(141);
    pub const TestScript: ResourceType = ResourceType(142);
    pub const ValueSet: ResourceType = ResourceType(143);
    pub const VerificationResult: ResourceType = ResourceType(144);
    pub const VisionPrescription: ResourceType = ResourceType(145);
}

impl ResourceType {
    /// Every R4 resource type, in name order.
    pub const ALL: [ResourceType; NAMES.len()] = {
        let mut all = [ResourceType(0); NAMES.len()];
        let mut i = 0;
        while i < NAMES.len() {
            all[i] = ResourceType(i as u8);
            i += 1;
        }
        all
    };

    /// The types of the seed workflows (appointments, prescriptions, consent).
    pub const WORKFLOW: [ResourceType; 11] = [
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
        NAMES[usize::from(self.0)]
    }

    /// Position in [`ResourceType::ALL`] (for per-type tables).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
        NAMES
            .binary_search(&s)
            .map(|i| ResourceType(i as u8))
            .map_err(|_| ())
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
    /// A new server-assigned id: a UUIDv7 (time-ordered, 74 random bits), so
    /// fresh rows land at the right edge of the id indexes instead of on random
    /// pages (about twice the insert rate on large ingests).
    pub fn generate() -> LogicalId {
        LogicalId(uuid::Uuid::now_v7().to_string())
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

/// The version in a version ETag (`W/"3"` or `"3"`), as `If-Match` and a
/// bundle entry's `ifMatch` carry it.
pub fn parse_etag(value: &str) -> Option<VersionId> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.strip_prefix('"')?.strip_suffix('"')?;
    v.parse::<VersionId>().ok().filter(|n| *n > 0)
}

/// One stored version of a resource. `content` is the exact JSON served to clients
/// (with `meta.versionId` and `meta.lastUpdated` already stamped); it is `None`
/// for a deletion.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub resource_type: ResourceType,
    pub id: LogicalId,
    pub version: VersionId,
    pub last_updated: Instant,
    pub content: Option<String>,
}

impl StoredResource {
    pub fn is_deleted(&self) -> bool {
        self.content.is_none()
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
        assert_eq!(ResourceType::ALL.len(), 146);
        assert_eq!(
            "Observation".parse::<ResourceType>(),
            Ok(ResourceType::Observation)
        );
        assert!("Foo".parse::<ResourceType>().is_err());
        assert!("patient".parse::<ResourceType>().is_err());
        assert!("Resource".parse::<ResourceType>().is_err());
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
