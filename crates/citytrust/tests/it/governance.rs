//! Access governance end to end: requests, votes, agreements, and the
//! decision every read is checked against (issue 4).

use serde_json::{Value, json};

use citytrust_model::{NewOrganization, OrganizationKind, Role};

use crate::harness::{TestApp, assert_problem, dataset, user};

/// A university with an analyst, and two more trustees (three vote).
pub(crate) async fn start() -> TestApp {
    let app = TestApp::start().await;
    let admin = citytrust_model::Actor::from_user(&app.service.get_user("admin").await.unwrap());
    app.service
        .create_organization(
            &admin,
            NewOrganization {
                id: "uni".into(),
                name: "City University".into(),
                kind: OrganizationKind::University,
                description: String::new(),
                url: None,
            },
        )
        .await
        .unwrap();
    for name in ["trustee2", "trustee3"] {
        app.service
            .insert_user(user(name, vec![Role::Trustee], vec![]))
            .await
            .unwrap();
    }
    app.service
        .insert_user(user("analyst", vec![], vec!["uni"]))
        .await
        .unwrap();
    app
}

pub(crate) const ENERGY_CSV: &[u8] = b"building,kbtu\nAlpha Tower,1520000\nBeta Hall,830000\n";
const WATER_CSV: &[u8] = b"meter,litres\nM-1,4200\nM-2,3100\n";

pub(crate) async fn with_content(
    app: &TestApp,
    token: &str,
    title: &str,
    owner: &str,
    spectrum: &str,
    csv: &[u8],
) -> String {
    let id = app
        .create_dataset(token, &dataset(title, owner, spectrum))
        .await;
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(token),
            "text/csv",
            csv.to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    id
}

fn systematic() -> Value {
    json!({
        "justified": "We rank buildings for retrofit; without the figures we guess.",
        "benefits_and_risks": "Lower bills and emissions; owners' commercial figures could leak.",
        "proportionate": "Only the annual totals, for one year.",
        "without_personal_data": "The data is about buildings, not people.",
        "power_to_share": "The city's benchmarking ordinance."
    })
}

pub(crate) fn request(datasets: &[&str], purpose: &str, level: &str) -> Value {
    json!({
        "dataset_ids": datasets,
        "purpose": purpose,
        "level": level,
        "starts_on": "2026-03-01",
        "ends_on": "2026-03-31",
        "benefit": "A public retrofit priority list.",
        "sharing": "systematic",
        "checklist": systematic(),
    })
}

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    let code = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(code, status, "{body}");
    body
}

/// A refused read says which rule refused it and carries nothing of the data.
async fn refused(res: reqwest::Response, rule: Option<&str>) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 403, "{text}");
    for secret in ["Alpha Tower", "1520000", "kbtu", "M-1", "litres"] {
        assert!(
            !text.contains(secret),
            "a refusal leaked '{secret}': {text}"
        );
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "refused", "{body}");
    assert_eq!(body["rule"].as_str(), rule, "{body}");
    body
}

