//! Access governance (R-ACC-2 … R-ACC-8): purposes, access levels, requests,
//! trustees' votes and the data sharing agreements they make.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validation::ValidationErrors;

/// Whether a purpose is what the data was collected for, or a re-use (R-ACC-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurposeKind {
    /// The purposes a city collects data for: services, operations, emergencies, engagement.
    Primary,
    /// Re-use: research, innovation, commercial use. The most stringent rules apply.
    Secondary,
}

impl PurposeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PurposeKind::Primary => "primary",
            PurposeKind::Secondary => "secondary",
        }
    }
}

/// The kind of insight a use seeks (R-ACC-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Insight {
    /// Running a service day to day.
    Operational,
    /// Life, safety or continuity depends on it.
    Critical,
    /// Understanding: statistics, evaluation, research.
    Analytical,
    /// Planning and policy.
    Strategic,
}

/// One purpose of the trust's taxonomy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Purpose {
    /// Stable id, as reads and requests name it (`research`).
    pub id: String,
    pub name: String,
    pub kind: PurposeKind,
    pub insight: Insight,
    pub description: String,
    /// Whether the use is commercial (it then goes to public comment first).
    pub commercial: bool,
}

/// The taxonomy a new trust starts with (contract: these ids exist).
pub fn default_purposes() -> Vec<Purpose> {
    let p = |id: &str, name: &str, kind, insight, commercial, description: &str| Purpose {
        id: id.into(),
        name: name.into(),
        kind,
        insight,
        description: description.into(),
        commercial,
    };
    use Insight::*;
    use PurposeKind::*;
    vec![
        p(
            "service-delivery",
            "Service delivery",
            Primary,
            Operational,
            false,
            "Providing a public service to residents: benefits, housing, care, waste collection.",
        ),
        p(
            "city-operations",
            "City operations",
            Primary,
            Operational,
            false,
            "Running the city's assets and networks: roads, buildings, energy, transport.",
        ),
        p(
            "emergency",
            "Emergency",
            Primary,
            Critical,
            false,
            "Protecting life and property in an emergency: floods, fires, heatwaves, outbreaks.",
        ),
        p(
            "citizen-engagement",
            "Citizen engagement",
            Primary,
            Strategic,
            false,
            "Informing residents and involving them in decisions about their city.",
        ),
        p(
            "research",
            "Research",
            Secondary,
            Analytical,
            false,
            "Studies by universities and public bodies whose findings are published.",
        ),
        p(
            "innovation",
            "Innovation",
            Secondary,
            Strategic,
            false,
            "Trying new services or technologies with partners, for public benefit.",
        ),
        p(
            "commercial",
            "Commercial",
            Secondary,
            Analytical,
            true,
            "Use by a business for its own products or profit.",
        ),
    ]
}

/// What a decision lets someone see of a dataset (R-ACC-3), from least to most.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    /// The catalogue entry only.
    Metadata,
    /// Whether a record exists, nothing more.
    Index,
    /// Counts and sums with small numbers suppressed.
    Aggregate,
    /// Aggregates with differentially private noise.
    DpAggregate,
    /// Rows no one can be re-identified from.
    Anonymised,
    /// Rows with identifiers replaced by pseudonyms particular to the agreement.
    Pseudonymised,
    /// Rows as stored.
    Identified,
}

