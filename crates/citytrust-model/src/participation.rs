//! Participation (R-PAR-1 … R-PAR-5): what residents bring to the trust
//! rather than what is decided about them.
//!
//! Demand-led data requests (R-PAR-2): anyone signed in asks for data that
//! is missing, or for closed or shared data to be opened, with the use case
//! and the benefit to residents; others support it; the owner organisation
//! (the administrators while none is assigned) answers — planned by a date
//! (the public roadmap), published, already there, or declined with the
//! reason.
//!
//! Consultations (R-PAR-3): trustees ask residents (all, or those linked to
//! a dataset's records) questions about a proposal between two dates; one
//! response per person, changeable until it closes; results published when
//! it closes, small counts suppressed, free text only where its writer
//! agreed; charter versions cite the consultations that informed them.
//!
//! Outcomes (R-PAR-4): each agreement's recipient reports what the share
//! achieved — effectiveness and impact, effort and risk on 1–5 scales, what
//! was done, evidence, who benefited — after it ends and yearly for longer
//! ones, each report due a grace period after its period.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validation::ValidationErrors;

/// Where a data request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataRequestStatus {
    /// Asked, not yet answered.
    #[default]
    Open,
    /// The owner means to publish it by the target date (on the roadmap).
    Planned,
    /// Published: the catalogue entry that answers it is named.
    Published,
    /// What was asked for is in the catalogue already (named).
    Exists,
    /// The owner will not publish it, and says why.
    Declined,
}

impl DataRequestStatus {
    pub const ALL: [DataRequestStatus; 5] = [
        DataRequestStatus::Open,
        DataRequestStatus::Planned,
        DataRequestStatus::Published,
        DataRequestStatus::Exists,
        DataRequestStatus::Declined,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DataRequestStatus::Open => "open",
            DataRequestStatus::Planned => "planned",
            DataRequestStatus::Published => "published",
            DataRequestStatus::Exists => "exists",
            DataRequestStatus::Declined => "declined",
        }
    }
    pub fn parse(s: &str) -> Option<DataRequestStatus> {
        DataRequestStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
    /// Still waiting for its data: it can be supported, and answered.
    pub fn is_pending(self) -> bool {
        matches!(self, DataRequestStatus::Open | DataRequestStatus::Planned)
    }
}

/// Body of `POST /api/v1/data-requests`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDataRequest {
    /// What data, in a line ("Cycling accidents by street segment").
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    /// What exactly: coverage, detail, period, format.
    #[schema(min_length = 1, max_length = 5000)]
    pub description: String,
    /// Why it is needed.
    #[schema(min_length = 1, max_length = 5000)]
    pub reason: String,
    /// What would be done with it.
    #[schema(min_length = 1, max_length = 5000)]
    pub use_case: String,
    /// How residents would benefit.
    #[schema(min_length = 1, max_length = 5000)]
    pub benefit: String,
    /// A catalogue entry (closed or shared) the request asks to be opened.
    #[serde(default)]
    pub dataset_id: Option<String>,
    /// The organisation thought to hold the data (the dataset's owner when
    /// `dataset_id` is given); absent, the administrators assign it.
    #[serde(default)]
    pub organization_id: Option<String>,
}

impl NewDataRequest {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.required_text("title", &self.title, 200);
        e.required_text("description", &self.description, 5000);
        e.required_text("reason", &self.reason, 5000);
        e.required_text("use_case", &self.use_case, 5000);
        e.required_text("benefit", &self.benefit, 5000);
        if let Some(d) = &self.dataset_id {
            e.slug("dataset_id", d);
        }
        if let Some(o) = &self.organization_id {
            e.slug("organization_id", o);
        }
        e.into_result()
    }
}

/// Body of `POST /api/v1/data-requests/{id}/answer`: the owner's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataRequestAnswer {
    /// `planned`, `published`, `exists` or `declined`.
    pub status: DataRequestStatus,
    /// For `planned`: the date it will be published by (YYYY-MM-DD).
    #[serde(default)]
    pub target_date: Option<String>,
    /// For `published` and `exists`: the catalogue entry that answers it.
    #[serde(default)]
    pub dataset_id: Option<String>,
    /// For `declined`, the reason (required); otherwise a note to the
    /// requester and supporters.
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub note: Option<String>,
}

