//! The FHIR R4 type model: every resource type, complex datatype, primitive type
//! and backbone element of FHIR 4.0.1, loaded from the generated table
//! `profiles/r4-elements.json` (see `tools/gen_r4_elements.py`).
//!
//! Each [`TypeDef`] lists only the elements *defined on* that type; inherited
//! elements are reached through [`TypeDef::base`] (e.g. `Patient` →
//! `DomainResource` → `Resource`, `HumanName` → `Element`). Backbone elements are
//! types of their own named by their path (`Patient.contact`,
//! `Bundle.entry.request`), and `contentReference`s resolve to those names.
//!
//! [`Model::element`] resolves a JSON property name (including choice-type
//! variants such as `deceasedBoolean`) to its definition using a precomputed,
//! flattened per-type index, so lookups are a single hash probe.

use crate::fx::FxMap;

use once_cell::sync::Lazy;
use serde_json::Value;

use crate::primitive::Prim;

/// The generated R4 element table, embedded at compile time.
const R4_ELEMENTS: &str = include_str!("../../../profiles/r4-elements.json");

/// Prefix of the FHIRPath system types used for primitive `value` elements,
/// `Element.id`, `Extension.url` and `Resource.id`.
pub const SYSTEM_TYPE_PREFIX: &str = "http://hl7.org/fhirpath/System.";

/// What kind of type a [`TypeDef`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A resource (possibly abstract: `Resource`, `DomainResource`).
    Resource,
    /// A complex datatype such as `HumanName` (also `Element`, `BackboneElement`).
    ComplexType,
    /// A primitive datatype such as `date` or `code`.
    PrimitiveType,
    /// A backbone element defined inline in a resource or datatype, named by its path.
    Backbone,
}

/// One type of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDef {
    /// Type name: `Patient`, `HumanName`, `date`, or a backbone path such as `Patient.contact`.
    pub name: String,
    pub kind: Kind,
    /// The type this one specialises; `None` only for the roots `Resource` and `Element`.
    pub base: Option<String>,
    pub is_abstract: bool,
    /// Elements defined on this type itself (not inherited ones), in definition order.
    pub elements: Vec<ElementDef>,
    /// For primitive types: the lexical regex from the specification (unanchored,
    /// XML Schema flavour: `\s` means only space, tab, CR and LF).
    pub regex: Option<String>,
}

/// One element of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementDef {
    /// Element name as in the definition, e.g. `deceased[x]` for choice elements.
    pub name: String,
    /// Allowed types: FHIR type names, backbone type names (`Patient.contact`) or
    /// FHIRPath system types (`http://hl7.org/fhirpath/System.String`).
    pub types: Vec<String>,
    pub min: u32,
    /// Maximum cardinality; `None` means unbounded (`*`).
    pub max: Option<u32>,
    pub summary: bool,
    pub modifier: bool,
    /// Only `required` and `extensible` bindings are recorded.
    pub binding: Option<Binding>,
}

/// A terminology binding of a coded element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `required` or `extensible`.
    pub strength: String,
    /// Canonical URL of the value set, possibly with `|version`.
    pub value_set: String,
}

/// A JSON property name resolved against a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementRef<'a> {
    pub def: &'a ElementDef,
    /// The concrete type of this property (for `deceasedBoolean`: `boolean`).
    pub type_name: &'a str,
    /// Whether the element repeats (max != 1), i.e. must be a JSON array.
    pub is_array: bool,
    /// Whether the element is a choice element (`[x]`).
    pub choice: bool,
}

impl ElementDef {
    /// Whether this is a choice element (`value[x]`).
    pub fn is_choice(&self) -> bool {
        self.name.ends_with("[x]")
    }

    /// Whether this element repeats (max != 1).
    pub fn is_array(&self) -> bool {
        self.max != Some(1)
    }
}

/// A resolved property of a type (flattened over the base chain and choice variants).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prop {
    /// Type id of the type defining the element.
    pub owner: u32,
    /// Index of the element in the owner's `elements`.
    pub elem: u32,
    /// Index into the element's `types` of the concrete type.
    pub ty: u32,
    /// Type id of the concrete type (`None` for FHIRPath system types).
    pub type_id: Option<u32>,
    /// Index of the element in the flattened element list of the looked-up type.
    pub flat: u16,
    pub choice: bool,
    pub is_array: bool,
    /// The primitive to check values against, for primitive-typed elements.
    pub prim: Option<Prim>,
}

/// Per-type precomputed lookup data.
#[derive(Debug, Default)]
pub(crate) struct TypeIndex {
    pub props: FxMap<Box<str>, Prop>,
    /// Flattened elements, base first: (owner type id, element index).
    pub flat: Vec<(u32, u32)>,
    /// Indices into `flat` of elements with min >= 1.
    pub required: Vec<u16>,
}

