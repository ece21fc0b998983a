//! A parsed manifest document with source positions, independent of TOML or
//! JSON, so validation can report every problem (serde stops at the first).

use std::fmt;

/// A 1-based line and column in the manifest text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub pos: Option<Pos>,
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A TOML datetime or a number out of range: kept only to report its type.
    Other(&'static str),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_pos: Option<Pos>,
    pub node: Node,
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Other(t) => t,
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }

    /// Plain JSON for provider-specific settings that are stored as given.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Value::from(*f),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Other(t) => serde_json::Value::String(format!("<{t}>")),
            Value::Array(items) => items.iter().map(|n| n.value.to_json()).collect(),
            Value::Table(entries) => entries
                .iter()
                .map(|e| (e.key.clone(), e.node.value.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// A syntax error: where, and what.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Option<Pos>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// JSON when the name ends in `.json` or the text starts with `{`.
    pub fn detect(name: &str, text: &str) -> Format {
        if name.ends_with(".json") || text.trim_start().starts_with('{') { Format::Json } else { Format::Toml }
    }
}

pub fn parse(text: &str, format: Format) -> Result<Node, Vec<SyntaxError>> {
    match format {
        Format::Toml => parse_toml(text),
        Format::Json => parse_json(text).map_err(|e| vec![e]),
    }
}

/// Byte offsets → line and column, with line starts computed once (a
/// position per node must not rescan the text: that is quadratic).
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Lines { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let col = String::from_utf8_lossy(&self.text.as_bytes()[start..offset]).chars().count() + 1;
        Pos { line, col }
    }
}

fn parse_toml(text: &str) -> Result<Node, Vec<SyntaxError>> {
    use toml::de::{DeTable, DeValue};
    let lines = Lines::new(text);
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| SyntaxError {
                pos: e.span().map(|s| lines.pos(s.start)),
                message: format!("TOML syntax error: {}", e.message().trim()),
            })
            .collect());
    }
    fn convert(lines: &Lines<'_>, v: &toml::Spanned<DeValue<'_>>) -> Node {
        let pos = Some(lines.pos(v.span().start));
        let value = match v.get_ref() {
            DeValue::String(s) => Value::Str(s.to_string()),
            DeValue::Integer(i) => {
                let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
                let digits = digits.trim_start_matches("0x").trim_start_matches("0o").trim_start_matches("0b");
                match i64::from_str_radix(digits, i.radix()) {
                    Ok(n) => Value::Int(n),
                    Err(_) => Value::Other("an out-of-range integer"),
                }
            }
            DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
                Ok(x) => Value::Float(x),
                Err(_) => Value::Other("a float"),
            },
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(_) => Value::Other("a datetime"),
            DeValue::Array(items) => Value::Array(items.iter().map(|i| convert(lines, i)).collect()),
            DeValue::Table(t) => Value::Table(convert_table(lines, t)),
        };
        Node { value, pos }
    }
    fn convert_table(lines: &Lines<'_>, t: &DeTable<'_>) -> Vec<Entry> {
        t.iter()
            .map(|(k, v)| Entry {
                key: k.get_ref().to_string(),
                key_pos: Some(lines.pos(k.span().start)),
                node: convert(lines, v),
            })
            .collect()
    }
    let root_entries = convert_table(&lines, table.get_ref());
    Ok(Node { value: Value::Table(root_entries), pos: Some(Pos { line: 1, col: 1 }) })
}

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value as a tree of nodes (without positions), through a visitor
/// that keeps duplicate keys, so they can be reported instead of silently
/// keeping the last one.
struct JsonNode(Node);
impl<'de> Deserialize<'de> for JsonNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<JsonNode, E> {
                Ok(leaf(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<JsonNode, E> {
                Ok(leaf(Value::Int(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<JsonNode, E> {
                Ok(leaf(i64::try_from(n).map_or(Value::Other("an out-of-range integer"), Value::Int)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<JsonNode, E> {
                Ok(leaf(Value::Float(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<JsonNode, E> {
                Ok(leaf(Value::Str(s.to_string())))
            }
            fn visit_unit<E>(self) -> Result<JsonNode, E> {
                Ok(leaf(Value::Other("null")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonNode, A::Error> {
                let mut items = Vec::new();
                while let Some(JsonNode(n)) = seq.next_element()? {
                    items.push(n);
                }
                Ok(leaf(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonNode, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, JsonNode(node))) = map.next_entry::<String, JsonNode>()? {
                    entries.push(Entry { key, key_pos: None, node });
                }
                Ok(leaf(Value::Table(entries)))
            }
        }
        d.deserialize_any(V)
    }
}
fn leaf(value: Value) -> JsonNode {
    JsonNode(Node { value, pos: None })
}

/// A JSON value already parsed (a stored snapshot's manifest) as nodes:
/// the same tree as parsing its text, without writing and rereading it.
pub fn from_json_value(value: serde_json::Value) -> Node {
    // Every kind of JSON value is visited above: this cannot fail; if it
    // did, the validator would refuse the value's type.
    JsonNode::deserialize(value).map_or(Node { value: Value::Other("an unreadable value"), pos: None }, |n| n.0)
}

/// JSON text as nodes (with the positions of syntax errors).
fn parse_json(text: &str) -> Result<Node, SyntaxError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let node = JsonNode::deserialize(&mut de).and_then(|n| de.end().map(|()| n)).map_err(|e| SyntaxError {
        pos: Some(Pos { line: e.line(), col: e.column() }),
        message: format!("JSON syntax error: {e}"),
    })?;
    Ok(node.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_positions_point_at_values() {
        let n = parse("a = 1\n[b]\nc = \"x\"\n", Format::Toml).unwrap();
        let Value::Table(entries) = n.value else { panic!() };
        let b = &entries.iter().find(|e| e.key == "b").unwrap().node;
        let Value::Table(inner) = &b.value else { panic!() };
        assert_eq!(inner[0].key_pos, Some(Pos { line: 3, col: 1 }));
        assert_eq!(inner[0].node.pos, Some(Pos { line: 3, col: 5 }));
    }

    #[test]
    fn positions_of_lines_and_multibyte_columns() {
        let l = Lines::new("ab\nçd = 1\n\nx");
        assert_eq!(l.pos(0), Pos { line: 1, col: 1 });
        assert_eq!(l.pos(3), Pos { line: 2, col: 1 });
        assert_eq!(l.pos(6), Pos { line: 2, col: 3 }, "ç is one column");
        assert_eq!(l.pos(11), Pos { line: 3, col: 1 });
        assert_eq!(l.pos(12), Pos { line: 4, col: 1 });
        assert_eq!(l.pos(99), Pos { line: 4, col: 2 });
    }

    #[test]
    fn json_keeps_duplicate_keys() {
        let n = parse(r#"{"a": 1, "a": 2}"#, Format::Json).unwrap();
        let Value::Table(entries) = n.value else { panic!() };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a = \n", Format::Toml).unwrap_err();
        assert!(e[0].pos.is_some(), "{e:?}");
        let e = parse("{\"a\": }", Format::Json).unwrap_err();
        assert_eq!(e[0].pos.unwrap().line, 1);
    }
}