impl DataRequestAnswer {
    /// Check the answer's shape; `today` (days since 1970) bounds a plan's date.
    pub fn validate(&self, today: i64) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.optional_text("note", &self.note, 5000);
        let needs_dataset = matches!(
            self.status,
            DataRequestStatus::Published | DataRequestStatus::Exists
        );
        match self.status {
            DataRequestStatus::Open => e.push(
                "status",
                "an answer is planned, published, exists or declined",
            ),
            DataRequestStatus::Planned => match self.target_date.as_deref() {
                None => e.push(
                    "target_date",
                    "a plan needs the date it will be published by",
                ),
                Some(d) => {
                    if e.date("target_date", d).is_some()
                        && crate::access::parse_day(d).is_some_and(|day| day < today)
                    {
                        e.push("target_date", "must not be in the past");
                    }
                }
            },
            DataRequestStatus::Declined => {
                if self.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
                    e.push("note", "say why the request is declined");
                }
            }
            DataRequestStatus::Published | DataRequestStatus::Exists => {}
        }
        if self.status != DataRequestStatus::Planned && self.target_date.is_some() {
            e.push("target_date", "only a plan has a target date");
        }
        match (&self.dataset_id, needs_dataset) {
            (None, true) => e.push("dataset_id", "name the catalogue entry that answers it"),
            (Some(d), true) => e.slug("dataset_id", d),
            (Some(_), false) => e.push(
                "dataset_id",
                "only a published or existing answer names a dataset",
            ),
            (None, false) => {}
        }
        e.into_result()
    }
}

/// Body of `POST /api/v1/data-requests/{id}/assign`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataRequestAssignment {
    /// The organisation that is to answer.
    pub organization_id: String,
}

/// One step in a request's life, shown on its page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataRequestEvent {
    #[schema(format = DateTime)]
    pub at: String,
    /// `opened`, `assigned`, or the status an answer set.
    pub what: String,
    /// The organisation that acted (`administrators` for them), or absent for the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A demand-led data request, as the public sees it. Who asked and who
/// supports it are never shown (the request's page tells a signed-in person
/// whether it is theirs and whether they support it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataRequest {
    pub id: String,
    pub title: String,
    pub description: String,
    pub reason: String,
    pub use_case: String,
    pub benefit: String,
    /// The entry asked to be opened, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// The organisation that answers; absent: the administrators (unassigned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    pub status: DataRequestStatus,
    /// For a plan: the date it is to be published by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_date: Option<String>,
    /// For `published` and `exists`: the entry that answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_dataset_id: Option<String>,
    /// The latest answer's note (for `declined`, the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_note: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub answered_at: Option<String>,
    /// How many people support it (the requester not counted).
    #[serde(default)]
    pub supporters: i64,
    /// A plan whose date has passed without the data.
    #[serde(default)]
    pub overdue: bool,
    /// The viewer asked for it (false for anonymous viewers).
    #[serde(default)]
    pub yours: bool,
    /// The viewer supports it.
    #[serde(default)]
    pub supported: bool,
    /// Its life so far, oldest first.
    #[serde(default)]
    pub history: Vec<DataRequestEvent>,
    /// The indexes of its log entries, oldest first.
    #[serde(default)]
    pub log_entries: Vec<i64>,
}

impl DataRequest {
    /// Fill in what depends on the day and the viewer.
    pub fn for_viewer(mut self, today: i64, yours: bool, supported: bool) -> DataRequest {
        self.overdue = self.status == DataRequestStatus::Planned
            && self
                .target_date
                .as_deref()
                .and_then(crate::access::parse_day)
                .is_some_and(|d| d < today);
        self.yours = yours;
        self.supported = supported;
        self
    }

