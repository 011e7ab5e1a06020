//! The NGSI-LD query language (`q`, ETSI GS CIM 009 4.9), parsed into a
//! tree and evaluated against kept entities: terms `attr`, `attr op value`
//! (`==`, `!=`, `>`, `>=`, `<`, `<=`, `~=`, `!~=`), values as numbers,
//! quoted strings, date-times, booleans, URIs, ranges `a..b` and lists
//! `a,b`, attribute paths `attr.subattr` and `attr[key][key]`, `;` (and),
//! `|` (or) and parentheses. Also the other filters of `GET /entities`
//! (`EntityQuery`): types, ids, an id pattern, the attributes asked for and
//! a geo-query.

use regex::Regex;
use serde_json::Value;

use super::{Context, Entity, NgsiError, instance_value};

type R<T> = Result<T, NgsiError>;

/// The longest `q` accepted, and the deepest nesting.
const MAX_Q: usize = 4096;
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Match,
    NotMatch,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Number(f64),
    Text(String),
    Bool(bool),
    Range(Box<Operand>, Box<Operand>),
    List(Vec<Operand>),
}

#[derive(Debug, Clone)]
struct Path {
    /// The attribute, expanded.
    attr: String,
    /// A sub-attribute (expanded) or a system member (`observedAt`, …).
    sub: Option<String>,
    /// Keys into the value (`attr[a][b]`).
    keys: Vec<String>,
}

#[derive(Debug, Clone)]
enum Term {
    Exists(Path),
    Absent(Path),
    Compare(Path, Op, Operand),
    Pattern(Path, bool, Box<Regex>),
}

#[derive(Debug, Clone)]
enum Expr {
    Term(Term),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// A parsed `q`.
#[derive(Debug, Clone)]
pub struct Q(Expr);

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    ctx: &'a Context,
    depth: usize,
}

