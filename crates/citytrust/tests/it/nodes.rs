//! Several nodes, one trust (issue 30): three servers over one database and
//! one object store, as docs/OPERATING.md sets them up, each running the
//! background upkeep `serve` runs (sequencer, search index). A consent
//! withdrawn or a person erased through one node is in force for the next
//! read on the others; a catalogue change is searchable everywhere within
//! the documented two seconds; uploads of one dataset on two nodes at once
//! both land, as distinct versions; the log stays single-history and dense
//! under a burst spread over the nodes; a privacy budget cannot be
//! overspent by spreading requests; a node set up with versions on its
//! own disk says so instead of failing; and a node whose disk is full
//! refuses uploads cleanly while the others go on.
//!
//! The shared shape needs the shared object store: these tests run on the
//! PostgreSQL + S3 pass of `scripts/test` (on SQLite alone they say so and
//! return), except the misconfiguration test, which runs on both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_problem, dataset};

async fn json_of(res: Response, status: u16) -> Value {
    let code = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(code, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Whether the suite runs on the shared shape (PostgreSQL and a bucket).
fn shared_shape() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.is_empty());
    if set("CITYTRUST_TEST_DATABASE_URL") && set("CITYTRUST_TEST_OBJECT_STORE") {
        return true;
    }
    eprintln!(
        "several nodes need PostgreSQL and an object store: run on scripts/test's second pass"
    );
    false
}

/// Node A (with the governance test's university, analyst and trustees),
/// then B and C joining it; every node runs `serve`'s upkeep.
async fn three_nodes() -> (TestApp, TestApp, TestApp) {
    let a = crate::governance::start().await;
    let b = a.join_with(|_| {}).await;
    let c = a.join_with(|_| {}).await;
    for node in [&a, &b, &c] {
        citytrust_server::spawn_maintenance(node.service.clone());
    }
    (a, b, c)
}

fn households(csv: &str) -> Vec<String> {
    let mut h: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    h.dedup();
    h
}

/// An open dataset of street lamps uploaded through `node`, its first version `csv`.
async fn street_lamps(node: &TestApp, token: &str, csv: Vec<u8>) -> String {
    crate::levels::upload(
        node,
        token,
        dataset("Street lamps", "city-energy", "open"),
        json!({}),
        csv,
    )
    .await
}

async fn read_csv(node: &TestApp, path: &str, token: &str) -> String {
    let res = node.get(path, Some(token)).await;
    assert_eq!(res.status(), 200, "{}", node.base);
    res.text().await.unwrap()
}

