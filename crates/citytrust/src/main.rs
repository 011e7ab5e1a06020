//! `citytrust`, the one binary: `serve` the trust; `demo` (load the demo city
//! and serve it); `verify` a log from its public files; `import` a file
//! through a running trust's API; the owners' release tools `anonymise`,
//! `risk` and `tabulate`; `rotate-pseudonym-key`; and `user add`. Also the
//! process's shape: logging, the listener, graceful shutdown (at most 10 s
//! after SIGTERM).

mod demo;
mod import;
mod release;
mod replay;
mod verify;

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use citytrust_model::{NewUser, Role};
use citytrust_service::ledger::LedgerSeed;
use citytrust_service::{Service, Settings, SystemClock};
use citytrust_store::Store;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: with one arena per thread (the
/// runtime's workers, the blocking pool, a thread per SQLite connection)
/// glibc kept each arena's high-water mark, ~2.5× the live heap after a
/// stream's writes; mimalloc gives pages back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "citytrust",
    version,
    about = "A civic data trust: catalogue, governed sharing and a public transparency log."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the trust.
    Serve(ServeArgs),
    /// Load the demo city into a fresh data directory (reusing an existing one) and serve it.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Password for every demo account.
        #[arg(
            long,
            env = "CITYTRUST_DEMO_PASSWORD",
            default_value = "demo-password",
            hide_env_values = true
        )]
        demo_password: String,
        /// How much faster than real time the live air-quality stream is
        /// replayed (0: not at all).
        #[arg(long, default_value_t = 720.0)]
        live_speed: f64,
    },
    /// Verify a CityTrust transparency log from its public files (no database access).
    Verify {
        /// The server's base URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        url: String,
        /// Remember what was seen here, and check the log still holds it next time.
        #[arg(long)]
        state: Option<PathBuf>,
        /// The verifier key to trust (default: the one remembered in --state, else the server's).
        #[arg(long)]
        key: Option<String>,
        /// A C2SP tlog-policy file: accept the checkpoint only with its quorum
        /// of witness cosignatures, and check the log against what each
        /// witness with a URL holds.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Publish a file as a new version of a dataset, through a running trust's API.
    Import {
        /// The file: .csv, .tsv, .json, .ndjson, .geojson or .parquet, optionally .gz.
        file: PathBuf,
        /// The dataset's id.
        #[arg(long)]
        dataset: String,
        /// The trust's base URL.
        #[arg(long, env = "CITYTRUST_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An API token (from POST /api/v1/auth/token); without it, --username
        /// signs in with a password read from standard input.
        #[arg(long, env = "CITYTRUST_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long, conflicts_with = "token")]
        username: Option<String>,
        /// reject (default): any bad row refuses the file; quarantine: bad rows are set aside.
        #[arg(long, default_value = "reject", value_parser = ["reject", "quarantine"])]
        on_error: String,
        /// Declared column types: `column:type[:format],…`.
        #[arg(long)]
        types: Option<String>,
        /// The format, when the file name does not say: csv, tsv, json, ndjson, geojson or parquet.
        #[arg(long, value_parser = ["csv", "tsv", "json", "ndjson", "geojson", "parquet"])]
        format: Option<String>,
    },
    /// Anonymise a CSV table for release: k-anonymity by generalisation and
    /// suppression (optionally l-diversity or t-closeness); writes the table and
    /// prints the report (transformation, suppression, information loss, risk) as JSON.
    Anonymise(release::AnonymiseArgs),
    /// Print the re-identification risk of a CSV table on its quasi-identifiers, as JSON.
    Risk(release::RiskArgs),
    /// Count a CSV table by one to four columns, with margins, small cells
    /// suppressed so no margin gives them away; prints the table as JSON.
    Tabulate(release::TabulateArgs),
    /// Start using a new pseudonym secret: every pseudonym served from now
    /// on changes (extracts already given out can no longer be linked to new
    /// ones), from the next read on. The old secrets stay in DIR/pseudonym-keys.
    RotatePseudonymKey {
        /// Data directory.
        #[arg(long, env = "CITYTRUST_DATA", default_value = "./citytrust-data")]
        data: PathBuf,
    },
    /// Harvest the remote catalogues registered on this trust (all of them,
    /// or one) now, with a progress bar, and print each harvest's report as
    /// JSON. Runs as a node of the trust, on its storage.
    Harvest {
        #[command(flatten)]
        storage: StorageArgs,
        /// Only this catalogue (its id).
        #[arg(long)]
        catalogue: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Feed a stream from a file of real readings at their real times,
    /// accelerated (the Barcelona air-quality CSV: AirQualityObserved
    /// entities), over the NGSI-LD API with the stream's write credential.
    Replay {
        /// The readings (Barcelona's air_quality CSV).
        file: PathBuf,
        /// The stream's dataset id.
        #[arg(long)]
        stream: String,
        /// How many times faster than real time (3600: an hour a second).
        #[arg(long, default_value_t = 3600.0)]
        speed: f64,
        /// The trust's base URL.
        #[arg(long, env = "CITYTRUST_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The stream's write credential (`ctw_…`, from POST /api/v1/datasets/{id}/stream-credentials).
        #[arg(long, env = "CITYTRUST_STREAM_TOKEN", hide_env_values = true)]
        token: String,
        /// Start again when the file ends, shifted past its last reading.
        #[arg(long = "loop")]
        looping: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password is read from standard input. On a data
    /// directory without accounts, the first account is made an administrator.
    Add {
        #[command(flatten)]
        storage: StorageArgs,
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// administrator, trustee or resident (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Organisation id the person is a member of (repeatable).
        #[arg(long = "organization")]
        organizations: Vec<String>,
    },
}

#[derive(Args, Clone)]
struct StorageArgs {
    /// Let NGSI-LD subscriptions notify endpoints on loopback and private
    /// networks (refused by default: no subscriber may point the trust at
    /// its own network).
    #[arg(long, env = "CITYTRUST_PRIVATE_NOTIFICATIONS")]
    allow_private_notifications: bool,
    /// The most instances of one attribute an NGSI-LD temporal answer holds;
    /// a longer answer is cut to a page (206 Partial Content with its
    /// Content-Range) and the client asks for the next.
    #[arg(long, env = "CITYTRUST_TEMPORAL_PAGE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    temporal_page: u32,
    /// Data directory (holds the SQLite database unless --database-url is given).
    #[arg(long, env = "CITYTRUST_DATA", default_value = "./citytrust-data")]
    data: PathBuf,
    /// `postgres://user:pass@host/db` to keep state in PostgreSQL instead of SQLite.
    #[arg(long, env = "CITYTRUST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// `s3://bucket[/prefix]` to keep dataset versions in an S3-compatible
    /// object store (credentials and endpoint from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP)
    /// instead of under the data directory.
    #[arg(long, env = "CITYTRUST_OBJECT_STORE")]
    object_store: Option<String>,
    /// The transparency log's origin (its name in checkpoints and its key's name).
    #[arg(
        long,
        env = "CITYTRUST_LEDGER_ORIGIN",
        default_value = "citytrust.localhost/ledger"
    )]
    ledger_origin: String,
    /// A log this trust witnesses (C2SP tlog-witness: it cosigns the log's
    /// checkpoints at POST /witness/add-checkpoint only when each extends the
    /// last), as ORIGIN=VERIFIER_KEY; repeat the option (or separate with
    /// commas in the variable) for several.
    #[arg(long = "witness-for", env = "CITYTRUST_WITNESS_FOR", value_delimiter = ',', value_parser = parse_witnessed_log)]
    witness_for: Vec<citytrust_service::witness::WitnessedLog>,
    /// The witness's name, its cosignatures' key name (default: the log
    /// origin's host followed by /witness). Its key is DATA/witness-key.
    #[arg(long, env = "CITYTRUST_WITNESS_NAME")]
    witness_name: Option<String>,
    /// A C2SP tlog-policy file for this trust's own log: its `witness` lines
    /// with a URL (the witness's submission prefix, e.g.
    /// https://other.example/witness) are asked to cosign each checkpoint,
    /// and /ledger/checkpoint publishes the newest one meeting its `quorum`.
    #[arg(long, env = "CITYTRUST_WITNESS_POLICY")]
    witness_policy: Option<PathBuf>,
    #[command(flatten)]
    rules: TrustRules,
}

