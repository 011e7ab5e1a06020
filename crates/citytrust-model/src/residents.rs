//! Residents in control of their data (R-CIT-1 … R-CIT-8): the lawful basis a
//! personal dataset is used on, consent and objection, links between an
//! account and the records about that person, subject requests and their
//! deadlines, and the ISO/IEC TS 27560 consent record.
//!
//! No IO, no clock: times and days come in as arguments.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ValidationErrors;
use crate::validation::is_slug;

/// Why the trust may use a personal dataset for a purpose (GDPR art. 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum LawfulBasis {
    /// The person agreed, for this purpose and recipient. Reads include only
    /// those who did (and have not withdrawn).
    #[default]
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    /// A task in the public interest. Reads leave out those who objected.
    PublicTask,
    /// Reads leave out those who opted out.
    LegitimateInterests,
}

impl LawfulBasis {
    pub const ALL: [LawfulBasis; 6] = [
        LawfulBasis::Consent,
        LawfulBasis::Contract,
        LawfulBasis::LegalObligation,
        LawfulBasis::VitalInterests,
        LawfulBasis::PublicTask,
        LawfulBasis::LegitimateInterests,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            LawfulBasis::Consent => "consent",
            LawfulBasis::Contract => "contract",
            LawfulBasis::LegalObligation => "legal_obligation",
            LawfulBasis::VitalInterests => "vital_interests",
            LawfulBasis::PublicTask => "public_task",
            LawfulBasis::LegitimateInterests => "legitimate_interests",
        }
    }
    pub fn parse(s: &str) -> Option<LawfulBasis> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }
    /// In words a resident understands.
    pub fn label(self) -> &'static str {
        match self {
            LawfulBasis::Consent => "only with your consent",
            LawfulBasis::Contract => "to carry out a contract with you",
            LawfulBasis::LegalObligation => "because the law requires it",
            LawfulBasis::VitalInterests => "to protect someone's life",
            LawfulBasis::PublicTask => "for a public task (you may object)",
            LawfulBasis::LegitimateInterests => "for a legitimate interest (you may opt out)",
        }
    }
    /// Which subjects a read on this basis includes.
    pub fn filter(self) -> SubjectRule {
        match self {
            LawfulBasis::Consent => SubjectRule::OnlyConsenting,
            LawfulBasis::PublicTask | LawfulBasis::LegitimateInterests => {
                SubjectRule::AllButObjecting
            }
            LawfulBasis::Contract | LawfulBasis::LegalObligation | LawfulBasis::VitalInterests => {
                SubjectRule::All
            }
        }
    }
    /// Whether a resident may object to (opt out of) use on this basis.
    pub fn objectable(self) -> bool {
        self.filter() == SubjectRule::AllButObjecting
    }
}

/// How a read under an agreement selects the subjects whose rows it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRule {
    /// Only subjects with a consent in force for the purpose and recipient.
    OnlyConsenting,
    /// Every subject except those who objected to the purpose.
    AllButObjecting,
    /// Every subject (contract, legal obligation, vital interests; the owner's own reads).
    All,
}

impl SubjectRule {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectRule::OnlyConsenting => "only_consenting",
            SubjectRule::AllButObjecting => "all_but_objecting",
            SubjectRule::All => "all",
        }
    }
    pub fn parse(s: &str) -> Option<SubjectRule> {
        [
            SubjectRule::OnlyConsenting,
            SubjectRule::AllButObjecting,
            SubjectRule::All,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The lawful basis (and its plain-language notice) for one purpose of a
/// personal dataset (R-CIT-7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurposeBasis {
    /// A purpose id of the trust (`research`, `service-planning`, …).
    pub purpose: String,
    pub basis: LawfulBasis,
    /// What this use means for the person, in plain language; shown where consent is asked.
    #[serde(default)]
    pub notice: String,
}

/// What a personal dataset says about the people in it. Absent on data about
/// no one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PersonalTerms {
    /// The column that says whose row it is (a household, a patient, a meter).
    /// Its values are indexed per version so a person's rows are found without a scan.
    pub subject_key: String,
    /// The basis per purpose. A purpose not listed may be read only with consent.
    #[serde(default)]
    pub purposes: Vec<PurposeBasis>,
    /// How long rows are kept (ISO 8601 duration: `P2Y`, `P18M`, `P90D`).
    #[serde(default)]
    pub retention: Option<String>,
    /// Why they are kept that long, in plain language.
    #[serde(default)]
    pub retention_note: Option<String>,
    /// The privacy notice for the dataset as a whole, in plain language.
    #[serde(default)]
    pub notice: String,
}

