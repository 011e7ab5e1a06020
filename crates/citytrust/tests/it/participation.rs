//! Participation end to end (issue 27): demand-led data requests — asked,
//! supported, assigned, answered, on the roadmap, their supporters told —
//! and every "may not" around them: a second support, supporting your own
//! request, a non-owner answering, support after the answer.

use serde_json::{Value, json};

use crate::harness::{TestApp, assert_problem, dataset};

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    let code = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(code, status, "{body}");
    body
}

fn ask(title: &str, organization: Option<&str>) -> Value {
    let mut v = json!({
        "title": title,
        "description": "Every recorded cycling accident with its street segment, 2015 onwards.",
        "reason": "The city's cycling plan names no hot spots; residents see the same corners every year.",
        "use_case": "A map of hot spots for the neighbourhood council's road-safety walk.",
        "benefit": "Fewer accidents where children cycle to school.",
    });
    if let Some(o) = organization {
        v["organization_id"] = json!(o);
    }
    v
}

#[tokio::test]
async fn a_data_request_is_supported_planned_and_published_and_its_supporters_are_told() {
    let app = TestApp::start().await;
    let resident = app.token("resident").await;
    let alice = app.token("alice").await; // city-energy
    let bob = app.token("bob").await; // water-co
    let trustee = app.token("trustee").await;
    let admin = app.token("admin").await;

    // Asking needs a signed-in person and every part of the request.
    let res = app
        .post_json(
            "/api/v1/data-requests",
            None,
            &ask("Cycling accidents", None),
        )
        .await;
    assert_problem(res, 401, "unauthenticated", None).await;
    let mut partial = ask("Cycling accidents", None);
    partial["benefit"] = json!("  ");
    let res = app
        .post_json("/api/v1/data-requests", Some(&resident), &partial)
        .await;
    assert_problem(res, 422, "validation_failed", Some("benefit")).await;
    let mut unknown = ask("Cycling accidents", None);
    unknown["requested_by"] = json!("someone-else");
    let res = app
        .post_json("/api/v1/data-requests", Some(&resident), &unknown)
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = app
        .post_json(
            "/api/v1/data-requests",
            Some(&resident),
            &ask("Cycling accidents", Some("no-such-org")),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("organization_id")).await;

    let r = json_of(
        app.post_json(
            "/api/v1/data-requests",
            Some(&resident),
            &ask("Cycling accidents by street segment", Some("city-energy")),
        )
        .await,
        201,
    )
    .await;
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["status"], "open");
    assert_eq!(r["yours"], true);
    assert_eq!(r["organization_id"], "city-energy");

    // Public, without the requester's name.
    let public = json_of(
        app.get(&format!("/api/v1/data-requests/{id}"), None).await,
        200,
    )
    .await;
    assert_eq!(public["yours"], false);
    assert!(!public.to_string().contains("\"resident\""), "{public}");

    // Support: once per person, never your own, withdrawable.
    let path = format!("/api/v1/data-requests/{id}/support");
    let s = json_of(app.post_json(&path, Some(&bob), &json!({})).await, 200).await;
    assert_eq!(
        (s["supporters"].as_i64(), &s["supported"]),
        (Some(1), &json!(true))
    );
    assert_problem(
        app.post_json(&path, Some(&bob), &json!({})).await,
        409,
        "conflict",
        None,
    )
    .await;
    assert_problem(
        app.post_json(&path, Some(&resident), &json!({})).await,
        403,
        "forbidden",
        None,
    )
    .await;
    assert_problem(
        app.post_json(&path, None, &json!({})).await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    json_of(app.post_json(&path, Some(&trustee), &json!({})).await, 200).await;
    json_of(app.post_json(&path, Some(&admin), &json!({})).await, 200).await;
    let w = json_of(app.delete(&path, Some(&admin)).await, 200).await;
    assert_eq!(
        (w["supporters"].as_i64(), &w["supported"]),
        (Some(2), &json!(false))
    );
    assert_problem(
        app.delete(&path, Some(&admin)).await,
        404,
        "not_found",
        None,
    )
    .await;

    // A second request, less supported, for the list's order and search.
    app.clock.advance(time::Duration::minutes(1));
    let other = json_of(
        app.post_json(
            "/api/v1/data-requests",
            Some(&bob),
            &ask("Street trees and shade", None),
        )
        .await,
        201,
    )
    .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    let list = json_of(app.get("/api/v1/data-requests", None).await, 200).await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["id"], id, "most supported first: {list}");
    let newest = json_of(
        app.get("/api/v1/data-requests?sort=newest", None).await,
        200,
    )
    .await;
    assert_eq!(newest["items"][0]["id"], other_id);
    let found = json_of(
        app.get("/api/v1/data-requests?q=SHADE+trees", None).await,
        200,
    )
    .await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["id"], other_id);
    let res = app.get("/api/v1/data-requests?status=maybe", None).await;
    assert_eq!(res.status(), 400);
    let res = app.get("/api/v1/data-requests?limit=0", None).await;
    assert_eq!(res.status(), 422);

    // Only the organisation it is assigned to answers.
    let answer = format!("/api/v1/data-requests/{id}/answer");
    let plan = json!({"status": "planned", "target_date": "2026-04-01"});
    for (who, token) in [
        ("water-co", &bob),
        ("an administrator", &admin),
        ("a trustee", &trustee),
    ] {
        let res = app.post_json(&answer, Some(token), &plan).await;
        assert_eq!(
            res.status(),
            403,
            "{who} may not answer city-energy's request"
        );
    }
    assert_problem(
        app.post_json(&answer, None, &plan).await,
        401,
        "unauthenticated",
        None,
    )
    .await;
    let res = app
        .post_json(&answer, Some(&alice), &json!({"status": "planned"}))
        .await;
    assert_problem(res, 422, "validation_failed", Some("target_date")).await;
    let res = app
        .post_json(
            &answer,
            Some(&alice),
            &json!({"status": "planned", "target_date": "2026-02-01"}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("target_date")).await;
    let planned = json_of(app.post_json(&answer, Some(&alice), &plan).await, 200).await;
    assert_eq!(planned["status"], "planned");
    assert_eq!(planned["overdue"], false);

    // The roadmap shows the plan; past its date, flagged.
    let roadmap = json_of(app.get("/api/v1/roadmap", None).await, 200).await;
    assert_eq!(roadmap["planned"][0]["id"], id);
    assert_eq!(roadmap["planned"][0]["overdue"], false);
    app.clock.advance(time::Duration::days(40));
    // (Tokens expire meanwhile: everyone signs in again.)
    let (resident, alice, bob, trustee, admin) = (
        app.token("resident").await,
        app.token("alice").await,
        app.token("bob").await,
        app.token("trustee").await,
        app.token("admin").await,
    );
    let roadmap = json_of(app.get("/api/v1/roadmap", None).await, 200).await;
    assert_eq!(roadmap["planned"][0]["overdue"], true, "{roadmap}");
    let page = app.page("/roadmap").await;
    assert!(page.contains("Cycling accidents by street segment") && page.contains("overdue"));

    // Published: the entry must exist; the requester and supporters are told.
    let res = app
        .post_json(
            &answer,
            Some(&alice),
            &json!({"status": "published", "dataset_id": "no-such-data"}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("dataset_id")).await;
    let ds = app
        .create_dataset(&alice, &dataset("Cycling accidents", "city-energy", "open"))
        .await;
    let done = json_of(
        app.post_json(
            &answer,
            Some(&alice),
            &json!({"status": "published", "dataset_id": ds, "note": "Updated monthly."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(done["status"], "published");
    assert_eq!(done["answer_dataset_id"], ds);
    let history: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["opened", "planned", "published"]);
    for (who, token, told) in [
        ("the requester", &resident, true),
        ("a supporter", &bob, true),
        ("a supporter", &trustee, true),
        ("a withdrawn supporter", &admin, false),
        ("the owner", &alice, false),
    ] {
        let inbox = json_of(app.get("/api/v1/me/inbox", Some(token)).await, 200).await;
        let notices: Vec<&Value> = inbox
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["data_request_id"] == json!(id))
            .collect();
        assert_eq!(notices.len(), usize::from(told), "{who}: {inbox}");
        if told {
            assert_eq!(notices[0]["kind"], "data_request");
            assert!(notices[0]["body"].as_str().unwrap().contains(&ds));
        }
    }
    // Answered: no more support, no second answer.
    assert_problem(
        app.post_json(&path, Some(&admin), &json!({})).await,
        409,
        "stale_revision",
        None,
    )
    .await;
    assert_problem(
        app.delete(&path, Some(&bob)).await,
        409,
        "stale_revision",
        None,
    )
    .await;
    let res = app.post_json(&answer, Some(&alice), &plan).await;
    assert_eq!(res.status(), 409);

    // An unassigned request: the administrators assign or answer it.
    let assign = format!("/api/v1/data-requests/{other_id}/assign");
    let other_answer = format!("/api/v1/data-requests/{other_id}/answer");
    let decline =
        json!({"status": "declined", "note": "Tree positions are a private contractor's."});
    assert_eq!(
        app.post_json(&other_answer, Some(&alice), &decline)
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json(&assign, Some(&bob), &json!({"organization_id": "water-co"}))
            .await
            .status(),
        403
    );
    json_of(
        app.post_json(
            &assign,
            Some(&admin),
            &json!({"organization_id": "water-co"}),
        )
        .await,
        200,
    )
    .await;
    let res = app
        .post_json(&other_answer, Some(&bob), &json!({"status": "declined"}))
        .await;
    assert_problem(res, 422, "validation_failed", Some("note")).await;
    let declined = json_of(
        app.post_json(&other_answer, Some(&bob), &decline).await,
        200,
    )
    .await;
    assert_eq!(declined["status"], "declined");

    // Every step is in the log, naming organisations, never people.
    let mut kinds = Vec::new();
    for kind in [
        "data_request.opened",
        "data_request.supported",
        "data_request.support_withdrawn",
        "data_request.assigned",
        "data_request.answered",
    ] {
        let entries = app.entries_of_type(kind).await;
        for e in &entries {
            for name in ["\"resident\"", "alice", "bob", "\"trustee\"", "\"admin\""] {
                assert!(!e.contains(name), "{kind} names {name}: {e}");
            }
        }
        kinds.push((kind, entries.len()));
    }
    assert_eq!(
        kinds,
        [
            ("data_request.opened", 2),
            ("data_request.supported", 3),
            ("data_request.support_withdrawn", 1),
            ("data_request.assigned", 1),
            ("data_request.answered", 3),
        ]
    );
    let answered = app.entries_of_type("data_request.answered").await;
    assert!(
        answered[1].contains("\"organization:city-energy\""),
        "{}",
        answered[1]
    );
    assert!(answered[1].contains("\"told\":3"), "{}", answered[1]);
    let request = json_of(
        app.get(&format!("/api/v1/data-requests/{id}"), None).await,
        200,
    )
    .await;
    assert_eq!(request["log_entries"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn one_person_supports_a_request_once_however_many_times_they_race() {
    let app = TestApp::start().await;
    let resident = app.token("resident").await;
    let bob = app.token("bob").await;
    let r = json_of(
        app.post_json(
            "/api/v1/data-requests",
            Some(&resident),
            &ask("Noise at night", None),
        )
        .await,
        201,
    )
    .await;
    let path = format!(
        "/api/v1/data-requests/{}/support",
        r["id"].as_str().unwrap()
    );
    let empty = json!({});
    let tries = (0..12).map(|_| app.post_json(&path, Some(&bob), &empty));
    let statuses: Vec<u16> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let now = json_of(app.get(&path.replace("/support", ""), None).await, 200).await;
    assert_eq!(now["supporters"], 1);
    assert_eq!(app.entries_of_type("data_request.supported").await.len(), 1);
}

#[tokio::test]
async fn a_request_to_open_a_dataset_goes_to_its_owner() {
    let app = TestApp::start().await;
    let resident = app.token("resident").await;
    let alice = app.token("alice").await;
    let admin = app.token("admin").await;
    let closed = app
        .create_dataset(
            &alice,
            &dataset("Boiler inspections", "city-energy", "closed"),
        )
        .await;
    let open = app
        .create_dataset(&alice, &dataset("Street lamps", "city-energy", "open"))
        .await;
    let mut body = ask("Open the boiler inspections", None);
    body["dataset_id"] = json!(open);
    let res = app
        .post_json("/api/v1/data-requests", Some(&resident), &body)
        .await;
    assert_problem(res, 422, "validation_failed", Some("dataset_id")).await;
    body["dataset_id"] = json!(closed);
    body["organization_id"] = json!("water-co");
    let res = app
        .post_json("/api/v1/data-requests", Some(&resident), &body)
        .await;
    assert_problem(res, 422, "validation_failed", Some("organization_id")).await;
    body.as_object_mut().unwrap().remove("organization_id");
    let r = json_of(
        app.post_json("/api/v1/data-requests", Some(&resident), &body)
            .await,
        201,
    )
    .await;
    assert_eq!(
        r["organization_id"], "city-energy",
        "the owner answers: {r}"
    );
    let id = r["id"].as_str().unwrap();
    // Not reassignable, and not "published" while the entry is still closed.
    let res = app
        .post_json(
            &format!("/api/v1/data-requests/{id}/assign"),
            Some(&admin),
            &json!({"organization_id": "water-co"}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("organization_id")).await;
    let res = app
        .post_json(
            &format!("/api/v1/data-requests/{id}/answer"),
            Some(&alice),
            &json!({"status": "published", "dataset_id": closed}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("dataset_id")).await;
}
