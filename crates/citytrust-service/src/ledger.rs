//! The transparency log as a service: entries are appended by the store in the
//! transaction of the change they record (see `Service::log_entry`); the
//! integrator here folds committed entries into the Merkle tree, and signs a
//! checkpoint for each new size; readers get entries with inclusion proofs
//! and consistency proofs between checkpoints.
//!
//! Invariant: a checkpoint is signed only after the new tree has been proven
//! consistent with the last stored checkpoint, so the log never signs two
//! inconsistent views — also after a crash, because the tree state is
//! reloaded from (and checked against) the database on start.

use citytrust_ledger::checkpoint::LogSigner;
use citytrust_ledger::{Hash, entry};
use citytrust_store::{LedgerIndexRow, NewLogEntry, StoreError, StoredCheckpoint};
use tlog_tiles::tlog;

use crate::{Result, Service, ServiceError, rfc3339};

/// Most entries folded into the tree per checkpoint.
const BATCH: i64 = 4096;

/// The 32-byte seed of the log's Ed25519 key. Never printed.
#[derive(Clone)]
pub struct LedgerSeed(pub [u8; 32]);

impl std::fmt::Debug for LedgerSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerSeed(<hidden>)")
    }
}

/// The Merkle tree as far as it is checkpointed: every stored hash (tlog layout).
#[derive(Default)]
struct TreeState {
    size: u64,
    hashes: Vec<tlog::Hash>,
}

/// The newest checkpoint this node signed, as kept outside the database.
struct Witness {
    size: u64,
    root: tlog::Hash,
}

/// The tree must be the witnessed one, or extend it.
fn check_extends(size: u64, hashes: &[tlog::Hash], witness: &Witness) -> Result<()> {
    if size < witness.size {
        return Err(corrupt(format!(
            "the database holds a log of {} entries, but this node signed a checkpoint of {} \
             (see the ledger-witness file): the database lost entries or was restored from an older \
             backup; refusing to sign a log that is not consistent with it",
            size, witness.size
        )));
    }
    let root =
        tlog::tree_hash(witness.size, &Reader(hashes)).map_err(|e| corrupt(e.to_string()))?;
    if root != witness.root {
        return Err(corrupt(format!(
            "the log in the database is not consistent with checkpoint {} this node signed \
             (see the ledger-witness file): its first {} entries were rewritten; refusing to sign it",
            witness.size, witness.size
        )));
    }
    Ok(())
}

struct Reader<'a>(&'a [tlog::Hash]);

impl tlog::HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|i| {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| self.0.get(i))
                    .copied()
                    .ok_or(tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
}

pub(crate) struct Ledger {
    pub(crate) signer: LogSigner,
    state: tokio::sync::Mutex<TreeState>,
}

/// An entry with the proof that it is in the log.
#[derive(Debug, Clone)]
pub struct ProvenEntry {
    pub index: u64,
    /// The canonical encoding.
    pub body: String,
    pub leaf_hash: Hash,
    /// RFC 6962 inclusion proof, leaf to root.
    pub proof: Vec<Hash>,
    pub checkpoint: StoredCheckpoint,
    /// `checkpoint.root`, decoded.
    pub root: Hash,
}

fn corrupt(why: impl Into<String>) -> ServiceError {
    ServiceError::Internal(format!("transparency log: {}", why.into()))
}

fn hex_hash(h: &[u8]) -> String {
    hex::encode(h)
}