fn err(why: impl Into<String>) -> NgsiError {
    NgsiError::bad(format!("q: {}", why.into()))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn or(&mut self) -> R<Expr> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(b'|') {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> R<Expr> {
        let mut parts = vec![self.primary()?];
        while self.peek() == Some(b';') {
            self.pos += 1;
            parts.push(self.primary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn primary(&mut self) -> R<Expr> {
        if self.peek() == Some(b'(') {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(err("parentheses nest too deeply"));
            }
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(b')') {
                return Err(err(format!(
                    "a ')' is missing at character {}",
                    self.pos + 1
                )));
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(e);
        }
        // `!attr`: the attribute is absent.
        if self.peek() == Some(b'!') && self.s.get(self.pos + 1) != Some(&b'=') {
            self.pos += 1;
            return Ok(Expr::Term(Term::Absent(self.path()?)));
        }
        self.term().map(Expr::Term)
    }

    fn path(&mut self) -> R<Path> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"_:/#-@".contains(&c) {
                self.pos += 1;
            } else {
                break;
            }
        }
        let name = &self.text[start..self.pos];
        if name.is_empty() {
            return Err(err(format!(
                "an attribute name is expected at character {}",
                start + 1
            )));
        }
        let mut path = Path {
            attr: self.ctx.expand(name),
            sub: None,
            keys: Vec::new(),
        };
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let s = self.pos;
            while let Some(c) = self.peek() {
                if c.is_ascii_alphanumeric() || b"_:/#-@".contains(&c) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            let sub = &self.text[s..self.pos];
            if sub.is_empty() {
                return Err(err("a sub-attribute name is expected after '.'"));
            }
            path.sub = Some(match sub {
                "observedAt" | "createdAt" | "modifiedAt" | "unitCode" | "datasetId" => {
                    sub.to_string()
                }
                other => self.ctx.expand(other),
            });
        }
        while self.peek() == Some(b'[') {
            self.pos += 1;
            let s = self.pos;
            while self.peek().is_some_and(|c| c != b']') {
                self.pos += 1;
            }
            if self.peek() != Some(b']') {
                return Err(err("a ']' is missing"));
            }
            path.keys.push(self.text[s..self.pos].to_string());
            self.pos += 1;
        }
        Ok(path)
    }

    fn op(&mut self) -> Option<Op> {
        let rest = &self.s[self.pos..];
        let (op, n) = if rest.starts_with(b"==") {
            (Op::Eq, 2)
        } else if rest.starts_with(b"!=") {
            (Op::Ne, 2)
        } else if rest.starts_with(b">=") {
            (Op::Ge, 2)
        } else if rest.starts_with(b"<=") {
            (Op::Le, 2)
        } else if rest.starts_with(b"!~=") {
            (Op::NotMatch, 3)
        } else if rest.starts_with(b"~=") {
            (Op::Match, 2)
        } else if rest.starts_with(b">") {
            (Op::Gt, 1)
        } else if rest.starts_with(b"<") {
            (Op::Lt, 1)
        } else {
            return None;
        };
        self.pos += n;
        Some(op)
    }

    fn term(&mut self) -> R<Term> {
        let path = self.path()?;
        let Some(op) = self.op() else {
            return Ok(Term::Exists(path));
        };
        if matches!(op, Op::Match | Op::NotMatch) {
            let raw = self.raw_value()?;
            let pattern = unquote(&raw).unwrap_or(raw);
            let re = regex::RegexBuilder::new(&pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|_| {
                    err(format!(
                        "'{pattern}' is not a regular expression this broker takes"
                    ))
                })?;
            return Ok(Term::Pattern(path, op == Op::Match, Box::new(re)));
        }
        let raw = self.raw_value()?;
        let operand = operand(&raw, op)?;
        Ok(Term::Compare(path, op, operand))
    }

    /// A value runs to the next `;`, `|` or `)` outside quotes.
    fn raw_value(&mut self) -> R<String> {
        let start = self.pos;
        let mut quoted = false;
        while let Some(c) = self.peek() {
            match c {
                b'"' => quoted = !quoted,
                b'\\' if quoted => self.pos += 1,
                b';' | b'|' | b')' if !quoted => break,
                _ => {}
            }
            self.pos += 1;
        }
        if quoted {
            return Err(err("a quoted value is not closed"));
        }
        let v = self
            .text
            .get(start..self.pos.min(self.text.len()))
            .unwrap_or("");
        if v.is_empty() {
            return Err(err(format!(
                "a value is expected at character {}",
                start + 1
            )));
        }
        Ok(v.to_string())
    }
}

fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

fn single(s: &str) -> R<Operand> {
    if let Some(t) = unquote(s) {
        return Ok(Operand::Text(t));
    }
    match s {
        "true" => return Ok(Operand::Bool(true)),
        "false" => return Ok(Operand::Bool(false)),
        _ => {}
    }
    if let Ok(n) = s.parse::<f64>()
        && n.is_finite()
    {
        return Ok(Operand::Number(n));
    }
    // Date-times, URIs and other bare words compare as text.
    Ok(Operand::Text(s.to_string()))
}

fn operand(raw: &str, op: Op) -> R<Operand> {
    if !raw.starts_with('"') || !raw.ends_with('"') || raw.len() < 2 {
        if let Some((a, b)) = raw.split_once("..") {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(err("a range compares only with == or !="));
            }
            return Ok(Operand::Range(Box::new(single(a)?), Box::new(single(b)?)));
        }
        if raw.contains(',') {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(err("a list compares only with == or !="));
            }
            return Ok(Operand::List(
                split_list(raw)
                    .iter()
                    .map(|s| single(s))
                    .collect::<R<_>>()?,
            ));
        }
    } else if raw.contains("\",\"") {
        return Ok(Operand::List(
            split_list(raw)
                .iter()
                .map(|s| single(s))
                .collect::<R<_>>()?,
        ));
    }
    single(raw)
}

fn split_list(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl Q {
    /// Parse `q` under the request's context.
    pub fn parse(q: &str, ctx: &Context) -> R<Q> {
        if q.len() > MAX_Q {
            return Err(err(format!("longer than {MAX_Q} bytes")));
        }
        let mut p = Parser {
            s: q.as_bytes(),
            text: q,
            pos: 0,
            ctx,
            depth: 0,
        };
        let e = p.or()?;
        if p.pos != q.len() {
            return Err(err(format!(
                "unexpected '{}' at character {}",
                &q[p.pos..].chars().next().unwrap_or(' '),
                p.pos + 1
            )));
        }
        Ok(Q(e))
    }

    /// Whether an entity satisfies it.
    pub fn matches(&self, e: &Entity) -> bool {
        eval(&self.0, e)
    }

    /// Whether it tests only system members (`createdAt`, `modifiedAt`, …).
    pub fn system_only(&self) -> bool {
        fn paths(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::And(p) | Expr::Or(p) => p.iter().for_each(|x| paths(x, out)),
                Expr::Term(
                    Term::Exists(p)
                    | Term::Absent(p)
                    | Term::Compare(p, _, _)
                    | Term::Pattern(p, _, _),
                ) => out.push(p.attr.clone()),
            }
        }
        let mut all = Vec::new();
        paths(&self.0, &mut all);
        !all.is_empty()
            && all.iter().all(|a| {
                ["createdAt", "modifiedAt", "deletedAt", "observedAt"]
                    .iter()
                    .any(|s| a == s || a.ends_with(&format!("/{s}")))
            })
    }
}

