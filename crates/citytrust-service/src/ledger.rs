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
use citytrust_ledger::hashtile::{self, HashTile, Layered, Location, Recorder, TileKey, TileSet};
use citytrust_ledger::{Hash, entry};
use citytrust_store::{LedgerIndexRow, NewLogEntry, StoreError, StoredCheckpoint, StoredTile};
use tlog_tiles::tlog;

use crate::{Result, Service, ServiceError, rfc3339};

/// Most entries folded into the tree per checkpoint.
const BATCH: i64 = 4096;

/// Tiles of the tree a node keeps in memory at most (16 KiB each, 64 MiB in
/// all): the right edge and the upper levels stay, as every proof reads them;
/// the rest are read from the database when a proof needs them.
const TILE_CACHE: usize = 4096;

/// The 32-byte seed of the log's Ed25519 key. Never printed.
#[derive(Clone)]
pub struct LedgerSeed(pub [u8; 32]);

impl std::fmt::Debug for LedgerSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerSeed(<hidden>)")
    }
}

/// The Merkle tree as far as it is checkpointed: its size and root, and the
/// tiles of it this node holds (a cache of the database's `ledger_tiles`).
struct TreeState {
    size: u64,
    root: tlog::Hash,
    tiles: TileSet,
}

impl Default for TreeState {
    fn default() -> Self {
        TreeState {
            size: 0,
            root: tlog::Hash(citytrust_ledger::empty_root()),
            tiles: TileSet::default(),
        }
    }
}

impl TreeState {
    /// Drop tiles beyond the cache's bound: full tiles off the right edge,
    /// bottom level first (each upper tile serves 256 times as many proofs).
    fn trim(&mut self) {
        if self.tiles.len() <= TILE_CACHE {
            return;
        }
        let keep: std::collections::HashSet<TileKey> = hashtile::edge(self.size)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut victims: Vec<TileKey> = self
            .tiles
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        victims.sort_by_key(|(level, _)| *level);
        let excess = self.tiles.len() - TILE_CACHE * 3 / 4;
        for key in victims.into_iter().take(excess) {
            self.tiles.remove(&key);
        }
    }
}

/// The newest checkpoint this node signed, as kept outside the database.
struct Witness {
    size: u64,
    root: tlog::Hash,
}

/// Any hash reader, behind a reference (tlog's functions take a sized reader).
struct Dyn<'a>(&'a dyn tlog::HashReader);

impl tlog::HashReader for Dyn<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<tlog::Hash>, tlog::Error> {
        self.0.read_hashes(indexes)
    }
}

pub(crate) struct Ledger {
    pub(crate) signer: LogSigner,
    state: tokio::sync::Mutex<TreeState>,
}

/// The proof that the tree of `size` entries holds leaf `leaf_hash` at `index`.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub root: Hash,
    pub leaf_hash: Hash,
    /// RFC 6962 inclusion proof, leaf to root.
    pub proof: Vec<Hash>,
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

