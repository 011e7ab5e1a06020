//! Issue 28's witness benchmark, in one run on this machine (each trust on
//! its own SQLite database, WAL, `synchronous = FULL`, served over loopback
//! HTTP by the real router):
//!
//! 1. **Cosigning**: a witness of a 1,000,000-entry log answers
//!    `add-checkpoint` — each request a new checkpoint (17 entries more, or `--step N`),
//!    from the size it holds, with the RFC 6962 consistency proof (the
//!    length such proofs have at this size) — timed one by one from a
//!    keep-alive client; and the protocol's own work (signature check, proof
//!    check, cosignature) in-process, without the database or HTTP.
//! 2. **Witnessed checkpoints under load**: a log whose policy needs both of
//!    two witnesses (each its own trust, over HTTP) takes appends at a paced
//!    10,000 a second from 256 callers, each waiting for its commit, while
//!    its sequencer signs and its cosigning loop asks the witnesses, as
//!    `serve` runs them. Measured: the delay from an append's commit to the
//!    first published (quorum-met) checkpoint that holds it, and the
//!    appends' rate and latency — against the same run with no witnesses.
//!
//!     cargo run --release --features citytrust/bench --example witness_bench -- [--seconds S] [--step N]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use citytrust_ledger::checkpoint::LogSigner;
use citytrust_ledger::witness::WitnessedLog;
use citytrust_service::ledger::{Appender, LedgerSeed};
use citytrust_service::witness::Witnessing;
use citytrust_service::{Service, Settings, SystemClock};
use citytrust_store::Store;
use tlog_tiles::tlog;

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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Reader<'a>(&'a [tlog::Hash]);

impl tlog::HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(*i as usize)
                    .copied()
                    .ok_or(tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// A trust on its own database, served on loopback; its URL.
async fn trust(
    dir: &std::path::Path,
    origin: &str,
    seed: u8,
    witnessing: Witnessing,
) -> (Arc<Service>, String) {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open_data_dir(dir).await.unwrap();
    let settings = Settings {
        ledger_origin: origin.into(),
        ledger_seed: Some(LedgerSeed([seed; 32])),
        content_dir: Some(dir.join("content")),
        witnessing: Some(witnessing),
        ..Settings::default()
    };
    let service = Arc::new(
        Service::new(store, Arc::new(SystemClock), settings)
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = citytrust_server::app(citytrust_server::AppState::new(service.clone(), false));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (service, url)
}

async fn cosigning(dir: &std::path::Path) {
    let log = LogSigner::from_seed("bench.example/ledger", &[7u8; 32]).unwrap();
    let (witness, url) = trust(
        &dir.join("witness"),
        "witness.example/ledger",
        8,
        Witnessing {
            name: "witness.example/witness".into(),
            seed: LedgerSeed([9u8; 32]),
            logs: vec![
                WitnessedLog::parse(&format!("bench.example/ledger={}", log.verifier_key()))
                    .unwrap(),
            ],
        },
    )
    .await;
    let _ = witness;
    let start: u64 = 1_000_000;
    let requests: u64 = 2_000;
    // `--step N`: entries between checkpoints (the proofs' length grows with it).
    let step: u64 = arg("--step").map_or(17, |s| s.parse().unwrap());
    let t = Instant::now();
    let mut hashes: Vec<tlog::Hash> = Vec::with_capacity(2 * (start + requests * step) as usize);
    for i in 0..start + requests * step {
        let data = format!("entry {i}");
        let stored = tlog::stored_hashes(i, data.as_bytes(), &Reader(&hashes)).unwrap();
        hashes.extend(stored);
    }
    println!(
        "a log of {} entries hashed in {:.1} s",
        start + requests * step,
        t.elapsed().as_secs_f64()
    );
    let body = |old: u64, size: u64| -> (String, usize) {
        let root = tlog::tree_hash(size, &Reader(&hashes)).unwrap();
        let mut b = format!("old {old}\n");
        let mut lines = 0;
        if old > 0 && old < size {
            for h in tlog::prove_tree(size, old, &Reader(&hashes)).unwrap() {
                b.push_str(&STANDARD.encode(h.0));
                b.push('\n');
                lines += 1;
            }
        }
        b.push('\n');
        b.push_str(&String::from_utf8(log.sign_checkpoint(size, &root.0).unwrap()).unwrap());
        (b, lines)
    };
    let client = reqwest::Client::new();
    let post = |b: String| {
        let client = client.clone();
        let url = format!("{url}/witness/add-checkpoint");
        async move {
            let res = client.post(url).body(b).send().await.unwrap();
            let status = res.status().as_u16();
            let _ = res.bytes().await.unwrap();
            status
        }
    };
    assert_eq!(post(body(0, start).0).await, 200);
    // The bodies first, so that only the witness is timed.
    let (bodies, lines): (Vec<String>, Vec<usize>) = (0..requests)
        .map(|k| body(start + k * step, start + (k + 1) * step))
        .unzip();
    let proof_lines = format!(
        "{}–{} (mean {:.1})",
        lines.iter().min().unwrap(),
        lines.iter().max().unwrap(),
        lines.iter().sum::<usize>() as f64 / lines.len() as f64
    );
    let mut times = Vec::with_capacity(requests as usize);
    for b in bodies.iter().cloned() {
        let t = Instant::now();
        assert_eq!(post(b).await, 200);
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "add-checkpoint over HTTP, {requests} checkpoints of a {start}+-entry log, {proof_lines}-line proofs: p50 {}, p99 {}, max {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
    // The protocol's own work, in-process.
    let wlog =
        WitnessedLog::parse(&format!("bench.example/ledger={}", log.verifier_key())).unwrap();
    let cosigner =
        citytrust_ledger::witness::Cosigner::from_seed("w.example/w", &[3u8; 32]).unwrap();
    let mut times = Vec::with_capacity(requests as usize);
    for (k, b) in bodies.iter().enumerate() {
        let old = start + k as u64 * step;
        let latest = citytrust_ledger::witness::Latest {
            size: old,
            root: tlog::tree_hash(old, &Reader(&hashes)).unwrap().0,
        };
        let t = Instant::now();
        let request = citytrust_ledger::witness::parse_add_checkpoint(b.as_bytes()).unwrap();
        let accepted = citytrust_ledger::witness::decide(&request, &wlog, &latest).unwrap();
        let line = cosigner.cosign(&accepted.text, 1_780_000_000);
        times.push(t.elapsed());
        assert!(line.starts_with('\u{2014}'));
    }
    times.sort();
    println!(
        "the same checks and cosignature in-process (no database, no HTTP): p50 {}, p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
    );
}

/// One load phase on `log`: appends paced at `rate` a second for `seconds`;
/// with `witnessed`, the delay from each sampled append to the first
/// published checkpoint holding it.
async fn load(log: &Arc<Service>, rate: u64, seconds: u64, witnessed: bool) {
    let appender = Appender::spawn(log.store().clone());
    let callers = 256u64;
    let total = rate * seconds;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Sample every 500th append: its index and when it was committed.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(i64, Instant)>::new()));
    let mut tasks = Vec::new();
    for c in 0..callers {
        let (appender, samples) = (appender.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while i < total {
                // Paced: append i is due at i / rate seconds.
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let at = "2026-12-05T21:00:00Z".to_string();
                let body = String::from_utf8(
                    citytrust_ledger::entry::encode(
                        "content.read",
                        &at,
                        serde_json::json!({"dataset": "bench", "rows": i, "purpose": "research"}),
                    )
                    .unwrap(),
                )
                .unwrap();
                let t = Instant::now();
                let index = appender.append("content.read", body, at).await.unwrap();
                let now = Instant::now();
                latencies.push(now - t);
                if i % 500 == 0 {
                    samples.lock().unwrap().push((index, now));
                }
                i += callers;
            }
            latencies
        }));
    }
    // The witnessed size, polled every 10 ms.
    let watcher = {
        let (log, stop, samples) = (log.clone(), stop.clone(), samples.clone());
        tokio::spawn(async move {
            let mut delays = Vec::new();
            let mut pending: Vec<(i64, Instant)> = Vec::new();
            while !stop.load(Ordering::Relaxed) || !pending.is_empty() {
                pending.extend(samples.lock().unwrap().drain(..));
                if witnessed {
                    let size = log
                        .witnessing_status()
                        .await
                        .unwrap()
                        .map_or(0, |s| s.witnessed) as i64;
                    let now = Instant::now();
                    pending.retain(|(index, at)| {
                        if *index < size {
                            delays.push(now - *at);
                            false
                        } else {
                            true
                        }
                    });
                } else {
                    pending.clear();
                }
                if stop.load(Ordering::Relaxed)
                    && started.elapsed() > Duration::from_secs(seconds + 30)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            delays
        })
    };
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut delays = watcher.await.unwrap();
    latencies.sort();
    println!(
        "  appends: {total} at a paced {rate}/s took {:.2} s = {:.0}/s; commit latency p50 {}, p99 {}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
    );
    if witnessed {
        delays.sort();
        println!(
            "  append committed -> in a published checkpoint cosigned by both witnesses ({} samples): p50 {}, p99 {}, max {}",
            delays.len(),
            ms(percentile(&delays, 0.5)),
            ms(percentile(&delays, 0.99)),
            ms(*delays.last().unwrap()),
        );
    }
}

