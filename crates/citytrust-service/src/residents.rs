//! Residents in control (R-CIT-1 … R-CIT-8, DESIGN invariant 2): links
//! between an account and the records about that person, consent and
//! objection with ISO/IEC TS 27560 records and signed receipts, the subject
//! filter every read of a personal dataset goes through, "who used my data",
//! subject requests with their deadlines, the export bundle, and erasure.
//!
//! The public log never names a resident: entries about one carry a salted
//! commitment `SHA-256("citytrust-subject-v1\n" ‖ salt ‖ "\n" ‖ username)`
//! whose salt only the resident is shown, so they (and no one else) can show
//! an entry is about them.

use citytrust_model::ProblemCode;
use std::collections::HashMap;
use std::sync::Arc;

use citytrust_model::access::format_day;
use citytrust_model::authz;
use citytrust_model::residents::{
    ChoiceKind, Consent, LawfulBasis, NewConsent, NewLink, NewLinkCode, NewSubjectRequest,
    PersonalTerms, RecordFacts, SubjectLink, SubjectRequest, SubjectRequestKind,
    SubjectRequestStatus, SubjectRule, consent_record, is_minor,
};
use citytrust_model::{Actor, Dataset, ValidationErrors};
use citytrust_query::export::{OutputFormat, Slice};
use citytrust_query::subjects::SubjectFilter;
use citytrust_store::{Commitment, ErasedVersion, PersonalRead, StoredConsent};
use sha2::Digest;

use crate::accounts::{random_hex, sha256_hex};
use crate::read::ReadGrant;
use crate::{Result, Service, ServiceError, rfc3339};

/// Link codes are valid this many days unless the owner says otherwise.
const LINK_CODE_DAYS: i64 = 90;

/// The first line of a signed consent receipt.
pub const RECEIPT_HEADER: &str = "citytrust consent receipt v1";

/// Filters computed for recent reads, keyed by what decides them, each with
/// the subjects revision it was computed at. A filter is used only while the
/// revision in the database is unchanged, so a withdrawal on any node is in
/// force for the very next read on every node.
#[derive(Default)]
pub(crate) struct SubjectCache {
    entries: std::sync::Mutex<HashMap<CacheKey, (i64, Arc<SubjectFilter>)>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    dataset: String,
    /// The subject-key column (the trustees may change it).
    column: String,
    rule: SubjectRule,
    purpose: String,
    recipients: Vec<String>,
}

/// At most this many filters are kept per node.
const CACHE_ENTRIES: usize = 64;

/// Which subjects a read includes, and the revision that was decided at.
#[derive(Clone)]
pub(crate) struct SubjectScope {
    pub rule: SubjectRule,
    pub filter: Option<Arc<SubjectFilter>>,
    pub rev: i64,
}

/// One read whose scope included the resident's records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AccessView {
    /// The log entry recording the read (verify it at `/log/{index}`).
    pub log_index: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub dataset_id: String,
    pub version: i64,
    /// The organisation that read (or `individual`).
    pub by: String,
    pub purpose: Option<String>,
    pub agreement: Option<String>,
    pub level: String,
    /// `download` or `query`.
    pub kind: String,
    /// Why the resident's rows were in it: `consent`, `no_objection`, `basis` or `owner`.
    pub because: String,
    pub subject_key: String,
}

/// A commitment the public log carries, with the salt that opens it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CommitmentView {
    pub commitment: String,
    pub salt: String,
    pub kind: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A signed log entry about the resident: it carries one of their commitments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct EntryAboutMe {
    /// The entry (its proof is checked at `/log/{index}`).
    pub log_index: i64,
    /// The entry's type (`consent.given`, `subject.linked`, …).
    pub kind: String,
    #[schema(format = Date)]
    pub day: String,
    /// The entry's `subject` field …
    pub commitment: String,
    /// … which is `SHA-256("citytrust-subject-v1\n" ‖ salt ‖ "\n" ‖ username)`, hex.
    pub salt: String,
}

/// One line of what a resident shared (a consent or a donation) and what they were offered for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SharedItem {
    pub consent_id: String,
    /// `consent` or `donation`.
    pub kind: String,
    pub dataset_id: String,
    pub purpose: String,
    /// The organisation it was shared with (`None`: any under an agreement for the purpose).
    pub recipient_organization_id: Option<String>,
    /// What was offered in return, as recorded with the consent.
    pub reward: Option<String>,
    #[schema(format = DateTime)]
    pub given_at: String,
    #[schema(format = DateTime)]
    pub withdrawn_at: Option<String>,
    /// Logged reads that included the resident's records because of it.
    pub uses: usize,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
}

/// A link code for the owner to hand to the person it names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedLinkCode {
    /// Shown once; only its SHA-256 is kept.
    pub code: String,
    pub dataset_id: String,
    #[schema(format = Date)]
    pub expires_on: String,
}

/// The export bundle, ready to serve.
pub struct Bundle {
    pub body: Vec<u8>,
    pub sha256: String,
    pub log_index: i64,
}

/// `SHA-256("citytrust-subject-v1\n" ‖ salt ‖ "\n" ‖ username)`, hex.
pub fn commitment_of(salt: &str, username: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"citytrust-subject-v1\n");
    h.update(salt.as_bytes());
    h.update(b"\n");
    h.update(username.as_bytes());
    hex::encode(h.finalize())
}

fn personal_terms(dataset: &Dataset) -> Option<&PersonalTerms> {
    dataset.metadata.personal_terms.as_ref()
}

fn who_acted(actor: &Actor) -> String {
    match actor.agent() {
        Some(a) => format!("agent:{}", a.kind.as_str()),
        None => "data_subject".into(),
    }
}

fn signed_in(actor: &Actor) -> Result<&str> {
    actor.username().ok_or(ServiceError::Unauthenticated)
}

impl Service {
    fn new_commitment(&self, username: &str, kind: &str) -> Result<Commitment> {
        let salt = random_hex::<16>()?;
        Ok(Commitment {
            commitment: commitment_of(&salt, username),
            salt,
            kind: kind.to_string(),
            created_at: rfc3339(self.now()),
        })
    }

    // ---- the read path's subject filter ------------------------------------

