//! The access levels below identified rows, served through the privacy
//! engine (issue 7): pseudonymised and anonymised rows, thresholded tables
//! (Citi Bike origin–destination counts) and DP statistics against a budget.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::governance::{all_vote, request, start};
use crate::harness::{TestApp, assert_problem, dataset};

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    let code = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(code, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn text_of(res: reqwest::Response, status: u16) -> String {
    let code = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(code, status, "{text}");
    text
}

/// A dataset with content, its metadata patched by `extra`.
pub(crate) async fn upload(
    app: &TestApp,
    token: &str,
    mut d: Value,
    extra: Value,
    csv: Vec<u8>,
) -> String {
    if let (Some(map), Value::Object(extra)) = (d.as_object_mut(), extra) {
        map.extend(extra);
    }
    let id = app.create_dataset(token, &d).await;
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(token),
            "text/csv",
            csv,
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    id
}

/// Ask for access and have the trustees approve (after any comment
/// period); returns the agreement's id.
pub(crate) async fn agreement(
    app: &TestApp,
    who: &str,
    dataset: &str,
    purpose: &str,
    level: &str,
) -> String {
    let token = &app.token(who).await;
    let mut body = request(&[dataset], purpose, level);
    body["ends_on"] = json!("2026-12-31");
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(token), &body)
            .await,
        201,
    )
    .await;
    if r["status"] == "public_comment" {
        app.clock.advance(time::Duration::days(15));
    }
    let r = all_vote(app, r["id"].as_str().unwrap(), "approve").await;
    assert_eq!(r["status"], "approved", "{r}");
    r["agreement_id"].as_str().unwrap().to_string()
}

fn last_read(entries: &[String]) -> Value {
    serde_json::from_str(entries.last().unwrap()).unwrap()
}

/// The value of `column` in each CSV row, in order.
fn column(csv: &str, name: &str) -> Vec<String> {
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let i = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {csv}"));
    r.records().map(|rec| rec.unwrap()[i].to_string()).collect()
}

const PATIENTS: &str =
    "name,ward,visits\nAnna Roca,A,3\nBen Puig,B,1\nCarla Vidal,A,2\nAnna Roca,C,5\n";