#[tokio::test]
async fn a_request_voted_by_the_trustees_becomes_the_agreement_every_read_is_checked_against() {
    let app = start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    let analyst = app.token("analyst").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        ENERGY_CSV,
    )
    .await;
    let water = with_content(
        &app,
        &bob,
        "Water meters",
        "water-co",
        "shared_public",
        WATER_CSV,
    )
    .await;
    let data = |id: &str, purpose: &str| {
        format!("/api/v1/datasets/{id}/data?format=csv&purpose={purpose}")
    };

    // Before any agreement: no purpose, an unknown purpose, no agreement — all refused.
    refused(
        app.get(&format!("/api/v1/datasets/{energy}/data"), Some(&analyst))
            .await,
        Some("purpose-required"),
    )
    .await;
    assert_problem(
        app.get(&data(&energy, "curiosity"), Some(&analyst)).await,
        422,
        "unknown_purpose",
        None,
    )
    .await;
    let body = refused(
        app.get(&data(&energy, "research"), Some(&analyst)).await,
        None,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no data sharing agreement"),
        "{body}"
    );
    // Not signed in: sign in first.
    assert_eq!(
        app.get(&data(&energy, "research"), None).await.status(),
        401
    );
    // The owner reads their own data, for a stated purpose.
    assert_eq!(
        app.get(&data(&energy, "city-operations"), Some(&alice))
            .await
            .status(),
        200
    );

    // The request: checked, then sent to the trustees.
    let mut incomplete = request(&[&energy], "research", "identified");
    incomplete["checklist"]
        .as_object_mut()
        .unwrap()
        .remove("proportionate");
    assert_problem(
        app.post_json("/api/v1/access-requests", Some(&analyst), &incomplete)
            .await,
        422,
        "validation_failed",
        Some("checklist.proportionate"),
    )
    .await;
    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &request(&[&energy], "research", "identified"),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "under_review", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    assert!(
        r["risk_flags"]
            .as_array()
            .unwrap()
            .contains(&json!("row_level"))
    );
    let votes = format!("/api/v1/access-requests/{id}/votes");
    let approve = json!({"vote": "approve", "reason": "Clear public benefit; totals only."});
    // Only trustees vote, each once, with a reason.
    assert_problem(
        app.post_json(&votes, Some(&bob), &approve).await,
        403,
        "forbidden",
        None,
    )
    .await;
    let t1 = app.token("trustee").await;
    assert_problem(
        app.post_json(
            &votes,
            Some(&t1),
            &json!({"vote": "approve", "reason": " "}),
        )
        .await,
        422,
        "validation_failed",
        Some("reason"),
    )
    .await;
    let r = json_of(app.post_json(&votes, Some(&t1), &approve).await, 200).await;
    assert_eq!(r["status"], "under_review");
    assert_problem(
        app.post_json(&votes, Some(&t1), &approve).await,
        409,
        "conflict",
        None,
    )
    .await;
    // Still under review: still refused.
    refused(
        app.get(&data(&energy, "research"), Some(&analyst)).await,
        None,
    )
    .await;
    let t2 = app.token("trustee2").await;
    json_of(app.post_json(&votes, Some(&t2), &approve).await, 200).await;
    let t3 = app.token("trustee3").await;
    let r = json_of(
        app.post_json(
            &votes,
            Some(&t3),
            &json!({"vote": "deny", "reason": "Owners were not asked."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(r["status"], "approved", "{r}");
    assert_eq!(r["decision"]["by"], "trustees");
    let agreement = r["agreement_id"].as_str().unwrap().to_string();

    // The public register lists it; its terms and its ODRL export are public.
    let list = json_of(app.get("/api/v1/agreements", None).await, 200).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == agreement),
        "{list}"
    );
    let a = json_of(
        app.get(&format!("/api/v1/agreements/{agreement}"), None)
            .await,
        200,
    )
    .await;
    assert_eq!(a["recipient"], "organization:uni");
    assert_eq!(a["providers"], json!(["city-energy"]));
    assert_eq!(a["purpose"], "research");
    assert_eq!(a["level"], "identified");
    let res = app
        .get(&format!("/api/v1/agreements/{agreement}/odrl"), None)
        .await;
    assert_eq!(res.headers()["content-type"], "application/ld+json");
    let odrl: Value = res.json().await.unwrap();
    assert_eq!(odrl["@type"], "Agreement");
    assert!(
        odrl["permission"][0]["target"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/datasets/{energy}"))
    );
    assert_eq!(
        odrl["permission"][0]["constraint"][0]["leftOperand"],
        "purpose"
    );

    // Reads under the agreement: for its purpose only, of its datasets only.
    let res = app.get(&data(&energy, "research"), Some(&analyst)).await;
    assert_eq!(res.status(), 200);
    let entry: u64 = res.headers()["citytrust-log-entry"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(res.text().await.unwrap().contains("Alpha Tower"));
    let logged = app
        .service
        .store()
        .ledger_entry(entry as i64)
        .await
        .unwrap()
        .unwrap();
    assert!(
        logged.contains(&agreement) && logged.contains("agreement-in-force"),
        "{logged}"
    );
    refused(
        app.get(&data(&energy, "commercial"), Some(&analyst)).await,
        None,
    )
    .await;
    refused(
        app.get(&data(&water, "research"), Some(&analyst)).await,
        None,
    )
    .await;
    // Someone else, of another organisation, gets nothing from it.
    refused(app.get(&data(&energy, "research"), Some(&bob)).await, None).await;
    // SQL: allowed only if every input is allowed for the purpose.
    let energy_t = energy.replace('-', "_");
    let water_t = water.replace('-', "_");
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT COUNT(*) AS n FROM {energy_t}"), "purpose": "research"}),
        )
        .await;
    assert_eq!(json_of(res, 200).await, json!([{"n": 2}]));
    for (sql, purpose) in [
        (format!("SELECT * FROM {energy_t}, {water_t}"), "research"),
        (format!("SELECT COUNT(*) FROM {energy_t}"), "commercial"),
    ] {
        let res = app
            .post_json(
                "/api/v1/query",
                Some(&analyst),
                &json!({"sql": sql, "purpose": purpose}),
            )
            .await;
        refused(res, None).await;
    }

    // The register links the agreement to every signed entry about it: the
    // request, the votes, the decision, the agreement, and each read under it.
    // Another organisation asks for the same data: demand shows in the analytics.
    json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&bob),
            &request(&[&energy], "research", "identified"),
        )
        .await,
        201,
    )
    .await;
    app.service.integrate_ledger().await.unwrap();
    let log = json_of(
        app.get(&format!("/api/v1/agreements/{agreement}/log"), None)
            .await,
        200,
    )
    .await;
    let mut kinds: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "access.decided",
            "access.requested",
            "access.vote",
            "access.vote",
            "access.vote",
            "agreement.made",
            "content.read",
            // The query served, and the one refused at its second table
            // (every attempt is logged, with what it had read under the
            // agreement before it was refused; indexed as an attempt).
            "query.refused",
            "query.run"
        ],
        "{log}"
    );
    assert_eq!(log["total"], 9);
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["index"] == entry)
    );
    // A page at a time; bad parameters and unknown agreements are refused.
    let page = json_of(
        app.get(&format!("/api/v1/agreements/{agreement}/log?limit=3"), None)
            .await,
        200,
    )
    .await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    let rest = json_of(
        app.get(
            &format!(
                "/api/v1/agreements/{agreement}/log?from={}",
                page["next"].as_i64().unwrap()
            ),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 6);
    assert_eq!(rest["next"], Value::Null);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("when=1", "when"),
    ] {
        assert_problem(
            app.get(&format!("/api/v1/agreements/{agreement}/log?{query}"), None)
                .await,
            400,
            "invalid_parameter",
            Some(field),
        )
        .await;
    }
    assert_eq!(
        app.get("/api/v1/agreements/dsa-nope/log", None)
            .await
            .status(),
        404
    );
    let page = app
        .get(&format!("/agreements/{agreement}"), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("In the transparency log")
            && page.contains(&format!("href=\"/log/{entry}\"")),
        "{page}"
    );

    // Analytics, from the signed log alone: who used what, why, how often.
    let a = json_of(app.get("/api/v1/ledger/analytics", None).await, 200).await;
    let count = |list: &str, key: &str| {
        a[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == key)
            .map(|c| c["count"].as_i64().unwrap())
    };
    // The owner's own read, the analyst's download and query.
    assert_eq!(count("reads_by_dataset", &energy), Some(3), "{a}");
    assert_eq!(count("reads_by_purpose", "research"), Some(2), "{a}");
    assert_eq!(count("reads_by_purpose", "city-operations"), Some(1));
    assert_eq!(count("reads_by_party", "organization:uni"), Some(2));
    assert_eq!(count("reads_by_party", "organization:city-energy"), Some(1));
    assert_eq!(count("least_used", &water), Some(0), "{a}");
    assert_eq!(a["period"], "day");
    assert_eq!(
        a["reads_over_time"].as_array().unwrap().last().unwrap()["count"],
        3
    );
    let repeated = &a["repeated_requests"][0];
    assert_eq!(repeated["dataset"], energy.as_str(), "{a}");
    assert_eq!(
        (repeated["requests"].as_i64(), repeated["parties"].as_i64()),
        (Some(2), Some(2))
    );
    let page = app.get("/log/analytics", None).await.text().await.unwrap();
    assert!(
        page.contains("Most used datasets") && page.contains("Building energy"),
        "{page}"
    );

    // After the end date: refused.
    app.clock.advance(time::Duration::days(31));
    let analyst = app.token("analyst").await;
    refused(
        app.get(&data(&energy, "research"), Some(&analyst)).await,
        None,
    )
    .await;
}

