//! Issue 29's Dataspace Protocol benchmark: a governed read of 1,000 rows
//! through the DSP pull path against the same read made directly on the
//! provider, in one run.
//!
//! Two trusts on loopback, each its own service, SQLite database and HTTP
//! server (as two demo nodes): B holds a shared dataset of 1,000 rows.
//! - **direct**: B's own analyst, under an agreement of B's, downloads it
//!   from B (`GET /api/v1/datasets/{id}/data?format=csv`): the decision,
//!   the read's log entry, the CSV;
//! - **DSP pull**: A's analyst, under the agreement B's trustees made with
//!   A's organisation through DSP, reads it through A
//!   (`GET /api/v1/remote-requests/{pid}/data?format=csv`): A logs the read,
//!   signs a participant token, and pulls from B's data address, where B
//!   checks both tokens, decides, logs and serves — A relays the stream.
//!
//! Everything is set up through the same HTTP API a user has (accounts are
//! made through the service, as the demo loader makes them). The runs are
//! interleaved; medians and 95th percentiles are compared.
//!
//!     cargo run --release --features bench --example dsp_bench -- [--rows N] [--runs R]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use citytrust_model::{Actor, NewOrganization, NewUser, OrganizationKind, Role};
use citytrust_service::{ManualClock, Service, Settings};
use citytrust_store::Store;
use serde_json::{Value, json};