impl PersonalTerms {
    /// The basis a read for `purpose` rests on (consent when the purpose is not listed).
    pub fn basis_for(&self, purpose: &str) -> LawfulBasis {
        self.purposes
            .iter()
            .find(|p| p.purpose == purpose)
            .map(|p| p.basis)
            .unwrap_or(LawfulBasis::Consent)
    }
    pub fn notice_for(&self, purpose: &str) -> Option<&str> {
        self.purposes
            .iter()
            .find(|p| p.purpose == purpose)
            .map(|p| p.notice.as_str())
            .filter(|n| !n.trim().is_empty())
    }

    pub(crate) fn check(&self, e: &mut ValidationErrors) {
        e.required_text("personal_terms.subject_key", &self.subject_key, 200);
        if self.purposes.len() > 100 {
            e.push("personal_terms.purposes", "has more than 100 entries");
        }
        for (i, p) in self.purposes.iter().enumerate() {
            if !is_slug(&p.purpose) {
                e.push(
                    format!("personal_terms.purposes[{i}].purpose"),
                    "must be a purpose id (lower-case words joined by '-')",
                );
            }
            if self.purposes[..i].iter().any(|q| q.purpose == p.purpose) {
                e.push(
                    format!("personal_terms.purposes[{i}].purpose"),
                    "is listed twice",
                );
            }
            e.max_len(
                &format!("personal_terms.purposes[{i}].notice"),
                &p.notice,
                5000,
            );
        }
        if let Some(r) = &self.retention
            && parse_duration_days(r).is_none()
        {
            e.push(
                "personal_terms.retention",
                "must be an ISO 8601 duration in years, months, weeks or days (P2Y, P18M, P6W, P90D)",
            );
        }
        e.optional_text("personal_terms.retention_note", &self.retention_note, 2000);
        e.max_len("personal_terms.notice", &self.notice, 10_000);
    }
}

/// Days in an ISO 8601 duration of whole years/months/weeks/days (a year is
/// 365 days, a month 30). `None` when it is not one.
pub fn parse_duration_days(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut seen = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            if number.len() > 6 {
                return None;
            }
            continue;
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'Y' => 365,
            'M' => 30,
            'W' => 7,
            'D' => 1,
            _ => return None,
        };
        // Units in order, each once.
        if seen.contains(c) || seen.chars().any(|s| "YMWD".find(s) > "YMWD".find(c)) {
            return None;
        }
        seen.push(c);
        total += n * unit;
    }
    number.is_empty().then_some(total)
}

/// A resident's answer about one dataset and purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceKind {
    /// Agreement to a use that rests on consent.
    #[default]
    Consent,
    /// An objection to (opt-out of) a use on public task or legitimate interests.
    Objection,
    /// Data donated to a public-interest purpose (data altruism, R-CIT-6): a consent
    /// the resident offers without being asked.
    Donation,
}

impl ChoiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChoiceKind::Consent => "consent",
            ChoiceKind::Objection => "objection",
            ChoiceKind::Donation => "donation",
        }
    }
    pub fn parse(s: &str) -> Option<ChoiceKind> {
        [
            ChoiceKind::Consent,
            ChoiceKind::Objection,
            ChoiceKind::Donation,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
    /// Whether, while in force, it lets the resident's rows into a read.
    pub fn includes(self) -> bool {
        !matches!(self, ChoiceKind::Objection)
    }
}

/// Body of `POST /api/v1/me/consents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    pub dataset_id: String,
    /// A purpose id of the trust.
    pub purpose: String,
    /// The organisation that may receive the data; absent: any recipient under
    /// an agreement for this purpose.
    #[serde(default)]
    pub recipient_organization_id: Option<String>,
    /// `consent` (default), `objection` or `donation`.
    #[serde(default)]
    pub kind: ChoiceKind,
    /// A reward offered for sharing, when there is one (R-CIT-6), in words.
    #[serde(default)]
    pub reward: Option<String>,
}

