//! Type knowledge: the [`TypeProvider`] trait that supplies FHIR element
//! types, a built-in fallback (primitive and data-type names, the primitive
//! inheritance hierarchy, choice-suffix decoding) and subtype checks.

/// The declared type of an element as known to a [`TypeProvider`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElementType<'t> {
    /// FHIR type name (`"HumanName"`, `"code"`, `"Patient.contact"` for backbone elements).
    pub type_name: &'t str,
    /// Whether the element repeats (`max = *`).
    pub is_array: bool,
    /// Whether `json_name` was a choice-type expansion (`deceasedBoolean` of `deceased[x]`).
    pub choice: bool,
}

/// Supplies FHIR type information to the evaluator.
///
/// Implementations must be cheap to query: the evaluator calls
/// [`TypeProvider::element_type`] once per navigation step.
pub trait TypeProvider: Send + Sync {
    /// Type of the element written as `json_name` in JSON inside an object of
    /// type `parent_type` (choice elements are looked up by their expanded
    /// JSON name, e.g. `("Observation", "valueQuantity")`).
    fn element_type(&self, parent_type: &str, json_name: &str) -> Option<ElementType<'_>>;
    /// The base type of `type_name` (`"code"` -> `"string"`, `"Patient"` -> `"DomainResource"`).
    fn base_type(&self, type_name: &str) -> Option<&str>;
    /// Whether `type_name` names a known FHIR type (resource, data type or primitive).
    fn is_known_type(&self, type_name: &str) -> bool;
    /// Whether `type_name` names a resource type.
    fn is_resource_type(&self, type_name: &str) -> bool;
    /// Whether this provider knows element types (false for the untyped fallback).
    fn is_typed(&self) -> bool {
        true
    }
}

/// A provider with no element model: types come only from choice suffixes,
/// `resourceType` and the built-in tables.
#[derive(Clone, Copy, Debug, Default)]
pub struct UntypedProvider;

/// The shared untyped provider instance.
pub static UNTYPED: UntypedProvider = UntypedProvider;

impl TypeProvider for UntypedProvider {
    fn element_type(&self, _parent_type: &str, _json_name: &str) -> Option<ElementType<'_>> {
        None
    }
    fn base_type(&self, type_name: &str) -> Option<&str> {
        builtin_base(type_name)
    }
    fn is_known_type(&self, type_name: &str) -> bool {
        builtin_known(type_name) || type_name.starts_with(|c: char| c.is_ascii_uppercase())
    }
    fn is_resource_type(&self, type_name: &str) -> bool {
        type_name.starts_with(|c: char| c.is_ascii_uppercase())
            && !DATA_TYPES.contains(&type_name)
            && type_name.chars().all(|c| c.is_ascii_alphanumeric())
    }
    fn is_typed(&self) -> bool {
        false
    }
}

/// FHIR primitive type names (R4 plus `integer64`).
pub const PRIMITIVES: &[&str] = &[
    "boolean",
    "integer",
    "string",
    "decimal",
    "uri",
    "url",
    "canonical",
    "base64Binary",
    "instant",
    "date",
    "dateTime",
    "time",
    "code",
    "oid",
    "id",
    "markdown",
    "unsignedInt",
    "positiveInt",
    "uuid",
    "xhtml",
    "integer64",
];

/// FHIR complex data type names (R4).
pub const DATA_TYPES: &[&str] = &[
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "BackboneElement",
    "CodeableConcept",
    "CodeableReference",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Contributor",
    "Count",
    "DataRequirement",
    "Distance",
    "Dosage",
    "Duration",
    "Element",
    "ElementDefinition",
    "Expression",
    "Extension",
    "HumanName",
    "Identifier",
    "MarketingStatus",
    "Meta",
    "Money",
    "MoneyQuantity",
    "Narrative",
    "ParameterDefinition",
    "Period",
    "Population",
    "ProdCharacteristic",
    "ProductShelfLife",
    "Quantity",
    "Range",
    "Ratio",
    "RatioRange",
    "Reference",
    "RelatedArtifact",
    "SampledData",
    "Signature",
    "SimpleQuantity",
    "SubstanceAmount",
    "Timing",
    "TriggerDefinition",
    "UsageContext",
];