const PASSWORD: &str = "bench-password-123";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Node {
    url: String,
    service: Arc<Service>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(
        clock: Arc<ManualClock>,
        orgs: &[&str],
        users: &[(&str, Vec<Role>, &[&str])],
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_data_dir(dir.path()).await.unwrap();
        let settings = Settings {
            content_dir: Some(dir.path().join("content")),
            ledger_tiles: Some(dir.path().join("ledger-tiles")),
            ledger_witness: Some(dir.path().join("ledger-witness")),
            pseudonym_keys: Some(dir.path().join("pseudonym-keys")),
            ..Settings::default()
        };
        let service = Arc::new(Service::new(store, clock, settings).await.unwrap());
        service
            .insert_user(user("admin", vec![Role::Administrator], &[]))
            .await
            .unwrap();
        let admin = Actor::from_user(&service.get_user("admin").await.unwrap());
        for org in orgs {
            service
                .create_organization(
                    &admin,
                    NewOrganization {
                        id: org.to_string(),
                        name: org.to_string(),
                        kind: OrganizationKind::Other,
                        description: String::new(),
                        url: None,
                    },
                )
                .await
                .unwrap();
        }
        for (name, roles, member_of) in users {
            service
                .insert_user(user(name, roles.clone(), member_of))
                .await
                .unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = citytrust_server::app(
            citytrust_server::AppState::new(service.clone(), true).with_public_url(url.clone()),
        );
        // As `citytrust serve` does: TCP_NODELAY on every connection.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Node {
            url,
            service,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn token(&self, name: &str) -> String {
        let v: Value = self
            .http
            .post(format!("{}/api/v1/auth/token", self.url))
            .json(&json!({"username": name, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// Pin `other` as a participant (and harvest its catalogue).
    async fn pin(&self, other: &Node, id: &str) {
        let me: Value = self
            .http
            .get(format!("{}/dsp/participant", other.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let admin = self.token("admin").await;
        self.post(
            "/api/v1/remote-catalogues",
            &admin,
            &json!({"id": id, "name": id, "url": format!("{}/catalog.ttl", other.url), "kind": "dcat",
                    "participant": {"id": me["participantId"], "key": me["key"]}}),
        )
        .await;
    }

    /// Approve the newest request under review, as three trustees.
    async fn approve(&self, requester: &str) {
        let t = self.token("trustee1").await;
        let list: Value = self
            .http
            .get(format!("{}/api/v1/access-requests", self.url))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["requester"] == requester && r["status"] == "under_review")
            .map(|r| r["id"].as_str().unwrap().to_string())
            .expect("a request under review");
        for name in ["trustee1", "trustee2", "trustee3"] {
            let tok = self.token(name).await;
            self.post(
                &format!("/api/v1/access-requests/{id}/votes"),
                &tok,
                &json!({"vote": "approve", "reason": "Benchmark."}),
            )
            .await;
        }
    }

    async fn read(&self, path: &str, token: &str) -> (Duration, usize) {
        let t = Instant::now();
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let body = res.bytes().await.unwrap();
        (t.elapsed(), body.len())
    }
}

fn user(name: &str, roles: Vec<Role>, orgs: &[&str]) -> NewUser {
    NewUser {
        username: name.into(),
        display_name: name.into(),
        email: None,
        password: PASSWORD.into(),
        roles,
        organization_ids: orgs.iter().map(|s| s.to_string()).collect(),
    }
}

fn checklist() -> Value {
    json!({
        "justified": "Benchmark of a governed read.",
        "benefits_and_risks": "None: synthetic meter readings.",
        "proportionate": "One table, one season.",
        "without_personal_data": "The data is about buildings.",
        "power_to_share": "The benchmark's own data.",
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rows: usize = arg("--rows").map(|s| s.parse().unwrap()).unwrap_or(1000);
    let runs: usize = arg("--runs").map(|s| s.parse().unwrap()).unwrap_or(200);
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-03-01 09:00 UTC),
    ));
    let trustees = |n: &'static str| (n, vec![Role::Trustee], &[][..]);
    let b = Node::start(
        clock.clone(),
        &["city-energy", "uni"],
        &[
            ("owner", vec![], &["city-energy"][..]),
            ("analyst", vec![], &["uni"][..]),
            trustees("trustee1"),
            trustees("trustee2"),
            trustees("trustee3"),
        ],
    )
    .await;
    let a = Node::start(clock.clone(), &["lab"], &[("ana", vec![], &["lab"][..])]).await;

    // B's shared dataset: `rows` meter readings.
    let owner = b.token("owner").await;
    b.post(
        "/api/v1/datasets",
        &owner,
        &json!({"title": "Meter readings", "description": "Synthetic readings.",
                "owner_organization_id": "city-energy", "spectrum": "shared_public"}),
    )
    .await;
    let mut csv = String::from("meter,district,read_at,kwh\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "M{i:06},D{:02},2026-02-{:02}T{:02}:00:00Z,{}.{}\n",
            i % 10,
            1 + i % 28,
            i % 24,
            100 + i % 900,
            i % 10
        ));
    }
    let res = b
        .http
        .post(format!("{}/api/v1/datasets/meter-readings/versions", b.url))
        .bearer_auth(&owner)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    // B's own analyst: an agreement of B's.
    let analyst = b.token("analyst").await;
    b.post(
        "/api/v1/access-requests",
        &analyst,
        &json!({"dataset_ids": ["meter-readings"], "purpose": "research", "level": "identified",
                "starts_on": "2026-03-01", "ends_on": "2026-06-30", "benefit": "Benchmark.",
                "sharing": "systematic", "checklist": checklist()}),
    )
    .await;
    b.approve("analyst").await;

    // A's analyst, through DSP.
    b.pin(&a, "city-a").await;
    a.pin(&b, "city-b").await;
    let ana = a.token("ana").await;
    let found: Value = a
        .http
        .get(format!("{}/api/v1/federated-entries?q=meter", a.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = found["items"][0]["id"].as_str().unwrap().to_string();
    let asked = a
        .post(
            &format!("/api/v1/federated-entries/{entry}/negotiations"),
            &ana,
            &json!({"organization_id": "lab", "level": "identified", "purpose": "research",
                    "starts_on": "2026-03-01", "ends_on": "2026-06-30", "benefit": "Benchmark.",
                    "checklist": checklist()}),
        )
        .await;
    let pid = asked["consumer_pid"].as_str().unwrap().to_string();
    b.approve("dsp.city-a").await;
    for _ in 0..4 {
        b.service.advance_negotiations().await.unwrap();
        a.service.advance_negotiations().await.unwrap();
    }

    let direct = "/api/v1/datasets/meter-readings/data?format=csv&purpose=research".to_string();
    let pulled = format!("/api/v1/remote-requests/{pid}/data?format=csv");
    // Warm both paths (connections, caches), then interleave.
    let (_, direct_bytes) = b.read(&direct, &analyst).await;
    let (_, pulled_bytes) = a.read(&pulled, &ana).await;
    assert_eq!(direct_bytes, pulled_bytes, "the same rows both ways");
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        d.push(b.read(&direct, &analyst).await.0);
        p.push(a.read(&pulled, &ana).await.0);
    }
    d.sort();
    p.sort();
    let (d50, p50) = (percentile(&d, 0.5), percentile(&p, 0.5));
    let (d95, p95) = (percentile(&d, 0.95), percentile(&p, 0.95));
    println!("{rows} rows ({direct_bytes} bytes of CSV), {runs} runs each, interleaved:");
    println!(
        "  direct on the provider   p50 {:7.2} ms   p95 {:7.2} ms",
        ms(d50),
        ms(d95)
    );
    println!(
        "  DSP pull through A       p50 {:7.2} ms   p95 {:7.2} ms",
        ms(p50),
        ms(p95)
    );
    println!(
        "  ratio (pull / direct)    p50 {:7.2}×     p95 {:7.2}×   (target ≤ 1.5×)",
        p50.as_secs_f64() / d50.as_secs_f64(),
        p95.as_secs_f64() / d95.as_secs_f64()
    );
}
