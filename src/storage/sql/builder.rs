//! The statement builder: [`Sql`] accumulates SQL text and its [`Bind`] values
//! together (the text holds no placeholders; the connection writes `?` or `$n`
//! where each bind goes), and [`traced`] logs a statement's shape and time under
//! `fhirbridge::sql=trace` (never its values).

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone)]
pub(super) enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Real(f64),
}

/// Builds SQL text and its binds together. The text holds no placeholders:
/// `marks` records where each bind goes, and diesel writes `?` or `$n` there.
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) binds: Vec<Bind>,
    pub(super) marks: Vec<usize>,
    /// Keep the prepared statement in the connection's cache (keyed by the
    /// text). Only for statements of few shapes (the write path), never for
    /// search SQL, whose text varies without bound.
    pub(super) cache: bool,
}

impl Sql {
    pub(super) fn new() -> Sql {
        Sql {
            text: String::with_capacity(256),
            binds: Vec::new(),
            marks: Vec::new(),
            cache: false,
        }
    }

    /// A statement of a fixed shape, worth keeping prepared.
    pub(super) fn prepared() -> Sql {
        Sql {
            cache: true,
            ..Sql::new()
        }
    }

    pub(super) fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }

    pub(super) fn bind(&mut self, b: Bind) -> &mut Sql {
        self.binds.push(b);
        self.marks.push(self.text.len());
        self
    }

    pub(super) fn text(&mut self, s: &str) -> &mut Sql {
        self.bind(Bind::Text(s.to_owned()))
    }

    pub(super) fn int(&mut self, i: i64) -> &mut Sql {
        self.bind(Bind::Int(i))
    }

    /// `?, ?, …`: one text bind per item, comma-separated (for `IN (…)`).
    pub(super) fn text_list<S: AsRef<str>>(
        &mut self,
        items: impl IntoIterator<Item = S>,
    ) -> &mut Sql {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text(item.as_ref());
        }
        self
    }

    /// The text with `?` where the binds go: for `fhirbridge::sql=trace`
    /// diagnostics only. Bound values (patient data) are never shown.
    pub(super) fn shown(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + self.marks.len());
        let mut at = 0;
        for &m in &self.marks {
            out.push_str(&self.text[at..m]);
            out.push('?');
            at = m;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

/// Runs `f`, and with `RUST_LOG=fhirbridge::sql=trace` logs the statement's
/// shape (placeholders, no values) and how long it took.
pub(super) fn traced<T>(sql: &Sql, f: impl FnOnce() -> T) -> T {
    if !tracing::enabled!(target: "fhirbridge::sql", tracing::Level::TRACE) {
        return f();
    }
    let t0 = std::time::Instant::now();
    let out = f();
    tracing::trace!(target: "fhirbridge::sql", us = t0.elapsed().as_micros() as u64, sql = %sql.shown());
    out
}
