//! Streams over NGSI-LD (issue 26), over real HTTP: write credentials,
//! entity and batch operations, queries, and reads governed exactly as
//! downloads are (purpose, agreement, charter, the log before the bytes).

use reqwest::Response;
use serde_json::{Value, json};
use sha2::Digest;

use crate::governance::{approved, start};
use crate::harness::{TestApp, dataset};

const NGSI: &str = "/ngsi-ld/v1";
const LD_JSON: &str = "application/ld+json";

pub(crate) fn station(n: u32, no2: f64) -> Value {
    json!({
        "id": format!("urn:ngsi-ld:AirQualityObserved:station-{n}"),
        "type": "AirQualityObserved",
        "NO2": {"type": "Property", "value": no2, "unitCode": "GQ", "observedAt": "2017-11-01T10:00:00Z"},
        "stationName": {"type": "Property", "value": format!("Station {n}")},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.15 + f64::from(n) / 100.0, 41.39]}},
    })
}

/// A stream dataset owned by city-energy, and a write credential for it.
pub(crate) async fn stream(
    app: &TestApp,
    owner_token: &str,
    title: &str,
    spectrum: &str,
) -> (String, String) {
    let mut body = dataset(title, "city-energy", spectrum);
    body["structure"] = json!("real_time");
    body["stream"] = json!({"entity_types": ["AirQualityObserved"], "retention_days": 30});
    let id = app.create_dataset(owner_token, &body).await;
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/stream-credentials"),
            Some(owner_token),
            &json!({"label": "Gateway 1"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let issued: Value = res.json().await.unwrap();
    let token = issued["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ctw_"));
    (id, token)
}

/// A household's electricity meter, naming its household (the subject key).
pub(crate) fn meter(n: u32, power: f64) -> Value {
    json!({
        "id": format!("urn:ngsi-ld:ElectricityMeter:M-{n}"),
        "type": "ElectricityMeter",
        "household": {"type": "Property", "value": format!("H-{n}")},
        "activePower": {"type": "Property", "value": power, "unitCode": "KWT", "observedAt": "2026-03-01T10:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.15 + f64::from(n) / 100.0, 41.39]}},
    })
}

/// A personal stream of city-energy's household meters (M-1 … M-3 written
/// by its device credential), H-2 linked to `resident` and H-3 to
/// `neighbour`, both consenting to research by the university, and the
/// university's consent-based research agreement. Returns the stream, the
/// device's credential and the agreement.
pub(crate) async fn personal_stream(app: &TestApp) -> (String, String, String) {
    let alice = app.token("alice").await;
    let mut body = dataset("Household meters, live", "city-energy", "shared_specific");
    body["structure"] = json!("real_time");
    body["stream"] = json!({"entity_types": ["ElectricityMeter"], "retention_days": 30});
    body["personal_data"] = json!(true);
    body["column_classes"] = json!({"personal": ["household"]});
    body["personal_terms"] = json!({
        "subject_key": "household",
        "purposes": [
            {"purpose": "research", "basis": "consent", "notice": "Researchers may study your readings."},
            {"purpose": "city-operations", "basis": "public_task", "notice": "The city plans the grid."}
        ],
        "retention": "P30D",
        "notice": "Your household's live readings."
    });
    let id = app.create_dataset(&alice, &body).await;
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/stream-credentials"),
            Some(&alice),
            &json!({"label": "Meter gateway"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let device = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 1..=3 {
        let res = post(
            app,
            &format!("{NGSI}/entities"),
            Some(&device),
            &meter(n, 1.5),
        )
        .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    app.service
        .insert_user(crate::harness::user(
            "neighbour",
            vec![citytrust_model::Role::Resident],
            vec![],
        ))
        .await
        .unwrap();
    // The stream's writes put its households in the subject index: the
    // owner can link them.
    for (who, key) in [("resident", "H-2"), ("neighbour", "H-3")] {
        crate::residents::link_with_code(app, &alice, &id, who, key).await;
        let token = app.token(who).await;
        let res = app
            .post_json(
                "/api/v1/me/consents",
                Some(&token),
                &json!({"dataset_id": id, "purpose": "research", "recipient_organization_id": "uni"}),
            )
            .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let agreement = crate::residents::research_agreement(app, &id).await;
    (id, device, agreement)
}

pub(crate) async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut r = app.client.request(method, app.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    r.send().await.unwrap()
}

pub(crate) async fn post(app: &TestApp, path: &str, token: Option<&str>, body: &Value) -> Response {
    send(app, reqwest::Method::POST, path, token, Some(body)).await
}

pub(crate) async fn get(app: &TestApp, path: &str, token: Option<&str>) -> Response {
    send(app, reqwest::Method::GET, path, token, None).await
}

/// An NGSI-LD problem with this status and error type; returns its body.
pub(crate) async fn ngsi_problem(res: Response, status: u16, kind: &str) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert_eq!(
        body["type"],
        format!("https://uri.etsi.org/ngsi-ld/errors/{kind}"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// A refusal naming its rule and nothing of the data.
async fn refused(res: Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    for secret in ["Station 1", "42.5", "2.16"] {
        assert!(!text.contains(secret), "{text}");
    }
    serde_json::from_str(&text).unwrap()
}

/// The answer's log entry exists, and commits to exactly the bytes served.
async fn logged_before_served(app: &TestApp, res: Response) -> Value {
    let index: i64 = res.headers()["citytrust-log-entry"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let nonce = res.headers()["citytrust-log-nonce"]
        .to_str()
        .unwrap()
        .to_string();
    let body = res.bytes().await.unwrap();
    let entry = app
        .service
        .store()
        .ledger_entry(index)
        .await
        .unwrap()
        .unwrap();
    let entry: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(entry["type"], "stream.read", "{entry}");
    let digest: String = sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        entry["commitment"],
        citytrust_service::content::commitment("served", &nonce, &digest).as_str()
    );
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn a_stream_is_fed_by_its_credential_and_read_only_under_an_agreement_for_its_purpose() {
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let (air, device) = stream(&app, &alice, "Air quality", "shared_specific").await;

    // The device writes: one entity, then a batch upsert.
    let res = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&device),
        &station(1, 42.5),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/upsert"),
        Some(&device),
        &json!([station(2, 17.0), station(3, 61.0)]),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
    // Every reading is kept, and the write is logged.
    let written = app.entries_of_type("stream.written").await;
    assert_eq!(written.len(), 2);
    assert!(
        written[1].contains(&format!("\"dataset\":\"{air}\"")),
        "{}",
        written[1]
    );

    // A write credential reads nothing, even what it wrote.
    let body = refused(
        get(
            &app,
            &format!("{NGSI}/entities?type=AirQualityObserved"),
            Some(&device),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "write-credential-only-writes");
    // Nobody reads a shared stream anonymously, or without an agreement.
    refused(
        get(
            &app,
            &format!("{NGSI}/entities?type=AirQualityObserved"),
            None,
        )
        .await,
        401,
    )
    .await;
    refused(
        get(
            &app,
            &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1"),
            None,
        )
        .await,
        401,
    )
    .await;
    refused(
        get(
            &app,
            &format!("{NGSI}/entities?type=AirQualityObserved&purpose=research"),
            Some(&analyst),
        )
        .await,
        403,
    )
    .await;

    // The trustees grant the analyst's organisation research use.
    approved(&app, &analyst, &[&air], "research").await;

    let res = get(
        &app,
        &format!("{NGSI}/entities?type=AirQualityObserved&purpose=research&q=NO2>40&count=true"),
        Some(&analyst),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["ngsild-results-count"], "2");
    assert!(
        res.headers()["link"]
            .to_str()
            .unwrap()
            .contains("ngsi-ld-core-context")
    );
    let entities = logged_before_served(&app, res).await;
    let ids: Vec<&str> = entities
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "urn:ngsi-ld:AirQualityObserved:station-1",
            "urn:ngsi-ld:AirQualityObserved:station-3"
        ]
    );
    assert_eq!(entities[0]["NO2"]["value"], 42.5);
    let read = app.entries_of_type("stream.read").await;
    let last: Value = serde_json::from_str(read.last().unwrap()).unwrap();
    assert_eq!(last["streams"][0]["dataset"], air.as_str());
    assert_eq!(last["streams"][0]["purpose"], "research");
    assert_eq!(last["streams"][0]["rule"], "agreement-in-force");
    assert_eq!(last["by"], "organization:uni");

    // One entity, by the header's purpose, in keyValues.
    let res = app
        .client
        .get(app.url(&format!(
            "{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-2?options=keyValues"
        )))
        .bearer_auth(&analyst)
        .header("CityTrust-Purpose", "research")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let e = logged_before_served(&app, res).await;
    assert_eq!(e["NO2"], 17.0);
    assert_eq!(e["location"]["type"], "Point");

    // Another purpose, or after the agreement's end: refused, naming no data.
    refused(
        get(
            &app,
            &format!("{NGSI}/entities?type=AirQualityObserved&purpose=innovation"),
            Some(&analyst),
        )
        .await,
        403,
    )
    .await;
    app.clock.advance(time::Duration::days(40));
    let (alice, analyst) = (app.token("alice").await, app.token("analyst").await);
    refused(
        get(
            &app,
            &format!("{NGSI}/entities?type=AirQualityObserved&purpose=research"),
            Some(&analyst),
        )
        .await,
        403,
    )
    .await;

    // The owner's members list the credential (never its token) and revoke it; it then writes nothing.
    let list: Value = app
        .get(
            &format!("/api/v1/datasets/{air}/stream-credentials"),
            Some(&alice),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["label"], "Gateway 1");
    assert!(!list.to_string().contains("ctw_"));
    let analyst_list = app
        .get(
            &format!("/api/v1/datasets/{air}/stream-credentials"),
            Some(&analyst),
        )
        .await;
    assert_eq!(analyst_list.status(), 403);
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(
        app.delete(
            &format!("/api/v1/datasets/{air}/stream-credentials/{id}"),
            Some(&alice)
        )
        .await
        .status(),
        204
    );
    let res = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&device),
        &station(9, 1.0),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        app.entries_of_type("stream.credential_revoked").await.len(),
        1
    );
}

#[tokio::test]
async fn a_batch_builds_each_entity_on_what_it_held_and_on_its_own_earlier_entries() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    let batch = |body: Value| {
        let (app, device) = (&app, &device);
        async move {
            let res = post(
                app,
                &format!("{NGSI}/entityOperations/upsert?options=update"),
                Some(device),
                &body,
            )
            .await;
            // 201 when it created an entity, 204 when it only updated.
            assert!(
                [201, 204].contains(&res.status().as_u16()),
                "{}",
                res.text().await.unwrap()
            );
        }
    };
    batch(json!([station(1, 10.0), station(2, 20.0)])).await;
    let id = |n: u32| format!("urn:ngsi-ld:AirQualityObserved:station-{n}");
    let part = |n: u32, attr: &str, value: f64| json!({"id": id(n), "type": "AirQualityObserved", attr: {"type": "Property", "value": value}});
    // Station 1 named once (its entity as held, taken by the write), station
    // 2 twice: the second entry lays its attribute over the first's result.
    batch(json!([
        part(1, "O3", 31.0),
        part(2, "O3", 32.0),
        part(2, "NO2", 22.0)
    ]))
    .await;
    for (n, no2, o3) in [(1, 10.0, 31.0), (2, 22.0, 32.0)] {
        let res = get(
            &app,
            &format!("{NGSI}/entities/{}?options=keyValues", id(n)),
            None,
        )
        .await;
        assert_eq!(res.status(), 200);
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["NO2"], no2, "{e}");
        assert_eq!(e["O3"], o3, "{e}");
        assert_eq!(e["stationName"], format!("Station {n}"), "{e}");
    }
    // An entry that fails once its entity is read (noOverwrite, and every
    // attribute it names is held) leaves that entity as it was, also for a
    // later entry naming it again; the batch's other entries are written.
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/update?options=noOverwrite"),
        Some(&device),
        &json!([
            part(1, "NO2", 99.0),
            part(2, "SO2", 5.0),
            part(1, "CO", 3.0)
        ]),
    )
    .await;
    assert_eq!(res.status(), 207, "{}", res.text().await.unwrap());
    for (n, attr, value) in [
        (1, "NO2", json!(10.0)),
        (1, "O3", json!(31.0)),
        (1, "CO", json!(3.0)),
        (1, "stationName", json!("Station 1")),
        (2, "SO2", json!(5.0)),
    ] {
        let e: Value = get(
            &app,
            &format!("{NGSI}/entities/{}?options=keyValues", id(n)),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(e[attr], value, "{e}");
    }
}

#[tokio::test]
async fn an_open_stream_answers_anyone_in_the_forms_ngsi_ld_defines() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    for n in 1..=5 {
        let res = post(
            &app,
            &format!("{NGSI}/entities/"),
            Some(&device),
            &station(n, f64::from(n) * 10.0),
        )
        .await;
        assert_eq!(res.status(), 201);
        assert_eq!(
            res.headers()["location"],
            format!("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:station-{n}").as_str()
        );
    }
    // Paging, counting, attribute projection, id patterns.
    let res = get(
        &app,
        &format!("{NGSI}/entities?type=AirQualityObserved&limit=2&offset=1&count=true&attrs=NO2"),
        None,
    )
    .await;
    assert_eq!(res.headers()["ngsild-results-count"], "5");
    let page = logged_before_served(&app, res).await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0]["id"], "urn:ngsi-ld:AirQualityObserved:station-2");
    assert!(page[0].get("stationName").is_none());
    let res = get(
        &app,
        &format!("{NGSI}/entities?idPattern=station-%5B45%5D%24&type=AirQualityObserved"),
        None,
    )
    .await;
    assert_eq!(
        res.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
    // application/ld+json carries the context in the body.
    let res = app
        .client
        .get(app.url(&format!(
            "{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1?options=sysAttrs"
        )))
        .header("accept", LD_JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], LD_JSON);
    let e: Value = res.json().await.unwrap();
    assert!(e["@context"].as_str().unwrap().contains("core-context"));
    assert!(e["NO2"]["createdAt"].is_string());

    // Attributes: update (and add, as the conformance suite has it; a scope
    // only where there is one: 207), append, patch, delete.
    let base = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    let res = send(
        &app,
        reqwest::Method::PATCH,
        &base,
        Some(&device),
        Some(&json!({"NO2": 99, "scope": "/Barcelona/Eixample"})),
    )
    .await;
    assert_eq!(res.status(), 207);
    let body: Value = res.json().await.unwrap();
    // Names expanded, as the UpdateResult carries them.
    assert_eq!(
        body["updated"],
        json!(["https://uri.etsi.org/ngsi-ld/default-context/NO2"])
    );
    assert_eq!(body["notUpdated"][0]["attributeName"], "scope");
    assert_eq!(
        post(&app, &base, Some(&device), &json!({"O3": 5}))
            .await
            .status(),
        204
    );
    let res = post(
        &app,
        &format!("{base}?options=noOverwrite"),
        Some(&device),
        &json!({"O3": 6}),
    )
    .await;
    assert_eq!(res.status(), 207);
    let res = send(
        &app,
        reqwest::Method::PATCH,
        &format!("{base}/O3"),
        Some(&device),
        Some(&json!({"value": 7})),
    )
    .await;
    assert_eq!(res.status(), 204);
    let e: Value = get(
        &app,
        &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1?options=keyValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!((e["NO2"].clone(), e["O3"].clone()), (json!(99), json!(7)));
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("{base}/O3"),
            Some(&device),
            None
        )
        .await
        .status(),
        204
    );
    ngsi_problem(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("{base}/O3"),
            Some(&device),
            None,
        )
        .await,
        404,
        "ResourceNotFound",
    )
    .await;
    // Every accepted update is kept as history.
    let history = app
        .service
        .store()
        .entity_history(
            "urn:ngsi-ld:AirQualityObserved:station-1",
            None,
            None,
            None,
            1000,
        )
        .await
        .unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|h| h.attribute.ends_with("/NO2"))
            .count(),
        2
    );
    assert_eq!(
        history
            .iter()
            .filter(|h| h.attribute.ends_with("/O3"))
            .count(),
        // Two readings, and its deletion (what `timeproperty=deletedAt` reads).
        3
    );

    // Batch delete, and a delete of what is gone.
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/delete"),
        Some(&device),
        &json!([
            "urn:ngsi-ld:AirQualityObserved:station-4",
            "urn:ngsi-ld:AirQualityObserved:nowhere"
        ]),
    )
    .await;
    assert_eq!(res.status(), 207);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["success"],
        json!(["urn:ngsi-ld:AirQualityObserved:station-4"])
    );
    assert_eq!(
        body["errors"][0]["entityId"],
        "urn:ngsi-ld:AirQualityObserved:nowhere"
    );
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-5"),
            Some(&device),
            None
        )
        .await
        .status(),
        204
    );
    ngsi_problem(
        get(
            &app,
            &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-5"),
            None,
        )
        .await,
        404,
        "ResourceNotFound",
    )
    .await;
}

