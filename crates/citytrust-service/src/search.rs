//! The catalogue's search index: tantivy does tokenising, stemming and BM25
//! ranking over titles, keywords, descriptions and organisation names; facet
//! filters, facet counts, sorting and paging run over the matches in memory.
//!
//! The index is a cache of the store, rebuilt at start and whenever the
//! store's catalogue revision moves on without this node (another node wrote);
//! this node's own writes update it in place. Nothing is decided from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use citytrust_model::account::Organization;
use citytrust_model::catalogue::{Dataset, Spectrum, Theme};
use serde::Serialize;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::{Query, QueryParser};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentOrdinal, SegmentReader,
    TantivyDocument, Term,
};
use utoipa::ToSchema;

use crate::{Result, ServiceError};

pub const MAX_PER_PAGE: usize = 100;

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Best match first (title order when there is no query text).
    #[default]
    Relevance,
    Title,
    /// Most recently changed first.
    Updated,
}

/// A catalogue search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub text: String,
    pub theme: Option<Theme>,
    pub spectrum: Option<Spectrum>,
    pub organization: Option<String>,
    pub format: Option<String>,
    pub personal_data: Option<bool>,
    pub sort: SortOrder,
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
    /// Only entries carrying every one of these keywords (exact, ignoring case).
    pub keywords: Vec<String>,
    /// Only entries under this licence id (exact, ignoring case).
    pub licence: Option<String>,
    /// Only the entry with this id.
    pub id: Option<String>,
    /// Count keyword and licence facets too (the CKAN API asks for them; the
    /// portal does not, and with many entries the keyword list is long).
    pub count_keywords: bool,
    /// An offset and a count (up to [`MAX_WINDOW`], zero allowed) instead of
    /// `page` and `per_page`.
    pub window: Option<(usize, usize)>,
}

/// The most results one `window` returns.
pub const MAX_WINDOW: usize = 1000;

/// One value of a facet and how many results carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FacetCount {
    pub value: String,
    pub label: String,
    pub count: usize,
}

/// Counts per facet value. Each facet is counted under every *other* active
/// filter, so choosing a value never hides its alternatives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Facets {
    pub theme: Vec<FacetCount>,
    pub spectrum: Vec<FacetCount>,
    pub organization: Vec<FacetCount>,
    pub format: Vec<FacetCount>,
    pub personal_data: Vec<FacetCount>,
    /// Only when asked for (`count_keywords`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keyword: Vec<FacetCount>,
    /// Only when asked for (`count_keywords`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub licence: Vec<FacetCount>,
}

#[derive(Debug, Clone)]
pub struct SearchResults {
    pub items: Vec<Dataset>,
    pub total: usize,
    pub facets: Facets,
}

struct Entry {
    dataset: Dataset,
    owner_name: String,
    title_key: String,
    format_key: Option<String>,
    keyword_keys: Vec<String>,
}

#[derive(Default)]
struct Catalogue {
    entries: HashMap<u64, Arc<Entry>>,
    ord_by_id: HashMap<String, u64>,
    next_ord: u64,
    revision: Option<i64>,
}

struct Fields {
    ord: Field,
    title: Field,
    keywords: Field,
    description: Field,
    extra: Field,
}

pub struct CatalogueIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    parser: QueryParser,
    catalogue: RwLock<Catalogue>,
}

