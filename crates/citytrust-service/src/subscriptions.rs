//! NGSI-LD subscriptions (issue 26), governed like every read.
//!
//! - **Made** by a signed-in reader, for a purpose: each stream that may hold
//!   what it asks for is decided now (`authorize_read`); it is kept with the
//!   streams it was allowed and the agreement each was read under (`grants`),
//!   and refused outright when none is allowed.
//! - **Owed**: a write that changes an entity a subscription watches puts a
//!   row in the notification outbox in the write's own transaction, so a
//!   notification is never lost between the write and its delivery.
//! - **Delivered** by the worker (`deliver_notifications`): each stream read
//!   is decided again now (once per pass and subscriber, stream and purpose:
//!   a pass is one instant; `Pass`; an allow is kept for the passes after
//!   while the store's governance revision and the day stand still:
//!   `Decisions`) — a retired or ended agreement, or another refusal,
//!   expires the subscription (status `expired`, logged `stream.subscription_expired`);
//!   a personal stream's subject scope is decided now (a withdrawn resident's
//!   entity is left out of the very next notification); the agreement's
//!   columns limit the attributes, and the subscription's `q` and `geoQ` are
//!   tested again on what the subscriber may see. The notification is
//!   committed to in a `stream.notified` entry (one per notification, however
//!   many entities it carries) before it is sent. A failed delivery stays
//!   owed and is tried again with back-off (never dropped); `throttling` holds
//!   notifications back until it has passed. A pass serves up to 32
//!   subscriptions at once, each one's notifications in order, and writes
//!   what it settles once for all of them: the log entries and the
//!   counters of every notification it sends in one transaction (before
//!   sending), the outbox rows delivered in another (after).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use citytrust_model::Actor;
use citytrust_model::catalogue::Dataset;
use citytrust_model::ngsi::subscription::Subscription;
use citytrust_model::ngsi::{Context, Entity, ErrorType, NgsiError, Rendering};
use citytrust_store::{NewLogEntry, SubscriptionRow};
use serde_json::{Value, json};

use crate::accounts::random_hex;
use crate::content::{commitment, new_nonce, reader_label};
use crate::streams::StreamCaller;
use crate::{Result, Service, ServiceError, rfc3339};

/// What a subscription was allowed when it was made.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Grants {
    purpose: Option<String>,
    /// Stream → the agreement it was read under (`None`: open, or its owner's).
    streams: BTreeMap<String, Option<String>>,
}

/// Active subscriptions as `owed_by` tests changes against them: decoded,
/// their context resolved, each at the revision of its terms it was read at
/// (a row whose terms changed is read again — not one whose delivery
/// counters alone did; one no longer active is dropped). Kept per node; the
/// store's revisions decide: while its `subscriptions_revision` counter
/// stands still, a write reads that one number and uses the set it has.
#[derive(Default)]
pub(crate) struct SubscriptionCache {
    rows: std::sync::Mutex<HashMap<String, (i64, Arc<Compiled>)>>,
    /// The set last built, with the store's `subscriptions_revision` it
    /// was built at (read before the rows were).
    set: std::sync::Mutex<Option<(i64, Arc<ActiveSet>)>>,
    /// Resolved contexts by their JSON: subscriptions made with the same
    /// `@context` share one (each is a table of hundreds of terms; 1,000
    /// copies held ~40 MB). Kept while some compiled subscription uses it.
    contexts: std::sync::Mutex<HashMap<String, Arc<Context>>>,
    /// Delivery passes' allow decisions, kept across passes (see `Decisions`).
    decisions: std::sync::Mutex<Decisions>,
}

/// The allow decisions of delivery passes — each subscriber's account and
/// each (subscriber, stream, purpose)'s read grant — kept for the passes
/// after, as of the store's governance revision and the day they were made
/// under. The revision moves, in the same transaction, with every change
/// to a table a decision reads (triggers; the store does not open if a
/// table neither moves it nor is listed as read by no decision), so a pass
/// that read it *before* deciding anything and found it where these were
/// made can use them: nothing they were decided on has changed since, and
/// agreements are in force by the day. A refusal is never kept (it is
/// decided again each time, with the reason found then), and a pass
/// reading another revision or day starts the set afresh.
#[derive(Default)]
struct Decisions {
    /// (governance revision, day) they were made under.
    as_of: (i64, i64),
    actors: HashMap<String, Actor>,
    reads: HashMap<ReadKey, (Dataset, crate::read::ReadGrant)>,
}

