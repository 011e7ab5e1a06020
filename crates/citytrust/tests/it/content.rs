//! Dataset content end to end: uploads in every format, row errors with line
//! and column, quarantine, aborted uploads, governed reads and SQL.

use serde_json::{Value, json};

use crate::harness::{TestApp, assert_problem, dataset};

const CSV: &str = "station,no2,reading_date,ok\nSants,84,2018-11-01,true\nEixample,,2018-11-02,false\n\"Gràcia, Sant Gervasi\",41.5,2018-11-03,true\n";

async fn new_dataset(app: &TestApp, token: &str, title: &str, spectrum: &str) -> String {
    app.create_dataset(token, &dataset(title, "city-energy", spectrum))
        .await
}

async fn upload(
    app: &TestApp,
    token: &str,
    id: &str,
    ct: &str,
    body: &[u8],
    query: &str,
) -> reqwest::Response {
    app.post_raw(
        &format!("/api/v1/datasets/{id}/versions{query}"),
        Some(token),
        ct,
        body.to_vec(),
    )
    .await
}

/// Upload `body` as a gzip-encoded CSV.
async fn upload_gzip(app: &TestApp, token: &str, id: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/datasets/{id}/versions")))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The dataset's versions as the public API lists them.
async fn versions(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/datasets/{id}/versions"), None)
        .await
        .json()
        .await
        .unwrap()
}

async fn text(app: &TestApp, path: &str, token: Option<&str>) -> String {
    let res = app.get(path, token).await;
    assert_eq!(res.status(), 200, "{path}");
    res.text().await.unwrap()
}

#[tokio::test]
async fn every_format_goes_in_and_comes_out() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = new_dataset(&app, &alice, "Air readings", "open").await;

    // CSV in: types inferred, values kept.
    let res = upload(&app, &alice, &id, "text/csv", CSV.as_bytes(), "").await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["rows"], 3);
    let types: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text", "float", "date", "boolean"]);
    assert_eq!(v["quality"]["columns"][1]["nulls"], 1);

    // CSV → Parquet → CSV keeps every value.
    let csv = text(
        &app,
        &format!("/api/v1/datasets/{id}/data?format=csv"),
        None,
    )
    .await;
    assert_eq!(
        csv,
        "station,no2,reading_date,ok\nSants,84.0,2018-11-01,true\nEixample,,2018-11-02,false\n\"Gràcia, Sant Gervasi\",41.5,2018-11-03,true\n"
    );
    let json: Value = serde_json::from_str(
        &text(
            &app,
            &format!("/api/v1/datasets/{id}/data?format=json"),
            None,
        )
        .await,
    )
    .unwrap();
    assert_eq!(json[2]["station"], "Gràcia, Sant Gervasi");
    assert_eq!(json[1]["no2"], Value::Null);
    let ndjson = text(
        &app,
        &format!("/api/v1/datasets/{id}/data?format=ndjson"),
        None,
    )
    .await;
    assert_eq!(ndjson.lines().count(), 3);

    // JSON paging: limit, offset and a Link to the next page.
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=json&limit=2"),
            None,
        )
        .await;
    let link = res.headers()["link"].to_str().unwrap().to_string();
    assert!(link.contains("offset=2&limit=2"), "{link}");
    let page2: Value = serde_json::from_str(
        &text(
            &app,
            &format!("/api/v1/datasets/{id}/data?format=json&offset=2&limit=2"),
            None,
        )
        .await,
    )
    .unwrap();
    assert_eq!(page2.as_array().unwrap().len(), 1);
    // Past the end: an empty array, still valid JSON; absurd offsets are refused, not a 500.
    assert_eq!(
        text(
            &app,
            &format!("/api/v1/datasets/{id}/data?format=json&offset=50"),
            None
        )
        .await,
        "[]"
    );
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?offset=9223372036854775808"),
            None,
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errors"][0]["field"],
        "offset"
    );
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/versions/99999999999999999999"),
            None,
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["errors"][0]["field"],
        "version"
    );

    // Parquet out, and back in as a new version: the same rows.
    let parquet = app
        .get(&format!("/api/v1/datasets/{id}/data?format=parquet"), None)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&parquet[..4], b"PAR1");
    let res = upload(
        &app,
        &alice,
        &id,
        "application/vnd.apache.parquet",
        &parquet,
        "",
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 2);
    assert_eq!(
        text(&app, &format!("/api/v1/datasets/{id}/data?version=2"), None).await,
        csv
    );
    assert_eq!(
        text(&app, &format!("/api/v1/datasets/{id}/data?version=1"), None).await,
        csv
    );

    // TSV, NDJSON and a JSON array.
    let res = upload(
        &app,
        &alice,
        &id,
        "text/tab-separated-values",
        b"a\tb\n1\tx\n2\ty\n",
        "",
    )
    .await;
    assert_eq!(res.status(), 201);
    let res = upload(
        &app,
        &alice,
        &id,
        "application/x-ndjson",
        b"{\"a\":1,\"b\":\"x\"}\n\n{\"a\":2,\"b\":null,\"c\":{\"n\":1}}\n",
        "",
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let out = text(
        &app,
        &format!("/api/v1/datasets/{id}/data?format=ndjson"),
        None,
    )
    .await;
    assert_eq!(
        out,
        "{\"a\":1,\"b\":\"x\",\"c\":null}\n{\"a\":2,\"b\":null,\"c\":\"{\\\"n\\\":1}\"}\n"
    );
    let res = upload(
        &app,
        &alice,
        &id,
        "application/json",
        br#"[{"when":"2018-01-01T02:06:00","n":1.5},{"when":"2018-01-02T00:00:00","n":2}]"#,
        "",
    )
    .await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    // Columns come in the order they first appear in the document.
    assert_eq!(
        v["columns"],
        json!([{"name": "when", "type": "timestamp"}, {"name": "n", "type": "float"}])
    );

    // GeoJSON in and out: properties become columns, the geometry is kept.
    let geo = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"NOM": "Ciutat Vella", "code": 1},
         "geometry": {"type": "Polygon", "coordinates": [[[2.17, 41.38], [2.18, 41.38], [2.18, 41.39], [2.17, 41.38]]]}},
        {"type": "Feature", "properties": {"NOM": "Eixample", "code": 2},
         "geometry": {"type": "Point", "coordinates": [2.16, 41.39]}}]});
    let res = upload(
        &app,
        &alice,
        &id,
        "application/geo+json",
        geo.to_string().as_bytes(),
        "",
    )
    .await;
    assert_eq!(res.status(), 201);
    let out: Value = serde_json::from_str(
        &text(
            &app,
            &format!("/api/v1/datasets/{id}/data?format=geojson"),
            None,
        )
        .await,
    )
    .unwrap();
    assert_eq!(out["type"], "FeatureCollection");
    assert_eq!(out["features"][0]["properties"]["NOM"], "Ciutat Vella");
    assert_eq!(
        out["features"][0]["geometry"],
        geo["features"][0]["geometry"]
    );
    assert_eq!(out["features"][1]["geometry"]["type"], "Point");

    // A table with longitude/latitude is served as GeoJSON points; one without coordinates is refused.
    upload(
        &app,
        &alice,
        &id,
        "text/csv",
        b"name,longitude,latitude\nA,2.1,41.3\n",
        "",
    )
    .await;
    let out: Value = serde_json::from_str(
        &text(
            &app,
            &format!("/api/v1/datasets/{id}/data?format=geojson"),
            None,
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        out["features"][0]["geometry"]["coordinates"],
        json!([2.1, 41.3])
    );
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=geojson&version=1"),
            None,
        )
        .await;
    assert_problem(res, 422, "unsupported_format", None).await;

    // gzip-encoded uploads.
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(CSV.as_bytes()).unwrap();
    let res = upload_gzip(&app, &alice, &id, gz.finish().unwrap()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        text(&app, &format!("/api/v1/datasets/{id}/data"), None).await,
        csv
    );
    let versions = versions(&app, &id).await;
    assert_eq!(versions.as_array().unwrap().len(), 8);
    assert_eq!(versions[0]["version"], 8);
}

