//! Derived datasets (R-CAT-5): a dataset made by one read-only query over
//! others. It records its inputs at the versions read, inherits the most
//! stringent class and the personal-data flag of its inputs, and starts
//! "needing re-assessment": until a maintainer of its owner chooses its class
//! (with reasons, in the log) its content is readable only by its owner,
//! whatever its class says — aggregation can reveal what the inputs did not.

use citytrust_model::ProblemCode;
use std::collections::BTreeMap;
use std::io::Write;

use citytrust_model::catalogue::{Dataset, DatasetInput, Derivation, DerivedInput};
use citytrust_model::{Actor, Spectrum, ValidationErrors, authz};
use citytrust_query::InputFormat;
use citytrust_query::export::OutputFormat;
use citytrust_query::ingest::OnError;
use citytrust_query::sql::Limits;

use crate::content::{UploadOptions, VersionInfo};
use crate::{Result, Service, ServiceError, rfc3339};

/// Rows a derivation may produce at most.
pub const MAX_DERIVED_ROWS: usize = 50_000_000;
/// Bytes (as Parquet) a derivation may produce at most.
pub const MAX_DERIVED_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Make a dataset from a query.
#[derive(Debug, Clone)]
pub struct DeriveRequest {
    /// The new dataset's metadata; its class is raised to the most stringent of the inputs'.
    pub dataset: DatasetInput,
    pub sql: String,
    pub purpose: String,
}

/// A maintainer's re-assessment of a derived dataset's class.
#[derive(Debug, Clone)]
pub struct Reassessment {
    pub spectrum: Spectrum,
    /// Whether the derived data is personal data (unchanged when `None`).
    pub personal_data: Option<bool>,
    /// Why this class is right for what the derivation reveals.
    pub note: String,
    pub expected_revision: Option<i64>,
}

impl Service {
    /// Run `request.sql` over the datasets the caller may read and register
    /// the result as a new dataset with one version. Nothing is registered
    /// unless the query runs.
    pub async fn derive_dataset(
        &self,
        actor: &Actor,
        request: DeriveRequest,
    ) -> Result<(Dataset, VersionInfo)> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let purpose = request.purpose.trim().to_string();
        if self.purpose(&purpose).await?.is_none() {
            let ids: Vec<String> = self.purposes().await?.into_iter().map(|p| p.id).collect();
            return Err(ValidationErrors::single(
                "purpose",
                format!(
                    "say which of the trust's purposes the derived data is for: one of {}",
                    ids.join(", ")
                ),
            )
            .into());
        }
        let (id, mut metadata) = request.dataset.validate()?;
        authz::may_create_dataset(actor, &metadata.owner_organization_id)?;
        let nonce = crate::content::new_nonce()?;
        let sql_commitment = crate::content::commitment("sql", &nonce, &request.sql);
        let mut trail = crate::content::QueryTrail {
            purpose: Some(purpose.clone()),
            ..Default::default()
        };
        let _slot = self.read_slot(actor).await?;
        let checked = match citytrust_query::sql::check(&request.sql) {
            Ok(c) => c,
            Err(e) => {
                let e = ServiceError::from(e);
                self.log_query_attempt(actor, &trail, &sql_commitment, "derivation", &e)
                    .await?;
                return Err(e);
            }
        };
        let files = match self
            .resolve_tables(
                actor,
                &checked,
                Some(&purpose),
                citytrust_model::AccessLevel::Identified,
                &mut trail,
            )
            .await
        {
            Ok(files) => files,
            Err(e) => {
                self.log_query_attempt(actor, &trail, &sql_commitment, "derivation", &e)
                    .await?;
                return Err(e);
            }
        };
        // A copy of data read under residents' choices would outlive them: a
        // withdrawal or an objection must reach every read, so such data is
        // queried when needed, never copied into a dataset of its own.
        if let Some(t) = trail.read.iter().find(|t| {
            t.scope
                .as_ref()
                .is_some_and(|s| s.rule != citytrust_model::residents::SubjectRule::All)
        }) {
            return Err(ServiceError::Refused {
                rule: Some("derived-from-residents-choices".into()),
                message: format!(
                    "'{}' is read under its residents' consent or objections, and a withdrawal must reach \
                     every read: query it when you need it instead of deriving a copy",
                    t.dataset.id
                ),
            });
        }
        let inputs: Vec<DerivedInput> = trail
            .read
            .iter()
            .map(|t| DerivedInput {
                dataset_id: t.dataset.id.clone(),
                version: t.version.version,
                spectrum: t.dataset.metadata.spectrum,
                personal_data: t.dataset.metadata.personal_data,
                agreement_id: t.grant.agreement_id.clone(),
                columns: t.grant.columns.clone().unwrap_or_default(),
            })
            .collect();
        let Some(inherited) = inputs.iter().map(|i| i.spectrum).max() else {
            return Err(ValidationErrors::single(
                "sql",
                "a derived dataset is made from at least one dataset: name one in FROM",
            )
            .into());
        };
        metadata.spectrum = metadata.spectrum.max(inherited);
        metadata.personal_data |= inputs.iter().any(|i| i.personal_data);
        let lineage: Vec<String> = inputs
            .iter()
            .map(|i| format!("{} version {}", i.dataset_id, i.version))
            .collect();
        let provenance = &mut metadata.data_states.provenance;
        if provenance.lineage.is_none() {
            provenance.lineage = Some(format!("Derived by a query from {}.", lineage.join(", ")));
        }
        metadata.derivation = Some(Derivation {
            sql: request.sql.clone(),
            inputs: inputs.clone(),
            inherited_spectrum: inherited,
            needs_reassessment: true,
            reassessment_note: None,
            purpose: Some(purpose.clone()),
            released_by_trustees: false,
        });