#[tokio::test]
async fn bad_ngsi_ld_input_gets_a_clear_error_and_changes_nothing() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    let entities = format!("{NGSI}/entities");
    // Malformed JSON says where.
    let res = app
        .client
        .post(app.url(&entities))
        .bearer_auth(&device)
        .header("content-type", "application/json")
        .body("{\"id\": \"urn:a\",\n \"type\": }")
        .send()
        .await
        .unwrap();
    let body = ngsi_problem(res, 400, "InvalidRequest").await;
    assert!(
        body["detail"].as_str().unwrap().contains("line 2"),
        "{body}"
    );
    // An unknown remote context is not fetched.
    let mut e = station(1, 1.0);
    e["@context"] = json!("https://example.org/unknown-context.jsonld");
    let res = app
        .client
        .post(app.url(&entities))
        .bearer_auth(&device)
        .header("content-type", LD_JSON)
        .body(e.to_string())
        .send()
        .await
        .unwrap();
    ngsi_problem(res, 503, "LdContextNotAvailable").await;
    // A context in both the Link header and the body, or in a plain JSON body.
    let res = app
        .client
        .post(app.url(&entities))
        .bearer_auth(&device)
        .header("content-type", "application/json")
        .body(e.to_string())
        .send()
        .await
        .unwrap();
    ngsi_problem(res, 400, "BadRequestData").await;
    // Attributes of the wrong shape name the attribute.
    let mut bad = station(1, 1.0);
    bad["location"] =
        json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": ["east", 41.0]}});
    let body = ngsi_problem(
        post(&app, &entities, Some(&device), &bad).await,
        400,
        "BadRequestData",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("location"),
        "{body}"
    );
    // A type the stream does not hold.
    let mut vehicle = station(1, 1.0);
    vehicle["type"] = json!("Vehicle");
    ngsi_problem(
        post(&app, &entities, Some(&device), &vehicle).await,
        400,
        "BadRequestData",
    )
    .await;
    // Not JSON at all.
    let res = app
        .client
        .post(app.url(&entities))
        .bearer_auth(&device)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert!(app.entries_of_type("stream.written").await.is_empty());

    // A batch with some bad entities: 207 naming each, the good ones written.
    let mut wrong = station(3, 1.0);
    wrong["NO2"] = json!({"type": "Relationship", "object": 5});
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/create"),
        Some(&device),
        &json!([station(1, 1.0), station(2, 2.0), wrong, {"type": "AirQualityObserved"}]),
    )
    .await;
    assert_eq!(res.status(), 207);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["success"].as_array().unwrap().len(), 2);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors[0]["entityId"],
        "urn:ngsi-ld:AirQualityObserved:station-3"
    );
    assert!(
        errors[0]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("NO2")
    );
    // Creating what exists: 409, and in a batch an error of its own.
    ngsi_problem(
        post(&app, &entities, Some(&device), &station(1, 5.0)).await,
        409,
        "AlreadyExists",
    )
    .await;
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/create"),
        Some(&device),
        &json!([station(1, 5.0)]),
    )
    .await;
    assert_eq!(res.status(), 207);
    // An oversized batch is refused whole.
    let many: Vec<Value> = (0..1001).map(|n| station(100 + n, 1.0)).collect();
    ngsi_problem(
        post(
            &app,
            &format!("{NGSI}/entityOperations/upsert"),
            Some(&device),
            &json!(many),
        )
        .await,
        400,
        "BadRequestData",
    )
    .await;
    let e: Value = get(
        &app,
        &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1?options=keyValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(e["NO2"], 1.0);
    assert!(
        get(
            &app,
            &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-100"),
            None
        )
        .await
        .status()
            == 404
    );
    // A malformed query says what.
    ngsi_problem(
        get(
            &app,
            &format!("{NGSI}/entities?type=AirQualityObserved&q=NO2%3E"),
            None,
        )
        .await,
        400,
        "BadRequestData",
    )
    .await;
    ngsi_problem(
        get(&app, &format!("{NGSI}/entities"), None).await,
        400,
        "BadRequestData",
    )
    .await;
}