/// The FHIR type model. Obtain the R4 model with [`Model::r4`].
#[derive(Debug)]
pub struct Model {
    types: Vec<TypeDef>,
    by_name: FxMap<Box<str>, u32>,
    index: Vec<TypeIndex>,
}

static R4: Lazy<Model> = Lazy::new(|| {
    // The table is generated at build time and verified by unit tests; failing
    // to parse it is a build defect, not a data error.
    #[allow(clippy::expect_used)]
    Model::from_json(R4_ELEMENTS).expect("embedded profiles/r4-elements.json is invalid")
});

impl Model {
    /// The R4 model, parsed once (lazily) from `profiles/r4-elements.json`
    /// embedded with `include_str!`.
    pub fn r4() -> &'static Model {
        &R4
    }

    /// Parse a model from the JSON table format written by `tools/gen_r4_elements.py`.
    pub fn from_json(text: &str) -> Result<Model, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let types_obj = doc
            .get("types")
            .and_then(Value::as_object)
            .ok_or("missing \"types\" object")?;
        let mut types = Vec::with_capacity(types_obj.len());
        for (name, t) in types_obj {
            types.push(parse_type(name, t)?);
        }
        let mut by_name = FxMap::default();
        for (i, t) in types.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| "too many types")?;
            by_name.insert(t.name.clone().into_boxed_str(), id);
        }
        let mut model = Model {
            types,
            by_name,
            index: Vec::new(),
        };
        let mut index = Vec::with_capacity(model.types.len());
        for i in 0..model.types.len() {
            index.push(model.build_index(i)?);
        }
        model.index = index;
        Ok(model)
    }

    /// Look up a type by name (`Patient`, `HumanName`, `date`, `Patient.contact`).
    pub fn type_def(&self, name: &str) -> Option<&TypeDef> {
        self.type_id(name).and_then(|id| self.type_by_id(id))
    }

    /// Whether `name` is a concrete (non-abstract) resource type.
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.type_def(name)
            .is_some_and(|t| t.kind == Kind::Resource && !t.is_abstract)
    }

    /// Resolve a JSON property name on a type, walking the base chain and choice
    /// types: `element("Patient", "deceasedBoolean")` gives the `deceased[x]`
    /// definition with `type_name` `boolean`. Primitive extension properties
    /// (`_birthDate`) are not resolved: strip the underscore first.
    pub fn element(&self, type_name: &str, json_name: &str) -> Option<ElementRef<'_>> {
        let id = self.type_id(type_name)?;
        let prop = self.prop(id, json_name)?;
        self.element_ref(prop)
    }

    /// All elements of a type including inherited ones, base first.
    pub fn all_elements(&self, type_name: &str) -> Vec<&ElementDef> {
        let Some(id) = self.type_id(type_name) else {
            return Vec::new();
        };
        let Some(ix) = self.index.get(id as usize) else {
            return Vec::new();
        };
        ix.flat
            .iter()
            .filter_map(|&(owner, elem)| self.elem_def(owner, elem))
            .collect()
    }

    /// Iterate over all types of the model.
    pub fn types(&self) -> impl Iterator<Item = &TypeDef> {
        self.types.iter()
    }

    // ---- crate-internal fast paths (ids instead of names) ----

    pub(crate) fn type_id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn type_by_id(&self, id: u32) -> Option<&TypeDef> {
        self.types.get(id as usize)
    }

    pub(crate) fn type_index(&self, id: u32) -> Option<&TypeIndex> {
        self.index.get(id as usize)
    }

    pub(crate) fn prop(&self, id: u32, json_name: &str) -> Option<&Prop> {
        self.index.get(id as usize)?.props.get(json_name)
    }

    pub(crate) fn elem_def(&self, owner: u32, elem: u32) -> Option<&ElementDef> {
        self.types.get(owner as usize)?.elements.get(elem as usize)
    }

    pub(crate) fn element_ref(&self, prop: &Prop) -> Option<ElementRef<'_>> {
        let def = self.elem_def(prop.owner, prop.elem)?;
        let type_name = def.types.get(prop.ty as usize)?;
        Some(ElementRef {
            def,
            type_name,
            is_array: prop.is_array,
            choice: prop.choice,
        })
    }

    fn build_index(&self, id: usize) -> Result<TypeIndex, String> {
        // base chain, root first
        let mut chain = Vec::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            if chain.contains(&c) || chain.len() > 64 {
                return Err(format!("base cycle at {}", self.name_of(id)));
            }
            chain.push(c);
            cur = match self.types.get(c).and_then(|t| t.base.as_deref()) {
                Some(b) => Some(
                    self.type_id(b)
                        .ok_or_else(|| format!("unknown base type {b}"))?
                        as usize,
                ),
                None => None,
            };
        }
        chain.reverse();
        let mut ix = TypeIndex::default();
        for &owner in &chain {
            let Some(t) = self.types.get(owner) else {
                continue;
            };
            for (ei, e) in t.elements.iter().enumerate() {
                let flat = u16::try_from(ix.flat.len()).map_err(|_| "too many elements")?;
                let owner32 = owner as u32;
                let elem32 = ei as u32;
                ix.flat.push((owner32, elem32));
                if e.min >= 1 {
                    ix.required.push(flat);
                }
                let is_array = e.is_array();
                let owner_name = t.name.as_str();
                if let Some(prefix) = e.name.strip_suffix("[x]") {
                    for (ti, ty) in e.types.iter().enumerate() {
                        let key = format!("{prefix}{}", capitalize(ty));
                        let prop = self.make_prop(owner_name, e, ty, owner32, elem32, ti, flat)?;
                        ix.props.insert(
                            key.into_boxed_str(),
                            Prop {
                                choice: true,
                                is_array,
                                ..prop
                            },
                        );
                    }
                } else {
                    let ty = e
                        .types
                        .first()
                        .ok_or_else(|| format!("{}.{} has no type", t.name, e.name))?;
                    let prop = self.make_prop(owner_name, e, ty, owner32, elem32, 0, flat)?;
                    ix.props.insert(
                        e.name.clone().into_boxed_str(),
                        Prop {
                            choice: false,
                            is_array,
                            ..prop
                        },
                    );
                }
            }
        }
        Ok(ix)
    }

    #[allow(clippy::too_many_arguments)]
    fn make_prop(
        &self,
        owner_name: &str,
        e: &ElementDef,
        ty: &str,
        owner: u32,
        elem: u32,
        ti: usize,
        flat: u16,
    ) -> Result<Prop, String> {
        let type_id = if ty.starts_with(SYSTEM_TYPE_PREFIX) {
            None
        } else {
            Some(
                self.type_id(ty)
                    .ok_or_else(|| format!("{owner_name}.{}: unknown type {ty}", e.name))?,
            )
        };
        let prim = match type_id.and_then(|i| self.type_by_id(i)) {
            Some(t) if t.kind == Kind::PrimitiveType => Prim::from_name(&t.name),
            Some(_) => None,
            None => system_prim(owner_name, &e.name, ty),
        };
        Ok(Prop {
            owner,
            elem,
            ty: u32::try_from(ti).map_err(|_| "too many types")?,
            type_id,
            flat,
            choice: false,
            is_array: false,
            prim,
        })
    }

    fn name_of(&self, id: usize) -> &str {
        self.types.get(id).map_or("?", |t| t.name.as_str())
    }
}

