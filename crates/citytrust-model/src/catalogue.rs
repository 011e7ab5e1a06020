//! The catalogue's data framework: what the trust records about every dataset
//! (R-CAT-1 … R-CAT-4) and the value-chain roles organisations hold on it
//! (R-ACC-1).
//!
//! `DatasetInput` is what an owner writes; `Dataset` is what the catalogue
//! holds (the input plus its identity and timestamps). Every field name here
//! is part of the JSON API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validation::{ValidationErrors, is_slug};

/// Where a dataset sits on the data spectrum (R-CAT-3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Spectrum {
    /// Anyone may use it, for any purpose.
    Open,
    /// Shared with anyone, under terms that are not open.
    SharedPublic,
    /// Shared with named groups chosen by predetermined criteria.
    SharedGroup,
    /// Shared with named people or organisations.
    SharedSpecific,
    /// Never shared; its existence is still listed.
    Closed,
}

impl Spectrum {
    pub const ALL: [Spectrum; 5] = [
        Spectrum::Open,
        Spectrum::SharedPublic,
        Spectrum::SharedGroup,
        Spectrum::SharedSpecific,
        Spectrum::Closed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Spectrum::Open => "open",
            Spectrum::SharedPublic => "shared_public",
            Spectrum::SharedGroup => "shared_group",
            Spectrum::SharedSpecific => "shared_specific",
            Spectrum::Closed => "closed",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Spectrum::Open => "Open",
            Spectrum::SharedPublic => "Shared — public access",
            Spectrum::SharedGroup => "Shared — group access",
            Spectrum::SharedSpecific => "Shared — specific access",
            Spectrum::Closed => "Closed",
        }
    }
    pub fn explanation(self) -> &'static str {
        match self {
            Spectrum::Open => "Anyone can access, use and share this data.",
            Spectrum::SharedPublic => {
                "Anyone can use this data, under terms that are not an open licence."
            }
            Spectrum::SharedGroup => {
                "Available to members of named groups, decided by predetermined criteria."
            }
            Spectrum::SharedSpecific => {
                "Available only to named people or organisations under an agreement."
            }
            Spectrum::Closed => {
                "Not shared with anyone outside its owner. Only its existence is published."
            }
        }
    }
    pub fn parse(s: &str) -> Option<Spectrum> {
        Spectrum::ALL.into_iter().find(|v| v.as_str() == s)
    }
    /// Higher is more restrictive; derived data takes the maximum of its inputs.
    pub fn stringency(self) -> u8 {
        self as u8
    }
}

/// The data framework class (R-CAT-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum FrameworkClass {
    /// Data about data.
    Metadata,
    /// Data that other data refers to: addresses, boundaries, registers.
    Reference,
    /// Data about a subject: energy, mobility, health …
    #[default]
    Thematic,
}

/// How the data is structured (R-CAT-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Structure {
    #[default]
    Structured,
    /// JSON, GeoJSON, XML and the like.
    SemiStructured,
    Unstructured,
    /// Digitised from paper; `analogue_conversion` records how.
    Analogue,
    RealTime,
}

/// Publication status of a catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum PublicationStatus {
    /// Announced; no content yet.
    Planned,
    #[default]
    Published,
    /// Kept and preserved, no longer updated.
    Archived,
    /// Withdrawn from use; the entry remains for the record.
    Withdrawn,
}

/// How often the data is refreshed (R-CAT-1, R-CAT-4 timeliness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpdateFrequency {
    Continuous,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Quarterly,
    Annual,
    Irregular,
    /// Published once; not updated.
    Never,
    #[default]
    Unknown,
}

impl UpdateFrequency {
    pub const ALL: [UpdateFrequency; 10] = [
        UpdateFrequency::Continuous,
        UpdateFrequency::Hourly,
        UpdateFrequency::Daily,
        UpdateFrequency::Weekly,
        UpdateFrequency::Monthly,
        UpdateFrequency::Quarterly,
        UpdateFrequency::Annual,
        UpdateFrequency::Irregular,
        UpdateFrequency::Never,
        UpdateFrequency::Unknown,
    ];
}