#[tokio::test]
async fn the_charter_refuses_what_it_must_without_a_vote() {
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let closed = with_content(&app, &alice, "Payroll", "city-energy", "closed", ENERGY_CSV).await;
    let open = with_content(
        &app,
        &alice,
        "Streetlights",
        "city-energy",
        "open",
        ENERGY_CSV,
    )
    .await;

    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &request(&[&closed], "research", "aggregate"),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "refused", "{r}");
    assert_eq!(r["decision"]["by"], "charter");
    assert_eq!(r["decision"]["rule"], "closed-data-stays-closed");
    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &request(&[&open], "research", "identified"),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "refused");
    assert!(
        r["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("no request is needed"),
        "{r}"
    );
    // Closed data is refused by name, even to a signed-in reader with a purpose.
    refused(
        app.get(
            &format!("/api/v1/datasets/{closed}/data?purpose=research"),
            Some(&analyst),
        )
        .await,
        Some("closed-data-stays-closed"),
    )
    .await;
    // Open data: anyone, with or without a purpose.
    assert_eq!(
        app.get(&format!("/api/v1/datasets/{open}/data"), None)
            .await
            .status(),
        200
    );

    // Drafts are private until submitted, and then checked in full.
    let mut draft = request(&[&closed], "research", "aggregate");
    draft["draft"] = json!(true);
    draft["checklist"] = json!({});
    let d = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &draft)
            .await,
        201,
    )
    .await;
    assert_eq!(d["status"], "draft");
    let path = format!("/api/v1/access-requests/{}", d["id"].as_str().unwrap());
    assert_eq!(app.get(&path, Some(&alice)).await.status(), 404);
    assert_eq!(app.get(&path, Some(&analyst)).await.status(), 200);
    assert_problem(
        app.post_json(&format!("{path}/submit"), Some(&analyst), &json!({}))
            .await,
        422,
        "validation_failed",
        Some("checklist.justified"),
    )
    .await;
    let mine = json_of(
        app.get("/api/v1/access-requests?mine=true", Some(&analyst))
            .await,
        200,
    )
    .await;
    assert_eq!(mine.as_array().unwrap().len(), 3);
    let register = json_of(app.get("/api/v1/access-requests", None).await, 200).await;
    assert_eq!(
        register.as_array().unwrap().len(),
        2,
        "drafts are not in the register"
    );
}