impl AccessLevel {
    pub const ALL: [AccessLevel; 7] = [
        AccessLevel::Metadata,
        AccessLevel::Index,
        AccessLevel::Aggregate,
        AccessLevel::DpAggregate,
        AccessLevel::Anonymised,
        AccessLevel::Pseudonymised,
        AccessLevel::Identified,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Metadata => "metadata",
            AccessLevel::Index => "index",
            AccessLevel::Aggregate => "aggregate",
            AccessLevel::DpAggregate => "dp_aggregate",
            AccessLevel::Anonymised => "anonymised",
            AccessLevel::Pseudonymised => "pseudonymised",
            AccessLevel::Identified => "identified",
        }
    }
    pub fn parse(s: &str) -> Option<AccessLevel> {
        AccessLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }
    /// 0 (metadata) … 6 (identified rows): how much a level shows, for
    /// sorting and display. A grant at one rank does **not** cover every
    /// lower one: see [`AccessLevel::covers`].
    pub fn rank(self) -> i64 {
        self as i64
    }
    /// Whether a grant at `self` lets its holder read at `asked`: only when
    /// everything `asked` serves could be computed from what `self` serves.
    /// Levels are not a total order — exact thresholded tables show what a
    /// spent differential-privacy budget does not, anonymised rows are not
    /// exact tables, and only identified rows answer whether a given
    /// record exists:
    ///
    /// | grant | covers |
    /// |---|---|
    /// | identified | every level |
    /// | pseudonymised | pseudonymised, anonymised, aggregate, dp_aggregate, metadata |
    /// | anonymised | anonymised, metadata |
    /// | dp_aggregate | dp_aggregate, metadata |
    /// | aggregate | aggregate, metadata |
    /// | index | index, metadata |
    /// | metadata | metadata |
    pub fn covers(self, asked: AccessLevel) -> bool {
        use AccessLevel::*;
        self == asked
            || asked == Metadata
            || match self {
                Identified => true,
                Pseudonymised => matches!(asked, Anonymised | Aggregate | DpAggregate),
                _ => false,
            }
    }
    pub fn label(self) -> &'static str {
        match self {
            AccessLevel::Metadata => "Metadata only",
            AccessLevel::Index => "Index only",
            AccessLevel::Aggregate => "Thresholded aggregates",
            AccessLevel::DpAggregate => "Differentially private aggregates",
            AccessLevel::Anonymised => "Anonymised rows",
            AccessLevel::Pseudonymised => "Pseudonymised rows",
            AccessLevel::Identified => "Identified rows",
        }
    }
    /// Whether content is served at this level: rows (identified,
    /// pseudonymised, anonymised) and aggregates (thresholded, DP). A
    /// metadata-only grant carries no content (the catalogue entry is
    /// public), and index look-ups are not built: both are refused.
    pub fn served(self) -> bool {
        !matches!(self, AccessLevel::Metadata)
    }
    /// An aggregate level (served as tables of counts, never as rows).
    pub fn is_aggregate(self) -> bool {
        matches!(self, AccessLevel::Aggregate | AccessLevel::DpAggregate)
    }
    /// Row-level access to the data itself.
    pub fn is_row_level(self) -> bool {
        matches!(
            self,
            AccessLevel::Anonymised | AccessLevel::Pseudonymised | AccessLevel::Identified
        )
    }
}

/// How data will flow (R-ACC-4): regularly, or once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Routine, pre-planned sharing for an established purpose.
    #[default]
    Systematic,
    /// A single exceptional disclosure.
    OneOff,
}

/// One question of a checklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Question {
    pub id: &'static str,
    pub text: &'static str,
}

const SYSTEMATIC: [Question; 5] = [
    Question {
        id: "justified",
        text: "Why is sharing this data needed for the purpose, and what would happen without it?",
    },
    Question {
        id: "benefits_and_risks",
        text: "Who benefits, how, and what could go wrong for the people the data is about?",
    },
    Question {
        id: "proportionate",
        text: "Why is this much data, at this level of detail, for this long, no more than the purpose needs?",
    },
    Question {
        id: "without_personal_data",
        text: "Could the purpose be met with aggregated or anonymised data instead? If not, why not?",
    },
    Question {
        id: "power_to_share",
        text: "Which law, licence or mandate allows your organisation to receive and use this data?",
    },
];

const ONE_OFF: [Question; 7] = [
    Question {
        id: "justified",
        text: "Why must this data be shared now, once, rather than through a routine arrangement?",
    },
    Question {
        id: "serious_harm",
        text: "Is there a risk of serious harm if the data is not shared, or if it is? Describe it.",
    },
    Question {
        id: "exemption",
        text: "Does a legal exemption or emergency power apply? Name it, or say none.",
    },
    Question {
        id: "power_to_share",
        text: "Which law, licence or mandate allows your organisation to receive and use this data?",
    },
    Question {
        id: "necessary_only",
        text: "Which fields do you need, and why is each necessary?",
    },
    Question {
        id: "fact_or_opinion",
        text: "Is the data fact, or does it include opinions or judgements about people?",
    },
    Question {
        id: "inform_individuals",
        text: "Will the people concerned be told about this sharing? How, or why not?",
    },
];

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Systematic => "systematic",
            Sharing::OneOff => "one_off",
        }
    }
    /// The questions a request of this kind answers (R-ACC-4).
    pub fn checklist(self) -> &'static [Question] {
        match self {
            Sharing::Systematic => &SYSTEMATIC,
            Sharing::OneOff => &ONE_OFF,
        }
    }
}

