//! Residents in control, end to end over HTTP: link codes, consent and its
//! withdrawal at the very next read, "who used my data", the export bundle,
//! erasure checked on the Parquet files, and every "may not".

use citytrust_model::Role;
use reqwest::Response;
use serde_json::{Value, json};

use crate::governance::start;
use crate::harness::{TestApp, assert_problem, user};

/// Three households' readings; `H-2` is the resident's.
const READINGS: &[u8] =
    b"household,meter,kwh\nH-1,M-1,1.5\nH-1,M-1,1.7\nH-2,M-2,0.4\nH-2,M-2,0.6\nH-3,M-3,2.2\n";

async fn json_of(res: Response, status: u16) -> Value {
    let code = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(code, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn households(csv: &str) -> Vec<String> {
    let mut h: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    h.dedup();
    h
}

/// A personal dataset of `city-energy` (alice's), with content.
pub(crate) async fn personal_dataset(app: &TestApp, alice: &str) -> String {
    let mut d = crate::harness::dataset("Household meters", "city-energy", "shared_specific");
    d["personal_data"] = json!(true);
    d["column_classes"] = json!({"personal": ["household", "meter"]});
    d["personal_terms"] = json!({
        "subject_key": "household",
        "purposes": [
            {"purpose": "research", "basis": "consent", "notice": "Researchers may study your readings."},
            {"purpose": "city-operations", "basis": "public_task", "notice": "The city plans the grid."}
        ],
        "retention": "P2Y",
        "notice": "Your household's readings."
    });
    let id = app.create_dataset(alice, &d).await;
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(alice),
            "text/csv",
            READINGS.to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    id
}

/// The analyst's university gets a consent-based research agreement (rows),
/// decided by the trustees after the public comment period.
pub(crate) async fn research_agreement(app: &TestApp, dataset: &str) -> String {
    let analyst = app.token("analyst").await;
    let mut body = crate::governance::request(&[dataset], "research", "identified");
    body["ends_on"] = json!("2026-12-31");
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &body)
            .await,
        201,
    )
    .await;
    assert_eq!(r["status"], "public_comment", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    app.clock.advance(time::Duration::days(15));
    let approve = json!({"vote": "approve", "reason": "Consent-based; public benefit."});
    let mut last = Value::Null;
    for t in ["trustee", "trustee2", "trustee3"] {
        let tok = app.token(t).await;
        last = json_of(
            app.post_json(
                &format!("/api/v1/access-requests/{id}/votes"),
                Some(&tok),
                &approve,
            )
            .await,
            200,
        )
        .await;
    }
    assert_eq!(last["status"], "approved", "{last}");
    last["agreement_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Rows per household in every stored version file of `dataset`, read from
/// the Parquet files themselves.
async fn stored_households(app: &TestApp, dataset: &str, versions: &[i64]) -> Vec<Vec<String>> {
    use citytrust_query::datafusion::arrow::array::{Array, AsArray};
    use citytrust_query::datafusion::prelude::{ParquetReadOptions, SessionContext};
    let mut out = Vec::new();
    for v in versions {
        let ctx = SessionContext::new();
        app.service.versions().register(&ctx);
        let location = app
            .service
            .versions()
            .location(&format!("datasets/{dataset}/{v}/data.parquet"));
        let df = ctx
            .read_parquet(location.as_str(), ParquetReadOptions::default())
            .await
            .unwrap();
        let batches = df.collect().await.unwrap();
        let mut keys = Vec::new();
        for b in batches {
            let col = b.column_by_name("household").unwrap();
            let col = citytrust_query::datafusion::arrow::compute::cast(
                col,
                &citytrust_query::datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let a = col.as_string::<i32>();
            keys.extend((0..a.len()).map(|i| a.value(i).to_string()));
        }
        out.push(keys);
    }
    out
}

#[tokio::test]
async fn consent_decides_every_read_withdrawal_is_immediate_and_erasure_reaches_the_files() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = personal_dataset(&app, &alice).await;
    let resident = app.token("resident").await;

    // The owner issues a link code; the resident redeems it (once).
    let code = json_of(
        app.post_json(
            &format!("/api/v1/datasets/{id}/link-codes"),
            Some(&alice),
            &json!({"subject_key": "H-2"}),
        )
        .await,
        201,
    )
    .await;
    let code = code["code"].as_str().unwrap().to_string();
    let link = json_of(
        app.post_json(
            "/api/v1/me/links",
            Some(&resident),
            &json!({"code": code.to_lowercase()}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(link["subject_key"], "H-2");
    let links = json_of(app.get("/api/v1/me/links", Some(&resident)).await, 200).await;
    assert_eq!(
        links,
        json!([{"dataset_id": id, "subject_key": "H-2", "via": "link_code", "linked_at": link["linked_at"]}])
    );

    // Consent to research by the university: a 27560 record and a signed receipt.
    let consent = json_of(
        app.post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research", "recipient_organization_id": "uni"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(consent["record"]["schema_version"], "ISO/IEC TS 27560:2023");
    assert_eq!(consent["record"]["state"], "dpv:ConsentGiven");
    let receipt = consent["receipt"].as_str().unwrap();
    assert!(
        receipt.starts_with("citytrust consent receipt v1\n"),
        "{receipt}"
    );
    // The receipt verifies with the trust's public key (the log's verifier key).
    let key = app.get("/ledger/key", None).await.text().await.unwrap();
    let text = citytrust_ledger::checkpoint::open_note(receipt.as_bytes(), key.trim()).unwrap();
    let record: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(record, consent["record"]);
    // A changed receipt does not verify.
    let forged = receipt.replace("ConsentGiven", "ConsentWithheld");
    assert!(citytrust_ledger::checkpoint::open_note(forged.as_bytes(), key.trim()).is_err());
    // The log names no one: the entry carries a commitment that only the resident can open.
    assert!(!consent.to_string().contains("\"resident\""));

    let agreement = research_agreement(&app, &id).await;
    assert!(agreement.starts_with("dsa-"), "{agreement}");
    // Two weeks passed: fresh tokens.
    let resident = app.token("resident").await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let data = format!("/api/v1/datasets/{id}/data?format=csv&purpose=research");
    let first = app.get(&data, Some(&analyst)).await;
    assert_eq!(first.status(), 200);
    let first_entry: i64 = first.headers()["citytrust-log-entry"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let csv = first.text().await.unwrap();
    // Only the household that consented.
    assert_eq!(households(&csv), ["H-2"], "{csv}");
    // SQL goes through the same filter.
    let q = json_of(
        app.post_json(
            "/api/v1/query",
            Some(&analyst),
            &json!({"sql": format!("SELECT household, COUNT(*) AS n FROM {} GROUP BY household", id.replace('-', "_")), "purpose": "research"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(q, json!([{"household": "H-2", "n": 2}]), "{q}");
    // No copy outlives a withdrawal: data read under residents' consent is
    // not derived into a dataset of its own.
    let derived = app
        .post_json(
            "/api/v1/derived-datasets",
            Some(&analyst),
            &json!({
                "dataset": {"title": "Peaks", "description": "d", "owner_organization_id": "uni", "spectrum": "shared_specific"},
                "sql": format!("SELECT household, COUNT(*) AS n FROM {} GROUP BY household", id.replace('-', "_")),
                "purpose": "research"}),
        )
        .await;
    let refusal = assert_problem(derived, 403, "refused", None).await;
    assert_eq!(
        refusal["rule"], "derived-from-residents-choices",
        "{refusal}"
    );

    // Withdrawal: the very next read has none of the resident's rows.
    let cid = consent["id"].as_str().unwrap();
    let w = json_of(
        app.post_json(
            &format!("/api/v1/me/consents/{cid}/withdraw"),
            Some(&resident),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(w["record"]["state"], "dpv:ConsentWithdrawn");
    let second = app.get(&data, Some(&analyst)).await;
    assert_eq!(second.status(), 200);
    let second_entry: i64 = second.headers()["citytrust-log-entry"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let csv = second.text().await.unwrap();
    assert!(households(&csv).is_empty(), "{csv}");

    // Who used my data: the first read (and the query), not the one after withdrawal.
    let accesses = json_of(app.get("/api/v1/me/accesses", Some(&resident)).await, 200).await;
    let seen: Vec<i64> = accesses
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["log_index"].as_i64().unwrap())
        .collect();
    assert!(seen.contains(&first_entry), "{accesses}");
    assert!(!seen.contains(&second_entry), "{accesses}");
    let read = accesses
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["log_index"] == first_entry)
        .unwrap();
    assert_eq!(read["by"], "organization:uni");
    assert_eq!(read["purpose"], "research");
    assert_eq!(read["agreement"], agreement);
    assert_eq!(read["because"], "consent");
    // The owner's own read for city operations (a public task) includes everyone.
    let own = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=city-operations"),
            Some(&alice),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(households(&own), ["H-1", "H-2", "H-3"]);

    // A subject access request: the bundle has the rows and the recipients.
    let sar = json_of(
        app.post_json(
            "/api/v1/me/subject-access-requests",
            Some(&resident),
            &json!({}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(sar["status"], "open");
    assert_eq!(sar["due_on"], "2026-04-15", "{sar}");
    let bundle = json_of(app.get("/api/v1/me/export", Some(&resident)).await, 200).await;
    let rows = bundle["datasets"][0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{bundle}");
    assert!(rows.iter().all(|r| r["household"] == "H-2"));
    assert!(
        bundle["datasets"][0]["csv"]
            .as_str()
            .unwrap()
            .contains("H-2,M-2,0.4")
    );
    assert_eq!(bundle["datasets"][0]["retention"], "P2Y");
    assert!(
        bundle["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["recipient"] == "organization:uni" && r["purpose"] == "research"),
        "{bundle}"
    );
    let mine = json_of(
        app.get("/api/v1/me/subject-access-requests", Some(&resident))
            .await,
        200,
    )
    .await;
    assert_eq!(mine[0]["status"], "answered", "{mine}");

    // A second version, uploaded in quarantine with one of the resident's rows
    // set aside (and one of a neighbour's), then erasure: every version is
    // rewritten without the resident, rejected rows included.
    let mut second = READINGS.to_vec();
    second.extend_from_slice(b"H-2,M-2,lots\nH-3,M-3,many\n");
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions?on_error=quarantine&types=kwh:float"),
            Some(&alice),
            "text/csv",
            second,
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let rejects_path = format!("/api/v1/datasets/{id}/versions/2/rejects?purpose=city-operations");
    let rejects = app
        .get(&rejects_path, Some(&alice))
        .await
        .text()
        .await
        .unwrap();
    assert!(rejects.contains("H-2,M-2,lots"), "{rejects}");
    let before = stored_households(&app, &id, &[1, 2]).await;
    assert!(before.iter().all(|v| v.contains(&"H-2".to_string())));
    let erasure = json_of(
        app.post_json(
            "/api/v1/me/subject-access-requests",
            Some(&resident),
            &json!({"kind": "erasure", "dataset_id": id}),
        )
        .await,
        201,
    )
    .await;
    let queue = json_of(app.get("/api/v1/subject-requests", Some(&alice)).await, 200).await;
    assert!(
        queue
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == erasure["id"])
    );
    let eid = erasure["id"].as_str().unwrap();
    // Only the owner carries it out.
    let bob = app.token("bob").await;
    assert_eq!(
        app.post_json(
            &format!("/api/v1/subject-requests/{eid}/erase"),
            Some(&bob),
            &json!({})
        )
        .await
        .status(),
        404
    );
    let done = json_of(
        app.post_json(
            &format!("/api/v1/subject-requests/{eid}/erase"),
            Some(&alice),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(done["status"], "answered");
    let after = stored_households(&app, &id, &[1, 2]).await;
    for v in &after {
        assert!(!v.contains(&"H-2".to_string()), "{after:?}");
        assert_eq!(v.len(), 3);
    }
    let rejects = app
        .get(&rejects_path, Some(&alice))
        .await
        .text()
        .await
        .unwrap();
    assert!(!rejects.contains("H-2"), "{rejects}");
    assert!(rejects.contains("H-3,M-3,many"), "{rejects}");
    let erased = app.entries_of_type("subject.erased").await;
    assert!(
        erased[0].contains("\"rejected_rows_removed\":1"),
        "{erased:?}"
    );
    // The owner's reads, and a new upload holding the person again, never return them.
    let own = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=city-operations"),
            Some(&alice),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(households(&own), ["H-1", "H-3"]);
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(&alice),
            "text/csv",
            READINGS.to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201);
    let third = stored_households(&app, &id, &[3]).await;
    assert!(!third[0].contains(&"H-2".to_string()), "{third:?}");
    // Still, the resident sees who read their rows before.
    let accesses = json_of(app.get("/api/v1/me/accesses", Some(&resident)).await, 200).await;
    assert!(
        accesses
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["log_index"] == first_entry)
    );
}

#[tokio::test]
async fn no_one_reads_or_changes_another_residents_consents_links_or_export() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = personal_dataset(&app, &alice).await;
    app.service
        .insert_user(user("neighbour", vec![Role::Resident], vec![]))
        .await
        .unwrap();
    let resident = app.token("resident").await;
    let neighbour = app.token("neighbour").await;
    let code = json_of(
        app.post_json(
            &format!("/api/v1/datasets/{id}/link-codes"),
            Some(&alice),
            &json!({"subject_key": "H-2"}),
        )
        .await,
        201,
    )
    .await["code"]
        .as_str()
        .unwrap()
        .to_string();
    json_of(
        app.post_json("/api/v1/me/links", Some(&resident), &json!({"code": code}))
            .await,
        201,
    )
    .await;
    // A code works once.
    assert_problem(
        app.post_json("/api/v1/me/links", Some(&neighbour), &json!({"code": code}))
            .await,
        403,
        "refused",
        None,
    )
    .await;
    // Only the owner issues codes, and only for keys the data holds.
    let bob = app.token("bob").await;
    assert_eq!(
        app.post_json(
            &format!("/api/v1/datasets/{id}/link-codes"),
            Some(&bob),
            &json!({"subject_key": "H-1"})
        )
        .await
        .status(),
        403
    );
    assert_problem(
        app.post_json(
            &format!("/api/v1/datasets/{id}/link-codes"),
            Some(&alice),
            &json!({"subject_key": "H-9"}),
        )
        .await,
        422,
        "validation_failed",
        Some("subject_key"),
    )
    .await;
    let consent = json_of(
        app.post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research"}),
        )
        .await,
        201,
    )
    .await;
    // The same consent twice is a conflict; an objection to a consent-based use is invalid.
    assert_eq!(
        app.post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research"})
        )
        .await
        .status(),
        409
    );
    assert_problem(
        app.post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research", "kind": "objection"}),
        )
        .await,
        422,
        "validation_failed",
        Some("kind"),
    )
    .await;
    // The neighbour is linked to nothing: may not consent for these records.
    assert_problem(
        app.post_json(
            "/api/v1/me/consents",
            Some(&neighbour),
            &json!({"dataset_id": id, "purpose": "research"}),
        )
        .await,
        403,
        "refused",
        None,
    )
    .await;
    // The neighbour sees none of the resident's consents, links, accesses, requests or export.
    for path in [
        "/api/v1/me/consents",
        "/api/v1/me/links",
        "/api/v1/me/accesses",
        "/api/v1/me/subject-access-requests",
        "/api/v1/me/commitments",
    ] {
        let body = json_of(app.get(path, Some(&neighbour)).await, 200).await;
        assert_eq!(body, json!([]), "{path}: {body}");
    }
    let export = app
        .get("/api/v1/me/export", Some(&neighbour))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !export.contains("H-2") && !export.contains(consent["id"].as_str().unwrap()),
        "{export}"
    );
    // …and may not withdraw it (it does not exist for them).
    let cid = consent["id"].as_str().unwrap();
    assert_eq!(
        app.post_json(
            &format!("/api/v1/me/consents/{cid}/withdraw"),
            Some(&neighbour),
            &json!({})
        )
        .await
        .status(),
        404
    );
    // Nor act for the resident without an authority.
    let res = app
        .client
        .get(app.url("/api/v1/me/consents"))
        .bearer_auth(&neighbour)
        .header("on-behalf-of", "resident")
        .send()
        .await
        .unwrap();
    assert_problem(res, 403, "refused", None).await;
    // Anonymous: nothing.
    for path in [
        "/api/v1/me/consents",
        "/api/v1/me/export",
        "/api/v1/me/accesses",
    ] {
        assert_eq!(app.get(path, None).await.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn guardians_act_only_for_minors_and_agents_only_while_their_authority_lasts() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = personal_dataset(&app, &alice).await;
    for name in ["kim", "guardian", "attorney"] {
        app.service
            .insert_user(user(name, vec![Role::Resident], vec![]))
            .await
            .unwrap();
    }
    let admin = app.token("admin").await;
    // Kim is 12; the resident is an adult.
    assert_eq!(
        app.post_json(
            "/api/v1/users/kim/birth-date",
            Some(&admin),
            &json!({"birth_date": "2014-01-10"})
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        app.post_json(
            "/api/v1/users/resident/birth-date",
            Some(&admin),
            &json!({"birth_date": "1980-05-01"})
        )
        .await
        .status(),
        204
    );
    // Only an administrator records a birth date.
    assert_eq!(
        app.post_json(
            "/api/v1/users/kim/birth-date",
            Some(&alice),
            &json!({"birth_date": "2000-01-01"})
        )
        .await
        .status(),
        403
    );
    for (principal, key) in [("kim", "H-1"), ("resident", "H-2")] {
        app.service
            .link_verified(principal, &id, key, "test")
            .await
            .unwrap();
    }
    let authority = |agent: &str, principal: &str, kind: &str, ends: &str| {
        json!({"agent": agent, "principal": principal, "kind": kind, "scope": "Data decisions.", "covers": ["residents_choices", "access_requests", "reads"],
               "evidence": "Document seen, ref. T-1.", "starts_on": "2026-03-01", "ends_on": ends})
    };
    for body in [
        authority("guardian", "kim", "guardian", "2030-01-01"),
        authority("guardian", "resident", "guardian", "2030-01-01"),
        authority("attorney", "resident", "power_of_attorney", "2026-03-10"),
    ] {
        json_of(
            app.post_json("/api/v1/authorities", Some(&admin), &body)
                .await,
            201,
        )
        .await;
    }
    let consent = json!({"dataset_id": id, "purpose": "research"});
    // A minor does not consent alone…
    let kim = app.token("kim").await;
    assert_problem(
        app.post_json("/api/v1/me/consents", Some(&kim), &consent)
            .await,
        403,
        "refused",
        None,
    )
    .await;
    // …their guardian does, and the record says on whose behalf.
    let guardian = app.token("guardian").await;
    let as_agent = |token: &str, principal: &str| {
        app.client
            .post(app.url("/api/v1/me/consents"))
            .bearer_auth(token)
            .header("on-behalf-of", principal)
            .json(&consent)
    };
    let c = json_of(as_agent(&guardian, "kim").send().await.unwrap(), 201).await;
    assert_eq!(c["given_by"], "agent:guardian");
    // A guardian may not act for an adult.
    let body = json_of(as_agent(&guardian, "resident").send().await.unwrap(), 403).await;
    assert_eq!(body["rule"], "guardian-of-adult", "{body}");
    // An attorney acts while the authority lasts, and not after it ends.
    let attorney = app.token("attorney").await;
    let c = json_of(as_agent(&attorney, "resident").send().await.unwrap(), 201).await;
    assert_eq!(c["given_by"], "agent:power_of_attorney");
    app.clock.advance(time::Duration::days(10));
    let attorney = app.token("attorney").await;
    let res = app
        .client
        .get(app.url("/api/v1/me/consents"))
        .bearer_auth(&attorney)
        .header("on-behalf-of", "resident")
        .send()
        .await
        .unwrap();
    let body = json_of(res, 403).await;
    assert_eq!(body["rule"], "no-authority", "{body}");
}

/// `resident` asks for erasure from `dataset` and a member of its owner
/// (`owner`) carries it out; the owner's answer.
pub(crate) async fn erase(
    app: &TestApp,
    resident: &str,
    owner: &str,
    dataset: &str,
) -> reqwest::Response {
    let token = app.token(resident).await;
    let erasure = json_of(
        app.post_json(
            "/api/v1/me/subject-access-requests",
            Some(&token),
            &json!({"kind": "erasure", "dataset_id": dataset}),
        )
        .await,
        201,
    )
    .await;
    let owner = app.token(owner).await;
    app.post_json(
        &format!(
            "/api/v1/subject-requests/{}/erase",
            erasure["id"].as_str().unwrap()
        ),
        Some(&owner),
        &json!({}),
    )
    .await
}

/// Link `username` to `key` in `dataset` with a code the owner issued.
pub(crate) async fn link_with_code(
    app: &TestApp,
    owner: &str,
    dataset: &str,
    username: &str,
    key: &str,
) {
    let code = json_of(
        app.post_json(
            &format!("/api/v1/datasets/{dataset}/link-codes"),
            Some(owner),
            &json!({"subject_key": key}),
        )
        .await,
        201,
    )
    .await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let token = app.token(username).await;
    json_of(
        app.post_json("/api/v1/me/links", Some(&token), &json!({"code": code}))
            .await,
        201,
    )
    .await;
}

#[tokio::test]
async fn a_breach_reaches_exactly_the_people_whose_records_were_served_and_tells_them() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = personal_dataset(&app, &alice).await;
    app.service
        .insert_user(user("neighbour", vec![Role::Resident], vec![]))
        .await
        .unwrap();
    link_with_code(&app, &alice, &id, "resident", "H-2").await;
    link_with_code(&app, &alice, &id, "neighbour", "H-1").await;
    let resident = app.token("resident").await;
    json_of(
        app.post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research", "recipient_organization_id": "uni"}),
        )
        .await,
        201,
    )
    .await;
    let agreement = research_agreement(&app, &id).await;
    // Two weeks passed: fresh tokens.
    let (resident, alice) = (app.token("resident").await, app.token("alice").await);
    let analyst = app.token("analyst").await;
    let read = app
        .get(
            &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research"),
            Some(&analyst),
        )
        .await;
    assert_eq!(households(&read.text().await.unwrap()), ["H-2"]);

    let breach = json!({
        "title": "Research extract left on a shared drive",
        "description": "The university's extract was readable by all staff for a week.",
        "dataset_ids": [id],
        "agreement_id": agreement,
        "notice": "A copy of your household's readings given to City University for research was readable by other university staff for a week. We have had it deleted. You do not need to do anything."
    });
    // May not: anyone but a trustee.
    let trustee = app.token("trustee").await;
    for who in [&analyst, &resident, &alice] {
        assert_problem(
            app.post_json("/api/v1/breaches", Some(who), &breach).await,
            403,
            "forbidden",
            None,
        )
        .await;
        assert_eq!(app.get("/api/v1/breaches", Some(who)).await.status(), 403);
    }
    assert_eq!(
        app.post_json("/api/v1/breaches", None, &breach)
            .await
            .status(),
        401
    );
    // Bad input names the field, and registers nothing.
    let mut bad = breach.clone();
    bad["dataset_ids"] = json!(["no-such-data"]);
    assert_problem(
        app.post_json("/api/v1/breaches", Some(&trustee), &bad)
            .await,
        422,
        "validation_failed",
        Some("dataset_ids[0]"),
    )
    .await;
    let mut bad = breach.clone();
    bad["scope"] = json!("stored");
    assert_problem(
        app.post_json("/api/v1/breaches", Some(&trustee), &bad)
            .await,
        422,
        "validation_failed",
        Some("scope"),
    )
    .await;
    assert_eq!(
        json_of(app.get("/api/v1/breaches", Some(&trustee)).await, 200).await,
        json!([])
    );

    // The extract held only H-2 (the only consent): one person reached and told.
    let b = json_of(
        app.post_json("/api/v1/breaches", Some(&trustee), &breach)
            .await,
        201,
    )
    .await;
    assert_eq!(
        (b["affected"].as_u64(), b["notified"].as_u64()),
        (Some(1), Some(1)),
        "{b}"
    );
    let inbox = json_of(app.get("/api/v1/me/inbox", Some(&resident)).await, 200).await;
    assert_eq!(inbox.as_array().unwrap().len(), 1, "{inbox}");
    assert_eq!(inbox[0]["breach_id"], b["id"]);
    assert!(
        inbox[0]["body"]
            .as_str()
            .unwrap()
            .contains("readable by other")
    );
    let neighbour = app.token("neighbour").await;
    assert_eq!(
        json_of(app.get("/api/v1/me/inbox", Some(&neighbour)).await, 200).await,
        json!([])
    );
    // The log says how many, never who.
    let entry = &app.entries_of_type("breach.registered").await[0];
    assert!(entry.contains("\"affected\":1"), "{entry}");
    assert!(
        !entry.contains("resident") && !entry.contains("H-2"),
        "{entry}"
    );

    // What is stored was reached: every household, linked or not; the two linked are told.
    let mut stored = breach.clone();
    stored["scope"] = json!("stored");
    stored.as_object_mut().unwrap().remove("agreement_id");
    let s = json_of(
        app.post_json("/api/v1/breaches", Some(&trustee), &stored)
            .await,
        201,
    )
    .await;
    assert_eq!(
        (s["affected"].as_u64(), s["notified"].as_u64()),
        (Some(3), Some(2)),
        "{s}"
    );
    assert_eq!(
        json_of(app.get("/api/v1/me/inbox", Some(&neighbour)).await, 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The regulator's deadline: 72 hours; overdue on the register until a trustee records it.
    let due = time::OffsetDateTime::parse(
        b["regulator_due_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let registered = time::OffsetDateTime::parse(
        b["registered_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(due - registered, time::Duration::hours(72));
    app.clock.advance(time::Duration::hours(73));
    let trustee = app.token("trustee").await;
    let bid = b["id"].as_str().unwrap();
    let told = json_of(
        app.post_json(
            &format!("/api/v1/breaches/{bid}/regulator-notified"),
            Some(&trustee),
            &json!({"reference": "ICO-2026-0042"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(told["regulator_reference"], "ICO-2026-0042");
    assert_eq!(told["log_entries"].as_array().unwrap().len(), 2);
    let notified = &app.entries_of_type("breach.regulator_notified").await[0];
    assert!(notified.contains("\"within_deadline\":false"), "{notified}");
    assert_problem(
        app.post_json(
            &format!("/api/v1/breaches/{bid}/regulator-notified"),
            Some(&trustee),
            &json!({}),
        )
        .await,
        409,
        "conflict",
        None,
    )
    .await;
}

#[tokio::test]
async fn the_resident_sees_what_they_shared_and_every_log_entry_about_them() {
    let app = start().await;
    let alice = app.token("alice").await;
    let id = personal_dataset(&app, &alice).await;
    link_with_code(&app, &alice, &id, "resident", "H-2").await;
    let resident = app.token("resident").await;
    let donation = json_of(
        app.post_json(
            "/api/v1/me/consents",
            Some(&resident),
            &json!({"dataset_id": id, "purpose": "research", "kind": "donation", "reward": "a report on my household's energy use"}),
        )
        .await,
        201,
    )
    .await;
    research_agreement(&app, &id).await;
    let analyst = app.token("analyst").await;
    for _ in 0..2 {
        let res = app
            .get(
                &format!("/api/v1/datasets/{id}/data?format=csv&purpose=research"),
                Some(&analyst),
            )
            .await;
        assert_eq!(households(&res.text().await.unwrap()), ["H-2"]);
    }
    let resident = app.token("resident").await;
    let shared = json_of(app.get("/api/v1/me/sharing", Some(&resident)).await, 200).await;
    assert_eq!(shared.as_array().unwrap().len(), 1, "{shared}");
    assert_eq!(shared[0]["consent_id"], donation["id"]);
    assert_eq!(shared[0]["kind"], "donation");
    assert_eq!(shared[0]["reward"], "a report on my household's energy use");
    assert_eq!(shared[0]["uses"], 2, "{shared}");

    // Entries about the resident, once signed: each opens with its salt.
    app.service.integrate_ledger().await.unwrap();
    let entries = json_of(app.get("/api/v1/me/entries", Some(&resident)).await, 200).await;
    let kinds: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["consent.given", "subject.linked"], "{entries}");
    for e in entries.as_array().unwrap() {
        let salt = e["salt"].as_str().unwrap();
        assert_eq!(
            citytrust_service::residents::commitment_of(salt, "resident"),
            e["commitment"].as_str().unwrap()
        );
        let logged = json_of(
            app.get(&format!("/api/v1/ledger/entries/{}", e["log_index"]), None)
                .await,
            200,
        )
        .await;
        assert_eq!(logged["entry"]["subject"], e["commitment"], "{logged}");
    }
    // Nobody else is shown them.
    let analyst = app.token("analyst").await;
    assert_eq!(
        json_of(app.get("/api/v1/me/entries", Some(&analyst)).await, 200).await,
        json!([])
    );
    assert_eq!(
        json_of(app.get("/api/v1/me/sharing", Some(&analyst)).await, 200).await,
        json!([])
    );
    assert_eq!(app.get("/api/v1/me/entries", None).await.status(), 401);
}