impl SubscriptionCache {
    fn decisions(&self) -> std::sync::MutexGuard<'_, Decisions> {
        self.decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Past this many decisions kept, the set starts afresh (each read keeps
/// its stream's catalogue entry, a few kilobytes: a few MB at most).
const DECISIONS_KEPT: usize = 2_048;

impl Decisions {
    /// Those made under `as_of`, to add to: afresh if it is newer than
    /// theirs; `None` if it is older (a slow pass's decisions are not kept).
    fn under(&mut self, as_of: (i64, i64)) -> Option<&mut Decisions> {
        if as_of > self.as_of || self.actors.len() + self.reads.len() >= DECISIONS_KEPT {
            *self = Decisions {
                as_of: as_of.max(self.as_of),
                ..Default::default()
            };
        }
        (self.as_of == as_of).then_some(self)
    }
}

/// The active subscriptions, indexed by the entities they may be told of:
/// a change is tested only against those that could select it.
#[derive(Default)]
pub(crate) struct ActiveSet {
    subs: Vec<Arc<Compiled>>,
    /// Entity id → the subscriptions (positions in `subs`) that select
    /// entities by id alone and name it.
    by_id: HashMap<String, Vec<usize>>,
    /// Those that select by type or id pattern (or any entity): tested
    /// against every change.
    general: Vec<usize>,
}

impl ActiveSet {
    fn new(subs: Vec<Arc<Compiled>>) -> ActiveSet {
        let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
        let mut general = Vec::new();
        for (i, c) in subs.iter().enumerate() {
            let sel = &c.s.entities;
            if !sel.is_empty() && sel.iter().all(|x| x.id.is_some()) {
                for id in sel.iter().filter_map(|x| x.id.as_ref()) {
                    let list = by_id.entry(id.clone()).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            } else {
                general.push(i);
            }
        }
        ActiveSet {
            subs,
            by_id,
            general,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Whether any wants the values before a change (`showChanges`).
    pub(crate) fn show_changes(&self) -> bool {
        self.subs.iter().any(|c| c.s.show_changes)
    }

    /// The subscriptions that may select the entity `id`, in order; each
    /// is still tested in full (`Subscription::matches`).
    fn candidates(&self, id: &str) -> Vec<usize> {
        let mut out = self.general.clone();
        if let Some(named) = self.by_id.get(id) {
            out.extend(named);
            out.sort_unstable();
            out.dedup();
        }
        out
    }
}

/// One subscription, ready to be matched.
pub(crate) struct Compiled {
    s: Subscription,
    g: Grants,
    /// Its subscriber (an account, or `credential:ID`).
    owner: String,
    /// `None`: its context no longer resolves (it is then told nothing).
    ctx: Option<Arc<Context>>,
}

/// How an entity changed, for `notificationTrigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Created,
    Updated,
    Deleted,
}

/// The triggers a subscription that names none has (5.2.12).
const DEFAULT_TRIGGERS: &[&str] = &[
    "entityCreated",
    "entityUpdated",
    "attributeCreated",
    "attributeUpdated",
];

/// A deleted entity, as an owed notification remembers it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Gone {
    entity: Entity,
    dataset: String,
    at: String,
    /// Told for `entityDeleted` (else for `attributeDeleted`: its attributes).
    entity_deleted: bool,
}

/// What an owed notification remembers of its change (the outbox's
/// `changed` column): the attributes written, the instances deleted (as
/// NGSI-LD Null), their values before (`showChanges`), and a deleted entity.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Owed {
    #[serde(default)]
    changed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deleted: Vec<(String, citytrust_model::ngsi::Instance)>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    previous: BTreeMap<String, Vec<citytrust_model::ngsi::Instance>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gone: Option<Gone>,
}

impl Owed {
    /// The column as written (older rows hold the changed attributes alone).
    fn read(text: &str) -> Owed {
        serde_json::from_str::<Owed>(text).unwrap_or_else(|_| Owed {
            changed: serde_json::from_str(text).unwrap_or_default(),
            ..Default::default()
        })
    }

    fn absorb(&mut self, other: Owed) {
        self.changed.extend(other.changed);
        self.deleted.extend(other.deleted);
        for (k, v) in other.previous {
            self.previous.entry(k).or_insert(v);
        }
        if other.gone.is_some() {
            self.gone = other.gone;
        }
    }
}

/// The member that holds an instance's previous value under `showChanges`.
fn previous_member(ty: &str) -> (&'static str, &'static str) {
    match ty {
        "Relationship" => ("object", "previousObject"),
        "LanguageProperty" => ("languageMap", "previousLanguageMap"),
        "JsonProperty" => ("json", "previousJson"),
        "VocabProperty" => ("vocab", "previousVocab"),
        "ListProperty" => ("valueList", "previousValueList"),
        "ListRelationship" => ("objectList", "previousObjectList"),
        _ => ("value", "previousValue"),
    }
}

/// How many owed notifications one worker pass takes.
const PASS: i64 = 2000;
/// How many subscriptions are delivered to at once.
const CONCURRENT_DELIVERIES: usize = 32;
/// A delivery's time limit.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a pass's claim on its rows outlives the longest its sending
/// can take (see `citytrust_store::NotificationLease`).
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// One subscription's part of a delivery pass, once prepared.
enum Prepared {
    /// Nothing more to do now (expired, paused, or held back by `throttling`).
    Done,
    /// Owed no longer: nothing left the subscriber may see.
    Drop(Vec<i64>),
    /// Rendered, ready to be committed to in the log and sent.
    Send(Box<Ready>),
    /// Could not be made: stays owed.
    Failed(Failure),
}

/// What one subscription's notification settles.
struct Owing {
    sub_id: String,
    /// The outbox rows it carries.
    seqs: Vec<i64>,
    /// The most times any of them was tried before.
    attempts: i64,
    /// `lastSuccess` before this pass, put back if the sending fails.
    last_success: Option<String>,
}

struct Ready {
    owed: Owing,
    /// The subscription's row and terms as the pass read them.
    row: SubscriptionRow,
    s: Subscription,
    n: Rendered,
}

/// A notification rendered, waiting for its log entry's index.
struct Rendered {
    /// Its `stream.notified` entry (body, time).
    entry: (String, String),
    body: Vec<u8>,
    nonce: String,
    /// `application/ld+json` (else plain JSON with a `Link` to `context`).
    ld: bool,
    context: String,
    /// The subscriber, and the streams read for it (a personal one's read
    /// is recorded against the entry, for "who used my data").
    actor: Actor,
    reads: Vec<(
        Dataset,
        crate::read::ReadGrant,
        Option<crate::residents::SubjectScope>,
    )>,
}

struct Failure {
    owed: Owing,
    error: String,
}

/// The subscriptions passes have taken rows of (see `Service::notifying`),
/// and whether a pass has found rows of one held and left them.
#[derive(Default)]
pub(crate) struct InFlight(Arc<std::sync::Mutex<Held>>);

#[derive(Default)]
struct Held {
    subs: std::collections::HashSet<String>,
    left: bool,
    /// Moves each time a pass lets go of subscriptions.
    released: u64,
}

impl InFlight {
    fn released(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).released
    }

    /// Take those of `ids` no pass holds.
    fn take<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Taken {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut mine = std::collections::HashSet::new();
        for id in ids {
            if held.subs.insert(id.clone()) {
                mine.insert(id.clone());
            } else {
                held.left = true;
            }
        }
        Taken {
            all: self.0.clone(),
            mine,
        }
    }
}

/// Subscriptions one pass holds; let go when dropped (however its posting
/// ends: an error or a panic included).
pub(crate) struct Taken {
    all: Arc<std::sync::Mutex<Held>>,
    mine: std::collections::HashSet<String>,
}

impl Taken {
    fn holds(&self, id: &str) -> bool {
        self.mine.contains(id)
    }

    /// Let go; whether a pass should look again (one left rows while
    /// these or others were held).
    fn release(mut self) -> bool {
        let mut held = self.let_go();
        std::mem::take(&mut held.left)
    }

    fn let_go(&mut self) -> std::sync::MutexGuard<'_, Held> {
        let mut held = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if !self.mine.is_empty() {
            held.released += 1;
        }
        for id in self.mine.drain() {
            held.subs.remove(&id);
        }
        held
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        // (Rows left meanwhile wait for the worker's next round.)
        drop(self.let_go());
    }
}

/// A pass's notifications, committed to and counted, waiting to be sent
/// (`Service::post_notifications`).
pub struct Posting {
    taken: Taken,
    /// The token of the pass's claim on its rows (see
    /// `citytrust_store::NotificationLease`).
    lease: String,
    now_t: time::OffsetDateTime,
    requests: Vec<(Owing, reqwest::RequestBuilder)>,
    /// Rows owed no longer.
    delivered: Vec<i64>,
    failed: Vec<Failure>,
    /// The first error met preparing (the rest of the pass went on).
    error: Option<ServiceError>,
    started: std::time::Instant,
    owed: usize,
    /// Read, prepared, counted (since `started`).
    timings: [std::time::Duration; 3],
}

/// How a pass changes a subscription's delivery counters.
enum Delivery {
    Sent,
    Failed {
        at: String,
        last_success: Option<String>,
    },
}

impl Delivery {
    /// Move `s`'s counters (a notification sent at `now`).
    fn count(&self, s: &mut Subscription, now: &str) {
        match self {
            Delivery::Sent => {
                s.times_sent += 1;
                s.last_notification = Some(now.to_string());
                s.last_success = s.last_notification.clone();
            }
            Delivery::Failed { at, last_success } => {
                // As it was before the count put it forward.
                s.last_notification = Some(at.clone());
                s.last_success = last_success.clone();
                s.last_failure = Some(at.clone());
            }
        }
    }
}

/// What a delivery pass (or a sweep) decides once, as of its one instant:
/// each subscriber's account, and each (subscriber, stream, purpose)'s
/// read decision when it allows (a refusal is decided again each time it
/// is met, so its reason is always the one found now). A subject scope is
/// still decided per notification.
#[derive(Default)]
pub(crate) struct Pass {
    actors: std::sync::Mutex<HashMap<String, Option<Actor>>>,
    reads: std::sync::Mutex<HashMap<ReadKey, (Dataset, crate::read::ReadGrant)>>,
    /// The governance revision and day read at a delivery pass's start,
    /// before it decided anything: its allow decisions are kept across
    /// passes under them (`Decisions`). `None` (sweeps, edits): decided
    /// afresh.
    as_of: Option<(i64, i64)>,
    /// A delivery pass's entities, read once for all its subscriptions at
    /// its start (those owed that exist; `None`: read when needed).
    entities: Option<HashMap<String, citytrust_store::EntityRow>>,
}

impl Pass {
    /// The entities with these ids that exist, as of the pass.
    async fn entities(
        &self,
        svc: &Service,
        ids: &[String],
    ) -> Result<Vec<citytrust_store::EntityRow>> {
        Ok(match &self.entities {
            Some(held) => ids.iter().filter_map(|id| held.get(id).cloned()).collect(),
            None => svc.store.get_entities(ids).await?,
        })
    }
}

/// (subscriber, stream, purpose).
type ReadKey = (String, String, Option<String>);

fn decode(row: &SubscriptionRow) -> Result<(Subscription, Grants)> {
    let s = serde_json::from_str(&row.body)
        .map_err(|e| ServiceError::Internal(format!("stored subscription: {e}")))?;
    let g = serde_json::from_str(&row.grants)
        .map_err(|e| ServiceError::Internal(format!("stored subscription grants: {e}")))?;
    Ok((s, g))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| ServiceError::Internal(e.to_string()))
}

fn not_found(id: &str) -> ServiceError {
    NgsiError::not_found(format!("no subscription '{id}' of yours")).into()
}