#[tokio::test]
async fn pseudonyms_differ_across_agreements_are_stable_within_one_and_change_with_the_key() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = upload(
        &app,
        &alice,
        dataset("Ward visits", "city-energy", "shared_specific"),
        json!({"personal_data": true, "column_classes": {"personal": ["name"]}}),
        PATIENTS.as_bytes().to_vec(),
    )
    .await;
    let a1 = agreement(&app, "analyst", &id, "research", "pseudonymised").await;
    let a2 = agreement(&app, "bob", &id, "research", "pseudonymised").await;
    // (The comment periods outlasted the sign-ins.)
    let analyst = app.token("analyst").await;
    let bob = app.token("bob").await;
    assert_ne!(a1, a2);
    let path =
        format!("/api/v1/datasets/{id}/data?format=csv&purpose=research&level=pseudonymised");
    let analyst_csv = text_of(app.get(&path, Some(&analyst)).await, 200).await;
    let again = text_of(app.get(&path, Some(&analyst)).await, 200).await;
    let bob_csv = text_of(app.get(&path, Some(&bob)).await, 200).await;
    for csv in [&analyst_csv, &bob_csv] {
        for name in ["Anna", "Roca", "Ben Puig", "Carla"] {
            assert!(!csv.contains(name), "{name} served in {csv}");
        }
        // The other columns are untouched.
        assert_eq!(column(csv, "ward"), ["A", "B", "A", "C"]);
    }
    let p1 = column(&analyst_csv, "name");
    let p2 = column(&bob_csv, "name");
    // Stable within one agreement: the same person twice, the same pseudonym
    // twice, in every read …
    assert_eq!(p1, column(&again, "name"));
    assert_eq!(p1[0], p1[3]);
    assert_ne!(p1[0], p1[1]);
    assert_eq!(p2[0], p2[3]);
    // … but no pseudonym of one agreement appears in the other's extract.
    for p in &p1 {
        assert!(!p2.contains(p), "{p} links the two extracts");
    }
    // The log entry names the transform.
    let entry = last_read(&app.entries_of_type("content.read").await);
    assert_eq!(entry["level"], "pseudonymised", "{entry}");
    assert_eq!(entry["transform"]["kind"], "pseudonymised", "{entry}");
    assert_eq!(entry["transform"]["columns"], json!(["name"]), "{entry}");
    assert_eq!(entry["transform"]["scope"], "agreement", "{entry}");
    // Identified rows are not granted by a pseudonymised agreement.
    let identified = format!("/api/v1/datasets/{id}/data?format=csv&purpose=research");
    let res = app.get(&identified, Some(&analyst)).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 403, "{text}");
    assert!(!text.contains("Anna"), "{text}");

    // A new key: every pseudonym changes, and stays stable again under it.
    let keys = app.settings.pseudonym_keys.clone().unwrap();
    let old_key = entry["transform"]["key"].as_str().unwrap().to_string();
    let new_key = citytrust_service::levels::rotate_pseudonym_key(&keys).unwrap();
    assert_ne!(old_key, new_key);
    let rotated = text_of(app.get(&path, Some(&analyst)).await, 200).await;
    let p3 = column(&rotated, "name");
    for p in &p3 {
        assert!(!p1.contains(p), "{p} survived the rotation");
    }
    assert_eq!(p3[0], p3[3]);
    let entry = last_read(&app.entries_of_type("content.read").await);
    assert_eq!(entry["transform"]["key"], new_key.as_str(), "{entry}");
    // The secrets file is the server's alone, and no secret reaches the log.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    let secrets = std::fs::read_to_string(&keys).unwrap();
    let log = app.entries_of_type("content.read").await.join("\n");
    for line in secrets.lines() {
        let secret = line.split_once(' ').unwrap().1;
        assert!(!log.contains(secret));
    }
}

/// A synthetic register of people: an id, three quasi-identifiers and a
/// sensitive value.
fn register() -> String {
    let mut csv = String::from("person_id,age,sex,postcode,diagnosis\n");
    for i in 0..600u32 {
        let age = 18 + (i * 37 % 70);
        let sex = if i % 3 == 0 { "F" } else { "M" };
        let postcode = format!("080{:02}", i * 13 % 40);
        let diagnosis = ["asthma", "diabetes", "flu", "none"][(i % 4) as usize];
        csv.push_str(&format!("P{i:05},{age},{sex},{postcode},{diagnosis}\n"));
    }
    csv
}

