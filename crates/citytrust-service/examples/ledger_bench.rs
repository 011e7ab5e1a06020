//! Issue 5's log benchmark, in one run on one SQLite database (WAL,
//! `synchronous = FULL`: every acknowledged append is on disk):
//!
//! 1. plain single-row inserts: each entry its own transaction, one at a time;
//! 2. the group committer (`ledger::Appender`) fed by 256 concurrent callers,
//!    each waiting for its entry to be committed, as reads do;
//! 3. the log grown to `--entries` (default 1,000,000), folded into the tree
//!    and checkpointed by the sequencer; then 10,000 inclusion proofs at
//!    random indexes, in-process, timed one by one.
//!
//! `--keep DIR` leaves the database and its key in DIR for `citytrust serve`
//! (bench/ledger.sh then times `citytrust verify` against it).
//!
//! A log of 10^8 entries (bench/biglog.sh, issue 30): `--init DIR` makes the
//! database and key; bench/fill_log.py writes the entries in bulk; `--adopt
//! DIR` has the service build their tiles and sign them; `--sustain DIR
//! --seconds S` then appends through the group committer (256 callers) while
//! the sequencer integrates, and reports both rates and how far the
//! sequencer fell behind.
//!
//!     cargo run --release -p citytrust-service --example ledger_bench -- [--entries N] [--keep DIR]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use citytrust_service::ledger::{Appender, LedgerSeed};
use citytrust_service::{Service, Settings, SystemClock};
use citytrust_store::{NewLogEntry, Store};

