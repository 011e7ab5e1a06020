//! Issue 4's decision benchmark, in one process and one run:
//!
//! * CityTrust: gather the facts of a read from in-memory indexes (the
//!   reader's organisations and groups, the agreements in force for the
//!   dataset and purpose) and ask the default charter (Cedar) — what
//!   `Service::authorize_read` does once the store has answered;
//! * the same rules in Rego (`charter.rego`), evaluated by regorus with the
//!   same world loaded as data, the policy finding the agreements itself.
//!
//! 10,000 datasets, 1,000 agreements, 10,000 users, 10,000 reads (seeded);
//! every decision of the two engines must agree, then each engine's latency
//! per decision is reported (p50, p99, max) and their ratio.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use citytrust_policy::{Charter, DatasetFacts, Principal, ReadFacts};

const DATASETS: usize = 10_000;
const AGREEMENTS: usize = 1_000;
const USERS: usize = 10_000;
const ORGS: usize = 500;
const GROUPS: usize = 50;
const READS: usize = 10_000;
const TODAY: i64 = 20_513; // 2026-03-01
const PURPOSES: [&str; 7] = [
    "service-delivery",
    "city-operations",
    "emergency",
    "citizen-engagement",
    "research",
    "innovation",
    "commercial",
];
const SPECTRUM: [&str; 5] = [
    "open",
    "shared_public",
    "shared_group",
    "shared_specific",
    "closed",
];

/// A small deterministic generator (no dependency, same world every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Dataset {
    id: String,
    spectrum: &'static str,
    owner: String,
    personal: bool,
    reassess: bool,
}

struct Agreement {
    recipient: String,
    datasets: Vec<usize>,
    purpose: &'static str,
    level: i64,
    start: i64,
    end: i64,
}

struct Read {
    user: usize,
    dataset: usize,
    purpose: &'static str,
    level: i64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let p50 = percentile(&times, 0.50);
    let p99 = percentile(&times, 0.99);
    println!(
        "{name:<28} p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>8.1} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        times[times.len() - 1].as_secs_f64() * 1e6
    );
    (p50, p99)
}