#[tokio::test]
async fn only_trustees_change_the_charter_and_only_to_a_valid_one() {
    let app = start().await;
    let alice = app.token("alice").await;
    let trustee = app.token("trustee").await;
    let charter = json_of(app.get("/api/v1/charter", None).await, 200).await;
    assert_eq!(charter["version"], 1);
    let text = charter["text"].as_str().unwrap().to_string();
    assert!(
        charter["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "closed-data-stays-closed")
    );
    let put = |token: String, body: Value| {
        let app = &app;
        async move {
            app.client
                .put(app.url("/api/v1/charter"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let edited = format!(
        "{text}\n@id(\"no-commercial-use\")\n@reason(\"the board does not share for profit\")\nforbid (principal, action == CityTrust::Action::\"read\", resource) when {{ context.commercial }};\n"
    );
    assert_problem(
        put(alice.clone(), json!({"text": edited, "note": "x"})).await,
        403,
        "forbidden",
        None,
    )
    .await;
    let body = assert_problem(
        put(trustee.clone(), json!({"text": "permit (principal, action, resource) when { resource.colour == \"red\" };", "note": "typo"})).await,
        422,
        "validation_failed",
        Some("text"),
    )
    .await;
    assert!(body.to_string().contains("@id"), "{body}");
    let v2 = json_of(
        put(
            trustee.clone(),
            json!({"text": edited, "note": "No commercial reads."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(v2["version"], 2);
    let history = json_of(app.get("/api/v1/charter/versions", None).await, 200).await;
    assert_eq!(history.as_array().unwrap().len(), 2);
    // The new rule is in force at once: a commercial read of open data is refused by it.
    let open = with_content(
        &app,
        &alice,
        "Streetlights",
        "city-energy",
        "open",
        ENERGY_CSV,
    )
    .await;
    refused(
        app.get(
            &format!("/api/v1/datasets/{open}/data?purpose=commercial"),
            None,
        )
        .await,
        Some("no-commercial-use"),
    )
    .await;
    assert_eq!(
        app.get(
            &format!("/api/v1/datasets/{open}/data?purpose=research"),
            None
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn an_agreement_limited_to_some_columns_serves_only_those() {
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        ENERGY_CSV,
    )
    .await;
    let mut body = request(&[&energy], "research", "identified");
    body["columns"] = json!(["building"]);
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await,
        201,
    )
    .await;
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        r["id"].as_str().unwrap()
    );
    for t in ["trustee", "trustee2", "trustee3"] {
        let token = app.token(t).await;
        json_of(
            app.post_json(
                &votes,
                Some(&token),
                &json!({"vote": "approve", "reason": "Names only."}),
            )
            .await,
            200,
        )
        .await;
    }
    let res = app
        .get(
            &format!("/api/v1/datasets/{energy}/data?format=csv&purpose=research"),
            Some(&analyst),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        "building\nAlpha Tower\nBeta Hall\n"
    );
    let table = energy.replace('-', "_");
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT * FROM {table} ORDER BY building"), "purpose": "research"}),
        )
        .await;
    assert_eq!(
        json_of(res, 200).await,
        json!([{"building": "Alpha Tower"}, {"building": "Beta Hall"}])
    );
    // The other column does not exist for this reader, and nothing of it leaks.
    let res = app
        .post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT SUM(kbtu) FROM {table}"), "purpose": "research"}),
        )
        .await;
    let text = res.text().await.unwrap();
    assert!(
        text.contains("unknown_column") && !text.contains("1520000"),
        "{text}"
    );
    // The owner still sees everything.
    let res = app
        .get(
            &format!("/api/v1/datasets/{energy}/data?format=csv&purpose=city-operations"),
            Some(&alice),
        )
        .await;
    assert!(res.text().await.unwrap().starts_with("building,kbtu\n"));
}

/// Every role × spectrum class × access level × read path, against the rule:
/// the metadata level serves no content; rows come at the row levels by
/// download and identified rows by SQL, tables at the aggregate levels and
/// yes-or-no look-ups at the index level;
/// open data
/// is read by anyone; the owner's members read their own; an agreement holder
/// reads the shared data it covers; nobody else reads anything — and no
/// refusal carries a value, a count or a column name of the data.
#[tokio::test]
async fn the_authorisation_matrix_holds_for_every_role_class_level_and_path() {
    let app = start().await;
    let alice = app.token("alice").await;
    let classes = [
        "open",
        "shared_public",
        "shared_group",
        "shared_specific",
        "closed",
    ];
    let mut ids = Vec::new();
    for class in classes {
        let csv = format!("zq_marker,zq_amount\nZQVALUE-{class},424242\n");
        // Declared non-identifying, so anonymised rows carry them.
        let mut d = dataset(&format!("Matrix {class}"), "city-energy", class);
        d["column_classes"] = json!({"non_identifying": ["zq_marker", "zq_amount"]});
        let id = app.create_dataset(&alice, &d).await;
        let res = app
            .post_raw(
                &format!("/api/v1/datasets/{id}/versions"),
                Some(&alice),
                "text/csv",
                csv.into_bytes(),
            )
            .await;
        assert_eq!(res.status(), 201);
        ids.push((class, id));
    }
    // The analyst's organisation holds one agreement over the three shared classes.
    let analyst = app.token("analyst").await;
    let shared: Vec<&str> = ids[1..4].iter().map(|(_, id)| id.as_str()).collect();
    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &request(&shared, "research", "identified"),
        )
        .await,
        201,
    )
    .await;
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        r["id"].as_str().unwrap()
    );
    for t in ["trustee", "trustee2", "trustee3"] {
        let token = app.token(t).await;
        app.post_json(
            &votes,
            Some(&token),
            &json!({"vote": "approve", "reason": "ok"}),
        )
        .await;
    }
    let r = json_of(
        app.get(
            &format!("/api/v1/access-requests/{}", r["id"].as_str().unwrap()),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(r["status"], "approved");

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Who {
        Anonymous,
        Resident,
        Trustee,
        Admin,
        Owner,
        OtherOrg,
        AgreementHolder,
    }
    let roles = [
        (Who::Anonymous, None, None),
        (Who::Resident, Some("resident"), None),
        (Who::Trustee, Some("trustee"), None),
        (Who::Admin, Some("admin"), Some("city-energy")),
        (Who::Owner, Some("alice"), Some("city-energy")),
        (Who::OtherOrg, Some("bob"), Some("water-co")),
        (Who::AgreementHolder, Some("analyst"), Some("uni")),
    ];
    let may_read = |who: Who, class: &str| -> bool {
        matches!(
            (who, class),
            (_, "open")
                | (Who::Owner, _)
                | (
                    Who::AgreementHolder,
                    "shared_public" | "shared_group" | "shared_specific"
                )
        )
    };
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Expect {
        Rows,
        /// Permitted, but that path does not serve rows at that level.
        NotThere,
        Denied,
    }
    let expect = |who: Who, class: &str, level: &str, path: &str| -> Expect {
        if level == "metadata" || !may_read(who, class) {
            Expect::Denied
        } else if level == "identified"
            || (path == "download" && matches!(level, "pseudonymised" | "anonymised"))
        {
            Expect::Rows
        } else {
            Expect::NotThere
        }
    };
    let levels = [
        "metadata",
        "index",
        "aggregate",
        "dp_aggregate",
        "anonymised",
        "pseudonymised",
        "identified",
    ];
    let mut checked = 0;
    for (who, username, org) in roles {
        let token = match username {
            Some(u) => Some(app.token(u).await),
            None => None,
        };
        let token = token.as_deref();
        for (class, id) in &ids {
            let table = id.replace('-', "_");
            for level in levels {
                let download = app
                    .get(
                        &format!(
                            "/api/v1/datasets/{id}/data?format=csv&purpose=research&level={level}"
                        ),
                        token,
                    )
                    .await;
                let query = app
                    .post_json(
                        "/api/v1/query",
                        token,
                        &json!({"sql": format!("SELECT * FROM {table}"), "purpose": "research", "level": level, "format": "csv"}),
                    )
                    .await;
                for (path, res) in [("download", download), ("query", query)] {
                    let status = res.status().as_u16();
                    let text = res.text().await.unwrap();
                    let context = format!("{who:?} × {class} × {level} × {path}: {status} {text}");
                    match expect(who, class, level, path) {
                        Expect::Rows => {
                            assert_eq!(status, 200, "{context}");
                            assert!(text.contains(&format!("ZQVALUE-{class}")), "{context}");
                        }
                        Expect::NotThere => assert_eq!(status, 422, "{context}"),
                        Expect::Denied => assert!(status == 401 || status == 403, "{context}"),
                    }
                    if status != 200 {
                        for leak in ["ZQVALUE", "424242", "zq_marker", "zq_amount"] {
                            assert!(!text.contains(leak), "leaked {leak}: {context}");
                        }
                    }
                    checked += 1;
                }
            }
            // The table levels: a thresholded count (its one row is below
            // the threshold, so shown suppressed) and a DP count, which
            // spends a budget kept per signed-in data user.
            let aggregate = app
                .post_json(
                    &format!("/api/v1/datasets/{id}/aggregate"),
                    token,
                    &json!({"purpose": "research", "by": [{"column": "zq_amount"}], "format": "json"}),
                )
                .await;
            let dp = app
                .post_json(
                    &format!("/api/v1/datasets/{id}/dp-statistics"),
                    token,
                    &json!({"purpose": "research", "statistic": "count", "epsilon": 0.1}),
                )
                .await;
            let lookup = app
                .post_json(
                    &format!("/api/v1/datasets/{id}/lookup"),
                    token,
                    &json!({"purpose": "research", "column": "zq_marker", "value": format!("ZQVALUE-{class}")}),
                )
                .await;
            for (path, res) in [("aggregate", aggregate), ("dp", dp), ("lookup", lookup)] {
                let status = res.status().as_u16();
                let text = res.text().await.unwrap();
                let context = format!("{who:?} × {class} × {path}: {status} {text}");
                let allowed = may_read(who, class) && (path != "dp" || username.is_some());
                if allowed {
                    assert_eq!(status, 200, "{context}");
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if path == "lookup" {
                        assert_eq!(v["exists"], true, "{context}");
                    } else if path == "aggregate" {
                        // One row: every cell, the total too, is below
                        // 10, so none is listed.
                        assert_eq!(v["cells"], json!([]), "{context}");
                    } else {
                        assert!(v["value"].is_number(), "{context}");
                        assert!(v["budget"]["releases"].as_i64() >= Some(1), "{context}");
                    }
                } else {
                    assert!(status == 401 || status == 403, "{context}");
                    for leak in ["ZQVALUE", "424242", "zq_marker", "zq_amount"] {
                        assert!(!text.contains(leak), "leaked {leak}: {context}");
                    }
                }
                checked += 1;
            }
            // Export into a derived dataset (at the only level it serves): also
            // needs the right to register a dataset for the organisation.
            let owner = org.unwrap_or("city-energy");
            let before = app.stored_datasets().await;
            let res = app
                .post_json(
                    "/api/v1/derived-datasets",
                    token,
                    &json!({
                        "dataset": {"title": format!("Export {who:?} {class}"), "description": "d", "owner_organization_id": owner, "spectrum": "closed"},
                        "sql": format!("SELECT * FROM {table}"),
                        "purpose": "research"
                    }),
                )
                .await;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            let expected = may_read(who, class) && org.is_some();
            let context = format!("{who:?} × {class} × export: {status} {text}");
            if expected {
                assert_eq!(status, 201, "{context}");
                assert_eq!(app.stored_datasets().await, before + 1, "{context}");
            } else {
                assert!(status == 401 || status == 403, "{context}");
                assert_eq!(app.stored_datasets().await, before, "{context}");
                for leak in ["ZQVALUE", "424242", "zq_marker", "zq_amount"] {
                    assert!(!text.contains(leak), "leaked {leak}: {context}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * 5 * (7 * 2 + 4));
}

#[tokio::test]
async fn an_ended_agreement_must_have_its_deletion_attested_before_new_requests() {
    let app = start().await;
    let alice = app.token("alice").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        ENERGY_CSV,
    )
    .await;
    let analyst = app.token("analyst").await;
    let mut body = request(&[&energy], "research", "identified");
    body["terms"] = json!({"retention_days": 10});
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await,
        201,
    )
    .await;
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        r["id"].as_str().unwrap()
    );
    for t in ["trustee", "trustee2", "trustee3"] {
        let token = app.token(t).await;
        app.post_json(
            &votes,
            Some(&token),
            &json!({"vote": "approve", "reason": "ok"}),
        )
        .await;
    }
    let r = json_of(
        app.get(
            &format!("/api/v1/access-requests/{}", r["id"].as_str().unwrap()),
            None,
        )
        .await,
        200,
    )
    .await;
    let agreement = r["agreement_id"].as_str().unwrap().to_string();
    let attest = format!("/api/v1/agreements/{agreement}/attest-deletion");
    let statement = json!({"statement": "Deleted from our analysis server on the last day; backups expire in 7 days."});
    // While in force: nothing to attest yet.
    assert_problem(
        app.post_json(&attest, Some(&analyst), &statement).await,
        422,
        "agreement_in_force",
        None,
    )
    .await;

    // 2026-03-31 ends it; ten days of retention; on 2026-04-11 the attestation is overdue.
    app.clock.advance(time::Duration::days(41));
    let analyst = app.token("analyst").await;
    let trustee = app.token("trustee").await;
    let overdue = json_of(
        app.get("/api/v1/agreements/overdue-attestations", Some(&trustee))
            .await,
        200,
    )
    .await;
    assert_eq!(overdue.as_array().unwrap().len(), 1);
    assert_eq!(overdue[0]["id"], agreement.as_str());
    let bob = app.token("bob").await;
    assert_eq!(
        app.get("/api/v1/agreements/overdue-attestations", Some(&bob))
            .await
            .status(),
        403
    );
    let mut next = request(&[&energy], "research", "identified");
    next["starts_on"] = json!("2026-04-15");
    next["ends_on"] = json!("2026-05-15");
    let body = assert_problem(
        app.post_json("/api/v1/access-requests", Some(&analyst), &next)
            .await,
        403,
        "refused",
        None,
    )
    .await;
    assert_eq!(body["rule"], "deletion-attestation-overdue");
    assert!(body["detail"].as_str().unwrap().contains(&agreement));
    // A draft may still be saved.
    let mut draft = next.clone();
    draft["draft"] = json!(true);
    assert_eq!(
        app.post_json("/api/v1/access-requests", Some(&analyst), &draft)
            .await
            .status(),
        201
    );

    // Only the recipient attests, once.
    assert_problem(
        app.post_json(&attest, Some(&bob), &statement).await,
        403,
        "forbidden",
        None,
    )
    .await;
    let a = json_of(
        app.post_json(&attest, Some(&analyst), &statement).await,
        200,
    )
    .await;
    assert!(a["deletion_attested_at"].is_string());
    assert_eq!(a["version"], 2);
    assert_problem(
        app.post_json(&attest, Some(&analyst), &statement).await,
        409,
        "conflict",
        None,
    )
    .await;
    let overdue = json_of(
        app.get("/api/v1/agreements/overdue-attestations", Some(&trustee))
            .await,
        200,
    )
    .await;
    assert_eq!(overdue, json!([]));
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &next)
            .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "under_review");
}

#[tokio::test]
async fn a_groups_standing_agreement_grants_its_members_without_a_vote() {
    let app = start().await;
    let admin = citytrust_model::Actor::from_user(&app.service.get_user("admin").await.unwrap());
    app.service
        .create_group(
            &admin,
            citytrust_model::NewGroup {
                id: "energy-partners".into(),
                name: "Energy partners".into(),
                description: String::new(),
                criteria: "Bodies with a statutory energy-efficiency duty.".into(),
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
        ENERGY_CSV,
    )
    .await;
    // The university asks on behalf of the group; the trustees approve a standing agreement.
    let analyst = app.token("analyst").await;
    let mut body = request(&[&meters], "city-operations", "identified");
    body["group_id"] = json!("energy-partners");
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "under_review");
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        r["id"].as_str().unwrap()
    );
    for t in ["trustee", "trustee2", "trustee3"] {
        let token = app.token(t).await;
        app.post_json(
            &votes,
            Some(&token),
            &json!({"vote": "approve", "reason": "Statutory duty."}),
        )
        .await;
    }
    let r = json_of(
        app.get(
            &format!("/api/v1/access-requests/{}", r["id"].as_str().unwrap()),
            None,
        )
        .await,
        200,
    )
    .await;
    let standing = json_of(
        app.get(
            &format!("/api/v1/agreements/{}", r["agreement_id"].as_str().unwrap()),
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(standing["recipient"], "group:energy-partners");

    // Another member organisation reads under it, and its own request is granted by the charter.
    let bob = app.token("bob").await;
    let read = format!("/api/v1/datasets/{meters}/data?format=csv&purpose=city-operations");
    assert_eq!(app.get(&read, Some(&bob)).await.status(), 200);
    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&bob),
            &request(&[&meters], "city-operations", "identified"),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "approved", "{r}");
    assert_eq!(r["decision"]["by"], "charter");
    assert_eq!(r["decision"]["rule"], "standing-agreement");
    // Not for another purpose, and not for an organisation outside the group.
    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&bob),
            &request(&[&meters], "innovation", "identified"),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "under_review");
    // A group the requester's organisation is not in cannot be named.
    let mut body = request(&[&meters], "city-operations", "identified");
    body["group_id"] = json!("no-such-group");
    assert_problem(
        app.post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await,
        422,
        "validation_failed",
        Some("group_id"),
    )
    .await;
}

#[tokio::test]
async fn row_level_use_of_personal_data_is_open_for_comment_before_the_vote() {
    let app = start().await;
    let alice = app.token("alice").await;
    let mut d = dataset("Household meters", "city-energy", "shared_specific");
    d["personal_data"] = json!(true);
    let id = app.create_dataset(&alice, &d).await;
    let analyst = app.token("analyst").await;
    let mut body = request(&[&id], "research", "pseudonymised");
    body["ends_on"] = json!("2026-06-30");
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "public_comment", "{r}");
    assert_eq!(r["comment_until"], "2026-03-15");
    for flag in ["personal_data", "row_level", "secondary_use"] {
        assert!(
            r["risk_flags"].as_array().unwrap().contains(&json!(flag)),
            "{r}"
        );
    }
    let path = format!("/api/v1/access-requests/{}", r["id"].as_str().unwrap());
    // During the period: anyone signed in comments; nobody votes yet.
    let resident = app.token("resident").await;
    let text = json!({"text": "Please pseudonymise the meter ids per study."});
    assert_eq!(
        app.post_json(&format!("{path}/comments"), None, &text)
            .await
            .status(),
        401
    );
    let r = json_of(
        app.post_json(&format!("{path}/comments"), Some(&resident), &text)
            .await,
        200,
    )
    .await;
    assert_eq!(
        r["comments"][0]["text"],
        "Please pseudonymise the meter ids per study."
    );
    let trustee = app.token("trustee").await;
    let vote = json!({"vote": "approve", "reason": "Comments answered."});
    assert_problem(
        app.post_json(&format!("{path}/votes"), Some(&trustee), &vote)
            .await,
        422,
        "comment_period_open",
        None,
    )
    .await;
    // After it: comments close, votes open.
    app.clock.advance(time::Duration::days(15));
    let resident = app.token("resident").await;
    assert_problem(
        app.post_json(&format!("{path}/comments"), Some(&resident), &text)
            .await,
        422,
        "comment_period_closed",
        None,
    )
    .await;
    let trustee = app.token("trustee").await;
    let r = json_of(
        app.post_json(&format!("{path}/votes"), Some(&trustee), &vote)
            .await,
        200,
    )
    .await;
    assert_eq!(r["status"], "under_review");
    // A trustee who declares a conflict is recorded but not counted.
    let t2 = app.token("trustee2").await;
    let r = json_of(
        app.post_json(
            &format!("{path}/votes"),
            Some(&t2),
            &json!({"vote": "approve", "reason": "Fine.", "conflict_of_interest": "I advise the university."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(r["status"], "under_review");
    let t3 = app.token("trustee3").await;
    let r = json_of(
        app.post_json(
            &format!("{path}/votes"),
            Some(&t3),
            &json!({"vote": "deny", "reason": "Too fine-grained."}),
        )
        .await,
        200,
    )
    .await;
    // Three trustees, one conflicted: the two left decide (the board does not
    // deadlock), and their tie denies.
    assert_eq!(r["votes"].as_array().unwrap().len(), 3);
    assert_eq!(r["status"], "denied", "{r}");
    assert_eq!(r["decision"]["by"], "trustees");
}

/// Entries of the log whose kind is `kind`, decoded.
async fn log_entries(app: &TestApp, kind: &str) -> Vec<Value> {
    app.service
        .store()
        .ledger_entries(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, body)| serde_json::from_str::<Value>(&body).unwrap())
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test]
async fn an_agent_acts_for_another_person_only_under_a_checked_authority_shown_in_every_record() {
    let app = start().await;
    app.service
        .insert_user(user("assistant", vec![], vec![]))
        .await
        .unwrap();
    let alice = app.token("alice").await;
    let admin = app.token("admin").await;
    let analyst = app.token("analyst").await;
    let assistant = app.token("assistant").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        ENERGY_CSV,
    )
    .await;
    let as_agent = |method: reqwest::Method, path: &str, principal: &str| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&assistant)
            .header("on-behalf-of", principal)
    };
    let body = request(&[&energy], "research", "identified");
    // No authority: refused, by the rule that says so, and nothing is made.
    let res = as_agent(reqwest::Method::POST, "/api/v1/access-requests", "analyst")
        .json(&body)
        .send()
        .await
        .unwrap();
    refused(res, Some("no-authority")).await;
    // Nobody acts for anyone without a token of their own.
    let res = app
        .client
        .get(app.url("/api/v1/access-requests"))
        .header("on-behalf-of", "analyst")
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "unauthenticated", None).await;
    // Only an administrator records an authority.
    let authority = json!({
        "agent": "assistant", "principal": "analyst", "kind": "mandate",
        "scope": "Access requests and reads for the retrofit study.",
        "covers": ["access_requests", "reads"],
        "evidence": "Signed mandate of the university's research office, ref. UNI-2026-114, seen.",
        "starts_on": "2026-03-01", "ends_on": "2026-03-31"
    });
    let res = app
        .post_json("/api/v1/authorities", Some(&analyst), &authority)
        .await;
    assert_eq!(res.status(), 403);
    let mut bad = authority.clone();
    bad["principal"] = json!("assistant");
    assert_problem(
        app.post_json("/api/v1/authorities", Some(&admin), &bad)
            .await,
        422,
        "validation_failed",
        Some("principal"),
    )
    .await;
    let granted = json_of(
        app.post_json("/api/v1/authorities", Some(&admin), &authority)
            .await,
        201,
    )
    .await;
    let authority_id = granted["id"].as_str().unwrap().to_string();
    assert_eq!(granted["checked_by"], "admin");
    let logged = log_entries(&app, "authority.granted").await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["authority"], authority_id.as_str());
    assert!(
        !logged[0].to_string().contains("analyst") && !logged[0].to_string().contains("assistant"),
        "the public log names no person: {}",
        logged[0]
    );

    // With it, the request is the analyst's, made by the assistant: both show.
    let r = json_of(
        as_agent(reqwest::Method::POST, "/api/v1/access-requests", "analyst")
            .json(&body)
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    assert_eq!(r["requester"], "analyst");
    assert_eq!(r["organization_id"], "uni");
    assert_eq!(r["agent"]["agent"], "assistant");
    assert_eq!(r["agent"]["authority_id"], authority_id.as_str());
    assert_eq!(r["agent"]["kind"], "mandate");
    let requested = log_entries(&app, "access.requested").await;
    assert_eq!(
        requested.last().unwrap()["agent"]["authority"],
        authority_id.as_str()
    );
    let id = r["id"].as_str().unwrap().to_string();
    let page = app.page(&format!("/requests/{id}")).await;
    assert!(page.contains("Made on their behalf by"), "{page}");
    assert!(page.contains(&authority_id));

    // A trustee's offices do not pass to an agent: an agent for a trustee may not vote.
    let mut for_trustee = authority.clone();
    for_trustee["principal"] = json!("trustee3");
    json_of(
        app.post_json("/api/v1/authorities", Some(&admin), &for_trustee)
            .await,
        201,
    )
    .await;
    let res = as_agent(
        reqwest::Method::POST,
        &format!("/api/v1/access-requests/{id}/votes"),
        "trustee3",
    )
    .json(&json!({"vote": "approve", "reason": "For my principal."}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    // Nor an administrator's: an agent for the administrator may not record authorities.
    let mut for_admin = authority.clone();
    for_admin["principal"] = json!("admin");
    json_of(
        app.post_json("/api/v1/authorities", Some(&admin), &for_admin)
            .await,
        201,
    )
    .await;
    let res = as_agent(reqwest::Method::POST, "/api/v1/authorities", "admin")
        .json(&authority)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // Decided by the three trustees in person; the agent reads under the agreement.
    for t in ["trustee", "trustee2", "trustee3"] {
        let token = app.token(t).await;
        json_of(
            app.post_json(
                &format!("/api/v1/access-requests/{id}/votes"),
                Some(&token),
                &json!({"vote": "approve", "reason": "Proportionate."}),
            )
            .await,
            200,
        )
        .await;
    }
    let read = format!("/api/v1/datasets/{energy}/data?format=csv&purpose=research");
    let res = as_agent(reqwest::Method::GET, &read, "analyst")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Alpha Tower"));
    let reads = log_entries(&app, "content.read").await;
    assert_eq!(
        reads.last().unwrap()["agent"]["authority"],
        authority_id.as_str()
    );
    assert_eq!(reads.last().unwrap()["agent"]["kind"], "mandate");
    // The analyst's own read carries no agent.
    assert_eq!(app.get(&read, Some(&analyst)).await.status(), 200);
    assert!(log_entries(&app, "content.read").await.last().unwrap()["agent"].is_null());

    // Withdrawn: the very next read on the analyst's behalf is refused.
    let res = app
        .post_json(
            &format!("/api/v1/authorities/{authority_id}/revoke"),
            Some(&analyst),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 403, "only an administrator withdraws");
    json_of(
        app.post_json(
            &format!("/api/v1/authorities/{authority_id}/revoke"),
            Some(&admin),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    let res = as_agent(reqwest::Method::GET, &read, "analyst")
        .send()
        .await
        .unwrap();
    refused(res, Some("no-authority")).await;
    // The principal sees the authority held over them; a stranger sees none.
    let theirs = json_of(app.get("/api/v1/authorities", Some(&analyst)).await, 200).await;
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    assert!(theirs[0]["revoked_at"].is_string());
    let alices = json_of(app.get("/api/v1/authorities", Some(&alice)).await, 200).await;
    assert_eq!(alices, json!([]));
    // An authority that has ended counts no more than a withdrawn one.
    app.clock.advance(time::Duration::days(31));
    let fresh = app.token("assistant").await;
    let res = app
        .client
        .get(app.url("/api/v1/access-requests"))
        .bearer_auth(&fresh)
        .header("on-behalf-of", "trustee3")
        .send()
        .await
        .unwrap();
    refused(res, Some("no-authority")).await;
}

/// The three trustees vote the same way on a request.
pub(crate) async fn all_vote(app: &TestApp, request_id: &str, vote: &str) -> Value {
    let mut last = Value::Null;
    for t in ["trustee", "trustee2", "trustee3"] {
        let token = app.token(t).await;
        last = json_of(
            app.post_json(
                &format!("/api/v1/access-requests/{request_id}/votes"),
                Some(&token),
                &json!({"vote": vote, "reason": "Considered."}),
            )
            .await,
            200,
        )
        .await;
    }
    last
}

/// `token`'s organisation asks for `purpose` on `datasets` at the
/// identified level and the three trustees approve: the decided request
/// (its `agreement_id` the agreement in force).
pub(crate) async fn approved(
    app: &TestApp,
    token: &str,
    datasets: &[&str],
    purpose: &str,
) -> Value {
    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(token),
            &request(datasets, purpose, "identified"),
        )
        .await,
        201,
    )
    .await;
    all_vote(app, r["id"].as_str().unwrap(), "approve").await
}

#[tokio::test]
async fn an_agreement_is_renewed_or_amended_as_a_new_version_decided_again() {
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        ENERGY_CSV,
    )
    .await;
    let mut body = request(&[&energy], "research", "identified");
    body["columns"] = json!(["building"]);
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await,
        201,
    )
    .await;
    let decided = all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
    let dsa = decided["agreement_id"].as_str().unwrap().to_string();

    // Renewal: the same terms for April. Only the recipient asks, for the same purpose.
    let mut renewal = body.clone();
    renewal["amends"] = json!(dsa);
    renewal["ends_on"] = json!("2026-04-30");
    let res = app
        .post_json("/api/v1/access-requests", Some(&alice), &renewal)
        .await;
    assert_eq!(res.status(), 403, "not alice's agreement");
    let mut other_purpose = renewal.clone();
    other_purpose["purpose"] = json!("commercial");
    assert_problem(
        app.post_json("/api/v1/access-requests", Some(&analyst), &other_purpose)
            .await,
        422,
        "validation_failed",
        Some("purpose"),
    )
    .await;
    let mut nowhere = renewal.clone();
    nowhere["amends"] = json!("dsa-000000000000");
    assert_problem(
        app.post_json("/api/v1/access-requests", Some(&analyst), &nowhere)
            .await,
        422,
        "validation_failed",
        Some("amends"),
    )
    .await;
    let asked = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &renewal)
            .await,
        201,
    )
    .await;
    assert_eq!(asked["status"], "under_review");
    assert_eq!(asked["amends"], dsa.as_str());
    // Until it is decided, version 1 is in force.
    let a = json_of(
        app.get(&format!("/api/v1/agreements/{dsa}"), None).await,
        200,
    )
    .await;
    assert_eq!(a["version"], 1);
    let renewed = all_vote(&app, asked["id"].as_str().unwrap(), "approve").await;
    assert_eq!(
        renewed["agreement_id"],
        dsa.as_str(),
        "the same agreement, not a new one"
    );
    let a = json_of(
        app.get(&format!("/api/v1/agreements/{dsa}"), None).await,
        200,
    )
    .await;
    assert_eq!(a["version"], 2);
    assert_eq!(a["ends_on"], "2026-04-30");
    assert_eq!(a["request_id"], asked["id"]);
    assert_eq!(a["columns"], json!(["building"]));
    let amended = log_entries(&app, "agreement.amended").await;
    assert_eq!(amended.len(), 1);
    assert_eq!(amended[0]["agreement"], dsa.as_str());
    assert_eq!(amended[0]["version"], 2);
    let page = app.page(&format!("/agreements/{dsa}")).await;
    assert!(page.contains("Version 2"), "{page}");

    // In April the renewed agreement governs reads, still limited to its columns.
    app.clock.advance(time::Duration::days(40));
    let analyst = app.token("analyst").await;
    let read = format!("/api/v1/datasets/{energy}/data?format=csv&purpose=research");
    let res = app.get(&read, Some(&analyst)).await;
    assert_eq!(res.status(), 200);
    let csv = res.text().await.unwrap();
    assert!(csv.starts_with("building\n"), "{csv}");

    // An amendment the trustees deny leaves the version in force untouched.
    let mut wider = renewal.clone();
    wider["columns"] = json!([]);
    wider["starts_on"] = json!("2026-04-10");
    let asked = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &wider)
            .await,
        201,
    )
    .await;
    let denied = all_vote(&app, asked["id"].as_str().unwrap(), "deny").await;
    let analyst = app.token("analyst").await;
    assert_eq!(denied["status"], "denied");
    let a = json_of(
        app.get(&format!("/api/v1/agreements/{dsa}"), None).await,
        200,
    )
    .await;
    assert_eq!(a["version"], 2);
    assert_eq!(a["columns"], json!(["building"]));
    assert!(
        app.get(&read, Some(&analyst))
            .await
            .text()
            .await
            .unwrap()
            .starts_with("building\n")
    );

    // A retired agreement is not renewed: that takes a new request.
    let trustee = app.token("trustee").await;
    let analyst = app.token("analyst").await;
    json_of(
        app.post_json(
            &format!("/api/v1/agreements/{dsa}/retire"),
            Some(&trustee),
            &json!({"reason": "The study ended early."}),
        )
        .await,
        200,
    )
    .await;
    assert_problem(
        app.post_json("/api/v1/access-requests", Some(&analyst), &wider)
            .await,
        422,
        "validation_failed",
        Some("amends"),
    )
    .await;
}