    /// Which rows of `dataset` a read granted by `grant` may include: `None`
    /// for data about no one. Consent basis: only subjects with a consent in
    /// force for the purpose and one of the reader's organisations (or any
    /// recipient); public task and legitimate interests: all but those who
    /// objected; erased subjects never, for anyone.
    pub(crate) async fn subject_scope(
        &self,
        actor: &Actor,
        dataset: &Dataset,
        grant: &ReadGrant,
    ) -> Result<Option<SubjectScope>> {
        let Some(terms) = personal_terms(dataset) else {
            return Ok(None);
        };
        let owners_own = grant.agreement_id.is_none()
            && actor.is_member_of(&dataset.metadata.owner_organization_id);
        let (rule, purpose) = match (&grant.purpose, owners_own) {
            (Some(p), false) => (terms.basis_for(p).filter(), p.clone()),
            _ => (SubjectRule::All, String::new()),
        };
        let mut recipients: Vec<String> = actor.organization_ids().to_vec();
        recipients.sort();
        let key = CacheKey {
            dataset: dataset.id.clone(),
            column: terms.subject_key.clone(),
            rule,
            purpose: purpose.clone(),
            recipients: if rule == SubjectRule::OnlyConsenting {
                recipients.clone()
            } else {
                Vec::new()
            },
        };
        let now = self.store.subjects_revision().await?;
        if let Some((rev, filter)) = self
            .subjects
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            && *rev == now
        {
            return Ok(Some(SubjectScope {
                rule,
                filter: Some(filter.clone()),
                rev: now,
            }));
        }
        let column = terms.subject_key.as_str();
        let (filter, rev) = match rule {
            SubjectRule::OnlyConsenting => {
                let (keys, rev) = self
                    .store
                    .consenting_keys(&dataset.id, &purpose, &recipients)
                    .await?;
                (SubjectFilter::only(column, keys), rev)
            }
            SubjectRule::AllButObjecting => {
                let (keys, rev) = self
                    .store
                    .excluded_keys(&dataset.id, Some(&purpose))
                    .await?;
                (SubjectFilter::all_but(column, keys), rev)
            }
            SubjectRule::All => {
                let (keys, rev) = self.store.excluded_keys(&dataset.id, None).await?;
                (SubjectFilter::all_but(column, keys), rev)
            }
        };
        let filter = Arc::new(filter);
        {
            let mut cache = self
                .subjects
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, (rev, filter.clone()));
        }
        Ok(Some(SubjectScope {
            rule,
            filter: Some(filter),
            rev,
        }))
    }

    /// Keep, privately, what "who used my data" needs about a logged read
    /// of personal data (nothing for data about no one).
    pub(crate) async fn record_personal_read(
        &self,
        plan: &crate::read::ReadPlan,
        log_index: i64,
        kind: &str,
    ) -> Result<()> {
        self.record_read_of_subjects(
            &plan.actor,
            &plan.dataset,
            &plan.grant,
            plan.scope.as_ref(),
            plan.version.version,
            log_index,
            kind,
        )
        .await
    }

    /// Keep what "who used my data" needs about a logged read of `version`
    /// (a personal stream's live entities: `STREAM_VERSION`) under `scope`
    /// (none: data about no one, nothing kept).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_read_of_subjects(
        &self,
        actor: &Actor,
        dataset: &Dataset,
        grant: &crate::read::ReadGrant,
        scope: Option<&SubjectScope>,
        version: i64,
        log_index: i64,
        kind: &str,
    ) -> Result<()> {
        let Some(scope) = scope else {
            return Ok(());
        };
        let body = serde_json::json!({
            "by": crate::content::reader_label(actor, dataset),
            "level": grant.level.as_str(),
            "agreement": grant.agreement_id,
            "kind": kind,
        });
        self.store
            .insert_personal_read(&PersonalRead {
                log_index,
                dataset_id: dataset.id.clone(),
                version,
                rule: scope.rule.as_str().into(),
                purpose: grant.purpose.clone(),
                recipients: actor.organization_ids().join(","),
                rev: scope.rev,
                at: rfc3339(self.now()),
                body: body.to_string(),
            })
            .await?;
        Ok(())
    }

    // ---- links -------------------------------------------------------------

    /// A member of the owning organisation issues a one-time code for the
    /// person whose records carry `subject_key` (to print on a bill, say).
    pub async fn issue_link_code(
        &self,
        actor: &Actor,
        dataset_id: &str,
        new: NewLinkCode,
    ) -> Result<IssuedLinkCode> {
        let by = signed_in(actor)?;
        let dataset = self.get_dataset(dataset_id).await?;
        authz::may_issue_link_code(actor, &dataset.metadata.owner_organization_id, &dataset.id)?;
        if personal_terms(&dataset).is_none() {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::NotPersonal,
                message: format!(
                    "'{}' names no subject key: there is no one to link",
                    dataset.id
                ),
            });
        }
        let mut e = ValidationErrors::default();
        e.required_text("subject_key", &new.subject_key, 200);
        let days = new.valid_days.unwrap_or(LINK_CODE_DAYS);
        if !(1..=366).contains(&days) {
            e.push("valid_days", "must be between 1 and 366");
        }
        e.into_result()?;
        if !self
            .store
            .subject_known(&dataset.id, &new.subject_key)
            .await?
        {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "subject_key",
                "no version of this dataset holds records with that key",
            )));
        }
        // Grouped for reading aloud or typing from paper: XXXX-XXXX-XXXX-XXXX.
        let raw = random_hex::<8>()?.to_uppercase();
        let code = raw
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        let expires = self.now().unix_timestamp() + days * 86_400;
        self.store
            .insert_link_code(
                &sha256_hex(&normalise_code(&code)),
                &dataset.id,
                &new.subject_key,
                by,
                &rfc3339(self.now()),
                expires,
            )
            .await?;
        Ok(IssuedLinkCode {
            code,
            dataset_id: dataset.id,
            expires_on: format_day(expires.div_euclid(86_400)),
        })
    }

    /// A resident (or their agent) links their account with a code.
    pub async fn link_with_code(&self, actor: &Actor, new: NewLink) -> Result<SubjectLink> {
        let username = signed_in(actor)?;
        let code = normalise_code(&new.code);
        if code.len() != 16 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "code",
                "must be the 16-character code the data owner gave you (like 1A2B-3C4D-5E6F-7A8B)",
            )));
        }
        let commitment = self.new_commitment(username, "subject.linked")?;
        let (body, at) = self.log_entry_by(
            actor,
            "subject.linked",
            serde_json::json!({"subject": commitment.commitment, "via": "link_code"}),
        )?;
        let linked = self
            .store
            .redeem_link_code(
                &sha256_hex(&code),
                username,
                self.now().unix_timestamp(),
                &at,
                "link_code",
                &crate::ledger::new_entry("subject.linked", &body, &at),
            )
            .await?;
        let Some(link) = linked else {
            return Err(ServiceError::Refused {
                rule: Some("link-code".into()),
                message: "that code is unknown, already used or expired; ask the data owner for a new one".into(),
            });
        };
        self.store.insert_commitment(username, &commitment).await?;
        Ok(link)
    }

    /// Link directly, on a verified claim (the city's identity provider; the
    /// demo loader). Not reachable by a resident typing a key.
    pub async fn link_verified(
        &self,
        username: &str,
        dataset_id: &str,
        subject_key: &str,
        via: &str,
    ) -> Result<SubjectLink> {
        let dataset = self.get_dataset(dataset_id).await?;
        if personal_terms(&dataset).is_none()
            || !self.store.subject_known(dataset_id, subject_key).await?
        {
            return Err(ServiceError::NotFound(format!(
                "records with that key in '{dataset_id}'"
            )));
        }
        let commitment = self.new_commitment(username, "subject.linked")?;
        let (body, at) = self.log_entry(
            "subject.linked",
            serde_json::json!({"subject": commitment.commitment, "via": via}),
        )?;
        let link = SubjectLink {
            dataset_id: dataset_id.to_string(),
            subject_key: subject_key.to_string(),
            via: via.to_string(),
            linked_at: at.clone(),
        };
        self.store
            .insert_link(
                username,
                &link,
                &crate::ledger::new_entry("subject.linked", &body, &at),
            )
            .await?;
        self.store.insert_commitment(username, &commitment).await?;
        Ok(link)
    }

    /// Link an account signed in through the city's identity provider to the
    /// records the provider vouches are theirs (a claim naming the subject
    /// key). Already linked to them: nothing to do. Linked to someone else,
    /// or no such records: refused (the caller logs it; the sign-in goes on).
    pub async fn link_from_identity_provider(
        &self,
        username: &str,
        dataset_id: &str,
        subject_key: &str,
        provider: &str,
    ) -> Result<Option<SubjectLink>> {
        match self.store.holder_of(dataset_id, subject_key).await? {
            Some(holder) if holder == username => return Ok(None),
            Some(_) => {
                return Err(ServiceError::Conflict(format!(
                    "a link to these records in '{dataset_id}'"
                )));
            }
            None => {}
        }
        self.link_verified(
            username,
            dataset_id,
            subject_key,
            &format!("identity_provider:{provider}"),
        )
        .await
        .map(Some)
    }

    pub async fn my_links(&self, actor: &Actor) -> Result<Vec<SubjectLink>> {
        Ok(self.store.links_of(signed_in(actor)?).await?)
    }

    pub async fn my_commitments(&self, actor: &Actor) -> Result<Vec<CommitmentView>> {
        Ok(self
            .store
            .commitments_of(signed_in(actor)?)
            .await?
            .into_iter()
            .map(|c| CommitmentView {
                commitment: c.commitment,
                salt: c.salt,
                kind: c.kind,
                created_at: c.created_at,
            })
            .collect())
    }

    /// The signed log entries about the resident, newest first, each with the
    /// salt that shows it is theirs. Entries are listed once their checkpoint
    /// is signed (the sequencer indexes them then).
    pub async fn entries_about_me(&self, actor: &Actor) -> Result<Vec<EntryAboutMe>> {
        let username = signed_in(actor)?;
        let salts: HashMap<String, String> = self
            .store
            .commitments_of(username)
            .await?
            .into_iter()
            .map(|c| (c.commitment, c.salt))
            .collect();
        Ok(self
            .store
            .entries_about(username)
            .await?
            .into_iter()
            .filter_map(|(log_index, kind, day, commitment)| {
                let salt = salts.get(&commitment)?.clone();
                Some(EntryAboutMe {
                    log_index,
                    kind,
                    day,
                    commitment,
                    salt,
                })
            })
            .collect())
    }

    /// What the resident shared (consents and donations, in force or not) and
    /// what they were offered for it, with how often each was used (R-CIT-6).
    pub async fn my_sharing(&self, actor: &Actor) -> Result<Vec<SharedItem>> {
        let consents = self.store.consents_of(signed_in(actor)?).await?;
        let accesses = self.my_accesses(actor, None, 500).await?;
        let recipients_of = |a: &AccessView| a.by.strip_prefix("organization:").map(str::to_string);
        Ok(consents
            .into_iter()
            .filter(|c| c.consent.kind != ChoiceKind::Objection)
            .map(|c| {
                let c = c.consent;
                let used: Vec<&AccessView> = accesses
                    .iter()
                    .filter(|a| {
                        a.because == "consent"
                            && a.dataset_id == c.dataset_id
                            && a.purpose.as_deref() == Some(c.purpose.as_str())
                            && c.recipient_organization_id
                                .as_ref()
                                .is_none_or(|r| recipients_of(a).as_ref() == Some(r))
                            && a.at >= c.given_at
                            && c.withdrawn_at.as_ref().is_none_or(|w| &a.at <= w)
                    })
                    .collect();
                SharedItem {
                    consent_id: c.id,
                    kind: c.kind.as_str().to_string(),
                    dataset_id: c.dataset_id,
                    purpose: c.purpose,
                    recipient_organization_id: c.recipient_organization_id,
                    reward: c.reward,
                    given_at: c.given_at,
                    withdrawn_at: c.withdrawn_at,
                    uses: used.len(),
                    last_used_at: used.first().map(|a| a.at.clone()),
                }
            })
            .collect())
    }

    // ---- consent -----------------------------------------------------------

    /// Whether `actor` may decide for themselves: a minor needs their guardian.
    async fn check_not_minor_alone(&self, actor: &Actor) -> Result<()> {
        let username = signed_in(actor)?;
        if actor.agent().is_some() {
            return Ok(()); // act_for checked the authority (and that a guardian's ward is a minor).
        }
        if let Some(born) = self.store.birth_day(username).await?
            && is_minor(born, self.today(), self.settings.minor_age)
        {
            return Err(ServiceError::Refused {
                rule: Some("minor-needs-guardian".into()),
                message: format!(
                    "you are under {}: your parent or guardian gives or withdraws consent for you",
                    self.settings.minor_age
                ),
            });
        }
        Ok(())
    }

    /// Give consent (or object, or donate) for one dataset × purpose × recipient.
    pub async fn give_consent(&self, actor: &Actor, new: NewConsent) -> Result<Consent> {
        let username = signed_in(actor)?.to_string();
        new.validate()?;
        self.check_not_minor_alone(actor).await?;
        let dataset = self.get_dataset(&new.dataset_id).await?;
        let Some(terms) = personal_terms(&dataset) else {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "dataset_id",
                "this dataset holds no records about people, so there is nothing to consent to",
            )));
        };
        let purpose = self.purpose(&new.purpose).await?.ok_or_else(|| {
            ServiceError::Invalid(ValidationErrors::single(
                "purpose",
                "is not one of the trust's purposes",
            ))
        })?;
        if let Some(org) = &new.recipient_organization_id
            && self.store.get_organization(org).await?.is_none()
        {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "recipient_organization_id",
                format!("there is no organisation '{org}'"),
            )));
        }
        let basis = terms.basis_for(&purpose.id);
        match (new.kind, basis.filter()) {
            (ChoiceKind::Consent | ChoiceKind::Donation, SubjectRule::OnlyConsenting) => {}
            (ChoiceKind::Objection, SubjectRule::AllButObjecting) => {}
            (ChoiceKind::Objection, _) => {
                return Err(ServiceError::Invalid(ValidationErrors::single(
                    "kind",
                    format!(
                        "'{}' is used {}; an objection applies only to public-task and legitimate-interest uses",
                        purpose.id,
                        basis.label()
                    ),
                )));
            }
            (_, _) => {
                return Err(ServiceError::Invalid(ValidationErrors::single(
                    "kind",
                    format!(
                        "'{}' is used {}, not on consent; {}",
                        purpose.id,
                        basis.label(),
                        if basis.objectable() {
                            "you may object instead (kind: objection)"
                        } else {
                            "there is nothing to consent to"
                        }
                    ),
                )));
            }
        }
        if new.kind == ChoiceKind::Donation && purpose.commercial {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "kind",
                "data is donated only to public-interest purposes, and this one is commercial",
            )));
        }
        if !self
            .store
            .links_of(&username)
            .await?
            .iter()
            .any(|l| l.dataset_id == dataset.id)
        {
            return Err(ServiceError::Refused {
                rule: Some("not-linked".into()),
                message: format!(
                    "your account is not linked to records in '{}'; link it with the code the data owner gave you",
                    dataset.id
                ),
            });
        }
        if let Some(same) = self
            .store
            .consents_of(&username)
            .await?
            .into_iter()
            .find(|c| {
                c.withdrawn_rev.is_none()
                    && c.consent.dataset_id == dataset.id
                    && c.consent.purpose == purpose.id
                    && c.consent.kind == new.kind
                    && c.consent.recipient_organization_id == new.recipient_organization_id
            })
        {
            return Err(ServiceError::Conflict(format!(
                "the same {} in force ({})",
                new.kind.as_str(),
                same.consent.id
            )));
        }
        let id = format!("cons-{}", random_hex::<8>()?);
        let commitment = self.new_commitment(&username, "consent.given")?;
        let now = rfc3339(self.now());
        let by = who_acted(actor);
        let events = vec![(
            format!("{}_given", new.kind.as_str()),
            now.clone(),
            by.clone(),
        )];
        let record = consent_record(&RecordFacts {
            record_id: &id,
            principal_commitment: &commitment.commitment,
            kind: new.kind,
            dataset_id: &dataset.id,
            dataset_title: &dataset.metadata.title,
            controller: &dataset.metadata.owner_organization_id,
            purpose: &purpose.id,
            purpose_description: &purpose.description,
            basis,
            recipient: new.recipient_organization_id.as_deref(),
            personal_columns: &dataset.metadata.column_classes.personal,
            retention: terms.retention.as_deref(),
            notice: terms.notice_for(&purpose.id).unwrap_or(&terms.notice),
            reward: new.reward.as_deref(),
            events: &events,
            in_force: true,
        });
        let receipt = self.receipt(&record)?;
        let consent = Consent {
            id: id.clone(),
            kind: new.kind,
            dataset_id: dataset.id.clone(),
            purpose: purpose.id.clone(),
            recipient_organization_id: new.recipient_organization_id.clone(),
            reward: new.reward.clone(),
            given_at: now,
            withdrawn_at: None,
            given_by: by,
            withdrawn_by: None,
            record: record.clone(),
            receipt,
            log_entries: vec![],
        };
        let (body, at) = self.log_entry_by(
            actor,
            "consent.given",
            serde_json::json!({
                "consent": id,
                "kind": new.kind.as_str(),
                "dataset": dataset.id,
                "purpose": purpose.id,
                "recipient": new.recipient_organization_id.as_ref().map(|o| format!("organization:{o}")),
                "basis": basis.as_str(),
                "subject": commitment.commitment,
                "record_sha256": hex::encode(sha2::Sha256::digest(record.to_string().as_bytes())),
            }),
        )?;
        self.store
            .insert_consent(
                &StoredConsent {
                    username: username.clone(),
                    given_rev: 0,
                    withdrawn_rev: None,
                    consent,
                },
                &commitment,
                &crate::ledger::new_entry("consent.given", &body, &at),
            )
            .await?;
        Ok(self
            .store
            .get_consent(&id)
            .await?
            .ok_or_else(|| ServiceError::Internal("consent vanished".into()))?
            .consent)
    }

    /// Withdraw a consent (or an objection, or a donation): in force for the very next read.
    pub async fn withdraw_consent(&self, actor: &Actor, id: &str) -> Result<Consent> {
        let username = signed_in(actor)?;
        self.check_not_minor_alone(actor).await?;
        // Someone else's consent is indistinguishable from none at all.
        let stored = match self.store.get_consent(id).await? {
            Some(c) if c.username == username => c,
            _ => return Err(ServiceError::NotFound(format!("consent '{id}'"))),
        };
        if stored.withdrawn_rev.is_some() {
            return Ok(stored.consent);
        }
        let dataset = self.get_dataset(&stored.consent.dataset_id).await?;
        let commitment = self.new_commitment(username, "consent.withdrawn")?;
        let now = rfc3339(self.now());
        let by = who_acted(actor);
        let mut consent = stored.consent.clone();
        let mut events: Vec<(String, String, String)> = consent.record["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["event"].as_str().unwrap_or("").to_string(),
                            e["time"].as_str().unwrap_or("").to_string(),
                            e["by"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        events.push((
            format!("{}_withdrawn", consent.kind.as_str()),
            now.clone(),
            by.clone(),
        ));
        let terms = personal_terms(&dataset).cloned().unwrap_or_default();
        let purpose = self.purpose(&consent.purpose).await?;
        let record = consent_record(&RecordFacts {
            record_id: &consent.id,
            principal_commitment: consent.record["pii_principal_id"].as_str().unwrap_or(""),
            kind: consent.kind,
            dataset_id: &dataset.id,
            dataset_title: &dataset.metadata.title,
            controller: &dataset.metadata.owner_organization_id,
            purpose: &consent.purpose,
            purpose_description: purpose
                .as_ref()
                .map(|p| p.description.as_str())
                .unwrap_or(""),
            basis: terms.basis_for(&consent.purpose),
            recipient: consent.recipient_organization_id.as_deref(),
            personal_columns: &dataset.metadata.column_classes.personal,
            retention: terms.retention.as_deref(),
            notice: terms.notice_for(&consent.purpose).unwrap_or(&terms.notice),
            reward: consent.reward.as_deref(),
            events: &events,
            in_force: false,
        });
        consent.receipt = self.receipt(&record)?;
        consent.record = record.clone();
        consent.withdrawn_at = Some(now);
        consent.withdrawn_by = Some(by);
        let (body, at) = self.log_entry_by(
            actor,
            "consent.withdrawn",
            serde_json::json!({
                "consent": consent.id,
                "kind": consent.kind.as_str(),
                "dataset": consent.dataset_id,
                "purpose": consent.purpose,
                "subject": commitment.commitment,
                "record_sha256": hex::encode(sha2::Sha256::digest(record.to_string().as_bytes())),
            }),
        )?;
        self.store
            .withdraw_consent(
                &StoredConsent { consent, ..stored },
                &commitment,
                &crate::ledger::new_entry("consent.withdrawn", &body, &at),
            )
            .await?;
        Ok(self
            .store
            .get_consent(id)
            .await?
            .ok_or_else(|| ServiceError::Internal("consent vanished".into()))?
            .consent)
    }

    pub async fn my_consents(&self, actor: &Actor) -> Result<Vec<Consent>> {
        Ok(self
            .store
            .consents_of(signed_in(actor)?)
            .await?
            .into_iter()
            .map(|c| c.consent)
            .collect())
    }

    /// The record, signed: a C2SP signed note with the log's key.
    fn receipt(&self, record: &serde_json::Value) -> Result<String> {
        self.sign_statement(&format!("{RECEIPT_HEADER}\n{record}\n"))
    }

    // ---- who used my data -----------------------------------------------------

    /// Every logged read whose scope included the resident's records, newest
    /// first (those below `before` when given), at most `limit`.
    pub async fn my_accesses(
        &self,
        actor: &Actor,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AccessView>> {
        let username = signed_in(actor)?;
        let limit = limit.clamp(1, 500);
        let consents = self.store.consents_of(username).await?;
        let mut out = Vec::new();
        // The store decides inclusion; the same rule, replayed here, names why.
        for (read, key) in self
            .store
            .reads_touching(username, before, limit as i64)
            .await?
        {
            let Some(because) = included_because(&read, &consents) else {
                continue;
            };
            let body: serde_json::Value =
                serde_json::from_str(&read.body).unwrap_or(serde_json::Value::Null);
            out.push(AccessView {
                log_index: read.log_index,
                at: read.at.clone(),
                dataset_id: read.dataset_id.clone(),
                version: read.version,
                by: body["by"].as_str().unwrap_or("").to_string(),
                purpose: read.purpose.clone(),
                agreement: body["agreement"].as_str().map(str::to_string),
                level: body["level"].as_str().unwrap_or("").to_string(),
                kind: body["kind"].as_str().unwrap_or("").to_string(),
                because: because.to_string(),
                subject_key: key,
            });
        }
        Ok(out)
    }

    // ---- subject requests -------------------------------------------------------

    /// A resident asks for a copy, a correction or an erasure.
    pub async fn make_subject_request(
        &self,
        actor: &Actor,
        new: NewSubjectRequest,
    ) -> Result<SubjectRequest> {
        let username = signed_in(actor)?.to_string();
        new.validate()?;
        let links = self.store.links_of(&username).await?;
        if let Some(d) = &new.dataset_id
            && !links.iter().any(|l| &l.dataset_id == d)
        {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "dataset_id",
                "your account is not linked to records in this dataset",
            )));
        }
        if links.is_empty() {
            return Err(ServiceError::Refused {
                rule: Some("not-linked".into()),
                message: "your account is not linked to any records yet; link it with the code a data owner gave you".into(),
            });
        }
        let due = self.today() + self.settings.subject_request_days;
        let request = SubjectRequest {
            id: format!("sr-{}", random_hex::<6>()?),
            kind: new.kind,
            username: username.clone(),
            dataset_id: new.dataset_id.clone(),
            details: new.details.trim().to_string(),
            status: SubjectRequestStatus::Open,
            created_at: rfc3339(self.now()),
            due_on: format_day(due),
            made_by: who_acted(actor),
            answered_at: None,
            answered_by: None,
            answer: None,
        };
        let commitment = self.new_commitment(&username, "subject.request")?;
        let (body, at) = self.log_entry_by(
            actor,
            "subject.request",
            serde_json::json!({
                "request": request.id,
                "kind": request.kind.as_str(),
                "dataset": request.dataset_id,
                "due_on": request.due_on,
                "subject": commitment.commitment,
            }),
        )?;
        self.store
            .insert_subject_request(
                &request,
                due,
                &commitment,
                &crate::ledger::new_entry("subject.request", &body, &at),
            )
            .await?;
        Ok(request)
    }

    pub async fn my_subject_requests(&self, actor: &Actor) -> Result<Vec<SubjectRequest>> {
        Ok(self.store.subject_requests_of(signed_in(actor)?).await?)
    }

    /// The requests about datasets the actor's organisations own: the owner's queue.
    pub async fn subject_request_queue(&self, actor: &Actor) -> Result<Vec<SubjectRequest>> {
        signed_in(actor)?;
        let mut owned = Vec::new();
        for org in actor.organization_ids() {
            owned.extend(self.store.dataset_ids_owned_by(org).await?);
        }
        Ok(self.store.subject_requests_for(&owned).await?)
    }

    async fn request_for_owner(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<(SubjectRequest, Dataset)> {
        signed_in(actor)?;
        let request = self
            .store
            .get_subject_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("request '{id}'")))?;
        let Some(dataset_id) = &request.dataset_id else {
            return Err(ServiceError::NotFound(format!("request '{id}'")));
        };
        let dataset = self.get_dataset(dataset_id).await?;
        if !actor.is_member_of(&dataset.metadata.owner_organization_id) {
            return Err(ServiceError::NotFound(format!("request '{id}'")));
        }
        if request.status != SubjectRequestStatus::Open {
            return Err(ServiceError::Conflict(format!(
                "an answer to request '{id}'"
            )));
        }
        Ok((request, dataset))
    }

    /// The owner answers a rectification (or refuses any request, with a reason).
    pub async fn answer_subject_request(
        &self,
        actor: &Actor,
        id: &str,
        refuse: bool,
        answer: &str,
    ) -> Result<SubjectRequest> {
        let (mut request, dataset) = self.request_for_owner(actor, id).await?;
        let mut e = ValidationErrors::default();
        e.required_text("answer", answer, 5000);
        e.into_result()?;
        if request.kind == SubjectRequestKind::Erasure && !refuse {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "answer",
                "an erasure is carried out (POST …/erase), or refused with a reason",
            )));
        }
        request.status = if refuse {
            SubjectRequestStatus::Refused
        } else {
            SubjectRequestStatus::Answered
        };
        request.answer = Some(answer.trim().to_string());
        request.answered_at = Some(rfc3339(self.now()));
        request.answered_by = Some(format!(
            "organization:{}",
            dataset.metadata.owner_organization_id
        ));
        let (body, at) = self.log_entry(
            "subject.request_answered",
            serde_json::json!({
                "request": request.id,
                "kind": request.kind.as_str(),
                "dataset": dataset.id,
                "status": request.status.as_str(),
                "by": request.answered_by,
            }),
        )?;
        if !self
            .store
            .answer_subject_request(
                &request,
                &crate::ledger::new_entry("subject.request_answered", &body, &at),
            )
            .await?
        {
            return Err(ServiceError::Conflict(format!(
                "an answer to request '{id}'"
            )));
        }
        Ok(request)
    }

    // ---- erasure ----------------------------------------------------------------

    /// Carry out an erasure request: every version holding the subject's rows
    /// is written again without them, the old files overwritten and removed,
    /// and the before/after digests logged.
    pub async fn carry_out_erasure(&self, actor: &Actor, id: &str) -> Result<SubjectRequest> {
        let (mut request, dataset) = self.request_for_owner(actor, id).await?;
        if request.kind != SubjectRequestKind::Erasure {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "kind",
                "only an erasure request is carried out this way",
            )));
        }
        let terms = personal_terms(&dataset)
            .cloned()
            .ok_or_else(|| ServiceError::Internal("erasure on data about no one".into()))?;
        let keys: Vec<String> = self
            .store
            .links_of(&request.username)
            .await?
            .into_iter()
            .filter(|l| l.dataset_id == dataset.id)
            .map(|l| l.subject_key)
            .collect();
        let mut changes = Vec::new();
        let _guard = self.upload_lock.lock().await;
        for key in &keys {
            let mut versions = Vec::new();
            for version in self.store.versions_holding(&dataset.id, key).await? {
                let (before, after) = self
                    .rewrite_version(&dataset.id, version, &terms.subject_key, key)
                    .await?;
                changes.push(serde_json::json!({
                    "version": version,
                    "sha256_before": before.sha256,
                    "sha256_after": after.sha256,
                    "rows_removed": before.rows - after.rows,
                }));
                versions.push(after);
            }
            // Rows set aside by a quarantine upload are not in the subject
            // index (they were never parsed): their files are stripped too.
            for stored in self.store.list_versions(&dataset.id).await? {
                if stored.rejected == 0 {
                    continue;
                }
                let removed = self
                    .strip_rejected_rows(&dataset.id, stored.version, key)
                    .await?;
                if removed > 0 {
                    changes.push(serde_json::json!({
                        "version": stored.version,
                        "rejected_rows_removed": removed,
                    }));
                }
            }
            // A personal stream: the entities holding the subject, and their
            // history, go in the transaction that records the erasure; a
            // write that came between (it may hold the subject again) means
            // finding them again.
            let commitment = self.new_commitment(&request.username, "subject.erased")?;
            for attempt in 0.. {
                let stream = match dataset.metadata.stream {
                    Some(_) => {
                        self.stream_holding(&dataset.id, &terms.subject_key, key)
                            .await?
                    }
                    None => None,
                };
                let mut logged = changes.clone();
                if let Some(s) = &stream {
                    logged.push(serde_json::json!({
                        "stream": dataset.id,
                        "entities_removed": s.entities.len(),
                        "entities_sha256": s.entities.iter().map(|e| sha256_hex(&e.body)).collect::<Vec<_>>(),
                    }));
                }
                request.status = SubjectRequestStatus::Answered;
                request.answer = Some(match &stream {
                    Some(s) => format!(
                        "your rows were removed from {} version(s) of '{}', and {} entit{} with their history from its stream",
                        changes.len(),
                        dataset.id,
                        s.entities.len(),
                        if s.entities.len() == 1 { "y" } else { "ies" }
                    ),
                    None => format!(
                        "your rows were removed from {} version(s) of '{}'",
                        changes.len(),
                        dataset.id
                    ),
                });
                request.answered_at = Some(rfc3339(self.now()));
                request.answered_by = Some(format!(
                    "organization:{}",
                    dataset.metadata.owner_organization_id
                ));
                let (body, at) = self.log_entry(
                    "subject.erased",
                    serde_json::json!({
                        "request": request.id,
                        "dataset": dataset.id,
                        "subject": commitment.commitment,
                        "versions": logged,
                        "by": request.answered_by,
                    }),
                )?;
                match self
                    .store
                    .record_erasure(
                        &dataset.id,
                        key,
                        &versions,
                        stream.as_ref(),
                        Some(&request),
                        &crate::ledger::new_entry("subject.erased", &body, &at),
                    )
                    .await
                {
                    Ok(()) => break,
                    Err(citytrust_store::StoreError::StaleRevision(_)) if attempt < 8 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            self.store
                .insert_commitment(&request.username, &commitment)
                .await?;
        }
        Ok(request)
    }

    /// A personal stream's entities holding `key` in `attribute`, with the
    /// stream's revision they were read at (`None`: never written).
    async fn stream_holding(
        &self,
        dataset_id: &str,
        attribute: &str,
        key: &str,
    ) -> Result<Option<citytrust_store::StreamErasure>> {
        let ids = [dataset_id.to_string()];
        let Some(&revision) = self.store.stream_revisions(&ids).await?.get(dataset_id) else {
            return Ok(None);
        };
        let mut entities = Vec::new();
        for row in self.store.stream_entities(&ids).await? {
            let e = crate::streams::decode(&row)?;
            if crate::streams::subject_keys(&e, attribute)
                .is_some_and(|keys| keys.iter().any(|k| k == key))
            {
                entities.push(row);
            }
        }
        Ok(Some(citytrust_store::StreamErasure { revision, entities }))
    }

    /// Write a version's rejects file again without the rows holding `key`
    /// (securely replacing the old one); how many rows went.
    async fn strip_rejected_rows(&self, dataset_id: &str, version: i64, key: &str) -> Result<u64> {
        let name = format!("datasets/{dataset_id}/{version}/rejects.csv");
        let Some(file) = self.versions.open(&name, &self.spool_dir()).await? else {
            return Ok(0);
        };
        let dir = tempfile::tempdir_in(self.spool_dir())?;
        let input = dir.path().join("in.csv");
        let out = dir.path().join("rejects.csv");
        {
            let mut file = file;
            let mut copy = std::fs::File::create(&input)?;
            std::io::copy(&mut file, &mut copy)?;
        }
        let removed = tokio::task::spawn_blocking({
            let (input, out, key) = (input.clone(), out.clone(), key.to_string());
            move || citytrust_query::subjects::strip_rejects(&input, &out, &key)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        if removed > 0 {
            self.versions.replace_securely(&out, &name).await?;
        }
        Ok(removed)
    }

    /// Write one version again without `key`'s rows and put it in place of the
    /// old file (which is overwritten with zeros first, when it is local).
    async fn rewrite_version(
        &self,
        dataset_id: &str,
        version: i64,
        column: &str,
        key: &str,
    ) -> Result<(ErasedVersion, ErasedVersion)> {
        let stored = self.store.version_row(dataset_id, version).await?;
        let location = self.version_file(dataset_id, version)?;
        let dir = tempfile::tempdir_in(self.spool_dir())?;
        let out = dir.path().join("data.parquet");
        let filter = SubjectFilter::all_but(column, [key.to_string()]);
        let rewritten =
            citytrust_query::subjects::rewrite(&self.versions, &location, &filter, &out).await?;
        let columns: Vec<citytrust_query::ColumnInfo> = serde_json::from_str(&stored.columns)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let rules = self.quality_rules(dataset_id).await?;
        let quality = citytrust_query::quality::measure(&out, &columns, &rules).await?;
        let key_prefix = format!("datasets/{dataset_id}/{version}");
        self.versions
            .replace_securely(&out, &format!("{key_prefix}/data.parquet"))
            .await?;
        // Derived files drawn from the old rows go too; they are redrawn on demand.
        for derived in ["map.svg", "map.none"] {
            let _ = self
                .versions
                .remove_file(&format!("{key_prefix}/{derived}"))
                .await;
        }
        let before = ErasedVersion {
            version,
            rows: stored.rows,
            bytes: stored.bytes,
            sha256: stored.sha256,
            quality: stored.quality,
        };
        let after = ErasedVersion {
            version,
            rows: i64::try_from(rewritten.rows).unwrap_or(i64::MAX),
            bytes: i64::try_from(rewritten.bytes).unwrap_or(i64::MAX),
            sha256: rewritten.sha256,
            quality: serde_json::to_string(&quality)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
        };
        Ok((before, after))
    }

    // ---- the export bundle ----------------------------------------------------------

    /// Everything the trust holds about the resident, and what happened to it:
    /// their rows in every linked dataset (JSON and CSV), the purposes and
    /// recipients that read them (from the log), consents, requests and the
    /// retention periods. Logged; open access requests are answered by it.
    pub async fn my_export(&self, actor: &Actor) -> Result<Bundle> {
        let username = signed_in(actor)?.to_string();
        let links = self.store.links_of(&username).await?;
        let mut datasets = Vec::new();
        for link in &links {
            let dataset = self.get_dataset(&link.dataset_id).await?;
            let Some(terms) = personal_terms(&dataset) else {
                continue;
            };
            let holding = self
                .store
                .versions_holding(&dataset.id, &link.subject_key)
                .await?;
            let filter = SubjectFilter::only(&terms.subject_key, [link.subject_key.clone()]);
            let (rows, csv, version) = match holding.last() {
                Some(&v) => {
                    let location = self.version_file(&dataset.id, v)?;
                    // The resident's own rows, every column.
                    let source = citytrust_query::governed::Source {
                        versions: &self.versions,
                        location: &location,
                        columns: None,
                        subjects: Some(&filter),
                    };
                    let mut json = Vec::new();
                    citytrust_query::export::export_version(
                        source,
                        Slice::default(),
                        OutputFormat::Json,
                        &mut json,
                    )
                    .await?;
                    let mut csv = Vec::new();
                    citytrust_query::export::export_version(
                        source,
                        Slice::default(),
                        OutputFormat::Csv,
                        &mut csv,
                    )
                    .await?;
                    let rows: serde_json::Value = serde_json::from_slice(&json)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    (rows, String::from_utf8_lossy(&csv).into_owned(), Some(v))
                }
                None => (serde_json::json!([]), String::new(), None),
            };
            // A personal stream: the resident's entities as the stream holds them now.
            let entities: Vec<serde_json::Value> = match dataset.metadata.stream {
                Some(_) => match self
                    .stream_holding(&dataset.id, &terms.subject_key, &link.subject_key)
                    .await?
                {
                    Some(s) => s
                        .entities
                        .iter()
                        .map(|r| {
                            serde_json::from_str(&r.body)
                                .map_err(|e| ServiceError::Internal(e.to_string()))
                        })
                        .collect::<Result<_>>()?,
                    None => Vec::new(),
                },
                None => Vec::new(),
            };
            datasets.push(serde_json::json!({
                "dataset_id": dataset.id,
                "title": dataset.metadata.title,
                "stream_entities": entities,
                "controller": dataset.metadata.owner_organization_id,
                "subject_key": link.subject_key,
                "version": version,
                "versions_holding_your_rows": holding,
                "rows": rows,
                "csv": csv,
                "retention": terms.retention,
                "retention_note": terms.retention_note,
                "purposes": terms.purposes.iter().map(|p| serde_json::json!({
                    "purpose": p.purpose, "lawful_basis": p.basis.as_str(), "notice": p.notice,
                })).collect::<Vec<_>>(),
                "other_purposes": LawfulBasis::Consent.as_str(),
            }));
        }
        let accesses = self.my_accesses(actor, None, 500).await?;
        let mut recipients: std::collections::BTreeMap<(String, String, String), usize> =
            Default::default();
        for a in &accesses {
            *recipients
                .entry((
                    a.dataset_id.clone(),
                    a.by.clone(),
                    a.purpose.clone().unwrap_or_default(),
                ))
                .or_default() += 1;
        }
        let bundle = serde_json::json!({
            "format": "citytrust subject access export v1",
            "generated_at": rfc3339(self.now()),
            "account": username,
            "links": links,
            "datasets": datasets,
            "recipients": recipients.iter().map(|((d, by, p), n)| serde_json::json!({
                "dataset_id": d, "recipient": by, "purpose": p, "reads": n,
            })).collect::<Vec<_>>(),
            "accesses": accesses,
            "consents": self.my_consents(actor).await?,
            "requests": self.my_subject_requests(actor).await?,
            "log_commitments": self.my_commitments(actor).await?,
        });
        let body = serde_json::to_vec_pretty(&bundle)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let sha256 = hex::encode(sha2::Sha256::digest(&body));
        let commitment = self.new_commitment(&username, "subject.export")?;
        let (entry, at) = self.log_entry_by(
            actor,
            "subject.export",
            serde_json::json!({
                "subject": commitment.commitment,
                "datasets": links.iter().map(|l| l.dataset_id.clone()).collect::<Vec<_>>(),
                "bytes": body.len(),
                "sha256": sha256,
            }),
        )?;
        // Committed before a byte is served, like every read.
        let log_index = self.appender.append("subject.export", entry, at).await?;
        self.store.insert_commitment(&username, &commitment).await?;
        for mut r in self.store.subject_requests_of(&username).await? {
            if r.kind == SubjectRequestKind::Access && r.status == SubjectRequestStatus::Open {
                r.status = SubjectRequestStatus::Answered;
                r.answer = Some(format!(
                    "answered with the export bundle (log entry {log_index})"
                ));
                r.answered_at = Some(rfc3339(self.now()));
                r.answered_by = Some("citytrust".into());
                let (b, at) = self.log_entry(
                    "subject.request_answered",
                    serde_json::json!({"request": r.id, "kind": "access", "status": "answered", "by": "citytrust"}),
                )?;
                self.store
                    .answer_subject_request(
                        &r,
                        &crate::ledger::new_entry("subject.request_answered", &b, &at),
                    )
                    .await?;
            }
        }
        Ok(Bundle {
            body,
            sha256,
            log_index,
        })
    }

    // ---- age ----------------------------------------------------------------------

    /// An administrator records a date of birth after checking it (R-CIT-5).
    pub async fn set_birth_date(&self, actor: &Actor, username: &str, date: &str) -> Result<()> {
        let Some(admin) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        authz::may_record_evidence(actor, "records a date of birth")?;
        let mut e = ValidationErrors::default();
        let day = e.date("birth_date", date);
        e.into_result()?;
        let day = day
            .map(|d| i64::from(d.to_julian_day()) - 2_440_588)
            .ok_or_else(|| ServiceError::Internal("date".into()))?;
        if day > self.today() {
            return Err(ServiceError::Invalid(ValidationErrors::single(
                "birth_date",
                "is in the future",
            )));
        }
        if self.store.get_user(username).await?.is_none() {
            return Err(ServiceError::NotFound(format!("user '{username}'")));
        }
        self.store.set_birth_day(username, day, admin).await?;
        Ok(())
    }

    /// Whether `username` is under the age threshold today (unknown age: no).
    pub(crate) async fn is_minor_today(&self, username: &str) -> Result<bool> {
        Ok(self
            .store
            .birth_day(username)
            .await?
            .is_some_and(|b| is_minor(b, self.today(), self.settings.minor_age)))
    }

    /// The subject key column and rows of erased subjects to strip from an
    /// upload before it is published (an erased person never comes back).
    pub(crate) async fn erased_for_upload(
        &self,
        dataset: &Dataset,
    ) -> Result<Option<(String, Vec<String>)>> {
        let Some(terms) = personal_terms(dataset) else {
            return Ok(None);
        };
        Ok(Some((
            terms.subject_key.clone(),
            self.store.erased_keys(&dataset.id).await?,
        )))
    }
}

/// Whether a kept read went through an agreement (else: the owner's own read).
/// Why a logged read of personal data included the records of the person
/// whose consents are `consents` (their records being in the version read and
/// not erased before it), or `None` when its subject rule left them out.
pub(crate) fn included_because(
    read: &PersonalRead,
    consents: &[StoredConsent],
) -> Option<&'static str> {
    let in_force = |kinds: &[ChoiceKind], recipient_ok: &dyn Fn(&Option<String>) -> bool| {
        consents.iter().any(|c| {
            c.consent.dataset_id == read.dataset_id
                && Some(&c.consent.purpose) == read.purpose.as_ref()
                && kinds.contains(&c.consent.kind)
                && recipient_ok(&c.consent.recipient_organization_id)
                && c.given_rev <= read.rev
                && c.withdrawn_rev.is_none_or(|w| w > read.rev)
        })
    };
    let readers: Vec<&str> = read
        .recipients
        .split(',')
        .filter(|s| !s.is_empty())
        .collect();
    match SubjectRule::parse(&read.rule) {
        Some(SubjectRule::OnlyConsenting) => {
            in_force(&[ChoiceKind::Consent, ChoiceKind::Donation], &|r| {
                r.as_deref().is_none_or(|r| readers.contains(&r))
            })
            .then_some("consent")
        }
        Some(SubjectRule::AllButObjecting) => {
            (!in_force(&[ChoiceKind::Objection], &|_| true)).then_some("no_objection")
        }
        _ => Some(if body_agreement(&read.body) {
            "basis"
        } else {
            "owner"
        }),
    }
}

fn body_agreement(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .is_some_and(|b| b["agreement"].is_string())
}

/// A code as typed: upper-case hex without separators or spaces.
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect::<String>()
        .to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitments_hide_the_name_and_open_with_the_salt() {
        let a = commitment_of("00ff", "resident");
        assert_eq!(a, commitment_of("00ff", "resident"));
        assert_ne!(a, commitment_of("00fe", "resident"));
        assert_ne!(a, commitment_of("00ff", "resident2"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn codes_are_read_as_typed() {
        assert_eq!(normalise_code("1a2b-3c4d 5e6f-7a8b"), "1A2B3C4D5E6F7A8B");
    }
}