fn parse_witnessed_log(text: &str) -> Result<citytrust_service::witness::WitnessedLog, String> {
    citytrust_service::witness::WitnessedLog::parse(text)
}

/// The trust's own rules of procedure (each defaults to the law's usual figure).
#[derive(Args, Clone)]
struct TrustRules {
    /// Counting trustees' votes needed before the majority decides a request.
    #[arg(long, env = "CITYTRUST_QUORUM", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=99))]
    quorum: u16,
    /// Days a high-risk request stays open for public comment before the vote.
    #[arg(long, env = "CITYTRUST_COMMENT_DAYS", default_value_t = 14, value_parser = clap::value_parser!(u16).range(0..=366))]
    comment_days: u16,
    /// Days the trust has to answer a resident's subject request (one month).
    #[arg(long, env = "CITYTRUST_SUBJECT_REQUEST_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=366))]
    subject_request_days: u16,
    /// Below this age a parent or guardian decides for a resident.
    #[arg(long, env = "CITYTRUST_MINOR_AGE", default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=25))]
    minor_age: u8,
    /// Hours after a breach is registered within which the regulator must be told.
    #[arg(long, env = "CITYTRUST_BREACH_NOTIFY_HOURS", default_value_t = 72, value_parser = clap::value_parser!(u16).range(1..=8760))]
    breach_notify_hours: u16,
    /// The privacy budget (total epsilon) each data user has per agreement
    /// for differentially private statistics.
    #[arg(long, env = "CITYTRUST_DP_BUDGET", default_value_t = 1.0, value_parser = parse_budget)]
    dp_budget: f64,
}

