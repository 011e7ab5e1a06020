//! The feedback loop (R-CAT-7): any signed-in user reports an error in a
//! dataset — the whole of it, a version, a column or one cell — and its
//! maintainers accept it (naming the new version, or the quality rule,
//! that corrects it) or reject it with a reason. The reporter sees the
//! outcome; both steps are in the transparency log, without names.

use citytrust_model::{Actor, ValidationErrors, authz};
use citytrust_store::StoredFeedback;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Result, Service, ServiceError, rfc3339};

/// A report as sent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    /// The version the error is in (any version when absent).
    #[serde(default)]
    pub version: Option<i64>,
    /// The column the error is in.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub column: Option<String>,
    /// The row (1 = the first data row) of a cell; needs `column`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub row: Option<i64>,
    /// What is wrong, and how the reporter knows.
    #[schema(min_length = 1, max_length = 5000)]
    pub description: String,
}

/// A maintainer's answer.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackAnswer {
    /// `accepted` or `rejected`.
    #[schema(pattern = "^(accepted|rejected)$")]
    pub decision: String,
    /// For a rejection, the reason; for an acceptance, what was changed.
    #[schema(min_length = 1, max_length = 5000)]
    pub response: String,
    /// For an acceptance: the version that corrects the data (absent when a
    /// quality rule or measure was corrected instead, as `response` says).
    #[serde(default)]
    pub resolved_version: Option<i64>,
}

/// A report and its outcome, as shown to the reporter and the maintainers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Feedback {
    pub id: String,
    pub dataset_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<i64>,
    pub description: String,
    /// The reporter's username (shown to the reporter and the maintainers only).
    pub reported_by: String,
    pub reported_at: String,
    /// `open`, `accepted` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
}

impl From<StoredFeedback> for Feedback {
    fn from(f: StoredFeedback) -> Self {
        Feedback {
            id: f.id,
            dataset_id: f.dataset_id,
            version: f.version,
            column: f.column_name,
            row: f.row_number,
            description: f.description,
            reported_by: f.reported_by,
            reported_at: f.reported_at,
            status: f.status,
            response: f.response,
            resolved_version: f.resolved_version,
            answered_at: f.answered_at,
        }
    }
}

fn text(field: &str, value: &str, max: usize, e: &mut ValidationErrors) -> String {
    let v = value.trim();
    if v.is_empty() {
        e.push(field, "this is required");
    } else if v.chars().count() > max {
        e.push(field, format!("at most {max} characters"));
    }
    v.to_string()
}