fn parse_hex_hash(s: &str) -> Result<tlog::Hash> {
    let bytes = hex::decode(s).map_err(|_| corrupt("a stored hash is not hex"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| corrupt("a stored hash is not 32 bytes"))?;
    Ok(tlog::Hash(arr))
}

impl Ledger {
    pub(crate) fn new(origin: &str, seed: &LedgerSeed) -> Result<Ledger> {
        let signer = LogSigner::from_seed(origin, &seed.0)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(Ledger {
            signer,
            state: tokio::sync::Mutex::new(TreeState::default()),
        })
    }
}

/// An entry waiting for its group commit.
struct Pending {
    kind: String,
    body: String,
    at: String,
    done: tokio::sync::oneshot::Sender<Result<i64>>,
}

/// Most entries committed in one transaction.
const GROUP: usize = 2048;

/// The group committer for entries that record no other change (reads,
/// queries): callers wait until their entry is committed — durably — and
/// get its index; entries arriving while a commit is under way go together
/// in the next one, so one disk flush serves many reads.
///
/// Entries that record a change of state are not appended here: they commit
/// in the transaction of their change.
#[derive(Clone)]
pub struct Appender {
    queue: tokio::sync::mpsc::Sender<Pending>,
}

impl Appender {
    /// Start the committer over `store`; it stops when the last handle is dropped.
    pub fn spawn(store: citytrust_store::Store) -> Appender {
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Pending>(GROUP * 4);
        tokio::spawn(async move {
            let mut batch: Vec<Pending> = Vec::with_capacity(GROUP);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < GROUP {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let entries: Vec<NewLogEntry<'_>> = batch
                    .iter()
                    .map(|p| new_entry(&p.kind, &p.body, &p.at))
                    .collect();
                let result = store.append_log_batch(&entries).await;
                drop(entries);
                match result {
                    Ok(first) => {
                        for (i, p) in batch.drain(..).enumerate() {
                            let _ = p.done.send(Ok(first + i as i64));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, entries = batch.len(), "could not append to the transparency log");
                        let unreachable = e.is_unreachable();
                        for p in batch.drain(..) {
                            let _ = p.done.send(Err(if unreachable {
                                crate::error::database_unreachable()
                            } else {
                                ServiceError::Internal(format!("transparency log: {e}"))
                            }));
                        }
                    }
                }
            }
        });
        Appender { queue }
    }

    /// Append one entry; returns its index once it is committed. An error
    /// means it is not in the log, and the caller must not go on (fail closed).
    pub async fn append(&self, kind: &str, body: String, at: String) -> Result<i64> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.queue
            .send(Pending {
                kind: kind.to_string(),
                body,
                at,
                done,
            })
            .await
            .map_err(|_| ServiceError::Internal("transparency log: the appender stopped".into()))?;
        wait.await
            .map_err(|_| ServiceError::Internal("transparency log: the appender stopped".into()))?
    }
}