fn parse_budget(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(e) if e.is_finite() && e > 0.0 && e <= 100.0 => Ok(e),
        _ => Err(format!(
            "{text:?}: a privacy budget is an epsilon above 0 and at most 100"
        )),
    }
}

#[derive(Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Address to listen on.
    #[arg(long, env = "CITYTRUST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Send session cookies without the Secure attribute (only for plain HTTP away from localhost).
    #[arg(long)]
    insecure_cookies: bool,
    /// The city's OpenID Connect providers, as a JSON file (see ARCHITECTURE.md, "Identity").
    #[arg(long, env = "CITYTRUST_OIDC_CONFIG")]
    oidc_config: Option<PathBuf>,
    /// Where browsers reach this trust, e.g. https://trust.city.example (default: http://LISTEN);
    /// identity providers send people back under it.
    #[arg(long, env = "CITYTRUST_PUBLIC_URL")]
    public_url: Option<String>,
    /// Another trust to witness each other with, by its base URL (repeat for
    /// several): once it answers, this trust witnesses its log and asks its
    /// witness to cosign this log, every peer's cosignature needed before a
    /// checkpoint is published. Its keys are taken from it on first contact
    /// (for a demo; in production pin them with --witness-for and
    /// --witness-policy).
    #[arg(long = "peer", conflicts_with = "witness_policy")]
    peers: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The release tools need no runtime and no log set-up: their output is the JSON report.
    let cli = match cli.command {
        Command::Anonymise(args) => return release::anonymise(args),
        Command::Risk(args) => return release::risk(args),
        Command::Tabulate(args) => return release::tabulate(args),
        Command::RotatePseudonymKey { data } => {
            std::fs::create_dir_all(&data).with_context(|| {
                format!("could not create the data directory {}", data.display())
            })?;
            let id = citytrust_service::levels::rotate_pseudonym_key(&data.join("pseudonym-keys"))?;
            println!("{id}");
            return Ok(());
        }
        command => Cli { command },
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CITYTRUST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let started = Instant::now();
            let service = open(&args.storage).await?;
            serve(service, &args, started, None).await
        }
        Command::Demo {
            serve: args,
            demo_password,
            live_speed,
        } => {
            let started = Instant::now();
            // A fresh demo city is loaded as of three weeks ago, so that its
            // history (the comment period of a request, say) has run its course.
            let clock = Arc::new(citytrust_service::ShiftedClock::behind(
                demo::HISTORY_DAYS * 86_400,
            ));
            let service = open_with(&args.storage, clock.clone()).await?;
            let loaded = demo::load(&service, &demo_password, &clock).await?;
            let mut loaded = loaded;
            loaded.live_speed = live_speed;
            serve(service, &args, started, Some((loaded, demo_password))).await
        }
        Command::Verify {
            url,
            state,
            key,
            policy,
        } => {
            let policy = match &policy {
                None => None,
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("could not read the policy {}", path.display()))?;
                    Some(
                        citytrust_ledger::policy::Policy::parse(&text)
                            .with_context(|| format!("the policy {}", path.display()))?,
                    )
                }
            };
            let report =
                verify::verify(&url, state.as_deref(), key.as_deref(), policy.as_ref()).await?;
            let mut out = format!(
                "OK: {} entries verified against the checkpoint signed by {}\n",
                report.size, report.key
            );
            if let Some((cosigned, missing)) = &report.witnessed {
                out.push_str(&format!(
                    "witnessed by {} (quorum met){}\n",
                    cosigned.join(", "),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!("; not cosigned by {}", missing.join(", "))
                    }
                ));
            }
            if let Some((size, missing)) = &report.pending {
                out.push_str(&format!(
                    "the newest checkpoint ({size}) is not witnessed under this policy yet: missing {}\n",
                    missing.join(", ")
                ));
            }
            for (kind, n) in &report.by_type {
                out.push_str(&format!("  {n:>8}  {kind}\n"));
            }
            // A reader that stops early (`| head`) is not an error.
            match std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Import {
            file,
            dataset,
            url,
            token,
            username,
            on_error,
            types,
            format,
        } => {
            let token = match (token, username) {
                (Some(t), _) => t,
                (None, Some(u)) => import::token_for(&url, &u, &read_password()?).await?,
                (None, None) => {
                    bail!("give --token (or CITYTRUST_TOKEN), or --username to sign in")
                }
            };
            let media_type = format.as_deref().map(|f| match f {
                "csv" => "text/csv",
                "tsv" => "text/tab-separated-values",
                "json" => "application/json",
                "ndjson" => "application/x-ndjson",
                "geojson" => "application/geo+json",
                _ => "application/vnd.apache.parquet",
            });
            let version = import::import(import::ImportArgs {
                url: &url,
                token: &token,
                dataset: &dataset,
                file: &file,
                media_type,
                on_error: &on_error,
                types: types.as_deref(),
                show_progress: std::io::stderr().is_terminal(),
            })
            .await?;
            println!(
                "published version {} of {}: {} rows{}",
                version["version"],
                dataset,
                version["rows"],
                match version["rejected"].as_u64() {
                    Some(n) if n > 0 => format!(
                        ", {n} set aside (see /api/v1/datasets/{dataset}/versions/{}/rejects)",
                        version["version"]
                    ),
                    _ => String::new(),
                }
            );
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Add {
                    storage,
                    username,
                    display_name,
                    email,
                    roles,
                    organizations,
                },
        } => {
            let service = open(&storage).await?;
            let password = read_password()?;
            let mut parsed = Vec::new();
            for r in &roles {
                parsed.push(Role::parse(r).with_context(|| {
                    format!("--role: '{r}' is not administrator, trustee or resident")
                })?);
            }
            let new = NewUser {
                display_name: display_name.unwrap_or_else(|| username.clone()),
                username,
                email,
                password,
                roles: parsed,
                organization_ids: organizations,
            };
            let first = service.store().user_count().await? == 0;
            let user = if first {
                service.bootstrap_administrator(new).await
            } else {
                service.insert_user(new).await
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
            println!(
                "created account '{}' with roles [{}]",
                user.username,
                roles.join(", ")
            );
            Ok(())
        }
        Command::Replay {
            file,
            stream,
            speed,
            url,
            token,
            looping,
            quiet,
        } => {
            let instants = replay::air_quality(&file)?;
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(instants.len() as u64),
                if quiet {
                    indicatif::ProgressDrawTarget::hidden()
                } else {
                    indicatif::ProgressDrawTarget::stderr_with_hz(8)
                },
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} instants {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            let shown = bar.clone();
            replay::replay(
                &url,
                &token,
                &stream,
                &instants,
                speed,
                looping,
                None,
                |i, t| {
                    shown.set_position(i as u64 + 1);
                    if let Ok(at) = time::OffsetDateTime::from_unix_timestamp(t) {
                        shown.set_message(format!("{at}"));
                    }
                },
            )
            .await?;
            bar.finish();
            println!(
                "{} instants of readings sent to stream {stream}",
                instants.len()
            );
            Ok(())
        }
        Command::Harvest {
            storage,
            catalogue,
            quiet,
        } => {
            let service = open(&storage).await?;
            let ids = match catalogue {
                Some(id) => vec![id],
                None => service.remote_catalogue_ids().await?,
            };
            if ids.is_empty() {
                anyhow::bail!("no remote catalogue is registered (POST /api/v1/remote-catalogues)");
            }
            let mut failed = 0;
            for id in ids {
                let bar = indicatif::ProgressBar::with_draw_target(
                    None,
                    if quiet {
                        indicatif::ProgressDrawTarget::hidden()
                    } else {
                        indicatif::ProgressDrawTarget::stderr_with_hz(8)
                    },
                );
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {prefix} [{wide_bar}] {pos}/{len} records {msg}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(id.clone());
                let shown = bar.clone();
                let report = service
                    .harvest_now(&id, &move |p| {
                        shown.set_length(p.total.unwrap_or(p.records).max(p.records));
                        shown.set_position(p.records);
                        shown.set_message(format!("{} read", indicatif::HumanBytes(p.bytes)));
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
                bar.finish_and_clear();
                if report.outcome == citytrust_model::federation::HarvestOutcome::Failed {
                    failed += 1;
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "catalogue": id, "report": report })
                    )?
                );
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} harvest(s) failed; the entries they would have changed are as they were"
                );
            }
            Ok(())
        }
        // Dispatched in `main` before the runtime starts.
        Command::Anonymise(args) => release::anonymise(args),
        Command::Risk(args) => release::risk(args),
        Command::Tabulate(args) => release::tabulate(args),
        Command::RotatePseudonymKey { .. } => Ok(()),
    }
}

