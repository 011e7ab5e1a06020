//! Participation (issue 27).
//!
//! Demand-led data requests (R-PAR-2): anyone signed in asks for data that
//! is not in the catalogue, or for a closed or shared entry to be opened;
//! others support it (once each, withdrawable while it is pending); the
//! organisation it is assigned to — the administrators while none is —
//! answers: planned by a date (the public roadmap, overdue plans flagged),
//! published or already there (naming the entry; the requester and the
//! supporters find a notice in their inbox), or declined with the reason.
//!
//! Requests are public; who asked and who supports them are not. The log
//! gets every step with the request's id, a digest of its words (they may
//! name people), the organisation that acted and the support count — never
//! a person.
//!
//! Consultations (R-PAR-3): trustees open them; residents (all, or those
//! linked to a dataset's records) answer once, changing their answer until
//! the closing day; the first read after the close publishes the results —
//! counted under the consultation's row lock, so no late answer slips in —
//! with small numbers suppressed by the privacy engine and free text only
//! where its writer agreed. A response is never shown to anyone but its
//! writer.
//!
//! The board in public (R-PAR-1): trustees' terms, appointment and
//! declarations; a trustee outside a recorded term does not vote.
//!
//! Outcomes (R-PAR-4): each agreement's recipient reports what it achieved,
//! yearly and at the end; reports are public, summed up by purpose and by
//! year; an overdue report makes the charter's `outcome-report-overdue` rule
//! refuse the recipient's new requests.

use std::collections::{BTreeMap, BTreeSet};

use citytrust_model::access::format_day;
use citytrust_model::participation::{
    AnswerInput, Audience, ChoiceCount, Citation, Consultation, ConsultationResponse,
    ConsultationResults, ConsultationState, DataRequest, DataRequestAnswer, DataRequestAssignment,
    DataRequestEvent, DataRequestStatus, NewConsultation, NewDataRequest, NewOutcomeReport,
    OutcomeDue, OutcomeReport, Question, QuestionKind, QuestionResult, outcome_dues,
};
use citytrust_model::residents::InboxMessage;
use citytrust_model::{Actor, Spectrum, ValidationErrors, authz};
use citytrust_store::{StoredDataRequest, SupportChange};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{random_hex, sha256_hex};
use crate::{Result, Service, ServiceError, rfc3339};

/// How a list of requests is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataRequestSort {
    /// Most supported first (then newest).
    #[default]
    Support,
    /// Newest first.
    Newest,
}

/// The query of `GET /api/v1/data-requests`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DataRequestQuery {
    /// Words that must all appear in the title, description, use case or benefit.
    pub q: Option<String>,
    /// Only requests with this status.
    pub status: Option<DataRequestStatus>,
    /// `support` (default) or `newest`.
    pub sort: Option<DataRequestSort>,
    /// At most this many (1–200, default 50).
    pub limit: Option<usize>,
    /// Skip this many first.
    pub offset: Option<usize>,
}

/// A page of requests.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct DataRequestPage {
    /// How many match, over all pages.
    pub total: usize,
    pub items: Vec<DataRequest>,
}

/// The public roadmap: what owners have promised, soonest first, and what
/// they have delivered.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct Roadmap {
    /// Plans by target date; `overdue` marks those past it.
    pub planned: Vec<DataRequest>,
    /// Requests answered with a published entry, newest first (at most 50).
    pub published: Vec<DataRequest>,
}

fn who_acted(actor: &Actor, organization: Option<&str>) -> String {
    match organization {
        Some(o) if actor.is_member_of(o) => format!("organization:{o}"),
        _ if authz::is_administrator(actor) => "administrators".into(),
        _ => "member".into(),
    }
}

impl Service {
    fn viewer_of(&self, actor: &Actor) -> Option<String> {
        actor.username().map(str::to_string)
    }

    async fn supported_by(&self, actor: &Actor) -> Result<BTreeSet<String>> {
        Ok(match actor.username() {
            Some(u) => self
                .store
                .data_requests_supported_by(u)
                .await?
                .into_iter()
                .collect(),
            None => BTreeSet::new(),
        })
    }

    fn shown(
        &self,
        stored: StoredDataRequest,
        viewer: Option<&str>,
        supported: &BTreeSet<String>,
    ) -> DataRequest {
        let yours = viewer == Some(stored.requested_by.as_str());
        let supports = supported.contains(&stored.request.id);
        stored.request.for_viewer(self.today(), yours, supports)
    }