#[tokio::test]
async fn anonymised_rows_are_k_anonymous_on_the_declared_quasi_identifiers_without_identifiers() {
    let app = start().await;
    let alice = app.token("alice").await;
    // The diagnosis is declared non-identifying: released as it is. A
    // column declared neither way would be left out (see the attack suite).
    let classes = json!({"personal": ["person_id"], "quasi_identifying": ["age", "sex", "postcode"], "non_identifying": ["diagnosis"]});
    let id = upload(
        &app,
        &alice,
        dataset("Clinic register", "city-energy", "shared_specific"),
        json!({"personal_data": true, "column_classes": classes}),
        register().into_bytes(),
    )
    .await;
    agreement(&app, "analyst", &id, "research", "anonymised").await;
    let (alice, analyst) = (app.token("alice").await, app.token("analyst").await);
    let path = format!("/api/v1/datasets/{id}/data?format=csv&purpose=research&level=anonymised");
    let csv = text_of(app.get(&path, Some(&analyst)).await, 200).await;
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        ["age", "sex", "postcode", "diagnosis"]
    );
    let mut classes: HashMap<(String, String, String), usize> = HashMap::new();
    let mut rows = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        *classes
            .entry((rec[0].to_string(), rec[1].to_string(), rec[2].to_string()))
            .or_default() += 1;
        rows += 1;
    }
    // At most 5% suppressed; every released combination shared by ≥ 5 rows.
    assert!(rows >= 570, "{rows} rows");
    for (key, n) in &classes {
        assert!(*n >= 5, "{key:?} is shared by {n} rows only");
    }
    assert!(!csv.contains("P00001"));
    let entry = last_read(&app.entries_of_type("content.read").await);
    let t = &entry["transform"];
    assert_eq!(t["kind"], "k-anonymity", "{entry}");
    assert_eq!(t["k"], 5, "{entry}");
    assert_eq!(t["dropped"], json!(["person_id"]), "{entry}");
    assert_eq!(t["levels"].as_array().unwrap().len(), 3, "{entry}");
    assert!(t["loss"]["loss"].as_str().is_some(), "{entry}");
    // Paging would release a partial table generalised differently: refused.
    assert_problem(
        app.get(&format!("{path}&limit=10"), Some(&analyst)).await,
        422,
        "no_paging",
        None,
    )
    .await;
    // SQL could undo the transform: it serves identified rows only.
    let table = id.replace('-', "_");
    assert_problem(
        app.post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT * FROM {table}"), "purpose": "research", "level": "anonymised"}),
        )
        .await,
        422,
        "level_not_for_sql",
        None,
    )
    .await;

    // Personal data whose owner declared no quasi-identifiers is not
    // "anonymised" by guesswork.
    let bare = upload(
        &app,
        &alice,
        dataset("Undeclared register", "city-energy", "shared_specific"),
        json!({"personal_data": true, "column_classes": {"personal": ["person_id"]}}),
        register().into_bytes(),
    )
    .await;
    agreement(&app, "analyst", &bare, "research", "anonymised").await;
    let analyst = app.token("analyst").await;
    let res = app
        .get(
            &format!("/api/v1/datasets/{bare}/data?format=csv&purpose=research&level=anonymised"),
            Some(&analyst),
        )
        .await;
    let body = assert_problem(res, 422, "no_quasi_identifiers", None).await;
    assert!(!body.to_string().contains("P0000"), "{body}");
}

/// An origin–destination cell: its two areas (`None` is a margin).
type Area2 = (Option<String>, Option<String>);

/// The manifest's column classes of the Citi Bike trips.
pub(crate) fn citibike_classes() -> Value {
    json!({
        "personal": ["bikeid"],
        "quasi_identifying": ["birth year", "gender", "start station id", "starttime", "end station id", "stoptime"],
        "spatial": ["start station latitude", "start station longitude", "end station latitude", "end station longitude"],
        "temporal": ["starttime", "stoptime"],
        "trajectories": true
    })
}

/// Trips and their total duration per (origin, destination) 0.01° area of
/// the real file, with every margin (`None`: all areas), named as the
/// tables name them.
fn od_truth() -> HashMap<Area2, (u64, f64)> {
    let mut out: HashMap<Area2, (u64, f64)> = HashMap::new();
    let bytes = citibike_csv();
    let mut r = csv::Reader::from_reader(&bytes[..]);
    let h = r.headers().unwrap().clone();
    let at = |name: &str| h.iter().position(|x| x == name).unwrap();
    let (slat, slon, elat, elon, dur) = (
        at("start station latitude"),
        at("start station longitude"),
        at("end station latitude"),
        at("end station longitude"),
        at("tripduration"),
    );
    let area = |lat: &str, lon: &str| {
        let cell = |x: &str| (x.parse::<f64>().unwrap() / 0.01 + 1e-9).floor() * 0.01;
        format!("{:.2},{:.2}", cell(lat), cell(lon))
    };
    for rec in r.records() {
        let rec = rec.unwrap();
        let o = area(&rec[slat], &rec[slon]);
        let d = area(&rec[elat], &rec[elon]);
        let seconds: f64 = rec[dur].parse().unwrap();
        for key in [
            (Some(o.clone()), Some(d.clone())),
            (Some(o.clone()), None),
            (None, Some(d.clone())),
            (None, None),
        ] {
            let e = out.entry(key).or_default();
            e.0 += 1;
            e.1 += seconds;
        }
    }
    out
}

