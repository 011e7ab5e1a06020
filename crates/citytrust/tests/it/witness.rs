//! The witness (issue 28, C2SP tlog-witness) over HTTP: every status the
//! specification gives `add-checkpoint`, the race of two requests from the
//! same old size, the monitoring checkpoint, and a witness that remembers
//! what it cosigned across a restart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use citytrust_ledger::checkpoint::LogSigner;
use citytrust_ledger::witness::{CosignerKey, WitnessedLog};
use citytrust_ledger::{Hash, tree};
use citytrust_service::witness::{Witnessing, origin_hash};
use sha2::Digest;

use crate::harness::{TestApp, assert_problem};

const LOG: &str = "other-city.example/ledger";

fn log_signer() -> LogSigner {
    LogSigner::from_seed(LOG, &[21u8; 32]).unwrap()
}

fn leaves(n: u64, fork_at: Option<u64>) -> Vec<Hash> {
    (0..n)
        .map(|i| {
            let text = if Some(i) == fork_at {
                format!("rewritten {i}")
            } else {
                format!("entry {i}")
            };
            citytrust_ledger::leaf_hash(text.as_bytes())
        })
        .collect()
}

/// An `add-checkpoint` body: `old`, the proof, an empty line, the note.
fn body(old: u64, proof: &[Hash], note: &[u8]) -> Vec<u8> {
    let mut b = format!("old {old}\n").into_bytes();
    for h in proof {
        b.extend_from_slice(format!("{}\n", STANDARD.encode(h)).as_bytes());
    }
    b.push(b'\n');
    b.extend_from_slice(note);
    b
}

/// A correct request from `old` to `new` over the log's true history.
fn request(old: u64, new: u64) -> Vec<u8> {
    let all = leaves(new, None);
    let proof = if old == 0 || old == new {
        Vec::new()
    } else {
        tree::consistency_proof(&all, old as usize).unwrap()
    };
    let note = log_signer()
        .sign_checkpoint(new, &tree::root(&all))
        .unwrap();
    body(old, &proof, &note)
}

async fn witness_app() -> TestApp {
    TestApp::start_with(|s| {
        s.witnessing = Some(Witnessing {
            name: "city.example/witness".into(),
            seed: citytrust_service::ledger::LedgerSeed([22u8; 32]),
            logs: vec![
                WitnessedLog::parse(&format!("{LOG}={}", log_signer().verifier_key())).unwrap(),
            ],
        });
    })
    .await
}

async fn add(app: &TestApp, body: Vec<u8>) -> reqwest::Response {
    app.post_raw("/witness/add-checkpoint", None, "text/plain", body)
        .await
}

async fn witness_key(app: &TestApp) -> CosignerKey {
    let key = app.get("/witness/key", None).await.text().await.unwrap();
    CosignerKey::parse(&key).unwrap()
}

