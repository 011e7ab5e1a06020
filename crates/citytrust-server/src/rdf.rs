//! A small RDF graph of nested nodes and its two serialisations, Turtle and
//! JSON-LD, written from the same nodes so the two always say the same thing.
//!
//! Predicates and classes are compact names over [`PREFIXES`]; objects are
//! IRIs, literals (plain, language-tagged or typed) or nested blank nodes.
//! IRIs taken from people's input (a licence's or a contact's URL) are
//! percent-encoded where Turtle forbids a character, never passed through.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

/// The prefixes every document declares.
pub(crate) const PREFIXES: &[(&str, &str)] = &[
    ("adms", "http://www.w3.org/ns/adms#"),
    ("dcat", "http://www.w3.org/ns/dcat#"),
    ("dct", "http://purl.org/dc/terms/"),
    ("dqv", "http://www.w3.org/ns/dqv#"),
    ("foaf", "http://xmlns.com/foaf/0.1/"),
    ("gsp", "http://www.opengis.net/ont/geosparql#"),
    ("oa", "http://www.w3.org/ns/oa#"),
    ("prov", "http://www.w3.org/ns/prov#"),
    ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"),
    ("skos", "http://www.w3.org/2004/02/skos/core#"),
    ("spdx", "http://spdx.org/rdf/terms#"),
    ("vcard", "http://www.w3.org/2006/vcard/ns#"),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
];

/// The object of a statement.
#[derive(Debug, Clone)]
pub(crate) enum Term {
    Iri(String),
    /// A literal with an optional datatype (a compact name such as `xsd:date`).
    Literal(String, Option<&'static str>),
    /// A literal in a language.
    Text(String, &'static str),
    Blank(Node),
}

impl Term {
    pub(crate) fn iri(s: impl Into<String>) -> Term {
        Term::Iri(s.into())
    }
    pub(crate) fn lit(s: impl Into<String>) -> Term {
        Term::Literal(s.into(), None)
    }
    pub(crate) fn typed(s: impl Into<String>, datatype: &'static str) -> Term {
        Term::Literal(s.into(), Some(datatype))
    }
}

/// A subject (named by an IRI, or blank when nested) with its classes and statements.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) id: Option<String>,
    pub(crate) types: Vec<&'static str>,
    pub(crate) props: Vec<(&'static str, Term)>,
}

impl Node {
    pub(crate) fn named(iri: impl Into<String>, class: &'static str) -> Node {
        Node {
            id: Some(iri.into()),
            types: vec![class],
            props: Vec::new(),
        }
    }
    /// A node that only adds statements about `iri` (no class).
    pub(crate) fn about(iri: impl Into<String>) -> Node {
        Node {
            id: Some(iri.into()),
            types: Vec::new(),
            props: Vec::new(),
        }
    }
    pub(crate) fn blank(class: &'static str) -> Node {
        Node {
            id: None,
            types: vec![class],
            props: Vec::new(),
        }
    }
    pub(crate) fn with(mut self, predicate: &'static str, object: Term) -> Node {
        self.props.push((predicate, object));
        self
    }
    pub(crate) fn add(&mut self, predicate: &'static str, object: Term) {
        self.props.push((predicate, object));
    }
}

/// Which serialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    Turtle,
    JsonLd,
}

impl Syntax {
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Syntax::Turtle => "text/turtle; charset=utf-8",
            Syntax::JsonLd => "application/ld+json",
        }
    }

    /// What comes before the first node.
    pub(crate) fn head(self) -> String {
        match self {
            Syntax::Turtle => {
                let mut out = String::new();
                for (p, iri) in PREFIXES {
                    let _ = writeln!(out, "@prefix {p}: <{iri}> .");
                }
                out.push('\n');
                out
            }
            Syntax::JsonLd => {
                let context: Map<String, Value> = PREFIXES
                    .iter()
                    .map(|(p, iri)| (p.to_string(), Value::String(iri.to_string())))
                    .collect();
                format!("{{\"@context\":{},\"@graph\":[\n", Value::Object(context))
            }
        }
    }

    /// One node, to follow the head or an earlier node (`first`: none yet).
    pub(crate) fn node(self, node: &Node, first: bool) -> String {
        match self {
            Syntax::Turtle => {
                let mut out = String::new();
                turtle_node(node, 0, &mut out);
                out.push_str(" .\n");
                out
            }
            Syntax::JsonLd => {
                let text = jsonld_node(node).to_string();
                if first { text } else { format!(",\n{text}") }
            }
        }
    }

    /// What comes after the last node.
    pub(crate) fn tail(self) -> &'static str {
        match self {
            Syntax::Turtle => "",
            Syntax::JsonLd => "\n]}\n",
        }
    }

    /// A whole document of these nodes.
    pub(crate) fn document(self, nodes: &[Node]) -> String {
        let mut out = self.head();
        for (i, n) in nodes.iter().enumerate() {
            out.push_str(&self.node(n, i == 0));
        }
        out.push_str(self.tail());
        out
    }
}