/// Themes used to browse the catalogue. Each maps to an EU data theme for DCAT-AP.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Theme {
    Energy,
    Buildings,
    Mobility,
    Transport,
    Health,
    Environment,
    Population,
    Economy,
    Government,
    Safety,
    Education,
    Culture,
    Technology,
    Boundaries,
}

impl Theme {
    pub const ALL: [Theme; 14] = [
        Theme::Energy,
        Theme::Buildings,
        Theme::Mobility,
        Theme::Transport,
        Theme::Health,
        Theme::Environment,
        Theme::Population,
        Theme::Economy,
        Theme::Government,
        Theme::Safety,
        Theme::Education,
        Theme::Culture,
        Theme::Technology,
        Theme::Boundaries,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Theme::Energy => "energy",
            Theme::Buildings => "buildings",
            Theme::Mobility => "mobility",
            Theme::Transport => "transport",
            Theme::Health => "health",
            Theme::Environment => "environment",
            Theme::Population => "population",
            Theme::Economy => "economy",
            Theme::Government => "government",
            Theme::Safety => "safety",
            Theme::Education => "education",
            Theme::Culture => "culture",
            Theme::Technology => "technology",
            Theme::Boundaries => "boundaries",
        }
    }
    pub fn parse(s: &str) -> Option<Theme> {
        Theme::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A role an organisation plays in a dataset's value chain (R-ACC-1; ISO/IEC
/// 17917 7.2 and, for personal data, 7.3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ValueChainRole {
    Creator,
    Custodian,
    PrimaryPublisher,
    SecondaryPublisher,
    User,
    /// Decides why and how personal data is processed.
    Controller,
    /// Processes personal data on a controller's behalf.
    Processor,
}

impl ValueChainRole {
    pub fn label(self) -> &'static str {
        match self {
            ValueChainRole::Creator => "Creator",
            ValueChainRole::Custodian => "Custodian",
            ValueChainRole::PrimaryPublisher => "Primary publisher",
            ValueChainRole::SecondaryPublisher => "Secondary publisher",
            ValueChainRole::User => "User",
            ValueChainRole::Controller => "Controller",
            ValueChainRole::Processor => "Processor",
        }
    }
}

/// One organisation in one role on a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    pub organization_id: String,
    pub role: ValueChainRole,
}

/// Whom to ask about the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// The licence the data is published under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Licence {
    /// An SPDX-style identifier where one exists (`CC-BY-4.0`), else `other`.
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub url: Option<String>,
    /// Whether the trust has checked the licence against the publisher's terms.
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub note: Option<String>,
}

/// Which columns carry what kind of information (R-CAT-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ColumnClasses {
    /// Columns that identify or relate to a person directly.
    #[serde(default)]
    pub personal: Vec<String>,
    /// Columns that could single someone out in combination.
    #[serde(default)]
    pub quasi_identifying: Vec<String>,
    #[serde(default)]
    pub spatial: Vec<String>,
    #[serde(default)]
    pub temporal: Vec<String>,
    /// Each row is a person's movement (a trip, a trace): rows never leave
    /// outside the owner's own use, only tables such as origin–destination
    /// counts (R-PRV-4).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trajectories: bool,
    /// Columns that say nothing about who a row is about (a measurement, a
    /// category of the thing measured): anonymised rows keep them as they
    /// are. Every other column that is not a quasi-identifier is left out of
    /// anonymised rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_identifying: Vec<String>,
    /// How finely a column may be a dimension of a thresholded table: times
    /// truncated to at least a unit, numbers in intervals of at least a
    /// width, coordinates on a grid of at least so many degrees. A column
    /// named here is tabulated only so binned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub table_bins: BTreeMap<String, TableBin>,
}

/// The finest a column may be tabulated (see [`ColumnClasses::table_bins`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TableBin {
    /// Times and dates truncated to this unit, or a coarser one.
    Time(TimeUnit),
    /// Numbers in intervals of at least this width (a positive integer).
    Width(u64),
    /// Coordinates on a grid of at least this many thousandths of a degree
    /// (10 = 0.01°, about a kilometre).
    GridMillidegrees(u32),
}

/// A unit times are truncated to, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl TimeUnit {
    pub const ALL: [TimeUnit; 5] = [
        TimeUnit::Hour,
        TimeUnit::Day,
        TimeUnit::Week,
        TimeUnit::Month,
        TimeUnit::Year,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
            TimeUnit::Month => "month",
            TimeUnit::Year => "year",
        }
    }
}