    /// The text the request is made of, as its log entries commit to it
    /// (the log carries a digest, not the words: they may name people).
    pub fn text_for_digest(&self) -> String {
        serde_json::json!({
            "title": self.title,
            "description": self.description,
            "reason": self.reason,
            "use_case": self.use_case,
            "benefit": self.benefit,
        })
        .to_string()
    }
}

// ---- consultations (R-PAR-3) ------------------------------------------------------

/// What a consultation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsultationSubject {
    /// A change to the charter or the ethics code.
    #[default]
    CharterChange,
    /// A kind of use of the city's data (sharing smart-meter data for research, say).
    KindOfUse,
    /// How a dataset is classified (open, shared, closed).
    Classification,
}

impl ConsultationSubject {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultationSubject::CharterChange => "charter_change",
            ConsultationSubject::KindOfUse => "kind_of_use",
            ConsultationSubject::Classification => "classification",
        }
    }
}

/// Who may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Any signed-in resident.
    #[default]
    Residents,
    /// Residents whose accounts are linked to records in `dataset_id`.
    LinkedResidents,
}

/// The kinds of question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    /// One of the choices.
    #[default]
    SingleChoice,
    /// Any of the choices.
    MultipleChoice,
    /// 1 (not at all) to 5 (entirely).
    Scale,
    /// Words.
    FreeText,
}

/// A question as the trustees write it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuestion {
    #[schema(min_length = 1, max_length = 1000)]
    pub text: String,
    pub kind: QuestionKind,
    /// For single and multiple choice: 2 to 20 choices.
    #[serde(default)]
    pub choices: Vec<String>,
}

/// Body of `POST /api/v1/consultations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsultation {
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    /// The proposal, in plain words.
    #[schema(min_length = 1, max_length = 20000)]
    pub description: String,
    pub subject: ConsultationSubject,
    /// The dataset concerned (required for a classification, and for an
    /// audience of linked residents).
    #[serde(default)]
    pub dataset_id: Option<String>,
    pub audience: Audience,
    /// 1 to 30 questions.
    pub questions: Vec<NewQuestion>,
    /// The first day answers are taken (YYYY-MM-DD).
    pub opens_on: String,
    /// The last day answers are taken (YYYY-MM-DD).
    pub closes_on: String,
}

/// The most questions a consultation has, and choices a question.
pub const MAX_QUESTIONS: usize = 30;
pub const MAX_CHOICES: usize = 20;

impl NewConsultation {
    /// Check the shape; `today` bounds the dates. Returns (opens, closes) as days.
    pub fn validate(&self, today: i64) -> Result<(i64, i64), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.required_text("title", &self.title, 200);
        e.required_text("description", &self.description, 20_000);
        if let Some(d) = &self.dataset_id {
            e.slug("dataset_id", d);
        } else if self.subject == ConsultationSubject::Classification {
            e.push(
                "dataset_id",
                "a consultation on a classification names the dataset",
            );
        } else if self.audience == Audience::LinkedResidents {
            e.push(
                "dataset_id",
                "an audience of linked residents needs the dataset they are linked to",
            );
        }
        if self.questions.is_empty() || self.questions.len() > MAX_QUESTIONS {
            e.push("questions", format!("ask 1 to {MAX_QUESTIONS} questions"));
        }
        for (i, q) in self.questions.iter().enumerate() {
            let f = format!("questions[{i}]");
            e.required_text(&format!("{f}.text"), &q.text, 1000);
            match q.kind {
                QuestionKind::SingleChoice | QuestionKind::MultipleChoice => {
                    if q.choices.len() < 2 || q.choices.len() > MAX_CHOICES {
                        e.push(
                            format!("{f}.choices"),
                            format!("give 2 to {MAX_CHOICES} choices"),
                        );
                    }
                    e.list(&format!("{f}.choices"), &q.choices, MAX_CHOICES, 200);
                    let mut seen = std::collections::BTreeSet::new();
                    if q.choices.iter().any(|c| !seen.insert(c.trim())) {
                        e.push(format!("{f}.choices"), "each choice once");
                    }
                }
                QuestionKind::Scale | QuestionKind::FreeText => {
                    if !q.choices.is_empty() {
                        e.push(format!("{f}.choices"), "only choice questions have choices");
                    }
                }
            }
        }
        let day = |e: &mut ValidationErrors, field: &str, v: &str| {
            e.date(field, v).and(crate::access::parse_day(v))
        };
        let opens = day(&mut e, "opens_on", &self.opens_on);
        let closes = day(&mut e, "closes_on", &self.closes_on);
        if opens.is_some_and(|o| o < today) {
            e.push("opens_on", "must not be in the past");
        }
        if let (Some(o), Some(c)) = (opens, closes)
            && c < o
        {
            e.push("closes_on", "must not be before opens_on");
        }
        if let (Some(o), Some(c)) = (opens, closes)
            && c - o > 366
        {
            e.push("closes_on", "a consultation runs for at most a year");
        }
        e.into_result()?;
        Ok((opens.unwrap_or(today), closes.unwrap_or(today)))
    }
}

