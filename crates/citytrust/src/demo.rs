//! The demo city: real open data from Barcelona, Seattle, Jersey City, Cairns
//! and Montréal, catalogued under a demo City Data Office, with demo accounts.
//!
//! Loading is idempotent: anything already present is kept, so an existing
//! demo directory is reused and an interrupted load completes on the next run.

use anyhow::Context;
use citytrust_model::catalogue::DatasetInput;
use citytrust_model::{Actor, NewGroup, NewOrganization, NewUser, Role};
use citytrust_service::{Service, ServiceError};
use serde::Deserialize;

/// The catalogue, organisations and accounts of the demo (see demo/README.md).
const MANIFEST: &str = include_str!("../../../demo/manifest.json");

pub const ACCOUNTS: [(&str, &str); 7] = [
    ("admin", "administrator"),
    ("trustee1", "trustee"),
    ("trustee2", "trustee"),
    ("trustee3", "trustee"),
    (
        "owner",
        "member of the City Data Office, which owns the city's datasets",
    ),
    ("analyst", "member of City University (a research partner)"),
    ("resident", "a resident"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    organizations: Vec<NewOrganization>,
    groups: Vec<NewGroup>,
    users: Vec<DemoUser>,
    datasets: Vec<DemoDataset>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoUser {
    username: String,
    display_name: String,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    organization_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoDataset {
    /// The file under demo/data/ the entry describes.
    file: Option<String>,
    dataset: DatasetInput,
    /// How its content is loaded, when more than "upload `file` as is".
    #[serde(default)]
    content: DemoContent,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DemoContent {
    /// A different file under demo/data/ to load as the content.
    file: Option<String>,
    /// The file's format when its name does not say.
    format: Option<citytrust_query::InputFormat>,
    /// Declared column types.
    #[serde(default)]
    types: std::collections::BTreeMap<String, String>,
    quality_rules: Option<citytrust_query::quality::QualityRules>,
    /// Generated content (`smart-meter`), for data no city publishes.
    synthetic: Option<String>,
    #[allow(dead_code)]
    note: Option<String>,
}

pub struct Loaded {
    /// Whether anything was created by this run.
    pub fresh: bool,
    pub datasets: usize,
    /// The household `resident` is linked to in `household-electricity`.
    pub household: Option<String>,
    /// How fast the live stream is replayed (0: not at all; `--live-speed`).
    pub live_speed: f64,
}

/// A fresh demo city's history starts this many days ago.
pub const HISTORY_DAYS: i64 = 21;

/// The synthetic personal dataset, and the household `resident` lives in.
pub const PERSONAL_DATASET: &str = "household-electricity";
pub const RESIDENTS_HOUSEHOLD: &str = "H0007";

fn manifest() -> anyhow::Result<Manifest> {
    let mut de = serde_json::Deserializer::from_str(MANIFEST);
    serde_path_to_error(&mut de)
}

fn serde_path_to_error<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
) -> anyhow::Result<T> {
    T::deserialize(de).context("demo/manifest.json is invalid")
}

/// Load whatever of the demo is missing. Returns what is there afterwards.
pub async fn load(
    service: &Service,
    password: &str,
    clock: &citytrust_service::ShiftedClock,
) -> anyhow::Result<Loaded> {
    let m = manifest()?;
    let mut created = 0usize;
    let fresh_city = service.store().get_user("admin").await?.is_none();
    if !fresh_city {
        // A city loaded before lives in the present.
        clock.catch_up(0);
    }
    let admin_spec = m
        .users
        .iter()
        .find(|u| u.roles.contains(&Role::Administrator))
        .context("the demo needs an administrator")?;
    let admin = match service.store().get_user(&admin_spec.username).await? {
        Some(stored) => stored.user,
        None => {
            created += 1;
            service
                .insert_user(new_user(admin_spec, password))
                .await
                .map_err(|e| anyhow::anyhow!("demo administrator: {e}"))?
        }
    };
    let actor = Actor::from_user(&admin);
    for org in m.organizations {
        let id = org.id.clone();
        created += kept(
            service.create_organization(&actor, org).await.map(|_| ()),
            &format!("organisation {id}"),
        )?;
    }
    for user in m.users.iter().filter(|u| u.username != admin.username) {
        created += kept(
            service
                .insert_user(new_user(user, password))
                .await
                .map(|_| ()),
            &format!("account {}", user.username),
        )?;
    }
    for group in m.groups {
        let id = group.id.clone();
        created += kept(
            service.create_group(&actor, group).await.map(|_| ()),
            &format!("group {id}"),
        )?;
    }
    let mut contents = Vec::new();
    for d in m.datasets {
        let id = d.dataset.id.clone().unwrap_or_default();
        contents.push((id.clone(), d.file, d.content));
        if service.get_dataset(&id).await.is_ok() {
            continue;
        }
        service
            .create_dataset(&actor, d.dataset)
            .await
            .map_err(|e| anyhow::anyhow!("demo dataset {id}: {e}"))?;
        created += 1;
    }
    for (id, file, content) in contents {
        // A stream has no file: its content arrives live.
        let has_content = file.is_some() || content.file.is_some() || content.synthetic.is_some();
        if !has_content || service.get_version(&actor, &id, None).await.is_ok() {
            continue;
        }
        load_content(service, &actor, &id, file, content)
            .await
            .with_context(|| format!("demo dataset {id}: loading its content"))?;
        created += 1;
    }
    if fresh_city {
        // While the city still lives three weeks ago: a consultation that
        // has run its course by today, and two week-long agreements of the
        // analyst's that have ended.
        consultation(service, password).await?;
        ended_agreements(service).await?;
    }
    let household = residents(service, fresh_city, clock).await?;
    clock.catch_up(0);
    participation(service).await?;
    if fresh_city {
        charter_and_board(service).await?;
        outcome(service).await?;
        project(service).await?;
    }
    Ok(Loaded {
        fresh: created > 0,
        datasets: service.catalogue_size(),
        household,
        live_speed: 0.0,
    })
}

/// The residents' side of the demo: `resident` linked to a household of the
/// synthetic smart-meter data, consenting to research by City University;
/// `analyst` asking for it and the trustees deciding, after the public
/// comment period, on a consent-based agreement (purpose research, rows).
async fn demo_actor(service: &Service, name: &str) -> anyhow::Result<Actor> {
    service
        .get_user(name)
        .await
        .map(|u| Actor::from_user(&u))
        .map_err(|e| anyhow::anyhow!("demo account {name}: {e}"))
}

async fn residents(
    service: &Service,
    fresh_city: bool,
    clock: &citytrust_service::ShiftedClock,
) -> anyhow::Result<Option<String>> {
    let resident = demo_actor(service, "resident").await?;
    if service.my_links(&resident).await?.is_empty() {
        service
            .link_verified(
                "resident",
                PERSONAL_DATASET,
                RESIDENTS_HOUSEHOLD,
                "demo_loader",
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo link: {e}"))?;
        kept(
            service
                .give_consent(
                    &resident,
                    citytrust_model::residents::NewConsent {
                        dataset_id: PERSONAL_DATASET.into(),
                        purpose: "research".into(),
                        recipient_organization_id: Some("city-university".into()),
                        kind: Default::default(),
                        reward: None,
                    },
                )
                .await
                .map(|_| ()),
            "consent",
        )?;
    }
    if fresh_city {
        let analyst = demo_actor(service, "analyst").await?;
        let today = citytrust_model::access::format_day(service.now().unix_timestamp() / 86_400);
        let until =
            citytrust_model::access::format_day(service.now().unix_timestamp() / 86_400 + 365);
        let request: citytrust_model::NewAccessRequest = serde_json::from_value(
            serde_json::json!({
                "dataset_ids": [PERSONAL_DATASET],
                "purpose": "research",
                "level": "identified",
                "starts_on": today,
                "ends_on": until,
                "benefit": "A study of how households' evening peaks respond to time-of-use tariffs, published openly, to help the city design fairer tariffs.",
                "sharing": "systematic",
                "checklist": {
                    "justified": "Peaks can only be studied in half-hourly readings per household.",
                    "benefits_and_risks": "Fairer tariffs; households could be singled out by their patterns, so the data stays in the university's secure environment.",
                    "proportionate": "Two weeks of readings, only of households that consented.",
                    "without_personal_data": "Aggregates hide the very peaks the study is about.",
                    "power_to_share": "Each household's consent, recorded in the trust."
                }
            }),
        )?;
        let r = service
            .create_access_request(&analyst, request)
            .await
            .map_err(|e| anyhow::anyhow!("demo access request: {e}"))?;
        // The public comment period has passed: the board decides today.
        clock.catch_up(0);
        for trustee in ["trustee1", "trustee2", "trustee3"] {
            service
                .vote(
                    &demo_actor(service, trustee).await?,
                    &r.id,
                    citytrust_model::NewVote {
                        vote: citytrust_model::access::VoteChoice::Approve,
                        reason: "Public benefit; consent-based, so only households that agreed are read.".into(),
                        conflict_of_interest: None,
                        consultation_id: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("demo vote: {e}"))?;
        }
        // One read under the agreement (only consenting households: the
        // resident's) and one by the owner for its own planning, so the
        // resident's "who used my data" has something to show.
        let owner = demo_actor(service, "owner").await?;
        for (reader, purpose) in [(&analyst, "research"), (&owner, "city-operations")] {
            service
                .read_content(
                    reader,
                    PERSONAL_DATASET,
                    citytrust_service::content::ReadRequest {
                        version: citytrust_query::VersionChoice::Latest,
                        format: citytrust_query::export::OutputFormat::Csv,
                        slice: Default::default(),
                        purpose: Some(purpose.into()),
                        level: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("demo read for {purpose}: {e}"))?;
        }
    }
    Ok(Some(RESIDENTS_HOUSEHOLD.to_string()))
}

/// Participation (issue 27): the resident's demand-led request for
/// cycling-accident hot spots, supported by two others and planned by the
/// City Data Office on the roadmap. Loaded once (when no request exists).
async fn participation(service: &Service) -> anyhow::Result<()> {
    use citytrust_model::participation::{DataRequestAnswer, DataRequestStatus, NewDataRequest};
    let existing = service
        .list_data_requests(&Actor::Anonymous, &Default::default())
        .await?;
    if existing.total > 0 {
        return Ok(());
    }
    let resident = demo_actor(service, "resident").await?;
    let request = service
        .ask_for_data(
            &resident,
            NewDataRequest {
                title: "Cycling accident hot spots".into(),
                description: "Accidents involving bicycles, located to the street segment or junction, for the last five years, updated monthly.".into(),
                reason: "The 2017 accident records show every accident, but nobody can see where cyclists are hurt again and again.".into(),
                use_case: "A public map of the twenty worst junctions for cyclists, for the neighbourhood councils' road-safety walks.".into(),
                benefit: "Junctions fixed where children and commuters are most at risk.".into(),
                dataset_id: None,
                organization_id: Some("city-data-office".into()),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo data request: {e}"))?;
    for supporter in ["analyst", "trustee1"] {
        service
            .support_data_request(&demo_actor(service, supporter).await?, &request.id)
            .await
            .map_err(|e| anyhow::anyhow!("demo support: {e}"))?;
    }
    let by = citytrust_model::access::format_day(service.now().unix_timestamp() / 86_400 + 90);
    service
        .answer_data_request(
            &demo_actor(service, "owner").await?,
            &request.id,
            DataRequestAnswer {
                status: DataRequestStatus::Planned,
                target_date: Some(by),
                dataset_id: None,
                note: Some("We will derive it from the accident register, at junction level so that no one person can be recognised.".into()),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo answer: {e}"))?;
    Ok(())
}

/// How many neighbours of the demo resident answer the demo consultation
/// (accounts `neighbour01` …, the demo password): enough for some counts to
/// reach the privacy threshold and others not.
pub const NEIGHBOURS: usize = 12;

/// Residents consulted on sharing smart-meter readings for research: opened
/// three weeks ago for a week, answered by the resident and twelve
/// neighbours (ten of thirteen "yes, with my consent": shown; the rest under
/// the threshold: suppressed).
async fn consultation(service: &Service, password: &str) -> anyhow::Result<()> {
    use citytrust_model::participation::{
        AnswerInput, Audience, ConsultationResponse, ConsultationSubject, NewConsultation,
        NewQuestion, QuestionKind,
    };
    let trustee = demo_actor(service, "trustee1").await?;
    let today = service.now().unix_timestamp() / 86_400;
    let day = citytrust_model::access::format_day;
    let choice = |text: &str, choices: &[&str]| NewQuestion {
        text: text.into(),
        kind: QuestionKind::SingleChoice,
        choices: choices.iter().map(|c| c.to_string()).collect(),
    };
    let c = service
        .open_consultation(
            &trustee,
            NewConsultation {
                title: "Sharing household smart-meter readings for research".into(),
                description: "The City Energy Utility's half-hourly readings show how each household uses electricity. The university asks to study them to design fairer time-of-use tariffs. Should the trust allow it, and on what terms?".into(),
                subject: ConsultationSubject::KindOfUse,
                dataset_id: Some(PERSONAL_DATASET.into()),
                audience: Audience::Residents,
                questions: vec![
                    choice(
                        "Should household readings be shared with researchers?",
                        &["Yes, with my consent", "Yes, anonymised only", "No"],
                    ),
                    NewQuestion {
                        text: "How comfortable are you with researchers reading your household's readings?".into(),
                        kind: QuestionKind::Scale,
                        choices: vec![],
                    },
                    NewQuestion {
                        text: "What should the trust require of researchers?".into(),
                        kind: QuestionKind::FreeText,
                        choices: vec![],
                    },
                ],
                opens_on: day(today),
                closes_on: day(today + 6),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo consultation: {e}"))?;
    let mut people = vec!["resident".to_string()];
    for i in 1..=NEIGHBOURS {
        let username = format!("neighbour{i:02}");
        if service.store().get_user(&username).await?.is_none() {
            service
                .insert_user(NewUser {
                    username: username.clone(),
                    display_name: format!("Neighbour {i}"),
                    email: None,
                    password: password.into(),
                    roles: vec![Role::Resident],
                    organization_ids: vec![],
                })
                .await
                .map_err(|e| anyhow::anyhow!("demo account {username}: {e}"))?;
        }
        people.push(username);
    }
    let texts = [
        Some((
            "Ask each household first, and let us withdraw at any time.",
            true,
        )),
        Some(("Publish what the study found, in plain words.", true)),
        Some(("I worry my neighbours could tell when I am away.", false)),
    ];
    for (i, person) in people.iter().enumerate() {
        let answer = match i {
            0..=9 => "Yes, with my consent",
            10 | 11 => "Yes, anonymised only",
            _ => "No",
        };
        let mut answers = vec![
            AnswerInput {
                question: "q1".into(),
                choice: Some(answer.into()),
                ..AnswerInput::default()
            },
            AnswerInput {
                question: "q2".into(),
                scale: Some(if i < 11 { 4 } else { 2 }),
                ..AnswerInput::default()
            },
        ];
        let mut publish = false;
        if let Some(Some((text, p))) = texts.get(i) {
            answers.push(AnswerInput {
                question: "q3".into(),
                text: Some((*text).into()),
                ..AnswerInput::default()
            });
            publish = *p;
        }
        service
            .respond_to_consultation(
                &demo_actor(service, person).await?,
                &c.id,
                ConsultationResponse {
                    answers,
                    publish_text: publish,
                    receipt: None,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo answer: {e}"))?;
    }
    Ok(())
}

/// Today: the board's terms on record, and the charter's second version
/// (consent for smart-meter readings added to the ethics code) citing the
/// closed consultation.
async fn charter_and_board(service: &Service) -> anyhow::Result<()> {
    let admin = demo_actor(service, "admin").await?;
    for (trustee, since, how, declared) in [
        (
            "trustee1",
            "2025-01-01",
            "Elected by the residents' assembly, January 2025",
            "None.",
        ),
        (
            "trustee2",
            "2025-01-01",
            "Appointed by the city council, January 2025",
            "Member of the cycling association's board.",
        ),
        (
            "trustee3",
            "2026-01-01",
            "Nominated by the university senate, 2026",
            "Employed by City University (does not vote on its requests).",
        ),
    ] {
        service
            .set_trustee_term(
                &admin,
                trustee,
                citytrust_service::participation::TermInput {
                    starts_on: since.into(),
                    ends_on: "2028-12-31".into(),
                    appointed_by: how.into(),
                    declarations: declared.into(),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo term of {trustee}: {e}"))?;
    }
    let consultations = service.list_consultations(&Actor::Anonymous).await?;
    let Some(c) = consultations.first() else {
        return Ok(());
    };
    let trustee = demo_actor(service, "trustee1").await?;
    let current = service.charter().await?;
    let mut code = current.ethics_code.clone();
    code.push_str("8. **Household readings.** Smart-meter readings of a household are shared\n   for research only with that household's consent, as residents asked.\n");
    service
        .set_charter(
            &trustee,
            citytrust_service::governance::CharterChange {
                text: current.text,
                note: "Residents were consulted on sharing smart-meter readings: most agreed, with their consent. The ethics code now says so.".into(),
                ethics_code: Some(code),
                consultation_id: Some(c.id.clone()),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo charter: {e}"))?;
    Ok(())
}

/// The datasets of the analyst's two ended agreements: building energy
/// (its outcome reported in the demo) and deaths by district (its report
/// still owed, due a month after its end).
const ENDED: [(&str, &str, &str); 2] = [
    (
        "seattle-building-energy",
        "identified",
        "A ranked list of the buildings to retrofit first, published for the city's climate plan.",
    ),
    (
        "barcelona-deaths",
        "aggregate",
        "Mortality by district beside air quality, for the university's public-health atlas.",
    ),
];

/// Three weeks ago the analyst asked, for research, for a week of each of
/// the [`ENDED`] datasets, and the three trustees approved.
async fn ended_agreements(service: &Service) -> anyhow::Result<()> {
    let analyst = demo_actor(service, "analyst").await?;
    let today = service.now().unix_timestamp() / 86_400;
    let day = citytrust_model::access::format_day;
    for (dataset, level, benefit) in ENDED {
        let request: citytrust_model::NewAccessRequest = serde_json::from_value(
            serde_json::json!({
                "dataset_ids": [dataset],
                "purpose": "research",
                "level": level,
                "starts_on": day(today),
                "ends_on": day(today + 7),
                "benefit": benefit,
                "sharing": "systematic",
                "checklist": {
                    "justified": "The study needs these figures; published summaries are too coarse.",
                    "benefits_and_risks": "A published study for the city; commercial or sensitive figures could leak, so the data stays in the university's secure environment.",
                    "proportionate": "Only the columns the study uses, for one week.",
                    "without_personal_data": "The data is about buildings and districts, not people.",
                    "power_to_share": "The city's open-data and benchmarking ordinances."
                }
            }),
        )?;
        let r = service
            .create_access_request(&analyst, request)
            .await
            .map_err(|e| anyhow::anyhow!("demo request for {dataset}: {e}"))?;
        for trustee in ["trustee1", "trustee2", "trustee3"] {
            service
                .vote(
                    &demo_actor(service, trustee).await?,
                    &r.id,
                    citytrust_model::NewVote {
                        vote: citytrust_model::access::VoteChoice::Approve,
                        reason: "A published study with a clear public benefit, for one week only."
                            .into(),
                        conflict_of_interest: None,
                        consultation_id: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("demo vote on {dataset}: {e}"))?;
        }
    }
    Ok(())
}

/// Today: the analyst attests the deletion of both ended agreements' data
/// and reports the building-energy agreement's outcome (the other's report
/// is still owed).
async fn outcome(service: &Service) -> anyhow::Result<()> {
    let analyst = demo_actor(service, "analyst").await?;
    for a in service.agreements().await? {
        let Some(dataset) = a.dataset_ids.first() else {
            continue;
        };
        if a.recipient != "organization:city-university" || !ENDED.iter().any(|e| e.0 == dataset) {
            continue;
        }
        service
            .attest_deletion(
                &analyst,
                &a.id,
                "Deleted from the university's secure environment the day the agreement ended.",
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo attestation: {e}"))?;
        if dataset == ENDED[0].0 {
            service
                .report_outcome(
                    &analyst,
                    &a.id,
                    citytrust_model::participation::NewOutcomeReport {
                        period: None,
                        effectiveness: 4,
                        impact: 4,
                        effort: 2,
                        risk: 1,
                        what_was_done: "Ranked Seattle's large buildings by energy use per square foot and weather-normalised it; the forty worst are on the city's retrofit list.".into(),
                        beneficiaries: "Tenants of the forty buildings retrofitted first (lower bills), and the city's climate plan.".into(),
                        evidence_url: Some("https://www.seattle.gov/environment/climate-change/buildings-and-energy/energy-benchmarking".into()),
                        evidence_dataset_id: None,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("demo outcome report: {e}"))?;
        }
    }
    Ok(())
}

/// A sharing project of the City Data Office and City University on
/// building energy, through Discover and Prepare (business case, DPIA
/// screening, documents), signed off by the trustees and waiting in Share.
async fn project(service: &Service) -> anyhow::Result<()> {
    use citytrust_model::projects::{DPIA_CRITERIA, NewProject, ProjectUpdate, Stage};
    let analyst = demo_actor(service, "analyst").await?;
    let trustee = demo_actor(service, "trustee1").await?;
    let fail =
        |what: &'static str| move |e: ServiceError| anyhow::anyhow!("demo project ({what}): {e}");
    let p = service
        .create_project(
            &analyst,
            NewProject {
                title: "Retrofit priorities from building energy".into(),
                summary: "The City Data Office and City University rank the city's large buildings by weather-normalised energy use, so retrofit money goes where it saves most.".into(),
                lead_organization_id: "city-university".into(),
                partner_organization_ids: vec!["city-data-office".into()],
            },
        )
        .await
        .map_err(fail("start"))?;
    let discover: ProjectUpdate = serde_json::from_value(serde_json::json!({
        "revision": p.revision,
        "reasons": {
            "user_needs": "Tenants of the least efficient buildings pay the most; the council cannot see which buildings those are.",
            "organisational_aims": "The climate plan's 40% cut in building emissions by 2030; the university's applied research mission.",
            "exchange_pattern": "mutual_exchange"
        },
        "team": [
            {"name": "Arun Analyst", "role": "senior_sponsor", "organization_id": "city-university"},
            {"name": "Olga Owner", "role": "data_provision_lead", "organization_id": "city-data-office"},
            {"name": "Data protection officer of the council", "role": "data_protection_officer", "organization_id": "city-data-office"}
        ],
        "ecosystem": [
            {"organization": "City Data Office", "role": "data provider"},
            {"organization": "City University", "role": "analyst and publisher of the method"},
            {"organization": "Tenants' associations", "role": "users of the ranking"}
        ],
        "dataset_ids": ["seattle-building-energy"],
        "canvas": {
            "problem": "Retrofit grants go to whoever applies first, not to the worst buildings.",
            "data": "Annual benchmarking totals per building.",
            "users": "The council's retrofit team; tenants' associations."
        },
        "maturity": {"technology": "medium", "mindset": "high", "resources": "low", "skills": "medium", "operations": "medium", "legal": "high"}
    }))?;
    let p = service
        .update_project(&analyst, &p.id, discover)
        .await
        .map_err(fail("discover"))?;
    let p = service
        .sign_off_stage(
            &trustee,
            &p.id,
            citytrust_service::projects::SignOffBody {
                stage: Stage::Discover,
                note: "A clear need, the right people, data already in the catalogue.".into(),
            },
        )
        .await
        .map_err(fail("discover sign-off"))?;
    let case = |s: &str| serde_json::json!({"providing": format!("Council: {s}"), "receiving": format!("University: {s}")});
    let screening: serde_json::Map<String, serde_json::Value> = DPIA_CRITERIA
        .iter()
        .map(|(c, _)| (c.to_string(), serde_json::json!(false)))
        .collect();
    let prepare: ProjectUpdate = serde_json::from_value(serde_json::json!({
        "revision": p.revision,
        "business_case": {
            "strategic": case("fits the climate plan and the research strategy"),
            "economic": case("targeting the worst 10% of buildings saves an estimated three times the grant spend"),
            "commercial": case("shared under the trust's agreement; no charge; the method published under CC-BY"),
            "financial": case("staff time only: about twenty days, within existing budgets"),
            "management": case("monthly joint review; the trust's log is the audit trail")
        },
        "legal_basis": "The city's building energy benchmarking ordinance; the university's research mandate.",
        "dpia_screening": screening,
        "ethics_review": {"outcome": "approved", "notes": "University ethics board, 2026: buildings, not people; no conditions."},
        "technical_pattern": "api",
        "preparation": {"cleaning": "Buildings with missing floor area removed; units made kBtu.", "explanation": "A data dictionary and the weather normalisation method on the dataset page."},
        "share_request": {
            "dataset_ids": ["seattle-building-energy"],
            "purpose": "research",
            "level": "identified",
            "starts_on": citytrust_model::access::format_day(service.now().unix_timestamp() / 86_400 + 7),
            "ends_on": citytrust_model::access::format_day(service.now().unix_timestamp() / 86_400 + 97),
            "benefit": "A published ranking of buildings for retrofit, and its method.",
            "sharing": "systematic",
            "checklist": {
                "justified": "The ranking needs each building's totals.",
                "benefits_and_risks": "Lower bills and emissions; owners' figures could leak, so the data stays in the university's environment.",
                "proportionate": "The latest year's totals only, for three months.",
                "without_personal_data": "The data is about buildings, not people.",
                "power_to_share": "The benchmarking ordinance."
            }
        },
        "review_on": citytrust_model::access::format_day(service.now().unix_timestamp() / 86_400 + 180)
    }))?;
    let p = service
        .update_project(&analyst, &p.id, prepare)
        .await
        .map_err(fail("prepare"))?;
    service
        .add_project_document(
            &analyst,
            &p.id,
            "mou",
            "memorandum-of-understanding.txt",
            "text/plain",
            b"Memorandum of understanding between the City Data Office and City University on retrofit priorities (demo).",
        )
        .await
        .map_err(fail("document"))?;
    service
        .sign_off_stage(
            &trustee,
            &p.id,
            citytrust_service::projects::SignOffBody {
                stage: Stage::Prepare,
                note: "Business case, screening and ethics review in order: make the request."
                    .into(),
            },
        )
        .await
        .map_err(fail("prepare sign-off"))?;
    Ok(())
}

/// The demo's live stream.
pub const LIVE_STREAM: &str = "barcelona-air-quality-live";

/// Replay the Barcelona air-quality readings into the live stream, for
/// ever, through the NGSI-LD API at `url` with a write credential the
/// stream's owner issues at each start (the previous ones revoked).
pub fn replay_live(service: std::sync::Arc<Service>, url: String, speed: f64) {
    tokio::spawn(async move {
        if let Err(e) = run_live(&service, &url, speed).await {
            tracing::warn!(error = %e, "the live air-quality replay stopped");
        }
    });
}

async fn run_live(service: &Service, url: &str, speed: f64) -> anyhow::Result<()> {
    let owner = demo_actor(service, "owner").await?;
    for old in service.stream_credentials(&owner, LIVE_STREAM).await? {
        if old.revoked_at.is_none() {
            service
                .revoke_stream_credential(&owner, LIVE_STREAM, &old.id)
                .await?;
        }
    }
    let issued = service
        .issue_stream_credential(&owner, LIVE_STREAM, "The demo's replay of November 2018")
        .await?;
    let instants =
        crate::replay::air_quality(&data_dir().join("barcelona/air_quality_Nov2017.csv"))?;
    // A demo started again goes on from the newest reading it holds.
    let core = citytrust_model::ngsi::Context::core();
    let observed = core.expand("dateObserved");
    let mut after = None;
    for row in service
        .store()
        .stream_entities(&[LIVE_STREAM.to_string()])
        .await?
    {
        let e: citytrust_model::ngsi::Entity = serde_json::from_str(&row.body)?;
        let t = e
            .value_of(&observed)
            .and_then(|v| v.as_str())
            .and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| t.unix_timestamp());
        after = after.max(t);
    }
    tracing::info!(
        stream = LIVE_STREAM,
        instants = instants.len(),
        speed,
        "replaying live air-quality readings"
    );
    crate::replay::replay(
        url,
        &issued.token,
        LIVE_STREAM,
        &instants,
        speed,
        true,
        after,
        |_, _| {},
    )
    .await
}

/// The demo's data files: beside the binary's source in a checkout.
fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo/data")
}

async fn load_content(
    service: &Service,
    actor: &Actor,
    id: &str,
    file: Option<String>,
    content: DemoContent,
) -> anyhow::Result<()> {
    if let Some(rules) = content.quality_rules.clone() {
        service.set_quality_rules(actor, id, rules).await?;
    }
    let upload = service.begin_upload(actor, id).await?;
    let (format, gzip) = match (content.synthetic.as_deref(), content.file.or(file)) {
        (Some("smart-meter"), _) => {
            std::fs::write(upload.body_path(), synthetic_smart_meter(42))?;
            (citytrust_query::InputFormat::Csv, false)
        }
        (Some(other), _) => anyhow::bail!("unknown synthetic content '{other}'"),
        (None, Some(file)) => {
            let path = data_dir().join(&file);
            let format = content
                .format
                .or_else(|| citytrust_query::InputFormat::from_file_name(&file))
                .with_context(|| format!("no format for {file}"))?;
            std::fs::copy(&path, upload.body_path())
                .with_context(|| format!("could not read {}", path.display()))?;
            (format, file.ends_with(".gz"))
        }
        (None, None) => return Ok(()),
    };
    let version = service
        .finish_upload(
            upload,
            citytrust_service::content::UploadOptions {
                format,
                on_error: citytrust_query::OnError::Reject,
                declared: content.types,
                gzip,
            },
            None,
        )
        .await?;
    tracing::info!(dataset = id, rows = version.rows, "demo content loaded");
    Ok(())
}

/// Half-hourly readings of 40 made-up households over two weeks, from a fixed
/// seed, so every demo has the same synthetic data.
fn synthetic_smart_meter(seed: u64) -> String {
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = String::from("household_id,meter_id,postcode,reading_time,kwh\n");
    let postcodes = ["CT1 1AA", "CT1 2BB", "CT2 3CC", "CT3 4DD", "CT4 5EE"];
    for h in 0..40u64 {
        let postcode = postcodes[(next() % postcodes.len() as u64) as usize];
        let base = 0.05 + (next() % 100) as f64 / 400.0;
        for day in 0..14u64 {
            for slot in 0..48u64 {
                let hour = slot / 2;
                let peak = if (7..9).contains(&hour) || (17..22).contains(&hour) {
                    3.0
                } else {
                    1.0
                };
                let noise = (next() % 1000) as f64 / 2000.0;
                let kwh = base * peak * (0.75 + noise);
                out.push_str(&format!(
                    "H{h:04},M{:06},{postcode},2026-10-{:02}T{:02}:{:02}:00,{kwh:.3}\n",
                    100_000 + h * 7,
                    day + 1,
                    hour,
                    (slot % 2) * 30
                ));
            }
        }
    }
    out
}

fn new_user(u: &DemoUser, password: &str) -> NewUser {
    NewUser {
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        email: Some(format!("{}@citytrust.example", u.username)),
        password: password.to_string(),
        roles: u.roles.clone(),
        organization_ids: u.organization_ids.clone(),
    }
}

/// 1 if created, 0 if it was already there; other errors stop the load.
fn kept(result: Result<(), ServiceError>, what: &str) -> anyhow::Result<usize> {
    match result {
        Ok(()) => Ok(1),
        Err(ServiceError::Conflict(_)) => Ok(0),
        Err(e) => Err(anyhow::anyhow!("demo {what}: {e}")),
    }
}

/// The demo's peers are trusts it federates with too: once a peer answers,
/// its `/catalog.ttl` is registered (and so harvested) as a remote
/// catalogue, harvested again every hour. A peer registered on an earlier
/// run is left as it is.
pub fn federate_with_peers(service: std::sync::Arc<Service>, peers: Vec<String>) {
    tokio::spawn(async move {
        let admin = match service.store().list_users().await {
            Ok(users) => users
                .into_iter()
                .find(|u| u.roles.contains(&Role::Administrator)),
            Err(e) => {
                tracing::warn!(error = %e, "demo federation: no administrator");
                return;
            }
        };
        let Some(admin) = admin else { return };
        let actor = Actor::from_user(&admin);
        let client = reqwest::Client::new();
        for (n, peer) in peers.iter().enumerate() {
            let base = peer.trim_end_matches('/').to_string();
            let id = format!("peer-{}", n + 1);
            loop {
                let up = client
                    .get(format!("{base}/healthz"))
                    .timeout(std::time::Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if up {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            // The demo pins the key the peer shows (trust on first use):
            // an operator checks it with the peer's operators instead.
            let participant = match client
                .get(format!("{base}/dsp/participant"))
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| {
                    Some(citytrust_model::federation::Participant {
                        id: v["participantId"].as_str()?.to_string(),
                        key: v["key"].as_str()?.to_string(),
                    })
                }),
                Err(_) => None,
            };
            let new = citytrust_model::federation::NewRemoteCatalogue {
                id: id.clone(),
                name: format!("The peer trust at {base}"),
                url: format!("{base}/catalog.ttl"),
                kind: citytrust_model::federation::RemoteKind::Dcat,
                interval_hours: Some(1),
                participant,
            };
            match service.register_remote_catalogue(&actor, new).await {
                Ok(c) => {
                    tracing::info!(catalogue = %id, entries = c.entries, "federating with the peer's catalogue")
                }
                Err(citytrust_service::ServiceError::Conflict(_)) => {}
                Err(e) => tracing::warn!(catalogue = %id, error = %e, "demo federation failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_parses_and_every_dataset_validates() {
        let m = super::manifest().unwrap();
        assert!(m.datasets.len() >= 16);
        for d in m.datasets {
            let id = d.dataset.id.clone().unwrap();
            if let Some(file) = &d.file {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../demo/data")
                    .join(file);
                assert!(path.is_file(), "{id}: {} is missing", path.display());
            }
            d.dataset.validate().unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
}
