//! Log entries: a versioned, canonical encoding.
//!
//! An entry is a JSON object with the fields `v` (encoding version), `type`
//! (what happened, e.g. `dataset.registered`), `at` (RFC 3339 UTC) and the
//! fields of that type. Canonical form: keys sorted by their UTF-8 bytes, no
//! insignificant whitespace, numbers as integers, strings escaped as
//! `serde_json` escapes them. The same entry always encodes to the same bytes,
//! so its leaf hash is a commitment anyone can recompute.
//!
//! Entries never carry a resident's identity or any other personal data: the
//! service records organisations and roles, and (for residents) salted
//! commitments only.

use serde_json::{Map, Value};

/// The encoding version written into every entry.
pub const ENTRY_VERSION: u64 = 1;

/// Largest encoded entry: tlog-tiles entry bundles prefix each entry with a uint16 length.
pub const MAX_ENTRY_BYTES: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry fields must be a JSON object")]
    NotAnObject,
    #[error("field '{0}' is reserved")]
    Reserved(String),
    #[error("the entry is {0} bytes; the limit is {MAX_ENTRY_BYTES}")]
    TooLarge(usize),
    #[error("entries may hold only integers, not fractional numbers")]
    Fractional,
    #[error("the entry is not valid JSON: {0}")]
    Syntax(String),
    #[error("the entry is not in canonical form")]
    NotCanonical,
    #[error("the entry has no '{0}' field of the right type")]
    Missing(&'static str),
    #[error("entry version {0} is not known")]
    UnknownVersion(u64),
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: String,
    pub at: String,
    /// The type's own fields (without `v`, `type` and `at`).
    pub fields: Map<String, Value>,
}

/// Encode an entry of `kind` at time `at` with `fields` (a JSON object).
pub fn encode(kind: &str, at: &str, fields: Value) -> Result<Vec<u8>, EntryError> {
    let Value::Object(mut map) = fields else {
        return Err(EntryError::NotAnObject);
    };
    for reserved in ["v", "type", "at"] {
        if map.contains_key(reserved) {
            return Err(EntryError::Reserved(reserved.to_string()));
        }
    }
    map.insert("v".into(), Value::from(ENTRY_VERSION));
    map.insert("type".into(), Value::from(kind));
    map.insert("at".into(), Value::from(at));
    let mut out = Vec::with_capacity(256);
    canonical(&Value::Object(map), &mut out)?;
    if out.len() > MAX_ENTRY_BYTES {
        return Err(EntryError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Decode an entry, refusing anything that is not in canonical form.
pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| EntryError::Syntax(e.to_string()))?;
    let mut again = Vec::with_capacity(bytes.len());
    canonical(&value, &mut again)?;
    if again != bytes {
        return Err(EntryError::NotCanonical);
    }
    let Value::Object(mut map) = value else {
        return Err(EntryError::NotAnObject);
    };
    let version = map
        .remove("v")
        .and_then(|v| v.as_u64())
        .ok_or(EntryError::Missing("v"))?;
    if version != ENTRY_VERSION {
        return Err(EntryError::UnknownVersion(version));
    }
    let kind = match map.remove("type") {
        Some(Value::String(s)) => s,
        _ => return Err(EntryError::Missing("type")),
    };
    let at = match map.remove("at") {
        Some(Value::String(s)) => s,
        _ => return Err(EntryError::Missing("at")),
    };
    Ok(Entry {
        kind,
        at,
        fields: map,
    })
}

/// Write `v` canonically.
fn canonical(v: &Value, out: &mut Vec<u8>) -> Result<(), EntryError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(EntryError::Fractional);
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                if let Some(value) = map.get(k) {
                    canonical(value, out)?;
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is deterministic; serialising a &str cannot fail.
    if let Ok(text) = serde_json::to_string(s) {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Check that `bytes` is an entry in canonical form and return its type —
/// the same judgement as [`decode`] (tested against it), without building a
/// JSON value: one pass, no allocation unless a key or the type is escaped.
/// Verifiers check millions of entries with it.
pub fn check(bytes: &[u8]) -> Result<String, EntryError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EntryError::Syntax(e.to_string()))?;
    let mut c = Checker {
        b: text.as_bytes(),
        at: 0,
        depth: 0,
    };
    let top = c.object_top()?;
    if c.at != c.b.len() {
        return Err(c.syntax("trailing characters"));
    }
    match top.version {
        Some(1) => {}
        Some(v) => return Err(EntryError::UnknownVersion(v)),
        None => return Err(EntryError::Missing("v")),
    }
    if !top.has_at {
        return Err(EntryError::Missing("at"));
    }
    top.kind.ok_or(EntryError::Missing("type"))
}

/// What [`check`] needs of the top-level object.
#[derive(Default)]
struct Top {
    version: Option<u64>,
    kind: Option<String>,
    has_at: bool,
}

struct Checker<'a> {
    b: &'a [u8],
    at: usize,
    depth: usize,
}

