//! Access governance: the purpose taxonomy, the charter, access requests,
//! trustees' votes, agreements — and the decision every read is checked
//! against (R-ACC-2 … R-ACC-8).

use citytrust_model::ProblemCode;
use std::collections::BTreeSet;
use std::sync::Arc;

use citytrust_model::access::{
    AccessRequest, Agreement, AgreementStatus, Comment, DecisionRecord, NewAccessRequest, NewVote,
    Purpose, PurposeKind, RequestStatus, Tally, Vote, default_purposes, format_day, parse_day,
    tally,
};
use citytrust_model::authz;
use citytrust_model::catalogue::{Dataset, Spectrum};
use citytrust_model::{Actor, ValidationErrors};
use citytrust_policy::{Charter, DatasetFacts, Principal, RequestFacts, RequestOutcome};
use citytrust_store::{NewLogEntry, StoredCharter};

use crate::ledger::PendingEntry;
use crate::{Result, Service, ServiceError, rfc3339};

/// The charter in force on this node, re-read when another version is stored.
#[derive(Default)]
pub(crate) struct CharterCache(std::sync::RwLock<Option<(i64, Arc<Charter>)>>);

/// A charter version as shown to trustees.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CharterView {
    pub version: i64,
    pub text: String,
    pub note: String,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub rules: Vec<CharterRule>,
    /// The plain-language digital ethics code published with this version.
    pub ethics_code: String,
    /// The consultation that informed this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consultation_id: Option<String>,
}

/// A new charter version, as a trustee sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CharterChange {
    /// Cedar policies, each with an `@id` and a `@reason`.
    pub text: String,
    /// Why the charter changes.
    pub note: String,
    /// The plain-language ethics code of this version; absent, the code of
    /// the version before is kept.
    #[serde(default)]
    pub ethics_code: Option<String>,
    /// The (closed) consultation that informed this change.
    #[serde(default)]
    pub consultation_id: Option<String>,
}

/// One line of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DiffLine {
    /// `same`, `added` or `removed`.
    pub op: &'static str,
    pub text: String,
}

/// What a charter version changed from the one before.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CharterChanges {
    pub version: i64,
    /// The version compared with (absent for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<i64>,
    /// Why it changed.
    pub note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consultation_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The Cedar rules, line by line.
    pub rules: Vec<DiffLine>,
    /// The ethics code, line by line.
    pub ethics_code: Vec<DiffLine>,
}

/// The most lines a comparison handles line by line (beyond, the old text
/// is shown removed and the new added).
const MAX_DIFF_LINES: usize = 1000;

/// A line comparison by longest common subsequence.
pub fn line_diff(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let line = |op, t: &str| DiffLine {
        op,
        text: t.to_string(),
    };
    if a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        return a
            .iter()
            .map(|t| line("removed", t))
            .chain(b.iter().map(|t| line("added", t)))
            .collect();
    }
    // lcs[i][j]: the common subsequence's length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(line("same", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(line("added", b[j]));
            j += 1;
        } else {
            out.push(line("removed", a[i]));
            i += 1;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CharterRule {
    pub id: String,
    /// permit or forbid
    pub effect: String,
    pub reason: Option<String>,
}

fn spectrum_id(s: Spectrum) -> &'static str {
    match s {
        Spectrum::Open => "open",
        Spectrum::SharedPublic => "shared_public",
        Spectrum::SharedGroup => "shared_group",
        Spectrum::SharedSpecific => "shared_specific",
        Spectrum::Closed => "closed",
    }
}

pub(crate) fn facts(dataset: &Dataset) -> DatasetFacts<'_> {
    DatasetFacts {
        id: &dataset.id,
        spectrum: spectrum_id(dataset.metadata.spectrum),
        owner: &dataset.metadata.owner_organization_id,
        personal_data: dataset.metadata.personal_data,
        needs_reassessment: dataset
            .metadata
            .derivation
            .as_ref()
            .is_some_and(|d| d.needs_reassessment),
    }
}

pub(crate) fn policy_error(e: citytrust_policy::PolicyError) -> ServiceError {
    ServiceError::Internal(format!("charter: {e}"))
}

/// The actor as the charter sees them, with the groups of their organisations.
pub(crate) struct Who {
    user: Option<String>,
    roles: Vec<&'static str>,
    orgs: Vec<(String, Vec<String>)>,
}

impl Who {
    /// Someone of an organisation the trust does not know (what a catalogue
    /// offered to other organisations is decided for). No user name can be
    /// written with parentheses, so it is no one's.
    pub(crate) fn outsider() -> Who {
        Who {
            user: Some("(participant)".into()),
            roles: vec![],
            orgs: vec![("(participant)".into(), vec![])],
        }
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&Principal<'_>) -> T) -> T {
        let groups: Vec<Vec<&str>> = self
            .orgs
            .iter()
            .map(|(_, g)| g.iter().map(String::as_str).collect())
            .collect();
        let orgs: Vec<(&str, &[&str])> = self
            .orgs
            .iter()
            .zip(&groups)
            .map(|((o, _), g)| (o.as_str(), g.as_slice()))
            .collect();
        f(&Principal {
            user: self.user.as_deref(),
            roles: &self.roles,
            organizations: &orgs,
        })
    }

    /// The recipients that stand for this person alone or their own
    /// organisations (not their groups): who attests deletion, who is blocked.
    pub(crate) fn direct_recipients(&self) -> Vec<String> {
        self.recipients()
            .into_iter()
            .filter(|r| !r.starts_with("group:"))
            .collect()
    }

    /// Everyone an agreement may name that covers this person.
    pub(crate) fn recipients(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            out.push(format!("user:{u}"));
        }
        let mut groups = BTreeSet::new();
        for (o, gs) in &self.orgs {
            out.push(format!("organization:{o}"));
            groups.extend(gs.iter().cloned());
        }
        out.extend(groups.into_iter().map(|g| format!("group:{g}")));
        out
    }
}

