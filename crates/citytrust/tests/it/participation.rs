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

    // Two re-plans sent at once by the owner: one lands, the other is told
    // the request changed — neither is lost silently from its history.
    let alice = app.token("alice").await;
    let admin = app.token("admin").await;
    let id = r["id"].as_str().unwrap();
    json_of(
        app.post_json(
            &format!("/api/v1/data-requests/{id}/assign"),
            Some(&admin),
            &json!({"organization_id": "city-energy"}),
        )
        .await,
        200,
    )
    .await;
    let answer = format!("/api/v1/data-requests/{id}/answer");
    json_of(
        app.post_json(
            &answer,
            Some(&alice),
            &json!({"status": "planned", "target_date": "2026-05-01"}),
        )
        .await,
        200,
    )
    .await;
    let plans = [
        json!({"status": "planned", "target_date": "2026-06-01"}),
        json!({"status": "planned", "target_date": "2026-07-01"}),
    ];
    let tries = plans
        .iter()
        .map(|p| app.post_json(&answer, Some(&alice), p));
    let statuses: Vec<u16> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    let now = json_of(
        app.get(&format!("/api/v1/data-requests/{id}"), None).await,
        200,
    )
    .await;
    let landed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        landed >= 1 && statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    assert_eq!(
        now["history"].as_array().unwrap().len(),
        3 + landed,
        "opened, assigned, planned, and one event per plan that landed: {now}"
    );
    assert_eq!(
        app.entries_of_type("data_request.answered").await.len(),
        1 + landed
    );
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
    // Nor "exists" pointing at closed data, nor "published" naming another entry.
    for (status, named) in [("exists", &closed), ("published", &open)] {
        let res = app
            .post_json(
                &format!("/api/v1/data-requests/{id}/answer"),
                Some(&alice),
                &json!({"status": status, "dataset_id": named}),
            )
            .await;
        assert_problem(res, 422, "validation_failed", Some("dataset_id")).await;
    }
    // The dataset changes hands: its new owner answers, the old one may not.
    let res = app
        .patch_json(
            &format!("/api/v1/datasets/{closed}"),
            Some(&admin),
            &json!({"owner_organization_id": "water-co"}),
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let decline =
        json!({"status": "declined", "note": "Inspection records name the householders."});
    let res = app
        .post_json(
            &format!("/api/v1/data-requests/{id}/answer"),
            Some(&alice),
            &decline,
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
    let bob = app.token("bob").await;
    let done = json_of(
        app.post_json(
            &format!("/api/v1/data-requests/{id}/answer"),
            Some(&bob),
            &decline,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (done["status"].as_str(), done["organization_id"].as_str()),
        (Some("declined"), Some("water-co"))
    );
}

fn consultation(opens: &str, closes: &str) -> Value {
    json!({
        "title": "Sharing smart-meter readings for research",
        "description": "Should households' half-hourly readings be shared with researchers, and on what terms?",
        "subject": "kind_of_use",
        "audience": "residents",
        "questions": [
            {"text": "Should the readings be shared for research?", "kind": "single_choice", "choices": ["Yes", "No", "Not sure"]},
            {"text": "For which purposes?", "kind": "multiple_choice", "choices": ["Research", "Tariffs", "Planning"]},
            {"text": "How comfortable are you with it?", "kind": "scale"},
            {"text": "Anything else?", "kind": "free_text"}
        ],
        "opens_on": opens,
        "closes_on": closes,
    })
}

fn response(
    choice: &str,
    purposes: &[&str],
    scale: u8,
    text: Option<&str>,
    publish: bool,
) -> Value {
    let mut answers = vec![
        json!({"question": "q1", "choice": choice}),
        json!({"question": "q2", "choices": purposes}),
        json!({"question": "q3", "scale": scale}),
    ];
    if let Some(t) = text {
        answers.push(json!({"question": "q4", "text": t}));
    }
    json!({"answers": answers, "publish_text": publish})
}

#[tokio::test]
async fn a_consultation_is_answered_once_per_person_and_publishes_only_counts_at_the_threshold() {
    let app = TestApp::start().await;
    let trustee = app.token("trustee").await;
    let resident = app.token("resident").await;
    let alice = app.token("alice").await;

    // Only trustees open consultations, and only well-formed ones.
    let good = consultation("2026-03-01", "2026-03-08");
    assert_eq!(
        app.post_json("/api/v1/consultations", Some(&resident), &good)
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json("/api/v1/consultations", None, &good)
            .await
            .status(),
        401
    );
    let mut bad = good.clone();
    bad["questions"][0]["choices"] = json!(["Yes"]);
    let res = app
        .post_json("/api/v1/consultations", Some(&trustee), &bad)
        .await;
    assert_problem(res, 422, "validation_failed", Some("questions[0].choices")).await;
    let res = app
        .post_json(
            "/api/v1/consultations",
            Some(&trustee),
            &consultation("2026-02-01", "2026-03-08"),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("opens_on")).await;
    let res = app
        .post_json(
            "/api/v1/consultations",
            Some(&trustee),
            &consultation("2026-03-09", "2026-03-08"),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("closes_on")).await;
    let c = json_of(
        app.post_json("/api/v1/consultations", Some(&trustee), &good)
            .await,
        201,
    )
    .await;
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["state"], "open");
    let answer = format!("/api/v1/consultations/{id}/response");

    // Residents answer; others may not.
    let res = app
        .put_json(
            &answer,
            Some(&alice),
            &response("Yes", &["Research"], 4, None, false),
        )
        .await;
    assert_problem(res, 403, "forbidden", None).await;
    let res = app
        .put_json(
            &answer,
            None,
            &response("Yes", &["Research"], 4, None, false),
        )
        .await;
    assert_eq!(res.status(), 401);
    for (body, field) in [
        (
            response("Maybe", &["Research"], 4, None, false),
            "answers[0].choice",
        ),
        (
            response("Yes", &["Research", "Research"], 4, None, false),
            "answers[1].choices",
        ),
        (
            response("Yes", &["Research"], 7, None, false),
            "answers[2].scale",
        ),
        (
            json!({"answers": [{"question": "q9", "choice": "Yes"}]}),
            "answers[0].question",
        ),
        (
            json!({"answers": [{"question": "q1", "scale": 3}]}),
            "answers[0].choice",
        ),
        (json!({"answers": []}), "answers"),
    ] {
        let res = app.put_json(&answer, Some(&resident), &body).await;
        assert_problem(res, 422, "validation_failed", Some(field)).await;
    }

    // Fourteen residents: 11 yes, 2 no, 1 not sure. One changes their mind
    // (counted once); one writes free text not to be published.
    let mut tokens = vec![resident.clone()];
    for i in 1..14 {
        let name = format!("neighbour{i:02}");
        app.service
            .insert_user(crate::harness::user(
                &name,
                vec![citytrust_model::Role::Resident],
                vec![],
            ))
            .await
            .unwrap();
        tokens.push(app.token(&name).await);
    }
    for (i, token) in tokens.iter().enumerate() {
        let (choice, text, publish) = match i {
            0 => ("No", Some("Only with my consent, and never sold."), true),
            1 => ("No", Some("SECRET-UNPUBLISHED-TEXT"), false),
            2 => ("Not sure", None, false),
            _ => ("Yes", None, false),
        };
        let purposes: &[&str] = if i < 12 {
            &["Research", "Tariffs"]
        } else {
            &["Planning"]
        };
        let scale = if i % 2 == 0 { 4 } else { 5 };
        json_of(
            app.put_json(
                &answer,
                Some(token),
                &response(choice, purposes, scale, text, publish),
            )
            .await,
            200,
        )
        .await;
    }
    // The first changes to yes and back to no: still one response.
    json_of(
        app.put_json(
            &answer,
            Some(&tokens[0]),
            &response("Yes", &["Research"], 4, None, true),
        )
        .await,
        200,
    )
    .await;
    let mine = json_of(
        app.put_json(
            &answer,
            Some(&tokens[0]),
            &response(
                "No",
                &["Research", "Tariffs"],
                4,
                Some("Only with my consent, and never sold."),
                true,
            ),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(mine["answered"], true);
    assert!(
        mine.get("results").is_none(),
        "no results while it is open: {mine}"
    );
    // Each reads their own response, nobody else's.
    let own = json_of(app.get(&answer, Some(&tokens[1])).await, 200).await;
    assert_eq!(own["answers"][3]["text"], "SECRET-UNPUBLISHED-TEXT");
    let other = json_of(app.get(&answer, Some(&tokens[2])).await, 200).await;
    assert!(!other.to_string().contains("SECRET"), "{other}");
    assert_eq!(app.get(&answer, Some(&alice)).await.status(), 404);
    assert_eq!(app.get(&answer, None).await.status(), 401);

    // Closed: no more answers; the results, once, with small numbers suppressed.
    app.clock.advance(time::Duration::days(8));
    let tokens: Vec<String> = {
        let mut t = vec![app.token("resident").await];
        for i in 1..14 {
            t.push(app.token(&format!("neighbour{i:02}")).await);
        }
        t
    };
    let trustee = app.token("trustee").await;
    let res = app
        .put_json(
            &answer,
            Some(&tokens[3]),
            &response("No", &["Research"], 1, None, false),
        )
        .await;
    assert_problem(res, 409, "stale_revision", None).await;
    let c = json_of(
        app.get(&format!("/api/v1/consultations/{id}"), None).await,
        200,
    )
    .await;
    assert_eq!(c["state"], "closed");
    let r = &c["results"];
    assert_eq!(r["threshold"], 10);
    assert_eq!(r["respondents"], 14, "{r}");
    let q1 = &r["questions"][0];
    assert_eq!(q1["answered"], 14);
    assert_eq!(
        q1["counts"],
        json!([{"choice": "Yes", "count": 11}, {"choice": "No"}, {"choice": "Not sure"}])
    );
    let q2 = &r["questions"][1];
    assert_eq!(
        q2["counts"],
        json!([{"choice": "Research"}, {"choice": "Tariffs"}, {"choice": "Planning"}]),
        "12 of 14 ticked research, so 2 did not: each choice is a line (ticked, not ticked) \
         whose total is shown, and a small cell hides its partner"
    );
    assert_eq!(q2["answered"], 14);
    // Two of fourteen wrote free text: how many is hidden, with its partner.
    assert!(r["questions"][3].get("answered").is_none(), "{r}");
    // The scale: 7 fours and 7 fives: both shown? No — each is under 10.
    let q3 = &r["questions"][2];
    assert!(
        q3["counts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("count").is_none_or(|n| n == 0)),
        "{q3}"
    );
    // Published text only where its writer agreed; the rest is read by nobody.
    assert_eq!(
        r["questions"][3]["texts"],
        json!(["Only with my consent, and never sold."])
    );
    for token in [None, Some(trustee.as_str()), Some(tokens[2].as_str())] {
        for path in [
            format!("/api/v1/consultations/{id}"),
            "/api/v1/consultations".to_string(),
        ] {
            let body = app.get(&path, token).await.text().await.unwrap();
            assert!(
                !body.contains("SECRET-UNPUBLISHED"),
                "{path} shows an unpublished answer"
            );
        }
    }
    // Published once, and in the log without names.
    json_of(app.get("/api/v1/consultations", None).await, 200).await;
    assert_eq!(
        app.entries_of_type("consultation.results_published")
            .await
            .len(),
        1
    );
    assert_eq!(app.entries_of_type("consultation.opened").await.len(), 1);
    // No entry per response (their number would count the respondents):
    // the results' entry lists every receipt, and each respondent has theirs.
    assert!(
        app.entries_of_type("consultation.responded")
            .await
            .is_empty()
    );
    let published = &app.entries_of_type("consultation.results_published").await[0];
    assert!(
        !published.contains("neighbour") && !published.contains("\"resident\""),
        "{published}"
    );
    let mine = json_of(app.get(&answer, Some(&tokens[5])).await, 200).await;
    let receipt = mine["receipt"].as_str().unwrap();
    assert!(published.contains(receipt), "{published}");

    // A charter version cites it, once it has closed; its page says what it changed.
    let charter = json_of(app.get("/api/v1/charter", None).await, 200).await;
    let mut code = charter["ethics_code"].as_str().unwrap().to_string();
    assert!(
        code.contains("digital ethics code"),
        "a new trust publishes the default code"
    );
    code.push_str("8. **Smart meters.** Household readings are shared only with consent.\n");
    let change = json!({
        "text": charter["text"],
        "note": "Readings only with consent, as residents asked.",
        "ethics_code": code,
        "consultation_id": id,
    });
    let v = json_of(
        app.put_json("/api/v1/charter", Some(&trustee), &change)
            .await,
        200,
    )
    .await;
    assert_eq!(v["consultation_id"], json!(id));
    let c = json_of(
        app.get(&format!("/api/v1/consultations/{id}"), None).await,
        200,
    )
    .await;
    assert_eq!(c["cited_by"][0]["charter_version"], v["version"]);
    let changes = json_of(
        app.get(
            &format!("/api/v1/charter/versions/{}/changes", v["version"]),
            None,
        )
        .await,
        200,
    )
    .await;
    let added: Vec<&Value> = changes["ethics_code"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] != "same")
        .collect();
    assert_eq!(added.len(), 1, "{changes}");
    assert!(added[0]["text"].as_str().unwrap().contains("Smart meters"));
    assert!(
        changes["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["op"] == "same")
    );
    // The next version keeps the code unless it sends one.
    let keep = json!({"text": charter["text"], "note": "No change to the code."});
    let v3 = json_of(
        app.put_json("/api/v1/charter", Some(&trustee), &keep).await,
        200,
    )
    .await;
    assert!(v3["ethics_code"].as_str().unwrap().contains("Smart meters"));
    assert!(v3.get("consultation_id").is_none());
}

#[tokio::test]
async fn a_charter_may_not_cite_an_open_or_unknown_consultation_and_linked_audiences_need_links() {
    let app = TestApp::start().await;
    let trustee = app.token("trustee").await;
    let resident = app.token("resident").await;
    let alice = app.token("alice").await;
    let c = json_of(
        app.post_json(
            "/api/v1/consultations",
            Some(&trustee),
            &consultation("2026-03-01", "2026-03-31"),
        )
        .await,
        201,
    )
    .await;
    let charter = json_of(app.get("/api/v1/charter", None).await, 200).await;
    for cited in [c["id"].clone(), json!("cn-unknown")] {
        let res = app
            .put_json(
                "/api/v1/charter",
                Some(&trustee),
                &json!({"text": charter["text"], "note": "x", "consultation_id": cited}),
            )
            .await;
        assert_problem(res, 422, "validation_failed", Some("consultation_id")).await;
    }
    // Residents linked to a dataset's records, only.
    let ds = app
        .create_dataset(
            &alice,
            &dataset("Household meters", "city-energy", "closed"),
        )
        .await;
    let mut linked = consultation("2026-03-01", "2026-03-31");
    linked["audience"] = json!("linked_residents");
    let res = app
        .post_json("/api/v1/consultations", Some(&trustee), &linked)
        .await;
    assert_problem(res, 422, "validation_failed", Some("dataset_id")).await;
    linked["dataset_id"] = json!(ds);
    let c = json_of(
        app.post_json("/api/v1/consultations", Some(&trustee), &linked)
            .await,
        201,
    )
    .await;
    let res = app
        .put_json(
            &format!(
                "/api/v1/consultations/{}/response",
                c["id"].as_str().unwrap()
            ),
            Some(&resident),
            &response("Yes", &["Research"], 4, None, false),
        )
        .await;
    let body = assert_problem(res, 403, "forbidden", None).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("link your records"),
        "{body}"
    );
    // A scheduled consultation takes no answers yet.
    let later = json_of(
        app.post_json(
            "/api/v1/consultations",
            Some(&trustee),
            &consultation("2026-04-01", "2026-04-30"),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(later["state"], "scheduled");
    let res = app
        .put_json(
            &format!(
                "/api/v1/consultations/{}/response",
                later["id"].as_str().unwrap()
            ),
            Some(&resident),
            &response("Yes", &["Research"], 4, None, false),
        )
        .await;
    assert_problem(res, 409, "stale_revision", None).await;
    // Trustees may close one early: no answer after that, the results at once.
    let open = json_of(
        app.post_json(
            "/api/v1/consultations",
            Some(&trustee),
            &consultation("2026-03-01", "2026-03-31"),
        )
        .await,
        201,
    )
    .await;
    let oid = open["id"].as_str().unwrap();
    json_of(
        app.put_json(
            &format!("/api/v1/consultations/{oid}/response"),
            Some(&resident),
            &response("Yes", &["Research"], 4, Some("Keep it local."), true),
        )
        .await,
        200,
    )
    .await;
    let close = format!("/api/v1/consultations/{oid}/close");
    assert_eq!(
        app.post_json(&close, Some(&resident), &json!({}))
            .await
            .status(),
        403
    );
    let closed = json_of(app.post_json(&close, Some(&trustee), &json!({})).await, 200).await;
    assert_eq!(
        (closed["state"].as_str(), closed["closed_early"].as_bool()),
        (Some("closed"), Some(true))
    );
    assert_eq!(closed["closes_on"], "2026-03-01");
    let r = &closed["results"];
    assert!(
        r.get("respondents").is_none(),
        "one respondent: suppressed: {r}"
    );
    assert_eq!(
        r["questions"][0]["counts"],
        json!([{"choice": "Yes"}, {"choice": "No", "count": 0}, {"choice": "Not sure", "count": 0}])
    );
    assert_eq!(r["questions"][3]["texts"], json!(["Keep it local."]));
    let res = app
        .put_json(
            &format!("/api/v1/consultations/{oid}/response"),
            Some(&resident),
            &response("No", &["Research"], 4, None, false),
        )
        .await;
    assert_problem(res, 409, "stale_revision", None).await;
    assert_problem(
        app.post_json(&close, Some(&trustee), &json!({})).await,
        409,
        "stale_revision",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_trustee_out_of_term_may_not_vote_and_the_board_is_public() {
    let app = crate::governance::start().await;
    let admin = app.token("admin").await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let energy = crate::governance::with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        crate::governance::ENERGY_CSV,
    )
    .await;
    let term = json!({
        "starts_on": "2024-03-01",
        "ends_on": "2026-02-28",
        "appointed_by": "Elected by the residents' assembly, 2024",
        "declarations": "Board member of the cycling association.",
    });
    // Administrators record terms, of trustees only.
    assert_eq!(
        app.put_json("/api/v1/trustees/trustee3/term", Some(&alice), &term)
            .await
            .status(),
        403
    );
    let res = app
        .put_json("/api/v1/trustees/alice/term", Some(&admin), &term)
        .await;
    assert_problem(res, 422, "validation_failed", Some("username")).await;
    let mut reversed = term.clone();
    reversed["ends_on"] = json!("2024-01-01");
    let res = app
        .put_json("/api/v1/trustees/trustee3/term", Some(&admin), &reversed)
        .await;
    assert_problem(res, 422, "validation_failed", Some("ends_on")).await;
    let t = json_of(
        app.put_json("/api/v1/trustees/trustee3/term", Some(&admin), &term)
            .await,
        200,
    )
    .await;
    assert_eq!(t["in_term"], false);
    let board = json_of(app.get("/api/v1/trustees", None).await, 200).await;
    let t3 = board
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["display_name"] == "trustee3 (test)")
        .unwrap();
    assert_eq!(
        t3["declarations"],
        "Board member of the cycling association."
    );
    assert!(
        t3.get("username").is_none(),
        "usernames are for administrators: {t3}"
    );
    assert_eq!(t3["in_term"], false);

    let r = json_of(
        app.post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &crate::governance::request(&[&energy], "research", "identified"),
        )
        .await,
        201,
    )
    .await;
    let votes = format!(
        "/api/v1/access-requests/{}/votes",
        r["id"].as_str().unwrap()
    );
    let approve = json!({"vote": "approve", "reason": "Public benefit."});
    let t3 = app.token("trustee3").await;
    let res = app.post_json(&votes, Some(&t3), &approve).await;
    let body = assert_problem(res, 403, "forbidden", None).await;
    assert!(
        body["detail"].as_str().unwrap().contains("2026-02-28"),
        "{body}"
    );
    // Re-appointed: votes again.
    let mut renewed = term.clone();
    renewed["ends_on"] = json!("2028-02-29");
    json_of(
        app.put_json("/api/v1/trustees/trustee3/term", Some(&admin), &renewed)
            .await,
        200,
    )
    .await;
    // A vote may cite a closed consultation (not an open one); its page shows the decision.
    let trustee = app.token("trustee").await;
    let c = json_of(
        app.post_json(
            "/api/v1/consultations",
            Some(&trustee),
            &consultation("2026-03-01", "2026-03-31"),
        )
        .await,
        201,
    )
    .await;
    let cid = c["id"].as_str().unwrap().to_string();
    let citing =
        json!({"vote": "approve", "reason": "Residents were asked.", "consultation_id": cid});
    let res = app.post_json(&votes, Some(&t3), &citing).await;
    assert_problem(res, 422, "validation_failed", Some("consultation_id")).await;
    json_of(
        app.post_json(
            &format!("/api/v1/consultations/{cid}/close"),
            Some(&trustee),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    json_of(app.post_json(&votes, Some(&t3), &citing).await, 200).await;
    let c = json_of(
        app.get(&format!("/api/v1/consultations/{cid}"), None).await,
        200,
    )
    .await;
    assert_eq!(c["cited_by_decisions"], json!([r["id"]]));
    assert_eq!(app.entries_of_type("trustee.term_recorded").await.len(), 2);
}

fn outcome(effectiveness: u8) -> Value {
    json!({
        "effectiveness": effectiveness,
        "impact": 3,
        "effort": 2,
        "risk": 1,
        "what_was_done": "Ranked the city's buildings for retrofit by energy intensity.",
        "beneficiaries": "Tenants of the twenty worst buildings, retrofitted first.",
        "evidence_url": "https://uni.example/retrofit-report",
    })
}

#[tokio::test]
async fn the_recipient_reports_an_agreements_outcome_and_may_not_ask_for_more_while_it_is_overdue()
{
    let app = crate::governance::start().await;
    let alice = app.token("alice").await;
    let analyst = app.token("analyst").await;
    let energy = crate::governance::with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        crate::governance::ENERGY_CSV,
    )
    .await;
    let ask = crate::governance::request(&[&energy], "research", "identified");
    let r = json_of(
        app.post_json("/api/v1/access-requests", Some(&analyst), &ask)
            .await,
        201,
    )
    .await;
    let decided = crate::governance::all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
    let agreement = decided["agreement_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{decided}"))
        .to_string();
    let outcomes = format!("/api/v1/agreements/{agreement}/outcomes");

    // In force (ends 2026-03-31): nothing owed yet.
    let owed = json_of(app.get(&outcomes, None).await, 200).await;
    assert_eq!(owed["dues"], json!([]));
    let res = app.post_json(&outcomes, Some(&analyst), &outcome(4)).await;
    assert_problem(res, 422, "agreement_in_force", None).await;

    // Ended: the final report is owed by 2026-04-30; only the recipient files it.
    app.clock.advance(time::Duration::days(45)); // 2026-04-15
    let (bob, analyst) = (app.token("bob").await, app.token("analyst").await);

    let owed = json_of(app.get(&outcomes, None).await, 200).await;
    assert_eq!(
        owed["dues"],
        json!([{"agreement_id": agreement, "period": "final", "period_ends_on": "2026-03-31", "due_on": "2026-04-30", "reported": false, "overdue": false}])
    );
    assert_eq!(
        app.post_json(&outcomes, Some(&bob), &outcome(4))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json(&outcomes, None, &outcome(4)).await.status(),
        401
    );
    let res = app.post_json(&outcomes, Some(&analyst), &outcome(7)).await;
    assert_problem(res, 422, "validation_failed", Some("effectiveness")).await;
    let mut bad = outcome(4);
    bad["evidence_url"] = json!("ftp://uni.example/x");
    assert_problem(
        app.post_json(&outcomes, Some(&analyst), &bad).await,
        422,
        "validation_failed",
        Some("evidence_url"),
    )
    .await;
    json_of(
        app.post_json(
            &format!("/api/v1/agreements/{agreement}/attest-deletion"),
            Some(&analyst),
            &json!({"statement": "Deleted from the secure environment on 2026-04-01."}),
        )
        .await,
        200,
    )
    .await;

    // Overdue: the charter refuses the recipient's new requests, by name.
    app.clock.advance(time::Duration::days(17)); // 2026-05-02
    let (trustee, analyst) = (app.token("trustee").await, app.token("analyst").await);
    let overdue = json_of(
        app.get("/api/v1/outcomes/overdue", Some(&trustee)).await,
        200,
    )
    .await;
    assert_eq!(overdue[0]["agreement_id"], json!(agreement));
    assert_eq!(
        app.get("/api/v1/outcomes/overdue", Some(&analyst))
            .await
            .status(),
        403
    );
    let mut again = crate::governance::request(&[&energy], "research", "aggregate");
    again["starts_on"] = json!("2026-05-10");
    again["ends_on"] = json!("2026-06-10");
    let res = app
        .post_json("/api/v1/access-requests", Some(&analyst), &again)
        .await;
    let code = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"], "refused", "{body}");
    assert!(
        body.to_string().contains("outcome-report-overdue"),
        "{body}"
    );

    // Filed (late): public, summed up, logged without names; then the way is clear.
    let report = json_of(
        app.post_json(&outcomes, Some(&analyst), &outcome(4)).await,
        201,
    )
    .await;
    assert_eq!(
        (report["period"].as_str(), report["recipient"].as_str()),
        (Some("final"), Some("organization:uni"))
    );
    let res = app.post_json(&outcomes, Some(&analyst), &outcome(5)).await;
    assert_eq!(res.status(), 422, "nothing more is owed");
    let mut named = outcome(5);
    named["period"] = json!("final");
    assert_problem(
        app.post_json(&outcomes, Some(&analyst), &named).await,
        409,
        "conflict",
        None,
    )
    .await;
    let all = json_of(app.get("/api/v1/outcomes", None).await, 200).await;
    assert_eq!(
        all[0]["what_was_done"],
        "Ranked the city's buildings for retrofit by energy intensity."
    );
    let summary = json_of(app.get("/api/v1/outcomes/summary", None).await, 200).await;
    assert_eq!(
        summary["by_purpose"],
        json!([{"key": "research", "reports": 1, "mean_effectiveness": 4.0, "mean_impact": 3.0, "mean_effort": 2.0, "mean_risk": 1.0}])
    );
    assert_eq!(summary["by_year"][0]["key"], "2026");
    let entry = &app.entries_of_type("agreement.outcome_reported").await[0];
    assert!(
        entry.contains("\"late\":true") && !entry.contains("analyst"),
        "{entry}"
    );
    assert_eq!(
        json_of(
            app.get("/api/v1/outcomes/overdue", Some(&trustee)).await,
            200
        )
        .await,
        json!([])
    );
    let res = app
        .post_json("/api/v1/access-requests", Some(&analyst), &again)
        .await;
    let body: Value = res.json().await.unwrap();
    assert_ne!(body["status"], "refused", "{body}");
}

#[tokio::test]
async fn a_sharing_project_goes_from_discover_to_retirement_through_the_trustees() {
    let app = crate::governance::start().await;
    let alice = app.token("alice").await; // city-energy: the data's owner, a partner
    let bob = app.token("bob").await; // water-co: not in the project
    let analyst = app.token("analyst").await; // uni: the lead
    let trustee = app.token("trustee").await;
    let energy = crate::governance::with_content(
        &app,
        &alice,
        "Building energy",
        "city-energy",
        "shared_specific",
        crate::governance::ENERGY_CSV,
    )
    .await;

    // Discover.
    let new = json!({"title": "Retrofit priorities", "summary": "The council and the university rank buildings for retrofit.",
        "lead_organization_id": "uni", "partner_organization_ids": ["city-energy"]});
    assert_eq!(
        app.post_json("/api/v1/projects", Some(&bob), &new)
            .await
            .status(),
        403,
        "only the lead's members start it"
    );
    let p = json_of(
        app.post_json("/api/v1/projects", Some(&analyst), &new)
            .await,
        201,
    )
    .await;
    let id = p["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/projects/{id}");
    assert_eq!(p["stage"], "discover");
    let sign = format!("{path}/sign-off");
    let res = app
        .post_json(
            &sign,
            Some(&trustee),
            &json!({"stage": "discover", "note": "Looks good."}),
        )
        .await;
    let body = assert_problem(res, 422, "validation_failed", Some("maturity")).await;
    for field in ["reasons.user_needs", "team", "ecosystem", "dataset_ids"] {
        assert!(body.to_string().contains(field), "{field} missing: {body}");
    }
    let discover = json!({
        "revision": 1,
        "reasons": {"user_needs": "Tenants pay for the worst buildings' waste.", "organisational_aims": "Meet the climate plan.", "exchange_pattern": "mutual_exchange"},
        "team": [{"name": "Dr Arun Analyst", "role": "senior_sponsor", "organization_id": "uni"},
                 {"name": "Alice Energy", "role": "data_provision_lead", "organization_id": "city-energy"}],
        "ecosystem": [{"organization": "City Energy Department", "role": "data provider"}],
        "dataset_ids": [energy],
        "canvas": {"problem": "Retrofit money goes to the loudest, not the worst.", "data": "Annual building energy totals."},
        "maturity": {"technology": "medium", "mindset": "high", "resources": "low", "skills": "medium", "operations": "medium", "legal": "high"},
    });
    assert_eq!(
        app.patch_json(&path, Some(&bob), &discover).await.status(),
        403,
        "not the project's"
    );
    let p = json_of(app.patch_json(&path, Some(&analyst), &discover).await, 200).await;
    assert_eq!(p["revision"], 2);
    assert_eq!(p["missing"], json!([]));
    let res = app.patch_json(&path, Some(&alice), &discover).await;
    assert_problem(res, 409, "stale_revision", None).await;
    let res = app
        .post_json(
            &sign,
            Some(&analyst),
            &json!({"stage": "discover", "note": "Done."}),
        )
        .await;
    assert_eq!(res.status(), 403, "a project does not sign itself off");
    let p = json_of(
        app.post_json(
            &sign,
            Some(&trustee),
            &json!({"stage": "discover", "note": "Clear need, the right team."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(p["stage"], "prepare");

    // Prepare: a "yes" in the DPIA screening blocks it until a DPIA is attached.
    let mut screening = serde_json::Map::new();
    for q in [
        "evaluation_or_scoring",
        "automated_decisions",
        "systematic_monitoring",
        "sensitive_data",
        "large_scale",
        "matching_datasets",
        "vulnerable_people",
        "innovative_technology",
        "prevents_rights",
    ] {
        screening.insert(q.into(), json!(q == "matching_datasets"));
    }
    let case = |s: &str| json!({"providing": format!("{s}: for the council"), "receiving": format!("{s}: for the university")});
    let prepare = json!({
        "revision": p["revision"],
        "business_case": {"strategic": case("strategic"), "economic": case("economic"), "commercial": case("commercial"),
                          "financial": case("financial"), "management": case("management")},
        "legal_basis": "The city's building energy benchmarking ordinance.",
        "dpia_screening": screening,
        "ethics_review": {"outcome": "approved_with_conditions", "notes": "University ethics board: publish the method."},
        "technical_pattern": "api",
        "preparation": {"cleaning": "Duplicates removed, units made kBtu.", "explanation": "A data dictionary on the dataset page."},
        "share_request": crate::governance::request(&[&energy], "research", "identified"),
        "review_on": "2026-09-01",
    });
    let mut bad = prepare.clone();
    bad["dpia_screening"]["asked_nicely"] = json!(true);
    let res = app.patch_json(&path, Some(&analyst), &bad).await;
    assert_problem(
        res,
        422,
        "validation_failed",
        Some("dpia_screening.asked_nicely"),
    )
    .await;
    let p = json_of(app.patch_json(&path, Some(&alice), &prepare).await, 200).await;
    let docs = format!("{path}/documents");
    let mou = b"Memorandum of understanding between the council and the university.".to_vec();
    let res = app
        .post_raw(
            &format!("{docs}?kind=mou&name=mou.txt"),
            Some(&bob),
            "text/plain",
            mou.clone(),
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .post_raw(
            &format!("{docs}?kind=treaty&name=mou.txt"),
            Some(&analyst),
            "text/plain",
            mou.clone(),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("kind")).await;
    let res = app
        .post_raw(
            &format!("{docs}?kind=mou&name=mou.txt"),
            Some(&analyst),
            "text/plain",
            vec![0u8; 10 * 1024 * 1024 + 10],
        )
        .await;
    assert_eq!(res.status(), 413);
    let doc = json_of(
        app.post_raw(
            &format!("{docs}?kind=mou&name=mou.txt"),
            Some(&analyst),
            "text/plain",
            mou.clone(),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(doc["version"], 1);
    let res = app
        .post_json(
            &sign,
            Some(&trustee),
            &json!({"stage": "prepare", "note": "Ready."}),
        )
        .await;
    let body = assert_problem(res, 422, "validation_failed", Some("documents")).await;
    assert!(body.to_string().contains("full DPIA"), "{body}");
    let _ = p;
    json_of(
        app.post_raw(
            &format!("{docs}?kind=dpia&name=dpia.txt"),
            Some(&analyst),
            "text/plain",
            b"Full DPIA: matching is limited to building ids.".to_vec(),
        )
        .await,
        201,
    )
    .await;
    let p = json_of(
        app.post_json(
            &sign,
            Some(&trustee),
            &json!({"stage": "prepare", "note": "Business case, DPIA and ethics in order."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(p["stage"], "share");

    // Share: the request goes the ordinary way, decided by the trustees.
    let share = format!("{path}/share");
    assert_eq!(
        app.post_json(&share, Some(&alice), &json!({}))
            .await
            .status(),
        403,
        "the lead's members share"
    );
    let p = json_of(app.post_json(&share, Some(&analyst), &json!({})).await, 200).await;
    let request_id = p["access_request_ids"][0].as_str().unwrap().to_string();
    let r = json_of(
        app.get(
            &format!("/api/v1/access-requests/{request_id}"),
            Some(&analyst),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        r["status"], "under_review",
        "no shortcut around the trustees: {r}"
    );
    assert_problem(
        app.post_json(&share, Some(&analyst), &json!({})).await,
        409,
        "conflict",
        None,
    )
    .await;
    let res = app
        .post_json(
            &sign,
            Some(&trustee),
            &json!({"stage": "share", "note": "Shared."}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("agreement_ids")).await;
    let decided = crate::governance::all_vote(&app, &request_id, "approve").await;
    let agreement = decided["agreement_id"].as_str().unwrap().to_string();
    let p = json_of(
        app.post_json(
            &sign,
            Some(&trustee),
            &json!({"stage": "share", "note": "The agreement is in force."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        (p["stage"].as_str(), p["agreement_ids"][0].as_str()),
        (Some("review"), Some(agreement.as_str()))
    );

    // Review: a change is a new version; renewed; then retired by the trustees.
    let p = json_of(
        app.patch_json(
            &path,
            Some(&analyst),
            &json!({"revision": p["revision"], "summary": "Now with the tenants' panel."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(p["version"], 2);
    let res = app
        .post_json(
            &format!("{path}/renew"),
            Some(&analyst),
            &json!({"review_on": "2026-01-01"}),
        )
        .await;
    assert_problem(res, 422, "validation_failed", Some("review_on")).await;
    json_of(
        app.post_json(
            &format!("{path}/renew"),
            Some(&analyst),
            &json!({"review_on": "2027-03-01"}),
        )
        .await,
        200,
    )
    .await;
    let retire = format!("{path}/retire");
    assert_eq!(
        app.post_json(&retire, Some(&analyst), &json!({"reason": "Done."}))
            .await
            .status(),
        403
    );
    let p = json_of(
        app.post_json(
            &retire,
            Some(&trustee),
            &json!({"reason": "The retrofit list is published; the share has done its work."}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(p["stage"], "retired");
    assert_eq!(
        p["retirement"]["attestations"][0]["agreement_id"],
        json!(agreement)
    );
    let a = json_of(
        app.get(&format!("/api/v1/agreements/{agreement}"), None)
            .await,
        200,
    )
    .await;
    assert_eq!(a["status"], "retired");
    assert_problem(
        app.post_json(&retire, Some(&trustee), &json!({"reason": "Again."}))
            .await,
        409,
        "stale_revision",
        None,
    )
    .await;

    // Documents: kept byte for byte, read by the project and the trustees only.
    let doc_path = format!("{docs}/{}", doc["id"].as_str().unwrap());
    let res = app.get(&doc_path, Some(&alice)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().to_vec(), mou);
    assert_eq!(app.get(&doc_path, Some(&trustee)).await.status(), 200);
    assert_eq!(app.get(&doc_path, Some(&bob)).await.status(), 403);
    assert_eq!(app.get(&doc_path, None).await.status(), 401);

    // Every step in the log, naming organisations and roles.
    for (kind, n) in [
        ("project.started", 1),
        ("project.updated", 3),
        ("project.document_added", 2),
        ("project.stage_signed_off", 3),
        ("project.shared", 1),
        ("project.renewed", 1),
        ("project.retired", 1),
    ] {
        let entries = app.entries_of_type(kind).await;
        assert_eq!(entries.len(), n, "{kind}");
        for e in entries {
            assert!(
                !e.contains("analyst") && !e.contains("alice"),
                "{kind} names a person: {e}"
            );
        }
    }
}
