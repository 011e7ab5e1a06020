//! The catalogue use cases: register a dataset, change its metadata, read it,
//! search. Metadata of every dataset is public (R-CAT-8); content is not here.

use citytrust_model::ValidationErrors;
use citytrust_model::account::Actor;
use citytrust_model::authz;
use citytrust_model::catalogue::{Dataset, DatasetInput, DatasetMetadata};
use citytrust_model::validation::slugify;

use crate::search::{SearchQuery, SearchResults};

/// What the trustees change in how a dataset is protected (each field
/// left `None` stays as it is).
#[derive(Debug, Clone, Default)]
pub struct Reclassification {
    pub spectrum: Option<citytrust_model::Spectrum>,
    pub personal_data: Option<bool>,
    pub personal_terms: Option<citytrust_model::residents::PersonalTerms>,
    pub column_classes: Option<citytrust_model::catalogue::ColumnClasses>,
    /// The trustees' reasons (public, in the log).
    pub reason: String,
    pub expected_revision: Option<i64>,
}
use crate::{Result, Service, ServiceError, rfc3339};

impl Service {
    /// Register a dataset in the catalogue.
    pub async fn create_dataset(&self, actor: &Actor, input: DatasetInput) -> Result<Dataset> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let (id, metadata) = input.validate()?;
        self.register_dataset(actor, id, metadata).await
    }

    /// Register checked metadata (with a derivation, when the trust derived it).
    pub(crate) async fn register_dataset(
        &self,
        actor: &Actor,
        id: Option<String>,
        metadata: DatasetMetadata,
    ) -> Result<Dataset> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        // Organisations are public, so naming an unknown one is an input error, reported before the permission check.
        self.check_references(&metadata).await?;
        authz::may_create_dataset(actor, &metadata.owner_organization_id)?;
        let id = match id {
            Some(id) => id,
            None => self.free_slug(&slugify(&metadata.title)).await?,
        };
        let now = rfc3339(self.now());
        let dataset = Dataset {
            id,
            metadata,
            created_at: now.clone(),
            updated_at: now,
            revision: 1,
        };
        let (body, at) = self.log_entry(
            "dataset.registered",
            serde_json::json!({
                "dataset": dataset.id,
                "title": dataset.metadata.title,
                "owner": dataset.metadata.owner_organization_id,
                "spectrum": dataset.metadata.spectrum.as_str(),
                "personal_data": dataset.metadata.personal_data,
                "revision": dataset.revision,
                "derived_from": dataset.metadata.derivation.as_ref().map(|d| d
                    .inputs
                    .iter()
                    .map(|i| serde_json::json!({"dataset": i.dataset_id, "version": i.version}))
                    .collect::<Vec<_>>()),
                "by": acting_for(actor, &dataset),
            }),
        )?;
        self.store
            .insert_dataset(
                &dataset,
                actor.username(),
                &crate::ledger::new_entry("dataset.registered", &body, &at),
            )
            .await
            .map_err(|e| match e {
                citytrust_store::StoreError::Conflict(_) => {
                    ServiceError::Invalid(ValidationErrors::single(
                        "id",
                        format!("'{}' is taken by another dataset", dataset.id),
                    ))
                }
                other => other.into(),
            })?;
        self.index_changed(&dataset).await?;
        tracing::info!(dataset = %dataset.id, by = actor.username().unwrap_or("-"), "dataset registered");
        Ok(dataset)
    }

    /// Replace a dataset's metadata. `expected_revision` guards against lost updates.
    pub async fn update_dataset(
        &self,
        actor: &Actor,
        id: &str,
        input: DatasetInput,
        expected_revision: Option<i64>,
    ) -> Result<Dataset> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let current = self.get_dataset(id).await?;
        let (new_id, mut metadata) = input.validate()?;
        if new_id.as_deref().is_some_and(|n| n != id) {
            return Err(ValidationErrors::single("id", "a dataset's id cannot change").into());
        }
        // How it was derived is the trust's record, not an editable field.
        metadata.derivation = current.metadata.derivation.clone();
        if metadata
            .derivation
            .as_ref()
            .is_some_and(|d| d.needs_reassessment)
            && metadata.spectrum != current.metadata.spectrum
        {
            return Err(ValidationErrors::single(
                "spectrum",
                "this derived dataset awaits re-assessment: choose its class by \
                 re-assessing it, giving your reasons",
            )
            .into());
        }
        self.check_references(&metadata).await?;
        authz::may_edit_dataset(actor, &current.metadata, &metadata)?;
        let expected = expected_revision.unwrap_or(current.revision);
        if expected != current.revision {
            return Err(ServiceError::Stale(format!(
                "dataset '{id}' is at revision {}, not {expected}; reload and try again",
                current.revision
            )));
        }
        let dataset = Dataset {
            id: current.id.clone(),
            metadata,
            created_at: current.created_at.clone(),
            updated_at: rfc3339(self.now()),
            revision: current.revision + 1,
        };
        let reclassified = current.metadata.spectrum != dataset.metadata.spectrum;
        let kind = if reclassified {
            "dataset.reclassified"
        } else {
            "dataset.changed"
        };
        let (body, at) = self.log_entry(
            kind,
            serde_json::json!({
                "dataset": dataset.id,
                "owner": dataset.metadata.owner_organization_id,
                "spectrum": dataset.metadata.spectrum.as_str(),
                "previous_spectrum": current.metadata.spectrum.as_str(),
                "previous_owner": current.metadata.owner_organization_id,
                "revision": dataset.revision,
                "by": acting_for(actor, &dataset),
            }),
        )?;
        self.store
            .update_dataset(
                &dataset,
                expected,
                &crate::ledger::new_entry(kind, &body, &at),
            )
            .await?;
        self.index_changed(&dataset).await?;
        tracing::info!(dataset = %dataset.id, revision = dataset.revision, by = actor.username().unwrap_or("-"), "dataset updated");
        Ok(dataset)
    }

    /// The trustees change how a dataset is protected — its class, whether
    /// it is personal data, its personal terms (subject key, lawful basis
    /// per purpose), its column classes — with their reasons, in the log.
    /// Editors may only make these stricter ([`authz::loosened_protection`]).
    pub async fn reclassify_dataset(
        &self,
        actor: &Actor,
        id: &str,
        r: Reclassification,
    ) -> Result<Dataset> {
        authz::may_reclassify(actor)?;
        let current = self.get_dataset(id).await?;
        let reason = r.reason.trim().to_string();
        if reason.is_empty() || reason.chars().count() > 2000 {
            return Err(ValidationErrors::single(
                "reason",
                "give the trustees' reasons (at most 2000 characters)",
            )
            .into());
        }
        let mut input = current.metadata.to_input();
        if let Some(s) = r.spectrum {
            input.spectrum = s;
        }
        if let Some(p) = r.personal_data {
            input.personal_data = p;
        }
        if let Some(t) = r.personal_terms {
            input.personal_terms = Some(t);
        }
        if let Some(c) = r.column_classes {
            input.column_classes = c;
        }
        let (_, mut metadata) = input.validate()?;
        metadata.derivation = current.metadata.derivation.clone();
        if let Some(d) = metadata.derivation.as_mut() {
            // The trustees have assessed it: it stands on its own now.
            d.needs_reassessment = false;
            d.released_by_trustees = true;
            d.reassessment_note = Some(reason.clone());
        }
        let expected = r.expected_revision.unwrap_or(current.revision);
        if expected != current.revision {
            return Err(ServiceError::Stale(format!(
                "dataset '{id}' is at revision {}, not {expected}; reload and try again",
                current.revision
            )));
        }
        let dataset = Dataset {
            id: current.id.clone(),
            metadata,
            created_at: current.created_at.clone(),
            updated_at: rfc3339(self.now()),
            revision: current.revision + 1,
        };
        let bases = |m: &DatasetMetadata| -> serde_json::Value {
            m.personal_terms
                .as_ref()
                .map(|t| {
                    t.purposes
                        .iter()
                        .map(|p| serde_json::json!({"purpose": p.purpose, "basis": p.basis.as_str()}))
                        .collect::<Vec<_>>()
                        .into()
                })
                .unwrap_or(serde_json::Value::Null)
        };
        let (body, at) = self.log_entry(
            "dataset.reclassified",
            serde_json::json!({
                "dataset": dataset.id,
                "owner": dataset.metadata.owner_organization_id,
                "spectrum": dataset.metadata.spectrum.as_str(),
                "previous_spectrum": current.metadata.spectrum.as_str(),
                "personal_data": dataset.metadata.personal_data,
                "previous_personal_data": current.metadata.personal_data,
                "bases": bases(&dataset.metadata),
                "previous_bases": bases(&current.metadata),
                "reason": reason,
                "revision": dataset.revision,
                "by": "trustees",
            }),
        )?;
        self.store
            .update_dataset(
                &dataset,
                expected,
                &crate::ledger::new_entry("dataset.reclassified", &body, &at),
            )
            .await?;
        self.index_changed(&dataset).await?;
        Ok(dataset)
    }

    /// Every catalogue entry (the catalogue is public), for choosers.
    pub async fn all_datasets(&self) -> Result<Vec<Dataset>> {
        Ok(self.store.list_datasets().await?)
    }

    pub async fn get_dataset(&self, id: &str) -> Result<Dataset> {
        if !DatasetMetadata::is_valid_id(id) {
            return Err(ServiceError::NotFound(format!("dataset '{id}'")));
        }
        self.store
            .get_dataset(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("dataset '{id}'")))
    }

    /// Whether `actor` may edit `dataset` as it stands (for showing an edit button).
    pub fn may_edit(&self, actor: &Actor, dataset: &Dataset) -> bool {
        authz::may_edit_dataset(actor, &dataset.metadata, &dataset.metadata).is_ok()
    }

    /// Full-text search with facets over the whole catalogue.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults> {
        self.index.search(query)
    }

    /// Number of entries in the catalogue.
    pub fn catalogue_size(&self) -> usize {
        self.index.len()
    }

    async fn check_references(&self, m: &DatasetMetadata) -> Result<()> {
        let mut e = ValidationErrors::default();
        for (field, org) in m.organization_ids() {
            if self.store.get_organization(org).await?.is_none() {
                e.push(field, format!("there is no organisation '{org}'"));
            }
        }
        Ok(e.into_result()?)
    }

    async fn free_slug(&self, base: &str) -> Result<String> {
        if self.store.get_dataset(base).await?.is_none() {
            return Ok(base.to_string());
        }
        for n in 2..1000 {
            let candidate = format!("{base}-{n}");
            if self.store.get_dataset(&candidate).await?.is_none() {
                return Ok(candidate);
            }
        }
        Err(ValidationErrors::single("id", "choose an id: the title's slug is taken").into())
    }

    pub(crate) async fn index_changed(&self, dataset: &Dataset) -> Result<()> {
        let owner = self
            .store
            .get_organization(&dataset.metadata.owner_organization_id)
            .await?;
        let revision = self.store.catalogue_revision().await?;
        self.index
            .upsert(dataset.clone(), owner.map(|o| o.name), revision)
    }
}

/// Who acted, as the public log records it: a role or an organisation, never a person.
pub(crate) fn acting_for(actor: &Actor, dataset: &Dataset) -> String {
    if authz::is_administrator(actor) {
        return "administrator".to_string();
    }
    let m = &dataset.metadata;
    if actor.is_member_of(&m.owner_organization_id) {
        return format!("organization:{}", m.owner_organization_id);
    }
    m.custodians()
        .find(|c| actor.is_member_of(c))
        .map(|c| format!("organization:{c}"))
        .unwrap_or_else(|| "member".to_string())
}
