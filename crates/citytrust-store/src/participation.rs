//! Participation rows: demand-led data requests and their supports,
//! consultations and their responses, trustees' terms. Each change is
//! stored with its log entry in one transaction. A support is a row keyed
//! by (request, person), so one person supports a request once whatever the
//! interleaving; answers are conditional on the status read, so two answers
//! cannot both land. A response is a row keyed by (consultation, person),
//! replaced until the results are published; publishing takes the
//! consultation's row, so no response lands after the count. An outcome
//! report is keyed by (agreement, period): one each.

use citytrust_model::participation::{
    Consultation, ConsultationResponse, ConsultationResults, DataRequest, DataRequestStatus,
    OutcomeReport,
};
use citytrust_model::residents::InboxMessage;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{NewLogEntry, Result, Store, StoreError, append_entry, conflict, json};

/// A request as stored: the document, with its live support count, and who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataRequest {
    pub request: DataRequest,
    pub requested_by: String,
}

fn request_from_row(r: &AnyRow) -> Result<StoredDataRequest> {
    let body: String = r.try_get("body")?;
    let mut request: DataRequest = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("data request: {e}")))?;
    request.supporters = r.try_get("supporters")?;
    Ok(StoredDataRequest {
        request,
        requested_by: r.try_get("requested_by")?,
    })
}

/// What a support change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupportChange {
    /// Done; the request now has this many supporters.
    Done(i64),
    /// The request is no longer waiting for its data (answered meanwhile).
    NotPending,
    /// Nothing to withdraw: the person did not support it.
    NotSupported,
}

impl Store {
    /// Store a new request with its log entry; the entry's index is kept in the document.
    pub async fn insert_data_request(
        &self,
        request: &DataRequest,
        requested_by: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<DataRequest> {
        let mut tx = self.begin().await?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = request.clone();
        doc.log_entries.push(idx);
        sqlx::query(
            "INSERT INTO data_requests (id, created_at, status, organization_id, requested_by, supporters, body) \
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
        )
        .bind(&doc.id)
        .bind(&doc.created_at)
        .bind(doc.status.as_str())
        .bind(&doc.organization_id)
        .bind(requested_by)
        .bind(json(&doc)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("data request '{}'", doc.id)))?;
        tx.commit().await?;
        Ok(doc)
    }

    pub async fn get_data_request(&self, id: &str) -> Result<Option<StoredDataRequest>> {
        let row =
            sqlx::query("SELECT body, supporters, requested_by FROM data_requests WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    /// Requests in `statuses` (every status when empty), newest first.
    pub async fn list_data_requests(
        &self,
        statuses: &[DataRequestStatus],
    ) -> Result<Vec<StoredDataRequest>> {
        let rows = sqlx::query(
            "SELECT body, supporters, requested_by, status FROM data_requests \
             ORDER BY created_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let status: String = r.try_get("status")?;
            if statuses.is_empty() || statuses.iter().any(|s| s.as_str() == status) {
                out.push(request_from_row(r)?);
            }
        }
        Ok(out)
    }

    /// The ids of the requests `username` supports.
    pub async fn data_requests_supported_by(&self, username: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT request_id FROM data_request_supports WHERE username = $1 ORDER BY request_id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("request_id")?))
            .collect()
    }

    /// Who supports a request (to tell them of its answer).
    pub async fn supporters_of(&self, request_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT username FROM data_request_supports WHERE request_id = $1 ORDER BY username",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("username")?))
            .collect()
    }