/// How value flows back for the data (the toolkit's exchange patterns, R-ACC-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExchangePattern {
    /// Both parties share data with each other.
    MutualExchange,
    /// Data in exchange for another benefit (a service, insight, payment).
    OtherBenefit,
    /// No immediate return; a longer-term public benefit.
    #[default]
    LongerTermBenefit,
}

/// The terms a requester proposes and an agreement records (R-ACC-6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// What people are told about the sharing, and how.
    #[serde(default)]
    pub communication: String,
    /// How the recipient keeps the data secure.
    #[serde(default)]
    pub security_measures: String,
    /// How the people concerned can get at their data held by the recipient.
    #[serde(default)]
    pub subject_access: String,
    /// How long the recipient keeps the data after the agreement ends, in days.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// How the data is deleted at the end.
    #[serde(default)]
    pub deletion: String,
    #[serde(default)]
    pub exchange_pattern: ExchangePattern,
    /// Licence the data is used under (an SPDX id or a URL).
    #[serde(default)]
    pub licence: Option<String>,
    /// Any charge, as text ("none", "€200 per year").
    #[serde(default)]
    pub charge: Option<String>,
}

fn default_retention_days() -> u32 {
    30
}

impl Default for Terms {
    fn default() -> Terms {
        Terms {
            communication: String::new(),
            security_measures: String::new(),
            subject_access: String::new(),
            retention_days: default_retention_days(),
            deletion: String::new(),
            exchange_pattern: ExchangePattern::default(),
            licence: None,
            charge: None,
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Saved, not yet submitted.
    Draft,
    /// Published for public comment before the trustees vote.
    PublicComment,
    /// Waiting for the trustees' votes.
    UnderReview,
    /// Granted: an agreement exists.
    Approved,
    /// The trustees voted it down.
    Denied,
    /// Refused by the charter without a vote (closed data, for example).
    Refused,
    /// Withdrawn by the requester.
    Withdrawn,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 7] = [
        RequestStatus::Draft,
        RequestStatus::PublicComment,
        RequestStatus::UnderReview,
        RequestStatus::Approved,
        RequestStatus::Denied,
        RequestStatus::Refused,
        RequestStatus::Withdrawn,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Draft => "draft",
            RequestStatus::PublicComment => "public_comment",
            RequestStatus::UnderReview => "under_review",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Refused => "refused",
            RequestStatus::Withdrawn => "withdrawn",
        }
    }
    pub fn parse(s: &str) -> Option<RequestStatus> {
        RequestStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }
    /// Whether the request is decided (no more votes or edits).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestStatus::Approved
                | RequestStatus::Denied
                | RequestStatus::Refused
                | RequestStatus::Withdrawn
        )
    }
}

/// Body of `POST /api/v1/access-requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccessRequest {
    pub dataset_ids: Vec<String>,
    /// A purpose id of the taxonomy (`GET /api/v1/purposes`).
    pub purpose: String,
    /// An access level id: metadata, index, aggregate, dp_aggregate, anonymised, pseudonymised, identified.
    pub level: String,
    /// First day of use (YYYY-MM-DD).
    pub starts_on: String,
    /// Last day of use (YYYY-MM-DD).
    pub ends_on: String,
    /// The benefit the use brings, and to whom.
    pub benefit: String,
    #[serde(default)]
    pub sharing: Sharing,
    /// Answers to the checklist of `sharing`, by question id.
    #[serde(default)]
    pub checklist: BTreeMap<String, String>,
    /// The organisation the requester acts for (one of theirs); none for an individual.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Ask for a standing agreement for every member organisation of this group.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Columns needed (empty: all).
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub terms: Terms,
    /// Renew or amend this agreement (its id): once decided, the request
    /// becomes the agreement's next version instead of a new agreement.
    #[serde(default)]
    pub amends: Option<String>,
    /// Save without submitting.
    #[serde(default)]
    pub draft: bool,
}