/// serde_json's nesting limit: deeper input does not parse.
const MAX_DEPTH: usize = 128;

impl<'a> Checker<'a> {
    fn syntax(&self, what: &str) -> EntryError {
        EntryError::Syntax(format!("{what} at byte {}", self.at))
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), EntryError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else if self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            Err(EntryError::NotCanonical)
        } else {
            Err(self.syntax(&format!("expected '{}'", byte as char)))
        }
    }

    fn object_top(&mut self) -> Result<Top, EntryError> {
        let mut top = Top::default();
        if self.peek() != Some(b'{') {
            return Err(if self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                EntryError::NotCanonical
            } else {
                EntryError::NotAnObject
            });
        }
        self.object(Some(&mut top))?;
        Ok(top)
    }

    /// An object; at the top level, note `v`, `type` and `at`.
    fn object(&mut self, mut top: Option<&mut Top>) -> Result<(), EntryError> {
        self.enter()?;
        self.expect(b'{')?;
        let mut previous: Option<std::borrow::Cow<'a, str>> = None;
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            if previous
                .as_ref()
                .is_some_and(|p| p.as_bytes() >= key.as_bytes())
            {
                // Out of order, or a duplicate (which re-encodes as one key).
                return Err(EntryError::NotCanonical);
            }
            self.expect(b':')?;
            match (top.as_deref_mut(), key.as_ref()) {
                (Some(t), "v") => t.version = self.integer()?.map(Some).unwrap_or(None),
                (Some(t), "type") if self.peek() == Some(b'"') => {
                    t.kind = Some(self.string()?.into_owned())
                }
                (Some(t), "at") if self.peek() == Some(b'"') => {
                    self.string()?;
                    t.has_at = true;
                }
                _ => self.value()?,
            }
            previous = Some(key);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                Some(b) if b.is_ascii_whitespace() => return Err(EntryError::NotCanonical),
                _ => return Err(self.syntax("expected ',' or '}'")),
            }
        }
    }

    fn enter(&mut self) -> Result<(), EntryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.syntax("nested too deeply"));
        }
        Ok(())
    }

    fn value(&mut self) -> Result<(), EntryError> {
        match self.peek() {
            Some(b'{') => self.object(None),
            Some(b'[') => {
                self.enter()?;
                self.at += 1;
                if self.peek() == Some(b']') {
                    self.at += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                loop {
                    self.value()?;
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            self.depth -= 1;
                            return Ok(());
                        }
                        Some(b) if b.is_ascii_whitespace() => return Err(EntryError::NotCanonical),
                        _ => return Err(self.syntax("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => self.string().map(|_| ()),
            Some(b'-' | b'0'..=b'9') => self.integer().map(|_| ()),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b) if b.is_ascii_whitespace() => Err(EntryError::NotCanonical),
            _ => Err(self.syntax("expected a value")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), EntryError> {
        if self.b[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    /// An integer in canonical form; its value when it is a non-negative one
    /// that fits a u64 (for `v`). Fractions and exponents are refused as the
    /// encoder refuses them; `-0`, leading zeros and `+` are not canonical.
    fn integer(&mut self) -> Result<Option<u64>, EntryError> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let digits_from = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.b[digits_from..self.at];
        if digits.is_empty() {
            return Err(self.syntax("expected a digit"));
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            // serde_json reads these as floats, which entries never hold.
            return Err(EntryError::Fractional);
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(self.syntax("leading zero"));
        }
        let text = std::str::from_utf8(&self.b[start..self.at]).unwrap_or("");
        if negative {
            match text.parse::<i64>() {
                Ok(0) => Err(EntryError::NotCanonical),
                Ok(_) => Ok(None),
                // Too large for i64: serde_json makes it a float.
                Err(_) => Err(EntryError::Fractional),
            }
        } else {
            text.parse::<u64>()
                .map(Some)
                .map_err(|_| EntryError::Fractional)
        }
    }

    /// A string escaped exactly as serde_json escapes: `\"`, `\\`, `\b`,
    /// `\f`, `\n`, `\r`, `\t`, `\u00xx` (lower-case) for other control
    /// characters, everything else as itself. Unescaped only if it has escapes.
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, EntryError> {
        let b: &'a [u8] = self.b;
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(self.syntax("unterminated string")),
                Some(b'"') => break,
                Some(b) if b < 0x20 => return Err(self.syntax("control character in a string")),
                Some(b'\\') => {
                    escaped = true;
                    let esc = self.b.get(self.at + 1).copied();
                    match esc {
                        Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 2,
                        Some(b'u') => {
                            let hex = self
                                .b
                                .get(self.at + 2..self.at + 6)
                                .ok_or_else(|| self.syntax("bad escape"))?;
                            if !hex.iter().all(|h| h.is_ascii_hexdigit()) {
                                return Err(self.syntax("bad escape"));
                            }
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).unwrap_or("g"), 16)
                                    .map_err(|_| self.syntax("bad escape"))?;
                            // Only other control characters, in lower-case hex, are written so.
                            let canonical = code < 0x20
                                && !matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
                                && !hex.iter().any(|h| h.is_ascii_uppercase());
                            if !canonical {
                                return Err(if (0xd800..0xe000).contains(&code) {
                                    self.syntax("bad escape")
                                } else {
                                    EntryError::NotCanonical
                                });
                            }
                            self.at += 6;
                        }
                        Some(b'/') => return Err(EntryError::NotCanonical),
                        _ => return Err(self.syntax("bad escape")),
                    }
                }
                Some(_) => self.at += 1,
            }
        }
        let raw = &b[start..self.at];
        self.at += 1;
        let text = std::str::from_utf8(raw).map_err(|e| EntryError::Syntax(e.to_string()))?;
        if !escaped {
            return Ok(std::borrow::Cow::Borrowed(text));
        }
        let quoted = &b[start - 1..self.at];
        serde_json::from_slice::<String>(quoted)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| EntryError::Syntax(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encoding_is_canonical_and_round_trips() {
        let a = encode(
            "dataset.registered",
            "2026-01-01T00:00:00Z",
            json!({"z": 1, "a": {"y": [2, "é"], "b": null}}),
        )
        .unwrap();
        let b = encode(
            "dataset.registered",
            "2026-01-01T00:00:00Z",
            json!({"a": {"b": null, "y": [2, "é"]}, "z": 1}),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a.clone()).unwrap(),
            r#"{"a":{"b":null,"y":[2,"é"]},"at":"2026-01-01T00:00:00Z","type":"dataset.registered","v":1,"z":1}"#
        );
        let e = decode(&a).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.at.as_str()),
            ("dataset.registered", "2026-01-01T00:00:00Z")
        );
        assert_eq!(e.fields["z"], json!(1));
    }

    #[test]
    fn non_canonical_reserved_fractional_and_oversized_entries_are_refused() {
        assert_eq!(
            decode(br#"{"v":1, "type":"x","at":"t"}"#),
            Err(EntryError::NotCanonical)
        );
        assert_eq!(
            decode(br#"{"type":"x","at":"t","v":1}"#),
            Err(EntryError::NotCanonical)
        );
        assert_eq!(
            decode(br#"{"at":"t","type":"x","v":2}"#),
            Err(EntryError::UnknownVersion(2))
        );
        assert!(matches!(decode(b"{"), Err(EntryError::Syntax(_))));
        assert_eq!(
            encode("x", "t", json!({"v": 2})),
            Err(EntryError::Reserved("v".into()))
        );
        assert_eq!(
            encode("x", "t", json!({"f": 1.5})),
            Err(EntryError::Fractional)
        );
        assert_eq!(encode("x", "t", json!([1])), Err(EntryError::NotAnObject));
        assert!(matches!(
            encode("x", "t", json!({"f": "a".repeat(70_000)})),
            Err(EntryError::TooLarge(_))
        ));
    }

    #[test]
    fn the_fast_check_judges_every_entry_as_decode_does() {
        let good = [
            encode("content.read", "2026-01-01T00:00:00Z", json!({"by": "public", "rows": 12, "n": -5, "big": u64::MAX, "neg": i64::MIN})).unwrap(),
            encode("x", "t", json!({"s": "tab\there \"q\" \\ \u{1} \u{7f} é ✓ \u{1F600}", "a": [[], {}, [1, [2, {"k": null}]]], "t": true, "f": false})).unwrap(),
            encode("esc\"aped\ntype", "t", json!({"\"": 1, "\\": 2, "a\u{1}": 3, "é": 4, "z": 5})).unwrap(),
            encode("x", "t", json!({})).unwrap(),
        ];
        let mut cases: Vec<Vec<u8>> = good.to_vec();
        let text: Vec<String> = good
            .iter()
            .map(|g| String::from_utf8(g.clone()).unwrap())
            .collect();
        // Mutations: every one must get the same verdict from both.
        for t in &text {
            for (from, to) in [
                (",", ", "),
                (":", ": "),
                ("{", "{ "),
                ("}", " }"),
                ("[", "[ "),
                ("12", "012"),
                ("12", "12.0"),
                ("12", "1.2e1"),
                ("12", "+12"),
                ("-5", "-0"),
                ("-5", "-05"),
                ("\\t", "\\u0009"),
                ("\\u0001", "\\u0001".to_uppercase().as_str()),
                ("\\u0001", "\\u0041"),
                ("\\u0001", "\\ud800"),
                ("é", "\\u00e9"),
                ("\"v\":1", "\"v\":2"),
                ("\"v\":1", "\"v\":\"1\""),
                ("\"type\":\"", "\"type\":[\""),
                ("\"at\":", "\"au\":"),
                ("true", "tru"),
                ("null", "nul"),
                ("\"by\"", "\"rows\""),
                ("18446744073709551615", "18446744073709551616"),
                ("-9223372036854775808", "-9223372036854775809"),
                ("\"a\"", "\"b\""),
                ("\"z\"", "\"a\""),
                ("[]", "[1,]"),
                ("{}", "{,}"),
                ("/", "\\/"),
            ] {
                if t.contains(from) {
                    cases.push(t.replacen(from, to, 1).into_bytes());
                }
            }
            cases.push(format!("{t} ").into_bytes());
            cases.push(format!(" {t}").into_bytes());
            cases.push(format!("{t}{{}}").into_bytes());
            cases.push(t.as_bytes()[..t.len() - 1].to_vec());
        }
        cases.push(b"[1]".to_vec());
        cases.push(br#"{"at":"t","type":"x","v":1,"v":1}"#.to_vec());
        cases.push(br#"{"at":"t","at":"t","type":"x","v":1}"#.to_vec());
        cases.push(vec![b'{', 0xff, b'}']);
        cases.push(
            format!(
                "{{\"a\":{}1{},\"at\":\"t\",\"type\":\"x\",\"v\":1}}",
                "[".repeat(130),
                "]".repeat(130)
            )
            .into_bytes(),
        );
        cases.push(
            format!(
                "{{\"a\":{}1{},\"at\":\"t\",\"type\":\"x\",\"v\":1}}",
                "[".repeat(100),
                "]".repeat(100)
            )
            .into_bytes(),
        );
        let mut refused = 0;
        for case in &cases {
            let slow = decode(case).map(|e| e.kind);
            let fast = check(case);
            assert_eq!(
                fast.is_ok(),
                slow.is_ok(),
                "{}: check {fast:?}, decode {slow:?}",
                String::from_utf8_lossy(case)
            );
            if let (Ok(a), Ok(b)) = (&fast, &slow) {
                assert_eq!(a, b);
            } else {
                refused += 1;
            }
        }
        assert!(refused > 60, "{refused} of {} refused", cases.len());
    }
}