pub(crate) fn citibike_csv() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../demo/data/citibike/JC-201801-citibike-tripdata.csv"
    );
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn citi_bike_trips_are_released_as_thresholded_origin_destination_counts_never_as_rows() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = upload(
        &app,
        &alice,
        dataset("Citi Bike trips", "city-energy", "shared_group"),
        json!({"personal_data": true, "column_classes": citibike_classes()}),
        citibike_csv(),
    )
    .await;
    // People's movements: rows may not even be asked for outside the owner.
    for level in ["identified", "pseudonymised", "anonymised"] {
        let analyst = app.token("analyst").await;
        let mut body = request(&[&id], "research", level);
        body["ends_on"] = json!("2026-12-31");
        let res = app
            .post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await;
        let body = assert_problem(res, 422, "validation_failed", Some("level")).await;
        assert!(body.to_string().contains("only as"), "{body}");
    }
    let agreement_id = agreement(&app, "analyst", &id, "research", "aggregate").await;
    let analyst = app.token("analyst").await;

    // Rows at no level, by no path: the grant is for tables.
    for level in ["identified", "pseudonymised", "anonymised", "dp_aggregate"] {
        let res = app
            .get(
                &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research&level={level}"),
                Some(&analyst),
            )
            .await;
        assert_eq!(res.status(), 403, "{level}");
        let text = res.text().await.unwrap();
        assert!(!text.contains("Exchange Place"), "{text}");
    }
    let table = id.replace('-', "_");
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT * FROM {table}"), "purpose": "research"}),
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/dp-statistics"),
            Some(&analyst),
            &json!({"purpose": "research", "statistic": "count", "epsilon": 0.5}),
        )
        .await;
    assert_eq!(res.status(), 403);

    // Origin–destination counts between areas of about a kilometre.
    let od = json!({
        "purpose": "research",
        "by": [
            {"grid": {"latitude": "start station latitude", "longitude": "start station longitude", "degrees": 0.01}},
            {"grid": {"latitude": "end station latitude", "longitude": "end station longitude", "degrees": 0.01}}
        ],
        "sum": "tripduration",
        "format": "json"
    });
    let path = format!("/api/v1/datasets/{id}/aggregate");
    let res = app.post_json(&path, Some(&analyst), &od).await;
    let log_index: i64 = res.headers()["citytrust-log-entry"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let t = json_of(res, 200).await;
    assert_eq!(t["dimensions"].as_array().unwrap().len(), 2, "{t}");
    assert_eq!(
        t["perturbed"], true,
        "the analyst may not read the rows: {t}"
    );
    // The truth, from the file itself: trips and total duration per pair of
    // 0.01° areas (and every margin).
    let truth = od_truth();
    let cells = t["cells"].as_array().unwrap();
    let label = |c: &Value, d: usize| c["key"][d].as_str().map(str::to_string);
    let mut shown = 0;
    for c in cells {
        let key: Area2 = (label(c, 0), label(c, 1));
        let (n, duration) = truth.get(&key).copied().unwrap_or((0, 0.0));
        let count = c["count"].as_u64().unwrap() as i64;
        // Only cells of at least 10 trips are listed (nothing says whether an
        // absent cell is empty or small), each moved by at most 2 ...
        assert!(n >= 10, "a cell of {n} trips is listed: {c}");
        assert!((count - n as i64).abs() <= 2, "{count} for {n} trips: {c}");
        // ... and its total duration by at most a tenth.
        let sum = c["sum"].as_f64().unwrap();
        assert!(
            (sum - duration).abs() <= duration * 0.1 + 1e-6,
            "{sum} for {duration}: {c}"
        );
        assert!(
            c.get("status").is_none(),
            "no status tells small from empty: {c}"
        );
        // Areas are named by their south-west corner on the grid.
        for d in 0..2 {
            if let Some(l) = label(c, d) {
                let (lat, lon) = l.split_once(',').unwrap();
                assert!((40.6..40.8).contains(&lat.parse::<f64>().unwrap()), "{l}");
                assert!((-74.2..-73.9).contains(&lon.parse::<f64>().unwrap()), "{l}");
            }
        }
        shown += 1;
    }
    let small = truth
        .iter()
        .filter(|(k, (n, _))| k.0.is_some() && k.1.is_some() && *n > 0 && *n < 10)
        .count();
    assert!(
        shown > 10 && small > 0,
        "{shown} shown, {small} small (none listed)"
    );
    // The grand total: all 12,677 trips, give or take 2.
    let total = cells
        .iter()
        .find(|c| c["key"][0].is_null() && c["key"][1].is_null())
        .unwrap();
    assert!(
        (total["count"].as_i64().unwrap() - 12_677).abs() <= 2,
        "{total}"
    );
    // The same records always get the same change: asking again gives the
    // same table, and an area's trips as a margin here equal its cell in a
    // one-dimensional table (differencing two tables gains nothing exact).
    let again = json_of(app.post_json(&path, Some(&analyst), &od).await, 200).await;
    assert_eq!(again, t);
    let origins = json!({"purpose": "research", "by": [od["by"][0].clone()], "format": "json"});
    let one = json_of(app.post_json(&path, Some(&analyst), &origins).await, 200).await;
    for c in one["cells"].as_array().unwrap() {
        let o = c["key"][0].as_str().map(str::to_string);
        if let Some(m) = cells
            .iter()
            .find(|m| m["key"][0].as_str().map(str::to_string) == o && m["key"][1].is_null())
        {
            assert_eq!(m["count"], c["count"], "area {o:?}: {m} vs {c}");
        }
    }
    // The read is in the log with the transform applied, and the log does
    // not say how many cells were held back (small from empty, again).
    let entry = last_read(&app.entries_of_type("content.read").await);
    assert_eq!(entry["level"], "aggregate", "{entry}");
    assert_eq!(entry["agreement"], agreement_id.as_str(), "{entry}");
    assert_eq!(
        entry["transform"]["kind"], "thresholded_aggregate",
        "{entry}"
    );
    assert_eq!(entry["transform"]["threshold"], 10, "{entry}");
    assert_eq!(entry["transform"]["perturbed"], true, "{entry}");
    assert!(
        entry["transform"].get("suppressed_small").is_none(),
        "{entry}"
    );
    let stored = app
        .service
        .store()
        .ledger_entries(log_index, 1)
        .await
        .unwrap();
    assert!(stored[0].1.contains("thresholded_aggregate"));

    // CSV too: the listed cells only.
    let mut csv_body = od.clone();
    csv_body["format"] = json!("csv");
    let csv = text_of(app.post_json(&path, Some(&analyst), &csv_body).await, 200).await;
    assert!(
        csv.starts_with("\"grid(start station latitude, start station longitude, 0.01)\","),
        "{csv}"
    );
    assert!(!csv.contains("suppressed"), "{csv}");
    assert_eq!(csv.lines().count(), shown + 1);

    // What may not be asked: a lower threshold, a personal column as a
    // dimension, an unknown column, a cell smaller than the grid allows.
    let mut low = od.clone();
    low["threshold"] = json!(3);
    assert_problem(
        app.post_json(&path, Some(&analyst), &low).await,
        422,
        "threshold_too_low",
        None,
    )
    .await;
    let by_bike = json!({"purpose": "research", "by": [{"column": "bikeid"}]});
    let body = assert_problem(
        app.post_json(&path, Some(&analyst), &by_bike).await,
        422,
        "personal_dimension",
        None,
    )
    .await;
    assert!(!body.to_string().contains("31929"), "{body}");
    let unknown = json!({"purpose": "research", "by": [{"column": "no such"}]});
    let res = app.post_json(&path, Some(&analyst), &unknown).await;
    assert_eq!(res.status(), 422);
    let fine = json!({"purpose": "research", "by": [{"grid": {"latitude": "start station latitude", "longitude": "start station longitude", "degrees": 0.00001}}]});
    let res = app.post_json(&path, Some(&analyst), &fine).await;
    assert_eq!(res.status(), 422);
    // The owner's own members still read the rows (closed use).
    let alice = app.token("alice").await;
    let own = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research"),
            Some(&alice),
        )
        .await;
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("Exchange Place"));
    let extra = json!({"purpose": "research", "by": [{"column": "gender"}], "rows": true});
    let res = app.post_json(&path, Some(&analyst), &extra).await;
    assert_eq!(res.status(), 422);
    // Without the agreement's purpose, or signed out: refused.
    let other = json!({"purpose": "innovation", "by": [{"column": "gender"}]});
    assert_eq!(
        app.post_json(&path, Some(&analyst), &other).await.status(),
        403
    );
    let signed_out = json!({"purpose": "research", "by": [{"column": "gender"}]});
    assert_eq!(app.post_json(&path, None, &signed_out).await.status(), 401);
}

