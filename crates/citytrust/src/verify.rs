//! `citytrust verify`: check a CityTrust transparency log from its public
//! files alone — the signed checkpoint, the entry bundles and hash tiles —
//! without any access to its database.
//!
//! It checks the checkpoint's signature, decodes every entry (refusing
//! non-canonical ones), recomputes the Merkle tree from the entries and
//! compares its root with the signed one, and checks that the log still
//! contains, unchanged, every entry seen on the previous run (kept in the
//! state file with the leaf hashes). On a mismatch it names the first bad index.
//!
//! With a C2SP tlog-policy (`--policy`), the checkpoint counts only when its
//! cosignatures meet the policy's quorum (the report names who cosigned and
//! who is missing), and each witness the policy gives a URL is asked for the
//! newest checkpoint it cosigned of this log: one the log's entries do not
//! rebuild is a fork, named with the witness that holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use citytrust_ledger::checkpoint::open_checkpoint;
use citytrust_ledger::policy::Policy;
use citytrust_ledger::tiles::{TILE_WIDTH, parse_entry_bundle, tile_path};
use citytrust_ledger::{Hash, entry, leaf_hash, tree};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// What a previous run saw.
#[derive(Serialize, Deserialize)]
struct State {
    verifier_key: String,
    size: u64,
    /// base64-free lower-case hex of the root.
    root: String,
}

pub struct Report {
    pub size: u64,
    pub by_type: BTreeMap<String, u64>,
    pub key: String,
    /// Under a policy: the witnesses whose cosignatures verify, and those missing.
    pub witnessed: Option<(Vec<String>, Vec<String>)>,
    /// Under a policy: a newer checkpoint than the one verified that does not
    /// meet the quorum yet, and the witnesses it lacks.
    pub pending: Option<(u64, Vec<String>)>,
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    let res = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("could not fetch {url}"))?;
    if !res.status().is_success() {
        bail!("{url} answered {}", res.status());
    }
    Ok(res)
}