impl Service {
    /// Who subscribes: a signed-in reader (`owner` = the username), or a
    /// stream's write credential (`owner` = `credential:{id}`), which reads
    /// as anyone does — open streams only. Nobody subscribes anonymously:
    /// a subscription makes this trust send requests where it is told.
    fn subscriber(caller: &StreamCaller) -> Result<(&Actor, String, bool)> {
        let (actor, credential) = Self::reader(caller)?;
        match caller {
            StreamCaller::Actor(a @ Actor::User { .. }) => {
                Ok((a, a.username().unwrap_or_default().to_string(), false))
            }
            StreamCaller::Actor(_) => Err(ServiceError::Unauthenticated),
            StreamCaller::Credential { id, .. } => {
                Ok((actor, format!("credential:{id}"), credential))
            }
        }
    }

    /// The actor a subscription's notifications are decided for (`None`:
    /// its subscriber is gone — an account no longer active, a credential revoked).
    async fn owner_actor(&self, owner: &str) -> Result<Option<Actor>> {
        if let Some(id) = owner.strip_prefix("credential:") {
            return Ok(self
                .store
                .stream_credential(id)
                .await?
                .filter(|c| c.revoked_at.is_none())
                .map(|_| Actor::Anonymous));
        }
        Ok(self
            .get_user(owner)
            .await
            .ok()
            .map(|u| Actor::from_user(&u)))
    }

    /// The subscriber's account, once per pass.
    async fn pass_actor(&self, pass: &Pass, owner: &str) -> Result<Option<Actor>> {
        if let Some(a) = pass.actors.lock().ok().and_then(|m| m.get(owner).cloned()) {
            return Ok(a);
        }
        let kept = pass.as_of.and_then(|as_of| {
            let mut d = self.subscription_cache.decisions();
            d.under(as_of).and_then(|d| d.actors.get(owner).cloned())
        });
        let a = match kept {
            Some(a) => Some(a),
            None => self.owner_actor(owner).await?,
        };
        if let (Some(as_of), Some(a)) = (pass.as_of, &a) {
            let mut d = self.subscription_cache.decisions();
            if let Some(d) = d.under(as_of) {
                d.actors.insert(owner.to_string(), a.clone());
            }
        }
        if let Ok(mut m) = pass.actors.lock() {
            m.insert(owner.to_string(), a.clone());
        }
        Ok(a)
    }