/// A read's entry as the read path writes it (about 400 bytes).
fn read_entry(i: u64) -> (String, String) {
    let at = format!("2026-11-23T14:{:02}:{:02}Z", (i / 60) % 60, i % 60);
    let body = citytrust_ledger::entry::encode(
        "content.read",
        &at,
        serde_json::json!({
            "dataset": "seattle-building-energy",
            "version": 3,
            "format": "csv",
            "offset": 0,
            "limit": null,
            "rows": 3376,
            "bytes": 1_048_576 + i,
            "sha256": format!("{:064x}", i * 2_654_435_761),
            "purpose": "research",
            "level": "identified",
            "rule": "agreement-in-force",
            "agreement": "dsa-3f2a9c1b7d4e",
            "charter_version": 1,
            "by": "organization:city-university",
        }),
    )
    .unwrap();
    (String::from_utf8(body).unwrap(), at)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The service over the database and key in `dir` (as `--init` made them).
async fn open(dir: &std::path::Path) -> (Store, Arc<Service>) {
    let store = Store::open_data_dir(dir).await.unwrap();
    let key = std::fs::read_to_string(dir.join("ledger-key")).unwrap();
    let seed: [u8; 32] = hex::decode(key.trim()).unwrap().try_into().unwrap();
    let settings = Settings {
        ledger_seed: Some(LedgerSeed(seed)),
        content_dir: Some(dir.join("content")),
        ledger_tiles: Some(dir.join("ledger-tiles")),
        ..Settings::default()
    };
    let service = Service::new(store.clone(), Arc::new(SystemClock), settings)
        .await
        .unwrap();
    (store, Arc::new(service))
}

async fn big_log_modes() -> bool {
    if let Some(dir) = arg("--init").map(std::path::PathBuf::from) {
        std::fs::create_dir_all(&dir).unwrap();
        Store::open_data_dir(&dir).await.unwrap();
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        std::fs::write(dir.join("ledger-key"), format!("{}\n", hex::encode(seed))).unwrap();
        return true;
    }
    if let Some(dir) = arg("--adopt").map(std::path::PathBuf::from) {
        let (_, service) = open(&dir).await;
        let t = Instant::now();
        let size = service.bench_adopt_entries().await.unwrap();
        println!(
            "tiles built from {size} entries and signed in {:.1} s ({:.0} entries/s)",
            t.elapsed().as_secs_f64(),
            size as f64 / t.elapsed().as_secs_f64()
        );
        return true;
    }
    if let Some(dir) = arg("--sustain").map(std::path::PathBuf::from) {
        let seconds: u64 = arg("--seconds").map(|s| s.parse().unwrap()).unwrap_or(30);
        let (store, service) = open(&dir).await;
        let start_size = store.ledger_size().await.unwrap() as u64;
        let appender = Appender::spawn(store.clone());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let callers = 256u64;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..callers {
            let (appender, stop) = (appender.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut i = c;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (body, at) = read_entry(start_size + i);
                    appender.append("content.read", body, at).await.unwrap();
                    i += callers;
                    n += 1;
                }
                n
            }));
        }
        // The sequencer, as `serve` runs it: integrate whenever there is anything.
        let sequencer = {
            let (service, stop, store) = (service.clone(), stop.clone(), store.clone());
            tokio::spawn(async move {
                let mut max_lag = 0u64;
                let mut signed = start_size;
                loop {
                    let done = stop.load(std::sync::atomic::Ordering::Relaxed);
                    match service.integrate_ledger().await.unwrap() {
                        Some(s) => signed = s,
                        None if done => break,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                    if !done {
                        let appended = store.ledger_size().await.unwrap() as u64;
                        max_lag = max_lag.max(appended.saturating_sub(signed));
                    }
                }
                (signed, max_lag)
            })
        };
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let appended: u64 = {
            let mut n = 0;
            for task in tasks {
                n += task.await.unwrap();
            }
            n
        };
        let appending = t.elapsed().as_secs_f64();
        let lag_at_stop = store.ledger_size().await.unwrap() as u64
            - service
                .latest_checkpoint()
                .await
                .unwrap()
                .map_or(0, |c| c.size as u64);
        let (signed, max_lag) = sequencer.await.unwrap();
        let drained = t.elapsed().as_secs_f64();
        println!(
            "sustained {seconds} s on a log of {start_size} entries: appended {appended} ({:.0}/s, {callers} callers, group commit); \
             sequencer integrated {} entries ({:.0}/s over the whole run); behind by {lag_at_stop} entries when appends stopped \
             (at most {max_lag}), all signed {:.2} s later",
            appended as f64 / appending,
            signed - start_size,
            (signed - start_size) as f64 / drained,
            drained - appending
        );
        return true;
    }
    false
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if big_log_modes().await {
        return;
    }
    let target: u64 = arg("--entries")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1_000_000);
    let keep = arg("--keep").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        !dir.join("citytrust.sqlite").exists(),
        "{} already holds a database",
        dir.display()
    );
    let store = Store::open_data_dir(&dir).await.unwrap();
    println!(
        "database: {} (SQLite, WAL, synchronous=FULL)",
        dir.display()
    );

    // 1. Plain single-row inserts, one transaction each.
    let plain_n = 20_000u64;
    let bodies: Vec<(String, String)> = (0..plain_n).map(read_entry).collect();
    let t = Instant::now();
    for (body, at) in &bodies {
        store
            .append_log(&NewLogEntry {
                kind: "content.read",
                body,
                at,
            })
            .await
            .unwrap();
    }
    let plain = plain_n as f64 / t.elapsed().as_secs_f64();
    println!(
        "plain single-row inserts:     {plain:>9.0} entries/s ({plain_n} entries, one transaction each)"
    );

    // 2. The group committer under 256 concurrent callers.
    let appender = Appender::spawn(store.clone());
    let group_n = 400_000u64;
    let callers = 256u64;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let appender = appender.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < group_n {
                let (body, at) = read_entry(plain_n + i);
                appender.append("content.read", body, at).await.unwrap();
                i += callers;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let grouped = group_n as f64 / t.elapsed().as_secs_f64();
    println!(
        "group-committed appends:      {grouped:>9.0} entries/s ({group_n} entries, {callers} concurrent callers, each waiting for its commit) = {:.1}x plain",
        grouped / plain
    );

    // 3. Grow to the target size, then fold and sign.
    let mut size = plain_n + group_n;
    let t = Instant::now();
    while size < target {
        let n = (target - size).min(4096);
        let batch: Vec<(String, String)> = (size..size + n).map(read_entry).collect();
        let entries: Vec<NewLogEntry<'_>> = batch
            .iter()
            .map(|(body, at)| NewLogEntry {
                kind: "content.read",
                body,
                at,
            })
            .collect();
        store.append_log_batch(&entries).await.unwrap();
        size += n;
    }
    if size > plain_n + group_n {
        println!(
            "grown to {size} entries in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    if keep.is_some() {
        std::fs::write(dir.join("ledger-key"), format!("{}\n", hex::encode(seed))).unwrap();
    }
    let settings = Settings {
        ledger_seed: Some(LedgerSeed(seed)),
        content_dir: Some(dir.join("content")),
        ledger_tiles: Some(dir.join("ledger-tiles")),
        ..Settings::default()
    };
    let service = Arc::new(
        Service::new(store.clone(), Arc::new(SystemClock), settings)
            .await
            .unwrap(),
    );
    let t = Instant::now();
    let mut signed = 0;
    while let Some(s) = service.integrate_ledger().await.unwrap() {
        signed = s;
    }
    println!(
        "sequencer: {signed} entries folded into the tree and checkpointed in {:.1} s ({:.0} entries/s)",
        t.elapsed().as_secs_f64(),
        signed as f64 / t.elapsed().as_secs_f64()
    );

    // Inclusion proofs at random indexes (entry, proof and checkpoint, as the API serves them).
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut times = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let index = rng % signed;
        let t = Instant::now();
        let proven = service.ledger_entry(index).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(proven.index, index);
    }
    times.sort();
    println!(
        "inclusion proof from a {signed}-entry log (entry + proof + checkpoint, in-process): p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        percentile(&times, 0.50).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
        times.last().unwrap().as_secs_f64() * 1e6,
    );
    // The proof alone, without the database reads.
    let mut times = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let index = rng % signed;
        let t = Instant::now();
        let proof = service.ledger_inclusion_proof(index).await.unwrap().proof;
        times.push(t.elapsed());
        assert!(!proof.is_empty());
    }
    times.sort();
    println!(
        "inclusion proof alone (hashes from the in-memory tree): p50 {:.1} us, p99 {:.1} us",
        percentile(&times, 0.50).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
    );
}
