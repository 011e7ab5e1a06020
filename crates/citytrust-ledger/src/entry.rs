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
}