#[tokio::test]
async fn a_withdrawal_an_erasure_and_a_catalogue_change_on_one_node_hold_on_every_node() {
    if !shared_shape() {
        return;
    }
    let (a, b, c) = three_nodes().await;
    let alice = a.token("alice").await;
    let id = crate::residents::personal_dataset(&a, &alice).await;
    let resident = a.token("resident").await;
    let code = json_of(
        a.post_json(
            &format!("/api/v1/datasets/{id}/link-codes"),
            Some(&alice),
            &json!({"subject_key": "H-2"}),
        )
        .await,
        201,
    )
    .await;
    json_of(
        b.post_json(
            "/api/v1/me/links",
            Some(&resident),
            &json!({"code": code["code"]}),
        )
        .await,
        201,
    )
    .await;
    let consent = json_of(
        c.post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research", "recipient_organization_id": "uni"}),
        )
        .await,
        201,
    )
    .await;
    crate::residents::research_agreement(&a, &id).await;
    let (resident, alice, analyst) = (
        a.token("resident").await,
        a.token("alice").await,
        a.token("analyst").await,
    );
    let data = format!("/api/v1/datasets/{id}/data?format=csv&purpose=research");
    for node in [&a, &b, &c] {
        assert_eq!(households(&read_csv(node, &data, &analyst).await), ["H-2"]);
    }

    // Withdrawn through A: the very next read on B and on C has none of it.
    let cid = consent["id"].as_str().unwrap();
    json_of(
        a.post_json(
            &format!("/api/v1/me/consents/{cid}/withdraw"),
            Some(&resident),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    for node in [&b, &c, &a] {
        let csv = read_csv(node, &data, &analyst).await;
        assert!(households(&csv).is_empty(), "{}: {csv}", node.base);
    }
    // …nor through SQL on another node.
    let q = json_of(
        c.post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT COUNT(*) AS n FROM {}", id.replace('-', "_")), "purpose": "research"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(q, json!([{"n": 0}]), "{q}");

    // Erased through A: the owner's own reads on B and C no longer hold them.
    let own = format!("/api/v1/datasets/{id}/data?format=csv&purpose=city-operations");
    assert_eq!(
        households(&read_csv(&b, &own, &alice).await),
        ["H-1", "H-2", "H-3"]
    );
    let erasure = json_of(
        b.post_json(
            "/api/v1/me/subject-access-requests",
            Some(&resident),
            &json!({"kind": "erasure", "dataset_id": id}),
        )
        .await,
        201,
    )
    .await;
    json_of(
        a.post_json(
            &format!(
                "/api/v1/subject-requests/{}/erase",
                erasure["id"].as_str().unwrap()
            ),
            Some(&alice),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    for node in [&b, &c, &a] {
        assert_eq!(
            households(&read_csv(node, &own, &alice).await),
            ["H-1", "H-3"],
            "{}",
            node.base
        );
    }

    // A catalogue change on A is found by B's and C's search within the
    // documented two seconds (their upkeep refreshes every two; the poll
    // allows three times that on a loaded machine).
    let created = Instant::now();
    a.create_dataset(
        &alice,
        &dataset("Tram depot noise readings", "city-energy", "open"),
    )
    .await;
    for node in [&b, &c] {
        loop {
            let page = json_of(node.get("/api/v1/datasets?q=tram+depot", None).await, 200).await;
            if page["total"] == 1 {
                break;
            }
            assert!(
                created.elapsed() < Duration::from_secs(6),
                "{} does not find the new entry: {page}",
                node.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn uploads_of_one_dataset_on_two_nodes_at_once_both_land_as_distinct_versions() {
    if !shared_shape() {
        return;
    }
    let (a, b, c) = three_nodes().await;
    let alice = a.token("alice").await;
    let id = a
        .create_dataset(&alice, &dataset("Meter counts", "city-energy", "open"))
        .await;
    // Each upload has its own number of rows, so each version can be told apart.
    let csv = |rows: usize| {
        let mut s = String::from("meter,kwh\n");
        for i in 0..rows {
            s.push_str(&format!("M-{i},{}.5\n", i % 7));
        }
        s.into_bytes()
    };
    let path = format!("/api/v1/datasets/{id}/versions");
    let mut sent = Vec::new();
    for round in 0..4 {
        let (ra, rb) = (10 + 2 * round, 11 + 2 * round);
        let (x, y) = tokio::join!(
            a.post_raw(&path, Some(&alice), "text/csv", csv(ra)),
            b.post_raw(&path, Some(&alice), "text/csv", csv(rb)),
        );
        for (res, rows) in [(x, ra), (y, rb)] {
            let v = json_of(res, 201).await;
            sent.push((v["version"].as_i64().unwrap(), rows));
        }
    }
    sent.sort();
    let numbers: Vec<i64> = sent.iter().map(|s| s.0).collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>(), "{sent:?}");
    // Every version holds what was uploaded as it, read on a third node.
    for (version, rows) in &sent {
        let body = read_csv(
            &c,
            &format!("/api/v1/datasets/{id}/data?format=csv&version={version}"),
            &alice,
        )
        .await;
        assert_eq!(body.lines().count() - 1, *rows, "version {version}");
    }
    let published = a.entries_of_type("version.published").await;
    assert_eq!(published.len(), 8);
    // No claim is left behind.
    let claims = a.service.store().live_version_claims("0000").await.unwrap();
    assert!(claims.is_empty(), "{claims:?}");
}

#[tokio::test]
async fn a_burst_spread_over_three_nodes_gives_one_dense_log_that_verifies() {
    if !shared_shape() {
        return;
    }
    let (a, b, c) = three_nodes().await;
    let alice = a.token("alice").await;
    let id = street_lamps(&a, &alice, b"lamp,watts\nL-1,40\nL-2,60\n".to_vec()).await;
    let before = a.service.store().ledger_size().await.unwrap();
    // 3 nodes × 40 callers at once: reads (one entry each) and new
    // catalogue entries (one each), while every node's sequencer integrates.
    let nodes = Arc::new([a, b, c]);
    let mut tasks = Vec::new();
    for caller in 0..120usize {
        let (nodes, alice, id) = (nodes.clone(), alice.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let node = &nodes[caller % 3];
            if caller % 4 == 0 {
                let d = dataset(&format!("Burst entry {caller}"), "city-energy", "open");
                let res = node.post_json("/api/v1/datasets", Some(&alice), &d).await;
                assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
            } else {
                // A node short of read slots sheds the read with 429 (on a
                // busy machine it does): shed before anything is logged, so a
                // client retries, and the count below still holds.
                for attempt in 0.. {
                    let res = node
                        .get(&format!("/api/v1/datasets/{id}/data?format=csv"), None)
                        .await;
                    if res.status() == 429 && attempt < 100 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let [a, b, c] = Arc::into_inner(nodes).unwrap();
    let size = a.service.store().ledger_size().await.unwrap();
    assert_eq!(size, before + 120, "every action landed exactly once");
    // Dense: every index below the size holds an entry.
    let entries = a
        .service
        .store()
        .ledger_entries(0, size + 10)
        .await
        .unwrap();
    let indexes: Vec<i64> = entries.iter().map(|e| e.0).collect();
    assert_eq!(indexes, (0..size).collect::<Vec<_>>());
    // The sequencers (one per node) catch up, one checkpoint per size.
    let started = Instant::now();
    loop {
        let cp = a.service.store().latest_checkpoint().await.unwrap();
        if cp.is_some_and(|cp| cp.size == size) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not integrated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every node serves the same checkpoint, and `citytrust verify` accepts
    // the log through each, one state file carried from node to node (so
    // that any two histories would be caught).
    let state = tempfile::tempdir().unwrap();
    let state = state.path().join("state");
    let mut checkpoint = None;
    for node in [&a, &b, &c] {
        let served = node
            .get("/ledger/checkpoint", None)
            .await
            .text()
            .await
            .unwrap();
        if let Some(first) = &checkpoint {
            assert_eq!(&served, first);
        }
        checkpoint = Some(served);
        let url = node.base.clone();
        let state = state.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_citytrust"))
                .args(["verify", "--url", &url, "--state"])
                .arg(&state)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{}: {text}", node.base);
        assert!(text.contains(&format!("OK: {size} entries")), "{text}");
    }
}

#[tokio::test]
async fn a_privacy_budget_spread_over_three_nodes_is_not_overspent() {
    if !shared_shape() {
        return;
    }
    let (a, b, c) = three_nodes().await;
    let alice = a.token("alice").await;
    let mut csv = String::from("district,income\n");
    for i in 0..300 {
        csv.push_str(&format!(
            "{},{}\n",
            ["Gràcia", "Sants"][i % 2],
            20_000 + i * 31
        ));
    }
    let id = crate::levels::upload(
        &a,
        &alice,
        dataset("Household incomes", "city-energy", "shared_specific"),
        json!({}),
        csv.into_bytes(),
    )
    .await;
    let account = crate::levels::agreement(&a, "analyst", &id, "research", "dp_aggregate").await;
    let analyst = a.token("analyst").await;
    let path = format!("/api/v1/datasets/{id}/dp-statistics");
    // A budget of 1: twelve statistics of 0.2 at once, four through each node.
    let count = json!({"purpose": "research", "statistic": "count", "epsilon": 0.2});
    let nodes = [&a, &b, &c];
    let answers = futures::future::join_all(
        (0..12).map(|i| nodes[i % 3].post_json(&path, Some(&analyst), &count)),
    )
    .await;
    let mut released = 0;
    for res in answers {
        match res.status().as_u16() {
            200 => released += 1,
            403 => {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["rule"], "privacy-budget", "{body}");
            }
            other => panic!("{other}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!(released, 5, "exactly the budget's worth is released");
    let budget = json_of(
        c.get(
            &format!("/api/v1/privacy-budgets/{account}"),
            Some(&analyst),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(budget["releases"], 5, "{budget}");
    assert!(
        budget["remaining_epsilon"].as_f64().unwrap().abs() < 1e-9,
        "{budget}"
    );
    let releases = a
        .entries_of_type("content.read")
        .await
        .into_iter()
        .filter(|e| e.contains("differential_privacy"))
        .count();
    assert_eq!(releases, 5);
}

#[tokio::test]
async fn a_node_keeping_versions_on_its_own_disk_beside_another_says_so_instead_of_failing() {
    // Both nodes keep versions on their own disks while they share the
    // database: what docs/OPERATING.md says not to do.
    let a = TestApp::start_with(|s| s.object_store = None).await;
    let b = a.join_with(|_| {}).await;
    let alice = a.token("alice").await;
    let id = street_lamps(&a, &alice, b"lamp,watts\nL-1,40\n".to_vec()).await;
    let data = format!("/api/v1/datasets/{id}/data?format=csv");
    assert_eq!(a.get(&data, None).await.status(), 200);
    let before = a.service.store().ledger_size().await.unwrap();
    let res = b.get(&data, None).await;
    assert_eq!(res.headers()["retry-after"], "5");
    let problem = assert_problem(res, 503, "versions_not_shared", None).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("version 1 of dataset") && detail.contains("--object-store"),
        "{detail}"
    );
    // Nothing is served, so nothing is logged as served; nor does the
    // message show where the node keeps its files.
    assert_eq!(a.service.store().ledger_size().await.unwrap(), before);
    assert!(!detail.contains(&a.service.content_dir().display().to_string()));
    assert!(!detail.contains(&b.service.content_dir().display().to_string()));
    // SQL over it is refused the same way, not with a 500.
    let res = b
        .post_json(
            "/api/v1/query",
            Some(&alice),
            &json!({"sql": format!("SELECT COUNT(*) FROM {}", id.replace('-', "_")), "purpose": "research"}),
        )
        .await;
    assert_problem(res, 503, "versions_not_shared", None).await;
}

#[tokio::test]
async fn a_node_whose_database_is_away_answers_503_and_serves_nothing() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = street_lamps(&app, &alice, b"lamp,watts\nL-1,40\n".to_vec()).await;
    let data = format!("/api/v1/datasets/{id}/data?format=csv");
    assert_eq!(app.get(&data, None).await.status(), 200);
    // The database goes away under the node (as when PostgreSQL restarts).
    app.service.store().close().await;
    for res in [
        app.get(&data, None).await,
        app.get(&data, Some(&alice)).await,
        app.post_json(
            "/api/v1/query",
            Some(&alice),
            &json!({"sql": format!("SELECT * FROM {}", id.replace('-', "_")), "purpose": "research"}),
        )
        .await,
    ] {
        assert_eq!(res.headers()["retry-after"], "5");
        let problem = assert_problem(res, 503, "store_unavailable", None).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("nothing was done"), "{detail}");
        assert!(!detail.contains("pool"), "{detail}");
    }
    assert_eq!(app.get("/healthz", None).await.status(), 503);
}

/// A tmpfs of `kib` KiB mounted over `dir` while it lives (needs root, as
/// `scripts/test` runs; elsewhere the test says so and returns).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, kib: u32) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("a full disk is simulated with a small tmpfs: this needs root");
        }
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_node_whose_disk_is_full_refuses_uploads_cleanly_and_the_others_go_on() {
    // On the shared shape node B's disk fills while A goes on; on SQLite,
    // the one node's.
    let a = TestApp::start().await;
    let shared = std::env::var("CITYTRUST_TEST_OBJECT_STORE").is_ok_and(|s| !s.is_empty());
    let b = if shared {
        Some(a.join_with(|_| {}).await)
    } else {
        None
    };
    let full = b.as_ref().unwrap_or(&a);
    let alice = a.token("alice").await;
    let id = street_lamps(&a, &alice, b"lamp,watts\nL-1,40\n".to_vec()).await;
    let spool = full.service.content_dir().join("tmp");
    let Some(disk) = SmallDisk::mount(&spool, 64) else {
        return;
    };
    // An upload of ~2 MB through the full node: refused, retryable, and nothing is left.
    let mut big = String::from("lamp,watts\n");
    for i in 0..100_000 {
        big.push_str(&format!("L-{i},{}\n", 20 + i % 60));
    }
    let path = format!("/api/v1/datasets/{id}/versions");
    let before = a.service.store().ledger_size().await.unwrap();
    let res = full
        .post_raw(&path, Some(&alice), "text/csv", big.clone().into_bytes())
        .await;
    let retry = res.headers().get("retry-after").cloned();
    let problem = assert_problem(res, 503, "node_disk_full", None).await;
    assert_eq!(retry.unwrap(), "5");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("nothing was stored"), "{detail}");
    assert!(!detail.contains(&spool.display().to_string()), "{detail}");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool left files"
    );
    assert_eq!(a.service.store().ledger_size().await.unwrap(), before);
    let claims = a.service.store().live_version_claims("0000").await.unwrap();
    assert!(claims.is_empty(), "{claims:?}");
    // The full node still serves reads that fit; the others take uploads.
    let data = format!("/api/v1/datasets/{id}/data?format=csv");
    assert_eq!(full.get(&data, None).await.status(), 200);
    if b.is_some() {
        let res = a
            .post_raw(&path, Some(&alice), "text/csv", big.clone().into_bytes())
            .await;
        assert_eq!(json_of(res, 201).await["version"], 2);
    }
    // Space again: the same upload lands on the node that refused it.
    drop(disk);
    let res = full
        .post_raw(&path, Some(&alice), "text/csv", big.into_bytes())
        .await;
    let want = if b.is_some() { 3 } else { 2 };
    assert_eq!(json_of(res, 201).await["version"], want);
}