/// A question as asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Question {
    /// `q1`, `q2`, …
    pub id: String,
    pub text: String,
    pub kind: QuestionKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl Question {
    /// The values an answer may take: the choices, or 1–5.
    pub fn values(&self) -> Vec<String> {
        match self.kind {
            QuestionKind::Scale => (1..=5).map(|v| v.to_string()).collect(),
            _ => self.choices.clone(),
        }
    }
}

/// Where a consultation stands, by the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsultationState {
    #[default]
    Scheduled,
    Open,
    Closed,
}

/// A charter version that cites a consultation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Citation {
    pub charter_version: i64,
    /// The charter version's note (why it changed).
    pub note: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// One choice's count in the published results; `None` when suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChoiceCount {
    pub choice: String,
    /// Absent: fewer than the threshold chose it (or it would reveal such a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// A question's published results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuestionResult {
    pub question: String,
    pub kind: QuestionKind,
    /// How many answered it; absent when suppressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<ChoiceCount>,
    /// Free-text answers whose writers agreed to publish them, in alphabetical order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts: Vec<String>,
}

/// A closed consultation's results, published once and frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsultationResults {
    /// Counts below this are suppressed (the privacy engine's threshold).
    pub threshold: u64,
    /// How many responded; absent when suppressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respondents: Option<u64>,
    pub questions: Vec<QuestionResult>,
    #[schema(format = DateTime)]
    pub published_at: String,
}

/// A consultation, public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Consultation {
    pub id: String,
    pub title: String,
    pub description: String,
    pub subject: ConsultationSubject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    pub audience: Audience,
    pub questions: Vec<Question>,
    pub opens_on: String,
    pub closes_on: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// By today's date.
    #[serde(default)]
    pub state: ConsultationState,
    /// The trustees closed it before its closing date (it closed on `closes_on`).
    #[serde(default)]
    pub closed_early: bool,
    /// Once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<ConsultationResults>,
    /// Charter versions that cite it: what it changed.
    #[serde(default)]
    pub cited_by: Vec<Citation>,
    /// Access requests with a trustee's vote that cites it.
    #[serde(default)]
    pub cited_by_decisions: Vec<String>,
    /// The viewer has answered (false for anonymous viewers).
    #[serde(default)]
    pub answered: bool,
    #[serde(default)]
    pub log_entries: Vec<i64>,
}

impl Consultation {
    /// Its state on `today` (days since 1970).
    pub fn state_on(&self, today: i64) -> ConsultationState {
        let day = |s: &str| crate::access::parse_day(s).unwrap_or(i64::MAX);
        if self.closed_early {
            ConsultationState::Closed
        } else if today < day(&self.opens_on) {
            ConsultationState::Scheduled
        } else if today <= day(&self.closes_on) {
            ConsultationState::Open
        } else {
            ConsultationState::Closed
        }
    }
}

/// One answer in a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerInput {
    /// The question's id (`q1`, …).
    pub question: String,
    /// For a single choice question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<String>,
    /// For a multiple choice question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// For a scale question: 1 to 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u8>,
    /// For a free-text question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 5000)]
    pub text: Option<String>,
}

