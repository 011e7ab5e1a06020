//! The read path's front half, in one place: **where every read is
//! authorised** (`authorize_read`: the purpose, the level, the charter's
//! decision, the one covering agreement, derived data's inputs) and the
//! `ReadPlan` that decision becomes — who reads which dataset under which
//! grant, the version chosen once, whose rows (the subject scope, decided
//! now from the consents in force now) and where the version's file is.
//! Every way content leaves (downloads, SQL, tables, DP statistics,
//! look-ups, rejects files) plans its reads here, and `log_read` writes the
//! `content.read` entry from the plan (the DP statistic, which charges its
//! budget in the same transaction, builds the same entry with `read_entry`).

use citytrust_model::Actor;
use citytrust_model::ProblemCode;
use citytrust_model::access::AccessLevel;
use citytrust_model::catalogue::{Dataset, Spectrum};
use citytrust_policy::ReadFacts;
use citytrust_query::VersionChoice;
use citytrust_query::subjects::SubjectFilter;

use crate::content::{VersionInfo, WithSubjects, reader_label};
use crate::governance::{facts, policy_error};
use crate::residents::SubjectScope;
use crate::{Result, Service, ServiceError, rfc3339};

/// What a permitted read is permitted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadGrant {
    /// The purpose id read for (`None`: open data read without one).
    pub purpose: Option<String>,
    pub level: AccessLevel,
    /// The charter rule that permitted it.
    pub rule: String,
    /// The agreement it was read under, if one was needed.
    pub agreement_id: Option<String>,
    /// The columns the agreement limits the read to (`None`: all).
    pub columns: Option<Vec<String>>,
    pub charter_version: i64,
}

/// One permitted read of one dataset, decided once and passed along the
/// read path whole: the reader, the dataset, the grant that allowed it, the
/// version read, whose rows it includes and where the version's file is.
/// Built only by [`Service::plan_read`] (or, for a query's tables,
/// [`Service::plan_read_under`]), so a read cannot skip a step.
#[derive(Clone)]
pub(crate) struct ReadPlan {
    pub actor: Actor,
    pub dataset: Dataset,
    pub grant: ReadGrant,
    pub version: VersionInfo,
    /// Whose rows (`None`: the dataset is about no one).
    pub scope: Option<SubjectScope>,
    /// The version's file in the version store.
    pub location: String,
}

impl ReadPlan {
    /// The rows' filter, if only some subjects' rows may be read.
    pub fn subjects(&self) -> Option<&SubjectFilter> {
        self.scope.as_ref().and_then(|s| s.filter.as_deref())
    }
    /// What the read opens: the version's file, with only the columns and
    /// rows the plan allows (the governed scan applies them).
    pub fn source<'a>(
        &'a self,
        versions: &'a citytrust_query::VersionStore,
    ) -> citytrust_query::governed::Source<'a> {
        citytrust_query::governed::Source {
            versions,
            location: &self.location,
            columns: self.grant.columns.as_deref(),
            subjects: self.subjects(),
        }
    }
}

