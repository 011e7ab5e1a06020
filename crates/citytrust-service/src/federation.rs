//! Federation (R-PLT-4): remote catalogues, their harvests, and searching
//! the entries harvested from them.
//!
//! Only administrators register, remove and harvest catalogues; harvests
//! also run on their schedule ([`Service::harvest_due`]). A harvest holds
//! its catalogue's lease, reads the feed as it arrives ([`crate::harvest`]),
//! stages the records a batch at a time, and only once the feed has been
//! read to its end replaces the catalogue's entries — so a feed that breaks
//! off, answers an error or is too large changes nothing. Each harvest,
//! failed or not, is one log entry with its counts. Federated entries are
//! never written by anything else; the public reads and searches them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use citytrust_model::federation::{
    DEFAULT_HARVEST_HOURS, FederatedEntry, FederatedSource, HarvestOutcome, HarvestReport,
    MAX_REJECTED_LISTED, NewRemoteCatalogue, RejectedRecord, RemoteCatalogue, RemoteKind,
    federated_id,
};
use citytrust_model::{Actor, ValidationErrors, authz};
use citytrust_store::StagedEntry;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{random_hex, sha256_hex};
use crate::harvest::{
    ChannelReader, DcatFeed, FeedSyntax, MAX_REMOTE_ID, Record, check_entry, ckan_page,
    parse_blocking,
};
use crate::ledger::new_entry;
use crate::search::FacetCount;
use crate::{Result, Service, ServiceError, rfc3339};

/// The most a feed may send (all of a DCAT document, or one CKAN page).
pub const MAX_FEED_BYTES: u64 = 1 << 30;
const MAX_CKAN_PAGE_BYTES: usize = 64 << 20;
const CKAN_ROWS: u64 = 1000;
/// Records staged per transaction.
const BATCH: usize = 500;
/// How long a harvest's lease lasts; a node that dies mid-harvest frees the
/// catalogue for the next one after this.
const LEASE: time::Duration = time::Duration::minutes(30);
/// A failed harvest is tried again after at most this long.
const RETRY: time::Duration = time::Duration::hours(1);
/// A harvest that has not finished by then fails (well inside its lease).
const DEADLINE: Duration = Duration::from_secs(20 * 60);
/// The most records one harvest takes: a feed that lists more fails.
pub const MAX_RECORDS: u64 = 200_000;
/// The longest error text kept in a report and the log.
const MAX_ERROR_CHARS: usize = 300;

/// A URL as the public log shows it: scheme, host, port and path, never a
/// query or fragment (which may carry a token).
fn loggable(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// An error as reports and the log keep it: its first line, shortened, with
/// any URL in it cut to what [`loggable`] keeps.
fn bounded(error: &str) -> String {
    let line = error.lines().next().unwrap_or("");
    let words: Vec<String> = line
        .split(' ')
        .map(|w| {
            if w.starts_with("http://") || w.starts_with("https://") {
                loggable(w.trim_end_matches([',', ':', ';', ')']))
            } else {
                w.to_string()
            }
        })
        .collect();
    let text = words.join(" ");
    if text.chars().count() > MAX_ERROR_CHARS {
        let mut t: String = text.chars().take(MAX_ERROR_CHARS).collect();
        t.push('…');
        t
    } else {
        text
    }
}

/// Where a harvest has got to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HarvestProgress {
    pub records: u64,
    pub bytes: u64,
    /// The number of records, when the source says (CKAN does).
    pub total: Option<u64>,
}

/// A search of federated entries.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FederatedQuery {
    /// Words, all of which must appear (title, keywords, description, publisher or source).
    #[serde(default)]
    pub q: Option<String>,
    /// Only entries from this remote catalogue.
    #[serde(default)]
    pub source: Option<String>,
    /// 1-based.
    #[serde(default)]
    pub page: Option<usize>,
    /// 1 to 100 (default 20).
    #[serde(default)]
    pub per_page: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FederatedPage {
    pub items: Vec<FederatedEntry>,
    pub total: usize,
    /// Matches per source, under the words but whatever `source` is.
    pub sources: Vec<FacetCount>,
}