    async fn stored_data_request(&self, id: &str) -> Result<StoredDataRequest> {
        self.store
            .get_data_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("data request '{id}'")))
    }

    /// Ask for data.
    pub async fn ask_for_data(&self, actor: &Actor, new: NewDataRequest) -> Result<DataRequest> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        new.validate()?;
        let mut organization_id = new.organization_id.clone();
        let mut e = ValidationErrors::default();
        if let Some(d) = &new.dataset_id {
            match self.store.get_dataset(d).await? {
                None => e.push("dataset_id", format!("there is no dataset '{d}'")),
                Some(ds) if ds.metadata.spectrum == Spectrum::Open => e.push(
                    "dataset_id",
                    format!("'{d}' is open already: download it from its page"),
                ),
                Some(ds) => {
                    let owner = ds.metadata.owner_organization_id;
                    if organization_id.as_ref().is_some_and(|o| *o != owner) {
                        e.push(
                            "organization_id",
                            format!("'{d}' is owned by '{owner}': it answers requests to open it"),
                        );
                    }
                    organization_id = Some(owner);
                }
            }
        }
        if let Some(o) = &new.organization_id
            && self.store.get_organization(o).await?.is_none()
        {
            e.push("organization_id", format!("there is no organisation '{o}'"));
        }
        e.into_result()?;
        let at = rfc3339(self.now());
        let request = DataRequest {
            id: format!("dr-{}", random_hex::<6>()?),
            title: new.title.trim().to_string(),
            description: new.description.trim().to_string(),
            reason: new.reason.trim().to_string(),
            use_case: new.use_case.trim().to_string(),
            benefit: new.benefit.trim().to_string(),
            dataset_id: new.dataset_id,
            organization_id,
            status: DataRequestStatus::Open,
            target_date: None,
            answer_dataset_id: None,
            answer_note: None,
            created_at: at.clone(),
            answered_at: None,
            supporters: 0,
            overdue: false,
            yours: false,
            supported: false,
            history: vec![DataRequestEvent {
                at: at.clone(),
                what: "opened".into(),
                by: None,
                note: None,
            }],
            log_entries: vec![],
        };
        let (body, at) = self.log_entry_by(
            actor,
            "data_request.opened",
            serde_json::json!({
                "request": request.id,
                "text_sha256": sha256_hex(&request.text_for_digest()),
                "dataset": request.dataset_id,
                "organization": request.organization_id,
            }),
        )?;
        let stored = self
            .store
            .insert_data_request(
                &request,
                username,
                &crate::ledger::new_entry("data_request.opened", &body, &at),
            )
            .await?;
        Ok(stored.for_viewer(self.today(), true, false))
    }

    /// The requests matching `query`: public, with what concerns the viewer.
    pub async fn list_data_requests(
        &self,
        actor: &Actor,
        query: &DataRequestQuery,
    ) -> Result<DataRequestPage> {
        let limit = query.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ValidationErrors::single("limit", "must be between 1 and 200").into());
        }
        let q = query.q.as_deref().unwrap_or("").trim().to_lowercase();
        if q.chars().count() > 200 {
            return Err(ValidationErrors::single("q", "at most 200 characters").into());
        }
        let words: Vec<&str> = q.split_whitespace().collect();
        let statuses: Vec<DataRequestStatus> = query.status.into_iter().collect();
        let viewer = self.viewer_of(actor);
        let supported = self.supported_by(actor).await?;
        let mut items: Vec<DataRequest> = self
            .store
            .list_data_requests(&statuses)
            .await?
            .into_iter()
            .filter(|s| {
                let r = &s.request;
                let text = format!("{} {} {} {}", r.title, r.description, r.use_case, r.benefit)
                    .to_lowercase();
                words.iter().all(|w| text.contains(w))
            })
            .map(|s| self.shown(s, viewer.as_deref(), &supported))
            .collect();
        if query.sort.unwrap_or_default() == DataRequestSort::Support {
            // Stable: ties keep the store's newest-first order.
            items.sort_by_key(|r| std::cmp::Reverse(r.supporters));
        }
        let total = items.len();
        let items = items
            .into_iter()
            .skip(query.offset.unwrap_or(0))
            .take(limit)
            .collect();
        Ok(DataRequestPage { total, items })
    }

    pub async fn get_data_request(&self, actor: &Actor, id: &str) -> Result<DataRequest> {
        let stored = self.stored_data_request(id).await?;
        let supported = self.supported_by(actor).await?;
        Ok(self.shown(stored, self.viewer_of(actor).as_deref(), &supported))
    }

    /// The public roadmap.
    pub async fn roadmap(&self, actor: &Actor) -> Result<Roadmap> {
        let viewer = self.viewer_of(actor);
        let supported = self.supported_by(actor).await?;
        let mut planned: Vec<DataRequest> = self
            .store
            .list_data_requests(&[DataRequestStatus::Planned])
            .await?
            .into_iter()
            .map(|s| self.shown(s, viewer.as_deref(), &supported))
            .collect();
        planned.sort_by(|a, b| {
            a.target_date
                .cmp(&b.target_date)
                .then(b.supporters.cmp(&a.supporters))
        });
        let mut published: Vec<DataRequest> = self
            .store
            .list_data_requests(&[DataRequestStatus::Published])
            .await?
            .into_iter()
            .map(|s| self.shown(s, viewer.as_deref(), &supported))
            .collect();
        published.sort_by(|a, b| b.answered_at.cmp(&a.answered_at));
        published.truncate(50);
        Ok(Roadmap { planned, published })
    }

    /// Support a pending request (not your own; once).
    pub async fn support_data_request(&self, actor: &Actor, id: &str) -> Result<DataRequest> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        let stored = self.stored_data_request(id).await?;
        if stored.requested_by == username {
            return Err(ServiceError::Forbidden(
                "you asked for this data: your request counts already, and nobody supports their own"
                    .into(),
            ));
        }
        self.pending(&stored.request)?;
        let (body, at) = self.log_entry(
            "data_request.supported",
            serde_json::json!({"request": id, "supporters": stored.request.supporters + 1}),
        )?;
        match self
            .store
            .add_support(
                id,
                username,
                &at,
                &crate::ledger::new_entry("data_request.supported", &body, &at),
            )
            .await?
        {
            SupportChange::Done(_) => self.get_data_request(actor, id).await,
            _ => Err(ServiceError::Stale(format!(
                "data request '{id}' was answered meanwhile"
            ))),
        }
    }

    /// Withdraw your support while the request is pending.
    pub async fn withdraw_data_request_support(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<DataRequest> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        let stored = self.stored_data_request(id).await?;
        self.pending(&stored.request)?;
        let (body, at) = self.log_entry(
            "data_request.support_withdrawn",
            serde_json::json!({"request": id, "supporters": (stored.request.supporters - 1).max(0)}),
        )?;
        match self
            .store
            .withdraw_support(
                id,
                username,
                &crate::ledger::new_entry("data_request.support_withdrawn", &body, &at),
            )
            .await?
        {
            SupportChange::Done(_) => self.get_data_request(actor, id).await,
            SupportChange::NotSupported => Err(ServiceError::NotFound(format!(
                "your support of data request '{id}'"
            ))),
            SupportChange::NotPending => Err(ServiceError::Stale(format!(
                "data request '{id}' was answered meanwhile"
            ))),
        }
    }

    fn pending(&self, request: &DataRequest) -> Result<()> {
        if request.status.is_pending() {
            Ok(())
        } else {
            Err(ServiceError::Stale(format!(
                "data request '{}' is {} already: supports are for requests still waiting",
                request.id,
                request.status.as_str()
            )))
        }
    }

    /// An administrator assigns a request to the organisation that is to answer it.
    pub async fn assign_data_request(
        &self,
        actor: &Actor,
        id: &str,
        assignment: DataRequestAssignment,
    ) -> Result<DataRequest> {
        authz::may_assign_data_request(actor)?;
        let stored = self.stored_data_request(id).await?;
        let org = assignment.organization_id.trim().to_string();
        if self.store.get_organization(&org).await?.is_none() {
            return Err(ValidationErrors::single(
                "organization_id",
                format!("there is no organisation '{org}'"),
            )
            .into());
        }
        let before = stored.request.clone();
        if !before.status.is_pending() {
            return Err(ServiceError::Stale(format!(
                "data request '{id}' is {} already",
                before.status.as_str()
            )));
        }
        if before.dataset_id.is_some() {
            return Err(ValidationErrors::single(
                "organization_id",
                "a request to open a dataset is answered by the dataset's owner",
            )
            .into());
        }
        let mut request = before.clone();
        request.organization_id = Some(org.clone());
        request.history.push(DataRequestEvent {
            at: rfc3339(self.now()),
            what: "assigned".into(),
            by: Some("administrators".into()),
            note: Some(format!("to {org}")),
        });
        let (body, at) = self.log_entry_by(
            actor,
            "data_request.assigned",
            serde_json::json!({"request": id, "organization": org, "by": "administrators"}),
        )?;
        self.store
            .update_data_request(
                &request,
                (before.status, before.organization_id.as_deref()),
                |_| Ok(("data_request.assigned".to_string(), body, at, Vec::new())),
            )
            .await?
            .ok_or_else(|| ServiceError::Stale(format!("data request '{id}' changed meanwhile")))?;
        self.get_data_request(actor, id).await
    }

    /// The organisation a request is assigned to answers it. A published or
    /// existing answer tells the requester and every supporter in their inbox.
    pub async fn answer_data_request(
        &self,
        actor: &Actor,
        id: &str,
        answer: DataRequestAnswer,
    ) -> Result<DataRequest> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let stored = self.stored_data_request(id).await?;
        let before = stored.request.clone();
        // A request to open a dataset is answered by its owner now (it may
        // have changed hands since the request was made).
        let answerer = self.answerer_of(&before).await?;
        authz::may_answer_data_request(actor, answerer.as_deref())?;
        if !before.status.is_pending() {
            return Err(ServiceError::Stale(format!(
                "data request '{id}' was {} already",
                before.status.as_str()
            )));
        }
        answer.validate(self.today())?;
        if let Some(d) = &answer.dataset_id {
            let Some(ds) = self.store.get_dataset(d).await? else {
                return Err(ValidationErrors::single(
                    "dataset_id",
                    format!("there is no dataset '{d}'"),
                )
                .into());
            };
            if let Some(asked) = &before.dataset_id {
                if answer.status == DataRequestStatus::Published && asked != d {
                    return Err(ValidationErrors::single(
                        "dataset_id",
                        format!("the request asks for '{asked}' to be opened: publishing means opening it"),
                    )
                    .into());
                }
                if ds.metadata.spectrum != Spectrum::Open {
                    return Err(ValidationErrors::single(
                        "dataset_id",
                        format!(
                            "the request asks for open data, and '{d}' is {}: open it first, or decline with the reason",
                            ds.metadata.spectrum.as_str()
                        ),
                    )
                    .into());
                }
            }
        }
        let now = rfc3339(self.now());
        let by = who_acted(actor, answerer.as_deref());
        let mut request = before.clone();
        request.organization_id = answerer;
        request.status = answer.status;
        request.target_date = answer.target_date.clone();
        request.answer_dataset_id = answer.dataset_id.clone();
        request.answer_note = answer
            .note
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        request.answered_at = Some(now.clone());
        request.history.push(DataRequestEvent {
            at: now.clone(),
            what: answer.status.as_str().into(),
            by: Some(by.clone()),
            note: match (&request.target_date, &request.answer_dataset_id) {
                (Some(d), _) => Some(format!("by {d}")),
                (_, Some(d)) => Some(d.clone()),
                _ => request.answer_note.clone(),
            },
        });
        let tells = matches!(
            answer.status,
            DataRequestStatus::Published | DataRequestStatus::Exists
        );
        let dataset = answer.dataset_id.clone().unwrap_or_default();
        let notice = if answer.status == DataRequestStatus::Published {
            format!(
                "The data you asked for or supported — \"{}\" — is now published as '{dataset}'.",
                request.title
            )
        } else {
            format!(
                "The data you asked for or supported — \"{}\" — is in the catalogue already, as '{dataset}'.",
                request.title
            )
        };
        let notice = match &request.answer_note {
            Some(n) => format!("{notice} {n}"),
            None => notice,
        };
        let title = format!("Data request answered: {}", request.title);
        let entry_fields = serde_json::json!({
            "request": id,
            "status": answer.status.as_str(),
            "target_date": request.target_date,
            "dataset": request.answer_dataset_id,
            "note_sha256": request.answer_note.as_deref().map(sha256_hex),
            "by": by,
        });
        // The people to tell are read in the answer's transaction.
        let finish = |people: &[String]| -> citytrust_store::Result<_> {
            let internal = |e: ServiceError| citytrust_store::StoreError::Corrupt(e.to_string());
            let mut messages = Vec::new();
            let mut supporters = 0;
            let mut seen = BTreeSet::new();
            for (i, person) in people.iter().enumerate() {
                if i > 0 {
                    supporters += 1;
                }
                if !tells || !seen.insert(person.clone()) {
                    continue;
                }
                messages.push((
                    person.clone(),
                    InboxMessage {
                        id: format!("msg-{}", random_hex::<8>().map_err(internal)?),
                        at: now.clone(),
                        kind: "data_request".into(),
                        title: title.clone(),
                        body: notice.clone(),
                        breach_id: None,
                        dataset_ids: vec![dataset.clone()],
                        data_request_id: Some(id.to_string()),
                    },
                ));
            }
            let mut fields = entry_fields.clone();
            if let Some(map) = fields.as_object_mut() {
                map.insert("supporters".into(), serde_json::json!(supporters));
                map.insert("told".into(), serde_json::json!(messages.len()));
            }
            let (body, at) = self
                .log_entry_by(actor, "data_request.answered", fields)
                .map_err(internal)?;
            Ok(("data_request.answered".to_string(), body, at, messages))
        };
        self.store
            .update_data_request(
                &request,
                (before.status, before.organization_id.as_deref()),
                finish,
            )
            .await?
            .ok_or_else(|| {
                ServiceError::Stale(format!("data request '{id}' was answered meanwhile"))
            })?;
        self.get_data_request(actor, id).await
    }

    /// Who answers a request: for one to open a dataset, the dataset's
    /// owner now; otherwise the organisation it is assigned to (none: the
    /// administrators).
    async fn answerer_of(&self, r: &DataRequest) -> Result<Option<String>> {
        if let Some(d) = &r.dataset_id
            && let Some(ds) = self.store.get_dataset(d).await?
        {
            return Ok(Some(ds.metadata.owner_organization_id));
        }
        Ok(r.organization_id.clone())
    }

    /// Requests an organisation's members are to answer (or, for an
    /// administrator, the unassigned ones too), pending only, oldest first.
    pub async fn data_requests_to_answer(&self, actor: &Actor) -> Result<Vec<DataRequest>> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let viewer = self.viewer_of(actor);
        let supported = self.supported_by(actor).await?;
        let mut out: Vec<DataRequest> = Vec::new();
        for s in self
            .store
            .list_data_requests(&[DataRequestStatus::Open, DataRequestStatus::Planned])
            .await?
        {
            let answerer = self.answerer_of(&s.request).await?;
            if authz::may_answer_data_request(actor, answerer.as_deref()).is_ok() {
                out.push(self.shown(s, viewer.as_deref(), &supported));
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Today, as the roadmap counts it (YYYY-MM-DD).
    pub fn today_text(&self) -> String {
        format_day(self.today())
    }
}

// ---- consultations (R-PAR-3) ------------------------------------------------------

/// One line of counts protected by the privacy engine: `cells` (label,
/// count; zeros included) whose total is the line's margin. Returns the
/// margin and each cell, `None` where suppressed.
fn protect_line(
    cells: &[(String, u64)],
    threshold: u64,
) -> Result<(Option<u64>, Vec<Option<u64>>)> {
    let total: u64 = cells.iter().map(|c| c.1).sum();
    if total == 0 {
        return Ok((Some(0), cells.iter().map(|_| Some(0)).collect()));
    }
    let rows: Vec<(Vec<String>, u64, Vec<f64>)> = cells
        .iter()
        .map(|(label, n)| (vec![label.clone()], *n, Vec::new()))
        .collect();
    let table = citytrust_privacy::cells::protect(1, &rows, threshold)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let cell = |key: Option<&str>| {
        table
            .cells
            .iter()
            .find(|c| c.key.first().map(|k| k.as_deref()) == Some(key))
            .map(|c| c.count)
    };
    Ok((
        cell(None).flatten(),
        cells
            .iter()
            .map(|(label, _)| cell(Some(label)).unwrap_or(Some(0)))
            .collect(),
    ))
}

/// A label no choice can have (choices are trimmed text; this has a newline).
const NO_ANSWER: &str = "\n(no answer)";

/// Count responses into results, suppressing small numbers through the
/// privacy engine so that nothing shown lets a count under the threshold be
/// worked out. Every question is a partition of the respondents: for single
/// choice and scale questions, its values and "no answer", whose margin is
/// the number of respondents; for multiple choice, first (answered, no
/// answer), then for each choice (ticked, answered but not ticked), whose
/// margin is the number who answered; for free text, (answered, no answer).
/// The respondents' number is shown only where every question's table
/// shows it as its margin.
pub fn count_results(
    questions: &[Question],
    responses: &[ConsultationResponse],
    threshold: u64,
    published_at: String,
) -> Result<ConsultationResults> {
    let respondents = responses.len() as u64;
    let mut margins_shown = true;
    let mut out = Vec::with_capacity(questions.len());
    for q in questions {
        let answers: Vec<&AnswerInput> = responses
            .iter()
            .filter_map(|r| r.answers.iter().find(|a| a.question == q.id))
            .collect();
        let answered = answers.len() as u64;
        let mut result = QuestionResult {
            question: q.id.clone(),
            kind: q.kind,
            answered: None,
            counts: Vec::new(),
            texts: Vec::new(),
        };
        match q.kind {
            QuestionKind::SingleChoice | QuestionKind::Scale => {
                let value = |a: &AnswerInput| match q.kind {
                    QuestionKind::Scale => a.scale.map(|v| v.to_string()),
                    _ => a.choice.clone(),
                };
                let values = q.values();
                let mut cells: Vec<(String, u64)> = values
                    .iter()
                    .map(|v| {
                        let n = answers
                            .iter()
                            .filter(|a| value(a).as_deref() == Some(v))
                            .count();
                        (v.clone(), n as u64)
                    })
                    .collect();
                cells.push((NO_ANSWER.to_string(), respondents - answered));
                let (total, shown) = protect_line(&cells, threshold)?;
                margins_shown &= total.is_some();
                let no_answer = shown.last().copied().flatten();
                result.answered = total.zip(no_answer).map(|(t, n)| t - n);
                result.counts = values
                    .into_iter()
                    .zip(shown)
                    .map(|(choice, count)| ChoiceCount { choice, count })
                    .collect();
            }
            QuestionKind::MultipleChoice | QuestionKind::FreeText => {
                let (total, shown) = protect_line(
                    &[
                        ("answered".to_string(), answered),
                        (NO_ANSWER.to_string(), respondents - answered),
                    ],
                    threshold,
                )?;
                margins_shown &= total.is_some();
                result.answered = shown[0];
                if q.kind == QuestionKind::MultipleChoice {
                    for choice in &q.choices {
                        let ticked = answers
                            .iter()
                            .filter(|a| a.choices.as_ref().is_some_and(|cs| cs.contains(choice)))
                            .count() as u64;
                        let count = if result.answered.is_some() {
                            // Answered is shown: ticked and not ticked are a line whose total it is.
                            protect_line(
                                &[
                                    ("ticked".to_string(), ticked),
                                    ("not ticked".to_string(), answered - ticked),
                                ],
                                threshold,
                            )?
                            .1[0]
                        } else {
                            // Nobody can subtract from a hidden total; small counts are hidden alone.
                            (ticked == 0 || ticked >= threshold).then_some(ticked)
                        };
                        result.counts.push(ChoiceCount {
                            choice: choice.clone(),
                            count,
                        });
                    }
                }
            }
        }
        out.push(result);
    }
    // Free text: only what its writers agreed to publish, in an order that
    // says nothing about who wrote it.
    for r in responses.iter().filter(|r| r.publish_text) {
        for a in &r.answers {
            if let (Some(text), Some(q)) =
                (&a.text, out.iter_mut().find(|q| q.question == a.question))
                && q.kind == QuestionKind::FreeText
            {
                q.texts.push(text.trim().to_string());
            }
        }
    }
    for q in &mut out {
        q.texts.sort();
    }
    let respondents_shown = (respondents == 0 || respondents >= threshold) && margins_shown;
    Ok(ConsultationResults {
        threshold,
        respondents: respondents_shown.then_some(respondents),
        questions: out,
        published_at,
    })
}

impl Service {
    /// A trustee opens a consultation.
    pub async fn open_consultation(
        &self,
        actor: &Actor,
        new: NewConsultation,
    ) -> Result<Consultation> {
        authz::may_open_consultation(actor)?;
        new.validate(self.today())?;
        if let Some(d) = &new.dataset_id
            && self.store.get_dataset(d).await?.is_none()
        {
            return Err(ValidationErrors::single(
                "dataset_id",
                format!("there is no dataset '{d}'"),
            )
            .into());
        }
        let questions: Vec<Question> = new
            .questions
            .into_iter()
            .enumerate()
            .map(|(i, q)| Question {
                id: format!("q{}", i + 1),
                text: q.text.trim().to_string(),
                kind: q.kind,
                choices: q.choices.iter().map(|c| c.trim().to_string()).collect(),
            })
            .collect();
        let c = Consultation {
            id: format!("cn-{}", random_hex::<6>()?),
            title: new.title.trim().to_string(),
            description: new.description.trim().to_string(),
            subject: new.subject,
            dataset_id: new.dataset_id,
            audience: new.audience,
            questions,
            opens_on: new.opens_on,
            closes_on: new.closes_on,
            created_at: rfc3339(self.now()),
            state: ConsultationState::Scheduled,
            closed_early: false,
            results: None,
            cited_by: vec![],
            cited_by_decisions: vec![],
            answered: false,
            log_entries: vec![],
        };
        let (body, at) = self.log_entry_by(
            actor,
            "consultation.opened",
            serde_json::json!({
                "consultation": c.id,
                "subject": c.subject.as_str(),
                "dataset": c.dataset_id,
                "opens_on": c.opens_on,
                "closes_on": c.closes_on,
                "questions_sha256": sha256_hex(&serde_json::to_string(&c.questions).unwrap_or_default()),
                "by": "trustee",
            }),
        )?;
        let stored = self
            .store
            .insert_consultation(
                &c,
                &crate::ledger::new_entry("consultation.opened", &body, &at),
            )
            .await?;
        self.consultation_view(actor, stored).await
    }

    /// Fill in the state, the viewer's part and the citations; publish the
    /// results first if it has closed and they are not out yet.
    async fn consultation_view(&self, actor: &Actor, mut c: Consultation) -> Result<Consultation> {
        let today = self.today();
        c.state = c.state_on(today);
        if c.state == ConsultationState::Closed && c.results.is_none() {
            c.results = Some(self.publish_results(&c).await?);
            if let Some(fresh) = self.store.get_consultation(&c.id).await? {
                c.log_entries = fresh.log_entries;
            }
        }
        c.answered = match actor.username() {
            Some(u) => self
                .store
                .consultation_response_of(&c.id, u)
                .await?
                .is_some(),
            None => false,
        };
        c.cited_by = self
            .store
            .charters_citing(&c.id)
            .await?
            .into_iter()
            .map(|(charter_version, note, at)| Citation {
                charter_version,
                note,
                at,
            })
            .collect();
        c.cited_by_decisions = self
            .store
            .list_access_requests(None, &[], 10_000)
            .await?
            .into_iter()
            .filter(|r| {
                r.votes
                    .iter()
                    .any(|v| v.consultation_id.as_deref() == Some(c.id.as_str()))
            })
            .map(|r| r.id)
            .collect();
        Ok(c)
    }

    async fn publish_results(&self, c: &Consultation) -> Result<ConsultationResults> {
        let threshold = crate::levels::MIN_THRESHOLD;
        let published_at = rfc3339(self.now());
        let mut failure = None;
        let published = self
            .store
            .publish_consultation_results(&c.id, |responses| {
                let made = count_results(&c.questions, responses, threshold, published_at.clone())
                    .and_then(|results| {
                        let mut receipts: Vec<String> =
                            responses.iter().filter_map(|r| r.receipt.clone()).collect();
                        receipts.sort();
                        let (body, at) = self.log_entry(
                            "consultation.results_published",
                            serde_json::json!({
                                "consultation": c.id,
                                "respondents": results.respondents,
                                "threshold": threshold,
                                "results_sha256": sha256_hex(&serde_json::to_string(&results).unwrap_or_default()),
                                "receipts_sha256": sha256_hex(&receipts.join("\n")),
                                // Each respondent finds their receipt here, when
                                // the number of respondents may be shown.
                                "receipts": results.respondents.map(|_| receipts.clone()),
                            }),
                        )?;
                        Ok((results, body, at))
                    });
                match made {
                    Ok((results, body, at)) => Ok((
                        results,
                        "consultation.results_published".to_string(),
                        body,
                        at,
                    )),
                    Err(e) => {
                        let text = e.to_string();
                        failure = Some(e);
                        Err(citytrust_store::StoreError::Corrupt(text))
                    }
                }
            })
            .await;
        if let Some(e) = failure {
            return Err(e);
        }
        match published? {
            Some(results) => Ok(results),
            // Another node published them first.
            None => self
                .store
                .get_consultation(&c.id)
                .await?
                .and_then(|k| k.results)
                .ok_or_else(|| ServiceError::Internal("consultation results vanished".into())),
        }
    }

    /// Trustees close a consultation before its date; it closes today and
    /// its results are published at once.
    pub async fn close_consultation(&self, actor: &Actor, id: &str) -> Result<Consultation> {
        authz::may_open_consultation(actor)?;
        let mut c = self
            .store
            .get_consultation(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("consultation '{id}'")))?;
        if c.state_on(self.today()) == ConsultationState::Closed {
            return Err(ServiceError::Stale(format!(
                "consultation '{id}' closed on {}",
                c.closes_on
            )));
        }
        c.closed_early = true;
        c.closes_on = self.today_text();
        let (body, at) = self.log_entry_by(
            actor,
            "consultation.closed_early",
            serde_json::json!({"consultation": id, "closes_on": c.closes_on, "by": "trustee"}),
        )?;
        if !self
            .store
            .close_consultation_early(
                &c,
                &crate::ledger::new_entry("consultation.closed_early", &body, &at),
            )
            .await?
        {
            return Err(ServiceError::Stale(format!(
                "consultation '{id}' has closed"
            )));
        }
        self.get_consultation(actor, id).await
    }

    /// Every consultation, the latest to close first.
    pub async fn list_consultations(&self, actor: &Actor) -> Result<Vec<Consultation>> {
        let mut out = Vec::new();
        for c in self.store.list_consultations().await? {
            out.push(self.consultation_view(actor, c).await?);
        }
        Ok(out)
    }

    pub async fn get_consultation(&self, actor: &Actor, id: &str) -> Result<Consultation> {
        let c = self
            .store
            .get_consultation(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("consultation '{id}'")))?;
        self.consultation_view(actor, c).await
    }

    /// Answer (or change your answer) while the consultation is open.
    pub async fn respond_to_consultation(
        &self,
        actor: &Actor,
        id: &str,
        response: ConsultationResponse,
    ) -> Result<Consultation> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        let c = self
            .store
            .get_consultation(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("consultation '{id}'")))?;
        let linked = match (&c.audience, &c.dataset_id) {
            (Audience::LinkedResidents, Some(d)) => self
                .store
                .links_of(username)
                .await?
                .iter()
                .any(|l| &l.dataset_id == d),
            _ => false,
        };
        authz::may_answer_consultation(actor, c.audience, linked)?;
        match c.state_on(self.today()) {
            ConsultationState::Open => {}
            ConsultationState::Scheduled => {
                return Err(ServiceError::Stale(format!(
                    "consultation '{id}' opens on {}",
                    c.opens_on
                )));
            }
            ConsultationState::Closed => {
                return Err(ServiceError::Stale(format!(
                    "consultation '{id}' closed on {}: answers are no longer taken",
                    c.closes_on
                )));
            }
        }
        response.validate(&c.questions)?;
        let mut response = response;
        for a in &mut response.answers {
            if let Some(t) = &mut a.text {
                *t = t.trim().to_string();
            }
        }
        // No log entry per response: entries for one consultation would
        // count its respondents, which the results may hide. Each response
        // gets a receipt (a digest under a random salt, shown only to its
        // writer); the results' entry commits to every receipt.
        let salt = random_hex::<16>()?;
        response.receipt = None;
        response.receipt = Some(sha256_hex(&format!(
            "citytrust-response-v1\n{salt}\n{id}\n{}",
            serde_json::to_string(&response).unwrap_or_default()
        )));
        if !self
            .store
            .put_consultation_response(id, username, &rfc3339(self.now()), &response)
            .await?
        {
            return Err(ServiceError::Stale(format!(
                "consultation '{id}' has closed and its results are published"
            )));
        }
        self.get_consultation(actor, id).await
    }

    /// Your own response (only you ever read it whole).
    pub async fn my_consultation_response(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<ConsultationResponse> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        self.store
            .consultation_response_of(id, username)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("your response to consultation '{id}'")))
    }
}

