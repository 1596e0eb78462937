//! Interned labels: every distinct label key and value is stored once for
//! the life of the process ([`Sym`], a thin pointer compared by address),
//! and an endpoint's label set ([`LabelMap`]) is its own labels plus a
//! shared reference to the labels it inherits (namespace, service account
//! and profile labels), so that 250,000 pods in 200 namespaces hold 200
//! copies of the inherited labels, not 250,000.
//!
//! The interner never forgets a string: memory grows with the number of
//! distinct label texts ever seen, not with the number of labelled objects.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, OnceLock};

pub use crate::intern::{FxHasher, Sym, SymMap};

use crate::selector::Selector;

/// Sorted `key → value` pairs of interned labels.
pub type Pairs = [(Sym, Sym)];

fn find(pairs: &Pairs, key: &str) -> Option<Sym> {
    pairs
        .binary_search_by(|(k, _)| k.as_str().cmp(key))
        .ok()
        .map(|i| pairs[i].1)
}

/// Interns and sorts labels (later duplicates of a key are dropped).
pub fn pairs_of<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(Sym, Sym)> {
    pairs_of_syms(labels.into_iter().map(|(k, v)| (Sym::new(k), Sym::new(v))))
}

/// As [`pairs_of`], of labels already interned.
pub fn pairs_of_syms(labels: impl IntoIterator<Item = (Sym, Sym)>) -> Vec<(Sym, Sym)> {
    let mut out: Vec<(Sym, Sym)> = labels.into_iter().collect();
    out.sort_by_key(|a| a.0);
    out.dedup_by(|b, a| a.0 == b.0);
    out
}

type Shared = HashMap<Box<Pairs>, Arc<Pairs>, BuildHasherDefault<FxHasher>>;

/// One shared copy of an inherited label list: every endpoint of a
/// namespace gets the same `Arc`. Lists no endpoint holds any more are
/// dropped when the table has doubled since it was last swept.
pub fn shared(pairs: Vec<(Sym, Sym)>) -> Arc<Pairs> {
    static TABLE: OnceLock<std::sync::Mutex<(Shared, usize)>> = OnceLock::new();
    let table = TABLE.get_or_init(Default::default);
    let mut guard = table.lock().unwrap_or_else(|e| e.into_inner());
    let (map, swept) = &mut *guard;
    if let Some(a) = map.get(pairs.as_slice()) {
        return a.clone();
    }
    if map.len() >= 2 * (*swept).max(1024) {
        map.retain(|_, a| Arc::strong_count(a) > 1);
        *swept = map.len();
    }
    let a: Arc<Pairs> = pairs.as_slice().into();
    map.insert(pairs.into_boxed_slice(), a.clone());
    a
}

/// An object's labels: its own (which win) over the ones it inherits.
/// Both are shared on clone (the member index holds each endpoint's
/// labels as the snapshot does); a change makes a new slice.
#[derive(Clone, Default)]
pub struct LabelMap {
    own: Arc<Pairs>,
    inherited: Option<Arc<Pairs>>,
}

impl LabelMap {
    pub fn new() -> LabelMap {
        LabelMap::default()
    }

    /// Own labels `own` (sorted, unique keys) over shared `inherited` ones.
    pub fn layered(own: Vec<(Sym, Sym)>, inherited: Option<Arc<Pairs>>) -> LabelMap {
        debug_assert!(own.windows(2).all(|w| w[0].0 < w[1].0));
        LabelMap {
            own: own.into(),
            inherited: inherited.filter(|i| !i.is_empty()),
        }
    }

    pub fn get_sym(&self, key: &str) -> Option<Sym> {
        find(&self.own, key).or_else(|| self.inherited.as_deref().and_then(|i| find(i, key)))
    }

    /// The value of `key` (as `BTreeMap::get`).
    pub fn get<Q: AsRef<str> + ?Sized>(&self, key: &Q) -> Option<&'static String> {
        self.get_sym(key.as_ref()).map(Sym::as_string)
    }

    pub fn contains_key<Q: AsRef<str> + ?Sized>(&self, key: &Q) -> bool {
        self.get_sym(key.as_ref()).is_some()
    }

    /// Every label in key order, each key once.
    pub fn syms(&self) -> Merged<'_> {
        Merged {
            own: &self.own,
            inherited: self.inherited.as_deref().unwrap_or(&[]),
        }
    }

    /// Every label in key order (as `BTreeMap::iter`).
    pub fn iter(&self) -> impl Iterator<Item = (&'static String, &'static String)> + '_ {
        self.syms().map(|(k, v)| (k.as_string(), v.as_string()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &'static String> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.syms().count()
    }

    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.inherited.is_none()
    }

    /// Sets `key` to `value`; the previous value, if any.
    pub fn insert(
        &mut self,
        key: impl AsRef<str>,
        value: impl AsRef<str>,
    ) -> Option<&'static String> {
        let (key, value) = (Sym::new(key.as_ref()), Sym::new(value.as_ref()));
        let old = self.get_sym(key.as_str());
        let mut own = self.own.to_vec();
        match own.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => own[i].1 = value,
            Err(i) => own.insert(i, (key, value)),
        }
        self.own = own.into();
        old.map(Sym::as_string)
    }

    /// Removes `key` (own or inherited); the value it had, if any.
    pub fn remove(&mut self, key: &str) -> Option<&'static String> {
        let old = self.get_sym(key)?;
        // Inherited labels are shared: this map takes its own copy.
        let own: Vec<(Sym, Sym)> = self.syms().filter(|(k, _)| k.as_str() != key).collect();
        self.own = own.into();
        self.inherited = None;
        Some(old.as_string())
    }

    /// A plain map of the labels (for output and tests).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Bytes of this map's own labels (shared with its clones; the
    /// inherited labels and the interned texts not counted).
    pub fn own_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.own)
    }
}

