//! Issue 6's benchmark, in one run on one SQLite database:
//!
//! 1. A personal dataset of 1,000,000 readings of 100,000 households (ten
//!    each), uploaded through the service like any version. Research use rests
//!    on consent: 90,000 households consent to it, 10,000 consented and then
//!    withdrew. The same aggregate runs through `Service::run_query` (the one
//!    read path: decision, subject filter, spool, digest, log entry):
//!    - unfiltered: by the owner, whose own reads include every household;
//!    - consent-filtered: by the analyst under a consent-based agreement, with
//!      the per-node filter cache warm (the subjects revision unchanged), and
//!      cold (the revision moved on before every read, as after any consent
//!      anywhere, so the 90,000 keys are fetched from SQL again).
//!
//!    Runs are interleaved and the medians compared.
//! 2. "Who used my data" (`Service::my_accesses`) once the log holds
//!    1,000,000 entries, 100,000 of them reads of the personal dataset.
//!
//! Setup shortcut, stated: the 100,000 residents' accounts, links and consents
//! are written with multi-row SQL inserts (through the service each would cost
//! an argon2 hash and a signed receipt; they are not what is measured). The
//! measured resident and everything measured go through the service.
//!
//!     cargo run --release --example residents_bench -- [--households N] [--runs R] [--log-entries M] [--keep DIR]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use citytrust_model::{Actor, NewOrganization, NewUser, OrganizationKind, Role};
use citytrust_query::export::OutputFormat;
use citytrust_service::content::{QueryRequest, UploadOptions};
use citytrust_service::{ManualClock, Service, Settings};
use citytrust_store::{NewLogEntry, Store};
use sqlx::Connection;