#[tokio::test]
async fn a_dp_statistic_spends_the_budget_and_one_that_would_exceed_it_is_refused_saying_what_is_left()
 {
    let app = start().await;
    let alice = app.token("alice").await;
    let mut csv = String::from("district,income\n");
    for i in 0..500 {
        csv.push_str(&format!(
            "{},{}\n",
            ["Gràcia", "Sants", "Horta"][i % 3],
            20_000 + i * 37
        ));
    }
    let id = upload(
        &app,
        &alice,
        dataset("Household incomes", "city-energy", "shared_specific"),
        json!({}),
        csv.into_bytes(),
    )
    .await;
    let agreement_id = agreement(&app, "analyst", &id, "research", "dp_aggregate").await;
    let (alice, analyst) = (app.token("alice").await, app.token("analyst").await);
    let path = format!("/api/v1/datasets/{id}/dp-statistics");
    // Signed out: no budget to spend.
    let count = json!({"purpose": "research", "statistic": "count", "epsilon": 0.4});
    assert_eq!(app.post_json(&path, None, &count).await.status(), 401);
    // The DP level grants no rows.
    for level in ["identified", "pseudonymised", "anonymised"] {
        let res = app
            .get(
                &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research&level={level}"),
                Some(&analyst),
            )
            .await;
        assert_eq!(res.status(), 403, "{level}");
    }

    let r = json_of(app.post_json(&path, Some(&analyst), &count).await, 200).await;
    let value = r["value"].as_f64().unwrap();
    assert!((400.0..600.0).contains(&value), "{r}");
    assert!(r["mechanism"].as_str().unwrap().contains("Laplace"), "{r}");
    assert_eq!(r["budget"]["account"], agreement_id.as_str());
    assert!(
        (r["budget"]["remaining_epsilon"].as_f64().unwrap() - 0.6).abs() < 1e-6,
        "{r}"
    );
    let mean = json!({"purpose": "research", "statistic": "mean", "column": "income", "bounds": [0, 100000], "epsilon": 0.3});
    let r = json_of(app.post_json(&path, Some(&analyst), &mean).await, 200).await;
    assert_eq!(r["budget"]["releases"], 2, "{r}");
    let histogram = json!({"purpose": "research", "statistic": "histogram", "column": "district", "categories": ["Gràcia", "Sants"], "epsilon": 0.2});
    let r = json_of(app.post_json(&path, Some(&analyst), &histogram).await, 200).await;
    assert_eq!(r["value"].as_array().unwrap().len(), 3, "{r}");
    let entries = app.entries_of_type("content.read").await;
    let entry = last_read(&entries);
    assert_eq!(entry["level"], "dp_aggregate", "{entry}");
    assert_eq!(
        entry["transform"]["kind"], "differential_privacy",
        "{entry}"
    );
    assert_eq!(entry["transform"]["statistic"], "histogram", "{entry}");
    assert_eq!(
        entry["transform"]["budget_account"],
        agreement_id.as_str(),
        "{entry}"
    );
    assert_eq!(entry["transform"]["epsilon"], "0.2", "{entry}");

    // 0.9 spent of 1: a statistic costing 0.2 is refused, says what is
    // left, and neither releases nor logs nor charges anything.
    let res = app
        .post_json(
            &path,
            Some(&analyst),
            &json!({"purpose": "research", "statistic": "count", "epsilon": 0.2}),
        )
        .await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["rule"], "privacy-budget", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("only 0.1"), "{detail}");
    assert!(detail.contains("nothing was released"), "{detail}");
    assert_eq!(
        app.entries_of_type("content.read").await.len(),
        entries.len()
    );
    let b = json_of(
        app.get(
            &format!("/api/v1/privacy-budgets/{agreement_id}"),
            Some(&analyst),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(b["releases"], 3, "{b}");
    assert!(
        (b["remaining_epsilon"].as_f64().unwrap() - 0.1).abs() < 1e-6,
        "{b}"
    );
    // What is left can still be spent, then nothing more.
    let last = json!({"purpose": "research", "statistic": "count", "epsilon": 0.1});
    json_of(app.post_json(&path, Some(&analyst), &last).await, 200).await;
    let res = app.post_json(&path, Some(&analyst), &last).await;
    assert_eq!(res.status(), 403);
    // The budget is the analyst's under this agreement: the owner reading
    // their own data spends from an account of their own.
    let r = json_of(app.post_json(&path, Some(&alice), &count).await, 200).await;
    assert_eq!(r["budget"]["account"], format!("dataset:{id}"));
    assert_eq!(r["budget"]["releases"], 1);

    // Statistics that cannot be made say why.
    for (body, field) in [
        (
            json!({"purpose": "research", "statistic": "sum", "column": "income", "epsilon": 0.01}),
            "bounds",
        ),
        (
            json!({"purpose": "research", "statistic": "count", "epsilon": 0}),
            "epsilon",
        ),
        (
            json!({"purpose": "research", "statistic": "count", "epsilon": 50}),
            "epsilon",
        ),
        (
            json!({"purpose": "research", "statistic": "histogram", "column": "district", "epsilon": 0.01}),
            "categories",
        ),
        (
            json!({"purpose": "research", "statistic": "mean", "column": "district", "bounds": [0, 1], "epsilon": 0.01}),
            "district",
        ),
    ] {
        let res = app.post_json(&path, Some(&alice), &body).await;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, 422, "{body}: {text}");
        assert!(text.contains(field), "{body}: {text}");
    }
}