pub async fn verify(
    base: &str,
    state_file: Option<&Path>,
    key: Option<&str>,
    policy: Option<&Policy>,
) -> anyhow::Result<Report> {
    let base = base.trim_end_matches('/');
    let client = reqwest::Client::new();
    let previous: Option<(State, Vec<Hash>)> = match state_file {
        Some(path) if path.exists() => Some(read_state(path)?),
        _ => None,
    };
    let served_key = fetch(&client, &format!("{base}/ledger/key"))
        .await?
        .text()
        .await?
        .trim()
        .to_string();
    let key = match (key, &previous) {
        (Some(k), _) => k.to_string(),
        (None, Some((s, _))) => s.verifier_key.clone(),
        (None, None) => served_key.clone(),
    };
    if served_key != key {
        bail!("the log now publishes a different key ({served_key}) from the one trusted ({key})");
    }
    // Without a policy: the published checkpoint. With one: the newest of
    // the published checkpoint and the head (the newest signed, with the
    // cosignatures gathered so far) that meets the quorum — or, when neither
    // does, the head, so that the entries and the witnesses' views are still
    // checked (a fork matters more than a missing cosignature) before the
    // verdict.
    let published = match client.get(format!("{base}/ledger/checkpoint")).send().await {
        Ok(res) if res.status().is_success() => Some(res.bytes().await?.to_vec()),
        Ok(res) if policy.is_some() && res.status() == reqwest::StatusCode::NOT_FOUND => None,
        Ok(res) => bail!("{base}/ledger/checkpoint answered {}", res.status()),
        Err(e) => {
            return Err(e).with_context(|| format!("could not fetch {base}/ledger/checkpoint"));
        }
    };
    let mut pending = None;
    let (note, witnessed) = match policy {
        None => (published.context("the log has no checkpoint")?, None),
        Some(policy) => {
            let head = match client.get(format!("{base}/ledger/head")).send().await {
                Ok(res) if res.status().is_success() => Some(res.bytes().await?.to_vec()),
                _ => None,
            };
            let judged = |note: &[u8]| -> anyhow::Result<(u64, citytrust_ledger::policy::Verdict)> {
                let cp = open_checkpoint(note, &key).context("a checkpoint does not verify")?;
                let verdict = policy
                    .check(note)
                    .context("the checkpoint is not signed by a log the policy lists")?;
                Ok((cp.size, verdict))
            };
            let mut best: Option<(Vec<u8>, u64, citytrust_ledger::policy::Verdict)> = None;
            for note in [published.clone(), head.clone()].into_iter().flatten() {
                let (size, verdict) = judged(&note)?;
                if verdict.quorum_met && best.as_ref().is_none_or(|(_, s, _)| size > *s) {
                    best = Some((note, size, verdict));
                }
            }
            if let Some(head) = &head {
                let (size, verdict) = judged(head)?;
                if !verdict.quorum_met && best.as_ref().is_none_or(|(_, s, _)| size > *s) {
                    pending = Some((size, verdict.cosigned_by, verdict.missing));
                }
            }
            match best {
                Some((note, _, verdict)) => (note, Some((verdict.cosigned_by, verdict.missing))),
                None => (
                    head.or(published).context("the log has no checkpoint")?,
                    None,
                ),
            }
        }
    };
    let checkpoint = open_checkpoint(&note, &key).context("the checkpoint does not verify")?;
    let size = checkpoint.size;

    // Every entry, in order, from the entry bundles.
    let mut leaves: Vec<Hash> = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad_entry: Option<(u64, String)> = None;
    let bundles = size.div_ceil(TILE_WIDTH);
    // Bundles are fetched 16 at a time, on their own tasks, while this one
    // checks them in order.
    let fetches = futures::stream::iter(0..bundles)
        .map(|n| {
            let client = client.clone();
            let width = (size - n * TILE_WIDTH).min(TILE_WIDTH);
            let url = format!("{base}/ledger/{}", tile_path(None, n, width));
            tokio::spawn(async move {
                let res = client
                    .get(&url)
                    .send()
                    .await
                    .with_context(|| format!("could not fetch {url}"))?;
                let status = res.status();
                // Each bundle is checked on the task that fetched it, so the
                // checking runs on every core while the next bundles arrive.
                let checked = if status.is_success() {
                    Some(check_bundle(n, &res.bytes().await?))
                } else {
                    None
                };
                anyhow::Ok((n, width, url, status, checked))
            })
        })
        .buffered(16);
    futures::pin_mut!(fetches);
    while let Some(fetched) = fetches.next().await {
        let (n, width, url, status, checked) = fetched.context("a fetch failed")??;
        let Some(checked) = checked else {
            // Narrow it down: the widest prefix of the bundle the log can still serve.
            let (mut ok, mut bad) = (0u64, width);
            while bad - ok > 1 {
                let mid = (ok + bad) / 2;
                let probe = format!("{base}/ledger/{}", tile_path(None, n, mid));
                let served = client
                    .get(&probe)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if served { ok = mid } else { bad = mid }
            }
            bail!(
                "entry {} is missing: the log cannot serve it ({url} answered {status})",
                n * TILE_WIDTH + ok,
            );
        };
        let checked = checked?;
        let count = checked.leaves.len() as u64;
        if count < width {
            bail!(
                "entry {} is missing: bundle {n} holds {count} of {width} entries",
                n * TILE_WIDTH + count,
            );
        }
        if count > width {
            bail!("bundle {n} holds {count} entries, more than the {width} the checkpoint covers");
        }
        if let Some(bad) = checked.bad {
            bad_entry.get_or_insert(bad);
        }
        for (kind, k) in checked.by_type {
            *by_type.entry(kind).or_default() += k;
        }
        leaves.extend(checked.leaves);
    }
    if let Some((index, why)) = bad_entry {
        bail!("entry {index} is malformed: {why}");
    }

    // The entries must rebuild the signed root.
    if tree::root(&leaves) != checkpoint.root {
        let first = first_bad_leaf(&client, base, size, &leaves).await?;
        match first {
            Some(i) => {
                bail!("entry {i} does not match the log's tree: it was changed after it was logged")
            }
            None => bail!("the entries do not rebuild the signed root of checkpoint {size}"),
        }
    }

    // Everything seen last time must still be there, unchanged.
    if let Some((prev, prev_leaves)) = &previous {
        if prev.size > size {
            bail!(
                "the log shrank: it had {} entries, now its checkpoint says {size}",
                prev.size
            );
        }
        if let Some(i) = prev_leaves.iter().zip(&leaves).position(|(a, b)| a != b) {
            bail!("entry {i} differs from the one seen before: the log forked or was rewritten");
        }
        let prev_root = tree::root(
            &leaves[..usize::try_from(prev.size)
                .unwrap_or(usize::MAX)
                .min(leaves.len())],
        );
        if hex(&prev_root) != prev.root {
            bail!(
                "the log is not consistent with checkpoint {} seen before",
                prev.size
            );
        }
    }
    if let Some(policy) = policy {
        check_witnesses_views(&client, base, policy, &key, &checkpoint.origin, &leaves).await?;
        if witnessed.is_none() {
            let (cosigned, missing) = pending
                .as_ref()
                .map(|(_, c, m)| (c.join(", "), m.join(", ")))
                .unwrap_or_default();
            bail!(
                "no checkpoint of this log meets the policy's quorum: the newest ({size}) is \
                 cosigned by [{cosigned}], missing [{missing}]"
            );
        }
    }
    if let Some(path) = state_file {
        write_state(
            path,
            &State {
                verifier_key: key.clone(),
                size,
                root: hex(&checkpoint.root),
            },
            &leaves,
        )?;
    }
    Ok(Report {
        size,
        by_type,
        key,
        witnessed,
        pending: pending.map(|(size, _, missing)| (size, missing)),
    })
}