impl Service {
    /// Sign `text` (which must not parse as a checkpoint: its second line is
    /// not a tree size) as a C2SP signed note with the log's key.
    pub(crate) fn sign_statement(&self, text: &str) -> Result<String> {
        debug_assert!(
            text.lines()
                .nth(1)
                .is_none_or(|l| l.parse::<u64>().is_err())
        );
        let note = self
            .ledger
            .signer
            .sign_note(text.as_bytes())
            .map_err(|e| ServiceError::Internal(format!("signing: {e}")))?;
        String::from_utf8(note).map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// The log's signed-note verifier key.
    pub fn ledger_verifier_key(&self) -> &str {
        self.ledger.signer.verifier_key()
    }

    /// The log's origin line (and key name).
    pub fn ledger_origin(&self) -> &str {
        self.ledger.signer.origin()
    }

    /// Encode an entry for the log, stamped with the current time.
    pub(crate) fn log_entry(
        &self,
        kind: &str,
        fields: serde_json::Value,
    ) -> Result<(String, String)> {
        let at = rfc3339(self.now());
        let body =
            entry::encode(kind, &at, fields).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let body = String::from_utf8(body).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok((body, at))
    }

    /// Like [`Service::log_entry`], for an action an agent may have taken for
    /// someone: the entry then says so, naming the authority and its kind
    /// (never the people).
    pub(crate) fn log_entry_by(
        &self,
        actor: &citytrust_model::Actor,
        kind: &str,
        mut fields: serde_json::Value,
    ) -> Result<(String, String)> {
        if let (Some(agent), Some(map)) = (actor.agent(), fields.as_object_mut()) {
            map.insert(
                "agent".into(),
                serde_json::json!({"authority": agent.authority_id, "kind": agent.kind.as_str()}),
            );
        }
        self.log_entry(kind, fields)
    }

    /// Load the checkpointed tree from the database and check it: every stored
    /// hash is present and the root recomputes to the last signed one.
    pub(crate) async fn load_ledger(&self) -> Result<()> {
        let mut state = self.ledger.state.lock().await;
        *state = self.read_tree().await?;
        if let Some(witness) = self.read_witness()? {
            check_extends(state.size, &state.hashes, &witness)?;
        }
        let size = i64::try_from(state.size).map_err(|_| corrupt("log too large"))?;
        drop(state);
        self.catch_up_ledger_index(size).await
    }

    /// Index signed entries that a log kept before `ledger_index` existed
    /// holds (new entries are indexed with the checkpoint that signs them).
    async fn catch_up_ledger_index(&self, size: i64) -> Result<()> {
        let mut next = self.store.ledger_indexed().await?;
        while next < size {
            let batch = self
                .store
                .ledger_entries(next, BATCH.min(size - next))
                .await?;
            let Some(&(last, _)) = batch.last() else {
                return Err(corrupt(format!("entry {next} is missing")));
            };
            let rows: Vec<LedgerIndexRow> = batch
                .iter()
                .flat_map(|(idx, body)| index_rows(*idx, body))
                .collect();
            self.store.add_ledger_index(&rows, last + 1).await?;
            next = last + 1;
        }
        Ok(())
    }

    /// The checkpoint recorded in the witness file, if there is one.
    fn read_witness(&self) -> Result<Option<Witness>> {
        let Some(path) = &self.settings.ledger_witness else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(corrupt(format!("could not read {}: {e}", path.display())));
            }
        };
        let mut lines = text.lines();
        let size = lines.next().and_then(|l| l.trim().parse::<u64>().ok());
        let root = lines
            .next()
            .map(str::trim)
            .and_then(|h| parse_hex_hash(h).ok());
        match (size, root) {
            (Some(size), Some(root)) => Ok(Some(Witness { size, root })),
            _ => Err(corrupt(format!(
                "{} is not a checkpoint witness (a size and a root in hex)",
                path.display()
            ))),
        }
    }

    /// Record a signed checkpoint in the witness file (written whole, then renamed).
    fn write_witness(&self, size: u64, root: &tlog::Hash) -> Result<()> {
        let Some(path) = &self.settings.ledger_witness else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{size}\n{}", hex_hash(&root.0))?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| corrupt(format!("could not write {}: {e}", path.display())))
    }

    async fn read_tree(&self) -> Result<TreeState> {
        let Some(cp) = self.store.latest_checkpoint().await? else {
            return Ok(TreeState::default());
        };
        let size = u64::try_from(cp.size).map_err(|_| corrupt("negative checkpoint size"))?;
        let rows = self.store.ledger_hashes().await?;
        let want = tlog::stored_hash_count(size);
        let mut hashes = Vec::with_capacity(rows.len());
        for (i, (id, hash)) in rows.iter().enumerate() {
            if u64::try_from(*id).ok() != Some(i as u64) {
                return Err(corrupt(format!("stored hash {i} is missing")));
            }
            if (i as u64) < want {
                hashes.push(parse_hex_hash(hash)?);
            }
        }
        if (hashes.len() as u64) < want {
            return Err(corrupt(format!(
                "{} stored hashes for a checkpoint of size {size}; need {want}",
                hashes.len()
            )));
        }
        // Recompute every stored hash from the entries themselves: an edited
        // entry or hash stops the service rather than being served as proven.
        let mut recomputed: Vec<tlog::Hash> = Vec::with_capacity(hashes.len());
        self.fold_stored_entries(&mut recomputed, 0, size).await?;
        if let Some(i) = recomputed.iter().zip(&hashes).position(|(a, b)| a != b) {
            let (level, n) = tlog::split_stored_hash_index(i as u64);
            return Err(corrupt(format!(
                "the stored tree does not match its entries (hash {i}: level {level}, node {n})"
            )));
        }
        let root = tlog::tree_hash(size, &Reader(&hashes)).map_err(|e| corrupt(e.to_string()))?;
        if hex_hash(&root.0) != cp.root {
            return Err(corrupt(format!(
                "the stored tree does not match checkpoint {size}"
            )));
        }
        Ok(TreeState { size, hashes })
    }

    /// Fold the stored entries `from..to` into `hashes` (the tree of `from`
    /// entries), in order; a missing entry is corruption.
    async fn fold_stored_entries(
        &self,
        hashes: &mut Vec<tlog::Hash>,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let mut next = from;
        while next < to {
            let at = i64::try_from(next).map_err(|_| corrupt("log too large"))?;
            let batch = self.store.ledger_entries(at, BATCH).await?;
            if batch.is_empty() {
                return Err(corrupt(format!("entry {next} is missing")));
            }
            for (idx, body) in batch {
                if next >= to {
                    break;
                }
                if u64::try_from(idx).ok() != Some(next) {
                    return Err(corrupt(format!("entry {next} is missing")));
                }
                let stored = tlog::stored_hashes(next, body.as_bytes(), &Reader(hashes))
                    .map_err(|e| corrupt(e.to_string()))?;
                hashes.extend(stored);
                next += 1;
            }
        }
        Ok(())
    }

    /// Bring this node's tree up to the newest checkpoint in the database,
    /// which another node's sequencer may have signed: the entries since
    /// this node's size are folded in (so an edited entry is caught as at
    /// start) and the result must give the checkpoint's root; anything else
    /// — a checkpoint older than this node's tree, a root that does not
    /// match — rebuilds the tree from every entry, as at start.
    async fn catch_up(&self, state: &mut TreeState) -> Result<()> {
        let Some(cp) = self.store.latest_checkpoint().await? else {
            return Ok(());
        };
        let size = u64::try_from(cp.size).map_err(|_| corrupt("negative checkpoint size"))?;
        if size == state.size {
            return Ok(());
        }
        if size > state.size {
            let mut hashes = std::mem::take(&mut state.hashes);
            let base = hashes.len();
            let folded = match self
                .fold_stored_entries(&mut hashes, state.size, size)
                .await
            {
                Ok(()) => {
                    tlog::tree_hash(size, &Reader(&hashes)).map_err(|e| corrupt(e.to_string()))
                }
                Err(e) => Err(e),
            };
            match folded {
                Ok(root) if hex_hash(&root.0) == cp.root => {
                    *state = TreeState { size, hashes };
                    return Ok(());
                }
                Ok(_) => {
                    // This node's tree stays whole should the rebuild fail.
                    hashes.truncate(base);
                    state.hashes = hashes;
                }
                Err(e) => {
                    hashes.truncate(base);
                    state.hashes = hashes;
                    return Err(e);
                }
            }
        }
        // Not an extension of this node's tree: rebuild it (and fail as at
        // start, naming the entry, if the database does not hold one history).
        *state = self.read_tree().await?;
        Ok(())
    }

    /// Fold committed entries into the tree and sign a checkpoint for the new
    /// size. Returns the new size, or `None` when there was nothing to do.
    pub async fn integrate_ledger(&self) -> Result<Option<u64>> {
        let mut state = self.ledger.state.lock().await;
        // Another node may have integrated meanwhile.
        self.catch_up(&mut state).await?;
        let from = i64::try_from(state.size).map_err(|_| corrupt("log too large"))?;
        let entries = self.store.ledger_entries(from, BATCH).await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let old_size = state.size;
        let old_root = if old_size > 0 {
            Some(
                tlog::tree_hash(old_size, &Reader(&state.hashes))
                    .map_err(|e| corrupt(e.to_string()))?,
            )
        } else {
            None
        };
        // Fold into the tree in place (no copy of the whole tree per batch);
        // whatever goes wrong, the tree is cut back to the checkpointed size.
        let base = state.hashes.len();
        let folded = self
            .fold_and_sign(&mut state.hashes, old_size, old_root, &entries)
            .await;
        match folded {
            Ok(Some(size)) => {
                state.size = size;
                // Bundles this checkpoint completed are written once, now.
                for n in old_size / TILE_WIDTH..size / TILE_WIDTH {
                    if let Err(e) = self.full_bundle(n, &state.hashes, &entries).await {
                        tracing::warn!(bundle = n, error = %e, "could not keep a full entry bundle");
                    }
                }
                Ok(Some(size))
            }
            Ok(None) => {
                state.hashes.truncate(base);
                Ok(None)
            }
            Err(ServiceError::Conflict(_)) => {
                // Another node got there first; take its tree.
                state.hashes.truncate(base);
                self.catch_up(&mut state).await?;
                Ok(None)
            }
            Err(e) => {
                state.hashes.truncate(base);
                Err(e)
            }
        }
    }

    /// Add `entries` (from index `old_size`) to `hashes`, prove the new tree
    /// consistent with the old one and with the witness, sign it and store
    /// hashes and checkpoint. `None`: nothing to add. A `Conflict` error:
    /// another node stored this checkpoint first.
    async fn fold_and_sign(
        &self,
        hashes: &mut Vec<tlog::Hash>,
        old_size: u64,
        old_root: Option<tlog::Hash>,
        entries: &[(i64, String)],
    ) -> Result<Option<u64>> {
        let mut new_rows = Vec::new();
        let mut index = Vec::new();
        let mut size = old_size;
        for (idx, body) in entries {
            if u64::try_from(*idx).ok() != Some(size) {
                break; // not yet committed: stop at the gap
            }
            index.extend(index_rows(*idx, body));
            let stored = tlog::stored_hashes(size, body.as_bytes(), &Reader(hashes))
                .map_err(|e| corrupt(e.to_string()))?;
            for h in stored {
                new_rows.push((hashes.len() as i64, hex_hash(&h.0)));
                hashes.push(h);
            }
            size += 1;
        }
        if size == old_size {
            return Ok(None);
        }
        let root = tlog::tree_hash(size, &Reader(hashes)).map_err(|e| corrupt(e.to_string()))?;
        if let Some(witness) = self.read_witness()? {
            check_extends(size, hashes, &witness)?;
        }
        if let Some(old_root) = old_root {
            let proof = tlog::prove_tree(size, old_size, &Reader(hashes))
                .map_err(|e| corrupt(e.to_string()))?;
            tlog::check_tree(&proof, size, root, old_size, old_root).map_err(|_| {
                corrupt(format!(
                    "refusing to sign: tree {size} is not consistent with checkpoint {old_size}"
                ))
            })?;
        }
        let note = self
            .ledger
            .signer
            .sign_checkpoint(size, &root.0)
            .map_err(|e| corrupt(e.to_string()))?;
        let checkpoint = StoredCheckpoint {
            size: i64::try_from(size).map_err(|_| corrupt("log too large"))?,
            root: hex_hash(&root.0),
            note: String::from_utf8(note).map_err(|e| corrupt(e.to_string()))?,
            created_at: rfc3339(self.now()),
        };
        match self
            .store
            .record_integration(&new_rows, &checkpoint, &index)
            .await
        {
            Ok(()) => {
                self.write_witness(size, &root)?;
                Ok(Some(size))
            }
            Err(StoreError::Conflict(what)) => Err(ServiceError::Conflict(what)),
            Err(e) => Err(e.into()),
        }
    }

    /// The newest signed checkpoint, if the log has any entries integrated.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        Ok(self.store.latest_checkpoint().await?)
    }

    /// Entry `index` with its inclusion proof against the newest checkpoint.
    pub async fn ledger_entry(&self, index: u64) -> Result<ProvenEntry> {
        let not_found =
            || ServiceError::NotFound(format!("log entry {index} (not yet in a checkpoint)"));
        let mut state = self.ledger.state.lock().await;
        if index >= state.size {
            self.catch_up(&mut state).await?;
        }
        if index >= state.size {
            return Err(not_found());
        }
        let size_i64 = i64::try_from(state.size).map_err(|_| not_found())?;
        let checkpoint = self
            .store
            .checkpoint_at(size_i64)
            .await?
            .ok_or_else(not_found)?;
        let body = self
            .store
            .ledger_entry(i64::try_from(index).map_err(|_| not_found())?)
            .await?
            .ok_or_else(not_found)?;
        let proof = tlog::prove_record(state.size, index, &Reader(&state.hashes))
            .map_err(|e| corrupt(e.to_string()))?;
        let root = parse_hex_hash(&checkpoint.root)?.0;
        // With the cosignatures the checkpoint has gathered (none without a policy).
        let mut checkpoint = checkpoint;
        for (_, line) in self.store.cosignatures_at(checkpoint.size).await? {
            checkpoint.note.push_str(&line);
        }
        Ok(ProvenEntry {
            root,
            index,
            leaf_hash: citytrust_ledger::leaf_hash(body.as_bytes()),
            body,
            proof: proof.into_iter().map(|h| h.0).collect(),
            checkpoint,
        })
    }

    /// Up to `limit` entries from index `from`, as stored (canonical encoding).
    pub async fn ledger_bodies(&self, from: u64, limit: u64) -> Result<Vec<(u64, String)>> {
        let from = i64::try_from(from).map_err(|_| corrupt("index too large"))?;
        let limit = i64::try_from(limit.min(1000)).unwrap_or(1000);
        Ok(self
            .store
            .ledger_entries(from, limit)
            .await?
            .into_iter()
            .filter_map(|(i, body)| u64::try_from(i).ok().map(|i| (i, body)))
            .collect())
    }

    /// The inclusion proof of entry `index` in the newest checkpointed tree
    /// (from the tree held in memory; no database read).
    pub async fn ledger_inclusion_proof(&self, index: u64) -> Result<Vec<Hash>> {
        let mut state = self.ledger.state.lock().await;
        if index >= state.size {
            // Another node may have signed a newer checkpoint.
            self.catch_up(&mut state).await?;
        }
        if index >= state.size {
            return Err(ServiceError::NotFound(format!(
                "log entry {index} (not yet in a checkpoint)"
            )));
        }
        let proof = tlog::prove_record(state.size, index, &Reader(&state.hashes))
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(proof.into_iter().map(|h| h.0).collect())
    }

    /// The consistency proof from the tree of `from` entries to the tree of `to` entries.
    pub async fn ledger_consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        let mut state = self.ledger.state.lock().await;
        if to > state.size {
            self.catch_up(&mut state).await?;
        }
        if from == 0 || from > to || to > state.size {
            return Err(citytrust_model::ValidationErrors::single(
                "from",
                format!(
                    "need 1 <= from <= to <= {} (the newest checkpoint)",
                    state.size
                ),
            )
            .into());
        }
        let proof = tlog::prove_tree(to, from, &Reader(&state.hashes))
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(proof.into_iter().map(|h| h.0).collect())
    }
}

