//! Interoperability (R-PLT-3): the catalogue as DCAT-AP and the CKAN action
//! API, over real HTTP. (The official SHACL shapes and the real `ckanapi`
//! client run against the demo in `e2e/interop_test.py`.)

use serde_json::{Value, json};

use crate::harness::{TestApp, dataset};

const CSV: &str = "station,longitude,latitude,no2\nA,2.15,41.38,31\nB,2.16,41.39,28\n";

async fn upload_csv(app: &TestApp, token: &str, id: &str) {
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(token),
            "text/csv",
            CSV.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

/// A catalogue with an open dataset (with content and a keyword), a shared
/// one (with content) and a closed one.
async fn catalogue(app: &TestApp) -> (String, String, String) {
    let alice = app.token("alice").await;
    let mut open = dataset("Air readings", "city-energy", "open");
    open["keywords"] = json!(["air quality", "no2"]);
    open["themes"] = json!(["environment"]);
    open["licence"] = json!({"id": "CC-BY-4.0", "title": "Creative Commons Attribution 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"});
    open["temporal_coverage"] = json!({"start": "2018-11-01", "end": "2018-11-30"});
    open["spatial_coverage"] = json!({"name": "Barcelona", "uri": "https://sws.geonames.org/3128760/", "bbox": "2.05,41.32,2.23,41.47"});
    let open = app.create_dataset(&alice, &open).await;
    upload_csv(app, &alice, &open).await;
    let mut shared = dataset("Meter readings", "city-energy", "shared_specific");
    shared["keywords"] = json!(["energy"]);
    let shared = app.create_dataset(&alice, &shared).await;
    upload_csv(app, &alice, &shared).await;
    let closed = app
        .create_dataset(&alice, &dataset("Staff rota", "city-energy", "closed"))
        .await;
    (open, shared, closed)
}

async fn action(app: &TestApp, name: &str, query: &str) -> (u16, Value) {
    let res = app.get(&format!("/api/3/action/{name}{query}"), None).await;
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("application/json"), "{name}: {ct}");
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn the_ckan_api_answers_in_ckans_envelope_and_field_names() {
    let app = TestApp::start().await;
    let (open, shared, closed) = catalogue(&app).await;

    let (status, body) = action(&app, "status_show", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert!(
        body["help"]
            .as_str()
            .unwrap()
            .ends_with("help_show?name=status_show")
    );
    assert!(
        body["result"]["ckan_version"]
            .as_str()
            .unwrap()
            .starts_with("2.")
    );

    let (_, body) = action(&app, "package_list", "").await;
    let mut ids = vec![open.clone(), shared.clone(), closed.clone()];
    ids.sort();
    assert_eq!(body["result"], json!(ids));

    // A query, a filter and facets.
    let (status, body) = action(
        &app,
        "package_search",
        "?q=readings&fq=organization:city-energy&facet.field=%5B%22organization%22,%22tags%22,%22groups%22%5D&rows=10",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = &body["result"];
    assert_eq!(r["count"], 2, "{r}");
    assert_eq!(r["facets"]["organization"]["city-energy"], 2);
    assert_eq!(r["facets"]["tags"]["air quality"], 1);
    assert_eq!(r["facets"]["groups"]["environment"], 1);
    assert_eq!(
        r["search_facets"]["organization"]["items"][0]["display_name"],
        "City Energy Department"
    );
    // Tags filter (quoted, with a space) narrows to the one carrying it.
    let (_, body) = action(&app, "package_search", "?fq=tags:%22air%20quality%22").await;
    assert_eq!(body["result"]["count"], 1);
    assert_eq!(body["result"]["results"][0]["name"], open.as_str());
    // rows and start page through; rows=0 gives the count alone.
    let (_, body) = action(&app, "package_search", "?rows=0").await;
    assert_eq!(body["result"]["count"], 3);
    assert_eq!(body["result"]["results"], json!([]));
    let (_, body) = action(
        &app,
        "package_search",
        "?rows=1&start=2&sort=title_string%20asc",
    )
    .await;
    assert_eq!(body["result"]["results"][0]["title"], "Staff rota");

    // One package, in CKAN's field names, with its resources.
    let (status, body) = action(&app, "package_show", &format!("?id={open}")).await;
    assert_eq!(status, 200);
    let p = &body["result"];
    assert_eq!(p["name"], open.as_str());
    assert_eq!(p["title"], "Air readings");
    assert_eq!(p["owner_org"], "city-energy");
    assert_eq!(p["organization"]["title"], "City Energy Department");
    assert_eq!(p["license_id"], "CC-BY-4.0");
    assert_eq!(p["isopen"], true);
    assert_eq!(p["tags"][0]["name"], "air quality");
    let extra = |key: &str| {
        p["extras"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .map(|e| e["value"].clone())
    };
    assert_eq!(extra("spatial_text"), Some(json!("Barcelona")));
    assert_eq!(extra("spectrum"), Some(json!("open")));
    let spatial: Value = serde_json::from_str(extra("spatial").unwrap().as_str().unwrap()).unwrap();
    assert_eq!(spatial["coordinates"][0][2], json!([2.23, 41.47]));
    assert_eq!(p["groups"][0]["name"], "environment");
    let formats: Vec<&str> = p["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["CSV", "JSON", "GeoJSON", "Parquet"]);
    assert_eq!(p["num_resources"], 4);
    assert!(!p["metadata_modified"].as_str().unwrap().ends_with('Z'));

    // An open resource downloads directly through its URL, and is logged as a read.
    let csv = &p["resources"][0];
    let res = app
        .client
        .get(csv["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("citytrust-log-entry").is_some());
    assert_eq!(res.text().await.unwrap(), CSV);
    let (status, body) = action(&app, "resource_show", &format!("?id={open}.csv")).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], *csv);

    // Shared data: resources point at the governed path, which says how to ask for access.
    let (_, body) = action(&app, "package_show", &format!("?id={shared}")).await;
    let url = body["result"]["resources"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body["result"]["isopen"], false);
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("/requests/new?dataset={shared}")),
        "{problem}"
    );
    // Closed data: listed, no resources.
    let (_, body) = action(&app, "package_show", &format!("?id={closed}")).await;
    assert_eq!(body["result"]["resources"], json!([]));
    assert_eq!(body["result"]["access_rights"], "non-public");

    // Organisations with all fields and counts; groups are themes; tags are keywords.
    let (_, body) = action(&app, "organization_list", "?all_fields=true").await;
    let orgs = body["result"].as_array().unwrap();
    let energy = orgs.iter().find(|o| o["name"] == "city-energy").unwrap();
    assert_eq!(energy["package_count"], 3);
    assert_eq!(energy["title"], "City Energy Department");
    let (_, body) = action(&app, "organization_list", "").await;
    assert_eq!(body["result"], json!(["city-energy", "water-co"]));
    let (_, body) = action(
        &app,
        "organization_show",
        "?id=city-energy&include_datasets=true",
    )
    .await;
    assert_eq!(body["result"]["packages"].as_array().unwrap().len(), 3);
    let (_, body) = action(&app, "group_list", "?all_fields=true").await;
    let env = body["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "environment")
        .unwrap()
        .clone();
    assert_eq!(env["package_count"], 1);
    let (_, body) = action(&app, "tag_list", "?query=air").await;
    assert_eq!(body["result"], json!(["air quality"]));

    // POST with a JSON body works like GET (ckanapi posts).
    let res = app
        .post_json("/api/3/action/package_show", None, &json!({"id": open}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["result"]["name"],
        open.as_str()
    );
}

#[tokio::test]
async fn bad_input_on_the_ckan_api_gets_ckan_errors_with_the_right_status() {
    let app = TestApp::start().await;
    catalogue(&app).await;

    // An unknown action: 400 and CKAN's "Bad request" string.
    let (status, body) = action(&app, "package_delete", "?id=x").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!("Bad request - Action name not known: package_delete")
    );

    // Bad rows: 409 Validation Error naming the field.
    for (rows, message) in [
        ("abc", "Invalid integer"),
        ("-1", "Must be a natural number"),
    ] {
        let (status, body) = action(&app, "package_search", &format!("?rows={rows}")).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["__type"], "Validation Error");
        assert_eq!(body["error"]["rows"], json!([message]));
    }

    // Malformed or unknown filters: 400 Search Query Error saying where.
    for (fq, says) in [
        ("tags:%22unclosed", "never closed"),
        ("organization:", "has no value"),
        ("colour:blue", "cannot filter on 'colour'"),
        ("-tags:x", "negative filters"),
        ("just-words", "not one"),
    ] {
        let (status, body) = action(&app, "package_search", &format!("?fq={fq}")).await;
        assert_eq!(status, 400, "{fq}: {body}");
        assert_eq!(body["error"]["__type"], "Search Query Error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Search Query is invalid: "),
            "{message}"
        );
        assert!(message.contains(says), "{fq}: {message}");
    }
    let (status, body) = action(&app, "package_search", "?sort=popularity%20desc").await;
    assert_eq!(
        (status, body["error"]["__type"].clone()),
        (400, json!("Search Query Error"))
    );

    // A facet field that is not one, an unknown parameter, a missing id: 409.
    let (status, body) = action(&app, "package_search", "?facet.field=organization").await;
    assert_eq!(status, 409);
    assert!(
        body["error"]["facet.field"][0]
            .as_str()
            .unwrap()
            .contains("JSON list")
    );
    let (status, body) = action(&app, "package_search", "?colour=blue").await;
    assert_eq!(status, 409);
    assert!(
        body["error"]["colour"][0]
            .as_str()
            .unwrap()
            .starts_with("Unknown parameter")
    );
    let (status, body) = action(&app, "package_show", "").await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["id"], json!(["Missing value"]));

    // Nothing there: 404 Not Found Error.
    let (status, body) = action(&app, "package_show", "?id=no-such-dataset").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["__type"], "Not Found Error");
    let (status, _) = action(&app, "resource_show", "?id=no-such-dataset.csv").await;
    assert_eq!(status, 404);
    let (status, _) = action(&app, "organization_show", "?id=nobody").await;
    assert_eq!(status, 404);

    // A body that is not a JSON object: 400.
    let res = app
        .post_raw(
            "/api/3/action/package_search",
            None,
            "application/json",
            b"[1,2]".to_vec(),
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body.as_str()
            .unwrap()
            .starts_with("Bad request - JSON Error"),
        "{body}"
    );
}

