//! Default type provider selection and the [`TypeProvider`] implementation
//! for the R4 model of `fhir-structure` (feature `r4-model`, on by default).

#[cfg(feature = "r4-model")]
use crate::types::ElementType;
use crate::types::TypeProvider;

/// The provider used by `EvalContext::new()`.
pub(crate) fn default_provider() -> &'static dyn TypeProvider {
    #[cfg(feature = "r4-model")]
    {
        fhir_structure::model::Model::r4()
    }
    #[cfg(not(feature = "r4-model"))]
    {
        &crate::types::UNTYPED
    }
}

/// Maps FHIRPath System types used in the R4 definitions to FHIR primitive names.
#[cfg(feature = "r4-model")]
fn system_to_fhir(
    model: &fhir_structure::model::Model,
    parent: &str,
    json_name: &str,
    t: &str,
) -> &'static str {
    use fhir_structure::model::Kind;
    match (json_name, t) {
        ("id", _)
            if model
                .type_def(parent)
                .is_some_and(|d| d.kind == Kind::Resource) =>
        {
            "id"
        }
        ("id", _) => "string",
        ("url", "String") => "uri",
        (_, "Boolean") => "boolean",
        (_, "Integer") => "integer",
        (_, "Decimal") => "decimal",
        (_, "Date") => "date",
        (_, "DateTime") => "dateTime",
        (_, "Time") => "time",
        _ => "string",
    }
}

#[cfg(feature = "r4-model")]
impl TypeProvider for fhir_structure::model::Model {
    fn element_type(&self, parent_type: &str, json_name: &str) -> Option<ElementType<'_>> {
        let e = self.element(parent_type, json_name)?;
        let type_name = match e
            .type_name
            .strip_prefix(fhir_structure::model::SYSTEM_TYPE_PREFIX)
        {
            Some(sys) => system_to_fhir(self, parent_type, json_name, sys),
            None => e.type_name,
        };
        Some(ElementType {
            type_name,
            is_array: e.is_array,
            choice: e.choice,
        })
    }

    fn base_type(&self, type_name: &str) -> Option<&str> {
        self.type_def(type_name)?.base.as_deref()
    }

    fn is_known_type(&self, type_name: &str) -> bool {
        self.type_def(type_name).is_some()
    }

    fn is_resource_type(&self, type_name: &str) -> bool {
        self.type_def(type_name)
            .is_some_and(|d| d.kind == fhir_structure::model::Kind::Resource)
    }
}
