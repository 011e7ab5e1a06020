//! Federation (R-PLT-4): other catalogues this trust harvests, and the
//! entries it brought in from them.
//!
//! An administrator registers a remote catalogue — another CityTrust's
//! `/catalog.ttl`, any DCAT-AP feed in Turtle or N-Triples, or a CKAN site's
//! action API. A harvest reads it and keeps one *federated entry* per
//! dataset it holds: marked with its source, searchable beside the city's
//! own entries, never editable here, replaced when the source changes it and
//! removed when the source drops (or withdraws) it. A harvest that fails
//! part-way changes nothing; a record that cannot be read is reported with
//! the reason and, if an earlier harvest brought it, kept as it was.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalogue::Spectrum;
use crate::validation::ValidationErrors;

/// What a remote catalogue speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RemoteKind {
    /// A DCAT-AP document in Turtle or N-Triples (another CityTrust's
    /// `/catalog.ttl`, data.europa.eu's or ckanext-dcat's feeds).
    Dcat,
    /// A CKAN site: `url` is the site's root; entries are read from
    /// `/api/3/action/package_search`, a page at a time.
    Ckan,
}

impl RemoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::Dcat => "dcat",
            RemoteKind::Ckan => "ckan",
        }
    }
}

/// What an administrator registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRemoteCatalogue {
    /// Lowercase letters, digits and hyphens; part of every entry's id.
    pub id: String,
    /// Shown as the entries' source, e.g. "Barcelona Open Data".
    pub name: String,
    /// http(s) URL of the DCAT-AP document, or of the CKAN site's root.
    pub url: String,
    pub kind: RemoteKind,
    /// Harvest again this many hours after the last harvest (1 to 720; default 24).
    #[serde(default)]
    pub interval_hours: Option<u32>,
    /// The node behind the catalogue as a Dataspace Protocol participant,
    /// for asking it for data (another CityTrust: its `GET /dsp/participant`).
    #[serde(default)]
    pub participant: Option<Participant>,
}

pub const DEFAULT_HARVEST_HOURS: u32 = 24;

/// A partner node as a Dataspace Protocol participant: who it says it is
/// (its public URL) and the key its messages must be signed with, pinned by
/// the administrator who registered it. A message signed with any other key
/// is not from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// The node's public URL (http or https, no query), e.g. `https://data.city-b.eu`.
    pub id: String,
    /// Its Ed25519 public key: `ed25519:` and 64 hexadecimal digits.
    pub key: String,
}

impl Participant {
    pub fn validate(&self, e: &mut ValidationErrors) {
        match url::Url::parse(&self.id) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && !self.id.ends_with('/')
                    && u.as_str().trim_end_matches('/') == self.id
                    && self.id.len() <= 500 => {}
            _ => e.push(
                "participant.id",
                "the node's public URL as written out by a URL parser: http or https, a host, \
                 no query, no trailing slash (e.g. https://data.city-b.eu)",
            ),
        }
        if self.key_bytes().is_none() {
            e.push(
                "participant.key",
                "an Ed25519 public key: 'ed25519:' and 64 hexadecimal digits",
            );
        }
    }

    /// The key's 32 bytes, when it is well formed.
    pub fn key_bytes(&self) -> Option<[u8; 32]> {
        let h = self.key.strip_prefix("ed25519:")?;
        let bytes = hex::decode(h).ok()?;
        bytes.try_into().ok()
    }
}

impl NewRemoteCatalogue {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        if self.id.is_empty()
            || self.id.len() > 40
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || self.id.starts_with('-')
        {
            e.push(
                "id",
                "1 to 40 lowercase letters, digits and hyphens, not starting with a hyphen",
            );
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 120 {
            e.push("name", "1 to 120 characters");
        }
        match url::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    e.push("url", "must not carry a user name or password");
                }
            }
            Ok(_) => e.push("url", "must be an http or https URL with a host"),
            Err(err) => e.push("url", format!("not a URL: {err}")),
        }
        if self.url.len() > 2000 {
            e.push("url", "at most 2000 characters");
        }
        if let Some(h) = self.interval_hours
            && !(1..=720).contains(&h)
        {
            e.push("interval_hours", "between 1 and 720");
        }
        if let Some(p) = &self.participant {
            p.validate(&mut e);
        }
        e.into_result()
    }
}