const DATASET: &str = "household-readings";
const PASSWORD: &str = "bench-password-123";
const SQL: &str = "SELECT hour, COUNT(*) AS readings, SUM(kwh) AS kwh, AVG(kwh) AS mean_kwh \
                   FROM household_readings GROUP BY hour ORDER BY hour";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn actor(service: &Service, name: &str) -> Actor {
    Actor::from_user(&service.get_user(name).await.unwrap())
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

fn key(h: usize) -> String {
    format!("H{h:06}")
}

async fn query(service: &Service, who: &Actor, purpose: &str) -> (Duration, u64) {
    let t = Instant::now();
    let served = service
        .run_query(
            who,
            QueryRequest {
                sql: SQL.into(),
                purpose: purpose.into(),
                format: OutputFormat::Json,
                max_rows: None,
                level: None,
            },
        )
        .await
        .unwrap();
    (t.elapsed(), served.rows)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let households: usize = arg("--households")
        .map(|s| s.parse().unwrap())
        .unwrap_or(100_000);
    let runs: usize = arg("--runs").map(|s| s.parse().unwrap()).unwrap_or(15);
    let per_household = 10;
    let tmp = tempfile::tempdir().unwrap();
    let kept = arg("--keep").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(tmp.path());
    std::fs::create_dir_all(dir).unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.join("citytrust.sqlite").display()
    );
    let store = Store::open_data_dir(dir).await.unwrap();
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-11-02 09:00 UTC),
    ));
    let settings = Settings {
        content_dir: Some(dir.join("content")),
        ..Settings::default()
    };
    let service = Arc::new(
        Service::new(store.clone(), clock.clone(), settings)
            .await
            .unwrap(),
    );
    println!(
        "database: {} (SQLite, WAL, synchronous=FULL)",
        dir.display()
    );

    // The trust: an owner, a university, three trustees, the measured resident.
    let admin = service
        .insert_user(user("admin", vec![Role::Administrator], &[]))
        .await
        .unwrap();
    let admin = Actor::from_user(&admin);
    for (id, name, kind) in [
        ("utility", "City Energy Utility", OrganizationKind::Business),
        ("uni", "City University", OrganizationKind::University),
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
        .insert_user(user("owner", vec![], &["utility"]))
        .await
        .unwrap();
    service
        .insert_user(user("analyst", vec![], &["uni"]))
        .await
        .unwrap();
    for t in ["t1", "t2", "t3"] {
        service
            .insert_user(user(t, vec![Role::Trustee], &[]))
            .await
            .unwrap();
    }
    service
        .insert_user(user("measured", vec![Role::Resident], &[]))
        .await
        .unwrap();
    let owner = actor(&service, "owner").await;
    let input: citytrust_model::DatasetInput = serde_json::from_value(serde_json::json!({
        "id": DATASET,
        "title": "Household readings (benchmark)",
        "description": "Synthetic hourly readings for the residents benchmark.",
        "owner_organization_id": "utility",
        "spectrum": "shared_specific",
        "personal_data": true,
        "column_classes": {"personal": ["household_id"]},
        "personal_terms": {
            "subject_key": "household_id",
            "purposes": [{"purpose": "research", "basis": "consent", "notice": "Researchers may study your readings."}],
            "notice": "Your household's readings."
        }
    }))
    .unwrap();
    service.create_dataset(&owner, input).await.unwrap();

    // 1,000,000 rows: ten readings per household, in hour order (as a meter export is).
    let t = Instant::now();
    let upload = service.begin_upload(&owner, DATASET).await.unwrap();
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(upload.body_path()).unwrap());
        writeln!(w, "household_id,hour,kwh").unwrap();
        let mut state = 7u64;
        for r in 0..per_household {
            for h in 0..households {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                writeln!(w, "{},{},{:.3}", key(h), r, (state % 4000) as f64 / 1000.0).unwrap();
            }
        }
        w.flush().unwrap();
    }
    let version = service
        .finish_upload(
            upload,
            UploadOptions {
                format: citytrust_query::InputFormat::Csv,
                on_error: citytrust_query::OnError::Reject,
                declared: Default::default(),
                gzip: false,
            },
            None,
        )
        .await
        .unwrap();
    println!(
        "uploaded {} rows of {households} households in {:.1} s",
        version.rows,
        t.elapsed().as_secs_f64()
    );

    // The measured resident: linked, consenting to research, through the service.
    service
        .link_verified("measured", DATASET, &key(0), "bench")
        .await
        .unwrap();
    let measured = actor(&service, "measured").await;
    service
        .give_consent(
            &measured,
            citytrust_model::residents::NewConsent {
                dataset_id: DATASET.into(),
                purpose: "research".into(),
                recipient_organization_id: None,
                kind: Default::default(),
                reward: None,
            },
        )
        .await
        .unwrap();

    // A second measured resident consents and withdraws, through the service.
    service
        .insert_user(user("withdrawer", vec![Role::Resident], &[]))
        .await
        .unwrap();
    service
        .link_verified("withdrawer", DATASET, &key(1), "bench")
        .await
        .unwrap();
    let withdrawer = actor(&service, "withdrawer").await;
    let given = service
        .give_consent(
            &withdrawer,
            citytrust_model::residents::NewConsent {
                dataset_id: DATASET.into(),
                purpose: "research".into(),
                recipient_organization_id: None,
                kind: Default::default(),
                reward: None,
            },
        )
        .await
        .unwrap();
    service
        .withdraw_consent(&withdrawer, &given.id)
        .await
        .unwrap();

    // Everyone else (setup shortcut, see the header): 90% consent, 10% consented then withdrew.
    let t = Instant::now();
    let mut conn = sqlx::AnyConnection::connect(&db_url).await.unwrap();
    let withdrawn = households / 10;
    for chunk in (2..households).collect::<Vec<_>>().chunks(300) {
        let mut users = String::from(
            "INSERT INTO users (username, display_name, is_resident, created_at) VALUES ",
        );
        let mut links = String::from(
            "INSERT INTO subject_links (username, dataset_id, subject_key, via, linked_at) VALUES ",
        );
        let mut consents = String::from(
            "INSERT INTO consents (id, username, kind, dataset_id, purpose, recipient, given_at, given_rev, withdrawn_at, withdrawn_rev, body) VALUES ",
        );
        for (i, h) in chunk.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let name = format!("r{h:06}");
            users.push_str(&format!(
                "{sep}('{name}', '{name}', 1, '2026-11-02T09:00:00Z')"
            ));
            links.push_str(&format!(
                "{sep}('{name}', '{DATASET}', '{}', 'bench', '2026-11-02T09:00:00Z')",
                key(*h)
            ));
            let (at, rev) = if *h <= withdrawn {
                ("'2026-11-02T09:30:00Z'", "3")
            } else {
                ("NULL", "NULL")
            };
            consents.push_str(&format!(
                "{sep}('bench-{h}', '{name}', 'consent', '{DATASET}', 'research', NULL, '2026-11-02T09:00:00Z', 2, {at}, {rev}, '{{}}')"
            ));
        }
        for sql in [users, links, consents] {
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
    }
    sqlx::query("UPDATE counters SET value = value + 3 WHERE name = 'subjects_revision'")
        .execute(&mut conn)
        .await
        .unwrap();
    println!(
        "{} residents linked: {} consenting, {withdrawn} withdrawn ({:.1} s)",
        households,
        households - withdrawn,
        t.elapsed().as_secs_f64()
    );

    // The analyst's consent-based research agreement, decided by the trustees.
    let analyst = actor(&service, "analyst").await;
    let request: citytrust_model::NewAccessRequest = serde_json::from_value(serde_json::json!({
        "dataset_ids": [DATASET],
        "purpose": "research",
        "level": "identified",
        "starts_on": "2026-11-02",
        "ends_on": "2027-11-01",
        "benefit": "A study of evening peaks.",
        "sharing": "systematic",
        "checklist": {
            "justified": "Peaks need per-household readings.",
            "benefits_and_risks": "Fairer tariffs; patterns could single people out.",
            "proportionate": "Only households that consented.",
            "without_personal_data": "Aggregates hide the peaks.",
            "power_to_share": "Each household's consent."
        }
    }))
    .unwrap();
    let r = service
        .create_access_request(&analyst, request)
        .await
        .unwrap();
    clock.advance(time::Duration::days(15));
    for t in ["t1", "t2", "t3"] {
        service
            .vote(
                &actor(&service, t).await,
                &r.id,
                citytrust_model::NewVote {
                    vote: citytrust_model::access::VoteChoice::Approve,
                    reason: "Consent-based.".into(),
                    conflict_of_interest: None,
                    consultation_id: None,
                },
            )
            .await
            .unwrap();
    }
    let analyst = actor(&service, "analyst").await;
    let owner = actor(&service, "owner").await;

    // Warm up both paths once (file cache, filter cache), and check what each sees.
    let (_, rows) = query(&service, &owner, "research").await;
    assert_eq!(rows, per_household as u64);
    let (_, rows) = query(&service, &analyst, "research").await;
    assert_eq!(rows, per_household as u64);
    let mut unfiltered = Vec::new();
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..runs {
        unfiltered.push(query(&service, &owner, "research").await.0);
        warm.push(query(&service, &analyst, "research").await.0);
        sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'subjects_revision'")
            .execute(&mut conn)
            .await
            .unwrap();
        cold.push(query(&service, &analyst, "research").await.0);
    }
    let (u, w, c) = (median(unfiltered), median(warm), median(cold));
    println!(
        "aggregate over {} rows, median of {runs} interleaved runs through Service::run_query:",
        version.rows
    );
    println!(
        "  unfiltered (the owner's own read):                 {:>8.1} ms",
        ms(u)
    );
    println!(
        "  consent-filtered, filter cache warm:               {:>8.1} ms = {:.2}x",
        ms(w),
        w.as_secs_f64() / u.as_secs_f64()
    );
    println!(
        "  consent-filtered, cache cold (keys from SQL):      {:>8.1} ms = {:.2}x",
        ms(c),
        c.as_secs_f64() / u.as_secs_f64()
    );
    // The filter's raw cost: the keys query alone.
    let mut keys = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let (k, _) = store
            .consenting_keys(DATASET, "research", &["uni".to_string()])
            .await
            .unwrap();
        keys.push(t.elapsed());
        assert_eq!(k.len(), households - withdrawn);
    }
    println!(
        "  of which fetching the {} consenting keys from SQL: {:>8.1} ms",
        households - withdrawn,
        ms(median(keys))
    );

    // 2. Who used my data, with 1,000,000 entries in the log.
    let size = store.ledger_size().await.unwrap();
    let rev = store.subjects_revision().await.unwrap();
    let mut inserted = 0usize;
    let target: i64 = arg("--log-entries")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1_000_000);
    let personal_reads = target / 10;
    let t = Instant::now();
    let mut next = size;
    let every = (target - size) / personal_reads;
    while next < target {
        let n = (target - next).min(2000);
        let bodies: Vec<(String, String)> = (next..next + n)
            .map(|i| {
                let at = format!("2026-11-17T{:02}:{:02}:{:02}Z", (i / 3600) % 24, (i / 60) % 60, i % 60);
                let dataset = if (i - size) % every == 0 { DATASET } else { "seattle-building-energy" };
                let body = citytrust_ledger::entry::encode(
                    "content.read",
                    &at,
                    serde_json::json!({"dataset": dataset, "version": 1, "rows": 10, "purpose": "research", "by": "organization:uni"}),
                )
                .unwrap();
                (String::from_utf8(body).unwrap(), at)
            })
            .collect();
        let entries: Vec<NewLogEntry<'_>> = bodies
            .iter()
            .map(|(body, at)| NewLogEntry {
                kind: "content.read",
                body,
                at,
            })
            .collect();
        let first = store.append_log_batch(&entries).await.unwrap();
        // Every `every`-th is a read of the personal dataset, kept for "who used my data".
        let mut sql = String::new();
        for (j, (_, at)) in bodies.iter().enumerate() {
            let idx = first + j as i64;
            if (idx - size) % every == 0 {
                if !sql.is_empty() {
                    sql.push_str(", ");
                }
                inserted += 1;
                sql.push_str(&format!(
                    "({idx}, '{DATASET}', 1, 'only_consenting', 'research', 'uni', {rev}, '{at}', \
                     '{{\"by\":\"organization:uni\",\"level\":\"identified\",\"agreement\":\"dsa-bench\",\"kind\":\"query\"}}')"
                ));
            }
        }
        if !sql.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO personal_reads (log_index, dataset_id, version, rule, purpose, recipients, rev, at, body) VALUES {sql}"
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        }
        next += n;
    }
    println!(
        "log grown to {} entries ({} reads of the personal dataset) in {:.1} s",
        store.ledger_size().await.unwrap(),
        inserted,
        t.elapsed().as_secs_f64()
    );
    for (who, label) in [
        (
            "measured",
            "a consenting resident (every read included them)",
        ),
        (
            "withdrawer",
            "a resident who withdrew (no later read included them)",
        ),
    ] {
        let resident = actor(&service, who).await;
        let mut times = Vec::new();
        let mut listed = 0;
        for _ in 0..200 {
            let t = Instant::now();
            listed = service
                .my_accesses(&resident, None, 100)
                .await
                .unwrap()
                .len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "who used my data, {label}: {listed} reads listed; p50 {:.1} ms, p99 {:.1} ms",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
    }
}