#[tokio::test]
async fn an_agreement_with_an_individual_is_logged_without_naming_them() {
    let app = start().await;
    let alice = app.token("alice").await;
    let energy = with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        ENERGY_CSV,
    )
    .await;
    // The resident belongs to no organisation: the agreement is with them in person.
    let resident = app.token("resident").await;
    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&resident),
            &request(&[&energy], "research", "aggregate"),
        )
        .await,
        201,
    )
    .await;
    let decided = all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
    let agreement = decided["agreement_id"].as_str().unwrap().to_string();
    let a = json_of(
        app.get(&format!("/api/v1/agreements/{agreement}"), None)
            .await,
        200,
    )
    .await;
    assert_eq!(a["recipient"], "user:resident");
    let made = log_entries(&app, "agreement.made").await;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["recipient"], "individual", "{}", made[0]);
    for kind in [
        "access.requested",
        "access.vote",
        "access.decided",
        "agreement.made",
    ] {
        for e in log_entries(&app, kind).await {
            assert!(
                !e.to_string().contains("resident"),
                "the public log names no person: {e}"
            );
        }
    }
    // The analytics count them among individuals, by no name.
    app.service.integrate_ledger().await.unwrap();
    let a = json_of(app.get("/api/v1/ledger/analytics", None).await, 200).await;
    assert!(!a.to_string().contains("resident"), "{a}");
}