/// A registered remote catalogue, with how its last harvest went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RemoteCatalogue {
    pub id: String,
    pub name: String,
    pub url: String,
    pub kind: RemoteKind,
    pub interval_hours: u32,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// When the next scheduled harvest is due (RFC 3339 UTC).
    pub next_harvest_at: String,
    /// How many federated entries it holds here now.
    #[serde(default)]
    pub entries: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_harvest: Option<HarvestReport>,
    /// When a harvest last succeeded (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    /// The node as a Dataspace Protocol participant, when one was pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<Participant>,
}

/// How one harvest went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HarvestOutcome {
    /// The feed was read to its end; entries now match it.
    Succeeded,
    /// The feed could not be read to its end (unreachable, an HTTP error,
    /// broken syntax, too large); nothing changed.
    Failed,
}

/// A record the harvest could not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RejectedRecord {
    /// The record's IRI or CKAN name, or where it is in the feed.
    pub record: String,
    pub reason: String,
    /// Whether an earlier harvest's version of it is kept.
    #[serde(default)]
    pub kept_previous: bool,
}

/// At most this many rejected records are listed in a report (all are counted).
pub const MAX_REJECTED_LISTED: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HarvestReport {
    pub started_at: String,
    pub finished_at: String,
    pub outcome: HarvestOutcome,
    /// Why it failed, with the place in the feed where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Dataset records read from the feed.
    pub records: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub removed: u64,
    pub rejected: u64,
    /// The first [`MAX_REJECTED_LISTED`] rejected records.
    pub rejected_records: Vec<RejectedRecord>,
    /// Bytes read from the source.
    pub bytes: u64,
    /// The transparency log's entry for this harvest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
}

/// One dataset of a remote catalogue, as harvested. Read-only here: the
/// source is its only author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FederatedEntry {
    /// `{catalogue id}:{16 hex digits of the SHA-256 of the remote id}`; the
    /// colon keeps it apart from every local dataset id.
    pub id: String,
    pub source: FederatedSource,
    pub title: String,
    pub description: String,
    pub keywords: Vec<String>,
    /// The publisher's name (or IRI, when the feed names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// The entry's page at its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_page: Option<String>,
    /// The licence's IRI or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// DCAT-AP's access right, as the source gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_right: Option<AccessRight>,
    /// Distribution formats, e.g. "CSV".
    pub formats: Vec<String>,
    /// EU data themes (codes such as "ENVI").
    pub themes: Vec<String>,
    /// When the source last changed it, as the source says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// Where a federated entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FederatedSource {
    /// The remote catalogue's id here.
    pub catalogue_id: String,
    pub catalogue_name: String,
    /// The entry's IRI (DCAT) or name (CKAN) at the source.
    pub remote_id: String,
    /// When the harvest that last changed it ran (RFC 3339 UTC).
    pub harvested_at: String,
}

/// The id a federated entry has here.
pub fn federated_id(catalogue_id: &str, remote_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(remote_id.as_bytes());
    format!("{catalogue_id}:{}", hex::encode(&digest[..8]))
}

/// DCAT-AP's access rights (the EU vocabulary): how far a dataset is open.
/// CityTrust's open class is public; its shared classes are restricted; closed is non-public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessRight {
    Public,
    Restricted,
    NonPublic,
}

impl AccessRight {
    /// The access right an EU access-right concept (its IRI, or the IRI's last segment) names.
    pub fn from_iri(iri: &str) -> Option<AccessRight> {
        let code = iri.rsplit(['/', '#']).next().unwrap_or(iri);
        match code.to_ascii_uppercase().as_str() {
            "PUBLIC" => Some(AccessRight::Public),
            "RESTRICTED" => Some(AccessRight::Restricted),
            "NON_PUBLIC" | "NON-PUBLIC" | "NONPUBLIC" => Some(AccessRight::NonPublic),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AccessRight::Public => "public",
            AccessRight::Restricted => "restricted",
            AccessRight::NonPublic => "non_public",
        }
    }
    /// Its code in the EU access-right vocabulary.
    pub fn code(self) -> &'static str {
        match self {
            AccessRight::Public => "PUBLIC",
            AccessRight::Restricted => "RESTRICTED",
            AccessRight::NonPublic => "NON_PUBLIC",
        }
    }
    /// Its label in the EU access-right vocabulary.
    pub fn eu_label(self) -> &'static str {
        match self {
            AccessRight::Public => "public",
            AccessRight::Restricted => "restricted",
            AccessRight::NonPublic => "non-public",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            AccessRight::Public => "Public",
            AccessRight::Restricted => "Restricted",
            AccessRight::NonPublic => "Not public",
        }
    }
    /// What CityTrust's class of that name is in DCAT-AP.
    pub fn of(spectrum: Spectrum) -> AccessRight {
        match spectrum {
            Spectrum::Open => AccessRight::Public,
            Spectrum::SharedPublic | Spectrum::SharedGroup | Spectrum::SharedSpecific => {
                AccessRight::Restricted
            }
            Spectrum::Closed => AccessRight::NonPublic,
        }
    }
}