struct Indexed {
    entry: Arc<FederatedEntry>,
    title: String,
    text: String,
}

/// The federated entries in memory, for search; reloaded with the search index.
#[derive(Default)]
pub(crate) struct FederatedIndex {
    entries: RwLock<Arc<Vec<Indexed>>>,
}

impl FederatedIndex {
    pub(crate) fn replace(&self, entries: Vec<FederatedEntry>) {
        let mut indexed: Vec<Indexed> = entries
            .into_iter()
            .map(|e| {
                let title = e.title.to_lowercase();
                let text = format!(
                    "{} {} {} {} {}",
                    title,
                    e.keywords.join(" ").to_lowercase(),
                    e.description.to_lowercase(),
                    e.publisher.as_deref().unwrap_or("").to_lowercase(),
                    e.source.catalogue_name.to_lowercase(),
                );
                Indexed {
                    entry: Arc::new(e),
                    title,
                    text,
                }
            })
            .collect();
        // Title order once here, so a search only moves the better matches up.
        indexed.sort_by(|a, b| {
            a.title
                .cmp(&b.title)
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        if let Ok(mut guard) = self.entries.write() {
            *guard = Arc::new(indexed);
        }
    }

    fn snapshot(&self) -> Arc<Vec<Indexed>> {
        self.entries.read().map(|g| g.clone()).unwrap_or_default()
    }
}

fn harvest_error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What reading a feed gave, before the entries are replaced.
#[derive(Default)]
struct Tally {
    records: u64,
    rejected: u64,
    rejected_records: Vec<RejectedRecord>,
    bytes: u64,
    feed_sha256: String,
}

impl Service {
    /// Register a catalogue to harvest (administrators) and harvest it
    /// once, so the answer says at once whether its feed can be read (the
    /// report is its `last_harvest`). It is harvested again every
    /// `interval_hours`.
    pub async fn register_remote_catalogue(
        &self,
        actor: &Actor,
        new: NewRemoteCatalogue,
    ) -> Result<RemoteCatalogue> {
        authz::may_administer(actor)?;
        new.validate()?;
        let now = self.now();
        let interval_hours = new.interval_hours.unwrap_or(DEFAULT_HARVEST_HOURS);
        let catalogue = RemoteCatalogue {
            id: new.id.clone(),
            name: new.name.trim().to_string(),
            url: new.url.clone(),
            kind: new.kind,
            interval_hours,
            created_at: rfc3339(now),
            next_harvest_at: rfc3339(now + time::Duration::hours(i64::from(interval_hours))),
            entries: 0,
            last_harvest: None,
            last_success_at: None,
            participant: new.participant.clone(),
        };
        let (body, at) = self.log_entry(
            "catalogue.remote_registered",
            serde_json::json!({
                "catalogue": catalogue.id,
                "name": catalogue.name,
                "url": loggable(&catalogue.url),
                "kind": catalogue.kind.as_str(),
                "participant": catalogue.participant,
            }),
        )?;
        self.store
            .insert_remote_catalogue(
                &catalogue,
                &new_entry("catalogue.remote_registered", &body, &at),
            )
            .await?;
        match self.run_harvest(&catalogue.id, &|_| {}).await {
            Ok(_) | Err(ServiceError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.store
            .get_remote_catalogue(&catalogue.id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("remote catalogue '{}'", catalogue.id)))
    }

    /// The registered catalogues with their last harvests (administrators).
    pub async fn remote_catalogues(&self, actor: &Actor) -> Result<Vec<RemoteCatalogue>> {
        authz::may_administer(actor)?;
        Ok(self.store.list_remote_catalogues().await?)
    }

    pub async fn remote_catalogue(&self, actor: &Actor, id: &str) -> Result<RemoteCatalogue> {
        authz::may_administer(actor)?;
        self.store
            .get_remote_catalogue(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("remote catalogue '{id}'")))
    }

    /// Remove a catalogue and every entry harvested from it (administrators).
    pub async fn remove_remote_catalogue(&self, actor: &Actor, id: &str) -> Result<()> {
        authz::may_administer(actor)?;
        let (body, at) = self.log_entry(
            "catalogue.remote_removed",
            serde_json::json!({ "catalogue": id }),
        )?;
        if !self
            .store
            .delete_remote_catalogue(id, &new_entry("catalogue.remote_removed", &body, &at))
            .await?
        {
            return Err(ServiceError::NotFound(format!("remote catalogue '{id}'")));
        }
        self.refresh_search_index().await?;
        Ok(())
    }

    /// Harvest a catalogue now (administrators), reporting progress.
    pub async fn harvest(
        &self,
        actor: &Actor,
        id: &str,
        progress: &(dyn Fn(HarvestProgress) + Send + Sync),
    ) -> Result<HarvestReport> {
        authz::may_administer(actor)?;
        self.run_harvest(id, progress).await
    }

    /// Harvest a catalogue now for the command line, which runs as a node
    /// of the trust on its storage (whoever holds that runs the trust).
    pub async fn harvest_now(
        &self,
        id: &str,
        progress: &(dyn Fn(HarvestProgress) + Send + Sync),
    ) -> Result<HarvestReport> {
        self.run_harvest(id, progress).await
    }

    /// The ids of the registered catalogues (for the command line).
    pub async fn remote_catalogue_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list_remote_catalogues()
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Harvest every catalogue whose turn has come (the scheduler); a
    /// catalogue another node is harvesting is left to it.
    pub async fn harvest_due(&self) -> Result<Vec<HarvestReport>> {
        let now = rfc3339(self.now());
        let mut reports = Vec::new();
        for id in self.store.due_remote_catalogues(&now).await? {
            match self.run_harvest(&id, &|_| {}).await {
                Ok(r) => reports.push(r),
                Err(ServiceError::Conflict(_)) => {}
                Err(e) => tracing::warn!(catalogue = %id, error = %e, "scheduled harvest failed"),
            }
        }
        Ok(reports)
    }

    async fn run_harvest(
        &self,
        id: &str,
        progress: &(dyn Fn(HarvestProgress) + Send + Sync),
    ) -> Result<HarvestReport> {
        let catalogue = self
            .store
            .get_remote_catalogue(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("remote catalogue '{id}'")))?;
        let started = self.now();
        let started_at = rfc3339(started);
        let harvest_id = random_hex::<16>()?;
        if !self
            .store
            .claim_harvest(id, &harvest_id, &started_at, &rfc3339(started + LEASE))
            .await?
        {
            return Err(ServiceError::Conflict(format!(
                "a harvest of remote catalogue '{id}' is running; its report will be on the catalogue"
            )));
        }
        match self
            .harvest_holding_lease(&catalogue, &harvest_id, started, progress)
            .await
        {
            Ok(report) => {
                self.refresh_search_index().await?;
                Ok(report)
            }
            Err(e) => {
                // The database failed under it: give the lease and the staging back.
                if let Err(release) = self.store.abandon_harvest(id, &harvest_id).await {
                    tracing::warn!(catalogue = %id, error = %release, "could not release a failed harvest's lease");
                }
                Err(e)
            }
        }
    }

    /// The harvest proper, once its lease is held: read, then finish or fail.
    async fn harvest_holding_lease(
        &self,
        catalogue: &RemoteCatalogue,
        harvest_id: &str,
        started: time::OffsetDateTime,
        progress: &(dyn Fn(HarvestProgress) + Send + Sync),
    ) -> Result<HarvestReport> {
        let id = catalogue.id.as_str();
        let started_at = rfc3339(started);
        let read = match tokio::time::timeout(
            DEADLINE,
            self.read_feed(catalogue, harvest_id, &started_at, progress),
        )
        .await
        {
            Ok(read) => read,
            Err(_) => Err((
                format!(
                    "the harvest took longer than {} minutes",
                    DEADLINE.as_secs() / 60
                ),
                Tally::default(),
            )),
        };
        // A feed that suddenly lists nothing is more likely broken than emptied:
        // nothing is removed (removing the catalogue removes its entries).
        let read = match read {
            Ok(tally) if tally.records == 0 && catalogue.entries > 0 => Err((
                format!(
                    "the feed lists no datasets, where the last harvest brought {}; nothing was removed",
                    catalogue.entries
                ),
                tally,
            )),
            other => other,
        };
        let read = read.map_err(|(e, t)| (bounded(&e), t));
        let finished_at = rfc3339(self.now());
        let interval = time::Duration::hours(i64::from(catalogue.interval_hours));
        let report = match read {
            Ok(tally) => {
                let next = rfc3339(started + interval);
                let mut report = HarvestReport {
                    started_at: started_at.clone(),
                    finished_at: finished_at.clone(),
                    outcome: HarvestOutcome::Succeeded,
                    error: None,
                    records: tally.records,
                    added: 0,
                    updated: 0,
                    unchanged: 0,
                    removed: 0,
                    rejected: tally.rejected,
                    rejected_records: tally.rejected_records,
                    bytes: tally.bytes,
                    log_index: None,
                };
                let feed_sha256 = tally.feed_sha256;
                let (_, idx) = self
                    .store
                    .finish_harvest(id, harvest_id, &next, |counts| {
                        report.added = counts.added;
                        report.updated = counts.updated;
                        report.unchanged = counts.unchanged;
                        report.removed = counts.removed;
                        let (body, at) = self
                            .log_entry(
                                "catalogue.harvested",
                                serde_json::json!({
                                    "catalogue": catalogue.id,
                                    "url": loggable(&catalogue.url),
                                    "records": report.records,
                                    "added": report.added,
                                    "updated": report.updated,
                                    "unchanged": report.unchanged,
                                    "removed": report.removed,
                                    "rejected": report.rejected,
                                    "bytes": report.bytes,
                                    "feed_sha256": feed_sha256,
                                }),
                            )
                            .map_err(|e| citytrust_store::StoreError::Corrupt(e.to_string()))?;
                        let mut c = catalogue.clone();
                        c.last_harvest = Some(report.clone());
                        c.last_success_at = Some(finished_at.clone());
                        Ok(("catalogue.harvested".to_string(), body, at, c))
                    })
                    .await?;
                report.log_index = u64::try_from(idx).ok();
                report
            }
            Err((error, tally)) => {
                let next = rfc3339(started + interval.min(RETRY));
                let mut report = HarvestReport {
                    started_at: started_at.clone(),
                    finished_at,
                    outcome: HarvestOutcome::Failed,
                    error: Some(error.clone()),
                    records: tally.records,
                    added: 0,
                    updated: 0,
                    unchanged: 0,
                    removed: 0,
                    rejected: tally.rejected,
                    rejected_records: tally.rejected_records,
                    bytes: tally.bytes,
                    log_index: None,
                };
                let (body, at) = self.log_entry(
                    "catalogue.harvest_failed",
                    serde_json::json!({
                        "catalogue": catalogue.id,
                        "url": loggable(&catalogue.url),
                        "error": error,
                        "records": report.records,
                        "bytes": report.bytes,
                    }),
                )?;
                let mut c = catalogue.clone();
                c.last_harvest = Some(report.clone());
                let idx = self
                    .store
                    .fail_harvest(
                        id,
                        harvest_id,
                        &next,
                        &c,
                        &new_entry("catalogue.harvest_failed", &body, &at),
                    )
                    .await?;
                report.log_index = u64::try_from(idx).ok();
                tracing::warn!(catalogue = %id, error = %error, "harvest failed; entries kept as they were");
                report
            }
        };
        Ok(report)
    }

    /// Read the whole feed, staging its records. On failure, what was read so far.
    async fn read_feed(
        &self,
        catalogue: &RemoteCatalogue,
        harvest_id: &str,
        started_at: &str,
        progress: &(dyn Fn(HarvestProgress) + Send + Sync),
    ) -> std::result::Result<Tally, (String, Tally)> {
        let client = match reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(same_host_redirects())
            .user_agent(concat!(
                "CityTrust/",
                env!("CARGO_PKG_VERSION"),
                " (harvester)"
            ))
            .build()
        {
            Ok(c) => c,
            Err(e) => return Err((harvest_error(e), Tally::default())),
        };
        let mut stager = Stager {
            service: self,
            catalogue,
            harvest_id,
            started_at,
            batch: Vec::with_capacity(BATCH),
            tally: Tally::default(),
            total: None,
        };
        let outcome = match catalogue.kind {
            RemoteKind::Dcat => stager.read_dcat(&client, progress).await,
            RemoteKind::Ckan => stager.read_ckan(&client, progress).await,
        };
        let outcome = match outcome {
            Ok(()) => stager.flush().await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => Ok(stager.tally),
            Err(e) => Err((e, stager.tally)),
        }
    }

    /// Search the federated entries. Public.
    pub fn search_federated(&self, q: &FederatedQuery) -> Result<FederatedPage> {
        let per_page = q.per_page.unwrap_or(20);
        if !(1..=100).contains(&per_page) {
            return Err(ValidationErrors::single("per_page", "must be between 1 and 100").into());
        }
        let page = q.page.unwrap_or(1).max(1);
        let text = q.q.as_deref().unwrap_or("").trim().to_lowercase();
        if text.chars().count() > 500 {
            return Err(ValidationErrors::single("q", "at most 500 characters").into());
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        let all = self.federated.snapshot();
        let mut sources: std::collections::BTreeMap<&str, (&str, usize)> = Default::default();
        let mut hits: Vec<(usize, &Indexed)> = Vec::new();
        for e in all.iter() {
            if !words.iter().all(|w| e.text.contains(w)) {
                continue;
            }
            let s = &e.entry.source;
            sources
                .entry(s.catalogue_id.as_str())
                .or_insert((s.catalogue_name.as_str(), 0))
                .1 += 1;
            if q.source
                .as_deref()
                .is_some_and(|want| want != s.catalogue_id)
            {
                continue;
            }
            let in_title = words.iter().filter(|w| e.title.contains(**w)).count();
            hits.push((in_title, e));
        }
        if !words.is_empty() {
            // Stable: within as many words in the title, title order stays.
            hits.sort_by(|(a, _), (b, _)| b.cmp(a));
        }
        let total = hits.len();
        let items = hits
            .into_iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .map(|(_, e)| (*e.entry).clone())
            .collect();
        let mut sources: Vec<FacetCount> = sources
            .into_iter()
            .map(|(value, (label, count))| FacetCount {
                value: value.to_string(),
                label: label.to_string(),
                count,
            })
            .collect();
        sources.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
        Ok(FederatedPage {
            items,
            total,
            sources,
        })
    }

    /// One federated entry. Public.
    pub async fn federated_entry(&self, id: &str) -> Result<FederatedEntry> {
        self.store
            .get_federated_entry(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("federated entry '{id}'")))
    }

    /// How many federated entries there are.
    pub fn federated_size(&self) -> usize {
        self.federated.snapshot().len()
    }

    pub(crate) async fn reload_federated(&self) -> Result<()> {
        let entries = self.store.list_federated_entries().await?;
        self.federated.replace(entries);
        Ok(())
    }
}

/// Follow at most five redirects, and only on the registered URL's host
/// (its port, or http → https): a feed cannot send the harvester to another
/// host, an internal one included.
fn same_host_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let next = attempt.url();
        let same = first.as_ref().is_some_and(|f| {
            f.host_str() == next.host_str()
                && (f.port_or_known_default() == next.port_or_known_default()
                    || (f.scheme() == "http" && next.scheme() == "https"))
        });
        if attempt.previous().len() > 5 {
            attempt.error("more than five redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Stages a harvest's records a batch at a time.
struct Stager<'a> {
    service: &'a Service,
    catalogue: &'a RemoteCatalogue,
    harvest_id: &'a str,
    started_at: &'a str,
    batch: Vec<StagedEntry>,
    tally: Tally,
    total: Option<u64>,
}

impl Stager<'_> {
    async fn take(&mut self, records: Vec<Record>) -> std::result::Result<(), String> {
        for r in records {
            self.tally.records += 1;
            if self.tally.records > MAX_RECORDS {
                return Err(format!("the feed lists more than {MAX_RECORDS} datasets"));
            }
            let r = match r {
                Record::Entry(e) => match check_entry(&e) {
                    Ok(()) => Record::Entry(e),
                    Err(reason) => Record::Rejected {
                        remote_id: Some(e.source.remote_id.clone()),
                        record: e.source.remote_id.chars().take(300).collect(),
                        reason,
                    },
                },
                other => other,
            };
            match r {
                Record::Entry(mut e) => {
                    let remote_id = e.source.remote_id.clone();
                    e.id = federated_id(&self.catalogue.id, &remote_id);
                    e.source = FederatedSource {
                        catalogue_id: self.catalogue.id.clone(),
                        catalogue_name: self.catalogue.name.clone(),
                        remote_id: remote_id.clone(),
                        harvested_at: String::new(),
                    };
                    // The digest leaves out when it was harvested: an unchanged record stays unchanged.
                    let digest = sha256_hex(&serde_json::to_string(&e).map_err(harvest_error)?);
                    e.source.harvested_at = self.started_at.to_string();
                    let body = serde_json::to_string(&e).map_err(harvest_error)?;
                    self.batch.push(StagedEntry {
                        id: e.id.clone(),
                        remote_id,
                        digest,
                        body,
                        kept: false,
                    });
                }
                Record::Withdrawn { .. } => {}
                Record::Rejected {
                    remote_id,
                    record,
                    reason,
                } => {
                    self.tally.rejected += 1;
                    let mut kept_previous = false;
                    if let Some(remote_id) = remote_id
                        && remote_id.len() <= MAX_REMOTE_ID
                        && self
                            .service
                            .store
                            .federated_entry_exists(&self.catalogue.id, &remote_id)
                            .await
                            .map_err(harvest_error)?
                    {
                        kept_previous = true;
                        self.batch.push(StagedEntry {
                            id: federated_id(&self.catalogue.id, &remote_id),
                            remote_id,
                            digest: String::new(),
                            body: String::new(),
                            kept: true,
                        });
                    }
                    if self.tally.rejected_records.len() < MAX_REJECTED_LISTED {
                        self.tally.rejected_records.push(RejectedRecord {
                            record,
                            reason,
                            kept_previous,
                        });
                    }
                }
            }
            if self.batch.len() >= BATCH {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::result::Result<(), String> {
        let batch = std::mem::take(&mut self.batch);
        self.service
            .store
            .stage_federated(self.harvest_id, &self.catalogue.id, &batch)
            .await
            .map_err(|e| format!("staging the harvest failed: {e}"))
    }

    fn report(&self, progress: &(dyn Fn(HarvestProgress) + Send + Sync)) {
        progress(HarvestProgress {
            records: self.tally.records,
            bytes: self.tally.bytes,
            total: self.total,
        });
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        url: &str,
        accept: &str,
    ) -> std::result::Result<reqwest::Response, String> {
        let response = client
            .get(url)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| format!("{url} could not be fetched: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{url} answered HTTP {status}"));
        }
        Ok(response)
    }

    async fn read_dcat(
        &mut self,
        client: &reqwest::Client,
        progress: &(dyn Fn(HarvestProgress) + Send + Sync),
    ) -> std::result::Result<(), String> {
        use sha2::Digest;
        let url = self.catalogue.url.clone();
        let mut response = self
            .get(
                client,
                &url,
                "text/turtle, application/n-triples;q=0.9, application/ld+json;q=0.8, \
                 application/rdf+xml;q=0.7, */*;q=0.1",
            )
            .await?;
        let syntax = FeedSyntax::of(
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            &url,
        );
        let mut hasher = sha2::Sha256::new();
        // Turtle is parsed here as it arrives; JSON-LD and RDF/XML parsers
        // read, so they run on a blocking thread fed the chunks.
        let mut turtle = (syntax == FeedSyntax::Turtle).then(|| DcatFeed::new(&url));
        let (chunks, records) = if turtle.is_none() {
            let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
            let (record_tx, record_rx) = tokio::sync::mpsc::unbounded_channel();
            let base = url.clone();
            let parser = tokio::task::spawn_blocking(move || {
                parse_blocking(syntax, &base, ChannelReader::new(chunk_rx), &record_tx)
            });
            (Some(chunk_tx), Some((record_rx, parser)))
        } else {
            (None, None)
        };
        let (mut records, parser) = match records {
            Some((rx, p)) => (Some(rx), Some(p)),
            None => (None, None),
        };
        let mut chunks = chunks;
        let mut tail: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| format!("the feed broke off after {} bytes: {e}", self.tally.bytes))?;
            let Some(chunk) = chunk else { break };
            self.tally.bytes += chunk.len() as u64;
            if self.tally.bytes > MAX_FEED_BYTES {
                return Err(format!("the feed is larger than {MAX_FEED_BYTES} bytes"));
            }
            hasher.update(&chunk);
            if syntax == FeedSyntax::RdfXml {
                // Entity declarations expand without bound in the XML parser: refused.
                let mut seen = std::mem::take(&mut tail);
                seen.extend_from_slice(&chunk);
                if contains(&seen, b"<!DOCTYPE") || contains(&seen, b"<!ENTITY") {
                    return Err(
                        "the RDF/XML feed declares a DOCTYPE or entities, which are refused \
                                (entity expansion can exhaust memory)"
                            .into(),
                    );
                }
                tail = seen[seen.len().saturating_sub(9)..].to_vec();
            }
            if let Some(feed) = turtle.as_mut() {
                feed.push(&chunk, &mut out)?;
            }
            if let Some(tx) = &chunks
                && tx.send(chunk.to_vec()).await.is_err()
            {
                // The parser stopped early: its error is waiting below.
                chunks = None;
            }
            if let Some(rx) = records.as_mut() {
                while let Ok(batch) = rx.try_recv() {
                    out.extend(batch?);
                }
            }
            if !out.is_empty() {
                self.take(std::mem::take(&mut out)).await?;
                self.report(progress);
            }
        }
        if let Some(feed) = turtle.as_mut() {
            feed.finish(&mut out)?;
        }
        drop(chunks);
        if let Some(mut rx) = records {
            while let Some(batch) = rx.recv().await {
                out.extend(batch?);
                if out.len() >= BATCH {
                    self.take(std::mem::take(&mut out)).await?;
                }
            }
        }
        if let Some(p) = parser {
            p.await
                .map_err(|e| format!("the feed's parser failed: {e}"))?;
        }
        self.take(out).await?;
        self.tally.feed_sha256 = hex::encode(hasher.finalize());
        self.report(progress);
        Ok(())
    }