// ---- the board in public (R-PAR-1) --------------------------------------------------

/// Body of `PUT /api/v1/trustees/{username}/term`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermInput {
    /// The first day of the term (YYYY-MM-DD).
    pub starts_on: String,
    /// The last day of the term (YYYY-MM-DD).
    pub ends_on: String,
    /// How the trustee was appointed ("elected by the residents' assembly, 2026").
    #[schema(min_length = 1, max_length = 1000)]
    pub appointed_by: String,
    /// Their standing declarations of interest ("none" if none).
    #[schema(min_length = 1, max_length = 5000)]
    pub declarations: String,
}

/// A trustee as the public sees them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, ToSchema)]
pub struct Trustee {
    /// Their account's username: shown to administrators only (who record terms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declarations: Option<String>,
    /// Today within the recorded term (true when no term is recorded yet).
    pub in_term: bool,
}

impl Service {
    /// An administrator records a trustee's term, how they were appointed
    /// and their declarations of interest.
    pub async fn set_trustee_term(
        &self,
        actor: &Actor,
        username: &str,
        input: TermInput,
    ) -> Result<Trustee> {
        authz::may_administer(actor)?;
        let user = self.get_user(username).await?;
        if authz::may_vote(&Actor::from_user(&user)).is_err() {
            return Err(ValidationErrors::single(
                "username",
                format!("'{username}' is not a trustee"),
            )
            .into());
        }
        let mut e = ValidationErrors::default();
        let starts = e
            .date("starts_on", &input.starts_on)
            .and(citytrust_model::access::parse_day(&input.starts_on));
        let ends = e
            .date("ends_on", &input.ends_on)
            .and(citytrust_model::access::parse_day(&input.ends_on));
        if let (Some(s), Some(t)) = (starts, ends)
            && t < s
        {
            e.push("ends_on", "must not be before starts_on");
        }
        e.required_text("appointed_by", &input.appointed_by, 1000);
        e.required_text("declarations", &input.declarations, 5000);
        e.into_result()?;
        let term = citytrust_store::StoredTerm {
            username: username.to_string(),
            starts_on: input.starts_on,
            ends_on: input.ends_on,
            appointed_by: input.appointed_by.trim().to_string(),
            declarations: input.declarations.trim().to_string(),
            updated_at: rfc3339(self.now()),
        };
        let (body, at) = self.log_entry_by(
            actor,
            "trustee.term_recorded",
            serde_json::json!({
                "role": "trustee",
                "starts_on": term.starts_on,
                "ends_on": term.ends_on,
                "declarations_sha256": sha256_hex(&term.declarations),
                "by": "administrator",
            }),
        )?;
        self.store
            .put_trustee_term(
                &term,
                &crate::ledger::new_entry("trustee.term_recorded", &body, &at),
            )
            .await?;
        self.trustees(actor)
            .await?
            .into_iter()
            .find(|t| t.username.as_deref() == Some(username))
            .ok_or_else(|| ServiceError::NotFound(format!("trustee '{username}'")))
    }

