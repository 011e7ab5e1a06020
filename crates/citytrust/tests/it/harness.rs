//! The test harness: a real server on a free port over a fresh database
//! (SQLite, or PostgreSQL + S3 when the environment names them), a manual
//! clock, and one account per role.

use std::sync::Arc;

use citytrust_model::{NewOrganization, NewUser, OrganizationKind, Role};
use citytrust_service::{ManualClock, Service, Settings};
use citytrust_store::Store;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery";

/// A running server over a fresh database, with two organisations and one
/// account per role: `admin`, `trustee`, `resident`, `alice` (member of
/// `city-energy`), `bob` (member of `water-co`).
pub struct TestApp {
    pub base: String,
    /// The database the app runs on (for tests that tamper behind its back).
    pub db_url: String,
    pub client: Client,
    pub service: Arc<Service>,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    /// The HTTP server's task (aborted by `stop_serving`).
    server: tokio::task::JoinHandle<()>,
    /// The PostgreSQL database this app made (admin URL, name), dropped
    /// with it: CI runs some 350 apps, and their databases, at 8 MB each,
    /// once filled the disk. Nodes joined to it share it and drop nothing.
    owned_database: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        let Some((admin_url, name)) = self.owned_database.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own with its own runtime does the work.
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test database: {e}");
        }
    }
}

/// The settings of a test app in `dir`: content under it, or, when
/// `CITYTRUST_TEST_OBJECT_STORE` names a bucket (`s3://bucket`), versions in
/// the bucket under a prefix of the test's own.
fn test_settings(dir: &std::path::Path) -> Settings {
    let object_store = std::env::var("CITYTRUST_TEST_OBJECT_STORE")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|base| {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                dir.file_name().unwrap().to_string_lossy()
            )
        });
    Settings {
        ledger_seed: Some(test_seed()),
        content_dir: Some(dir.join("content")),
        ledger_witness: Some(dir.join("ledger-witness")),
        ledger_tiles: Some(dir.join("ledger-tiles")),
        pseudonym_keys: Some(dir.join("pseudonym-keys")),
        object_store,
        // The tests' notification listeners are on loopback.
        private_notifications: true,
        ..Settings::default()
    }
}

