//! The Dataspace Protocol (DSP 2025-1), provider side, first part: the
//! catalogue. Every shared dataset (not closed, not open — open data needs
//! no contract — not withdrawn, not a derivation awaiting re-assessment) is
//! a DSP `Dataset` whose ODRL `Offer`s say what the charter in force would
//! let an organisation outside the trust ask for: one offer per access
//! level, its `purpose` constraint listing the purposes of the trust's
//! taxonomy the charter does not refuse at that level (granted outright,
//! open for comment or put to the trustees — every request still goes
//! through the same decision as any other). A dataset no purpose may be
//! asked for at any level is not offered.
//!
//! Messages are JSON-LD in the compact form the DSP schemas describe, with
//! the specification's context named by its IRI (never fetched).

use std::sync::Arc;

use citytrust_model::AccessLevel;
use citytrust_model::catalogue::{Dataset, PublicationStatus, Spectrum};
use citytrust_policy::{RequestFacts, RequestOutcome};
use serde_json::{Value, json};

use crate::governance::{Who, facts, policy_error};
use crate::{Result, Service, ServiceError};

/// The DSP JSON-LD context every message names.
pub const DSP_CONTEXT: &str = "https://w3id.org/dspace/2025/1/context.jsonld";
/// The protocol version served.
pub const DSP_VERSION: &str = "2025-1";
/// Where the protocol's endpoints live under the trust's base URL.
pub const DSP_PATH: &str = "/dsp";
/// The transfer type offered: the consumer pulls over HTTP through the governed read path.
pub const HTTP_PULL: &str = "HttpData-PULL";

/// The levels a request can be made at (metadata needs none).
const REQUESTABLE: [AccessLevel; 6] = [
    AccessLevel::Index,
    AccessLevel::Aggregate,
    AccessLevel::DpAggregate,
    AccessLevel::Anonymised,
    AccessLevel::Pseudonymised,
    AccessLevel::Identified,
];

/// Whether a dataset is offered over the Dataspace Protocol.
pub fn offered(d: &Dataset) -> bool {
    let m = &d.metadata;
    !matches!(m.spectrum, Spectrum::Open | Spectrum::Closed)
        && matches!(
            m.publication_status,
            PublicationStatus::Published | PublicationStatus::Archived
        )
        && !m.derivation.as_ref().is_some_and(|x| x.needs_reassessment)
}

impl Service {
    /// `GET /.well-known/dspace-version`'s answer.
    pub fn dsp_versions(&self) -> Value {
        json!({"protocolVersions": [{
            "version": DSP_VERSION,
            "path": DSP_PATH,
            "binding": "HTTPS",
        }]})
    }

    /// The catalogue as a DSP `Catalog` (the answer to a `CatalogRequestMessage`).
    /// Made once per catalogue revision, charter version and purpose
    /// taxonomy: asking again costs nothing while none of them changes.
    pub async fn dsp_catalog(&self, base: &str) -> Result<Arc<Value>> {
        let revision = self.store.catalogue_revision().await?;
        let (version, charter) = self.charter_in_force().await?;
        let purposes = self.purposes().await?;
        let key = format!(
            "{revision}/{version}/{}/{base}",
            crate::accounts::sha256_hex(&serde_json::to_string(&purposes).unwrap_or_default())
        );
        if let Ok(cache) = self.dsp_catalog_cache.lock()
            && let Some((k, v)) = cache.as_ref()
            && *k == key
        {
            return Ok(v.clone());
        }
        let mut datasets = Vec::new();
        for d in self.store.list_datasets().await? {
            if !offered(&d) {
                continue;
            }
            let offers = offers(&charter, &purposes, &d, base)?;
            if !offers.is_empty() {
                datasets.push(dataset(&d, offers, base));
            }
        }
        let mut catalog = json!({
            "@context": [DSP_CONTEXT],
            "@id": format!("{base}{DSP_PATH}/catalog"),
            "@type": "Catalog",
            "participantId": base,
            "dct:title": "CityTrust shared data",
            "service": [data_service(base)],
        });
        if !datasets.is_empty() {
            catalog["dataset"] = Value::Array(datasets);
        }
        let catalog = Arc::new(catalog);
        if let Ok(mut cache) = self.dsp_catalog_cache.lock() {
            *cache = Some((key, catalog.clone()));
        }
        Ok(catalog)
    }

    /// One offered dataset (the answer to `GET /catalog/datasets/{id}`); a
    /// dataset that is not offered is not found.
    pub async fn dsp_dataset(&self, id: &str, base: &str) -> Result<Value> {
        let not_found = || ServiceError::NotFound(format!("dataset '{id}'"));
        let d = self.store.get_dataset(id).await?.ok_or_else(not_found)?;
        if !offered(&d) {
            return Err(not_found());
        }
        let (_, charter) = self.charter_in_force().await?;
        let purposes = self.purposes().await?;
        let offers = offers(&charter, &purposes, &d, base)?;
        if offers.is_empty() {
            return Err(not_found());
        }
        let mut v = dataset(&d, offers, base);
        if let Some(map) = v.as_object_mut() {
            map.insert("@context".into(), json!([DSP_CONTEXT]));
        }
        Ok(v)
    }
}

fn data_service(base: &str) -> Value {
    json!({
        "@id": format!("{base}{DSP_PATH}"),
        "@type": "DataService",
        "endpointURL": format!("{base}{DSP_PATH}"),
    })
}

fn dataset(d: &Dataset, offers: Vec<Value>, base: &str) -> Value {
    let m = &d.metadata;
    json!({
        "@id": d.id,
        "@type": "Dataset",
        "dct:title": m.title,
        "dct:description": m.description,
        "dcat:keyword": m.keywords,
        "dcat:landingPage": format!("{base}/datasets/{}", d.id),
        "hasPolicy": offers,
        "distribution": [{
            "@type": "Distribution",
            "format": HTTP_PULL,
            "accessService": format!("{base}{DSP_PATH}"),
        }],
    })
}

/// The offers the charter in force makes for `d` to an organisation outside the trust.
fn offers(
    charter: &citytrust_policy::Charter,
    purposes: &[citytrust_model::Purpose],
    d: &Dataset,
    base: &str,
) -> Result<Vec<Value>> {
    let outsider = Who::outsider();
    let mut out = Vec::new();
    for level in REQUESTABLE {
        let mut allowed = Vec::new();
        for p in purposes {
            let request = RequestFacts {
                purpose: &p.id,
                purpose_kind: p.kind.as_str(),
                commercial: p.commercial,
                level: level.rank(),
                row_level: level.is_row_level(),
                sharing: citytrust_model::Sharing::Systematic.as_str(),
                standing_agreement: false,
                outcome_report_overdue: false,
            };
            let outcome = outsider
                .with(|who| charter.decide_request(who, &facts(d), &request))
                .map_err(policy_error)?;
            if !matches!(outcome, RequestOutcome::Refused(_)) {
                allowed.push(p.id.clone());
            }
        }
        if allowed.is_empty() {
            continue;
        }
        out.push(json!({
            "@id": format!("{base}{DSP_PATH}/offers/{}/{}", d.id, level.as_str()),
            "@type": "Offer",
            "permission": [{
                "action": "use",
                "constraint": [
                    {"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": allowed},
                    {"leftOperand": format!("{base}{DSP_PATH}/vocab#accessLevel"), "operator": "eq", "rightOperand": level.as_str()},
                ],
            }],
        }));
    }
    Ok(out)
}