    /// The board: every trustee with their term, public (usernames for
    /// administrators only).
    pub async fn trustees(&self, actor: &Actor) -> Result<Vec<Trustee>> {
        let admin = authz::may_administer(actor).is_ok();
        let terms: BTreeMap<String, citytrust_store::StoredTerm> = self
            .store
            .trustee_terms()
            .await?
            .into_iter()
            .map(|t| (t.username.clone(), t))
            .collect();
        let today = self.today();
        let mut out: Vec<Trustee> = self
            .store
            .list_users()
            .await?
            .into_iter()
            .filter(|u| authz::may_vote(&Actor::from_user(u)).is_ok())
            .map(|u| {
                let term = terms.get(&u.username);
                Trustee {
                    in_term: term.is_none_or(|t| in_term(t, today)),
                    starts_on: term.map(|t| t.starts_on.clone()),
                    ends_on: term.map(|t| t.ends_on.clone()),
                    appointed_by: term.map(|t| t.appointed_by.clone()),
                    declarations: term.map(|t| t.declarations.clone()),
                    username: admin.then_some(u.username),
                    display_name: u.display_name,
                }
            })
            .collect();
        out.sort_by(|a, b| a.display_name.cmp(&b.display_name));
        Ok(out)
    }

    /// Refuse a trustee outside their recorded term (the vote's check).
    pub(crate) async fn require_in_term(&self, username: &str) -> Result<()> {
        match self.store.trustee_term(username).await? {
            Some(t) if !in_term(&t, self.today()) => Err(ServiceError::Forbidden(format!(
                "your term as a trustee runs from {} to {}: outside it you do not vote",
                t.starts_on, t.ends_on
            ))),
            _ => Ok(()),
        }
    }
}