async fn open(storage: &StorageArgs) -> anyhow::Result<Arc<Service>> {
    open_with(storage, Arc::new(SystemClock)).await
}

async fn open_with(
    storage: &StorageArgs,
    clock: Arc<dyn citytrust_service::Clock>,
) -> anyhow::Result<Arc<Service>> {
    let store = match &storage.database_url {
        Some(url) => Store::connect(url)
            .await
            .context("could not open the database given by --database-url")?,
        None => {
            std::fs::create_dir_all(&storage.data).with_context(|| {
                format!(
                    "could not create the data directory {}",
                    storage.data.display()
                )
            })?;
            Store::open_data_dir(&storage.data).await.with_context(|| {
                format!("could not open the database in {}", storage.data.display())
            })?
        }
    };
    std::fs::create_dir_all(&storage.data).with_context(|| {
        format!(
            "could not create the data directory {}",
            storage.data.display()
        )
    })?;
    let seed = ledger_key(&storage.data)?;
    let witnessing = citytrust_service::witness::Witnessing {
        name: storage
            .witness_name
            .clone()
            .unwrap_or_else(|| citytrust_service::witness::default_name(&storage.ledger_origin)),
        seed: private_seed(
            &storage.data.join("witness-key"),
            "the witness's signing key",
        )?,
        logs: storage.witness_for.clone(),
    };
    let witness_policy = match &storage.witness_policy {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read the witness policy {}", path.display()))?;
            let policy = citytrust_ledger::policy::Policy::parse(&text)
                .with_context(|| format!("the witness policy {}", path.display()))?;
            Some(policy)
        }
    };
    let settings = Settings {
        ledger_origin: storage.ledger_origin.clone(),
        ledger_seed: Some(seed),
        content_dir: Some(storage.data.join("content")),
        ledger_witness: Some(storage.data.join("ledger-witness")),
        ledger_tiles: Some(storage.data.join("ledger-tiles")),
        object_store: storage.object_store.clone(),
        quorum: usize::from(storage.rules.quorum),
        comment_days: i64::from(storage.rules.comment_days),
        subject_request_days: i64::from(storage.rules.subject_request_days),
        minor_age: storage.rules.minor_age,
        breach_notify_hours: i64::from(storage.rules.breach_notify_hours),
        pseudonym_keys: Some(storage.data.join("pseudonym-keys")),
        dp_budget_epsilon: storage.rules.dp_budget,
        witnessing: Some(witnessing),
        witness_policy,
        private_notifications: storage.allow_private_notifications,
        temporal_page: storage.temporal_page as usize,
        ..Settings::default()
    };
    let service = Service::new(store, clock, settings).await?;
    Ok(Arc::new(service))
}

