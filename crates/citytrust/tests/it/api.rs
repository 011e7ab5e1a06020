//! The JSON API end to end: tokens and sessions, accounts, organisations and
//! groups, the catalogue's create/edit/search, and problem+json for bad input.

use serde_json::{Value, json};

use crate::harness::{TestApp, assert_problem, dataset};

#[tokio::test]
async fn a_token_is_issued_for_good_credentials_only() {
    let app = TestApp::start().await;
    let res = app
        .post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "alice", "password": crate::harness::PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["token"].as_str().unwrap().starts_with("ct_"));
    assert!(
        body["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-03-02T09:00:00")
    );

    let res = app
        .post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "alice", "password": "wrong password!"}),
        )
        .await;
    assert!(res.headers().get("www-authenticate").is_some());
    assert_problem(res, 401, "bad_credentials", None).await;
    let res = app
        .post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "nobody", "password": "wrong password!"}),
        )
        .await;
    assert_problem(res, 401, "bad_credentials", None).await;
}

#[tokio::test]
async fn an_expired_or_unknown_token_is_refused_not_treated_as_anonymous() {
    let app = TestApp::start().await;
    let token = app.token("alice").await;
    assert_eq!(app.get("/api/v1/me", Some(&token)).await.status(), 200);
    app.clock.advance(time::Duration::hours(25));
    assert_problem(
        app.get("/api/v1/me", Some(&token)).await,
        401,
        "invalid_token",
        None,
    )
    .await;
    // Even on a public endpoint, a bad token is an error the client must hear about.
    assert_problem(
        app.get("/api/v1/datasets", Some("ct_forged")).await,
        401,
        "invalid_token",
        None,
    )
    .await;
    let res = app
        .client
        .get(app.url("/api/v1/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_problem(res, 401, "invalid_token", None).await;
}

#[tokio::test]
async fn a_member_registers_finds_and_edits_a_dataset() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let mut body = dataset("Street Lighting Energy Use", "city-energy", "shared_group");
    body["themes"] = json!(["energy"]);
    body["keywords"] = json!(["lamps", "electricity"]);
    body["format"] = json!("CSV");
    body["personal_data"] = json!(false);
    body["data_states"] = json!({"completeness": {"coverage": "all 40,000 lamps"}});
    body["roles"] = json!([{"organization_id": "water-co", "role": "user"}]);
    let res = app.post_json("/api/v1/datasets", Some(&alice), &body).await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers().get("location").unwrap(),
        "/api/v1/datasets/street-lighting-energy-use"
    );
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["id"], "street-lighting-energy-use");
    assert_eq!(created["revision"], 1);
    assert_eq!(created["spectrum"], "shared_group");
    assert_eq!(created["framework_class"], "thematic");

    // The same title again gets its own slug.
    let res = app.post_json("/api/v1/datasets", Some(&alice), &body).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["id"],
        "street-lighting-energy-use-2"
    );

    let page: Value = app
        .get("/api/v1/datasets?q=lamps", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 2);
    let page: Value = app.get("/api/v1/datasets?q=street+lighting&spectrum=shared_group&theme=energy&organization=city-energy", None).await.json().await.unwrap();
    assert_eq!(page["total"], 2);
    let page: Value = app
        .get("/api/v1/datasets?q=lighting&spectrum=open", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 0);
    assert_eq!(page["items"], json!([]));

    let res = app
        .patch_json(
            "/api/v1/datasets/street-lighting-energy-use",
            Some(&alice),
            &json!({"title": "Street lighting energy", "format": null}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["title"], "Street lighting energy");
    assert_eq!(updated["format"], Value::Null);
    assert_eq!(updated["keywords"], json!(["lamps", "electricity"]));
    assert_eq!(updated["revision"], 2);
    let fetched: Value = app
        .get("/api/v1/datasets/street-lighting-energy-use", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, updated);
}

#[tokio::test]
async fn a_stale_revision_is_refused() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    app.post_json(
        "/api/v1/datasets",
        Some(&alice),
        &dataset("Meters", "city-energy", "open"),
    )
    .await;
    let res = app
        .client
        .patch(app.url("/api/v1/datasets/meters"))
        .bearer_auth(&alice)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", "\"7\"")
        .body(r#"{"title":"Meters 2"}"#)
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "stale_revision", None).await;
}

