//! The attack suite (issue 24): every way a review found to read what no
//! agreement allows, to read without a log entry, or to bring the server
//! down — each written as the attack, by a determined analyst, custodian or
//! anonymous caller, and kept here so it stays closed. Each test failed on
//! the code before its fix. Run on SQLite and again on PostgreSQL + S3.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::governance::{request, start, with_content};
use crate::harness::{TestApp, assert_problem, dataset};
use crate::levels::{agreement, citibike_classes, citibike_csv, upload};
use crate::residents::{link_with_code, personal_dataset, research_agreement};

async fn status_text(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// Every value of the household readings that only consenting households'
/// rows may show (the fixture of `residents::personal_dataset`).
const HIDDEN: [&str; 4] = ["H-1", "H-3", "1.7", "2.2"];

async fn query(app: &TestApp, token: Option<&str>, sql: &str) -> (u16, String) {
    status_text(
        app.post_json(
            "/api/v1/query",
            token,
            &json!({"sql": sql, "purpose": "research", "format": "csv"}),
        )
        .await,
    )
    .await
}

/// A consent-based research agreement for the analyst over the household
/// readings, and one household (H-2) that consented.
async fn consent_scene(app: &TestApp) -> (String, String) {
    let alice = app.token("alice").await;
    let id = personal_dataset(app, &alice).await;
    link_with_code(app, &alice, &id, "resident", "H-2").await;
    let resident = app.token("resident").await;
    let res = app
        .post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research", "recipient_organization_id": "uni"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    research_agreement(app, &id).await;
    (id.clone(), id.replace('-', "_"))
}

/// Finding 1: no user expression ever sees a row the reader may not see —
/// whatever fails on a hidden row, wherever in the query — and no engine
/// text reaches the caller; every attempt is logged.
#[tokio::test]
async fn a_failing_expression_on_hidden_rows_reads_nothing_and_every_attempt_is_logged() {
    let app = start().await;
    let (_, t) = consent_scene(&app).await;
    let analyst = app.token("analyst").await;
    // The review's query: a cast that fails only on the hidden households.
    let review = format!(
        "SELECT 1 FROM {t} WHERE CASE WHEN household <> 'H-2' THEN CAST(household || '|' || \
         CAST(meter AS VARCHAR) || '|' || CAST(kwh AS VARCHAR) AS INT) ELSE 0 END = 0"
    );
    let (status, text) = query(&app, Some(&analyst), &review).await;
    assert_eq!(status, 200, "answered over the admitted rows alone: {text}");
    assert_eq!(
        text, "Int64(1)\n1\n1\n",
        "both of H-2's rows, nothing else: {text}"
    );
    // The same failure in every position a query has: each answer equals
    // the answer over H-2's rows alone.
    let fail = "CAST(household || kwh AS INT)";
    let guarded = format!("CASE WHEN household <> 'H-2' THEN {fail} ELSE 0 END");
    for sql in [
        format!("SELECT {guarded} AS x FROM {t}"),
        format!("SELECT household FROM {t} WHERE {guarded} = 0"),
        format!("SELECT {guarded} AS x, COUNT(*) AS n FROM {t} GROUP BY 1"),
        format!(
            "SELECT household, COUNT(*) AS n FROM {t} GROUP BY household HAVING SUM({guarded}) = 0"
        ),
        format!("SELECT household FROM {t} ORDER BY {guarded}"),
        format!(
            "SELECT a.household FROM {t} a JOIN {t} b ON CASE WHEN a.household <> 'H-2' THEN CAST(a.household || b.kwh AS INT) ELSE 0 END = 0 AND a.meter = b.meter"
        ),
        format!(
            "SELECT household FROM {t} WHERE household IN (SELECT household FROM {t} WHERE {guarded} = 0)"
        ),
        format!("SELECT MAX({guarded}) OVER (PARTITION BY meter) AS m FROM {t}"),
        format!(
            "SELECT household FROM {t} WHERE 1 / (CASE WHEN household = 'H-2' THEN 1 ELSE 0 END) = 1"
        ),
        format!(
            "SELECT household FROM {t} WHERE to_timestamp(CASE WHEN household <> 'H-2' THEN household ELSE '2026-01-01T00:00:00Z' END) IS NOT NULL"
        ),
        format!("SELECT COUNT(*) AS n, MIN(kwh) AS lo, MAX(kwh) AS hi FROM {t}"),
        format!("SELECT household FROM {t} LIMIT 1"),
    ] {
        let (status, text) = query(&app, Some(&analyst), &sql).await;
        assert_eq!(status, 200, "{sql}: {text}");
        for hidden in HIDDEN {
            assert!(!text.contains(hidden), "{sql} showed {hidden}: {text}");
        }
    }
    // Statistics never count hidden rows: COUNT, MIN, MAX over H-2 alone.
    let (_, text) = query(
        &app,
        Some(&analyst),
        &format!("SELECT COUNT(*) AS n, MIN(kwh) AS lo, MAX(kwh) AS hi FROM {t}"),
    )
    .await;
    assert_eq!(text, "n,lo,hi\n2,0.4,0.6\n");
    // A failure on an admitted row is answered in CityTrust's words: the
    // kind of failure, never the value.
    let before = app.entries_of_type("query.run").await.len();
    let (status, text) = query(
        &app,
        Some(&analyst),
        &format!("SELECT CAST(household AS INT) FROM {t}"),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["code"], "cast_failed", "{problem}");
    assert!(!text.contains("H-2") && !text.contains("Int32"), "{text}");
    // ... and logged before it is answered, as failed, with a commitment
    // to the SQL (not the SQL, not its digest).
    let entries = app.entries_of_type("query.run").await;
    assert_eq!(entries.len(), before + 1);
    let entry: Value = serde_json::from_str(entries.last().unwrap()).unwrap();
    assert_eq!(entry["outcome"], "failed", "{entry}");
    assert_eq!(entry["error"], "cast_failed", "{entry}");
    assert!(entry["sql_commitment"].is_string(), "{entry}");
    // A refused attempt too.
    let bob = app.token("bob").await;
    let (status, _) = query(&app, Some(&bob), &format!("SELECT * FROM {t}")).await;
    assert_eq!(status, 403);
    let entry: Value =
        serde_json::from_str(app.entries_of_type("query.run").await.last().unwrap()).unwrap();
    assert_eq!(entry["outcome"], "refused", "{entry}");
}

/// Finding 2: tables that cannot rebuild rows. Near-unique dimensions must
/// be binned, mostly-small tables are refused, suppressed and empty cells
/// look the same, and two tables cannot be subtracted exactly.
#[tokio::test]
async fn thresholded_tables_of_trips_give_back_no_trip() {
    let app = start().await;
    let alice = app.token("alice").await;
    let mut d = dataset("Citi Bike trips", "city-energy", "shared_group");
    d["personal_data"] = json!(true);
    d["column_classes"] = citibike_classes();
    let id = app.create_dataset(&alice, &d).await;
    // The times as times (the file writes 1/1/18 2:06).
    let res = app
        .post_raw(
            &format!(
                "/api/v1/datasets/{id}/versions?types=starttime:timestamp:%25m/%25d/%25y%20%25H:%25M,stoptime:timestamp:%25m/%25d/%25y%20%25H:%25M"
            ),
            Some(&alice),
            "text/csv",
            citibike_csv(),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    agreement(&app, "analyst", &id, "research", "aggregate").await;
    let analyst = app.token("analyst").await;
    let path = format!("/api/v1/datasets/{id}/aggregate");
    let table = |by: Value| json!({"purpose": "research", "by": by, "format": "json"});
    // The review's attack: start minute × another column lists suppressed
    // cells' labels. The time column is no dimension as it is …
    for other in ["end station id", "birth year", "gender", "usertype"] {
        let res = app
            .post_json(
                &path,
                Some(&analyst),
                &table(json!([{"column": "starttime"}, {"column": other}])),
            )
            .await;
        let (status, text) = status_text(res).await;
        assert_eq!(status, 422, "{other}: {text}");
        assert!(!text.contains("2018-01"), "{text}");
    }
    // … finer than a day it is refused, and by day × station it is counted
    // with no cell under 10 and no label of a small cell.
    let res = app
        .post_json(
            &path,
            Some(&analyst),
            &table(json!([{"time": {"column": "starttime", "unit": "hour"}}, {"column": "start station id"}])),
        )
        .await;
    assert_eq!(res.status(), 422);
    let mut truth: HashMap<(String, String), u64> = HashMap::new();
    let bytes = citibike_csv();
    let mut r = csv::Reader::from_reader(&bytes[..]);
    for rec in r.records() {
        let rec = rec.unwrap();
        // 1/1/18 2:06 → 2018-01-01
        let date = rec[1].split(' ').next().unwrap();
        let p: Vec<u32> = date.split('/').map(|x| x.parse().unwrap()).collect();
        let day = format!("20{:02}-{:02}-{:02}", p[2], p[0], p[1]);
        *truth.entry((day, rec[3].to_string())).or_default() += 1;
    }
    let res = app
        .post_json(
            &path,
            Some(&analyst),
            &table(json!([{"time": {"column": "starttime", "unit": "day"}}, {"column": "start station id"}])),
        )
        .await;
    let (status, text) = status_text(res).await;
    if status == 200 {
        let t: Value = serde_json::from_str(&text).unwrap();
        for c in t["cells"].as_array().unwrap() {
            if let (Some(day), Some(station)) = (c["key"][0].as_str(), c["key"][1].as_str()) {
                assert_ne!(day, "(missing)", "{c}");
                let n = truth[&(day[..10].to_string(), station.to_string())];
                assert!(n >= 10, "a cell of {n} trips is listed: {c}");
            }
        }
    } else {
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["code"], "table_too_sparse", "{problem}");
    }
    // Near-unique columns make a table of mostly small cells: refused.
    let res = app
        .post_json(
            &path,
            Some(&analyst),
            &table(json!([{"column": "start station id"}, {"column": "end station id"}, {"column": "birth year"}])),
        )
        .await;
    assert_problem(res, 422, "table_too_sparse", None).await;
    // A grid finer than the owner allows (0.01° unless declared) is refused,
    // so the 0.005° grid the review subtracted from the 0.01° one is gone …
    let grid = |deg: f64| json!([{"grid": {"latitude": "start station latitude", "longitude": "start station longitude", "degrees": deg}}]);
    let res = app
        .post_json(&path, Some(&analyst), &table(grid(0.005)))
        .await;
    assert_eq!(res.status(), 422);
    // … and between allowed grids, counts carry a change fixed by their
    // records: the same area's trips read the same in every table, and a
    // subtraction yields the sum of several changes, not a count.
    let fine: Value = app
        .post_json(&path, Some(&analyst), &table(grid(0.01)))
        .await
        .json()
        .await
        .unwrap();
    let coarse: Value = app
        .post_json(&path, Some(&analyst), &table(grid(0.02)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fine["perturbed"], true);
    assert_eq!(coarse["perturbed"], true);
    let total = |t: &Value| {
        t["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"][0].is_null())
            .map(|c| c["count"].as_i64().unwrap())
    };
    assert_eq!(
        total(&fine),
        total(&coarse),
        "the same trips, the same count"
    );
    // No response says anything about cells it does not list.
    assert!(!fine.to_string().contains("suppress"), "{fine}");
}

/// Finding 3: one anonymous request of a few kilobytes aborted the server
/// (a chain of 2,000 `+` overflowed the stack). Every shape of deep input
/// is refused with a clear problem, and the server answers afterwards.
#[tokio::test]
async fn deep_or_long_sql_is_refused_and_the_server_stays_up() {
    let app = TestApp::start().await;
    let chain = |n: usize, op: &str| {
        let mut s = String::from("SELECT 1");
        for _ in 0..n {
            s.push_str(op);
            s.push('1');
        }
        s
    };
    for (sql, code) in [
        (chain(2_000, "+"), "sql_too_deep"),
        (chain(6_000, "*"), "sql_too_deep"),
        (chain(3_000, " AND 1="), "sql_too_deep"),
        (chain(5_000, "||"), "sql_too_deep"),
        (
            format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000)),
            "sql_syntax",
        ),
        (format!("SELECT {}1{}", "-".repeat(3_000), ""), "sql_syntax"),
        (
            format!(
                "SELECT {} 1 {}",
                "CASE WHEN true THEN ".repeat(400),
                " END".repeat(400)
            ),
            "sql_syntax",
        ),
        (chain(20_000, "+"), "sql_too_long"),
    ] {
        let res = app
            .post_json(
                "/api/v1/query",
                None,
                &json!({"sql": sql, "purpose": "research"}),
            )
            .await;
        let (status, text) = status_text(res).await;
        assert_eq!(status, 422, "{text}");
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert!(
            problem["code"] == code || problem["code"] == "sql_too_deep",
            "{code}: {problem}"
        );
    }
    // Up to the limit, a chain runs.
    let (status, text) = query(&app, None, &chain(90, "+")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

/// Finding 4: re-asking under a group's standing agreement with no column
/// limit and a later end was granted with no vote; which agreement's
/// columns applied depended on row order; retiring one widened access.
#[tokio::test]
async fn a_standing_agreement_never_widens_access_without_the_trustees() {
    let app = start().await;
    let admin = citytrust_model::Actor::from_user(&app.service.get_user("admin").await.unwrap());
    app.service
        .create_group(
            &admin,
            citytrust_model::NewGroup {
                id: "energy-partners".into(),
                name: "Energy partners".into(),
                description: String::new(),
                criteria: "Statutory energy duty.".into(),
                member_organization_ids: vec!["uni".into(), "water-co".into()],
            },
        )
        .await
        .unwrap();
    let alice = app.token("alice").await;
    let meters = with_content(
        &app,
        &alice,
        "Meter totals",
        "city-energy",
        "shared_group",
        b"building,kbtu\nAlpha Tower,1520000\nBeta Hall,830000\n",
    )
    .await;
    // The group's standing agreement: the building names only, in March.
    let analyst = app.token("analyst").await;
    let mut body = request(&[&meters], "city-operations", "identified");
    body["group_id"] = json!("energy-partners");
    body["columns"] = json!(["building"]);
    let r: Value = app
        .post_json("/api/v1/access-requests", Some(&analyst), &body)
        .await
        .json()
        .await
        .unwrap();
    let r = crate::governance::all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
    let group_agreement = r["agreement_id"].as_str().unwrap().to_string();
    // Bob's organisation re-asks: every column, until December. No vote
    // would mean wider access than the group was given: the trustees decide.
    let bob = app.token("bob").await;
    let mut wider = request(&[&meters], "city-operations", "identified");
    wider["ends_on"] = json!("2026-12-31");
    let r: Value = app
        .post_json("/api/v1/access-requests", Some(&bob), &wider)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "under_review", "{r}");
    let mut later = request(&[&meters], "city-operations", "identified");
    later["columns"] = json!(["building"]);
    later["ends_on"] = json!("2026-12-31");
    let r: Value = app
        .post_json("/api/v1/access-requests", Some(&bob), &later)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "under_review", "a later end is wider too: {r}");
    // Within the standing agreement's bounds it is granted at once.
    let mut within = request(&[&meters], "city-operations", "identified");
    within["columns"] = json!(["building"]);
    let r: Value = app
        .post_json("/api/v1/access-requests", Some(&bob), &within)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "approved", "{r}");
    // Reads: one agreement must allow all of a read — the building only.
    let read = format!("/api/v1/datasets/{meters}/data?format=csv&purpose=city-operations");
    let (_, text) = status_text(app.get(&read, Some(&bob)).await).await;
    assert_eq!(text, "building\nAlpha Tower\nBeta Hall\n");
    // Retiring the group's agreement only narrows: Bob still reads the
    // building names under his own, never more.
    let trustee = app.token("trustee").await;
    let res = app
        .post_json(
            &format!("/api/v1/agreements/{group_agreement}/retire"),
            Some(&trustee),
            &json!({"reason": "The group disbanded."}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let (status, text) = status_text(app.get(&read, Some(&bob)).await).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        !text.contains("kbtu") && !text.contains("1520000"),
        "{text}"
    );
}

