//! The catalogue as DCAT-AP 3.0 (R-PLT-3): `/catalog.ttl` and
//! `/catalog.jsonld` for the whole catalogue, `/datasets/{id}.ttl` and
//! `/datasets/{id}.jsonld` for one entry.
//!
//! Every entry is listed, closed ones too (their existence is public) — with
//! non-public access rights and no distribution. Open data's distributions
//! carry a download URL (the governed download path); other data's point at
//! the dataset page, which says how to ask for access, and at the API as the
//! access service. Only public figures appear (invariant 10): the latest
//! version's size, digest and quality shares, never values.
//!
//! The whole catalogue streams a page of entries at a time, so its memory
//! does not grow with the catalogue.

use std::collections::HashMap;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use citytrust_model::Dataset;
use citytrust_model::account::Organization;
use citytrust_model::catalogue::{
    PublicationStatus, Spectrum, Theme, UpdateFrequency, ValueChainRole,
};
use citytrust_service::interop::ContentSummary;

use crate::AppState;
use crate::error::ApiError;
use crate::rdf::{Node, Syntax, Term};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/catalog.ttl", get(catalog_turtle))
        .route("/catalog.jsonld", get(catalog_jsonld))
}

/// The NGSI-LD specification the stream API follows.
const NGSI_LD_SPEC: &str =
    "https://www.etsi.org/deliver/etsi_gs/CIM/001_099/009/01.08.01_60/gs_CIM009v010801p.pdf";

/// Entries rendered per page of the streamed catalogue.
const PAGE: usize = 200;

const EU: &str = "http://publications.europa.eu/resource/authority";
const IANA: &str = "http://www.iana.org/assignments/media-types";

/// The whole catalogue as DCAT-AP 3.0 in Turtle.
#[utoipa::path(get, path = "/catalog.ttl", tag = "catalogue",
    responses((status = 200, description = "dcat:Catalog with every dataset (streamed)", content_type = "text/turtle")))]
pub(crate) async fn catalog_turtle(State(state): State<AppState>, headers: HeaderMap) -> Response {
    catalog(state, &headers, Syntax::Turtle).await
}

/// The whole catalogue as DCAT-AP 3.0 in JSON-LD.
#[utoipa::path(get, path = "/catalog.jsonld", tag = "catalogue",
    responses((status = 200, description = "dcat:Catalog with every dataset (streamed)", body = serde_json::Value, content_type = "application/ld+json")))]
pub(crate) async fn catalog_jsonld(State(state): State<AppState>, headers: HeaderMap) -> Response {
    catalog(state, &headers, Syntax::JsonLd).await
}

/// The EU data theme a catalogue theme maps to.
pub(crate) fn eu_theme(t: Theme) -> (&'static str, &'static str) {
    match t {
        Theme::Energy => ("ENER", "Energy"),
        Theme::Buildings | Theme::Boundaries => ("REGI", "Regions and cities"),
        Theme::Mobility | Theme::Transport => ("TRAN", "Transport"),
        Theme::Health => ("HEAL", "Health"),
        Theme::Environment => ("ENVI", "Environment"),
        Theme::Population => ("SOCI", "Population and society"),
        Theme::Economy => ("ECON", "Economy and finance"),
        Theme::Government => ("GOVE", "Government and public sector"),
        Theme::Safety => ("JUST", "Justice, legal system and public safety"),
        Theme::Education | Theme::Culture => ("EDUC", "Education, culture and sport"),
        Theme::Technology => ("TECH", "Science and technology"),
    }
}

/// The EU access right of a place on the spectrum: open data is public,
/// shared data restricted (it needs a purpose and, mostly, an agreement),
/// closed data non-public.
pub(crate) fn access_right(s: Spectrum) -> (&'static str, &'static str) {
    let right = citytrust_model::federation::AccessRight::of(s);
    (right.code(), right.eu_label())
}

/// The EU dataset-status concept of a publication status (a harvester drops withdrawn entries).
fn status(s: PublicationStatus) -> (&'static str, &'static str) {
    match s {
        PublicationStatus::Planned => ("DEVELOP", "Under development"),
        PublicationStatus::Published => ("COMPLETED", "Completed"),
        PublicationStatus::Archived => ("DEPRECATED", "Deprecated"),
        PublicationStatus::Withdrawn => ("WITHDRAWN", "Withdrawn"),
    }
}