#[tokio::test]
async fn only_the_owner_writes_a_stream_and_a_credential_only_its_own() {
    let app = start().await;
    let alice = app.token("alice").await;
    let bob = app.token("bob").await;
    let (_, device) = stream(&app, &alice, "Air one", "open").await;
    let (other, other_device) = stream(&app, &alice, "Air two", "open").await;
    assert_eq!(
        post(
            &app,
            &format!("{NGSI}/entities"),
            Some(&device),
            &station(1, 1.0)
        )
        .await
        .status(),
        201
    );
    // Another organisation's member: neither creates nor changes.
    let res = app
        .client
        .post(app.url(&format!("{NGSI}/entities")))
        .bearer_auth(&bob)
        .header("content-type", "application/json")
        .header("CityTrust-Stream", other.as_str())
        .body(station(2, 1.0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let base = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    assert_eq!(
        post(&app, &base, Some(&bob), &json!({"NO2": 2}))
            .await
            .status(),
        403
    );
    // Anonymous callers write nothing.
    assert_eq!(
        post(&app, &base, None, &json!({"NO2": 2})).await.status(),
        401
    );
    // The other stream's credential cannot touch this stream's entity.
    assert_eq!(
        post(&app, &base, Some(&other_device), &json!({"NO2": 2}))
            .await
            .status(),
        403
    );
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1"),
            Some(&other_device),
            None
        )
        .await
        .status(),
        403
    );
    // A token that is no credential is refused, not taken for anonymous.
    assert_eq!(
        post(&app, &base, Some("ctw_0000"), &json!({"NO2": 2}))
            .await
            .status(),
        401
    );
    // The owner's member writes with the stream named, or found by type when only one holds it.
    let res = app
        .client
        .post(app.url(&format!("{NGSI}/entities")))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .header("CityTrust-Stream", other.as_str())
        .body(station(2, 1.0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let ambiguous = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&alice),
        &station(3, 1.0),
    )
    .await;
    let body = ngsi_problem(ambiguous, 400, "BadRequestData").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("CityTrust-Stream")
    );
    let e: Value = get(
        &app,
        &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1?options=keyValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(e["NO2"], 1.0);
}

#[tokio::test]
async fn latest_values_answer_geo_queries_and_history_answers_temporal_ones() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    let (shared, shared_device) = stream(&app, &alice, "Shared air", "shared_specific").await;
    // Stations 1..3 near Plaça de Catalunya (2.16–2.18, 41.39), 4 far away.
    for n in 1..=3 {
        assert_eq!(
            post(
                &app,
                &format!("{NGSI}/entities"),
                Some(&device),
                &station(n, 10.0)
            )
            .await
            .status(),
            201
        );
    }
    let mut far = station(4, 10.0);
    far["location"]["value"]["coordinates"] = json!([2.80, 41.98]);
    assert_eq!(
        post(&app, &format!("{NGSI}/entities"), Some(&device), &far)
            .await
            .status(),
        201
    );
    let near = "georel=near%3BmaxDistance%3D%3D3000&geometry=Point&coordinates=%5B2.17%2C41.39%5D";
    let res = get(
        &app,
        &format!("{NGSI}/entities?type=AirQualityObserved&{near}&count=true"),
        None,
    )
    .await;
    assert_eq!(res.headers()["ngsild-results-count"], "3");
    // The shared stream of the same type answers no anonymous caller, and says so.
    assert_eq!(res.headers()["citytrust-withheld-streams"], shared.as_str());
    let box_ = "georel=within&geometry=Polygon&coordinates=%5B%5B%5B2.7%2C41.9%5D%2C%5B2.9%2C41.9%5D%2C%5B2.9%2C42.1%5D%2C%5B2.7%2C42.1%5D%2C%5B2.7%2C41.9%5D%5D%5D";
    let found: Value = get(
        &app,
        &format!("{NGSI}/entities?type=AirQualityObserved&{box_}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(found[0]["id"], "urn:ngsi-ld:AirQualityObserved:station-4");
    ngsi_problem(get(&app, &format!("{NGSI}/entities?type=AirQualityObserved&georel=within&geometry=Point&coordinates=%5B1%2C2%5D"), None).await, 400, "BadRequestData").await;

    // Three hours of readings, one every 20 minutes.
    let attrs = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    for i in 0..9u32 {
        let at = format!("2017-11-01T{:02}:{:02}:00Z", 10 + i / 3, (i % 3) * 20);
        let body = json!({"NO2": {"type": "Property", "value": f64::from(i), "observedAt": at}});
        assert_eq!(
            send(
                &app,
                reqwest::Method::PATCH,
                &attrs,
                Some(&device),
                Some(&body)
            )
            .await
            .status(),
            204
        );
    }
    let one = format!("{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:station-1");
    let res = get(&app, &format!("{one}?timerel=between&timeAt=2017-11-01T11:00:00Z&endTimeAt=2017-11-01T12:00:00Z&options=temporalValues&attrs=NO2"), None).await;
    assert_eq!(res.status(), 200);
    let t = logged_before_served(&app, res).await;
    assert_eq!(
        t["NO2"]["values"],
        json!([
            [3.0, "2017-11-01T11:00:00Z"],
            [4.0, "2017-11-01T11:20:00Z"],
            [5.0, "2017-11-01T11:40:00Z"]
        ])
    );
    let t: Value = get(&app, &format!("{one}?lastN=2&attrs=NO2"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["NO2"].as_array().unwrap().len(), 2);
    assert_eq!(t["NO2"][1]["value"], 8.0);
    let t: Value = get(
        &app,
        &format!("{one}?timerel=after&timeAt=2017-11-01T10:00:00Z&options=aggregatedValues&aggrMethods=avg,max,totalCount&aggrPeriodDuration=PT1H&attrs=NO2"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    // The first hour holds the reading the entity was created with (10.0 at 10:00) too.
    assert_eq!(t["NO2"]["avg"][0][0], 3.25);
    assert_eq!(t["NO2"]["totalCount"][0][0], 4);
    assert_eq!(t["NO2"]["avg"][2][0], 7.0);
    assert_eq!(t["NO2"]["totalCount"][1][0], 3);
    let all: Value = get(
        &app,
        &format!("{NGSI}/temporal/entities?type=AirQualityObserved&lastN=1"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 4);
    ngsi_problem(
        get(
            &app,
            &format!("{one}?timerel=between&timeAt=2017-11-01T11:00:00Z"),
            None,
        )
        .await,
        400,
        "BadRequestData",
    )
    .await;

    // A shared stream's history is no more open than its latest values.
    let mut s = station(7, 3.0);
    s["id"] = json!("urn:ngsi-ld:AirQualityObserved:shared-7");
    assert_eq!(
        post(&app, &format!("{NGSI}/entities"), Some(&shared_device), &s)
            .await
            .status(),
        201
    );
    refused(
        get(
            &app,
            &format!("{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:shared-7"),
            None,
        )
        .await,
        401,
    )
    .await;
    let analyst = app.token("analyst").await;
    refused(
        get(
            &app,
            &format!(
                "{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:shared-7?purpose=research"
            ),
            Some(&analyst),
        )
        .await,
        403,
    )
    .await;
}

/// Notifications received by a local endpoint: (log entry header, nonce, body).
pub(crate) type Received =
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, axum::body::Bytes)>>>;

/// A local HTTP endpoint that takes notifications at `/notify`.
pub(crate) async fn notification_listener() -> (String, Received) {
    let received: Received = Default::default();
    let keep = received.clone();
    let router = axum::Router::new().route(
        "/notify",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    keep.lock().unwrap().push((
                        h("citytrust-log-entry"),
                        h("citytrust-log-nonce"),
                        body,
                    ));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, received)
}

#[tokio::test]
async fn a_subscription_notifies_under_its_agreement_is_logged_first_and_stops_when_the_agreement_is_retired()
 {
    let app = start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let bob = app.token("bob").await;
    let (air, device) = stream(&app, &alice, "Air quality", "shared_specific").await;
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
    let (url, received) = notification_listener().await;
    let subscription = json!({
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "watchedAttributes": ["NO2"],
        "q": "NO2>40",
        "notification": {"endpoint": {"uri": url, "accept": "application/json"}, "format": "keyValues", "attributes": ["NO2"]},
    });
    let subs = format!("{NGSI}/subscriptions");
    // Nobody subscribes anonymously, nor without an agreement, nor with a write credential.
    assert_eq!(post(&app, &subs, None, &subscription).await.status(), 401);
    refused(
        post(
            &app,
            &format!("{subs}?purpose=research"),
            Some(&bob),
            &subscription,
        )
        .await,
        403,
    )
    .await;
    refused(
        post(
            &app,
            &format!("{subs}?purpose=research"),
            Some(&device),
            &subscription,
        )
        .await,
        403,
    )
    .await;

    let decided = approved(&app, &analyst, &[&air], "research").await;
    let agreement = decided["agreement_id"].as_str().unwrap().to_string();
    let res = post(
        &app,
        &format!("{subs}?purpose=research"),
        Some(&analyst),
        &subscription,
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let location = res.headers()["location"].to_str().unwrap().to_string();

    // A change it does not watch, or one its q does not match, owes nothing.
    let attrs = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&json!({"stationName": "Renamed"})),
    )
    .await;
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&json!({"NO2": 12.0})),
    )
    .await;
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 0);
    // One that matches is delivered, its log entry committed first.
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&json!({"NO2": 55.5})),
    )
    .await;
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 1);
    let (index, nonce, body) = received.lock().unwrap()[0].clone();
    let notification: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(notification["type"], "Notification");
    assert_eq!(
        notification["data"],
        json!([{"id": "urn:ngsi-ld:AirQualityObserved:station-1", "type": "AirQualityObserved", "NO2": 55.5}])
    );
    let entry = app
        .service
        .store()
        .ledger_entry(index.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let entry: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(entry["type"], "stream.notified");
    assert_eq!(entry["streams"][0]["agreement"], agreement.as_str());
    let digest: String = sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        entry["commitment"],
        citytrust_service::content::commitment("served", &nonce, &digest).as_str()
    );
    let s: Value = get(&app, &location, Some(&analyst))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["notification"]["timesSent"], 1);
    assert_eq!(s["status"], "active");
    // Another reader does not see it.
    assert_eq!(get(&app, &location, Some(&bob)).await.status(), 404);

    // An endpoint that cannot be reached: the notification stays owed.
    let mut unreachable = subscription.clone();
    unreachable["notification"]["endpoint"]["uri"] = json!("http://127.0.0.1:9/notify");
    let res = post(
        &app,
        &format!("{subs}?purpose=research"),
        Some(&analyst),
        &unreachable,
    )
    .await;
    let dead = res.headers()["location"].to_str().unwrap().to_string();
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&json!({"NO2": 60.0})),
    )
    .await;
    app.service.deliver_notifications().await.unwrap();
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 1);
    let s: Value = get(&app, &dead, Some(&analyst)).await.json().await.unwrap();
    assert!(s["notification"]["lastFailure"].is_string(), "{s}");
    assert_eq!(s["notification"]["status"], "failed");
    assert_eq!(received.lock().unwrap().len(), 2);

    // The trustees retire the agreement: the subscription expires, logged, and notifies nothing more.
    let trustee = app.token("trustee").await;
    let res = app
        .post_json(
            &format!("/api/v1/agreements/{agreement}/retire"),
            Some(&trustee),
            &json!({"reason": "Ended early."}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.service.expire_subscriptions().await.unwrap(), 2);
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&json!({"NO2": 70.0})),
    )
    .await;
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 0);
    assert_eq!(received.lock().unwrap().len(), 2);
    let s: Value = get(&app, &location, Some(&analyst))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["status"], "expired");
    assert_eq!(
        app.entries_of_type("stream.subscription_expired")
            .await
            .len(),
        2
    );
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 0);
}