impl Service {
    pub(crate) async fn who(&self, actor: &Actor) -> Result<Who> {
        match actor {
            Actor::Anonymous => Ok(Who {
                user: None,
                roles: vec![],
                orgs: vec![],
            }),
            Actor::User {
                username,
                roles,
                organization_ids,
                ..
            } => {
                let groups = if organization_ids.is_empty() {
                    vec![]
                } else {
                    self.store.list_groups().await?
                };
                Ok(Who {
                    user: Some(username.clone()),
                    roles: roles.iter().map(|r| r.as_str()).collect(),
                    orgs: organization_ids
                        .iter()
                        .map(|o| {
                            let gs = groups
                                .iter()
                                .filter(|g| g.member_organization_ids.contains(o))
                                .map(|g| g.id.clone())
                                .collect();
                            (o.clone(), gs)
                        })
                        .collect(),
                })
            }
        }
    }

    /// Seed the taxonomy and the first charter on a new database (idempotent;
    /// another node doing it at the same time is fine).
    pub(crate) async fn seed_governance(&self) -> Result<()> {
        if self.store.list_purposes().await?.is_empty() {
            let at = rfc3339(self.now());
            for p in default_purposes() {
                match self.store.insert_purpose(&p, &at, None).await {
                    Ok(()) | Err(citytrust_store::StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if self.store.current_charter().await?.is_none() {
            let charter = StoredCharter {
                version: 1,
                text: citytrust_policy::DEFAULT_CHARTER.to_string(),
                note: "The charter a new trust starts with.".into(),
                created_by: "system".into(),
                created_at: rfc3339(self.now()),
                ethics_code: citytrust_policy::DEFAULT_ETHICS_CODE.to_string(),
                consultation_id: None,
            };
            // The built-in charter is not a change: it is public (GET
            // /api/v1/charter/versions) and every decision names the version it used.
            match self.store.insert_charter(&charter, None).await {
                Ok(()) | Err(citytrust_store::StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The charter in force and its version, parsed once per version.
    pub(crate) async fn charter_in_force(&self) -> Result<(i64, Arc<Charter>)> {
        let stored = self
            .store
            .current_charter_version()
            .await?
            .ok_or_else(|| ServiceError::Internal("no charter is stored".into()))?;
        if let Ok(cache) = self.charter.0.read()
            && let Some((v, c)) = cache.as_ref()
            && *v == stored
        {
            return Ok((*v, c.clone()));
        }
        let row = self
            .store
            .current_charter()
            .await?
            .ok_or_else(|| ServiceError::Internal("no charter is stored".into()))?;
        let charter = Arc::new(Charter::parse(&row.text).map_err(policy_error)?);
        if let Ok(mut cache) = self.charter.0.write() {
            *cache = Some((row.version, charter.clone()));
        }
        Ok((row.version, charter))
    }

    pub async fn purposes(&self) -> Result<Vec<Purpose>> {
        Ok(self.store.list_purposes().await?)
    }

    /// Add a purpose to the taxonomy (administrators and trustees).
    pub async fn add_purpose(&self, actor: &Actor, purpose: Purpose) -> Result<Purpose> {
        require_trust_role(actor)?;
        let mut e = ValidationErrors::default();
        e.slug("id", &purpose.id);
        e.required_text("name", &purpose.name, 200);
        e.max_len("description", &purpose.description, 5000);
        e.into_result()?;
        let (body, at) = self.log_entry(
            "purpose.added",
            serde_json::json!({"purpose": purpose.id, "kind": purpose.kind.as_str(), "commercial": purpose.commercial}),
        )?;
        let entry = crate::ledger::new_entry("purpose.added", &body, &at);
        self.store
            .insert_purpose(&purpose, &at, Some(&entry))
            .await?;
        Ok(purpose)
    }

    pub(crate) async fn purpose(&self, id: &str) -> Result<Option<Purpose>> {
        Ok(self.purposes().await?.into_iter().find(|p| p.id == id))
    }

    /// The charter in force, with its rules.
    pub async fn charter(&self) -> Result<CharterView> {
        let row = self
            .store
            .current_charter()
            .await?
            .ok_or_else(|| ServiceError::NotFound("the charter".into()))?;
        charter_view(row)
    }

    /// Every charter version, newest first.
    pub async fn charter_history(&self) -> Result<Vec<CharterView>> {
        self.store
            .list_charters()
            .await?
            .into_iter()
            .map(charter_view)
            .collect()
    }

    /// Replace the charter (trustees): validated against the schema first.
    /// The ethics code is kept from the version before unless given; a
    /// consultation cited must exist and be closed.
    pub async fn set_charter(&self, actor: &Actor, change: CharterChange) -> Result<CharterView> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        authz::may_change_charter(actor)?;
        let CharterChange {
            text,
            note,
            ethics_code,
            consultation_id,
        } = change;
        let mut e = ValidationErrors::default();
        e.required_text("note", &note, 2000);
        if text.len() > 200_000 {
            e.push("text", "a charter is at most 200,000 characters");
        }
        if let Some(code) = &ethics_code {
            e.required_text("ethics_code", code, 50_000);
        }
        if let Some(c) = &consultation_id {
            match self.store.get_consultation(c).await? {
                None => e.push("consultation_id", format!("there is no consultation '{c}'")),
                Some(k)
                    if k.state_on(self.today())
                        != citytrust_model::participation::ConsultationState::Closed =>
                {
                    e.push(
                        "consultation_id",
                        format!(
                            "consultation '{c}' has not closed: cite it once its results are in"
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        e.into_result()?;
        if let Err(citytrust_policy::PolicyError::Invalid(problems)) = Charter::parse(&text) {
            let mut e = ValidationErrors::default();
            for p in problems {
                e.push("text", p);
            }
            return Err(e.into());
        }
        let previous = self.store.current_charter().await?;
        let current = previous.as_ref().map_or(0, |p| p.version);
        let ethics_code = match ethics_code {
            Some(code) => code.trim().to_string(),
            None => previous.map(|p| p.ethics_code).unwrap_or_default(),
        };
        let charter = StoredCharter {
            version: current + 1,
            text,
            note,
            created_by: username.to_string(),
            created_at: rfc3339(self.now()),
            ethics_code,
            consultation_id,
        };
        let (body, at) = self.log_entry(
            "charter.changed",
            serde_json::json!({
                "version": charter.version,
                "sha256": sha256_hex(&charter.text),
                "ethics_code_sha256": sha256_hex(&charter.ethics_code),
                "consultation": charter.consultation_id,
                "by": "trustee",
            }),
        )?;
        let entry = crate::ledger::new_entry("charter.changed", &body, &at);
        self.store.insert_charter(&charter, Some(&entry)).await?;
        charter_view(charter)
    }

    /// What a charter version changed from the one before: the rules and the
    /// ethics code line by line, why, and the consultation that informed it.
    pub async fn charter_changes(&self, version: i64) -> Result<CharterChanges> {
        let all = self.store.list_charters().await?;
        changes_of(&all, version)
            .ok_or_else(|| ServiceError::NotFound(format!("charter version {version}")))
    }

    /// Every version's changes, newest first (the charters read once).
    pub async fn charter_history_changes(&self) -> Result<Vec<CharterChanges>> {
        let all = self.store.list_charters().await?;
        Ok(all
            .iter()
            .filter_map(|c| changes_of(&all, c.version))
            .collect())
    }

    pub(crate) fn today(&self) -> i64 {
        self.now().unix_timestamp().div_euclid(86_400)
    }
}

/// What version `version` of `all` changed from the one before.
fn changes_of(all: &[StoredCharter], version: i64) -> Option<CharterChanges> {
    let this = all.iter().find(|c| c.version == version)?;
    let before = all.iter().find(|c| c.version == version - 1);
    let empty = String::new();
    Some(CharterChanges {
        version,
        previous: before.map(|b| b.version),
        note: this.note.clone(),
        consultation_id: this.consultation_id.clone(),
        created_at: this.created_at.clone(),
        rules: line_diff(before.map_or(&empty, |b| &b.text), &this.text),
        ethics_code: line_diff(before.map_or(&empty, |b| &b.ethics_code), &this.ethics_code),
    })
}

impl Service {
    /// Ask for access (or save a draft). The charter decides at once what it
    /// can: refusals, automatic grants, public comment; the rest waits for votes.
    pub async fn create_access_request(
        &self,
        actor: &Actor,
        new: NewAccessRequest,
    ) -> Result<AccessRequest> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        let purposes = self.purposes().await?;
        let checked = new.validate(&purposes, self.today())?;
        let organization_id = match &new.organization_id {
            Some(o) if !actor.is_member_of(o) => {
                return Err(ValidationErrors::single(
                    "organization_id",
                    "you can ask only for an organisation you belong to",
                )
                .into());
            }
            Some(o) => Some(o.clone()),
            None => match actor.organization_ids() {
                [only] => Some(only.clone()),
                _ => None,
            },
        };
        if let Some(g) = &new.group_id {
            let group = self
                .store
                .list_groups()
                .await?
                .into_iter()
                .find(|x| &x.id == g);
            let member = group.is_some_and(|x| {
                organization_id
                    .as_ref()
                    .is_some_and(|o| x.member_organization_ids.contains(o))
            });
            if !member {
                return Err(ValidationErrors::single(
                    "group_id",
                    "a standing agreement is asked for by a member organisation of the group",
                )
                .into());
            }
        }
        let mut errors = ValidationErrors::default();
        for (i, id) in new.dataset_ids.iter().enumerate() {
            if self.store.get_dataset(id).await?.is_none() {
                errors.push(format!("dataset_ids[{i}]"), format!("no dataset '{id}'"));
            }
        }
        errors.into_result()?;
        let now = rfc3339(self.now());
        let id = format!("req-{}", hex::encode(crate::accounts::random_bytes::<6>()?));
        let mut request = AccessRequest {
            id,
            requester: username.to_string(),
            agent: actor.agent().cloned(),
            amends: new.amends.clone(),
            organization_id,
            group_id: new.group_id.clone(),
            dataset_ids: new.dataset_ids.clone(),
            purpose: new.purpose.clone(),
            level: checked.level,
            starts_on: format_day(checked.starts_on),
            ends_on: format_day(checked.ends_on),
            benefit: new.benefit.clone(),
            sharing: new.sharing,
            checklist: new.checklist.clone(),
            columns: new.columns.clone(),
            terms: new.terms.clone(),
            status: RequestStatus::Draft,
            risk_flags: vec![],
            comment_until: None,
            votes: vec![],
            comments: vec![],
            decision: None,
            agreement_id: None,
            created_at: now.clone(),
            updated_at: now,
        };
        self.check_amendment(actor, &request).await?;
        if new.draft {
            self.store
                .save_access_request(&request, None, None, &[])
                .await?;
            return Ok(request);
        }
        let (agreement, entries) = self.submit(actor, &mut request).await?;
        let entries: Vec<NewLogEntry<'_>> = entries.iter().map(PendingEntry::as_new).collect();
        self.store
            .save_access_request(&request, None, agreement.as_ref(), &entries)
            .await?;
        Ok(request)
    }

    /// Submit a saved draft.
    pub async fn submit_access_request(&self, actor: &Actor, id: &str) -> Result<AccessRequest> {
        let (mut request, revision) = self.request_for_edit(actor, id).await?;
        if request.status != RequestStatus::Draft {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::NotADraft,
                message: format!("request {id} was submitted already"),
            });
        }
        // A draft is checked in full when it is submitted.
        let new = NewAccessRequest {
            dataset_ids: request.dataset_ids.clone(),
            purpose: request.purpose.clone(),
            level: request.level.as_str().into(),
            starts_on: request.starts_on.clone(),
            ends_on: request.ends_on.clone(),
            benefit: request.benefit.clone(),
            sharing: request.sharing,
            checklist: request.checklist.clone(),
            organization_id: request.organization_id.clone(),
            group_id: request.group_id.clone(),
            columns: request.columns.clone(),
            terms: request.terms.clone(),
            amends: request.amends.clone(),
            draft: false,
        };
        new.validate(&self.purposes().await?, self.today())?;
        self.check_amendment(actor, &request).await?;
        let (agreement, entries) = self.submit(actor, &mut request).await?;
        let entries: Vec<NewLogEntry<'_>> = entries.iter().map(PendingEntry::as_new).collect();
        self.store
            .save_access_request(&request, Some(revision), agreement.as_ref(), &entries)
            .await?;
        Ok(request)
    }

    async fn request_for_edit(&self, actor: &Actor, id: &str) -> Result<(AccessRequest, i64)> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        let (request, revision) = self
            .store
            .get_access_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("access request '{id}'")))?;
        if request.requester != username {
            return Err(if request.status == RequestStatus::Draft {
                ServiceError::NotFound(format!("access request '{id}'"))
            } else {
                ServiceError::Forbidden("only the requester may change a request".into())
            });
        }
        Ok((request, revision))
    }

    /// Let the charter decide what it can; fill status, flags, decision.
    async fn submit(
        &self,
        actor: &Actor,
        request: &mut AccessRequest,
    ) -> Result<(Option<Agreement>, Vec<PendingEntry>)> {
        let purpose = self
            .purpose(&request.purpose)
            .await?
            .ok_or_else(|| ValidationErrors::single("purpose", "unknown purpose"))?;
        let who = self.who(actor).await?;
        self.refuse_if_overdue(&who).await?;
        let outcome_report_overdue = !self
            .overdue_outcomes_of(&who.direct_recipients())
            .await?
            .is_empty();
        let (charter_version, charter) = self.charter_in_force().await?;
        let today = self.today();
        let mut datasets = Vec::new();
        for id in &request.dataset_ids {
            datasets.push(self.get_dataset(id).await?);
        }
        if request.level.is_row_level()
            && let Some(d) = datasets.iter().find(|d| {
                d.metadata.column_classes.trajectories
                    && !actor.is_member_of(&d.metadata.owner_organization_id)
            })
        {
            return Err(ValidationErrors::single(
                "level",
                format!(
                    "the rows of '{}' are people's movements and leave their owner only as \
                     tables: ask at the aggregate or dp_aggregate level",
                    d.id
                ),
            )
            .into());
        }
        let mut flags = BTreeSet::new();
        if datasets.iter().any(|d| d.metadata.personal_data) {
            flags.insert("personal_data");
        }
        if request.level.is_row_level() {
            flags.insert("row_level");
        }
        if purpose.commercial {
            flags.insert("commercial");
        }
        if purpose.kind == PurposeKind::Secondary {
            flags.insert("secondary_use");
        }
        if request.sharing == citytrust_model::access::Sharing::OneOff {
            flags.insert("one_off");
        }
        request.risk_flags = flags.into_iter().map(str::to_string).collect();
        // The most stringent outcome over every dataset decides.
        let mut refused: Option<(String, Option<String>, String)> = None;
        let mut all_granted = true;
        let mut granted_by = Vec::new();
        let mut comment = false;
        for dataset in &datasets {
            let standing = self
                .standing_agreement(&who, dataset, request, today)
                .await?;
            let facts_request = RequestFacts {
                purpose: &purpose.id,
                purpose_kind: purpose.kind.as_str(),
                commercial: purpose.commercial,
                level: request.level.rank(),
                row_level: request.level.is_row_level(),
                sharing: request.sharing.as_str(),
                standing_agreement: standing,
                outcome_report_overdue,
            };
            let outcome = who
                .with(|p| charter.decide_request(p, &facts(dataset), &facts_request))
                .map_err(policy_error)?;
            match outcome {
                RequestOutcome::Refused(d) => {
                    all_granted = false;
                    if refused.is_none() {
                        let (rule, reason) = match d.forbidden_by() {
                            Some(r) => (
                                Some(r.id.clone()),
                                format!("dataset '{}': {}", dataset.id, r.describe()),
                            ),
                            None if dataset.metadata.spectrum == Spectrum::Open => (
                                None,
                                format!(
                                    "dataset '{}' is open data: no request is needed, read it directly",
                                    dataset.id
                                ),
                            ),
                            None => (
                                None,
                                format!(
                                    "dataset '{}': no rule of the charter lets you request it",
                                    dataset.id
                                ),
                            ),
                        };
                        refused = Some((dataset.id.clone(), rule, reason));
                    }
                }
                RequestOutcome::Granted(d) => {
                    granted_by.extend(d.rules.into_iter().map(|r| r.id));
                }
                RequestOutcome::Trustees { public_comment } => {
                    all_granted = false;
                    comment |= public_comment.is_some();
                }
            }
        }
        let now = rfc3339(self.now());
        request.updated_at = now.clone();
        let mut entries = Vec::new();
        let label = self.requester_label(request);
        let (body, at) = self.log_entry_by(
            actor,
            "access.requested",
            serde_json::json!({
                "request": request.id,
                "datasets": request.dataset_ids,
                "purpose": request.purpose,
                "level": request.level.as_str(),
                "starts_on": request.starts_on,
                "ends_on": request.ends_on,
                "sharing": request.sharing.as_str(),
                "by": label,
                "risk_flags": request.risk_flags,
            }),
        )?;
        entries.push(PendingEntry {
            kind: "access.requested".into(),
            body,
            at,
        });
        let mut agreement = None;
        if let Some((_, rule, reason)) = refused {
            request.status = RequestStatus::Refused;
            request.decision = Some(DecisionRecord {
                by: "charter".into(),
                rule,
                reason,
                with_consent: false,
                charter_version,
                at: now,
            });
            entries.push(self.decided_entry(request)?);
        } else if all_granted {
            granted_by.sort();
            granted_by.dedup();
            request.status = RequestStatus::Approved;
            request.decision = Some(DecisionRecord {
                by: "charter".into(),
                rule: granted_by.first().cloned(),
                reason: "granted without a vote: within a standing agreement of the group".into(),
                with_consent: false,
                charter_version,
                at: now,
            });
            let a = self.agreement_for(request, &datasets).await?;
            request.agreement_id = Some(a.id.clone());
            entries.push(self.decided_entry(request)?);
            entries.push(self.agreement_entry(made_kind(&a), &a)?);
            agreement = Some(a);
        } else if comment {
            request.status = RequestStatus::PublicComment;
            request.comment_until = Some(format_day(today + self.settings.comment_days));
        } else {
            request.status = RequestStatus::UnderReview;
        }
        Ok((agreement, entries))
    }

    /// Whether a standing agreement of one of the requester's groups bounds
    /// this request: a level it covers, columns it shares, a period inside
    /// its own. Only then may the charter grant it without a vote, so an
    /// automatic grant can never widen access.
    async fn standing_agreement(
        &self,
        who: &Who,
        dataset: &Dataset,
        request: &AccessRequest,
        today: i64,
    ) -> Result<bool> {
        let groups: Vec<String> = who
            .recipients()
            .into_iter()
            .filter(|r| r.starts_with("group:"))
            .collect();
        Ok(self
            .store
            .agreements_in_force(&dataset.id, &request.purpose, &groups, today)
            .await?
            .iter()
            .any(|a| {
                a.bounds(
                    request.level,
                    &request.columns,
                    &request.starts_on,
                    &request.ends_on,
                )
            }))
    }

    fn requester_label(&self, request: &AccessRequest) -> String {
        match &request.organization_id {
            Some(o) => format!("organization:{o}"),
            None => "individual".into(),
        }
    }

    fn decided_entry(&self, request: &AccessRequest) -> Result<PendingEntry> {
        let decision = request.decision.as_ref();
        let (body, at) = self.log_entry(
            "access.decided",
            serde_json::json!({
                "request": request.id,
                "outcome": request.status.as_str(),
                "by": decision.map(|d| d.by.as_str()),
                "rule": decision.and_then(|d| d.rule.as_deref()),
                "reason": decision.map(|d| d.reason.as_str()),
                "with_consent": decision.is_some_and(|d| d.with_consent),
                "charter_version": decision.map(|d| d.charter_version),
                "agreement": request.agreement_id,
            }),
        )?;
        Ok(PendingEntry {
            kind: "access.decided".into(),
            body,
            at,
        })
    }

    fn agreement_entry(&self, kind: &str, a: &Agreement) -> Result<PendingEntry> {
        let (body, at) = self.log_entry(
            kind,
            serde_json::json!({
                "agreement": a.id,
                "version": a.version,
                "status": a.status.as_str(),
                "request": a.request_id,
                "providers": a.providers,
                // The log names organisations and groups, never people.
                "recipient": if a.recipient.starts_with("user:") { "individual" } else { a.recipient.as_str() },
                "datasets": a.dataset_ids,
                "purpose": a.purpose,
                "level": a.level.as_str(),
                "starts_on": a.starts_on,
                "ends_on": a.ends_on,
            }),
        )?;
        Ok(PendingEntry {
            kind: kind.to_string(),
            body,
            at,
        })
    }

    /// The agreement an approved request makes: a new one, or the next
    /// version of the agreement it renews or amends.
    async fn agreement_for(
        &self,
        request: &AccessRequest,
        datasets: &[Dataset],
    ) -> Result<Agreement> {
        let (id, version) = match &request.amends {
            Some(id) => {
                let current = self.agreement(id).await?;
                (current.id, current.version + 1)
            }
            None => (
                format!("dsa-{}", hex::encode(crate::accounts::random_bytes::<6>()?)),
                1,
            ),
        };
        let mut providers: Vec<String> = datasets
            .iter()
            .map(|d| d.metadata.owner_organization_id.clone())
            .collect();
        providers.sort();
        providers.dedup();
        let recipient = recipient_of(request);
        let decision = request
            .decision
            .clone()
            .ok_or_else(|| ServiceError::Internal("an agreement without a decision".into()))?;
        Ok(Agreement {
            id,
            version,
            status: AgreementStatus::Active,
            request_id: request.id.clone(),
            providers,
            recipient,
            dataset_ids: request.dataset_ids.clone(),
            columns: request.columns.clone(),
            purpose: request.purpose.clone(),
            level: request.level,
            starts_on: request.starts_on.clone(),
            ends_on: request.ends_on.clone(),
            sharing: request.sharing,
            terms: request.terms.clone(),
            decision,
            deletion_attested_at: None,
            deletion_statement: None,
            created_at: rfc3339(self.now()),
        })
    }

    /// Whether `actor` is (or acts for) the direct recipient of `a`.
    pub async fn receives(&self, actor: &Actor, a: &Agreement) -> Result<bool> {
        if actor.username().is_none() {
            return Ok(false);
        }
        Ok(self
            .who(actor)
            .await?
            .direct_recipients()
            .contains(&a.recipient))
    }

    /// A renewal or amendment is asked for by the agreement's recipient, for
    /// the same purpose, while the agreement has not been retired; until it
    /// is decided the agreement's current version stays in force.
    async fn check_amendment(&self, actor: &Actor, request: &AccessRequest) -> Result<()> {
        let Some(id) = &request.amends else {
            return Ok(());
        };
        let Some(current) = self.store.get_agreement(id).await? else {
            return Err(ValidationErrors::single(
                "amends",
                format!("there is no agreement '{id}'"),
            )
            .into());
        };
        if current.status != AgreementStatus::Active {
            return Err(ValidationErrors::single(
                "amends",
                format!(
                    "agreement {id} is {}; ask for a new agreement instead",
                    current.status.as_str()
                ),
            )
            .into());
        }
        let who = self.who(actor).await?;
        if !who.direct_recipients().contains(&current.recipient) {
            return Err(ServiceError::Forbidden(format!(
                "only the recipient of agreement {id} ({}) renews or amends it",
                current.recipient
            )));
        }
        let mut e = ValidationErrors::default();
        if request.purpose != current.purpose {
            e.push(
                "purpose",
                format!(
                    "agreement {id} is for '{}'; another purpose needs a new agreement",
                    current.purpose
                ),
            );
        }
        let recipient = recipient_of(request);
        if recipient != current.recipient {
            e.push(
                "organization_id",
                format!("agreement {id} is with {}", current.recipient),
            );
        }
        e.into_result()?;
        Ok(())
    }

    /// A request, as its requester, the trustees or the public register see it
    /// (drafts are the requester's alone).
    pub async fn get_access_request(&self, actor: &Actor, id: &str) -> Result<AccessRequest> {
        let (request, _) = self
            .store
            .get_access_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("access request '{id}'")))?;
        if request.status == RequestStatus::Draft && actor.username() != Some(&request.requester) {
            return Err(ServiceError::NotFound(format!("access request '{id}'")));
        }
        Ok(if request.names_visible_to(actor) {
            request
        } else {
            request.without_names()
        })
    }

    /// The caller's own requests (`mine`), or the public register / trustees' queue by status.
    pub async fn list_access_requests(
        &self,
        actor: &Actor,
        mine: bool,
        statuses: &[RequestStatus],
    ) -> Result<Vec<AccessRequest>> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        if mine {
            let Some(username) = actor.username() else {
                return Err(ServiceError::Unauthenticated);
            };
            return Ok(self
                .store
                .list_access_requests(Some(username), &statuses, 500)
                .await?);
        }
        let mut list = self
            .store
            .list_access_requests(None, &statuses, 500)
            .await?;
        list.retain(|r| r.status != RequestStatus::Draft);
        Ok(list
            .into_iter()
            .map(|r| {
                if r.names_visible_to(actor) {
                    r
                } else {
                    r.without_names()
                }
            })
            .collect())
    }

    /// A trustee votes; once the quorum is reached the majority decides
    /// (a tie denies), and an approval makes the agreement — in one transaction.
    pub async fn vote(&self, actor: &Actor, id: &str, vote: NewVote) -> Result<AccessRequest> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        authz::may_vote(actor)?;
        self.require_in_term(username).await?;
        vote.validate()?;
        let (mut request, revision) = self
            .store
            .get_access_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("access request '{id}'")))?;
        if request.status == RequestStatus::Draft {
            return Err(ServiceError::NotFound(format!("access request '{id}'")));
        }
        if request.requester == username {
            return Err(ServiceError::Forbidden(
                "a trustee does not vote on their own request".into(),
            ));
        }
        let today = self.today();
        if request.status == RequestStatus::PublicComment {
            let until = request
                .comment_until
                .as_deref()
                .and_then(parse_day)
                .unwrap_or(i64::MAX);
            if today <= until {
                return Err(ServiceError::Unprocessable {
                    code: ProblemCode::CommentPeriodOpen,
                    message: format!(
                        "request {id} is open for public comment until {}; votes start after it",
                        request.comment_until.as_deref().unwrap_or("")
                    ),
                });
            }
            request.status = RequestStatus::UnderReview;
        }
        if request.status != RequestStatus::UnderReview {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::AlreadyDecided,
                message: format!("request {id} is {}", request.status.as_str()),
            });
        }
        if request.votes.iter().any(|v| v.trustee == username) {
            return Err(ServiceError::Conflict(format!("your vote on request {id}")));
        }
        if let Some(c) = &vote.consultation_id {
            match self.store.get_consultation(c).await? {
                Some(k)
                    if k.state_on(today)
                        == citytrust_model::participation::ConsultationState::Closed => {}
                _ => {
                    return Err(ValidationErrors::single(
                        "consultation_id",
                        format!("there is no closed consultation '{c}' to cite"),
                    )
                    .into());
                }
            }
        }
        let now = rfc3339(self.now());
        request.votes.push(Vote {
            trustee: username.to_string(),
            vote: vote.vote,
            reason: vote.reason.trim().to_string(),
            conflict_of_interest: vote.conflict_of_interest.clone(),
            consultation_id: vote.consultation_id.clone(),
            at: now.clone(),
        });
        request.updated_at = now.clone();
        let (body, at) = self.log_entry(
            "access.vote",
            serde_json::json!({
                "request": request.id,
                "vote": match vote.vote { citytrust_model::access::VoteChoice::Approve => "approve", citytrust_model::access::VoteChoice::Deny => "deny" },
                "reason": vote.reason.trim(),
                "conflict_declared": vote.conflict_of_interest.is_some(),
                "consultation": vote.consultation_id,
                "by": "trustee",
            }),
        )?;
        let mut entries = vec![PendingEntry {
            kind: "access.vote".into(),
            body,
            at,
        }];
        let (charter_version, _) = self.charter_in_force().await?;
        let mut agreement = None;
        let trustees = self
            .store
            .count_trustees_except(&request.requester, &format_day(self.today()))
            .await?;
        let outcome = tally(
            &request.votes,
            self.settings.quorum,
            usize::try_from(trustees).unwrap_or(0),
        );
        if outcome == Tally::Stuck {
            tracing::warn!(request = %request.id, trustees, "too many declared conflicts: the board cannot reach a quorum on this request");
        }
        if matches!(outcome, Tally::Approved | Tally::Denied) {
            let reasons: Vec<String> = request
                .votes
                .iter()
                .filter(|v| v.conflict_of_interest.is_none())
                .map(|v| v.reason.clone())
                .collect();
            request.status = if outcome == Tally::Approved {
                RequestStatus::Approved
            } else {
                RequestStatus::Denied
            };
            request.decision = Some(DecisionRecord {
                by: "trustees".into(),
                rule: None,
                reason: reasons.join(" / "),
                with_consent: false,
                charter_version,
                at: now,
            });
            if outcome == Tally::Approved {
                let mut datasets = Vec::new();
                for d in &request.dataset_ids {
                    datasets.push(self.get_dataset(d).await?);
                }
                let a = self.agreement_for(&request, &datasets).await?;
                request.agreement_id = Some(a.id.clone());
                entries.push(self.decided_entry(&request)?);
                entries.push(self.agreement_entry(made_kind(&a), &a)?);
                agreement = Some(a);
            } else {
                entries.push(self.decided_entry(&request)?);
            }
        }
        let entries: Vec<NewLogEntry<'_>> = entries.iter().map(PendingEntry::as_new).collect();
        self.store
            .save_access_request(&request, Some(revision), agreement.as_ref(), &entries)
            .await?;
        // A negotiation through the Dataspace Protocol may wait on this decision.
        self.wake_negotiations();
        Ok(request)
    }

    /// Where the vote on an undecided request stands, in words for its page:
    /// how many counting votes are in and how many decide, or that declared
    /// conflicts leave too few trustees to decide.
    pub async fn quorum_state(&self, request: &AccessRequest) -> Result<String> {
        let trustees = self
            .store
            .count_trustees_except(&request.requester, &format_day(self.today()))
            .await?;
        let trustees = usize::try_from(trustees).unwrap_or(0);
        let conflicted = request
            .votes
            .iter()
            .filter(|v| v.conflict_of_interest.is_some())
            .count();
        let counting = request.votes.len() - conflicted;
        Ok(
            match citytrust_model::access::votes_needed(self.settings.quorum, trustees, conflicted)
            {
                Some(needed) => format!(
                    "{counting} of the {needed} counting votes that decide are in (quorum {}; {conflicted} declared a conflict of interest).",
                    self.settings.quorum
                ),
                None => format!(
                    "The board cannot decide this request: {conflicted} of {trustees} trustees declared a conflict of interest, leaving fewer than a majority of the quorum of {}. An administrator must appoint further trustees.",
                    self.settings.quorum
                ),
            },
        )
    }

    /// Anyone signed in comments on a request open for public comment.
    pub async fn comment_on_request(
        &self,
        actor: &Actor,
        id: &str,
        text: &str,
    ) -> Result<AccessRequest> {
        let Actor::User { display_name, .. } = actor else {
            return Err(ServiceError::Unauthenticated);
        };
        let mut e = ValidationErrors::default();
        e.required_text("text", text, 5000);
        e.into_result()?;
        let (mut request, revision) = self
            .store
            .get_access_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("access request '{id}'")))?;
        let open = request.status == RequestStatus::PublicComment
            && request
                .comment_until
                .as_deref()
                .and_then(parse_day)
                .is_some_and(|until| self.today() <= until);
        if !open {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::CommentPeriodClosed,
                message: format!("request {id} is not open for public comment"),
            });
        }
        let now = rfc3339(self.now());
        request.comments.push(Comment {
            by: display_name.clone(),
            text: text.trim().to_string(),
            at: now.clone(),
        });
        request.updated_at = now;
        self.store
            .save_access_request(&request, Some(revision), None, &[])
            .await?;
        Ok(if request.names_visible_to(actor) {
            request
        } else {
            request.without_names()
        })
    }

    pub async fn agreements(&self) -> Result<Vec<Agreement>> {
        Ok(self.store.list_agreements(1000).await?)
    }

    pub async fn agreement(&self, id: &str) -> Result<Agreement> {
        self.store
            .get_agreement(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("agreement '{id}'")))
    }

    /// Retire an agreement before its end (trustees), with a reason: reads
    /// under it stop at once.
    pub async fn retire_agreement(
        &self,
        actor: &Actor,
        id: &str,
        reason: &str,
    ) -> Result<Agreement> {
        if actor.username().is_none() {
            return Err(ServiceError::Unauthenticated);
        }
        authz::may_retire_agreement(actor)?;
        let mut e = ValidationErrors::default();
        e.required_text("reason", reason, 5000);
        e.into_result()?;
        self.retire_agreement_for(id, "trustees", reason).await
    }

    /// Retire an active agreement, `by` whom (the trustees, or a consumer
    /// ending its Dataspace Protocol negotiation), logged.
    pub(crate) async fn retire_agreement_for(
        &self,
        id: &str,
        by: &str,
        reason: &str,
    ) -> Result<Agreement> {
        let mut a = self.agreement(id).await?;
        if a.status != AgreementStatus::Active {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::NotActive,
                message: format!("agreement {id} is {}", a.status.as_str()),
            });
        }
        a.version += 1;
        a.status = AgreementStatus::Retired;
        a.decision.reason = reason.trim().to_string();
        a.decision.by = by.into();
        a.decision.at = rfc3339(self.now());
        a.created_at = a.decision.at.clone();
        let entry = self.agreement_entry("agreement.retired", &a)?;
        self.store
            .save_agreement_version(&a, &entry.as_new())
            .await?;
        Ok(a)
    }

    /// The recipient attests that the data was deleted (R-ACC-8): after the
    /// agreement's last day, once, by a member of the recipient.
    pub async fn attest_deletion(
        &self,
        actor: &Actor,
        id: &str,
        statement: &str,
    ) -> Result<Agreement> {
        if actor.username().is_none() {
            return Err(ServiceError::Unauthenticated);
        }
        let mut e = ValidationErrors::default();
        e.required_text("statement", statement, 5000);
        e.into_result()?;
        let mut a = self.agreement(id).await?;
        let who = self.who(actor).await?;
        let direct = who.direct_recipients();
        if !direct.contains(&a.recipient) {
            return Err(ServiceError::Forbidden(format!(
                "only the recipient of agreement {id} ({}) attests its deletion",
                a.recipient
            )));
        }
        if a.deletion_attested_at.is_some() {
            return Err(ServiceError::Conflict(format!(
                "the deletion attestation of agreement {id}"
            )));
        }
        if self.today() <= a.last_day() {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::AgreementInForce,
                message: format!(
                    "agreement {id} runs until {}; attest deletion after it ends",
                    format_day(a.last_day())
                ),
            });
        }
        let now = rfc3339(self.now());
        a.version += 1;
        a.deletion_attested_at = Some(now.clone());
        a.deletion_statement = Some(statement.trim().to_string());
        a.created_at = now;
        let entry = self.agreement_entry("agreement.deletion_attested", &a)?;
        self.store
            .save_agreement_version(&a, &entry.as_new())
            .await?;
        Ok(a)
    }

    /// Agreements whose recipients are late attesting deletion (trustees and administrators).
    pub async fn overdue_attestations(&self, actor: &Actor) -> Result<Vec<Agreement>> {
        require_trust_role(actor)?;
        let today = self.today();
        Ok(self
            .agreements()
            .await?
            .into_iter()
            .filter(|a| a.attestation_overdue(today))
            .collect())
    }

    /// Refuse new requests from a recipient late attesting deletion.
    async fn refuse_if_overdue(&self, who: &Who) -> Result<()> {
        let today = self.today();
        let direct = who.direct_recipients();
        let late: Vec<String> = self
            .agreements()
            .await?
            .into_iter()
            .filter(|a| direct.contains(&a.recipient) && a.attestation_overdue(today))
            .map(|a| a.id)
            .collect();
        if late.is_empty() {
            return Ok(());
        }
        Err(ServiceError::Refused {
            rule: Some("deletion-attestation-overdue".into()),
            message: format!(
                "new requests are blocked until the data's deletion is attested for the \
                 ended agreement(s) {} (on each agreement's page)",
                late.join(", ")
            ),
        })
    }

    /// The agreement as an ODRL 2.2 policy (an Agreement between the providers and the recipient).
    pub async fn agreement_odrl(&self, id: &str, base: &str) -> Result<serde_json::Value> {
        let a = self.agreement(id).await?;
        Ok(odrl(&a, base))
    }
}

