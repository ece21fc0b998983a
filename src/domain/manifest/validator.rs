//! The validator's primitives: typed reads of source nodes that record
//! every problem with its position and path, and tables that report keys
//! nobody read as unknown. The manifest's own rules (mod.rs) and each
//! provider's launch schema (launch/) are written with them.

use std::collections::{BTreeMap, BTreeSet};

use super::Problem;
use crate::domain::duration::Dur;
use crate::domain::source::{Entry, Node, Pos, Value};

#[derive(Default)]
pub(crate) struct Validator {
    pub(crate) problems: Vec<Problem>,
}

/// The entries of one table, tracking which keys were read so the rest can
/// be reported as unknown.
pub(crate) struct Fields<'n> {
    pub(crate) entries: &'n [Entry],
    pub(crate) used: Vec<bool>,
    pub(crate) path: String,
}

/// `path.key` (or `key` at the root). Built by hand: the validator joins a
/// path for every field it reads, and the formatter made that a tenth of
/// validating a stored manifest.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        return key.to_string();
    }
    let mut out = String::with_capacity(path.len() + 1 + key.len());
    out.push_str(path);
    out.push('.');
    out.push_str(key);
    out
}

/// `path[i]`, built by hand like `join`.
pub(crate) fn index(path: &str, i: usize) -> String {
    let i = i.to_string();
    let mut out = String::with_capacity(path.len() + 2 + i.len());
    out.push_str(path);
    out.push('[');
    out.push_str(&i);
    out.push(']');
    out
}

impl<'n> Fields<'n> {
    pub(crate) fn take(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        Some(&self.entries[i].node)
    }
}

impl Validator {
    pub(crate) fn problem(&mut self, pos: Option<Pos>, path: &str, message: String) {
        self.problems.push(Problem { pos, path: path.to_string(), message });
    }

    pub(crate) fn table<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        let Value::Table(entries) = &node.value else {
            self.problem(node.pos, path, format!("expected a table, found {}", node.value.type_name()));
            return None;
        };
        let mut seen = BTreeSet::new();
        for e in entries {
            if !seen.insert(e.key.as_str()) {
                self.problem(e.key_pos.or(e.node.pos), &join(path, &e.key), format!("duplicate key `{}`", e.key));
            }
        }
        Some(Fields { entries, used: vec![false; entries.len()], path: path.to_string() })
    }

    pub(crate) fn finish(&mut self, fields: Fields<'_>, known: &[&str]) {
        for (e, used) in fields.entries.iter().zip(&fields.used) {
            if !used && !known.contains(&e.key.as_str()) {
                self.problem(
                    e.key_pos.or(e.node.pos),
                    &join(&fields.path, &e.key),
                    format!("unknown field `{}`; expected one of: {}", e.key, known.join(", ")),
                );
            }
        }
    }

    pub(crate) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            // A NUL cannot reach a program's arguments or environment.
            Value::Str(s) if s.contains('\0') => {
                self.problem(
                    node.pos,
                    path,
                    "contains a NUL byte, which no program argument or variable can hold".into(),
                );
                None
            }
            Value::Str(s) => Some(s.clone()),
            other => {
                self.problem(node.pos, path, format!("expected a string, found {}", other.type_name()));
                None
            }
        }
    }

    pub(crate) fn required<'n>(&mut self, f: &mut Fields<'n>, key: &str, pos: Option<Pos>) -> Option<&'n Node> {
        let node = f.take(key);
        if node.is_none() {
            self.problem(pos, &join(&f.path, key), format!("missing required field `{key}`"));
        }
        node
    }

    pub(crate) fn int(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        match &node.value {
            Value::Int(n) if (min..=max).contains(n) => Some(*n),
            Value::Int(n) => {
                self.problem(node.pos, path, format!("{n} is out of range ({min} to {max})"));
                None
            }
            other => {
                self.problem(node.pos, path, format!("expected an integer, found {}", other.type_name()));
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(node.pos, path, format!("expected true or false, found {}", other.type_name()));
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, node: &Node, path: &str, min: Dur, max: Dur) -> Option<Dur> {
        let s = self.string(node, path)?;
        match s.parse::<Dur>() {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(d) => {
                self.problem(node.pos, path, format!("duration {d} is out of range ({min} to {max})"));
                None
            }
            Err(e) => {
                self.problem(node.pos, path, e);
                None
            }
        }
    }

    pub(crate) fn opt_duration(
        &mut self,
        f: &mut Fields<'_>,
        key: &str,
        default: Dur,
        min: Dur,
        max: Dur,
    ) -> Option<Dur> {
        match f.take(key) {
            None => Some(default),
            Some(n) => self.duration(n, &join(&f.path, key), min, max),
        }
    }

    pub(crate) fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let Value::Array(items) = &node.value else {
            self.problem(node.pos, path, format!("expected an array of strings, found {}", node.value.type_name()));
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &index(path, i)) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn string_map(&mut self, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
        let mut f = self.table(node, path)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (i, e) in f.entries.iter().enumerate() {
            f.used[i] = true;
            match self.string(&e.node, &join(path, &e.key)) {
                Some(s) => {
                    out.insert(e.key.clone(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
