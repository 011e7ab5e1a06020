//! The transparency log end to end: entries and their inclusion proofs,
//! consistency between checkpoints, tiles, and what the log records — every
//! proof checked from public data only.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use citytrust_ledger::checkpoint::open_checkpoint;
use citytrust_ledger::{verify_consistency, verify_inclusion};
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_problem, dataset};

fn b64(s: &Value) -> Vec<u8> {
    STANDARD.decode(s.as_str().unwrap()).unwrap()
}

/// Fetch entry `i` and check its proof and its checkpoint's signature from public data only.
async fn verified_entry(app: &TestApp, key: &str, i: u64) -> Value {
    let res = app.get(&format!("/api/v1/ledger/entries/{i}"), None).await;
    assert_eq!(res.status(), 200, "entry {i}");
    let e: Value = res.json().await.unwrap();
    let cp = open_checkpoint(e["checkpoint"]["note"].as_str().unwrap().as_bytes(), key).unwrap();
    assert_eq!(
        STANDARD.encode(cp.root),
        e["checkpoint"]["root"].as_str().unwrap()
    );
    let encoded = e["encoded"].as_str().unwrap();
    let leaf = citytrust_ledger::leaf_hash(encoded.as_bytes());
    assert_eq!(leaf.to_vec(), b64(&e["leaf_hash"]));
    let proof: Vec<Vec<u8>> = e["inclusion_proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(b64)
        .collect();
    let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
    verify_inclusion(i, cp.size, &leaf, &proof, &cp.root).unwrap();
    // The proof alone says the same, for the same tree.
    let res = app.get(&format!("/api/v1/ledger/proofs/{i}"), None).await;
    assert_eq!(res.status(), 200, "proof {i}");
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["size"], cp.size);
    assert_eq!(p["root"], e["checkpoint"]["root"]);
    assert_eq!(p["leaf_hash"], e["leaf_hash"]);
    assert_eq!(p["inclusion_proof"], e["inclusion_proof"]);
    // The decoded entry is the canonical encoding's content.
    assert_eq!(serde_json::from_str::<Value>(encoded).unwrap(), e["entry"]);
    e["entry"].clone()
}

#[tokio::test]
async fn every_change_is_logged_provably_and_without_names() {
    let app = TestApp::start().await;
    let key = app
        .get("/ledger/key", None)
        .await
        .text()
        .await
        .unwrap()
        .trim()
        .to_string();
    assert!(key.starts_with("citytrust.localhost/ledger+"), "{key}");
    // Nothing integrated yet: no checkpoint.
    assert_eq!(app.get("/ledger/checkpoint", None).await.status(), 404);
    let alice = app.token("alice").await;
    app.post_json(
        "/api/v1/datasets",
        Some(&alice),
        &dataset("Heat map", "city-energy", "open"),
    )
    .await;
    app.patch_json(
        "/api/v1/datasets/heat-map",
        Some(&alice),
        &json!({"description": "Heat."}),
    )
    .await;
    app.patch_json(
        "/api/v1/datasets/heat-map",
        Some(&alice),
        &json!({"spectrum": "shared_group"}),
    )
    .await;
    // A refused change writes no entry.
    let before = app.service.store().ledger_size().await.unwrap();
    let bob = app.token("bob").await;
    app.patch_json(
        "/api/v1/datasets/heat-map",
        Some(&bob),
        &json!({"title": "x"}),
    )
    .await;
    app.patch_json(
        "/api/v1/datasets/heat-map",
        Some(&alice),
        &json!({"spectrum": "bogus"}),
    )
    .await;
    assert_eq!(app.service.store().ledger_size().await.unwrap(), before);

    assert_eq!(app.service.integrate_ledger().await.unwrap(), Some(5));
    let note = app
        .get("/ledger/checkpoint", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        note.starts_with("citytrust.localhost/ledger\n5\n"),
        "{note}"
    );
    assert_eq!(open_checkpoint(note.as_bytes(), &key).unwrap().size, 5);

    let mut kinds = Vec::new();
    for i in 0..5 {
        let e = verified_entry(&app, &key, i).await;
        assert_eq!(e["v"], 1);
        let text = e.to_string();
        for name in ["alice", "bob", "admin"] {
            assert!(
                !text.contains(&format!("\"{name}\"")),
                "entry {i} names a person: {text}"
            );
        }
        kinds.push(e["type"].as_str().unwrap().to_string());
    }
    assert_eq!(
        kinds,
        [
            "organization.created",
            "organization.created",
            "dataset.registered",
            "dataset.changed",
            "dataset.reclassified"
        ]
    );
    let reclassified = verified_entry(&app, &key, 4).await;
    assert_eq!(reclassified["previous_spectrum"], "open");
    assert_eq!(reclassified["spectrum"], "shared_group");
    assert_eq!(reclassified["by"], "organization:city-energy");
    for path in [
        "/api/v1/ledger/entries/5",
        "/api/v1/ledger/proofs/5",
        "/api/v1/ledger/proofs/x",
    ] {
        assert_problem(app.get(path, None).await, 404, "not_found", None).await;
    }
}

