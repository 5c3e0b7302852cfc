//! Search index rows: what extraction produces for each search parameter
//! ([`IndexRow`], [`IndexValue`]) and the bounded stored form of
//! equality-matched values ([`index_key`], [`MAX_INDEX_VALUE`],
//! [`INDEX_PREFIX`]). Extraction (`search::index`) and query parsing
//! (`search::parse`) use these; the storage backends store and match them.

/// Longest index value (in bytes) stored verbatim in an equality-matched
/// column (token system and code, URI, reference URL, exact string,
/// quantity system/code/unit). A B-tree entry must fit in a page (PostgreSQL:
/// about 2,700 bytes for the whole key), so longer values are stored as
/// [`index_key`] makes them.
pub const MAX_INDEX_VALUE: usize = 512;

/// How much of a longer value [`index_key`] keeps verbatim (at least this
/// many bytes, rounded up to a character boundary): prefix tests (`:below`,
/// `:above`) are exact for values up to this long.
pub const INDEX_PREFIX: usize = 448;

/// The stored form of an equality-matched index value: the value itself up to
/// [`MAX_INDEX_VALUE`] bytes; a longer one as its first [`INDEX_PREFIX`]-odd
/// bytes, `#` and the SHA-256 of the whole value in hex. That form is longer
/// than [`MAX_INDEX_VALUE`] bytes, so it never equals a value stored verbatim,
/// and equal forms mean equal values: comparing forms is exact matching. The
/// search side compares `index_key(value)` with the column.
pub fn index_key(s: &str) -> std::borrow::Cow<'_, str> {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    if s.len() <= MAX_INDEX_VALUE {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = INDEX_PREFIX;
    while !s.is_char_boundary(end) {
        end += 1;
    }
    let mut out = String::with_capacity(end + 65);
    out.push_str(&s[..end]);
    out.push('#');
    for b in Sha256::digest(s.as_bytes()) {
        let _ = write!(out, "{b:02x}");
    }
    std::borrow::Cow::Owned(out)
}

/// [`index_key`] of an optional value.
pub fn opt_index_key(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|v| index_key(v).into_owned())
}

/// A value extracted from a resource for one search parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    Token {
        system: Option<String>,
        code: String,
        /// Normalised display text (`CodeableConcept.text`, `Coding.display`,
        /// `Identifier.type.text`) for `:text`.
        text: Option<String>,
    },
    Date {
        lo: i64,
        hi: i64,
    },
    Reference {
        /// Empty when the reference is a URL that names no local resource.
        target_type: String,
        target_id: String,
        /// The reference verbatim when it is absolute (or canonical).
        url: Option<String>,
    },
    String {
        /// Lower-case, accents removed.
        norm: String,
        exact: String,
    },
    Number {
        value: f64,
    },
    Quantity {
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
        value: f64,
    },
    Uri {
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// The parameter code, or a derived key (`identifier:of-type`,
    /// `subject:identifier`) for modifier-specific rows.
    pub param: String,
    pub value: IndexValue,
    /// For a composite's component rows: which element of the composite's
    /// expression the value came from (components match within one element).
    pub group: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_are_bounded_and_exact() {
        assert_eq!(index_key("urn:s"), "urn:s");
        let at_limit = "a".repeat(MAX_INDEX_VALUE);
        assert_eq!(index_key(&at_limit), at_limit);
        let long = format!("{}b", "a".repeat(5_000_000));
        let near = format!("{}c", "a".repeat(5_000_000));
        let (k, n) = (index_key(&long), index_key(&near));
        assert!(k.len() > MAX_INDEX_VALUE && k.len() <= INDEX_PREFIX + 4 + 65);
        assert!(k.starts_with(&long[..INDEX_PREFIX]));
        assert_ne!(k, n);
        assert_eq!(k, index_key(&long));
        // Cut at a character boundary, never inside one.
        let wide = "é".repeat(1000);
        assert!(index_key(&wide).starts_with(&"é".repeat(INDEX_PREFIX / 2)));
    }
}