    /// A stream and the decision letting the subscriber read it for
    /// `purpose` (`authorize_read`), once per pass; `None`: the stream is
    /// gone. A refusal is the error, as `authorize_read` gives it.
    async fn pass_read(
        &self,
        pass: &Pass,
        owner: &str,
        actor: &Actor,
        dataset: &str,
        purpose: Option<&str>,
    ) -> Result<Option<(Dataset, crate::read::ReadGrant)>> {
        let key = (
            owner.to_string(),
            dataset.to_string(),
            purpose.map(str::to_string),
        );
        if let Some(hit) = pass.reads.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(Some(hit));
        }
        let kept = pass.as_of.and_then(|as_of| {
            let mut d = self.subscription_cache.decisions();
            d.under(as_of).and_then(|d| d.reads.get(&key).cloned())
        });
        let (d, grant) = match kept {
            Some(hit) => hit,
            None => {
                let Some(d) = self.store.get_dataset(dataset).await? else {
                    return Ok(None);
                };
                let grant = self
                    .authorize_read(actor, &d, purpose, citytrust_model::AccessLevel::Identified)
                    .await?;
                if let Some(as_of) = pass.as_of {
                    let mut kept = self.subscription_cache.decisions();
                    if let Some(kept) = kept.under(as_of) {
                        kept.reads.insert(key.clone(), (d.clone(), grant.clone()));
                    }
                }
                (d, grant)
            }
        };
        if let Ok(mut m) = pass.reads.lock() {
            m.insert(key, (d.clone(), grant.clone()));
        }
        Ok(Some((d, grant)))
    }

    /// The streams a subscription may be told about: those holding its types.
    async fn streams_for(&self, s: &Subscription) -> Result<Vec<Dataset>> {
        let types = s.types();
        Ok(self
            .streams()
            .await?
            .into_iter()
            .filter(|d| {
                types.is_empty()
                    || types
                        .iter()
                        .any(|t| d.metadata.stream.as_ref().is_some_and(|st| st.may_hold(t)))
            })
            .collect())
    }

    /// `POST /subscriptions`.
    pub async fn ngsi_subscribe(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        body: &Value,
        purpose: Option<&str>,
    ) -> Result<String> {
        let (actor, owner, credential) = Self::subscriber(caller)?;
        let now = rfc3339(self.now());
        let new_id = format!("urn:ngsi-ld:Subscription:{}", random_hex::<12>()?);
        let sub = Subscription::parse(body, ctx, None, &now, &new_id)?;
        self.check_endpoint(&sub.endpoint).await?;
        let purpose = crate::content::clean_purpose(purpose)?;
        let mut grants = Grants {
            purpose: purpose.clone(),
            streams: BTreeMap::new(),
        };
        let mut first_refusal = None;
        for d in self.streams_for(&sub).await? {
            if credential && d.metadata.spectrum != citytrust_model::catalogue::Spectrum::Open {
                first_refusal.get_or_insert(Self::credential_refusal(&d));
                continue;
            }
            match self
                .authorize_read(
                    actor,
                    &d,
                    purpose.as_deref(),
                    citytrust_model::AccessLevel::Identified,
                )
                .await
            {
                Ok(g) => {
                    grants.streams.insert(d.id.clone(), g.agreement_id);
                }
                Err(e @ ServiceError::Unprocessable { .. }) => return Err(e),
                Err(e) => {
                    first_refusal.get_or_insert(e);
                }
            }
        }
        if grants.streams.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| {
                NgsiError::bad(
                    "no stream of this trust holds the entity types this subscription names",
                )
                .into()
            }));
        }
        let (entry, at) = self.log_entry(
            "stream.subscribed",
            json!({
                "subscription": sub.id,
                "streams": grants.streams.iter().map(|(d, a)| json!({"dataset": d, "agreement": a})).collect::<Vec<_>>(),
                "purpose": grants.purpose,
                "by": if credential { owner.clone() } else { actor.organization_ids().first().map(|o| format!("organization:{o}")).unwrap_or_else(|| "individual".into()) },
            }),
        )?;
        let row = SubscriptionRow {
            id: sub.id.clone(),
            owner,
            status: sub.status.clone(),
            revision: 1,
            grants: encode(&grants)?,
            body: encode(&sub)?,
        };
        match self
            .store
            .insert_subscription(
                &row,
                &NewLogEntry {
                    kind: "stream.subscribed",
                    body: &entry,
                    at: &at,
                },
            )
            .await
        {
            Err(citytrust_store::StoreError::Conflict(_)) => Err(NgsiError::new(
                ErrorType::AlreadyExists,
                format!("subscription '{}' exists already", sub.id),
            )
            .into()),
            other => other.map_err(ServiceError::from),
        }?;
        Ok(sub.id)
    }

    async fn own_subscription(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<(SubscriptionRow, Subscription, Grants)> {
        citytrust_model::ngsi::check_uri("the subscription id", id)?;
        let row = self
            .store
            .get_subscription(id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if row.owner != owner {
            return Err(not_found(id));
        }
        let (s, g) = decode(&row)?;
        Ok((row, s, g))
    }

    /// `GET /subscriptions/{id}` (its subscriber only).
    pub async fn ngsi_subscription(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        with_context: bool,
    ) -> Result<Value> {
        let (_, owner, _) = Self::subscriber(caller)?;
        let (_, s, _) = self.own_subscription(&owner, id).await?;
        Ok(s.render(ctx, with_context))
    }

    /// `GET /subscriptions`: the caller's own.
    pub async fn ngsi_subscriptions(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        with_context: bool,
    ) -> Result<Vec<Value>> {
        let (_, owner, _) = Self::subscriber(caller)?;
        let mut out = Vec::new();
        for row in self.store.list_subscriptions(Some(&owner), None).await? {
            let (s, _) = decode(&row)?;
            out.push(s.render(ctx, with_context));
        }
        Ok(out)
    }

    /// `PATCH /subscriptions/{id}`: what it watches and where it notifies;
    /// the streams and purpose it was decided for stay.
    pub async fn ngsi_update_subscription(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<()> {
        let (_, owner, _) = Self::subscriber(caller)?;
        // The worker may change the row meanwhile (what it sent): read again and retry.
        for _ in 0..5 {
            let (mut row, s, g) = self.own_subscription(&owner, id).await?;
            let now = rfc3339(self.now());
            let mut updated = Subscription::parse(body, ctx, Some(&s), &now, id)?;
            if s.status == "expired" {
                // An expired subscription lives again only if what ended it
                // no longer holds (a new expiresAt) and its reads are allowed now.
                updated.status = "active".into();
                updated.expired_because = None;
                if let Some(why) = self
                    .no_longer_allowed(&Pass::default(), &owner, &g, &updated)
                    .await?
                {
                    return Err(NgsiError::new(
                        ErrorType::OperationNotSupported,
                        format!("subscription '{id}' has expired: {why}"),
                    )
                    .into());
                }
                if updated.paused {
                    updated.status = "paused".into();
                }
            }
            self.check_endpoint(&updated.endpoint).await?;
            let types = updated.types();
            if !types.is_empty() {
                for d in self.streams_for(&updated).await? {
                    if !g.streams.contains_key(&d.id) {
                        return Err(NgsiError::bad(format!(
                            "the subscription was decided for other streams; '{}' needs a subscription of its own",
                            d.id
                        ))
                        .into());
                    }
                }
            }
            row.status = updated.status.clone();
            row.body = encode(&updated)?;
            let (entry, at) = self.log_entry(
                "stream.subscription_changed",
                json!({"subscription": id, "status": updated.status}),
            )?;
            match self
                .store
                .update_subscription(
                    &row,
                    false,
                    Some(&NewLogEntry {
                        kind: "stream.subscription_changed",
                        body: &entry,
                        at: &at,
                    }),
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(citytrust_store::StoreError::StaleRevision(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Conflict(format!(
            "subscription '{id}' kept changing; try again"
        )))
    }

    /// `DELETE /subscriptions/{id}`.
    pub async fn ngsi_unsubscribe(&self, caller: &StreamCaller, id: &str) -> Result<()> {
        let (_, owner, _) = Self::subscriber(caller)?;
        self.own_subscription(&owner, id).await?;
        let (entry, at) = self.log_entry("stream.unsubscribed", json!({"subscription": id}))?;
        if !self
            .store
            .delete_subscription(
                id,
                &NewLogEntry {
                    kind: "stream.unsubscribed",
                    body: &entry,
                    at: &at,
                },
            )
            .await?
        {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// The reader's own subscriptions that `dataset` notifies: (id, name,
    /// status, times sent and last notification).
    pub async fn stream_subscriptions(
        &self,
        actor: &Actor,
        dataset: &str,
    ) -> Result<Vec<(String, String, String, String)>> {
        let Some(owner) = actor.username() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in self.store.list_subscriptions(Some(owner), None).await? {
            let (s, g) = decode(&row)?;
            if g.streams.contains_key(dataset) {
                out.push((
                    s.id.clone(),
                    s.name.clone().unwrap_or_default(),
                    s.status.clone(),
                    format!(
                        "{} sent{}",
                        s.times_sent,
                        s.last_notification
                            .as_deref()
                            .map(|l| format!(", the last at {l}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// The notifications a write owes: (subscription, entity, what it
    /// remembers of the change) for each active subscription the change is
    /// news to, by the triggers it asked for. `changes` holds each entity as
    /// it is now (as it was, when deleted), its stream, how it changed, and
    /// what it was before an update.
    pub(crate) async fn owed_by(
        &self,
        active: &ActiveSet,
        changes: &[(&Entity, &str, Change, Option<&Entity>)],
    ) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        if changes.is_empty() {
            return Ok(out);
        }
        let now = rfc3339(self.now());
        // Told of changes at all now: not periodic (told on its period),
        // not past its expiresAt, its context resolved.
        let told: Vec<bool> = active
            .subs
            .iter()
            .map(|c| {
                c.s.time_interval.is_none()
                    && c.ctx.is_some()
                    && !c.s.expires_at.as_ref().is_some_and(|e| {
                        citytrust_model::ngsi::temporal::instant(e)
                            <= citytrust_model::ngsi::temporal::instant(&now)
                    })
            })
            .collect();
        for (e, dataset, kind, before) in changes {
            for i in active.candidates(&e.id) {
                if !told[i] {
                    continue;
                }
                let c = &active.subs[i];
                let (s, g) = (&c.s, &c.g);
                let Some(ctx) = &c.ctx else { continue };
                if !g.streams.contains_key(*dataset) {
                    continue;
                }
                let has = |t: &str| match &s.triggers {
                    Some(list) => list.iter().any(|x| x == t),
                    None => DEFAULT_TRIGGERS.contains(&t),
                };
                let mut owed = Owed::default();
                match kind {
                    Change::Created => {
                        if !(has("entityCreated") || has("attributeCreated")) {
                            continue;
                        }
                        owed.changed = e.touched.iter().cloned().collect();
                    }
                    Change::Updated => {
                        if has("entityUpdated")
                            || has("attributeUpdated")
                            || has("attributeCreated")
                        {
                            owed.changed = e.touched.iter().cloned().collect();
                        }
                        if has("attributeDeleted") {
                            owed.deleted = e.deleted.clone();
                        }
                    }
                    Change::Deleted => {
                        let entity_deleted = has("entityDeleted");
                        if !entity_deleted && !has("attributeDeleted") {
                            continue;
                        }
                        // Its attributes are told deleted for attributeDeleted,
                        // and with what they were for showChanges.
                        if !entity_deleted || s.show_changes {
                            owed.deleted = e
                                .attrs
                                .iter()
                                .filter(|(iri, _)| {
                                    s.watched.as_ref().is_none_or(|w| w.contains(iri))
                                })
                                .flat_map(|(iri, is)| {
                                    is.iter().map(|i| {
                                        let mut null = citytrust_model::ngsi::null_instance(i);
                                        null.insert("modifiedAt".into(), now.clone().into());
                                        null.insert("deletedAt".into(), now.clone().into());
                                        (iri.clone(), null)
                                    })
                                })
                                .collect();
                        }
                        owed.gone = Some(Gone {
                            entity: (*e).clone(),
                            dataset: dataset.to_string(),
                            at: now.clone(),
                            entity_deleted,
                        });
                    }
                }
                let mut news: Vec<String> = owed.changed.clone();
                news.extend(owed.deleted.iter().map(|(iri, _)| iri.clone()));
                if *kind == Change::Deleted && owed.deleted.is_empty() {
                    news = e.attrs.keys().cloned().collect();
                }
                if news.is_empty() && *kind != Change::Deleted {
                    continue;
                }
                if !s.matches(e, &news, ctx) {
                    continue;
                }
                if s.show_changes
                    && let Some(before) = before
                {
                    for iri in &news {
                        if let Some(was) = before.attrs.get(iri) {
                            owed.previous.insert(iri.clone(), was.clone());
                        }
                    }
                }
                if s.show_changes && *kind == Change::Deleted {
                    for iri in &news {
                        if let Some(was) = e.attrs.get(iri) {
                            owed.previous.insert(iri.clone(), was.clone());
                        }
                    }
                }
                out.push((s.id.clone(), e.id.clone(), encode(&owed)?));
            }
        }
        Ok(out)
    }

    /// The subscription's context, resolved; the same `Arc` for every
    /// subscription made with the same `@context`.
    fn shared_context(&self, s: &Subscription) -> Option<Arc<Context>> {
        let key = serde_json::to_string(&s.context).ok()?;
        if let Ok(contexts) = self.subscription_cache.contexts.lock()
            && let Some(c) = contexts.get(&key)
        {
            return Some(c.clone());
        }
        let c = Arc::new(s.context().ok()?);
        if let Ok(mut contexts) = self.subscription_cache.contexts.lock() {
            contexts.insert(key, c.clone());
        }
        Some(c)
    }

    /// The active subscriptions, compiled (see `SubscriptionCache`), in id order.
    pub(crate) async fn active_subscriptions(&self) -> Result<Arc<ActiveSet>> {
        self.active_subscriptions_at(self.store.subscriptions_revision().await?)
            .await
    }

    /// The active subscriptions as of the `subscriptions_revision` `at`
    /// (read by the caller, before the rows are).
    async fn active_subscriptions_at(&self, at: i64) -> Result<Arc<ActiveSet>> {
        if let Ok(set) = self.subscription_cache.set.lock()
            && let Some((built, active)) = set.as_ref()
            && *built == at
        {
            return Ok(active.clone());
        }
        let revs = self.store.active_subscription_revisions().await?;
        let mut out = Vec::with_capacity(revs.len());
        let mut stale = Vec::new();
        if let Ok(cache) = self.subscription_cache.rows.lock() {
            for (id, rev) in &revs {
                match cache.get(id) {
                    Some((r, c)) if r == rev => out.push((id.clone(), Some(c.clone()))),
                    _ => {
                        stale.push(out.len());
                        out.push((id.clone(), None));
                    }
                }
            }
        } else {
            stale = (0..revs.len()).collect();
            out = revs.iter().map(|(id, _)| (id.clone(), None)).collect();
        }
        for i in stale {
            let Some(row) = self.store.get_subscription(&out[i].0).await? else {
                continue;
            };
            if row.status != "active" {
                continue;
            }
            let (s, g) = decode(&row)?;
            let ctx = self.shared_context(&s);
            let c = Arc::new(Compiled {
                s,
                g,
                owner: row.owner.clone(),
                ctx,
            });
            // Kept at the terms' revision listed: a change since then only
            // makes the next write read it again.
            if let Ok(mut cache) = self.subscription_cache.rows.lock() {
                cache.insert(row.id.clone(), (revs[i].1, c.clone()));
            }
            out[i].1 = Some(c);
        }
        if let Ok(mut cache) = self.subscription_cache.rows.lock() {
            let live: std::collections::HashSet<&String> = revs.iter().map(|(id, _)| id).collect();
            cache.retain(|id, _| live.contains(id));
        }
        if let Ok(mut contexts) = self.subscription_cache.contexts.lock() {
            contexts.retain(|_, c| Arc::strong_count(c) > 1);
        }
        let complete = out.iter().all(|(_, c)| c.is_some());
        let active = Arc::new(ActiveSet::new(
            out.into_iter().filter_map(|(_, c)| c).collect(),
        ));
        // Kept for the writes that find the counter where it was (a row
        // that was no longer active when read makes the next write look again).
        if complete && let Ok(mut set) = self.subscription_cache.set.lock() {
            *set = Some((at, active.clone()));
        }
        Ok(active)
    }

    pub async fn notifications_waiting(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.notify_wake.notified()).await;
    }

    pub(crate) fn wake_notifier(&self) {
        self.notify_wake.notify_one();
    }

    /// Expire a subscription: it notifies nothing more, and the log says why.
    async fn expire(&self, mut row: SubscriptionRow, mut s: Subscription, why: &str) -> Result<()> {
        s.status = "expired".into();
        s.expired_because = Some(why.to_string());
        s.modified_at = rfc3339(self.now());
        row.status = s.status.clone();
        row.body = encode(&s)?;
        let (entry, at) = self.log_entry(
            "stream.subscription_expired",
            json!({"subscription": s.id, "reason": why}),
        )?;
        match self
            .store
            .update_subscription(
                &row,
                true,
                Some(&NewLogEntry {
                    kind: "stream.subscription_expired",
                    body: &entry,
                    at: &at,
                }),
            )
            .await
        {
            // Another pass got there first.
            Ok(()) | Err(citytrust_store::StoreError::StaleRevision(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Expire subscriptions whose reads are no longer allowed (an agreement
    /// ended or retired, the subscriber gone); returns how many.
    pub async fn expire_subscriptions(&self) -> Result<usize> {
        let mut n = 0;
        // Judged on their terms as compiled for writes; one that must end
        // is read again, and ended only if still active.
        let pass = Pass::default();
        let active = self.active_subscriptions().await?;
        for c in &active.subs {
            let Some(why) = self.no_longer_allowed(&pass, &c.owner, &c.g, &c.s).await? else {
                continue;
            };
            let Some(row) = self.store.get_subscription(&c.s.id).await? else {
                continue;
            };
            if row.status != "active" {
                continue;
            }
            let (s, _) = decode(&row)?;
            self.expire(row, s, &why).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Why a subscription may no longer be served, if it may not.
    async fn no_longer_allowed(
        &self,
        pass: &Pass,
        owner: &str,
        g: &Grants,
        s: &Subscription,
    ) -> Result<Option<String>> {
        let now = rfc3339(self.now());
        if s.expires_at.as_ref().is_some_and(|e| {
            citytrust_model::ngsi::temporal::instant(e)
                <= citytrust_model::ngsi::temporal::instant(&now)
        }) {
            return Ok(Some("its expiresAt has passed".into()));
        }
        let Some(actor) = self.pass_actor(pass, owner).await? else {
            return Ok(Some(
                "its subscriber is gone (an account no longer active, or a credential revoked)"
                    .into(),
            ));
        };
        for (dataset, agreement) in &g.streams {
            match self
                .pass_read(pass, owner, &actor, dataset, g.purpose.as_deref())
                .await
            {
                Ok(None) => return Ok(Some(format!("stream '{dataset}' is gone"))),
                Ok(Some((_, grant))) if agreement.is_none() || grant.agreement_id == *agreement => {
                }
                Ok(Some(_)) => {
                    return Ok(Some(format!(
                        "agreement {} it was made under is no longer in force",
                        agreement.as_deref().unwrap_or("")
                    )));
                }
                Err(ServiceError::Refused { rule, message }) => {
                    return Ok(Some(match (agreement, rule) {
                        (Some(a), _) => {
                            format!("agreement {a} it was made under is no longer in force")
                        }
                        (None, Some(r)) => format!("refused by rule {r}: {message}"),
                        (None, None) => message,
                    }));
                }
                Err(ServiceError::Unavailable { code, message }) => {
                    return Err(ServiceError::Unavailable { code, message });
                }
                Err(ServiceError::Internal(e)) => return Err(ServiceError::Internal(e)),
                Err(e) => return Ok(Some(e.to_string())),
            }
        }
        Ok(None)
    }

    /// Periodic subscriptions (`timeInterval`) whose period has come round
    /// are owed every entity they match, as it is now, in the streams they
    /// were allowed (delivery decides and limits each again).
    async fn owe_periodic(&self, subscriptions_revision: i64) -> Result<()> {
        let now_t = self.now();
        let now = rfc3339(now_t);
        // Only the periodic ones, found among those compiled for writes,
        // each read again (its row as it is now) before it is owed.
        let active = self.active_subscriptions_at(subscriptions_revision).await?;
        for c in active.subs.iter().filter(|c| c.s.time_interval.is_some()) {
            let Some(mut row) = self.store.get_subscription(&c.s.id).await? else {
                continue;
            };
            if row.status != "active" {
                continue;
            }
            let (mut s, g) = decode(&row)?;
            let Some(every) = s.time_interval else {
                continue;
            };
            let due = s.last_period.as_ref().is_none_or(|last| {
                time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
                    .map_or(true, |l| l + time::Duration::seconds(every as i64) <= now_t)
            });
            if !due || s.paused {
                continue;
            }
            let ctx = s.context()?;
            let mut owed = Vec::new();
            // Each stream a page at a time: only what matches is held.
            for stream in g.streams.keys() {
                let mut pages = self.store.stream_pages(stream, 500);
                while let Some(page) = pages.next().await? {
                    for e in page {
                        let Ok(entity) = serde_json::from_str::<Entity>(&e.body) else {
                            continue;
                        };
                        let all: Vec<String> = entity.attrs.keys().cloned().collect();
                        if s.matches(&entity, &all, &ctx) {
                            owed.push((entity.id.clone(), encode(&all)?));
                        }
                    }
                }
            }
            owed.sort_by(|a, b| a.0.cmp(&b.0));
            s.last_period = Some(now.clone());
            row.body = encode(&s)?;
            match self.store.owe_subscription(&row, &owed, &now).await {
                Ok(()) | Err(citytrust_store::StoreError::StaleRevision(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The worker's pass: deliver what is owed (see the module's header).
    /// Returns how many notifications were sent.
    ///
    /// In steps, so that what the pass writes is written once for all its
    /// subscriptions, not once for each: each subscription's notification
    /// is decided and rendered (side by side); all are committed to in the
    /// log and counted as sent in one transaction; they are sent (side by
    /// side); and what was delivered is dropped from the outbox in one
    /// transaction (what was not is put off, with back-off).
    pub async fn deliver_notifications(&self) -> Result<usize> {
        match self.notification_pass().await? {
            Some(posting) => self.post(posting).await,
            None => Ok(0),
        }
    }

    /// Send what a pass committed to, and settle it (see `notification_pass`).
    pub async fn post_notifications(self: Arc<Self>, posting: Posting) -> Result<usize> {
        self.post(posting).await
    }

    /// A delivery pass up to its notifications committed to in the log:
    /// what is due is read, each subscription's part prepared (see
    /// `prepare_delivery`), and the log entries and counters of what will
    /// be sent written in one transaction. The returned `Posting` sends
    /// them and settles the rows: the worker runs it beside its next pass.
    /// The subscriptions whose rows it took are the pass's until then; a
    /// pass meanwhile leaves theirs for later.
    pub async fn notification_pass(&self) -> Result<Option<Posting>> {
        let started = std::time::Instant::now();
        // Both counters in one read: the governance revision before
        // anything is decided (see `Decisions`), with the day.
        let (subscriptions_revision, governance_revision) = self.store.pass_revisions().await?;
        let as_of = (governance_revision, self.today());
        self.owe_periodic(subscriptions_revision).await?;
        let now_t = self.now();
        let now = rfc3339(now_t);
        let released = self.notifying.released();
        let due = self.store.due_notifications(&now, PASS).await?;
        if due.is_empty() {
            return Ok(None);
        }
        let read = started.elapsed();
        let group = |due: Vec<citytrust_store::OwedNotification>| {
            let mut by_sub: BTreeMap<String, Vec<citytrust_store::OwedNotification>> =
                BTreeMap::new();
            for d in due {
                by_sub.entry(d.subscription_id.clone()).or_default().push(d);
            }
            by_sub
        };
        let mut by_sub = group(due);
        let taken = self.notifying.take(by_sub.keys());
        if self.notifying.released() != released {
            // Another pass let go of subscriptions between the read and the
            // take, having settled their rows: what was read of them may be
            // sent already. Read again (the ones taken are this pass's now).
            by_sub = group(self.store.due_notifications(&now, PASS).await?);
        }
        by_sub.retain(|id, _| taken.holds(id));
        if by_sub.is_empty() {
            return Ok(None);
        }
        let owed = by_sub.values().map(Vec::len).sum::<usize>();
        // Subscriptions are served side by side (each its own receiver and
        // rows; up to CONCURRENT_DELIVERIES at once), each one's
        // notifications in order: a slow receiver does not delay the others.
        // The subscriptions and the entities owed, read once for the pass.
        let ids: Vec<String> = by_sub.keys().cloned().collect();
        let mut rows: HashMap<String, SubscriptionRow> = self
            .store
            .get_subscriptions(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut entity_ids: Vec<String> = by_sub
            .values()
            .flatten()
            .map(|o| o.entity_id.clone())
            .collect();
        entity_ids.sort_unstable();
        entity_ids.dedup();
        let pass = Pass {
            as_of: Some(as_of),
            entities: Some(
                self.store
                    .get_entities(&entity_ids)
                    .await?
                    .into_iter()
                    .map(|e| (e.entity_id.clone(), e))
                    .collect(),
            ),
            ..Default::default()
        };
        use futures::StreamExt;
        let prepared: Vec<Result<Prepared>> = futures::stream::iter(by_sub)
            .map(|(sub_id, owed)| {
                let row = rows.remove(&sub_id);
                self.prepare_delivery(&pass, sub_id, row, owed, now_t)
            })
            .buffer_unordered(CONCURRENT_DELIVERIES)
            .collect()
            .await;
        let mut error = None;
        let mut delivered: Vec<i64> = Vec::new();
        let mut ready = Vec::new();
        let mut failed = Vec::new();
        for p in prepared {
            match p {
                Ok(Prepared::Done) => {}
                Ok(Prepared::Drop(seqs)) => delivered.extend(seqs),
                Ok(Prepared::Send(r)) => ready.push(r),
                Ok(Prepared::Failed(f)) => failed.push(f),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        let prepared = started.elapsed();
        // Each notification committed to in the log, and counted as sent
        // before it is (a subscriber reading its subscription as the
        // notification arrives sees it counted): one transaction.
        let mut requests = Vec::with_capacity(ready.len());
        let lease = crate::accounts::random_hex::<16>()?;
        if !ready.is_empty() {
            let sent_at = rfc3339(self.now());
            let notes: Vec<citytrust_store::NotificationCommit<'_>> = ready
                .iter()
                .map(|r| {
                    let mut s = r.s.clone();
                    Delivery::Sent.count(&mut s, &sent_at);
                    Ok(citytrust_store::NotificationCommit {
                        seqs: &r.owed.seqs,
                        entry: NewLogEntry {
                            kind: "stream.notified",
                            body: &r.n.entry.0,
                            at: &r.n.entry.1,
                        },
                        counted: SubscriptionRow {
                            body: encode(&s)?,
                            ..r.row.clone()
                        },
                    })
                })
                .collect::<Result<_>>()?;
            // The rows are this pass's until settled: past the longest its
            // sending can take (each request's time limit, CONCURRENT at once).
            let rounds = ready.len().div_ceil(CONCURRENT_DELIVERIES) as u32;
            let until = rfc3339(now_t + (LEASE_MARGIN + DELIVERY_TIMEOUT * rounds));
            let committed = self
                .store
                .commit_notifications(
                    &notes,
                    &citytrust_store::NotificationLease {
                        now: &now,
                        until: &until,
                        token: &lease,
                    },
                )
                .await?;
            drop(notes);
            self.record_deliveries(&committed.stale, &Delivery::Sent)
                .await?;
            let mut log_index = committed.first;
            for (r, claimed) in ready.into_iter().zip(committed.claimed) {
                if !claimed {
                    // Another pass (here or on another node) has these rows
                    // or older ones of the subscription: they are its.
                    continue;
                }
                let Ready { owed, s, n, .. } = *r;
                // Personal streams: kept for "who used my data".
                for (d, grant, scope) in &n.reads {
                    self.record_read_of_subjects(
                        &n.actor,
                        d,
                        grant,
                        scope.as_ref(),
                        citytrust_store::STREAM_VERSION,
                        log_index,
                        "stream_notification",
                    )
                    .await?;
                }
                requests.push((owed, self.notification_request(&s, n, log_index)?));
                log_index += 1;
            }
        }
        let counted = started.elapsed();
        Ok(Some(Posting {
            taken,
            lease,
            now_t,
            requests,
            delivered,
            failed,
            error,
            started,
            owed,
            timings: [read, prepared, counted],
        }))
    }

    /// Send a pass's notifications, then settle its rows: those delivered
    /// (or owed no longer) dropped, those not tried again later with
    /// back-off, and the counters of failed deliveries put right.
    async fn post(&self, posting: Posting) -> Result<usize> {
        let Posting {
            taken,
            lease,
            now_t,
            requests,
            mut delivered,
            mut failed,
            error,
            started,
            owed,
            timings: [read, prepared, counted],
        } = posting;
        use futures::StreamExt;
        let results: Vec<(Owing, std::result::Result<(), String>)> =
            futures::stream::iter(requests)
                .map(|(owed, request)| async move {
                    let res = match request.send().await {
                        Ok(res) if res.status().is_success() => Ok(()),
                        Ok(res) => Err(format!("the endpoint answered {}", res.status())),
                        Err(e) => Err(format!("notification to the endpoint: {}", e.without_url())),
                    };
                    (owed, res)
                })
                .buffer_unordered(CONCURRENT_DELIVERIES)
                .collect()
                .await;
        let mut sent = 0;
        for (owed, res) in results {
            match res {
                Ok(()) => {
                    sent += 1;
                    delivered.extend(owed.seqs);
                }
                Err(error) => failed.push(Failure { owed, error }),
            }
        }
        let posted = started.elapsed();
        self.store.drop_notifications(&delivered).await?;
        tracing::debug!(
            owed,
            sent,
            failed = failed.len(),
            read_ms = read.as_secs_f64() * 1e3,
            prepared_ms = prepared.as_secs_f64() * 1e3,
            counted_ms = counted.as_secs_f64() * 1e3,
            posted_ms = posted.as_secs_f64() * 1e3,
            done_ms = started.elapsed().as_secs_f64() * 1e3,
            "notification pass"
        );
        let now = rfc3339(now_t);
        for f in &failed {
            tracing::info!(subscription = %f.owed.sub_id, error = %f.error, "a notification was not delivered; it stays owed");
            let delay = 2i64
                .saturating_pow(u32::try_from(f.owed.attempts.min(12)).unwrap_or(12))
                .min(3600);
            let at = rfc3339(now_t + time::Duration::seconds(delay));
            self.store
                .retry_notifications(&f.owed.seqs, &at, &lease)
                .await?;
        }
        for f in failed {
            self.record_deliveries(
                &[f.owed.sub_id],
                &Delivery::Failed {
                    at: now.clone(),
                    last_success: f.owed.last_success,
                },
            )
            .await?;
        }
        // Its subscriptions are free again: rows owed to them meanwhile
        // are for the next pass.
        if taken.release() {
            self.wake_notifier();
        }
        match error {
            Some(e) => Err(e),
            None => Ok(sent),
        }
    }

    /// What one subscription is owed now, made ready to send (see
    /// `deliver_notifications`).
    async fn prepare_delivery(
        &self,
        pass: &Pass,
        sub_id: String,
        row: Option<SubscriptionRow>,
        owed: Vec<citytrust_store::OwedNotification>,
        now_t: time::OffsetDateTime,
    ) -> Result<Prepared> {
        let seqs: Vec<i64> = owed.iter().map(|o| o.seq).collect();
        let Some(row) = row else {
            return Ok(Prepared::Drop(seqs));
        };
        let (s, g) = decode(&row)?;
        if s.status != "active" {
            if s.status == "expired" {
                return Ok(Prepared::Drop(seqs));
            }
            // A paused subscription keeps what it is owed.
            return Ok(Prepared::Done);
        }
        if let Some(why) = self.no_longer_allowed(pass, &row.owner, &g, &s).await? {
            self.expire(row, s, &why).await?;
            return Ok(Prepared::Done);
        }
        if let (Some(t), Some(last)) = (s.throttling, &s.last_notification)
            && let Ok(last) =
                time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
            && last + time::Duration::seconds(t as i64) > now_t
        {
            let at = rfc3339(last + time::Duration::seconds(t as i64));
            self.store
                .defer_notifications(&seqs, &rfc3339(now_t), &at)
                .await?;
            return Ok(Prepared::Done);
        }
        let these = Owing {
            sub_id,
            attempts: owed.iter().map(|o| o.attempts).max().unwrap_or(0),
            last_success: s.last_success.clone(),
            seqs,
        };
        match self.notification(pass, &row, &s, &g, &owed).await {
            Ok(Some(n)) => Ok(Prepared::Send(Box::new(Ready {
                owed: these,
                row,
                s,
                n,
            }))),
            // Nothing the subscriber may see now: nothing to send.
            Ok(None) => Ok(Prepared::Drop(these.seqs)),
            Err(ServiceError::Unavailable { code, message }) => {
                Err(ServiceError::Unavailable { code, message })
            }
            Err(e) => Ok(Prepared::Failed(Failure {
                owed: these,
                error: e.to_string(),
            })),
        }
    }

    /// The delivery counters of subscriptions (`timesSent`,
    /// `lastNotification`, `lastSuccess`, `lastFailure`), brought up to
    /// date in one transaction; a row changed meanwhile is read again.
    async fn record_deliveries(&self, ids: &[String], what: &Delivery) -> Result<()> {
        let mut ids = ids.to_vec();
        for _ in 0..8 {
            if ids.is_empty() {
                return Ok(());
            }
            let mut rows = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(mut row) = self.store.get_subscription(id).await? else {
                    continue;
                };
                let (mut current, _) = decode(&row)?;
                what.count(&mut current, &rfc3339(self.now()));
                row.body = encode(&current)?;
                rows.push(row);
            }
            ids = self.store.update_subscriptions(&rows).await?;
        }
        Ok(())
    }

    /// Render one notification and its log entry, or `None` if nothing is
    /// left to send.
    async fn notification(
        &self,
        pass: &Pass,
        row: &SubscriptionRow,
        s: &Subscription,
        g: &Grants,
        owed: &[citytrust_store::OwedNotification],
    ) -> Result<Option<Rendered>> {
        let actor = self
            .pass_actor(pass, &row.owner)
            .await?
            .ok_or_else(|| ServiceError::Internal("the subscriber is gone".into()))?;
        let ctx = match self.shared_context(s) {
            Some(c) => c,
            None => Arc::new(s.context()?),
        };
        // Compacted with `jsonldContext` when one was named (it is held here).
        let out_ctx = match &s.jsonld_context {
            Some(c) => Arc::new(Context::resolve(Some(&Value::String(c.clone())))?),
            None => ctx.clone(),
        };
        // What each entity owes, merged (several changes may be owed at once).
        let mut what: BTreeMap<String, Owed> = BTreeMap::new();
        for o in owed {
            what.entry(o.entity_id.clone())
                .or_default()
                .absorb(Owed::read(&o.changed));
        }
        let live: Vec<String> = what
            .iter()
            .filter(|(_, w)| w.gone.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        // Each entity as it is now (or as it was, deleted), with its stream.
        let mut entities: Vec<(Entity, String)> = Vec::new();
        for row in pass.entities(self, &live).await? {
            let entity: Entity = serde_json::from_str(&row.body)
                .map_err(|e| ServiceError::Internal(format!("stored entity: {e}")))?;
            entities.push((entity, row.dataset_id.clone()));
        }
        for w in what.values() {
            if let Some(g) = &w.gone {
                entities.push((g.entity.clone(), g.dataset.clone()));
            }
        }
        let rendering = Rendering {
            key_values: s.key_values,
            // JSON-LD: each entity carries its context.
            with_context: s.accept == "application/ld+json",
            sys_attrs: s.sys_attrs,
            attrs: s.attributes.clone(),
            pick: s.pick.clone(),
            omit: s.omit.clone(),
            ..Default::default()
        };
        let mut decided: HashMap<
            String,
            (
                Dataset,
                crate::read::ReadGrant,
                Option<crate::residents::SubjectScope>,
            ),
        > = HashMap::new();
        let mut data = Vec::new();
        for (entity, dataset_id) in entities {
            if !g.streams.contains_key(&dataset_id) {
                continue;
            }
            let Some(w) = what.get(&entity.id) else {
                continue;
            };
            if !decided.contains_key(&dataset_id) {
                let Some((d, grant)) = self
                    .pass_read(pass, &row.owner, &actor, &dataset_id, g.purpose.as_deref())
                    .await?
                else {
                    continue;
                };
                let scope = self.subject_scope(&actor, &d, &grant).await?;
                decided.insert(dataset_id.clone(), (d, grant, scope));
            }
            let Some((d, grant, scope)) = decided.get(&dataset_id) else {
                continue;
            };
            // Whose entity: decided on the whole entity, before the column limit.
            if !crate::streams::admitted(&entity, d, scope.as_ref()) {
                continue;
            }
            let entity_deleted = w.gone.as_ref().is_some_and(|g| g.entity_deleted);
            // A deleted entity's q and geoQ are tested on what the
            // subscriber may see of it as it was.
            let was = w
                .gone
                .as_ref()
                .map(|_| crate::streams::limited(&entity, grant));
            // What is told: the entity now (a deleted one: nothing of its
            // attributes but those deleted), with each deleted instance as
            // NGSI-LD Null.
            let mut told = entity;
            if w.gone.is_some() {
                told.attrs.clear();
            }
            for (iri, null) in &w.deleted {
                told.attrs
                    .entry(iri.clone())
                    .or_default()
                    .push(null.clone());
            }
            let mut visible = crate::streams::limit(told, grant);
            if let Some(ds) = &s.dataset_ids {
                visible.retain_datasets(ds);
            }
            // Only changes to what the subscriber may see are news to it.
            let news: Vec<String> = w
                .changed
                .iter()
                .chain(w.deleted.iter().map(|(iri, _)| iri))
                .filter(|a| visible.attrs.contains_key(*a))
                .cloned()
                .collect();
            if news.is_empty() && !entity_deleted {
                continue;
            }
            // q and geoQ are tested on what the subscriber may see of the
            // entity (as it was, when deleted).
            let judged = was.as_ref().unwrap_or(&visible);
            let all: Vec<String> = judged.attrs.keys().cloned().collect();
            if !s.matches(judged, if news.is_empty() { &all } else { &news }, &ctx) {
                continue;
            }
            let mut out = visible.render(&out_ctx, &rendering);
            if s.show_changes
                && let Some(m) = out.as_object_mut()
            {
                for (iri, was) in &w.previous {
                    if !visible.attrs.contains_key(iri) {
                        continue;
                    }
                    let name = out_ctx.compact(iri);
                    let set = |inst: &mut Value| {
                        let ds = inst.get("datasetId").cloned();
                        let ty = inst
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("Property")
                            .to_string();
                        let (member, previous) = previous_member(&ty);
                        if let Some(before) = was
                            .iter()
                            .find(|b| b.get("datasetId").cloned() == ds)
                            .and_then(|b| {
                                b.get(member)
                                    .or_else(|| citytrust_model::ngsi::instance_value(b))
                            })
                            && let Some(o) = inst.as_object_mut()
                        {
                            let before = if ty == "VocabProperty" {
                                citytrust_model::ngsi::compact_vocab(&out_ctx, before)
                            } else {
                                before.clone()
                            };
                            o.insert(previous.into(), before);
                        }
                    };
                    match m.get_mut(&name) {
                        Some(Value::Array(items)) => items.iter_mut().for_each(set),
                        Some(one @ Value::Object(_)) => set(one),
                        _ => {}
                    }
                }
            }
            if let (Some(gone), Some(m)) = (&w.gone, out.as_object_mut()) {
                m.insert("deletedAt".into(), gone.at.clone().into());
            }
            data.push((visible, out));
        }
        if data.is_empty() {
            return Ok(None);
        }
        // Linked entities (notification.join): read as the subscriber may.
        let join_rendering = Rendering {
            join: s.join,
            ..rendering.clone()
        };
        let roots: Vec<&Entity> = data.iter().map(|(e, _)| e).collect();
        let linked = self
            .linked_entities(&actor, g.purpose.as_deref(), false, &roots, &join_rendering)
            .await?;
        let data: Vec<Value> = crate::streams::with_linked(
            data.iter().map(|(e, v)| (e, v.clone())).collect(),
            &out_ctx,
            &join_rendering,
            &linked,
        );
        let notification = json!({
            "id": format!("urn:ngsi-ld:Notification:{}", random_hex::<12>()?),
            "type": "Notification",
            "subscriptionId": s.id,
            "notifiedAt": rfc3339(self.now()),
            "data": data,
        });
        let ld = s.accept == "application/ld+json";
        let mut notification = notification;
        // The context named for the receiver: `jsonldContext`, else the one
        // the subscription was made under (terms compacted with the latter).
        let named: Value = match &s.jsonld_context {
            Some(c) => Value::String(c.clone()),
            None => ctx
                .source
                .clone()
                .unwrap_or_else(|| citytrust_model::ngsi::CORE_CONTEXT.into()),
        };
        if ld && let Some(m) = notification.as_object_mut() {
            m.insert("@context".into(), named.clone());
        }
        // Checked again at each delivery (a name where the client connects:
        // it may resolve elsewhere now; see `endpoints`).
        self.check_delivery_endpoint(&s.endpoint)?;
        let body =
            serde_json::to_vec(&notification).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
        let nonce = new_nonce()?;
        // Every stream read for it: those decided here, then those its
        // linked entities were read from (each once).
        let read_here: std::collections::HashSet<String> = decided.keys().cloned().collect();
        let reads: Vec<_> = decided
            .into_values()
            .chain(
                linked
                    .reads
                    .into_iter()
                    .filter(|(d, _, _)| !read_here.contains(&d.id)),
            )
            .collect();
        let streams: Vec<Value> = reads
            .iter()
            .map(|(d, grant, scope)| {
                let mut v = json!({
                    "dataset": d.id, "purpose": grant.purpose, "level": grant.level.as_str(),
                    "rule": grant.rule, "agreement": grant.agreement_id, "charter_version": grant.charter_version,
                });
                if let (Some(sc), Some(m)) = (scope, v.as_object_mut()) {
                    m.insert("subjects".into(), sc.rule.as_str().into());
                }
                v
            })
            .collect();
        let by = reads
            .first()
            .map(|(d, _, _)| reader_label(&actor, d))
            .unwrap_or_else(|| "individual".into());
        let entry = self.log_entry(
            "stream.notified",
            json!({
                "subscription": s.id,
                "streams": streams,
                "entities": data.len(),
                "bytes": body.len(),
                "commitment": commitment("served", &nonce, &sha256),
                "by": by,
            }),
        )?;
        let context = match &named {
            Value::String(u) => u.clone(),
            Value::Array(a) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            _ => citytrust_model::ngsi::CORE_CONTEXT.to_string(),
        };
        Ok(Some(Rendered {
            entry,
            body,
            nonce,
            ld,
            context,
            actor,
            reads,
        }))
    }

    /// The request that sends a notification committed to as the log's
    /// entry `log_index`.
    fn notification_request(
        &self,
        s: &Subscription,
        n: Rendered,
        log_index: i64,
    ) -> Result<reqwest::RequestBuilder> {
        let mut req = self
            .notify_http()?
            .post(&s.endpoint)
            .timeout(DELIVERY_TIMEOUT)
            .header(
                "content-type",
                if n.ld {
                    "application/ld+json"
                } else {
                    "application/json"
                },
            )
            .header("citytrust-log-entry", log_index.to_string())
            .header("citytrust-log-nonce", n.nonce);
        for (k, v) in &s.receiver_info {
            // Names and values that are not valid in HTTP are left out.
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                req = req.header(k, v);
            }
        }
        if !n.ld {
            req = req.header(
                "link",
                format!(
                    "<{}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
                    n.context
                ),
            );
        }
        Ok(req.body(n.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decisions are added to and used only under the revision and day
    /// they were made at; a newer pass starts the set afresh, an older
    /// one keeps nothing.
    #[test]
    fn decisions_are_kept_only_under_the_revision_and_day_they_were_made_at() {
        let mut d = Decisions::default();
        d.under((5, 100))
            .unwrap()
            .actors
            .insert("ana".into(), Actor::Anonymous);
        assert!(d.under((5, 100)).unwrap().actors.contains_key("ana"));
        // A pass that read an older revision: neither used nor added to.
        assert!(d.under((4, 100)).is_none());
        assert!(d.under((5, 100)).unwrap().actors.contains_key("ana"));
        // The revision moved, or the day changed: afresh.
        assert!(d.under((6, 100)).unwrap().actors.is_empty());
        d.under((6, 100))
            .unwrap()
            .actors
            .insert("ana".into(), Actor::Anonymous);
        assert!(d.under((6, 101)).unwrap().actors.is_empty());
        // Past the bound: afresh too.
        let kept = d.under((6, 101)).unwrap();
        for i in 0..DECISIONS_KEPT {
            kept.actors.insert(format!("u{i}"), Actor::Anonymous);
        }
        assert!(d.under((6, 101)).unwrap().actors.is_empty());
    }
}
