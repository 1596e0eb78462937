//! Hand-written scanner-parser for the selector language. Works on bytes and
//! reports the byte offset of every error.

use super::{Selector, SelectorError};

/// Longest label key accepted in a selector.
pub const MAX_LABEL_LEN: usize = 512;
/// Longest selector text a policy may carry (validation applies it).
pub const MAX_SELECTOR_LEN: usize = 1024;
/// Deepest nesting of parentheses accepted; keeps recursion bounded.
const MAX_DEPTH: usize = 100;

/// Parses selector text. The empty (or all-blank) selector is `all()`.
pub fn parse(text: &str) -> Result<Selector, SelectorError> {
    let mut p = Parser {
        src: text.as_bytes(),
        text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws()?;
    if p.at_end() {
        return Ok(Selector::All);
    }
    let sel = p.parse_or()?;
    p.skip_ws()?;
    if !p.at_end() {
        return Err(p.unexpected("`&&`, `||` or the end of the selector"));
    }
    Ok(sel)
}

struct Parser<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: usize,
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

fn negate(s: Selector) -> Selector {
    match s {
        Selector::Not(inner) => *inner,
        other => Selector::Not(Box::new(other)),
    }
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        &self.src[self.pos.min(self.src.len())..]
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            offset,
            message: message.into(),
        }
    }

    /// The character at the cursor, for messages (whole UTF-8 character).
    fn current_char(&self) -> Option<char> {
        self.text.get(self.pos..).and_then(|s| s.chars().next())
    }

    fn unexpected(&self, expected: &str) -> SelectorError {
        let rest = self.rest();
        if rest.starts_with(b"&&") || rest.starts_with(b"||") {
            let op = &self.text[self.pos..self.pos + 2];
            return self.err(self.pos, format!("expected {expected}, found `{op}`"));
        }
        match self.current_char() {
            None => self.err(self.pos, format!("expected {expected}, found the end")),
            Some(c) => self.err(self.pos, describe_unexpected(c, expected)),
        }
    }

    fn skip_ws(&mut self) -> Result<(), SelectorError> {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' => self.pos += 1,
                b'\n' | b'\r' => {
                    return Err(self.err(
                        self.pos,
                        "a selector must be on one line: newlines are not allowed",
                    ));
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// Eats a word operator only when followed by a word boundary.
    fn eat_word(&mut self, word: &str) -> bool {
        let rest = self.rest();
        if rest.starts_with(word.as_bytes())
            && !rest.get(word.len()).copied().is_some_and(is_label_byte)
        {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Eats `first` whitespace+ `second` (e.g. `starts with`), or `firstsecond`.
    fn eat_two_words(&mut self, first: &str, second: &str) -> bool {
        let start = self.pos;
        if self.eat_word(&format!("{first}{second}")) {
            return true;
        }
        if !self.rest().starts_with(first.as_bytes()) {
            return false;
        }
        self.pos += first.len();
        let ws_start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        if self.pos > ws_start && self.eat_word(second) {
            return true;
        }
        self.pos = start;
        false
    }

    fn parse_or(&mut self) -> Result<Selector, SelectorError> {
        let mut terms = vec![self.parse_and()?];
        loop {
            self.skip_ws()?;
            if self.eat("||") {
                terms.push(self.parse_and()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Selector::Or(terms)
        })
    }

    fn parse_and(&mut self) -> Result<Selector, SelectorError> {
        let mut terms = vec![self.parse_op()?];
        loop {
            self.skip_ws()?;
            if self.eat("&&") {
                terms.push(self.parse_op()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one term")
        } else {
            Selector::And(terms)
        })
    }

    fn parse_op(&mut self) -> Result<Selector, SelectorError> {
        let mut negations = 0usize;
        loop {
            self.skip_ws()?;
            // `!` is negation only when not part of `!=`.
            if self.peek() == Some(b'!') && self.src.get(self.pos + 1) != Some(&b'=') {
                self.pos += 1;
                negations += 1;
            } else {
                break;
            }
        }
        let op = self.parse_atom()?;
        Ok(if negations % 2 == 1 { negate(op) } else { op })
    }

    fn parse_atom(&mut self) -> Result<Selector, SelectorError> {
        let start = self.pos;
        if self.eat("has(") {
            self.skip_ws()?;
            let key = self.parse_label("a label name inside `has( )`")?;
            self.skip_ws()?;
            if !self.eat(")") {
                return Err(self.unexpected("`)` to close `has(`"));
            }
            return Ok(Selector::Has(key));
        }
        for (name, node) in [("all(", Selector::All), ("global(", Selector::Global)] {
            if self.eat(name) {
                self.skip_ws()?;
                if !self.eat(")") {
                    return Err(self.unexpected(&format!("`)`: `{name})` takes no arguments")));
                }
                return Ok(node);
            }
        }
        if self.eat("(") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.err(start, "parentheses are nested too deeply"));
            }
            let inner = self.parse_or()?;
            self.skip_ws()?;
            if !self.eat(")") {
                return Err(self.unexpected("`)` to close the `(`"));
            }
            self.depth -= 1;
            return Ok(inner);
        }
        let key = self.parse_label("a label, `has(`, `all()`, `global()`, `!` or `(`")?;
        self.skip_ws()?;
        self.parse_comparison(key)
    }

    fn parse_comparison(&mut self, key: String) -> Result<Selector, SelectorError> {
        type Make = fn(String, String) -> Selector;
        let string_ops: [(&str, Make); 2] = [("==", Selector::Equal), ("!=", Selector::NotEqual)];
        for (tok, make) in string_ops {
            if self.eat(tok) {
                self.skip_ws()?;
                let v = self.parse_string()?;
                return Ok(make(key, v));
            }
        }
        let word_ops: [(&str, &str, Make); 3] = [
            ("contains", "", Selector::Contains),
            ("starts", "with", Selector::StartsWith),
            ("ends", "with", Selector::EndsWith),
        ];
        for (first, second, make) in word_ops {
            let matched = if second.is_empty() {
                self.eat_word(first)
            } else {
                self.eat_two_words(first, second)
            };
            if matched {
                self.skip_ws()?;
                let v = self.parse_string()?;
                return Ok(make(key, v));
            }
        }
        if self.eat_two_words("not", "in") {
            self.skip_ws()?;
            return Ok(Selector::NotIn(key, self.parse_set()?));
        }
        if self.eat_word("in") {
            self.skip_ws()?;
            return Ok(Selector::In(key, self.parse_set()?));
        }
        if self.peek() == Some(b'=') {
            return Err(self.err(
                self.pos,
                format!("`=` is not an operator: write `{key} == \"value\"`"),
            ));
        }
        Err(self.unexpected(&format!(
            "an operator after label `{key}` (`==`, `!=`, `in`, `not in`, `contains`, `starts with`, `ends with`)"
        )))
    }

    fn parse_label(&mut self, expected: &str) -> Result<String, SelectorError> {
        let start = self.pos;
        while self.peek().is_some_and(is_label_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.unexpected(expected));
        }
        if self.pos - start > MAX_LABEL_LEN {
            return Err(self.err(
                start,
                format!("label name is longer than {MAX_LABEL_LEN} characters"),
            ));
        }
        Ok(self.text[start..self.pos].to_string())
    }

    fn parse_string(&mut self) -> Result<String, SelectorError> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'')) => q,
            _ => return Err(self.unexpected("a quoted value (\"…\" or '…')")),
        };
        self.pos += 1;
        let body_start = self.pos;
        while let Some(b) = self.peek() {
            if b == quote {
                let value = self.text[body_start..self.pos].to_string();
                self.pos += 1;
                return Ok(value);
            }
            if b == b'\n' || b == b'\r' {
                break;
            }
            self.pos += 1;
        }
        Err(self.err(
            start,
            format!("unterminated string: no closing {}", quote as char),
        ))
    }

    fn parse_set(&mut self) -> Result<Vec<String>, SelectorError> {
        if !self.eat("{") {
            return Err(self.unexpected("`{` to open the set of values"));
        }
        let mut values = Vec::new();
        loop {
            self.skip_ws()?;
            if self.eat("}") {
                break;
            }
            values.push(self.parse_string()?);
            self.skip_ws()?;
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                break;
            }
            return Err(self.unexpected("`,` or `}` in the set of values"));
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

fn describe_unexpected(c: char, expected: &str) -> String {
    match c {
        '“' | '”' | '‘' | '’' => {
            format!("found the curly quote `{c}`: selectors take straight quotes (\" or ')")
        }
        '&' => "a single `&` is not an operator: use `&&`".to_string(),
        '|' => "a single `|` is not an operator: use `||`".to_string(),
        _ => format!("expected {expected}, found `{c}`"),
    }
}
