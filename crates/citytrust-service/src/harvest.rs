//! Reading other catalogues: DCAT-AP documents (Turtle or N-Triples) and
//! CKAN's `package_search` pages, turned into records — one per dataset,
//! each either an entry to keep, a record rejected with its reason, or a
//! withdrawn one to drop.
//!
//! A DCAT-AP document is parsed as it arrives (oxttl's push parser) and
//! each dataset is put together from the statements about it, its blank
//! nodes and its distributions as soon as their blocks have passed, so
//! memory follows the distance between a dataset and its distributions in
//! the feed, not the feed's size. Serialisers write a subject's statements
//! together (CityTrust's export, ckanext-dcat, rdflib, data.europa.eu); a
//! dataset still waiting for distributions after [`MAX_PENDING`] later
//! datasets is taken with what has arrived.

use std::collections::{HashMap, HashSet, VecDeque};

use citytrust_model::federation::{AccessRight, FederatedEntry, FederatedSource};
use oxrdf::{NamedOrBlankNode, Term};
use oxttl::turtle::LowLevelTurtleParser;

const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
const DCAT: &str = "http://www.w3.org/ns/dcat#";
const DCT: &str = "http://purl.org/dc/terms/";
const FOAF_NAME: &str = "http://xmlns.com/foaf/0.1/name";
const ADMS_STATUS: &str = "http://www.w3.org/ns/adms#status";
const SKOS_PREF_LABEL: &str = "http://www.w3.org/2004/02/skos/core#prefLabel";

/// Datasets waiting for their distributions at once, at most.
pub const MAX_PENDING: usize = 1000;
/// Distributions no dataset has claimed yet, kept at most.
const MAX_LOOSE: usize = 100_000;
/// Statements held at once, at most: a feed that is not grouped by dataset
/// (or one dataset of millions of statements) is refused, not followed.
pub const MAX_WINDOW_STATEMENTS: usize = 1_000_000;
/// Publishers' names remembered, at most.
const MAX_NAMES: usize = 10_000;
/// The longest remote id (IRI or CKAN name) a record may have.
pub const MAX_REMOTE_ID: usize = 2000;
/// The longest keyword, theme, format, publisher, licence and date.
const MAX_SHORT: usize = 500;
/// The longest title, description, keyword and list a record may carry.
const MAX_TITLE: usize = 1000;
const MAX_DESCRIPTION: usize = 50_000;
const MAX_KEYWORDS: usize = 100;
const MAX_FORMATS: usize = 50;