    /// Record `username`'s support, with its log entry, if the request is
    /// still pending. A second support by the same person is a `Conflict`.
    pub async fn add_support(
        &self,
        request_id: &str,
        username: &str,
        at: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<SupportChange> {
        let mut tx = self.begin().await?;
        // Lock the request's row first (the write lock on SQLite), so an answer
        // cannot land between the status check and the support.
        let Some(row) = sqlx::query(
            "UPDATE data_requests SET supporters = supporters + 1 \
             WHERE id = $1 AND status IN ('open', 'planned') RETURNING supporters",
        )
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(SupportChange::NotPending);
        };
        let supporters: i64 = row.try_get("supporters")?;
        sqlx::query(
            "INSERT INTO data_request_supports (request_id, username, supported_at) VALUES ($1, $2, $3)",
        )
        .bind(request_id)
        .bind(username)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, "your support of this request".into()))?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(SupportChange::Done(supporters))
    }

    /// Withdraw `username`'s support, with its log entry, while the request is pending.
    pub async fn withdraw_support(
        &self,
        request_id: &str,
        username: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<SupportChange> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(
            "UPDATE data_requests SET supporters = supporters - 1 \
             WHERE id = $1 AND status IN ('open', 'planned') RETURNING supporters",
        )
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(SupportChange::NotPending);
        };
        let supporters: i64 = row.try_get("supporters")?;
        let deleted = sqlx::query(
            "DELETE FROM data_request_supports WHERE request_id = $1 AND username = $2",
        )
        .bind(request_id)
        .bind(username)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 0 {
            // Dropping the transaction rolls the count back.
            return Ok(SupportChange::NotSupported);
        }
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(SupportChange::Done(supporters))
    }

    /// Save a request's new state (an answer or an assignment) only if it
    /// is still as it was read — status, assignment and history (two
    /// re-plans at once cannot both land) — with the log entry and the inbox
    /// messages `finish` makes from the people to tell (the requester and
    /// the supporters, read inside the transaction after the request's row
    /// is taken, so a support or withdrawal in flight is either counted or
    /// waits). `None` back: it changed meanwhile.
    pub async fn update_data_request<F>(
        &self,
        request: &DataRequest,
        expected: (DataRequestStatus, Option<&str>),
        finish: F,
    ) -> Result<Option<DataRequest>>
    where
        F: FnOnce(&[String]) -> Result<(String, String, String, Vec<(String, InboxMessage)>)>,
    {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(
            "UPDATE data_requests SET status = $2, organization_id = $3 \
             WHERE id = $1 AND status = $4 AND COALESCE(organization_id, '') = $5 \
             RETURNING body, requested_by",
        )
        .bind(&request.id)
        .bind(request.status.as_str())
        .bind(&request.organization_id)
        .bind(expected.0.as_str())
        .bind(expected.1.unwrap_or(""))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let stored: DataRequest = serde_json::from_str(&row.try_get::<String, _>("body")?)
            .map_err(|e| StoreError::Corrupt(format!("data request: {e}")))?;
        if stored.history.len() + 1 != request.history.len() {
            // Someone else's change landed first (dropping the transaction undoes ours).
            return Ok(None);
        }
        let requested_by: String = row.try_get("requested_by")?;
        let supporters = sqlx::query(
            "SELECT username FROM data_request_supports WHERE request_id = $1 ORDER BY username",
        )
        .bind(&request.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut people = vec![requested_by];
        for r in &supporters {
            people.push(r.try_get("username")?);
        }
        let (kind, body, at, messages) = finish(&people)?;
        let idx = append_entry(
            &mut tx,
            &NewLogEntry {
                kind: &kind,
                body: &body,
                at: &at,
            },
        )
        .await?;
        let mut doc = request.clone();
        doc.log_entries = stored.log_entries;
        doc.log_entries.push(idx);
        // Viewer-dependent fields are never stored.
        doc.yours = false;
        doc.supported = false;
        doc.overdue = false;
        sqlx::query("UPDATE data_requests SET body = $2 WHERE id = $1")
            .bind(&doc.id)
            .bind(json(&doc)?)
            .execute(&mut *tx)
            .await?;
        crate::residents::insert_inbox(&mut tx, &messages).await?;
        tx.commit().await?;
        Ok(Some(doc))
    }
}

// ---- consultations ----------------------------------------------------------------

/// A trustee's term of office, as an administrator records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTerm {
    pub username: String,
    pub starts_on: String,
    pub ends_on: String,
    pub appointed_by: String,
    pub declarations: String,
    pub updated_at: String,
}

impl Store {
    /// Store a new consultation with its log entry; the entry's index is kept in the document.
    pub async fn insert_consultation(
        &self,
        c: &Consultation,
        entry: &NewLogEntry<'_>,
    ) -> Result<Consultation> {
        let mut tx = self.begin().await?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = c.clone();
        doc.log_entries.push(idx);
        sqlx::query(
            "INSERT INTO consultations (id, created_at, opens_on, closes_on, body) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&doc.id)
        .bind(&doc.created_at)
        .bind(&doc.opens_on)
        .bind(&doc.closes_on)
        .bind(json(&doc)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("consultation '{}'", doc.id)))?;
        tx.commit().await?;
        Ok(doc)
    }

