//! The `fhirbridge` binary: parse the command line, load settings, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fhirbridge::config::{Overrides, Settings};

#[derive(Parser)]
#[command(
    name = "fhirbridge",
    version,
    about = "FHIR R4 server for the NHS England ecosystem"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// Settings without a flag of their own, listed under `--help`.
const SETTINGS_HELP: &str = "\
Settings come from built-in defaults, then the --config file, then environment
variables, then flags (later layers win). Other environment variables:
  FHIRBRIDGE_BASE_URL      public base URL (server.base_url) [default: derived from the request]
  FHIRBRIDGE_PROFILES_DIR  UK Core profiles (validation.profiles_dir) [default: profiles/ukcore]
  FHIR_PACKAGE_CACHE       FHIR package cache (validation.package_cache) [default: ~/.fhir/packages]
  RUST_LOG                 log filter (telemetry.log_filter) [default: info]
Every other setting is a TOML key; README.md lists them all with their defaults.";

#[derive(clap::Args, Clone, Default)]
struct Common {
    /// TOML settings file (see README.md, Configuration)
    #[arg(
        long,
        value_name = "FILE",
        env = "FHIRBRIDGE_CONFIG",
        hide_env_values = true
    )]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH, sqlite::memory: or postgres://USER@HOST:PORT/DB
    /// (storage.database_url) [default: sqlite://data/fhirbridge.db]
    #[arg(
        long,
        value_name = "URL",
        env = "FHIRBRIDGE_DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// Serve without access control on a non-loopback address
    /// (auth.mode = "off"): every caller reads every record
    #[arg(long)]
    allow_anonymous: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start the FHIR server (the default command).
    #[command(after_help = SETTINGS_HELP)]
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, HOST:PORT (server.listen) [default: 127.0.0.1:8080]
        #[arg(
            long,
            value_name = "ADDR",
            env = "FHIRBRIDGE_LISTEN",
            hide_env_values = true
        )]
        listen: Option<String>,
        /// Serve HTTPS with this PEM certificate chain (server.tls.cert_file;
        /// needs --tls-key)
        #[arg(
            long,
            value_name = "FILE",
            env = "FHIRBRIDGE_TLS_CERT",
            hide_env_values = true
        )]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert (server.tls.key_file)
        #[arg(
            long,
            value_name = "FILE",
            env = "FHIRBRIDGE_TLS_KEY",
            hide_env_values = true
        )]
        tls_key: Option<PathBuf>,
    },
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Validate FHIR resources (JSON or XML files) against the R4 base, UK Core
    /// and any given profile. Exit code 0 valid, 1 invalid, 2 usage error.
    Validate {
        #[command(flatten)]
        common: Common,
        /// Files to validate.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also validate against this profile (canonical URL); may repeat.
        #[arg(long, value_name = "URL")]
        profile: Vec<String>,
        /// Report format.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
    /// Import transaction/batch/collection Bundles and NDJSON files (or folders
    /// of them) into the database, with progress and a summary. Exit code 1 if
    /// anything failed.
    Import {
        #[command(flatten)]
        common: Common,
        /// Files or folders to import (*.json, *.ndjson).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Resources per transaction for collections and NDJSON.
        #[arg(long, default_value_t = 500)]
        chunk: usize,
        /// No progress line (for logs).
        #[arg(long)]
        quiet: bool,
    },
    /// Rebuild the search index of stored resources from their content (after
    /// an upgrade that changes what is indexed). Safe while the server runs;
    /// an interrupted run resumes where it stopped. Runs here, in the
    /// foreground, unless --background.
    Reindex {
        #[command(flatten)]
        common: Common,
        /// Only resources of this type; may repeat (default: every type).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Resources per transaction.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Start from the beginning even if an earlier run was interrupted.
        #[arg(long)]
        restart: bool,
        /// No progress line (for logs).
        #[arg(long)]
        quiet: bool,
        /// Only queue the reindex job, for a running server's job worker
        /// (jobs.workers > 0), and exit.
        #[arg(long)]
        background: bool,
    },
    /// Replace the server's signing key (auth.signing_key_file, default
    /// server-signing-key.pem beside the SQLite database) with a new one. The
    /// previous public key stays published at /auth/jwks, so access tokens it
    /// signed verify until they expire; the key kept before it is dropped.
    /// Running servers using the file pick the new key up by themselves.
    RotateSigningKey {
        #[command(flatten)]
        common: Common,
    },
    /// A demo practice to try the booking, repeat-prescription and triage
    /// journeys with curl (see README, "Try the journeys").
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Manage the FHIR package cache.
    Packages {
        #[command(subcommand)]
        command: PackagesCommand,
    },
    /// Run a simulated GP system speaking GP Connect (STU3), seeded with demo
    /// practices, patients, slots and medication, with fault injection at
    /// run time (PUT /admin/faults). The bridge's demo and test supplier.
    SandboxSupplier {
        /// Address to listen on, HOST:PORT; the FHIR base is http://ADDR/fhir.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
        listen: String,
        /// The practices it holds (ODS codes, comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "A81002,A81003")]
        ods: Vec<String>,
        /// Its ASID (requests must name it in Ssp-To).
        #[arg(long, default_value = "918999198993")]
        asid: String,
        /// Repeat authorisations per seeded patient.
        #[arg(long, default_value_t = 3)]
        repeat_plans: usize,
        /// Days of free slots from today.
        #[arg(long, default_value_t = 21)]
        days: u32,
    },
    /// The outbox of writes waiting for a practice's GP system.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Items not yet delivered (queued, running, dead), oldest first.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Queue a dead item again (its attempts start from 0).
    Retry {
        #[command(flatten)]
        common: Common,
        id: String,
    },
    /// Remove an item that is not being delivered (its Task stays as it is).
    Drop {
        #[command(flatten)]
        common: Common,
        id: String,
    },
}