#[tokio::test]
async fn an_index_grant_answers_whether_a_record_exists_and_nothing_more() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = upload(
        &app,
        &alice,
        dataset("Parking permits", "city-energy", "shared_specific"),
        json!({}),
        "permit,plate,zone\nP-1,1234ABC,Gràcia\nP-2,5678DEF,Sants\n"
            .as_bytes()
            .to_vec(),
    )
    .await;
    let analyst = app.token("analyst").await;
    let path = format!("/api/v1/datasets/{id}/lookup");
    let ask = |value: &str| json!({"purpose": "research", "column": "plate", "value": value});
    // Before any agreement: refused.
    assert_eq!(
        app.post_json(&path, Some(&analyst), &ask("1234ABC"))
            .await
            .status(),
        403
    );
    agreement(&app, "analyst", &id, "research", "index").await;
    let analyst = app.token("analyst").await;
    let yes = json_of(
        app.post_json(&path, Some(&analyst), &ask("1234ABC")).await,
        200,
    )
    .await;
    assert_eq!(yes["exists"], true, "{yes}");
    let no = json_of(
        app.post_json(&path, Some(&analyst), &ask("9999ZZZ")).await,
        200,
    )
    .await;
    assert_eq!(no["exists"], false, "{no}");
    // Nothing else comes back: not the row, not its other columns.
    for answer in [&yes, &no] {
        let text = answer.to_string();
        for other in ["P-1", "Sants", "5678DEF"] {
            assert!(!text.contains(other), "{text}");
        }
    }
    // The log records the look-up and its column, never the value; the
    // digest it records is that of the answer.
    let entry = last_read(&app.entries_of_type("content.read").await);
    assert_eq!(entry["level"], "index", "{entry}");
    assert_eq!(entry["transform"]["kind"], "index_lookup", "{entry}");
    assert_eq!(entry["transform"]["column"], "plate", "{entry}");
    assert_eq!(entry["sha256"], no["sha256"], "{entry}");
    let log = app.entries_of_type("content.read").await.join("\n");
    assert!(!log.contains("1234ABC") && !log.contains("9999ZZZ"));
    use sha2::Digest;
    let text = format!("{id}\n1\nplate\nfalse\n{}", no["nonce"].as_str().unwrap());
    assert_eq!(
        no["sha256"],
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
    // An index grant gives no rows, no tables, no SQL.
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research&level=index"),
            Some(&analyst),
        )
        .await;
    assert_problem(res, 422, "index_level", None).await;
    let res = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research"),
            Some(&analyst),
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/aggregate"),
            Some(&analyst),
            &json!({"purpose": "research", "by": [{"column": "zone"}]}),
        )
        .await;
    assert_eq!(res.status(), 403);
    // An unknown column, a value too long, an unknown field: 422.
    let res = app
        .post_json(
            &path,
            Some(&analyst),
            &json!({"purpose": "research", "column": "owner", "value": "x"}),
        )
        .await;
    assert_eq!(res.status(), 422);
    let long = "x".repeat(1001);
    let res = app.post_json(&path, Some(&analyst), &ask(&long)).await;
    assert_eq!(res.status(), 422);
    let res = app
        .post_json(
            &path,
            Some(&analyst),
            &json!({"purpose": "research", "column": "plate", "value": "x", "rows": 1}),
        )
        .await;
    assert_eq!(res.status(), 422);
}