#[tokio::test]
async fn the_dcat_ap_catalogue_lists_every_entry_closed_ones_without_distributions() {
    let app = TestApp::start().await;
    let (open, shared, closed) = catalogue(&app).await;
    let base = app.url("");

    let res = app.get("/catalog.ttl", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/turtle; charset=utf-8");
    let ttl = res.text().await.unwrap();
    let eu = "http://publications.europa.eu/resource/authority";
    for id in [&open, &shared, &closed] {
        assert!(
            ttl.contains(&format!("dcat:dataset <{base}/datasets/{id}#dataset>")),
            "{id}"
        );
    }
    assert!(ttl.contains(&format!("<{eu}/access-right/PUBLIC>")));
    assert!(ttl.contains(&format!("<{eu}/access-right/RESTRICTED>")));
    assert!(ttl.contains(&format!("<{eu}/data-theme/ENVI>")));
    assert!(ttl.contains(&format!(
        "dcat:downloadURL <{base}/api/v1/datasets/{open}/data?format=csv>"
    )));
    // Shared data has distributions without a download URL.
    assert!(ttl.contains(&format!("<{base}/datasets/{shared}#distribution-csv>")));
    assert!(!ttl.contains(&format!("/api/v1/datasets/{shared}/data")));
    // Closed data: non-public, and no distribution at all.
    let closed_doc = app
        .get(&format!("/datasets/{closed}.ttl"), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(closed_doc.contains(&format!("dct:accessRights <{eu}/access-right/NON_PUBLIC>")));
    assert!(!closed_doc.contains("dcat:distribution"), "{closed_doc}");
    assert!(!ttl.contains(&format!("{closed}#distribution")));

    // The same graph as JSON-LD.
    let res = app.get("/catalog.jsonld", None).await;
    assert_eq!(res.headers()["content-type"], "application/ld+json");
    let doc: Value = res.json().await.unwrap();
    let graph = doc["@graph"].as_array().unwrap();
    let ds = graph
        .iter()
        .find(|n| n["@id"] == format!("{base}/datasets/{open}#dataset"))
        .unwrap();
    assert_eq!(ds["@type"], json!(["dcat:Dataset"]));
    assert_eq!(ds["dct:title"], json!(["Air readings"]));
    assert_eq!(
        ds["dct:temporal"][0]["dcat:startDate"][0]["@type"],
        "xsd:date"
    );
    assert_eq!(
        ds["dct:spatial"][0]["@id"],
        "https://sws.geonames.org/3128760/"
    );
    let place = graph
        .iter()
        .find(|n| n["@id"] == "https://sws.geonames.org/3128760/")
        .unwrap();
    assert_eq!(
        place["dcat:bbox"][0]["@value"],
        "POLYGON((2.05 41.32, 2.23 41.32, 2.23 41.47, 2.05 41.47, 2.05 41.32))"
    );

    let res = app.get(&format!("/datasets/{open}.jsonld"), None).await;
    assert_eq!(res.status(), 200);
    let res = app.get("/datasets/no-such-dataset.ttl", None).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn the_catalogue_streams_past_one_page_of_entries() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    for i in 0..205 {
        app.create_dataset(
            &alice,
            &dataset(&format!("Entry {i:03}"), "city-energy", "open"),
        )
        .await;
    }
    let ttl = app.get("/catalog.ttl", None).await.text().await.unwrap();
    assert_eq!(ttl.matches(" dcat:dataset <").count(), 205);
    let doc: Value = app.get("/catalog.jsonld", None).await.json().await.unwrap();
    let datasets = doc["@graph"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["@type"] == json!(["dcat:Dataset"]))
        .count();
    assert_eq!(datasets, 205);
}
