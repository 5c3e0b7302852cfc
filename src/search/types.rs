//! Typed search queries. Storage receives only these, never raw query strings.

use super::registry::ParamDef;
use crate::model::ResourceType;

/// A date/time interval `[lo, hi)` in epoch milliseconds: the precision range of a
/// FHIR date, dateTime or instant (`2024` covers the whole year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub lo: i64,
    pub hi: i64,
}

/// FHIR search prefixes for ordered types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    pub const ALL: [(&'static str, Prefix); 9] = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];

    pub fn as_str(self) -> &'static str {
        Prefix::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(s, _)| *s)
            .unwrap_or("eq")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateValue {
    pub prefix: Prefix,
    pub range: DateRange,
}

/// A number with the range its written precision implies (`100` → [99.5, 100.5)).
#[derive(Debug, Clone, PartialEq)]
pub struct NumberValue {
    pub prefix: Prefix,
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// `[prefix][number]|[system]|[code]`; `code` matches the coded unit or the unit text.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    pub number: NumberValue,
    pub system: Option<String>,
    pub code: Option<String>,
}

/// `[system]|[code]` as FHIR defines it: `system` None means "any system",
/// `Some("")` means "no system" (`|code`). `code` None means "any code" (`system|`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    pub system: Option<String>,
    pub code: Option<String>,
}

/// A reference target: `Type/id`, a bare id (any type the parameter allows), or
/// an absolute URL that is not one of ours (canonical or external).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValue {
    pub target_type: Option<ResourceType>,
    pub id: String,
    /// Set when the value is a URL matched verbatim (`target_type` is then None).
    pub url: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    /// Case- and accent-insensitive starts-with (the default).
    StartsWith,
    /// `:exact`: case- and accent-sensitive whole-value match.
    Exact,
    /// `:contains`: case- and accent-insensitive substring.
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    Equals,
    /// `:below`: the stored URI starts with the value.
    Below,
    /// `:above`: the value starts with the stored URI.
    Above,
}

/// How one index table is tested; the OR-ed values of one parameter occurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Token(Vec<TokenValue>),
    /// `:text`: starts-with on the display text (normalised).
    TokenText(Vec<String>),
    /// `:of-type`: `type-system|type-code|value` on identifiers.
    OfType(Vec<(String, String, String)>),
    String(StringMode, Vec<String>),
    Date(Vec<DateValue>),
    Number(Vec<NumberValue>),
    Quantity(Vec<QuantityValue>),
    Uri(UriMode, Vec<String>),
    Reference(Vec<ReferenceValue>),
    /// `:identifier` on a reference parameter.
    ReferenceIdentifier(Vec<TokenValue>),
}

/// One AND-ed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `_id` (`not`: `_id:not`).
    Id {
        ids: Vec<String>,
        not: bool,
    },
    LastUpdated(Vec<DateValue>),
    /// An index test on a parameter of the searched type; `not` is the `:not`
    /// modifier (resources with no matching value, including none at all).
    Index {
        param: &'static ParamDef,
        test: Test,
        not: bool,
    },
    /// `:missing=true|false`.
    Missing {
        param: &'static ParamDef,
        missing: bool,
    },
    /// `ref[:Type].param=…`: resources whose `ref` points to a `target` resource
    /// matching `inner` (one entry per possible target type, OR-ed).
    Chain {
        param: &'static ParamDef,
        targets: Vec<(ResourceType, Box<Predicate>)>,
    },
    /// `_has:Source:ref:…`: resources referenced through `ref` by a `source`
    /// resource matching `inner`.
    Has {
        source: ResourceType,
        param: &'static ParamDef,
        inner: Box<Predicate>,
    },
    /// A composite parameter's tuple: one element of `param`'s expression
    /// satisfies every component test (`parts`: component, test).
    Composite {
        param: &'static ParamDef,
        parts: Vec<(&'static ParamDef, Test)>,
    },
    /// All of several predicates (a resource-level composite's components).
    AllOf(Vec<Predicate>),
    /// Any of several predicates (compartment membership through several parameters).
    AnyOf(Vec<Predicate>),
}

/// How much counting the client asked for (`_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    None,
    /// The default: an exact total while fewer than the storage's cap (1,000
    /// on SQL) match, no `Bundle.total` beyond; a complete first page is
    /// counted for free.
    Estimate,
    /// Always an exact total, however many match (`_summary=count` too).
    Accurate,
}

/// What a sort key reads.
#[derive(Debug, Clone, Copy)]
pub enum SortKey {
    Id,
    LastUpdated,
    Param(&'static ParamDef),
}

#[derive(Debug, Clone, Copy)]
pub struct SortSpec {
    pub key: SortKey,
    pub descending: bool,
}

/// A sort-key value from a cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// Where a page starts: after (or, for `previous`, before) a row's sort keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub backwards: bool,
    pub keys: Vec<KeyValue>,
    pub id: String,
}