impl NewConsent {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.slug("dataset_id", &self.dataset_id);
        e.slug("purpose", &self.purpose);
        if let Some(r) = &self.recipient_organization_id {
            e.slug("recipient_organization_id", r);
        }
        e.optional_text("reward", &self.reward, 500);
        e.into_result()
    }
}

/// One consent (or objection, or donation) with its history, as the resident sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Consent {
    pub id: String,
    pub kind: ChoiceKind,
    pub dataset_id: String,
    pub purpose: String,
    pub recipient_organization_id: Option<String>,
    pub reward: Option<String>,
    /// RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub given_at: String,
    #[schema(format = DateTime)]
    pub withdrawn_at: Option<String>,
    /// Who gave it: the resident, or an agent "on behalf of" them.
    pub given_by: String,
    pub withdrawn_by: Option<String>,
    /// The ISO/IEC TS 27560 record of the latest change.
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
    /// The record signed by the trust: a C2SP signed note whose key is at
    /// `/ledger/key`. Its first line is `citytrust consent receipt v1`, its
    /// second the record as canonical JSON.
    pub receipt: String,
    /// The transparency-log entries of its changes.
    pub log_entries: Vec<i64>,
}

impl Consent {
    pub fn in_force(&self) -> bool {
        self.withdrawn_at.is_none()
    }
}

/// The kinds of request a resident makes about their data (R-CIT-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRequestKind {
    /// A copy of the data, its purposes, recipients and retention.
    #[default]
    Access,
    /// Correct something wrong; goes to the owner's queue.
    Rectification,
    /// Remove the person's rows from every version.
    Erasure,
}

impl SubjectRequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectRequestKind::Access => "access",
            SubjectRequestKind::Rectification => "rectification",
            SubjectRequestKind::Erasure => "erasure",
        }
    }
    pub fn parse(s: &str) -> Option<SubjectRequestKind> {
        [
            SubjectRequestKind::Access,
            SubjectRequestKind::Rectification,
            SubjectRequestKind::Erasure,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
    pub fn label(self) -> &'static str {
        match self {
            SubjectRequestKind::Access => "a copy of my data",
            SubjectRequestKind::Rectification => "correct my data",
            SubjectRequestKind::Erasure => "erase my data",
        }
    }
}

/// Body of `POST /api/v1/me/subject-access-requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewSubjectRequest {
    /// `access` (default), `rectification` or `erasure`.
    #[serde(default)]
    pub kind: SubjectRequestKind,
    /// The dataset it is about (required for rectification and erasure;
    /// absent for access: every dataset the resident is linked to).
    #[serde(default)]
    pub dataset_id: Option<String>,
    /// What is wrong and what it should say (rectification), or anything the owner should know.
    #[serde(default)]
    pub details: String,
}

impl NewSubjectRequest {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        if let Some(d) = &self.dataset_id {
            e.slug("dataset_id", d);
        } else if self.kind != SubjectRequestKind::Access {
            e.push("dataset_id", "is required for rectification and erasure");
        }
        e.max_len("details", &self.details, 5000);
        if self.kind == SubjectRequestKind::Rectification && self.details.trim().is_empty() {
            e.push("details", "say what is wrong and what it should say");
        }
        e.into_result()
    }
}

/// Where a subject request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRequestStatus {
    Open,
    Answered,
    Refused,
}

impl SubjectRequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectRequestStatus::Open => "open",
            SubjectRequestStatus::Answered => "answered",
            SubjectRequestStatus::Refused => "refused",
        }
    }
}

/// A subject request and its deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectRequest {
    pub id: String,
    pub kind: SubjectRequestKind,
    /// The resident it is about (shown to them and to the owner who answers it, never logged).
    pub username: String,
    pub dataset_id: Option<String>,
    pub details: String,
    pub status: SubjectRequestStatus,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The legal deadline (default: one month after the request).
    #[schema(format = Date)]
    pub due_on: String,
    pub made_by: String,
    #[schema(format = DateTime)]
    pub answered_at: Option<String>,
    pub answered_by: Option<String>,
    /// The owner's answer, or what was done.
    pub answer: Option<String>,
}