fn frequency(f: UpdateFrequency) -> (&'static str, &'static str) {
    match f {
        UpdateFrequency::Continuous => ("CONT", "continuous"),
        UpdateFrequency::Hourly => ("HOURLY", "hourly"),
        UpdateFrequency::Daily => ("DAILY", "daily"),
        UpdateFrequency::Weekly => ("WEEKLY", "weekly"),
        UpdateFrequency::Monthly => ("MONTHLY", "monthly"),
        UpdateFrequency::Quarterly => ("QUARTERLY", "quarterly"),
        UpdateFrequency::Annual => ("ANNUAL", "annual"),
        UpdateFrequency::Irregular => ("IRREG", "irregular"),
        UpdateFrequency::Never => ("NEVER", "never"),
        UpdateFrequency::Unknown => ("UNKNOWN", "unknown"),
    }
}

/// A stream's entities, through the NGSI-LD API (as a [`FORMATS`] row).
const STREAM_FORMAT: (&str, &str, &str, &str) = (
    "ngsi-ld",
    "JSON_LD",
    "application/ld+json",
    "JSON-LD (NGSI-LD)",
);

/// A format content is served in: (`format` parameter, EU file type, IANA media type, title).
pub(crate) const FORMATS: [(&str, &str, &str, &str); 4] = [
    ("csv", "CSV", "text/csv", "CSV"),
    ("json", "JSON", "application/json", "JSON"),
    ("geojson", "GEOJSON", "application/geo+json", "GeoJSON"),
    (
        "parquet",
        "PARQUET",
        "application/vnd.apache.parquet",
        "Parquet",
    ),
];

/// The formats this content can be served in.
pub(crate) fn formats_of(
    content: &ContentSummary,
) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str, &'static str)> {
    FORMATS
        .iter()
        .filter(move |f| f.0 != "geojson" || content.has_geometry)
}

/// The dataset's download URL in a format (open data only: others need a purpose and an agreement).
pub(crate) fn download_url(base: &str, id: &str, format: &str) -> String {
    format!("{base}/api/v1/datasets/{id}/data?format={format}")
}

struct Context<'a> {
    base: &'a str,
    organizations: &'a HashMap<String, Organization>,
}