/// What entry `idx` is about, read from its public encoding alone: the
/// datasets it names (one row each), its purpose, the party that acted or
/// received (an organisation, a group, `individual` or `public`), the
/// agreement and request. An entry that does not decode is indexed by
/// position only (the verifier, not the index, judges entries).
pub(crate) fn index_rows(idx: i64, body: &str) -> Vec<LedgerIndexRow> {
    // Parsed, not re-checked for canonical form: the sequencer indexes what
    // it signs, and verifiers judge the encoding (`entry::check`).
    let fields = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => {
            return vec![LedgerIndexRow {
                idx,
                kind: "unreadable".into(),
                ..Default::default()
            }];
        }
    };
    let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let is_party = |p: &str| {
        p.starts_with("organization:")
            || p.starts_with("group:")
            || p == "individual"
            || p == "public"
    };
    let party = text("by")
        .filter(|p| is_party(p))
        .or_else(|| text("recipient").filter(|p| is_party(p)));
    // (dataset, agreement) pairs: a query's inputs each name their own.
    let agreement = text("agreement");
    let mut targets: Vec<(Option<String>, Option<String>)> =
        match (fields.get("inputs"), fields.get("datasets")) {
            (Some(serde_json::Value::Array(inputs)), _) => inputs
                .iter()
                .map(|i| {
                    let field = |k: &str| i.get(k).and_then(|v| v.as_str()).map(str::to_string);
                    (field("dataset"), field("agreement"))
                })
                .collect(),
            (_, Some(serde_json::Value::Array(a))) => a
                .iter()
                .filter_map(|v| v.as_str())
                .map(|d| (Some(d.to_string()), agreement.clone()))
                .collect(),
            _ => text("dataset")
                .map(|d| (Some(d), agreement.clone()))
                .into_iter()
                .collect(),
        };
    if targets.is_empty() {
        targets.push((None, agreement));
    }
    let day: String = text("at").unwrap_or_default().chars().take(10).collect();
    let mut kind = text("type").unwrap_or_else(|| "unreadable".into());
    // A query that served nothing is an attempt, not a use: indexed apart
    // (`query.refused`, `query.failed`) so the analytics count uses.
    if kind == "query.run"
        && let Some(outcome) = text("outcome").filter(|o| o != "served")
    {
        kind = format!("query.{outcome}");
    }
    let purpose = text("purpose");
    let request = text("request");
    let subject = text("subject");
    targets
        .into_iter()
        .map(|(dataset, agreement)| LedgerIndexRow {
            idx,
            kind: kind.clone(),
            day: day.clone(),
            dataset,
            purpose: purpose.clone(),
            party: party.clone(),
            agreement,
            request: request.clone(),
            subject: subject.clone(),
        })
        .collect()
}