/// A link between an account and the records about that person in one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectLink {
    pub dataset_id: String,
    pub subject_key: String,
    /// How it was verified: `link_code` (issued by the owner) or `identity_provider`.
    pub via: String,
    #[schema(format = DateTime)]
    pub linked_at: String,
}

/// Body of `POST /api/v1/me/links`: a one-time code the data owner issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    pub code: String,
}

/// Body of `POST /api/v1/datasets/{id}/link-codes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLinkCode {
    /// The subject key of the person it is for, as in the dataset.
    pub subject_key: String,
    /// Days the code stays valid (default 90, at most 366).
    #[serde(default)]
    pub valid_days: Option<i64>,
}

/// Whether someone born on `birth_day` is under `threshold` years on `today`
/// (days since 1970-01-01).
pub fn is_minor(birth_day: i64, today: i64, threshold: u8) -> bool {
    let (Some(born), Some(now)) = (date_of(birth_day), date_of(today)) else {
        return false;
    };
    let mut age = now.year() - born.year();
    if (now.month() as u8, now.day()) < (born.month() as u8, born.day()) {
        age -= 1;
    }
    age < i32::from(threshold)
}

fn date_of(day: i64) -> Option<time::Date> {
    i32::try_from(day + 2_440_588)
        .ok()
        .and_then(|j| time::Date::from_julian_day(j).ok())
}

/// The facts a consent record is written from.
pub struct RecordFacts<'a> {
    pub record_id: &'a str,
    /// A salted commitment to the person, never their name.
    pub principal_commitment: &'a str,
    pub kind: ChoiceKind,
    pub dataset_id: &'a str,
    pub dataset_title: &'a str,
    pub controller: &'a str,
    pub purpose: &'a str,
    pub purpose_description: &'a str,
    pub basis: LawfulBasis,
    pub recipient: Option<&'a str>,
    pub personal_columns: &'a [String],
    pub retention: Option<&'a str>,
    pub notice: &'a str,
    pub reward: Option<&'a str>,
    /// (event, RFC 3339 time, by: `data_subject` or `agent:<authority kind>`)
    pub events: &'a [(String, String, String)],
    pub in_force: bool,
}

/// The consent record in the information structure of ISO/IEC TS 27560:2023
/// (record header, processing, parties, events), with DPV terms for the
/// lawful basis and state. Field order is fixed, so the JSON is canonical.
pub fn consent_record(f: &RecordFacts<'_>) -> serde_json::Value {
    let state = match (f.kind, f.in_force) {
        (ChoiceKind::Objection, true) => "dpv:ConsentRefused",
        (_, true) => "dpv:ConsentGiven",
        (_, false) => "dpv:ConsentWithdrawn",
    };
    serde_json::json!({
        "schema_version": "ISO/IEC TS 27560:2023",
        "record_id": f.record_id,
        "pii_principal_id": f.principal_commitment,
        "record_type": f.kind.as_str(),
        "state": state,
        "processing": {
            "dataset": f.dataset_id,
            "dataset_title": f.dataset_title,
            "purposes": [{
                "purpose": f.purpose,
                "description": f.purpose_description,
                "lawful_basis": dpv_basis(f.basis),
            }],
            "pii_categories": f.personal_columns,
            "recipients": f.recipient.map(|r| vec![r]).unwrap_or_default(),
            "recipients_note": if f.recipient.is_none() { "any organisation under an agreement for this purpose" } else { "" },
            "storage_duration": f.retention,
            "reward": f.reward,
        },
        "notice": {
            "text": f.notice,
            "language": "en",
        },
        "parties": {
            "controller": f.controller,
        },
        "events": f.events.iter().map(|(event, time, by)| serde_json::json!({
            "event": event, "time": time, "by": by,
        })).collect::<Vec<_>>(),
    })
}