#[tokio::test]
async fn checkpoints_stay_consistent_across_growth_and_restart() {
    let app = TestApp::start().await;
    let key = app
        .get("/ledger/key", None)
        .await
        .text()
        .await
        .unwrap()
        .trim()
        .to_string();
    let alice = app.token("alice").await;
    app.service.integrate_ledger().await.unwrap();
    let first = open_checkpoint(
        app.get("/ledger/checkpoint", None)
            .await
            .text()
            .await
            .unwrap()
            .as_bytes(),
        &key,
    )
    .unwrap();
    assert_eq!(first.size, 2);
    for i in 0..7 {
        app.post_json(
            "/api/v1/datasets",
            Some(&alice),
            &dataset(&format!("Set {i}"), "city-energy", "open"),
        )
        .await;
    }
    app.service.integrate_ledger().await.unwrap();
    let second = open_checkpoint(
        app.get("/ledger/checkpoint", None)
            .await
            .text()
            .await
            .unwrap()
            .as_bytes(),
        &key,
    )
    .unwrap();
    assert_eq!(second.size, 9);
    let res: Value = app
        .get("/api/v1/ledger/consistency?from=2&to=9", None)
        .await
        .json()
        .await
        .unwrap();
    let proof: Vec<Vec<u8>> = res["proof"].as_array().unwrap().iter().map(b64).collect();
    let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
    verify_consistency(2, 9, &proof, &first.root, &second.root).unwrap();
    assert_problem(
        app.get("/api/v1/ledger/consistency?from=3&to=99", None)
            .await,
        422,
        "validation_failed",
        Some("from"),
    )
    .await;
    assert_problem(
        app.get("/api/v1/ledger/consistency?from=x&to=9", None)
            .await,
        400,
        "invalid_parameter",
        Some("from"),
    )
    .await;

    // After a restart the tree is reloaded, checked, and grows on consistently.
    let restarted = app.restart_service().await.unwrap();
    app.post_json(
        "/api/v1/datasets",
        Some(&alice),
        &dataset("After restart", "city-energy", "open"),
    )
    .await;
    assert_eq!(restarted.integrate_ledger().await.unwrap(), Some(10));
    let third = restarted.latest_checkpoint().await.unwrap().unwrap();
    let third = open_checkpoint(third.note.as_bytes(), &key).unwrap();
    let proof: Vec<[u8; 32]> = restarted.ledger_consistency(9, 10).await.unwrap();
    let proof: Vec<&[u8]> = proof.iter().map(|h| h.as_slice()).collect();
    verify_consistency(9, 10, &proof, &second.root, &third.root).unwrap();
}