fn eval(expr: &Expr, e: &Entity) -> bool {
    match expr {
        Expr::And(parts) => parts.iter().all(|p| eval(p, e)),
        Expr::Or(parts) => parts.iter().any(|p| eval(p, e)),
        Expr::Term(t) => term(t, e),
    }
}

/// The values a path reaches in an entity (one per instance; arrays stay whole).
fn values<'a>(p: &Path, e: &'a Entity) -> Vec<&'a Value> {
    let Some(instances) = e.attrs.get(&p.attr) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in instances {
        // A ListRelationship's values are the URIs of its objectList entries.
        if p.sub.is_none()
            && p.keys.is_empty()
            && i.get("type").and_then(Value::as_str) == Some("ListRelationship")
        {
            for o in i
                .get("objectList")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(o.get("object").unwrap_or(o));
            }
            continue;
        }
        let v = match &p.sub {
            None => instance_value(i),
            Some(s) if s.contains(':') => {
                i.get(s).and_then(Value::as_object).and_then(instance_value)
            }
            Some(s) => i.get(s),
        };
        // `[*]`: every member (a LanguageProperty's strings in all languages).
        let mut reached: Vec<&Value> = v.into_iter().collect();
        for k in &p.keys {
            reached = reached
                .into_iter()
                .flat_map(|v| match (k.as_str(), v) {
                    ("*", Value::Object(m)) => m.values().collect::<Vec<_>>(),
                    _ => v.get(k).into_iter().collect(),
                })
                .collect();
        }
        out.extend(reached);
    }
    out
}

fn cmp(v: &Value, o: &Operand) -> Option<std::cmp::Ordering> {
    match (v, o) {
        (Value::Number(n), Operand::Number(x)) => n.as_f64()?.partial_cmp(x),
        (Value::String(s), Operand::Text(t)) => Some(compare_text(s, t)),
        (Value::Bool(b), Operand::Bool(x)) => Some(b.cmp(x)),
        _ => None,
    }
}

/// Date-times compare as instants; other text as text.
fn compare_text(a: &str, b: &str) -> std::cmp::Ordering {
    let f = &time::format_description::well_known::Rfc3339;
    match (
        time::OffsetDateTime::parse(a, f),
        time::OffsetDateTime::parse(b, f),
    ) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn equal(v: &Value, o: &Operand) -> bool {
    match o {
        Operand::List(items) => items.iter().any(|i| equal(v, i)),
        Operand::Range(lo, hi) => {
            cmp(v, lo).is_some_and(|c| c.is_ge()) && cmp(v, hi).is_some_and(|c| c.is_le())
        }
        one => match v {
            Value::Array(a) => a.iter().any(|x| equal(x, one)),
            _ => cmp(v, one).is_some_and(|c| c.is_eq()),
        },
    }
}

fn term(t: &Term, e: &Entity) -> bool {
    match t {
        Term::Exists(p) => !values(p, e).is_empty(),
        Term::Absent(p) => values(p, e).is_empty(),
        Term::Pattern(p, want, re) => values(p, e)
            .iter()
            .any(|v| v.as_str().is_some_and(|s| re.is_match(s) == *want)),
        // `!=`: the attribute is there and no value of it equals.
        Term::Compare(p, Op::Ne, o) => {
            let vs = values(p, e);
            !vs.is_empty() && !vs.iter().any(|v| equal(v, o))
        }
        // Ordering never applies to a relationship's object (a URI).
        Term::Compare(p, Op::Gt | Op::Ge | Op::Lt | Op::Le, _)
            if p.sub.is_none()
                && e.attrs.get(&p.attr).is_some_and(|is| {
                    is.iter().any(|i| {
                        matches!(
                            i.get("type").and_then(Value::as_str),
                            Some("Relationship" | "ListRelationship")
                        )
                    })
                }) =>
        {
            false
        }
        Term::Compare(p, op, o) => values(p, e).iter().any(|v| match op {
            Op::Eq => equal(v, o),
            Op::Ne => false,
            Op::Gt => cmp(v, o).is_some_and(|c| c.is_gt()),
            Op::Ge => cmp(v, o).is_some_and(|c| c.is_ge()),
            Op::Lt => cmp(v, o).is_some_and(|c| c.is_lt()),
            Op::Le => cmp(v, o).is_some_and(|c| c.is_le()),
            Op::Match | Op::NotMatch => false,
        }),
    }
}

/// `scopeQ` (4.19): scopes joined by `;` (and), `,` or `|` (or), grouped
/// by parentheses; in a scope, `+` stands for one level and a final `#` for
/// the level before it and any below (`/#`: any scope at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeQ {
    And(Vec<ScopeQ>),
    Or(Vec<ScopeQ>),
    /// One scope's levels.
    Scope(Vec<String>),
}