impl Context<'_> {
    fn dataset_iri(&self, id: &str) -> String {
        format!("{}/datasets/{id}#dataset", self.base)
    }
    fn organization_iri(&self, id: &str) -> String {
        format!("{}/api/v1/organizations/{id}", self.base)
    }
    fn catalog_iri(&self) -> String {
        format!("{}/catalog", self.base)
    }
    fn service_iri(&self) -> String {
        format!("{}/api/v1", self.base)
    }
    /// The NGSI-LD API, through which streams are read.
    fn ngsi_iri(&self) -> String {
        format!("{}/ngsi-ld/v1", self.base)
    }
    fn metric(&self, name: &str) -> String {
        format!("{}/catalog#{name}", self.base)
    }

    /// The catalogue, its publisher, the API as a data service, the
    /// organisations, and every concept and metric the entries refer to.
    fn preamble(&self, with_catalog: bool) -> Vec<Node> {
        let mut nodes = Vec::new();
        let trust = format!("{}/catalog#trust", self.base);
        if with_catalog {
            nodes.push(
                Node::named(self.catalog_iri(), "dcat:Catalog")
                    .with("dct:title", Term::lit("CityTrust data catalogue"))
                    .with(
                        "dct:description",
                        Term::lit(
                            "Every dataset held in this civic data trust: open, shared and closed. \
                             Open data downloads directly; shared data is read for a stated purpose under \
                             an agreement decided by the trustees; closed data is listed, never shared.",
                        ),
                    )
                    .with("dct:publisher", Term::iri(&trust))
                    .with("foaf:homepage", Term::iri(format!("{}/", self.base)))
                    .with(
                        "dcat:themeTaxonomy",
                        Term::iri(format!("{EU}/data-theme")),
                    )
                    .with("dcat:service", Term::iri(self.service_iri()))
                    .with("dcat:service", Term::iri(self.ngsi_iri())),
            );
            nodes.push(Node::named(format!("{}/", self.base), "foaf:Document"));
            nodes.push(
                Node::named(trust, "foaf:Agent")
                    .with("foaf:name", Term::lit("CityTrust civic data trust")),
            );
        }
        nodes.push(Node::named(
            "http://spdx.org/rdf/terms#checksumAlgorithm_sha256",
            "spdx:ChecksumAlgorithm",
        ));
        nodes.push(Node::named(
            format!("{}/api/openapi.json", self.base),
            "rdfs:Resource",
        ));
        let mut service = Node::named(self.service_iri(), "dcat:DataService");
        // Its endpoint is itself, and DCAT-AP's range for an endpoint is rdfs:Resource.
        service.types.push("rdfs:Resource");
        nodes.push(
            service
                .with("dct:title", Term::lit("CityTrust API"))
                .with("dcat:endpointURL", Term::iri(self.service_iri()))
                .with(
                    "dcat:endpointDescription",
                    Term::iri(format!("{}/api/openapi.json", self.base)),
                ),
        );
        let mut ngsi = Node::named(self.ngsi_iri(), "dcat:DataService");
        ngsi.types.push("rdfs:Resource");
        nodes.push(
            ngsi.with(
                "dct:title",
                Term::lit("CityTrust NGSI-LD API (streams: latest values, history, subscriptions)"),
            )
            .with("dcat:endpointURL", Term::iri(self.ngsi_iri()))
            .with("dct:conformsTo", Term::iri(NGSI_LD_SPEC)),
        );
        nodes.push(Node::named(NGSI_LD_SPEC, "dct:Standard").with(
            "dct:title",
            Term::lit("ETSI GS CIM 009 V1.8.1: Context Information Management (CIM); NGSI-LD API"),
        ));
        let mut orgs: Vec<&Organization> = self.organizations.values().collect();
        orgs.sort_by(|a, b| a.id.cmp(&b.id));
        for o in orgs {
            let mut node = Node::named(self.organization_iri(&o.id), "foaf:Agent")
                .with("foaf:name", Term::lit(&o.name));
            if let Some(url) = &o.url {
                node.add("foaf:homepage", Term::iri(url));
            }
            nodes.push(node);
        }
        nodes.push(
            Node::named(format!("{EU}/data-theme"), "skos:ConceptScheme")
                .with("dct:title", Term::lit("Data theme")),
        );
        let mut themes: Vec<(&str, &str)> = Theme::ALL.into_iter().map(eu_theme).collect();
        themes.sort();
        themes.dedup();
        for (code, label) in themes {
            nodes.push(concept(
                &format!("{EU}/data-theme/{code}"),
                label,
                "data-theme",
            ));
        }
        for s in [Spectrum::Open, Spectrum::SharedPublic, Spectrum::Closed] {
            let (code, label) = access_right(s);
            nodes.push(
                Node::named(format!("{EU}/access-right/{code}"), "dct:RightsStatement")
                    .with("skos:prefLabel", Term::Text(label.into(), "en")),
            );
        }
        nodes.push(
            Node::named(format!("{EU}/dataset-status"), "skos:ConceptScheme")
                .with("dct:title", Term::lit("Dataset status")),
        );
        for s in [
            PublicationStatus::Planned,
            PublicationStatus::Published,
            PublicationStatus::Archived,
            PublicationStatus::Withdrawn,
        ] {
            let (code, label) = status(s);
            nodes.push(concept(
                &format!("{EU}/dataset-status/{code}"),
                label,
                "dataset-status",
            ));
        }
        for f in UpdateFrequency::ALL {
            let (code, label) = frequency(f);
            nodes.push(
                Node::named(format!("{EU}/frequency/{code}"), "dct:Frequency")
                    .with("skos:prefLabel", Term::Text(label.into(), "en")),
            );
        }
        for &(_, file_type, media_type, title) in FORMATS.iter().chain([&STREAM_FORMAT]) {
            nodes.push(
                Node::named(
                    format!("{EU}/file-type/{file_type}"),
                    "dct:MediaTypeOrExtent",
                )
                .with("skos:prefLabel", Term::Text(title.into(), "en")),
            );
            nodes.push(Node::named(format!("{IANA}/{media_type}"), "dct:MediaType"));
        }
        for (name, label, dimension) in [
            (
                "completeness",
                "Share of cells holding a value in the latest version (0 to 1)",
                "completeness",
            ),
            ("rows", "Rows in the latest version", "completeness"),
            (
                "outliers",
                "Values beyond Tukey's far fences in the latest version",
                "accuracy",
            ),
            (
                "out-of-range",
                "Values outside the declared valid ranges in the latest version",
                "accuracy",
            ),
            (
                "duplicate-keys",
                "Rows whose declared key appears more than once in the latest version",
                "consistency",
            ),
        ] {
            nodes.push(
                Node::named(self.metric(name), "dqv:Metric")
                    .with("skos:definition", Term::Text(label.into(), "en"))
                    .with(
                        "dqv:inDimension",
                        Term::iri(format!("http://www.w3.org/2016/05/ldqd#{dimension}")),
                    ),
            );
        }
        nodes
    }

    /// One catalogue entry: the dataset, its landing page and its distributions.
    fn dataset(&self, d: &Dataset, content: Option<&ContentSummary>) -> Vec<Node> {
        let m = &d.metadata;
        let iri = self.dataset_iri(&d.id);
        let page = format!("{}/datasets/{}", self.base, d.id);
        let mut ds = Node::named(&iri, "dcat:Dataset")
            .with("dct:identifier", Term::lit(&d.id))
            .with("dct:title", Term::lit(&m.title))
            .with("dct:description", Term::lit(description(d)))
            .with("dcat:landingPage", Term::iri(&page))
            .with("dct:issued", Term::typed(&d.created_at, "xsd:dateTime"))
            .with("dct:modified", Term::typed(&d.updated_at, "xsd:dateTime"));
        for k in &m.keywords {
            ds.add("dcat:keyword", Term::lit(k));
        }
        let mut codes: Vec<&str> = m.themes.iter().map(|t| eu_theme(*t).0).collect();
        codes.sort();
        codes.dedup();
        for code in codes {
            ds.add("dcat:theme", Term::iri(format!("{EU}/data-theme/{code}")));
        }
        if self.organizations.contains_key(&m.owner_organization_id) {
            ds.add(
                "dct:publisher",
                Term::iri(self.organization_iri(&m.owner_organization_id)),
            );
        }
        for r in &m.roles {
            if r.role == ValueChainRole::Creator
                && self.organizations.contains_key(&r.organization_id)
            {
                ds.add(
                    "dct:creator",
                    Term::iri(self.organization_iri(&r.organization_id)),
                );
            }
        }
        if let Some(c) = &m.contact {
            let mut kind = Node::blank("vcard:Kind").with("vcard:fn", Term::lit(&c.name));
            if let Some(email) = &c.email {
                kind.add("vcard:hasEmail", Term::iri(format!("mailto:{email}")));
            }
            if let Some(url) = &c.url {
                kind.add("vcard:hasURL", Term::iri(url));
            }
            ds.add("dcat:contactPoint", Term::Blank(kind));
        }
        let (right, _) = access_right(m.spectrum);
        ds.add(
            "dct:accessRights",
            Term::iri(format!("{EU}/access-right/{right}")),
        );
        ds.add(
            "adms:status",
            Term::iri(format!(
                "{EU}/dataset-status/{}",
                status(m.publication_status).0
            )),
        );
        ds.add(
            "dct:accrualPeriodicity",
            Term::iri(format!(
                "{EU}/frequency/{}",
                frequency(m.update_frequency).0
            )),
        );
        if let Some(p) = &m.temporal_coverage {
            let mut period = Node::blank("dct:PeriodOfTime");
            if let Some(start) = time_literal(&p.start) {
                period.add("dcat:startDate", start);
            }
            if let Some(end) = p.end.as_deref().and_then(time_literal) {
                period.add("dcat:endDate", end);
            }
            if !period.props.is_empty() {
                ds.add("dct:temporal", Term::Blank(period));
            }
        }
        let mut extra = Vec::new();
        if let Some(c) = &m.spatial_coverage {
            let mut place = Node::blank("dct:Location").with("skos:prefLabel", Term::lit(&c.name));
            if let Some([w, s, e, n]) = c.bounds() {
                place.add(
                    "dcat:bbox",
                    Term::typed(
                        format!("POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"),
                        "gsp:wktLiteral",
                    ),
                );
            }
            match &c.uri {
                Some(uri) => {
                    ds.add("dct:spatial", Term::iri(uri));
                    place.id = Some(uri.clone());
                    extra.push(place);
                }
                None => ds.add("dct:spatial", Term::Blank(place)),
            }
        }
        let prov = &m.data_states.provenance;
        let statement: Vec<String> = [
            ("Origin", &prov.origin),
            ("Processing history", &prov.processing_history),
            ("Lineage", &prov.lineage),
            ("Sensor location", &prov.sensor_location),
            ("Sensor calibration", &prov.sensor_calibration),
        ]
        .into_iter()
        .filter_map(|(label, v)| v.as_ref().map(|v| format!("{label}: {v}")))
        .collect();
        if !statement.is_empty() {
            ds.add(
                "dct:provenance",
                Term::Blank(
                    Node::blank("dct:ProvenanceStatement")
                        .with("rdfs:label", Term::lit(statement.join("\n"))),
                ),
            );
        }
        if let Some(derivation) = &m.derivation {
            for input in &derivation.inputs {
                ds.add(
                    "prov:wasDerivedFrom",
                    Term::iri(self.dataset_iri(&input.dataset_id)),
                );
            }
        }
        let states = &m.data_states;
        for (dimension, label, text) in [
            ("completeness", "Coverage", &states.completeness.coverage),
            (
                "completeness",
                "Continuity",
                &states.completeness.continuity,
            ),
            ("accuracy", "Precision", &states.accuracy.precision),
            ("accuracy", "Valid ranges", &states.accuracy.valid_ranges),
            ("accuracy", "Tolerances", &states.accuracy.tolerances),
            ("accuracy", "Sampling rate", &states.accuracy.sampling_rate),
            (
                "accuracy",
                "Conversion",
                &states.accuracy.conversion_process,
            ),
            (
                "availability",
                "Refresh timetable",
                &states.availability.refresh_timetable,
            ),
            (
                "availability",
                "Planned gaps",
                &states.availability.planned_gaps,
            ),
            ("timeliness", "Lag", &states.timeliness.lag),
        ] {
            if let Some(text) = text {
                ds.add(
                    "dqv:hasQualityAnnotation",
                    Term::Blank(
                        Node::blank("dqv:QualityAnnotation")
                            .with(
                                "oa:motivatedBy",
                                Term::iri("http://www.w3.org/ns/dqv#qualityAssessment"),
                            )
                            .with("oa:bodyValue", Term::lit(format!("{label}: {text}")))
                            .with(
                                "dqv:inDimension",
                                Term::iri(format!("http://www.w3.org/2016/05/ldqd#{dimension}")),
                            ),
                    ),
                );
            }
        }
        let mut nodes = Vec::new();
        let mut distributions = extra;
        let shown = m.spectrum != Spectrum::Closed;
        let licence = m.licence.as_ref().filter(|_| shown).map(|l| match &l.url {
            Some(url) => {
                distributions.push(
                    Node::named(url, "dct:LicenseDocument")
                        .with("dct:title", Term::lit(&l.title))
                        .with("dct:identifier", Term::lit(&l.id)),
                );
                Term::iri(url)
            }
            None => Term::Blank(
                Node::blank("dct:LicenseDocument")
                    .with("dct:title", Term::lit(&l.title))
                    .with("dct:identifier", Term::lit(&l.id)),
            ),
        });
        // A stream's live entities: one distribution, through the NGSI-LD API.
        if let Some(stream) = m.stream.as_ref().filter(|_| shown) {
            let dist_iri = format!("{page}#distribution-ngsi-ld");
            ds.add("dcat:distribution", Term::iri(&dist_iri));
            let access = match stream.entity_types.as_slice() {
                [] => self.ngsi_iri(),
                types => format!("{}/entities?type={}", self.ngsi_iri(), types.join(",")),
            };
            let mut dist = Node::named(&dist_iri, "dcat:Distribution")
                .with(
                    "dct:title",
                    Term::lit(format!("{}: its entities through the NGSI-LD API", m.title)),
                )
                .with(
                    "dct:description",
                    Term::lit(format!(
                        "Latest values, history (the temporal API, {} days kept) and subscriptions. {}",
                        stream.retention_days,
                        if m.spectrum == Spectrum::Open {
                            "Open: no sign-in; every answer is logged."
                        } else {
                            "Read for a stated purpose under an agreement: ask for access on the dataset's page."
                        }
                    )),
                )
                .with(
                    "dct:format",
                    Term::iri(format!("{EU}/file-type/{}", STREAM_FORMAT.1)),
                )
                .with(
                    "dcat:mediaType",
                    Term::iri(format!("{IANA}/{}", STREAM_FORMAT.2)),
                )
                .with("dcat:accessURL", Term::iri(access))
                .with("dcat:accessService", Term::iri(self.ngsi_iri()));
            if let Some(l) = &licence {
                dist.add("dct:license", l.clone());
            }
            distributions.push(dist);
        }
        // Closed data carries no content and no distribution (invariant 6).
        if let Some(c) = content.filter(|_| m.spectrum != Spectrum::Closed) {
            ds.add("dcat:version", Term::lit(c.version.to_string()));
            for (metric, value, datatype) in [
                (
                    "completeness",
                    format!("{:.4}", c.completeness),
                    "xsd:decimal",
                ),
                ("rows", c.rows.to_string(), "xsd:integer"),
                ("outliers", c.outliers.to_string(), "xsd:integer"),
                ("out-of-range", c.out_of_range.to_string(), "xsd:integer"),
            ]
            .into_iter()
            .chain(
                c.duplicate_key_rows
                    .map(|n| ("duplicate-keys", n.to_string(), "xsd:integer")),
            ) {
                ds.add(
                    "dqv:hasQualityMeasurement",
                    Term::Blank(
                        Node::blank("dqv:QualityMeasurement")
                            .with("dqv:isMeasurementOf", Term::iri(self.metric(metric)))
                            .with("dqv:value", Term::typed(value, datatype))
                            .with(
                                "prov:generatedAtTime",
                                Term::typed(&c.published_at, "xsd:dateTime"),
                            ),
                    ),
                );
            }
            for (format, file_type, media_type, title) in formats_of(c) {
                let dist_iri = format!("{page}#distribution-{format}");
                ds.add("dcat:distribution", Term::iri(&dist_iri));
                let mut dist = Node::named(&dist_iri, "dcat:Distribution")
                    .with(
                        "dct:title",
                        Term::lit(format!("{} — version {} as {title}", m.title, c.version)),
                    )
                    .with(
                        "dct:format",
                        Term::iri(format!("{EU}/file-type/{file_type}")),
                    )
                    .with("dcat:mediaType", Term::iri(format!("{IANA}/{media_type}")))
                    .with("dct:issued", Term::typed(&c.published_at, "xsd:dateTime"));
                if m.spectrum == Spectrum::Open {
                    let url = download_url(self.base, &d.id, format);
                    dist.add("dcat:accessURL", Term::iri(&url));
                    dist.add("dcat:downloadURL", Term::iri(url));
                } else {
                    dist.add("dcat:accessURL", Term::iri(&page));
                    dist.add("dcat:accessService", Term::iri(self.service_iri()));
                    dist.add(
                        "dct:description",
                        Term::lit(
                            "Read for a stated purpose under an agreement: ask for access on the dataset's page.",
                        ),
                    );
                }
                if let Some(l) = &licence {
                    dist.add("dct:license", l.clone());
                }
                if *format == "parquet" {
                    // The stored file itself: its size and digest are exact.
                    dist.add(
                        "dcat:byteSize",
                        Term::typed(c.bytes.to_string(), "xsd:nonNegativeInteger"),
                    );
                    dist.add(
                        "spdx:checksum",
                        Term::Blank(
                            Node::blank("spdx:Checksum")
                                .with(
                                    "spdx:algorithm",
                                    Term::iri("http://spdx.org/rdf/terms#checksumAlgorithm_sha256"),
                                )
                                .with(
                                    "spdx:checksumValue",
                                    Term::typed(&c.sha256, "xsd:hexBinary"),
                                ),
                        ),
                    );
                }
                distributions.push(dist);
            }
        }
        nodes.push(ds);
        nodes.push(Node::named(page, "foaf:Document"));
        nodes.extend(distributions);
        nodes
    }
}