/// Body of `PUT /api/v1/consultations/{id}/response`: a person's response,
/// replacing any earlier one until the consultation closes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsultationResponse {
    /// Answers to some or all questions (each at most once).
    pub answers: Vec<AnswerInput>,
    /// Whether your free-text answers may be published with the results
    /// (without your name). Unpublished, nobody but you ever reads them.
    #[serde(default)]
    pub publish_text: bool,
    /// Set by the trust (anything sent is replaced): a digest of this
    /// response under a random salt, shown only to you; the log entry that
    /// publishes the results lists every receipt (when the number of
    /// respondents may be shown), so you can check yours was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub receipt: Option<String>,
}

impl ConsultationResponse {
    /// Check the response against the questions asked.
    pub fn validate(&self, questions: &[Question]) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        if self.answers.is_empty() {
            e.push("answers", "answer at least one question");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in self.answers.iter().enumerate() {
            let f = format!("answers[{i}]");
            let Some(q) = questions.iter().find(|q| q.id == a.question) else {
                e.push(
                    format!("{f}.question"),
                    format!("there is no question '{}'", a.question),
                );
                continue;
            };
            if !seen.insert(a.question.as_str()) {
                e.push(format!("{f}.question"), "each question is answered once");
            }
            let given = [
                a.choice.is_some(),
                a.choices.is_some(),
                a.scale.is_some(),
                a.text.is_some(),
            ];
            let expected = match q.kind {
                QuestionKind::SingleChoice => 0,
                QuestionKind::MultipleChoice => 1,
                QuestionKind::Scale => 2,
                QuestionKind::FreeText => 3,
            };
            let field = ["choice", "choices", "scale", "text"][expected];
            if given.iter().filter(|g| **g).count() != 1 || !given[expected] {
                e.push(
                    format!("{f}.{field}"),
                    format!("question '{}' is answered with `{field}` alone", q.id),
                );
                continue;
            }
            match q.kind {
                QuestionKind::SingleChoice => {
                    if let Some(c) = &a.choice
                        && !q.choices.contains(c)
                    {
                        e.push(
                            format!("{f}.choice"),
                            format!("'{c}' is not one of the choices"),
                        );
                    }
                }
                QuestionKind::MultipleChoice => {
                    let cs = a.choices.as_deref().unwrap_or_default();
                    if cs.is_empty() {
                        e.push(format!("{f}.choices"), "choose at least one");
                    }
                    let mut picked = std::collections::BTreeSet::new();
                    for c in cs {
                        if !q.choices.contains(c) {
                            e.push(
                                format!("{f}.choices"),
                                format!("'{c}' is not one of the choices"),
                            );
                        } else if !picked.insert(c) {
                            e.push(format!("{f}.choices"), format!("'{c}' is chosen twice"));
                        }
                    }
                }
                QuestionKind::Scale => {
                    if !a.scale.is_some_and(|v| (1..=5).contains(&v)) {
                        e.push(format!("{f}.scale"), "from 1 to 5");
                    }
                }
                QuestionKind::FreeText => {
                    e.required_text(&format!("{f}.text"), a.text.as_deref().unwrap_or(""), 5000);
                }
            }
        }
        e.into_result()
    }
}

// ---- outcomes (R-PAR-4) ----------------------------------------------------------

/// Days after a period ends that its outcome report is due.
pub const OUTCOME_GRACE_DAYS: i64 = 30;