/// A fresh store in `dir` (SQLite), or in a new PostgreSQL database, whose
/// admin URL and name come back to be dropped with the app.
async fn fresh_store(dir: &std::path::Path) -> (Store, String, Option<(String, String)>) {
    match std::env::var("CITYTRUST_TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            use sqlx::Connection;
            let name = format!(
                "ct_test_{}",
                dir.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_lowercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            );
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to the PostgreSQL test server");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let url = match admin_url.rsplit_once('/') {
                Some((server, _db)) => format!("{server}/{name}"),
                None => panic!("CITYTRUST_TEST_DATABASE_URL must end in /<database>"),
            };
            (
                Store::connect(&url).await.expect("open PostgreSQL store"),
                url,
                Some((admin_url, name)),
            )
        }
        _ => (
            Store::open_data_dir(dir).await.expect("open SQLite store"),
            format!("sqlite://{}", dir.join("citytrust.sqlite").display()),
            None,
        ),
    }
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::start_with(|_| {}).await
    }

    /// Start with the test settings changed by `change` first.
    pub async fn start_with(change: impl FnOnce(&mut Settings)) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestApp::start_on(listener, change).await
    }

    /// Start serving on `listener` (bound by the caller, so that other
    /// apps' settings can name this one's URL before it starts).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        change: impl FnOnce(&mut Settings),
    ) -> TestApp {
        // CITYTRUST_LOG=warn shows what the server logged (internal errors).
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("CITYTRUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let (store, db_url, owned_database) = fresh_store(dir.path()).await;
        let clock = Arc::new(ManualClock::new(
            time::macros::datetime!(2026-03-01 09:00 UTC),
        ));
        let mut settings = test_settings(dir.path());
        change(&mut settings);
        let service = Arc::new(
            Service::new(store, clock.clone(), settings.clone())
                .await
                .unwrap(),
        );
        seed(&service).await;
        let mut app = TestApp::serve(listener, service, clock, settings, db_url, dir);
        app.owned_database = owned_database;
        app
    }

    /// Another node of the same trust, as docs/OPERATING.md sets several up:
    /// its own server and data directory (spool, tiles, witness file), the
    /// same database, object store, keys and clock. `change` alters its
    /// settings first.
    pub async fn join_with(&self, change: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            content_dir: Some(dir.path().join("content")),
            ledger_witness: Some(dir.path().join("ledger-witness")),
            ledger_tiles: Some(dir.path().join("ledger-tiles")),
            ..self.settings.clone()
        };
        change(&mut settings);
        let store = Store::connect(&self.db_url).await.unwrap();
        let service = Arc::new(
            Service::new(store, self.clock.clone(), settings.clone())
                .await
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestApp::serve(
            listener,
            service,
            self.clock.clone(),
            settings,
            self.db_url.clone(),
            dir,
        )
    }

    fn serve(
        listener: tokio::net::TcpListener,
        service: Arc<Service>,
        clock: Arc<ManualClock>,
        settings: Settings,
        db_url: String,
        dir: tempfile::TempDir,
    ) -> TestApp {
        let addr = listener.local_addr().unwrap();
        // One identity provider, on a loopback port nothing listens on: the
        // portal offers it, and every check made before reaching it is tested
        // here (the whole flow runs against a real provider in the browser tests).
        let oidc = citytrust_server::oidc::Oidc::from_json(
            r#"[{"id": "city-id", "name": "City ID", "issuer": "http://127.0.0.1:9/", "client_id": "citytrust", "client_secret": "test-secret"}]"#,
            &format!("http://{addr}"),
            None,
        )
        .unwrap();
        let app = citytrust_server::app(
            citytrust_server::AppState::new(service.clone(), true)
                .with_oidc(oidc)
                .with_public_url(format!("http://{addr}")),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            base: format!("http://{addr}"),
            db_url,
            client,
            service,
            clock,
            settings,
            server,
            owned_database: None,
            _dir: dir,
        }
    }

    /// Stop answering HTTP (the service itself stays, as for a node whose
    /// network is cut).
    pub fn stop_serving(&self) {
        self.server.abort();
    }

    /// The log entries of one type, oldest first, as stored (canonical JSON).
    pub async fn entries_of_type(&self, kind: &str) -> Vec<String> {
        self.service
            .store()
            .ledger_entries(0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.contains(&format!("\"type\":\"{kind}\"")))
            .collect()
    }

    /// Run SQL directly against the app's database.
    pub async fn sql(&self, statement: &str) -> u64 {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&self.db_url).await.unwrap();
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected()
    }

    /// A second service over the same database and files, as after a restart.
    pub async fn restart_service(&self) -> Result<Service, citytrust_service::ServiceError> {
        let store = Store::connect(&self.db_url).await.unwrap();
        Service::new(store, self.clock.clone(), self.settings.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn token(&self, username: &str) -> String {
        let res = self
            .client
            .post(self.url("/api/v1/auth/token"))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "sign-in as {username}");
        res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.client.put(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn patch_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut req = self
            .client
            .patch(self.url(path))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// Create a dataset through the API; its id.
    pub async fn create_dataset(&self, token: &str, body: &Value) -> String {
        let res = self.post_json("/api/v1/datasets", Some(token), body).await;
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A portal page's HTML as an anonymous visitor sees it.
    pub async fn page(&self, path: &str) -> String {
        let res = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        res.text().await.unwrap()
    }

    /// How many catalogue entries the database holds (not the index: proves nothing half-written).
    pub async fn stored_datasets(&self) -> usize {
        self.service.store().list_datasets().await.unwrap().len()
    }
}

async fn seed(service: &Service) {
    service
        .insert_user(user("admin", vec![Role::Administrator], vec![]))
        .await
        .unwrap();
    let admin = citytrust_model::Actor::from_user(&service.get_user("admin").await.unwrap());
    for (id, name, kind) in [
        (
            "city-energy",
            "City Energy Department",
            OrganizationKind::CityDepartment,
        ),
        ("water-co", "Water Company", OrganizationKind::Utility),
    ] {
        service
            .create_organization(
                &admin,
                NewOrganization {
                    id: id.into(),
                    name: name.into(),
                    kind,
                    description: String::new(),
                    url: None,
                },
            )
            .await
            .unwrap();
    }
    service
        .insert_user(user("trustee", vec![Role::Trustee], vec![]))
        .await
        .unwrap();
    service
        .insert_user(user("resident", vec![Role::Resident], vec![]))
        .await
        .unwrap();
    service
        .insert_user(user("alice", vec![], vec!["city-energy"]))
        .await
        .unwrap();
    service
        .insert_user(user("bob", vec![], vec!["water-co"]))
        .await
        .unwrap();
}

pub fn user(name: &str, roles: Vec<Role>, orgs: Vec<&str>) -> NewUser {
    NewUser {
        username: name.into(),
        display_name: format!("{name} (test)"),
        email: None,
        password: PASSWORD.into(),
        roles,
        organization_ids: orgs.into_iter().map(String::from).collect(),
    }
}

/// A minimal valid dataset owned by `owner`.
pub fn dataset(title: &str, owner: &str, spectrum: &str) -> Value {
    json!({"title": title, "description": format!("About {title}."), "owner_organization_id": owner, "spectrum": spectrum})
}

/// Assert a problem+json answer with `status` and `code`, naming `field` if given; returns the body.
pub async fn assert_problem(res: Response, status: u16, code: &str, field: Option<&str>) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().ends_with(code));
    if let Some(field) = field {
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "expected field {field} in {body}");
    }
    body
}

pub fn test_seed() -> citytrust_service::ledger::LedgerSeed {
    citytrust_service::ledger::LedgerSeed([42u8; 32])
}
