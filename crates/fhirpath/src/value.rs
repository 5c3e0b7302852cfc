//! FHIRPath values: System primitives plus [`NodeRef`]s that borrow elements
//! of the input JSON together with their FHIR type.

use crate::decimal::Decimal;
use crate::quantity::Quantity;
use crate::temporal::{DateTime, Time};
use crate::types;
use serde_json::Value as Json;
use std::borrow::Cow;

/// A reference to an element of a FHIR resource in JSON form.
///
/// For primitive elements `json()` is the primitive value (string, number,
/// boolean) and `primitive_extension()` is the object from the `_name`
/// sibling (holding `id`/`extension`), if any. Either may be absent.
#[derive(Clone, Copy, Debug)]
pub struct NodeRef<'a> {
    pub(crate) value: Option<&'a Json>,
    pub(crate) ext: Option<&'a Json>,
    pub(crate) type_name: &'a str,
}

impl<'a> NodeRef<'a> {
    /// Creates a node for `value` of FHIR type `type_name` (`""` if unknown).
    pub fn new(value: &'a Json, type_name: &'a str) -> Self {
        NodeRef {
            value: Some(value),
            ext: None,
            type_name,
        }
    }

    /// The JSON value of the element (`None` for a primitive that only has
    /// extensions, or an unresolved reference target).
    pub fn json(&self) -> Option<&'a Json> {
        self.value
    }

    /// The `_name` sibling object of a primitive element.
    pub fn primitive_extension(&self) -> Option<&'a Json> {
        self.ext
    }

    /// FHIR type name (`"date"`, `"Identifier"`, `"Patient"`, `"Patient.contact"`); `""` when unknown.
    pub fn fhir_type(&self) -> &'a str {
        self.type_name
    }

    /// Whether the element carries a primitive value.
    pub fn has_primitive_value(&self) -> bool {
        matches!(
            self.value,
            Some(Json::String(_)) | Some(Json::Number(_)) | Some(Json::Bool(_))
        )
    }

    pub(crate) fn same(&self, o: &NodeRef<'_>) -> bool {
        let pv = |x: Option<&Json>| x.map(|p| p as *const Json);
        pv(self.value) == pv(o.value)
            && pv(self.ext) == pv(o.ext)
            && (self.value.is_some() || self.ext.is_some() || self.type_name == o.type_name)
    }
}

/// The result of `type()`: a namespace and a type name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    /// `"System"` or `"FHIR"`.
    pub namespace: &'static str,
    /// Type name within the namespace.
    pub name: String,
}

/// A single item of a FHIRPath collection.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    /// System.Boolean
    Boolean(bool),
    /// System.String
    String(String),
    /// System.Integer
    Integer(i64),
    /// System.Decimal
    Decimal(Decimal),
    /// System.Date
    Date(DateTime),
    /// System.DateTime
    DateTime(DateTime),
    /// System.Time
    Time(Time),
    /// System.Quantity
    Quantity(Box<Quantity>),
    /// An element of the input (FHIR namespace).
    Node(NodeRef<'a>),
    /// Reflection result of `type()`.
    TypeInfo(Box<TypeInfo>),
}

