//! The `citytrust` binary as an operator runs it: `serve`, `demo`, `import`,
//! `verify` (including a forked log caught), `user add` and the release tools.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

fn citytrust() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_citytrust"));
    c.env("CITYTRUST_LOG", "warn")
        .env_remove("CITYTRUST_DATABASE_URL")
        .env_remove("CITYTRUST_DATA");
    c
}

/// Storage arguments: the data dir, plus a fresh PostgreSQL database when testing against PostgreSQL.
async fn storage(dir: &std::path::Path) -> Vec<String> {
    let mut args = vec!["--data".to_string(), dir.display().to_string()];
    if let Ok(admin_url) = std::env::var("CITYTRUST_TEST_DATABASE_URL")
        && !admin_url.is_empty()
    {
        use sqlx::Connection;
        let name = format!(
            "ct_cli_{}",
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let (server, _) = admin_url.rsplit_once('/').unwrap();
        args.push("--database-url".into());
        args.push(format!("{server}/{name}"));
    }
    args
}

struct Running {
    child: Child,
    url: String,
    banner: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `citytrust demo` on a free port and wait until it prints its URL.
fn start_demo(storage: &[String]) -> Running {
    start_demo_with(storage, &[])
}

/// `start_demo` with environment variables set for the process.
fn start_demo_with(storage: &[String], env: &[(&str, String)]) -> Running {
    let mut child = citytrust()
        .arg("demo")
        .args(storage)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--listen", "127.0.0.1:0"])
        // The live stream's replay would add entries while the tests count them.
        .args(["--live-speed", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    let mut url = None;
    while url.is_none() || !banner.contains("Stop with Ctrl-C") {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "demo exited early; printed:\n{banner}"
        );
        if let Some(u) = line.trim().strip_prefix("Open ") {
            url = Some(u.trim_end_matches('/').to_string());
        }
        banner.push_str(&line);
    }
    Running {
        child,
        url: url.unwrap(),
        banner,
    }
}

#[tokio::test]
async fn the_demo_loads_the_city_once_and_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(dir.path()).await;
    let client = reqwest::Client::new();
    {
        let demo = start_demo(&storage);
        assert!(demo.banner.contains("loaded into"), "{}", demo.banner);
        for account in [
            "admin",
            "trustee1",
            "trustee2",
            "trustee3",
            "owner",
            "analyst",
            "resident",
            "demo-password",
        ] {
            assert!(demo.banner.contains(account), "the banner names {account}");
        }
        let page: Value = client
            .get(format!("{}/api/v1/datasets?per_page=100", demo.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 18);
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        for id in [
            "barcelona-air-quality",
            "citibike-jersey-city-trips",
            "seattle-building-energy",
            "cairns-gtfs",
            "household-electricity",
        ] {
            assert!(ids.contains(&id), "{id}");
        }
        // Real content: the Barcelona tables join with the district boundaries in SQL…
        let sql = r#"WITH pop AS (SELECT "District.Name" AS n, SUM("Number") AS people FROM barcelona_population WHERE "Year" = 2017 GROUP BY 1),
            st AS (SELECT "District.Name" AS n, COUNT(*) AS stations FROM barcelona_transport_stations GROUP BY 1)
            SELECT d."NOM" AS district, pop.people, st.stations FROM barcelona_districts d
            JOIN pop ON pop.n = d."NOM" LEFT JOIN st ON st.n = d."NOM" ORDER BY pop.people DESC"#;
        let rows: Value = client
            .post(format!("{}/api/v1/query", demo.url))
            .json(&json!({"sql": sql, "purpose": "citizen-engagement"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = rows.as_array().unwrap_or_else(|| panic!("{rows}"));
        assert_eq!(rows.len(), 10, "every district matches by name: {rows:?}");
        assert_eq!(rows[0]["district"], "Eixample");
        assert!(rows.iter().all(|r| r["stations"].as_i64().unwrap() > 0));
        // …and the districts' page draws them on a map.
        let page = client
            .get(format!("{}/datasets/barcelona-districts", demo.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains(
            "<title id=\"map-title\">Map of Barcelona district boundaries (version 1)</title>"
        ));
        assert!(page.matches("<path d=").count() >= 10);
        // The owner account belongs to the organisation that owns the city datasets, and may edit them.
        let res = client
            .post(format!("{}/api/v1/auth/token", demo.url))
            .json(&json!({"username": "owner", "password": "demo-password"}))
            .send()
            .await
            .unwrap();
        let token = res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let res = client
            .patch(format!(
                "{}/api/v1/datasets/barcelona-air-quality",
                demo.url
            ))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(r#"{"keywords":["air"]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let citibike: Value = client
            .get(format!(
                "{}/api/v1/datasets/citibike-jersey-city-trips",
                demo.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(citibike["personal_data"], true);
        assert_eq!(citibike["licence"]["verified"], false);
        assert!(
            citibike["licence"]["note"]
                .as_str()
                .unwrap()
                .contains("not verified")
        );
        // Its risk report (R-PRV-6) is measured at upload and public, unlike the rows.
        let version: Value = client
            .get(format!(
                "{}/api/v1/datasets/citibike-jersey-city-trips/versions/1",
                demo.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let risk = &version["quality"]["risk"];
        assert_eq!(risk["overall"]["records"], 12_677, "{version}");
        assert_eq!(risk["quasi_identifiers"][0], "birth year");
        let combination = risk["combinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["columns"] == json!(["birth year", "gender", "start station id"]))
            .unwrap_or_else(|| panic!("{risk}"));
        assert_eq!(combination["unique_records"], 522);
        assert!(
            risk["overall"]["prosecutor"]["records_at_risk"]
                .as_u64()
                .unwrap()
                > 12_000
        );
        // Participation: the resident's request for cycling-accident hot
        // spots, supported by two, planned on the roadmap.
        let roadmap: Value = client
            .get(format!("{}/api/v1/roadmap", demo.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            roadmap["planned"][0]["title"], "Cycling accident hot spots",
            "{roadmap}"
        );
        assert_eq!(roadmap["planned"][0]["supporters"], 2);
        assert_eq!(roadmap["planned"][0]["organization_id"], "city-data-office");
        // A consultation that ran three weeks ago, its results published with
        // small numbers suppressed, cited by the charter in force.
        let consultations: Value = client
            .get(format!("{}/api/v1/consultations", demo.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let c = &consultations[0];
        assert_eq!(c["state"], "closed", "{c}");
        assert_eq!(c["results"]["respondents"], 13);
        assert_eq!(
            c["results"]["questions"][0]["counts"],
            json!([{"choice": "Yes, with my consent", "count": 10}, {"choice": "Yes, anonymised only"}, {"choice": "No"}])
        );
        assert_eq!(
            c["results"]["questions"][2]["texts"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let charter: Value = client
            .get(format!("{}/api/v1/charter", demo.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(charter["consultation_id"], c["id"]);
        assert!(
            charter["ethics_code"]
                .as_str()
                .unwrap()
                .contains("Household readings")
        );
        let board: Value = client
            .get(format!("{}/api/v1/trustees", demo.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            board
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["in_term"] == true && t["ends_on"] == "2028-12-31"),
            "{board}"
        );
        // The analyst's ended building-energy agreement with its outcome
        // report (the deaths agreement's report is still owed, not late).
        let outcomes: Value = client
            .get(format!("{}/api/v1/outcomes", demo.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(outcomes.as_array().unwrap().len(), 1, "{outcomes}");
        assert_eq!(outcomes[0]["recipient"], "organization:city-university");
        assert_eq!(outcomes[0]["period"], "final");
        // The council and the university's sharing project, waiting in Share.
        let projects: Value = client
            .get(format!("{}/api/v1/projects", demo.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(projects[0]["stage"], "share", "{projects}");
        assert_eq!(projects[0]["sign_offs"].as_array().unwrap().len(), 2);
    }
    // Run again on the same directory: reused, not reloaded (the edit above survives).
    let demo = start_demo(&storage);
    assert!(demo.banner.contains("reused from"), "{}", demo.banner);
    let d: Value = client
        .get(format!(
            "{}/api/v1/datasets/barcelona-air-quality",
            demo.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["keywords"], json!(["air"]));
    assert_eq!(d["revision"], 2);
    let requests: Value = client
        .get(format!("{}/api/v1/data-requests", demo.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests["total"], 1, "loaded once: {requests}");
}

#[tokio::test]
async fn user_add_creates_the_first_administrator_from_a_password_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(dir.path()).await;
    let add = |name: &str, password: &str| {
        let mut child = citytrust()
            .args(["user", "add"])
            .args(&storage)
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add("root", "a long admin password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("created account 'root' with roles [administrator]")
    );
    let out = add("second", "short");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password") && err.contains("12"), "{err}");
    assert!(!err.contains("short\n"), "the password is not echoed");
    let out = add("second", "another long password");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("roles []"),
        "only the first account is made an administrator"
    );

    // The administrator can sign in to a server on that data directory.
    let mut serve = citytrust()
        .arg("serve")
        .args(&storage)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let res = reqwest::Client::new()
        .post(format!("{url}/api/v1/auth/token"))
        .json(&json!({"username": "root", "password": "a long admin password"}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(status, 200);
}

/// The database URL behind storage arguments.
fn db_url(storage: &[String], dir: &std::path::Path) -> String {
    match storage.iter().position(|a| a == "--database-url") {
        Some(i) => storage[i + 1].clone(),
        None => format!("sqlite://{}", dir.join("citytrust.sqlite").display()),
    }
}

async fn sql(url: &str, statement: &str) -> u64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(statement)
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected()
}

fn run_verify(url: &str, state: &std::path::Path) -> (bool, String) {
    let out = citytrust()
        .args(["verify", "--url", url, "--state"])
        .arg(state)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn verify_checks_the_demo_log_and_names_the_first_bad_entry() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage(dir.path()).await;
    let demo = start_demo(&storage);
    // Wait for the sequencer to checkpoint the demo's entries (organisations, groups, datasets).
    assert_eq!(
        settled_size(&demo.url).await,
        "90",
        "9 organisations + 2 groups + 18 datasets (one a stream, fed only while the demo replays it) + 3 quality rules + 17 versions; \
         three weeks ago a consultation opened (answers are not logged one by one), two requests of the analyst \
         with three votes and the decision each; the residents' story: a link, a consent, \
         a request, three votes, the decision, the analyst's read under the agreement and \
         the owner's own read; a data request, two supports and its plan; three trustees' \
         terms, the consultation's results and the charter citing them; two deletion \
         attestations and an outcome report; a sharing project started, filled in twice, \
         a document and two sign-offs"
    );
    let state = dir.path().join("verify-state.json");
    let (ok, out) = run_verify(&demo.url, &state);
    assert!(ok, "{out}");
    assert!(
        out.contains("OK: 90 entries") && out.contains("dataset.registered"),
        "{out}"
    );

    // Someone edits entry 11 (the registration of barcelona-air-quality) in the database.
    let url = db_url(&storage, dir.path());
    let edit = "UPDATE ledger_entries SET body = replace(body, 'Barcelona air quality', 'Barcelona air qualitY') WHERE idx = 11";
    assert_eq!(sql(&url, edit).await, 1);
    let (ok, out) = run_verify(&demo.url, &state);
    assert!(
        !ok && out.contains("entry 11 does not match the log's tree"),
        "{out}"
    );
    sql(&url, "UPDATE ledger_entries SET body = replace(body, 'Barcelona air qualitY', 'Barcelona air quality') WHERE idx = 11").await;
    let (ok, out) = run_verify(&demo.url, &state);
    assert!(ok, "restored: {out}");

    // Someone with the database and the key forks the log: stops the node,
    // rewrites entry 11, drops the signed tree and starts the node again.
    drop(demo);
    assert_eq!(sql(&url, edit).await, 1);
    sql(&url, "DELETE FROM ledger_checkpoints").await;
    sql(&url, "DELETE FROM ledger_tiles").await;
    // The node's witness of what it signed stops it.
    let refused = citytrust()
        .arg("demo")
        .args(&storage)
        .args(["--listen", "127.0.0.1:0", "--live-speed", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("this node signed a checkpoint of 90"),
        "{stderr}"
    );
    // Without it, the node signs the forked log with the same key, and
    // verify, remembering what it saw, names the rewritten entry.
    std::fs::remove_file(dir.path().join("ledger-witness")).unwrap();
    let demo = start_demo(&storage);
    assert_eq!(settled_size(&demo.url).await, "90");
    let (ok, out) = run_verify(&demo.url, &state);
    assert!(
        !ok && out.contains("entry 11 differs from the one seen before"),
        "{out}"
    );
    // A first-time verifier sees a well-formed log: only memory catches a fork.
    let fresh = dir.path().join("fresh-state.json");
    let (ok, out) = run_verify(&demo.url, &fresh);
    assert!(ok, "{out}");

    // Someone deletes the last entry.
    assert_eq!(
        sql(&url, "DELETE FROM ledger_entries WHERE idx = 89").await,
        1
    );
    let (ok, out) = run_verify(&demo.url, &state);
    assert!(!ok && out.contains("entry 89 is missing"), "{out}");
}

/// The checkpoint's size once it stops growing.
async fn settled_size(url: &str) -> String {
    let client = reqwest::Client::new();
    let mut size = String::new();
    for _ in 0..100 {
        let res = client
            .get(format!("{url}/ledger/checkpoint"))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let note = res.text().await.unwrap();
            let s = note.lines().nth(1).unwrap().to_string();
            if s == size {
                break;
            }
            size = s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    size
}

/// Run `citytrust import …` (blocking, off the runtime); returns (success, stdout, stderr).
async fn run_import(args: Vec<String>, stdin: Option<&'static str>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = citytrust()
            .arg("import")
            .args(&args)
            .env_remove("CITYTRUST_TOKEN")
            .env_remove("CITYTRUST_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn import_publishes_a_file_through_the_api_and_names_bad_rows() {
    let app = crate::harness::TestApp::start().await;
    let alice = app.token("alice").await;
    let id = app
        .create_dataset(
            &alice,
            &crate::harness::dataset("Meter readings", "city-energy", "open"),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("readings.csv");
    let mut csv = String::from("meter,at,kwh\n");
    for i in 0..5000 {
        csv.push_str(&format!(
            "m{},2026-03-01T{:02}:00:00Z,{}.5\n",
            i % 40,
            i % 24,
            i
        ));
    }
    std::fs::write(&good, &csv).unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "meter,at,kwh\nm1,2026-03-01T00:00:00Z,1.5\nm2,2026-03-01T01:00:00Z\nm3,2026-03-01T02:00:00Z,lots\n").unwrap();
    let common = |file: &std::path::Path| {
        vec![
            file.display().to_string(),
            "--dataset".into(),
            id.clone(),
            "--url".into(),
            app.base.clone(),
        ]
    };

    // No credentials: refused before sending anything.
    let (ok, _, err) = run_import(common(&good), None).await;
    assert!(!ok);
    assert!(err.contains("--token"), "{err}");

    // A good file, with a token.
    let mut args = common(&good);
    args.extend(["--token".into(), alice.clone()]);
    let (ok, out, err) = run_import(args, None).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!("published version 1 of {id}: 5000 rows")),
        "{out}"
    );
    assert!(err.contains("rows/s"), "{err}");

    // A bad file is refused whole, each bad row named by line and column.
    let mut args = common(&bad);
    args.extend([
        "--token".into(),
        alice.clone(),
        "--types".into(),
        "kwh:float".into(),
    ]);
    let (ok, out, err) = run_import(args, None).await;
    assert!(!ok, "{out}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("line 4, column 3"), "{err}");
    let versions: Value = app
        .get(&format!("/api/v1/datasets/{id}/versions"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions.as_array().unwrap().len(),
        1,
        "the refused file left nothing"
    );

    // Signing in with a password on stdin; quarantine sets the bad rows aside.
    let mut args = common(&bad);
    args.extend([
        "--username".into(),
        "alice".into(),
        "--on-error".into(),
        "quarantine".into(),
        "--types".into(),
        "kwh:float".into(),
    ]);
    let (ok, out, err) = run_import(args, Some("correct horse battery\n")).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("published version 2"), "{out}");
    assert!(out.contains("2 set aside"), "{out}");

    // A member of another organisation may not publish.
    let mut args = common(&good);
    args.extend(["--token".into(), app.token("bob").await]);
    let (ok, _, err) = run_import(args, None).await;
    assert!(!ok);
    assert!(err.contains("(403)"), "{err}");
}

/// Every log entry in the database, in order.
async fn stored_entries(url: &str) -> Vec<(i64, Value)> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("SELECT idx, body FROM ledger_entries ORDER BY idx")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let body: String = r.try_get("body").unwrap();
            (
                r.try_get::<i64, _>("idx").unwrap(),
                serde_json::from_str(&body).unwrap(),
            )
        })
        .collect()
}

/// Organisation ids in the database.
async fn stored_organizations(url: &str) -> std::collections::BTreeSet<String> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("SELECT id FROM organizations")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>("id").unwrap())
        .collect()
}

/// After a burst of reads (the log indexes their answers named) and
/// organisation writes under a fault: the log in the database at `url` is
/// dense and signed to its end (`signed_size`), every acknowledged read has
/// its entry at the index it was told, every acknowledged write is in the
/// database and in the log, and no burst change is without its entry, nor
/// the reverse.
async fn assert_burst_kept(url: &str, signed_size: &str, reads: &[u64], writes: &[&String]) {
    let entries = stored_entries(url).await;
    let orgs = stored_organizations(url).await;
    for (n, (idx, _)) in entries.iter().enumerate() {
        assert_eq!(*idx, n as i64, "the log has a gap before entry {idx}");
    }
    assert_eq!(
        signed_size,
        entries.len().to_string(),
        "everything committed is signed"
    );
    for i in reads {
        let (_, e) = &entries[usize::try_from(*i).unwrap()];
        assert_eq!(e["type"], "content.read", "entry {i}: {e}");
        assert_eq!(e["dataset"], "barcelona-districts");
    }
    let logged: std::collections::BTreeSet<String> = entries
        .iter()
        .filter(|(_, e)| e["type"] == "organization.created")
        .map(|(_, e)| e["organization"].as_str().unwrap().to_string())
        .collect();
    for id in writes {
        assert!(
            orgs.contains(*id),
            "acknowledged {id} is not in the database"
        );
        assert!(logged.contains(*id), "acknowledged {id} has no log entry");
    }
    let burst_orgs: std::collections::BTreeSet<&String> =
        orgs.iter().filter(|o| o.starts_with("burst-")).collect();
    let burst_logged: std::collections::BTreeSet<&String> =
        logged.iter().filter(|o| o.starts_with("burst-")).collect();
    assert_eq!(
        burst_orgs, burst_logged,
        "no change without its entry, nor the reverse"
    );
}

#[tokio::test]
async fn a_node_killed_mid_burst_loses_no_acknowledged_action_and_its_log_stays_consistent() {
    use futures::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const BURST: usize = 10_000;
    const KILL_AFTER: usize = 2_500;

    let dir = tempfile::tempdir().unwrap();
    let storage = storage(dir.path()).await;
    let mut demo = start_demo(&storage);
    let base = demo.url.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let token: Value = client
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"username": "admin", "password": "demo-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let before = settled_size(&base).await;
    let state = dir.path().join("verify-state.json");
    let (ok, out) = run_verify(&base, &state);
    assert!(ok, "{out}");

    // The burst: reads of open content (each logged before it is served) and
    // writes (organisations, each logged in its own transaction), 64 at a time.
    // The node is killed with SIGKILL once 2,500 have been answered.
    #[derive(Debug)]
    enum Acked {
        Read(u64),
        Wrote(String),
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let (tx, mut killer) = tokio::sync::mpsc::channel::<()>(1);
    let burst = futures::stream::iter(0..BURST)
        .map(|i| {
            let client = client.clone();
            let base = base.clone();
            let token = token.clone();
            let answered = answered.clone();
            let tx = tx.clone();
            async move {
                let res = if i % 3 == 0 {
                    client
                        .post(format!("{base}/api/v1/organizations"))
                        .bearer_auth(&token)
                        .json(&json!({"id": format!("burst-{i}"), "name": format!("Burst {i}")}))
                        .send()
                        .await
                } else {
                    client
                        .get(format!(
                            "{base}/api/v1/datasets/barcelona-districts/data?format=csv&limit=2"
                        ))
                        .send()
                        .await
                };
                let acked = match res {
                    Ok(r) if r.status() == 201 => Some(Acked::Wrote(format!("burst-{i}"))),
                    Ok(r) if r.status() == 200 => {
                        let index = r.headers()["citytrust-log-entry"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        // Acknowledged only once the whole answer arrived.
                        r.bytes().await.ok().map(|_| Acked::Read(index))
                    }
                    Ok(r) => panic!("unexpected answer {} to request {i}", r.status()),
                    Err(_) => None, // the node is gone
                };
                if answered.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                    let _ = tx.try_send(());
                }
                acked
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>();
    let kill = async {
        killer.recv().await;
        demo.child.kill().unwrap(); // SIGKILL
        demo.child.wait().unwrap();
    };
    let (acked, ()) = tokio::join!(burst, kill);
    drop(tx);
    let acked: Vec<Acked> = acked.into_iter().flatten().collect();
    let reads: Vec<u64> = acked
        .iter()
        .filter_map(|a| match a {
            Acked::Read(i) => Some(*i),
            Acked::Wrote(_) => None,
        })
        .collect();
    let writes: Vec<&String> = acked
        .iter()
        .filter_map(|a| match a {
            Acked::Wrote(id) => Some(id),
            Acked::Read(_) => None,
        })
        .collect();
    assert!(
        reads.len() + writes.len() >= KILL_AFTER / 2 && acked.len() < BURST,
        "killed mid-burst: {} reads and {} writes acknowledged of {BURST}",
        reads.len(),
        writes.len()
    );

    // Restart: the node rebuilds its tree from the entries and checks it
    // against what it signed (it would refuse to start otherwise).
    let restarted = start_demo(&storage);
    let after = settled_size(&restarted.url).await;
    let url = db_url(&storage, dir.path());
    assert_burst_kept(&url, &after, &reads, &writes).await;
    // The new checkpoints extend what verify saw before the burst.
    assert!(after.parse::<u64>().unwrap() > before.parse::<u64>().unwrap());
    let (ok, out) = run_verify(&restarted.url, &state);
    assert!(ok, "{out}");
    eprintln!(
        "killed after {} answers: {} reads and {} writes acknowledged; log {before} -> {after} entries",
        answered.load(Ordering::SeqCst),
        reads.len(),
        writes.len()
    );
}

#[test]
fn serve_refuses_a_log_to_witness_it_cannot_check() {
    let dir = tempfile::tempdir().unwrap();
    let key = citytrust_ledger::checkpoint::LogSigner::from_seed("a.example/ledger", &[1u8; 32])
        .unwrap()
        .verifier_key()
        .to_string();
    for (value, says) in [
        (
            "a.example/ledger".to_string(),
            "expected ORIGIN=VERIFIER_KEY",
        ),
        (
            "a.example/ledger=garbage".to_string(),
            "is not a log's verifier key",
        ),
        (
            format!("b.example/ledger={key}"),
            "not the log's origin 'b.example/ledger'",
        ),
    ] {
        let out = citytrust()
            .args(["serve", "--data"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--witness-for", &value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value}: {stderr}");
        assert!(
            stderr.contains("--witness-for") && stderr.contains(says),
            "{value}: {stderr}"
        );
    }
    // Nothing was started: no database, no keys.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn two_trusts_started_with_peer_witness_each_other() {
    let (dirs, ports) = (
        [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()],
        [free_port(), free_port()],
    );
    let urls = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let mut nodes = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let mut args = storage(dirs[i].path()).await;
        args.extend([
            "--ledger-origin".to_string(),
            format!("{name}.localhost/ledger"),
        ]);
        // Something to log: the first administrator.
        let mut add = citytrust()
            .args(["user", "add"])
            .args(&args)
            .arg("root")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        add.stdin
            .take()
            .unwrap()
            .write_all(b"a long admin password\n")
            .unwrap();
        assert!(add.wait().unwrap().success());
        args.extend([
            "--listen".to_string(),
            format!("127.0.0.1:{}", ports[i]),
            "--peer".to_string(),
            urls[1 - i].clone(),
        ]);
        let child = citytrust()
            .arg("serve")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        nodes.push(Running {
            child,
            url: urls[i].clone(),
            banner: String::new(),
        });
    }
    let client = reqwest::Client::new();
    // Something for each log to hold: an organisation, registered by the administrator.
    for node in &nodes {
        let mut token = None;
        for _ in 0..120 {
            if let Ok(res) = client
                .post(format!("{}/api/v1/auth/token", node.url))
                .json(&json!({"username": "root", "password": "a long admin password"}))
                .send()
                .await
                && res.status() == 200
            {
                token = res.json::<Value>().await.unwrap()["token"]
                    .as_str()
                    .map(String::from);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let res = client
            .post(format!("{}/api/v1/organizations", node.url))
            .bearer_auth(token.expect("the node answers"))
            .json(&json!({"id": "city-hall", "name": "City Hall"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    // Each publishes a checkpoint its peer has cosigned (until the peers
    // have met, the newest is published unwitnessed).
    for (i, node) in nodes.iter().enumerate() {
        let other = &nodes[1 - i];
        let witness_key = client
            .get(format!("{}/witness/key", other.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let key = citytrust_ledger::witness::CosignerKey::parse(&witness_key).unwrap();
        let mut cosigned = false;
        for _ in 0..120 {
            if let Ok(res) = client
                .get(format!("{}/ledger/checkpoint", node.url))
                .send()
                .await
                && res.status() == 200
                && key.verify(&res.bytes().await.unwrap()).is_ok()
            {
                cosigned = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert!(
            cosigned,
            "{} published no checkpoint its peer cosigned",
            node.url
        );
        let page = client
            .get(format!("{}/witnessing", other.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!("{}.localhost/ledger", ["a", "b"][i])),
            "{page}"
        );
    }
}

/// Wait until `url` answers `/healthz`.
async fn wait_healthy(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..240 {
        if let Ok(res) = client.get(format!("{url}/healthz")).send().await
            && res.status() == 200
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("{url} did not become healthy");
}

#[tokio::test]
async fn one_of_two_nodes_killed_mid_burst_loses_nothing_acknowledged_and_the_log_verifies_through_both()
 {
    use futures::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const BURST: usize = 6_000;
    const KILL_AFTER: usize = 1_500;
    // The shared shape: PostgreSQL and a bucket (scripts/test's second pass).
    let bucket = std::env::var("CITYTRUST_TEST_OBJECT_STORE").unwrap_or_default();
    if bucket.is_empty()
        || std::env::var("CITYTRUST_TEST_DATABASE_URL")
            .unwrap_or_default()
            .is_empty()
    {
        eprintln!(
            "two nodes need PostgreSQL and an object store: run on scripts/test's second pass"
        );
        return;
    }
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut args_a = storage(dir_a.path()).await;
    let prefix = dir_a
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    args_a.extend([
        "--object-store".to_string(),
        format!("{}/{prefix}", bucket.trim_end_matches('/')),
    ]);
    let a = start_demo(&args_a);
    // Node B: the same database, bucket and keys; its own data directory.
    for key in ["ledger-key", "witness-key", "pseudonym-keys"] {
        let from = dir_a.path().join(key);
        if from.exists() {
            std::fs::copy(&from, dir_b.path().join(key)).unwrap();
        }
    }
    let mut args_b = args_a.clone();
    args_b[1] = dir_b.path().display().to_string();
    let port_b = free_port();
    let start_b = || {
        citytrust()
            .arg("serve")
            .args(&args_b)
            .args(["--listen", &format!("127.0.0.1:{port_b}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut b = Running {
        child: start_b(),
        url: format!("http://127.0.0.1:{port_b}"),
        banner: String::new(),
    };
    wait_healthy(&b.url).await;
    let nodes = [a.url.clone(), b.url.clone()];
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let token: Value = client
        .post(format!("{}/api/v1/auth/token", nodes[1]))
        .json(&json!({"username": "admin", "password": "demo-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let before = settled_size(&a.url).await;
    let state = dir_a.path().join("verify-state.json");
    let (ok, out) = run_verify(&a.url, &state);
    assert!(ok, "{out}");

    // The burst, spread over both nodes: reads of open content (its version
    // in the bucket) and writes (organisations); node B is killed with
    // SIGKILL once 1,500 requests have been answered, and A goes on.
    #[derive(Debug)]
    enum Acked {
        Read(u64),
        Wrote(String),
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let (tx, mut killer) = tokio::sync::mpsc::channel::<()>(1);
    let burst = futures::stream::iter(0..BURST)
        .map(|i| {
            let (client, token, answered, tx) =
                (client.clone(), token.clone(), answered.clone(), tx.clone());
            let base = nodes[i % 2].clone();
            async move {
                let res = if i % 3 == 0 {
                    client
                        .post(format!("{base}/api/v1/organizations"))
                        .bearer_auth(&token)
                        .json(&json!({"id": format!("burst-{i}"), "name": format!("Burst {i}")}))
                        .send()
                        .await
                } else {
                    client
                        .get(format!(
                            "{base}/api/v1/datasets/barcelona-districts/data?format=csv&limit=2"
                        ))
                        .send()
                        .await
                };
                let acked = match res {
                    Ok(r) if r.status() == 201 => Some(Acked::Wrote(format!("burst-{i}"))),
                    Ok(r) if r.status() == 200 => {
                        let index = r.headers()["citytrust-log-entry"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        r.bytes().await.ok().map(|_| Acked::Read(index))
                    }
                    Ok(r) => panic!(
                        "unexpected answer {} from {base} to request {i}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(_) => None, // node B is gone
                };
                if answered.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                    let _ = tx.try_send(());
                }
                acked
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>();
    let kill = async {
        killer.recv().await;
        b.child.kill().unwrap(); // SIGKILL
        b.child.wait().unwrap();
    };
    let (acked, ()) = tokio::join!(burst, kill);
    drop(tx);
    let acked: Vec<Acked> = acked.into_iter().flatten().collect();
    let reads: Vec<u64> = acked
        .iter()
        .filter_map(|x| match x {
            Acked::Read(i) => Some(*i),
            Acked::Wrote(_) => None,
        })
        .collect();
    let writes: Vec<&String> = acked
        .iter()
        .filter_map(|x| match x {
            Acked::Wrote(id) => Some(id),
            Acked::Read(_) => None,
        })
        .collect();
    // A answered all of its half; B some of its own before it died.
    assert!(
        acked.len() >= BURST / 2 && acked.len() < BURST,
        "{} reads and {} writes acknowledged of {BURST}",
        reads.len(),
        writes.len()
    );

    // A alone integrates everything (B's sequencer died with it).
    let after = settled_size(&a.url).await;
    let url = db_url(&args_a, dir_a.path());
    assert_burst_kept(&url, &after, &reads, &writes).await;
    assert!(after.parse::<u64>().unwrap() > before.parse::<u64>().unwrap());
    // B restarts on the log A extended meanwhile; verify accepts the log
    // through A, then through B, one state file carried across.
    b.child = start_b();
    wait_healthy(&b.url).await;
    let (ok, out) = run_verify(&a.url, &state);
    assert!(ok, "{out}");
    let (ok, out) = run_verify(&b.url, &state);
    assert!(ok && out.contains(&format!("OK: {after} entries")), "{out}");
    eprintln!(
        "B killed after {} answers: {} reads and {} writes acknowledged; log {before} -> {after} entries",
        answered.load(Ordering::SeqCst),
        reads.len(),
        writes.len()
    );
}

/// A private S3-compatible server (moto, installed by `scripts/test` in
/// `.venv`) on `port`, with an empty bucket `ct-fault`; `None` when moto is
/// not installed.
async fn private_s3(port: u16) -> Option<Running> {
    let moto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if !moto.exists() {
        return None;
    }
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..120 {
        if client.get(&url).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let res = client.put(format!("{url}/ct-fault")).send().await.unwrap();
    assert!(res.status().is_success(), "bucket: {}", res.status());
    Some(Running {
        child,
        url,
        banner: String::new(),
    })
}

#[tokio::test]
async fn the_object_store_away_gives_clear_503s_writes_nothing_and_the_node_recovers_on_its_own() {
    let port = free_port();
    let Some(s3) = private_s3(port).await else {
        eprintln!("moto is not installed (.venv/bin/moto_server): scripts/test installs it");
        return;
    };
    let env = [
        ("AWS_ENDPOINT_URL", s3.url.clone()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "ct-fault".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "ct-fault-secret".to_string()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut args = storage(dir.path()).await;
    args.extend([
        "--object-store".to_string(),
        "s3://ct-fault/versions".to_string(),
    ]);
    let demo = start_demo_with(&args, &env);
    let client = reqwest::Client::new();
    let base = demo.url.clone();
    let data = format!("{base}/api/v1/datasets/barcelona-districts/data?format=csv&limit=2");
    let res = client.get(&data).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // Uploaded again below as a new version (the same columns).
    let rows = res.text().await.unwrap();
    let token: Value = client
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"username": "admin", "password": "demo-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let upload = || {
        client
            .post(format!(
                "{base}/api/v1/datasets/barcelona-districts/versions"
            ))
            .bearer_auth(&token)
            .header("content-type", "text/csv")
            .body(rows.clone())
            .send()
    };
    let url = db_url(&args, dir.path());
    let entries_before = stored_entries(&url).await.len();

    // The store goes away.
    drop(s3);
    let started = std::time::Instant::now();
    for res in [
        client.get(&data).send().await.unwrap(),
        upload().await.unwrap(),
    ] {
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "5");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "store_unavailable", "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("nothing was"), "{detail}");
        // Neither the bucket nor the endpoint is shown.
        assert!(
            !detail.contains("ct-fault") && !detail.contains("127.0.0.1"),
            "{detail}"
        );
    }
    eprintln!(
        "two refusals while the store was away took {:?}",
        started.elapsed()
    );
    // Nothing was served (so nothing logged as served), nothing published.
    let entries = stored_entries(&url).await;
    assert_eq!(
        entries.len(),
        entries_before,
        "{:?}",
        &entries[entries_before..]
    );
    // The node still answers what needs no version file.
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The store comes back (empty: moto keeps nothing): without a restart,
    // the node publishes and serves again.
    let _s3 = private_s3(port).await.unwrap();
    let res = upload().await.unwrap();
    let text = res.text().await.unwrap();
    let version: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(version["rows"], 2, "{text}");
    let newest = version["version"].as_i64().unwrap();
    let res = client
        .get(format!(
            "{base}/api/v1/datasets/barcelona-districts/data?format=csv&version={newest}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let served = res.text().await.unwrap();
    assert_eq!(served.lines().count(), rows.lines().count(), "{served}");
    assert_eq!(served.lines().next(), rows.lines().next());
}

/// Copy a directory tree (a node's versions, as a backup of them).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A PostgreSQL client program (`pg_dump`, `pg_restore`) of the newest
/// server version installed.
fn pg_program(name: &str) -> std::path::PathBuf {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path().join("bin").join(name);
            p.exists().then_some(p)
        })
        .collect();
    found.sort_by_key(|p| {
        p.components()
            .nth(4)
            .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
    });
    found.pop().expect("PostgreSQL's client programs")
}

/// Back up as docs/OPERATING.md says: the node's files first (keys, the
/// witness file), then the database (online: `pg_dump`, or SQLite's
/// `VACUUM INTO`), then the versions.
async fn back_up(args: &[String], data: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in [
        "ledger-key",
        "witness-key",
        "pseudonym-keys",
        "ledger-witness",
    ] {
        if data.join(file).exists() {
            std::fs::copy(data.join(file), to.join(file)).unwrap();
        }
    }
    let url = db_url(args, data);
    if url.starts_with("postgres") {
        let out = Command::new(pg_program("pg_dump"))
            .args(["--format=custom", "--file"])
            .arg(to.join("citytrust.pgdump"))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        let file = to.join("citytrust.sqlite");
        sql(&url, &format!("VACUUM INTO '{}'", file.display())).await;
    }
    copy_tree(&data.join("content"), &to.join("content"));
}

/// Restore a backup into a fresh data directory (and, on PostgreSQL, a
/// fresh database); the storage arguments of a node on it.
async fn restore(backup: &std::path::Path, args: &[String], data: &std::path::Path) -> Vec<String> {
    copy_tree(backup, data);
    let restored = storage(data).await;
    if args.iter().any(|a| a == "--database-url") {
        let out = Command::new(pg_program("pg_restore"))
            .args(["--no-owner", "--dbname"])
            .arg(db_url(&restored, data))
            .arg(backup.join("citytrust.pgdump"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(data.join("citytrust.pgdump")).unwrap();
    }
    restored
}

fn serve_on(args: &[String], port: u16) -> Running {
    Running {
        child: citytrust()
            .arg("serve")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
        url: format!("http://127.0.0.1:{port}"),
        banner: String::new(),
    }
}

#[tokio::test]
async fn a_backup_restored_on_a_fresh_node_verifies_and_a_database_older_than_a_nodes_witness_is_refused()
 {
    let (dir, backup, fresh) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let args = storage(dir.path()).await;
    let demo = start_demo(&args);
    let before = settled_size(&demo.url).await;
    let state = dir.path().join("verify-state.json");
    let (ok, out) = run_verify(&demo.url, &state);
    assert!(ok, "{out}");

    back_up(&args, dir.path(), backup.path()).await;

    // The trust goes on after the backup: a new organisation, signed.
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!("{}/api/v1/auth/token", demo.url))
        .json(&json!({"username": "admin", "password": "demo-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = client
        .post(format!("{}/api/v1/organizations", demo.url))
        .bearer_auth(token["token"].as_str().unwrap())
        .json(&json!({"id": "after-backup", "name": "After the backup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let later = settled_size(&demo.url).await;
    assert!(later.parse::<u64>().unwrap() > before.parse::<u64>().unwrap());
    let later_state = dir.path().join("verify-state-later.json");
    let (ok, out) = run_verify(&demo.url, &later_state);
    assert!(ok, "{out}");
    drop(demo); // the machine is lost

    // Restored on a fresh node: it starts, serves the data, and the log
    // verifies against what a verifier saw before the backup.
    let restored_args = restore(backup.path(), &args, fresh.path()).await;
    let node = serve_on(&restored_args, free_port());
    wait_healthy(&node.url).await;
    assert_eq!(settled_size(&node.url).await, before);
    let (ok, out) = run_verify(&node.url, &state);
    assert!(
        ok && out.contains(&format!("OK: {before} entries")),
        "{out}"
    );
    // A verifier who saw the newer checkpoint is told the log went back.
    let (ok, out) = run_verify(&node.url, &later_state);
    assert!(!ok && out.contains("shrank"), "{out}");
    let res = client
        .get(format!(
            "{}/api/v1/datasets/barcelona-districts/data?format=csv&limit=2",
            node.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(node);

    // The old node's files (its witness file at the newer checkpoint) on the
    // restored, older database: it refuses to start, saying why.
    for file in ["ledger-witness", "ledger-key"] {
        std::fs::copy(dir.path().join(file), fresh.path().join(file)).unwrap();
    }
    let out = citytrust()
        .arg("serve")
        .args(&restored_args)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    // (The restored node logged a read since: whether its sequencer signed
    // it before the node stopped decides which of the two refusals.)
    assert!(
        (text.contains(&format!("the database holds a log of {before} entries"))
            && text.contains(&format!("signed a checkpoint of {later}"))
            && text.contains("restored from an older backup"))
            || text.contains(&format!(
                "not consistent with checkpoint {later} this node signed"
            )),
        "{text}"
    );
    assert!(
        text.contains("ledger-witness file") && text.contains("refusing"),
        "{text}"
    );
}

/// A private PostgreSQL server on `port` (its own cluster in `dir`), to be
/// restarted under a node; run as the `postgres` user when the tests run as
/// root. Stopped when dropped.
struct PrivatePostgres {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    as_root: bool,
}

impl PrivatePostgres {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(dir: &std::path::Path, port: u16) -> Option<PrivatePostgres> {
        let bin = pg_program("initdb").parent()?.to_path_buf();
        let as_root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
        let root = dir.join("pg");
        std::fs::create_dir_all(&root).unwrap();
        if as_root {
            for p in [dir, &root] {
                assert!(
                    Command::new("chown")
                        .arg("postgres")
                        .arg(p)
                        .status()
                        .unwrap()
                        .success()
                );
            }
            assert!(
                Command::new("chmod")
                    .arg("755")
                    .arg(dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let pg = PrivatePostgres {
            bin,
            data: root.join("data"),
            as_root,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            root.display()
        );
        let log = root.join("log").display().to_string();
        pg.pg_ctl(&["-l", &log, "-w", "-o", &options, "start"]);
        Some(pg)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test]
async fn postgresql_restarted_mid_burst_gives_503s_never_a_500_nor_an_unlogged_read_and_the_node_recovers()
 {
    use futures::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const BURST: usize = 4_000;
    const RESTART_AFTER: usize = 1_000;
    // Its own server, so that restarting it disturbs no other test; on the
    // PostgreSQL pass only.
    if std::env::var("CITYTRUST_TEST_DATABASE_URL")
        .unwrap_or_default()
        .is_empty()
    {
        eprintln!("runs on scripts/test's PostgreSQL pass");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pg = PrivatePostgres::start(dir.path(), port).expect("PostgreSQL's programs");
    let data = dir.path().join("node");
    let args = vec![
        "--data".to_string(),
        data.display().to_string(),
        "--database-url".to_string(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    ];
    let demo = start_demo(&args);
    let base = demo.url.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let token: Value = client
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"username": "admin", "password": "demo-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let state = dir.path().join("verify-state.json");
    let (ok, out) = run_verify(&base, &state);
    assert!(ok, "{out}");

    #[derive(Debug)]
    enum Answer {
        Read(u64),
        Wrote(String),
        Unavailable,
        Shed,
    }
    let answered = Arc::new(AtomicUsize::new(0));
    let (tx, mut restart) = tokio::sync::mpsc::channel::<()>(1);
    let burst = futures::stream::iter(0..BURST)
        .map(|i| {
            let (client, token, answered, tx, base) = (
                client.clone(),
                token.clone(),
                answered.clone(),
                tx.clone(),
                base.clone(),
            );
            async move {
                let res = if i % 3 == 0 {
                    client
                        .post(format!("{base}/api/v1/organizations"))
                        .bearer_auth(&token)
                        .json(&json!({"id": format!("burst-{i}"), "name": format!("Burst {i}")}))
                        .send()
                        .await
                } else {
                    client
                        .get(format!(
                            "{base}/api/v1/datasets/barcelona-districts/data?format=csv&limit=2"
                        ))
                        .send()
                        .await
                }
                .unwrap();
                let answer = match res.status().as_u16() {
                    201 => Answer::Wrote(format!("burst-{i}")),
                    200 => {
                        let index = res.headers()["citytrust-log-entry"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        res.bytes().await.unwrap();
                        Answer::Read(index)
                    }
                    503 => {
                        let problem: Value = res.json().await.unwrap();
                        assert_eq!(problem["code"], "store_unavailable", "{problem}");
                        Answer::Unavailable
                    }
                    // Reads waiting on the database fill the node's read
                    // slots: the next are shed, as under any overload.
                    429 => {
                        let problem: Value = res.json().await.unwrap();
                        assert_eq!(problem["code"], "too_many_requests", "{problem}");
                        Answer::Shed
                    }
                    other => panic!(
                        "request {i} answered {other} while PostgreSQL restarted: {}",
                        res.text().await.unwrap_or_default()
                    ),
                };
                if answered.fetch_add(1, Ordering::SeqCst) + 1 == RESTART_AFTER {
                    let _ = tx.try_send(());
                }
                answer
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    // Stopped (fast: sessions cut), away for fifteen seconds — longer than a
    // request waits for a connection (10 s) — and started again.
    let root = pg.data.parent().unwrap().to_path_buf();
    let (log, options) = (
        root.join("log"),
        format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            root.display()
        ),
    );
    let mut stop = pg.command("pg_ctl");
    stop.arg("-D")
        .arg(&pg.data)
        .args(["-m", "fast", "-w", "stop"]);
    let mut start = pg.command("pg_ctl");
    // With its log file, or the server would hold the output pipes open.
    start
        .arg("-D")
        .arg(&pg.data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-o", &options, "start"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let restarting = async move {
        restart.recv().await;
        let out = tokio::task::spawn_blocking(move || stop.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(std::time::Duration::from_secs(15)).await;
        let status = tokio::task::spawn_blocking(move || start.status().unwrap())
            .await
            .unwrap();
        assert!(status.success());
    };
    let (answers, ()) = tokio::join!(burst, restarting);
    drop(tx);
    let unavailable = answers
        .iter()
        .filter(|a| matches!(a, Answer::Unavailable))
        .count();
    let reads: Vec<u64> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Read(i) => Some(*i),
            _ => None,
        })
        .collect();
    let writes: Vec<&String> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Wrote(id) => Some(id),
            _ => None,
        })
        .collect();
    let shed = answers.iter().filter(|a| matches!(a, Answer::Shed)).count();
    eprintln!(
        "PostgreSQL away for 15 s after {RESTART_AFTER} answers: {} reads, {} writes, {unavailable} × 503, {shed} × 429",
        reads.len(),
        writes.len()
    );
    assert!(
        unavailable > 0,
        "requests waiting past the outage are told so"
    );
    // Recovered on its own: reads and writes succeed again.
    let mut recovered = false;
    for _ in 0..60 {
        let res = client
            .get(format!(
                "{base}/api/v1/datasets/barcelona-districts/data?format=csv&limit=2"
            ))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            recovered = true;
            break;
        }
        assert_eq!(res.status(), 503);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(recovered, "the node did not recover");
    // Nothing acknowledged is lost; every read served has its entry; the
    // log is dense, signed to its end, and verifies against what was seen.
    let size = settled_size(&base).await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    assert_burst_kept(&url, &size, &reads, &writes).await;
    let (ok, out) = run_verify(&base, &state);
    assert!(ok, "{out}");
    drop(demo);
}