/// The merge of an object's own labels over its inherited ones.
#[derive(Clone)]
pub struct Merged<'a> {
    own: &'a Pairs,
    inherited: &'a Pairs,
}

impl Iterator for Merged<'_> {
    type Item = (Sym, Sym);

    fn next(&mut self) -> Option<(Sym, Sym)> {
        match (self.own.first(), self.inherited.first()) {
            (None, None) => None,
            (Some(o), None) => {
                self.own = &self.own[1..];
                Some(*o)
            }
            (None, Some(i)) => {
                self.inherited = &self.inherited[1..];
                Some(*i)
            }
            (Some(o), Some(i)) => match o.0.cmp(&i.0) {
                std::cmp::Ordering::Less => {
                    self.own = &self.own[1..];
                    Some(*o)
                }
                std::cmp::Ordering::Greater => {
                    self.inherited = &self.inherited[1..];
                    Some(*i)
                }
                std::cmp::Ordering::Equal => {
                    self.own = &self.own[1..];
                    self.inherited = &self.inherited[1..];
                    Some(*o)
                }
            },
        }
    }
}

impl PartialEq for LabelMap {
    fn eq(&self, o: &LabelMap) -> bool {
        self.syms().eq(o.syms())
    }
}

impl fmt::Debug for LabelMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.syms()).finish()
    }
}

impl<'a> IntoIterator for &'a LabelMap {
    type Item = (&'static String, &'static String);
    type IntoIter = Box<dyn Iterator<Item = (&'static String, &'static String)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for LabelMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> LabelMap {
        let mut own: Vec<(Sym, Sym)> = it
            .into_iter()
            .map(|(k, v)| (Sym::new(k.as_ref()), Sym::new(v.as_ref())))
            .collect();
        // The last value of a key wins, as in a map built by inserts.
        own.reverse();
        own.sort_by_key(|a| a.0);
        own.dedup_by(|b, a| a.0 == b.0);
        LabelMap::layered(own, None)
    }
}

impl From<&BTreeMap<String, String>> for LabelMap {
    fn from(m: &BTreeMap<String, String>) -> LabelMap {
        m.iter().collect()
    }
}

impl From<BTreeMap<String, String>> for LabelMap {
    fn from(m: BTreeMap<String, String>) -> LabelMap {
        LabelMap::from(&m)
    }
}

/// `labels["key"]`, as on a map: panics when the key is absent.
impl std::ops::Index<&str> for LabelMap {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        self.get(key).unwrap_or_else(|| panic!("no label `{key}`"))
    }
}

impl crate::selector::Labels for LabelMap {
    fn get(&self, key: &str) -> Option<&str> {
        self.get_sym(key).map(Sym::as_str)
    }
}

impl LabelMap {
    /// The value of `key`, compared by symbol (no text comparison).
    pub fn get_by(&self, key: Sym) -> Option<Sym> {
        let hit = |pairs: &Pairs| pairs.iter().find(|(k, _)| *k == key).map(|p| p.1);
        hit(&self.own).or_else(|| self.inherited.as_deref().and_then(hit))
    }
}

/// A selector with its label keys and values interned, evaluated against
/// a [`LabelMap`] by symbol: the same answers as [`Selector::matches`],
/// without comparing texts. Built per use (e.g. per set filled).
#[derive(Debug, Clone)]
pub enum SymSelector {
    All,
    Has(Sym),
    Equal(Sym, Sym),
    NotEqual(Sym, Sym),
    In(Sym, Vec<Sym>),
    NotIn(Sym, Vec<Sym>),
    Contains(Sym, String),
    StartsWith(Sym, String),
    EndsWith(Sym, String),
    Not(Box<SymSelector>),
    And(Vec<SymSelector>),
    Or(Vec<SymSelector>),
}