impl Service {
    /// Report an error in a dataset.
    pub async fn report_feedback(
        &self,
        actor: &Actor,
        dataset_id: &str,
        input: FeedbackInput,
    ) -> Result<Feedback> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        let dataset = self.get_dataset(dataset_id).await?;
        let mut e = ValidationErrors::default();
        let description = text("description", &input.description, 5000, &mut e);
        let column = input
            .column
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        if input.row.is_some() && column.is_none() {
            e.push(
                "column",
                "a cell is a row and a column: name the column too",
            );
        }
        if input.row.is_some_and(|r| r < 1) {
            e.push("row", "rows are numbered from 1");
        }
        e.into_result()?;
        // A version and a column must exist, so the owner can find what is meant.
        let version = match input.version {
            Some(v) => Some(self.version_record(dataset_id, Some(v)).await?),
            None if column.is_some() => Some(self.version_record(dataset_id, None).await?),
            None => None,
        };
        if let (Some(c), Some(v)) = (column, &version) {
            if !v.columns.iter().any(|col| col.name == c) {
                return Err(ValidationErrors::single(
                    "column",
                    format!("version {} has no column '{c}'", v.version),
                )
                .into());
            }
            if let Some(row) = input.row
                && row > v.rows
            {
                return Err(ValidationErrors::single(
                    "row",
                    format!("version {} has {} rows", v.version, v.rows),
                )
                .into());
            }
        }
        let stored = StoredFeedback {
            id: hex::encode(crate::accounts::random_bytes::<8>()?),
            dataset_id: dataset.id.clone(),
            version: input.version,
            column_name: column.map(str::to_string),
            row_number: input.row,
            description,
            reported_by: username.to_string(),
            reported_at: rfc3339(self.now()),
            status: "open".into(),
            response: None,
            resolved_version: None,
            answered_by: None,
            answered_at: None,
        };
        let (body, at) = self.log_entry(
            "feedback.reported",
            serde_json::json!({
                "dataset": dataset.id,
                "feedback": stored.id,
                "version": stored.version,
                "column": stored.column_name,
                "row": stored.row_number,
                "by": crate::content::reader_label(actor, &dataset),
            }),
        )?;
        self.store
            .insert_feedback(
                &stored,
                &crate::ledger::new_entry("feedback.reported", &body, &at),
            )
            .await?;
        Ok(stored.into())
    }

    /// The reports on a dataset that `actor` may see: all of them for its
    /// maintainers, their own for anyone else.
    pub async fn list_feedback(&self, actor: &Actor, dataset_id: &str) -> Result<Vec<Feedback>> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        let dataset = self.get_dataset(dataset_id).await?;
        let maintainer = self.may_edit(actor, &dataset);
        Ok(self
            .store
            .list_feedback(dataset_id)
            .await?
            .into_iter()
            .filter(|f| maintainer || f.reported_by == username)
            .map(Feedback::from)
            .collect())
    }

    /// A maintainer accepts or rejects an open report.
    pub async fn answer_feedback(
        &self,
        actor: &Actor,
        dataset_id: &str,
        feedback_id: &str,
        answer: FeedbackAnswer,
    ) -> Result<Feedback> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let dataset = self.get_dataset(dataset_id).await?;
        authz::may_edit_dataset(actor, &dataset.metadata, &dataset.metadata)?;
        let Some(mut report) = self
            .store
            .list_feedback(dataset_id)
            .await?
            .into_iter()
            .find(|f| f.id == feedback_id)
        else {
            return Err(ServiceError::NotFound(format!(
                "report '{feedback_id}' on dataset '{dataset_id}'"
            )));
        };
        let mut e = ValidationErrors::default();
        let response = text("response", &answer.response, 5000, &mut e);
        let accepted = match answer.decision.as_str() {
            "accepted" => true,
            "rejected" => false,
            _ => {
                e.push("decision", "either 'accepted' or 'rejected'");
                false
            }
        };
        if !accepted && answer.resolved_version.is_some() {
            e.push(
                "resolved_version",
                "a rejected report names no correcting version",
            );
        }
        e.into_result()?;
        if let Some(v) = answer.resolved_version {
            let resolved = self.version_record(dataset_id, Some(v)).await?;
            if report
                .version
                .is_some_and(|reported| resolved.version <= reported)
            {
                return Err(ValidationErrors::single(
                    "resolved_version",
                    "the correcting version must be newer than the version reported",
                )
                .into());
            }
        }
        if report.status != "open" {
            return Err(ServiceError::Stale(format!(
                "report '{feedback_id}' was already {}",
                report.status
            )));
        }
        report.status = if accepted { "accepted" } else { "rejected" }.into();
        report.response = Some(response);
        report.resolved_version = answer.resolved_version;
        report.answered_by = actor.username().map(str::to_string);
        report.answered_at = Some(rfc3339(self.now()));
        let (body, at) = self.log_entry(
            "feedback.answered",
            serde_json::json!({
                "dataset": dataset.id,
                "feedback": report.id,
                "decision": report.status,
                "resolved_version": report.resolved_version,
                "by": crate::catalogue::acting_for(actor, &dataset),
            }),
        )?;
        if !self
            .store
            .answer_feedback(
                &report,
                &crate::ledger::new_entry("feedback.answered", &body, &at),
            )
            .await?
        {
            return Err(ServiceError::Stale(format!(
                "report '{feedback_id}' was answered meanwhile"
            )));
        }
        Ok(report.into())
    }
}