impl CatalogueIndex {
    pub fn new() -> Result<CatalogueIndex> {
        let mut builder = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            ord: builder.add_u64_field("ord", INDEXED | FAST | STORED),
            title: builder.add_text_field("title", text.clone()),
            keywords: builder.add_text_field("keywords", text.clone()),
            description: builder.add_text_field("description", text.clone()),
            extra: builder.add_text_field("extra", text),
        };
        let index = Index::create_in_ram(builder.build());
        let writer = index.writer_with_num_threads(1, 15_000_000)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let mut parser = QueryParser::for_index(
            &index,
            vec![
                fields.title,
                fields.keywords,
                fields.description,
                fields.extra,
            ],
        );
        parser.set_conjunction_by_default();
        parser.set_field_boost(fields.title, 3.0);
        parser.set_field_boost(fields.keywords, 2.0);
        Ok(CatalogueIndex {
            reader,
            writer: Mutex::new(writer),
            fields,
            parser,
            catalogue: RwLock::new(Catalogue::default()),
        })
    }

    pub fn revision(&self) -> Option<i64> {
        self.catalogue.read().ok().and_then(|c| c.revision)
    }

    pub fn len(&self) -> usize {
        self.catalogue.read().map(|c| c.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replace the whole index with `datasets`.
    pub fn rebuild(
        &self,
        datasets: Vec<Dataset>,
        organizations: &[Organization],
        revision: i64,
    ) -> Result<()> {
        let names: HashMap<&str, &str> = organizations
            .iter()
            .map(|o| (o.id.as_str(), o.name.as_str()))
            .collect();
        let mut writer = self.writer.lock().map_err(|_| poisoned())?;
        let mut catalogue = self.catalogue.write().map_err(|_| poisoned())?;
        writer.delete_all_documents()?;
        *catalogue = Catalogue::default();
        for d in datasets {
            let owner = names
                .get(d.metadata.owner_organization_id.as_str())
                .map(|s| s.to_string());
            let ord = catalogue.next_ord;
            catalogue.next_ord += 1;
            let entry = self.add(&mut writer, ord, d, owner)?;
            catalogue.ord_by_id.insert(entry.dataset.id.clone(), ord);
            catalogue.entries.insert(ord, entry);
        }
        writer.commit()?;
        self.reader.reload()?;
        catalogue.revision = Some(revision);
        tracing::debug!(
            datasets = catalogue.entries.len(),
            revision,
            "search index rebuilt"
        );
        Ok(())
    }

    /// Add or replace one dataset.
    pub fn upsert(
        &self,
        dataset: Dataset,
        owner_name: Option<String>,
        revision: i64,
    ) -> Result<()> {
        let mut writer = self.writer.lock().map_err(|_| poisoned())?;
        let mut catalogue = self.catalogue.write().map_err(|_| poisoned())?;
        let ord = match catalogue.ord_by_id.get(&dataset.id) {
            Some(&ord) => {
                writer.delete_term(Term::from_field_u64(self.fields.ord, ord));
                ord
            }
            None => {
                let ord = catalogue.next_ord;
                catalogue.next_ord += 1;
                catalogue.ord_by_id.insert(dataset.id.clone(), ord);
                ord
            }
        };
        let entry = self.add(&mut writer, ord, dataset, owner_name)?;
        catalogue.entries.insert(ord, entry);
        writer.commit()?;
        self.reader.reload()?;
        // Our own write moves the revision on by one; anything else means another writer was here too.
        if catalogue.revision.is_some_and(|r| r + 1 == revision) {
            catalogue.revision = Some(revision);
        } else {
            catalogue.revision = None;
        }
        Ok(())
    }

    fn add(
        &self,
        writer: &mut IndexWriter,
        ord: u64,
        d: Dataset,
        owner_name: Option<String>,
    ) -> Result<Arc<Entry>> {
        let m = &d.metadata;
        let owner_name = owner_name.unwrap_or_else(|| m.owner_organization_id.clone());
        let mut extra = format!("{} {}", owner_name, m.owner_organization_id);
        for t in &m.themes {
            extra.push(' ');
            extra.push_str(t.as_str());
        }
        if let Some(f) = &m.format {
            extra.push(' ');
            extra.push_str(f);
        }
        for s in &m.shared_identifiers {
            extra.push(' ');
            extra.push_str(s);
        }
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.fields.ord, ord);
        doc.add_text(self.fields.title, &m.title);
        doc.add_text(self.fields.keywords, m.keywords.join(" "));
        doc.add_text(self.fields.description, &m.description);
        doc.add_text(self.fields.extra, &extra);
        writer.add_document(doc)?;
        Ok(Arc::new(Entry {
            title_key: m.title.to_lowercase(),
            format_key: m.format.as_ref().map(|f| f.to_lowercase()),
            keyword_keys: m.keywords.iter().map(|k| k.to_lowercase()).collect(),
            owner_name,
            dataset: d,
        }))
    }

    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults> {
        let text = q.text.trim();
        let catalogue = self.catalogue.read().map_err(|_| poisoned())?;
        let matches: Vec<(f32, Arc<Entry>)> = if text.is_empty() {
            catalogue
                .entries
                .values()
                .map(|e| (0.0, e.clone()))
                .collect()
        } else {
            let (query, _ignored_syntax_errors) = self.parser.parse_query_lenient(text);
            let query: Box<dyn Query> = query;
            let searcher = self.reader.searcher();
            searcher
                .search(&query, &AllScores)?
                .into_iter()
                .filter_map(|(score, ord)| catalogue.entries.get(&ord).map(|e| (score, e.clone())))
                .collect()
        };
        drop(catalogue);

        let mut facets = FacetTally::default();
        let mut keyword_counts: HashMap<&str, usize> = HashMap::new();
        let mut licence_counts: HashMap<&str, (&str, usize)> = HashMap::new();
        let wanted_keywords: Vec<String> = q.keywords.iter().map(|k| k.to_lowercase()).collect();
        let mut hits: Vec<(f32, Arc<Entry>)> = Vec::new();
        for (score, e) in &matches {
            let m = &e.dataset.metadata;
            if q.id.as_deref().is_some_and(|id| id != e.dataset.id) {
                continue;
            }
            let pass_keywords = wanted_keywords
                .iter()
                .all(|w| e.keyword_keys.iter().any(|k| k == w));
            let pass_licence = q.licence.as_deref().is_none_or(|l| {
                m.licence
                    .as_ref()
                    .is_some_and(|have| have.id.eq_ignore_ascii_case(l))
            });
            if !(pass_keywords && pass_licence) {
                continue;
            }
            let pass_theme = q.theme.is_none_or(|t| m.themes.contains(&t));
            let pass_spectrum = q.spectrum.is_none_or(|s| m.spectrum == s);
            let pass_org = q
                .organization
                .as_deref()
                .is_none_or(|o| m.owner_organization_id == o);
            let pass_format = q
                .format
                .as_deref()
                .is_none_or(|f| e.format_key.as_deref() == Some(&f.to_lowercase()));
            let pass_personal = q.personal_data.is_none_or(|p| m.personal_data == p);
            let passes = [
                pass_theme,
                pass_spectrum,
                pass_org,
                pass_format,
                pass_personal,
            ];
            let all_but = |i: usize| passes.iter().enumerate().all(|(j, p)| j == i || *p);
            if all_but(0) {
                for t in &m.themes {
                    facets
                        .theme
                        .entry(t.as_str().to_string())
                        .or_insert_with(|| (t.as_str().to_string(), 0))
                        .1 += 1;
                }
            }
            if all_but(1) {
                let s = m.spectrum;
                facets
                    .spectrum
                    .entry(s.as_str().to_string())
                    .or_insert_with(|| (s.label().to_string(), 0))
                    .1 += 1;
            }
            if all_but(2) {
                facets
                    .organization
                    .entry(m.owner_organization_id.clone())
                    .or_insert_with(|| (e.owner_name.clone(), 0))
                    .1 += 1;
            }
            if all_but(3)
                && let (Some(key), Some(label)) = (&e.format_key, &m.format)
            {
                facets
                    .format
                    .entry(key.clone())
                    .or_insert_with(|| (label.clone(), 0))
                    .1 += 1;
            }
            if all_but(4) {
                let (v, l) = if m.personal_data {
                    ("true", "Personal data")
                } else {
                    ("false", "No personal data")
                };
                facets
                    .personal_data
                    .entry(v.to_string())
                    .or_insert_with(|| (l.to_string(), 0))
                    .1 += 1;
            }
            if passes.iter().all(|p| *p) {
                if q.count_keywords {
                    for k in &m.keywords {
                        *keyword_counts.entry(k.as_str()).or_default() += 1;
                    }
                    if let Some(l) = &m.licence {
                        licence_counts
                            .entry(l.id.as_str())
                            .or_insert((l.title.as_str(), 0))
                            .1 += 1;
                    }
                }
                hits.push((*score, e.clone()));
            }
        }
        let mut facets = facets.finish();
        if q.count_keywords {
            facets.keyword = keyword_counts
                .into_iter()
                .map(|(k, count)| FacetCount {
                    value: k.to_string(),
                    label: k.to_string(),
                    count,
                })
                .collect();
            facets.licence = licence_counts
                .into_iter()
                .map(|(id, (title, count))| FacetCount {
                    value: id.to_string(),
                    label: title.to_string(),
                    count,
                })
                .collect();
            for list in [&mut facets.keyword, &mut facets.licence] {
                list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            }
        }

        let by_title = |a: &Arc<Entry>, b: &Arc<Entry>| {
            a.title_key
                .cmp(&b.title_key)
                .then(a.dataset.id.cmp(&b.dataset.id))
        };
        match q.sort {
            SortOrder::Relevance if !text.is_empty() => {
                hits.sort_by(|(sa, a), (sb, b)| sb.total_cmp(sa).then_with(|| by_title(a, b)))
            }
            SortOrder::Relevance | SortOrder::Title => {
                hits.sort_by(|(_, a), (_, b)| by_title(a, b))
            }
            SortOrder::Updated => hits.sort_by(|(_, a), (_, b)| {
                b.dataset
                    .updated_at
                    .cmp(&a.dataset.updated_at)
                    .then_with(|| by_title(a, b))
            }),
        }
        let (start, per_page) = match q.window {
            Some((offset, count)) => (offset, count.min(MAX_WINDOW)),
            None => {
                let per_page = q.per_page.clamp(1, MAX_PER_PAGE);
                (
                    q.page.max(1).saturating_sub(1).saturating_mul(per_page),
                    per_page,
                )
            }
        };
        let total = hits.len();
        let items = hits
            .into_iter()
            .skip(start)
            .take(per_page)
            .map(|(_, e)| e.dataset.clone())
            .collect();
        Ok(SearchResults {
            items,
            total,
            facets,
        })
    }
}