/// A gzip bomb: a small body that expands past what the trust takes is
/// refused as too large once the bound is reached — not written out whole —
/// and leaves nothing behind.
#[tokio::test]
async fn a_gzip_body_may_not_expand_without_end() {
    use std::io::Write;
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = new_dataset(&app, &alice, "Bomb", "open").await;
    // One gzip member of 1 MiB of rows, repeated: 72 MiB once decompressed
    // (a multi-member gzip is valid), from a body of a few KiB — more than
    // the 64 MiB floor and far more than 100× its size.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b"station,no2\n").unwrap();
    gz.write_all(&b"Sants,84\n".repeat((1 << 20) / 9)).unwrap();
    let member = gz.finish().unwrap();
    let body: Vec<u8> = member.repeat(72);
    assert!(
        body.len() < 1 << 20,
        "the bomb is small: {} bytes",
        body.len()
    );
    let res = upload_gzip(&app, &alice, &id, body).await;
    let problem = assert_problem(res, 413, "body_too_large", None).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("64 MiB"),
        "{problem}"
    );
    let tmp = app.service.content_dir().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let versions = versions(&app, &id).await;
    assert_eq!(versions, json!([]));
    // The same rows, fewer of them, within the bound: stored.
    let res = upload_gzip(&app, &alice, &id, member.repeat(1)).await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn bad_rows_are_reported_with_line_and_column_and_nothing_is_stored() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = new_dataset(&app, &alice, "Messy file", "open").await;

    let mut csv = b"id,count,name\n".to_vec();
    for i in 0..20 {
        csv.extend(format!("{i},{i},row {i}\n").as_bytes());
    }
    csv.extend(b"21,twelve,ok\n"); // line 22: wrong type in column 2
    csv.extend(b"22,5\n"); // line 23: wrong number of fields
    csv.extend(b"23,7,caf\xe9\n"); // line 24: not UTF-8 (Latin-1)
    // The owner declares `count` an integer (inference alone would make it text).
    let res = upload(&app, &alice, &id, "text/csv", &csv, "?types=count:integer").await;
    let body = assert_problem(res, 422, "rows_rejected", None).await;
    assert_eq!(body["total_errors"], 3, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors[0]["line"], 22);
    assert_eq!(errors[0]["column"], 2);
    assert_eq!(errors[0]["field"], "count");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("wrong type: 'twelve' is not an integer"),
        "{body}"
    );
    assert_eq!(errors[1]["line"], 23);
    assert!(
        errors[1]["message"]
            .as_str()
            .unwrap()
            .contains("wrong number of fields: expected 3, found 2")
    );
    assert_eq!(errors[2]["line"], 24);
    assert_eq!(errors[2]["column"], 3);
    assert!(
        errors[2]["message"]
            .as_str()
            .unwrap()
            .contains("bad encoding")
    );
    let versions = versions(&app, &id).await;
    assert_eq!(versions, json!([]));

    // Invalid geometry, named by line.
    let geo = "{\"type\":\"FeatureCollection\",\"features\":[\n{\"type\":\"Feature\",\"properties\":{\"a\":1},\"geometry\":{\"type\":\"Point\",\"coordinates\":[1,2]}},\n{\"type\":\"Feature\",\"properties\":{\"a\":2},\"geometry\":{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[1,0],[1,1],[0,1]]]}}\n]}";
    let res = upload(
        &app,
        &alice,
        &id,
        "application/geo+json",
        geo.as_bytes(),
        "",
    )
    .await;
    let body = assert_problem(res, 422, "rows_rejected", None).await;
    assert_eq!(body["errors"][0]["line"], 3);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid geometry: a polygon ring must end where it starts"),
        "{body}"
    );

    // Quarantine keeps the good rows; the owner downloads the bad ones.
    let res = upload(
        &app,
        &alice,
        &id,
        "text/csv",
        &csv,
        "?on_error=quarantine&types=count:integer",
    )
    .await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["rows"], 20);
    assert_eq!(v["rejected"], 3);
    assert_eq!(v["errors"][0]["line"], 22);
    let rejects = text(
        &app,
        &format!("/api/v1/datasets/{id}/versions/1/rejects"),
        Some(&alice),
    )
    .await;
    assert!(
        rejects.starts_with("line,column,field,message,record\n22,2,count,"),
        "{rejects}"
    );
    assert!(rejects.contains("\"21,twelve,ok\""), "{rejects}");
    // The rows set aside are content like the rest: of open data, anyone's,
    // and the read is logged.
    let bob = app.token("bob").await;
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/versions/1/rejects"),
            Some(&bob),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("citytrust-log-entry"));

    // Declared types override inference, and say where they do not fit.
    let res = upload(
        &app,
        &alice,
        &id,
        "text/csv",
        b"code,n\n08001,1\n08002,2\n",
        "?types=n:text,code:integer",
    )
    .await;
    let body = assert_problem(res, 422, "rows_rejected", None).await;
    assert_eq!(body["errors"][0]["line"], 2);
    assert_eq!(body["errors"][0]["field"], "code");

    // Whole-file problems.
    for (ct, body, code) in [
        ("text/csv", &b""[..], "unreadable_content"),
        (
            "application/json",
            &b"{\"not\": \"an array\"}"[..],
            "unreadable_content",
        ),
        (
            "application/vnd.apache.parquet",
            &b"not parquet"[..],
            "unreadable_content",
        ),
        ("text/csv", &b"a,b\n1,2\n"[..], "invalid_declaration"),
    ] {
        let query = if code == "invalid_declaration" {
            "?types=a:complex"
        } else {
            ""
        };
        let res = upload(&app, &alice, &id, ct, body, query).await;
        assert_problem(res, 422, code, None).await;
    }
    let res = upload(&app, &alice, &id, "application/xml", b"<a/>", "").await;
    assert_problem(res, 415, "unsupported_media_type", None).await;
    let res = upload(&app, &alice, &id, "text/csv", b"a\n1\n", "?on_error=maybe").await;
    assert_problem(res, 400, "invalid_parameter", Some("on_error")).await;
}

