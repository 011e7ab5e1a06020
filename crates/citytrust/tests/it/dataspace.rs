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
                    // One reference in the published transfer schemas lacks
                    // the '/' of its JSON pointer (`…json#definitions/…`);
                    // read as the pointer it means, not as an anchor.
                    let text = std::fs::read_to_string(&path)
                        .unwrap()
                        .replace(".json#definitions/", ".json#/definitions/");
                    let v: Value = serde_json::from_str(&text).unwrap();
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
        (
            "negotiation/example/contract-request-message_initial.json",
            "negotiation/contract-request-message-schema.json",
        ),
        (
            "negotiation/example/contract-request-message.json",
            "negotiation/contract-request-message-schema.json",
        ),
        (
            "negotiation/example/contract-offer-message.json",
            "negotiation/contract-offer-message-schema.json",
        ),
        (
            "negotiation/example/contract-agreement-message.json",
            "negotiation/contract-agreement-message-schema.json",
        ),
        (
            "negotiation/example/contract-agreement-message-full.json",
            "negotiation/contract-agreement-message-schema.json",
        ),
        (
            "negotiation/example/contract-agreement-verification-message.json",
            "negotiation/contract-agreement-verification-message-schema.json",
        ),
        (
            "negotiation/example/contract-negotiation-event-message.json",
            "negotiation/contract-negotiation-event-message-schema.json",
        ),
        (
            "negotiation/example/contract-negotiation-termination-message.json",
            "negotiation/contract-negotiation-termination-message-schema.json",
        ),
        (
            "negotiation/example/contract-negotiation.json",
            "negotiation/contract-negotiation-schema.json",
        ),
        (
            "negotiation/example/contract-negotiation-error.json",
            "negotiation/contract-negotiation-error-schema.json",
        ),
        (
            "transfer/example/transfer-request-message.json",
            "transfer/transfer-request-message-schema.json",
        ),
        (
            "transfer/example/transfer-start-message.json",
            "transfer/transfer-start-message-schema.json",
        ),
        (
            "transfer/example/transfer-completion-message.json",
            "transfer/transfer-completion-message-schema.json",
        ),
        (
            "transfer/example/transfer-suspension-message.json",
            "transfer/transfer-suspension-message-schema.json",
        ),
        (
            "transfer/example/transfer-termination-message.json",
            "transfer/transfer-termination-message-schema.json",
        ),
        (
            "transfer/example/transfer-process.json",
            "transfer/transfer-process-schema.json",
        ),
        (
            "transfer/example/transfer-error.json",
            "transfer/transfer-error-schema.json",
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

/// What the consumer received: the path under its callback, the
/// `Authorization` header, and the message.
type Inbox = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>, Value)>>>;

