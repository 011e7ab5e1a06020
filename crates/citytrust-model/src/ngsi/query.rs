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
    instances
        .iter()
        .filter_map(|i| {
            let mut v = match &p.sub {
                None => instance_value(i)?,
                Some(s) if s.contains(':') => {
                    let sub = i.get(s)?.as_object()?;
                    instance_value(sub)?
                }
                Some(s) => i.get(s)?,
            };
            for k in &p.keys {
                v = v.get(k)?;
            }
            Some(v)
        })
        .collect()
}

fn cmp(v: &Value, o: &Operand) -> Option<std::cmp::Ordering> {
    match (v, o) {
        (Value::Number(n), Operand::Number(x)) => n.as_f64()?.partial_cmp(x),
        (Value::String(s), Operand::Text(t)) => Some(compare_text(s, t)),
        (Value::String(s), Operand::Number(x)) => s.parse::<f64>().ok()?.partial_cmp(x),
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
        Term::Pattern(p, want, re) => values(p, e)
            .iter()
            .any(|v| v.as_str().is_some_and(|s| re.is_match(s) == *want)),
        Term::Compare(p, op, o) => values(p, e).iter().any(|v| match op {
            Op::Eq => equal(v, o),
            Op::Ne => !equal(v, o),
            Op::Gt => cmp(v, o).is_some_and(|c| c.is_gt()),
            Op::Ge => cmp(v, o).is_some_and(|c| c.is_ge()),
            Op::Lt => cmp(v, o).is_some_and(|c| c.is_lt()),
            Op::Le => cmp(v, o).is_some_and(|c| c.is_le()),
            Op::Match | Op::NotMatch => false,
        }),
    }
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
                "attrs" => q.attrs = Some(list(v).iter().map(|a| ctx.expand(a)).collect()),
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
            return Ok(q);
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

    /// Whether the query names enough to run (NGSI-LD asks for one of these).
    pub fn is_bounded(&self) -> bool {
        !self.types.is_empty()
            || self.attrs.is_some()
            || self.q.is_some()
            || self.geo.is_some()
            || !self.ids.is_empty()
            || self.id_pattern.is_some()
            || self.stream.is_some()
    }

    /// Whether an entity answers it.
    pub fn matches(&self, e: &Entity) -> bool {
        (self.types.is_empty() || e.types.iter().any(|t| self.types.contains(t)))
            && (self.ids.is_empty() || self.ids.contains(&e.id))
            && self.id_pattern.as_ref().is_none_or(|re| re.is_match(&e.id))
            && self
                .attrs
                .as_ref()
                .is_none_or(|a| a.iter().any(|a| e.attrs.contains_key(a)))
            && self.q.as_ref().is_none_or(|q| q.matches(e))
            && self.geo.as_ref().is_none_or(|g| g.matches(e))
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