/// Ask each witness of the policy that has a URL for the newest checkpoint
/// of this log it cosigned; if the log's entries (`leaves`) do not rebuild
/// it, the log showed that witness another history.
async fn check_witnesses_views(
    client: &reqwest::Client,
    base: &str,
    policy: &Policy,
    key: &str,
    origin: &str,
    leaves: &[Hash],
) -> anyhow::Result<()> {
    let hash = citytrust_service::witness::origin_hash(origin);
    for w in &policy.witnesses {
        let Some(url) = &w.url else { continue };
        let url = format!("{}/{hash}/checkpoint", url.trim_end_matches('/'));
        let Ok(res) = client.get(&url).send().await else {
            continue; // a witness that is away says nothing either way
        };
        if !res.status().is_success() {
            continue;
        }
        let held = res.bytes().await?;
        // Only a checkpoint the log signed, and this witness cosigned, counts.
        let Ok(held_cp) = open_checkpoint(&held, key) else {
            continue;
        };
        if w.key.verify(&held).is_err() {
            continue;
        }
        let held_size = usize::try_from(held_cp.size).unwrap_or(usize::MAX);
        if held_size > leaves.len() {
            // Newer than what was verified (a head not yet witnessed under
            // this policy): the log must prove it extends what was verified.
            let verified = leaves.len() as u64;
            let proof_url = format!(
                "{base}/api/v1/ledger/consistency?from={verified}&to={}",
                held_cp.size
            );
            let proven = async {
                let res = client.get(&proof_url).send().await.ok()?;
                if !res.status().is_success() {
                    return None;
                }
                let body: serde_json::Value = res.json().await.ok()?;
                let proof: Vec<Vec<u8>> = body["proof"]
                    .as_array()?
                    .iter()
                    .map(|h| {
                        use base64::Engine;
                        base64::engine::general_purpose::STANDARD
                            .decode(h.as_str()?)
                            .ok()
                    })
                    .collect::<Option<_>>()?;
                let proof: Vec<&[u8]> = proof.iter().map(|h| h.as_slice()).collect();
                citytrust_ledger::verify_consistency(
                    verified,
                    held_cp.size,
                    &proof,
                    &tree::root(leaves),
                    &held_cp.root,
                )
                .ok()
            }
            .await;
            if proven.is_none() {
                bail!(
                    "fork: witness {} cosigned checkpoint {} of this log, which the log cannot \
                     prove extends the {verified} entries it publishes — it showed the witness \
                     another (or a rolled-back) history",
                    w.name,
                    held_cp.size,
                );
            }
            continue;
        }
        if tree::root(&leaves[..held_size]) != held_cp.root {
            bail!(
                "fork: witness {} cosigned checkpoint {} of this log with root {}, \
                 which the log's entries do not rebuild — the log showed it another history",
                w.name,
                held_cp.size,
                hex(&held_cp.root)
            );
        }
    }
    Ok(())
}