fn in_term(t: &citytrust_store::StoredTerm, today: i64) -> bool {
    let day = citytrust_model::access::parse_day;
    day(&t.starts_on).is_some_and(|s| s <= today) && day(&t.ends_on).is_some_and(|e| today <= e)
}

// ---- outcomes (R-PAR-4) -------------------------------------------------------------

/// An agreement's reports and what it still owes.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct AgreementOutcomes {
    pub agreement_id: String,
    pub dues: Vec<OutcomeDue>,
    pub reports: Vec<OutcomeReport>,
}

/// Outcomes summed up by purpose and by year: how many reports, and their
/// mean ratings.
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct OutcomeSummary {
    pub by_purpose: Vec<OutcomeGroup>,
    pub by_year: Vec<OutcomeGroup>,
}

#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct OutcomeGroup {
    /// The purpose's id, or the year.
    pub key: String,
    pub reports: usize,
    pub mean_effectiveness: f64,
    pub mean_impact: f64,
    pub mean_effort: f64,
    pub mean_risk: f64,
}

fn summarise<'a>(key: String, reports: impl Iterator<Item = &'a OutcomeReport>) -> OutcomeGroup {
    let rs: Vec<&OutcomeReport> = reports.collect();
    let n = rs.len().max(1) as f64;
    let mean = |f: fn(&OutcomeReport) -> u8| {
        (rs.iter().map(|r| f64::from(f(r))).sum::<f64>() / n * 10.0).round() / 10.0
    };
    OutcomeGroup {
        key,
        reports: rs.len(),
        mean_effectiveness: mean(|r| r.effectiveness),
        mean_impact: mean(|r| r.impact),
        mean_effort: mean(|r| r.effort),
        mean_risk: mean(|r| r.risk),
    }
}