async fn witnessed_under_load(dir: &std::path::Path, seconds: u64) {
    let log_signer = LogSigner::from_seed("a.example/ledger", &[21u8; 32]).unwrap();
    let witnessed_log =
        WitnessedLog::parse(&format!("a.example/ledger={}", log_signer.verifier_key())).unwrap();
    let mut witnesses = Vec::new();
    for (i, name) in ["b", "c"].iter().enumerate() {
        witnesses.push(
            trust(
                &dir.join(name),
                &format!("{name}.example/ledger"),
                22 + i as u8,
                Witnessing {
                    name: format!("{name}.example/witness"),
                    seed: LedgerSeed([32 + i as u8; 32]),
                    logs: vec![witnessed_log.clone()],
                },
            )
            .await,
        );
    }
    let (log, _) = trust(
        &dir.join("a"),
        "a.example/ledger",
        21,
        Witnessing {
            name: "a.example/witness".into(),
            seed: LedgerSeed([31u8; 32]),
            logs: vec![],
        },
    )
    .await;
    // The sequencer and the cosigning loop, as `serve` runs them.
    citytrust_server::spawn_maintenance(log.clone());
    println!("a log with no witnesses:");
    load(&log, 10_000, seconds, false).await;
    // Both witnesses needed from now on.
    for (w, url) in &witnesses {
        let their_log = WitnessedLog::parse(&format!(
            "{}={}",
            w.ledger_origin(),
            w.ledger_verifier_key()
        ))
        .unwrap();
        let vkey = reqwest::get(format!("{url}/witness/key"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        log.add_peer(their_log, vkey.trim(), &format!("{url}/witness"))
            .unwrap();
    }
    println!("the same log, each checkpoint published once both witnesses cosign it:");
    load(&log, 10_000, seconds, true).await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: u64 = arg("--seconds").map(|s| s.parse().unwrap()).unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    cosigning(tmp.path()).await;
    witnessed_under_load(tmp.path(), seconds).await;
}