fn dpv_basis(b: LawfulBasis) -> &'static str {
    match b {
        LawfulBasis::Consent => "dpv:Consent",
        LawfulBasis::Contract => "dpv:Contract",
        LawfulBasis::LegalObligation => "dpv:LegalObligation",
        LawfulBasis::VitalInterests => "dpv:VitalInterest",
        LawfulBasis::PublicTask => "dpv:OfficialAuthorityOfController",
        LawfulBasis::LegitimateInterests => "dpv:LegitimateInterest",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_whole_units_in_order() {
        assert_eq!(parse_duration_days("P2Y"), Some(730));
        assert_eq!(parse_duration_days("P1Y6M"), Some(545));
        assert_eq!(parse_duration_days("P90D"), Some(90));
        assert_eq!(parse_duration_days("P6W"), Some(42));
        for bad in [
            "",
            "P",
            "2Y",
            "P2",
            "PY",
            "P1M1Y",
            "P1Y1Y",
            "PT1H",
            "P1.5Y",
            "P9999999D",
        ] {
            assert_eq!(parse_duration_days(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_basis_decides_whom_a_read_includes() {
        assert_eq!(LawfulBasis::Consent.filter(), SubjectRule::OnlyConsenting);
        assert_eq!(
            LawfulBasis::PublicTask.filter(),
            SubjectRule::AllButObjecting
        );
        assert_eq!(
            LawfulBasis::LegitimateInterests.filter(),
            SubjectRule::AllButObjecting
        );
        assert_eq!(LawfulBasis::LegalObligation.filter(), SubjectRule::All);
        let terms = PersonalTerms {
            subject_key: "household".into(),
            purposes: vec![PurposeBasis {
                purpose: "service-planning".into(),
                basis: LawfulBasis::PublicTask,
                notice: "n".into(),
            }],
            ..Default::default()
        };
        assert_eq!(terms.basis_for("service-planning"), LawfulBasis::PublicTask);
        // Anything not declared needs consent.
        assert_eq!(terms.basis_for("research"), LawfulBasis::Consent);
    }

    #[test]
    fn minors_are_under_the_threshold_on_the_day() {
        let day = |s: &str| crate::access::parse_day(s).unwrap();
        assert!(is_minor(day("2010-06-15"), day("2026-06-14"), 16));
        assert!(!is_minor(day("2010-06-15"), day("2026-06-15"), 16));
        assert!(!is_minor(day("1980-01-01"), day("2026-06-15"), 16));
        assert!(is_minor(day("2010-06-15"), day("2026-06-15"), 18));
    }

    #[test]
    fn a_record_names_no_one_and_says_its_state() {
        let events = [(
            "consent_given".to_string(),
            "2026-01-01T00:00:00Z".to_string(),
            "data_subject".to_string(),
        )];
        let f = RecordFacts {
            record_id: "cons-1",
            principal_commitment: "ab12",
            kind: ChoiceKind::Consent,
            dataset_id: "household-electricity",
            dataset_title: "t",
            controller: "city-energy-utility",
            purpose: "research",
            purpose_description: "d",
            basis: LawfulBasis::Consent,
            recipient: Some("city-university"),
            personal_columns: &["household".to_string()],
            retention: Some("P2Y"),
            notice: "n",
            reward: None,
            events: &events,
            in_force: true,
        };
        let r = consent_record(&f);
        assert_eq!(r["state"], "dpv:ConsentGiven");
        assert_eq!(r["pii_principal_id"], "ab12");
        assert_eq!(
            r["processing"]["purposes"][0]["lawful_basis"],
            "dpv:Consent"
        );
        let withdrawn = consent_record(&RecordFacts {
            in_force: false,
            ..f
        });
        assert_eq!(withdrawn["state"], "dpv:ConsentWithdrawn");
    }
}

// ---- breaches (R-CIT-8) ------------------------------------------------------

/// What a breach exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum BreachScope {
    /// What logged reads served: the records of the datasets that reads (under
    /// one agreement, or in a period, when given) included. A recipient's
    /// extract leaked, say.
    #[default]
    Reads,
    /// Everything stored: every person with records in the datasets (the
    /// trust's own storage was reached).
    Stored,
}

impl BreachScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BreachScope::Reads => "reads",
            BreachScope::Stored => "stored",
        }
    }
    pub fn parse(s: &str) -> Option<BreachScope> {
        [BreachScope::Reads, BreachScope::Stored]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Body of `POST /api/v1/breaches`: a trustee registers a breach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewBreach {
    pub title: String,
    /// What happened, for the register and the regulator.
    pub description: String,
    /// The datasets whose records it touched (at least one).
    pub dataset_ids: Vec<String>,
    /// `reads` (default) or `stored`.
    #[serde(default)]
    pub scope: BreachScope,
    /// Reads scope: only reads under this agreement.
    #[serde(default)]
    pub agreement_id: Option<String>,
    /// Reads scope: only reads on or after this day (`YYYY-MM-DD`).
    #[serde(default)]
    #[schema(format = Date)]
    pub reads_from: Option<String>,
    /// Reads scope: only reads on or before this day.
    #[serde(default)]
    #[schema(format = Date)]
    pub reads_to: Option<String>,
    /// What each affected person is told, in plain words: what happened, what
    /// it means for them, what the trust is doing, whom to contact.
    pub notice: String,
}

impl NewBreach {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.required_text("title", &self.title, 200);
        e.required_text("description", &self.description, 10_000);
        e.required_text("notice", &self.notice, 5_000);
        if self.dataset_ids.is_empty() {
            e.push("dataset_ids", "name at least one dataset");
        }
        e.list("dataset_ids", &self.dataset_ids, 50, 200);
        for (i, d) in self.dataset_ids.iter().enumerate() {
            e.slug(&format!("dataset_ids[{i}]"), d);
        }
        let from = self
            .reads_from
            .as_deref()
            .and_then(|d| e.date("reads_from", d));
        let to = self.reads_to.as_deref().and_then(|d| e.date("reads_to", d));
        if let (Some(f), Some(t)) = (from, to)
            && t < f
        {
            e.push("reads_to", "must not be before reads_from");
        }
        if self.scope == BreachScope::Stored
            && (self.agreement_id.is_some() || self.reads_from.is_some() || self.reads_to.is_some())
        {
            e.push(
                "scope",
                "a breach of what is stored reaches everyone in the datasets; agreement_id, reads_from and reads_to apply to the reads scope",
            );
        }
        e.into_result()
    }
}

/// A registered breach, with who it reached and where the notifications stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Breach {
    pub id: String,
    pub title: String,
    pub description: String,
    pub dataset_ids: Vec<String>,
    pub scope: BreachScope,
    pub agreement_id: Option<String>,
    #[schema(format = Date)]
    pub reads_from: Option<String>,
    #[schema(format = Date)]
    pub reads_to: Option<String>,
    pub notice: String,
    #[schema(format = DateTime)]
    pub registered_at: String,
    /// The role that registered it (`trustee`); people are not named.
    pub registered_by: String,
    /// The regulator must be told by then (72 hours by default).
    #[schema(format = DateTime)]
    pub regulator_due_at: String,
    #[schema(format = DateTime)]
    pub regulator_notified_at: Option<String>,
    /// The regulator's reference for the notification, when given.
    pub regulator_reference: Option<String>,
    /// How many people's records it touched (computed from the log and the subject index).
    pub affected: usize,
    /// How many of them were sent a notice (everyone whose account is linked to the records).
    pub notified: usize,
    /// The log entries about it.
    pub log_entries: Vec<i64>,
}

impl Breach {
    /// Whether the regulator's deadline passed without a notification (at `now`, RFC 3339 UTC).
    pub fn regulator_overdue(&self, now: &str) -> bool {
        self.regulator_notified_at.is_none() && now > self.regulator_due_at.as_str()
    }
}

/// Body of `POST /api/v1/breaches/{id}/regulator-notified`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RegulatorNotice {
    /// The regulator's reference (case number), if it gave one.
    #[serde(default)]
    pub reference: Option<String>,
}

/// A message in a resident's inbox (a breach notice, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InboxMessage {
    pub id: String,
    #[schema(format = DateTime)]
    pub at: String,
    /// `breach`, or `data_request` (a request you asked for or support was answered).
    pub kind: String,
    pub title: String,
    pub body: String,
    /// The breach it is about.
    pub breach_id: Option<String>,
    /// The datasets of yours it concerns.
    pub dataset_ids: Vec<String>,
    /// The data request it is about (`data_request` messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_request_id: Option<String>,
}