#[tokio::test]
async fn search_facets_count_and_filter() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    for (title, spectrum, personal) in [
        ("Heat pumps", "open", false),
        ("Boilers", "closed", true),
        ("Smart meters", "shared_specific", true),
    ] {
        let mut d = dataset(title, "city-energy", spectrum);
        d["personal_data"] = json!(personal);
        d["themes"] = json!(["energy"]);
        d["format"] = json!("Parquet");
        assert_eq!(
            app.post_json("/api/v1/datasets", Some(&alice), &d)
                .await
                .status(),
            201
        );
    }
    let mut d = dataset("Reservoir levels", "water-co", "open");
    d["themes"] = json!(["environment"]);
    assert_eq!(
        app.post_json("/api/v1/datasets", Some(&bob), &d)
            .await
            .status(),
        201
    );

    let page: Value = app
        .get("/api/v1/datasets?personal_data=true", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 2);
    let page: Value = app
        .get("/api/v1/datasets?theme=energy", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 3);
    let spectrum = page["facets"]["spectrum"].as_array().unwrap();
    assert!(
        spectrum.contains(&json!({"value": "closed", "label": "Closed", "count": 1})),
        "{spectrum:?}"
    );
    // The theme facet still offers the other theme while one is chosen.
    let themes: Vec<&str> = page["facets"]["theme"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["value"].as_str().unwrap())
        .collect();
    assert!(themes.contains(&"environment"));
    let page: Value = app
        .get(
            "/api/v1/datasets?format=parquet&organization=water-co",
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 0);
    // Closed datasets are listed: their existence is public.
    let page: Value = app
        .get("/api/v1/datasets?spectrum=closed", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["title"], "Boilers");
    // Paging.
    let page: Value = app
        .get("/api/v1/datasets?per_page=2&page=2&sort=title", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 4);
    let titles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["Reservoir levels", "Smart meters"]);
}

// ---- may nots -----------------------------------------------------------------