impl TableBin {
    /// Whether `self` is at least as coarse as `other` (so replacing
    /// `other` by `self` does not let a table be finer).
    pub fn at_least_as_coarse_as(&self, other: &TableBin) -> bool {
        match (self, other) {
            (TableBin::Time(a), TableBin::Time(b)) => a >= b,
            (TableBin::Width(a), TableBin::Width(b)) => a >= b && a % b == 0,
            (TableBin::GridMillidegrees(a), TableBin::GridMillidegrees(b)) => a >= b,
            _ => false,
        }
    }
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// The system that holds it (`Open Data BCN`, `CityTrust`).
    pub system: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// The area the data covers (DCAT-AP `dct:spatial`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpatialCoverage {
    /// The place, in words: `Barcelona`, `Seattle, Washington`.
    #[schema(example = "Barcelona")]
    pub name: String,
    /// The place in a gazetteer (GeoNames, the EU's places authority), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "https://sws.geonames.org/3128760/")]
    pub uri: Option<String>,
    /// Bounding box in WGS 84 degrees: `west,south,east,north`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2.05,41.32,2.23,41.47")]
    pub bbox: Option<String>,
}

impl SpatialCoverage {
    /// The bounding box as numbers (west, south, east, north), if it is a valid one.
    pub fn bounds(&self) -> Option<[f64; 4]> {
        let parts: Vec<f64> = self
            .bbox
            .as_deref()?
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .ok()?;
        let [w, s, e, n]: [f64; 4] = parts.try_into().ok()?;
        let lon = |v: f64| (-180.0..=180.0).contains(&v);
        let lat = |v: f64| (-90.0..=90.0).contains(&v);
        (lon(w) && lon(e) && lat(s) && lat(n) && s <= n).then_some([w, s, e, n])
    }
}

/// The time span the data covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// YYYY-MM-DD
    #[schema(format = Date, example = "2017-01-01")]
    pub start: String,
    /// YYYY-MM-DD; absent while ongoing.
    #[serde(default)]
    #[schema(format = Date, example = "2017-12-31")]
    pub end: Option<String>,
}

/// Completeness: coverage and continuity (ISO/IEC 17917 9.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Completeness {
    #[serde(default)]
    pub coverage: Option<String>,
    #[serde(default)]
    pub continuity: Option<String>,
}

/// Accuracy: precision, valid ranges, tolerances, sampling, conversions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    #[serde(default)]
    pub precision: Option<String>,
    #[serde(default)]
    pub valid_ranges: Option<String>,
    #[serde(default)]
    pub tolerances: Option<String>,
    #[serde(default)]
    pub sampling_rate: Option<String>,
    #[serde(default)]
    pub conversion_process: Option<String>,
}

/// Availability: a refresh timetable users can rely on, with planned gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    #[serde(default)]
    pub refresh_timetable: Option<String>,
    #[serde(default)]
    pub planned_gaps: Option<String>,
}

/// Timeliness: the lag between the world and the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Timeliness {
    #[serde(default)]
    pub lag: Option<String>,
}

/// Provenance: origin, processing history, lineage; for sensors, where and how calibrated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub processing_history: Option<String>,
    #[serde(default)]
    pub lineage: Option<String>,
    #[serde(default)]
    pub sensor_location: Option<String>,
    #[serde(default)]
    pub sensor_calibration: Option<String>,
}

/// The data states of R-CAT-4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DataStates {
    #[serde(default)]
    pub completeness: Completeness,
    #[serde(default)]
    pub accuracy: Accuracy,
    #[serde(default)]
    pub availability: Availability,
    #[serde(default)]
    pub timeliness: Timeliness,
    #[serde(default)]
    pub provenance: Provenance,
}

