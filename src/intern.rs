//! Interned strings ([`Sym`]): every distinct text is stored once for the
//! life of the process and compared by address. Label keys and values are
//! interned from the moment they are read (the model's [`LabelPairs`]), so
//! that the model, the calculation and the compiler share one copy of each.
//!
//! The interner never forgets a string: memory grows with the number of
//! distinct texts ever seen, not with the number of objects holding them.
//!
//! [`LabelPairs`]: crate::model::LabelPairs

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{OnceLock, RwLock};

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interned string: equal texts are the same pointer.
#[derive(Clone, Copy)]
pub struct Sym(&'static String);

impl Sym {
    /// The interned copy of `text` (created on first sight).
    pub fn new(text: &str) -> Sym {
        thread_local! {
            // Each thread's symbols already seen: no lock on the hot path.
            static SEEN: std::cell::RefCell<Table> = Default::default();
        }
        if let Some(s) = SEEN.with_borrow(|seen| seen.get(text).copied()) {
            return Sym(s);
        }
        let s = Sym::new_shared(text);
        SEEN.with_borrow_mut(|seen| seen.insert(s.as_str(), s.0));
        s
    }

    fn new_shared(text: &str) -> Sym {
        if let Some(s) = Sym::lookup(text) {
            return s;
        }
        let mut table = interner().write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = table.get(text) {
            return Sym(s);
        }
        let leaked: &'static String = Box::leak(Box::new(text.to_string()));
        table.insert(leaked.as_str(), leaked);
        Sym(leaked)
    }

    /// The interned copy of `text`, if any label ever had that text.
    pub fn lookup(text: &str) -> Option<Sym> {
        let table = interner().read().unwrap_or_else(|e| e.into_inner());
        table.get(text).map(|s| Sym(s))
    }

    pub fn as_str(self) -> &'static str {
        self.0.as_str()
    }

    pub fn as_string(self) -> &'static String {
        self.0
    }
}

type Table = HashMap<&'static str, &'static String, BuildHasherDefault<FxHasher>>;

fn interner() -> &'static RwLock<Table> {
    static TABLE: OnceLock<RwLock<Table>> = OnceLock::new();
    TABLE.get_or_init(|| RwLock::new(Table::default()))
}

/// A small, fast multiplicative hasher for short strings and pointers.
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by symbols (or pairs of them), hashed by address.
pub type SymMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A hash map hashed by [`FxHasher`], for keys that are not symbols.
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

impl PartialEq for Sym {
    fn eq(&self, o: &Sym) -> bool {
        std::ptr::eq(self.0, o.0)
    }
}
impl Eq for Sym {}
impl Hash for Sym {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.0 as *const String as usize).hash(h)
    }
}
impl PartialOrd for Sym {
    fn partial_cmp(&self, o: &Sym) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
/// Ordered by text, as the strings themselves are.
impl Ord for Sym {
    fn cmp(&self, o: &Sym) -> std::cmp::Ordering {
        if self == o {
            std::cmp::Ordering::Equal
        } else {
            self.as_str().cmp(o.as_str())
        }
    }
}
impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::ops::Deref for Sym {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Sym {
    fn from(text: &str) -> Sym {
        Sym::new(text)
    }
}

impl From<String> for Sym {
    fn from(text: String) -> Sym {
        Sym::new(&text)
    }
}

impl PartialEq<str> for Sym {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<String> for Sym {
    fn eq(&self, o: &String) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl Serialize for Sym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sym, D::Error> {
        Text::deserialize(d).map(|t| Sym::new(&t.0))
    }
}

/// A string read without an allocation when the input lends it.
pub struct Text<'a>(pub std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(s.into()))
            }

            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(s.to_string().into()))
            }

            fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(s.into()))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}
