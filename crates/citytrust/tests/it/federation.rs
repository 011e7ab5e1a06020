//! Federation: one node harvests another's DCAT-AP catalogue and CKAN API
//! over loopback; feeds that break, err or carry bad records change
//! nothing they should not; only administrators register and harvest.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TestApp, assert_problem, dataset};

pub(crate) async fn register(app: &TestApp, token: &str, id: &str, url: &str, kind: &str) -> Value {
    let res = app
        .post_json(
            "/api/v1/remote-catalogues",
            Some(token),
            &json!({"id": id, "name": format!("City {id}"), "url": url, "kind": kind}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

pub(crate) async fn harvest(app: &TestApp, token: &str, id: &str) -> Value {
    let res = app
        .post_json(
            &format!("/api/v1/remote-catalogues/{id}/harvest"),
            Some(token),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

pub(crate) async fn federated(app: &TestApp, query: &str) -> Value {
    let res = app
        .get(&format!("/api/v1/federated-entries?{query}"), None)
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn a_node_harvests_another_nodes_catalogue_and_follows_its_changes() {
    let b = TestApp::start().await;
    let alice_b = b.token("alice").await;
    for (title, spectrum) in [
        ("Heat pump installations", "open"),
        ("District heating meters", "shared_group"),
        ("Substation load", "closed"),
    ] {
        b.create_dataset(&alice_b, &dataset(title, "city-energy", spectrum))
            .await;
    }
    let a = TestApp::start().await;
    let admin_a = a.token("admin").await;

    // Registering harvests at once: B's three entries arrive, with B as their source.
    let c = register(&a, &admin_a, "b", &b.url("/catalog.ttl"), "dcat").await;
    let report = &c["last_harvest"];
    assert_eq!(report["outcome"], "succeeded", "{c}");
    assert_eq!(
        (report["records"].as_u64(), report["added"].as_u64()),
        (Some(3), Some(3)),
        "{c}"
    );
    assert_eq!(c["entries"], 3);
    let found = federated(&a, "q=heat").await;
    assert_eq!(found["total"], 2, "{found}");
    let pump = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["title"] == "Heat pump installations")
        .unwrap()
        .clone();
    assert_eq!(pump["source"]["catalogue_name"], "City b");
    assert_eq!(pump["access_right"], "public");
    assert_eq!(
        pump["landing_page"],
        b.url("/datasets/heat-pump-installations")
    );
    assert_eq!(found["sources"][0]["value"], "b");
    let restricted = federated(&a, "q=meters").await;
    assert_eq!(restricted["items"][0]["access_right"], "restricted");
    // The local search does not mix them in; the API points to where they are.
    let local: Value = a
        .get("/api/v1/datasets?q=heat", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(local["total"], 0);
    assert_problem(
        a.get("/api/v1/datasets?source=b", None).await,
        400,
        "invalid_parameter",
        Some("source"),
    )
    .await;

    // The portal: a Source facet, the entries under the city's own, and a page per entry.
    let page = a.page("/datasets?q=heat").await;
    assert!(page.contains("2 more in other catalogues"), "{page}");
    assert!(page.contains("City b"));
    let page = a.page("/datasets?source=b").await;
    assert!(page.contains("3 datasets from another catalogue"), "{page}");
    let id = pump["id"].as_str().unwrap();
    let page = a.page(&format!("/federated/{id}")).await;
    assert!(page.contains("cannot be changed here"));
    assert!(page.contains(&b.url("/datasets/heat-pump-installations")));

    // B renames one entry and withdraws another: the next harvest follows.
    let res = b
        .patch_json(
            "/api/v1/datasets/substation-load",
            Some(&alice_b),
            &json!({"publication_status": "withdrawn"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = b
        .patch_json(
            "/api/v1/datasets/district-heating-meters",
            Some(&alice_b),
            &json!({"title": "District heating meter readings"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let r = harvest(&a, &admin_a, "b").await;
    assert_eq!(
        (
            r["added"].as_u64(),
            r["updated"].as_u64(),
            r["unchanged"].as_u64(),
            r["removed"].as_u64()
        ),
        (Some(0), Some(1), Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(federated(&a, "q=substation").await["total"], 0);
    assert_eq!(
        federated(&a, "q=readings").await["items"][0]["title"],
        "District heating meter readings"
    );
    // Nothing changed on B: nothing changes on A.
    let r = harvest(&a, &admin_a, "b").await;
    assert_eq!(
        (r["unchanged"].as_u64(), r["updated"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );

    // Each harvest is a log entry with its counts.
    let logged = a.entries_of_type("catalogue.harvested").await;
    assert_eq!(logged.len(), 3);
    assert!(
        logged[1].contains("\"removed\":1") && logged[1].contains("\"updated\":1"),
        "{}",
        logged[1]
    );

    // B's CKAN API is a second way in: the same two entries.
    let c = register(&a, &admin_a, "b-ckan", &b.url(""), "ckan").await;
    assert_eq!(c["last_harvest"]["outcome"], "succeeded", "{c}");
    assert_eq!(c["entries"], 2, "{c}");
    let ckan = federated(&a, "source=b-ckan").await;
    assert_eq!(ckan["total"], 2);
    assert!(
        ckan["items"][0]["landing_page"]
            .as_str()
            .unwrap()
            .starts_with(&b.url("/dataset/"))
    );

    // B's JSON-LD export reads the same as its Turtle.
    let c = register(&a, &admin_a, "b-jsonld", &b.url("/catalog.jsonld"), "dcat").await;
    assert_eq!(c["last_harvest"]["outcome"], "succeeded", "{c}");
    let mut from_jsonld: Vec<String> = federated(&a, "source=b-jsonld").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap().to_string())
        .collect();
    let mut from_turtle: Vec<String> = federated(&a, "source=b").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap().to_string())
        .collect();
    from_jsonld.sort();
    from_turtle.sort();
    assert_eq!(from_jsonld, from_turtle);
    assert_eq!(from_jsonld.len(), 2);

    // Removing a catalogue removes its entries.
    let res = a
        .delete("/api/v1/remote-catalogues/b-ckan", Some(&admin_a))
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(federated(&a, "source=b-ckan").await["total"], 0);
    assert_eq!(a.entries_of_type("catalogue.remote_removed").await.len(), 1);
}

#[tokio::test]
async fn only_administrators_register_read_and_harvest_catalogues() {
    let a = TestApp::start().await;
    let body =
        json!({"id": "x", "name": "X", "url": "http://127.0.0.1:9/catalog.ttl", "kind": "dcat"});
    assert_problem(
        a.post_json("/api/v1/remote-catalogues", None, &body).await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    for who in ["alice", "trustee", "resident"] {
        let token = a.token(who).await;
        assert_problem(
            a.post_json("/api/v1/remote-catalogues", Some(&token), &body)
                .await,
            403,
            "forbidden",
            None,
        )
        .await;
        assert_problem(
            a.get("/api/v1/remote-catalogues", Some(&token)).await,
            403,
            "forbidden",
            None,
        )
        .await;
    }
    let admin = a.token("admin").await;
    // Registered though unreachable: the failed first harvest is its report.
    let c = register(&a, &admin, "x", "http://127.0.0.1:9/catalog.ttl", "dcat").await;
    assert_eq!(c["last_harvest"]["outcome"], "failed");
    assert!(
        c["last_harvest"]["error"]
            .as_str()
            .unwrap()
            .contains("could not be fetched"),
        "{c}"
    );
    let alice = a.token("alice").await;
    assert_problem(
        a.post_json(
            "/api/v1/remote-catalogues/x/harvest",
            Some(&alice),
            &json!({}),
        )
        .await,
        403,
        "forbidden",
        None,
    )
    .await;
    assert_problem(
        a.delete("/api/v1/remote-catalogues/x", Some(&alice)).await,
        403,
        "forbidden",
        None,
    )
    .await;
    // Bad registrations name the field.
    for (field, bad) in [
        (
            "url",
            json!({"id": "y", "name": "Y", "url": "file:///etc/passwd", "kind": "dcat"}),
        ),
        (
            "id",
            json!({"id": "Not OK", "name": "Y", "url": "https://y.example/", "kind": "ckan"}),
        ),
        (
            "interval_hours",
            json!({"id": "y", "name": "Y", "url": "https://y.example/", "kind": "ckan", "interval_hours": 0}),
        ),
    ] {
        assert_problem(
            a.post_json("/api/v1/remote-catalogues", Some(&admin), &bad)
                .await,
            422,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    let dup = json!({"id": "x", "name": "X", "url": "http://127.0.0.1:9/c.ttl", "kind": "dcat"});
    assert_eq!(
        a.post_json("/api/v1/remote-catalogues", Some(&admin), &dup)
            .await
            .status(),
        409
    );
    let unknown =
        json!({"id": "z", "name": "Z", "url": "https://z.example/", "kind": "dcat", "secret": 1});
    assert_eq!(
        a.post_json("/api/v1/remote-catalogues", Some(&admin), &unknown)
            .await
            .status(),
        422
    );
}

/// A feed served from memory: each request answers the current (status, body).
pub(crate) struct Feed {
    pub url: String,
    pub answer: Arc<Mutex<(u16, String)>>,
}

pub(crate) async fn serve_feed() -> Feed {
    serve_feed_as("text/turtle").await
}

/// A feed answering with `content_type`; a 3xx answer's body is its `Location`.
pub(crate) async fn serve_feed_as(content_type: &'static str) -> Feed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/catalog.ttl", listener.local_addr().unwrap());
    let answer = Arc::new(Mutex::new((200u16, String::new())));
    let shared = answer.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (status, body) = shared.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = if (300..400).contains(&status) {
                    format!(
                        "HTTP/1.1 {status} X\r\nlocation: {body}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                } else {
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                };
                let body = if (300..400).contains(&status) {
                    String::new()
                } else {
                    body
                };
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    Feed { url, answer }
}

fn feed(datasets: &[(&str, Option<&str>)]) -> String {
    let mut ttl = String::from(
        "@prefix dcat: <http://www.w3.org/ns/dcat#> .\n@prefix dct: <http://purl.org/dc/terms/> .\n",
    );
    for (id, title) in datasets {
        ttl.push_str(&format!("<https://remote.example/d/{id}> a dcat:Dataset"));
        if let Some(t) = title {
            ttl.push_str(&format!(" ; dct:title \"{t}\""));
        }
        ttl.push_str(" .\n");
    }
    ttl
}

#[tokio::test]
async fn broken_feeds_change_nothing_and_bad_records_are_named() {
    let a = TestApp::start().await;
    let admin = a.token("admin").await;
    let f = serve_feed().await;
    *f.answer.lock().unwrap() = (
        200,
        feed(&[("one", Some("Bridges")), ("two", Some("Tunnels"))]),
    );
    let c = register(&a, &admin, "r", &f.url, "dcat").await;
    assert_eq!(c["entries"], 2, "{c}");

    // Broken off mid-statement: the harvest fails, naming the place, and the entries stay.
    let mut broken = feed(&[("one", Some("Bridges")), ("three", Some("Roads"))]);
    broken.push_str("<https://remote.example/d/four> a dcat:Dataset ; dct:title \"Unterminated");
    *f.answer.lock().unwrap() = (200, broken);
    let r = harvest(&a, &admin, "r").await;
    assert_eq!(r["outcome"], "failed");
    assert!(r["error"].as_str().unwrap().contains("line 5"), "{r}");
    let all = federated(&a, "source=r").await;
    let titles: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Bridges", "Tunnels"]);

    // An HTTP error: the same.
    *f.answer.lock().unwrap() = (503, "down".into());
    let r = harvest(&a, &admin, "r").await;
    assert_eq!(r["outcome"], "failed");
    assert!(r["error"].as_str().unwrap().contains("503"), "{r}");
    assert_eq!(federated(&a, "source=r").await["total"], 2);
    assert_eq!(a.entries_of_type("catalogue.harvest_failed").await.len(), 2);

    // A record that lost its title is rejected and named; its last good version stays.
    // A record never seen before without a title is rejected too, and not kept.
    *f.answer.lock().unwrap() = (
        200,
        feed(&[("one", None), ("two", Some("Tunnels")), ("five", None)]),
    );
    let r = harvest(&a, &admin, "r").await;
    assert_eq!(r["outcome"], "succeeded", "{r}");
    assert_eq!(r["rejected"], 2);
    let rejected = r["rejected_records"].as_array().unwrap();
    let one = rejected
        .iter()
        .find(|x| x["record"] == "https://remote.example/d/one")
        .unwrap();
    assert_eq!(one["reason"], "no dct:title");
    assert_eq!(one["kept_previous"], true);
    let five = rejected
        .iter()
        .find(|x| x["record"] == "https://remote.example/d/five")
        .unwrap();
    assert_eq!(five["kept_previous"], false);
    assert_eq!(r["removed"], 0);
    let all = federated(&a, "source=r").await;
    assert_eq!(all["total"], 2, "{all}");

    // A feed that suddenly lists nothing is taken for broken: nothing is removed.
    *f.answer.lock().unwrap() = (200, String::new());
    let r = harvest(&a, &admin, "r").await;
    assert_eq!(r["outcome"], "failed");
    assert!(
        r["error"].as_str().unwrap().contains("lists no datasets"),
        "{r}"
    );
    assert_eq!(federated(&a, "source=r").await["total"], 2);

    // A harvest running (another node's lease) is not doubled; a lease past its time is taken over.
    a.sql("UPDATE remote_catalogues SET harvesting_until = '2999-01-01T00:00:00Z', harvesting_by = 'elsewhere' WHERE id = 'r'")
        .await;
    let res = a
        .post_json(
            "/api/v1/remote-catalogues/r/harvest",
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 409);
    a.sql("UPDATE remote_catalogues SET harvesting_until = '2000-01-01T00:00:00Z' WHERE id = 'r'")
        .await;
    *f.answer.lock().unwrap() = (
        200,
        feed(&[("one", Some("Bridges")), ("two", Some("Tunnels"))]),
    );
    assert_eq!(harvest(&a, &admin, "r").await["outcome"], "succeeded");

    // The catalogue's record keeps the last report and when it last succeeded.
    let c: Value = a
        .get("/api/v1/remote-catalogues/r", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(c["last_harvest"]["outcome"], "succeeded");
    assert_eq!(c["last_harvest"]["records"], 2);
    assert!(c["last_success_at"].is_string());
}

/// Harvests finish while other requests write the log: a harvest's
/// transaction takes its write lock first (on SQLite, a read transaction
/// that had to become a write one after another commit failed as "database
/// is locked", and left its lease held).
#[tokio::test]
async fn harvests_finish_while_others_write() {
    let a = TestApp::start().await;
    let admin = a.token("admin").await;
    let resident = a.token("resident").await;
    let f = serve_feed().await;
    *f.answer.lock().unwrap() = (
        200,
        feed(&[("one", Some("Bridges")), ("two", Some("Tunnels"))]),
    );
    register(&a, &admin, "busy", &f.url, "dcat").await;
    let writers = async {
        for i in 0..60 {
            let res = a
                .post_json(
                    "/api/v1/data-requests",
                    Some(&resident),
                    &json!({"title": format!("Data {i}"), "description": "d", "reason": "r", "use_case": "u", "benefit": "b"}),
                )
                .await;
            assert_eq!(res.status(), 201);
        }
    };
    let harvests = async {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let res = a
                .post_json(
                    "/api/v1/remote-catalogues/busy/harvest",
                    Some(&admin),
                    &json!({}),
                )
                .await;
            statuses.push(res.status().as_u16());
        }
        statuses
    };
    let ((), statuses) = tokio::join!(writers, harvests);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}
