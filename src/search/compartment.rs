//! The R4 Patient compartment (CompartmentDefinition `patient`, from the
//! search registry) as a search predicate: what `Patient/[id]/[type]`
//! searches and what a `patient/` token is confined to.

use super::registry::{self, ParamKind};
use super::types::{Predicate, ReferenceValue, Test};
use crate::model::ResourceType;

/// Whether `ty` has members in a patient's compartment.
pub fn in_patient_compartment(ty: ResourceType) -> bool {
    ty == ResourceType::Patient || !registry::registry().patient_compartment(ty).is_empty()
}

/// The predicate "this `ty` resource is in Patient `id`'s compartment"
/// (its compartment parameters OR-ed; the Patient itself by id). `None`:
/// `ty` is not in the Patient compartment.
pub fn patient(ty: ResourceType, id: &str) -> Option<Predicate> {
    let mut any = Vec::new();
    if ty == ResourceType::Patient {
        any.push(Predicate::Id {
            ids: vec![id.to_owned()],
            not: false,
        });
    }
    for code in registry::registry().patient_compartment(ty) {
        if code == "{def}" {
            continue;
        }
        if let Some(def) = registry::lookup(ty, code).filter(|d| d.kind == ParamKind::Reference) {
            any.push(Predicate::Index {
                param: def,
                test: Test::Reference(vec![ReferenceValue {
                    target_type: Some(ResourceType::Patient),
                    id: id.to_owned(),
                    url: false,
                }]),
                not: false,
            });
        }
    }
    (!any.is_empty()).then_some(Predicate::AnyOf(any))
}