/// One dataset of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A dataset to keep (its `id` and `source` are filled in by the harvest).
    Entry(Box<FederatedEntry>),
    /// A dataset the feed marks withdrawn: dropped like one it no longer lists.
    Withdrawn { remote_id: String },
    /// A record that cannot be taken.
    Rejected {
        /// Its remote id, when it has one.
        remote_id: Option<String>,
        /// How to find it in the feed.
        record: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Obj {
    Iri(String),
    Blank(String),
    Lit { value: String, lang: Option<String> },
}

type Statements = Vec<(String, Obj)>;

/// Puts datasets together from a stream of triples.
#[derive(Default)]
struct Assembler {
    window: HashMap<String, Statements>,
    /// Datasets discovered and not yet taken, in order.
    pending: VecDeque<String>,
    pending_set: HashSet<String>,
    /// Hashes of the datasets taken (statements about them afterwards are ignored).
    taken: HashSet<u64>,
    /// Named subjects whose block has ended.
    ended: HashSet<String>,
    /// Distribution → the dataset that lists it.
    owner_of: HashMap<String, String>,
    names: HashMap<String, String>,
    current: Option<String>,
    loose: usize,
    /// Datasets a catalogue lists (`dcat:dataset`) that have had no statement yet.
    announced: HashSet<String>,
    /// Statements in `window`.
    held: usize,
    /// Datasets without an IRI seen (each reported as rejected).
    blank_datasets: usize,
    /// The last distributions taken with a dataset, for a later dataset
    /// that lists the same one.
    recent: VecDeque<(String, Statements)>,
}

/// How many taken distributions are kept for reuse.
const RECENT_DISTRIBUTIONS: usize = 64;

const MAX_BLANK_DATASETS_REPORTED: usize = 100_000;

fn key_of(s: &NamedOrBlankNode) -> String {
    match s {
        NamedOrBlankNode::NamedNode(n) => n.as_str().to_string(),
        NamedOrBlankNode::BlankNode(b) => format!("_:{}", b.as_str()),
    }
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Assembler {
    fn triple(&mut self, t: oxrdf::Triple, out: &mut Vec<Record>) {
        let subject = key_of(&t.subject);
        let named = matches!(t.subject, NamedOrBlankNode::NamedNode(_));
        if named && self.taken.contains(&hash(&subject)) {
            return;
        }
        if named
            && self.current.as_deref() != Some(subject.as_str())
            && let Some(previous) = self.current.replace(subject.clone())
        {
            self.block_ended(previous, out);
        }
        let predicate = t.predicate.into_string();
        let object = match t.object {
            Term::NamedNode(n) => Obj::Iri(n.into_string()),
            Term::BlankNode(b) => Obj::Blank(format!("_:{}", b.as_str())),
            Term::Literal(l) => Obj::Lit {
                value: l.value().to_string(),
                lang: l.language().map(str::to_string),
            },
            #[allow(unreachable_patterns)]
            _ => return,
        };
        if predicate == FOAF_NAME
            && named
            && let Obj::Lit { value, .. } = &object
            && self.names.len() < MAX_NAMES
        {
            self.names
                .entry(subject.clone())
                .or_insert_with(|| value.clone());
        }
        if !named
            && predicate == RDF_TYPE
            && matches!(&object, Obj::Iri(c) if c == &format!("{DCAT}Dataset"))
            && self.blank_datasets < MAX_BLANK_DATASETS_REPORTED
        {
            // No IRI: nothing to follow it by from one harvest to the next.
            self.blank_datasets += 1;
            out.push(Record::Rejected {
                remote_id: None,
                record: "a dataset without an IRI (a blank node)".into(),
                reason: "a dataset needs an IRI to be followed from one harvest to the next".into(),
            });
        }
        let mut discovered = match (&*predicate, &object) {
            (RDF_TYPE, Obj::Iri(class)) if named && class == &format!("{DCAT}Dataset") => {
                Some(subject.clone())
            }
            _ => None,
        };
        if named && self.announced.remove(&subject) {
            discovered = Some(subject.clone());
        }
        if let (true, Obj::Iri(d)) = (predicate == format!("{DCAT}dataset"), &object)
            && !self.pending_set.contains(d)
            && !self.taken.contains(&hash(d))
            && !self.window.contains_key(d)
        {
            self.announced.insert(d.clone());
        }
        if let (true, Obj::Iri(dist)) = (predicate == format!("{DCAT}distribution"), &object) {
            self.owner_of.insert(dist.clone(), subject.clone());
        }
        self.window
            .entry(subject)
            .or_default()
            .push((predicate, object));
        self.held += 1;
        if let Some(d) = discovered
            && !self.pending_set.contains(&d)
            && !self.taken.contains(&hash(&d))
        {
            self.pending_set.insert(d.clone());
            self.pending.push_back(d);
            // The dataset before it may be complete now.
            if self.pending.len() >= 2
                && let Some(previous) = self.pending.get(self.pending.len() - 2).cloned()
            {
                self.take_if_ready(&previous, out);
            }
            while self.pending.len() > MAX_PENDING {
                if let Some(oldest) = self.pending.pop_front() {
                    self.take(&oldest, out);
                }
            }
        }
    }

    /// Typed a distribution, or saying what only a distribution says (its
    /// format, media type or URLs): feeds leave the type out.
    fn is_distribution(&self, s: &str) -> bool {
        let says = [
            format!("{DCT}format"),
            format!("{DCAT}mediaType"),
            format!("{DCAT}accessURL"),
            format!("{DCAT}downloadURL"),
        ];
        self.window.get(s).is_some_and(|st| {
            st.iter().any(|(p, o)| {
                (p == RDF_TYPE && matches!(o, Obj::Iri(c) if c == &format!("{DCAT}Distribution")))
                    || says.contains(p)
            })
        })
    }

    fn block_ended(&mut self, subject: String, out: &mut Vec<Record>) {
        if self.pending_set.contains(&subject) {
            self.ended.insert(subject.clone());
            self.take_if_ready(&subject, out);
        } else if let Some(dataset) = self.owner_of.get(&subject).cloned() {
            self.ended.insert(subject);
            if self.pending_set.contains(&dataset) {
                self.take_if_ready(&dataset, out);
            }
        } else if self.is_distribution(&subject) && self.loose < MAX_LOOSE {
            // A distribution listed before its dataset: keep it for later.
            self.ended.insert(subject);
            self.loose += 1;
        } else {
            self.drop_subject(&subject);
        }
    }

    fn distributions(&self, dataset: &str) -> Vec<String> {
        self.window
            .get(dataset)
            .map(|st| {
                st.iter()
                    .filter(|(p, _)| p == &format!("{DCAT}distribution"))
                    .filter_map(|(_, o)| match o {
                        Obj::Iri(i) => Some(i.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Take `dataset` if its block and its distributions' have ended and a
    /// later dataset has begun (RDF/XML nests a distribution inside its
    /// dataset and states the link after it, so a dataset's block may
    /// resume until the next dataset).
    fn take_if_ready(&mut self, dataset: &str, out: &mut Vec<Record>) {
        if !self.ended.contains(dataset) || self.pending.back().map(String::as_str) == Some(dataset)
        {
            return;
        }
        let ready = self
            .distributions(dataset)
            .iter()
            .all(|d| self.ended.contains(d) || self.recent.iter().any(|(r, _)| r == d));
        if ready {
            self.take(dataset, out);
        }
    }

    /// Drop a subject and the blank nodes it holds.
    fn drop_subject(&mut self, subject: &str) {
        let mut stack = vec![subject.to_string()];
        while let Some(s) = stack.pop() {
            if let Some(st) = self.window.remove(&s) {
                self.held = self.held.saturating_sub(st.len());
                for (_, o) in st {
                    if let Obj::Blank(b) = o {
                        stack.push(b);
                    }
                }
            }
            self.ended.remove(&s);
        }
    }

    fn take(&mut self, dataset: &str, out: &mut Vec<Record>) {
        self.pending_set.remove(dataset);
        if let Some(pos) = self.pending.iter().position(|d| d == dataset) {
            self.pending.remove(pos);
        }
        self.taken.insert(hash(dataset));
        let distributions = self.distributions(dataset);
        // A distribution an earlier dataset was taken with comes back for this one.
        for d in &distributions {
            if !self.window.contains_key(d)
                && let Some((_, st)) = self.recent.iter().find(|(r, _)| r == d)
            {
                self.held += st.len();
                self.window.insert(d.clone(), st.clone());
            }
        }
        let record = build(dataset, &self.window, &distributions, &self.names);
        for d in &distributions {
            // A distribution a later dataset lists too stays for it.
            let listed_later = self.owner_of.get(d).is_some_and(|o| o != dataset);
            if listed_later {
                continue;
            }
            if !self.pending_set.contains(d)
                && let Some(st) = self.window.get(d)
            {
                if !self.recent.iter().any(|(r, _)| r == d) {
                    self.recent.push_back((d.clone(), st.clone()));
                    if self.recent.len() > RECENT_DISTRIBUTIONS {
                        self.recent.pop_front();
                    }
                }
                self.drop_subject(d);
                self.loose = self.loose.saturating_sub(1);
            }
            self.owner_of.remove(d);
        }
        self.drop_subject(dataset);
        if self.current.as_deref() == Some(dataset) {
            self.current = None;
        }
        out.push(record);
    }

    fn finish(&mut self, out: &mut Vec<Record>) {
        if let Some(previous) = self.current.take() {
            self.block_ended(previous, out);
        }
        while let Some(d) = self.pending.pop_front() {
            self.pending_set.insert(d.clone());
            self.take(&d, out);
        }
        let mut silent: Vec<String> = self.announced.drain().collect();
        silent.sort();
        for d in silent {
            out.push(Record::Rejected {
                remote_id: Some(d.clone()),
                record: d,
                reason: "the catalogue lists it but the feed says nothing about it".into(),
            });
        }
    }
}

/// The RDF syntax of a DCAT-AP feed: from its media type, else its URL's
/// extension, else Turtle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedSyntax {
    /// Turtle, or N-Triples (which is Turtle too).
    Turtle,
    JsonLd,
    RdfXml,
}

impl FeedSyntax {
    pub fn of(content_type: Option<&str>, url: &str) -> FeedSyntax {
        let media = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/ld+json" | "application/json" => return FeedSyntax::JsonLd,
            "application/rdf+xml" | "application/xml" | "text/xml" => return FeedSyntax::RdfXml,
            "text/turtle" | "application/n-triples" | "application/x-turtle" => {
                return FeedSyntax::Turtle;
            }
            _ => {}
        }
        let path = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .to_ascii_lowercase();
        if path.ends_with(".jsonld") || path.ends_with(".json") {
            FeedSyntax::JsonLd
        } else if path.ends_with(".rdf") || path.ends_with(".xml") {
            FeedSyntax::RdfXml
        } else {
            FeedSyntax::Turtle
        }
    }
}

/// Bytes sent from the async side, read on a blocking thread.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.current.len() {
            match self.rx.blocking_recv() {
                Some(next) => {
                    self.current = next;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Parse a JSON-LD or RDF/XML feed from `reader` on this (blocking) thread,
/// sending the records as they complete; an error ends the feed. Remote
/// JSON-LD contexts are not fetched: a feed that needs one is refused,
/// naming it.
pub fn parse_blocking(
    syntax: FeedSyntax,
    base: &str,
    reader: impl std::io::Read,
    tx: &tokio::sync::mpsc::UnboundedSender<Result<Vec<Record>, String>>,
) {
    let mut assembler = Assembler::default();
    let mut out = Vec::new();
    let mut fed = |t: oxrdf::Triple, out: &mut Vec<Record>| -> Result<(), String> {
        assembler.triple(t, out);
        if assembler.held > MAX_WINDOW_STATEMENTS {
            return Err(format!(
                "more than {MAX_WINDOW_STATEMENTS} statements about datasets not yet complete: \
                 the feed does not keep each dataset's statements together"
            ));
        }
        if out.len() >= 64 {
            let _ = tx.send(Ok(std::mem::take(out)));
        }
        Ok(())
    };
    let result: Result<(), String> = match syntax {
        FeedSyntax::JsonLd => {
            let parser = oxjsonld::JsonLdParser::new();
            let parser = parser.clone().with_base_iri(base).unwrap_or(parser);
            let mut quads = parser
                .for_reader(reader)
                .with_load_document_callback(|url, _| {
                    Err(format!(
                        "the feed needs the remote JSON-LD context {url}, which is not fetched"
                    )
                    .into())
                });
            quads.try_for_each(|q| {
                let q = q.map_err(|e| format!("the feed is not valid JSON-LD: {e}"))?;
                if q.graph_name.is_default_graph() {
                    fed(
                        oxrdf::Triple::new(q.subject, q.predicate, q.object),
                        &mut out,
                    )?;
                }
                Ok(())
            })
        }
        FeedSyntax::RdfXml => {
            let parser = oxrdfxml::RdfXmlParser::new();
            let parser = parser.clone().with_base_iri(base).unwrap_or(parser);
            parser.for_reader(reader).try_for_each(|t| {
                let t = t.map_err(|e| format!("the feed is not valid RDF/XML: {e}"))?;
                fed(t, &mut out)
            })
        }
        FeedSyntax::Turtle => Err("Turtle is read as it arrives, not here".into()),
    };
    match result {
        Ok(()) => {
            assembler.finish(&mut out);
            let _ = tx.send(Ok(out));
        }
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    }
}

/// A DCAT-AP feed in Turtle (N-Triples is Turtle too), read as it arrives.
pub struct DcatFeed {
    parser: LowLevelTurtleParser,
    assembler: Assembler,
}

impl DcatFeed {
    pub fn new(base_iri: &str) -> DcatFeed {
        let parser = oxttl::TurtleParser::new();
        let parser = parser.clone().with_base_iri(base_iri).unwrap_or(parser);
        DcatFeed {
            parser: parser.low_level(),
            assembler: Assembler::default(),
        }
    }

    /// Feed the next bytes; the records completed so far go to `out`. A
    /// syntax error stops the feed (the message names line and column).
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Record>) -> Result<(), String> {
        self.parser.extend_from_slice(bytes);
        self.drain(out)
    }

    /// The feed has ended: the rest of the records.
    pub fn finish(&mut self, out: &mut Vec<Record>) -> Result<(), String> {
        self.parser.end();
        self.drain(out)?;
        self.assembler.finish(out);
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<Record>) -> Result<(), String> {
        while let Some(next) = self.parser.parse_next() {
            match next {
                Ok(t) => {
                    self.assembler.triple(t, out);
                    if self.assembler.held > MAX_WINDOW_STATEMENTS {
                        return Err(format!(
                            "more than {MAX_WINDOW_STATEMENTS} statements about datasets not yet complete: \
                             the feed does not keep each dataset's statements together"
                        ));
                    }
                }
                Err(e) => {
                    let at = e.location().start;
                    return Err(format!(
                        "the feed is not valid Turtle at line {}, column {}: {}",
                        at.line + 1,
                        at.column + 1,
                        e.message()
                    ));
                }
            }
        }
        Ok(())
    }
}

fn objects<'a>(st: &'a Statements, predicate: &'a str) -> impl Iterator<Item = &'a Obj> + 'a {
    st.iter()
        .filter(move |(p, _)| p == predicate)
        .map(|(_, o)| o)
}

/// The best literal among `predicate`'s values: English, then untagged, then any.
fn text(st: &Statements, predicate: &str) -> Option<String> {
    let lits: Vec<(&String, &Option<String>)> = objects(st, predicate)
        .filter_map(|o| match o {
            Obj::Lit { value, lang } => Some((value, lang)),
            _ => None,
        })
        .collect();
    lits.iter()
        .find(|(_, l)| {
            l.as_deref().is_some_and(|l| {
                l.eq_ignore_ascii_case("en") || l.to_ascii_lowercase().starts_with("en-")
            })
        })
        .or_else(|| lits.iter().find(|(_, l)| l.is_none()))
        .or_else(|| lits.first())
        .map(|(v, _)| v.trim().to_string())
}

fn last_segment(iri: &str) -> &str {
    iri.trim_end_matches('/')
        .rsplit(['/', '#'])
        .next()
        .unwrap_or(iri)
}

fn is_web_iri(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

fn build(
    dataset: &str,
    window: &HashMap<String, Statements>,
    distributions: &[String],
    names: &HashMap<String, String>,
) -> Record {
    let empty = Statements::new();
    let st = window.get(dataset).unwrap_or(&empty);
    let reject = |reason: String| Record::Rejected {
        remote_id: Some(dataset.to_string()),
        record: dataset.to_string(),
        reason,
    };
    if objects(st, ADMS_STATUS)
        .any(|o| matches!(o, Obj::Iri(i) if last_segment(i).eq_ignore_ascii_case("withdrawn")))
    {
        return Record::Withdrawn {
            remote_id: dataset.to_string(),
        };
    }
    if st.is_empty() {
        return reject("the feed lists it but says nothing about it".into());
    }
    let Some(title) = text(st, &format!("{DCT}title")).filter(|t| !t.is_empty()) else {
        return reject("no dct:title".into());
    };
    if title.chars().count() > MAX_TITLE {
        return reject(format!("dct:title is longer than {MAX_TITLE} characters"));
    }
    let description = text(st, &format!("{DCT}description")).unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION {
        return reject(format!(
            "dct:description is longer than {MAX_DESCRIPTION} characters"
        ));
    }
    let mut keywords: Vec<String> = Vec::new();
    for o in objects(st, &format!("{DCAT}keyword")) {
        if let Obj::Lit { value, .. } = o {
            let k = value.trim().to_string();
            if !k.is_empty() && !keywords.iter().any(|have| have.eq_ignore_ascii_case(&k)) {
                keywords.push(k);
            }
        }
    }
    if keywords.len() > MAX_KEYWORDS {
        return reject(format!("more than {MAX_KEYWORDS} keywords"));
    }
    let mut themes: Vec<String> = objects(st, &format!("{DCAT}theme"))
        .filter_map(|o| match o {
            Obj::Iri(i) => Some(last_segment(i).to_string()),
            _ => None,
        })
        .collect();
    themes.sort();
    themes.dedup();
    themes.truncate(MAX_KEYWORDS);
    let name_of = |o: &Obj| -> Option<String> {
        match o {
            Obj::Lit { value, .. } => Some(value.clone()),
            Obj::Iri(i) => Some(
                names
                    .get(i)
                    .cloned()
                    .or_else(|| window.get(i).and_then(|s| text(s, FOAF_NAME)))
                    .unwrap_or_else(|| i.clone()),
            ),
            Obj::Blank(b) => window
                .get(b)
                .and_then(|s| text(s, FOAF_NAME).or_else(|| text(s, SKOS_PREF_LABEL))),
        }
    };
    let publisher = objects(st, &format!("{DCT}publisher")).find_map(name_of);
    let landing_page = objects(st, &format!("{DCAT}landingPage"))
        .find_map(|o| match o {
            Obj::Iri(i) if is_web_iri(i) => Some(i.clone()),
            _ => None,
        })
        .or_else(|| is_web_iri(dataset).then(|| dataset.to_string()));
    let licence_of = |s: &Statements| {
        objects(s, &format!("{DCT}license")).find_map(|o| match o {
            Obj::Iri(i) => Some(i.clone()),
            Obj::Lit { value, .. } => Some(value.clone()),
            Obj::Blank(b) => window
                .get(b)
                .and_then(|s| text(s, &format!("{DCT}title")).or_else(|| text(s, SKOS_PREF_LABEL))),
        })
    };
    let mut licence = licence_of(st);
    let access_right = objects(st, &format!("{DCT}accessRights")).find_map(|o| match o {
        Obj::Iri(i) => AccessRight::from_iri(i),
        _ => None,
    });
    let mut formats: Vec<String> = Vec::new();
    let mut add_format = |f: String| {
        let f = f.trim().to_ascii_uppercase();
        if !f.is_empty() && !formats.contains(&f) && formats.len() < MAX_FORMATS {
            formats.push(f);
        }
    };
    let distribution = format!("{DCAT}distribution");
    let blank_dists: Vec<&String> = objects(st, &distribution)
        .filter_map(|o| match o {
            Obj::Blank(b) => Some(b),
            _ => None,
        })
        .collect();
    for d in distributions.iter().chain(blank_dists) {
        let Some(ds) = window.get(d) else { continue };
        if licence.is_none() {
            licence = licence_of(ds);
        }
        let format = objects(ds, &format!("{DCT}format"))
            .find_map(|o| match o {
                Obj::Iri(i) => Some(last_segment(i).to_string()),
                Obj::Lit { value, .. } => Some(value.clone()),
                Obj::Blank(_) => None,
            })
            .or_else(|| {
                objects(ds, &format!("{DCAT}mediaType")).find_map(|o| match o {
                    Obj::Iri(i) => Some(last_segment(i).to_string()),
                    Obj::Lit { value, .. } => Some(last_segment(value).to_string()),
                    Obj::Blank(_) => None,
                })
            });
        if let Some(f) = format {
            add_format(f);
        }
    }
    let modified = objects(st, &format!("{DCT}modified")).find_map(|o| match o {
        Obj::Lit { value, .. } => Some(value.clone()),
        _ => None,
    });
    Record::Entry(Box::new(FederatedEntry {
        id: String::new(),
        source: FederatedSource {
            catalogue_id: String::new(),
            catalogue_name: String::new(),
            remote_id: dataset.to_string(),
            harvested_at: String::new(),
        },
        title,
        description,
        keywords,
        publisher,
        landing_page,
        licence,
        access_right,
        formats,
        themes,
        modified,
    }))
}

/// Whether an entry is within the limits every federated entry keeps to:
/// else the reason, naming the field.
pub fn check_entry(e: &FederatedEntry) -> Result<(), String> {
    let long = |s: &str, max: usize| s.chars().count() > max;
    if long(&e.source.remote_id, MAX_REMOTE_ID) {
        return Err(format!(
            "its IRI or name is longer than {MAX_REMOTE_ID} characters"
        ));
    }
    if long(&e.title, MAX_TITLE) {
        return Err(format!("the title is longer than {MAX_TITLE} characters"));
    }
    if long(&e.description, MAX_DESCRIPTION) {
        return Err(format!(
            "the description is longer than {MAX_DESCRIPTION} characters"
        ));
    }
    for (field, list, most) in [
        ("keywords", &e.keywords, MAX_KEYWORDS),
        ("themes", &e.themes, MAX_KEYWORDS),
        ("formats", &e.formats, MAX_FORMATS),
    ] {
        if list.len() > most {
            return Err(format!("more than {most} {field}"));
        }
        if let Some(v) = list.iter().find(|v| long(v, MAX_SHORT)) {
            let shown: String = v.chars().take(40).collect();
            return Err(format!(
                "one of its {field} ('{shown}…') is longer than {MAX_SHORT} characters"
            ));
        }
    }
    for (field, value, most) in [
        ("publisher", &e.publisher, MAX_SHORT),
        ("licence", &e.licence, MAX_REMOTE_ID),
        ("landing page", &e.landing_page, MAX_REMOTE_ID),
        ("modified", &e.modified, 64),
    ] {
        if value.as_deref().is_some_and(|v| long(v, most)) {
            return Err(format!("its {field} is longer than {most} characters"));
        }
    }
    Ok(())
}

/// One page of CKAN's `package_search`: the total count and the records.
pub fn ckan_page(site: &str, body: &[u8]) -> Result<(u64, Vec<Record>), String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("package_search did not answer JSON: {e}"))?;
    if v.get("success").and_then(|s| s.as_bool()) != Some(true) {
        return Err(format!(
            "package_search did not succeed: {}",
            v.get("error").map(|e| e.to_string()).unwrap_or_default()
        ));
    }
    let result = v
        .get("result")
        .ok_or("package_search's answer has no result")?;
    let count = result.get("count").and_then(|c| c.as_u64()).unwrap_or(0);
    let results = result
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or("package_search's result has no results list")?;
    let site = site.trim_end_matches('/');
    let records = results
        .iter()
        .enumerate()
        .map(|(i, p)| ckan_record(site, i, p))
        .collect();
    Ok((count, records))
}

fn ckan_record(site: &str, index: usize, p: &serde_json::Value) -> Record {
    let s = |k: &str| {
        p.get(k)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let Some(name) = s("name").or_else(|| s("id")) else {
        return Record::Rejected {
            remote_id: None,
            record: format!("package {} of its page", index + 1),
            reason: "no name or id".into(),
        };
    };
    let reject = |reason: String| Record::Rejected {
        remote_id: Some(name.clone()),
        record: name.clone(),
        reason,
    };
    let extra = |key: &str| {
        p.get("extras")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .find(|e| e.get("key").and_then(|k| k.as_str()) == Some(key))
            .and_then(|e| e.get("value").and_then(|v| v.as_str()))
    };
    // Deleted, private, or (as CityTrust's CKAN API says) withdrawn: not harvested.
    if s("state").is_some_and(|st| st != "active")
        || p.get("private").and_then(|v| v.as_bool()) == Some(true)
        || extra("publication_status") == Some("withdrawn")
    {
        return Record::Withdrawn { remote_id: name };
    }
    let title = s("title").unwrap_or_else(|| name.clone());
    if title.chars().count() > MAX_TITLE {
        return reject(format!("title is longer than {MAX_TITLE} characters"));
    }
    let description = s("notes").unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION {
        return reject(format!(
            "notes are longer than {MAX_DESCRIPTION} characters"
        ));
    }
    let keywords: Vec<String> = p
        .get("tags")
        .and_then(|t| t.as_array())
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.get("display_name").or_else(|| t.get("name")))
                .filter_map(|n| n.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if keywords.len() > MAX_KEYWORDS {
        return reject(format!("more than {MAX_KEYWORDS} tags"));
    }
    let mut formats: Vec<String> = Vec::new();
    for r in p
        .get("resources")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(f) = r.get("format").and_then(|f| f.as_str()) {
            let f = f.trim().to_ascii_uppercase();
            if !f.is_empty() && !formats.contains(&f) && formats.len() < MAX_FORMATS {
                formats.push(f);
            }
        }
    }
    let publisher = p
        .get("organization")
        .and_then(|o| o.get("title").or_else(|| o.get("name")))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .or_else(|| s("author"));
    let themes = p
        .get("groups")
        .and_then(|g| g.as_array())
        .map(|g| {
            g.iter()
                .filter_map(|g| g.get("name").and_then(|n| n.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let access_right = extra("access_rights").and_then(AccessRight::from_iri);
    Record::Entry(Box::new(FederatedEntry {
        id: String::new(),
        source: FederatedSource {
            catalogue_id: String::new(),
            catalogue_name: String::new(),
            remote_id: name.clone(),
            harvested_at: String::new(),
        },
        title,
        description,
        keywords,
        publisher,
        landing_page: Some(format!("{site}/dataset/{name}")),
        licence: s("license_url").or_else(|| s("license_id")),
        access_right,
        formats,
        themes,
        modified: s("metadata_modified"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(ttl: &str, chunk: usize) -> Result<Vec<Record>, String> {
        let mut feed = DcatFeed::new("https://remote.example/catalog.ttl");
        let mut out = Vec::new();
        for c in ttl.as_bytes().chunks(chunk) {
            feed.push(c, &mut out)?;
        }
        feed.finish(&mut out)?;
        Ok(out)
    }

    const FEED: &str = r#"
@prefix dcat: <http://www.w3.org/ns/dcat#> .
@prefix dct: <http://purl.org/dc/terms/> .
@prefix foaf: <http://xmlns.com/foaf/0.1/> .
@prefix adms: <http://www.w3.org/ns/adms#> .
<https://remote.example/org/council> a foaf:Agent ; foaf:name "City Council" .
<https://remote.example/catalog> a dcat:Catalog ; dcat:dataset <https://remote.example/d/trees> .
<https://remote.example/d/trees> a dcat:Dataset ;
  dct:title "Street trees"@en, "Arbres"@ca ;
  dct:description "Every street tree." ;
  dcat:keyword "trees", "Trees", "green" ;
  dcat:theme <http://publications.europa.eu/resource/authority/data-theme/ENVI> ;
  dct:publisher <https://remote.example/org/council> ;
  dct:accessRights <http://publications.europa.eu/resource/authority/access-right/PUBLIC> ;
  dcat:distribution <https://remote.example/d/trees/csv> ;
  dct:modified "2026-11-01T10:00:00Z" .
<https://remote.example/d/trees/csv> a dcat:Distribution ;
  dct:format <http://publications.europa.eu/resource/authority/file-type/CSV> ;
  dct:license <https://creativecommons.org/licenses/by/4.0/> .
<https://remote.example/catalog> dcat:dataset <https://remote.example/d/notitle> .
<https://remote.example/d/notitle> a dcat:Dataset ; dct:description "No title" .
<https://remote.example/d/gone> a dcat:Dataset ; dct:title "Gone" ;
  adms:status <http://publications.europa.eu/resource/authority/dataset-status/WITHDRAWN> .
<https://remote.example/d/blank> a dcat:Dataset ; dct:title "Blank publisher" ;
  dct:publisher [ a foaf:Organization ; foaf:name "Transit Agency" ] ;
  dcat:distribution [ a dcat:Distribution ; dcat:mediaType <https://www.iana.org/assignments/media-types/application/json> ] .
"#;

    #[test]
    fn datasets_come_together_whatever_the_chunking() {
        let whole = read(FEED, FEED.len()).unwrap();
        for chunk in [1, 7, 64] {
            assert_eq!(read(FEED, chunk).unwrap(), whole, "chunk {chunk}");
        }
        assert_eq!(whole.len(), 4, "{whole:#?}");
        let Record::Entry(trees) = &whole[0] else {
            panic!("{:?}", whole[0])
        };
        assert_eq!(trees.title, "Street trees");
        assert_eq!(trees.keywords, ["trees", "green"]);
        assert_eq!(trees.themes, ["ENVI"]);
        assert_eq!(trees.publisher.as_deref(), Some("City Council"));
        assert_eq!(trees.formats, ["CSV"]);
        assert_eq!(
            trees.licence.as_deref(),
            Some("https://creativecommons.org/licenses/by/4.0/")
        );
        assert_eq!(trees.access_right, Some(AccessRight::Public));
        assert!(matches!(&whole[1], Record::Rejected { reason, .. } if reason == "no dct:title"));
        assert!(
            matches!(&whole[2], Record::Withdrawn { remote_id } if remote_id.ends_with("/gone"))
        );
        let Record::Entry(blank) = &whole[3] else {
            panic!("{:?}", whole[3])
        };
        assert_eq!(blank.publisher.as_deref(), Some("Transit Agency"));
        assert_eq!(blank.formats, ["JSON"]);
    }

    #[test]
    fn distributions_listed_before_their_dataset_are_joined() {
        let ttl = r#"
<https://r.example/dist> a <http://www.w3.org/ns/dcat#Distribution> ;
  <http://purl.org/dc/terms/format> "GeoJSON" .
<https://r.example/d> a <http://www.w3.org/ns/dcat#Dataset> ;
  <http://purl.org/dc/terms/title> "Late" ;
  <http://www.w3.org/ns/dcat#distribution> <https://r.example/dist> .
"#;
        let out = read(ttl, 5).unwrap();
        let [Record::Entry(e)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(e.formats, ["GEOJSON"]);
    }

    #[test]
    fn untyped_and_shared_distributions_are_joined() {
        let ttl = r#"
<https://r.example/early> <http://purl.org/dc/terms/format> "CSV" .
<https://r.example/a> a <http://www.w3.org/ns/dcat#Dataset> ;
  <http://purl.org/dc/terms/title> "A" ;
  <http://www.w3.org/ns/dcat#distribution> <https://r.example/early>, <https://r.example/shared> .
<https://r.example/shared> <http://www.w3.org/ns/dcat#mediaType> <https://www.iana.org/assignments/media-types/application/json> .
<https://r.example/b> a <http://www.w3.org/ns/dcat#Dataset> ;
  <http://purl.org/dc/terms/title> "B" ;
  <http://www.w3.org/ns/dcat#distribution> <https://r.example/shared> .
<https://r.example/c> a <http://www.w3.org/ns/dcat#Dataset> ; <http://purl.org/dc/terms/title> "C" .
"#;
        for chunk in [1, 13, ttl.len()] {
            let out = read(ttl, chunk).unwrap();
            let formats: Vec<(String, Vec<String>)> = out
                .iter()
                .map(|r| match r {
                    Record::Entry(e) => (e.title.clone(), e.formats.clone()),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                formats,
                [
                    ("A".to_string(), vec!["CSV".to_string(), "JSON".to_string()]),
                    ("B".to_string(), vec!["JSON".to_string()]),
                    ("C".to_string(), vec![]),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_broken_feed_names_the_line_and_column() {
        let err = read("<https://r.example/d> a <http://www.w3.org/ns/dcat#Dataset> ;\n  <http://purl.org/dc/terms/title> \"open", 16)
            .unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn memory_follows_the_window_not_the_feed() {
        let mut ttl = String::new();
        for i in 0..5000 {
            ttl.push_str(&format!(
                "<https://r.example/catalog> <http://www.w3.org/ns/dcat#dataset> <https://r.example/d/{i}> .\n\
                 <https://r.example/d/{i}> a <http://www.w3.org/ns/dcat#Dataset> ; <http://purl.org/dc/terms/title> \"D{i}\" ; \
                 <http://www.w3.org/ns/dcat#distribution> <https://r.example/d/{i}/csv> .\n\
                 <https://r.example/d/{i}/csv> a <http://www.w3.org/ns/dcat#Distribution> ; <http://purl.org/dc/terms/format> \"CSV\" .\n"
            ));
        }
        let mut feed = DcatFeed::new("https://r.example/");
        let mut out = Vec::new();
        let mut most = 0;
        for c in ttl.as_bytes().chunks(4096) {
            feed.push(c, &mut out).unwrap();
            most = most.max(feed.assembler.window.len() + feed.assembler.pending.len());
        }
        feed.finish(&mut out).unwrap();
        assert_eq!(out.len(), 5000);
        assert!(
            out.iter()
                .all(|r| matches!(r, Record::Entry(e) if e.formats == ["CSV"]))
        );
        assert!(most < 20, "the window grew to {most}");
    }

    #[test]
    fn a_feed_that_never_completes_a_dataset_is_refused_not_followed() {
        let mut feed = DcatFeed::new("https://r.example/");
        let mut out = Vec::new();
        feed.push(
            b"<https://r.example/d> a <http://www.w3.org/ns/dcat#Dataset> .\n",
            &mut out,
        )
        .unwrap();
        // A distribution it lists that never arrives, and statements about it without end.
        feed.push(b"<https://r.example/d> <http://www.w3.org/ns/dcat#distribution> <https://r.example/never> .\n", &mut out).unwrap();
        let mut err = None;
        for i in 0..(MAX_WINDOW_STATEMENTS / 1000 + 2) {
            let mut chunk = String::new();
            for j in 0..1000 {
                chunk.push_str(&format!(
                    "<https://r.example/d> <http://www.w3.org/ns/dcat#keyword> \"k{i}-{j}\" .\n"
                ));
            }
            if let Err(e) = feed.push(chunk.as_bytes(), &mut out) {
                err = Some(e);
                break;
            }
        }
        assert!(err.is_some_and(|e| e.contains("statements")));
    }

    fn blocking(syntax: FeedSyntax, doc: &str) -> Result<Vec<Record>, String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        parse_blocking(
            syntax,
            "https://r.example/",
            std::io::Cursor::new(doc.to_string()),
            &tx,
        );
        drop(tx);
        let mut out = Vec::new();
        while let Some(batch) = rx.blocking_recv() {
            out.extend(batch?);
        }
        Ok(out)
    }

    #[test]
    fn json_ld_and_rdf_xml_feeds_give_the_same_records_as_turtle() {
        let jsonld = r#"{"@context": {"dcat": "http://www.w3.org/ns/dcat#", "dct": "http://purl.org/dc/terms/"},
          "@graph": [
            {"@id": "https://remote.example/d/trees", "@type": "dcat:Dataset",
             "dct:title": {"@value": "Street trees", "@language": "en"},
             "dcat:keyword": ["trees", "green"],
             "dcat:distribution": {"@id": "https://remote.example/d/trees/csv"}},
            {"@id": "https://remote.example/d/trees/csv", "@type": "dcat:Distribution",
             "dct:format": {"@id": "http://publications.europa.eu/resource/authority/file-type/CSV"}}
          ]}"#;
        let rdfxml = r#"<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:dcat="http://www.w3.org/ns/dcat#" xmlns:dct="http://purl.org/dc/terms/">
  <dcat:Dataset rdf:about="https://remote.example/d/trees">
    <dct:title xml:lang="en">Street trees</dct:title>
    <dcat:keyword>trees</dcat:keyword>
    <dcat:keyword>green</dcat:keyword>
    <dcat:distribution>
      <dcat:Distribution rdf:about="https://remote.example/d/trees/csv">
        <dct:format rdf:resource="http://publications.europa.eu/resource/authority/file-type/CSV"/>
      </dcat:Distribution>
    </dcat:distribution>
  </dcat:Dataset>
</rdf:RDF>"#;
        for (syntax, doc) in [(FeedSyntax::JsonLd, jsonld), (FeedSyntax::RdfXml, rdfxml)] {
            let out = blocking(syntax, doc).unwrap();
            let [Record::Entry(e)] = out.as_slice() else {
                panic!("{syntax:?}: {out:?}")
            };
            assert_eq!(e.title, "Street trees", "{syntax:?}");
            let mut k = e.keywords.clone();
            k.sort();
            assert_eq!(k, ["green", "trees"], "{syntax:?}");
            assert_eq!(e.formats, ["CSV"], "{syntax:?}");
        }
        // A remote context is not fetched: the feed is refused, naming it.
        let err = blocking(
            FeedSyntax::JsonLd,
            r#"{"@context": "https://contexts.example/dcat.jsonld", "@id": "https://r.example/d"}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("https://contexts.example/dcat.jsonld"),
            "{err}"
        );
        assert!(blocking(FeedSyntax::RdfXml, "<rdf:RDF").is_err());
        assert_eq!(
            FeedSyntax::of(Some("application/ld+json; charset=utf-8"), "https://x/c"),
            FeedSyntax::JsonLd
        );
        assert_eq!(
            FeedSyntax::of(None, "https://x/catalog.rdf"),
            FeedSyntax::RdfXml
        );
        assert_eq!(
            FeedSyntax::of(Some("text/plain"), "https://x/catalog"),
            FeedSyntax::Turtle
        );
    }

    #[test]
    fn datasets_without_an_iri_are_rejected_and_overlong_fields_named() {
        let out = read(
            "_:d a <http://www.w3.org/ns/dcat#Dataset> ; <http://purl.org/dc/terms/title> \"Anonymous\" .\n",
            8,
        )
        .unwrap();
        assert!(
            matches!(&out[..], [Record::Rejected { remote_id: None, reason, .. }] if reason.contains("IRI")),
            "{out:?}"
        );
        let ttl = format!(
            "<https://r.example/d> a <http://www.w3.org/ns/dcat#Dataset> ; <http://purl.org/dc/terms/title> \"T\" ; <http://www.w3.org/ns/dcat#keyword> \"{}\" .\n",
            "k".repeat(600)
        );
        let out = read(&ttl, 64).unwrap();
        let [Record::Entry(e)] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(check_entry(e).unwrap_err().contains("keywords"));
    }

    #[test]
    fn ckan_pages_become_records() {
        let body = serde_json::json!({"success": true, "result": {"count": 3, "results": [
            {"name": "trees", "title": "Trees", "notes": "All", "tags": [{"name": "green"}],
             "organization": {"title": "Parks"}, "resources": [{"format": "csv"}], "state": "active",
             "license_id": "cc-by"},
            {"name": "old", "title": "Old", "state": "deleted"},
            {"title": "nameless"}
        ]}});
        let (count, records) =
            ckan_page("https://ckan.example/", body.to_string().as_bytes()).unwrap();
        assert_eq!(count, 3);
        let Record::Entry(e) = &records[0] else {
            panic!("{:?}", records[0])
        };
        assert_eq!(
            e.landing_page.as_deref(),
            Some("https://ckan.example/dataset/trees")
        );
        assert_eq!(e.formats, ["CSV"]);
        assert!(matches!(&records[1], Record::Withdrawn { .. }));
        assert!(matches!(
            &records[2],
            Record::Rejected {
                remote_id: None,
                ..
            }
        ));
        assert!(ckan_page("https://x", b"{\"success\": false}").is_err());
    }
}