/// Finding 5: a derived copy of column-limited, shared-specific data was
/// re-assessed as open by its deriver and read anonymously, even after the
/// agreement was retired.
#[tokio::test]
async fn derived_data_keeps_its_inputs_class_columns_and_agreements() {
    let app = start().await;
    let alice = app.token("alice").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        b"building,kbtu\nAlpha Tower,1520000\nBeta Hall,830000\n",
    )
    .await;
    let analyst = app.token("analyst").await;
    let mut body = request(&[&energy], "research", "identified");
    body["columns"] = json!(["building"]);
    body["ends_on"] = json!("2026-12-31");
    let r: Value = app
        .post_json("/api/v1/access-requests", Some(&analyst), &body)
        .await
        .json()
        .await
        .unwrap();
    let r = crate::governance::all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
    let agreement_id = r["agreement_id"].as_str().unwrap().to_string();
    let t = energy.replace('-', "_");
    let res = app
        .post_json(
            "/api/v1/derived-datasets",
            Some(&analyst),
            &json!({
                "dataset": {"title": "Copy", "description": "A copy.", "owner_organization_id": "uni", "spectrum": "open"},
                "sql": format!("SELECT * FROM {t}"),
                "purpose": "research"
            }),
        )
        .await;
    let (status, text) = status_text(res).await;
    assert_eq!(status, 201, "{text}");
    let derived: Value = serde_json::from_str(&text).unwrap();
    let id = derived["dataset"]["id"].as_str().unwrap().to_string();
    assert_eq!(derived["dataset"]["spectrum"], "shared_specific");
    assert_eq!(
        derived["dataset"]["derivation"]["inputs"][0]["agreement_id"],
        agreement_id.as_str()
    );
    // Its deriver may not lower its class: that is the trustees' decision.
    let reassess = format!("/api/v1/datasets/{id}/reassessment");
    let res = app
        .post_json(
            &reassess,
            Some(&analyst),
            &json!({"spectrum": "open", "note": "It is only building names."}),
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
    // Kept at its class, it still carries the agreement: not the public's.
    let res = app
        .post_json(
            &reassess,
            Some(&analyst),
            &json!({"spectrum": "shared_specific", "note": "As inherited."}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let path = format!("/api/v1/datasets/{id}/data?format=csv&purpose=research");
    assert_eq!(app.get(&path, None).await.status(), 401);
    // The deriver reads it while the agreement lasts, for its purpose …
    let (status, text) = status_text(app.get(&path, Some(&analyst)).await).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("1520000"));
    let other = format!("/api/v1/datasets/{id}/data?format=csv&purpose=innovation");
    assert_eq!(app.get(&other, Some(&analyst)).await.status(), 403);
    // … and not after it is retired: the copy ends with the agreement.
    let trustee = app.token("trustee").await;
    let res = app
        .post_json(
            &format!("/api/v1/agreements/{agreement_id}/retire"),
            Some(&trustee),
            &json!({"reason": "The study ended."}),
        )
        .await;
    assert!(res.status().is_success());
    let res = app.get(&path, Some(&analyst)).await;
    let problem = assert_problem(res, 403, "refused", None).await;
    assert_eq!(problem["rule"], "derived-data-keeps-its-inputs-terms");
}

/// Finding 6: a dp_aggregate grant opened exact thresholded tables once
/// the budget was spent (levels compared by rank).
#[tokio::test]
async fn a_differential_privacy_grant_is_not_a_grant_of_exact_tables() {
    let app = start().await;
    let alice = app.token("alice").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        b"building,kbtu\nAlpha Tower,1520000\nBeta Hall,830000\n",
    )
    .await;
    agreement(&app, "analyst", &energy, "research", "dp_aggregate").await;
    let analyst = app.token("analyst").await;
    let dp = format!("/api/v1/datasets/{energy}/dp-statistics");
    let count = json!({"purpose": "research", "statistic": "count", "epsilon": 1.0});
    assert_eq!(
        app.post_json(&dp, Some(&analyst), &count).await.status(),
        200
    );
    assert_eq!(
        app.post_json(&dp, Some(&analyst), &count).await.status(),
        403
    );
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{energy}/aggregate"),
            Some(&analyst),
            &json!({"purpose": "research", "by": [{"column": "building"}]}),
        )
        .await;
    let (status, text) = status_text(res).await;
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains("Alpha"), "{text}");
}

