//! Participation (R-PAR-1 … R-PAR-5): what residents bring to the trust
//! rather than what is decided about them. For now, demand-led data
//! requests (R-PAR-2): anyone signed in asks for data that is missing, or
//! for closed or shared data to be opened, with the use case and the benefit
//! to residents; others support it; the owner organisation (the
//! administrators while none is assigned) answers — planned by a date (the
//! public roadmap), published, already there, or declined with the reason.

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