/// Body of `POST /api/v1/agreements/{id}/outcomes`: what a share achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOutcomeReport {
    /// The period reported on (`year-1`, `year-2`, …, `final`); absent: the
    /// earliest one due and not yet reported.
    #[serde(default)]
    pub period: Option<String>,
    /// How well the data served the purpose: 1 (not at all) to 5 (fully).
    #[schema(minimum = 1, maximum = 5)]
    pub effectiveness: u8,
    /// The difference it made to residents: 1 (none) to 5 (large).
    #[schema(minimum = 1, maximum = 5)]
    pub impact: u8,
    /// The effort it took: 1 (little) to 5 (a great deal).
    #[schema(minimum = 1, maximum = 5)]
    pub effort: u8,
    /// The risk it carried: 1 (negligible) to 5 (serious).
    #[schema(minimum = 1, maximum = 5)]
    pub risk: u8,
    /// What was done with the data.
    #[schema(min_length = 1, max_length = 5000)]
    pub what_was_done: String,
    /// Who benefited, and how.
    #[schema(min_length = 1, max_length = 5000)]
    pub beneficiaries: String,
    /// A link to the evidence (a report, a service, a publication).
    #[serde(default)]
    pub evidence_url: Option<String>,
    /// A derived dataset in the catalogue that is the evidence.
    #[serde(default)]
    pub evidence_dataset_id: Option<String>,
}

impl NewOutcomeReport {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        for (field, v) in [
            ("effectiveness", self.effectiveness),
            ("impact", self.impact),
            ("effort", self.effort),
            ("risk", self.risk),
        ] {
            if !(1..=5).contains(&v) {
                e.push(field, "from 1 to 5");
            }
        }
        e.required_text("what_was_done", &self.what_was_done, 5000);
        e.required_text("beneficiaries", &self.beneficiaries, 5000);
        e.url("evidence_url", &self.evidence_url);
        if let Some(d) = &self.evidence_dataset_id {
            e.slug("evidence_dataset_id", d);
        }
        if let Some(p) = &self.period
            && p != "final"
            && !p
                .strip_prefix("year-")
                .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 1))
        {
            e.push("period", "`year-N` or `final`");
        }
        e.into_result()
    }
}

/// A report filed on an agreement's outcome. Public: it names the
/// recipient as the register does (an organisation, or "an individual").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeReport {
    pub id: String,
    pub agreement_id: String,
    pub purpose: String,
    /// `organization:<id>` or `individual`.
    pub recipient: String,
    pub period: String,
    pub due_on: String,
    pub effectiveness: u8,
    pub impact: u8,
    pub effort: u8,
    pub risk: u8,
    pub what_was_done: String,
    pub beneficiaries: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_dataset_id: Option<String>,
    #[schema(format = DateTime)]
    pub submitted_at: String,
    /// The index of its log entry.
    #[serde(default)]
    pub log_entry: i64,
}

/// A report an agreement owes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeDue {
    pub agreement_id: String,
    /// `year-N` (a yearly report of a longer agreement) or `final`.
    pub period: String,
    /// The last day of the period reported on.
    pub period_ends_on: String,
    /// The day it is due by.
    pub due_on: String,
    pub reported: bool,
    /// Due, past its date and not reported.
    pub overdue: bool,
}