/// The description, or a sentence saying there is none (DCAT-AP requires one).
fn description(d: &Dataset) -> String {
    if d.metadata.description.trim().is_empty() {
        format!("{} (no description given).", d.metadata.title)
    } else {
        d.metadata.description.clone()
    }
}

/// A date, date-time, year-month or year as its XSD literal; `None` if it is none of them.
fn time_literal(s: &str) -> Option<Term> {
    let s = s.trim();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let datatype = if s.len() == 4 && digits(s) {
        "xsd:gYear"
    } else if s.len() == 7 && digits(&s[..4]) && &s[4..5] == "-" && digits(&s[5..]) {
        "xsd:gYearMonth"
    } else if time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE).is_ok()
        && s.len() == 10
    {
        "xsd:date"
    } else if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
    {
        "xsd:dateTime"
    } else {
        return None;
    };
    Some(Term::typed(s, datatype))
}

fn concept(iri: &str, label: &str, scheme: &str) -> Node {
    Node::named(iri, "skos:Concept")
        .with("skos:prefLabel", Term::Text(label.into(), "en"))
        .with("skos:inScheme", Term::iri(format!("{EU}/{scheme}")))
}

fn respond(syntax: Syntax, body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(syntax.media_type()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `/datasets/{id}.ttl` and `/datasets/{id}.jsonld`: one entry as DCAT-AP.
pub(crate) async fn dataset_document(
    state: &AppState,
    _headers: &HeaderMap,
    id: &str,
    syntax: Syntax,
) -> Result<Response, ApiError> {
    let d = state.service.get_dataset(id).await?;
    let organizations = state.service.organizations_by_id().await?;
    let base = crate::base_url(state);
    let cx = Context {
        base: &base,
        organizations: &organizations,
    };
    let content = state
        .service
        .content_summaries(std::slice::from_ref(&d.id))
        .await?;
    let mut nodes = cx.preamble(false);
    nodes.extend(cx.dataset(&d, content.get(&d.id)));
    Ok(respond(syntax, Body::from(syntax.document(&nodes))))
}

/// The whole catalogue, streamed a page of entries at a time.
async fn catalog(state: AppState, _headers: &HeaderMap, syntax: Syntax) -> Response {
    let organizations = match state.service.organizations_by_id().await {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let base = crate::base_url(&state);
    let head = {
        let cx = Context {
            base: &base,
            organizations: &organizations,
        };
        let mut out = syntax.head();
        for (i, n) in cx.preamble(true).iter().enumerate() {
            out.push_str(&syntax.node(n, i == 0));
        }
        out
    };
    struct Cursor {
        state: AppState,
        base: String,
        organizations: HashMap<String, Organization>,
        after: Option<String>,
    }
    let cursor = Cursor {
        state,
        base,
        organizations,
        after: Some(String::new()),
    };
    let pages = futures::stream::unfold(cursor, move |mut cur| async move {
        let after = cur.after.take()?;
        let page = match cur.state.service.datasets_after(&after, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "catalogue export failed");
                return Some((Err(std::io::Error::other("catalogue export failed")), cur));
            }
        };
        if page.is_empty() {
            return Some((Ok(Bytes::from_static(syntax.tail().as_bytes())), cur));
        }
        let ids: Vec<String> = page.iter().map(|d| d.id.clone()).collect();
        let content = match cur.state.service.content_summaries(&ids).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "catalogue export failed");
                return Some((Err(std::io::Error::other("catalogue export failed")), cur));
            }
        };
        let cx = Context {
            base: &cur.base,
            organizations: &cur.organizations,
        };
        let mut out = String::new();
        let catalog = cx.catalog_iri();
        for d in &page {
            let link = Node::about(&catalog).with("dcat:dataset", Term::iri(cx.dataset_iri(&d.id)));
            out.push_str(&syntax.node(&link, false));
            for n in cx.dataset(d, content.get(&d.id)) {
                out.push_str(&syntax.node(&n, false));
            }
        }
        cur.after = page.last().map(|d| d.id.clone());
        Some((Ok(Bytes::from(out)), cur))
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(pages);
    respond(syntax, Body::from_stream(body))
}

use futures::StreamExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_the_narrowest_xsd_type() {
        let dt = |s: &str| match time_literal(s) {
            Some(Term::Literal(_, Some(dt))) => dt,
            _ => "none",
        };
        assert_eq!(dt("2018"), "xsd:gYear");
        assert_eq!(dt("2018-11"), "xsd:gYearMonth");
        assert_eq!(dt("2018-11-01"), "xsd:date");
        assert_eq!(dt("2018-11-01T10:00:00Z"), "xsd:dateTime");
        assert_eq!(dt("November 2018"), "none");
        assert_eq!(dt("2018-13-01"), "none");
    }

    #[test]
    fn every_spectrum_has_an_eu_access_right() {
        assert_eq!(access_right(Spectrum::Open).0, "PUBLIC");
        assert_eq!(access_right(Spectrum::SharedGroup).0, "RESTRICTED");
        assert_eq!(access_right(Spectrum::Closed).0, "NON_PUBLIC");
    }
}