/// What an owner writes about a dataset; the body of `POST /api/v1/datasets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetInput {
    /// A URL-safe slug; derived from the title when absent. Fixed once created.
    #[serde(default)]
    #[schema(
        example = "barcelona-air-quality",
        min_length = 2,
        max_length = 100,
        pattern = "^[a-z0-9]+(-[a-z0-9]+)*$"
    )]
    pub id: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: String,
    #[schema(min_length = 1, max_length = 20000, pattern = "\\S")]
    pub description: String,
    /// The organisation that owns the data and decides its classification.
    #[schema(min_length = 2, max_length = 100, pattern = "^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub owner_organization_id: String,
    /// Other organisations in the value chain: creator, custodian, publishers, users, controller, processor.
    #[serde(default)]
    pub roles: Vec<RoleAssignment>,
    #[serde(default)]
    pub contact: Option<Contact>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub themes: Vec<Theme>,
    #[serde(default)]
    pub licence: Option<Licence>,
    /// Whether any column relates to identifiable people.
    #[serde(default)]
    pub personal_data: bool,
    #[serde(default)]
    pub column_classes: ColumnClasses,
    #[serde(default)]
    pub location: Option<Location>,
    /// The form the data is kept in: CSV, GeoJSON, GTFS, Parquet …
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub temporal_coverage: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spatial_coverage: Option<SpatialCoverage>,
    /// For personal data about identifiable people: whose row each is, the
    /// lawful basis per purpose, retention and the privacy notice (R-CIT-*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_terms: Option<crate::residents::PersonalTerms>,
    #[serde(default)]
    pub update_frequency: UpdateFrequency,
    #[serde(default)]
    pub publication_status: PublicationStatus,
    /// Identifiers shared with other data, for joining: property ids, postcodes, statistical areas, company ids.
    #[serde(default)]
    pub shared_identifiers: Vec<String>,
    #[serde(default)]
    pub framework_class: FrameworkClass,
    #[serde(default)]
    pub structure: Structure,
    /// For analogue data: how it was digitised.
    #[serde(default)]
    pub analogue_conversion: Option<String>,
    /// Present when the entry is a stream of NGSI-LD entities (issue 26).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::ngsi::StreamTerms>,
    pub spectrum: Spectrum,
    #[serde(default)]
    pub data_states: DataStates,
}

/// A catalogue entry as the trust holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    pub id: String,
    #[serde(flatten)]
    pub metadata: DatasetMetadata,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Increases by one on every change.
    pub revision: i64,
}

/// `DatasetInput` without its optional id: the metadata proper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatasetMetadata {
    pub title: String,
    pub description: String,
    pub owner_organization_id: String,
    pub roles: Vec<RoleAssignment>,
    pub contact: Option<Contact>,
    pub keywords: Vec<String>,
    pub themes: Vec<Theme>,
    pub licence: Option<Licence>,
    pub personal_data: bool,
    pub column_classes: ColumnClasses,
    pub location: Option<Location>,
    pub format: Option<String>,
    pub temporal_coverage: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spatial_coverage: Option<SpatialCoverage>,
    /// For personal data about identifiable people: whose row each is, the
    /// lawful basis per purpose, retention and the privacy notice (R-CIT-*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_terms: Option<crate::residents::PersonalTerms>,
    pub update_frequency: UpdateFrequency,
    pub publication_status: PublicationStatus,
    pub shared_identifiers: Vec<String>,
    pub framework_class: FrameworkClass,
    pub structure: Structure,
    pub analogue_conversion: Option<String>,
    /// Present when the entry is a stream of NGSI-LD entities (issue 26).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::ngsi::StreamTerms>,
    pub spectrum: Spectrum,
    pub data_states: DataStates,
    /// Present when the dataset was derived from others by a query (R-CAT-5).
    /// Set by the trust, never by a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation: Option<Derivation>,
}

/// How a derived dataset was made, and whether its class has been re-assessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Derivation {
    /// The query that made it.
    pub sql: String,
    /// Every input, at the version read.
    pub inputs: Vec<DerivedInput>,
    /// The most stringent class among the inputs, which the dataset inherited.
    pub inherited_spectrum: Spectrum,
    /// Until its owner re-assesses it, a derived dataset is not shared beyond
    /// its owner, whatever its class says: aggregation can reveal what the
    /// inputs did not.
    pub needs_reassessment: bool,
    /// The reasons given when re-assessing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassessment_note: Option<String>,
    /// The purpose of the trust's taxonomy its inputs were read for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Until the trustees have assessed what the derivation reveals and
    /// released it, it carries its inputs' terms (R-CAT-5): it is read only
    /// by someone who may, at that moment, read every input (for the purpose
    /// read, every column the derivation read, at the identified level) —
    /// its owner included. A retired agreement, a withdrawn grant or a
    /// narrower column limit on an input reaches the derived data too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released_by_trustees: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DerivedInput {
    pub dataset_id: String,
    pub version: i64,
    pub spectrum: Spectrum,
    pub personal_data: bool,
    /// The agreement the input was read under (none for open data or its
    /// owner's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<String>,
    /// The columns the derivation could read (empty: every column).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