impl SymSelector {
    pub fn new(sel: &Selector) -> SymSelector {
        let s = |t: &String| Sym::new(t);
        let all = |vs: &[String]| vs.iter().map(|v| Sym::new(v)).collect();
        match sel {
            Selector::All | Selector::Global => SymSelector::All,
            Selector::Has(k) => SymSelector::Has(s(k)),
            Selector::Equal(k, v) => SymSelector::Equal(s(k), s(v)),
            Selector::NotEqual(k, v) => SymSelector::NotEqual(s(k), s(v)),
            Selector::In(k, vs) => SymSelector::In(s(k), all(vs)),
            Selector::NotIn(k, vs) => SymSelector::NotIn(s(k), all(vs)),
            Selector::Contains(k, v) => SymSelector::Contains(s(k), v.clone()),
            Selector::StartsWith(k, v) => SymSelector::StartsWith(s(k), v.clone()),
            Selector::EndsWith(k, v) => SymSelector::EndsWith(s(k), v.clone()),
            Selector::Not(t) => SymSelector::Not(Box::new(SymSelector::new(t))),
            Selector::And(ts) => SymSelector::And(ts.iter().map(SymSelector::new).collect()),
            Selector::Or(ts) => SymSelector::Or(ts.iter().map(SymSelector::new).collect()),
        }
    }

    pub fn matches(&self, l: &LabelMap) -> bool {
        let text = |k: &Sym| l.get_by(*k).map(Sym::as_str);
        match self {
            SymSelector::All => true,
            SymSelector::Has(k) => l.get_by(*k).is_some(),
            SymSelector::Equal(k, v) => l.get_by(*k) == Some(*v),
            SymSelector::NotEqual(k, v) => l.get_by(*k) != Some(*v),
            SymSelector::In(k, vs) => l.get_by(*k).is_some_and(|x| vs.contains(&x)),
            SymSelector::NotIn(k, vs) => !l.get_by(*k).is_some_and(|x| vs.contains(&x)),
            SymSelector::Contains(k, v) => text(k).is_some_and(|x| x.contains(v.as_str())),
            SymSelector::StartsWith(k, v) => text(k).is_some_and(|x| x.starts_with(v.as_str())),
            SymSelector::EndsWith(k, v) => text(k).is_some_and(|x| x.ends_with(v.as_str())),
            SymSelector::Not(t) => !t.matches(l),
            SymSelector::And(ts) => ts.iter().all(|t| t.matches(l)),
            SymSelector::Or(ts) => ts.iter().any(|t| t.matches(l)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(pairs: &[(&str, &str)]) -> Arc<Pairs> {
        pairs_of(pairs.iter().copied()).into()
    }

    #[test]
    fn own_labels_win_over_inherited_and_iterate_in_key_order() {
        let m = LabelMap::layered(
            pairs_of([("b", "own"), ("d", "x")]),
            Some(inherited(&[("a", "1"), ("b", "inh"), ("c", "2")])),
        );
        let got: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("a", "1"), ("b", "own"), ("c", "2"), ("d", "x")]);
        assert_eq!(m.get("b").map(String::as_str), Some("own"));
        assert_eq!(m.get("c").map(String::as_str), Some("2"));
        assert_eq!(m.get("zz"), None);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn insert_and_remove_behave_as_a_map() {
        let mut m = LabelMap::layered(pairs_of([("b", "own")]), Some(inherited(&[("a", "1")])));
        let mut want: BTreeMap<String, String> = m.to_map();
        assert_eq!(m.insert("a", "2").map(String::as_str), Some("1"));
        want.insert("a".into(), "2".into());
        assert_eq!(m.remove("a").map(String::as_str), Some("2"));
        want.remove("a");
        assert_eq!(m.remove("a"), None);
        assert_eq!(m.insert("c", "3"), None);
        want.insert("c".into(), "3".into());
        assert_eq!(m.to_map(), want);
        assert_eq!(m, LabelMap::from(&want), "equality is by content");
    }

    #[test]
    fn equal_texts_intern_to_one_symbol() {
        let a = Sym::new("tortie-test-intern");
        let b = Sym::new(&String::from("tortie-test-intern"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(Sym::lookup("tortie-test-never-interned-text"), None);
        assert!(Sym::new("a") < Sym::new("b"));
    }

    #[test]
    fn symbol_selectors_agree_with_text_selectors() {
        let m = LabelMap::layered(
            pairs_of([("app", "web"), ("tier", "api")]),
            Some(inherited(&[("pcns.team", "red"), ("tier", "db")])),
        );
        for text in [
            "app == 'web'",
            "app == 'db'",
            "tier == 'api' && pcns.team == 'red'",
            "tier == 'db'",
            "has(pcns.team) && !has(nope)",
            "app in {'a', 'web'}",
            "app not in {'web'}",
            "nope != 'x'",
            "app contains 'e' || tier starts with 'z'",
            "pcns.team ends with 'ed'",
            "tortie-test-unseen-key == 'tortie-test-unseen-value'",
            "all()",
        ] {
            let sel = crate::selector::parse(text).unwrap();
            assert_eq!(
                SymSelector::new(&sel).matches(&m),
                sel.matches(&m),
                "{text}"
            );
        }
    }

    #[test]
    fn from_iter_keeps_the_last_value_of_a_key() {
        let m: LabelMap = [("k", "1"), ("k", "2")].into_iter().collect();
        assert_eq!(m.get("k").map(String::as_str), Some("2"));
    }
}