/// The public form of a recipient, as the register shows it.
fn public_recipient(recipient: &str) -> String {
    if recipient.starts_with("organization:") || recipient.starts_with("group:") {
        recipient.to_string()
    } else {
        "individual".into()
    }
}

impl Service {
    fn dues_of(
        &self,
        a: &citytrust_model::Agreement,
        reports: &[OutcomeReport],
    ) -> Vec<OutcomeDue> {
        // Group standing agreements are many organisations' at once: each
        // member's own agreements carry the duty, not the group's.
        if a.status == citytrust_model::AgreementStatus::Superseded
            || a.recipient.starts_with("group:")
        {
            return Vec::new();
        }
        let done: Vec<String> = reports
            .iter()
            .filter(|r| r.agreement_id == a.id)
            .map(|r| r.period.clone())
            .collect();
        outcome_dues(&a.id, &a.starts_on, a.last_day(), self.today(), &done)
    }

    /// An agreement's outcome reports and what it owes. Public.
    pub async fn agreement_outcomes(&self, id: &str) -> Result<AgreementOutcomes> {
        let a = self.agreement(id).await?;
        let reports = self.store.outcome_reports(Some(id)).await?;
        Ok(AgreementOutcomes {
            agreement_id: a.id.clone(),
            dues: self.dues_of(&a, &reports),
            reports,
        })
    }