/// Finding 7: `repeat('x', 500000000)` took the server to 8 GB. Functions
/// whose results outgrow their arguments are checked before they run; a
/// result is bounded; anonymous callers share a few places.
#[tokio::test]
async fn no_query_makes_values_larger_than_the_trust_allows() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = with_content(
        &app,
        &alice,
        "Stations",
        "city-energy",
        "open",
        b"station,n\nSants,1\nGracia,2\n",
    )
    .await;
    let t = id.replace('-', "_");
    for sql in [
        "SELECT repeat('x', 500000000) AS x".to_string(),
        "SELECT lpad('x', 1000000000) AS x".to_string(),
        "SELECT rpad('x', 1000000000, 'yz') AS x".to_string(),
        "SELECT replace(repeat('a', 100000), 'a', repeat('b', 100000)) AS x".to_string(),
        format!(
            "SELECT concat({}) AS x",
            vec!["repeat('q', 60000)"; 40].join(", ")
        ),
        // Doubling through a chain of subqueries.
        {
            let mut s = "SELECT repeat('x', 1000) AS s".to_string();
            for _ in 0..14 {
                s = format!("SELECT s || s AS s FROM ({s}) q");
            }
            s
        },
        format!("SELECT repeat(station, 2000000) AS x FROM {t}"),
    ] {
        let (status, text) = query(&app, None, &sql).await;
        assert_eq!(status, 422, "{sql}: {text}");
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["code"], "result_too_large", "{sql}: {problem}");
    }
    // Within the bounds, the same functions work.
    let (status, text) = query(&app, None, "SELECT length(repeat('x', 1000)) AS n").await;
    assert_eq!((status, text.as_str()), (200, "n\n1000\n"));
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

/// Finding 8: a custodian downloaded a closed dataset's rejects file (raw
/// personal rows) with no decision and no log entry, and re-based its
/// lawful basis from consent to contract.
#[tokio::test]
async fn custodians_read_through_the_read_path_and_do_not_change_how_data_is_protected() {
    let app = start().await;
    let alice = app.token("alice").await;
    let mut d = dataset("Patients", "city-energy", "closed");
    d["roles"] = json!([{"organization_id": "water-co", "role": "custodian"}]);
    d["personal_data"] = json!(true);
    d["column_classes"] = json!({"personal": ["patient"]});
    d["personal_terms"] = json!({"subject_key": "patient", "purposes": [{"purpose": "research", "basis": "consent", "notice": "Only with your consent."}], "notice": "Your visits."});
    let id = app.create_dataset(&alice, &d).await;
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions?on_error=quarantine&types=visits:integer"),
            Some(&alice),
            "text/csv",
            b"patient,visits\nP-1,3\nP-2,many\nP-3,1\n".to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201);
    let rejects = format!("/api/v1/datasets/{id}/versions/1/rejects");
    let bob = app.token("bob").await;
    for path in [rejects.clone(), format!("{rejects}?purpose=research")] {
        let (status, text) = status_text(app.get(&path, Some(&bob)).await).await;
        assert!(status == 403, "{path}: {status} {text}");
        assert!(!text.contains("P-2"), "{text}");
    }
    // The owner reads them, for a purpose, logged before they are served.
    let before = app.entries_of_type("content.read").await.len();
    let (status, text) = status_text(
        app.get(&format!("{rejects}?purpose=city-operations"), Some(&alice))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("P-2"));
    let reads = app.entries_of_type("content.read").await;
    assert_eq!(reads.len(), before + 1);
    assert!(reads.last().unwrap().contains("\"part\":\"rejects\""));
    // The custodian may not re-base the lawful basis, nor lower the class,
    // nor say it is not personal data; neither may the owner.
    for (who, patch) in [
        (
            &bob,
            json!({"personal_terms": {"subject_key": "patient", "purposes": [{"purpose": "research", "basis": "contract", "notice": "x"}], "notice": "x"}}),
        ),
        (
            &alice,
            json!({"personal_terms": {"subject_key": "patient", "purposes": [{"purpose": "research", "basis": "contract", "notice": "x"}], "notice": "x"}}),
        ),
        (&alice, json!({"spectrum": "shared_public"})),
        (
            &alice,
            json!({"personal_data": false, "column_classes": {}, "personal_terms": null}),
        ),
    ] {
        let res = app
            .patch_json(&format!("/api/v1/datasets/{id}"), Some(who), &patch)
            .await;
        let (status, text) = status_text(res).await;
        assert!(status == 403 || status == 422, "{patch}: {status} {text}");
    }
    // The trustees may, with reasons, in the log.
    let trustee = app.token("trustee").await;
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/classification"),
            Some(&trustee),
            &json!({"personal_terms": {"subject_key": "patient", "purposes": [{"purpose": "research", "basis": "public_task", "notice": "Research the city is charged with."}], "notice": "Your visits."}, "reason": "The health research duty of 2026."}),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let entry = app.entries_of_type("dataset.reclassified").await;
    assert!(entry.last().unwrap().contains("public_task"), "{entry:?}");
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/classification"),
            Some(&alice),
            &json!({"spectrum": "open", "reason": "Because."}),
        )
        .await;
    assert_eq!(res.status(), 403);
}

/// Finding 9: `query.run` entries carried plain SHA-256 digests of the SQL
/// and of the served bytes, so a guess could be confirmed from the log.
#[tokio::test]
async fn the_public_log_commits_to_queries_and_answers_without_revealing_them() {
    let app = start().await;
    let (id, t) = consent_scene(&app).await;
    let analyst = app.token("analyst").await;
    let sql = format!("SELECT COUNT(*) AS n FROM {t} WHERE household = 'H-2'");
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": sql, "purpose": "research", "format": "csv"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let nonce = res.headers()["citytrust-log-nonce"]
        .to_str()
        .unwrap()
        .to_string();
    let body = res.bytes().await.unwrap();
    use sha2::Digest;
    let hex = |b: &[u8]| {
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    let entry = app.entries_of_type("query.run").await.pop().unwrap();
    // Neither digest a guesser could compute is there …
    assert!(!entry.contains(&hex(sql.as_bytes())), "{entry}");
    assert!(!entry.contains(&hex(&body)), "{entry}");
    assert!(!entry.contains("H-2"), "{entry}");
    // … but the reader, who holds the nonce, can check what was logged.
    let fields: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(
        fields["sql_commitment"],
        citytrust_service::content::commitment("sql", &nonce, &sql).as_str()
    );
    assert_eq!(
        fields["commitment"],
        citytrust_service::content::commitment("served", &nonce, &hex(&body)).as_str()
    );
    // A download's entry, and a DP release's, commit the same way.
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research"),
            Some(&analyst),
        )
        .await;
    let body = res.bytes().await.unwrap();
    let entry = app.entries_of_type("content.read").await.pop().unwrap();
    assert!(!entry.contains(&hex(&body)), "{entry}");
}

/// Finding 10: an anonymous open-data read stored any text as its purpose
/// in the permanent public log.
#[tokio::test]
async fn no_caller_writes_free_text_into_the_public_log() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = with_content(
        &app,
        &alice,
        "Stations",
        "city-energy",
        "open",
        b"station,n\nSants,1\n",
    )
    .await;
    let graffiti = "Mallory%20was%20here";
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?purpose={graffiti}"),
            None,
        )
        .await;
    assert_problem(res, 422, "unknown_purpose", None).await;
    let t = id.replace('-', "_");
    let res = app
        .post_json(
            "/api/v1/query",
            None,
            &json!({"sql": format!("SELECT * FROM {t}"), "purpose": "Mallory was here"}),
        )
        .await;
    assert_problem(res, 422, "unknown_purpose", None).await;
    let res = app
        .post_json(
            "/api/v1/query",
            None,
            &json!({"sql": "SELECT * FROM mallory_was_here", "purpose": "research"}),
        )
        .await;
    assert_eq!(res.status(), 404);
    // A taxonomy purpose, or none, is fine for open data.
    assert_eq!(
        app.get(
            &format!("/api/v1/datasets/{id}/data?purpose=research"),
            None
        )
        .await
        .status(),
        200
    );
    let all = app
        .service
        .store()
        .ledger_entries(0, 100_000)
        .await
        .unwrap();
    for (_, e) in all {
        assert!(!e.contains("Mallory") && !e.contains("mallory"), "{e}");
    }
}