#[tokio::test]
async fn add_checkpoint_answers_every_status_of_the_specification() {
    let app = witness_app().await;
    let key = witness_key(&app).await;
    assert_eq!(key.name, "city.example/witness");

    // 404: a log this witness does not witness.
    let stranger = LogSigner::from_seed("stranger.example/log", &[1u8; 32]).unwrap();
    let note = stranger
        .sign_checkpoint(3, &tree::root(&leaves(3, None)))
        .unwrap();
    assert_problem(
        add(&app, body(0, &[], &note)).await,
        404,
        "unknown_log",
        None,
    )
    .await;

    // 400: malformed bodies, and an old size beyond the checkpoint.
    for bad in [
        b"old 01\n\n".to_vec(),
        b"new 0\n\n".to_vec(),
        b"old 0\nnot-base64\n\n".to_vec(),
        b"old 0\n".to_vec(),
    ] {
        let mut bad = bad;
        bad.extend_from_slice(
            &log_signer()
                .sign_checkpoint(1, &tree::root(&leaves(1, None)))
                .unwrap(),
        );
        assert_problem(add(&app, bad).await, 400, "malformed_add_checkpoint", None).await;
    }
    let note = log_signer()
        .sign_checkpoint(3, &tree::root(&leaves(3, None)))
        .unwrap();
    assert_problem(
        add(&app, body(4, &[], &note)).await,
        400,
        "malformed_add_checkpoint",
        None,
    )
    .await;

    // 403: signed only by another key under the log's name.
    let impostor = LogSigner::from_seed(LOG, &[99u8; 32]).unwrap();
    let note = impostor
        .sign_checkpoint(10, &tree::root(&leaves(10, None)))
        .unwrap();
    assert_problem(
        add(&app, body(0, &[], &note)).await,
        403,
        "checkpoint_not_signed",
        None,
    )
    .await;

    // 422: size 0 with a root other than the empty tree's.
    let note = log_signer().sign_checkpoint(0, &[7u8; 32]).unwrap();
    assert_problem(
        add(&app, body(0, &[], &note)).await,
        422,
        "inconsistent_checkpoint",
        None,
    )
    .await;

    // 200: the first checkpoint; the answer is one cosignature line that
    // verifies under the published key.
    let res = add(&app, request(0, 10)).await;
    assert_eq!(res.status(), 200);
    let line = res.text().await.unwrap();
    assert!(
        line.starts_with("\u{2014} city.example/witness ") && line.ends_with('\n'),
        "{line}"
    );
    let mut cosigned = log_signer()
        .sign_checkpoint(10, &tree::root(&leaves(10, None)))
        .unwrap();
    cosigned.extend_from_slice(line.as_bytes());
    let timestamp = key.verify(&cosigned).unwrap();
    assert_eq!(timestamp, app.service.now().unix_timestamp() as u64);

    // 409: a stale old size; the body is the size held, as text/x.tlog.size.
    let res = add(&app, request(5, 17)).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.headers()["content-type"], "text/x.tlog.size");
    assert_eq!(res.text().await.unwrap(), "10\n");

    // 422: a proof that does not connect 10 to 17 (another history), one cut
    // short, and the same size with another root.
    let forked = leaves(17, Some(4));
    let note = log_signer()
        .sign_checkpoint(17, &tree::root(&forked))
        .unwrap();
    let proof = tree::consistency_proof(&forked, 10).unwrap();
    assert_problem(
        add(&app, body(10, &proof, &note)).await,
        422,
        "inconsistent_checkpoint",
        None,
    )
    .await;
    let good = tree::consistency_proof(&leaves(17, None), 10).unwrap();
    let note = log_signer()
        .sign_checkpoint(17, &tree::root(&leaves(17, None)))
        .unwrap();
    assert_problem(
        add(&app, body(10, &good[1..], &note)).await,
        422,
        "inconsistent_checkpoint",
        None,
    )
    .await;
    let note = log_signer()
        .sign_checkpoint(10, &tree::root(&forked[..10]))
        .unwrap();
    assert_problem(
        add(&app, body(10, &[], &note)).await,
        422,
        "inconsistent_checkpoint",
        None,
    )
    .await;

    // 200: a consistent extension.
    assert_eq!(add(&app, request(10, 17)).await.status(), 200);
    // The same checkpoint again, twice (a retry, or a replay): cosigned, not recorded again.
    for _ in 0..2 {
        let res = add(&app, request(17, 17)).await;
        assert_eq!(res.status(), 200);
        let mut note = log_signer()
            .sign_checkpoint(17, &tree::root(&leaves(17, None)))
            .unwrap();
        note.extend_from_slice(res.text().await.unwrap().as_bytes());
        key.verify(&note).unwrap();
    }

    // 413: a body over the limit, before anything is parsed.
    let huge = vec![b'A'; 65 * 1024];
    assert_problem(add(&app, huge).await, 413, "body_too_large", None).await;

    // The monitoring checkpoint: the log's signature and the witness's.
    let hash = hex::encode(sha2::Sha256::digest(LOG.as_bytes()));
    assert_eq!(hash, origin_hash(LOG));
    let res = app.get(&format!("/witness/{hash}/checkpoint"), None).await;
    assert_eq!(res.status(), 200);
    let note = res.bytes().await.unwrap();
    let opened =
        citytrust_ledger::checkpoint::open_checkpoint(&note, log_signer().verifier_key()).unwrap();
    assert_eq!(opened.size, 17);
    key.verify(&note).unwrap();
    let other = hex::encode(sha2::Sha256::digest(b"stranger.example/log"));
    assert_eq!(
        app.get(&format!("/witness/{other}/checkpoint"), None)
            .await
            .status(),
        404
    );

    // Each cosignature is an entry of the witness's own log; refusals are not.
    let entries = app.entries_of_type("witness.cosigned").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries[1].contains("\"size\":17") && entries[1].contains(LOG),
        "{}",
        entries[1]
    );
}