/// A borrowed, normalised view of a value used by operators.
#[derive(Clone, Debug)]
pub(crate) enum Prim<'v> {
    Bool(bool),
    Int(i64),
    Dec(Decimal),
    /// String; the flag marks strings from untyped nodes (implicitly convertible to dates).
    Str(&'v str, bool),
    Date(DateTime),
    DateTime(DateTime),
    Time(Time),
    Quantity(Cow<'v, Quantity>),
    /// Complex JSON object (or a primitive node without value).
    Complex(Option<&'v Json>),
    Type(&'v TypeInfo),
}

/// Builds a Quantity from a FHIR Quantity JSON object.
pub(crate) fn quantity_from_json(v: &Json) -> Option<Quantity> {
    let o = v.as_object()?;
    let value = match o.get("value")? {
        Json::Number(n) => Decimal::parse(&n.to_string())?,
        Json::String(s) => Decimal::parse(s)?,
        _ => return None,
    };
    let ucum = o
        .get("system")
        .and_then(|s| s.as_str())
        .is_none_or(|s| s == "http://unitsofmeasure.org");
    let code = o.get("code").and_then(|c| c.as_str());
    let unit = o.get("unit").and_then(|c| c.as_str());
    let u = match (ucum, code, unit) {
        (true, Some(c), _) => c,
        (_, _, Some(u)) => u,
        (_, Some(c), None) => c,
        _ => "1",
    };
    Some(Quantity::new(value, u))
}

fn json_number(n: &serde_json::Number, want_int: bool) -> Prim<'static> {
    let s = n.to_string();
    if want_int || !s.contains(['.', 'e', 'E']) {
        if let Ok(i) = s.parse::<i64>() {
            return Prim::Int(i);
        }
    }
    match Decimal::parse(&s) {
        Some(d) => Prim::Dec(d),
        None => Prim::Complex(None),
    }
}

impl<'a> Value<'a> {
    /// Convenience constructor for strings.
    pub fn string(s: impl Into<String>) -> Value<'a> {
        Value::String(s.into())
    }

    /// The node, if this is an element of the input.
    pub fn as_node(&self) -> Option<&NodeRef<'a>> {
        match self {
            Value::Node(n) => Some(n),
            _ => None,
        }
    }

    /// Namespace and name of the value's type (`("System","Integer")`, `("FHIR","HumanName")`).
    pub fn type_info(&self) -> (&'static str, Cow<'_, str>) {
        match self {
            Value::Boolean(_) => ("System", "Boolean".into()),
            Value::String(_) => ("System", "String".into()),
            Value::Integer(_) => ("System", "Integer".into()),
            Value::Decimal(_) => ("System", "Decimal".into()),
            Value::Date(_) => ("System", "Date".into()),
            Value::DateTime(_) => ("System", "DateTime".into()),
            Value::Time(_) => ("System", "Time".into()),
            Value::Quantity(_) => ("System", "Quantity".into()),
            Value::TypeInfo(_) => ("System", "TypeInfo".into()),
            Value::Node(n) => {
                if n.type_name.is_empty() {
                    // untyped: infer from JSON
                    let t = match n.value {
                        Some(Json::Bool(_)) => "boolean",
                        Some(Json::Number(x)) => {
                            if x.is_i64() {
                                "integer"
                            } else {
                                "decimal"
                            }
                        }
                        Some(Json::String(_)) => "string",
                        _ => "Element",
                    };
                    ("FHIR", t.into())
                } else if n.type_name.contains('.') {
                    ("FHIR", "BackboneElement".into())
                } else {
                    ("FHIR", n.type_name.into())
                }
            }
        }
    }

    /// The value as a primitive view (nodes are converted according to their FHIR type).
    pub(crate) fn prim(&self) -> Prim<'_> {
        match self {
            Value::Boolean(b) => Prim::Bool(*b),
            Value::String(s) => Prim::Str(s, false),
            Value::Integer(i) => Prim::Int(*i),
            Value::Decimal(d) => Prim::Dec(*d),
            Value::Date(d) => Prim::Date(*d),
            Value::DateTime(d) => Prim::DateTime(*d),
            Value::Time(t) => Prim::Time(*t),
            Value::Quantity(q) => Prim::Quantity(Cow::Borrowed(q)),
            Value::TypeInfo(t) => Prim::Type(t),
            Value::Node(n) => node_prim(n),
        }
    }

    /// Converts the value to JSON (nodes yield their JSON; System values
    /// their natural JSON form; quantities a FHIR Quantity object).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Boolean(b) => Json::Bool(*b),
            Value::String(s) => Json::String(s.clone()),
            Value::Integer(i) => Json::from(*i),
            Value::Decimal(d) => serde_json::from_str(&d.to_string()).unwrap_or(Json::Null),
            Value::Date(d) => Json::String(d.format_date()),
            Value::DateTime(d) => Json::String(d.format_datetime()),
            Value::Time(t) => Json::String(t.format()),
            Value::Quantity(q) => {
                let mut m = serde_json::Map::new();
                m.insert(
                    "value".into(),
                    serde_json::from_str(&q.value.to_string()).unwrap_or(Json::Null),
                );
                if q.is_calendar() {
                    m.insert("unit".into(), Json::String(q.unit.clone()));
                } else {
                    m.insert(
                        "system".into(),
                        Json::String("http://unitsofmeasure.org".into()),
                    );
                    m.insert("code".into(), Json::String(q.unit.clone()));
                }
                Json::Object(m)
            }
            Value::Node(n) => n.value.cloned().unwrap_or(Json::Null),
            Value::TypeInfo(t) => {
                let mut m = serde_json::Map::new();
                m.insert("namespace".into(), Json::String(t.namespace.into()));
                m.insert("name".into(), Json::String(t.name.clone()));
                Json::Object(m)
            }
        }
    }

    /// String form as produced by `toString()` (None for complex nodes).
    /// Primitive elements keep their original lexical form.
    pub fn to_fhirpath_string(&self) -> Option<String> {
        if let Value::Node(NodeRef {
            value: Some(Json::String(s)),
            ..
        }) = self
        {
            return Some(s.clone());
        }
        prim_to_string(&self.prim())
    }
}