#[tokio::test]
async fn a_member_may_not_edit_or_register_for_another_organisation() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    app.post_json(
        "/api/v1/datasets",
        Some(&alice),
        &dataset("Substations", "city-energy", "open"),
    )
    .await;
    let res = app
        .patch_json(
            "/api/v1/datasets/substations",
            Some(&bob),
            &json!({"title": "Mine now"}),
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
    let res = app
        .patch_json(
            "/api/v1/datasets/substations",
            Some(&bob),
            &json!({"owner_organization_id": "water-co"}),
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
    let res = app
        .post_json(
            "/api/v1/datasets",
            Some(&bob),
            &dataset("Fake energy data", "city-energy", "open"),
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
    // Alice may not give her dataset away to an organisation she is not in.
    let res = app
        .patch_json(
            "/api/v1/datasets/substations",
            Some(&alice),
            &json!({"owner_organization_id": "water-co"}),
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
    let stored: Value = app
        .get("/api/v1/datasets/substations", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["title"], "Substations");
    assert_eq!(stored["owner_organization_id"], "city-energy");
    assert_eq!(stored["revision"], 1);
}

#[tokio::test]
async fn a_custodian_member_may_edit_but_not_reclassify() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    let mut d = dataset("Pipes", "city-energy", "shared_group");
    d["roles"] = json!([{"organization_id": "water-co", "role": "custodian"}]);
    app.post_json("/api/v1/datasets", Some(&alice), &d).await;
    let res = app
        .patch_json(
            "/api/v1/datasets/pipes",
            Some(&bob),
            &json!({"description": "Water pipes."}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .patch_json(
            "/api/v1/datasets/pipes",
            Some(&bob),
            &json!({"spectrum": "open"}),
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
}

#[tokio::test]
async fn anonymous_may_not_create_anything() {
    let app = TestApp::start().await;
    let before = app.stored_datasets().await;
    assert_problem(
        app.post_json(
            "/api/v1/datasets",
            None,
            &dataset("X", "city-energy", "open"),
        )
        .await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    assert_problem(
        app.patch_json("/api/v1/datasets/x", None, &json!({"title": "Y"}))
            .await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    let org = json!({"id": "evil", "name": "Evil Inc"});
    assert_problem(
        app.post_json("/api/v1/organizations", None, &org).await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    let user =
        json!({"username": "mallory", "display_name": "M", "password": "long enough password"});
    assert_problem(
        app.post_json("/api/v1/users", None, &user).await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    let group = json!({"id": "g", "name": "G", "criteria": "any"});
    assert_problem(
        app.post_json("/api/v1/groups", None, &group).await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    assert_problem(
        app.get("/api/v1/users", None).await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    assert_eq!(app.stored_datasets().await, before);
}

#[tokio::test]
async fn only_administrators_may_manage_accounts_and_organisations() {
    let app = TestApp::start().await;
    for who in ["alice", "resident", "trustee"] {
        let t = app.token(who).await;
        let org = json!({"id": "evil", "name": "Evil Inc"});
        assert_problem(
            app.post_json("/api/v1/organizations", Some(&t), &org).await,
            403,
            "forbidden",
            None,
        )
        .await;
        let user = json!({"username": "mallory", "display_name": "M", "password": "long enough password", "roles": ["administrator"]});
        assert_problem(
            app.post_json("/api/v1/users", Some(&t), &user).await,
            403,
            "forbidden",
            None,
        )
        .await;
        assert_problem(
            app.get("/api/v1/users", Some(&t)).await,
            403,
            "forbidden",
            None,
        )
        .await;
        let group = json!({"id": "g", "name": "G", "criteria": "any"});
        assert_problem(
            app.post_json("/api/v1/groups", Some(&t), &group).await,
            403,
            "forbidden",
            None,
        )
        .await;
    }
    // A resident or trustee (no organisation) may not register datasets.
    let t = app.token("resident").await;
    assert_problem(
        app.post_json(
            "/api/v1/datasets",
            Some(&t),
            &dataset("R", "city-energy", "open"),
        )
        .await,
        403,
        "forbidden",
        None,
    )
    .await;

    let admin = app.token("admin").await;
    let res = app
        .post_json(
            "/api/v1/organizations",
            Some(&admin),
            &json!({"id": "uni", "name": "University", "kind": "university"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let user = json!({"username": "carol", "display_name": "Carol", "password": "long enough password", "organization_ids": ["uni"]});
    let res = app.post_json("/api/v1/users", Some(&admin), &user).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert!(created.get("password").is_none() && created.get("password_hash").is_none());
    let res = app.post_json("/api/v1/users", Some(&admin), &user).await;
    assert_problem(res, 409, "conflict", None).await;
    let hash = app
        .service
        .store()
        .get_user("carol")
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    assert!(
        hash.starts_with("$argon2id$"),
        "passwords are hashed with argon2id"
    );
}

// ---- bad input ------------------------------------------------------------------

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let post = |body: Value| {
        let app = &app;
        let alice = alice.clone();
        async move { app.post_json("/api/v1/datasets", Some(&alice), &body).await }
    };
    let mut unknown = dataset("A", "city-energy", "open");
    unknown["colour"] = json!("red");
    assert_problem(
        post(unknown).await,
        422,
        "validation_failed",
        Some("colour"),
    )
    .await;

    let mut nested_unknown = dataset("A", "city-energy", "open");
    nested_unknown["licence"] = json!({"id": "CC0-1.0", "title": "CC0", "colour": "red"});
    assert_problem(
        post(nested_unknown).await,
        422,
        "validation_failed",
        Some("licence.colour"),
    )
    .await;

    let mut wrong_type = dataset("A", "city-energy", "open");
    wrong_type["personal_data"] = json!("yes");
    assert_problem(
        post(wrong_type).await,
        422,
        "validation_failed",
        Some("personal_data"),
    )
    .await;

    let mut wrong_type = dataset("A", "city-energy", "open");
    wrong_type["keywords"] = json!([1, 2]);
    assert_problem(
        post(wrong_type).await,
        422,
        "validation_failed",
        Some("keywords[0]"),
    )
    .await;

    let long = dataset(&"x".repeat(301), "city-energy", "open");
    assert_problem(post(long).await, 422, "validation_failed", Some("title")).await;

    let mut long_kw = dataset("A", "city-energy", "open");
    long_kw["keywords"] = json!(["ok", "k".repeat(200)]);
    assert_problem(
        post(long_kw).await,
        422,
        "validation_failed",
        Some("keywords[1]"),
    )
    .await;

    assert_problem(
        post(dataset("A", "city-energy", "secret")).await,
        422,
        "validation_failed",
        Some("spectrum"),
    )
    .await;
    let mut bad_theme = dataset("A", "city-energy", "open");
    bad_theme["themes"] = json!(["energy", "magic"]);
    assert_problem(
        post(bad_theme).await,
        422,
        "validation_failed",
        Some("themes[1]"),
    )
    .await;

    let missing = json!({"title": "A", "owner_organization_id": "city-energy", "spectrum": "open"});
    assert_problem(
        post(missing).await,
        422,
        "validation_failed",
        Some("description"),
    )
    .await;

    let mut bad_url = dataset("A", "city-energy", "open");
    bad_url["licence"] = json!({"id": "CC0-1.0", "title": "CC0", "url": "javascript:alert(1)"});
    assert_problem(
        post(bad_url).await,
        422,
        "validation_failed",
        Some("licence.url"),
    )
    .await;

    let mut bad_date = dataset("A", "city-energy", "open");
    bad_date["temporal_coverage"] = json!({"start": "2017-02-30"});
    assert_problem(
        post(bad_date).await,
        422,
        "validation_failed",
        Some("temporal_coverage.start"),
    )
    .await;

    assert_problem(
        post(dataset("A", "no-such-org", "open")).await,
        422,
        "validation_failed",
        Some("owner_organization_id"),
    )
    .await;

    let mut bad_id = dataset("A", "city-energy", "open");
    bad_id["id"] = json!("Not A Slug!");
    assert_problem(post(bad_id).await, 422, "validation_failed", Some("id")).await;

    let res = app
        .post_raw(
            "/api/v1/datasets",
            Some(&alice),
            "application/json",
            b"{\"title\": ".to_vec(),
        )
        .await;
    assert_problem(res, 400, "malformed_json", None).await;
    let trailing = format!("{} {{}}", dataset("A", "city-energy", "open"));
    let res = app
        .post_raw(
            "/api/v1/datasets",
            Some(&alice),
            "application/json",
            trailing.into_bytes(),
        )
        .await;
    assert_problem(res, 400, "malformed_json", None).await;
    let res = app
        .post_raw(
            "/api/v1/datasets",
            Some(&alice),
            "text/plain",
            b"{}".to_vec(),
        )
        .await;
    assert_problem(res, 415, "unsupported_media_type", None).await;

    let mut huge = dataset("A", "city-energy", "open");
    huge["description"] = json!("x".repeat(2 * 1024 * 1024));
    let res = app
        .post_raw(
            "/api/v1/datasets",
            Some(&alice),
            "application/json",
            huge.to_string().into_bytes(),
        )
        .await;
    assert_problem(res, 413, "body_too_large", None).await;

    // Bad query parameters are named too.
    assert_problem(
        app.get("/api/v1/datasets?spectrum=secret", None).await,
        400,
        "invalid_parameter",
        Some("spectrum"),
    )
    .await;
    assert_problem(
        app.get("/api/v1/datasets?per_page=1000", None).await,
        400,
        "invalid_parameter",
        Some("per_page"),
    )
    .await;
    assert_problem(
        app.get("/api/v1/datasets?page=-1", None).await,
        400,
        "invalid_parameter",
        Some("page"),
    )
    .await;
    assert_problem(
        app.get("/api/v1/datasets?colour=red", None).await,
        400,
        "invalid_parameter",
        Some("colour"),
    )
    .await;

    assert_eq!(
        app.stored_datasets().await,
        0,
        "no refused request wrote anything"
    );

    // A patch that breaks validation leaves the entry as it was.
    app.post_json(
        "/api/v1/datasets",
        Some(&alice),
        &dataset("Kept", "city-energy", "open"),
    )
    .await;
    let res = app
        .patch_json(
            "/api/v1/datasets/kept",
            Some(&alice),
            &json!({"title": "", "spectrum": "nope"}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("spectrum")).await;
    let res = app
        .patch_json("/api/v1/datasets/kept", Some(&alice), &json!({"title": ""}))
        .await;
    assert_problem(res, 422, "validation_failed", Some("title")).await;
    let res = app
        .patch_json(
            "/api/v1/datasets/kept",
            Some(&alice),
            &json!({"id": "renamed"}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("id")).await;
    let kept: Value = app
        .get("/api/v1/datasets/kept", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (kept["title"].as_str(), kept["revision"].as_i64()),
        (Some("Kept"), Some(1))
    );
}

#[tokio::test]
async fn unknown_things_are_404_problems() {
    let app = TestApp::start().await;
    assert_problem(
        app.get("/api/v1/datasets/nope", None).await,
        404,
        "not_found",
        None,
    )
    .await;
    assert_problem(
        app.get("/api/v1/datasets/..%2F..%2Fetc", None).await,
        404,
        "not_found",
        None,
    )
    .await;
    assert_problem(
        app.get("/api/v1/nothing-here", None).await,
        404,
        "not_found",
        None,
    )
    .await;
    let res = app
        .client
        .delete(app.url("/api/v1/datasets"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test]
async fn health_metrics_openapi_and_tracing() {
    let app = TestApp::start().await;
    let res = app.get("/healthz", None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("x-request-id").is_some(),
        "every response carries a request id"
    );
    app.get("/api/v1/datasets", None).await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("citytrust_http_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citytrust_catalogue_datasets"),
        "{metrics}"
    );
    let doc: Value = app
        .get("/api/openapi.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/auth/token",
        "/api/v1/datasets",
        "/api/v1/datasets/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}