/// The notification worker keeps its allow decisions from one pass to the
/// next while the store's governance revision stands still; each kind of
/// change a decision rests on moves it, and the very next pass decides
/// afresh: the subscription stops there, with no sweep run in between.
#[tokio::test]
async fn the_pass_after_a_governance_change_decides_afresh() {
    // Each change in a trust of its own; every one is tried, and those
    // that failed are named.
    let mut failed = Vec::new();
    for change in [
        "agreement retired",
        "charter forbids the purpose",
        "subscribing credential revoked",
        "stream no longer open",
    ] {
        use futures::FutureExt;
        if std::panic::AssertUnwindSafe(governance_change_between_passes(change))
            .catch_unwind()
            .await
            .is_err()
        {
            failed.push(change);
        }
    }
    assert!(failed.is_empty(), "not seen by the next pass: {failed:?}");
}

async fn governance_change_between_passes(change: &'static str) {
    let app = start().await;
    let alice = app.token("alice").await;
    let open = matches!(
        change,
        "subscribing credential revoked" | "stream no longer open"
    );
    let (air, device) = stream(
        &app,
        &alice,
        "Air quality",
        if open { "open" } else { "shared_specific" },
    )
    .await;
    let created = post(
        &app,
        &format!("{NGSI}/entities"),
        Some(&device),
        &station(1, 10.0),
    )
    .await;
    assert_eq!(created.status(), 201, "{change}");
    let (url, received) = notification_listener().await;
    let subscription = json!({
        "type": "Subscription",
        "entities": [{"type": "AirQualityObserved"}],
        "watchedAttributes": ["NO2"],
        "notification": {"endpoint": {"uri": url, "accept": "application/json"}, "format": "keyValues", "attributes": ["NO2"]},
    });
    let subs = format!("{NGSI}/subscriptions");
    // Who subscribes: an analyst under an agreement, a second write
    // credential of the open stream, or a signed-in reader of it.
    let (subscriber, path) = match change {
        "subscribing credential revoked" => {
            let issued: Value = app
                .post_json(
                    &format!("/api/v1/datasets/{air}/stream-credentials"),
                    Some(&alice),
                    &json!({"label": "Dashboard"}),
                )
                .await
                .json()
                .await
                .unwrap();
            (issued["token"].as_str().unwrap().to_string(), subs.clone())
        }
        "stream no longer open" => (app.token("bob").await, subs.clone()),
        _ => {
            let analyst = app.token("analyst").await;
            approved(&app, &analyst, &[&air], "research").await;
            (analyst, format!("{subs}?purpose=research"))
        }
    };
    let res = post(&app, &path, Some(&subscriber), &subscription).await;
    assert_eq!(res.status(), 201, "{change}: {}", res.text().await.unwrap());
    let location = res.headers()["location"].to_str().unwrap().to_string();

    // Signing in is no change a decision rests on, but it is done first.
    let trustee = app.token("trustee").await;
    // Two passes on one decision: writes and deliveries leave the
    // revision where it was (the second pass reuses the first's allow).
    let attrs = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    let store = app.service.store();
    let before = store.governance_revision().await.unwrap();
    for no2 in [55.0, 56.0] {
        send(
            &app,
            reqwest::Method::PATCH,
            &attrs,
            Some(&device),
            Some(&json!({"NO2": no2})),
        )
        .await;
        assert_eq!(
            app.service.deliver_notifications().await.unwrap(),
            1,
            "{change}"
        );
    }
    assert_eq!(received.lock().unwrap().len(), 2, "{change}");
    assert_eq!(
        store.governance_revision().await.unwrap(),
        before,
        "{change}"
    );

    match change {
        "agreement retired" => {
            let agreements = store.list_agreements(10).await.unwrap();
            let res = app
                .post_json(
                    &format!("/api/v1/agreements/{}/retire", agreements[0].id),
                    Some(&trustee),
                    &json!({"reason": "Ended early."}),
                )
                .await;
            assert_eq!(res.status(), 200, "{change}");
        }
        "charter forbids the purpose" => {
            let charter: Value = app.get("/api/v1/charter", None).await.json().await.unwrap();
            let text = format!(
                "{}\n@id(\"no-research\")\n@reason(\"test\")\nforbid (principal, action == CityTrust::Action::\"read\", resource)\nwhen {{ context.purpose == \"research\" }};\n",
                charter["text"].as_str().unwrap()
            );
            let res = app
                .put_json(
                    "/api/v1/charter",
                    Some(&trustee),
                    &json!({"text": text, "note": "no research reads"}),
                )
                .await;
            assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        }
        "subscribing credential revoked" => {
            let list: Value = app
                .get(
                    &format!("/api/v1/datasets/{air}/stream-credentials"),
                    Some(&alice),
                )
                .await
                .json()
                .await
                .unwrap();
            let id = list
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["label"] == "Dashboard")
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let res = app
                .delete(
                    &format!("/api/v1/datasets/{air}/stream-credentials/{id}"),
                    Some(&alice),
                )
                .await;
            assert_eq!(res.status(), 204, "{change}");
        }
        _ => {
            let res = app
                .patch_json(
                    &format!("/api/v1/datasets/{air}"),
                    Some(&alice),
                    &json!({"spectrum": "shared_specific"}),
                )
                .await;
            assert_eq!(res.status(), 200, "{change}: {}", res.text().await.unwrap());
        }
    }
    assert!(
        store.governance_revision().await.unwrap() > before,
        "{change}"
    );
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&json!({"NO2": 70.0})),
    )
    .await;
    assert_eq!(
        app.service.deliver_notifications().await.unwrap(),
        0,
        "{change}"
    );
    assert_eq!(received.lock().unwrap().len(), 2, "{change}");
    if change != "subscribing credential revoked" {
        let s: Value = get(&app, &location, Some(&subscriber))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(s["status"], "expired", "{change}: {s}");
    }
    assert_eq!(
        app.entries_of_type("stream.subscription_expired")
            .await
            .len(),
        1,
        "{change}"
    );
}