        // Run the query first: a query that fails registers nothing.
        let limits = Limits {
            max_rows: MAX_DERIVED_ROWS,
            timeout: std::time::Duration::from_secs(600),
        };
        let spooled = match self
            .spool_query(
                checked,
                &files,
                limits,
                OutputFormat::Parquet,
                MAX_DERIVED_BYTES,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.log_query_attempt(actor, &trail, &sql_commitment, "derivation", &e)
                    .await?;
                return Err(e);
            }
        };
        if spooled.truncated {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::TooManyRows,
                message: format!("a derived dataset has at most {MAX_DERIVED_ROWS} rows"),
            });
        }
        let rows = spooled.rows;
        let spool = tempfile::NamedTempFile::new_in(self.content_dir().join("tmp"))?;
        {
            let mut from = spooled.file;
            let mut to = spool.reopen()?;
            std::io::copy(&mut from, &mut to)?;
            to.flush()?;
        }

        let dataset = self.register_dataset(actor, id, metadata).await?;
        let upload = self.begin_upload(actor, &dataset.id).await?;
        spool
            .persist(upload.body_path())
            .map_err(|e| ServiceError::Internal(format!("derived content: {}", e.error)))?;
        let info = self
            .finish_upload(
                upload,
                UploadOptions {
                    format: InputFormat::Parquet,
                    on_error: OnError::Reject,
                    declared: BTreeMap::new(),
                    gzip: false,
                },
                None,
            )
            .await?;
        let (body, at) = self.log_entry_by(
            actor,
            "dataset.derived",
            serde_json::json!({
                "dataset": dataset.id,
                "inputs": inputs
                    .iter()
                    .map(|i| serde_json::json!({"dataset": i.dataset_id, "version": i.version}))
                    .collect::<Vec<_>>(),
                "sql_commitment": sql_commitment,
                "rows": rows,
                "spectrum": dataset.metadata.spectrum.as_str(),
                "needs_reassessment": true,
                "purpose": purpose,
                "by": crate::catalogue::acting_for(actor, &dataset),
            }),
        )?;
        self.store
            .append_log(&crate::ledger::new_entry("dataset.derived", &body, &at))
            .await?;
        tracing::info!(dataset = %dataset.id, rows, "dataset derived");
        Ok((dataset, info))
    }

    /// A derived dataset's class chosen again, with reasons. Its maintainers
    /// may keep its inherited class or make it stricter; only the trustees
    /// may lower it below the most stringent class of its inputs, or say it
    /// is not personal data — and only the trustees' assessment releases it
    /// from its inputs' terms (R-CAT-5).
    pub async fn reassess_dataset(
        &self,
        actor: &Actor,
        id: &str,
        r: Reassessment,
    ) -> Result<Dataset> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let current = self.get_dataset(id).await?;
        let Some(derivation) = current.metadata.derivation.clone() else {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::NotDerived,
                message: format!(
                    "dataset '{id}' was not derived from others: its classification is the \
                     trustees' to change"
                ),
            });
        };
        let by_trustees = authz::may_reassess_derived(
            actor,
            &current.metadata,
            derivation.inherited_spectrum,
            r.spectrum,
            current.metadata.personal_data && r.personal_data == Some(false),
        )?;
        let note = r.note.trim().to_string();
        if note.is_empty() || note.chars().count() > 2000 {
            return Err(ValidationErrors::single(
                "note",
                "give the reasons for this class (at most 2000 characters): what could the derived data reveal, and to whom",
            )
            .into());
        }
        let expected = r.expected_revision.unwrap_or(current.revision);
        if expected != current.revision {
            return Err(ServiceError::Stale(format!(
                "dataset '{id}' is at revision {}, not {expected}; reload and try again",
                current.revision
            )));
        }
        let mut dataset = current.clone();
        dataset.metadata.spectrum = r.spectrum;
        if let Some(p) = r.personal_data {
            dataset.metadata.personal_data = p;
        }
        dataset.metadata.derivation = Some(Derivation {
            needs_reassessment: false,
            reassessment_note: Some(note),
            released_by_trustees: derivation.released_by_trustees || by_trustees,
            ..derivation.clone()
        });
        dataset.revision = current.revision + 1;
        dataset.updated_at = rfc3339(self.now());
        let (body, at) = self.log_entry(
            "dataset.reassessed",
            serde_json::json!({
                "dataset": dataset.id,
                "spectrum": dataset.metadata.spectrum.as_str(),
                "previous_spectrum": current.metadata.spectrum.as_str(),
                "inherited_spectrum": derivation.inherited_spectrum.as_str(),
                "personal_data": dataset.metadata.personal_data,
                "released_by_trustees": by_trustees,
                "revision": dataset.revision,
                "by": if by_trustees { "trustees".to_string() } else { crate::catalogue::acting_for(actor, &dataset) },
            }),
        )?;
        self.store
            .update_dataset(
                &dataset,
                expected,
                &crate::ledger::new_entry("dataset.reassessed", &body, &at),
            )
            .await?;
        self.index_changed(&dataset).await?;
        Ok(dataset)
    }
}