/// One entry bundle, checked: its leaf hashes, its entries by type, and the first malformed entry.
struct CheckedBundle {
    leaves: Vec<Hash>,
    by_type: BTreeMap<String, u64>,
    bad: Option<(u64, String)>,
}

fn check_bundle(n: u64, bundle: &[u8]) -> anyhow::Result<CheckedBundle> {
    let entries =
        parse_entry_bundle(bundle).map_err(|e| anyhow::anyhow!("entry bundle {n}: {e}"))?;
    let mut checked = CheckedBundle {
        leaves: Vec::with_capacity(entries.len()),
        by_type: BTreeMap::new(),
        bad: None,
    };
    for (i, bytes) in entries.iter().enumerate() {
        match entry::check(bytes) {
            Ok(kind) => *checked.by_type.entry(kind).or_default() += 1,
            Err(e) => {
                checked
                    .bad
                    .get_or_insert((n * TILE_WIDTH + i as u64, e.to_string()));
            }
        }
        checked.leaves.push(leaf_hash(bytes));
    }
    Ok(checked)
}

/// Compare our leaf hashes with the log's level-0 hash tiles; the first that differs is the edited entry.
async fn first_bad_leaf(
    client: &reqwest::Client,
    base: &str,
    size: u64,
    leaves: &[Hash],
) -> anyhow::Result<Option<u64>> {
    for n in 0..size.div_ceil(TILE_WIDTH) {
        let width = (size - n * TILE_WIDTH).min(TILE_WIDTH);
        let tile = fetch(
            client,
            &format!("{base}/ledger/{}", tile_path(Some(0), n, width)),
        )
        .await?
        .bytes()
        .await?;
        for (i, h) in tile.chunks(32).enumerate() {
            let index = n * TILE_WIDTH + i as u64;
            if leaves
                .get(usize::try_from(index).unwrap_or(usize::MAX))
                .map(|l| l.as_slice())
                != Some(h)
            {
                return Ok(Some(index));
            }
        }
    }
    Ok(None)
}

fn leaves_path(state: &Path) -> PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".leaves");
    PathBuf::from(p)
}

fn read_state(path: &Path) -> anyhow::Result<(State, Vec<Hash>)> {
    let state: State = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a verify state file", path.display()))?;
    let raw = std::fs::read(leaves_path(path))
        .with_context(|| format!("reading {}", leaves_path(path).display()))?;
    if raw.len() as u64 != state.size * 32 {
        bail!(
            "{} does not hold {} leaf hashes",
            leaves_path(path).display(),
            state.size
        );
    }
    let leaves = raw
        .chunks(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .collect();
    Ok((state, leaves))
}

fn write_state(path: &Path, state: &State, leaves: &[Hash]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::write(leaves_path(path), leaves.concat())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