/// A request checked field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRequest {
    pub level: AccessLevel,
    /// Days since 1970-01-01.
    pub starts_on: i64,
    pub ends_on: i64,
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_day(s: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &format).ok()?;
    Some(i64::from(date.to_julian_day()) - 2_440_588)
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub fn format_day(day: i64) -> String {
    i32::try_from(day + 2_440_588)
        .ok()
        .and_then(|j| time::Date::from_julian_day(j).ok())
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .unwrap_or_default()
}

impl NewAccessRequest {
    /// Check the request against the taxonomy; a draft may leave the checklist
    /// and the benefit unfinished, a submission may not.
    pub fn validate(
        &self,
        purposes: &[Purpose],
        today: i64,
    ) -> Result<CheckedRequest, ValidationErrors> {
        let mut e = ValidationErrors::default();
        if self.dataset_ids.is_empty() {
            e.push("dataset_ids", "name at least one dataset");
        }
        if self.dataset_ids.len() > 100 {
            e.push("dataset_ids", "at most 100 datasets in one request");
        }
        for (i, d) in self.dataset_ids.iter().enumerate() {
            e.slug(&format!("dataset_ids[{i}]"), d);
            if self.dataset_ids[..i].contains(d) {
                e.push(format!("dataset_ids[{i}]"), "named twice");
            }
        }
        if !purposes.iter().any(|p| p.id == self.purpose) {
            let ids: Vec<&str> = purposes.iter().map(|p| p.id.as_str()).collect();
            e.push(
                "purpose",
                format!("unknown purpose; one of: {}", ids.join(", ")),
            );
        }
        let level = AccessLevel::parse(&self.level);
        if level.is_none() {
            let ids: Vec<&str> = AccessLevel::ALL.iter().map(|l| l.as_str()).collect();
            e.push(
                "level",
                format!("unknown access level; one of: {}", ids.join(", ")),
            );
        }
        let starts = parse_day(&self.starts_on);
        let ends = parse_day(&self.ends_on);
        if starts.is_none() {
            e.push("starts_on", "must be a date: YYYY-MM-DD");
        }
        if ends.is_none() {
            e.push("ends_on", "must be a date: YYYY-MM-DD");
        }
        if let (Some(s), Some(t)) = (starts, ends) {
            if t < s {
                e.push("ends_on", "must not be before starts_on");
            } else if t - s > 5 * 366 {
                e.push("ends_on", "an agreement lasts at most five years; renew it");
            } else if !self.draft && t < today {
                e.push("ends_on", "is in the past");
            }
        }
        e.max_len("benefit", &self.benefit, 5000);
        if !self.draft && self.benefit.trim().is_empty() {
            e.push("benefit", "say what benefit the use brings, and to whom");
        }
        let questions = self.sharing.checklist();
        for (id, answer) in &self.checklist {
            let field = format!("checklist.{id}");
            if !questions.iter().any(|q| q.id == id) {
                let ids: Vec<&str> = questions.iter().map(|q| q.id).collect();
                e.push(
                    &field,
                    format!(
                        "not a question of the {} checklist; its questions: {}",
                        self.sharing.as_str(),
                        ids.join(", ")
                    ),
                );
            }
            e.max_len(&field, answer, 5000);
        }
        if !self.draft {
            for q in questions {
                if self.checklist.get(q.id).is_none_or(|a| a.trim().is_empty()) {
                    e.push(format!("checklist.{}", q.id), format!("answer: {}", q.text));
                }
            }
        }
        if let Some(o) = &self.organization_id {
            e.slug("organization_id", o);
        }
        if let Some(g) = &self.group_id {
            e.slug("group_id", g);
        }
        if self.columns.len() > 1000 {
            e.push("columns", "at most 1000 columns");
        }
        for (i, c) in self.columns.iter().enumerate() {
            e.required_text(&format!("columns[{i}]"), c, 200);
        }
        for (field, text) in [
            ("terms.communication", &self.terms.communication),
            ("terms.security_measures", &self.terms.security_measures),
            ("terms.subject_access", &self.terms.subject_access),
            ("terms.deletion", &self.terms.deletion),
        ] {
            e.max_len(field, text, 5000);
        }
        if self.terms.retention_days > 3650 {
            e.push("terms.retention_days", "at most 3650 days");
        }
        e.into_result()?;
        Ok(CheckedRequest {
            level: level.unwrap_or(AccessLevel::Metadata),
            starts_on: starts.unwrap_or(0),
            ends_on: ends.unwrap_or(0),
        })
    }
}

