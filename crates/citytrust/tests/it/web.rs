//! The portal over HTTP without a browser: pages, forms and their CSRF
//! tokens, sign-in, and every page's "may not". (Chromium runs the portal
//! in `e2e/`.)

use reqwest::Response;
use serde_json::json;

use crate::harness::{PASSWORD, TestApp, dataset};

/// A browser: keeps cookies by hand (reqwest's jar would drop `Secure` cookies over plain HTTP).
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    cookies: Vec<(String, String)>,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Browser {
            app,
            cookies: Vec::new(),
        }
    }
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
    fn keep(&mut self, res: &Response) {
        for v in res.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (k, val) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !attrs.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
    }
    pub(crate) async fn get(&mut self, path: &str) -> Response {
        let res = self
            .app
            .client
            .get(self.app.url(path))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }
    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Response {
        let body = {
            let mut s = form_encode(form);
            if s.is_empty() {
                s.push_str("x=");
            }
            s
        };
        let res = self
            .app
            .client
            .post(self.app.url(path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }
    pub(crate) async fn sign_in(&mut self, username: &str) {
        let page = self.get("/signin").await.text().await.unwrap();
        let csrf = hidden(&page, "csrf");
        let res = self
            .post(
                "/signin",
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(res.status(), 303, "sign-in as {username}");
        assert!(self.cookies.iter().any(|(k, _)| k == "ct_session"));
    }
    /// The CSRF token the signed-in pages carry.
    pub(crate) async fn csrf(&mut self) -> String {
        let page = self.get("/datasets").await.text().await.unwrap();
        hidden(&page, "csrf")
    }
}

fn form_encode(form: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in form.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden {name} in page"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn the_public_pages_render_without_signing_in() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let mut d = dataset(
        "Solar <script>alert(1)</script> panels",
        "city-energy",
        "closed",
    );
    d["personal_data"] = json!(true);
    d["themes"] = json!(["energy"]);
    d["licence"] = json!({"id": "CC-BY-4.0", "title": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"});
    let created: serde_json::Value = app
        .post_json("/api/v1/datasets", Some(&alice), &d)
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let mut b = Browser::new(&app);
    for path in [
        "/",
        "/datasets",
        "/datasets?q=solar&theme=energy",
        "/signin",
        "/static/style.css",
    ] {
        let res = b.get(path).await;
        assert_eq!(res.status(), 200, "{path}");
        let csp = res
            .headers()
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'self'"));
        assert_eq!(res.headers().get("x-frame-options").unwrap(), "DENY");
    }
    let page = b
        .get(&format!("/datasets/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Solar &#60;script&#62;alert(1)&#60;/script&#62; panels")
            || page.contains("Solar &lt;script&gt;"),
        "titles are escaped"
    );
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("badge-closed") && page.contains("Personal data"));
    assert!(
        page.contains("has no content to download"),
        "closed datasets say they carry no content"
    );
    assert!(
        page.contains("Not yet: check the publisher"),
        "an unverified licence says so"
    );
    assert!(
        !page.contains("Edit this dataset"),
        "anonymous readers get no edit link"
    );
    let search = b.get("/datasets?q=solar").await.text().await.unwrap();
    assert!(search.contains(&format!("/datasets/{id}")));
    assert!(search.contains("1 dataset<"));
    let res = b.get("/no/such/page").await;
    assert_eq!(res.status(), 404);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("<h1>Page not found</h1>")
    );
    // A bad filter is explained on the page, not a server error.
    let res = b.get("/datasets?spectrum=bogus").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("is not a spectrum class")
    );
}