impl ScopeQ {
    pub fn parse(s: &str) -> R<ScopeQ> {
        let chars: Vec<char> = s.chars().collect();
        let mut pos = 0;
        let q = Self::or(&chars, &mut pos, 0)?;
        if pos != chars.len() {
            return Err(NgsiError::bad(format!(
                "scopeQ '{s}': unexpected '{}' at position {}",
                chars[pos],
                pos + 1
            )));
        }
        Ok(q)
    }

    fn or(c: &[char], pos: &mut usize, depth: usize) -> R<ScopeQ> {
        let mut parts = vec![Self::and(c, pos, depth)?];
        while *pos < c.len() && matches!(c[*pos], ',' | '|') {
            *pos += 1;
            parts.push(Self::and(c, pos, depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            ScopeQ::Or(parts)
        })
    }

    fn and(c: &[char], pos: &mut usize, depth: usize) -> R<ScopeQ> {
        let mut parts = vec![Self::atom(c, pos, depth)?];
        while *pos < c.len() && c[*pos] == ';' {
            *pos += 1;
            parts.push(Self::atom(c, pos, depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            ScopeQ::And(parts)
        })
    }

    fn atom(c: &[char], pos: &mut usize, depth: usize) -> R<ScopeQ> {
        if depth > 16 {
            return Err(NgsiError::bad("scopeQ nests too deeply"));
        }
        if *pos < c.len() && c[*pos] == '(' {
            *pos += 1;
            let inner = Self::or(c, pos, depth + 1)?;
            if *pos >= c.len() || c[*pos] != ')' {
                return Err(NgsiError::bad("scopeQ: a '(' is not closed"));
            }
            *pos += 1;
            return Ok(inner);
        }
        let start = *pos;
        while *pos < c.len() && !matches!(c[*pos], ',' | '|' | ';' | '(' | ')') {
            *pos += 1;
        }
        let text: String = c[start..*pos].iter().collect();
        let bad = || {
            NgsiError::bad(format!(
                "scopeQ: '{text}' is not a scope (/Level/Level…, a level being a name, + or a final #)"
            ))
        };
        let levels: Vec<String> = text
            .strip_prefix('/')
            .ok_or_else(bad)?
            .split('/')
            .map(str::to_string)
            .collect();
        let n = levels.len();
        for (i, l) in levels.iter().enumerate() {
            let ok = l == "+"
                || (l == "#" && i + 1 == n)
                || (l.chars().next().is_some_and(char::is_alphabetic)
                    && l.chars().all(|c| c.is_alphanumeric() || c == '_'));
            if !ok {
                return Err(bad());
            }
        }
        Ok(ScopeQ::Scope(levels))
    }

    /// Whether an entity with these scopes answers it.
    pub fn matches(&self, scopes: &[String]) -> bool {
        match self {
            ScopeQ::And(p) => p.iter().all(|q| q.matches(scopes)),
            ScopeQ::Or(p) => p.iter().any(|q| q.matches(scopes)),
            ScopeQ::Scope(pattern) => scopes.iter().any(|s| scope_matches(pattern, s)),
        }
    }
}

fn scope_matches(pattern: &[String], scope: &str) -> bool {
    let levels: Vec<&str> = scope.trim_start_matches('/').split('/').collect();
    for (i, p) in pattern.iter().enumerate() {
        if p == "#" {
            return levels.len() >= i && !scope.is_empty();
        }
        match levels.get(i) {
            Some(l) if p == "+" || p == l => {}
            _ => return false,
        }
    }
    levels.len() == pattern.len()
}

/// What an `orderBy` key orders by.
#[derive(Debug, Clone)]
enum OrderBy {
    /// `id`, `type`, `createdAt` or `modifiedAt`.
    Member(&'static str),
    /// An attribute's value, a sub-attribute's, or a key into it (as in `q`).
    Value(Path),
    /// Distance from `orderFrom` to a GeoProperty (expanded).
    Distance(String),
}

/// One `orderBy` key: what, and whether descending.
#[derive(Debug, Clone)]
pub struct OrderKey {
    by: OrderBy,
    desc: bool,
}

/// A value as ordering sees it: numbers, then text, then anything else,
/// then nothing (absent values come last either way).
#[derive(Debug, Clone, PartialEq)]
enum SortValue {
    Number(f64),
    Text(String),
    Other(String),
    Absent,
}

impl SortValue {
    fn of(v: Option<&Value>) -> SortValue {
        match v {
            None | Some(Value::Null) => SortValue::Absent,
            Some(Value::Number(n)) => n.as_f64().map_or(SortValue::Absent, SortValue::Number),
            Some(Value::String(s)) => SortValue::Text(s.clone()),
            Some(other) => SortValue::Other(other.to_string()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            SortValue::Number(_) => 0,
            SortValue::Text(_) => 1,
            SortValue::Other(_) => 2,
            SortValue::Absent => 3,
        }
    }
}

/// Text folded for a collation: accents and case set aside (then restored
/// as tie-breakers by the caller).
fn folded(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// A BCP 47 language tag, as far as its shape goes (`de-u-co-phonebk`, `und`).
fn language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    parts
        .next()
        .is_some_and(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()))
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The first position of a GeoJSON geometry (a Point's own).
fn first_position(g: &Value) -> Option<(f64, f64)> {
    let mut c = g.get("coordinates")?;
    while let Some(first) = c
        .as_array()
        .and_then(|a| a.first())
        .filter(|f| f.is_array())
    {
        c = first;
    }
    let a = c.as_array()?;
    Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?))
}

/// What `GET /entities` asks for, parsed under the request's context.
#[derive(Debug, Clone, Default)]
pub struct EntityQuery {
    /// Any of these types (expanded).
    pub types: Vec<String>,
    pub ids: Vec<String>,
    pub id_pattern: Option<Regex>,
    /// Only entities with any of these attributes, and only those rendered (expanded).
    pub attrs: Option<Vec<String>>,
    pub q: Option<Q>,
    pub geo: Option<super::geo::GeoQuery>,
    pub limit: usize,
    pub offset: usize,
    pub count: bool,
    /// Only this stream's entities (a CityTrust parameter, `stream`).
    pub stream: Option<String>,
    pub scope_q: Option<ScopeQ>,
    /// `type=*`: every type (4.17).
    pub any_type: bool,
    /// `type=(A;B)|C`: each group's types all held (else any of `types`).
    pub type_groups: Option<Vec<Vec<String>>>,
    /// `local`: this broker's entities only (all it has: it federates no
    /// context sources); `true` lets a query name nothing else.
    pub local: Option<bool>,
    /// `orderBy`, in order of precedence (empty: by id).
    pub order: Vec<OrderKey>,
    /// `orderFrom`: the point distances are measured from (lon, lat).
    pub order_from: Option<(f64, f64)>,
    /// `collation`: text compared folded (accents and case second); `None`:
    /// by code point.
    pub collation: Option<String>,
}

impl EntityQuery {
    /// Build from the query string's parameters (already split and decoded).
    pub fn from_params(params: &[(String, String)], ctx: &Context) -> R<EntityQuery> {
        let mut q = EntityQuery {
            limit: 20,
            ..Default::default()
        };
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        for (k, v) in params {
            match k.as_str() {
                "type" if v.trim() == "*" => q.any_type = true,
                "type" if v.contains(';') => {
                    // `(A;B)|C`: all of A and B, or C.
                    let groups: Vec<Vec<String>> = v
                        .split([',', '|'])
                        .map(|alt| {
                            alt.trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
                                .split(';')
                                .map(|t| {
                                    t.trim_matches(|c: char| {
                                        c == '(' || c == ')' || c.is_whitespace()
                                    })
                                })
                                .filter(|t| !t.is_empty())
                                .map(|t| ctx.expand(t))
                                .collect::<Vec<_>>()
                        })
                        .filter(|g| !g.is_empty())
                        .collect();
                    q.types = groups.iter().flatten().cloned().collect();
                    q.type_groups = Some(groups);
                }
                "type" => {
                    // `A,B` and `A|B` both mean either.
                    q.types = v
                        .split([',', '|'])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|t| ctx.expand(t))
                        .collect();
                }
                "id" => {
                    q.ids = list(v);
                    for id in &q.ids {
                        super::check_uri("id", id)?;
                    }
                }
                // `**` is no pattern (a quantifier of nothing).
                "idPattern" if v.contains("**") => {
                    return Err(NgsiError::bad(format!(
                        "idPattern '{v}' is not a regular expression"
                    )));
                }
                "idPattern" => {
                    q.id_pattern = Some(
                        regex::RegexBuilder::new(v)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|_| {
                                NgsiError::bad(format!(
                                    "idPattern '{v}' is not a regular expression"
                                ))
                            })?,
                    );
                }
                "attrs" => {
                    let names = list(v);
                    if let Some(core) = names
                        .iter()
                        .find(|a| matches!(a.as_str(), "id" | "type" | "scope" | "@id" | "@type"))
                    {
                        return Err(NgsiError::bad(format!(
                            "attrs names attributes; '{core}' is a core member"
                        )));
                    }
                    q.attrs = Some(names.iter().map(|a| ctx.expand(a)).collect());
                }
                "csf" => {
                    // No context sources are registered here: a well-formed
                    // filter selects none; a malformed one is an error.
                    Q::parse(v, ctx).map_err(|e| NgsiError::bad(format!("csf: {}", e.detail)))?;
                }
                "q" => q.q = Some(Q::parse(v, ctx)?),
                "limit" => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| NgsiError::bad(format!("limit '{v}' is not a number")))?;
                    if n > super::MAX_LIMIT {
                        return Err(NgsiError::new(
                            super::ErrorType::TooManyResults,
                            format!("limit is at most {}", super::MAX_LIMIT),
                        ));
                    }
                    if n == 0 && !params.iter().any(|(k, v)| k == "count" && v == "true") {
                        return Err(NgsiError::bad("limit 0 is only for count=true"));
                    }
                    q.limit = n;
                }
                "offset" => {
                    q.offset = v
                        .parse()
                        .map_err(|_| NgsiError::bad(format!("offset '{v}' is not a number")))?;
                }
                "count" => q.count = v == "true",
                "scopeQ" => q.scope_q = Some(ScopeQ::parse(v)?),
                "local" => {
                    q.local = Some(match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(NgsiError::bad(format!("local '{v}' is true or false"))),
                    })
                }
                "orderBy" => q.order = Self::order_keys(v, ctx)?,
                "orderFrom" => {
                    let nums: Vec<f64> = v
                        .trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .split(',')
                        .map(|n| n.trim().parse::<f64>())
                        .collect::<Result<_, _>>()
                        .map_err(|_| {
                            NgsiError::bad(format!("orderFrom '{v}' is not a position [lon,lat]"))
                        })?;
                    match nums.as_slice() {
                        [lon, lat] if lon.abs() <= 180.0 && lat.abs() <= 90.0 => {
                            q.order_from = Some((*lon, *lat));
                        }
                        _ => {
                            return Err(NgsiError::bad(format!(
                                "orderFrom '{v}' is not a position [lon,lat]"
                            )));
                        }
                    }
                }
                "collation" => {
                    if !language_tag(v) {
                        return Err(NgsiError::bad(format!(
                            "collation '{v}' is not a language tag (BCP 47)"
                        )));
                    }
                    q.collation = Some(v.clone());
                }
                "stream" => q.stream = Some(v.clone()),
                _ => {}
            }
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(g) = get("geoQ") {
            // The single form: JSON, or the three parameters as one query string.
            q.geo = Some(if g.trim_start().starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(g)
                    .map_err(|_| NgsiError::bad("geoQ is not a JSON object"))?;
                super::geo::GeoQuery::from_json(&v, ctx)?
            } else {
                let inner: Vec<(String, String)> = url::form_urlencoded::parse(g.as_bytes())
                    .into_owned()
                    .collect();
                let part = |name: &str| {
                    inner
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                match (part("georel"), part("geometry"), part("coordinates")) {
                    (Some(rel), Some(geometry), Some(coordinates)) => super::geo::GeoQuery::parse(
                        rel,
                        geometry,
                        coordinates,
                        part("geoproperty"),
                        ctx,
                    )?,
                    _ => {
                        return Err(NgsiError::bad(
                            "geoQ names georel, geometry and coordinates",
                        ));
                    }
                }
            });
            q.check_order()?;
            return Ok(q);
        }
        q.check_order()?;
        if q.any_type && q.local == Some(false) {
            return Err(NgsiError::bad(
                "type=* asks for every type this broker holds: it is not given with local=false",
            ));
        }
        match (get("georel"), get("geometry"), get("coordinates")) {
            (None, None, None) => {}
            (Some(rel), Some(geometry), Some(coordinates)) => {
                q.geo = Some(super::geo::GeoQuery::parse(
                    rel,
                    geometry,
                    coordinates,
                    get("geoproperty"),
                    ctx,
                )?);
            }
            _ => {
                return Err(NgsiError::bad(
                    "a geo-query names georel, geometry and coordinates together",
                ));
            }
        }
        Ok(q)
    }

    fn order_keys(v: &str, ctx: &Context) -> R<Vec<OrderKey>> {
        let mut keys = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (what, dir) = item.split_once(';').unwrap_or((item, "asc"));
            let (desc, distance) = match dir.trim() {
                "asc" => (false, false),
                "desc" => (true, false),
                "dist-asc" => (false, true),
                "dist-desc" => (true, true),
                other => {
                    return Err(NgsiError::bad(format!(
                        "orderBy '{item}': '{other}' is not asc, desc, dist-asc or dist-desc"
                    )));
                }
            };
            let what = what.trim();
            let by = match what {
                "id" | "type" | "createdAt" | "modifiedAt" if !distance => {
                    OrderBy::Member(match what {
                        "id" => "id",
                        "type" => "type",
                        "createdAt" => "createdAt",
                        _ => "modifiedAt",
                    })
                }
                _ if distance => OrderBy::Distance(ctx.expand(what)),
                _ => {
                    let mut parser = Parser {
                        s: what.as_bytes(),
                        text: what,
                        pos: 0,
                        ctx,
                        depth: 0,
                    };
                    let path = parser.path()?;
                    if parser.pos != what.len() {
                        return Err(NgsiError::bad(format!(
                            "orderBy '{what}' is not an attribute path"
                        )));
                    }
                    OrderBy::Value(path)
                }
            };
            keys.push(OrderKey { by, desc });
        }
        if keys.is_empty() {
            return Err(NgsiError::bad("orderBy names at least one key"));
        }
        Ok(keys)
    }

    /// Check what ordering needs: a point to measure distances from.
    pub fn check_order(&self) -> R<()> {
        if self
            .order
            .iter()
            .any(|k| matches!(k.by, OrderBy::Distance(_)))
            && self.order_from.is_none()
        {
            return Err(NgsiError::bad(
                "ordering by distance (dist-asc, dist-desc) needs orderFrom",
            ));
        }
        Ok(())
    }

    /// Whether it orders by anything but the entity id (the temporal API
    /// orders by id alone).
    pub fn orders_by_more_than_id(&self) -> bool {
        self.order
            .iter()
            .any(|k| !matches!(k.by, OrderBy::Member("id")))
    }

    /// Whether it orders by id, descending (first).
    pub fn by_id_descending(&self) -> bool {
        self.order
            .first()
            .is_some_and(|k| k.desc && matches!(k.by, OrderBy::Member("id")))
    }

    fn sort_value(&self, by: &OrderBy, e: &Entity) -> SortValue {
        match by {
            OrderBy::Member("id") => SortValue::Text(e.id.clone()),
            OrderBy::Member("type") => {
                SortValue::Text(e.types.first().cloned().unwrap_or_default())
            }
            OrderBy::Member("createdAt") => SortValue::Text(e.created_at.clone()),
            OrderBy::Member(_) => SortValue::Text(e.modified_at.clone()),
            OrderBy::Value(p) => SortValue::of(values(p, e).first().copied()),
            OrderBy::Distance(iri) => {
                match (self.order_from, e.value_of(iri).and_then(first_position)) {
                    (Some(from), Some(at)) => SortValue::Number(super::geo::haversine(from, at)),
                    _ => SortValue::Absent,
                }
            }
        }
    }

    fn compare_text(&self, a: &str, b: &str) -> std::cmp::Ordering {
        match &self.collation {
            None => a.cmp(b),
            Some(_) => folded(a).cmp(&folded(b)).then_with(|| a.cmp(b)),
        }
    }

    /// The order `orderBy` asks for between two entities (ties: by id).
    pub fn order(&self, a: &Entity, b: &Entity) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        for k in &self.order {
            let (x, y) = (self.sort_value(&k.by, a), self.sort_value(&k.by, b));
            let o = match (&x, &y) {
                (SortValue::Absent, SortValue::Absent) => Ordering::Equal,
                (SortValue::Absent, _) => return Ordering::Greater,
                (_, SortValue::Absent) => return Ordering::Less,
                (SortValue::Number(m), SortValue::Number(n)) => m.total_cmp(n),
                (SortValue::Text(m), SortValue::Text(n)) => self.compare_text(m, n),
                (SortValue::Other(m), SortValue::Other(n)) => m.cmp(n),
                _ => x.rank().cmp(&y.rank()),
            };
            let o = if k.desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id)
    }

    /// Whether the query names enough to run: a type, attributes (not
    /// system ones alone), a `q` (on more than system members), or a
    /// geo-query (NGSI-LD 5.7.2; ids alone do not bound it), or a stream.
    pub fn is_bounded(&self) -> bool {
        const SYSTEM: &[&str] = &["createdAt", "modifiedAt", "deletedAt", "observedAt"];
        let system = |a: &String| {
            SYSTEM
                .iter()
                .any(|s| a == s || a.ends_with(&format!("/{s}")))
        };
        !self.types.is_empty()
            || self.attrs.as_ref().is_some_and(|a| !a.iter().all(system))
            || self.q.as_ref().is_some_and(|q| !q.system_only())
            || self.geo.is_some()
            || self.stream.is_some()
            || self.any_type
            || self.local == Some(true)
    }

    /// Whether an entity answers it.
    pub fn matches(&self, e: &Entity) -> bool {
        (match &self.type_groups {
            Some(groups) => groups.iter().any(|g| g.iter().all(|t| e.types.contains(t))),
            None => self.types.is_empty() || e.types.iter().any(|t| self.types.contains(t)),
        })
            && (self.ids.is_empty() || self.ids.contains(&e.id))
            // Ids, when given, take precedence over idPattern.
            && (!self.ids.is_empty() || self.id_pattern.as_ref().is_none_or(|re| re.is_match(&e.id)))
            && self
                .attrs
                .as_ref()
                .is_none_or(|a| a.iter().any(|a| e.attrs.contains_key(a)))
            && self.q.as_ref().is_none_or(|q| q.matches(e))
            && self.geo.as_ref().is_none_or(|g| g.matches(e))
            && self
                .scope_q
                .as_ref()
                .is_none_or(|q| e.scope.as_ref().is_some_and(|s| q.matches(s)))
    }
}