#[tokio::test]
async fn two_requests_from_the_same_old_size_advance_it_exactly_once() {
    let app = witness_app().await;
    assert_eq!(add(&app, request(0, 10)).await.status(), 200);
    // Eight requests from size 10, each to another size, at once.
    let sizes: Vec<u64> = (11..19).collect();
    let answers = futures::future::join_all(sizes.iter().map(|&n| {
        let app = &app;
        async move {
            let res = add(app, request(10, n)).await;
            (n, res.status().as_u16(), res.text().await.unwrap())
        }
    }))
    .await;
    let won: Vec<u64> = answers.iter().filter(|a| a.1 == 200).map(|a| a.0).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    for (_, status, text) in answers.iter().filter(|a| a.1 != 200) {
        assert_eq!(*status, 409);
        assert_eq!(text, &format!("{}\n", won[0]));
    }
    let held = app.service.store().witnessed(LOG).await.unwrap().unwrap();
    assert_eq!(held.size as u64, won[0]);
    assert_eq!(app.entries_of_type("witness.cosigned").await.len(), 2);
}

#[tokio::test]
async fn a_restarted_witness_remembers_what_it_cosigned() {
    let app = witness_app().await;
    assert_eq!(add(&app, request(0, 12)).await.status(), 200);
    let restarted = app.restart_service().await.unwrap();
    // From 0 again (a log that lost track, or a replay): refused with the size held.
    match restarted.add_checkpoint(&request(0, 12)).await.unwrap() {
        Err(citytrust_service::witness::Refusal::Conflict { latest, .. }) => assert_eq!(latest, 12),
        other => panic!("{other:?}"),
    }
    assert!(
        restarted
            .add_checkpoint(&request(12, 20))
            .await
            .unwrap()
            .is_ok()
    );
}

/// One trust of three on loopback: its log, its witness, its URL.
struct Trust {
    name: &'static str,
    log: LogSigner,
    witness: citytrust_ledger::witness::Cosigner,
    url: String,
}

fn trusts(urls: &[String]) -> Vec<Trust> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| Trust {
            name,
            log: LogSigner::from_seed(&format!("{name}.example/ledger"), &[30 + i as u8; 32])
                .unwrap(),
            witness: citytrust_ledger::witness::Cosigner::from_seed(
                &format!("{name}.example/witness"),
                &[40 + i as u8; 32],
            )
            .unwrap(),
            url: urls[i].clone(),
        })
        .collect()
}