#[tokio::test]
async fn a_write_credential_reads_only_what_anyone_may_and_writes_in_basic_auth_too() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (_, open_device) = stream(&app, &alice, "Open air", "open").await;
    // Clients that take a broker URL with user info send the credential as Basic.
    let res = app
        .client
        .post(app.url(&format!("{NGSI}/entities")))
        .basic_auth("credential", Some(&open_device))
        .header("content-type", "application/json")
        .body(station(1, 5.0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // A Basic password that is no credential is refused, not taken for anonymous.
    let res = app
        .client
        .get(app.url(&format!("{NGSI}/entities?type=AirQualityObserved")))
        .basic_auth("credential", Some("ctw_0000"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The credential reads the open stream as anyone may.
    let res = get(
        &app,
        &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1"),
        Some(&open_device),
    )
    .await;
    assert_eq!(res.status(), 200);
    let entry = logged_before_served(&app, res).await;
    assert_eq!(entry["NO2"]["value"], 5.0);
    let last: Value =
        serde_json::from_str(app.entries_of_type("stream.read").await.last().unwrap()).unwrap();
    assert_eq!(last["by"], "public");
}

#[tokio::test]
async fn temporal_representations_are_written_and_pick_omit_and_bad_parameters_are_checked() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    let id = "urn:ngsi-ld:AirQualityObserved:temporal-1";
    let troe = json!({
        "id": id, "type": "AirQualityObserved",
        "NO2": [
            {"type": "Property", "value": 30, "observedAt": "2020-09-01T12:00:00Z"},
            {"type": "Property", "value": 50, "observedAt": "2020-09-01T14:00:00Z"},
            {"type": "Property", "value": 40, "observedAt": "2020-09-01T13:00:00Z"}
        ]
    });
    let res = post(
        &app,
        &format!("{NGSI}/temporal/entities"),
        Some(&device),
        &troe,
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    // The latest observation is the value; every instance is history.
    let e: Value = get(
        &app,
        &format!("{NGSI}/entities/{id}?options=keyValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(e["NO2"], 50);
    let t: Value = get(
        &app,
        &format!("{NGSI}/temporal/entities/{id}?options=temporalValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(t["NO2"]["values"].as_array().unwrap().len(), 3);
    let more =
        json!({"NO2": [{"type": "Property", "value": 10, "observedAt": "2020-09-01T11:00:00Z"}]});
    assert_eq!(
        post(
            &app,
            &format!("{NGSI}/temporal/entities/{id}/attrs"),
            Some(&device),
            &more
        )
        .await
        .status(),
        204
    );
    let e: Value = get(
        &app,
        &format!("{NGSI}/entities/{id}?options=keyValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        e["NO2"], 50,
        "an older observation does not replace the latest"
    );
    // pick and omit project; bad parameters say what is wrong.
    let e: Value = get(&app, &format!("{NGSI}/entities/{id}?pick=id,NO2"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        e.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["id", "NO2"]
    );
    let e: Value = get(&app, &format!("{NGSI}/entities/{id}?omit=NO2"), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(e.get("NO2").is_none() && e.get("type").is_some());
    for bad in ["format=bogus", "options=keyValues,bogus"] {
        ngsi_problem(
            get(&app, &format!("{NGSI}/entities/{id}?{bad}"), None).await,
            400,
            "InvalidRequest",
        )
        .await;
    }
    for bad in [
        "pick=id&attrs=NO2",
        "pick=NO2&omit=NO2",
        "pick=id,,NO2",
        "pick=id%3Bname",
    ] {
        ngsi_problem(
            get(&app, &format!("{NGSI}/entities/{id}?{bad}"), None).await,
            400,
            "BadRequestData",
        )
        .await;
    }
    for bad in [
        "lastN=0",
        "lastN=1.5",
        "timerel=during&timeAt=2020-09-01T11:00:00Z",
        "aggrPeriodDuration=P1X",
        "timeproperty=bogus",
    ] {
        ngsi_problem(
            get(&app, &format!("{NGSI}/temporal/entities/{id}?{bad}"), None).await,
            400,
            "BadRequestData",
        )
        .await;
    }
    // A query in a POST body, and the temporal one.
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/query"),
        None,
        &json!({"type": "Query", "entities": [{"type": "AirQualityObserved"}], "q": "NO2>45"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()[0]["id"], id);
    let res = post(
        &app,
        &format!("{NGSI}/temporal/entityOperations/query"),
        None,
        &json!({"type": "Query", "entities": [{"type": "AirQualityObserved"}], "temporalQ": {"timerel": "after", "timeAt": "2020-09-01T12:30:00Z"}}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()[0]["NO2"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Merge deletes with urn:ngsi-ld:null; an offset observedAt and nulls elsewhere are refused.
    let res = send(
        &app,
        reqwest::Method::PATCH,
        &format!("{NGSI}/entities/{id}"),
        Some(&device),
        Some(&json!({"NO2": "urn:ngsi-ld:null", "O3": 4})),
    )
    .await;
    assert_eq!(res.status(), 204);
    let e: Value = get(
        &app,
        &format!("{NGSI}/entities/{id}?options=keyValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(e.get("NO2").is_none() && e["O3"] == 4, "{e}");
    for bad in [
        json!({"id": "urn:x:1", "type": "AirQualityObserved", "NO2": {"type": "Property", "value": 1, "observedAt": "2020-09-01T12:00:00+01:00"}}),
        json!({"id": "urn:x:2", "type": "AirQualityObserved", "NO2": "urn:ngsi-ld:null"}),
        json!({"id": "urn:x:3", "type": "AirQualityObserved", "NO2": {"type": "Property", "value": {"a": null}}}),
        json!({"id": "urn:x:\u{200b}4", "type": "AirQualityObserved"}),
        json!({"id": "urn:x:5", "type": "AirQualityObserved", "observedAt": 3}),
    ] {
        ngsi_problem(
            post(&app, &format!("{NGSI}/entities"), Some(&device), &bad).await,
            400,
            "BadRequestData",
        )
        .await;
    }
}

#[tokio::test]
async fn no_subscriber_points_the_trust_at_its_own_network() {
    let app = crate::harness::TestApp::start_with(|s| s.private_notifications = false).await;
    let alice = app.token("alice").await;
    let (_, _device) = stream(&app, &alice, "Open air", "open").await;
    for endpoint in [
        "http://127.0.0.1:9/notify",
        "http://localhost:8080/",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:80/",
        "http://[fd00::1]/",
        "http://100.64.0.1/",
    ] {
        let body = json!({
            "type": "Subscription",
            "entities": [{"type": "AirQualityObserved"}],
            "notification": {"endpoint": {"uri": endpoint}},
        });
        let res = post(&app, &format!("{NGSI}/subscriptions"), Some(&alice), &body).await;
        let problem = ngsi_problem(res, 400, "BadRequestData").await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("private network"),
            "{endpoint}: {problem}"
        );
    }
    assert!(app.entries_of_type("stream.subscribed").await.is_empty());
}

/// The suite's options, end to end: ordering, scopes, NGSI-LD Null in an
/// update and a batch merge, type selectors, a temporal answer cut to a
/// page, deletion and periodic notifications.
#[tokio::test]
async fn ordering_scopes_nulls_pages_and_deletion_notifications_work_as_ngsi_ld_says() {
    let app = crate::harness::TestApp::start_with(|s| s.temporal_page = 5).await;
    let alice = app.token("alice").await;
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    for (n, no2, scope) in [
        (1, 30.0, "/Barcelona/Eixample"),
        (2, 10.0, "/Barcelona/Gracia"),
        (3, 20.0, "/Madrid/Centro"),
    ] {
        let mut e = station(n, no2);
        e["scope"] = json!(scope);
        assert_eq!(
            post(&app, &format!("{NGSI}/entities"), Some(&device), &e)
                .await
                .status(),
            201
        );
    }
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let q = |extra: &str| format!("{NGSI}/entities?type=AirQualityObserved{extra}");
    let v: Value = get(&app, &q("&orderBy=NO2;desc"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&v), ["1", "3", "2"]);
    let v: Value = get(
        &app,
        &q("&orderBy=location;dist-asc&orderFrom=%5B2.172,41.39%5D"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ids(&v), ["2", "3", "1"]);
    ngsi_problem(
        get(&app, &q("&orderBy=location;dist-asc"), None).await,
        400,
        "BadRequestData",
    )
    .await;
    let v: Value = get(&app, &q("&scopeQ=/Barcelona/%23"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&v), ["1", "2"]);
    let v: Value = get(&app, &q("&scopeQ=/%2B/Centro"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&v), ["3"]);
    // Pagination links name the pages either side.
    let res = get(&app, &q("&limit=1&offset=1&count=true"), None).await;
    let links: Vec<String> = res
        .headers()
        .get_all("link")
        .iter()
        .map(|l| l.to_str().unwrap().to_string())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.contains("offset=0") && l.contains("rel=\"prev\"")),
        "{links:?}"
    );
    assert!(
        links
            .iter()
            .any(|l| l.contains("offset=2") && l.contains("rel=\"next\"")),
        "{links:?}"
    );

    // Deletions are told to those who asked for them.
    let (url, received) = notification_listener().await;
    let sub = json!({"type": "Subscription", "entities": [{"type": "AirQualityObserved"}],
        "notificationTrigger": ["attributeDeleted", "entityDeleted"],
        "notification": {"endpoint": {"uri": url}}});
    assert_eq!(
        post(&app, &format!("{NGSI}/subscriptions"), Some(&device), &sub)
            .await
            .status(),
        201
    );
    // NGSI-LD Null deletes, in an update and in a batch merge.
    let one = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1");
    let res = send(
        &app,
        reqwest::Method::PATCH,
        &format!("{one}/attrs"),
        Some(&device),
        Some(&json!({"stationName": {"type": "Property", "value": "urn:ngsi-ld:null"}})),
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = post(&app, &format!("{NGSI}/entityOperations/merge"), Some(&device),
        &json!([{"id": "urn:ngsi-ld:AirQualityObserved:station-2", "type": "AirQualityObserved", "stationName": "urn:ngsi-ld:null"}])).await;
    assert_eq!(res.status(), 204);
    for n in [1, 2] {
        let e: Value = get(
            &app,
            &format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-{n}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert!(e.get("stationName").is_none(), "{e}");
    }
    // A type selector that does not match changes nothing.
    ngsi_problem(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("{one}?type=Building"),
            Some(&device),
            None,
        )
        .await,
        404,
        "ResourceNotFound",
    )
    .await;
    assert_eq!(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("{one}?type=AirQualityObserved"),
            Some(&device),
            None
        )
        .await
        .status(),
        204
    );
    app.service.deliver_notifications().await.unwrap();
    let got: Vec<Value> = received
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.2).unwrap())
        .collect();
    let data: Vec<&Value> = got
        .iter()
        .flat_map(|n| n["data"].as_array().unwrap())
        .collect();
    assert!(
        data.iter()
            .any(|d| d["stationName"]["value"] == "urn:ngsi-ld:null"
                && d["id"].as_str().unwrap().ends_with("-2")),
        "{got:?}"
    );
    assert!(
        data.iter()
            .any(|d| d["id"].as_str().unwrap().ends_with("-1") && d["deletedAt"].is_string()),
        "{got:?}"
    );

    // A temporal answer longer than a page is cut, and says where.
    let readings: Vec<Value> = (0..12)
        .map(|i| json!({"type": "Property", "value": i, "observedAt": format!("2020-01-01T00:{i:02}:00Z")}))
        .collect();
    let t = json!({"id": "urn:ngsi-ld:AirQualityObserved:station-7", "type": "AirQualityObserved", "NO2": readings});
    assert_eq!(
        post(
            &app,
            &format!("{NGSI}/temporal/entities"),
            Some(&device),
            &t
        )
        .await
        .status(),
        201
    );
    let res = get(
        &app,
        &format!("{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:station-7"),
        None,
    )
    .await;
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        "date-time 2020-01-01T00:00:00Z-2020-01-01T00:04:00Z/*"
    );
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["NO2"].as_array().unwrap().len(), 5);
    let res = get(
        &app,
        &format!("{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:station-7?lastN=3"),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);

    // A periodic subscription is told the matching entities as they are.
    let (url, received) = notification_listener().await;
    let sub = json!({"type": "Subscription", "entities": [{"type": "AirQualityObserved"}], "timeInterval": 60,
        "q": "NO2%3E15", "notification": {"endpoint": {"uri": url}, "format": "keyValues"}});
    assert_eq!(
        post(&app, &format!("{NGSI}/subscriptions"), Some(&device), &sub)
            .await
            .status(),
        201
    );
    app.service.deliver_notifications().await.unwrap();
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let n: Value = serde_json::from_slice(&got[0].2).unwrap();
    let mut told: Vec<String> = ids(&n["data"]);
    told.sort();
    assert_eq!(told, ["3"], "{n}");
    // Not again before its period.
    app.service.deliver_notifications().await.unwrap();
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn history_past_a_streams_retention_goes_logged_and_the_latest_values_stay() {
    let app = start().await;
    let alice = app.token("alice").await;
    // `stream` declares 30 days; the clock reads 2026-03-01T09:00Z.
    let (air, device) = stream(&app, &alice, "Open air", "open").await;
    let id = "urn:ngsi-ld:AirQualityObserved:kept-1";
    let at = |day: &str| format!("{day}T12:00:00Z");
    let troe = json!({
        "id": id, "type": "AirQualityObserved",
        "NO2": [
            {"type": "Property", "value": 10, "observedAt": at("2026-01-10")},
            {"type": "Property", "value": 20, "observedAt": at("2026-01-29")},
            {"type": "Property", "value": 30, "observedAt": at("2026-01-30")},
            {"type": "Property", "value": 40, "observedAt": at("2026-02-20")}
        ],
        "stationName": [{"type": "Property", "value": "Old name", "observedAt": at("2025-12-01")}]
    });
    let res = post(
        &app,
        &format!("{NGSI}/temporal/entities"),
        Some(&device),
        &troe,
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(kept_history(&app, id).await.0.len(), 4);
    // Readings observed before 2026-01-30T09:00Z are past 30 days.
    assert_eq!(app.service.expire_stream_history().await.unwrap(), 3);
    assert_eq!(
        kept_history(&app, id).await,
        (vec![json!(30), json!(40)], vec![])
    );
    // Nothing more is past it; nothing more is logged.
    assert_eq!(app.service.expire_stream_history().await.unwrap(), 0);
    let logged = app.entries_of_type("stream.history_expired").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    let entry: Value = serde_json::from_str(&logged[0]).unwrap();
    assert_eq!(entry["dataset"], air.as_str());
    assert_eq!(entry["readings"], 3);
    assert_eq!(entry["retention_days"], 30);
    assert_eq!(entry["observed_before"], "2026-01-30T09:00:00.000000Z");
    // The latest values are the stream's present state: they stay.
    let e: Value = get(
        &app,
        &format!("{NGSI}/entities/{id}?options=keyValues"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        (e["NO2"].clone(), e["stationName"].clone()),
        (json!(40), json!("Old name"))
    );
    // A day later, the next reading's turn.
    app.clock.advance(time::Duration::days(1));
    assert_eq!(app.service.expire_stream_history().await.unwrap(), 1);
    assert_eq!(kept_history(&app, id).await.0, vec![json!(40)]);
}

#[tokio::test]
async fn compacted_versions_holding_readings_past_retention_are_removed_and_reads_of_them_are_410()
{
    let app = start().await;
    let alice = app.token("alice").await;
    // 30 days' retention, compacted daily; the clock reads 2026-03-01T09:00Z.
    let (air, device) = stream(&app, &alice, "Open air", "open").await;
    let troe = json!({
        "id": "urn:ngsi-ld:AirQualityObserved:old-1", "type": "AirQualityObserved",
        "NO2": [
            {"type": "Property", "value": 10, "observedAt": "2026-01-10T12:00:00Z"},
            {"type": "Property", "value": 20, "observedAt": "2026-02-20T12:00:00Z"},
            {"type": "Property", "value": 30, "observedAt": "2026-02-28T12:00:00Z"}
        ]
    });
    let res = post(
        &app,
        &format!("{NGSI}/temporal/entities"),
        Some(&device),
        &troe,
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    // What the maintenance loop does each minute, in its order.
    let maintain = || async {
        app.service.expire_stream_history().await.unwrap();
        app.service.compact_streams().await.unwrap();
        app.service.remove_expired_versions().await.unwrap()
    };
    // January's reading is past retention before the first version is made:
    // version 1 holds February's two, and nothing is removed.
    assert_eq!(maintain().await, 0);
    let rows = |version: &'static str| {
        let app = &app;
        let air = air.clone();
        async move {
            let res = get(
                app,
                &format!("/api/v1/datasets/{air}/data?format=json{version}"),
                None,
            )
            .await;
            let status = res.status().as_u16();
            (status, res.text().await.unwrap())
        }
    };
    let (status, body) = rows("&version=1").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("2026-02-20") && !body.contains("2026-01-10"),
        "{body}"
    );

    // 25 days on: February 20th is past 30 days plus the day's period.
    // The day's version 2 (February 28th only) is made first, then version 1 goes.
    app.clock.advance(time::Duration::days(25));
    assert_eq!(maintain().await, 1);
    assert_eq!(maintain().await, 0, "removed once");
    let (status, body) = rows("").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("2026-02-28") && !body.contains("2026-02-20"),
        "{body}"
    );
    // Every read of version 1 is 410 Gone, saying when and why, with none of its data:
    // by number, as of a time it was in force, and in SQL.
    for query in ["&version=1", "&as_of=2026-03-10T00:00:00Z"] {
        let (status, body) = rows(query).await;
        assert_eq!(status, 410, "{query}: {body}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], "removed", "{body}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("version 1") && detail.contains("past the stream's retention"),
            "{detail}"
        );
        assert!(!body.contains("2026-02-20"), "{body}");
    }
    let table = air.replace('-', "_");
    let res = app
        .post_json(
            "/api/v1/query",
            None,
            &json!({"sql": format!("SELECT COUNT(*) AS n FROM \"{table}@1\""), "purpose": "research"}),
        )
        .await;
    assert_eq!(res.status(), 410, "{}", res.text().await.unwrap());
    // Its record stays, saying so; its files are gone, version 2's are there.
    let listed: Value = get(&app, &format!("/api/v1/datasets/{air}/versions"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed[1]["version"], 1);
    assert_eq!(listed[1]["removed"]["reason"], "retention", "{listed}");
    assert!(listed[0].get("removed").is_none(), "{listed}");
    let files = app
        .service
        .versions()
        .list(&format!("datasets/{air}"))
        .await
        .unwrap();
    assert!(!files.is_empty(), "version 2's files");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with(&format!("datasets/{air}/2/"))),
        "{files:?}"
    );
    // Logged, with the digest of what went.
    let logged = app.entries_of_type("version.removed").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    let entry: Value = serde_json::from_str(&logged[0]).unwrap();
    assert_eq!(
        (
            &entry["dataset"],
            &entry["version"],
            &entry["reason"],
            &entry["retention_days"]
        ),
        (&json!(air), &json!(1), &json!("retention"), &json!(30))
    );
    assert_eq!(entry["oldest_reading"], "2026-02-20T12:00:00.000000Z");
    assert_eq!(entry["sha256"], listed[1]["sha256"]);
    // The portal's list of versions says so.
    let page = app.page(&format!("/datasets/{air}")).await;
    assert!(
        page.contains("removed 2026-03-26 09:00: it held readings past retention"),
        "{page}"
    );

    // Forty days on, every reading is past retention: no new version is
    // made, version 2 goes too, and the stream's content is gone.
    app.clock.advance(time::Duration::days(40));
    assert_eq!(maintain().await, 1);
    let (status, body) = rows("").await;
    assert_eq!(status, 410, "{body}");
    assert!(!body.contains("2026-02-28"), "{body}");
    assert!(
        app.service
            .versions()
            .list(&format!("datasets/{air}"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn aggregates_summed_by_the_store_answer_as_those_read_from_every_value() {
    let app = start().await;
    let alice = app.token("alice").await;
    // The clock reads 2026-03-01T09:00Z.
    let (_, device) = stream(&app, &alice, "Open air", "open").await;
    let id = "urn:ngsi-ld:AirQualityObserved:sums-1";
    let at = |d: u32, h: u32, m: u32| format!("2026-02-{d:02}T{h:02}:{m:02}:00Z");
    let mut no2 = Vec::new();
    let mut temperature = Vec::new();
    for n in 0..60u32 {
        let (d, h, m) = (20 + n / 24, n % 24, (n * 7) % 60);
        // Numbers (whole and halves), and now and then a reading that is not one.
        let value = match n % 9 {
            4 => json!("n/a"),
            k => json!(f64::from(n) * 0.5 + f64::from(k)),
        };
        no2.push(json!({"type": "Property", "value": value, "observedAt": at(d, h, m)}));
        temperature.push(
            json!({"type": "Property", "value": n % 13, "observedAt": at(d, h, (m + 3) % 60)}),
        );
    }
    // A second instance of NO2 (its own datasetId) at the same instants as some.
    no2.push(json!({"type": "Property", "value": 100, "observedAt": at(20, 0, 0), "datasetId": "urn:ngsi-ld:Dataset:b"}));
    let troe =
        json!({"id": id, "type": "AirQualityObserved", "NO2": no2, "temperature": temperature});
    let res = post(
        &app,
        &format!("{NGSI}/temporal/entities"),
        Some(&device),
        &troe,
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    // A deletion is kept in the history too, and counted by neither.
    let res = send(
        &app,
        reqwest::Method::DELETE,
        &format!("{NGSI}/entities/{id}/attrs/temperature"),
        Some(&device),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    let summed = "totalCount,sum,avg,min,max,sumsq";
    for window in [
        "timerel=after&timeAt=2026-02-01T00:00:00Z&aggrPeriodDuration=PT1H",
        "timerel=after&timeAt=2026-02-20T05:30:00Z&aggrPeriodDuration=P1D",
        "timerel=between&timeAt=2026-02-20T03:00:00Z&endTimeAt=2026-02-22T04:00:00Z&aggrPeriodDuration=PT45M",
        "timerel=before&timeAt=2026-03-02T00:00:00Z&aggrPeriodDuration=PT2H",
        "timerel=after&timeAt=2026-02-21T00:00:00Z",
    ] {
        // Every attribute, one named, and two named (one twice).
        for (attrs, named) in [
            ("", &["NO2", "temperature"][..]),
            ("&attrs=temperature", &["temperature"][..]),
            (
                "&attrs=temperature,NO2,temperature",
                &["NO2", "temperature"][..],
            ),
        ] {
            let answer = |methods: &'static str| {
                let app = &app;
                async move {
                    let path = format!(
                        "{NGSI}/temporal/entities/{id}?{window}{attrs}&options=aggregatedValues&aggrMethods={methods}"
                    );
                    let res = get(app, &path, None).await;
                    assert_eq!(res.status(), 200, "{path}");
                    res.json::<Value>().await.unwrap()
                }
            };
            // With distinctCount every value is read; without it the store sums.
            let read = answer("totalCount,sum,avg,min,max,sumsq,distinctCount").await;
            let sums = answer(summed).await;
            for attr in ["NO2", "temperature"] {
                if !named.contains(&attr) {
                    assert!(sums.get(attr).is_none(), "{window}{attrs}: {sums}");
                    assert!(read.get(attr).is_none(), "{window}{attrs}: {read}");
                    continue;
                }
                assert!(read[attr].is_object(), "{window}{attrs}: {read}");
                for m in summed.split(',') {
                    assert_eq!(sums[attr][m], read[attr][m], "{window}{attrs} {attr} {m}");
                }
                assert!(
                    !sums[attr]["totalCount"].as_array().unwrap().is_empty(),
                    "{window}{attrs}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_full_batch_is_written_whole_across_the_stores_statements() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (id, device) = stream(&app, &alice, "Open air", "open").await;
    // 1,000 entities: 3,000 readings, then 1,000 updates and their readings,
    // each more than one statement's worth.
    let batch = |no2: f64| -> Value { (1..=1000).map(|n| station(n, no2)).collect() };
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/create"),
        Some(&device),
        &batch(1.0),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let mut later = batch(2.0);
    for e in later.as_array_mut().unwrap() {
        e["NO2"]["observedAt"] = json!("2017-11-01T11:00:00Z");
    }
    let res = post(
        &app,
        &format!("{NGSI}/entityOperations/upsert?options=update"),
        Some(&device),
        &later,
    )
    .await;
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    let res = get(
        &app,
        &format!("{NGSI}/entities?type=AirQualityObserved&q=NO2==2.0&count=true&limit=1"),
        None,
    )
    .await;
    assert_eq!(res.headers()["ngsild-results-count"], "1000");
    for n in [1, 250, 251, 1000] {
        let path = format!(
            "{NGSI}/temporal/entities/urn:ngsi-ld:AirQualityObserved:station-{n}?options=temporalValues&attrs=NO2"
        );
        let t: Value = get(&app, &path, None).await.json().await.unwrap();
        assert_eq!(
            t["NO2"]["values"],
            json!([[1.0, "2017-11-01T10:00:00Z"], [2.0, "2017-11-01T11:00:00Z"]]),
            "station {n}"
        );
    }
    // Compaction reads the stream a page of entities at a time: each of the
    // 1,000 once across the pages' seams, a row per instant.
    let stream = app.service.get_dataset(&id).await.unwrap();
    let v = app
        .service
        .compact_stream(&stream)
        .await
        .unwrap()
        .expect("a version");
    assert_eq!(v.rows, 2000, "{v:?}");
}

#[tokio::test]
async fn an_erasure_passes_over_a_removed_version_whose_files_are_gone() {
    let app = start().await;
    let (id, _, _) = personal_stream(&app).await;
    let alice = app.token("alice").await;
    // A version uploaded by hand, a bad row set aside, its readings from
    // January: past the stream's 30 days (and a day's period).
    let csv = "household,observedAt,activePower\nH-3,2026-01-05T10:00:00Z,1.5\nH-3,2026-01-05T11:00:00Z,x\n";
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions?on_error=quarantine&types=observedAt:timestamp,activePower:float"),
            Some(&alice),
            "text/csv",
            csv.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["rejected"], 1, "{v}");
    assert_eq!(app.service.remove_expired_versions().await.unwrap(), 1);
    // Its files, the rows set aside among them, are gone, and the subject
    // index says the rows are: the erasure does not look for them, and goes
    // through.
    let res = crate::residents::erase(&app, "neighbour", "alice", &id).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

/// An entity's kept NO2 and stationName values, oldest first.
async fn kept_history(app: &TestApp, id: &str) -> (Vec<Value>, Vec<Value>) {
    let path = format!("{NGSI}/temporal/entities/{id}?options=temporalValues");
    let t: Value = get(app, &path, None).await.json().await.unwrap();
    let values = |a: &str| -> Vec<Value> {
        t[a]["values"]
            .as_array()
            .map(|v| v.iter().map(|p| p[0].clone()).collect())
            .unwrap_or_default()
    };
    (values("NO2"), values("stationName"))
}

#[tokio::test]
async fn a_streams_history_is_compacted_into_versions_that_sql_consent_and_erasure_work_on() {
    let app = start().await;
    let (id, device, _) = personal_stream(&app).await;
    let table = id.replace('-', "_");
    let stream = || async { app.service.get_dataset(&id).await.unwrap() };
    // The clock reads 2026-03-16T09:00Z: every reading is before today.
    let v1 = app
        .service
        .compact_stream(&stream().await)
        .await
        .unwrap()
        .expect("a version");
    assert_eq!((v1.version, v1.rows), (1, 6), "{v1:?}");
    // One per period.
    assert!(
        app.service
            .compact_stream(&stream().await)
            .await
            .unwrap()
            .is_none()
    );
    let published = app.entries_of_type("version.published").await;
    assert_eq!(published.len(), 1);
    assert!(
        published[0].contains("\"by\":\"organization:city-energy\""),
        "{published:?}"
    );
    let sql = |who: &'static str, purpose: &'static str, sql: String| {
        let app = &app;
        async move {
            let token = app.token(who).await;
            let res = app
                .post_json(
                    "/api/v1/query",
                    Some(&token),
                    &json!({"sql": sql, "purpose": purpose}),
                )
                .await;
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            assert_eq!(status, 200, "{text}");
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let by_household = format!(
        "SELECT household, COUNT(*) AS n, MAX(\"activePower\") AS p FROM {table} GROUP BY household ORDER BY household"
    );
    // Under consent: the consenting households' rows only.
    assert_eq!(
        sql("analyst", "research", by_household.clone()).await,
        json!([{"household": "H-2", "n": 2, "p": 1.5}, {"household": "H-3", "n": 2, "p": 1.5}])
    );
    // The owner, for its public task: everyone's.
    assert_eq!(
        sql(
            "alice",
            "city-operations",
            format!("SELECT COUNT(*) AS n FROM {table}")
        )
        .await,
        json!([{"n": 6}])
    );

    // Erasure reaches the compacted version as it reaches the live entities.
    let res = crate::residents::erase(&app, "neighbour", "alice", &id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        sql("analyst", "research", by_household.clone()).await,
        json!([{"household": "H-2", "n": 2, "p": 1.5}])
    );

    // The next day's compaction holds the new reading, and not the erased.
    app.clock.advance(time::Duration::days(1));
    let res = send(
        &app,
        reqwest::Method::PATCH,
        &format!("{NGSI}/entities/urn:ngsi-ld:ElectricityMeter:M-2/attrs"),
        Some(&device),
        Some(&json!({"activePower": 3.25})),
    )
    .await;
    assert_eq!(res.status(), 204);
    app.clock.advance(time::Duration::days(1));
    let v2 = app
        .service
        .compact_stream(&stream().await)
        .await
        .unwrap()
        .expect("a version");
    assert_eq!((v2.version, v2.rows), (2, 5), "{v2:?}");
    assert_eq!(
        sql("alice", "city-operations", by_household).await,
        json!([{"household": "H-1", "n": 2, "p": 1.5}, {"household": "H-2", "n": 3, "p": 3.25}])
    );
}

/// An open stream with station 1 (NO2 at `no2`), and alice's subscription
/// to its NO2 changes, notified to a local listener.
struct NO2Watch {
    alice: String,
    device: String,
    sub_id: String,
    received: Received,
}

async fn watch_no2(app: &TestApp, no2: f64) -> NO2Watch {
    let alice = app.token("alice").await;
    let (_air, device) = stream(app, &alice, "Air quality", "open").await;
    assert_eq!(
        post(
            app,
            &format!("{NGSI}/entities"),
            Some(&device),
            &station(1, no2)
        )
        .await
        .status(),
        201
    );
    let (url, received) = notification_listener().await;
    let res = post(
        app,
        &format!("{NGSI}/subscriptions"),
        Some(&alice),
        &json!({
            "type": "Subscription",
            "entities": [{"type": "AirQualityObserved"}],
            "watchedAttributes": ["NO2"],
            "notification": {"endpoint": {"uri": url, "accept": "application/json"}, "format": "keyValues", "attributes": ["NO2"]},
        }),
    )
    .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let sub_id = res.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    NO2Watch {
        alice,
        device,
        sub_id,
        received,
    }
}

/// The NO2 value each notification received told, in order.
fn told_no2(received: &Received) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["data"][0]["NO2"].clone()
        })
        .collect()
}

#[tokio::test]
async fn passes_side_by_side_never_send_a_notification_twice_nor_out_of_order() {
    let app = start().await;
    let NO2Watch {
        device, received, ..
    } = watch_no2(&app, 10.0).await;
    let attrs = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    let no2 = |v: f64| json!({"NO2": v});
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&no2(50.0)),
    )
    .await;
    // The first pass commits to its notification; a second one, before the
    // first has sent it, leaves the subscription alone (its row is not
    // yet settled, and a newer change waits behind it).
    let first = app
        .service
        .notification_pass()
        .await
        .unwrap()
        .expect("owed");
    send(
        &app,
        reqwest::Method::PATCH,
        &attrs,
        Some(&device),
        Some(&no2(51.0)),
    )
    .await;
    assert!(app.service.notification_pass().await.unwrap().is_none());
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 2);
    assert_eq!(
        app.service.clone().post_notifications(first).await.unwrap(),
        1
    );
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 1);
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 1);
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 0);
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 0);
    let told = told_no2(&received);
    assert_eq!(told, vec![json!(50.0), json!(51.0)]);
    assert_eq!(app.entries_of_type("stream.notified").await.len(), 2);
}

#[tokio::test]
async fn two_nodes_over_one_database_send_each_notification_once_and_in_order() {
    let app = start().await;
    let other = app.join_with(|_| {}).await;
    let NO2Watch {
        alice,
        device,
        sub_id,
        received,
    } = watch_no2(&app, 10.0).await;
    let attrs = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    let (app_, attrs_, device_) = (&app, &attrs, &device);
    let patch = |v: f64| async move {
        send(
            app_,
            reqwest::Method::PATCH,
            attrs_,
            Some(device_),
            Some(&json!({"NO2": v})),
        )
        .await
    };
    patch(50.0).await;
    let now = citytrust_service::rfc3339(app.service.now());
    let store = other.service.store();
    // A pass on the other node reads the row owed...
    let read_there = store.due_notifications(&now, 100).await.unwrap();
    assert_eq!(read_there.len(), 1);
    // ...but this node's pass claims it first: the other's claim fails,
    // and it logs and counts nothing.
    let first = app
        .service
        .notification_pass()
        .await
        .unwrap()
        .expect("owed");
    let row = store.get_subscription(&sub_id).await.unwrap().unwrap();
    let seqs: Vec<i64> = read_there.iter().map(|o| o.seq).collect();
    /// A pass's commit of one notification over `seqs`, claimed with `token`.
    async fn claim(
        store: &citytrust_store::Store,
        row: &citytrust_store::SubscriptionRow,
        seqs: &[i64],
        now: &str,
        token: &str,
    ) -> Vec<bool> {
        let notes = vec![citytrust_store::NotificationCommit {
            seqs,
            entry: citytrust_store::NewLogEntry {
                kind: "stream.notified",
                body: r#"{"never":"appended"}"#,
                at: now,
            },
            counted: row.clone(),
        }];
        let lease = citytrust_store::NotificationLease {
            now,
            until: "2026-03-01T10:00:00Z",
            token,
        };
        store
            .commit_notifications(&notes, &lease)
            .await
            .unwrap()
            .claimed
    }
    assert_eq!(
        claim(store, &row, &seqs, &now, "the-other-pass").await,
        vec![false]
    );
    assert_eq!(app.entries_of_type("stream.notified").await.len(), 1);
    // A newer change waits behind the one in flight, on either node: a
    // subscription's notifications are sent in order.
    patch(51.0).await;
    assert_eq!(other.service.deliver_notifications().await.unwrap(), 0);
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 2);
    assert_eq!(
        app.service.clone().post_notifications(first).await.unwrap(),
        1
    );
    // A claim over rows of which one was settled meanwhile takes none (and
    // gives back what it took): the other row is still owed, once.
    let mut both = seqs.clone();
    both.extend(
        store
            .due_notifications(&now, 100)
            .await
            .unwrap()
            .iter()
            .map(|o| o.seq),
    );
    assert_eq!(both.len(), 2);
    assert_eq!(
        claim(store, &row, &both, &now, "a-late-pass").await,
        vec![false]
    );
    assert_eq!(other.service.deliver_notifications().await.unwrap(), 1);
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 0);
    // A node that stops after committing to a notification, before sending
    // it: its claim keeps the row from the other node until it runs out,
    // and the notification is then sent (at least once).
    patch(52.0).await;
    drop(
        app.service
            .notification_pass()
            .await
            .unwrap()
            .expect("owed"),
    );
    assert_eq!(other.service.deliver_notifications().await.unwrap(), 0);
    app.clock.advance(time::Duration::minutes(2));
    assert_eq!(other.service.deliver_notifications().await.unwrap(), 1);
    assert_eq!(app.service.store().owed_notifications().await.unwrap(), 0);
    // A row held back (here by `throttling`) is not due: a pass that read
    // it before cannot claim it.
    let res = send(
        &app,
        reqwest::Method::PATCH,
        &format!("{NGSI}/subscriptions/{sub_id}"),
        Some(&alice),
        Some(&json!({"throttling": 60})),
    )
    .await;
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    patch(53.0).await;
    let now = citytrust_service::rfc3339(app.service.now());
    let read_there = store.due_notifications(&now, 100).await.unwrap();
    assert_eq!(read_there.len(), 1);
    assert_eq!(app.service.deliver_notifications().await.unwrap(), 0);
    let row = store.get_subscription(&sub_id).await.unwrap().unwrap();
    let seqs: Vec<i64> = read_there.iter().map(|o| o.seq).collect();
    assert_eq!(
        claim(store, &row, &seqs, &now, "a-hasty-pass").await,
        vec![false]
    );
    app.clock.advance(time::Duration::minutes(2));
    assert_eq!(other.service.deliver_notifications().await.unwrap(), 1);
    let told = told_no2(&received);
    assert_eq!(
        told,
        vec![json!(50.0), json!(51.0), json!(52.0), json!(53.0)]
    );
    // Each committed to before it left: the one never sent included.
    let logged = app.entries_of_type("stream.notified").await;
    assert_eq!(logged.len(), 5);
    assert!(logged.iter().all(|e| !e.contains("never")));
}

#[tokio::test]
async fn two_nodes_delivering_while_writes_go_on_send_in_order_and_lose_nothing() {
    let app = start().await;
    let other = app.join_with(|_| {}).await;
    let NO2Watch {
        device, received, ..
    } = watch_no2(&app, 0.0).await;
    // Both nodes deliver as fast as they can while the device writes.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let workers: Vec<_> = [app.service.clone(), other.service.clone()]
        .into_iter()
        .map(|svc| {
            let writing = writing.clone();
            tokio::spawn(async move {
                loop {
                    svc.deliver_notifications().await.unwrap();
                    if !writing.load(std::sync::atomic::Ordering::SeqCst)
                        && svc.store().owed_notifications().await.unwrap() == 0
                    {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let attrs = format!("{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:station-1/attrs");
    for v in 1..=40 {
        let res = send(
            &app,
            reqwest::Method::PATCH,
            &attrs,
            Some(&device),
            Some(&json!({"NO2": f64::from(v)})),
        )
        .await;
        assert_eq!(res.status(), 204);
    }
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    let told: Vec<f64> = received
        .iter()
        .map(|(_, _, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["data"][0]["NO2"]
                .as_f64()
                .unwrap()
        })
        .collect();
    // In order (each notification shows the entity as it was when
    // rendered, never older than the one before), the last change told.
    assert!(told.windows(2).all(|w| w[0] <= w[1]), "{told:?}");
    assert_eq!(told.last(), Some(&40.0), "{told:?}");
    // Every notification received was committed to in the log first, and
    // none was sent twice (each its own entry).
    let logged = app.entries_of_type("stream.notified").await;
    let mut entries: Vec<&String> = received.iter().map(|(e, _, _)| e).collect();
    entries.sort();
    entries.dedup();
    assert_eq!(entries.len(), received.len());
    assert_eq!(logged.len(), received.len());
}

#[tokio::test]
async fn a_write_whose_entity_moved_on_changes_nothing_and_names_it() {
    let app = start().await;
    let alice = app.token("alice").await;
    let (_air, device) = stream(&app, &alice, "Air quality", "open").await;
    for n in 1..=3 {
        let res = post(
            &app,
            &format!("{NGSI}/entities"),
            Some(&device),
            &station(n, 10.0),
        )
        .await;
        assert_eq!(res.status(), 201);
    }
    let ids: Vec<String> = (1..=3)
        .map(|n| format!("urn:ngsi-ld:AirQualityObserved:station-{n}"))
        .collect();
    let store = app.service.store();
    let before = store.get_entities(&ids).await.unwrap();
    assert_eq!(before.len(), 3);
    let mut updates: Vec<citytrust_store::EntityRow> = before
        .iter()
        .map(|r| citytrust_store::EntityRow {
            body: r.body.replace("10.0", "99.0"),
            ..r.clone()
        })
        .collect();
    // The second as read one revision ago: someone else wrote it since.
    updates[1].revision -= 1;
    let stale = updates[1].entity_id.clone();
    let err = store
        .write_stream(citytrust_store::StreamWrite {
            streams: vec![before[0].dataset_id.clone()],
            updates,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, citytrust_store::StoreError::StaleRevision(m) if m.contains(&stale)),
        "{err}"
    );
    // Nothing of the write stayed: not the other two entities either.
    let mut after = store.get_entities(&ids).await.unwrap();
    let mut before = before;
    after.sort_by(|a, b| a.entity_id.cmp(&b.entity_id));
    before.sort_by(|a, b| a.entity_id.cmp(&b.entity_id));
    assert_eq!(after, before);
}