/// The states of a Dataspace Protocol contract negotiation (DSP 2025-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NegotiationState {
    Requested,
    Offered,
    Accepted,
    Agreed,
    Verified,
    Finalized,
    Terminated,
}

impl NegotiationState {
    pub fn as_str(self) -> &'static str {
        match self {
            NegotiationState::Requested => "REQUESTED",
            NegotiationState::Offered => "OFFERED",
            NegotiationState::Accepted => "ACCEPTED",
            NegotiationState::Agreed => "AGREED",
            NegotiationState::Verified => "VERIFIED",
            NegotiationState::Finalized => "FINALIZED",
            NegotiationState::Terminated => "TERMINATED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NegotiationState::Finalized | NegotiationState::Terminated
        )
    }
}

/// A message the provider owes the consumer, sent (and retried) by the
/// negotiations' worker; the state moves only once the consumer took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OwedMessage {
    /// `ContractAgreementMessage`: the trustees approved (→ AGREED).
    Agreement,
    /// `ContractNegotiationEventMessage` FINALIZED (→ FINALIZED).
    Finalized,
    /// `ContractNegotiationTerminationMessage`: refused or withdrawn (→ TERMINATED).
    Termination,
}

/// A contract negotiation this trust is the provider in: another node's
/// organisation asking, through the Dataspace Protocol, for one of the
/// trust's shared datasets. It is an access request like any other (made
/// by the account standing for the participant, for the organisation
/// standing for the consumer's), decided by the charter and the trustees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Negotiation {
    /// `urn:uuid:…`, chosen here.
    pub provider_pid: String,
    /// The consumer's id for it.
    pub consumer_pid: String,
    /// The remote catalogue whose pinned participant asked.
    pub catalogue_id: String,
    /// The participant (its public URL).
    pub participant_id: String,
    /// The consumer's organisation, as the participant names it.
    pub consumer_organization: String,
    /// The local organisation standing for it.
    pub organization_id: String,
    pub dataset_id: String,
    /// The offer asked for (one of the catalogue's).
    pub offer_id: String,
    pub level: crate::AccessLevel,
    pub purpose: String,
    /// Where messages to the consumer go (under the participant's URL).
    pub callback_address: String,
    /// This trust's public URL when the negotiation began (it signs and
    /// addresses what it sends with it).
    pub provider_base: String,
    pub state: NegotiationState,
    pub access_request_id: String,
    #[serde(default)]
    pub agreement_id: Option<String>,
    /// What is owed to the consumer next, if anything.
    #[serde(default)]
    pub owed: Option<OwedMessage>,
    /// Failed deliveries of what is owed, and the last one's error.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// When to try again (RFC 3339 UTC).
    #[serde(default)]
    pub next_attempt_at: Option<String>,
    /// Why it was terminated, and by whom ("consumer" or "provider").
    #[serde(default)]
    pub termination: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The states of a Dataspace Protocol transfer process (DSP 2025-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferState {
    Requested,
    Started,
    Completed,
    Suspended,
    Terminated,
}

impl TransferState {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Requested => "REQUESTED",
            TransferState::Started => "STARTED",
            TransferState::Completed => "COMPLETED",
            TransferState::Suspended => "SUSPENDED",
            TransferState::Terminated => "TERMINATED",
        }
    }
}

/// What the provider owes the consumer in a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OwedTransferMessage {
    /// `TransferStartMessage` with the data address (→ STARTED).
    Start,
    /// `TransferTerminationMessage`: the agreement ended (→ TERMINATED).
    Termination,
}