    async fn read_ckan(
        &mut self,
        client: &reqwest::Client,
        progress: &(dyn Fn(HarvestProgress) + Send + Sync),
    ) -> std::result::Result<(), String> {
        use sha2::Digest;
        let site = self.catalogue.url.trim_end_matches('/').to_string();
        let mut hasher = sha2::Sha256::new();
        let mut start: u64 = 0;
        loop {
            let url = format!(
                "{site}/api/3/action/package_search?rows={CKAN_ROWS}&start={start}&sort=name%20asc"
            );
            let mut response = self.get(client, &url, "application/json").await?;
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| format!("{url} broke off: {e}"))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_CKAN_PAGE_BYTES {
                    return Err(format!(
                        "{url} answered more than {MAX_CKAN_PAGE_BYTES} bytes"
                    ));
                }
            }
            self.tally.bytes += body.len() as u64;
            if self.tally.bytes > MAX_FEED_BYTES {
                return Err(format!("the site sent more than {MAX_FEED_BYTES} bytes"));
            }
            hasher.update(&body);
            let (count, records) = ckan_page(&site, &body).map_err(|e| format!("{url}: {e}"))?;
            self.total = Some(count);
            let n = records.len() as u64;
            self.take(records).await?;
            self.report(progress);
            start += n;
            if n == 0 || start >= count {
                break;
            }
            if start > MAX_RECORDS {
                return Err(format!("the site lists more than {MAX_RECORDS} datasets"));
            }
        }
        self.tally.feed_sha256 = hex::encode(hasher.finalize());
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
