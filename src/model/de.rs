//! A serde `Deserializer` over the positioned YAML tree. Every error it
//! produces carries the position and field path of the node that caused
//! it, and a hint where one helps (a misspelt field, a map where a list
//! belongs, curly quotes).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{FieldPath, Node, Pos, Value};

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
    fn at(mut self, node: &Node, path: &FieldPath) -> Self {
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
        DecodeError::new(format!("expected {exp}, found {}", describe(&unexp)))
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

fn edit_distance(a: &str, b: &str) -> usize {
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

/// Decodes `node` (found at `path`) into `T`.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &FieldPath,
) -> Result<T, DecodeError> {
    T::deserialize(NodeDe {
        node,
        path: path.clone(),
    })
}

struct NodeDe<'a> {
    node: &'a Node,
    path: FieldPath,
}

impl<'a> NodeDe<'a> {
    fn wrap<T>(&self, r: Result<T, DecodeError>) -> Result<T, DecodeError> {
        r.map_err(|e| e.at(self.node, &self.path))
    }

    fn type_error(&self, expected: &str) -> DecodeError {
        let mut e = DecodeError::new(format!(
            "expected {expected}, found {}",
            self.node.kind_name()
        ));
        if expected.contains("list") && matches!(self.node.value, Value::Map(_)) {
            let field = match self.path.0.last() {
                Some(super::yaml::Seg::Key(k)) => k.clone(),
                _ => "this field".into(),
            };
            e.hint = Some(format!(
                "`{field}` takes a list: start each entry with `- ` (for example `{field}:` then `- port: 80` on the next line)"
            ));
        }
        if let Value::Str(s) = &self.node.value
            && has_curly_quotes(s)
        {
            e.hint = Some("this value contains curly quotes (“ ” ‘ ’): use straight quotes".into());
        }
        e.at(self.node, &self.path)
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                index: 0,
                path: &self.path,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
                path: &self.path,
            }),
        };
        self.wrap(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Null => self.wrap(visitor.visit_none()),
            _ => {
                let (node, path) = (self.node, self.path.clone());
                visitor
                    .visit_some(NodeDe {
                        node,
                        path: path.clone(),
                    })
                    .map_err(|e| e.at(node, &path))
            }
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Seq(_) => self.deserialize_any(visitor),
            // As in Kubernetes, an explicit null is an empty list.
            Value::Null => self.wrap(visitor.visit_seq(SeqDe {
                items: [].iter(),
                index: 0,
                path: &self.path,
            })),
            _ => Err(self.type_error("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Map(_) => self.deserialize_any(visitor),
            // An explicit null is an empty object (`podSelector:` with nothing after it).
            Value::Null => self.wrap(visitor.visit_map(MapDe {
                entries: [].iter(),
                value: None,
                path: &self.path,
            })),
            _ => Err(self.type_error("a map")),
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
            _ => Err(self.type_error("a map of fields")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Str(_) => self.deserialize_any(visitor),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                let mut e = self.type_error("a string");
                e.hint = Some("quote the value to make it a string, e.g. \"1\"".into());
                Err(e)
            }
            _ => Err(self.type_error("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Str(_) => {
                let (node, path) = (self.node, self.path.clone());
                visitor
                    .visit_enum(EnumDe { de: self })
                    .map_err(|e| e.at(node, &path))
            }
            _ => Err(self.type_error("one of the allowed words")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::Bool(_) => self.deserialize_any(visitor),
            _ => Err(self.type_error("true or false")),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct newtype_struct tuple tuple_struct
    }
}

struct SeqDe<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'p FieldPath,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DecodeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.items.next() {
            None => Ok(None),
            Some(node) => {
                let path = self.path.index(self.index);
                self.index += 1;
                seed.deserialize(NodeDe {
                    node,
                    path: path.clone(),
                })
                .map(Some)
                .map_err(|e| e.at(node, &path))
            }
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<(&'a Node, FieldPath)>,
    path: &'p FieldPath,
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DecodeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((k, v)) => {
                let key_text = match &k.value {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Float(f) => f.to_string(),
                    _ => String::from("?"),
                };
                let path = self.path.key(&key_text);
                self.value = Some((v, path.clone()));
                seed.deserialize(NodeDe {
                    node: k,
                    path: path.clone(),
                })
                .map(Some)
                .map_err(|e| e.at(k, &path))
            }
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let (node, path) = self.value.take().expect("value after key");
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map_err(|e| e.at(node, &path))
    }
}

struct EnumDe<'a> {
    de: NodeDe<'a>,
}

impl<'de> de::EnumAccess<'de> for EnumDe<'de> {
    type Error = DecodeError;
    type Variant = UnitOnly;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, UnitOnly), DecodeError> {
        let s = self.de.node.as_str().unwrap_or_default();
        let v = seed.deserialize(s.into_deserializer())?;
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