/// A transfer process this trust is the provider in: an `HttpData-PULL`
/// under an agreement a finalised negotiation made. The consumer reads
/// through the governed read path with the data token the start message
/// carried (kept here only as its SHA-256), as the organisation the
/// agreement was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferProcess {
    pub provider_pid: String,
    pub consumer_pid: String,
    pub negotiation_pid: String,
    pub catalogue_id: String,
    pub participant_id: String,
    /// The local organisation standing for the consumer's.
    pub organization_id: String,
    pub agreement_id: String,
    pub dataset_id: String,
    pub callback_address: String,
    pub provider_base: String,
    pub state: TransferState,
    #[serde(default)]
    pub owed: Option<OwedTransferMessage>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub next_attempt_at: Option<String>,
    /// SHA-256 (hex) of the data token, once the start message carried one.
    #[serde(default)]
    pub token_hash: Option<String>,
    #[serde(default)]
    pub termination: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a member of this trust asks another node for through the
/// Dataspace Protocol (body of `POST /api/v1/federated-entries/{id}/negotiations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRemote {
    /// The organisation asking (one of the asker's).
    pub organization_id: String,
    /// The access level (one the other node offers).
    pub level: String,
    /// A purpose of the other node's taxonomy its offer lists.
    pub purpose: String,
    /// First and last day of use (YYYY-MM-DD); the other node decides by default.
    #[serde(default)]
    pub starts_on: Option<String>,
    #[serde(default)]
    pub ends_on: Option<String>,
    /// The benefit the use brings, and to whom (the other node's trustees read it).
    pub benefit: String,
    /// Answers to the other node's sharing checklist, by question id.
    #[serde(default)]
    pub checklist: std::collections::BTreeMap<String, String>,
}

/// A transfer this trust is the consumer in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumerTransfer {
    pub consumer_pid: String,
    #[serde(default)]
    pub provider_pid: Option<String>,
    pub state: TransferState,
    /// The data address's endpoint, once started.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Its data token (kept in the store; never shown — the service
    /// clears it from every answer — and never logged; useless without
    /// this trust's signature naming the organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A negotiation this trust is the consumer in: a member's organisation
/// asking another node (a pinned participant) for one of its datasets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumerNegotiation {
    /// `urn:uuid:…`, chosen here.
    pub consumer_pid: String,
    /// The provider's id for it, once it answered.
    #[serde(default)]
    pub provider_pid: Option<String>,
    pub catalogue_id: String,
    pub participant_id: String,
    /// The federated entry asked about, and the dataset's id at the provider.
    pub federated_id: String,
    pub remote_dataset_id: String,
    pub title: String,
    pub offer_id: String,
    pub level: String,
    pub purpose: String,
    /// Who asked, and for which organisation.
    pub requester: String,
    pub organization_id: String,
    pub state: NegotiationState,
    /// The agreement the provider sent (DSP `Agreement`).
    #[serde(default)]
    pub agreement: Option<serde_json::Value>,
    #[serde(default)]
    pub transfer: Option<ConsumerTransfer>,
    /// This trust's public URL when it asked (its callbacks are under it).
    pub consumer_base: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub next_attempt_at: Option<String>,
    #[serde(default)]
    pub termination: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str) -> NewRemoteCatalogue {
        NewRemoteCatalogue {
            id: "bcn".into(),
            name: "Barcelona".into(),
            url: url.into(),
            kind: RemoteKind::Dcat,
            interval_hours: None,
            participant: None,
        }
    }

    #[test]
    fn only_plain_http_urls_are_registered() {
        assert!(
            new("https://opendata.example/catalog.ttl")
                .validate()
                .is_ok()
        );
        for bad in [
            "file:///etc/passwd",
            "ftp://x.example/a",
            "https://user:pw@x.example/",
            "not a url",
        ] {
            let e = new(bad).validate().unwrap_err();
            assert_eq!(e.0[0].field, "url", "{bad}");
        }
    }

    #[test]
    fn ids_never_collide_with_local_slugs() {
        let id = federated_id("bcn", "https://x.example/datasets/a#dataset");
        assert!(id.starts_with("bcn:") && id.len() == 4 + 16);
        assert_ne!(
            id,
            federated_id("bcn", "https://x.example/datasets/b#dataset")
        );
    }

    #[test]
    fn access_rights_map_to_classes() {
        let eu = "http://publications.europa.eu/resource/authority/access-right/";
        for s in Spectrum::ALL {
            let right = AccessRight::of(s);
            assert_eq!(
                AccessRight::from_iri(&format!("{eu}{}", right.code())),
                Some(right)
            );
        }
        assert_eq!(AccessRight::from_iri("urn:x:other"), None);
    }
}
