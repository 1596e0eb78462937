//! A serde `Deserializer` over the positioned YAML tree. Every error it
//! produces carries the position and field path of the node that caused
//! it, and a hint where one helps (a misspelt field, a map where a list
//! belongs, curly quotes, a quoted number). `from_node_all` reports every
//! problem of a value in one pass, in human words for the types expected.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{FieldPath, Node, Pos, Seg, Value};

/// A decoding error at a place in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub message: String,
    pub hint: Option<String>,
    pub pos: Option<Pos>,
    pub path: FieldPath,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    fn new(message: String) -> Self {
        DecodeError {
            message,
            hint: None,
            pos: None,
            path: FieldPath::root(),
        }
    }

    /// Fills in the place if the error does not have one yet (the innermost
    /// node that saw the error wins).
    fn at(mut self, node: &Node, path: Path<'_>) -> Self {
        if self.pos.is_none() {
            self.pos = Some(node.pos);
            self.path = path.to_path();
        }
        self
    }

    fn at_path(mut self, node: &Node, path: &FieldPath) -> Self {
        if self.pos.is_none() {
            self.pos = Some(node.pos);
            self.path = path.clone();
        }
        self
    }
}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError::new(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = human_expected(&exp.to_string());
        DecodeError::new(format!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = human_expected(&exp.to_string());
        DecodeError::new(format!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        let exp = human_expected(&exp.to_string());
        DecodeError::new(format!("expected {exp}, found {len} entries"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut e = DecodeError::new(format!("unknown field `{field}`"));
        e.hint = Some(field_hint(field, expected));
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut e = DecodeError::new(format!("unknown value `{variant}`"));
        e.hint = Some(match suggest(variant, expected) {
            Some(s) => format!("did you mean `{s}`? (values are case-sensitive)"),
            None => format!("expected one of: {}", expected.join(", ")),
        });
        e
    }

    fn missing_field(field: &'static str) -> Self {
        DecodeError::new(format!("missing required field `{field}`"))
    }
}

fn describe(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Map => "a map".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Str(s) => format!("the string {s:?}"),
        de::Unexpected::Signed(i) => format!("the integer {i}"),
        de::Unexpected::Unsigned(i) => format!("the integer {i}"),
        de::Unexpected::Float(x) => format!("the number {x}"),
        de::Unexpected::Bool(b) => format!("the boolean {b}"),
        de::Unexpected::Unit => "nothing (null)".into(),
        other => other.to_string(),
    }
}

fn has_curly_quotes(s: &str) -> bool {
    s.contains(['“', '”', '‘', '’'])
}

/// The closest expected name: same letters in another case, a name that
/// ends with the field (`types` → `policyTypes`), or within two edits.
pub fn suggest<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    let lower = field.to_ascii_lowercase();
    if let Some(e) = expected.iter().find(|e| e.to_ascii_lowercase() == lower) {
        return Some(e);
    }
    if lower.len() >= 4
        && let Some(e) = expected
            .iter()
            .find(|e| e.to_ascii_lowercase().ends_with(&lower))
    {
        return Some(e);
    }
    expected
        .iter()
        .map(|e| (edit_distance(&lower, &e.to_ascii_lowercase()), *e))
        .filter(|(d, _)| *d <= 2 && *d < field.len())
        .min()
        .map(|(_, e)| e)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn field_hint(field: &str, expected: &[&str]) -> String {
    if has_curly_quotes(field) {
        return "this key contains curly quotes (“ ” ‘ ’), probably pasted from a word processor: use straight quotes or none".into();
    }
    if field == "to" && expected.contains(&"from") {
        return "ingress rules take `from` (peers) and `ports`; `to` belongs in egress rules"
            .into();
    }
    if field == "from" && expected.contains(&"to") {
        return "egress rules take `to` (peers) and `ports`; `from` belongs in ingress rules"
            .into();
    }
    if expected.contains(&"matchLabels") && !expected.contains(&field) {
        return "a label selector takes `matchLabels:` (a map of labels) and/or `matchExpressions:`; put the labels under `matchLabels:`".into();
    }
    match suggest(field, expected) {
        Some(s) if s.eq_ignore_ascii_case(field) => {
            format!("did you mean `{s}`? field names are case-sensitive")
        }
        Some(s) => format!("did you mean `{s}`?"),
        None if expected.is_empty() => "this object takes no fields".into(),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// How many times a resource is decoded again after an error that serde
/// cannot recover from (each time without the field that caused it).
const MAX_ROUNDS: usize = 64;

/// Decodes `node` (found at `path`) into `T`; the first problem only.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &FieldPath,
) -> Result<T, DecodeError> {
    from_node_all(node, path).map_err(|mut errors| errors.swap_remove(0))
}

/// Decodes `node` (found at `path`) into `T`, reporting every problem:
/// wrong scalar types, unknown values and misplaced shapes are recorded and
/// decoding goes on with a stand-in value; an error serde cannot go past
/// (an unknown field, a missing one, a value rejected by its type) is
/// recorded and the node is decoded again without the offending field.
/// The errors come sorted by position; `Err` always holds at least one.
pub fn from_node_all<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &FieldPath,
) -> Result<T, Vec<DecodeError>> {
    let mut skip: Vec<FieldPath> = Vec::new();
    let mut errors: Vec<DecodeError> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let ctx = Ctx {
            skip: &skip,
            recorded: std::cell::RefCell::new(Vec::new()),
        };
        let result = T::deserialize(NodeDe {
            node,
            path: Path::Root(path),
            ctx: &ctx,
        });
        for e in ctx.recorded.into_inner() {
            add_unique(&mut errors, e);
        }
        let fatal = match result {
            Ok(v) if errors.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        // A field left out (or a stand-in) makes its parent incomplete:
        // that is a consequence, not a second problem.
        let consequence = errors.iter().any(|e| e.path == fatal.path)
            || skip
                .iter()
                .any(|s| s.0.len() == fatal.path.0.len() + 1 && s.0.starts_with(&fatal.path.0));
        let target = fatal.path.clone();
        if !consequence {
            add_unique(&mut errors, fatal);
        }
        if target.0.len() <= path.0.len() || skip.contains(&target) {
            break;
        }
        skip.push(target);
    }
    if errors.is_empty() {
        errors.push(DecodeError::new("this value cannot be decoded".into()).at_path(node, path));
    }
    errors.sort_by_key(|e| e.pos);
    Err(errors)
}

fn add_unique(errors: &mut Vec<DecodeError>, e: DecodeError) {
    if !errors
        .iter()
        .any(|o| o.path == e.path && o.message == e.message)
    {
        errors.push(e);
    }
}

/// What one decoding round shares: the fields to leave out, and the errors
/// recorded while going on past them.
struct Ctx<'s> {
    skip: &'s [FieldPath],
    recorded: std::cell::RefCell<Vec<DecodeError>>,
}

/// The path of the node being decoded, as a chain on the stack: made into
/// a `FieldPath` only when an error needs it.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root(&'p FieldPath),
    Key(&'p Path<'p>, &'p Node),
    Index(&'p Path<'p>, usize),
}

fn key_text(k: &Node) -> String {
    match &k.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Float(f) => f.to_string(),
        _ => String::from("?"),
    }
}