impl DatasetInput {
    /// Check every field; on success, split into the chosen id (if any) and the metadata.
    pub fn validate(self) -> Result<(Option<String>, DatasetMetadata), ValidationErrors> {
        let mut e = ValidationErrors::default();
        if let Some(id) = &self.id {
            e.slug("id", id);
        }
        let metadata = DatasetMetadata {
            title: self.title.trim().to_string(),
            description: self.description,
            owner_organization_id: self.owner_organization_id,
            roles: self.roles,
            contact: self.contact,
            keywords: self.keywords.iter().map(|k| k.trim().to_string()).collect(),
            themes: self.themes,
            licence: self.licence,
            personal_data: self.personal_data,
            column_classes: self.column_classes,
            location: self.location,
            format: self.format,
            temporal_coverage: self.temporal_coverage,
            spatial_coverage: self.spatial_coverage,
            personal_terms: self.personal_terms,
            update_frequency: self.update_frequency,
            publication_status: self.publication_status,
            shared_identifiers: self.shared_identifiers,
            framework_class: self.framework_class,
            structure: self.structure,
            analogue_conversion: self.analogue_conversion,
            stream: self.stream,
            spectrum: self.spectrum,
            data_states: self.data_states,
            derivation: None,
        };
        metadata.check(&mut e);
        e.into_result().map(|()| (self.id, metadata))
    }
}

impl DatasetMetadata {
    /// The input form of this metadata (for JSON merge-patching).
    pub fn to_input(&self) -> DatasetInput {
        let m = self.clone();
        DatasetInput {
            id: None,
            title: m.title,
            description: m.description,
            owner_organization_id: m.owner_organization_id,
            roles: m.roles,
            contact: m.contact,
            keywords: m.keywords,
            themes: m.themes,
            licence: m.licence,
            personal_data: m.personal_data,
            column_classes: m.column_classes,
            location: m.location,
            format: m.format,
            temporal_coverage: m.temporal_coverage,
            spatial_coverage: m.spatial_coverage,
            personal_terms: m.personal_terms,
            update_frequency: m.update_frequency,
            publication_status: m.publication_status,
            shared_identifiers: m.shared_identifiers,
            framework_class: m.framework_class,
            structure: m.structure,
            analogue_conversion: m.analogue_conversion,
            stream: m.stream,
            spectrum: m.spectrum,
            data_states: m.data_states,
        }
    }

