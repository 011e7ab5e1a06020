//! Sharing projects (R-PAR-5): the toolkit's Discover → Prepare → Share →
//! Review process. The project's organisations fill it in; a stage ends
//! only when its checklist is complete and it is signed off (the trustees;
//! the owner, when all its data is open); Share makes the project's access
//! request through the ordinary request path — decided by the trustees as
//! any other — and the Share stage ends once every request it made is an
//! agreement; at review the project is renewed (a new review date), changed
//! (a new version) or retired by the trustees, which retires its agreements
//! and asks their recipients to attest the data's deletion. Every change is
//! a log entry naming organisations and roles; documents' bytes are kept
//! and their digests logged.

use citytrust_model::projects::{
    AttestationDue, DocumentKind, NewProject, Project, ProjectDocument, ProjectUpdate, Retirement,
    SignOff, Stage,
};
use citytrust_model::{Actor, RequestStatus, Spectrum, ValidationErrors, authz};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::accounts::{random_hex, sha256_hex};
use crate::{Result, Service, ServiceError, rfc3339};

/// The largest document a project keeps.
pub const MAX_DOCUMENT_BYTES: usize = 10 * 1024 * 1024;

/// Body of `POST /api/v1/projects/{id}/sign-off`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignOffBody {
    /// The stage signed off: the project's current one.
    pub stage: Stage,
    #[schema(min_length = 1, max_length = 5000)]
    pub note: String,
}

/// Body of `POST /api/v1/projects/{id}/renew`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// The next review date (YYYY-MM-DD).
    pub review_on: String,
}

/// Body of `POST /api/v1/projects/{id}/retire`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireProjectBody {
    #[schema(min_length = 1, max_length = 5000)]
    pub reason: String,
}

/// The organisations a project's work belongs to.
fn organizations(p: &Project) -> Vec<String> {
    let mut out = vec![p.lead_organization_id.clone()];
    out.extend(p.partner_organization_ids.iter().cloned());
    out
}

/// How the log names who acted on a project.
fn acting(actor: &Actor, p: &Project) -> String {
    organizations(p)
        .into_iter()
        .find(|o| actor.is_member_of(o))
        .map(|o| format!("organization:{o}"))
        .unwrap_or_else(|| "trustees".into())
}