/// The log entry for a store write, borrowed for the call.
pub(crate) fn new_entry<'a>(kind: &'a str, body: &'a str, at: &'a str) -> NewLogEntry<'a> {
    NewLogEntry { kind, body, at }
}

/// A log entry made (its canonical body and time fixed) but not yet stored:
/// several are stored with the change they record, in one transaction.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub kind: String,
    pub body: String,
    pub at: String,
}

impl PendingEntry {
    /// The entry as the store takes it.
    pub fn as_new(&self) -> NewLogEntry<'_> {
        new_entry(&self.kind, &self.body, &self.at)
    }
}

/// Tile height of the C2SP tlog-tiles layout: 2^8 = 256 hashes per full tile.
pub const TILE_HEIGHT: u8 = 8;
const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

impl Service {
    /// How many hashes exist at tile level `level` in the checkpointed tree.
    fn hashes_at_level(size: u64, level: u8) -> u64 {
        size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
            .unwrap_or(0)
    }

    /// The hash tile `level`/`n` of `width` hashes (C2SP tlog-tiles), from the checkpointed tree.
    pub async fn ledger_tile(&self, level: u8, n: u64, width: u64) -> Result<Vec<u8>> {
        let mut state = self.ledger.state.lock().await;
        let not_found = || ServiceError::NotFound(format!("tile {level}/{n} of width {width}"));
        if width == 0 || width > TILE_WIDTH || level > 7 {
            return Err(not_found());
        }
        let end = n
            .checked_mul(TILE_WIDTH)
            .and_then(|s| s.checked_add(width))
            .ok_or_else(not_found)?;
        if end > Self::hashes_at_level(state.size, level) {
            // Another node may have signed a newer checkpoint.
            self.catch_up(&mut state).await?;
        }
        if end > Self::hashes_at_level(state.size, level) {
            return Err(not_found());
        }
        let tile = tlog_tiles::Tile::new(
            TILE_HEIGHT,
            level,
            n,
            u32::try_from(width).map_err(|_| not_found())?,
            false,
        );
        tile.read_data(&Reader(&state.hashes))
            .map_err(|e| corrupt(e.to_string()))
    }