    /// The recipient reports an agreement's outcome, for the earliest
    /// period due and not yet reported (or the one named).
    pub async fn report_outcome(
        &self,
        actor: &Actor,
        id: &str,
        new: NewOutcomeReport,
    ) -> Result<OutcomeReport> {
        if actor.username().is_none() {
            return Err(ServiceError::Unauthenticated);
        }
        let a = self.agreement(id).await?;
        let who = self.who(actor).await?;
        if !who.direct_recipients().contains(&a.recipient) {
            return Err(ServiceError::Forbidden(format!(
                "only the recipient of agreement {id} reports its outcome"
            )));
        }
        new.validate()?;
        if let Some(d) = &new.evidence_dataset_id
            && self.store.get_dataset(d).await?.is_none()
        {
            return Err(ValidationErrors::single(
                "evidence_dataset_id",
                format!("there is no dataset '{d}'"),
            )
            .into());
        }
        let reports = self.store.outcome_reports(Some(id)).await?;
        let dues = self.dues_of(&a, &reports);
        let due = match &new.period {
            Some(p) => dues.iter().find(|d| &d.period == p).ok_or_else(|| {
                ServiceError::from(ValidationErrors::single(
                    "period",
                    format!("agreement {id} owes no '{p}' report (yet)"),
                ))
            })?,
            None => dues.iter().find(|d| !d.reported).ok_or_else(|| {
                ServiceError::Unprocessable {
                    code: citytrust_model::ProblemCode::AgreementInForce,
                    message: format!(
                        "agreement {id} owes no report now: the first is due after a year, or after it ends ({})",
                        a.ends_on
                    ),
                }
            })?,
        };
        if due.reported {
            return Err(ServiceError::Conflict(format!(
                "the {} outcome report of agreement {id}",
                due.period
            )));
        }
        let report = OutcomeReport {
            id: format!("or-{}", random_hex::<6>()?),
            agreement_id: a.id.clone(),
            purpose: a.purpose.clone(),
            recipient: public_recipient(&a.recipient),
            period: due.period.clone(),
            due_on: due.due_on.clone(),
            effectiveness: new.effectiveness,
            impact: new.impact,
            effort: new.effort,
            risk: new.risk,
            what_was_done: new.what_was_done.trim().to_string(),
            beneficiaries: new.beneficiaries.trim().to_string(),
            evidence_url: new.evidence_url,
            evidence_dataset_id: new.evidence_dataset_id,
            submitted_at: rfc3339(self.now()),
            log_entry: 0,
        };
        let (body, at) = self.log_entry_by(
            actor,
            "agreement.outcome_reported",
            serde_json::json!({
                "agreement": a.id,
                "period": report.period,
                "purpose": report.purpose,
                "recipient": report.recipient,
                "effectiveness": report.effectiveness,
                "impact": report.impact,
                "effort": report.effort,
                "risk": report.risk,
                "text_sha256": sha256_hex(&format!("{}\n{}", report.what_was_done, report.beneficiaries)),
                "evidence": report.evidence_url.as_ref().or(report.evidence_dataset_id.as_ref()),
                "late": self.today() > citytrust_model::access::parse_day(&report.due_on).unwrap_or(i64::MAX),
            }),
        )?;
        Ok(self
            .store
            .insert_outcome_report(
                &report,
                &crate::ledger::new_entry("agreement.outcome_reported", &body, &at),
            )
            .await?)
    }