    /// A consultation with its frozen results, if published.
    pub async fn get_consultation(&self, id: &str) -> Result<Option<Consultation>> {
        let row = sqlx::query("SELECT body, results FROM consultations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(consultation_from_row).transpose()
    }

    /// Every consultation, the latest to close first.
    pub async fn list_consultations(&self) -> Result<Vec<Consultation>> {
        let rows = sqlx::query(
            "SELECT body, results FROM consultations ORDER BY closes_on DESC, created_at DESC, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consultation_from_row).collect()
    }

    /// Keep `username`'s response (replacing theirs; no log entry: the
    /// results' entry commits to every response's receipt), if the
    /// consultation was not closed early and its results are not published
    /// yet. `false`: it was, or they are.
    pub async fn put_consultation_response(
        &self,
        consultation_id: &str,
        username: &str,
        at: &str,
        response: &ConsultationResponse,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Take the consultation's row first: publishing the results takes it
        // too, so no response lands after the results were counted.
        let Some(doc) = take_unpublished(&mut tx, consultation_id).await? else {
            return Ok(false);
        };
        if doc.closed_early {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO consultation_responses (consultation_id, username, updated_at, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consultation_id, username) DO UPDATE SET updated_at = $3, body = $4",
        )
        .bind(consultation_id)
        .bind(username)
        .bind(at)
        .bind(json(response)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Close a consultation before its date (`doc` is its new document),
    /// with the log entry, if no results are published yet. `false`: they are.
    pub async fn close_consultation_early(
        &self,
        doc: &Consultation,
        entry: &NewLogEntry<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let Some(stored) = take_unpublished(&mut tx, &doc.id).await? else {
            return Ok(false);
        };
        if stored.closed_early {
            return Ok(false);
        }
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = doc.clone();
        doc.log_entries = stored.log_entries;
        doc.log_entries.push(idx);
        doc.results = None;
        doc.cited_by.clear();
        doc.cited_by_decisions.clear();
        doc.answered = false;
        sqlx::query("UPDATE consultations SET body = $2, closes_on = $3 WHERE id = $1")
            .bind(&doc.id)
            .bind(json(&doc)?)
            .bind(&doc.closes_on)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `username`'s own response, if any.
    pub async fn consultation_response_of(
        &self,
        consultation_id: &str,
        username: &str,
    ) -> Result<Option<ConsultationResponse>> {
        let row = sqlx::query(
            "SELECT body FROM consultation_responses WHERE consultation_id = $1 AND username = $2",
        )
        .bind(consultation_id)
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| parse_response(&r)).transpose()
    }

    /// Publish results once: the consultation's row is taken first (a
    /// response in flight commits before, or finds the results published),
    /// then every response is read and `count` turns them into the results
    /// and their log entry (kind, body, at). `None` back: another node
    /// published them first (read them again).
    pub async fn publish_consultation_results<F>(
        &self,
        consultation_id: &str,
        count: F,
    ) -> Result<Option<ConsultationResults>>
    where
        F: FnOnce(&[ConsultationResponse]) -> Result<(ConsultationResults, String, String, String)>,
    {
        let mut tx = self.begin().await?;
        let Some(mut doc) = take_unpublished(&mut tx, consultation_id).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT body FROM consultation_responses WHERE consultation_id = $1 ORDER BY username",
        )
        .bind(consultation_id)
        .fetch_all(&mut *tx)
        .await?;
        let responses = rows
            .iter()
            .map(parse_response)
            .collect::<Result<Vec<_>>>()?;
        let (results, kind, body, at) = count(&responses)?;
        let idx = append_entry(
            &mut tx,
            &NewLogEntry {
                kind: &kind,
                body: &body,
                at: &at,
            },
        )
        .await?;
        doc.log_entries.push(idx);
        sqlx::query("UPDATE consultations SET body = $2, results = $3 WHERE id = $1")
            .bind(consultation_id)
            .bind(json(&doc)?)
            .bind(json(&results)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(results))
    }

    /// Charter versions citing a consultation: (version, note, created_at).
    pub async fn charters_citing(
        &self,
        consultation_id: &str,
    ) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT version, note, created_at FROM charters WHERE consultation_id = $1 ORDER BY version",
        )
        .bind(consultation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("version")?,
                    r.try_get("note")?,
                    r.try_get("created_at")?,
                ))
            })
            .collect()
    }

    // ---- trustees' terms --------------------------------------------------------

    /// Record (or replace) a trustee's term, with its log entry.
    pub async fn put_trustee_term(&self, term: &StoredTerm, entry: &NewLogEntry<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO trustee_terms (username, starts_on, ends_on, appointed_by, declarations, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) DO UPDATE SET \
             starts_on = $2, ends_on = $3, appointed_by = $4, declarations = $5, updated_at = $6",
        )
        .bind(&term.username)
        .bind(&term.starts_on)
        .bind(&term.ends_on)
        .bind(&term.appointed_by)
        .bind(&term.declarations)
        .bind(&term.updated_at)
        .execute(&mut *tx)
        .await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn trustee_term(&self, username: &str) -> Result<Option<StoredTerm>> {
        let row = sqlx::query("SELECT * FROM trustee_terms WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(term_from_row).transpose()
    }

    pub async fn trustee_terms(&self) -> Result<Vec<StoredTerm>> {
        let rows = sqlx::query("SELECT * FROM trustee_terms ORDER BY starts_on, username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(term_from_row).collect()
    }
}

/// Take a consultation's row (the write lock on SQLite, a row lock on
/// PostgreSQL) if its results are not published yet, and read it. Responses,
/// an early close and the publication all start here, so they are serialised.
async fn take_unpublished(tx: &mut crate::Tx, id: &str) -> Result<Option<Consultation>> {
    let Some(row) = sqlx::query(
        "UPDATE consultations SET body = body WHERE id = $1 AND results IS NULL RETURNING body",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    serde_json::from_str(&row.try_get::<String, _>("body")?)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("consultation: {e}")))
}