    /// The entry bundle `n` of `width` entries: each entry prefixed by its length as a big-endian uint16.
    pub async fn ledger_entry_bundle(&self, n: u64, width: u64) -> Result<Vec<u8>> {
        let not_found = || ServiceError::NotFound(format!("entry bundle {n} of width {width}"));
        if width == 0 || width > TILE_WIDTH {
            return Err(not_found());
        }
        let start = n.checked_mul(TILE_WIDTH).ok_or_else(not_found)?;
        let end = start.checked_add(width).ok_or_else(not_found)?;
        let size = {
            let mut state = self.ledger.state.lock().await;
            if end > state.size {
                // Another node may have signed a newer checkpoint.
                self.catch_up(&mut state).await?;
            }
            state.size
        };
        if end > size {
            return Err(not_found());
        }
        if width == TILE_WIDTH
            && let Some(path) = self.bundle_file(n)
            && let Ok(bundle) = tokio::fs::read(&path).await
        {
            return Ok(bundle);
        }
        let state = self.ledger.state.lock().await;
        if width == TILE_WIDTH && self.settings.ledger_tiles.is_some() {
            return self.full_bundle(n, &state.hashes, &[]).await;
        }
        drop(state);
        self.bundle_from_store(start, width).await
    }

    /// Where full bundle `n` is kept, if bundles are kept.
    fn bundle_file(&self, n: u64) -> Option<std::path::PathBuf> {
        let dir = self.settings.ledger_tiles.as_ref()?;
        Some(dir.join(citytrust_ledger::tiles::tile_path(None, n, TILE_WIDTH)))
    }