/// Names of the FHIRPath System types.
pub const SYSTEM_TYPES: &[&str] = &[
    "Boolean", "String", "Integer", "Long", "Decimal", "Date", "DateTime", "Time", "Quantity",
];

/// Whether `t` is a FHIR primitive type name.
pub fn is_primitive(t: &str) -> bool {
    PRIMITIVES.contains(&t)
}

/// Whether `t` is one of the quantity-derived types.
pub fn is_quantity_type(t: &str) -> bool {
    matches!(
        t,
        "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity" | "MoneyQuantity"
    )
}

/// Decodes the type suffix of a choice element (`"String"` -> `"string"`,
/// `"Quantity"` -> `"Quantity"`).
pub fn choice_suffix_type(suffix: &str) -> Option<&'static str> {
    for p in PRIMITIVES {
        let mut cs = p.chars();
        if let Some(first) = cs.next() {
            let rest = cs.as_str();
            if suffix.len() == p.len()
                && suffix.starts_with(first.to_ascii_uppercase())
                && &suffix[1..] == rest
            {
                return Some(p);
            }
        }
    }
    DATA_TYPES.iter().find(|d| **d == suffix).copied()
}

fn builtin_known(t: &str) -> bool {
    is_primitive(t)
        || DATA_TYPES.contains(&t)
        || matches!(
            t,
            "Resource" | "DomainResource" | "Bundle" | "Parameters" | "Binary"
        )
}

/// Base types known without a model.
pub fn builtin_base(t: &str) -> Option<&'static str> {
    Some(match t {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "unsignedInt" | "positiveInt" => "integer",
        "Age" | "Count" | "Distance" | "Duration" | "SimpleQuantity" | "MoneyQuantity" => {
            "Quantity"
        }
        "Dosage" | "ElementDefinition" | "Timing" | "MarketingStatus" | "Population"
        | "ProdCharacteristic" | "ProductShelfLife" | "SubstanceAmount" => "BackboneElement",
        "Element" | "Resource" => return None,
        "DomainResource" | "Bundle" | "Parameters" | "Binary" => "Resource",
        _ if is_primitive(t) || DATA_TYPES.contains(&t) => "Element",
        _ if t.contains('.') => "BackboneElement",
        _ if t.starts_with(|c: char| c.is_ascii_uppercase()) => "DomainResource",
        _ => return None,
    })
}

/// Whether `t` is `of` or derives from it.
pub fn is_subtype(types: &dyn TypeProvider, t: &str, of: &str) -> bool {
    if t == of {
        return true;
    }
    let mut cur: &str = t;
    for _ in 0..16 {
        let next = types.base_type(cur).or_else(|| builtin_base(cur));
        match next {
            Some(b) if b == of => return true,
            Some(b) if b != cur => cur = b,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(choice_suffix_type("String"), Some("string"));
        assert_eq!(choice_suffix_type("DateTime"), Some("dateTime"));
        assert_eq!(choice_suffix_type("Quantity"), Some("Quantity"));
        assert_eq!(choice_suffix_type("Base64Binary"), Some("base64Binary"));
        assert_eq!(choice_suffix_type("Set"), None);
    }

    #[test]
    fn subtypes() {
        assert!(is_subtype(&UNTYPED, "code", "string"));
        assert!(!is_subtype(&UNTYPED, "code", "id"));
        assert!(is_subtype(&UNTYPED, "Age", "Quantity"));
        assert!(is_subtype(&UNTYPED, "Patient", "Resource"));
        assert!(!is_subtype(&UNTYPED, "uri", "url"));
    }
}