/// `_include` / `_revinclude`: `source:param[:target]`, or `*`.
#[derive(Debug, Clone)]
pub struct IncludeSpec {
    pub source: ResourceType,
    /// `None` for `*` (every reference parameter of `source`).
    pub param: Option<&'static ParamDef>,
    pub target: Option<ResourceType>,
    pub iterate: bool,
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub resource_type: ResourceType,
    pub predicates: Vec<Predicate>,
    /// Page size; 0 means "count only" (`_summary=count` / `_count=0`).
    pub count: usize,
    pub cursor: Option<Cursor>,
    pub sort: Vec<SortSpec>,
    pub total: TotalMode,
    pub include: Vec<IncludeSpec>,
    pub revinclude: Vec<IncludeSpec>,
}

impl PartialEq for SearchQuery {
    fn eq(&self, other: &SearchQuery) -> bool {
        self.resource_type == other.resource_type && self.predicates == other.predicates
    }
}

impl SearchQuery {
    pub fn new(resource_type: ResourceType) -> SearchQuery {
        SearchQuery {
            resource_type,
            predicates: Vec::new(),
            count: 20,
            cursor: None,
            sort: Vec::new(),
            total: TotalMode::Estimate,
            include: Vec::new(),
            revinclude: Vec::new(),
        }
    }
}

impl PartialEq for ParamDef {
    fn eq(&self, other: &ParamDef) -> bool {
        self.url == other.url && self.code == other.code
    }
}

impl SearchQuery {
    /// The normalised selection of a conditional interaction: the type and the
    /// sorted, de-duplicated (parameter, modifier, values) tuples, values sorted
    /// within each OR list. Criteria that select the same way give the same key
    /// whatever their order or the interaction that carries them (conditional
    /// create, update, delete, patch, a bundle's `ifNoneExist`), so one lock on it
    /// serialises them all. Parameters are named by their code, never by a print
    /// of their definition.
    pub fn selection_key(&self) -> String {
        let mut parts: Vec<String> = self.predicates.iter().map(predicate_key).collect();
        parts.sort();
        parts.dedup();
        format!("{}?{}", self.resource_type, parts.join("&"))
    }
}

fn sorted_values<T: std::fmt::Debug>(tag: &str, values: &[T]) -> String {
    let mut v: Vec<String> = values.iter().map(|x| format!("{x:?}")).collect();
    v.sort();
    v.dedup();
    format!("{tag}[{}]", v.join(","))
}

fn test_key(t: &Test) -> String {
    match t {
        Test::Token(v) => sorted_values("token", v),
        Test::TokenText(v) => sorted_values("text", v),
        Test::OfType(v) => sorted_values("of-type", v),
        Test::String(m, v) => sorted_values(&format!("string:{m:?}"), v),
        Test::Date(v) => sorted_values("date", v),
        Test::Number(v) => sorted_values("number", v),
        Test::Quantity(v) => sorted_values("quantity", v),
        Test::Uri(m, v) => sorted_values(&format!("uri:{m:?}"), v),
        Test::Reference(v) => sorted_values("reference", v),
        Test::ReferenceIdentifier(v) => sorted_values("identifier", v),
    }
}

fn predicate_key(p: &Predicate) -> String {
    let not = |n: bool| if n { ":not" } else { "" };
    let all = |ps: &[Predicate], sep: &str| {
        let mut v: Vec<String> = ps.iter().map(predicate_key).collect();
        v.sort();
        v.dedup();
        format!("({})", v.join(sep))
    };
    match p {
        Predicate::Id { ids, not: n } => format!("_id{}={}", not(*n), sorted_values("", ids)),
        Predicate::LastUpdated(v) => format!("_lastUpdated={}", sorted_values("", v)),
        Predicate::Index {
            param,
            test,
            not: n,
        } => format!("{}{}={}", param.code, not(*n), test_key(test)),
        Predicate::Missing { param, missing } => format!("{}:missing={missing}", param.code),
        Predicate::Chain { param, targets } => {
            let mut v: Vec<String> = targets
                .iter()
                .map(|(t, inner)| format!("{t}.{}", predicate_key(inner)))
                .collect();
            v.sort();
            format!("{}:chain({})", param.code, v.join("|"))
        }
        Predicate::Has {
            source,
            param,
            inner,
        } => format!("_has:{source}:{}:{}", param.code, predicate_key(inner)),
        Predicate::Composite { param, parts } => {
            let v: Vec<String> = parts
                .iter()
                .map(|(c, t)| format!("{}={}", c.code, test_key(t)))
                .collect();
            format!("{}$({})", param.code, v.join("$"))
        }
        Predicate::AllOf(ps) => all(ps, "&"),
        Predicate::AnyOf(ps) => all(ps, "|"),
    }
}