fn tlog_err(e: tlog::Error) -> ServiceError {
    corrupt(e.to_string())
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

    /// Load the checkpointed tree from the database and check it — in time
    /// independent of the log's length: the tiles of the tree's right edge
    /// must give the newest checkpoint's root (and extend the one this node
    /// last signed), their interior rows must be the hashes of the rows
    /// below, and the newest entries (those of the last bottom tile) must be
    /// the leaves the tree holds. A log kept before tiles existed is built
    /// into tiles from its entries, once.
    pub(crate) async fn load_ledger(&self) -> Result<()> {
        let mut state = self.ledger.state.lock().await;
        *state = self.read_tree().await?;
        if let Some(witness) = self.read_witness()? {
            self.check_extends(&mut state, None, &witness).await?;
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

    /// The tree of the newest checkpoint, from its right edge (see `load_ledger`).
    async fn read_tree(&self) -> Result<TreeState> {
        let Some(cp) = self.store.latest_checkpoint().await? else {
            return Ok(TreeState::default());
        };
        let size = u64::try_from(cp.size).map_err(|_| corrupt("negative checkpoint size"))?;
        let root = parse_hex_hash(&cp.root)?;
        let mut state = TreeState {
            size,
            root,
            tiles: TileSet::default(),
        };
        let edge = edge_locations(size);
        let keys: Vec<(i64, i64)> = edge.iter().map(|l| tile_key_i64(l.tile)).collect();
        let held = self.store.ledger_tiles(&keys).await?;
        let whole = edge.iter().all(|l| {
            held.iter()
                .any(|t| tile_key_i64(l.tile) == (t.level, t.idx) && t.width >= l.width as i64)
        });
        if !whole {
            tracing::info!(
                entries = size,
                "building the log's tiles from its entries (once: a log kept before tiles, or tiles lost)"
            );
            self.rebuild_tiles(size).await?;
        }
        self.load_tiles(&mut state, edge.clone()).await?;
        let computed = self
            .read_with(&mut state, |r| tlog::tree_hash(size, r))
            .await?;
        if computed != root {
            return Err(corrupt(format!(
                "the stored tree does not match checkpoint {size} (its tiles give another root)"
            )));
        }
        for loc in &edge {
            let tile = state
                .tiles
                .get(&loc.tile)
                .ok_or_else(|| corrupt("an edge tile vanished"))?;
            if let Some((row, p)) = tile.first_inconsistency() {
                return Err(corrupt(format!(
                    "the stored tree does not match itself (tile {}/{}, row {row}, node {p})",
                    loc.tile.0, loc.tile.1
                )));
            }
        }
        // The newest entries against the leaves: an edited entry stops the
        // node rather than being served as proven (older entries are checked
        // when their bundle is first served, and by every verifier).
        let last = size - 1;
        let first = last - last % hashtile::WIDTH;
        // Not on the edge when the tree ends a bottom tile (size a multiple of 256).
        self.load_tiles(
            &mut state,
            vec![Location {
                tile: (0, first / hashtile::WIDTH),
                row: 0,
                position: last - first,
                width: size - first,
            }],
        )
        .await?;
        let entries = self
            .store
            .ledger_entries(first as i64, (size - first) as i64)
            .await?;
        let leaves = state
            .tiles
            .get(&(0, first / hashtile::WIDTH))
            .ok_or_else(|| corrupt("the last bottom tile vanished"))?;
        for i in first..size {
            let stored = entries
                .get((i - first) as usize)
                .filter(|(idx, _)| *idx as u64 == i)
                .ok_or_else(|| corrupt(format!("entry {i} is missing")))?;
            if leaves.get(0, i - first) != Some(tlog::record_hash(stored.1.as_bytes())) {
                return Err(corrupt(format!(
                    "the stored tree does not match its entries (entry {i})"
                )));
            }
        }
        Ok(state)
    }

    /// Build the tiles of the first `size` entries from the entries
    /// themselves and store them (bounded memory: full tiles are written
    /// and dropped as the fold goes). The caller checks the result against
    /// the signed checkpoint.
    async fn rebuild_tiles(&self, size: u64) -> Result<()> {
        let mut tiles = TileSet::default();
        let mut dirty: std::collections::BTreeSet<TileKey> = Default::default();
        let mut next = 0u64;
        while next < size {
            let batch = self
                .store
                .ledger_entries(next as i64, BATCH.min((size - next) as i64))
                .await?;
            if batch.is_empty() {
                return Err(corrupt(format!("entry {next} is missing")));
            }
            for (idx, body) in batch {
                if idx as u64 != next {
                    return Err(corrupt(format!("entry {next} is missing")));
                }
                dirty.extend(tiles.append(next, body.as_bytes()).map_err(tlog_err)?);
                next += 1;
            }
            let rows: Vec<StoredTile> = dirty
                .iter()
                .filter_map(|k| stored_tile(*k, tiles.get(k)?))
                .collect();
            self.store.put_ledger_tiles(&rows).await?;
            dirty.clear();
            // Keep only the right edge: the rest is stored and never changes.
            let edge: std::collections::HashSet<TileKey> =
                hashtile::edge(next).into_iter().map(|(k, _)| k).collect();
            let done: Vec<TileKey> = tiles
                .keys()
                .filter(|k| !edge.contains(k))
                .copied()
                .collect();
            for k in done {
                tiles.remove(&k);
            }
        }
        Ok(())
    }

    /// Read into the cache the tiles holding `needs` that it lacks (or holds
    /// too narrow). A tile the tree needs and the database lacks is corruption.
    async fn load_tiles(&self, state: &mut TreeState, needs: Vec<Location>) -> Result<()> {
        let missing: Vec<Location> = needs
            .into_iter()
            .filter(|l| !state.tiles.holds(l))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let keys: Vec<(i64, i64)> = missing.iter().map(|l| tile_key_i64(l.tile)).collect();
        for row in self.store.ledger_tiles(&keys).await? {
            let key = (
                u8::try_from(row.level)
                    .map_err(|_| corrupt("a stored tile's level is out of range"))?,
                u64::try_from(row.idx).map_err(|_| corrupt("a stored tile's index is negative"))?,
            );
            let width = u64::try_from(row.width)
                .map_err(|_| corrupt("a stored tile's width is negative"))?;
            let tile =
                HashTile::decode(key, width, &row.hashes).map_err(|e| corrupt(e.to_string()))?;
            state.tiles.insert(key, tile);
        }
        if let Some(l) = missing.iter().find(|l| !state.tiles.holds(l)) {
            return Err(corrupt(format!(
                "tile {}/{} is missing or narrower than the signed tree ({} hashes needed)",
                l.tile.0, l.tile.1, l.width
            )));
        }
        Ok(())
    }

    /// Run a computation over the tree: once to learn which tiles it reads,
    /// then, with those in the cache, for real. `overlay` (tiles being
    /// grown, not yet stored) is read before the cache.
    async fn read_with_overlay<T>(
        &self,
        state: &mut TreeState,
        overlay: Option<&TileSet>,
        f: impl Fn(&Dyn<'_>) -> std::result::Result<T, tlog::Error>,
    ) -> Result<T> {
        let rec = Recorder::default();
        let _ = f(&Dyn(&rec));
        let needs: Vec<Location> = rec
            .needs()
            .into_iter()
            .filter(|l| !overlay.is_some_and(|o| o.holds(l)))
            .collect();
        self.load_tiles(state, needs).await?;
        match overlay {
            Some(o) => f(&Dyn(&Layered(o, &state.tiles))),
            None => f(&Dyn(&state.tiles)),
        }
        .map_err(tlog_err)
    }

    async fn read_with<T>(
        &self,
        state: &mut TreeState,
        f: impl Fn(&Dyn<'_>) -> std::result::Result<T, tlog::Error>,
    ) -> Result<T> {
        self.read_with_overlay(state, None, f).await
    }

    /// The tree (of `size` entries, grown in `overlay`, or the state's own)
    /// must be the witnessed one, or extend it.
    async fn check_extends(
        &self,
        state: &mut TreeState,
        grown: Option<(u64, &TileSet)>,
        witness: &Witness,
    ) -> Result<()> {
        let (size, overlay) = match grown {
            Some((size, o)) => (size, Some(o)),
            None => (state.size, None),
        };
        if size < witness.size {
            return Err(corrupt(format!(
                "the database holds a log of {} entries, but this node signed a checkpoint of {} \
                 (see the ledger-witness file): the database lost entries or was restored from an older \
                 backup; refusing to sign a log that is not consistent with it",
                size, witness.size
            )));
        }
        let root = self
            .read_with_overlay(state, overlay, |r| tlog::tree_hash(witness.size, r))
            .await?;
        if root != witness.root {
            return Err(corrupt(format!(
                "the log in the database is not consistent with checkpoint {} this node signed \
                 (see the ledger-witness file): its first {} entries were rewritten; refusing to sign it",
                witness.size, witness.size
            )));
        }
        Ok(())
    }

    /// Bring this node's tree up to the newest checkpoint in the database,
    /// which another node's sequencer may have signed: the tiles of its
    /// right edge are read and must give the checkpoint's root. A
    /// checkpoint older than this node's tree is a database that lost
    /// entries, and is refused.
    async fn catch_up(&self, state: &mut TreeState) -> Result<()> {
        let Some(cp) = self.store.latest_checkpoint().await? else {
            if state.size > 0 {
                return Err(corrupt(format!(
                    "the database holds no checkpoint, but this node's tree has {} entries",
                    state.size
                )));
            }
            return Ok(());
        };
        let size = u64::try_from(cp.size).map_err(|_| corrupt("negative checkpoint size"))?;
        if size == state.size {
            return Ok(());
        }
        if size < state.size {
            return Err(corrupt(format!(
                "the database's newest checkpoint is {size}, older than this node's tree of {}: \
                 the database lost entries or was restored from an older backup",
                state.size
            )));
        }
        let root = parse_hex_hash(&cp.root)?;
        let computed = self.read_with(state, |r| tlog::tree_hash(size, r)).await?;
        if computed != root {
            return Err(corrupt(format!(
                "the stored tree does not match checkpoint {size} (its tiles give another root)"
            )));
        }
        state.size = size;
        state.root = root;
        Ok(())
    }

    /// Fold committed entries into the tree and sign a checkpoint for the new
    /// size. Returns the new size, or `None` when there was nothing to do.
    pub async fn integrate_ledger(&self) -> Result<Option<u64>> {
        let mut state = self.ledger.state.lock().await;
        state.trim();
        // Another node may have integrated meanwhile.
        self.catch_up(&mut state).await?;
        let from = i64::try_from(state.size).map_err(|_| corrupt("log too large"))?;
        let entries = self.store.ledger_entries(from, BATCH).await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let old_size = state.size;
        match self.fold_and_sign(&mut state, &entries).await {
            Ok(Some((size, root, grown))) => {
                for key in grown.keys().copied().collect::<Vec<_>>() {
                    if let Some(tile) = grown.get(&key) {
                        state.tiles.insert(key, tile.clone());
                    }
                }
                state.size = size;
                state.root = root;
                // Bundles this checkpoint completed are written once, now.
                for n in old_size / TILE_WIDTH..size / TILE_WIDTH {
                    let leaves = grown.get(&(0, n)).cloned();
                    let kept = match leaves {
                        Some(tile) => self.full_bundle(n, &tile, &entries).await,
                        None => Err(corrupt(format!("bottom tile {n} vanished"))),
                    };
                    if let Err(e) = kept {
                        tracing::warn!(bundle = n, error = %e, "could not keep a full entry bundle");
                    }
                }
                Ok(Some(size))
            }
            Ok(None) => Ok(None),
            Err(ServiceError::Conflict(_)) => {
                // Another node got there first; take its tree.
                self.catch_up(&mut state).await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Add `entries` (from index `state.size`) to copies of the tree's edge
    /// tiles, prove the new tree consistent with the old one and with the
    /// witness, sign it and store the changed tiles and the checkpoint.
    /// Returns the new size, root and grown tiles (the state is left as it
    /// was: the caller takes them on success). `None`: nothing to add. A
    /// `Conflict` error: another node stored a checkpoint first.
    async fn fold_and_sign(
        &self,
        state: &mut TreeState,
        entries: &[(i64, String)],
    ) -> Result<Option<(u64, tlog::Hash, TileSet)>> {
        let old_size = state.size;
        let edge = edge_locations(old_size);
        self.load_tiles(state, edge.clone()).await?;
        // Copies cut to the tree this node builds on: a tile read from the
        // database may be wider (another node has integrated since; the
        // store then refuses this checkpoint as a conflict).
        let mut grown = TileSet::default();
        for loc in &edge {
            if let Some(t) = state.tiles.get(&loc.tile) {
                grown.insert(loc.tile, t.cut_to(loc.width));
            }
        }
        if old_size > 0 && tlog::tree_hash(old_size, &grown).map_err(tlog_err)? != state.root {
            return Err(corrupt(format!(
                "refusing to sign: the tiles held do not give checkpoint {old_size}'s root"
            )));
        }
        let mut dirty: std::collections::BTreeSet<TileKey> = Default::default();
        let mut index = Vec::new();
        let mut size = old_size;
        for (idx, body) in entries {
            if u64::try_from(*idx).ok() != Some(size) {
                break; // not yet committed: stop at the gap
            }
            index.extend(index_rows(*idx, body));
            dirty.extend(grown.append(size, body.as_bytes()).map_err(tlog_err)?);
            size += 1;
        }
        if size == old_size {
            return Ok(None);
        }
        let root = tlog::tree_hash(size, &grown).map_err(tlog_err)?;
        if let Some(witness) = self.read_witness()? {
            self.check_extends(state, Some((size, &grown)), &witness)
                .await?;
        }
        if old_size > 0 {
            let proof = self
                .read_with_overlay(state, Some(&grown), |r| tlog::prove_tree(size, old_size, r))
                .await?;
            tlog::check_tree(&proof, size, root, old_size, state.root).map_err(|_| {
                corrupt(format!(
                    "refusing to sign: tree {size} is not consistent with checkpoint {old_size}"
                ))
            })?;
        }
        let checkpoint = self.sign_tree(size, &root)?;
        let rows: Vec<StoredTile> = dirty
            .iter()
            .filter_map(|k| stored_tile(*k, grown.get(k)?))
            .collect();
        let old = i64::try_from(old_size).map_err(|_| corrupt("log too large"))?;
        match self
            .store
            .record_integration(&rows, old, &checkpoint, &index)
            .await
        {
            Ok(()) => {
                self.write_witness(size, &root)?;
                Ok(Some((size, root, grown)))
            }
            Err(StoreError::Conflict(what)) => Err(ServiceError::Conflict(what)),
            Err(e) => Err(e.into()),
        }
    }

    /// A checkpoint of the tree of `size` entries with `root`, signed now.
    fn sign_tree(&self, size: u64, root: &tlog::Hash) -> Result<StoredCheckpoint> {
        let note = self
            .ledger
            .signer
            .sign_checkpoint(size, &root.0)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(StoredCheckpoint {
            size: i64::try_from(size).map_err(|_| corrupt("log too large"))?,
            root: hex_hash(&root.0),
            note: String::from_utf8(note).map_err(|e| corrupt(e.to_string()))?,
            created_at: rfc3339(self.now()),
        })
    }

    /// The newest signed checkpoint, if the log has any entries integrated.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        Ok(self.store.latest_checkpoint().await?)
    }

    /// The inclusion proof of entry `index` in the tree of `state`, checked
    /// against its signed root before it leaves (a stored tile that was
    /// changed is found here, not by the reader), with the leaf it proves.
    async fn prove(&self, state: &mut TreeState, index: u64) -> Result<(Vec<Hash>, tlog::Hash)> {
        let size = state.size;
        let leaf_index = tlog::stored_hash_index(0, index);
        let (proof, leaf) = self
            .read_with(state, |r| {
                let proof = tlog::prove_record(size, index, r)?;
                let leaf = tlog::HashReader::read_hashes(r, &[leaf_index])?;
                Ok((proof, leaf[0]))
            })
            .await?;
        tlog::check_record(&proof, size, state.root, index, leaf).map_err(|_| {
            corrupt(format!(
                "the stored tiles do not prove entry {index} in checkpoint {size}"
            ))
        })?;
        Ok((proof.into_iter().map(|h| h.0).collect(), leaf))
    }

    /// Entry `index` with its inclusion proof against the newest checkpoint.
    pub async fn ledger_entry(&self, index: u64) -> Result<ProvenEntry> {
        let not_found =
            || ServiceError::NotFound(format!("log entry {index} (not yet in a checkpoint)"));
        let mut state = self.ledger.state.lock().await;
        state.trim();
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
        let (proof, leaf) = self.prove(&mut state, index).await?;
        drop(state);
        let leaf_hash = citytrust_ledger::leaf_hash(body.as_bytes());
        if leaf_hash != leaf.0 {
            // Served as stored: the proof will not verify, and verifiers name the entry.
            tracing::error!(
                entry = index,
                "an entry in the database does not match the signed tree"
            );
        }
        let root = parse_hex_hash(&checkpoint.root)?.0;
        // With the cosignatures the checkpoint has gathered (none without a policy).
        let mut checkpoint = checkpoint;
        for (_, line) in self.store.cosignatures_at(checkpoint.size).await? {
            checkpoint.note.push_str(&line);
        }
        Ok(ProvenEntry {
            root,
            index,
            leaf_hash,
            body,
            proof,
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
    /// this node holds (from the tiles in its cache; the database only for
    /// tiles not held, or a newer checkpoint when the entry is beyond it).
    pub async fn ledger_inclusion_proof(&self, index: u64) -> Result<InclusionProof> {
        let mut state = self.ledger.state.lock().await;
        state.trim();
        if index >= state.size {
            // Another node may have signed a newer checkpoint.
            self.catch_up(&mut state).await?;
        }
        if index >= state.size {
            return Err(ServiceError::NotFound(format!(
                "log entry {index} (not yet in a checkpoint)"
            )));
        }
        let (proof, leaf) = self.prove(&mut state, index).await?;
        Ok(InclusionProof {
            index,
            size: state.size,
            root: state.root.0,
            leaf_hash: leaf.0,
            proof,
        })
    }

    /// The consistency proof from the tree of `from` entries to the tree of `to` entries.
    pub async fn ledger_consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        let mut state = self.ledger.state.lock().await;
        state.trim();
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
        let proof = self
            .read_with(&mut state, |r| tlog::prove_tree(to, from, r))
            .await?;
        Ok(proof.into_iter().map(|h| h.0).collect())
    }
}

/// The tiles (and widths) holding the right edge of the tree of `size` entries.
fn edge_locations(size: u64) -> Vec<Location> {
    hashtile::edge(size)
        .into_iter()
        .filter(|(_, width)| *width > 0)
        .map(|(tile, width)| Location {
            tile,
            row: 0,
            position: width - 1,
            width,
        })
        .collect()
}

fn tile_key_i64((level, idx): TileKey) -> (i64, i64) {
    (i64::from(level), i64::try_from(idx).unwrap_or(i64::MAX))
}

fn stored_tile(key: TileKey, tile: &HashTile) -> Option<StoredTile> {
    let (level, idx) = tile_key_i64(key);
    Some(StoredTile {
        level,
        idx,
        width: i64::try_from(tile.width()).ok()?,
        hashes: tile.encode(),
    })
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
        state.trim();
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
        let loc = Location {
            tile: (level, n),
            row: 0,
            position: width - 1,
            width,
        };
        self.load_tiles(&mut state, vec![loc]).await?;
        state
            .tiles
            .get(&(level, n))
            .and_then(|t| t.bottom(width))
            .ok_or_else(not_found)
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
        if width == TILE_WIDTH && self.settings.ledger_tiles.is_some() {
            let leaves = {
                let mut state = self.ledger.state.lock().await;
                state.trim();
                let loc = Location {
                    tile: (0, n),
                    row: 0,
                    position: TILE_WIDTH - 1,
                    width: TILE_WIDTH,
                };
                self.load_tiles(&mut state, vec![loc]).await?;
                state
                    .tiles
                    .get(&(0, n))
                    .cloned()
                    .ok_or_else(|| corrupt(format!("bottom tile {n} vanished")))?
            };
            return self.full_bundle(n, &leaves, &[]).await;
        }
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
        leaves_tile: &HashTile,
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
            let stored = leaves_tile
                .get(0, i as u64)
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

#[cfg(feature = "bench")]
impl Service {
    /// Benchmarks only (bench/biglog.sh): sign the entries already stored —
    /// written in bulk, straight into the database, to build a log of 10^8
    /// entries in minutes — as one checkpoint, their tiles built as a
    /// migration builds them. They are not indexed for the analytics (the
    /// index counter is moved past them).
    pub async fn bench_adopt_entries(&self) -> Result<u64> {
        let mut state = self.ledger.state.lock().await;
        let size = u64::try_from(self.store.ledger_size().await?)
            .map_err(|_| corrupt("negative log size"))?;
        self.rebuild_tiles(size).await?;
        self.load_tiles(&mut state, edge_locations(size)).await?;
        let root = tlog::tree_hash(size, &state.tiles).map_err(tlog_err)?;
        let checkpoint = self.sign_tree(size, &root)?;
        self.store
            .record_integration(&[], 0, &checkpoint, &[])
            .await?;
        state.size = size;
        state.root = root;
        Ok(size)
    }
}