    fn check(&self, e: &mut ValidationErrors) {
        e.required_text("title", &self.title, 200);
        e.required_text("description", &self.description, 20_000);
        e.slug("owner_organization_id", &self.owner_organization_id);
        if let Some(stream) = &self.stream {
            stream.check(e);
        }
        if self.roles.len() > 50 {
            e.push("roles", "has more than 50 entries");
        }
        for (i, r) in self.roles.iter().enumerate() {
            e.slug(&format!("roles[{i}].organization_id"), &r.organization_id);
            if self.roles[..i].contains(r) {
                e.push(format!("roles[{i}]"), "is listed twice");
            }
        }
        if let Some(c) = &self.contact {
            e.required_text("contact.name", &c.name, 200);
            e.email("contact.email", &c.email);
            e.url("contact.url", &c.url);
        }
        e.list("keywords", &self.keywords, 50, 100);
        if let Some(l) = &self.licence {
            e.required_text("licence.id", &l.id, 100);
            e.required_text("licence.title", &l.title, 300);
            e.url("licence.url", &l.url);
            e.optional_text("licence.note", &l.note, 2000);
        }
        let cc = &self.column_classes;
        for (name, cols) in [
            ("column_classes.personal", &cc.personal),
            ("column_classes.quasi_identifying", &cc.quasi_identifying),
            ("column_classes.spatial", &cc.spatial),
            ("column_classes.temporal", &cc.temporal),
            ("column_classes.non_identifying", &cc.non_identifying),
        ] {
            e.list(name, cols, 500, 200);
        }
        for c in &cc.non_identifying {
            if cc.personal.contains(c) || cc.quasi_identifying.contains(c) {
                e.push(
                    "column_classes.non_identifying",
                    format!("'{c}' is also marked personal or quasi-identifying"),
                );
            }
        }
        if cc.table_bins.len() > 500 {
            e.push("column_classes.table_bins", "has more than 500 entries");
        }
        for (c, bin) in &cc.table_bins {
            let field = format!("column_classes.table_bins.{c}");
            if c.trim().is_empty() || c.len() > 200 {
                e.push(&field, "names no column");
            }
            match bin {
                TableBin::Width(0) => e.push(&field, "a width is at least 1"),
                TableBin::GridMillidegrees(0) => e.push(&field, "a grid is at least 1 millidegree"),
                _ => {}
            }
        }
        if !cc.personal.is_empty() && !self.personal_data {
            e.push(
                "personal_data",
                "must be true when columns are marked personal",
            );
        }
        if let Some(l) = &self.location {
            e.required_text("location.system", &l.system, 200);
            e.url("location.url", &l.url);
        }
        if let Some(f) = &self.format {
            e.required_text("format", f, 50);
        }
        if let Some(p) = &self.temporal_coverage {
            let start = e.date("temporal_coverage.start", &p.start);
            let end = p
                .end
                .as_deref()
                .and_then(|end| e.date("temporal_coverage.end", end));
            if let (Some(s), Some(t)) = (start, end)
                && t < s
            {
                e.push("temporal_coverage.end", "is before the start");
            }
        }
        if let Some(c) = &self.spatial_coverage {
            e.required_text("spatial_coverage.name", &c.name, 200);
            e.url("spatial_coverage.uri", &c.uri);
            if c.bbox.is_some() && c.bounds().is_none() {
                e.push(
                    "spatial_coverage.bbox",
                    "must be west,south,east,north in degrees (longitudes -180..180, latitudes -90..90, south not above north)",
                );
            }
        }
        if let Some(t) = &self.personal_terms {
            t.check(e);
            if !self.personal_data {
                e.push(
                    "personal_data",
                    "must be true when personal_terms name a subject key",
                );
            }
        }
        e.list("shared_identifiers", &self.shared_identifiers, 50, 200);
        match (&self.structure, &self.analogue_conversion) {
            (Structure::Analogue, None) => {
                e.push(
                    "analogue_conversion",
                    "must say how analogue data was digitised",
                );
            }
            (_, Some(text)) => e.required_text("analogue_conversion", text, 2000),
            _ => {}
        }
        let ds = &self.data_states;
        for (name, value) in [
            (
                "data_states.completeness.coverage",
                &ds.completeness.coverage,
            ),
            (
                "data_states.completeness.continuity",
                &ds.completeness.continuity,
            ),
            ("data_states.accuracy.precision", &ds.accuracy.precision),
            (
                "data_states.accuracy.valid_ranges",
                &ds.accuracy.valid_ranges,
            ),
            ("data_states.accuracy.tolerances", &ds.accuracy.tolerances),
            (
                "data_states.accuracy.sampling_rate",
                &ds.accuracy.sampling_rate,
            ),
            (
                "data_states.accuracy.conversion_process",
                &ds.accuracy.conversion_process,
            ),
            (
                "data_states.availability.refresh_timetable",
                &ds.availability.refresh_timetable,
            ),
            (
                "data_states.availability.planned_gaps",
                &ds.availability.planned_gaps,
            ),
            ("data_states.timeliness.lag", &ds.timeliness.lag),
            ("data_states.provenance.origin", &ds.provenance.origin),
            (
                "data_states.provenance.processing_history",
                &ds.provenance.processing_history,
            ),
            ("data_states.provenance.lineage", &ds.provenance.lineage),
            (
                "data_states.provenance.sensor_location",
                &ds.provenance.sensor_location,
            ),
            (
                "data_states.provenance.sensor_calibration",
                &ds.provenance.sensor_calibration,
            ),
        ] {
            e.optional_text(name, value, 4000);
        }
        let mut themes = self.themes.clone();
        themes.sort();
        themes.dedup();
        if themes.len() != self.themes.len() {
            e.push("themes", "lists a theme more than once");
        }
    }