impl Service {
    async fn stored_project(&self, id: &str) -> Result<Project> {
        self.store
            .get_project(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("project '{id}'")))
    }

    /// Save `p` (read at `expected`) with its log entry, or say it changed.
    async fn save_project(
        &self,
        actor: &Actor,
        p: &Project,
        expected: i64,
        kind: &str,
        fields: serde_json::Value,
        document: Option<(&str, &str, i64, &[u8])>,
    ) -> Result<Project> {
        let (body, at) = self.log_entry_by(actor, kind, fields)?;
        self.store
            .update_project(p, expected, &crate::ledger::new_entry(kind, &body, &at), document)
            .await?
            .ok_or_else(|| {
                ServiceError::Stale(format!(
                    "project '{}' was changed meanwhile (revision {expected} is no longer current): read it again",
                    p.id
                ))
            })
    }

    /// Start a project (members of its lead organisation).
    pub async fn create_project(&self, actor: &Actor, new: NewProject) -> Result<Project> {
        authz::may_work_on_project(actor, std::slice::from_ref(&new.lead_organization_id))?;
        let mut e = ValidationErrors::default();
        e.required_text("title", &new.title, 200);
        e.required_text("summary", &new.summary, 5000);
        e.list(
            "partner_organization_ids",
            &new.partner_organization_ids,
            20,
            100,
        );
        for (i, o) in new.partner_organization_ids.iter().enumerate() {
            if self.store.get_organization(o).await?.is_none() {
                e.push(
                    format!("partner_organization_ids[{i}]"),
                    format!("there is no organisation '{o}'"),
                );
            }
        }
        e.into_result()?;
        let p = Project {
            id: format!("prj-{}", random_hex::<6>()?),
            title: new.title.trim().to_string(),
            summary: new.summary.trim().to_string(),
            lead_organization_id: new.lead_organization_id,
            partner_organization_ids: new.partner_organization_ids,
            stage: Stage::Discover,
            version: 1,
            revision: 1,
            reasons: Default::default(),
            team: vec![],
            ecosystem: vec![],
            dataset_ids: vec![],
            data_request_ids: vec![],
            canvas: Default::default(),
            maturity: None,
            business_case: Default::default(),
            legal_basis: String::new(),
            documents: vec![],
            dpia_screening: Default::default(),
            ethics_review: None,
            technical_pattern: None,
            preparation: Default::default(),
            share_request: None,
            access_request_ids: vec![],
            agreement_ids: vec![],
            review_on: None,
            sign_offs: vec![],
            retirement: None,
            created_at: rfc3339(self.now()),
            log_entries: vec![],
        };
        let (body, at) = self.log_entry_by(
            actor,
            "project.started",
            serde_json::json!({
                "project": p.id,
                "lead": format!("organization:{}", p.lead_organization_id),
                "partners": p.partner_organization_ids,
            }),
        )?;
        Ok(self
            .store
            .insert_project(&p, &crate::ledger::new_entry("project.started", &body, &at))
            .await?)
    }

    /// Every project, newest first. Public (documents' bytes are not).
    pub async fn projects(&self) -> Result<Vec<Project>> {
        Ok(self.store.list_projects().await?)
    }

    pub async fn project(&self, id: &str) -> Result<Project> {
        self.stored_project(id).await
    }

    /// What the project's current stage still lacks.
    pub async fn project_missing(&self, p: &Project) -> Result<Vec<(String, String)>> {
        Ok(p.missing(self.agreements_made(p).await?.len()))
    }

    /// The agreements the project's access requests have become.
    async fn agreements_made(&self, p: &Project) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for r in &p.access_request_ids {
            if let Some((request, _)) = self.store.get_access_request(r).await?
                && request.status == RequestStatus::Approved
                && let Some(a) = request.agreement_id
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Fill in sections of the project (its organisations' members), at the
    /// revision read. After the Share stage, a change makes a new version.
    pub async fn update_project(
        &self,
        actor: &Actor,
        id: &str,
        update: ProjectUpdate,
    ) -> Result<Project> {
        let mut p = self.stored_project(id).await?;
        authz::may_work_on_project(actor, &organizations(&p))?;
        if p.stage == Stage::Retired {
            return Err(ServiceError::Stale(format!("project '{id}' is retired")));
        }
        update.validate()?;
        let mut e = ValidationErrors::default();
        if let Some(ids) = &update.dataset_ids {
            for (i, d) in ids.iter().enumerate() {
                if self.store.get_dataset(d).await?.is_none() {
                    e.push(
                        format!("dataset_ids[{i}]"),
                        format!("there is no dataset '{d}'"),
                    );
                }
            }
        }
        if let Some(ids) = &update.data_request_ids {
            for (i, d) in ids.iter().enumerate() {
                if self.store.get_data_request(d).await?.is_none() {
                    e.push(
                        format!("data_request_ids[{i}]"),
                        format!("there is no data request '{d}'"),
                    );
                }
            }
        }
        if let Some(team) = &update.team {
            for (i, t) in team.iter().enumerate() {
                if self
                    .store
                    .get_organization(&t.organization_id)
                    .await?
                    .is_none()
                {
                    e.push(
                        format!("team[{i}].organization_id"),
                        format!("there is no organisation '{}'", t.organization_id),
                    );
                }
            }
        }
        if update.share_request.is_some() && p.stage > Stage::Share {
            e.push("share_request", "the project has made its request already");
        }
        e.into_result()?;
        if update.revision != p.revision {
            return Err(ServiceError::Stale(format!(
                "project '{id}' is at revision {}, not {}: read it again",
                p.revision, update.revision
            )));
        }
        let expected = p.revision;
        let mut sections = Vec::new();
        macro_rules! take {
            ($field:ident) => {
                if let Some(v) = update.$field {
                    p.$field = v;
                    sections.push(stringify!($field));
                }
            };
        }
        take!(summary);
        take!(reasons);
        take!(team);
        take!(ecosystem);
        take!(dataset_ids);
        take!(data_request_ids);
        take!(canvas);
        take!(business_case);
        take!(legal_basis);
        take!(dpia_screening);
        take!(preparation);
        if let Some(v) = update.maturity {
            p.maturity = Some(v);
            sections.push("maturity");
        }
        if let Some(v) = update.ethics_review {
            p.ethics_review = Some(v);
            sections.push("ethics_review");
        }
        if let Some(v) = update.technical_pattern {
            p.technical_pattern = Some(v);
            sections.push("technical_pattern");
        }
        if let Some(mut v) = update.share_request {
            v.dataset_ids = p.dataset_ids.clone();
            v.organization_id = Some(p.lead_organization_id.clone());
            v.draft = false;
            p.share_request = Some(v);
            sections.push("share_request");
        }
        if let Some(v) = update.review_on {
            p.review_on = Some(v);
            sections.push("review_on");
        }
        if p.stage == Stage::Review {
            p.version += 1;
        }
        let fields = serde_json::json!({
            "project": p.id,
            "version": p.version,
            "sections": sections,
            "dpia_required": p.dpia_required(),
            "by": acting(actor, &p),
        });
        self.save_project(actor, &p, expected, "project.updated", fields, None)
            .await
    }

    /// Keep a document with the project: a new version when the name is
    /// taken. Its digest goes to the log.
    pub async fn add_project_document(
        &self,
        actor: &Actor,
        id: &str,
        kind: &str,
        name: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<ProjectDocument> {
        let mut p = self.stored_project(id).await?;
        authz::may_work_on_project(actor, &organizations(&p))?;
        let mut e = ValidationErrors::default();
        let kind = match DocumentKind::parse(kind) {
            Some(k) => k,
            None => {
                e.push(
                    "kind",
                    "mou, data_sharing_agreement, service_level_agreement, licence, dpia or other",
                );
                DocumentKind::Other
            }
        };
        e.required_text("name", name, 200);
        if name.contains('/') || name.contains('\\') {
            e.push("name", "a file name, without folders");
        }
        if bytes.is_empty() {
            e.push("body", "the document is empty");
        }
        e.into_result()?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "a project document is at most {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        if p.stage == Stage::Retired {
            return Err(ServiceError::Stale(format!("project '{id}' is retired")));
        }
        let expected = p.revision;
        let version = p.documents.iter().filter(|d| d.name == name).count() as i64 + 1;
        let doc = ProjectDocument {
            id: format!("doc-{}", random_hex::<6>()?),
            kind,
            name: name.to_string(),
            version,
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)),
            size: bytes.len() as i64,
            media_type: media_type.chars().take(100).collect(),
            uploaded_at: rfc3339(self.now()),
            log_entry: 0,
        };
        p.documents.push(doc.clone());
        let fields = serde_json::json!({
            "project": p.id,
            "document": doc.id,
            "kind": doc.kind,
            "name_sha256": sha256_hex(&doc.name),
            "version": doc.version,
            "sha256": doc.sha256,
            "size": doc.size,
            "by": acting(actor, &p),
        });
        let saved = self
            .save_project(
                actor,
                &p,
                expected,
                "project.document_added",
                fields,
                Some((&doc.id, &doc.name, doc.version, bytes)),
            )
            .await?;
        saved
            .documents
            .into_iter()
            .find(|d| d.id == doc.id)
            .ok_or_else(|| ServiceError::Internal("the document vanished".into()))
    }

    /// A document and its bytes: the project's organisations, trustees and administrators.
    pub async fn project_document(
        &self,
        actor: &Actor,
        id: &str,
        doc_id: &str,
    ) -> Result<(ProjectDocument, Vec<u8>)> {
        let p = self.stored_project(id).await?;
        if authz::may_work_on_project(actor, &organizations(&p)).is_err()
            && authz::may_vote(actor).is_err()
            && authz::may_administer(actor).is_err()
        {
            return Err(match actor {
                Actor::Anonymous => ServiceError::Unauthenticated,
                _ => ServiceError::Forbidden(
                    "a project's documents are read by its organisations and the trustees".into(),
                ),
            });
        }
        let Some(doc) = p.documents.into_iter().find(|d| d.id == doc_id) else {
            return Err(ServiceError::NotFound(format!("document '{doc_id}'")));
        };
        let bytes = self
            .store
            .project_document(id, doc_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("document '{doc_id}'")))?;
        Ok((doc, bytes))
    }

    /// The owners of a project's data when all of it is open (they may sign off).
    async fn open_data_owners(&self, p: &Project) -> Result<Option<Vec<String>>> {
        if p.dataset_ids.is_empty() {
            return Ok(None);
        }
        let mut owners = Vec::new();
        for d in &p.dataset_ids {
            let Some(ds) = self.store.get_dataset(d).await? else {
                return Ok(None);
            };
            if ds.metadata.spectrum != Spectrum::Open {
                return Ok(None);
            }
            owners.push(ds.metadata.owner_organization_id);
        }
        owners.sort();
        owners.dedup();
        Ok(Some(owners))
    }

    /// Sign off the current stage, if its checklist is complete: the
    /// project moves to the next one.
    pub async fn sign_off_stage(
        &self,
        actor: &Actor,
        id: &str,
        body: SignOffBody,
    ) -> Result<Project> {
        let mut p = self.stored_project(id).await?;
        let owners = self.open_data_owners(&p).await?;
        authz::may_sign_off_stage(actor, owners.as_deref())?;
        let mut e = ValidationErrors::default();
        e.required_text("note", &body.note, 5000);
        e.into_result()?;
        if body.stage != p.stage {
            return Err(ServiceError::Stale(format!(
                "project '{id}' is in the {} stage, not {}",
                p.stage.as_str(),
                body.stage.as_str()
            )));
        }
        let Some(next) = p.stage.next() else {
            return Err(ServiceError::Stale(format!(
                "the {} stage is not signed off: at review a project is renewed or retired",
                p.stage.as_str()
            )));
        };
        let agreements = self.agreements_made(&p).await?;
        let missing = p.missing(agreements.len());
        if !missing.is_empty() {
            let mut e = ValidationErrors::default();
            for (field, what) in missing {
                e.push(
                    field,
                    format!("the {} stage needs {what}", p.stage.as_str()),
                );
            }
            return Err(e.into());
        }
        let expected = p.revision;
        let by = if authz::may_vote(actor).is_ok() {
            "trustees".to_string()
        } else {
            acting(actor, &p)
        };
        if p.stage == Stage::Share {
            p.agreement_ids = agreements;
        }
        p.sign_offs.push(SignOff {
            stage: p.stage,
            by: by.clone(),
            note: body.note.trim().to_string(),
            at: rfc3339(self.now()),
            log_entry: 0,
        });
        let fields = serde_json::json!({
            "project": p.id,
            "stage": p.stage.as_str(),
            "next": next.as_str(),
            "by": by,
            "note_sha256": sha256_hex(&body.note),
        });
        p.stage = next;
        self.save_project(
            actor,
            &p,
            expected,
            "project.stage_signed_off",
            fields,
            None,
        )
        .await
    }

    /// In the Share stage, make the project's access request through the
    /// ordinary request path (a member of the lead organisation).
    pub async fn share_project(&self, actor: &Actor, id: &str) -> Result<Project> {
        let mut p = self.stored_project(id).await?;
        authz::may_work_on_project(actor, std::slice::from_ref(&p.lead_organization_id))?;
        if p.stage != Stage::Share {
            return Err(ServiceError::Stale(format!(
                "project '{id}' is in the {} stage: it shares in the share stage, once Prepare is signed off",
                p.stage.as_str()
            )));
        }
        if !p.access_request_ids.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "the access request of project '{id}'"
            )));
        }
        let Some(mut request) = p.share_request.clone() else {
            return Err(ValidationErrors::single(
                "share_request",
                "the project has no access request to make",
            )
            .into());
        };
        request.dataset_ids = p.dataset_ids.clone();
        request.organization_id = Some(p.lead_organization_id.clone());
        request.draft = false;
        let expected = p.revision;
        let made = self.create_access_request(actor, request).await?;
        p.access_request_ids.push(made.id.clone());
        let fields = serde_json::json!({
            "project": p.id,
            "access_request": made.id,
            "by": acting(actor, &p),
        });
        self.save_project(actor, &p, expected, "project.shared", fields, None)
            .await
    }

    /// At review: a new review date (its organisations, or the trustees).
    pub async fn renew_project(&self, actor: &Actor, id: &str, body: RenewBody) -> Result<Project> {
        let mut p = self.stored_project(id).await?;
        if authz::may_work_on_project(actor, &organizations(&p)).is_err() {
            authz::may_vote(actor)?;
        }
        if p.stage != Stage::Review {
            return Err(ServiceError::Stale(format!(
                "project '{id}' is in the {} stage: it is renewed at review",
                p.stage.as_str()
            )));
        }
        let mut e = ValidationErrors::default();
        if e.date("review_on", &body.review_on).is_some()
            && citytrust_model::access::parse_day(&body.review_on)
                .is_some_and(|d| d <= self.today())
        {
            e.push("review_on", "must be after today");
        }
        e.into_result()?;
        let expected = p.revision;
        p.review_on = Some(body.review_on.clone());
        let fields = serde_json::json!({
            "project": p.id,
            "review_on": body.review_on,
            "by": acting(actor, &p),
        });
        self.save_project(actor, &p, expected, "project.renewed", fields, None)
            .await
    }

    /// Retire a project (trustees): its agreements are retired and their
    /// recipients asked to attest the data's deletion.
    pub async fn retire_project(
        &self,
        actor: &Actor,
        id: &str,
        body: RetireProjectBody,
    ) -> Result<Project> {
        authz::may_retire_agreement(actor)?;
        let mut e = ValidationErrors::default();
        e.required_text("reason", &body.reason, 5000);
        e.into_result()?;
        let mut p = self.stored_project(id).await?;
        if p.stage == Stage::Retired {
            return Err(ServiceError::Stale(format!(
                "project '{id}' is retired already"
            )));
        }
        let expected = p.revision;
        let mut attestations = Vec::new();
        for aid in p.agreement_ids.clone() {
            let mut a = self.agreement(&aid).await?;
            if a.status == citytrust_model::AgreementStatus::Active {
                a = self
                    .retire_agreement(
                        actor,
                        &aid,
                        &format!("Project {id} retired: {}", body.reason.trim()),
                    )
                    .await?;
            }
            if a.deletion_attested_at.is_none() {
                attestations.push(AttestationDue {
                    agreement_id: aid,
                    due_on: citytrust_model::access::format_day(a.attestation_due()),
                });
            }
        }
        p.stage = Stage::Retired;
        p.retirement = Some(Retirement {
            at: rfc3339(self.now()),
            reason: body.reason.trim().to_string(),
            attestations: attestations.clone(),
        });
        let fields = serde_json::json!({
            "project": p.id,
            "agreements": p.agreement_ids,
            "attestations": attestations,
            "by": "trustees",
        });
        self.save_project(actor, &p, expected, "project.retired", fields, None)
            .await
    }
}
