//! Typed search queries. Storage receives only these, never raw query strings.

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

/// `[system]|[code]` as FHIR defines it: `system` None means "any system",
/// `Some("")` means "no system" (`|code`). `code` None means "any code" (`system|`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    pub system: Option<String>,
    pub code: Option<String>,
}

/// A reference target: `Type/id` or a bare id (any type the parameter allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValue {
    pub target_type: Option<ResourceType>,
    pub id: String,
}

/// One AND-ed condition; each carries its OR-ed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    Id(Vec<String>),
    LastUpdated(Vec<DateValue>),
    Token {
        param: &'static str,
        any_of: Vec<TokenValue>,
    },
    Reference {
        param: &'static str,
        any_of: Vec<ReferenceValue>,
    },
    Date {
        param: &'static str,
        any_of: Vec<DateValue>,
    },
}

/// How much counting the client asked for (`_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    None,
    Accurate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub resource_type: ResourceType,
    pub predicates: Vec<Predicate>,
    /// Page size; 0 means "count only" (`_summary=count` / `_count=0`).
    pub count: usize,
    /// Keyset cursor: return resources whose id sorts after this one.
    pub after_id: Option<String>,
    pub total: TotalMode,
}

impl SearchQuery {
    pub fn new(resource_type: ResourceType) -> SearchQuery {
        SearchQuery {
            resource_type,
            predicates: Vec::new(),
            count: 20,
            after_id: None,
            total: TotalMode::Accurate,
        }
    }
}