/// The primitive to check a system-typed element against. `Resource.id` is an
/// `id` and `Extension.url` a `uri` (their definitions carry the FHIRPath
/// system type `System.String`).
fn system_prim(owner: &str, name: &str, ty: &str) -> Option<Prim> {
    match (owner, name) {
        ("Resource", "id") => return Some(Prim::Id),
        ("Extension", "url") => return Some(Prim::Uri),
        _ => {}
    }
    Prim::from_name(ty)
}

/// `dateTime` → `DateTime` (choice-type suffix).
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn parse_type(name: &str, t: &Value) -> Result<TypeDef, String> {
    let kind = match t.get("kind").and_then(Value::as_str) {
        Some("resource") => Kind::Resource,
        Some("complex-type") => Kind::ComplexType,
        Some("primitive-type") => Kind::PrimitiveType,
        Some("backbone") => Kind::Backbone,
        other => return Err(format!("{name}: bad kind {other:?}")),
    };
    let mut elements = Vec::new();
    if let Some(els) = t.get("elements").and_then(Value::as_array) {
        for e in els {
            elements.push(parse_element(name, e)?);
        }
    }
    Ok(TypeDef {
        name: name.to_string(),
        kind,
        base: t.get("base").and_then(Value::as_str).map(str::to_string),
        is_abstract: t.get("abstract").and_then(Value::as_bool).unwrap_or(false),
        elements,
        regex: t.get("regex").and_then(Value::as_str).map(str::to_string),
    })
}

fn parse_element(type_name: &str, e: &Value) -> Result<ElementDef, String> {
    let name = e
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{type_name}: element without name"))?;
    let types = e
        .get("types")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if types.is_empty() {
        return Err(format!("{type_name}.{name}: no types"));
    }
    let min = e
        .get("min")
        .and_then(Value::as_u64)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0);
    let max = match e.get("max").and_then(Value::as_str) {
        Some("*") | None => None,
        Some(m) => Some(
            m.parse::<u32>()
                .map_err(|_| format!("{type_name}.{name}: bad max {m}"))?,
        ),
    };
    let flag = |k: &str| e.get(k).and_then(Value::as_bool).unwrap_or(false);
    let binding = e.get("binding").and_then(|b| {
        Some(Binding {
            strength: b.get("strength")?.as_str()?.to_string(),
            value_set: b.get("valueSet")?.as_str()?.to_string(),
        })
    });
    Ok(ElementDef {
        name: name.to_string(),
        types,
        min,
        max,
        summary: flag("summary"),
        modifier: flag("modifier"),
        binding,
    })
}