fn main() {
    let mut rng = Lcg(42);
    let org = |i: usize| format!("org-{i}");
    let org_groups: Vec<Vec<String>> = (0..ORGS)
        .map(|o| {
            let mut g = vec![format!("group-{}", o % GROUPS)];
            if o % 7 == 0 {
                g.push(format!("group-{}", (o / 7) % GROUPS));
            }
            g.dedup();
            g
        })
        .collect();
    let users: Vec<(String, Vec<usize>)> = (0..USERS)
        .map(|u| {
            let mut orgs = vec![u % ORGS];
            if u % 10 == 0 {
                orgs.push((u / 10) % ORGS);
            }
            orgs.dedup();
            (format!("user-{u}"), orgs)
        })
        .collect();
    let datasets: Vec<Dataset> = (0..DATASETS)
        .map(|d| Dataset {
            id: format!("dataset-{d}"),
            spectrum: SPECTRUM[d % SPECTRUM.len()],
            owner: org(d % ORGS),
            personal: d % 3 == 0,
            reassess: d % 97 == 0,
        })
        .collect();
    let agreements: Vec<Agreement> = (0..AGREEMENTS)
        .map(|k| Agreement {
            recipient: if k % 10 == 0 {
                format!("group:group-{}", rng.below(GROUPS))
            } else {
                format!("organization:{}", org(rng.below(ORGS)))
            },
            datasets: (0..1 + rng.below(3)).map(|_| rng.below(DATASETS)).collect(),
            purpose: PURPOSES[rng.below(PURPOSES.len())],
            level: rng.below(7) as i64,
            start: TODAY - rng.below(200) as i64,
            end: TODAY + rng.below(200) as i64 - 20,
        })
        .collect();
    // Reads: half aimed where an agreement exists (so grants are exercised), half at random.
    let by_recipient_org: HashMap<String, Vec<usize>> = {
        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
        for (u, (_, orgs)) in users.iter().enumerate() {
            for o in orgs {
                m.entry(format!("organization:{}", org(*o)))
                    .or_default()
                    .push(u);
            }
        }
        m
    };
    let reads: Vec<Read> = (0..READS)
        .map(|i| {
            if i % 2 == 0 {
                let a = &agreements[rng.below(AGREEMENTS)];
                let user = by_recipient_org
                    .get(&a.recipient)
                    .and_then(|us| us.get(rng.below(us.len().max(1))))
                    .copied()
                    .unwrap_or_else(|| rng.below(USERS));
                Read {
                    user,
                    dataset: a.datasets[0],
                    purpose: a.purpose,
                    level: 6,
                }
            } else {
                Read {
                    user: rng.below(USERS),
                    dataset: rng.below(DATASETS),
                    purpose: PURPOSES[rng.below(PURPOSES.len())],
                    level: rng.below(7) as i64,
                }
            }
        })
        .collect();

    // ---- CityTrust: indexes + the charter ------------------------------------------
    let index: HashMap<(usize, &str), Vec<usize>> = {
        let mut m: HashMap<(usize, &str), Vec<usize>> = HashMap::new();
        for (k, a) in agreements.iter().enumerate() {
            for d in &a.datasets {
                m.entry((*d, a.purpose)).or_default().push(k);
            }
        }
        m
    };
    let charter = Charter::default_charter();
    let secondary = |p: &str| matches!(p, "research" | "innovation" | "commercial");
    let decide_cedar = |r: &Read| -> bool {
        let (name, orgs) = &users[r.user];
        let org_names: Vec<String> = orgs.iter().map(|o| org(*o)).collect();
        let groups: Vec<Vec<&str>> = orgs
            .iter()
            .map(|o| org_groups[*o].iter().map(String::as_str).collect())
            .collect();
        let organizations: Vec<(&str, &[&str])> = org_names
            .iter()
            .zip(&groups)
            .map(|(o, g)| (o.as_str(), g.as_slice()))
            .collect();
        let mut recipients: Vec<String> = vec![format!("user:{name}")];
        for (o, gs) in organizations.iter() {
            recipients.push(format!("organization:{o}"));
            recipients.extend(gs.iter().map(|g| format!("group:{g}")));
        }
        let agreement_level = index
            .get(&(r.dataset, r.purpose))
            .into_iter()
            .flatten()
            .map(|k| &agreements[*k])
            .filter(|a| {
                a.start <= TODAY && TODAY <= a.end && recipients.iter().any(|x| *x == a.recipient)
            })
            .map(|a| a.level)
            .max();
        let d = &datasets[r.dataset];
        let roles: [&str; 0] = [];
        charter
            .decide_read(
                &Principal {
                    user: Some(name),
                    roles: &roles,
                    organizations: &organizations,
                },
                &DatasetFacts {
                    id: &d.id,
                    spectrum: d.spectrum,
                    owner: &d.owner,
                    personal_data: d.personal,
                    needs_reassessment: d.reassess,
                },
                &ReadFacts {
                    purpose: r.purpose,
                    purpose_kind: if secondary(r.purpose) {
                        "secondary"
                    } else {
                        "primary"
                    },
                    commercial: r.purpose == "commercial",
                    level: r.level,
                    agreement_level,
                },
            )
            .map(|d| d.allowed)
            .unwrap_or(false)
    };

    // ---- Rego: the same world as data ----------------------------------------------
    let mut data = serde_json::Map::new();
    data.insert(
        "datasets".into(),
        serde_json::Value::Object(
            datasets
                .iter()
                .map(|d| {
                    (
                        d.id.clone(),
                        serde_json::json!({"spectrum": d.spectrum, "owner": d.owner, "personal_data": d.personal, "needs_reassessment": d.reassess}),
                    )
                })
                .collect(),
        ),
    );
    data.insert(
        "users".into(),
        serde_json::Value::Object(
            users
                .iter()
                .map(|(name, orgs)| {
                    (
                        name.clone(),
                        serde_json::json!({"orgs": orgs.iter().map(|o| org(*o)).collect::<Vec<_>>()}),
                    )
                })
                .collect(),
        ),
    );
    data.insert(
        "org_groups".into(),
        serde_json::Value::Object(
            org_groups
                .iter()
                .enumerate()
                .map(|(o, g)| (org(o), serde_json::json!(g)))
                .collect(),
        ),
    );
    let mut by_key: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for a in &agreements {
        for d in &a.datasets {
            let key = format!("{}|{}", datasets[*d].id, a.purpose);
            let entry = by_key
                .entry(key)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = entry {
                list.push(serde_json::json!({"recipient": a.recipient, "level": a.level, "start": a.start, "end": a.end}));
            }
        }
    }
    data.insert("agreements".into(), serde_json::Value::Object(by_key));
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(
            "charter.rego".into(),
            include_str!("../charter.rego").into(),
        )
        .expect("the Rego charter parses");
    engine
        .add_data(
            regorus::Value::from_json_str(&serde_json::Value::Object(data).to_string())
                .expect("data"),
        )
        .expect("data loads");
    let mut decide_rego = |r: &Read| -> bool {
        let input = serde_json::json!({
            "user": users[r.user].0,
            "dataset": datasets[r.dataset].id,
            "purpose": r.purpose,
            "level": r.level,
            "today": TODAY,
            "signed_in": true,
        });
        engine.set_input(regorus::Value::from_json_str(&input.to_string()).expect("input"));
        engine
            .eval_rule("data.citytrust.allow".into())
            .map(|v| v == regorus::Value::from(true))
            .unwrap_or(false)
    };

    // Warm up, and check the two agree on every read.
    let mut allowed = 0;
    for r in &reads {
        let c = decide_cedar(r);
        let g = decide_rego(r);
        assert_eq!(
            c, g,
            "Cedar and Rego disagree on user {} dataset {} ({}) for {} at level {}",
            r.user, r.dataset, datasets[r.dataset].spectrum, r.purpose, r.level
        );
        allowed += usize::from(c);
    }
    println!(
        "{READS} reads over {DATASETS} datasets, {AGREEMENTS} agreements, {USERS} users: {allowed} allowed, {} refused; Cedar and Rego agree on every one",
        READS - allowed
    );

    let mut cedar_times = Vec::with_capacity(READS);
    for r in &reads {
        let t = Instant::now();
        std::hint::black_box(decide_cedar(r));
        cedar_times.push(t.elapsed());
    }
    let mut rego_times = Vec::with_capacity(READS);
    for r in &reads {
        let t = Instant::now();
        std::hint::black_box(decide_rego(r));
        rego_times.push(t.elapsed());
    }
    let (c50, c99) = report("CityTrust (facts + Cedar)", cedar_times);
    let (r50, r99) = report("Rego (regorus)", rego_times);
    println!(
        "ratio Rego / CityTrust: p50 {:.1}x, p99 {:.1}x (above 1: CityTrust is faster)",
        r50.as_secs_f64() / c50.as_secs_f64(),
        r99.as_secs_f64() / c99.as_secs_f64()
    );
    println!(
        "target p99 <= 200 µs: {}",
        if c99 <= Duration::from_micros(200) {
            "met"
        } else {
            "MISSED"
        }
    );
}