#[derive(Subcommand)]
enum PackagesCommand {
    /// Install the FHIR R4 core definitions (npm package hl7.fhir.r4.examples 4.0.1).
    Install {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Seed the demo practice "Demo Surgery" (ODS A81001) into the database:
    /// three clinicians, two weeks of free slots, two patients with repeat
    /// authorisations, the triage questionnaire. Re-running adds only what is
    /// missing (a later day's slots). With access control on, prints demo
    /// bearer tokens (demo credentials, valid 12 h).
    Seed {
        #[command(flatten)]
        common: Common,
    },
    /// Print one demo bearer token (demo credentials) signed with the
    /// server's own key, for the issuer and audience the server expects.
    #[command(group(clap::ArgGroup::new("who").required(true)))]
    Token {
        #[command(flatten)]
        common: Common,
        /// A patient/*.* token for this Patient (its NHS number included).
        #[arg(long, value_name = "ID", group = "who")]
        patient: Option<String>,
        /// A user/*.* token whose fhirUser is Practitioner/ID.
        #[arg(long, value_name = "ID", group = "who")]
        clinician: Option<String>,
        /// A system/*.* token.
        #[arg(long, group = "who")]
        system: bool,
        /// Lifetime in hours (1 to 24).
        #[arg(long, default_value_t = fhirbridge::demo::DEFAULT_TOKEN_HOURS,
              value_parser = clap::value_parser!(u32).range(1..=fhirbridge::demo::MAX_TOKEN_HOURS as i64))]
        hours: u32,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

fn load(common: &Common, listen: Option<String>) -> anyhow::Result<Settings> {
    load_with(
        common,
        Overrides {
            listen,
            ..Overrides::default()
        },
    )
}

/// Settings with `flags` (the `Common` ones are filled in here).
fn load_with(common: &Common, flags: Overrides) -> anyhow::Result<Settings> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    // clap also fills flags from their environment variables; an empty one means unset.
    let set = |v: Option<String>| v.filter(|v| !v.is_empty());
    let config = common.config.clone().filter(|p| !p.as_os_str().is_empty());
    Settings::load(
        config.as_deref(),
        &env,
        &Overrides {
            listen: set(flags.listen),
            database_url: set(common.database.clone()),
            allow_anonymous: common.allow_anonymous,
            tls_cert: flags.tls_cert.filter(|p| !p.as_os_str().is_empty()),
            tls_key: flags.tls_key.filter(|p| !p.as_os_str().is_empty()),
        },
    )
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve {
        common: Common::default(),
        listen: None,
        tls_cert: None,
        tls_key: None,
    }) {
        Command::Serve {
            common,
            listen,
            tls_cert,
            tls_key,
        } => {
            let settings = load_with(
                &common,
                Overrides {
                    listen,
                    tls_cert,
                    tls_key,
                    ..Overrides::default()
                },
            )?;
            fhirbridge::telemetry::init(
                &settings.telemetry.log_filter,
                &settings.telemetry.log_format,
            );
            let app = fhirbridge::Application::build(settings.clone())?;
            let base = fhirbridge::startup::base_url(&settings.server, app.port());
            tracing::info!(
                listen = %settings.server.listen,
                port = app.port(),
                "fhirbridge listening; FHIR base URL {base}"
            );
            let timeout = std::time::Duration::from_secs(settings.server.shutdown_timeout_secs);
            let result = actix_web::rt::System::new().block_on(async move {
                actix_web::rt::spawn(fhirbridge::startup::bound_shutdown(timeout));
                app.run_until_stopped().await
            });
            let code = match result {
                Ok(()) => {
                    tracing::info!("fhirbridge stopped");
                    0
                }
                Err(e) => {
                    eprintln!("fhirbridge: {e}");
                    1
                }
            };
            // Exit here: dropping the runtimes would wait for any blocking
            // database call still running, past the shutdown timeout.
            std::process::exit(code)
        }
        Command::Migrate { common } => {
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init(
                &settings.telemetry.log_filter,
                &settings.telemetry.log_format,
            );
            // open_backend logs where the database is and what was applied.
            fhirbridge::open_backend(&settings)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            common,
            files,
            profile,
            format,
        } => {
            let mut settings = load(&common, None)?;
            fhirbridge::telemetry::init("warn", "pretty");
            settings.validation.auto_install = false;
            let core = match fhirbridge::validation::locate_core_package(&settings.validation) {
                Ok(dir) => dir,
                Err(reason) => {
                    eprintln!("fhirbridge validate: {reason}");
                    return Ok(ExitCode::from(2));
                }
            };
            let registry = fhirbridge::validation::build_registry(
                &core,
                settings
                    .validation
                    .profiles_dir
                    .as_deref()
                    .map(std::path::Path::new),
            )?;
            let cli = fhirbridge::cli::ValidateCli::new(registry, &settings.validation);
            Ok(cli.run(&files, &profile, matches!(format, ReportFormat::Json)))
        }
        Command::Import {
            common,
            paths,
            chunk,
            quiet,
        } => {
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init("warn", &settings.telemetry.log_format);
            let files = fhirbridge::import::collect_files(&paths)?;
            let summary = actix_web::rt::System::new()
                .block_on(fhirbridge::import::import(settings, files, chunk, !quiet))?;
            println!(
                "imported {} resources from {} files in {:.1} s ({:.0} resources/s); {} failed",
                summary.resources,
                summary.files,
                summary.seconds,
                summary.rate(),
                summary.failed
            );
            for f in summary.failures.iter().take(50) {
                println!("  failed: {f}");
            }
            if summary.failures.len() > 50 {
                println!("  … and {} more", summary.failures.len() - 50);
            }
            Ok(if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Reindex {
            common,
            types,
            batch,
            restart,
            quiet,
            background,
        } => {
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init("warn", &settings.telemetry.log_format);
            let mut parsed = Vec::new();
            for t in &types {
                match t.parse::<fhirbridge::model::ResourceType>() {
                    Ok(ty) => parsed.push(ty),
                    Err(_) => {
                        eprintln!("fhirbridge reindex: unknown resource type '{t}'");
                        return Ok(ExitCode::from(2));
                    }
                }
            }
            if background {
                let (job, created) = actix_web::rt::System::new().block_on(
                    fhirbridge::reindex::enqueue(&settings, &parsed, batch, restart),
                )?;
                if created {
                    println!("queued reindex job {} for the server's job worker", job.id);
                } else {
                    println!(
                        "a reindex of these types is already {} (job {}); not queued again",
                        job.state.as_str(),
                        job.id
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let summary = actix_web::rt::System::new().block_on(fhirbridge::reindex::reindex(
                &settings, &parsed, batch, restart, !quiet,
            ))?;
            if summary.ran_elsewhere {
                println!("reindexed by another process");
                return Ok(ExitCode::SUCCESS);
            }
            if summary.stopped {
                println!(
                    "stopped after {} resources; the job stays queued: the next \
                     `fhirbridge reindex` (or a server's job worker) resumes it",
                    summary.resources
                );
                return Ok(ExitCode::from(130));
            }
            if let Some(at) = &summary.resumed_after {
                println!("resumed an interrupted run after {at} (--restart starts over)");
            }
            println!(
                "reindexed {} resources in {:.1} s ({:.0} resources/s)",
                summary.resources,
                summary.seconds,
                summary.rate()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::RotateSigningKey { common } => {
            let settings = load(&common, None)?;
            let location =
                fhirbridge::auth::keys::location(&settings.auth, &settings.storage.database_url);
            let fhirbridge::auth::keys::KeyLocation::File(path) = location else {
                eprintln!(
                    "fhirbridge rotate-signing-key: the database is in memory, so the \
                     server's signing key is ephemeral (new on every start); set \
                     auth.signing_key_file to keep one"
                );
                return Ok(ExitCode::from(2));
            };
            let r = fhirbridge::auth::keys::rotate(&path)?;
            println!("new signing key {} (kid {})", r.path.display(), r.new_kid);
            match r.previous_kid {
                Some(kid) => println!(
                    "previous key (kid {kid}) stays published until the next rotation: \
                     tokens it signed verify until they expire"
                ),
                None => println!("there was no key before"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SandboxSupplier {
            listen,
            ods,
            asid,
            repeat_plans,
            days,
        } => {
            fhirbridge::telemetry::init("info", "pretty");
            let listener = std::net::TcpListener::bind(&listen)
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr()?;
            println!("sandbox GP Connect supplier at http://{addr}/fhir (admin: http://{addr}/admin/faults)");
            let opts = fhirbridge::sandbox::SandboxOptions {
                ods_codes: ods,
                asid,
                repeat_plans,
                days,
            };
            actix_web::rt::System::new().block_on(fhirbridge::sandbox::serve(listener, opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { command } => {
            let (common, act) = match command {
                OutboxCommand::List { common } => (common, None),
                OutboxCommand::Retry { common, id } => (common, Some((id, true))),
                OutboxCommand::Drop { common, id } => (common, Some((id, false))),
            };
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init("warn", &settings.telemetry.log_format);
            match act {
                None => {
                    let out = actix_web::rt::System::new()
                        .block_on(fhirbridge::bridge::outbox::list(&settings))?;
                    print!("{out}");
                    Ok(ExitCode::SUCCESS)
                }
                Some((id, retry)) => {
                    let done = actix_web::rt::System::new()
                        .block_on(fhirbridge::bridge::outbox::act(&settings, &id, retry))?;
                    if done {
                        println!(
                            "{} outbox item {id}",
                            if retry { "queued again:" } else { "dropped:" }
                        );
                        Ok(ExitCode::SUCCESS)
                    } else {
                        eprintln!(
                            "fhirbridge outbox: no such item that is not being delivered: {id}"
                        );
                        Ok(ExitCode::from(1))
                    }
                }
            }
        }
        Command::Demo {
            command: DemoCommand::Seed { common },
        } => {
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init("warn", &settings.telemetry.log_format);
            let summary = actix_web::rt::System::new()
                .block_on(fhirbridge::demo::seed(&settings, chrono::Utc::now()))?;
            print!("{}", fhirbridge::demo::render_summary(&settings, &summary));
            let mode = settings.auth.effective_mode(&settings.server.listen);
            if mode == fhirbridge::auth::AuthMode::Required {
                let keys = fhirbridge::demo::server_keys(&settings)?;
                print!("{}", fhirbridge::demo::render_tokens(&settings, &keys)?);
            } else {
                println!(
                    "Access control is off for a server with these settings (auth.mode \"off\", \
                     the default on a loopback address): no tokens are needed, and every \
                     request acts as staff. Set auth.mode = \"required\" to get demo tokens \
                     and the patient-facing rules."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            command:
                DemoCommand::Token {
                    common,
                    patient,
                    clinician,
                    system,
                    hours,
                },
        } => {
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init("warn", &settings.telemetry.log_format);
            use fhirbridge::demo::Subject;
            let who = match (patient, clinician, system) {
                (Some(id), _, _) => {
                    let nhs_number = actix_web::rt::System::new()
                        .block_on(fhirbridge::demo::patient_nhs_number(&settings, &id))?;
                    Subject::Patient { id, nhs_number }
                }
                (None, Some(id), _) => {
                    let found = actix_web::rt::System::new()
                        .block_on(fhirbridge::demo::practitioner_exists(&settings, &id))?;
                    if !found {
                        eprintln!(
                            "fhirbridge demo token: there is no Practitioner/{id} here \
                             (run `fhirbridge demo seed`?)"
                        );
                        return Ok(ExitCode::from(2));
                    }
                    Subject::Clinician(id)
                }
                (None, None, true) => Subject::System,
                (None, None, false) => unreachable!("clap requires one of them"),
            };
            let keys = fhirbridge::demo::server_keys(&settings)?;
            if settings.auth.effective_mode(&settings.server.listen)
                == fhirbridge::auth::AuthMode::Off
            {
                eprintln!(
                    "note: access control is off for a server with these settings; it \
                     ignores tokens (set auth.mode = \"required\")"
                );
            }
            println!(
                "{}",
                fhirbridge::demo::sign_token(&settings, &keys, &who, hours)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Packages {
            command: PackagesCommand::Install { common },
        } => {
            let settings = load(&common, None)?;
            let cache = settings
                .validation
                .package_cache
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(fhir_validation::package::default_cache_dir);
            let dir =
                fhir_validation::package::install_core(&cache).map_err(|e| anyhow::anyhow!(e))?;
            println!("installed {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fhirbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