impl Path<'_> {
    fn to_path(self) -> FieldPath {
        match self {
            Path::Root(p) => p.clone(),
            Path::Key(parent, k) => {
                let mut p = parent.to_path();
                p.0.push(Seg::Key(key_text(k)));
                p
            }
            Path::Index(parent, i) => {
                let mut p = parent.to_path();
                p.0.push(Seg::Index(i));
                p
            }
        }
    }

    /// The last key of the path, for hints.
    fn last_key(self) -> Option<String> {
        match self {
            Path::Key(_, k) => Some(key_text(k)),
            _ => None,
        }
    }

    /// Whether this node is one of those to leave out.
    fn skipped(self, ctx: &Ctx<'_>) -> bool {
        !ctx.skip.is_empty() && {
            let p = self.to_path();
            ctx.skip.contains(&p)
        }
    }
}

struct NodeDe<'a, 'p> {
    node: &'a Node,
    path: Path<'p>,
    ctx: &'p Ctx<'p>,
}

/// Human words for what serde says a type expects (never Rust names).
fn human_expected(exp: &str) -> String {
    let words = match exp {
        "f32" | "f64" => "a number",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "u128" | "usize" => "a whole number, not negative",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "a sequence" | "a tuple" => "a list",
        "a string" | "a borrowed string" | "a character" | "a string or bytes" => "a string",
        "a boolean" => "true or false",
        "unit" => "nothing (null)",
        "option" => "a value",
        _ if exp.starts_with("struct ") => "a map of fields",
        _ if exp.starts_with("enum ") => "one of the allowed words",
        _ if exp.starts_with("tuple") => "a list",
        _ => return exp.to_string(),
    };
    words.to_string()
}