#[tokio::test]
async fn a_member_signs_in_creates_a_dataset_through_the_form_and_finds_it() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    b.sign_in("alice").await;
    let session = b
        .cookies
        .iter()
        .find(|(k, _)| k == "ct_session")
        .unwrap()
        .1
        .clone();
    assert!(session.len() >= 32);
    let form_page = b.get("/datasets/new").await;
    assert_eq!(form_page.status(), 200);
    let html = form_page.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    assert!(
        html.contains("value=\"city-energy\""),
        "alice's organisation is offered as owner"
    );
    assert!(
        !html.contains("value=\"water-co\""),
        "other organisations are not offered"
    );

    // A refused submission keeps what was typed and names the field.
    let res = b
        .post(
            "/datasets",
            &[
                ("csrf", &csrf),
                ("title", "District heating"),
                ("description", ""),
                ("owner_organization_id", "city-energy"),
                ("spectrum", "open"),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("href=\"#f-description\""),
        "the error links to the field"
    );
    assert!(html.contains("value=\"District heating\""));
    assert_eq!(app.stored_datasets().await, 0);

    let res = b
        .post(
            "/datasets",
            &[
                ("csrf", &csrf),
                ("title", "District heating network"),
                ("description", "Pipes, plants and heat delivered."),
                ("owner_organization_id", "city-energy"),
                ("spectrum", "shared_public"),
                ("themes", "energy"),
                ("themes", "buildings"),
                ("keywords", "heat, pipes"),
                ("personal_data", "true"),
                ("licence_id", "CC-BY-4.0"),
                ("licence_title", "CC BY 4.0"),
                ("period_start", "2020-01-01"),
                ("coverage", "Every substation"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers().get("location").unwrap(),
        "/datasets/district-heating-network"
    );
    let stored: serde_json::Value = app
        .get("/api/v1/datasets/district-heating-network", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["spectrum"], "shared_public");
    assert_eq!(stored["themes"], json!(["energy", "buildings"]));
    assert_eq!(stored["personal_data"], true);
    assert_eq!(
        stored["data_states"]["completeness"]["coverage"],
        "Every substation"
    );

    let search = b.get("/datasets?q=heating").await.text().await.unwrap();
    assert!(search.contains("District heating network"));
    let page = b
        .get("/datasets/district-heating-network")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Edit this dataset"));

    // Editing through the form.
    let edit = b
        .get("/datasets/district-heating-network/edit")
        .await
        .text()
        .await
        .unwrap();
    assert!(edit.contains("value=\"District heating network\""));
    let res = b
        .post(
            "/datasets/district-heating-network",
            &[
                ("csrf", &csrf),
                ("revision", "1"),
                ("title", "District heating"),
                ("description", "Pipes."),
                ("owner_organization_id", "city-energy"),
                ("spectrum", "shared_public"),
                // Left unticked it would say "not personal data": the trustees' call.
                ("personal_data", "true"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let stored: serde_json::Value = app
        .get("/api/v1/datasets/district-heating-network", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stored["title"].as_str(), stored["revision"].as_i64()),
        (Some("District heating"), Some(2))
    );

    // Signing out ends the session on the server, not just in the browser.
    let res = b.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), 303);
    let res = app
        .client
        .get(app.url("/datasets/new"))
        .header("cookie", format!("ct_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "the old session cookie no longer works");
}

#[tokio::test]
async fn session_cookies_are_secure_httponly_and_samesite() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    let page = b.get("/signin").await.text().await.unwrap();
    let csrf = hidden(&page, "csrf");
    let res = b
        .post(
            "/signin",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("ct_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
}

#[tokio::test]
async fn sign_in_may_not_succeed_without_the_form_token_or_with_a_wrong_password() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    b.get("/signin").await;
    let res = b
        .post("/signin", &[("username", "alice"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 403);
    assert!(!b.cookies.iter().any(|(k, _)| k == "ct_session"));
    // A token from another browser (not matching this one's cookie) fails too.
    let mut other = Browser::new(&app);
    let foreign = hidden(&other.get("/signin").await.text().await.unwrap(), "csrf");
    let res = b
        .post(
            "/signin",
            &[
                ("csrf", &foreign),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    let csrf = hidden(&b.get("/signin").await.text().await.unwrap(), "csrf");
    let res = b
        .post(
            "/signin",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "not the password"),
            ],
        )
        .await;
    assert_eq!(res.status(), 401);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("The username or password is wrong.")
    );
    assert!(!b.cookies.iter().any(|(k, _)| k == "ct_session"));
}

#[tokio::test]
async fn forms_may_not_change_anything_without_the_sessions_csrf_token() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    b.sign_in("alice").await;
    let fields = [
        ("title", "Forged"),
        ("description", "x"),
        ("owner_organization_id", "city-energy"),
        ("spectrum", "open"),
    ];
    let res = b.post("/datasets", &fields).await;
    assert_eq!(res.status(), 403);
    let mut forged = fields.to_vec();
    forged.push(("csrf", "0000"));
    assert_eq!(b.post("/datasets", &forged).await.status(), 403);
    assert_eq!(app.stored_datasets().await, 0);
}

#[tokio::test]
async fn anonymous_visitors_may_not_create_through_the_portal() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    let res = b.get("/datasets/new").await;
    assert_eq!(
        (
            res.status().as_u16(),
            res.headers().get("location").unwrap().to_str().unwrap()
        ),
        (303, "/signin")
    );
    let res = b
        .post(
            "/datasets",
            &[
                ("csrf", "x"),
                ("title", "T"),
                ("description", "D"),
                ("owner_organization_id", "city-energy"),
                ("spectrum", "open"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    for path in [
        "/admin/organizations",
        "/admin/users",
        "/admin/groups",
        "/admin/memberships",
    ] {
        let res = b
            .post(path, &[("csrf", "x"), ("id", "evil"), ("name", "Evil")])
            .await;
        assert_eq!(res.status(), 303, "{path}");
    }
    assert_eq!(app.stored_datasets().await, 0);
    assert_eq!(app.service.list_organizations().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_member_may_not_edit_another_organisations_dataset_through_the_portal() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    app.post_json(
        "/api/v1/datasets",
        Some(&alice),
        &dataset("Grid load", "city-energy", "open"),
    )
    .await;
    let mut b = Browser::new(&app);
    b.sign_in("bob").await;
    let page = b.get("/datasets/grid-load").await.text().await.unwrap();
    assert!(!page.contains("Edit this dataset"));
    assert_eq!(b.get("/datasets/grid-load/edit").await.status(), 403);
    let csrf = b.csrf().await;
    let res = b
        .post(
            "/datasets/grid-load",
            &[
                ("csrf", &csrf),
                ("title", "Hijacked"),
                ("description", "x"),
                ("owner_organization_id", "city-energy"),
                ("spectrum", "open"),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    // Nor register one for an organisation he is not in.
    let res = b
        .post(
            "/datasets",
            &[
                ("csrf", &csrf),
                ("title", "Fake"),
                ("description", "x"),
                ("owner_organization_id", "city-energy"),
                ("spectrum", "open"),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    let stored: serde_json::Value = app
        .get("/api/v1/datasets/grid-load", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stored["title"].as_str(), stored["revision"].as_i64()),
        (Some("Grid load"), Some(1))
    );
    assert_eq!(app.stored_datasets().await, 1);
}

#[tokio::test]
async fn a_resident_may_not_see_or_use_the_admin_pages() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    assert_eq!(
        b.get("/admin").await.status(),
        303,
        "anonymous visitors are sent to sign in"
    );
    for who in ["resident", "alice", "trustee"] {
        let mut b = Browser::new(&app);
        b.sign_in(who).await;
        let home = b.get("/").await.text().await.unwrap();
        assert!(
            !home.contains("href=\"/admin\""),
            "{who} gets no admin link"
        );
        assert_eq!(b.get("/admin").await.status(), 403, "{who}");
        let csrf = b.csrf().await;
        let res = b
            .post(
                "/admin/organizations",
                &[("csrf", &csrf), ("id", "evil"), ("name", "Evil")],
            )
            .await;
        assert_eq!(res.status(), 403);
        let res = b
            .post(
                "/admin/users",
                &[
                    ("csrf", &csrf),
                    ("username", "mallory"),
                    ("display_name", "M"),
                    ("password", "long enough password"),
                    ("roles", "administrator"),
                ],
            )
            .await;
        assert_eq!(res.status(), 403);
        let res = b
            .post(
                "/admin/memberships",
                &[
                    ("csrf", &csrf),
                    ("username", who),
                    ("organization_id", "water-co"),
                ],
            )
            .await;
        assert_eq!(res.status(), 403);
    }
    assert_eq!(app.service.list_organizations().await.unwrap().len(), 2);
    assert!(
        app.service
            .store()
            .get_user("mallory")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_administrator_manages_organisations_people_and_groups() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    b.sign_in("admin").await;
    let page = b.get("/admin").await;
    assert_eq!(page.status(), 200);
    let csrf = hidden(&page.text().await.unwrap(), "csrf");
    let res = b
        .post(
            "/admin/organizations",
            &[
                ("csrf", &csrf),
                ("id", "uni"),
                ("name", "The University"),
                ("kind", "university"),
            ],
        )
        .await;
    assert_eq!(
        res.headers().get("location").unwrap(),
        "/admin?done=organization"
    );
    let res = b
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("username", "carol"),
                ("display_name", "Carol"),
                ("password", "long enough password"),
                ("organization_ids", "uni"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let res = b
        .post(
            "/admin/memberships",
            &[
                ("csrf", &csrf),
                ("username", "bob"),
                ("organization_id", "uni"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let res = b
        .post(
            "/admin/groups",
            &[
                ("csrf", &csrf),
                ("id", "researchers"),
                ("name", "Researchers"),
                ("criteria", "Accredited"),
                ("member_organization_ids", "uni"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    // A refused change is explained.
    let res = b
        .post(
            "/admin/users",
            &[
                ("csrf", &csrf),
                ("username", "dave"),
                ("display_name", "Dave"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("at least 12 characters"));
    let page = b.get("/admin?done=group").await.text().await.unwrap();
    for text in ["The University", "carol", "Researchers", "Group created."] {
        assert!(page.contains(text), "{text}");
    }
    let bob = app.service.get_user("bob").await.unwrap();
    assert_eq!(
        bob.organization_ids,
        vec!["uni".to_string(), "water-co".to_string()]
    );
}

impl Browser<'_> {
    /// Send a file the way the dataset page's upload script does.
    async fn upload(&mut self, id: &str, csrf: Option<&str>, csv: &str) -> Response {
        let mut req = self
            .app
            .client
            .post(
                self.app
                    .url(&format!("/datasets/{id}/versions?on_error=reject")),
            )
            .header("cookie", self.cookie_header())
            .header("content-type", "text/csv")
            .body(csv.to_string());
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        req.send().await.unwrap()
    }
}

#[tokio::test]
async fn the_dataset_page_shows_content_quality_and_a_map_and_the_owner_uploads_through_it() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let mut d = dataset("Charging points", "city-energy", "open");
    d["update_frequency"] = json!("daily");
    let id = app.create_dataset(&alice, &d).await;

    // Before any content: the page says so, and the first version is awaited.
    let page = app.page(&format!("/datasets/{id}")).await;
    assert!(page.contains("No content has been published yet."));
    assert!(page.contains("No version yet; the first is due by"));
    assert!(
        !page.contains("id=\"upload-form\""),
        "anonymous visitors get no upload form"
    );

    // The owner's page has the form; the upload needs the session's CSRF token.
    let mut owner = Browser::new(&app);
    owner.sign_in("alice").await;
    let page = owner
        .get(&format!("/datasets/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"upload-form\""));
    assert!(page.contains("<script src=\"/static/upload.js\" defer></script>"));
    let csrf = page
        .split("data-csrf=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let csv = "name,kw,longitude,latitude\nPlaça Catalunya,50,2.1700,41.3870\nSants,22,2.1400,41.3790\nGlòries,,2.1890,41.4030\n";
    let res = owner.upload(&id, None, csv).await;
    assert_eq!(res.status(), 403, "no CSRF token, no upload");
    let res = owner.upload(&id, Some("forged"), csv).await;
    assert_eq!(res.status(), 403);
    let res = Browser::new(&app).upload(&id, Some(&csrf), csv).await;
    assert_eq!(res.status(), 401, "a token without the session is nothing");
    let mut bob = Browser::new(&app);
    bob.sign_in("bob").await;
    let bob_csrf = bob.csrf().await;
    let res = bob.upload(&id, Some(&bob_csrf), csv).await;
    assert_eq!(
        res.status(),
        403,
        "another organisation's member may not publish"
    );
    assert_eq!(
        app.get(&format!("/api/v1/datasets/{id}/versions"), None)
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap(),
        json!([]),
        "refused uploads left nothing"
    );
    let res = owner
        .upload(&id, Some(&csrf), "name,kw\nx,not-a-number\n")
        .await;
    assert_eq!(res.status(), 201, "text columns are inferred as text");
    let res = owner.upload(&id, Some(&csrf), csv).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["version"], 2);

    // Anyone sees the version, the quality chart with the same figures in a table, the rows over versions and the map.
    let page = app.page(&format!("/datasets/{id}?published=2")).await;
    assert!(page.contains("Version 2 is published."));
    assert!(page.contains("<title id=\"quality-chart-title\">Completeness per column</title>"));
    assert!(
        page.contains("kw 66.7%"),
        "completeness of kw (2 of 3) in the chart's description"
    );
    assert!(page.contains("<title id=\"rows-chart-title\">Rows per version</title>"));
    assert!(page.contains("v1: 1 rows, v2: 3 rows"));
    assert!(page.contains("class=\"map\""));
    assert_eq!(page.matches("<circle").count(), 3, "one point per station");
    assert!(page.contains("?format=geojson"));
    assert!(page.contains("On time: the next version is due by"));
    assert!(page.contains("<th scope=\"row\">latitude</th>"));

    // A day and a half without a new version of a daily dataset: overdue, on the page and in the API.
    app.clock.advance(time::Duration::hours(31));
    let t: serde_json::Value = app
        .get(&format!("/api/v1/datasets/{id}/timeliness"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(t["state"], "overdue", "{t}");
    assert_eq!(t["overdue"], true);
    let page = app.page(&format!("/datasets/{id}")).await;
    assert!(page.contains("<span class=\"badge badge-overdue\">Overdue</span>"));
}

#[tokio::test]
async fn values_from_data_others_may_not_read_stay_off_the_page_and_the_api() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = app
        .create_dataset(
            &alice,
            &dataset("Household meters", "city-energy", "shared_public"),
        )
        .await;
    let mut csv = String::from("meter,kwh,longitude,latitude\n");
    for i in 0..20 {
        csv.push_str(&format!("m{i},{},2.1{i:02},41.38\n", 100 + i));
    }
    csv.push_str("m99,987654,2.15,41.39\n");
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(&alice),
            "text/csv",
            csv.into_bytes(),
        )
        .await;
    assert_eq!(res.status(), 201);

    // The owner sees the outlier and the range.
    let mine: serde_json::Value = app
        .get(&format!("/api/v1/datasets/{id}/versions/1"), Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert!(mine.to_string().contains("987654"), "{mine}");
    assert!(mine.get("values_withheld").is_none());

    // Anyone else sees counts and shares only.
    for token in [None, Some(app.token("bob").await)] {
        let theirs: serde_json::Value = app
            .get(
                &format!("/api/v1/datasets/{id}/versions/1"),
                token.as_deref(),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(theirs["values_withheld"], true);
        assert!(!theirs.to_string().contains("987654"), "{theirs}");
        let kwh = &theirs["quality"]["columns"][1];
        assert_eq!(kwh["name"], "kwh");
        assert!(kwh.get("min").is_none() && kwh.get("max").is_none() && kwh.get("mean").is_none());
        assert_eq!(kwh["outliers"]["count"], 1, "the count stays");
        let list: serde_json::Value = app
            .get(&format!("/api/v1/datasets/{id}/versions"), token.as_deref())
            .await
            .json()
            .await
            .unwrap();
        assert!(!list.to_string().contains("987654"));
    }
    let page = app.page(&format!("/datasets/{id}")).await;
    assert!(page.contains("Completeness per column"));
    assert!(
        !page.contains("987654"),
        "no value from the data on the public page"
    );
    assert!(
        !page.contains("class=\"map\""),
        "no map of data the visitor may not read"
    );
    assert!(!page.contains("?format=csv"), "no download links either");
    assert!(page.contains("only members of its owner"));
}

#[tokio::test]
async fn a_resident_reports_an_error_through_the_page_and_sees_the_owners_answer() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = app
        .create_dataset(&alice, &dataset("Bus stops", "city-energy", "open"))
        .await;
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(&alice),
            "text/csv",
            b"stop,name\n1,Placa Espanya\n2,Sants\n".to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201);
    let page = app.page(&format!("/datasets/{id}")).await;
    assert!(
        page.contains("to report an error in this dataset"),
        "anonymous visitors are asked to sign in"
    );

    let mut resident = Browser::new(&app);
    resident.sign_in("resident").await;
    let csrf = resident.csrf().await;
    let report = [
        ("csrf", csrf.as_str()),
        ("version", "1"),
        ("column", "name"),
        ("row", "1"),
        ("description", "Plaça Espanya is missing its cedilla."),
    ];
    let res = resident
        .post(&format!("/datasets/{id}/feedback"), &report[1..])
        .await;
    assert_eq!(res.status(), 403, "no CSRF token, no report");
    let res = resident
        .post(&format!("/datasets/{id}/feedback"), &report)
        .await;
    assert_eq!(res.status(), 303);
    let page = resident
        .get(&format!("/datasets/{id}?notice=reported"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("your report is recorded"));
    assert!(page.contains("Your reports"));
    assert!(page.contains("Awaiting an answer"));
    assert!(
        !page.contains("Answer this report"),
        "a reporter does not answer"
    );
    let res = resident
        .post(
            &format!("/datasets/{id}/feedback"),
            &[("csrf", &csrf), ("column", "bogus"), ("description", "x")],
        )
        .await;
    assert_eq!(res.status(), 422, "an unknown column is refused");

    // The owner sees the report with an answer form, and answers it.
    let mut owner = Browser::new(&app);
    owner.sign_in("alice").await;
    let page = owner
        .get(&format!("/datasets/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Reports on this dataset"));
    assert!(page.contains("Answer this report"));
    let fid = page
        .split("/feedback/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    let owner_csrf = owner.csrf().await;
    let mut bob = Browser::new(&app);
    bob.sign_in("bob").await;
    let bob_csrf = bob.csrf().await;
    let answer = format!("/datasets/{id}/feedback/{fid}/answer");
    let res = bob
        .post(
            &answer,
            &[
                ("csrf", &bob_csrf),
                ("decision", "rejected"),
                ("response", "no"),
            ],
        )
        .await;
    assert_eq!(res.status(), 403, "only maintainers answer");
    let res = owner
        .post(
            &answer,
            &[
                ("csrf", &owner_csrf),
                ("decision", "rejected"),
                (
                    "response",
                    "The stop's official name is written without it.",
                ),
                ("resolved_version", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = resident
        .get(&format!("/datasets/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<strong>Rejected</strong>"));
    assert!(
        page.contains("Answer: The stop&#39;s official name is written without it.")
            || page.contains("Answer: The stop&#x27;s official name"),
        "{page}"
    );
}

#[tokio::test]
async fn the_owner_reassesses_a_derived_dataset_on_its_page() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let source = app
        .create_dataset(&alice, &dataset("Meters", "city-energy", "shared_public"))
        .await;
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{source}/versions"),
            Some(&alice),
            "text/csv",
            b"district,kwh\nSants,10\nSants,12\nGracia,7\n".to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201);
    let res = app
        .post_json(
            "/api/v1/derived-datasets",
            Some(&alice),
            &json!({
                "dataset": {"title": "Energy by district", "description": "Sums.", "owner_organization_id": "city-energy", "spectrum": "open"},
                "sql": format!("SELECT district, SUM(kwh) AS kwh FROM {} GROUP BY district", source.replace('-', "_")),
                "purpose": "city-operations"
            }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let id = res.json::<serde_json::Value>().await.unwrap()["dataset"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let page = app.page(&format!("/datasets/{id}")).await;
    assert!(page.contains("Needs re-assessment"));
    assert!(page.contains(&format!(
        "<a href=\"/datasets/{source}\">{source} (version 1)</a>"
    )));
    assert!(
        !page.contains("Re-assess this derived dataset"),
        "only maintainers get the form"
    );

    let mut bob = Browser::new(&app);
    bob.sign_in("bob").await;
    let bob_csrf = bob.csrf().await;
    let form = |csrf: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("spectrum".to_string(), "shared_public".to_string()),
            (
                "note".to_string(),
                "Totals over whole districts single no household out.".to_string(),
            ),
        ]
    };

    let bob_form = form(&bob_csrf);
    let bob_pairs: Vec<(&str, &str)> = bob_form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let res = bob
        .post(&format!("/datasets/{id}/reassessment"), &bob_pairs)
        .await;
    assert_eq!(res.status(), 403, "another organisation may not re-assess");

    let mut owner = Browser::new(&app);
    owner.sign_in("alice").await;
    let page = owner
        .get(&format!("/datasets/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Re-assess this derived dataset"));
    let csrf = owner.csrf().await;
    let owner_form = form(&csrf);
    let pairs: Vec<(&str, &str)> = owner_form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let res = owner
        .post(&format!("/datasets/{id}/reassessment"), &pairs[1..])
        .await;
    assert_eq!(res.status(), 403, "no CSRF token, no change");
    let res = owner
        .post(&format!("/datasets/{id}/reassessment"), &pairs)
        .await;
    assert_eq!(res.status(), 303);
    let page = app.page(&format!("/datasets/{id}")).await;
    assert!(!page.contains("Needs re-assessment"));
    assert!(page.contains(
        "Re-assessed by its owner: Totals over whole districts single no household out."
    ));
    // Still its input's terms (shared with the public, not open): the
    // owner's form offers no class below the inherited one; the trustees may.
    assert!(
        !owner
            .get(&format!("/datasets/{id}"))
            .await
            .text()
            .await
            .unwrap()
            .contains("<option value=\"open\"")
    );
    let res = app
        .get(&format!("/api/v1/datasets/{id}/data?format=csv"), None)
        .await;
    assert_eq!(res.status(), 401, "not open: its input is not");
    let mut trustee = Browser::new(&app);
    trustee.sign_in("trustee").await;
    let page = trustee
        .get(&format!("/datasets/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Re-assess this derived dataset"),
        "trustees get the form"
    );
    let csrf = trustee.csrf().await;
    let res = trustee
        .post(
            &format!("/datasets/{id}/reassessment"),
            &[
                ("csrf", csrf.as_str()),
                ("spectrum", "open"),
                (
                    "note",
                    "District sums over many households: released as open data.",
                ),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = app.page(&format!("/datasets/{id}")).await;
    assert!(
        page.contains("Assessed and released by the trustees"),
        "{page}"
    );
    let res = app
        .get(&format!("/api/v1/datasets/{id}/data?format=csv"), None)
        .await;
    assert_eq!(res.status(), 200, "open to anyone now");
}

#[tokio::test]
async fn a_request_is_asked_voted_and_registered_through_the_portal() {
    let app = crate::governance::start().await;
    let alice = app.token("alice").await;
    let id = app
        .create_dataset(
            &alice,
            &dataset("Building energy", "city-energy", "shared_specific"),
        )
        .await;

    // The analyst fills in the form; a wrong date comes back with the answers kept.
    let mut analyst = Browser::new(&app);
    analyst.sign_in("analyst").await;
    let form = analyst
        .get(&format!("/requests/new?dataset={id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(form.contains(&format!("value=\"{id}\" checked")), "{form}");
    let csrf = hidden(&form, "csrf");
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("dataset_ids", id.as_str()),
        ("purpose", "research"),
        ("level", "identified"),
        ("starts_on", "2026-03-01"),
        ("ends_on", "2026-02-01"),
        ("benefit", "A public retrofit priority list."),
        ("sharing", "systematic"),
        ("systematic.justified", "Needed to rank buildings."),
        (
            "systematic.benefits_and_risks",
            "Lower bills; commercial figures.",
        ),
        ("systematic.proportionate", "Annual totals only."),
        ("systematic.without_personal_data", "Not personal data."),
        ("systematic.power_to_share", "The benchmarking ordinance."),
        ("action", "submit"),
    ];
    let res = analyst.post("/requests", &fields).await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("ends_on") && page.contains("Annual totals only."),
        "{page}"
    );
    fields[5] = ("ends_on", "2026-12-31");
    let res = analyst.post("/requests", &fields).await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let request_id = location.trim_start_matches("/requests/").to_string();
    let page = analyst.get(&location).await.text().await.unwrap();
    assert!(
        page.contains("Under review") && !page.contains("Your vote"),
        "{page}"
    );

    // Each trustee sees it in the queue and votes on its page.
    for (i, trustee) in ["trustee", "trustee2", "trustee3"].iter().enumerate() {
        let mut b = Browser::new(&app);
        b.sign_in(trustee).await;
        let queue = b.get("/requests").await.text().await.unwrap();
        assert!(queue.contains(&request_id), "{queue}");
        let page = b.get(&location).await.text().await.unwrap();
        assert!(page.contains("Your vote"), "{page}");
        let csrf = hidden(&page, "csrf");
        // No reason: refused, nothing recorded.
        let res = b
            .post(
                &format!("{location}/vote"),
                &[("csrf", &csrf), ("vote", "approve"), ("reason", "")],
            )
            .await;
        assert_eq!(res.status(), 422, "trustee {i}");
        let res = b
            .post(
                &format!("{location}/vote"),
                &[
                    ("csrf", &csrf),
                    ("vote", "approve"),
                    ("reason", "Clear public benefit."),
                ],
            )
            .await;
        assert_eq!(res.status(), 303, "trustee {i}");
    }
    // A forged vote (no CSRF token) is refused.
    let res = analyst
        .post(
            &format!("{location}/vote"),
            &[("vote", "approve"), ("reason", "me")],
        )
        .await;
    assert_eq!(res.status(), 403);

    // The register shows the agreement and the decision with its reasons, to anyone.
    let register = app.page("/register").await;
    assert!(
        register.contains(&request_id) && register.contains("Clear public benefit."),
        "{register}"
    );
    let r: serde_json::Value = app
        .get(&format!("/api/v1/access-requests/{request_id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "approved");
    let agreement = r["agreement_id"].as_str().unwrap();
    let page = app.page(&format!("/agreements/{agreement}")).await;
    assert!(
        page.contains("organization:uni") && page.contains("ODRL policy"),
        "{page}"
    );
}

#[tokio::test]
async fn sign_in_through_an_identity_provider_is_bound_to_the_browser_that_started_it() {
    let app = TestApp::start().await;
    let mut b = Browser::new(&app);
    let page = b.get("/signin").await.text().await.unwrap();
    assert!(page.contains("href=\"/signin/oidc/city-id\""), "{page}");
    assert!(page.contains("Sign in with City ID"));
    // An unknown provider is not found; one that cannot be reached says so.
    assert_eq!(b.get("/signin/oidc/nowhere").await.status(), 404);
    let res = b.get("/signin/oidc/city-id").await;
    assert_eq!(res.status(), 502);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("City ID could not be reached")
    );

    // An answer with no state, or a state this browser did not start, signs nobody in.
    let res = b.get("/signin/oidc/city-id/callback?code=abc").await;
    assert_eq!(res.status(), 403);
    let started = app.service.begin_external_sign_in("city-id").await.unwrap();
    let callback = format!(
        "/signin/oidc/city-id/callback?code=abc&state={}",
        started.state
    );
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 403, "no cookie: another browser's sign-in");
    b.cookies.push(("ct_oidc".into(), "0".repeat(64)));
    assert_eq!(
        b.get(&callback).await.status(),
        403,
        "cookie for another sign-in"
    );
    // The right browser: the state is used up, then the provider is asked (and is down).
    b.cookies.retain(|(k, _)| k != "ct_oidc");
    b.cookies.push(("ct_oidc".into(), started.state.clone()));
    assert_eq!(b.get(&callback).await.status(), 502);
    b.cookies.push(("ct_oidc".into(), started.state.clone()));
    let res = b.get(&callback).await;
    assert_eq!(res.status(), 403, "an answer is taken once");
    assert!(res.text().await.unwrap().contains("expired"));
    assert!(!b.cookies.iter().any(|(k, _)| k == "ct_session"));
    // A provider's refusal is shown, and the sign-in is used up with it.
    let started = app.service.begin_external_sign_in("city-id").await.unwrap();
    b.cookies.retain(|(k, _)| k != "ct_oidc");
    b.cookies.push(("ct_oidc".into(), started.state.clone()));
    let res = b
        .get(&format!(
            "/signin/oidc/city-id/callback?error=access_denied&error_description=The+user+said+no&state={}",
            started.state
        ))
        .await;
    assert_eq!(res.status(), 401);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("access_denied (The user said no)")
    );
    // A sign-in started for one provider is not finished at another.
    let started = app.service.begin_external_sign_in("other").await.unwrap();
    b.cookies.retain(|(k, _)| k != "ct_oidc");
    b.cookies.push(("ct_oidc".into(), started.state.clone()));
    let res = b
        .get(&format!(
            "/signin/oidc/city-id/callback?code=abc&state={}",
            started.state
        ))
        .await;
    assert_eq!(res.status(), 403);
    // Ten minutes later a sign-in has expired.
    let started = app.service.begin_external_sign_in("city-id").await.unwrap();
    app.clock.advance(time::Duration::minutes(11));
    assert!(matches!(
        app.service.finish_external_sign_in(&started.state).await,
        Err(citytrust_service::ServiceError::ExpiredCredentials)
    ));
}

#[tokio::test]
async fn an_identity_signs_in_to_its_own_account_made_at_first_sign_in() {
    use citytrust_model::Role;
    use citytrust_service::identity::ExternalProfile;
    let app = TestApp::start().await;
    let profile = |subject: &str, name: &str| ExternalProfile {
        provider: "city-id".into(),
        issuer: "https://id.city.example".into(),
        subject: subject.into(),
        preferred_username: Some(name.into()),
        name: Some("Marta Puig".into()),
        verified_email: Some("marta@example.org".into()),
        roles: vec![Role::Resident],
    };
    let first = app
        .service
        .sign_in_external(&profile("sub-1", "Marta"))
        .await
        .unwrap();
    assert_eq!(first.username, "marta");
    assert_eq!(first.roles, [Role::Resident]);
    assert_eq!(first.display_name, "Marta Puig");
    // The same identity, even under a new preferred name, is the same account.
    let again = app
        .service
        .sign_in_external(&profile("sub-1", "marta.p"))
        .await
        .unwrap();
    assert_eq!(again.username, "marta");
    // Another identity with the same preferred name does not get her account,
    // and neither does a local account's name.
    let other = app
        .service
        .sign_in_external(&profile("sub-2", "Marta"))
        .await
        .unwrap();
    assert_eq!(other.username, "marta-2");
    let not_alice = app
        .service
        .sign_in_external(&profile("sub-3", "alice"))
        .await
        .unwrap();
    assert_eq!(not_alice.username, "alice-2");
    // An account made this way has no password to guess.
    let res = app
        .post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "marta", "password": ""}),
        )
        .await;
    assert_ne!(res.status(), 200);
    let res = app
        .post_json(
            "/api/v1/auth/token",
            None,
            &json!({"username": "marta", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(res.status(), 401);
    // A disabled account stays shut to its identity too.
    app.sql("UPDATE users SET disabled = 1 WHERE username = 'marta'")
        .await;
    assert!(matches!(
        app.service
            .sign_in_external(&profile("sub-1", "Marta"))
            .await,
        Err(citytrust_service::ServiceError::ExpiredCredentials)
    ));
    // The issuer is part of the identity: the same subject elsewhere is someone else.
    let mut elsewhere = profile("sub-1", "Marta");
    elsewhere.issuer = "https://id.other.example".into();
    assert_eq!(
        app.service
            .sign_in_external(&elsewhere)
            .await
            .unwrap()
            .username,
        "marta-3"
    );
}

#[tokio::test]
async fn signed_in_downloads_of_data_that_is_not_open_are_governed_like_api_reads() {
    use crate::governance::{ENERGY_CSV, all_vote, request, with_content};
    let app = crate::governance::start().await;
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
    let r = app
        .post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &request(&[&energy], "research", "identified"),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r: serde_json::Value = r.json().await.unwrap();
    all_vote(&app, r["id"].as_str().unwrap(), "approve").await;

    let mut b = Browser::new(&app);
    b.sign_in("analyst").await;
    let page = b
        .get(&format!("/datasets/{energy}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Download for a purpose"), "{page}");
    let csrf = hidden(&page, "csrf");
    let path = format!("/datasets/{energy}/download");
    let res = b
        .post(
            &path,
            &[("csrf", &csrf), ("purpose", "research"), ("format", "csv")],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert!(res.headers().contains_key("citytrust-log-entry"));
    assert!(res.text().await.unwrap().contains("Alpha Tower"));
    // Another purpose than the agreement's: refused, saying by which rule, with no data.
    let res = b
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("purpose", "commercial"),
                ("format", "csv"),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    let text = res.text().await.unwrap();
    assert!(text.contains("Refused"), "{text}");
    assert!(!text.contains("Alpha Tower") && !text.contains("1520000"));
    // No form token, no download; an unknown format is named.
    let res = b
        .post(&path, &[("purpose", "research"), ("format", "csv")])
        .await;
    assert_eq!(res.status(), 403);
    let res = b
        .post(
            &path,
            &[("csrf", &csrf), ("purpose", "research"), ("format", "xlsx")],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("xlsx"));
    // Someone without an agreement is refused; nobody signed in is sent to sign in.
    let mut r2 = Browser::new(&app);
    r2.sign_in("resident").await;
    let csrf2 = r2.csrf().await;
    let res = r2
        .post(
            &path,
            &[("csrf", &csrf2), ("purpose", "research"), ("format", "csv")],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(!res.text().await.unwrap().contains("Alpha Tower"));
    let mut anon = Browser::new(&app);
    let res = anon
        .post(&path, &[("purpose", "research"), ("format", "csv")])
        .await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn the_resident_dashboard_links_records_gives_and_withdraws_consent_and_asks() {
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = crate::residents::personal_dataset(&app, &alice).await;
    let mut b = Browser::new(&app);
    // Signed out: sign in first.
    assert_eq!(b.get("/me").await.status(), 303);
    b.sign_in("resident").await;
    let page = b.get("/me").await.text().await.unwrap();
    assert!(
        page.contains("No records are linked to your account yet"),
        "{page}"
    );
    let csrf = hidden(&page, "csrf");

    // A code from the owner links the records; a forged form does nothing.
    let res = app
        .post_json(
            &format!("/api/v1/datasets/{id}/link-codes"),
            Some(&alice),
            &json!({"subject_key": "H-2"}),
        )
        .await;
    let code: serde_json::Value = res.json().await.unwrap();
    let code = code["code"].as_str().unwrap().to_string();
    let forged = b
        .post("/me/links", &[("csrf", "forged"), ("code", &code)])
        .await;
    assert_eq!(forged.status(), 403);
    let res = b
        .post("/me/links", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/me?done=link");
    let page = b.get("/me?done=link").await.text().await.unwrap();
    assert!(page.contains("<strong>H-2</strong>"), "{page}");
    // Each use is explained where the choice is made.
    assert!(page.contains("Researchers may study your readings."));
    assert!(page.contains("The city plans the grid."));
    assert!(page.contains("Give consent for"));
    assert!(page.contains("Object to"));

    // Consent, given and withdrawn as easily.
    let res = b
        .post(
            "/me/consents",
            &[
                ("csrf", &csrf),
                ("dataset_id", &id),
                ("purpose", "research"),
                ("recipient", ""),
                ("kind", "consent"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = b.get("/me").await.text().await.unwrap();
    assert!(
        page.contains("You consented (for any organisation"),
        "{page}"
    );
    let start = page.find("/me/consents/cons-").unwrap() + "/me/consents/".len();
    let consent_id = page[start..].split('/').next().unwrap().to_string();
    let res = b
        .post(
            &format!("/me/consents/{consent_id}/withdraw"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/me?done=withdraw");
    let page = b.get("/me?done=withdraw").await.text().await.unwrap();
    assert!(page.contains("From the very next read"), "{page}");
    let resident = app.token("resident").await;
    let consents: serde_json::Value = app
        .get("/api/v1/me/consents", Some(&resident))
        .await
        .json()
        .await
        .unwrap();
    assert!(consents[0]["withdrawn_at"].is_string(), "{consents}");
    // A choice the basis does not allow is explained on the page, not lost.
    let res = b
        .post(
            "/me/consents",
            &[
                ("csrf", &csrf),
                ("dataset_id", &id),
                ("purpose", "city-operations"),
                ("kind", "consent"),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    let text = res.text().await.unwrap();
    assert!(
        text.contains("That did not work") && text.contains("you may object instead"),
        "{text}"
    );
    // Objection to the public task.
    let res = b
        .post(
            "/me/consents",
            &[
                ("csrf", &csrf),
                ("dataset_id", &id),
                ("purpose", "city-operations"),
                ("kind", "objection"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    assert!(
        b.get("/me")
            .await
            .text()
            .await
            .unwrap()
            .contains("You objected")
    );

    // A request with its deadline, and the copy of everything.
    let res = b
        .post(
            "/me/requests",
            &[("csrf", &csrf), ("kind", "access"), ("dataset_id", "")],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = b.get("/me").await.text().await.unwrap();
    assert!(
        page.contains("A copy of my data") && page.contains("Open"),
        "{page}"
    );
    let export = b.post("/me/export", &[("csrf", &csrf)]).await;
    assert_eq!(export.status(), 200);
    assert!(
        export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert!(export.headers().contains_key("citytrust-log-entry"));
    let bundle: serde_json::Value = export.json().await.unwrap();
    assert!(bundle["datasets"][0]["rows"].to_string().contains("H-2"));
    // Forged export: refused.
    assert_eq!(b.post("/me/export", &[("csrf", "x")]).await.status(), 403);
}

#[tokio::test]
async fn only_trustees_see_the_breach_register_and_a_bad_form_keeps_its_answers() {
    let app = TestApp::start().await;
    let mut resident = Browser::new(&app);
    resident.sign_in("resident").await;
    assert_eq!(resident.get("/breaches").await.status(), 403);
    let csrf = resident.csrf().await;
    assert_eq!(
        resident
            .post("/breaches", &[("csrf", &csrf), ("title", "x")])
            .await
            .status(),
        403
    );
    let mut trustee = Browser::new(&app);
    trustee.sign_in("trustee").await;
    let page = trustee.get("/breaches").await.text().await.unwrap();
    assert!(page.contains("No breach has been registered."));
    let csrf = hidden(&page, "csrf");
    let res = trustee
        .post(
            "/breaches",
            &[
                ("csrf", &csrf),
                ("title", "Laptop stolen"),
                ("description", ""),
                ("dataset_id", ""),
                ("notice", "We are sorry."),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    let text = res.text().await.unwrap();
    assert!(text.contains("value=\"Laptop stolen\""), "{text}");
    assert!(text.contains("name at least one dataset"), "{text}");
    assert_eq!(app.service.store().breaches().await.unwrap().len(), 0);
}

#[tokio::test]
async fn a_guardian_acts_for_their_child_through_the_dashboard_and_nobody_acts_without_authority() {
    use citytrust_model::Role;
    let app = TestApp::start().await;
    let alice = app.token("alice").await;
    let id = crate::residents::personal_dataset(&app, &alice).await;
    for name in ["kim", "guardian"] {
        app.service
            .insert_user(crate::harness::user(name, vec![Role::Resident], vec![]))
            .await
            .unwrap();
    }
    let admin = app.token("admin").await;
    let res = app
        .post_json(
            "/api/v1/users/kim/birth-date",
            Some(&admin),
            &json!({"birth_date": "2014-01-10"}),
        )
        .await;
    assert_eq!(res.status(), 204);
    app.service
        .link_verified("kim", &id, "H-1", "test")
        .await
        .unwrap();
    let res = app
        .post_json(
            "/api/v1/authorities",
            Some(&admin),
            &json!({"agent": "guardian", "principal": "kim", "kind": "guardian", "scope": "Data decisions.", "covers": ["residents_choices", "access_requests", "reads"],
                    "evidence": "Birth certificate seen, ref. T-1.", "starts_on": "2026-03-01", "ends_on": "2030-01-01"}),
        )
        .await;
    assert_eq!(res.status(), 201);

    // The child cannot consent alone; the page says why.
    let mut kim = Browser::new(&app);
    kim.sign_in("kim").await;
    let csrf = kim.csrf().await;
    let consent = |csrf: String, for_whom: &'static str| {
        vec![
            ("csrf".to_string(), csrf),
            ("for".to_string(), for_whom.to_string()),
            ("dataset_id".to_string(), id.clone()),
            ("purpose".to_string(), "research".to_string()),
            ("kind".to_string(), "consent".to_string()),
        ]
    };
    let form = consent(csrf, "");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let res = kim.post("/me/consents", &pairs).await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("your parent or guardian")
    );

    // The guardian switches to the child's data and consents for them.
    let mut g = Browser::new(&app);
    g.sign_in("guardian").await;
    let page = g.get("/me").await.text().await.unwrap();
    assert!(
        page.contains("Act for someone you are authorised to help"),
        "{page}"
    );
    assert!(page.contains("kim (as their guardian)"), "{page}");
    let page = g.get("/me?for=kim").await.text().await.unwrap();
    assert!(page.contains("You are acting on behalf of"), "{page}");
    assert!(page.contains("<strong>H-1</strong>"), "{page}");
    let form = consent(hidden(&page, "csrf"), "kim");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let res = g.post("/me/consents", &pairs).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/me?done=consent&for=kim");
    let page = g
        .get("/me?done=consent&for=kim")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("your guardian on your behalf"), "{page}");
    // The child sees who did it.
    let page = kim.get("/me").await.text().await.unwrap();
    assert!(page.contains("your guardian on your behalf"), "{page}");

    // Nobody acts for a person without an authority: not the child for the
    // guardian, not the owner for the child, not by page nor by form.
    let res = kim.get("/me?for=guardian").await;
    assert_eq!(res.status(), 403);
    let mut owner = Browser::new(&app);
    owner.sign_in("alice").await;
    assert_eq!(owner.get("/me?for=kim").await.status(), 403);
    let csrf = owner.csrf().await;
    let form = consent(csrf.clone(), "kim");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(owner.post("/me/consents", &pairs).await.status(), 403);
    assert_eq!(
        owner
            .post("/me/export", &[("csrf", &csrf), ("for", "kim")])
            .await
            .status(),
        403
    );
    let kim_token = app.token("kim").await;
    let consents: serde_json::Value = app
        .get("/api/v1/me/consents", Some(&kim_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(consents.as_array().unwrap().len(), 1, "{consents}");
}

#[tokio::test]
async fn the_dataset_page_asks_for_pseudonymised_rows_and_for_thresholded_tables() {
    use crate::governance::{all_vote, request};
    let app = crate::governance::start().await;
    let alice = app.token("alice").await;
    let mut d = crate::harness::dataset("Ward visits", "city-energy", "shared_specific");
    d["column_classes"] = serde_json::json!({"personal": ["name"]});
    d["personal_data"] = serde_json::json!(true);
    let id = app.create_dataset(&alice, &d).await;
    let mut csv = String::from("name,ward\n");
    for i in 0..40 {
        csv.push_str(&format!("Person {i},{}\n", if i < 35 { "A" } else { "B" }));
    }
    let res = app
        .post_raw(
            &format!("/api/v1/datasets/{id}/versions"),
            Some(&alice),
            "text/csv",
            csv.into_bytes(),
        )
        .await;
    assert_eq!(res.status(), 201);
    let analyst = app.token("analyst").await;
    let r = app
        .post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &request(&[&id], "research", "pseudonymised"),
        )
        .await;
    let r: serde_json::Value = r.json().await.unwrap();
    // Row-level personal data: open for comment first.
    assert_eq!(r["status"], "public_comment", "{r}");
    app.clock.advance(time::Duration::days(15));
    all_vote(&app, r["id"].as_str().unwrap(), "approve").await;

    let mut b = Browser::new(&app);
    b.sign_in("analyst").await;
    let page = b
        .get(&format!("/datasets/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("A table of counts"), "{page}");
    assert!(page.contains("Pseudonymised rows"), "{page}");
    let csrf = hidden(&page, "csrf");
    // Pseudonymised rows: the names replaced.
    let res = b
        .post(
            &format!("/datasets/{id}/download"),
            &[
                ("csrf", &csrf),
                ("purpose", "research"),
                ("format", "csv"),
                ("level", "pseudonymised"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains("Person 1"), "{text}");
    assert_eq!(text.lines().count(), 41, "{text}");
    // Identified rows are beyond this agreement: refused, naming the rule.
    let res = b
        .post(
            &format!("/datasets/{id}/download"),
            &[("csrf", &csrf), ("purpose", "research"), ("format", "csv")],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(!res.text().await.unwrap().contains("Person 1"));
    // A table by ward: 35 shown, the 5 of ward B suppressed — and so the total
    // (40) with them would give B away … unless it is suppressed too.
    let res = b
        .post(
            &format!("/datasets/{id}/table"),
            &[
                ("csrf", &csrf),
                ("purpose", "research"),
                ("by", "ward"),
                ("by2", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("citytrust-log-entry"));
    let table = res.text().await.unwrap();
    // Only cells shown are listed (nothing tells a small cell from an empty
    // one), and this reader, who may not read the rows, gets perturbed counts.
    assert!(table.starts_with("ward,count\n"), "{table}");
    assert!(!table.contains("\nB,"), "{table}");
    assert!(
        !(table.contains("\nA,") && table.contains("(total),")),
        "{table}"
    );
    // A personal column is no dimension; nor is a form without a token.
    let res = b
        .post(
            &format!("/datasets/{id}/table"),
            &[("csrf", &csrf), ("purpose", "research"), ("by", "name")],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(!res.text().await.unwrap().contains("Person 1"));
    let res = b
        .post(
            &format!("/datasets/{id}/table"),
            &[("purpose", "research"), ("by", "ward")],
        )
        .await;
    assert_eq!(res.status(), 403);
    // Someone without an agreement gets no table.
    let mut r2 = Browser::new(&app);
    r2.sign_in("resident").await;
    let csrf2 = r2.csrf().await;
    let res = r2
        .post(
            &format!("/datasets/{id}/table"),
            &[("csrf", &csrf2), ("purpose", "research"), ("by", "ward")],
        )
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_resident_asks_for_data_through_the_portal_others_support_it_and_the_owner_plans_it() {
    let app = TestApp::start().await;
    let res = app
        .client
        .get(app.url("/data-requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the list is public");
    let mut anonymous = Browser::new(&app);
    let res = anonymous.get("/data-requests/new").await;
    assert_eq!(res.status(), 303, "asking needs an account");

    let mut resident = Browser::new(&app);
    resident.sign_in("resident").await;
    let csrf = resident.csrf().await;
    let ask = [
        ("csrf", csrf.as_str()),
        ("title", "Cycling accident hot spots"),
        ("description", "Accidents with bicycles by junction."),
        ("reason", "The same corners every year."),
        ("use_case", "A map for the road-safety walk."),
        ("benefit", "Safer routes to school."),
        ("dataset_id", ""),
        ("organization_id", "city-energy"),
    ];
    let res = resident.post("/data-requests", &ask[1..]).await;
    assert_eq!(res.status(), 403, "no CSRF token, no request");
    let mut missing = ask;
    missing[5] = ("benefit", " ");
    let res = resident.post("/data-requests", &missing).await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(page.contains("The request was not sent") && page.contains("id=\"dr-benefit-error\""));
    assert!(
        page.contains("A map for the road-safety walk."),
        "the form keeps its answers"
    );
    let res = resident.post("/data-requests", &ask).await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let path = location.split('?').next().unwrap().to_string();
    let page = resident.get(&location).await.text().await.unwrap();
    assert!(page.contains("you asked for this"));
    assert!(
        !page.contains("Support this request"),
        "nobody supports their own"
    );

    let mut bob = Browser::new(&app);
    bob.sign_in("bob").await;
    let bob_csrf = bob.csrf().await;
    let page = bob.get(&path).await.text().await.unwrap();
    assert!(page.contains("Support this request"));
    assert!(
        !page.contains("Answer the request"),
        "water-co does not answer city-energy's request"
    );
    let res = bob
        .post(&format!("{path}/support"), &[("csrf", &bob_csrf)])
        .await;
    assert_eq!(res.status(), 303);
    let page = bob.get(&path).await.text().await.unwrap();
    assert!(
        page.contains("1 supporter ") && page.contains("Withdraw my support"),
        "{page}"
    );
    let res = bob
        .post(
            &format!("{path}/answer"),
            &[("csrf", &bob_csrf), ("status", "declined"), ("note", "no")],
        )
        .await;
    assert_eq!(res.status(), 403, "only the owner answers");

    let mut alice = Browser::new(&app);
    alice.sign_in("alice").await;
    let alice_csrf = alice.csrf().await;
    let list = alice.get("/data-requests").await.text().await.unwrap();
    assert!(list.contains("Waiting for your answer"));
    let res = alice
        .post(
            &format!("{path}/answer"),
            &[
                ("csrf", &alice_csrf),
                ("status", "planned"),
                ("target_date", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("id=\"answer-target-date-error\"")
    );
    let res = alice
        .post(
            &format!("{path}/answer"),
            &[
                ("csrf", &alice_csrf),
                ("status", "planned"),
                ("target_date", "2026-06-30"),
                ("dataset_id", ""),
                ("note", "From the accident register, by junction."),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let roadmap = app.page("/roadmap").await;
    assert!(roadmap.contains("2026-06-30") && roadmap.contains("Cycling accident hot spots"));
    let page = app.page(&path).await;
    assert!(page.contains("Planned") && page.contains("by 2026-06-30"));
    assert!(
        !page.contains("Rosa") && !page.contains("resident (test)"),
        "who asked is not shown"
    );
}

#[tokio::test]
async fn a_trustee_opens_a_consultation_through_the_form_a_resident_answers_and_the_results_show() {
    let app = TestApp::start().await;
    let mut trustee = Browser::new(&app);
    trustee.sign_in("trustee").await;
    let csrf = trustee.csrf().await;
    let page = trustee.get("/consultations").await.text().await.unwrap();
    assert!(page.contains("Open a consultation"));
    let form = [
        ("csrf", csrf.as_str()),
        ("title", "Opening the bus-punctuality data"),
        (
            "description",
            "Should the operator's punctuality records be open data?",
        ),
        ("subject", "classification"),
        ("audience", "residents"),
        ("dataset_id", ""),
        ("opens_on", "2026-03-01"),
        ("closes_on", "2026-03-10"),
        ("q1_text", "Should they be open?"),
        ("q1_kind", "single_choice"),
        ("q1_choices", "Yes\nNo"),
        ("q2_text", "Anything else?"),
        ("q2_kind", "free_text"),
        ("q2_choices", ""),
    ];
    let res = trustee.post("/consultations", &form).await;
    assert_eq!(res.status(), 422, "a classification names its dataset");
    let page = res.text().await.unwrap();
    assert!(
        page.contains("The consultation was not opened")
            && page.contains("href=\"#cn-dataset-id\"")
    );
    assert!(
        page.contains("Should the operator&#39;s punctuality records be open data?")
            || page.contains("Should the operator&#x27;s")
    );
    let mut fixed = form;
    fixed[3] = ("subject", "kind_of_use");
    let res = trustee.post("/consultations", &fixed).await;
    assert_eq!(res.status(), 303);
    let path = res.headers()["location"]
        .to_str()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();

    // A resident answers (an answer that does not fit is named), then changes it.
    let mut resident = Browser::new(&app);
    resident.sign_in("resident").await;
    let rcsrf = resident.csrf().await;
    let page = resident.get(&path).await.text().await.unwrap();
    assert!(page.contains("Send my answer"));
    let res = resident
        .post(&path, &[("csrf", &rcsrf), ("answer_q1", "Perhaps")])
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("href=\"#answer-q1\""));
    let res = resident
        .post(
            &path,
            &[
                ("csrf", &rcsrf),
                ("answer_q1", "Yes"),
                ("answer_q2", "Publish it monthly."),
                ("publish_text", "yes"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = resident.get(&path).await.text().await.unwrap();
    assert!(page.contains("Change my answer") && page.contains("Publish it monthly."));
    // Someone who is not a resident is told why they cannot answer; their post is refused.
    let mut alice = Browser::new(&app);
    alice.sign_in("alice").await;
    let acsrf = alice.csrf().await;
    let page = alice.get(&path).await.text().await.unwrap();
    assert!(page.contains("You cannot answer") && !page.contains("Send my answer"));
    let res = alice
        .post(&path, &[("csrf", &acsrf), ("answer_q1", "No")])
        .await;
    assert_eq!(res.status(), 403);

    // The trustee closes it: the results show, the single answer suppressed.
    let res = trustee
        .post(&format!("{path}/close"), &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    let page = app.page(&path).await;
    assert!(
        page.contains("Results") && page.contains("<td>Yes</td><td class=\"num\">not shown</td>"),
        "{page}"
    );
    assert!(page.contains("Publish it monthly."));

    // The charter page: the ethics code, the rules, the board, the versions.
    let page = app.page("/charter").await;
    assert!(page.contains("Our digital ethics code") && page.contains("Purpose first."));
    assert!(page.contains("The board of trustees") && page.contains("not recorded"));
    assert!(page.contains("Version 1"));
    assert!(
        !page.contains("Record a trustee"),
        "only administrators record terms"
    );
    let mut admin = Browser::new(&app);
    admin.sign_in("admin").await;
    let admin_csrf = admin.csrf().await;
    let res = admin
        .post(
            "/charter/terms",
            &[
                ("csrf", &admin_csrf),
                ("username", "trustee"),
                ("starts_on", "2025-01-01"),
                ("ends_on", "2025-12-31"),
                ("appointed_by", "Elected, 2025"),
                ("declarations", "None."),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = app.page("/charter").await;
    assert!(
        page.contains("2025-01-01 to 2025-12-31") && page.contains("out of term: does not vote")
    );
    let res = trustee
        .post(
            "/charter/terms",
            &[
                ("csrf", &csrf),
                ("username", "trustee"),
                ("starts_on", "2025-01-01"),
                ("ends_on", "2030-12-31"),
                ("appointed_by", "Myself"),
                ("declarations", "None."),
            ],
        )
        .await;
    assert_eq!(
        res.status(),
        403,
        "a trustee does not extend their own term"
    );
}

#[tokio::test]
async fn the_recipient_reports_an_outcome_through_the_form_and_the_register_shows_it() {
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
    let r: serde_json::Value = app
        .post_json(
            "/api/v1/access-requests",
            Some(&analyst),
            &crate::governance::request(&[&energy], "research", "identified"),
        )
        .await
        .json()
        .await
        .unwrap();
    let decided = crate::governance::all_vote(&app, r["id"].as_str().unwrap(), "approve").await;
    let agreement = decided["agreement_id"].as_str().unwrap().to_string();
    let form_path = format!("/agreements/{agreement}/outcome");
    let mut browser = Browser::new(&app);
    browser.sign_in("analyst").await;
    assert_eq!(
        browser.get(&form_path).await.status(),
        409,
        "nothing owed while it runs"
    );
    app.clock.advance(time::Duration::days(40));
    let mut browser = Browser::new(&app);
    browser.sign_in("analyst").await;
    let page = browser
        .get(&format!("/agreements/{agreement}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("The final report") && page.contains("Report the outcome"),
        "{page}"
    );
    let csrf = browser.csrf().await;
    let res = browser
        .post(
            &form_path,
            &[
                ("csrf", &csrf),
                ("period", "final"),
                ("effectiveness", "4"),
                ("what_was_done", "Ranked the buildings."),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(page.contains("href=\"#outcome-impact\"") && page.contains("Ranked the buildings."));
    let res = browser
        .post(
            &form_path,
            &[
                ("csrf", &csrf),
                ("period", "final"),
                ("effectiveness", "4"),
                ("impact", "3"),
                ("effort", "2"),
                ("risk", "1"),
                ("what_was_done", "Ranked the buildings."),
                ("beneficiaries", "Tenants of the worst buildings."),
                ("evidence_url", ""),
                ("evidence_dataset_id", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let register = app.page("/register").await;
    assert!(
        register.contains("Outcomes by purpose table")
            && register.contains("Ranked the buildings.")
    );
    let analytics = app.page("/log/analytics").await;
    assert!(analytics.contains("Outcomes by year table"));
    // Someone else's agreement: no form.
    let mut bob = Browser::new(&app);
    bob.sign_in("bob").await;
    assert_eq!(bob.get(&form_path).await.status(), 403);
}

#[tokio::test]
async fn a_projects_page_shows_its_checklist_and_only_trustees_sign_off_through_it() {
    let app = crate::governance::start().await;
    let analyst = app.token("analyst").await;
    let p: serde_json::Value = app
        .post_json(
            "/api/v1/projects",
            Some(&analyst),
            &json!({"title": "Retrofit priorities", "summary": "Ranking buildings.", "lead_organization_id": "uni"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/projects/{}", p["id"].as_str().unwrap());
    let list = app.page("/projects").await;
    assert!(list.contains("Retrofit priorities"));
    let page = app.page(&path).await;
    assert!(
        page.contains("a senior sponsor in the team")
            && page.contains("the data-maturity self-assessment")
    );
    assert!(
        !page.contains("Sign off Discover"),
        "anonymous visitors see no actions"
    );
    let mut analyst_browser = Browser::new(&app);
    analyst_browser.sign_in("analyst").await;
    let csrf = analyst_browser.csrf().await;
    let page = analyst_browser.get(&path).await.text().await.unwrap();
    assert!(
        !page.contains("Sign off Discover"),
        "the project does not sign itself off"
    );
    let res = analyst_browser
        .post(
            &format!("{path}/sign-off"),
            &[("csrf", &csrf), ("stage", "discover"), ("note", "Done.")],
        )
        .await;
    assert_eq!(res.status(), 403);
    let mut trustee = Browser::new(&app);
    trustee.sign_in("trustee").await;
    let tcsrf = trustee.csrf().await;
    let page = trustee.get(&path).await.text().await.unwrap();
    assert!(page.contains("Sign off Discover"));
    let res = trustee
        .post(
            &format!("{path}/sign-off"),
            &[
                ("csrf", &tcsrf),
                ("stage", "discover"),
                ("note", "Too early."),
            ],
        )
        .await;
    assert_eq!(res.status(), 422, "an incomplete stage is not signed off");
    assert!(res.text().await.unwrap().contains("That was refused"));

    // The project's organisation fills in Discover through the form.
    let page = analyst_browser.get(&path).await.text().await.unwrap();
    assert!(page.contains("Save Discover"));
    let revision = {
        let marker = "name=\"revision\" value=\"";
        let at = page.find(marker).unwrap() + marker.len();
        page[at..].split('"').next().unwrap().to_string()
    };
    let mut discover = vec![
        ("csrf", csrf.as_str()),
        ("revision", revision.as_str()),
        ("section", "discover"),
        ("user_needs", "Tenants pay for the worst buildings' waste."),
        ("organisational_aims", "The climate plan."),
        ("exchange_pattern", "mutual_exchange"),
        ("team", "Arun Analyst | chief wizard | uni"),
        ("ecosystem", "City Energy Department | data provider"),
        ("dataset_ids", ""),
        ("data_request_ids", ""),
        ("canvas", "problem: Retrofit money goes to the loudest."),
        ("maturity_technology", "medium"),
        ("maturity_mindset", "high"),
        ("maturity_resources", "low"),
        ("maturity_skills", "medium"),
        ("maturity_operations", "medium"),
        ("maturity_legal", "high"),
    ];
    let res = analyst_browser
        .post(&format!("{path}/edit"), &discover)
        .await;
    assert_eq!(res.status(), 422, "an unknown role is named");
    assert!(res.text().await.unwrap().contains("team[0].role"));
    discover[6] = ("team", "Arun Analyst | senior sponsor | uni");
    let alice = app.token("alice").await;
    let energy = app
        .create_dataset(
            &alice,
            &dataset("Building energy", "city-energy", "shared_specific"),
        )
        .await;
    discover[8] = ("dataset_ids", energy.as_str());
    let res = analyst_browser
        .post(&format!("{path}/edit"), &discover)
        .await;
    assert_eq!(res.status(), 303);
    let page = trustee.get(&path).await.text().await.unwrap();
    assert!(page.contains("Complete: it can be signed off"), "{page}");
    assert!(
        !page.contains("Save Discover"),
        "trustees do not fill in others' projects"
    );
    let res = trustee
        .post(
            &format!("{path}/sign-off"),
            &[
                ("csrf", &tcsrf),
                ("stage", "discover"),
                ("note", "A clear need."),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = app.page(&path).await;
    assert!(
        page.contains(">Prepare</span>") && page.contains("Discover signed off by trustees"),
        "{page}"
    );

    // A document through the page's multipart form: no token, refused; with it, kept and logged.
    let multipart = |csrf: &str, bytes: &[u8]| {
        let mut body = Vec::new();
        for (name, value) in [("csrf", csrf), ("kind", "mou"), ("name", "")] {
            body.extend_from_slice(format!("--B0undary\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
        }
        body.extend_from_slice(b"--B0undary\r\nContent-Disposition: form-data; name=\"document\"; filename=\"mou.txt\"\r\nContent-Type: text/plain\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n--B0undary--\r\n");
        body
    };
    let send = |cookie: String, body: Vec<u8>| {
        app.client
            .post(app.url(&format!("{path}/documents")))
            .header("cookie", cookie)
            .header("content-type", "multipart/form-data; boundary=B0undary")
            .body(body)
            .send()
    };
    let res = send(
        analyst_browser.cookie_header(),
        multipart("", b"Memorandum."),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "no CSRF token, no document");
    let res = send(
        analyst_browser.cookie_header(),
        multipart(&csrf, b"Memorandum of understanding."),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 303);
    let page = analyst_browser.get(&path).await.text().await.unwrap();
    assert!(page.contains(">mou.txt</a>"), "{page}");
    assert_eq!(app.entries_of_type("project.document_added").await.len(), 1);
    let res = send(trustee.cookie_header(), multipart(&tcsrf, b"Not theirs."))
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "trustees do not add others' documents");
}

#[tokio::test]
async fn an_administrator_registers_harvests_and_removes_a_catalogue_through_the_portal() {
    let b = TestApp::start().await;
    let alice = b.token("alice").await;
    b.create_dataset(
        &alice,
        &crate::harness::dataset("Tram stops", "city-energy", "open"),
    )
    .await;
    let a = TestApp::start().await;
    let feed = b.url("/catalog.ttl");
    // Not for anyone else: the form's endpoints refuse a non-administrator.
    let mut member = Browser::new(&a);
    member.sign_in("alice").await;
    let csrf = member.csrf().await;
    let res = member
        .post(
            "/admin/remote-catalogues",
            &[
                ("csrf", &csrf),
                ("id", "b"),
                ("name", "City B"),
                ("kind", "dcat"),
                ("url", &feed),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);

    let mut admin = Browser::new(&a);
    admin.sign_in("admin").await;
    let csrf = admin.csrf().await;
    // A bad interval is named, and what was sent registers nothing.
    let res = admin
        .post(
            "/admin/remote-catalogues",
            &[
                ("csrf", &csrf),
                ("id", "b"),
                ("name", "City B"),
                ("kind", "dcat"),
                ("url", &feed),
                ("interval_hours", "soon"),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("is not a whole number of hours")
    );
    let res = admin
        .post(
            "/admin/remote-catalogues",
            &[
                ("csrf", &csrf),
                ("id", "b"),
                ("name", "City B"),
                ("kind", "dcat"),
                ("url", &feed),
                ("interval_hours", "6"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let page = admin
        .get("/admin?done=catalogue")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Succeeded"), "{page}");
    assert!(page.contains("1 records — 1 added"), "{page}");
    let res = admin
        .post("/admin/remote-catalogues/b/harvest", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    let page = admin.get("/admin?done=harvest").await.text().await.unwrap();
    assert!(page.contains("1 unchanged"), "{page}");
    // The entry is in the catalogue's search, under its source.
    let search = admin.get("/datasets?q=tram").await.text().await.unwrap();
    assert!(search.contains("1 more in other catalogues"), "{search}");
    let res = admin
        .post("/admin/remote-catalogues/b/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!(res.status(), 303);
    let search = admin.get("/datasets?q=tram").await.text().await.unwrap();
    assert!(!search.contains("other catalogues"));
}