#[tokio::test]
async fn once_a_dataset_is_marked_as_trajectories_an_agreement_for_rows_reads_only_tables() {
    let app = start().await;
    let alice = app.token("alice").await;
    let mut csv = String::from("trip,from_zone,to_zone\n");
    for i in 0..30 {
        csv.push_str(&format!(
            "T{i},{},{}\n",
            ["A", "B"][i % 2],
            ["C", "D"][i % 3 % 2]
        ));
    }
    let id = upload(
        &app,
        &alice,
        dataset("Scooter trips", "city-energy", "shared_specific"),
        json!({}),
        csv.into_bytes(),
    )
    .await;
    agreement(&app, "analyst", &id, "research", "identified").await;
    let analyst = app.token("analyst").await;
    let rows = format!("/api/v1/datasets/{id}/data?format=csv&purpose=research");
    assert_eq!(app.get(&rows, Some(&analyst)).await.status(), 200);
    // The owner declares the rows to be movements: from the next read on,
    // the agreement yields tables only.
    let alice = app.token("alice").await;
    let res = app
        .patch_json(
            &format!("/api/v1/datasets/{id}"),
            Some(&alice),
            &json!({"column_classes": {"trajectories": true}}),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    for level in ["identified", "pseudonymised", "anonymised"] {
        let res = app
            .get(&format!("{rows}&level={level}"), Some(&analyst))
            .await;
        assert_eq!(res.status(), 403, "{level}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["rule"], "trajectories-as-tables", "{body}");
        assert!(!body.to_string().contains("T1"), "{body}");
    }
    let table = id.replace('-', "_");
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT * FROM {table}"), "purpose": "research"}),
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/aggregate"),
            Some(&analyst),
            &json!({"purpose": "research", "by": [{"column": "from_zone"}, {"column": "to_zone"}], "format": "json"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    // The owner's members still read the rows.
    assert_eq!(app.get(&rows, Some(&alice)).await.status(), 200);
}