/// The value found, in words: scalars are quoted (long ones cut short).
fn found(node: &Node) -> String {
    match &node.value {
        Value::Str(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(37).collect();
            format!("the string \"{head}…\"")
        }
        Value::Str(s) => format!("the string {s:?}"),
        Value::Int(i) => format!("the integer {i}"),
        Value::Float(x) => format!("the number {x}"),
        Value::Bool(b) => format!("the boolean {b}"),
        _ => node.kind_name().to_string(),
    }
}

/// What a visitor builds, in words, when its type says more than its shape.
fn target_words<T>(shape: &'static str) -> &'static str {
    let name = std::any::type_name::<T>();
    let strings = "<alloc::string::String, alloc::string::String>";
    if name.contains("Map") && name.ends_with(strings) {
        "a map of strings"
    } else if name == "alloc::vec::Vec<alloc::string::String>" {
        "a list of strings"
    } else {
        shape
    }
}

impl<'a> NodeDe<'a, '_> {
    fn wrap<T>(&self, r: Result<T, DecodeError>) -> Result<T, DecodeError> {
        r.map_err(|e| e.at(self.node, self.path))
    }

    /// Keeps `e` and lets decoding go on (with a stand-in the caller gives).
    fn record(&self, e: DecodeError) {
        self.ctx
            .recorded
            .borrow_mut()
            .push(e.at(self.node, self.path));
    }

    fn type_error(&self, expected: &str) -> DecodeError {
        let mut e = DecodeError::new(format!("expected {expected}, found {}", found(self.node)));
        if expected.contains("list") && matches!(self.node.value, Value::Map(_)) {
            let field = self.path.last_key().unwrap_or_else(|| "this field".into());
            e.hint = Some(format!(
                "`{field}` takes a list: start each entry with `- ` (for example `{field}:` then `- port: 80` on the next line)"
            ));
        }
        let scalar = !matches!(self.node.value, Value::Seq(_) | Value::Map(_) | Value::Null);
        if expected.contains("list") && scalar {
            let field = self.path.last_key().unwrap_or_else(|| "this field".into());
            e.hint = Some(format!(
                "`{field}` takes a list, even of one entry: write it in brackets (`[…]`) or as `- …` lines below `{field}:`"
            ));
        }
        if let Value::Str(s) = &self.node.value {
            if has_curly_quotes(s) {
                e.hint =
                    Some("this value contains curly quotes (“ ” ‘ ’): use straight quotes".into());
            } else if expected.contains("number") && s.trim().parse::<f64>().is_ok() {
                e.hint = Some(format!(
                    "remove the quotes: `{}` is a number only when written without them",
                    s.trim()
                ));
            }
        }
        e.at(self.node, self.path)
    }
}