/// The policy for `of`'s log: the other two trusts' witnesses, `quorum`
/// of them (`all` or `any`).
fn policy_text(all: &[Trust], of: usize, quorum: &str) -> String {
    let mut text = format!("log {}\n", all[of].log.verifier_key());
    let others: Vec<&Trust> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != of)
        .map(|(_, t)| t)
        .collect();
    for t in &others {
        text.push_str(&format!(
            "witness {} {} {}/witness\n",
            t.name.to_uppercase(),
            t.witness.verifier_key(),
            t.url
        ));
    }
    text.push_str(&format!(
        "group others {quorum} {}\nquorum others\n",
        others
            .iter()
            .map(|t| t.name.to_uppercase())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    text
}

/// `citytrust verify --policy` on its own thread (the servers it asks run
/// on this test's runtime).
async fn run_verify(url: &str, policy: &str) -> (bool, String) {
    let (url, policy) = (url.to_string(), policy.to_string());
    tokio::task::spawn_blocking(move || verify_blocking(&url, &policy))
        .await
        .unwrap()
}

fn verify_blocking(url: &str, policy: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy");
    std::fs::write(&path, policy).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_citytrust"))
        .args(["verify", "--url", url, "--policy"])
        .arg(&path)
        .env("CITYTRUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn size_of(app_url: &str, path: &str, key: &str) -> u64 {
    let note = reqwest::get(format!("{app_url}{path}"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    citytrust_ledger::checkpoint::open_checkpoint(&note, key)
        .unwrap()
        .size
}

#[tokio::test]
async fn three_trusts_witness_each_other_and_a_fork_is_caught() {
    let mut listeners = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", l.local_addr().unwrap()));
        listeners.push(l);
    }
    let all = trusts(&urls);
    let mut apps = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let policy = citytrust_ledger::policy::Policy::parse(&policy_text(&all, i, "all")).unwrap();
        let logs = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, t)| {
                WitnessedLog::parse(&format!("{}={}", t.log.origin(), t.log.verifier_key()))
                    .unwrap()
            })
            .collect();
        let seed = [30 + i as u8; 32];
        let witness_seed = [40 + i as u8; 32];
        let origin = all[i].log.origin().to_string();
        let name = all[i].witness.name().to_string();
        apps.push(
            TestApp::start_on(listener, move |s| {
                s.ledger_origin = origin;
                s.ledger_seed = Some(citytrust_service::ledger::LedgerSeed(seed));
                s.witnessing = Some(Witnessing {
                    name,
                    seed: citytrust_service::ledger::LedgerSeed(witness_seed),
                    logs,
                });
                s.witness_policy = Some(policy);
            })
            .await,
        );
    }
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    let a_key = all[0].log.verifier_key().to_string();
    let cosigning = citytrust_server::cosigning::Cosigning::new();

    // A burst of actions on A; its checkpoint is cosigned by B and C.
    let alice = a.token("alice").await;
    for i in 0..5 {
        a.create_dataset(
            &alice,
            &crate::harness::dataset(&format!("Witnessed {i}"), "city-energy", "open"),
        )
        .await;
    }
    let first = a.service.integrate_ledger().await.unwrap().unwrap();
    // Before the witnesses answer, nothing is published; the head is there.
    assert_eq!(a.get("/ledger/checkpoint", None).await.status(), 404);
    assert_eq!(size_of(&a.base, "/ledger/head", &a_key).await, first);
    assert_eq!(cosigning.round(&a.service).await, 2);
    let published = a
        .get("/ledger/checkpoint", None)
        .await
        .bytes()
        .await
        .unwrap();
    let two_of_two = citytrust_ledger::policy::Policy::parse(&policy_text(&all, 0, "all")).unwrap();
    let verdict = two_of_two.check(&published).unwrap();
    assert!(verdict.quorum_met, "{verdict:?}");
    assert_eq!(verdict.cosigned_by, vec!["B".to_string(), "C".to_string()]);
    let (ok, out) = run_verify(&a.base, &policy_text(&all, 0, "all")).await;
    assert!(
        ok && out.contains("witnessed by B, C (quorum met)"),
        "{out}"
    );
    // Each witness's log records the cosignature; each holds A's checkpoint.
    for w in [b, c] {
        assert_eq!(w.entries_of_type("witness.cosigned").await.len(), 1);
        let held = w
            .service
            .store()
            .witnessed(all[0].log.origin())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.size as u64, first);
    }
    // The others are witnessed the same way.
    b.service.integrate_ledger().await.unwrap();
    assert_eq!(cosigning.round(&b.service).await, 2);

    // C goes away: A keeps serving reads and writes, its witnessed checkpoint
    // stops advancing, B still cosigns the head.
    c.stop_serving();
    a.create_dataset(
        &alice,
        &crate::harness::dataset("While C is away", "city-energy", "open"),
    )
    .await;
    assert_eq!(a.get("/api/v1/datasets", None).await.status(), 200);
    let second = a.service.integrate_ledger().await.unwrap().unwrap();
    assert!(second > first);
    assert_eq!(cosigning.round(&a.service).await, 1);
    assert_eq!(size_of(&a.base, "/ledger/checkpoint", &a_key).await, first);
    assert_eq!(size_of(&a.base, "/ledger/head", &a_key).await, second);
    let status = a.service.witnessing_status().await.unwrap().unwrap();
    assert_eq!((status.head, status.witnessed), (second, first));
    let c_status = status.witnesses.iter().find(|w| w.witness == "C").unwrap();
    assert!(
        c_status
            .failure
            .as_deref()
            .unwrap_or("")
            .contains("unreachable"),
        "{c_status:?}"
    );
    let log_page = a.page("/log").await;
    assert!(
        log_page.contains("The published checkpoint")
            && log_page.contains("\u{2014} b.example/witness ")
            && log_page.contains("\u{2014} c.example/witness "),
        "{log_page}"
    );
    assert!(
        log_page.contains("Witnesses of this log")
            && log_page.contains(&format!("{first} of {second} entries"))
            && log_page.contains("unreachable"),
        "{log_page}"
    );
    let metrics = a.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "citytrust_ledger_unwitnessed_entries {}",
            second - first
        )),
        "{metrics}"
    );
    // 2-of-2: the witnessed checkpoint verifies, and the newer one lacks C;
    // 1-of-2: the newer one is accepted.
    let (ok, out) = run_verify(&a.base, &policy_text(&all, 0, "all")).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "the newest checkpoint ({second}) is not witnessed under this policy yet: missing C"
        )),
        "{out}"
    );
    let (ok, out) = run_verify(&a.base, &policy_text(&all, 0, "any")).await;
    assert!(
        ok && out.contains(&format!("OK: {second} entries")) && out.contains("witnessed by B"),
        "{out}"
    );

    // A's database is rewritten to another history under the same key and
    // re-signed by a node without A's witness file (the log suite's fork).
    a.sql("DELETE FROM ledger_checkpoints").await;
    a.sql("DELETE FROM ledger_tiles").await;
    a.sql("DELETE FROM checkpoint_cosignatures").await;
    a.sql("UPDATE ledger_entries SET body = replace(body, 'Witnessed 0', 'Witnessed 9') WHERE idx < 20").await;
    let store = citytrust_store::Store::connect(&a.db_url).await.unwrap();
    let mut settings = a.settings.clone();
    settings.ledger_witness = None;
    let forked = std::sync::Arc::new(
        citytrust_service::Service::new(store, a.clock.clone(), settings)
            .await
            .unwrap(),
    );
    assert_eq!(forked.integrate_ledger().await.unwrap(), Some(second));
    // B refuses to cosign it and keeps the evidence, in its store and its log.
    assert_eq!(
        citytrust_server::cosigning::Cosigning::new()
            .round(&forked)
            .await,
        0
    );
    let evidence = b.service.fork_evidence().await.unwrap();
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert_eq!(evidence[0].origin, all[0].log.origin());
    assert!(
        evidence[0].held.contains(&format!("\n{second}\n")),
        "{}",
        evidence[0].held
    );
    assert_eq!(b.entries_of_type("witness.fork_evidence").await.len(), 1);
    let page = b.page("/witnessing").await;
    assert!(
        page.contains("a.example/ledger: a checkpoint that does not extend the one cosigned"),
        "{page}"
    );
    assert!(b.page("/log").await.contains("it holds evidence of 1 fork"));
    assert_eq!(
        forked.witnessing_status().await.unwrap().unwrap().witnessed,
        0
    );
    // Served, the forked log is named as such by verify, from what B holds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forked_url = format!("http://{}", listener.local_addr().unwrap());
    let app = citytrust_server::app(citytrust_server::AppState::new(forked.clone(), true));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (ok, out) = run_verify(&forked_url, &policy_text(&all, 0, "any")).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("fork: witness B cosigned checkpoint {second}")),
        "{out}"
    );
}