impl Service {
    /// Decide a read: a known purpose (required unless the data is open), a
    /// level the trust can serve, and a permitting charter rule given the
    /// agreements in force today. Deny by default.
    pub async fn authorize_read(
        &self,
        actor: &Actor,
        dataset: &Dataset,
        purpose: Option<&str>,
        level: AccessLevel,
    ) -> Result<ReadGrant> {
        let refuse = |rule: Option<&str>, message: String| ServiceError::Refused {
            rule: rule.map(str::to_string),
            message,
        };
        if !level.served() {
            return Err(refuse(
                Some("level-not-available"),
                "a metadata-only grant carries no content: the dataset's catalogue \
                 entry is the whole of it"
                    .to_string(),
            ));
        }
        let open = dataset.metadata.spectrum == Spectrum::Open;
        if !open && matches!(actor, Actor::Anonymous) {
            // Nothing but open data is read without signing in.
            return Err(ServiceError::SignInToRead {
                message: format!(
                    "'{}' is not open data: it is read only by someone signed in, for a stated \
                     purpose, under an agreement the trustees grant on request",
                    dataset.id
                ),
                dataset: Some(dataset.id.clone()),
            });
        }
        let purpose_found = match purpose {
            Some(p) => self.purpose(p).await?,
            None => None,
        };
        if purpose.is_none() && !open {
            return Err(refuse(
                Some("purpose-required"),
                format!(
                    "dataset '{}' is not open data: say what the read is for (its purpose, \
                     one of the trust's purposes)",
                    dataset.id
                ),
            ));
        }
        if let (Some(p), None) = (purpose, &purpose_found) {
            // Open data too: a purpose is one of the trust's or none, so no
            // caller's free text ever reaches the public log.
            let ids: Vec<String> = self.purposes().await?.into_iter().map(|p| p.id).collect();
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::UnknownPurpose,
                message: format!(
                    "'{}' is not a purpose of the trust; one of: {}",
                    p.chars().take(100).collect::<String>(),
                    ids.join(", ")
                ),
            });
        }
        let who = self.who(actor).await?;
        let today = self.today();
        // One agreement must allow all of the read: of those in force, one
        // whose level covers the level asked (levels are compared by what
        // they allow, not by rank), the widest on columns.
        let agreement = match &purpose_found {
            Some(p) if !open => citytrust_model::access::agreement_for_read(
                self.store
                    .agreements_in_force(&dataset.id, &p.id, &who.recipients(), today)
                    .await?,
                level,
            ),
            _ => None,
        };
        let (charter_version, charter) = self.charter_in_force().await?;
        let read = ReadFacts {
            purpose: purpose_found.as_ref().map(|p| p.id.as_str()).unwrap_or(""),
            purpose_kind: purpose_found
                .as_ref()
                .map(|p| p.kind.as_str())
                .unwrap_or(""),
            commercial: purpose_found.as_ref().is_some_and(|p| p.commercial),
            level: level.rank(),
            agreement_level: agreement.as_ref().map(|a| a.level.rank()),
        };
        let decision = who
            .with(|principal| charter.decide_read(principal, &facts(dataset), &read))
            .map_err(policy_error)?;
        if decision.allowed
            && level.is_row_level()
            && dataset.metadata.column_classes.trajectories
            && !actor.is_member_of(&dataset.metadata.owner_organization_id)
        {
            // R-PRV-4, a fact of the code: paths stay with their owner.
            return Err(refuse(
                Some("trajectories-as-tables"),
                format!(
                    "the rows of dataset '{}' are people's movements: outside its owner they \
                     leave only as tables (for example origin–destination counts \
                     between grid areas)",
                    dataset.id
                ),
            ));
        }
        if decision.allowed {
            let rule = decision
                .rules
                .first()
                .map(|r| r.id.clone())
                .unwrap_or_default();
            let under = (rule == "agreement-in-force")
                .then_some(agreement)
                .flatten();
            if let Some(a) = &under
                && !a.level.covers(level)
            {
                // A fact of the code, whatever a charter's text compares.
                return Err(refuse(
                    Some("level-not-covered"),
                    format!(
                        "agreement {} grants {}, which does not include {}",
                        a.id,
                        a.level.label().to_lowercase(),
                        level.label().to_lowercase()
                    ),
                ));
            }
            let columns = under
                .as_ref()
                .map(|a| a.columns.clone())
                .filter(|c| !c.is_empty());
            // Derived data carries its inputs' terms until the trustees
            // release it (R-CAT-5): read only by whoever may read every input.
            self.check_derived_inputs(actor, dataset, purpose).await?;
            return Ok(ReadGrant {
                purpose: purpose_found.as_ref().map(|p| p.id.clone()),
                level,
                rule,
                agreement_id: under.map(|a| a.id),
                columns,
                charter_version,
            });
        }
        if let Some(rule) = decision.forbidden_by() {
            return Err(refuse(
                Some(&rule.id),
                format!("refused by the charter's rule {}", rule.describe()),
            ));
        }
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let purpose_id = purpose.unwrap_or("");
        let message = format!(
            "no data sharing agreement in force today gives you {} of dataset '{}' for the \
             purpose '{purpose_id}': ask the trustees for it with an access request",
            level.label().to_lowercase(),
            dataset.id
        );
        Err(refuse(
            None,
            format!("no rule of the charter permits this read: {message}"),
        ))
    }

    /// A derived dataset not yet released by the trustees is read only by
    /// someone who may, now, read each of its inputs for the same purpose,
    /// at the identified level, with every column the derivation read.
    async fn check_derived_inputs(
        &self,
        actor: &Actor,
        dataset: &Dataset,
        purpose: Option<&str>,
    ) -> Result<()> {
        let Some(derivation) = &dataset.metadata.derivation else {
            return Ok(());
        };
        if derivation.released_by_trustees {
            return Ok(());
        }
        let refuse = |input: &str| ServiceError::Refused {
            rule: Some("derived-data-keeps-its-inputs-terms".into()),
            message: format!(
                "'{}' was derived from '{input}', which you may not read in full for this purpose \
                 now: derived data carries its inputs' agreements, column limits and purposes \
                 until the trustees release it",
                dataset.id
            ),
        };
        for input in &derivation.inputs {
            let Some(source) = self.store.get_dataset(&input.dataset_id).await? else {
                return Err(refuse(&input.dataset_id));
            };
            let grant =
                Box::pin(self.authorize_read(actor, &source, purpose, AccessLevel::Identified))
                    .await
                    .map_err(|_| refuse(&input.dataset_id))?;
            if let Some(allowed) = &grant.columns {
                let read_all = input.columns.is_empty();
                if read_all || !input.columns.iter().all(|c| allowed.contains(c)) {
                    return Err(refuse(&input.dataset_id));
                }
            }
        }
        Ok(())
    }

    /// Authorise a read of `dataset` for `purpose` at `level`, then plan it:
    /// the version named, whose rows (decided now), and its file.
    pub(crate) async fn plan_read(
        &self,
        actor: &Actor,
        dataset: Dataset,
        purpose: Option<&str>,
        level: AccessLevel,
        version: VersionChoice,
    ) -> Result<ReadPlan> {
        let grant = self.authorize_read(actor, &dataset, purpose, level).await?;
        self.plan_read_under(actor, dataset, grant, version).await
    }

    /// Plan a read already authorised by `grant`.
    pub(crate) async fn plan_read_under(
        &self,
        actor: &Actor,
        dataset: Dataset,
        grant: ReadGrant,
        version: VersionChoice,
    ) -> Result<ReadPlan> {
        let version = self.version_for_read(&dataset.id, version).await?;
        // Whose rows: decided now, from the consents in force now (invariant 2).
        let scope = self.subject_scope(actor, &dataset, &grant).await?;
        let location = self.version_file(&dataset.id, version.version)?;
        Ok(ReadPlan {
            actor: actor.clone(),
            dataset,
            grant,
            version,
            scope,
            location,
        })
    }

    /// The version a read names: a number, an "as of" time, or the latest.
    pub(crate) async fn version_for_read(
        &self,
        dataset_id: &str,
        choice: VersionChoice,
    ) -> Result<VersionInfo> {
        let v = match choice {
            VersionChoice::Latest => self.version_record(dataset_id, None).await,
            VersionChoice::Number(n) => self.version_record(dataset_id, Some(n)).await,
            VersionChoice::AsOf(at) => self.version_as_of(dataset_id, at).await,
        }?;
        // A removed version's file is gone: said so, not read.
        v.readable()
    }

    /// The version in force at `as_of` (seconds since the epoch): the latest
    /// published at or before it (it may have been removed since).
    pub(crate) async fn version_as_of(&self, dataset_id: &str, as_of: i64) -> Result<VersionInfo> {
        self.get_dataset(dataset_id).await?;
        for v in self.store.list_versions(dataset_id).await? {
            let published = time::OffsetDateTime::parse(
                &v.created_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| ServiceError::Internal(format!("stored version time: {e}")))?;
            if published.unix_timestamp() <= as_of {
                return VersionInfo::from_stored(v);
            }
        }
        let at = time::OffsetDateTime::from_unix_timestamp(as_of)
            .map(rfc3339)
            .unwrap_or_else(|_| as_of.to_string());
        Err(ServiceError::NotFound(format!(
            "a version of dataset '{dataset_id}' published by {at}"
        )))
    }

    /// Write a read's `content.read` entry (group commit, before a byte is
    /// served) and, for personal data, the residents' record of it.
    pub(crate) async fn log_read(
        &self,
        plan: &ReadPlan,
        fields: serde_json::Value,
        kind: &str,
    ) -> Result<i64> {
        let body = self.read_entry(plan, fields);
        let (body, at) = self.log_entry_by(&plan.actor, "content.read", body)?;
        let log_index = self.appender.append("content.read", body, at).await?;
        self.record_personal_read(plan, log_index, kind).await?;
        Ok(log_index)
    }

    /// A read's `content.read` entry: what the plan says (dataset, version,
    /// purpose, level, rule, agreement, charter, reader, subjects) and the
    /// read's own `fields` (format, rows, commitment, transform).
    pub(crate) fn read_entry(
        &self,
        plan: &ReadPlan,
        fields: serde_json::Value,
    ) -> serde_json::Value {
        let grant = &plan.grant;
        let mut body = serde_json::json!({
            "dataset": plan.dataset.id,
            "version": plan.version.version,
            // The taxonomy's id (free text never reaches the log).
            "purpose": grant.purpose,
            "level": grant.level.as_str(),
            "rule": grant.rule,
            "agreement": grant.agreement_id,
            "charter_version": grant.charter_version,
            "by": reader_label(&plan.actor, &plan.dataset),
        });
        if let (Some(map), serde_json::Value::Object(extra)) = (body.as_object_mut(), fields) {
            map.extend(extra);
        }
        body.with_subjects(plan.scope.as_ref())
    }
}
