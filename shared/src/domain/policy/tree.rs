//! A TOML document as a tree in which every key and value remembers where it was written.
//!
//! `toml::Spanned<T>` cannot be used for values of unknown shape: tables that exist only
//! implicitly (`[environments.production.break_glass]` without `[environments.production]`)
//! carry no span, and `Spanned<T>` refuses to deserialize from them. This module speaks the same
//! protocol as `Spanned<T>` (the deserializer hands a span to a struct with serde_spanned's
//! reserved name and field names) but falls back to "no span" instead of failing, so the
//! decoder can walk the whole document and report every problem with a position.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// serde_spanned's reserved names; toml's deserializer recognises a request for this struct
/// and answers with `{start, end, value}` when it knows the span. Pinned by the lock file and
/// guarded by the line/column tests in `shared/tests/policy.rs`.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
/// toml_datetime's reserved field: a TOML date/time arrives as a one-entry map.
const DATETIME_FIELD: &str = "$__toml_private_datetime";

pub(crate) type Span = Range<usize>;

/// One value with the byte range it occupies in the source, when the parser knows it.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) span: Option<Span>,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    String(String),
    Integer(i64),
    /// Floats are never valid in a policy; only the type is kept for error messages.
    Float,
    Boolean(bool),
    /// A TOML date, time or date-time, in its TOML text form.
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

impl Kind {
    /// The TOML name of this value's type, for "expected X, found Y" messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Kind::String(_) => "a string",
            Kind::Integer(_) => "an integer",
            Kind::Float => "a float",
            Kind::Boolean(_) => "a boolean",
            Kind::Datetime(_) => "a date/time",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) key_span: Option<Span>,
    pub(crate) value: Node,
}

/// Parses a whole document into its root table's entries.
pub(crate) fn parse_document(text: &str) -> Result<Vec<Entry>, toml::de::Error> {
    match toml::from_str::<Kind>(text)? {
        Kind::Table(entries) => Ok(entries),
        // The root of a TOML document is always a table.
        other => Err(de::Error::invalid_type(
            de::Unexpected::Other(other.type_name()),
            &"a table",
        )),
    }
}

/// A key, with its span when the parser knows it.
struct Key {
    name: String,
    span: Option<Span>,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_owned(),
            span: None,
        })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
        Ok(Key {
            name: v,
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let (span, name) = read_spanned::<A, String>(&mut map, None)?;
        Ok(Key {
            name,
            span: Some(span),
        })
    }
}

/// Reads `{start, end, value}` once the start key has been seen (`first`) or from scratch.
fn read_spanned<'de, A, T>(map: &mut A, first: Option<&str>) -> Result<(Span, T), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if first.is_none() {
        let key: String = map
            .next_key()?
            .ok_or_else(|| de::Error::missing_field(SPANNED_START))?;
        if key != SPANNED_START {
            return Err(de::Error::custom("malformed span from the TOML parser"));
        }
    }
    let start: usize = map.next_value()?;
    let key: Option<String> = map.next_key()?;
    if key.as_deref() != Some(SPANNED_END) {
        return Err(de::Error::custom("malformed span from the TOML parser"));
    }
    let end: usize = map.next_value()?;
    let key: Option<String> = map.next_key()?;
    if key.as_deref() != Some(SPANNED_VALUE) {
        return Err(de::Error::custom("malformed span from the TOML parser"));
    }
    let value: T = map.next_value()?;
    Ok((start..end, value))
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

/// Receives either the spanned wrapper or, when the parser has no span, the bare value.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(Node {
                span: None,
                kind: Kind::Table(Vec::new()),
            });
        };
        if first.name == SPANNED_START && first.span.is_none() {
            let (span, kind) = read_spanned::<A, Kind>(&mut map, Some(SPANNED_START))?;
            return Ok(Node {
                span: Some(span),
                kind,
            });
        }
        let kind = finish_map(first, &mut map)?;
        Ok(Node { span: None, kind })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        KindVisitor.visit_bool(v).map(unspanned)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        KindVisitor.visit_i64(v).map(unspanned)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        KindVisitor.visit_u64(v).map(unspanned)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        KindVisitor.visit_f64(v).map(unspanned)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        KindVisitor.visit_str(v).map(unspanned)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        KindVisitor.visit_string(v).map(unspanned)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        KindVisitor.visit_seq(seq).map(unspanned)
    }
}

fn unspanned(kind: Kind) -> Node {
    Node { span: None, kind }
}

/// Reads the rest of a table (or a date/time) whose first key has already been read.
fn finish_map<'de, A: MapAccess<'de>>(first: Key, map: &mut A) -> Result<Kind, A::Error> {
    if first.name == DATETIME_FIELD && first.span.is_none() {
        let text: String = map.next_value()?;
        return Ok(Kind::Datetime(text));
    }
    let mut entries = vec![Entry {
        key: first.name,
        key_span: first.span,
        value: map.next_value()?,
    }];
    while let Some(key) = map.next_key::<Key>()? {
        entries.push(Entry {
            key: key.name,
            key_span: key.span,
            value: map.next_value()?,
        });
    }
    Ok(Kind::Table(entries))
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        i64::try_from(v)
            .map(Kind::Integer)
            .map_err(|_| de::Error::custom("integer is too large"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Float)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        match map.next_key::<Key>()? {
            None => Ok(Kind::Table(Vec::new())),
            Some(first) => finish_map(first, &mut map),
        }
    }
}

/// Turns byte offsets into 1-based line and column (in characters) numbers.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, line_starts }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line.max(1), column + 1)
    }
}