#[tokio::test]
async fn a_tampered_tree_is_detected_on_start() {
    let app = TestApp::start().await;
    app.service.integrate_ledger().await.unwrap();
    let store = citytrust_store::Store::connect(&app.db_url).await.unwrap();
    let tile = store.ledger_tiles(&[(0, 0)]).await.unwrap().remove(0);
    assert!(tile.width >= 2, "{tile:?}");
    // Stored bottom row first, then each interior row.
    let interior = 32 * tile.width as usize;
    // A leaf hash changed, then an interior node: caught by the root (when
    // it is computed from the changed hash) or by the tile's own rows.
    for (byte, want) in [
        (
            0,
            "the stored tree does not match itself (tile 0/0, row 1, node 0)",
        ),
        (interior, "the stored tree does not match checkpoint"),
    ] {
        let mut bad = tile.clone();
        bad.hashes[byte] ^= 1;
        app.sql("DELETE FROM ledger_tiles WHERE level = 0 AND idx = 0")
            .await;
        store.put_ledger_tiles(&[bad]).await.unwrap();
        let err = app
            .restart_service()
            .await
            .err()
            .expect("a tampered tree must stop the service");
        assert!(err.to_string().contains(want), "{err}");
    }
    // Cut short (or lost): rebuilt from the entries at start, and checked
    // against the signed root like any tile.
    let mut short = tile.clone();
    short.width -= 1;
    short.hashes.truncate(32 * (short.width as usize));
    app.sql("DELETE FROM ledger_tiles WHERE level = 0 AND idx = 0")
        .await;
    app.sql("DELETE FROM ledger_tiles WHERE level > 0").await;
    store.put_ledger_tiles(&[short]).await.unwrap();
    app.restart_service()
        .await
        .expect("a short tile is rebuilt");
    assert_eq!(store.ledger_tiles(&[(0, 0)]).await.unwrap(), vec![tile]);
}

#[tokio::test]
async fn a_node_building_on_tiles_another_node_has_grown_since_signs_the_same_tree() {
    // Node A reads the tree's edge after node B has grown its tiles but
    // before A sees B's checkpoint (here: B's checkpoint row is set aside
    // while A starts). A must build on the tree it knows — found by the
    // three-node load run as "bad math" errors from the sequencer.
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let old = app.service.integrate_ledger().await.unwrap().unwrap();
    for i in 0..5 {
        app.post_json(
            "/api/v1/datasets",
            Some(&alice),
            &dataset(&format!("Grown {i}"), "city-energy", "open"),
        )
        .await;
    }
    let grown = app.service.integrate_ledger().await.unwrap().unwrap();
    assert!(grown > old);
    let root_by_b = app.service.latest_checkpoint().await.unwrap().unwrap().root;
    app.sql(&format!(
        "DELETE FROM ledger_checkpoints WHERE size = {grown}"
    ))
    .await;
    // A is another node: its witness file is its own (none yet).
    let store = citytrust_store::Store::connect(&app.db_url).await.unwrap();
    let mut settings = app.settings.clone();
    settings.ledger_witness = None;
    let a = citytrust_service::Service::new(store, app.clock.clone(), settings)
        .await
        .unwrap();
    assert_eq!(a.integrate_ledger().await.unwrap(), Some(grown));
    assert_eq!(
        a.latest_checkpoint().await.unwrap().unwrap().root,
        root_by_b
    );
}