fn turtle_node(node: &Node, depth: usize, out: &mut String) {
    let indent = "    ".repeat(depth + 1);
    let mut parts: Vec<String> = Vec::new();
    if !node.types.is_empty() {
        parts.push(format!("a {}", node.types.join(", ")));
    }
    for (p, o) in &node.props {
        let mut obj = String::new();
        turtle_term(o, depth + 1, &mut obj);
        parts.push(format!("{p} {obj}"));
    }
    match &node.id {
        Some(id) => {
            out.push_str(&iri_ref(id));
            if parts.is_empty() {
                // A subject needs one statement; say what it is at least.
                out.push_str(" a rdfs:Resource");
            }
            for (i, part) in parts.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { " ;\n" });
                out.push_str(&indent);
                out.push_str(part);
            }
        }
        None => {
            out.push('[');
            for (i, part) in parts.iter().enumerate() {
                out.push_str(if i == 0 { "\n" } else { " ;\n" });
                out.push_str(&indent);
                out.push_str(part);
            }
            out.push('\n');
            out.push_str(&"    ".repeat(depth));
            out.push(']');
        }
    }
}

fn turtle_term(term: &Term, depth: usize, out: &mut String) {
    match term {
        Term::Iri(iri) => out.push_str(&iri_ref(iri)),
        Term::Literal(value, datatype) => {
            out.push_str(&turtle_string(value));
            if let Some(dt) = datatype {
                out.push_str("^^");
                out.push_str(dt);
            }
        }
        Term::Text(value, lang) => {
            out.push_str(&turtle_string(value));
            out.push('@');
            out.push_str(lang);
        }
        Term::Blank(node) => turtle_node(node, depth, out),
    }
}

/// A Turtle string literal (long form when it spans lines is not needed: newlines are escaped).
fn turtle_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `<iri>`, with every character Turtle's IRIREF forbids percent-encoded.
fn iri_ref(iri: &str) -> String {
    format!("<{}>", clean_iri(iri))
}

/// An IRI with the characters IRIs may not hold (space, `<>"{}|^\``, `\`,
/// controls) percent-encoded, so input cannot break out of an IRI.
pub(crate) fn clean_iri(iri: &str) -> String {
    let mut out = String::with_capacity(iri.len());
    for c in iri.chars() {
        if c <= ' ' || "<>\"{}|^`\\\u{7f}".contains(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn jsonld_node(node: &Node) -> Value {
    let mut obj = Map::new();
    if let Some(id) = &node.id {
        obj.insert("@id".into(), Value::String(clean_iri(id)));
    }
    if !node.types.is_empty() {
        obj.insert(
            "@type".into(),
            Value::Array(node.types.iter().map(|t| json!(t)).collect()),
        );
    }
    for (p, o) in &node.props {
        let value = match o {
            Term::Iri(iri) => json!({ "@id": clean_iri(iri) }),
            Term::Literal(v, None) => json!(v),
            Term::Literal(v, Some(dt)) => json!({ "@value": v, "@type": dt }),
            Term::Text(v, lang) => json!({ "@value": v, "@language": lang }),
            Term::Blank(n) => jsonld_node(n),
        };
        match obj.get_mut(*p) {
            Some(Value::Array(values)) => values.push(value),
            _ => {
                obj.insert(p.to_string(), Value::Array(vec![value]));
            }
        }
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Node> {
        vec![
            Node::named("https://x.example/d/1", "dcat:Dataset")
                .with("dct:title", Term::lit("Say \"hi\"\nback\\"))
                .with("dct:issued", Term::typed("2026-01-02", "xsd:date"))
                .with("dcat:keyword", Term::Text("air".into(), "en"))
                .with("dcat:landingPage", Term::iri("https://x.example/a b<c>"))
                .with(
                    "dcat:contactPoint",
                    Term::Blank(Node::blank("vcard:Kind").with("vcard:fn", Term::lit("Office"))),
                ),
        ]
    }

    #[test]
    fn turtle_escapes_literals_and_iris() {
        let text = Syntax::Turtle.document(&sample());
        assert!(text.contains(r#"dct:title "Say \"hi\"\nback\\""#), "{text}");
        assert!(text.contains("<https://x.example/a%20b%3Cc%3E>"), "{text}");
        assert!(text.contains("\"2026-01-02\"^^xsd:date"), "{text}");
        assert!(text.contains("\"air\"@en"), "{text}");
        assert!(
            text.contains("[\n        a vcard:Kind ;\n        vcard:fn \"Office\"\n    ]"),
            "{text}"
        );
        assert!(text.trim_end().ends_with(" ."), "{text}");
    }

    #[test]
    fn jsonld_says_the_same_thing() {
        let text = Syntax::JsonLd.document(&sample());
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let node = &doc["@graph"][0];
        assert_eq!(node["@id"], "https://x.example/d/1");
        assert_eq!(node["@type"][0], "dcat:Dataset");
        assert_eq!(node["dct:title"][0], "Say \"hi\"\nback\\");
        assert_eq!(node["dct:issued"][0]["@type"], "xsd:date");
        assert_eq!(node["dcat:keyword"][0]["@language"], "en");
        assert_eq!(
            node["dcat:landingPage"][0]["@id"],
            "https://x.example/a%20b%3Cc%3E"
        );
        assert_eq!(node["dcat:contactPoint"][0]["vcard:fn"][0], "Office");
        assert_eq!(doc["@context"]["dcat"], "http://www.w3.org/ns/dcat#");
    }
}