/// The reports an agreement owes on `today`: one for each full year it has
/// run short of its end (due a grace period after each anniversary), and a
/// final one after its last day. Only periods that have ended are listed.
pub fn outcome_dues(
    agreement_id: &str,
    starts_on: &str,
    last_day: i64,
    today: i64,
    reported: &[String],
) -> Vec<OutcomeDue> {
    let Some(start) = crate::access::parse_day(starts_on) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |period: String, ends: i64| {
        if ends >= today {
            return;
        }
        let due = ends + OUTCOME_GRACE_DAYS;
        let done = reported.contains(&period);
        out.push(OutcomeDue {
            agreement_id: agreement_id.to_string(),
            overdue: !done && today > due,
            reported: done,
            period,
            period_ends_on: crate::access::format_day(ends),
            due_on: crate::access::format_day(due),
        });
    };
    let mut year = 1;
    while start + 365 * year < last_day {
        push(format!("year-{year}"), start + 365 * year - 1);
        year += 1;
    }
    push("final".into(), last_day);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: DataRequestStatus) -> DataRequestAnswer {
        DataRequestAnswer {
            status,
            ..DataRequestAnswer::default()
        }
    }

    #[test]
    fn each_answer_carries_what_it_needs_and_nothing_else() {
        let today = crate::access::parse_day("2026-03-01").unwrap();
        let fields = |a: DataRequestAnswer| -> Vec<String> {
            a.validate(today)
                .err()
                .map(|e| e.0.into_iter().map(|f| f.field).collect())
                .unwrap_or_default()
        };
        assert_eq!(fields(answer(DataRequestStatus::Open)), ["status"]);
        assert_eq!(fields(answer(DataRequestStatus::Planned)), ["target_date"]);
        assert_eq!(fields(answer(DataRequestStatus::Published)), ["dataset_id"]);
        assert_eq!(fields(answer(DataRequestStatus::Declined)), ["note"]);
        let past = DataRequestAnswer {
            target_date: Some("2026-02-28".into()),
            ..answer(DataRequestStatus::Planned)
        };
        assert_eq!(fields(past), ["target_date"]);
        let ok = DataRequestAnswer {
            target_date: Some("2026-03-01".into()),
            ..answer(DataRequestStatus::Planned)
        };
        assert!(ok.validate(today).is_ok());
        let mixed = DataRequestAnswer {
            target_date: Some("2026-06-01".into()),
            dataset_id: Some("x-y".into()),
            note: Some("no".into()),
            ..answer(DataRequestStatus::Declined)
        };
        assert_eq!(fields(mixed), ["target_date", "dataset_id"]);
    }

    #[test]
    fn a_longer_agreement_owes_yearly_reports_and_a_final_one() {
        let day = |s| crate::access::parse_day(s).unwrap();
        let last = day("2028-06-30");
        // Before the first anniversary nothing is owed.
        assert!(outcome_dues("a", "2026-01-01", last, day("2026-06-01"), &[]).is_empty());
        let dues = outcome_dues("a", "2026-01-01", last, day("2027-02-15"), &[]);
        assert_eq!(dues.len(), 1);
        assert_eq!(
            (
                dues[0].period.as_str(),
                dues[0].period_ends_on.as_str(),
                dues[0].due_on.as_str()
            ),
            ("year-1", "2026-12-31", "2027-01-30")
        );
        assert!(dues[0].overdue);
        let dues = outcome_dues(
            "a",
            "2026-01-01",
            last,
            day("2028-09-01"),
            &["year-1".into()],
        );
        let periods: Vec<(&str, bool)> = dues
            .iter()
            .map(|d| (d.period.as_str(), d.overdue))
            .collect();
        assert_eq!(
            periods,
            [("year-1", false), ("year-2", true), ("final", true)]
        );
        // A short agreement owes only the final report, a grace period after its end.
        let dues = outcome_dues("b", "2026-03-01", day("2026-03-31"), day("2026-04-30"), &[]);
        assert_eq!((dues.len(), dues[0].overdue), (1, false));
        let dues = outcome_dues("b", "2026-03-01", day("2026-03-31"), day("2026-05-01"), &[]);
        assert!(dues[0].overdue);
    }

    #[test]
    fn a_plan_past_its_date_is_overdue_and_nothing_else_is() {
        let r = DataRequest {
            id: "r".into(),
            title: "t".into(),
            description: "d".into(),
            reason: "r".into(),
            use_case: "u".into(),
            benefit: "b".into(),
            dataset_id: None,
            organization_id: None,
            status: DataRequestStatus::Planned,
            target_date: Some("2026-03-01".into()),
            answer_dataset_id: None,
            answer_note: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            answered_at: None,
            supporters: 0,
            overdue: false,
            yours: false,
            supported: false,
            history: vec![],
            log_entries: vec![],
        };
        let day = |s| crate::access::parse_day(s).unwrap();
        assert!(
            !r.clone()
                .for_viewer(day("2026-03-01"), false, false)
                .overdue
        );
        assert!(
            r.clone()
                .for_viewer(day("2026-03-02"), false, false)
                .overdue
        );
        let published = DataRequest {
            status: DataRequestStatus::Published,
            ..r
        };
        assert!(
            !published
                .for_viewer(day("2027-01-01"), false, false)
                .overdue
        );
    }
}