#[tokio::test]
async fn only_maintainers_upload_and_an_aborted_upload_leaves_nothing() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    let id = new_dataset(&app, &alice, "Meters", "closed").await;
    let res = upload(&app, &bob, &id, "text/csv", CSV.as_bytes(), "").await;
    assert_problem(res, 403, "forbidden", None).await;
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            None,
            "text/csv",
            CSV.as_bytes().to_vec(),
        )
        .await;
    assert_problem(res, 401, "unauthenticated", None).await;

    // Promise a megabyte, send a little, hang up.
    use tokio::io::AsyncWriteExt;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/datasets/{id}/versions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: text/csv\r\nContent-Length: 1000000\r\n\r\nstation,no2\nSants,84\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // The upload must have started (its body is being spooled) before the
    // hang-up, or "nothing left behind" would hold trivially.
    let tmp = app.service.content_dir().join("tmp");
    let in_tmp = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&tmp)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let mut started = false;
    for _ in 0..200 {
        if !in_tmp().is_empty() {
            started = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(started, "the upload never started spooling into {tmp:?}");
    drop(socket);
    let mut left = in_tmp();
    for _ in 0..200 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = in_tmp();
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    let stored = app
        .service
        .versions()
        .list(&format!("datasets/{id}"))
        .await
        .unwrap();
    assert!(stored.is_empty(), "stored: {stored:?}");
    let versions = versions(&app, &id).await;
    assert_eq!(versions, json!([]));
}

#[tokio::test]
async fn versions_live_in_the_configured_store_and_a_restart_sweeps_files_without_a_row() {
    let app = TestApp::start().await;
    let configured = std::env::var("CITYTRUST_TEST_OBJECT_STORE").is_ok_and(|s| !s.is_empty());
    let versions = app.service.versions().clone();
    assert_eq!(!versions.is_local(), configured, "{}", versions.describe());
    let alice = app.token("alice").await;
    let id = new_dataset(&app, &alice, "Meters", "open").await;
    let bad = format!("{CSV}Sants,not a reading\n");
    let res = upload(
        &app,
        &alice,
        &id,
        "text/csv",
        bad.as_bytes(),
        "?on_error=quarantine",
    )
    .await;
    assert_eq!(res.status(), 201);
    // Drawn once, then kept beside the version in the same store.
    app.page(&format!("/datasets/{id}")).await;
    let mut stored = versions.list(&format!("datasets/{id}")).await.unwrap();
    stored.sort();
    assert_eq!(
        stored,
        [
            format!("datasets/{id}/1/data.parquet"),
            format!("datasets/{id}/1/map.none"),
            format!("datasets/{id}/1/rejects.csv"),
        ]
    );
    // A crash between storing version 2's files and committing its row leaves files behind.
    let tmp = tempfile::tempdir().unwrap();
    versions
        .put_bytes(
            &format!("datasets/{id}/2/data.parquet"),
            b"PAR1 half".to_vec(),
            tmp.path(),
        )
        .await
        .unwrap();
    versions
        .put_bytes(
            "datasets/no-such-dataset/1/data.parquet",
            b"x".to_vec(),
            tmp.path(),
        )
        .await
        .unwrap();
    app.restart_service().await.unwrap();
    let mut after = versions.list("datasets").await.unwrap();
    after.sort();
    assert_eq!(
        after, stored,
        "the restart removes exactly the files with no row"
    );
    // What is left still reads, from wherever it is kept.
    let csv = text(
        &app,
        &format!("/api/v1/datasets/{id}/data?format=csv"),
        None,
    )
    .await;
    assert!(csv.contains("Gràcia, Sant Gervasi"), "{csv}");
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/versions/1/rejects"),
            Some(&alice),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("not a reading"));
}