/// A trustee's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoteChoice {
    Approve,
    Deny,
}

/// Body of `POST /api/v1/access-requests/{id}/votes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVote {
    pub vote: VoteChoice,
    pub reason: String,
    /// A conflict of interest, declared: the vote is recorded but does not count.
    #[serde(default)]
    pub conflict_of_interest: Option<String>,
    /// A closed consultation of residents that informed this vote.
    #[serde(default)]
    pub consultation_id: Option<String>,
}

impl NewVote {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.required_text("reason", &self.reason, 5000);
        if let Some(c) = &self.conflict_of_interest {
            e.required_text("conflict_of_interest", c, 5000);
        }
        e.into_result()
    }
}

/// A recorded vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Vote {
    pub trustee: String,
    pub vote: VoteChoice,
    pub reason: String,
    pub conflict_of_interest: Option<String>,
    /// The consultation of residents the vote cites, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consultation_id: Option<String>,
    #[schema(format = DateTime)]
    pub at: String,
}

/// The outcome the votes so far give, under a quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    Approved,
    Denied,
    /// Not enough counting votes yet.
    Open,
    /// Too few trustees are free of a conflict to reach even a majority of
    /// the configured quorum: the board must be completed before it can decide.
    Stuck,
}

/// How many counting votes decide, when `trustees` may vote on a request
/// (active trustees other than the requester) and `conflicted` of them
/// have declared a conflict of interest: the configured quorum, lowered to
/// the trustees left free to vote, but never below a majority of the
/// quorum. `None` when even that cannot be reached.
pub fn votes_needed(quorum: usize, trustees: usize, conflicted: usize) -> Option<usize> {
    let quorum = quorum.max(1);
    let free = trustees.saturating_sub(conflicted);
    let needed = quorum.min(free);
    (needed > quorum / 2).then_some(needed)
}

/// Count votes: those with a declared conflict do not count; once
/// [`votes_needed`] counting votes are in, the majority decides and a tie
/// denies (deny by default).
pub fn tally(votes: &[Vote], quorum: usize, trustees: usize) -> Tally {
    let counting: Vec<&Vote> = votes
        .iter()
        .filter(|v| v.conflict_of_interest.is_none())
        .collect();
    let conflicted = votes.len() - counting.len();
    let Some(needed) = votes_needed(quorum, trustees, conflicted) else {
        return Tally::Stuck;
    };
    if counting.len() < needed {
        return Tally::Open;
    }
    let approve = counting
        .iter()
        .filter(|v| v.vote == VoteChoice::Approve)
        .count();
    if approve * 2 > counting.len() {
        Tally::Approved
    } else {
        Tally::Denied
    }
}

/// A comment from the public on a request published for comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Comment {
    /// The commenter's display name as they chose to show it.
    pub by: String,
    pub text: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// How a request was decided, and why (R-ACC-5 "record your decision").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecisionRecord {
    /// `charter` (decided by its rules without a vote) or `trustees`.
    pub by: String,
    /// The charter rule that decided, when the charter did.
    pub rule: Option<String>,
    pub reason: String,
    /// Whether the people the data is about consented to this use.
    pub with_consent: bool,
    /// The charter version in force.
    pub charter_version: i64,
    #[schema(format = DateTime)]
    pub at: String,
}