pub(crate) fn prim_to_string(p: &Prim<'_>) -> Option<String> {
    Some(match p {
        Prim::Bool(b) => b.to_string(),
        Prim::Int(i) => i.to_string(),
        Prim::Dec(d) => d.to_string(),
        Prim::Str(s, _) => s.to_string(),
        Prim::Date(d) => d.format_date(),
        Prim::DateTime(d) => d.format_datetime(),
        Prim::Time(t) => t.format(),
        Prim::Quantity(q) => q.to_string(),
        Prim::Complex(_) | Prim::Type(_) => return None,
    })
}

pub(crate) fn node_prim<'v>(n: &NodeRef<'v>) -> Prim<'v> {
    let v = match n.value {
        Some(v) => v,
        None => return Prim::Complex(None),
    };
    let t = n.type_name;
    match v {
        Json::Bool(b) => Prim::Bool(*b),
        Json::Number(x) => {
            let want_int = matches!(t, "integer" | "positiveInt" | "unsignedInt" | "integer64");
            if t == "decimal" {
                match Decimal::parse(&x.to_string()) {
                    Some(d) => Prim::Dec(d),
                    None => Prim::Complex(None),
                }
            } else {
                json_number(x, want_int)
            }
        }
        Json::String(s) => match t {
            "date" => DateTime::parse_date(s)
                .map(Prim::Date)
                .unwrap_or(Prim::Str(s, false)),
            "dateTime" | "instant" => DateTime::parse_fhir(s)
                .map(Prim::DateTime)
                .unwrap_or(Prim::Str(s, false)),
            "time" => Time::parse(s, false)
                .map(Prim::Time)
                .unwrap_or(Prim::Str(s, false)),
            "decimal" => Decimal::parse(s)
                .map(Prim::Dec)
                .unwrap_or(Prim::Str(s, false)),
            "integer" | "positiveInt" | "unsignedInt" | "integer64" => {
                s.parse().map(Prim::Int).unwrap_or(Prim::Str(s, false))
            }
            "" => Prim::Str(s, true),
            _ => Prim::Str(s, false),
        },
        Json::Object(_) => {
            if types::is_quantity_type(t) || (t.is_empty() && looks_like_quantity(v)) {
                if let Some(q) = quantity_from_json(v) {
                    return Prim::Quantity(Cow::Owned(q));
                }
            }
            Prim::Complex(Some(v))
        }
        _ => Prim::Complex(Some(v)),
    }
}

fn looks_like_quantity(v: &Json) -> bool {
    v.get("value").is_some_and(|x| x.is_number())
        && (v.get("code").is_some() || v.get("unit").is_some())
}

/// Formats a value the way FHIRPath literals are written (`@2014-01`,
/// `1.5 'cm'`, `'text'` is printed without quotes). Used by tests and tracing.
pub fn literal_repr(v: &Value<'_>) -> String {
    match v {
        Value::Date(d) => format!("@{}", d.format_date()),
        Value::DateTime(d) => {
            if d.is_date_only() {
                format!("@{}T", d.format_date())
            } else {
                format!("@{}", d.format_datetime())
            }
        }
        Value::Time(t) => format!("@T{}", t.format()),
        Value::Node(n) => match node_prim(n) {
            Prim::Date(d) => format!("@{}", d.format_date()),
            Prim::DateTime(d) => format!("@{}", d.format_datetime()),
            Prim::Time(t) => format!("@T{}", t.format()),
            Prim::Complex(Some(j)) => j.to_string(),
            Prim::Complex(None) => "<no value>".into(),
            p => prim_to_string(&p).unwrap_or_default(),
        },
        Value::TypeInfo(t) => format!("{}.{}", t.namespace, t.name),
        other => other.to_fhirpath_string().unwrap_or_default(),
    }
}