fn require_trust_role(actor: &Actor) -> Result<()> {
    Ok(authz::may_change_purposes(actor)?)
}

fn charter_view(row: StoredCharter) -> Result<CharterView> {
    let charter = Charter::parse(&row.text).map_err(policy_error)?;
    let rules = charter
        .rules()
        .into_iter()
        .map(|(r, effect)| CharterRule {
            id: r.id,
            effect: effect.to_string(),
            reason: r.reason,
        })
        .collect();
    Ok(CharterView {
        version: row.version,
        text: row.text,
        note: row.note,
        created_by: row.created_by,
        created_at: row.created_at,
        rules,
        ethics_code: row.ethics_code,
        consultation_id: row.consultation_id,
    })
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// ODRL 2.2 JSON-LD: one `Agreement` with a permission per dataset to `use`
/// it, constrained by purpose, the period and (as a refinement) the level;
/// duties to delete at the end and to keep it secure.
pub fn odrl(a: &Agreement, base: &str) -> serde_json::Value {
    use serde_json::json;
    let party = |p: &str| -> String {
        match p.split_once(':') {
            Some((kind, id)) => format!("{base}/{kind}s/{id}"),
            None => format!("{base}/{p}"),
        }
    };
    let assigner: Vec<String> = a
        .providers
        .iter()
        .map(|o| format!("{base}/organizations/{o}"))
        .collect();
    let assignee = party(&a.recipient);
    let permissions: Vec<serde_json::Value> = a
        .dataset_ids
        .iter()
        .map(|d| {
            json!({
                "target": format!("{base}/datasets/{d}"),
                "assigner": if assigner.len() == 1 { json!(assigner[0]) } else { json!(assigner) },
                "assignee": assignee,
                "action": [{
                    "rdf:value": {"@id": "odrl:use"},
                    "refinement": [{
                        "leftOperand": format!("{base}/ns#accessLevel"),
                        "operator": "lteq",
                        "rightOperand": {"@value": a.level.as_str(), "@type": "xsd:string"}
                    }]
                }],
                "constraint": [
                    {"leftOperand": "purpose", "operator": "eq", "rightOperand": {"@id": format!("{base}/purposes/{}", a.purpose)}},
                    {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": {"@value": a.starts_on, "@type": "xsd:date"}},
                    {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": {"@value": a.ends_on, "@type": "xsd:date"}}
                ],
                "duty": [{
                    "action": "delete",
                    "constraint": [{
                        "leftOperand": "elapsedTime",
                        "operator": "lteq",
                        "rightOperand": {"@value": format!("P{}D", a.terms.retention_days), "@type": "xsd:duration"}
                    }]
                }]
            })
        })
        .collect();
    let mut policy = json!({
        "@context": ["http://www.w3.org/ns/odrl.jsonld", {"dct": "http://purl.org/dc/terms/", "xsd": "http://www.w3.org/2001/XMLSchema#"}],
        "@type": "Agreement",
        "uid": format!("{base}/agreements/{}", a.id),
        "profile": format!("{base}/ns"),
        "dct:identifier": a.id,
        "dct:hasVersion": a.version,
        "dct:description": format!("Data sharing agreement {} (request {}): {} at level {}, {} to {}.", a.id, a.request_id, a.purpose, a.level.as_str(), a.starts_on, a.ends_on),
        "permission": permissions,
    });
    if a.status != AgreementStatus::Active {
        policy["prohibition"] = json!([{
            "target": a.dataset_ids.iter().map(|d| format!("{base}/datasets/{d}")).collect::<Vec<_>>(),
            "assigner": assigner,
            "assignee": assignee,
            "action": "use"
        }]);
    }
    if let Some(licence) = &a.terms.licence {
        policy["dct:license"] = json!(licence);
    }
    policy
}

/// The log entry type for an agreement's first version or a later one.
fn made_kind(a: &Agreement) -> &'static str {
    if a.version == 1 {
        "agreement.made"
    } else {
        "agreement.amended"
    }
}

/// Who an agreement made from `request` is with: a group (standing), the
/// requester's organisation, or the requester in person.
fn recipient_of(request: &AccessRequest) -> String {
    match (&request.group_id, &request.organization_id) {
        (Some(g), _) => format!("group:{g}"),
        (None, Some(o)) => format!("organization:{o}"),
        (None, None) => format!("user:{}", request.requester),
    }
}