/// An access request with where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessRequest {
    pub id: String,
    pub requester: String,
    /// The agent who made the request for the requester, and their authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::account::Delegation>,
    /// The agreement this request renews or amends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amends: Option<String>,
    pub organization_id: Option<String>,
    pub group_id: Option<String>,
    pub dataset_ids: Vec<String>,
    pub purpose: String,
    pub level: AccessLevel,
    pub starts_on: String,
    pub ends_on: String,
    pub benefit: String,
    pub sharing: Sharing,
    pub checklist: BTreeMap<String, String>,
    pub columns: Vec<String>,
    pub terms: Terms,
    pub status: RequestStatus,
    /// Risk flags the trustees see: personal data, row level, commercial, secondary use.
    pub risk_flags: Vec<String>,
    /// End of the public comment period, when there is one.
    pub comment_until: Option<String>,
    pub votes: Vec<Vote>,
    pub comments: Vec<Comment>,
    pub decision: Option<DecisionRecord>,
    /// The agreement an approval made.
    pub agreement_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// Where an agreement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgreementStatus {
    Active,
    /// Replaced by a newer version (an amendment or renewal).
    Superseded,
    /// Ended early by the trustees or the parties.
    Retired,
}

impl AgreementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgreementStatus::Active => "active",
            AgreementStatus::Superseded => "superseded",
            AgreementStatus::Retired => "retired",
        }
    }
    pub fn parse(s: &str) -> Option<AgreementStatus> {
        [
            AgreementStatus::Active,
            AgreementStatus::Superseded,
            AgreementStatus::Retired,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// A data sharing agreement (R-ACC-6): what an approved request grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Agreement {
    /// Stable id (`dsa-…`), the same across versions.
    pub id: String,
    pub version: i64,
    pub status: AgreementStatus,
    pub request_id: String,
    /// The organisations that provide the data (the datasets' owners).
    pub providers: Vec<String>,
    /// Who receives it: `organization:<id>`, `group:<id>` (a standing
    /// agreement for every member organisation) or `user:<name>`.
    pub recipient: String,
    pub dataset_ids: Vec<String>,
    /// Columns shared (empty: all).
    pub columns: Vec<String>,
    pub purpose: String,
    pub level: AccessLevel,
    pub starts_on: String,
    pub ends_on: String,
    pub sharing: Sharing,
    pub terms: Terms,
    pub decision: DecisionRecord,
    /// When the recipient attested deletion at the end.
    pub deletion_attested_at: Option<String>,
    /// What the recipient attested (how and when the data was deleted).
    #[serde(default)]
    pub deletion_statement: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl Agreement {
    /// The last day of use (days since the epoch): the end date, or the day
    /// before retirement.
    pub fn last_day(&self) -> i64 {
        let end = parse_day(&self.ends_on).unwrap_or(i64::MAX);
        if self.status == AgreementStatus::Retired {
            let retired = self
                .decision
                .at
                .get(..10)
                .and_then(parse_day)
                .unwrap_or(end);
            end.min(retired)
        } else {
            end
        }
    }
    /// The day by which deletion must be attested: the end plus the retention period.
    pub fn attestation_due(&self) -> i64 {
        self.last_day()
            .saturating_add(i64::from(self.terms.retention_days))
    }
    /// Whether the recipient is late attesting deletion on `today`.
    pub fn attestation_overdue(&self, today: i64) -> bool {
        self.status != AgreementStatus::Superseded
            && self.deletion_attested_at.is_none()
            && today > self.attestation_due()
    }

    /// Whether the agreement grants `purpose` at `level` (a level its own
    /// covers: [`AccessLevel::covers`]) on `day` (days since the epoch).
    pub fn covers(&self, dataset_id: &str, purpose: &str, level: AccessLevel, day: i64) -> bool {
        self.status == AgreementStatus::Active
            && self.purpose == purpose
            && self.level.covers(level)
            && self.dataset_ids.iter().any(|d| d == dataset_id)
            && parse_day(&self.starts_on).is_some_and(|s| s <= day)
            && parse_day(&self.ends_on).is_some_and(|e| day <= e)
    }
}

impl AccessRequest {
    /// Whether `actor` sees the people named in this request: the requester,
    /// the agent who asked for them, the trustees and administrators.
    pub fn names_visible_to(&self, actor: &crate::account::Actor) -> bool {
        let Some(username) = actor.username() else {
            return false;
        };
        username == self.requester
            || self.agent.as_ref().is_some_and(|a| a.agent == username)
            || crate::authz::sees_names_in_requests(actor)
    }

    /// The request as the public sees it (the register names organisations
    /// and roles, as the log does, never people): the requester by their
    /// organisation or as "an individual", an agent by the kind of authority
    /// only, each trustee's vote without the trustee's name.
    pub fn without_names(mut self) -> AccessRequest {
        self.requester = match &self.organization_id {
            Some(o) => format!("a member of {o}"),
            None => "an individual".to_string(),
        };
        if let Some(agent) = self.agent.as_mut() {
            agent.agent = "an agent".to_string();
            agent.agent_display_name = "an agent".to_string();
        }
        for (i, v) in self.votes.iter_mut().enumerate() {
            v.trustee = format!("trustee {}", i + 1);
        }
        self
    }
}

impl Agreement {
    /// Whether the agreement shares every one of `columns` (an empty list
    /// asks for every column, which only an agreement of every column shares).
    pub fn shares_columns(&self, columns: &[String]) -> bool {
        self.columns.is_empty()
            || (!columns.is_empty() && columns.iter().all(|c| self.columns.contains(c)))
    }

    /// Whether a request asks for nothing this agreement does not already
    /// give — a level it covers, columns it shares, a period inside its own
    /// — so that granting it without a vote cannot widen anyone's access.
    pub fn bounds(
        &self,
        level: AccessLevel,
        columns: &[String],
        starts_on: &str,
        ends_on: &str,
    ) -> bool {
        let within = match (
            parse_day(&self.starts_on),
            parse_day(&self.ends_on),
            parse_day(starts_on),
            parse_day(ends_on),
        ) {
            (Some(s), Some(e), Some(rs), Some(re)) => s <= rs && re <= e,
            _ => false,
        };
        self.level.covers(level) && self.shares_columns(columns) && within
    }
}

/// The one agreement a read at `level` is made under, of those in force for
/// the reader: one that covers the level, sharing the most columns (every
/// column first), the lowest id on a tie — never a mix of several. Choosing
/// the widest, and only among agreements in force, means that retiring an
/// agreement can only ever narrow what a reader gets.
pub fn agreement_for_read(agreements: Vec<Agreement>, level: AccessLevel) -> Option<Agreement> {
    agreements
        .into_iter()
        .filter(|a| a.level.covers(level))
        .min_by(|a, b| {
            let width = |x: &Agreement| (!x.columns.is_empty(), usize::MAX - x.columns.len());
            width(a).cmp(&width(b)).then_with(|| a.id.cmp(&b.id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_cover_only_what_can_be_computed_from_them() {
        use AccessLevel::*;
        assert!(Identified.covers(Index));
        assert!(Identified.covers(DpAggregate));
        assert!(Pseudonymised.covers(Aggregate));
        assert!(
            !Pseudonymised.covers(Index),
            "a pseudonym does not say who is there"
        );
        assert!(
            !DpAggregate.covers(Aggregate),
            "exact tables are not a noisy statistic"
        );
        assert!(!Aggregate.covers(DpAggregate));
        assert!(
            !Anonymised.covers(Aggregate),
            "exact tables are not generalised rows"
        );
        assert!(!Anonymised.covers(Index));
        assert!(!Index.covers(Aggregate));
        for l in AccessLevel::ALL {
            assert!(l.covers(l));
            assert!(l.covers(Metadata));
            assert!(Identified.covers(l));
        }
    }

    fn request() -> NewAccessRequest {
        NewAccessRequest {
            dataset_ids: vec!["seattle-building-energy".into()],
            purpose: "research".into(),
            level: "identified".into(),
            starts_on: "2026-03-01".into(),
            ends_on: "2026-12-31".into(),
            benefit: "Find the buildings to retrofit first.".into(),
            sharing: Sharing::Systematic,
            checklist: SYSTEMATIC
                .iter()
                .map(|q| (q.id.to_string(), "Answered.".to_string()))
                .collect(),
            organization_id: Some("uw".into()),
            group_id: None,
            columns: vec![],
            terms: Terms::default(),
            amends: None,
            draft: false,
        }
    }

    fn fields(r: Result<CheckedRequest, ValidationErrors>) -> Vec<String> {
        r.err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2026-03-01"), Some(20513));
        assert_eq!(format_day(20513), "2026-03-01");
        assert_eq!(parse_day("2026-02-30"), None);
    }

    #[test]
    fn a_submitted_request_answers_every_question() {
        let purposes = default_purposes();
        let today = parse_day("2026-03-01").unwrap_or(0);
        assert!(request().validate(&purposes, today).is_ok());
        let mut r = request();
        r.checklist.remove("proportionate");
        r.checklist.insert("made_up".into(), "x".into());
        r.purpose = "marketing".into();
        r.level = "rows".into();
        r.ends_on = "2026-02-01".into();
        assert_eq!(
            fields(r.validate(&purposes, today)),
            [
                "purpose",
                "level",
                "ends_on",
                "checklist.made_up",
                "checklist.proportionate"
            ]
        );
        // A draft may be unfinished, but not wrong.
        let mut d = request();
        d.draft = true;
        d.checklist.clear();
        d.benefit.clear();
        assert!(d.validate(&purposes, today).is_ok());
        d.checklist.insert("serious_harm".into(), "x".into());
        assert_eq!(
            fields(d.validate(&purposes, today)),
            ["checklist.serious_harm"]
        );
    }

    #[test]
    fn conflicted_votes_do_not_count_and_a_tie_denies() {
        let v = |vote, conflict: bool| Vote {
            trustee: "t".into(),
            vote,
            reason: "r".into(),
            conflict_of_interest: conflict.then(|| "my employer".into()),
            consultation_id: None,
            at: String::new(),
        };
        use VoteChoice::*;
        // Board of five, quorum three.
        assert_eq!(
            tally(&[v(Approve, false), v(Approve, true)], 3, 5),
            Tally::Open
        );
        assert_eq!(
            tally(
                &[v(Approve, false), v(Approve, false), v(Deny, false)],
                3,
                5
            ),
            Tally::Approved
        );
        assert_eq!(
            tally(&[v(Approve, false), v(Deny, false)], 2, 5),
            Tally::Denied
        );
        // Board of three, quorum three: a declared conflict lowers the votes
        // needed to the two trustees left, instead of leaving the request open for ever.
        assert_eq!(
            tally(&[v(Approve, false), v(Approve, true)], 3, 3),
            Tally::Open
        );
        assert_eq!(
            tally(
                &[v(Approve, false), v(Approve, true), v(Approve, false)],
                3,
                3
            ),
            Tally::Approved
        );
        assert_eq!(
            tally(&[v(Approve, false), v(Approve, true), v(Deny, false)], 3, 3),
            Tally::Denied
        );
        // Two of three conflicted: one trustee may not decide alone.
        assert_eq!(
            tally(
                &[v(Approve, true), v(Approve, true), v(Approve, false)],
                3,
                3
            ),
            Tally::Stuck
        );
        assert_eq!(votes_needed(3, 3, 0), Some(3));
        assert_eq!(votes_needed(3, 3, 1), Some(2));
        assert_eq!(votes_needed(3, 3, 2), None);
        assert_eq!(votes_needed(5, 9, 4), Some(5));
        assert_eq!(votes_needed(5, 4, 0), Some(4));
        assert_eq!(
            votes_needed(5, 2, 0),
            None,
            "a board smaller than a majority of the quorum"
        );
    }

    #[test]
    fn levels_are_ordered_and_all_but_metadata_are_served() {
        assert!(AccessLevel::Identified > AccessLevel::Pseudonymised);
        assert!(AccessLevel::Metadata < AccessLevel::Index);
        let refused: Vec<_> = AccessLevel::ALL.iter().filter(|l| !l.served()).collect();
        assert_eq!(refused, [&AccessLevel::Metadata]);
        for l in AccessLevel::ALL {
            assert_eq!(AccessLevel::parse(l.as_str()), Some(l));
        }
    }
}