    /// Full bundle `n` from the database, kept as a file (written whole,
    /// synced, renamed into place) when bundles are kept and every entry in
    /// it matches the signed tree's leaf hash.
    /// `known`: entries at hand (contiguous, in order), used when they hold the bundle.
    async fn full_bundle(
        &self,
        n: u64,
        hashes: &[tlog::Hash],
        known: &[(i64, String)],
    ) -> Result<Vec<u8>> {
        let start = n * TILE_WIDTH;
        let at_hand = known.first().and_then(|(first, _)| {
            let offset = usize::try_from(i64::try_from(start).ok()?.checked_sub(*first)?).ok()?;
            let slice = known.get(offset..offset + TILE_WIDTH as usize)?;
            let last_ok =
                slice.last().map(|(i, _)| *i) == i64::try_from(start + TILE_WIDTH - 1).ok();
            last_ok.then_some(slice)
        });
        let bundle = match at_hand {
            Some(slice) => frame(slice.iter().map(|(_, body)| body.as_str()))?,
            None => self.bundle_from_store(start, TILE_WIDTH).await?,
        };
        let leaves = citytrust_ledger::tiles::parse_entry_bundle(&bundle)
            .map_err(|e| corrupt(e.to_string()))?;
        for (i, body) in leaves.iter().enumerate() {
            let index = start + i as u64;
            let stored = hashes
                .get(tlog::stored_hash_index(0, index) as usize)
                .ok_or_else(|| corrupt(format!("no leaf hash for entry {index}")))?;
            if citytrust_ledger::leaf_hash(body) != stored.0 {
                // Served as stored, never kept: verifiers must see the change
                // and name the entry.
                tracing::error!(
                    entry = index,
                    "an entry in the database does not match the signed tree"
                );
                return Ok(bundle);
            }
        }
        if let Some(path) = self.bundle_file(n) {
            let bytes = bundle.clone();
            tokio::task::spawn_blocking(move || write_whole(&path, &bytes))
                .await
                .map_err(|e| corrupt(e.to_string()))?
                .map_err(|e| corrupt(format!("could not keep entry bundle {n}: {e}")))?;
        }
        Ok(bundle)
    }

    /// Bundle of `width` entries from index `start`, read from the database.
    async fn bundle_from_store(&self, start: u64, width: u64) -> Result<Vec<u8>> {
        let not_found = || ServiceError::NotFound(format!("entries {start}..{}", start + width));
        let from = i64::try_from(start).map_err(|_| not_found())?;
        let entries = self
            .store
            .ledger_entries(from, i64::try_from(width).map_err(|_| not_found())?)
            .await?;
        if entries.len() as u64 != width {
            return Err(corrupt(format!(
                "entries {start}..{} are not all stored",
                start + width
            )));
        }
        frame(entries.iter().map(|(_, body)| body.as_str()))
    }
}

/// Entries as a tlog-tiles entry bundle: each prefixed by its length as a big-endian uint16.
fn frame<'a>(bodies: impl Iterator<Item = &'a str>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for body in bodies {
        let len = u16::try_from(body.len())
            .map_err(|_| corrupt("an entry is longer than 65535 bytes"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body.as_bytes());
    }
    Ok(out)
}

/// Write `bytes` to `path` so that a reader sees all of it or nothing, and it
/// survives a power cut once this returns.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}