#[cfg(test)]
mod scope_tests {
    use super::ScopeQ;

    #[test]
    fn scope_queries_follow_the_grammar() {
        let both = [
            "/Madrid/Gardens/ParqueNorte".to_string(),
            "/CompanyA/OrganizationB/UnitC".to_string(),
        ];
        let one = ["/Madrid/Gardens/ParqueNorte".to_string()];
        for (q, want_both, want_one) in [
            ("/Madrid/Gardens/ParqueNorte", true, true),
            ("/Madrid/+/ParqueNorte", true, true),
            ("/CompanyA/#", true, false),
            ("/#", true, true),
            (
                "/Madrid/Gardens/ParqueNorte;/CompanyA/OrganizationB/UnitC",
                true,
                false,
            ),
            (
                "/Madrid/Gardens/ParqueNorte,/CompanyA/OrganizationB/UnitC",
                true,
                true,
            ),
            ("(/Madrid/#;/CompanyA/+/UnitC)|/X", true, false),
            ("/Madrid", false, false),
        ] {
            let s = ScopeQ::parse(q).unwrap();
            assert_eq!(s.matches(&both), want_both, "{q}");
            assert_eq!(s.matches(&one), want_one, "{q}");
        }
        for bad in ["Madrid", "/a/#/b", "(/a", "/a)", "/1a", ""] {
            assert!(ScopeQ::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Entity, Fragment};
    use super::*;
    use serde_json::json;

    fn station() -> Entity {
        let ctx = Context::core();
        Entity::create(
            Fragment::parse(
                ctx,
                &json!({
                    "id": "urn:ngsi-ld:AirQualityObserved:4",
                    "type": "AirQualityObserved",
                    "NO2": {"type": "Property", "value": 42, "observedAt": "2017-11-01T10:00:00Z",
                            "quality": {"type": "Property", "value": "good"}},
                    "name": "Eixample",
                    "tags": ["traffic", "urban"],
                    "address": {"type": "Property", "value": {"district": "Eixample", "zip": "08013"}}
                }),
                true,
            )
            .unwrap(),
            "2026-12-06T10:00:00Z",
        )
        .unwrap()
    }

    fn q(s: &str) -> bool {
        Q::parse(s, Context::core()).unwrap().matches(&station())
    }

    #[test]
    fn the_query_language_compares_values_paths_ranges_and_lists() {
        assert!(q("NO2>40"));
        assert!(!q("NO2>42"));
        assert!(q("NO2>=42;NO2<=42"));
        assert!(q("NO2==40..50"));
        assert!(q("NO2==1,2,42"));
        assert!(!q("NO2!=42"));
        assert!(q("name==\"Eixample\""));
        assert!(q("name~=\"^Eix\""));
        assert!(q("name!~=\"^Gr\""));
        assert!(q("NO2"));
        assert!(!q("O3"));
        assert!(q("O3|NO2"));
        assert!(!q("O3;NO2"));
        assert!(q("(O3|NO2);name==\"Eixample\""));
        assert!(q("NO2.quality==\"good\""));
        assert!(q("NO2.observedAt>2017-10-31T00:00:00Z"));
        assert!(q("address[district]==\"Eixample\""));
        assert!(q("tags==\"urban\""));
    }

    #[test]
    fn a_malformed_query_is_a_bad_request_saying_where() {
        for bad in [
            "NO2>",
            "(NO2>1",
            "NO2>1)",
            "name==\"open",
            ">3",
            "name~=\"(\"",
        ] {
            let e = Q::parse(bad, Context::core()).unwrap_err();
            assert_eq!(e.kind, super::super::ErrorType::BadRequestData, "{bad}");
        }
        let deep = "(".repeat(40) + "a" + &")".repeat(40);
        assert!(Q::parse(&deep, Context::core()).is_err());
    }
}