fn term_from_row(r: &AnyRow) -> Result<StoredTerm> {
    Ok(StoredTerm {
        username: r.try_get("username")?,
        starts_on: r.try_get("starts_on")?,
        ends_on: r.try_get("ends_on")?,
        appointed_by: r.try_get("appointed_by")?,
        declarations: r.try_get("declarations")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn parse_response(r: &AnyRow) -> Result<ConsultationResponse> {
    serde_json::from_str(&r.try_get::<String, _>("body")?)
        .map_err(|e| StoreError::Corrupt(format!("consultation response: {e}")))
}

fn consultation_from_row(r: &AnyRow) -> Result<Consultation> {
    let mut c: Consultation = serde_json::from_str(&r.try_get::<String, _>("body")?)
        .map_err(|e| StoreError::Corrupt(format!("consultation: {e}")))?;
    c.results = r
        .try_get::<Option<String>, _>("results")?
        .map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("consultation results: {e}")))
        })
        .transpose()?;
    Ok(c)
}

// ---- outcome reports --------------------------------------------------------------

impl Store {
    /// Store a report with its log entry; a second report for the same
    /// agreement and period is a `Conflict`.
    pub async fn insert_outcome_report(
        &self,
        report: &OutcomeReport,
        entry: &NewLogEntry<'_>,
    ) -> Result<OutcomeReport> {
        let mut tx = self.begin().await?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = report.clone();
        doc.log_entry = idx;
        sqlx::query(
            "INSERT INTO outcome_reports (id, agreement_id, period, purpose, submitted_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&doc.id)
        .bind(&doc.agreement_id)
        .bind(&doc.period)
        .bind(&doc.purpose)
        .bind(&doc.submitted_at)
        .bind(json(&doc)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict(
                e,
                format!(
                    "the {} outcome report of agreement {}",
                    doc.period, doc.agreement_id
                ),
            )
        })?;
        tx.commit().await?;
        Ok(doc)
    }

    /// Reports, newest first: of one agreement, or all.
    pub async fn outcome_reports(&self, agreement_id: Option<&str>) -> Result<Vec<OutcomeReport>> {
        let rows = match agreement_id {
            Some(a) => {
                sqlx::query(
                    "SELECT body FROM outcome_reports WHERE agreement_id = $1 ORDER BY submitted_at DESC, id",
                )
                .bind(a)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT body FROM outcome_reports ORDER BY submitted_at DESC, id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                serde_json::from_str(&r.try_get::<String, _>("body")?)
                    .map_err(|e| StoreError::Corrupt(format!("outcome report: {e}")))
            })
            .collect()
    }
}