#[tokio::test]
async fn a_log_ending_a_bottom_tile_restarts_and_grows() {
    // 256 entries: the tree's right edge is a tile not started yet, and the
    // last full one is checked at start all the same (found by the 10^8-entry
    // bench, 10^8 being a multiple of 256).
    let app = TestApp::start().await;
    let store = app.service.store();
    let have = store.ledger_size().await.unwrap();
    let bodies: Vec<(String, String)> = (have..256)
        .map(|i| {
            let at = "2026-12-06T00:00:00Z".to_string();
            let body = citytrust_ledger::entry::encode("test.entry", &at, json!({"n": i})).unwrap();
            (String::from_utf8(body).unwrap(), at)
        })
        .collect();
    let entries: Vec<citytrust_store::NewLogEntry<'_>> = bodies
        .iter()
        .map(|(body, at)| citytrust_store::NewLogEntry {
            kind: "test.entry",
            body,
            at,
        })
        .collect();
    store.append_log_batch(&entries).await.unwrap();
    assert_eq!(app.service.integrate_ledger().await.unwrap(), Some(256));
    let again = app
        .restart_service()
        .await
        .expect("restarts on a full bottom tile");
    // An edited entry of that last full tile is still caught.
    app.sql(
        "UPDATE ledger_entries SET body = replace(body, '\"n\":255', '\"n\":999') WHERE idx = 255",
    )
    .await;
    let err = app
        .restart_service()
        .await
        .err()
        .expect("an edited entry stops the node");
    assert!(
        err.to_string()
            .contains("does not match its entries (entry 255)"),
        "{err}"
    );
    app.sql(
        "UPDATE ledger_entries SET body = replace(body, '\"n\":999', '\"n\":255') WHERE idx = 255",
    )
    .await;
    app.post_json(
        "/api/v1/datasets",
        Some(&app.token("alice").await),
        &dataset("After a full tile", "city-energy", "open"),
    )
    .await;
    assert_eq!(again.integrate_ledger().await.unwrap(), Some(257));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequencer_signs_while_reads_are_appended_without_pause() {
    // Reads' entries commit all the time on a busy node; the sequencer's
    // transaction must wait its turn, not be refused (found by the
    // sustained-append bench on SQLite: "database is locked").
    let app = TestApp::start().await;
    let appender = citytrust_service::ledger::Appender::spawn(app.service.store().clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (appender, stop) = (appender.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = "2026-12-06T00:00:00Z".to_string();
                let body =
                    citytrust_ledger::entry::encode("test.read", &at, json!({"t": t, "n": n}))
                        .unwrap();
                appender
                    .append("test.read", String::from_utf8(body).unwrap(), at)
                    .await
                    .unwrap();
                n += 1;
            }
        }));
    }
    let mut signed = 0;
    for _ in 0..40 {
        if let Some(size) = app.service.integrate_ledger().await.unwrap() {
            signed = size;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(signed > 2, "signed {signed}");
}

#[tokio::test]
async fn an_edited_entry_is_detected_on_start() {
    let app = TestApp::start().await;
    app.service.integrate_ledger().await.unwrap();
    let n = app.sql("UPDATE ledger_entries SET body = replace(body, 'City Energy', 'Evil Energy') WHERE idx = 0").await;
    assert_eq!(n, 1);
    let err = app
        .restart_service()
        .await
        .err()
        .expect("an edited entry must stop the service");
    assert!(
        err.to_string().contains("does not match its entries"),
        "{err}"
    );
}

#[tokio::test]
async fn a_node_never_signs_over_a_log_that_does_not_extend_its_last_checkpoint() {
    let app = TestApp::start().await;
    let signed = app.service.integrate_ledger().await.unwrap().unwrap();
    let witness = std::fs::read_to_string(app.settings.ledger_witness.as_ref().unwrap()).unwrap();
    assert!(witness.starts_with(&format!("{signed}\n")), "{witness}");
    // The database loses its checkpoints and hashes (restored from an old
    // backup, or wiped by someone who would re-sign the log): the node stops.
    app.sql("DELETE FROM ledger_checkpoints").await;
    app.sql("DELETE FROM ledger_tiles").await;
    let err = app
        .restart_service()
        .await
        .err()
        .expect("a database behind the witness must stop the node");
    assert!(
        err.to_string().contains(&format!(
            "holds a log of 0 entries, but this node signed a checkpoint of {signed}"
        )),
        "{err}"
    );
    // Someone also rewrites an entry and has a node without the witness
    // re-sign the log: a fork under the same key.
    app.sql("UPDATE ledger_entries SET body = replace(body, 'City Energy', 'Evil Energy') WHERE idx = 0").await;
    let store = citytrust_store::Store::connect(&app.db_url).await.unwrap();
    let mut settings = app.settings.clone();
    settings.ledger_witness = None;
    let node = citytrust_service::Service::new(store, app.clock.clone(), settings)
        .await
        .unwrap();
    assert_eq!(node.integrate_ledger().await.unwrap(), Some(signed));
    // The node that signed the original log, with its witness, will not go on from the fork.
    let err = app
        .restart_service()
        .await
        .err()
        .expect("a forked log must stop the node");
    assert!(
        err.to_string().contains(&format!(
            "not consistent with checkpoint {signed} this node signed"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn tiles_and_entry_bundles_rebuild_the_signed_root() {
    let app = TestApp::start().await;
    let key = app
        .get("/ledger/key", None)
        .await
        .text()
        .await
        .unwrap()
        .trim()
        .to_string();
    let alice = app.token("alice").await;
    for i in 0..3 {
        app.post_json(
            "/api/v1/datasets",
            Some(&alice),
            &dataset(&format!("Tile {i}"), "city-energy", "open"),
        )
        .await;
    }
    app.service.integrate_ledger().await.unwrap();
    let cp = open_checkpoint(
        app.get("/ledger/checkpoint", None)
            .await
            .text()
            .await
            .unwrap()
            .as_bytes(),
        &key,
    )
    .unwrap();
    assert_eq!(cp.size, 5);
    let res = app.get("/ledger/tile/entries/000.p/5", None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let bundle = res.bytes().await.unwrap();
    let mut leaves = Vec::new();
    let mut rest = &bundle[..];
    while !rest.is_empty() {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        citytrust_ledger::entry::decode(&rest[2..2 + len]).unwrap();
        leaves.push(citytrust_ledger::leaf_hash(&rest[2..2 + len]));
        rest = &rest[2 + len..];
    }
    assert_eq!(leaves.len(), 5);
    assert_eq!(
        citytrust_ledger::tree::root(&leaves),
        cp.root,
        "the entries rebuild the signed root"
    );
    let tile = app
        .get("/ledger/tile/0/000.p/5", None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        tile.chunks(32)
            .map(|c| <[u8; 32]>::try_from(c).unwrap())
            .collect::<Vec<_>>(),
        leaves
    );
    // Beyond the checkpoint, malformed, or not yet full: 404.
    for path in [
        "/ledger/tile/entries/000.p/6",
        "/ledger/tile/entries/000",
        "/ledger/tile/0/000.p/6",
        "/ledger/tile/1/000.p/1",
        "/ledger/tile/0/0",
    ] {
        assert_eq!(app.get(path, None).await.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn the_log_pages_list_entries_newest_first_and_show_each() {
    let app = TestApp::start().await;
    let size = app.service.integrate_ledger().await.unwrap().unwrap();
    let page = app.page("/log").await;
    assert!(page.contains(&format!("<dd>{size}</dd>")), "{page}");
    assert!(page.contains("organization.created"), "{page}");
    let newest = page.find(&format!("href=\"/log/{}\"", size - 1)).unwrap();
    let oldest = page.find("href=\"/log/0\"").unwrap();
    assert!(newest < oldest, "newest first");
    let entry = app.page("/log/0").await;
    assert!(
        entry.contains("Log entry 0") && entry.contains("organization.created"),
        "{entry}"
    );
    assert!(entry.contains("/static/verify-entry.js"));
    for (path, status) in [
        ("/log/nope", 404),
        (&format!("/log/{size}") as &str, 404),
        ("/log?before=x", 400),
    ] {
        assert_eq!(app.get(path, None).await.status(), status, "{path}");
    }
    let script = app.get("/static/verify-entry.js", None).await;
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().contains("rootFrom"));
}

#[tokio::test]
async fn a_log_kept_before_the_index_existed_is_indexed_at_start() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    for title in ["Bus stops", "Bike lanes"] {
        let res = app
            .post_json(
                "/api/v1/datasets",
                Some(&alice),
                &dataset(title, "city-energy", "open"),
            )
            .await;
        assert_eq!(res.status(), 201);
    }
    app.service.integrate_ledger().await.unwrap();
    let size = app.service.latest_checkpoint().await.unwrap().unwrap().size;
    let registered = |store: &citytrust_store::Store| {
        let store = store.clone();
        async move {
            store
                .ledger_counts(citytrust_store::LedgerFacet::Day, &["dataset.registered"])
                .await
                .unwrap()
                .iter()
                .map(|(_, n)| n)
                .sum::<i64>()
        }
    };
    assert_eq!(registered(app.service.store()).await, 2);
    // As a database migrated from before `ledger_index`: nothing indexed.
    app.sql("DELETE FROM ledger_index").await;
    app.sql("UPDATE counters SET value = 0 WHERE name = 'ledger_indexed'")
        .await;
    let restarted = app.restart_service().await.unwrap();
    assert_eq!(restarted.store().ledger_indexed().await.unwrap(), size);
    assert_eq!(registered(restarted.store()).await, 2);
}

#[tokio::test]
async fn full_entry_bundles_are_kept_once_checked_and_an_edited_entry_is_never_kept() {
    let app = TestApp::start().await;
    let store = app.service.store().clone();
    let bodies: Vec<(String, String)> = (0..600)
        .map(|i| {
            let at = format!("2026-03-01T10:{:02}:{:02}Z", i / 60 % 60, i % 60);
            let body = citytrust_ledger::entry::encode(
                "content.read",
                &at,
                json!({"dataset": "d", "rows": i, "by": "public"}),
            )
            .unwrap();
            (String::from_utf8(body).unwrap(), at)
        })
        .collect();
    let entries: Vec<citytrust_store::NewLogEntry<'_>> = bodies
        .iter()
        .map(|(body, at)| citytrust_store::NewLogEntry {
            kind: "content.read",
            body,
            at,
        })
        .collect();
    store.append_log_batch(&entries).await.unwrap();
    app.service.integrate_ledger().await.unwrap();
    let size = app.service.latest_checkpoint().await.unwrap().unwrap().size as u64;
    assert!(size >= 512, "{size}");
    let tiles = app.settings.ledger_tiles.clone().unwrap();
    let kept = |n: &str| tiles.join("tile/entries").join(n);
    let bundle = |n: &str| {
        let app = &app;
        let path = format!("/ledger/tile/entries/{n}");
        async move {
            let res = app.get(&path, None).await;
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap().to_vec()
        }
    };
    // Both full bundles were written when the checkpoint completed them; the
    // partial one is not kept.
    let first = bundle("000").await;
    assert_eq!(std::fs::read(kept("000")).unwrap(), first);
    assert!(kept("001").exists());
    assert!(!tiles.join("tile/entries/002.p").exists());
    // Kept means served as signed, whatever happens to the database after.
    let edited = app
        .sql("UPDATE ledger_entries SET body = REPLACE(body, '\"rows\":5,', '\"rows\":6,') WHERE body LIKE '%\"rows\":5,%' AND idx < 256")
        .await;
    assert_eq!(edited, 1);
    assert_eq!(bundle("000").await, first);
    // Not kept yet and edited: served as stored (so verifiers see it), never kept.
    std::fs::remove_file(kept("001")).unwrap();
    app.sql("UPDATE ledger_entries SET body = REPLACE(body, 'public', 'nobody') WHERE idx = 300")
        .await;
    let edited = bundle("001").await;
    assert!(String::from_utf8_lossy(&edited).contains("nobody"));
    assert!(!kept("001").exists());
}