/// A consumer node as the provider sees it: its public URL, its key, and
/// every message the provider sent to its callback address.
struct Consumer {
    url: String,
    key: ed25519_dalek::SigningKey,
    received: Inbox,
    /// Answer the provider's messages with 503 while set.
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Consumer {
    async fn start(seed: u8) -> Consumer {
        use axum::extract::{Path, State};
        use std::sync::atomic::Ordering;
        let received: Inbox = Default::default();
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = (received.clone(), failing.clone());
        let app = axum::Router::new()
            // An empty catalogue, for the registration's first harvest.
            .route(
                "/catalog.ttl",
                axum::routing::get(|| async { ([("content-type", "text/turtle")], "") }),
            )
            .route(
                "/callback/{area}/{*rest}",
                axum::routing::post(
                    |State((inbox, failing)): State<(
                        Inbox,
                        std::sync::Arc<std::sync::atomic::AtomicBool>,
                    )>,
                     Path((_area, rest)): Path<(String, String)>,
                     headers: axum::http::HeaderMap,
                     axum::Json(body): axum::Json<Value>| async move {
                        if failing.load(Ordering::SeqCst) {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        inbox.lock().unwrap().push((rest, auth, body));
                        axum::http::StatusCode::OK
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Consumer {
            url,
            key: ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
            received,
            failing,
        }
    }

    fn public_key(&self) -> String {
        let hex: String = self
            .key
            .verifying_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("ed25519:{hex}")
    }

    /// A token for `provider`, signed with `key`, issued `age` seconds before `now`.
    fn token_with(
        &self,
        key: &ed25519_dalek::SigningKey,
        provider: &TestApp,
        org: Option<&str>,
        age: i64,
    ) -> String {
        let now = provider.service.now().unix_timestamp() - age;
        citytrust_service::dataspace::sign_token(
            key,
            &citytrust_service::dataspace::TokenClaims {
                iss: self.url.clone(),
                aud: provider.base.clone(),
                iat: now,
                exp: now + 300,
                jti: format!("t{now}{age}"),
                sub: org.map(str::to_string),
                org_name: org.map(|o| format!("{o} of city A")),
            },
        )
    }

    fn token(&self, provider: &TestApp) -> String {
        self.token_with(&self.key, provider, Some("mobility-lab"), 0)
    }

    fn messages(&self) -> Vec<(String, Option<String>, Value)> {
        self.received.lock().unwrap().clone()
    }
}

/// POST a DSP message with a bearer token.
async fn dsp_post(app: &TestApp, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = app.client.post(app.url(path)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn dsp_get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn request_message(
    provider: &TestApp,
    consumer: &Consumer,
    cpid: &str,
    level: &str,
    purpose: &str,
) -> Value {
    json!({
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": "ContractRequestMessage",
        "consumerPid": cpid,
        "offer": {
            "@type": "Offer",
            "@id": format!("{}/dsp/offers/heat-meters/{level}", provider.base),
            "target": "heat-meters",
            "dct:description": "Plan heat networks for the next winter.",
            "citytrust:checklist": {
                "justified": "Heat demand by building decides where the network goes.",
                "benefits_and_risks": "Residents get cheaper heat; owners' consumption could be exposed.",
                "proportionate": "One season, the buildings of one district.",
                "without_personal_data": "The data is about buildings, not people.",
                "power_to_share": "The regional energy plan mandates it.",
            },
            "permission": [{"action": "use", "constraint": [
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": purpose},
                {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "2026-03-01"},
                {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": "2026-08-31"},
            ]}],
        },
        "callbackAddress": format!("{}/callback", consumer.url),
    })
}

fn consumer_message(kind: &str, ppid: &str, cpid: &str, extra: Value) -> Value {
    let mut m = json!({
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": kind,
        "providerPid": ppid,
        "consumerPid": cpid,
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

/// The access request a negotiation became, as the trustees see it.
async fn request_of(app: &TestApp, trustee: &str, benefit_marker: &str) -> Value {
    let list: Value = app
        .get("/api/v1/access-requests", Some(trustee))
        .await
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["requester"] == "dsp.city-a" && r["purpose"] == benefit_marker)
        .cloned()
        .unwrap_or_else(|| panic!("no request for {benefit_marker} in {list:#}"))
}

#[tokio::test]
async fn negotiations_follow_the_protocol_and_the_trustees_decide() {
    let mut dsp = Dsp::new();
    let b = crate::governance::start().await;
    let alice = b.token("alice").await;
    crate::governance::with_content(
        &b,
        &alice,
        "Heat meters",
        "city-energy",
        "shared_public",
        crate::governance::ENERGY_CSV,
    )
    .await;
    let admin = b.token("admin").await;
    let a = Consumer::start(7).await;
    let stranger = Consumer::start(9).await;
    for (id, c) in [("city-a", &a), ("city-c", &stranger)] {
        let res = b
            .post_json(
                "/api/v1/remote-catalogues",
                Some(&admin),
                &json!({"id": id, "name": id, "url": format!("{}/catalog.ttl", c.url), "kind": "dcat",
                        "participant": {"id": c.url, "key": c.public_key()}}),
            )
            .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    // The protocol's context is served from the copy built in, unchanged.
    let res = b.get("/dsp/context.jsonld", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/ld+json"
    );
    let served: Value = res.json().await.unwrap();
    assert_eq!(
        served,
        example("../../../citytrust-server/assets/dsp/context.jsonld")
    );
    assert!(served["@context"]["ContractRequestMessage"].is_object());
    // B shows who it is, for A's administrators to pin.
    let me: Value = b.get("/dsp/participant", None).await.json().await.unwrap();
    assert_eq!(me["participantId"], b.base.as_str());
    let b_key = ed25519_dalek::VerifyingKey::from_bytes(
        &(0..32)
            .map(|i| {
                u8::from_str_radix(&me["key"].as_str().unwrap()[8 + 2 * i..10 + 2 * i], 16).unwrap()
            })
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap(),
    )
    .unwrap();

    // The specification's example messages, each sent where it goes with a
    // valid token: taken as what they are, and answered with the protocol's
    // error — their ids are unknown here (404), their callback is not the
    // participant's (400).
    let token = a.token(&b);
    for (file, path, status, schema) in [
        ("negotiation/example/contract-request-message_initial.json", "/dsp/negotiations/request".to_string(), 400, "negotiation/contract-negotiation-error-schema.json"),
        ("negotiation/example/contract-request-message.json", "/dsp/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/request".into(), 404, "negotiation/contract-negotiation-error-schema.json"),
        ("negotiation/example/contract-agreement-verification-message.json", "/dsp/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/agreement/verification".into(), 404, "negotiation/contract-negotiation-error-schema.json"),
        ("negotiation/example/contract-negotiation-event-message.json", "/dsp/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/events".into(), 404, "negotiation/contract-negotiation-error-schema.json"),
        ("negotiation/example/contract-negotiation-termination-message.json", "/dsp/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/termination".into(), 404, "negotiation/contract-negotiation-error-schema.json"),
        ("transfer/example/transfer-request-message.json", "/dsp/transfers/request".into(), 400, "transfer/transfer-error-schema.json"),
        ("transfer/example/transfer-start-message.json", "/dsp/transfers/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/start".into(), 404, "transfer/transfer-error-schema.json"),
        ("transfer/example/transfer-completion-message.json", "/dsp/transfers/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/completion".into(), 404, "transfer/transfer-error-schema.json"),
        ("transfer/example/transfer-suspension-message.json", "/dsp/transfers/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/suspension".into(), 404, "transfer/transfer-error-schema.json"),
        ("transfer/example/transfer-termination-message.json", "/dsp/transfers/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/termination".into(), 404, "transfer/transfer-error-schema.json"),
    ] {
        let (got, err) = dsp_post(&b, &path, Some(&token), &example(file)).await;
        assert_eq!(got, status, "{file}: {err}");
        dsp.check(schema, &err)
            .unwrap_or_else(|e| panic!("{file}: {e}\n{err:#}"));
        let reason = err["reason"][0].as_str().unwrap();
        assert!(
            !reason.contains("@type") && !reason.contains("not JSON") && !reason.contains("@context"),
            "{file} was not taken as its message: {reason}"
        );
    }
    // What a CityTrust consumer sends validates too.
    let ask: citytrust_model::federation::AskRemote = serde_json::from_value(json!({
        "organization_id": "lab", "level": "identified", "purpose": "research",
        "starts_on": "2026-03-01", "ends_on": "2026-06-30", "benefit": "b",
        "checklist": {"justified": "j"}}))
    .unwrap();
    for (schema, msg) in [
        (
            "negotiation/contract-request-message-schema.json",
            citytrust_service::consumer::contract_request_message(
                "urn:uuid:c",
                &format!("{}/dsp/offers/heat-meters/identified", b.base),
                "heat-meters",
                &ask,
                "http://a.example/dsp/callback",
            ),
        ),
        (
            "negotiation/contract-agreement-verification-message-schema.json",
            citytrust_service::consumer::verification_message("urn:uuid:p", "urn:uuid:c"),
        ),
        (
            "transfer/transfer-request-message-schema.json",
            citytrust_service::consumer::transfer_request_message(
                "urn:uuid:t",
                "http://b.example/agreements/agr-1",
                "http://a.example/dsp/callback",
            ),
        ),
    ] {
        dsp.check(schema, &msg)
            .unwrap_or_else(|e| panic!("{schema}: {e}\n{msg:#}"));
    }

    let start = request_message(&b, &a, "urn:uuid:c-1", "identified", "research");
    dsp.check("negotiation/contract-request-message-schema.json", &start)
        .unwrap();
    // Without a token, with another key, for another provider, or stale: as if nothing were there.
    let wrong_key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    for token in [
        None,
        Some(a.token_with(&wrong_key, &b, Some("mobility-lab"), 0)),
        Some(a.token_with(&a.key, &b, Some("mobility-lab"), 900)),
        Some("Bearer nonsense".to_string()),
    ] {
        let (status, err) =
            dsp_post(&b, "/dsp/negotiations/request", token.as_deref(), &start).await;
        assert_eq!(status, 404, "{token:?}: {err}");
        dsp.check("negotiation/contract-negotiation-error-schema.json", &err)
            .unwrap();
    }
    // A token for another audience is refused too.
    let other_aud = citytrust_service::dataspace::sign_token(
        &a.key,
        &citytrust_service::dataspace::TokenClaims {
            iss: a.url.clone(),
            aud: "http://elsewhere.example".into(),
            iat: b.service.now().unix_timestamp(),
            exp: b.service.now().unix_timestamp() + 300,
            jti: "x".into(),
            sub: Some("mobility-lab".into()),
            org_name: None,
        },
    );
    assert_eq!(
        dsp_post(&b, "/dsp/negotiations/request", Some(&other_aud), &start)
            .await
            .0,
        404
    );

    // Bad requests say what is wrong.
    let token = a.token(&b);
    let mut bad_offer = start.clone();
    bad_offer["offer"]["@id"] = json!(format!("{}/dsp/offers/heat-meters/everything", b.base));
    let mut bad_callback = start.clone();
    bad_callback["callbackAddress"] = json!(format!("{}/callback", b.base));
    for (msg, says, tok) in [
        (
            request_message(&b, &a, "urn:uuid:c-0", "identified", "marketing"),
            "not made for the purpose",
            token.clone(),
        ),
        (bad_offer, "no offer", token.clone()),
        (bad_callback, "callbackAddress", token.clone()),
        (
            start.clone(),
            "names no organisation",
            a.token_with(&a.key, &b, None, 0),
        ),
    ] {
        let (status, err) = dsp_post(&b, "/dsp/negotiations/request", Some(&tok), &msg).await;
        assert_eq!(status, 400, "{err}");
        dsp.check("negotiation/contract-negotiation-error-schema.json", &err)
            .unwrap();
        assert!(
            err["reason"][0].as_str().unwrap().contains(says),
            "{says}: {err}"
        );
    }

    // The request: 201 and REQUESTED; it is an access request under review.
    let (status, created) = dsp_post(&b, "/dsp/negotiations/request", Some(&token), &start).await;
    assert_eq!(status, 201, "{created}");
    dsp.check("negotiation/contract-negotiation-schema.json", &created)
        .unwrap();
    assert_eq!(created["state"], "REQUESTED");
    let ppid = created["providerPid"].as_str().unwrap().to_string();
    let path = format!("/dsp/negotiations/{ppid}");
    let (status, got) = dsp_get(&b, &path, &token).await;
    assert_eq!((status, &got["state"]), (200, &json!("REQUESTED")));
    // Another participant, and an unknown id: the same 404.
    let (s1, e1) = dsp_get(&b, &path, &stranger.token(&b)).await;
    let (s2, e2) = dsp_get(&b, "/dsp/negotiations/urn:uuid:nothing", &token).await;
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(e1["reason"], e2["reason"]);
    let trustee = b.token("trustee").await;
    let r = request_of(&b, &trustee, "research").await;
    assert_eq!(r["status"], "under_review", "{r}");
    let stand_in_org =
        citytrust_service::negotiation::stand_in_organization("city-a", "mobility-lab");
    assert_eq!(r["organization_id"], stand_in_org.as_str());
    assert_eq!(r["benefit"], "Plan heat networks for the next winter.");
    // The account standing for the participant cannot sign in: disabled, no password.
    let users: Value = b
        .get("/api/v1/users", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let stand_in = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "dsp.city-a")
        .unwrap();
    assert_eq!(stand_in["disabled"], true);
    // Nobody may be given such a name.
    crate::harness::assert_problem(
        b.post_json(
            "/api/v1/users",
            Some(&admin),
            &json!({"username": "dsp.city-c", "display_name": "Not a trust", "password": "correct horse battery"}),
        )
        .await,
        422,
        "validation_failed",
        Some("username"),
    )
    .await;
    assert_eq!(stand_in["organization_ids"], json!([stand_in_org]));
    let res = b
        .post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "dsp.city-a", "password": ""}),
        )
        .await;
    assert!(res.status().is_client_error());

    // Every transition the state machine does not draw from REQUESTED: 400.
    for (suffix, msg) in [
        (
            "agreement/verification",
            consumer_message(
                "ContractAgreementVerificationMessage",
                &ppid,
                "urn:uuid:c-1",
                json!({}),
            ),
        ),
        (
            "events",
            consumer_message(
                "ContractNegotiationEventMessage",
                &ppid,
                "urn:uuid:c-1",
                json!({"eventType": "ACCEPTED"}),
            ),
        ),
        (
            "events",
            consumer_message(
                "ContractNegotiationEventMessage",
                &ppid,
                "urn:uuid:c-1",
                json!({"eventType": "FINALIZED"}),
            ),
        ),
        ("request", {
            let mut m = start.clone();
            m["providerPid"] = json!(ppid);
            m.as_object_mut().unwrap().remove("callbackAddress");
            m
        }),
    ] {
        let (status, err) = dsp_post(&b, &format!("{path}/{suffix}"), Some(&token), &msg).await;
        assert_eq!(status, 400, "{suffix}: {err}");
        dsp.check("negotiation/contract-negotiation-error-schema.json", &err)
            .unwrap();
    }
    // Nothing is owed before the trustees decide.
    b.service.advance_negotiations().await.unwrap();
    assert!(a.messages().is_empty());

    // The trustees approve through B's API; the worker sends the agreement
    // (first to a consumer that is down: kept, retried later).
    a.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        r["id"].as_str().unwrap()
    );
    for t in ["trustee", "trustee2", "trustee3"] {
        let tok = b.token(t).await;
        let res = b
            .post_json(
                &votes,
                Some(&tok),
                &json!({"vote": "approve", "reason": "A neighbouring city's heat plan."}),
            )
            .await;
        assert_eq!(res.status(), 200);
    }
    b.service.advance_negotiations().await.unwrap();
    assert_eq!(dsp_get(&b, &path, &token).await.1["state"], "REQUESTED");
    a.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    b.service.advance_negotiations().await.unwrap();
    assert!(a.messages().is_empty(), "retried before its time");
    b.clock.advance(time::Duration::seconds(30));
    b.service.advance_negotiations().await.unwrap();
    let sent = a.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (where_, auth, agreement) = &sent[0];
    assert_eq!(where_, "urn:uuid:c-1/agreement");
    dsp.check(
        "negotiation/contract-agreement-message-schema.json",
        agreement,
    )
    .unwrap_or_else(|e| panic!("{e}\n{agreement:#}"));
    assert_eq!(agreement["agreement"]["target"], "heat-meters");
    assert_eq!(agreement["agreement"]["assignee"], a.url.as_str());
    // Signed by B's pinned key, for A.
    let token_b = auth.as_deref().unwrap().strip_prefix("Bearer ").unwrap();
    let (signing_input, sig) = token_b.rsplit_once('.').unwrap();
    use base64::Engine;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    b_key
        .verify_strict(
            signing_input.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig.try_into().unwrap()),
        )
        .unwrap();
    assert_eq!(dsp_get(&b, &path, &token).await.1["state"], "AGREED");

    // A verifies; B finalises.
    let verify = consumer_message(
        "ContractAgreementVerificationMessage",
        &ppid,
        "urn:uuid:c-1",
        json!({}),
    );
    dsp.check(
        "negotiation/contract-agreement-verification-message-schema.json",
        &verify,
    )
    .unwrap();
    let (status, v) = dsp_post(
        &b,
        &format!("{path}/agreement/verification"),
        Some(&token),
        &verify,
    )
    .await;
    assert_eq!((status, &v["state"]), (200, &json!("VERIFIED")), "{v}");
    b.service.advance_negotiations().await.unwrap();
    let sent = a.messages();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].0, "urn:uuid:c-1/events");
    dsp.check(
        "negotiation/contract-negotiation-event-message-schema.json",
        &sent[1].2,
    )
    .unwrap();
    assert_eq!(sent[1].2["eventType"], "FINALIZED");
    assert_eq!(dsp_get(&b, &path, &token).await.1["state"], "FINALIZED");
    // A terminal state takes nothing more.
    for (suffix, msg) in [
        (
            "termination",
            consumer_message(
                "ContractNegotiationTerminationMessage",
                &ppid,
                "urn:uuid:c-1",
                json!({}),
            ),
        ),
        ("agreement/verification", verify.clone()),
    ] {
        assert_eq!(
            dsp_post(&b, &format!("{path}/{suffix}"), Some(&token), &msg)
                .await
                .0,
            400,
            "{suffix}"
        );
    }

    // The consumer ends a negotiation under review: its request is withdrawn.
    let (_, second) = dsp_post(
        &b,
        "/dsp/negotiations/request",
        Some(&token),
        &request_message(&b, &a, "urn:uuid:c-2", "identified", "city-operations"),
    )
    .await;
    let ppid2 = second["providerPid"].as_str().unwrap().to_string();
    let end = consumer_message(
        "ContractNegotiationTerminationMessage",
        &ppid2,
        "urn:uuid:c-2",
        json!({"code": "1", "reason": ["no longer needed"]}),
    );
    dsp.check(
        "negotiation/contract-negotiation-termination-message-schema.json",
        &end,
    )
    .unwrap();
    let (status, t) = dsp_post(
        &b,
        &format!("/dsp/negotiations/{ppid2}/termination"),
        Some(&token),
        &end,
    )
    .await;
    assert_eq!((status, &t["state"]), (200, &json!("TERMINATED")), "{t}");
    assert_eq!(
        request_of(&b, &trustee, "city-operations").await["status"],
        "withdrawn"
    );

    // A request the trustees vote down: B sends a termination.
    let (_, third) = dsp_post(
        &b,
        "/dsp/negotiations/request",
        Some(&token),
        &request_message(&b, &a, "urn:uuid:c-3", "identified", "innovation"),
    )
    .await;
    let ppid3 = third["providerPid"].as_str().unwrap().to_string();
    let r3 = request_of(&b, &trustee, "innovation").await;
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        r3["id"].as_str().unwrap()
    );
    for t in ["trustee", "trustee2", "trustee3"] {
        let tok = b.token(t).await;
        b.post_json(
            &votes,
            Some(&tok),
            &json!({"vote": "deny", "reason": "Not for this purpose."}),
        )
        .await;
    }
    b.service.advance_negotiations().await.unwrap();
    let sent = a.messages();
    let last = sent.last().unwrap();
    assert_eq!(last.0, "urn:uuid:c-3/termination");
    dsp.check(
        "negotiation/contract-negotiation-termination-message-schema.json",
        &last.2,
    )
    .unwrap();
    assert_eq!(
        dsp_get(&b, &format!("/dsp/negotiations/{ppid3}"), &token)
            .await
            .1["state"],
        "TERMINATED"
    );

    // Each step is in B's log.
    for (kind, n) in [
        ("dsp.negotiation_requested", 3),
        ("dsp.agreement_sent", 1),
        ("dsp.agreement_verified", 1),
        ("dsp.negotiation_finalized", 1),
        ("dsp.negotiation_terminated", 2),
    ] {
        assert_eq!(b.entries_of_type(kind).await.len(), n, "{kind}");
    }

    // The consumer may end a negotiation it was sent an agreement in: the agreement is retired.
    let (_, fourth) = dsp_post(
        &b,
        "/dsp/negotiations/request",
        Some(&token),
        &request_message(&b, &a, "urn:uuid:c-4", "identified", "emergency"),
    )
    .await;
    let ppid4 = fourth["providerPid"].as_str().unwrap().to_string();
    let r4 = request_of(&b, &trustee, "emergency").await;
    let votes4 = format!(
        "/api/v1/access-requests/{}/votes",
        r4["id"].as_str().unwrap()
    );
    for t in ["trustee", "trustee2", "trustee3"] {
        let tok = b.token(t).await;
        b.post_json(
            &votes4,
            Some(&tok),
            &json!({"vote": "approve", "reason": "Yes."}),
        )
        .await;
    }
    b.service.advance_negotiations().await.unwrap();
    assert_eq!(
        dsp_get(&b, &format!("/dsp/negotiations/{ppid4}"), &token)
            .await
            .1["state"],
        "AGREED"
    );
    let end4 = consumer_message(
        "ContractNegotiationTerminationMessage",
        &ppid4,
        "urn:uuid:c-4",
        json!({"reason": ["changed our mind"]}),
    );
    let (status, t4) = dsp_post(
        &b,
        &format!("/dsp/negotiations/{ppid4}/termination"),
        Some(&token),
        &end4,
    )
    .await;
    assert_eq!((status, &t4["state"]), (200, &json!("TERMINATED")), "{t4}");
    let a4 = request_of(&b, &trustee, "emergency").await["agreement_id"]
        .as_str()
        .unwrap()
        .to_string();
    let retired: Value = b
        .get(&format!("/api/v1/agreements/{a4}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(retired["status"], "retired", "{retired}");
    // Its agreement takes no transfer.
    let under_retired = json!({
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": "TransferRequestMessage", "consumerPid": "urn:uuid:t-0",
        "agreementId": format!("{}/agreements/{a4}", b.base), "format": "HttpData-PULL",
        "callbackAddress": format!("{}/callback", a.url),
    });
    assert_eq!(
        dsp_post(&b, "/dsp/transfers/request", Some(&token), &under_retired)
            .await
            .0,
        400
    );

    // The transfer: an HttpData-PULL under the agreement.
    let agreement_ref = agreement["agreement"]["@id"].as_str().unwrap().to_string();
    let transfer_request = json!({
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": "TransferRequestMessage",
        "consumerPid": "urn:uuid:t-1",
        "agreementId": agreement_ref,
        "format": "HttpData-PULL",
        "callbackAddress": format!("{}/callback", a.url),
    });
    dsp.check(
        "transfer/transfer-request-message-schema.json",
        &transfer_request,
    )
    .unwrap();
    let parks = a.token_with(&a.key, &b, Some("parks-dept"), 0);
    let mut push = transfer_request.clone();
    push["dataAddress"] =
        json!({"@type": "DataAddress", "endpointType": "https://w3id.org/idsa/v4.1/HTTP"});
    let mut other_format = transfer_request.clone();
    other_format["format"] = json!("HttpData-PUSH");
    for (msg, tok, says) in [
        // Another organisation of A cannot transfer under this one's agreement.
        (&transfer_request, &parks, "no agreement"),
        (&push, &token, "no dataAddress"),
        (&other_format, &token, "only HttpData-PULL"),
    ] {
        let (status, err) = dsp_post(&b, "/dsp/transfers/request", Some(tok), msg).await;
        assert_eq!(status, 400, "{err}");
        dsp.check("transfer/transfer-error-schema.json", &err)
            .unwrap_or_else(|e| panic!("{e}\n{err:#}"));
        assert!(
            err["reason"][0].as_str().unwrap().contains(says),
            "{says}: {err}"
        );
    }
    assert_eq!(
        dsp_post(&b, "/dsp/transfers/request", None, &transfer_request)
            .await
            .0,
        404
    );
    let (status, tp) = dsp_post(
        &b,
        "/dsp/transfers/request",
        Some(&token),
        &transfer_request,
    )
    .await;
    assert_eq!((status, &tp["state"]), (201, &json!("REQUESTED")), "{tp}");
    dsp.check("transfer/transfer-process-schema.json", &tp)
        .unwrap();
    let tpid = tp["providerPid"].as_str().unwrap().to_string();
    let tpath = format!("/dsp/transfers/{tpid}");
    let transfer_msg = |kind: &str| consumer_message(kind, &tpid, "urn:uuid:t-1", json!({}));
    // Only a termination is the consumer's to send while REQUESTED.
    for (suffix, kind) in [
        ("start", "TransferStartMessage"),
        ("completion", "TransferCompletionMessage"),
        ("suspension", "TransferSuspensionMessage"),
    ] {
        let (status, err) = dsp_post(
            &b,
            &format!("{tpath}/{suffix}"),
            Some(&token),
            &transfer_msg(kind),
        )
        .await;
        assert_eq!(status, 400, "{suffix}: {err}");
        dsp.check("transfer/transfer-error-schema.json", &err)
            .unwrap();
    }
    assert_eq!(dsp_get(&b, &tpath, &stranger.token(&b)).await.0, 404);
    b.service.advance_negotiations().await.unwrap();
    let sent = a.messages();
    let (where_, _, start_msg) = sent.last().unwrap();
    assert_eq!(where_, "urn:uuid:t-1/start");
    dsp.check("transfer/transfer-start-message-schema.json", start_msg)
        .unwrap_or_else(|e| panic!("{e}\n{start_msg:#}"));
    assert_eq!(dsp_get(&b, &tpath, &token).await.1["state"], "STARTED");
    let endpoint = start_msg["dataAddress"]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let data_token = start_msg["dataAddress"]["endpointProperties"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    // The data token never enters the log.
    for kind in ["dsp.transfer_requested", "dsp.transfer_started"] {
        for e in b.entries_of_type(kind).await {
            assert!(!e.contains(&data_token), "{e}");
        }
    }
    let read = |query: &'static str, participant: Option<String>, data: String| {
        let mut req = b.client.get(format!("{endpoint}{query}")).bearer_auth(data);
        if let Some(p) = participant {
            req = req.header("citytrust-participant", p);
        }
        req.send()
    };
    let reads_before = b.entries_of_type("content.read").await.len();
    let res = read("?format=json", Some(a.token(&b)), data_token.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("citytrust-log-entry"));
    let rows: Value = res.json().await.unwrap();
    assert_eq!(rows[0]["building"], "Alpha Tower", "{rows}");
    assert_eq!(
        b.entries_of_type("content.read").await.len(),
        reads_before + 1
    );
    // Another purpose, another organisation of A, no participant token, a
    // wrong data token: refused by B, and nothing of the data in the answer.
    for (query, participant, data, status) in [
        (
            "?format=json&purpose=city-operations",
            Some(a.token(&b)),
            data_token.clone(),
            403,
        ),
        ("?format=json", Some(parks.clone()), data_token.clone(), 403),
        ("?format=json", None, data_token.clone(), 404),
        ("?format=json", Some(a.token(&b)), "0".repeat(64), 404),
        (
            "?format=json",
            Some(stranger.token(&b)),
            data_token.clone(),
            404,
        ),
    ] {
        let res = read(query, participant, data).await.unwrap();
        assert_eq!(res.status(), status, "{query}");
        let text = res.text().await.unwrap();
        assert!(
            !text.contains("Alpha Tower") && !text.contains("1520000"),
            "{text}"
        );
    }
    // Suspended, no read; resumed, reads again.
    let (status, s) = dsp_post(
        &b,
        &format!("{tpath}/suspension"),
        Some(&token),
        &transfer_msg("TransferSuspensionMessage"),
    )
    .await;
    assert_eq!((status, &s["state"]), (200, &json!("SUSPENDED")));
    let res = read("?format=json", Some(a.token(&b)), data_token.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let (status, s) = dsp_post(
        &b,
        &format!("{tpath}/start"),
        Some(&token),
        &transfer_msg("TransferStartMessage"),
    )
    .await;
    assert_eq!((status, &s["state"]), (200, &json!("STARTED")), "{s}");
    let res = read("?format=json", Some(a.token(&b)), data_token.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A transfer may be ended while requested, or completed once started;
    // a completed one takes nothing more and reads nothing.
    let mut second_transfer = transfer_request.clone();
    second_transfer["consumerPid"] = json!("urn:uuid:t-2");
    let (_, t2) = dsp_post(&b, "/dsp/transfers/request", Some(&token), &second_transfer).await;
    let t2pid = t2["providerPid"].as_str().unwrap().to_string();
    let end2 = consumer_message(
        "TransferTerminationMessage",
        &t2pid,
        "urn:uuid:t-2",
        json!({}),
    );
    let (status, s2) = dsp_post(
        &b,
        &format!("/dsp/transfers/{t2pid}/termination"),
        Some(&token),
        &end2,
    )
    .await;
    assert_eq!((status, &s2["state"]), (200, &json!("TERMINATED")));
    let mut third_transfer = transfer_request.clone();
    third_transfer["consumerPid"] = json!("urn:uuid:t-3");
    let (_, t3) = dsp_post(&b, "/dsp/transfers/request", Some(&token), &third_transfer).await;
    let t3pid = t3["providerPid"].as_str().unwrap().to_string();
    b.service.advance_negotiations().await.unwrap();
    let done = consumer_message(
        "TransferCompletionMessage",
        &t3pid,
        "urn:uuid:t-3",
        json!({}),
    );
    let (status, s3) = dsp_post(
        &b,
        &format!("/dsp/transfers/{t3pid}/completion"),
        Some(&token),
        &done,
    )
    .await;
    assert_eq!((status, &s3["state"]), (200, &json!("COMPLETED")), "{s3}");
    for (suffix, kind) in [
        ("start", "TransferStartMessage"),
        ("suspension", "TransferSuspensionMessage"),
        ("termination", "TransferTerminationMessage"),
        ("completion", "TransferCompletionMessage"),
    ] {
        let msg = consumer_message(kind, &t3pid, "urn:uuid:t-3", json!({}));
        assert_eq!(
            dsp_post(
                &b,
                &format!("/dsp/transfers/{t3pid}/{suffix}"),
                Some(&token),
                &msg
            )
            .await
            .0,
            400,
            "{suffix}"
        );
    }
    let (_, _, start3) = a
        .messages()
        .into_iter()
        .find(|(w, _, _)| w == "urn:uuid:t-3/start")
        .unwrap();
    let token3 = start3["dataAddress"]["endpointProperties"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let endpoint3 = start3["dataAddress"]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let res = b
        .client
        .get(format!("{endpoint3}?format=json"))
        .bearer_auth(token3)
        .header("citytrust-participant", a.token(&b))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
    assert!(!res.text().await.unwrap().contains("Alpha Tower"));

    // After the agreement's last day: refused at once, and the worker ends the transfer.
    b.clock.advance(time::Duration::days(200));
    let res = read("?format=json", Some(a.token(&b)), data_token.clone())
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(!text.contains("Alpha Tower"), "{text}");
    b.service.advance_negotiations().await.unwrap();
    let sent = a.messages();
    let (where_, _, end_msg) = sent.last().unwrap();
    assert_eq!(where_, "urn:uuid:t-1/termination");
    dsp.check("transfer/transfer-termination-message-schema.json", end_msg)
        .unwrap();
    assert_eq!(
        dsp_get(&b, &tpath, &a.token(&b)).await.1["state"],
        "TERMINATED"
    );
    let res = read("?format=json", Some(a.token(&b)), data_token.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    for (kind, n) in [
        ("dsp.transfer_requested", 3),
        ("dsp.transfer_started", 2),
        ("dsp.transfer_suspended", 1),
        ("dsp.transfer_resumed", 1),
        ("dsp.transfer_completed", 1),
        ("dsp.transfer_terminated", 2),
    ] {
        assert_eq!(b.entries_of_type(kind).await.len(), n, "{kind}");
    }
}

/// Pin `other` as a participant on `app` (its catalogue harvested at once).
pub(crate) async fn pin(app: &TestApp, other: &TestApp, id: &str) {
    let me: Value = other
        .get("/dsp/participant", None)
        .await
        .json()
        .await
        .unwrap();
    let admin = app.token("admin").await;
    let res = app
        .post_json(
            "/api/v1/remote-catalogues",
            Some(&admin),
            &json!({"id": id, "name": format!("City {id}"), "url": format!("{}/catalog.ttl", other.base),
                    "kind": "dcat", "participant": {"id": me["participantId"], "key": me["key"]}}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

/// Both logs, checked from their public files by `citytrust verify`.
async fn log_verifies(app: &TestApp) {
    while app.service.integrate_ledger().await.unwrap().is_some() {}
    let url = app.base.clone();
    let state = tempfile::tempdir().unwrap().keep().join("state");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_citytrust"))
            .args(["verify", "--url", &url, "--state"])
            .arg(&state)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}: {text}", app.base);
}

#[tokio::test]
async fn a_city_asks_another_through_the_dataspace_protocol_and_reads_under_its_agreement() {
    let b = crate::governance::start().await;
    let a = TestApp::start().await;
    let alice_b = b.token("alice").await;
    crate::governance::with_content(
        &b,
        &alice_b,
        "Heat meters",
        "city-energy",
        "shared_public",
        crate::governance::ENERGY_CSV,
    )
    .await;
    b.create_dataset(
        &alice_b,
        &dataset("Boiler permits", "city-energy", "shared_public"),
    )
    .await;
    // Each city pins the other; A harvests B's catalogue as it does so.
    pin(&b, &a, "city-a").await;
    pin(&a, &b, "city-b").await;
    let found: Value = a
        .get("/api/v1/federated-entries?q=heat", None)
        .await
        .json()
        .await
        .unwrap();
    let entry = &found["items"][0];
    assert_eq!(entry["source"]["catalogue_id"], "city-b", "{found:#}");
    let entry_id = entry["id"].as_str().unwrap().to_string();

    // An analyst of A asks, for her organisation.
    let alice_a = a.token("alice").await;
    let ask = json!({
        "organization_id": "city-energy",
        "level": "identified",
        "purpose": "research",
        "starts_on": "2026-03-01",
        "ends_on": "2026-06-30",
        "benefit": "Compare heat demand across the two cities.",
        "checklist": {
            "justified": "Heat demand by building decides where the network goes.",
            "benefits_and_risks": "Residents get cheaper heat; owners' consumption could be exposed.",
            "proportionate": "One season, the buildings of one district.",
            "without_personal_data": "The data is about buildings, not people.",
            "power_to_share": "The regional energy plan mandates it.",
        },
    });
    let path = format!("/api/v1/federated-entries/{entry_id}/negotiations");
    // Not for an organisation she is not in; not at a level or for a purpose B does not offer.
    for (change, field) in [
        (json!({"organization_id": "water-co"}), "organization_id"),
        (json!({"purpose": "marketing"}), "purpose"),
    ] {
        let mut bad = ask.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        crate::harness::assert_problem(
            a.post_json(&path, Some(&alice_a), &bad).await,
            422,
            "validation_failed",
            Some(field),
        )
        .await;
    }
    // She presses "Ask City city-b for access" on the entry's page.
    let mut browser = crate::web::Browser::new(&a);
    browser.sign_in("alice").await;
    let page = browser
        .get(&format!("/federated/{entry_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Ask City city-b for access"), "{page}");
    let csrf = crate::web::hidden(&page, "csrf");
    let form_path = format!("/federated/{entry_id}/ask");
    let checklist: Vec<(String, String)> = ask["checklist"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (format!("checklist.{k}"), v.as_str().unwrap().to_string()))
        .collect();
    let mut fields: Vec<(&str, &str)> = vec![
        ("csrf", &csrf),
        ("organization_id", "city-energy"),
        ("level", "identified"),
        ("starts_on", "2026-03-01"),
        ("ends_on", "2026-06-30"),
        ("benefit", "Compare heat demand across the two cities."),
    ];
    for (k, v) in &checklist {
        fields.push((k, v));
    }
    // A purpose B does not offer: the form says which it does.
    let mut wrong = fields.clone();
    wrong.push(("purpose", "marketing"));
    let page = browser.post(&form_path, &wrong).await.text().await.unwrap();
    assert!(page.contains("The request was not sent"), "{page}");
    assert!(page.contains("research"), "{page}");
    fields.push(("purpose", "research"));
    let res = browser.post(&form_path, &fields).await;
    assert_eq!(res.status(), 303);
    let page = browser
        .get("/requests?done=remote")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("My requests to other trusts"), "{page}");
    assert!(page.contains("waiting for its trustees"), "{page}");
    let mine: Value = a
        .get("/api/v1/me/remote-requests", Some(&alice_a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine[0]["state"], "REQUESTED");
    let cpid = mine[0]["consumer_pid"].as_str().unwrap().to_string();

    // B's trustees decide through B's API.
    let trustee = b.token("trustee").await;
    let requests: Value = b
        .get("/api/v1/access-requests", Some(&trustee))
        .await
        .json()
        .await
        .unwrap();
    let request = requests
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requester"] == "dsp.city-a")
        .unwrap();
    assert_eq!(
        request["organization_id"],
        citytrust_service::negotiation::stand_in_organization("city-a", "city-energy").as_str()
    );
    assert_eq!(
        request["benefit"],
        "Compare heat demand across the two cities."
    );
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        request["id"].as_str().unwrap()
    );
    // Nothing moves before they do.
    b.service.advance_negotiations().await.unwrap();
    a.service.advance_negotiations().await.unwrap();
    let mine: Value = a
        .get("/api/v1/me/remote-requests", Some(&alice_a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine[0]["state"], "REQUESTED");
    for t in ["trustee", "trustee2", "trustee3"] {
        let tok = b.token(t).await;
        let res = b
            .post_json(
                &votes,
                Some(&tok),
                &json!({"vote": "approve", "reason": "A neighbouring city's plan."}),
            )
            .await;
        assert_eq!(res.status(), 200);
    }
    // The workers of both nodes carry it through: AGREED, VERIFIED,
    // FINALIZED, then a transfer requested and started.
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
    assert_eq!(mine[0]["state"], "FINALIZED", "{mine:#}");
    assert_eq!(mine[0]["transfer"]["state"], "STARTED", "{mine:#}");
    assert!(
        mine[0]["transfer"].get("token").is_none(),
        "the data token is never shown"
    );
    // The portal offers the data, read through A as CSV.
    let page = browser.get("/requests").await.text().await.unwrap();
    assert!(page.contains("Read as CSV"), "{page}");
    let res = browser.get(&format!("/remote-requests/{cpid}/data")).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Alpha Tower"));
    assert_eq!(mine[0]["agreement"]["target"], "heat-meters");

    // She reads through A, under the agreement's purpose.
    let data = format!("/api/v1/remote-requests/{cpid}/data?format=json");
    let b_reads = b.entries_of_type("content.read").await.len();
    assert!(b_reads >= 1, "the portal's read is in B's log");
    let res = a.get(&data, Some(&alice_a)).await;
    let status = res.status();
    let provider_entry = res.headers().contains_key("citytrust-provider-log-entry");
    let body = res.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(provider_entry);
    let res_json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(res_json[0]["building"], "Alpha Tower", "{res_json}");
    assert_eq!(b.entries_of_type("content.read").await.len(), b_reads + 1);
    // Another purpose, another organisation of A: refused by B.
    let res = a
        .get(&format!("{data}&purpose=city-operations"), Some(&alice_a))
        .await;
    assert_eq!(res.status(), 403);
    let text = res.text().await.unwrap();
    assert!(!text.contains("Alpha Tower"), "{text}");
    // Someone of both organisations reading for the other one: B refuses.
    a.service
        .insert_user(crate::harness::user(
            "carol",
            vec![],
            vec!["city-energy", "water-co"],
        ))
        .await
        .unwrap();
    let carol_a = a.token("carol").await;
    let res = a
        .get(&format!("{data}&organization_id=water-co"), Some(&carol_a))
        .await;
    assert_eq!(res.status(), 403);
    let text = res.text().await.unwrap();
    assert!(!text.contains("Alpha Tower"), "{text}");
    // Someone of another organisation only: A does not even ask.
    let bob_a = a.token("bob").await;
    let res = a.get(&data, Some(&bob_a)).await;
    assert_eq!(res.status(), 404);
    assert!(!res.text().await.unwrap().contains("Alpha Tower"));
    // Anonymous callers get nothing at all.
    assert_eq!(a.get(&data, None).await.status(), 401);

    // An entry deleted on B leaves A at the next harvest.
    let res = b
        .patch_json(
            "/api/v1/datasets/boiler-permits",
            Some(&alice_b),
            &json!({"publication_status": "withdrawn"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let admin_a = a.token("admin").await;
    a.post_json(
        "/api/v1/remote-catalogues/city-b/harvest",
        Some(&admin_a),
        &json!({}),
    )
    .await;
    let found: Value = a
        .get("/api/v1/federated-entries?q=boiler", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 0, "{found:#}");

    // After the agreement's last day, B refuses, and its worker ends the transfer.
    for node in [&a, &b] {
        node.clock.advance(time::Duration::days(130));
    }
    let alice_a = a.token("alice").await;
    let res = a.get(&data, Some(&alice_a)).await;
    assert_eq!(res.status(), 403);
    for _ in 0..2 {
        b.service.advance_negotiations().await.unwrap();
        a.service.advance_negotiations().await.unwrap();
    }
    let mine: Value = a
        .get("/api/v1/me/remote-requests", Some(&alice_a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine[0]["transfer"]["state"], "TERMINATED", "{mine:#}");
    crate::harness::assert_problem(
        a.get(&data, Some(&alice_a)).await,
        422,
        "transfer_not_started",
        None,
    )
    .await;

    // Both logs hold each step, and verify.
    for (node, kinds) in [
        (
            &a,
            &[
                "dsp.negotiation_asked",
                "dsp.agreement_received",
                "dsp.agreement_verified",
                "dsp.negotiation_finalized",
                "dsp.transfer_requested",
                "dsp.transfer_started",
                "dsp.remote_read",
                "dsp.transfer_terminated",
            ][..],
        ),
        (
            &b,
            &[
                "dsp.negotiation_requested",
                "dsp.agreement_sent",
                "dsp.agreement_verified",
                "dsp.negotiation_finalized",
                "dsp.transfer_requested",
                "dsp.transfer_started",
                "content.read",
                "dsp.transfer_terminated",
            ][..],
        ),
    ] {
        for kind in kinds {
            assert!(
                !node.entries_of_type(kind).await.is_empty(),
                "{}: no {kind}",
                node.base
            );
        }
        log_verifies(node).await;
    }
}
