//! An object's labels as the model holds them ([`LabelPairs`]): interned
//! key/value pairs sorted by key, one small slice per object instead of a
//! tree of owned strings. 250,000 pods with two labels each hold 32 bytes
//! of labels apiece; the texts are shared with every other object (and with
//! the calculation, which interns the same [`Sym`]s).
//!
//! Reads look like `BTreeMap<String, String>`'s (`get`, `iter` in key
//! order, `contains_key`); writes rebuild the slice, which is fine for the
//! handful of labels an object carries.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::intern::{Sym, Text};

/// Sorted, unique-key, interned `key → value` pairs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelPairs(Box<[(Sym, Sym)]>);

impl LabelPairs {
    pub fn new() -> LabelPairs {
        LabelPairs::default()
    }

    /// The pairs, sorted by key.
    pub fn pairs(&self) -> &[(Sym, Sym)] {
        &self.0
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q: AsRef<str> + ?Sized>(&self, key: &Q) -> Option<&'static String> {
        let i = self.position(key.as_ref()).ok()?;
        Some(self.0[i].1.as_string())
    }

    pub fn contains_key<Q: AsRef<str> + ?Sized>(&self, key: &Q) -> bool {
        self.position(key.as_ref()).is_ok()
    }

    /// Every label in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &'static String> + '_ {
        self.0.iter().map(|(k, _)| k.as_string())
    }

    pub fn values(&self) -> impl Iterator<Item = &'static String> + '_ {
        self.0.iter().map(|(_, v)| v.as_string())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `key` to `value`; the previous value, if any.
    pub fn insert(
        &mut self,
        key: impl AsRef<str>,
        value: impl AsRef<str>,
    ) -> Option<&'static String> {
        let value = Sym::new(value.as_ref());
        let mut pairs = self.0.to_vec();
        let old = match self.position(key.as_ref()) {
            Ok(i) => Some(std::mem::replace(&mut pairs[i].1, value).as_string()),
            Err(i) => {
                pairs.insert(i, (Sym::new(key.as_ref()), value));
                None
            }
        };
        self.0 = pairs.into_boxed_slice();
        old
    }

    /// Sets `key` to `value` unless it has a value already.
    pub fn insert_if_absent(&mut self, key: &str, value: &str) {
        if !self.contains_key(key) {
            self.insert(key, value);
        }
    }

    /// Removes `key`; the value it had, if any.
    pub fn remove(&mut self, key: &str) -> Option<&'static String> {
        let i = self.position(key).ok()?;
        let mut pairs = self.0.to_vec();
        let (_, v) = pairs.remove(i);
        self.0 = pairs.into_boxed_slice();
        Some(v.as_string())
    }

    /// A plain map of the labels (for output and tests).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The labels in key order, as `(&key, &value)`.
#[derive(Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, (Sym, Sym)>);

impl Iterator for Iter<'_> {
    type Item = (&'static String, &'static String);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_string(), v.as_string()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a LabelPairs {
    type Item = (&'static String, &'static String);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// A later pair with a key already seen replaces the earlier one (as
/// inserting into a map does).
impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for LabelPairs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(items: I) -> LabelPairs {
        let pairs = items.into_iter();
        LabelPairs::of_syms(
            pairs
                .map(|(k, v)| (Sym::new(k.as_ref()), Sym::new(v.as_ref())))
                .collect(),
        )
    }
}

impl LabelPairs {
    /// Sorts `pairs` by key; of a repeated key, the last pair is kept.
    fn of_syms(mut pairs: Vec<(Sym, Sym)>) -> LabelPairs {
        // Stable: equal keys keep their order.
        pairs.sort_by_key(|p| p.0);
        let mut out: Vec<(Sym, Sym)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        LabelPairs(out.into_boxed_slice())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for LabelPairs {
    fn from(items: [(K, V); N]) -> LabelPairs {
        items.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for LabelPairs {
    fn from(map: BTreeMap<String, String>) -> LabelPairs {
        map.into_iter().collect()
    }
}

impl crate::selector::Labels for LabelPairs {
    fn get(&self, key: &str) -> Option<&str> {
        LabelPairs::get(self, key).map(String::as_str)
    }
}

impl fmt::Debug for LabelPairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for LabelPairs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LabelPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LabelPairs, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = LabelPairs;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of label keys to string values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelPairs, A::Error> {
                let mut pairs: Vec<(Sym, Sym)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<Text, Text>()? {
                    pairs.push((Sym::new(&k.0), Sym::new(&v.0)));
                }
                Ok(LabelPairs::of_syms(pairs))
            }
        }
        d.deserialize_map(PairsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_a_sorted_map_and_keeps_the_last_of_a_repeated_key() {
        let l: LabelPairs = [("tier", "web"), ("app", "a"), ("tier", "api")].into();
        let got: Vec<_> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("app", "a"), ("tier", "api")]);
        assert_eq!(l.get("tier").map(String::as_str), Some("api"));
        assert!(l.contains_key("app") && !l.contains_key("ap"));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn insert_and_remove_keep_the_pairs_sorted() {
        let mut l = LabelPairs::new();
        assert_eq!(l.insert("b", "1"), None);
        assert_eq!(l.insert("a", "2"), None);
        assert_eq!(l.insert("b", "3").map(String::as_str), Some("1"));
        assert_eq!(format!("{l:?}"), r#"{"a": "2", "b": "3"}"#);
        assert_eq!(l.remove("a").map(String::as_str), Some("2"));
        assert_eq!(l.remove("a"), None);
        assert_eq!(l.to_map(), BTreeMap::from([("b".into(), "3".into())]));
    }

    #[test]
    fn serde_round_trips_a_map_and_rejects_a_value_that_is_not_a_string() {
        let l: LabelPairs = serde_json::from_str(r#"{"z": "1", "a": "2"}"#).unwrap();
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"a":"2","z":"1"}"#);
        let e = serde_json::from_str::<LabelPairs>(r#"{"a": 1}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
    }
}