impl<'de: 'p, 'p> NodeDe<'de, 'p> {
    fn visit_seq_of<V: Visitor<'de>>(
        &self,
        items: &'de [Node],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_seq(SeqDe {
            items: items.iter(),
            index: 0,
            path: &self.path,
            ctx: self.ctx,
        })
    }

    fn visit_map_of<V: Visitor<'de>>(
        &self,
        entries: &'de [(Node, Node)],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_map(MapDe {
            entries: entries.iter(),
            value: None,
            path: &self.path,
            ctx: self.ctx,
        })
    }

    /// A number of the kind `exp` (`u16`, `f64`…): other values are
    /// recorded and decoding goes on with zero.
    fn number<V: Visitor<'de>>(self, exp: &str, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Int(_) | Value::Float(_) => self.deserialize_any_inner(visitor),
            _ => {
                self.record(self.type_error(&human_expected(exp)));
                let r = if exp.starts_with('f') {
                    visitor.visit_f64(0.0)
                } else {
                    visitor.visit_u64(0)
                };
                self.wrap(r)
            }
        }
    }

    fn deserialize_any_inner<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => self.visit_seq_of(items, visitor),
            Value::Map(entries) => self.visit_map_of(entries, visitor),
        };
        self.wrap(r)
    }
}

macro_rules! numbers {
    ($($method:ident $name:literal),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
            self.number($name, visitor)
        })*
    };
}

impl<'de: 'p, 'p> de::Deserializer<'de> for NodeDe<'de, 'p> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_any_inner(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Null => self.wrap(visitor.visit_none()),
            _ => {
                let (node, path) = (self.node, self.path);
                visitor.visit_some(self).map_err(|e| e.at(node, path))
            }
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Seq(_) => self.deserialize_any(visitor),
            // As in Kubernetes, an explicit null is an empty list.
            Value::Null => self.wrap(self.visit_seq_of(&[], visitor)),
            _ => {
                self.record(self.type_error(target_words::<V::Value>("a list")));
                self.wrap(self.visit_seq_of(&[], visitor))
            }
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Map(_) => self.deserialize_any(visitor),
            // An explicit null is an empty object (`podSelector:` with nothing after it).
            Value::Null => self.wrap(self.visit_map_of(&[], visitor)),
            _ => {
                self.record(self.type_error(target_words::<V::Value>("a map")));
                self.wrap(self.visit_map_of(&[], visitor))
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Map(_) | Value::Null => self.deserialize_map(visitor),
            _ => {
                self.record(self.type_error("a map of fields"));
                self.wrap(self.visit_map_of(&[], visitor))
            }
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Str(_) => self.deserialize_any(visitor),
            other => {
                let mut e = self.type_error("a string");
                if matches!(other, Value::Int(_) | Value::Float(_) | Value::Bool(_)) {
                    e.hint = Some("quote the value to make it a string, e.g. \"1\"".into());
                }
                self.record(e);
                self.wrap(visitor.visit_borrowed_str(""))
            }
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Str(_) => self.deserialize_any(visitor),
            _ => Err(self.type_error("a field name")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let word = match &self.node.value {
            Value::Str(s) if variants.contains(&s.as_str()) || variants.is_empty() => s.as_str(),
            Value::Str(s) => {
                self.record(<DecodeError as de::Error>::unknown_variant(s, variants));
                variants[0]
            }
            _ if variants.is_empty() => return Err(self.type_error("one of the allowed words")),
            _ => {
                let mut e = self.type_error("one of the allowed words");
                e.hint = Some(format!("expected one of: {}", variants.join(", ")));
                self.record(e);
                variants[0]
            }
        };
        let (node, path) = (self.node, self.path);
        visitor
            .visit_enum(EnumDe { word })
            .map_err(|e| e.at(node, path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Bool(_) => self.deserialize_any(visitor),
            _ => {
                let mut e = self.type_error("true or false");
                if let Value::Str(s) = &self.node.value
                    && matches!(s.as_str(), "true" | "false")
                {
                    e.hint = Some(format!("remove the quotes: write `{s}`"));
                }
                self.record(e);
                self.wrap(visitor.visit_bool(false))
            }
        }
    }

    numbers! {
        deserialize_u8 "u8", deserialize_u16 "u16", deserialize_u32 "u32", deserialize_u64 "u64",
        deserialize_i8 "i8", deserialize_i16 "i16", deserialize_i32 "i32", deserialize_i64 "i64",
        deserialize_f32 "f32", deserialize_f64 "f64"
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char
        bytes byte_buf unit unit_struct newtype_struct tuple tuple_struct
    }
}

struct SeqDe<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'p Path<'p>,
    ctx: &'p Ctx<'p>,
}

impl<'de: 'p, 'p> de::SeqAccess<'de> for SeqDe<'de, 'p> {
    type Error = DecodeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        loop {
            let Some(node) = self.items.next() else {
                return Ok(None);
            };
            let path = Path::Index(self.path, self.index);
            self.index += 1;
            if path.skipped(self.ctx) {
                continue;
            }
            let de = NodeDe {
                node,
                path,
                ctx: self.ctx,
            };
            return seed.deserialize(de).map(Some).map_err(|e| e.at(node, path));
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<(&'a Node, &'a Node)>,
    path: &'p Path<'p>,
    ctx: &'p Ctx<'p>,
}

impl<'de: 'p, 'p> de::MapAccess<'de> for MapDe<'de, 'p> {
    type Error = DecodeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        loop {
            let Some((k, v)) = self.entries.next() else {
                return Ok(None);
            };
            let path = Path::Key(self.path, k);
            if path.skipped(self.ctx) {
                continue;
            }
            self.value = Some((k, v));
            let de = NodeDe {
                node: k,
                path,
                ctx: self.ctx,
            };
            return seed.deserialize(de).map(Some).map_err(|e| e.at(k, path));
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let (k, node) = self.value.take().expect("value after key");
        let path = Path::Key(self.path, k);
        let de = NodeDe {
            node,
            path,
            ctx: self.ctx,
        };
        seed.deserialize(de).map_err(|e| e.at(node, path))
    }
}

struct EnumDe<'a> {
    word: &'a str,
}

impl<'de> de::EnumAccess<'de> for EnumDe<'de> {
    type Error = DecodeError;
    type Variant = UnitOnly;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, UnitOnly), DecodeError> {
        let v = seed.deserialize(self.word.into_deserializer())?;
        Ok((v, UnitOnly))
    }
}