#[tokio::test]
async fn versions_are_read_as_they_stood_at_a_time() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = new_dataset(&app, &alice, "Counts", "open").await;
    // Published 2026-03-01 09:00 UTC, then the next day at 15:00 UTC.
    let res = upload(&app, &alice, &id, "text/csv", b"n\n1\n", "").await;
    assert_eq!(res.status(), 201);
    app.clock.advance(time::Duration::hours(30));
    // A session does not outlive a day: sign in again.
    let alice = app.token("alice").await;
    let res = upload(&app, &alice, &id, "text/csv", b"n\n1\n2\n", "").await;
    assert_eq!(res.status(), 201);
    let table = id.replace('-', "_");
    for (as_of, rows) in [
        ("2026-03-01", "n\n1\n"),
        ("2026-03-02T14:59:59Z", "n\n1\n"),
        ("2026-03-02T16:00:00%2B01:00", "n\n1\n2\n"),
        ("2026-12-31", "n\n1\n2\n"),
    ] {
        let csv = text(
            &app,
            &format!("/api/v1/datasets/{id}/data?as_of={as_of}"),
            None,
        )
        .await;
        assert_eq!(csv, rows, "as of {as_of}");
    }
    let res = app
        .post_json(
            "/api/v1/query",
            None,
            &json!({"sql": format!("SELECT COUNT(*) AS n FROM \"{table}@2026-03-01\""), "purpose": "research"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!([{"n": 1}]));
    // Before the first version there is nothing; a bad time or both selectors are refused.
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?as_of=2026-02-28"),
            None,
        )
        .await;
    assert_problem(res, 404, "not_found", None).await;
    let res = app
        .get(&format!("/api/v1/datasets/{id}/data?as_of=yesterday"), None)
        .await;
    assert_problem(res, 400, "invalid_version", Some("as_of")).await;
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?as_of=2026-03-01&version=2"),
            None,
        )
        .await;
    assert_problem(res, 400, "invalid_version", Some("as_of")).await;
    let res = app
        .post_json(
            "/api/v1/query",
            None,
            &json!({"sql": format!("SELECT * FROM \"{table}@2026-02-28\""), "purpose": "research"}),
        )
        .await;
    assert_eq!(res.status(), 404);
    // A version is named one way wherever it is named: the same problem.
    for bad in ["yesterday", "0", "2026-13-01"] {
        let res = app
            .post_json(
                "/api/v1/query",
                None,
                &json!({"sql": format!("SELECT * FROM \"{table}@{bad}\""), "purpose": "research"}),
            )
            .await;
        assert_problem(res, 422, "invalid_version", None).await;
    }
}