#[derive(Default)]
struct FacetTally {
    theme: BTreeMap<String, (String, usize)>,
    spectrum: BTreeMap<String, (String, usize)>,
    organization: BTreeMap<String, (String, usize)>,
    format: BTreeMap<String, (String, usize)>,
    personal_data: BTreeMap<String, (String, usize)>,
}

impl FacetTally {
    fn finish(self) -> Facets {
        fn sorted(m: BTreeMap<String, (String, usize)>) -> Vec<FacetCount> {
            let mut v: Vec<FacetCount> = m
                .into_iter()
                .map(|(value, (label, count))| FacetCount {
                    value,
                    label,
                    count,
                })
                .collect();
            v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
            v
        }
        Facets {
            theme: sorted(self.theme),
            spectrum: sorted(self.spectrum),
            organization: sorted(self.organization),
            format: sorted(self.format),
            personal_data: sorted(self.personal_data),
            keyword: Vec::new(),
            licence: Vec::new(),
        }
    }
}

fn poisoned() -> ServiceError {
    ServiceError::Internal("search index lock poisoned".into())
}

/// Collects every match with its score and catalogue ordinal.
struct AllScores;

struct SegmentScores {
    ords: Column<u64>,
    out: Vec<(f32, u64)>,
}

impl Collector for AllScores {
    type Fruit = Vec<(f32, u64)>;
    type Child = SegmentScores;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentScores> {
        Ok(SegmentScores {
            ords: reader.fast_fields().u64("ord")?,
            out: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Vec<(f32, u64)>>) -> tantivy::Result<Vec<(f32, u64)>> {
        Ok(fruits.concat())
    }
}

impl SegmentCollector for SegmentScores {
    type Fruit = Vec<(f32, u64)>;

    fn collect(&mut self, doc: DocId, score: Score) {
        if let Some(ord) = self.ords.first(doc) {
            self.out.push((score, ord));
        }
    }

    fn harvest(self) -> Vec<(f32, u64)> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citytrust_model::catalogue::DatasetInput;

    fn dataset(
        id: &str,
        title: &str,
        description: &str,
        spectrum: &str,
        themes: &[&str],
        format: &str,
    ) -> Dataset {
        let input: DatasetInput = serde_json::from_value(serde_json::json!({
            "title": title, "description": description, "owner_organization_id": "city",
            "spectrum": spectrum, "themes": themes, "format": format, "keywords": ["city"]
        }))
        .unwrap();
        let (_, metadata) = input.validate().unwrap();
        Dataset {
            id: id.into(),
            metadata,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            revision: 1,
        }
    }

    fn index() -> CatalogueIndex {
        let idx = CatalogueIndex::new().unwrap();
        idx.rebuild(
            vec![
                dataset(
                    "air",
                    "Air quality readings",
                    "Hourly NO2 and PM10 at stations",
                    "open",
                    &["environment"],
                    "CSV",
                ),
                dataset(
                    "energy",
                    "Building energy benchmarking",
                    "Energy use of large buildings",
                    "shared_specific",
                    &["energy", "buildings"],
                    "CSV",
                ),
                dataset(
                    "accidents",
                    "Traffic accidents",
                    "Accidents recorded by police",
                    "shared_group",
                    &["safety", "mobility"],
                    "CSV",
                ),
                dataset(
                    "bounds",
                    "District boundaries",
                    "Official district boundaries",
                    "open",
                    &["boundaries"],
                    "GeoJSON",
                ),
            ],
            &[],
            1,
        )
        .unwrap();
        idx
    }

    fn check(q: SearchQuery, expect_ids: &[&str]) -> SearchResults {
        let r = index()
            .search(&SearchQuery {
                per_page: 20,
                page: 1,
                ..q
            })
            .unwrap();
        let ids: Vec<&str> = r.items.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, expect_ids);
        assert_eq!(r.total, expect_ids.len());
        r
    }

    #[test]
    fn text_matches_with_stemming_and_ranks_title_first() {
        check(
            SearchQuery {
                text: "accident".into(),
                ..Default::default()
            },
            &["accidents"],
        );
        check(
            SearchQuery {
                text: "energy".into(),
                ..Default::default()
            },
            &["energy"],
        );
        check(
            SearchQuery {
                text: "district".into(),
                ..Default::default()
            },
            &["bounds"],
        );
        check(
            SearchQuery {
                text: "nothing-like-this".into(),
                ..Default::default()
            },
            &[],
        );
        check(
            SearchQuery {
                text: "AND OR ((".into(),
                ..Default::default()
            },
            &[],
        );
    }

    #[test]
    fn empty_query_lists_everything_by_title() {
        check(
            SearchQuery::default(),
            &["air", "energy", "bounds", "accidents"],
        );
    }

    #[test]
    fn facets_filter_and_count_the_other_filters() {
        let r = check(
            SearchQuery {
                spectrum: Some(Spectrum::Open),
                ..Default::default()
            },
            &["air", "bounds"],
        );
        // The spectrum facet ignores its own filter; the format facet honours it.
        assert_eq!(r.facets.spectrum.iter().map(|f| f.count).sum::<usize>(), 4);
        assert_eq!(
            r.facets
                .format
                .iter()
                .find(|f| f.value == "csv")
                .map(|f| f.count),
            Some(1)
        );
        check(
            SearchQuery {
                theme: Some(Theme::Energy),
                ..Default::default()
            },
            &["energy"],
        );
        check(
            SearchQuery {
                format: Some("geojson".into()),
                ..Default::default()
            },
            &["bounds"],
        );
        check(
            SearchQuery {
                personal_data: Some(true),
                ..Default::default()
            },
            &[],
        );
    }

    #[test]
    fn upsert_replaces_and_pages() {
        let idx = index();
        let mut d = dataset(
            "air",
            "Air pollution",
            "Hourly NO2",
            "closed",
            &["environment"],
            "CSV",
        );
        d.revision = 2;
        idx.upsert(d, None, 2).unwrap();
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.revision(), Some(2));
        let r = idx
            .search(&SearchQuery {
                text: "pollution".into(),
                page: 1,
                per_page: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.items[0].metadata.spectrum, Spectrum::Closed);
        let r = idx
            .search(&SearchQuery {
                text: "quality".into(),
                page: 1,
                per_page: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.total, 0, "old text is gone");
        let p2 = idx
            .search(&SearchQuery {
                page: 2,
                per_page: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((p2.total, p2.items.len()), (4, 1));
    }
}