/// The log's signing key: `DIR/ledger-key` (64 hex digits, readable by the owner
/// only), made on first start. Losing it means starting a new log; keep it backed up.
fn ledger_key(data: &Path) -> anyhow::Result<LedgerSeed> {
    private_seed(
        &data.join("ledger-key"),
        "the transparency log's signing key",
    )
}

/// A 32-byte secret kept as 64 hex digits in `path` (readable by the owner
/// only), made on first start.
fn private_seed(path: &Path, what: &str) -> anyhow::Result<LedgerSeed> {
    let seed = match std::fs::read_to_string(path) {
        Ok(text) => hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .with_context(|| format!("{} is not 64 hex digits", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
            let text = hex::encode(seed);
            write_private(path, &format!("{text}\n"))?;
            tracing::info!(path = %path.display(), "created {what}");
            seed
        }
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    Ok(LedgerSeed(seed))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

async fn serve(
    service: Arc<Service>,
    args: &ServeArgs,
    started: Instant,
    demo: Option<(demo::Loaded, String)>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut state = citytrust_server::AppState::new(service.clone(), !args.insecure_cookies);
    // Absolute links never follow a request's Host header: the public URL,
    // else the address listened on (an unspecified one named as localhost).
    let listen_url = if addr.ip().is_unspecified() {
        tracing::warn!(
            "listening on every interface without --public-url: links in the catalogue \
             exports will name localhost; set --public-url to the address people reach"
        );
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    state = state.with_public_url(args.public_url.clone().unwrap_or(listen_url));
    if let Some(path) = &args.oidc_config {
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let oidc = citytrust_server::oidc::Oidc::from_file(path, &public_url)
            .map_err(|e| anyhow::anyhow!("--oidc-config: {e}"))?;
        tracing::info!(providers = ?oidc.choices().iter().map(|c| &c.0).collect::<Vec<_>>(), "sign-in through OpenID Connect offered");
        state = state.with_oidc(oidc);
    }
    if args.storage.database_url.is_some() && args.storage.object_store.is_none() {
        tracing::warn!(
            "versions are kept on this node's own disk: if other nodes share this database, \
             give every node the same --object-store, or they cannot read each other's versions"
        );
    }
    citytrust_server::spawn_maintenance(service.clone());
    for peer in &args.peers {
        citytrust_server::cosigning::spawn_peering(service.clone(), peer.clone());
    }
    if demo.is_some() && !args.peers.is_empty() {
        demo::federate_with_peers(service.clone(), args.peers.clone());
    }
    if let Some((loaded, _)) = &demo
        && loaded.live_speed > 0.0
    {
        // Live readings: the Barcelona air-quality stations, replayed.
        let local = if addr.ip().is_unspecified() {
            format!("http://127.0.0.1:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        demo::replay_live(service.clone(), local, loaded.live_speed);
    }
    let app = citytrust_server::app(state);
    let url = format!("http://{addr}/");
    tracing::info!(%url, datasets = service.catalogue_size(), ready_ms = started.elapsed().as_millis() as u64, "serving");
    if let Some((loaded, password)) = demo {
        print_demo_banner(&url, &loaded, &password, &args.storage.data);
    } else {
        println!("CityTrust is serving at {url}");
    }
    // Responses are written as they are made (headers, then the body a
    // chunk at a time): without TCP_NODELAY, Nagle's algorithm holds a small
    // write until the client's delayed ACK, 40 ms on Linux — which a read
    // through another trust, two such hops, paid every time.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

fn print_demo_banner(url: &str, loaded: &demo::Loaded, password: &str, data: &Path) {
    let how = if loaded.fresh {
        "loaded into"
    } else {
        "reused from"
    };
    println!();
    println!(
        "CityTrust demo city: {} datasets, {how} {}",
        loaded.datasets,
        data.display()
    );
    println!("Open {url}");
    println!();
    println!("Sign in as any of these (password: {password}):");
    for (user, what) in demo::ACCOUNTS {
        println!("  {user:<10} {what}");
    }
    if let Some(household) = &loaded.household {
        println!();
        println!(
            "resident is linked to household {household} of the synthetic dataset {} (its subject key), and consents to research use by City University; analyst reads it under a consent-based agreement.",
            demo::PERSONAL_DATASET
        );
    }
    println!();
    println!(
        "API: POST {url}api/v1/auth/token with {{\"username\":…,\"password\":…}}; description at {url}api/openapi.json"
    );
    println!("Stop with Ctrl-C.");
}

fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password (at least 12 characters): ")?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        bail!("no password given on standard input");
    }
    Ok(password)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    // Requests in flight get a few seconds to finish; then the process ends
    // whatever is still running (an upload cut short leaves nothing: its
    // files are swept at the next start).
    // A thread of its own: the runtime's tasks stop when it shuts down,
    // and its shutdown waits for blocking work.
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_secs(10));
        tracing::warn!("work still running 10 s after the stop signal: stopping now");
        std::process::exit(0);
    });
}