#[tokio::test]
async fn reads_are_governed_and_logged() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    let id = new_dataset(&app, &alice, "Household meters", "shared_group").await;
    assert_eq!(
        upload(&app, &alice, &id, "text/csv", CSV.as_bytes(), "")
            .await
            .status(),
        201
    );

    let path = format!("/api/v1/datasets/{id}/data");
    assert_problem(app.get(&path, None).await, 401, "unauthenticated", None).await;
    let body = assert_problem(app.get(&path, Some(&bob)).await, 403, "refused", None).await;
    assert!(!body.to_string().contains("Sants"));
    let body = assert_problem(
        app.get(&format!("{path}?purpose=city-operations"), Some(&bob))
            .await,
        403,
        "refused",
        None,
    )
    .await;
    assert!(!body.to_string().contains("Sants"));
    let res = app
        .get(&format!("{path}?purpose=city-operations"), Some(&alice))
        .await;
    assert_eq!(res.status(), 200);
    let index: u64 = res.headers()["citytrust-log-entry"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let digest = res.headers()["repr-digest"].to_str().unwrap().to_string();
    let nonce = res
        .headers()
        .get("citytrust-log-nonce")
        .map(|v| v.to_str().unwrap().to_string());
    let served = res.bytes().await.unwrap();
    use base64::Engine;
    use sha2::Digest;
    let expected = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&served));
    assert_eq!(digest, format!("sha-256=:{expected}:"));
    // The entry is committed before the bytes are served, and names exactly what was served.
    let entry = app
        .service
        .store()
        .ledger_entry(index as i64)
        .await
        .unwrap()
        .unwrap();
    let entry: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(entry["type"], "content.read", "{entry}");
    let fields = &entry;
    assert_eq!(fields["dataset"], id.as_str(), "{entry}");
    assert_eq!(fields["purpose"], "city-operations");
    assert_eq!(fields["rule"], "owner-reads-own-data");
    assert_eq!(fields["rows"], 3);
    assert_eq!(fields["by"], "organization:city-energy");
    let hex_digest: String = sha2::Sha256::digest(&served)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Not the digest itself (a guess could be checked against it), but a
    // commitment to it, which the reader can open with the nonce they got.
    assert_eq!(fields["sha256"], Value::Null);
    let nonce = nonce.expect("a CityTrust-Log-Nonce header");
    assert_eq!(
        fields["commitment"],
        citytrust_service::content::commitment("served", &nonce, &hex_digest).as_str()
    );
    assert!(!entry.to_string().contains("alice"));

    // Metadata stays public: versions and quality are listed for anyone.
    assert_eq!(
        app.get(&format!("/api/v1/datasets/{id}/versions/1"), None)
            .await
            .status(),
        200
    );
    assert_problem(
        app.get(&format!("/api/v1/datasets/{id}/versions/9"), None)
            .await,
        404,
        "not_found",
        None,
    )
    .await;
    assert_problem(
        app.get(&format!("{path}?version=0"), Some(&alice)).await,
        400,
        "invalid_version",
        Some("version"),
    )
    .await;
    assert_problem(
        app.get(&format!("{path}?format=xml"), Some(&alice)).await,
        400,
        "invalid_parameter",
        Some("format"),
    )
    .await;
}

#[tokio::test]
async fn sql_runs_one_select_over_what_the_caller_may_read() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    let open = new_dataset(&app, &alice, "Stations", "open").await;
    let closed = new_dataset(&app, &alice, "Secret readings", "closed").await;
    upload(
        &app,
        &alice,
        &open,
        "text/csv",
        b"station,district\nSants,Sants-Montjuic\nEixample,Eixample\n",
        "",
    )
    .await;
    upload(
        &app,
        &alice,
        &closed,
        "text/csv",
        b"station,no2\nSants,84\nEixample,12\n",
        "",
    )
    .await;
    upload(
        &app,
        &alice,
        &open,
        "text/csv",
        b"station,district\nSants,Sants-Montjuic\n",
        "",
    )
    .await;
    let t_open = open.replace('-', "_");
    let t_closed = closed.replace('-', "_");

    let q = |sql: String| json!({"sql": sql, "purpose": "city-operations"});
    let res = app.post_json("/api/v1/query", Some(&alice), &q(format!(
        "SELECT s.district, c.no2 FROM {t_open} s JOIN {t_closed} c ON s.station = c.station ORDER BY c.no2 DESC"))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!([{"district": "Sants-Montjuic", "no2": 84}])
    );
    // Older versions by name.
    let res = app
        .post_json(
            "/api/v1/query",
            None,
            &q(format!("SELECT COUNT(*) AS n FROM \"{t_open}@1\"")),
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!([{"n": 2}]));
    // Row limit.
    let res = app.post_json("/api/v1/query", None, &json!({"sql": format!("SELECT * FROM \"{t_open}@1\""), "purpose": "research", "max_rows": 1, "format": "csv"})).await;
    assert_eq!(res.headers()["citytrust-truncated"], "true");
    assert_eq!(
        res.text().await.unwrap(),
        "station,district\nSants,Sants-Montjuic\n"
    );

    // Refusals: a dataset the caller may not read, anything but SELECT, unknown tables, no purpose.
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&bob),
            &q(format!("SELECT * FROM {t_closed} WHERE no2 > 50")),
        )
        .await;
    let body = assert_problem(res, 403, "refused", None).await;
    assert_eq!(body["rule"], "closed-data-stays-closed");
    assert!(
        !body.to_string().contains("84") && !body.to_string().contains("Sants"),
        "{body}"
    );
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&bob),
            &q(format!(
                "SELECT s.* FROM {t_open} s WHERE s.station IN (SELECT station FROM {t_closed})"
            )),
        )
        .await;
    assert_problem(res, 403, "refused", None).await;
    for sql in [
        "DELETE FROM x",
        "DROP TABLE x",
        "SELECT 1; SELECT 2",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "CREATE TABLE y AS SELECT 1",
    ] {
        let res = app
            .post_json("/api/v1/query", Some(&alice), &q(sql.into()))
            .await;
        assert_problem(res, 422, "not_a_select", None).await;
    }
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&alice),
            &q("SELECT * FROM no_such_table".into()),
        )
        .await;
    assert_problem(res, 404, "not_found", None).await;
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&alice),
            &q(format!("SELECT nonexistent FROM {t_open}")),
        )
        .await;
    assert_problem(res, 422, "unknown_column", None).await;
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&alice),
            &json!({"sql": "SELECT 1", "purpose": " "}),
        )
        .await;
    assert_problem(res, 422, "purpose_required", None).await;
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&alice),
            &json!({"sql": "SELECT 1", "purpose": "x", "extra": 1}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("extra")).await;
}