/// Finding 11: the anonymised level kept a unique `Id` (9,913 distinct of
/// 9,917 accidents) and every undeclared column, and counted k over rows
/// where one person has many.
#[tokio::test]
async fn anonymised_rows_keep_only_declared_columns_and_count_people() {
    let app = start().await;
    let alice = app.token("alice").await;
    let mut csv = String::from("Id,district,weekday,victims,notes\n");
    for i in 0..400u32 {
        csv.push_str(&format!(
            "ACC-{i:05},D{},{},{},note {i}\n",
            i % 4,
            ["Mon", "Tue", "Wed"][(i % 3) as usize],
            i % 3
        ));
    }
    let id = upload(
        &app,
        &alice,
        dataset("Accidents", "city-energy", "shared_specific"),
        json!({"column_classes": {"quasi_identifying": ["district", "weekday"], "non_identifying": ["victims"]}}),
        csv.into_bytes(),
    )
    .await;
    agreement(&app, "analyst", &id, "research", "anonymised").await;
    let analyst = app.token("analyst").await;
    let (status, text) = status_text(
        app.get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research&level=anonymised"),
            Some(&analyst),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("district,weekday,victims\n"), "{text}");
    assert!(!text.contains("ACC-") && !text.contains("note"), "{text}");

    // One person, many rows: five rows of one patient are not five people.
    let mut visits = String::from("patient,age,ward,visits\n");
    for p in 0..60u32 {
        for v in 0..6u32 {
            visits.push_str(&format!(
                "P{p:03},{},{},{v}\n",
                20 + p,
                ["A", "B"][(p % 2) as usize]
            ));
        }
    }
    let mut d = dataset("Visits", "city-energy", "shared_specific");
    d["personal_data"] = json!(true);
    d["column_classes"] = json!({"personal": ["patient"], "quasi_identifying": ["age", "ward"], "non_identifying": ["visits"]});
    d["personal_terms"] = json!({"subject_key": "patient", "purposes": [{"purpose": "research", "basis": "public_task", "notice": "Research."}], "notice": "Visits."});
    let visits_id = upload(&app, &alice, d, json!({}), visits.into_bytes()).await;
    agreement(&app, "analyst", &visits_id, "research", "anonymised").await;
    let analyst = app.token("analyst").await;
    let (status, text) = status_text(
        app.get(
            &format!(
                "/api/v1/datasets/{visits_id}/data?format=csv&purpose=research&level=anonymised"
            ),
            Some(&analyst),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Map each released (age, ward) class to the people in it, by the
    // original rows (ages are unique per patient, so the generalised age
    // range holds the patients whose ages fall in it).
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let mut classes: HashMap<(String, String), usize> = HashMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        *classes
            .entry((rec[0].to_string(), rec[1].to_string()))
            .or_default() += 1;
    }
    for ((age, ward), rows) in &classes {
        // Six rows a person: at least five people means at least 30 rows.
        assert!(
            *rows >= 30,
            "class ({age}, {ward}) holds {rows} rows: fewer than five people"
        );
    }
}

/// Finding 12: the low findings — names in the public register, values in
/// quality statements, an authority's scope, sign-in attempts, and links
/// that followed the request's Host.
#[tokio::test]
async fn what_the_public_may_not_see_and_no_one_may_do() {
    let app = start().await;
    let alice = app.token("alice").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        b"building,kbtu,when\nAlpha Tower,1520000,2026-01-01T00:00:00Z\nBeta Hall,830000,2026-02-01T00:00:00Z\n",
    )
    .await;
    agreement(&app, "analyst", &energy, "research", "identified").await;
    // The public register names no one.
    let (_, text) = status_text(app.get("/api/v1/access-requests", None).await).await;
    for name in ["analyst", "trustee2", "trustee3"] {
        assert!(!text.contains(name), "{name} in {text}");
    }
    let list: Value = serde_json::from_str(&text).unwrap();
    for r in list.as_array().unwrap() {
        for v in r["votes"].as_array().unwrap() {
            assert_ne!(v["trustee"], "trustee", "a trustee's account named: {v}");
        }
    }
    let analyst = app.token("analyst").await;
    let (_, mine) = status_text(app.get("/api/v1/access-requests", Some(&analyst)).await).await;
    assert!(
        mine.contains("analyst"),
        "the requester sees their own name"
    );
    // Quality statements carry no values for those who may not read.
    let (_, text) = status_text(
        app.get(&format!("/api/v1/datasets/{energy}/versions/1"), None)
            .await,
    )
    .await;
    assert!(
        !text.contains("largest_gap") && !text.contains("period_coverage"),
        "{text}"
    );
    // An authority covers what it says: reads only, not residents' choices.
    let admin = app.token("admin").await;
    app.service
        .insert_user(crate::harness::user("assistant", vec![], vec!["uni"]))
        .await
        .unwrap();
    let res = app
        .post_json(
            "/api/v1/authorities",
            Some(&admin),
            &json!({"agent": "assistant", "principal": "analyst", "kind": "mandate", "scope": "Reads for the study.", "covers": ["reads"], "evidence": "Signed mandate seen.", "starts_on": "2026-03-01", "ends_on": "2026-03-31"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let assistant = app.token("assistant").await;
    let as_analyst = |path: String| {
        app.client
            .get(app.url(&path))
            .bearer_auth(&assistant)
            .header("on-behalf-of", "analyst")
            .send()
    };
    let res = as_analyst(format!(
        "/api/v1/datasets/{energy}/data?format=csv&purpose=research"
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = as_analyst("/api/v1/me/consents".into()).await.unwrap();
    assert_problem(res, 403, "refused", None).await;
    let res = as_analyst("/api/v1/access-requests?mine=true".into())
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Guessing passwords: ten failures, then refused even with the right one.
    for _ in 0..10 {
        let res = app
            .post_json(
                "/api/v1/auth/token",
                None,
                &json!({"username": "bob", "password": "guess"}),
            )
            .await;
        assert_eq!(res.status(), 401);
    }
    let res = app
        .post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "bob", "password": crate::harness::PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    app.clock.advance(time::Duration::minutes(16));
    assert_eq!(
        app.post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "bob", "password": crate::harness::PASSWORD}),
        )
        .await
        .status(),
        200
    );
    // Links in the exports never follow the caller's Host header.
    let res = app
        .client
        .get(app.url("/catalog.ttl"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    let ttl = res.text().await.unwrap();
    assert!(!ttl.contains("evil.example"), "{ttl}");
    let res = app
        .client
        .get(app.url("/api/3/action/package_search"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert!(!res.text().await.unwrap().contains("evil.example"));
}

/// Finding 13: with CRLF line endings (Windows exports, the real Citi Bike
/// files) every row error was reported a line early.
#[tokio::test]
async fn a_bad_row_is_reported_on_its_physical_line_whatever_the_line_ending() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    for (ending, name) in [("\r\n", "crlf"), ("\n", "lf"), ("\r", "cr")] {
        let id = app
            .create_dataset(
                &alice,
                &dataset(&format!("Line endings {name}"), "city-energy", "open"),
            )
            .await;
        let body = ["a,b", "1,2", "3,4", "5,6,7", "8,9", ""].join(ending);
        let res = app
            .post_raw(
                &format!("/api/v1/datasets/{id}/versions"),
                Some(&alice),
                "text/csv",
                body.into_bytes(),
            )
            .await;
        let problem = assert_problem(res, 422, "rows_rejected", None).await;
        assert_eq!(problem["errors"][0]["line"], 4, "{name}: {problem}");
    }
}

/// A consultation's answers leave only as its published results. An
/// anonymous analyst reads everything public — the results, the list, every
/// log entry — and tries to recover a count under the threshold: by counting
/// log entries per consultation, by subtracting shown counts from shown
/// totals (one question's choices from its respondents; a multiple-choice
/// count from those who answered). Each was possible before its fix.
#[tokio::test]
async fn a_consultation_gives_away_no_count_under_the_threshold() {
    let app = TestApp::start().await;
    let trustee = app.token("trustee").await;
    let c: Value = app
        .post_json(
            "/api/v1/consultations",
            Some(&trustee),
            &json!({
                "title": "Night buses", "description": "Should night buses run on weekdays?",
                "subject": "kind_of_use", "audience": "residents",
                "questions": [
                    {"text": "Run them?", "kind": "single_choice", "choices": ["Yes", "No"]},
                    {"text": "Which lines?", "kind": "multiple_choice", "choices": ["N1", "N2"]}
                ],
                "opens_on": "2026-03-01", "closes_on": "2026-03-07"
            }),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = c["id"].as_str().unwrap().to_string();
    // Eleven residents: ten say yes, one (the target) says no; all tick N1,
    // all but the target tick N2.
    for i in 0..11 {
        let name = format!("rider{i:02}");
        app.service
            .insert_user(crate::harness::user(
                &name,
                vec![citytrust_model::Role::Resident],
                vec![],
            ))
            .await
            .unwrap();
        let token = app.token(&name).await;
        let target = i == 10;
        let lines = if target {
            json!(["N1"])
        } else {
            json!(["N1", "N2"])
        };
        let res = app
            .put_json(
                &format!("/api/v1/consultations/{id}/response"),
                Some(&token),
                &json!({"answers": [
                    {"question": "q1", "choice": if target { "No" } else { "Yes" }},
                    {"question": "q2", "choices": lines}
                ]}),
            )
            .await;
        assert_eq!(res.status(), 200);
    }
    json_of_close(&app, &trustee, &id).await;
    let public = app
        .get(&format!("/api/v1/consultations/{id}"), None)
        .await
        .text()
        .await
        .unwrap();
    let r: Value = serde_json::from_str(&public).unwrap();
    let results = &r["results"];
    // 11 respondents may be shown; then yes/no must not be 10/1, and N2 must not be 10 of 11.
    let q1 = &results["questions"][0]["counts"];
    assert!(
        q1[0].get("count").is_none() && q1[1].get("count").is_none(),
        "{results}"
    );
    let q2 = &results["questions"][1]["counts"];
    assert!(
        q2[1].get("count").is_none(),
        "10 of 11 ticking N2 says one did not: {results}"
    );
    // The log: no entry per answer, nothing that counts them.
    assert!(
        app.entries_of_type("consultation.responded")
            .await
            .is_empty()
    );
    for kind in [
        "consultation.opened",
        "consultation.closed_early",
        "consultation.results_published",
    ] {
        for e in app.entries_of_type(kind).await {
            assert!(!e.contains("rider"), "{kind} names a resident: {e}");
        }
    }
}

async fn json_of_close(app: &TestApp, trustee: &str, id: &str) {
    let res = app
        .post_json(
            &format!("/api/v1/consultations/{id}/close"),
            Some(trustee),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
}

/// A remote catalogue is an untrusted author: its feed may not reach another
/// source's entries, script the portal, or make its entries readable or
/// editable as the city's own.
#[tokio::test]
async fn a_hostile_feed_reaches_nothing_but_its_own_entries() {
    use crate::federation::{federated, harvest, register, serve_feed};
    let a = TestApp::start().await;
    let admin = a.token("admin").await;
    let honest = serve_feed().await;
    *honest.answer.lock().unwrap() = (
        200,
        "<https://x.example/d/1> a <http://www.w3.org/ns/dcat#Dataset> ; <http://purl.org/dc/terms/title> \"Honest\" .\n".into(),
    );
    let hostile = serve_feed().await;
    // The same dataset IRI, a script for a title, a javascript: landing page.
    *hostile.answer.lock().unwrap() = (
        200,
        "<https://x.example/d/1> a <http://www.w3.org/ns/dcat#Dataset> ; \
         <http://purl.org/dc/terms/title> \"<script>alert(1)</script>\" ; \
         <http://www.w3.org/ns/dcat#landingPage> <javascript:alert(1)> .\n"
            .into(),
    );
    register(&a, &admin, "one", &honest.url, "dcat").await;
    register(&a, &admin, "two", &hostile.url, "dcat").await;
    let one = federated(&a, "source=one").await;
    let two = federated(&a, "source=two").await;
    assert_eq!(one["items"][0]["title"], "Honest");
    assert_ne!(one["items"][0]["id"], two["items"][0]["id"]);
    // No javascript: link is kept (the dataset's own IRI stands in); the title is text on every page.
    assert_eq!(
        two["items"][0]["landing_page"], "https://x.example/d/1",
        "{two}"
    );
    let id = two["items"][0]["id"].as_str().unwrap().to_string();
    for path in [
        "/datasets?source=two".to_string(),
        "/datasets?q=alert".to_string(),
        format!("/federated/{id}"),
    ] {
        let page = a.page(&path).await;
        assert!(!page.contains("<script>alert"), "{path}");
        assert!(!page.contains("javascript:"), "{path}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
                || page.contains("&#60;script&#62;"),
            "{path}: {page}"
        );
    }
    // Dropping the dataset from the hostile feed removes only its own copy.
    *hostile.answer.lock().unwrap() = (
        200,
        "<https://x.example/d/2> a <http://www.w3.org/ns/dcat#Dataset> ; <http://purl.org/dc/terms/title> \"Other\" .\n".into(),
    );
    let r = harvest(&a, &admin, "two").await;
    assert_eq!(r["removed"], 1, "{r}");
    assert_eq!(federated(&a, "source=one").await["total"], 1);
    // A federated entry is no dataset here: nothing reads or edits it as one.
    let alice = a.token("alice").await;
    let one_id = one["items"][0]["id"].as_str().unwrap();
    for res in [
        a.get(&format!("/api/v1/datasets/{one_id}"), None).await,
        a.get(
            &format!("/api/v1/datasets/{one_id}/data?purpose=research"),
            Some(&alice),
        )
        .await,
        a.patch_json(
            &format!("/api/v1/datasets/{one_id}"),
            Some(&admin),
            &json!({"title": "Mine"}),
        )
        .await,
    ] {
        assert_eq!(res.status(), 404);
    }
    assert_eq!(
        federated(&a, "source=one").await["items"][0]["title"],
        "Honest"
    );
}

/// A hostile feed may not exhaust the harvester, send it to another host,
/// or write its own text into the public log.
#[tokio::test]
async fn a_hostile_feed_cannot_exhaust_redirect_or_write_the_log() {
    use crate::federation::{harvest, register, serve_feed, serve_feed_as};
    let a = TestApp::start().await;
    let admin = a.token("admin").await;

    // "Billion laughs": entities that expand without bound in the XML parser.
    let xml = serve_feed_as("application/rdf+xml").await;
    *xml.answer.lock().unwrap() = (
        200,
        "<?xml version=\"1.0\"?><!DOCTYPE rdf:RDF [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"><rdf:Description rdf:about=\"https://x.example/d\"><rdf:value>&b;</rdf:value></rdf:Description></rdf:RDF>"
            .into(),
    );
    let c = register(&a, &admin, "xml", &xml.url, "dcat").await;
    assert_eq!(c["last_harvest"]["outcome"], "failed");
    assert!(
        c["last_harvest"]["error"]
            .as_str()
            .unwrap()
            .contains("DOCTYPE"),
        "{c}"
    );

    // A redirect to another host (here: this trust's own API) is not followed.
    let hop = serve_feed().await;
    *hop.answer.lock().unwrap() = (302, a.url("/api/v1/remote-catalogues"));
    let c = register(&a, &admin, "hop", &hop.url, "dcat").await;
    assert_eq!(c["last_harvest"]["outcome"], "failed", "{c}");
    assert!(
        c["last_harvest"]["error"].as_str().unwrap().contains("302"),
        "{c}"
    );

    // A CKAN site's own error text: shortened before it reaches the report and the log.
    let ckan = serve_feed_as("application/json").await;
    let essay = "x".repeat(70_000);
    *ckan.answer.lock().unwrap() = (200, json!({"success": false, "error": essay}).to_string());
    let c = register(&a, &admin, "talky", &ckan.url, "ckan").await;
    let error = c["last_harvest"]["error"].as_str().unwrap();
    assert!(error.chars().count() <= 301, "{} characters", error.len());
    let logged = a.entries_of_type("catalogue.harvest_failed").await;
    assert_eq!(logged.len(), 3, "every failure has its entry");
    assert!(logged.iter().all(|e| e.len() < 2000));

    // A token in a registered URL's query stays out of the public log.
    let secret = serve_feed().await;
    *secret.answer.lock().unwrap() = (200, String::new());
    register(
        &a,
        &admin,
        "tok",
        &format!("{}?token=s3cr3t", secret.url),
        "dcat",
    )
    .await;
    let all = a.entries_of_type("catalogue.remote_registered").await;
    assert!(all.iter().all(|e| !e.contains("s3cr3t")), "{all:?}");
    assert!(
        a.entries_of_type("catalogue.harvested")
            .await
            .iter()
            .all(|e| !e.contains("s3cr3t"))
    );
    let _ = harvest;
}

/// Across trusts (issue 29): a hostile partner, or a partner's stranger,
/// tries to make this trust read elsewhere, to move a process that is not
/// its own, or to read under another's agreement; a member tries to have
/// this trust sign for an organisation not theirs.
#[tokio::test]
async fn partners_cannot_steer_reads_nor_move_processes_not_their_own() {
    use crate::dataspace::pin;
    let b = start().await;
    let a = TestApp::start().await;
    let c = TestApp::start().await;
    let alice_b = b.token("alice").await;
    with_content(
        &b,
        &alice_b,
        "Heat meters",
        "city-energy",
        "shared_public",
        crate::governance::ENERGY_CSV,
    )
    .await;
    pin(&b, &a, "city-a").await;
    pin(&a, &b, "city-b").await;
    pin(&a, &c, "city-c").await;
    pin(&b, &c, "city-c").await;
    let found: Value = a
        .get("/api/v1/federated-entries?q=heat", None)
        .await
        .json()
        .await
        .unwrap();
    let entry = found["items"][0]["id"].as_str().unwrap().to_string();
    let alice_a = a.token("alice").await;
    let res = a
        .post_json(
            &format!("/api/v1/federated-entries/{entry}/negotiations"),
            Some(&alice_a),
            &json!({"organization_id": "city-energy", "level": "identified", "purpose": "research",
                    "starts_on": "2026-03-01", "ends_on": "2026-06-30", "benefit": "Heat plans.",
                    "checklist": {"justified": "j", "benefits_and_risks": "b", "proportionate": "p",
                                  "without_personal_data": "w", "power_to_share": "s"}}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let asked: Value = res.json().await.unwrap();
    let cpid = asked["consumer_pid"].as_str().unwrap().to_string();
    let trustee = b.token("trustee").await;
    let list: Value = b
        .get("/api/v1/access-requests", Some(&trustee))
        .await
        .json()
        .await
        .unwrap();
    let rid = list[0]["id"].as_str().unwrap().to_string();
    for t in ["trustee", "trustee2", "trustee3"] {
        let tok = b.token(t).await;
        b.post_json(
            &format!("/api/v1/access-requests/{rid}/votes"),
            Some(&tok),
            &json!({"vote": "approve", "reason": "ok"}),
        )
        .await;
    }
    for _ in 0..4 {
        b.service.advance_negotiations().await.unwrap();
        a.service.advance_negotiations().await.unwrap();
    }
    let mine: Value = a
        .get("/api/v1/me/remote-requests", Some(&alice_a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine[0]["transfer"]["state"], "STARTED", "{mine:#}");
    let tpid = mine[0]["transfer"]["consumer_pid"]
        .as_str()
        .unwrap()
        .to_string();
    let ppid = mine[0]["provider_pid"].as_str().unwrap().to_string();
    let data = format!("/api/v1/remote-requests/{cpid}/data?format=csv");
    let before = a.get(&data, Some(&alice_a)).await;
    assert_eq!(before.status(), 200);

    let post_signed = |signer: &TestApp, path: String, body: Value| {
        let token = signer
            .service
            .dsp_token(&signer.base, &a.base, None)
            .unwrap();
        a.client
            .post(a.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let ctx = json!(["https://w3id.org/dspace/2025/1/context.jsonld"]);
    // The partner itself cannot point this trust's reads at another address
    // (here: this trust's own API, with the token it would present).
    let steer = json!({"@context": ctx, "@type": "TransferStartMessage", "providerPid": "x",
        "consumerPid": tpid, "dataAddress": {"@type": "DataAddress",
        "endpointType": "https://w3id.org/idsa/v4.1/HTTP", "endpoint": a.url("/api/v1/users"),
        "endpointProperties": [{"@type": "EndpointProperty", "name": "authorization", "value": "t"}]}});
    // (Suspended first, so that a start is a transition the state machine allows.)
    let suspend = json!({"@context": ctx, "@type": "TransferSuspensionMessage", "providerPid": "x",
        "consumerPid": tpid});
    let res = post_signed(
        &b,
        format!("/dsp/callback/transfers/{tpid}/suspension"),
        suspend,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = post_signed(
        &b,
        format!("/dsp/callback/transfers/{tpid}/start"),
        steer.clone(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert!(
        err["reason"][0]
            .as_str()
            .unwrap()
            .contains("under the provider's URL"),
        "{err}"
    );
    // A start that keeps the address the transfer began with resumes it.
    let resume = json!({"@context": ctx, "@type": "TransferStartMessage", "providerPid": "x",
        "consumerPid": tpid});
    let res = post_signed(&b, format!("/dsp/callback/transfers/{tpid}/start"), resume)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Another pinned partner cannot move a process that is not its own, nor
    // learn that it exists; unsigned messages are nobody's.
    let agreement = json!({"@context": ctx, "@type": "ContractAgreementMessage", "providerPid": ppid,
        "consumerPid": cpid, "agreement": {"@id": "urn:x", "@type": "Agreement", "target": "heat-meters",
        "timestamp": "2026-03-01T00:00:00Z", "assigner": "x", "assignee": "y",
        "permission": [{"action": "use"}]}});
    let end = json!({"@context": ctx, "@type": "TransferTerminationMessage", "providerPid": "x",
        "consumerPid": tpid});
    for (path, body) in [
        (format!("/dsp/callback/transfers/{tpid}/start"), steer),
        (
            format!("/dsp/callback/transfers/{tpid}/termination"),
            end.clone(),
        ),
        (
            format!("/dsp/callback/negotiations/{cpid}/agreement"),
            agreement.clone(),
        ),
    ] {
        let res = post_signed(&c, path.clone(), body.clone()).await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let res = a
            .client
            .post(a.url(&path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path} unsigned");
    }
    let token_c = c.service.dsp_token(&c.base, &a.base, None).unwrap();
    let res = a
        .client
        .get(a.url(&format!("/dsp/callback/negotiations/{cpid}")))
        .bearer_auth(token_c)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // Not even the partner may take a finalised negotiation back: an
    // agreement sent again is acknowledged (its first answer may have been
    // lost) and changes nothing; a termination is not the provider's to send
    // after FINALIZED.
    let res = post_signed(
        &b,
        format!("/dsp/callback/negotiations/{cpid}/agreement"),
        agreement,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let late_end = json!({"@context": ctx, "@type": "ContractNegotiationTerminationMessage",
        "providerPid": ppid, "consumerPid": cpid});
    let res = post_signed(
        &b,
        format!("/dsp/callback/negotiations/{cpid}/termination"),
        late_end,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    let mine: Value = a
        .get("/api/v1/me/remote-requests", Some(&alice_a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine[0]["state"], "FINALIZED");
    // Nothing of that moved: the transfer still reads from B.
    let res = a.get(&data, Some(&alice_a)).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Alpha Tower"));

    // A member cannot have this trust sign for an organisation not theirs.
    assert_problem(
        a.get(&format!("{data}&organization_id=water-co"), Some(&alice_a))
            .await,
        422,
        "validation_failed",
        Some("organization_id"),
    )
    .await;
    // A third trust's participant, pinned at B, cannot read at B's data
    // address under A's transfer (its signature, any token).
    let pull = format!("{}/dsp/transfers/", b.base);
    let c_token = c
        .service
        .dsp_token(&c.base, &b.base, Some(("city-energy", "City Energy")))
        .unwrap();
    let negotiations = b.service.negotiations().await.unwrap();
    assert_eq!(negotiations.len(), 1);
    let res = a
        .client
        .get(format!("{pull}anything/data?format=csv"))
        .bearer_auth("0".repeat(64))
        .header("citytrust-participant", c_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // The partner refused nothing it should not have: B's log holds each read.
    assert!(b.entries_of_type("content.read").await.len() >= 2);
    // And after termination by the partner, reads stop at once.
    let end_signed = json!({"@context": ctx, "@type": "TransferTerminationMessage", "providerPid": "x",
        "consumerPid": tpid, "code": "1", "reason": ["agreement retired"]});
    let res = post_signed(
        &b,
        format!("/dsp/callback/transfers/{tpid}/termination"),
        end_signed,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_problem(
        a.get(&data, Some(&alice_a)).await,
        422,
        "transfer_not_started",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_stream_reader_learns_nothing_of_the_attributes_its_agreement_leaves_out() {
    use crate::streams::{get, notification_listener, post, send, station, stream};
    const NGSI: &str = "/ngsi-ld/v1";
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let (air, device) = stream(&app, &alice, "Air quality", "shared_specific").await;
    // Two stations; one with a high hidden reading, one with a low one.
    for (n, hidden) in [(1, 90.0), (2, 10.0)] {
        let mut e = station(n, 20.0);
        e["secretLevel"] = json!({"type": "Property", "value": hidden});
        assert_eq!(
            post(&app, &format!("{NGSI}/entities"), Some(&device), &e)
                .await
                .status(),
            201
        );
    }
    // The trustees grant research use of NO2 and the station's name only.
    let mut body = request(&[&air], "research", "identified");
    body["columns"] = json!(["NO2", "stationName"]);
    let r: Value = app
        .post_json("/api/v1/access-requests", Some(&analyst), &body)
        .await
        .json()
        .await
        .unwrap();
    crate::governance::all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
    let q =
        |extra: &str| format!("{NGSI}/entities?type=AirQualityObserved&purpose=research{extra}");

    // Not in the answer ...
    let (status, text) = status_text(get(&app, &q(""), Some(&analyst)).await).await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("secretLevel") && !text.contains("location"),
        "{text}"
    );
    // ... nor through a filter: `q` and geo on hidden attributes match nothing, high or low.
    for filter in [
        "&q=secretLevel>50",
        "&q=secretLevel<50",
        "&q=secretLevel",
        "&georel=near%3BmaxDistance%3D%3D100000&geometry=Point&coordinates=%5B2.16%2C41.39%5D",
    ] {
        let (status, text) = status_text(get(&app, &q(filter), Some(&analyst)).await).await;
        assert_eq!((status, text.as_str()), (200, "[]"), "{filter}");
    }
    // ... nor through `attrs`: a hidden attribute is as absent as one that never was.
    let one = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1?purpose=research");
    let hidden =
        status_text(get(&app, &format!("{one}&attrs=secretLevel"), Some(&analyst)).await).await;
    let absent =
        status_text(get(&app, &format!("{one}&attrs=neverWritten"), Some(&analyst)).await).await;
    assert_eq!(hidden.0, 404);
    assert_eq!(hidden.0, absent.0);
    // ... nor through history.
    let (status, text) = status_text(
        get(
            &app,
            &format!(
                "{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:station-1?purpose=research"
            ),
            Some(&analyst),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!text.contains("secretLevel"), "{text}");
    // ... nor through aggregates the store sums (counts, sums, extremes),
    // asked for by name or not: a hidden attribute is as absent as one
    // that never was.
    let temporal = format!(
        "{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:station-1?purpose=research\
         &options=aggregatedValues&aggrMethods=totalCount,sum,max&aggrPeriodDuration=PT1H"
    );
    let (status, text) = status_text(get(&app, &temporal, Some(&analyst)).await).await;
    assert_eq!(status, 200);
    assert!(
        !text.contains("secretLevel") && text.contains("NO2"),
        "{text}"
    );
    let hidden = status_text(
        get(
            &app,
            &format!("{temporal}&attrs=secretLevel"),
            Some(&analyst),
        )
        .await,
    )
    .await;
    let absent = status_text(
        get(
            &app,
            &format!("{temporal}&attrs=neverWritten"),
            Some(&analyst),
        )
        .await,
    )
    .await;
    assert_eq!(hidden.0, absent.0, "{} / {}", hidden.1, absent.1);
    assert!(!hidden.1.contains("90"), "{}", hidden.1);
    // ... nor by when a notification comes: a subscription watching a hidden attribute hears nothing.
    let (url, received) = notification_listener().await;
    let sub = json!({
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "watchedAttributes": ["secretLevel"],
        "notification": {"endpoint": {"uri": url}},
    });
    assert_eq!(
        post(
            &app,
            &format!("{NGSI}/subscriptions?purpose=research"),
            Some(&analyst),
            &sub
        )
        .await
        .status(),
        201
    );
    let attrs = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    assert_eq!(
        send(
            &app,
            reqwest::Method::PATCH,
            &attrs,
            Some(&device),
            Some(&json!({"secretLevel": 95.0}))
        )
        .await
        .status(),
        204
    );
    app.service.deliver_notifications().await.unwrap();
    assert!(received.lock().unwrap().is_empty());
    // A change it may see is delivered, without the hidden attribute.
    let all = json!({"type": "Subscription", "entities": [{"type": "AirQualityObserved"}], "notification": {"endpoint": {"uri": url}}});
    assert_eq!(
        post(
            &app,
            &format!("{NGSI}/subscriptions?purpose=research"),
            Some(&analyst),
            &all
        )
        .await
        .status(),
        201
    );
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&json!({"NO2": 33.0, "secretLevel": 96.0})),
    )
    .await;
    app.service.deliver_notifications().await.unwrap();
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let body = String::from_utf8_lossy(&got[0].2).to_string();
    let n: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(n["data"][0]["NO2"]["value"], 33.0, "{body}");
    assert!(n["data"][0].get("secretLevel").is_none(), "{body}");
    assert!(!body.contains("secretLevel"), "{body}");
}

#[tokio::test]
async fn linked_entity_retrieval_reaches_no_entity_its_reader_may_not_read() {
    use crate::streams::{get, notification_listener, post, station, stream};
    const NGSI: &str = "/ngsi-ld/v1";
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let (_open, open_device) = stream(&app, &alice, "Open air", "open").await;
    let (_shared, shared_device) = stream(&app, &alice, "Shared air", "shared_specific").await;
    // A shared station holding what only an agreement may read ...
    let mut hidden = station(9, 50.0);
    hidden["hiddenName"] = json!({"type": "Property", "value": "Behind the agreement"});
    let res = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&shared_device),
        &hidden,
    )
    .await;
    assert_eq!(res.status(), 201);
    // ... and an open station that links to it, and to an open neighbour.
    let neighbour = station(2, 20.0);
    let res = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&open_device),
        &neighbour,
    )
    .await;
    assert_eq!(res.status(), 201);
    let mut linking = station(1, 30.0);
    linking["nearBy"] =
        json!({"type": "Relationship", "object": "urn:ngsi-ld:AirQualityObserved:station-9"});
    linking["sameStreet"] =
        json!({"type": "Relationship", "object": "urn:ngsi-ld:AirQualityObserved:station-2"});
    let res = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&open_device),
        &linking,
    )
    .await;
    assert_eq!(res.status(), 201);

    let one = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1");
    for (who, token) in [("anonymous", None), ("analyst", Some(analyst.as_str()))] {
        for how in [
            "join=inline",
            "join=flat",
            "join=inline&joinLevel=3",
            "join=flat&options=keyValues",
            "join=inline&pick=id,nearBy%7BhiddenName%7D,sameStreet%7BstationName%7D",
        ] {
            let (status, text) = status_text(get(&app, &format!("{one}?{how}"), token).await).await;
            assert_eq!(status, 200, "{who} {how}: {text}");
            // The open neighbour is reached (the join works) ...
            assert!(text.contains("Station 2"), "{who} {how}: {text}");
            // ... the shared one is not, by any form.
            assert!(
                !text.contains("Behind the agreement") && !text.contains("Station 9"),
                "{who} {how}: {text}"
            );
        }
        // Nor through a query's flat list.
        let (status, text) = status_text(
            get(
                &app,
                &format!("{NGSI}/entities?type=AirQualityObserved&join=flat&joinLevel=2"),
                token,
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{who}: {text}");
        assert!(text.contains("Station 2"), "{who}: {text}");
        assert!(
            !text.contains("Behind the agreement") && !text.contains("Station 9"),
            "{who}: {text}"
        );
    }
    // Nor through a notification that joins its linked entities.
    let (url, received) = notification_listener().await;
    let sub = json!({
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved", "id": "urn:ngsi-ld:AirQualityObserved:station-1"}],
        "notification": {"endpoint": {"uri": url}, "join": "flat", "joinLevel": 2},
    });
    let res = post(&app, &format!("{NGSI}/subscriptions"), Some(&analyst), &sub).await;
    assert_eq!(res.status(), 201);
    let res = crate::streams::send(
        &app,
        reqwest::Method::PATCH,
        &format!("{one}/attrs"),
        Some(&open_device),
        Some(&json!({"NO2": 31.0})),
    )
    .await;
    assert_eq!(res.status(), 204);
    app.service.deliver_notifications().await.unwrap();
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let body = String::from_utf8_lossy(&got[0].2).to_string();
    assert!(body.contains("Station 2"), "{body}");
    assert!(
        !body.contains("Behind the agreement") && !body.contains("Station 9"),
        "{body}"
    );
}

/// The households an NGSI-LD answer (normalized entities) names.
fn households_in(text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("{text}"));
    let mut h: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("{text}"))
        .iter()
        .map(|e| e["household"]["value"].as_str().unwrap().to_string())
        .collect();
    h.sort();
    h
}

/// Latest-values answers come from a cache of each stream's entities
/// (issue 26), kept while no write moves the stream. The attack: warm the
/// cache, then change nothing in the stream but the reader's rights — a
/// resident withdraws, another is erased, the agreement is retired — and
/// ask again, by every query form, by id, through history and through a
/// subscription. The cache holds entities, never decisions.
#[tokio::test]
async fn a_warm_stream_cache_outlives_no_withdrawal_erasure_or_ended_agreement() {
    use crate::streams::{get, meter, notification_listener, personal_stream, post, send};
    const NGSI: &str = "/ngsi-ld/v1";
    let app = start().await;
    let (id, device, agreement) = personal_stream(&app).await;
    let analyst = app.token("analyst").await;
    let q = format!("{NGSI}/entities?type=ElectricityMeter&purpose=research");
    let forms = [
        q.clone(),
        format!("{q}&q=activePower>0"),
        format!(
            "{q}&georel=near%3BmaxDistance%3D%3D100000&geometry=Point&coordinates=%5B2.16%2C41.39%5D"
        ),
        format!("{q}&attrs=activePower,household"),
    ];
    let ask = |path: String, token: String| {
        let app = &app;
        async move { status_text(get(app, &path, Some(&token)).await).await }
    };
    // Warm: the consenting households only (the public-task household H-1 never).
    for _ in 0..2 {
        for f in &forms {
            let (status, text) = ask(f.clone(), analyst.clone()).await;
            assert_eq!(status, 200, "{text}");
            assert_eq!(households_in(&text), ["H-2", "H-3"], "{f}");
        }
    }
    let (url, received) = notification_listener().await;
    let sub = json!({"type": "Subscription", "entities": [{"type": "ElectricityMeter"}],
        "notification": {"endpoint": {"uri": url}}});
    let res = post(
        &app,
        &format!("{NGSI}/subscriptions?purpose=research"),
        Some(&analyst),
        &sub,
    )
    .await;
    assert_eq!(res.status(), 201);

    // 1. The resident withdraws; nothing is written to the stream.
    let resident = app.token("resident").await;
    let consents: Value = app
        .get("/api/v1/me/consents", Some(&resident))
        .await
        .json()
        .await
        .unwrap();
    let cid = consents[0]["id"].as_str().unwrap();
    let res = app
        .post_json(
            &format!("/api/v1/me/consents/{cid}/withdraw"),
            Some(&resident),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    for f in &forms {
        let (status, text) = ask(f.clone(), analyst.clone()).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(households_in(&text), ["H-3"], "{f}");
        assert!(!text.contains("M-2"), "{text}");
    }
    for path in [
        format!("{NGSI}/entities/urn:ngsi-ld:ElectricityMeter:M-2?purpose=research"),
        format!("{NGSI}/temporal/entities/urn:ngsi-ld:ElectricityMeter:M-2?purpose=research"),
    ] {
        let (status, text) = ask(path.clone(), analyst.clone()).await;
        assert_eq!(status, 404, "{path}: {text}");
        assert!(!text.contains("H-2") && !text.contains("1.5"), "{text}");
    }
    let (_, text) = ask(
        format!("{NGSI}/temporal/entities?type=ElectricityMeter&purpose=research"),
        analyst.clone(),
    )
    .await;
    assert!(!text.contains("M-2") && text.contains("M-3"), "{text}");
    // The next change to both meters notifies the neighbour's only.
    for n in [2, 3] {
        let res = send(
            &app,
            reqwest::Method::PATCH,
            &format!("{NGSI}/entities/urn:ngsi-ld:ElectricityMeter:M-{n}/attrs"),
            Some(&device),
            Some(&json!({"activePower": 2.5})),
        )
        .await;
        assert_eq!(res.status(), 204);
    }
    app.service.deliver_notifications().await.unwrap();
    let got = received.lock().unwrap().clone();
    let bodies: Vec<String> = got
        .iter()
        .map(|(_, _, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(!bodies.is_empty());
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("M-2") && !b.contains("H-2")),
        "{bodies:?}"
    );
    assert!(bodies.iter().any(|b| b.contains("M-3")), "{bodies:?}");

    // Who used my data: the resident sees the eight queries before their
    // withdrawal and nothing after; the neighbour sees those after too, and
    // the notification.
    let uses = |who: &'static str| {
        let (app, agreement) = (&app, &agreement);
        async move {
            let token = app.token(who).await;
            let a: Value = app
                .get("/api/v1/me/accesses", Some(&token))
                .await
                .json()
                .await
                .unwrap();
            let a = a.as_array().unwrap().clone();
            assert!(
                a.iter().all(|r| r["by"] == "organization:uni"
                    && r["purpose"] == "research"
                    && r["agreement"] == agreement.as_str()),
                "{a:?}"
            );
            let kinds: Vec<String> = a
                .iter()
                .map(|r| r["kind"].as_str().unwrap().to_string())
                .collect();
            kinds
        }
    };
    assert_eq!(uses("resident").await, vec!["stream_query"; 8]);
    let seen = uses("neighbour").await;
    assert!(
        seen.contains(&"stream_notification".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"stream_retrieve".to_string()) || seen.len() > 12,
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|k| *k == "stream_query").count() >= 12,
        "{seen:?}"
    );

    // 2. The neighbour is erased: their meter and its history are gone for
    // everyone, the owner too, and the device cannot write them back.
    let alice = app.token("alice").await;
    let res = crate::residents::erase(&app, "neighbour", "alice", &id).await;
    let (status, text) = status_text(res).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("1 entity"), "{text}");
    for f in &forms {
        let (status, text) = ask(f.clone(), analyst.clone()).await;
        assert_eq!((status, households_in(&text)), (200, vec![]), "{f}: {text}");
    }
    let own = format!("{NGSI}/entities?type=ElectricityMeter&purpose=city-operations");
    let (status, text) = ask(own.clone(), alice.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(households_in(&text), ["H-1", "H-2"]);
    let (status, _) = ask(
        format!(
            "{NGSI}/temporal/entities/urn:ngsi-ld:ElectricityMeter:M-3?purpose=city-operations"
        ),
        alice.clone(),
    )
    .await;
    assert_eq!(status, 404);
    let res = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&device),
        &meter(3, 9.0),
    )
    .await;
    let (status, text) = status_text(res).await;
    assert!((400..500).contains(&status), "{status}: {text}");
    assert!(text.contains("erased"), "{text}");
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/upsert"),
        Some(&device),
        &json!([meter(3, 9.5)]),
    )
    .await;
    assert!(
        res.status().is_client_error() || res.status() == 207,
        "{}",
        res.status()
    );
    let (_, text) = ask(own, alice.clone()).await;
    assert_eq!(households_in(&text), ["H-1", "H-2"]);
    let erased = app.entries_of_type("subject.erased").await;
    assert!(erased[0].contains("\"entities_removed\":1"), "{erased:?}");

    // 3. The resident consents again (the answer has them again), then the
    // trustees retire the agreement: refused, cache warm or not.
    let res = app
        .post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research", "recipient_organization_id": "uni"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let (_, text) = ask(forms[0].clone(), analyst.clone()).await;
    assert_eq!(households_in(&text), ["H-2"]);
    let trustee = app.token("trustee").await;
    let res = app
        .post_json(
            &format!("/api/v1/agreements/{agreement}/retire"),
            Some(&trustee),
            &json!({"reason": "Ended early."}),
        )
        .await;
    assert_eq!(res.status(), 200);
    for f in &forms {
        let (status, text) = ask(f.clone(), analyst.clone()).await;
        assert_eq!(status, 403, "{f}: {text}");
        assert!(!text.contains("H-2") && !text.contains("2.5"), "{text}");
    }
}

/// A delivery pass takes each allowing decision once per (subscriber,
/// stream, purpose) and reuses it for the pass. Two subscribers of one
/// stream, served in the same pass, one of whose agreements was retired
/// just before it (no expiry sweep in between): the other's allowed read
/// must not carry the retired one's subscription through (the cache is
/// keyed by subscriber, and a decision is also checked against the
/// agreement the subscription was made under: either alone holds). It is
/// expired then and there, and its endpoint is told nothing.
#[tokio::test]
async fn a_retired_subscriber_is_not_carried_by_another_ones_decision_in_the_same_pass() {
    use crate::governance::all_vote;
    use crate::streams::{notification_listener, post, send, station, stream};
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let bob = app.token("bob").await;
    let trustee = app.token("trustee").await;
    let (air, device) = stream(&app, &alice, "Air quality", "shared_specific").await;
    let entities = "/ngsi-ld/v1/entities";
    assert_eq!(
        post(&app, entities, Some(&device), &station(1, 10.0))
            .await
            .status(),
        201
    );
    let mut agreements = HashMap::new();
    let mut listeners = HashMap::new();
    for (who, token) in [("analyst", &analyst), ("bob", &bob)] {
        let r: Value = app
            .post_json(
                "/api/v1/access-requests",
                Some(token),
                &request(&[&air], "research", "identified"),
            )
            .await
            .json()
            .await
            .unwrap();
        let decided = all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
        agreements.insert(who, decided["agreement_id"].as_str().unwrap().to_string());
        let (url, received) = notification_listener().await;
        let res = post(
            &app,
            "/ngsi-ld/v1/subscriptions?purpose=research",
            Some(token),
            &json!({
                "type": "Subscription",
                "entities": [{"type": "AirQualityObserved"}],
                "watchedAttributes": ["NO2"],
                "notification": {"endpoint": {"uri": url, "accept": "application/json"}, "format": "keyValues"},
            }),
        )
        .await;
        assert_eq!(res.status(), 201, "{who}: {}", res.text().await.unwrap());
        listeners.insert(who, received);
    }
    // Bob's agreement ends; the sweep has not run. One change owes both.
    let res = app
        .post_json(
            &format!("/api/v1/agreements/{}/retire", agreements["bob"]),
            Some(&trustee),
            &json!({"reason": "Ended early."}),
        )
        .await;
    assert_eq!(res.status(), 200);
    send(
        &app,
        reqwest::Method::PATCH,
        "/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs",
        Some(&device),
        Some(&json!({"NO2": 55.5})),
    )
    .await;
    // One pass serves both: the analyst is told, bob's subscription ends.
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 1);
    assert_eq!(listeners["analyst"].lock().unwrap().len(), 1);
    assert!(listeners["bob"].lock().unwrap().is_empty());
    let expired = app.entries_of_type("stream.subscription_expired").await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    let notified = app.entries_of_type("stream.notified").await;
    assert_eq!(notified.len(), 1, "{notified:?}");
    let entry: Value = serde_json::from_str(&notified[0]).unwrap();
    assert_eq!(
        entry["streams"][0]["agreement"],
        agreements["analyst"].as_str()
    );
    // Nothing is left owed to bob, and nothing more reaches him.
    send(
        &app,
        reqwest::Method::PATCH,
        "/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs",
        Some(&device),
        Some(&json!({"NO2": 60.0})),
    )
    .await;
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 1);
    assert!(listeners["bob"].lock().unwrap().is_empty());
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 0);
}

/// A name the attacker's DNS answers with a public address while the
/// subscription is checked, and with this machine's loopback once it is in
/// use (DNS rebinding).
#[derive(Debug, Default)]
struct Rebinding {
    turned: std::sync::atomic::AtomicBool,
    lookups: std::sync::atomic::AtomicUsize,
}

impl citytrust_service::endpoints::Names for Rebinding {
    fn lookup(
        &self,
        _host: String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>,
    > {
        use std::sync::atomic::Ordering::SeqCst;
        self.lookups.fetch_add(1, SeqCst);
        let ip = if self.turned.load(SeqCst) {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            std::net::IpAddr::from([93, 184, 215, 14])
        };
        Box::pin(async move { Ok(vec![ip]) })
    }
}

/// The endpoint's name is checked where the notification connects, not
/// only when the subscription is made: a name turned to this machine
/// afterwards reaches nothing, and its notification stays owed.
#[tokio::test]
async fn a_name_turned_to_the_trusts_own_network_after_subscribing_reaches_nothing() {
    use crate::streams::{get, ngsi_problem, notification_listener, post, station, stream};
    use std::sync::atomic::Ordering::SeqCst;
    const NGSI: &str = "/ngsi-ld/v1";
    let dns = std::sync::Arc::new(Rebinding::default());
    let names = dns.clone();
    let app = crate::harness::TestApp::start_with(move |s| {
        s.private_notifications = false;
        s.names = names;
    })
    .await;
    let alice = app.token("alice").await;
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    // The receiver is on loopback: what the name will come to mean.
    let (url, received) = notification_listener().await;
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/notify");
    let endpoint = format!("http://hooks.attacker.example:{port}/notify");
    let subscription = json!({
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "notification": {"endpoint": {"uri": endpoint, "accept": "application/json"}},
    });
    let res = post(
        &app,
        &format!("{NGSI}/subscriptions"),
        Some(&alice),
        &subscription,
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(dns.lookups.load(SeqCst) >= 1, "checked when made");

    // The name now means this machine.
    dns.turned.store(true, SeqCst);
    let before = dns.lookups.load(SeqCst);
    assert_eq!(
        post(
            &app,
            &format!("{NGSI}/entities"),
            Some(&device),
            &station(1, 10.0)
        )
        .await
        .status(),
        201
    );
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 0);
    assert!(
        dns.lookups.load(SeqCst) > before,
        "the delivery resolved the name where it connects"
    );
    assert!(received.lock().unwrap().is_empty(), "nothing reached it");
    // Not lost: owed, and the failure shown to the subscriber.
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 1);
    let s: Value = get(&app, &location, Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["notification"]["status"], "failed", "{s}");
    assert!(s["notification"]["lastFailure"].is_string(), "{s}");
    // Made now, the same subscription is refused at once.
    let res = post(
        &app,
        &format!("{NGSI}/subscriptions"),
        Some(&alice),
        &subscription,
    )
    .await;
    let problem = ngsi_problem(res, 400, "BadRequestData").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("private network"),
        "{problem}"
    );
}