    /// Organisations named anywhere in the metadata (all must exist).
    pub fn organization_ids(&self) -> impl Iterator<Item = (String, &str)> {
        std::iter::once((
            "owner_organization_id".to_string(),
            self.owner_organization_id.as_str(),
        ))
        .chain(self.roles.iter().enumerate().map(|(i, r)| {
            (
                format!("roles[{i}].organization_id"),
                r.organization_id.as_str(),
            )
        }))
    }

    /// Organisations that may maintain this entry besides its owner.
    pub fn custodians(&self) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .filter(|r| r.role == ValueChainRole::Custodian)
            .map(|r| r.organization_id.as_str())
    }

    /// Whether this slug belongs in the catalogue at all.
    pub fn is_valid_id(id: &str) -> bool {
        is_slug(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "title": "Air quality",
            "description": "Hourly readings",
            "owner_organization_id": "city-data-office",
            "spectrum": "open"
        })
    }

    fn check(patch: serde_json::Value, expect_fields: &[&str]) {
        let mut v = minimal();
        if let (Some(obj), Some(p)) = (v.as_object_mut(), patch.as_object()) {
            for (k, val) in p {
                obj.insert(k.clone(), val.clone());
            }
        }
        let input: DatasetInput = match serde_json::from_value(v) {
            Ok(i) => i,
            Err(err) => panic!("does not deserialize: {err}"),
        };
        let got: Vec<String> = match input.validate() {
            Ok(_) => vec![],
            Err(e) => e.0.into_iter().map(|f| f.field).collect(),
        };
        assert_eq!(got, expect_fields);
    }

    #[test]
    fn validation_names_each_bad_field() {
        check(serde_json::json!({}), &[]);
        check(serde_json::json!({"id": "Bad Id"}), &["id"]);
        check(serde_json::json!({"title": "  "}), &["title"]);
        check(
            serde_json::json!({"keywords": ["ok", ""]}),
            &["keywords[1]"],
        );
        check(
            serde_json::json!({"column_classes": {"personal": ["name"]}}),
            &["personal_data"],
        );
        check(
            serde_json::json!({"structure": "analogue"}),
            &["analogue_conversion"],
        );
        check(
            serde_json::json!({"temporal_coverage": {"start": "2018-01-01", "end": "2017-01-01"}}),
            &["temporal_coverage.end"],
        );
        check(
            serde_json::json!({"spatial_coverage": {"name": "", "uri": "not a url", "bbox": "2,41,3"}}),
            &[
                "spatial_coverage.name",
                "spatial_coverage.uri",
                "spatial_coverage.bbox",
            ],
        );
        check(
            serde_json::json!({"spatial_coverage": {"name": "Upside down", "bbox": "2,42,3,41"}}),
            &["spatial_coverage.bbox"],
        );
        check(
            serde_json::json!({"spatial_coverage": {"name": "Off the map", "bbox": "-190,41,3,42"}}),
            &["spatial_coverage.bbox"],
        );
        check(
            serde_json::json!({"themes": ["energy", "energy"]}),
            &["themes"],
        );
        check(
            serde_json::json!({"roles": [{"organization_id": "a-b", "role": "creator"}, {"organization_id": "a-b", "role": "creator"}]}),
            &["roles[1]"],
        );
    }

    #[test]
    fn unknown_fields_and_bad_enums_do_not_deserialize() {
        let mut v = minimal();
        v["colour"] = serde_json::json!("red");
        assert!(serde_json::from_value::<DatasetInput>(v).is_err());
        let mut v = minimal();
        v["spectrum"] = serde_json::json!("secret");
        assert!(serde_json::from_value::<DatasetInput>(v).is_err());
    }

    #[test]
    fn metadata_round_trips_through_input() {
        let input: DatasetInput =
            serde_json::from_value(minimal()).unwrap_or_else(|e| panic!("{e}"));
        let (_, m) = input.clone().validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.to_input(), input);
    }

    #[test]
    fn spectrum_stringency_orders_open_to_closed() {
        let order: Vec<_> = Spectrum::ALL.iter().map(|s| s.stringency()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }
}
