//! The Dataspace Protocol's catalogue: every message CityTrust sends is
//! validated against the specification's JSON Schemas (DSP 2025-1, copied
//! under `tests/dsp/` with their licence), the specification's example
//! catalogue requests are accepted, and bad messages get `CatalogError`s.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::{TestApp, dataset};

/// The specification's schemas, compiled with their cross-references
/// resolved locally (nothing is fetched).
struct Dsp {
    schemas: boon::Schemas,
    compiler: boon::Compiler,
}

fn dsp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dsp")
}

impl Dsp {
    fn new() -> Dsp {
        let mut compiler = boon::Compiler::new();
        for area in ["catalog", "common", "negotiation", "transfer"] {
            for entry in std::fs::read_dir(dsp_dir().join(area)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                    let id = v["$id"].as_str().unwrap().to_string();
                    compiler.add_resource(&id, v).unwrap();
                }
            }
        }
        Dsp {
            schemas: boon::Schemas::new(),
            compiler,
        }
    }

    /// Validate `v` against `schema` (e.g. `catalog/catalog-schema.json`).
    fn check(&mut self, schema: &str, v: &Value) -> Result<(), String> {
        let url = format!("https://w3id.org/dspace/2025/1/{schema}");
        let idx = self
            .compiler
            .compile(&url, &mut self.schemas)
            .map_err(|e| format!("{e:#}"))?;
        self.schemas.validate(v, idx).map_err(|e| format!("{e:#}"))
    }
}

fn example(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dsp_dir().join(path)).unwrap()).unwrap()
}

#[test]
fn the_specifications_examples_validate_against_its_schemas() {
    let mut dsp = Dsp::new();
    for (example_file, schema) in [
        (
            "catalog/example/catalog.json",
            "catalog/catalog-schema.json",
        ),
        (
            "catalog/example/dataset.json",
            "catalog/dataset-schema.json",
        ),
        (
            "catalog/example/catalog-error.json",
            "catalog/catalog-error-schema.json",
        ),
        (
            "catalog/example/catalog-request-message.json",
            "catalog/catalog-request-message-schema.json",
        ),
        (
            "common/example/protocol-version.json",
            "common/protocol-version-schema.json",
        ),
    ] {
        dsp.check(schema, &example(example_file))
            .unwrap_or_else(|e| panic!("{example_file}: {e}"));
    }
    // And the validator refuses what the schemas refuse.
    let mut bad = example("catalog/example/catalog.json");
    bad.as_object_mut().unwrap().remove("participantId");
    assert!(dsp.check("catalog/catalog-schema.json", &bad).is_err());
}

#[tokio::test]
async fn the_catalogue_offers_shared_datasets_under_the_charter_and_validates() {
    let mut dsp = Dsp::new();
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    for (title, spectrum) in [
        ("Heat meters", "shared_public"),
        ("Street lights", "open"),
        ("Substations", "closed"),
        ("Boiler permits", "shared_group"),
    ] {
        app.create_dataset(&alice, &dataset(title, "city-energy", spectrum))
            .await;
    }

    let res = app.get("/.well-known/dspace-version", None).await;
    assert_eq!(res.status(), 200);
    let versions: Value = res.json().await.unwrap();
    dsp.check("common/protocol-version-schema.json", &versions)
        .unwrap();
    assert_eq!(versions["protocolVersions"][0]["version"], "2025-1");

    // The specification's own catalogue request is accepted.
    let res = app
        .post_json(
            "/dsp/catalog/request",
            None,
            &example("catalog/example/catalog-request-message.json"),
        )
        .await;
    assert_eq!(res.status(), 200);
    let catalog: Value = res.json().await.unwrap();
    dsp.check("catalog/catalog-schema.json", &catalog)
        .unwrap_or_else(|e| panic!("{e}\n{catalog:#}"));
    let ids: Vec<&str> = catalog["dataset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["@id"].as_str().unwrap())
        .collect();
    // Shared data is offered; open data needs no contract, closed data is never shared.
    assert_eq!(ids, ["boiler-permits", "heat-meters"]);
    let heat = &catalog["dataset"][1];
    let offers = heat["hasPolicy"].as_array().unwrap();
    // The default charter lets a signed-in outsider ask at every level, for every purpose.
    assert_eq!(offers.len(), 6, "{heat:#}");
    let purposes = &offers[0]["permission"][0]["constraint"][0];
    assert_eq!(purposes["leftOperand"], "purpose");
    assert!(
        purposes["rightOperand"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "research"),
        "{purposes}"
    );
    assert_eq!(heat["distribution"][0]["format"], "HttpData-PULL");

    // One dataset, and the ones not offered, by the same rules.
    let res = app.get("/dsp/catalog/datasets/heat-meters", None).await;
    assert_eq!(res.status(), 200);
    let one: Value = res.json().await.unwrap();
    dsp.check("catalog/dataset-schema.json", &one)
        .unwrap_or_else(|e| panic!("{e}"));
    for id in ["street-lights", "substations", "nothing-here"] {
        let res = app.get(&format!("/dsp/catalog/datasets/{id}"), None).await;
        assert_eq!(res.status(), 404, "{id}");
        let err: Value = res.json().await.unwrap();
        dsp.check("catalog/catalog-error-schema.json", &err)
            .unwrap();
    }

    // A charter that refuses outsiders a level takes that offer away.
    // (Trustees change the charter; the catalogue follows at once.)
    let trustee = app.token("trustee").await;
    let charter: Value = app.get("/api/v1/charter", None).await.json().await.unwrap();
    let text = format!(
        "{}\n@id(\"no-identified-rows-for-outsiders\")\n@reason(\"test\")\nforbid (principal, action == CityTrust::Action::\"request\", resource)\nwhen {{ context.level >= 6 }};\n",
        charter["text"].as_str().unwrap()
    );
    let res = app
        .put_json(
            "/api/v1/charter",
            Some(&trustee),
            &json!({"text": text, "note": "no identified rows"}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let one: Value = app
        .get("/dsp/catalog/datasets/heat-meters", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["hasPolicy"].as_array().unwrap().len(), 5, "{one:#}");

    // Bad messages: a CatalogError that says what was wrong.
    for (body, says) in [
        (json!({"@type": "CatalogRequestMessage"}), "@context"),
        (
            json!({"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "DatasetRequestMessage"}),
            "expected CatalogRequestMessage",
        ),
        (
            json!({"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "CatalogRequestMessage", "filter": [{"x": 1}]}),
            "filters",
        ),
    ] {
        let res = app.post_json("/dsp/catalog/request", None, &body).await;
        assert_eq!(res.status(), 400);
        let err: Value = res.json().await.unwrap();
        dsp.check("catalog/catalog-error-schema.json", &err)
            .unwrap();
        assert!(err["reason"][0].as_str().unwrap().contains(says), "{err}");
    }
    let res = app
        .client
        .post(app.url("/dsp/catalog/request"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}