/// The log's entries as JSON, oldest first.
async fn log_entries(app: &TestApp) -> Vec<Value> {
    app.service
        .store()
        .ledger_entries(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| serde_json::from_str(&e).unwrap())
        .collect()
}

#[tokio::test]
async fn derived_data_inherits_the_strictest_class_and_waits_for_reassessment() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    let stations = new_dataset(&app, &alice, "Stations", "open").await;
    let mut readings_input = dataset("Readings", "city-energy", "shared_group");
    readings_input["personal_data"] = json!(true);
    let readings = app.create_dataset(&alice, &readings_input).await;
    for (id, csv) in [
        (
            &stations,
            "station,district\nSants,Sants-Montjuic\nEixample,Eixample\nGracia,Gracia\n",
        ),
        (
            &readings,
            "station,no2\nSants,84\nSants,60\nEixample,41\nGracia,30\n",
        ),
    ] {
        let res = upload(&app, &alice, id, "text/csv", csv.as_bytes(), "").await;
        assert_eq!(res.status(), 201);
    }
    let (s, r) = (stations.replace('-', "_"), readings.replace('-', "_"));
    let sql = format!(
        "SELECT s.district, AVG(r.no2) AS no2, COUNT(*) AS n FROM {s} s JOIN {r} r ON r.station = s.station GROUP BY s.district ORDER BY s.district"
    );
    let body = |sql: &str| {
        json!({
            "dataset": {"title": "NO2 by district", "description": "Mean NO2 per district.", "owner_organization_id": "city-energy", "spectrum": "open"},
            "sql": sql,
            "purpose": "city-operations"
        })
    };
    let datasets_before = app.stored_datasets().await;

    // Refusals register nothing: a failing query, an input the caller may not read, no purpose, anonymous.
    let res = app
        .post_json(
            "/api/v1/derived-datasets",
            Some(&alice),
            &body(&format!("SELECT nope FROM {s}")),
        )
        .await;
    assert_eq!(res.status(), 422);
    let res = app
        .post_json(
            "/api/v1/derived-datasets",
            Some(&bob),
            &json!({
        "dataset": {"title": "Copy", "description": "d", "owner_organization_id": "water-co", "spectrum": "open"},
        "sql": format!("SELECT * FROM {r}"), "purpose": "research"}),
        )
        .await;
    let problem = assert_problem(res, 403, "refused", None).await;
    assert!(
        !problem.to_string().contains("84"),
        "nothing of the data leaks: {problem}"
    );
    let mut no_purpose = body(&sql);
    no_purpose["purpose"] = json!(" ");
    let res = app
        .post_json("/api/v1/derived-datasets", Some(&alice), &no_purpose)
        .await;
    assert_problem(res, 422, "validation_failed", Some("purpose")).await;
    let res = app
        .post_json("/api/v1/derived-datasets", None, &body(&sql))
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(app.stored_datasets().await, datasets_before);

    // Derived: the inputs at their versions, the strictest class, personal data, awaiting re-assessment.
    let res = app
        .post_json("/api/v1/derived-datasets", Some(&alice), &body(&sql))
        .await;
    assert_eq!(res.status(), 201);
    let derived: Value = res.json().await.unwrap();
    let id = derived["dataset"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        derived["dataset"]["spectrum"], "shared_group",
        "the open request is raised to its strictest input"
    );
    assert_eq!(derived["dataset"]["personal_data"], true);
    let d = &derived["dataset"]["derivation"];
    assert_eq!(d["needs_reassessment"], true);
    assert_eq!(d["inherited_spectrum"], "shared_group");
    assert_eq!(
        d["inputs"],
        json!([
            {"dataset_id": readings, "version": 1, "spectrum": "shared_group", "personal_data": true},
            {"dataset_id": stations, "version": 1, "spectrum": "open", "personal_data": false}
        ]),
        "inputs by table name"
    );
    assert_eq!(derived["version"]["rows"], 3);
    assert!(
        derived["dataset"]["data_states"]["provenance"]["lineage"]
            .as_str()
            .unwrap()
            .contains(&format!("{stations} version 1"))
    );
    let path = format!("/api/v1/datasets/{id}/data?format=json&purpose=city-operations");
    let rows: Value = app.get(&path, Some(&alice)).await.json().await.unwrap();
    assert_eq!(
        rows[2],
        json!({"district": "Sants-Montjuic", "no2": 72.0, "n": 2})
    );

    // Until re-assessed, only the owner reads it: not another organisation, not the public.
    let res = app.get(&path, Some(&bob)).await;
    let problem = assert_problem(res, 403, "refused", None).await;
    assert_eq!(problem["rule"], "reassessment-first");
    assert!(problem["detail"].as_str().unwrap().contains("re-assess"));
    assert_eq!(app.get(&path, None).await.status(), 401);
    // Its class may not change by an edit, and the derivation is not editable.
    let res = app
        .patch_json(
            &format!("/api/v1/datasets/{id}"),
            Some(&alice),
            &json!({"spectrum": "open"}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("spectrum")).await;
    let res = app
        .patch_json(
            &format!("/api/v1/datasets/{id}"),
            Some(&alice),
            &json!({"derivation": {"needs_reassessment": false}}),
        )
        .await;
    assert_eq!(res.status().as_u16() / 100, 4, "not an editable field");
    let res = app
        .patch_json(
            &format!("/api/v1/datasets/{id}"),
            Some(&alice),
            &json!({"derivation": null}),
        )
        .await;
    let kept: Value = res.json().await.unwrap();
    assert_eq!(
        kept["derivation"]["needs_reassessment"], true,
        "erasing it is a no-op: {kept}"
    );
    let res = app
        .patch_json(
            &format!("/api/v1/datasets/{id}"),
            Some(&alice),
            &json!({"keywords": ["air"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["derivation"]["needs_reassessment"],
        true
    );

    // Re-assessment: maintainers only, with reasons, and only of derived data.
    let reassess = format!("/api/v1/datasets/{id}/reassessment");
    let choice = json!({"spectrum": "open", "personal_data": false, "note": "District means over at least two readings; no station is singled out."});
    let res = app.post_json(&reassess, Some(&bob), &choice).await;
    assert_problem(res, 403, "forbidden", None).await;
    let res = app.post_json(&reassess, None, &choice).await;
    assert_eq!(res.status(), 401);
    let res = app
        .post_json(
            &reassess,
            Some(&alice),
            &json!({"spectrum": "shared_group", "note": "  "}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("note")).await;
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{stations}/reassessment"),
            Some(&alice),
            &choice,
        )
        .await;
    assert_problem(res, 422, "not_derived", None).await;
    assert_eq!(
        app.get(&path, None).await.status(),
        401,
        "refusals changed nothing"
    );
    // Its maintainers may keep the inherited class (or a stricter one), but
    // lowering it below its inputs', or saying it is not personal data, is
    // the trustees' (R-CAT-5).
    let res = app.post_json(&reassess, Some(&alice), &choice).await;
    let problem = assert_problem(res, 403, "forbidden", None).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("trustees"),
        "{problem}"
    );
    let res = app
        .post_json(
            &reassess,
            Some(&alice),
            &json!({"spectrum": "shared_group", "note": "Kept at its inputs' class."}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.get(&path, None).await.status(),
        401,
        "still its inputs' terms: not for the public"
    );
    let trustee = app.token("trustee").await;
    let res = app.post_json(&reassess, Some(&trustee), &choice).await;
    assert_eq!(res.status(), 200);
    let after: Value = res.json().await.unwrap();
    assert_eq!(after["derivation"]["released_by_trustees"], true);
    assert_eq!(after["spectrum"], "open");
    assert_eq!(after["personal_data"], false);
    assert_eq!(after["derivation"]["needs_reassessment"], false);
    assert_eq!(
        after["derivation"]["inherited_spectrum"], "shared_group",
        "the record of what it inherited stays"
    );
    assert_eq!(
        app.get(&path, None).await.status(),
        200,
        "now shared as its class says"
    );

    // Both steps are in the public log, naming inputs and organisations, not people.
    let log = log_entries(&app).await;
    let derived_entry = log.iter().find(|e| e["type"] == "dataset.derived").unwrap();
    assert_eq!(
        derived_entry["inputs"][0],
        json!({"dataset": readings, "version": 1})
    );
    assert_eq!(derived_entry["purpose"], "city-operations");
    let reassessed = log
        .iter()
        .rfind(|e| e["type"] == "dataset.reassessed")
        .unwrap();
    assert_eq!(reassessed["previous_spectrum"], "shared_group");
    assert_eq!(reassessed["spectrum"], "open");
    assert_eq!(reassessed["by"], "trustees");
    assert!(!log.iter().any(|e| e.to_string().contains("alice")));
}

#[tokio::test]
async fn users_report_errors_and_owners_answer_them_on_the_record() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let resident = app.token("resident").await;
    let bob = app.token("bob").await;
    let id = new_dataset(&app, &alice, "Air readings", "open").await;
    let res = upload(&app, &alice, &id, "text/csv", CSV.as_bytes(), "").await;
    assert_eq!(res.status(), 201);
    let feedback = format!("/api/v1/datasets/{id}/feedback");
    let cell = json!({"version": 1, "column": "no2", "row": 2, "description": "Eixample shows no reading, but the station was working that day."});

    // Only signed-in users report, and a report must point at something that exists.
    assert_eq!(app.post_json(&feedback, None, &cell).await.status(), 401);
    for (body, status, field) in [
        (
            json!({"column": "pm25", "description": "x"}),
            422,
            Some("column"),
        ),
        (json!({"row": 2, "description": "x"}), 422, Some("column")),
        (
            json!({"column": "no2", "row": 99, "description": "x"}),
            422,
            Some("row"),
        ),
        (json!({"description": "  "}), 422, Some("description")),
        (json!({"version": 9, "description": "x"}), 404, None),
    ] {
        let res = app.post_json(&feedback, Some(&resident), &body).await;
        assert_eq!(res.status().as_u16(), status, "{body}");
        if let Some(field) = field {
            assert_problem(res, status, "validation_failed", Some(field)).await;
        }
    }
    let res = app.post_json(&feedback, Some(&resident), &cell).await;
    assert_eq!(res.status(), 201);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["status"], "open");
    let fid = report["id"].as_str().unwrap().to_string();
    let answer = format!("{feedback}/{fid}/answer");

    // The reporter and the maintainers see it; nobody else does.
    let seen = |token: String| {
        let app = &app;
        let feedback = feedback.clone();
        async move {
            app.get(&feedback, Some(&token))
                .await
                .json::<Value>()
                .await
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(seen(resident.clone()).await, 1);
    assert_eq!(seen(alice.clone()).await, 1);
    assert_eq!(seen(bob.clone()).await, 0);
    assert_eq!(app.get(&feedback, None).await.status(), 401);

    // Only maintainers answer.
    let accept = json!({"decision": "accepted", "response": "The reading was lost in transfer; restored in version 2.", "resolved_version": 2});
    for token in [&bob, &resident] {
        let res = app.post_json(&answer, Some(token), &accept).await;
        assert_problem(res, 403, "forbidden", None).await;
    }
    // An acceptance names a correcting version that exists and is newer than the one reported.
    let res = app.post_json(&answer, Some(&alice), &accept).await;
    assert_eq!(res.status(), 404, "version 2 does not exist yet");
    let fixed = CSV.replace("Eixample,,", "Eixample,52,");
    let res = upload(&app, &alice, &id, "text/csv", fixed.as_bytes(), "").await;
    assert_eq!(res.status(), 201);
    let mut stale = accept.clone();
    stale["resolved_version"] = json!(1);
    let res = app.post_json(&answer, Some(&alice), &stale).await;
    assert_problem(res, 422, "validation_failed", Some("resolved_version")).await;
    let res = app.post_json(&answer, Some(&alice), &accept).await;
    assert_eq!(res.status(), 200);
    let res = app.post_json(&answer, Some(&alice), &accept).await;
    assert_problem(res, 409, "stale_revision", None).await;

    // The reporter sees the outcome.
    let mine: Value = app
        .get(&feedback, Some(&resident))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine[0]["status"], "accepted");
    assert_eq!(mine[0]["resolved_version"], 2);
    assert!(mine[0]["response"].as_str().unwrap().contains("restored"));

    // A rejection gives a reason and names no version.
    let res = app
        .post_json(
            &feedback,
            Some(&resident),
            &json!({"column": "station", "description": "Gràcia is spelt wrong."}),
        )
        .await;
    let fid2 = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer2 = format!("{feedback}/{fid2}/answer");
    let res = app
        .post_json(&answer2, Some(&alice), &json!({"decision": "rejected", "response": "It is the official name.", "resolved_version": 2}))
        .await;
    assert_problem(res, 422, "validation_failed", Some("resolved_version")).await;
    let res = app
        .post_json(
            &answer2,
            Some(&alice),
            &json!({"decision": "rejected", "response": "  "}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("response")).await;
    let res = app
        .post_json(&answer2, Some(&alice), &json!({"decision": "rejected", "response": "\"Gràcia, Sant Gervasi\" is the official name."}))
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "rejected");

    // On the record, without names.
    let log = log_entries(&app).await;
    assert_eq!(
        log.iter()
            .filter(|e| e["type"] == "feedback.reported")
            .count(),
        2
    );
    let answered: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "feedback.answered")
        .collect();
    assert_eq!(answered.len(), 2);
    assert_eq!(answered[0]["decision"], "accepted");
    assert_eq!(answered[0]["resolved_version"], 2);
    assert!(!log.iter().any(|e| e.to_string().contains("resident")));
}