    /// Every outcome report, newest first. Public.
    pub async fn outcome_reports(&self) -> Result<Vec<OutcomeReport>> {
        Ok(self.store.outcome_reports(None).await?)
    }

    /// Outcomes by purpose and by year. Public.
    pub async fn outcome_summary(&self) -> Result<OutcomeSummary> {
        let reports = self.store.outcome_reports(None).await?;
        let purposes: BTreeSet<&str> = reports.iter().map(|r| r.purpose.as_str()).collect();
        let years: BTreeSet<&str> = reports.iter().map(|r| &r.submitted_at[..4]).collect();
        Ok(OutcomeSummary {
            by_purpose: purposes
                .into_iter()
                .map(|p| summarise(p.to_string(), reports.iter().filter(|r| r.purpose == p)))
                .collect(),
            by_year: years
                .into_iter()
                .map(|y| {
                    summarise(
                        y.to_string(),
                        reports.iter().filter(|r| r.submitted_at.starts_with(y)),
                    )
                })
                .collect(),
        })
    }

    /// Reports past their date and not filed (trustees and administrators).
    pub async fn overdue_outcomes(&self, actor: &Actor) -> Result<Vec<OutcomeDue>> {
        if authz::may_vote(actor).is_err() && authz::may_administer(actor).is_err() {
            return Err(ServiceError::Forbidden(
                "only trustees and administrators see the overdue outcome reports".into(),
            ));
        }
        self.overdue_outcomes_of(&[]).await
    }

    /// Overdue reports of agreements with these recipients (every recipient when empty).
    pub(crate) async fn overdue_outcomes_of(
        &self,
        recipients: &[String],
    ) -> Result<Vec<OutcomeDue>> {
        let agreements: Vec<citytrust_model::Agreement> = self
            .agreements()
            .await?
            .into_iter()
            .filter(|a| recipients.is_empty() || recipients.contains(&a.recipient))
            .collect();
        if agreements.is_empty() {
            return Ok(Vec::new());
        }
        let reports = self.store.outcome_reports(None).await?;
        Ok(agreements
            .iter()
            .flat_map(|a| self.dues_of(a, &reports))
            .filter(|d| d.overdue)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(id: &str, kind: QuestionKind, choices: &[&str]) -> Question {
        Question {
            id: id.into(),
            text: id.into(),
            kind,
            choices: choices.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn response(answers: Vec<AnswerInput>) -> ConsultationResponse {
        ConsultationResponse {
            answers,
            publish_text: false,
            receipt: None,
        }
    }

    #[test]
    fn a_multiple_choice_count_near_the_number_who_answered_is_hidden() {
        // 20 answer, 19 tick "research": showing 19 and 20 would say one did not.
        let q = question("q1", QuestionKind::MultipleChoice, &["research", "tariffs"]);
        let responses: Vec<ConsultationResponse> = (0..20)
            .map(|i| {
                let picked = if i < 19 {
                    vec!["research".to_string(), "tariffs".into()]
                } else {
                    vec!["tariffs".to_string()]
                };
                response(vec![AnswerInput {
                    question: "q1".into(),
                    choices: Some(picked),
                    ..AnswerInput::default()
                }])
            })
            .collect();
        let r = count_results(&[q], &responses, 10, String::new()).unwrap();
        assert_eq!(r.respondents, Some(20));
        assert_eq!(r.questions[0].answered, Some(20));
        assert_eq!(
            r.questions[0].counts[0].count, None,
            "19 of 20 hides itself"
        );
        assert_eq!(r.questions[0].counts[1].count, Some(20));
    }

    #[test]
    fn the_number_of_respondents_is_hidden_when_it_would_pin_hidden_counts() {
        // Ten people, ten different choices: each count is 1, which showing
        // "10 respondents" beside ten hidden cells would give away.
        let choices: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = choices.iter().map(String::as_str).collect();
        let q = question("q1", QuestionKind::SingleChoice, &refs);
        let responses: Vec<ConsultationResponse> = choices
            .iter()
            .map(|c| {
                response(vec![AnswerInput {
                    question: "q1".into(),
                    choice: Some(c.clone()),
                    ..AnswerInput::default()
                }])
            })
            .collect();
        let r = count_results(&[q], &responses, 10, String::new()).unwrap();
        assert_eq!(r.respondents, None);
        assert!(r.questions[0].counts.iter().all(|c| c.count.is_none()));
        assert_eq!(r.questions[0].answered, None);
        // Twelve respondents, one skipping: the skip is a hidden cell too.
        let q = question("q1", QuestionKind::SingleChoice, &["yes", "no"]);
        let mut responses: Vec<ConsultationResponse> = (0..11)
            .map(|_| {
                response(vec![AnswerInput {
                    question: "q1".into(),
                    choice: Some("yes".into()),
                    ..AnswerInput::default()
                }])
            })
            .collect();
        responses.push(response(vec![]));
        let r = count_results(&[q], &responses, 10, String::new()).unwrap();
        assert_eq!(
            r.questions[0].answered, None,
            "12 respondents, 11 answered: one skipped"
        );
        assert_eq!(r.questions[0].counts[0].count, None);
    }
}