struct UnitOnly;

impl<'de> de::VariantAccess<'de> for UnitOnly {
    type Error = DecodeError;
    fn unit_variant(self) -> Result<(), DecodeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, DecodeError> {
        Err(de::Error::custom("expected a plain word"))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, DecodeError> {
        Err(de::Error::custom("expected a plain word"))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, DecodeError> {
        Err(de::Error::custom("expected a plain word"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse_one;
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Peer {
        pod_selector: Option<std::collections::BTreeMap<String, String>>,
        namespace_selector: Option<std::collections::BTreeMap<String, String>>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        #[serde(default)]
        from: Vec<Peer>,
        #[serde(default)]
        ports: Vec<u16>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    enum Action {
        Allow,
        Deny,
    }

    fn decode<T: for<'a> Deserialize<'a>>(text: &str) -> Result<T, DecodeError> {
        let node = parse_one(text, 1).unwrap();
        // Leak to satisfy the borrow of `'de` in a test helper.
        let node: &'static Node = Box::leak(Box::new(node));
        from_node(node, &FieldPath::root())
    }

    #[test]
    fn unknown_field_points_at_the_key_with_a_case_hint() {
        let err = decode::<Rule>("from:\n- NamespaceSelector: {}\n").unwrap_err();
        assert_eq!(err.message, "unknown field `NamespaceSelector`");
        assert_eq!(err.pos, Some(Pos { line: 2, col: 3 }));
        assert_eq!(err.path.to_string(), "from[0].NamespaceSelector");
        assert!(
            err.hint
                .unwrap()
                .contains("did you mean `namespaceSelector`")
        );
    }

    #[test]
    fn map_where_a_list_belongs() {
        let err = decode::<Rule>("ports:\n  port: 3111\n").unwrap_err();
        assert_eq!(err.message, "expected a list, found a map");
        assert_eq!(err.pos, Some(Pos { line: 2, col: 3 }));
        assert!(err.hint.unwrap().contains("`ports` takes a list"));
    }

    #[test]
    fn wrong_scalar_type_points_at_the_value() {
        let err = decode::<Rule>("ports: [80, x]\n").unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 1, col: 13 }));
        assert_eq!(err.path.to_string(), "ports[1]");
        assert!(
            err.message.contains("found the string \"x\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn every_mistake_is_reported_and_types_are_named_in_words() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Spec {
            order: Option<f64>,
            action: Action,
            rules: Vec<Rule>,
            labels: std::collections::BTreeMap<String, String>,
            on: Option<bool>,
        }
        let text = "order: \"100\"\naction: allow\nrules:\n- ports: [80, x]\n  extra: 1\n- from: 5\nlabels: [a]\non: \"true\"\nbogus: 1\n";
        let node: &'static Node = Box::leak(Box::new(parse_one(text, 1).unwrap()));
        let errors = from_node_all::<Spec>(node, &FieldPath::root()).unwrap_err();
        let got: Vec<(String, String, Pos)> = errors
            .iter()
            .map(|e| (e.path.to_string(), e.message.clone(), e.pos.unwrap()))
            .collect();
        let p = |line, col| Pos { line, col };
        let want = [
            (
                "order",
                "expected a number, found the string \"100\"",
                p(1, 8),
            ),
            ("action", "unknown value `allow`", p(2, 9)),
            (
                "rules[0].ports[1]",
                "expected a whole number from 0 to 65535, found the string \"x\"",
                p(4, 15),
            ),
            ("rules[0].extra", "unknown field `extra`", p(5, 3)),
            (
                "rules[1].from",
                "expected a list, found the integer 5",
                p(6, 9),
            ),
            ("labels", "expected a map of strings, found a list", p(7, 9)),
            (
                "on",
                "expected true or false, found the string \"true\"",
                p(8, 5),
            ),
            ("bogus", "unknown field `bogus`", p(9, 1)),
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for ((path, msg, pos), (wpath, wmsg, wpos)) in got.iter().zip(want) {
            assert_eq!((path.as_str(), *pos), (wpath, wpos), "{msg}");
            assert!(msg.starts_with(wmsg), "{msg:?} is not {wmsg:?}");
        }
        assert!(
            errors[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("remove the quotes")
        );
        assert!(
            errors[6]
                .hint
                .as_deref()
                .unwrap()
                .contains("remove the quotes")
        );
        for e in &errors {
            for rust in ["f64", "u16", "Vec", "BTreeMap", "String", "struct "] {
                assert!(!e.message.contains(rust), "{}", e.message);
            }
        }
    }

    #[test]
    fn a_missing_field_is_reported_once_not_with_its_consequences() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            action: Action,
            name: String,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
            count: u16,
        }
        let node: &'static Node = Box::leak(Box::new(
            parse_one(
                "items:\n- name: a\n- action: Deny\n  name: 7\ncount: -1\n",
                1,
            )
            .unwrap(),
        ));
        let errors = from_node_all::<Outer>(node, &FieldPath::root()).unwrap_err();
        let msgs: Vec<String> = errors
            .iter()
            .map(|e| format!("{} {}", e.path, e.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "items[0] missing required field `action`",
                "items[1].name expected a string, found the integer 7",
                "count expected a whole number from 0 to 65535, found the integer -1",
            ],
            "{msgs:#?}"
        );
    }

    #[test]
    fn unknown_enum_value_suggests() {
        let err = decode::<Action>("allow").unwrap_err();
        assert!(err.hint.unwrap().contains("did you mean `Allow`"));
    }

    #[test]
    fn null_means_empty() {
        let r: Rule = decode("from:\nports:\n").unwrap();
        assert_eq!(
            r,
            Rule {
                from: vec![],
                ports: vec![]
            }
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("types", &["policyTypes", "podSelector"]),
            Some("policyTypes")
        );
        assert_eq!(suggest("selctor", &["selector", "order"]), Some("selector"));
        assert_eq!(suggest("zzz", &["selector", "order"]), None);
        assert_eq!(
            suggest("Namespace", &["name", "namespace"]),
            Some("namespace")
        );
    }
}
