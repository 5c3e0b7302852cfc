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

#[derive(clap::Args, Clone, Default)]
struct Common {
    /// TOML settings file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH, sqlite::memory: or postgres://… [env: FHIRBRIDGE_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the FHIR server (the default command).
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 127.0.0.1:8080 [env: FHIRBRIDGE_LISTEN]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
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
    /// an interrupted run resumes where it stopped.
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
    },
    /// Manage the FHIR package cache.
    Packages {
        #[command(subcommand)]
        command: PackagesCommand,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

fn load(common: &Common, listen: Option<String>) -> anyhow::Result<Settings> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Settings::load(
        common.config.as_deref(),
        &env,
        &Overrides {
            listen,
            database_url: common.database.clone(),
        },
    )
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve {
        common: Common::default(),
        listen: None,
    }) {
        Command::Serve { common, listen } => {
            let settings = load(&common, listen)?;
            fhirbridge::telemetry::init(
                &settings.telemetry.log_filter,
                &settings.telemetry.log_format,
            );
            let app = fhirbridge::Application::build(settings.clone())?;
            tracing::info!(
                listen = %settings.server.listen,
                port = app.port(),
                "fhirbridge listening; FHIR base is /fhir"
            );
            actix_web::rt::System::new().block_on(app.run_until_stopped())?;
            tracing::info!("fhirbridge stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { common } => {
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init(
                &settings.telemetry.log_filter,
                &settings.telemetry.log_format,
            );
            fhirbridge::open_backend(&settings)?;
            tracing::info!("migrations applied");
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
            let summary = actix_web::rt::System::new().block_on(fhirbridge::reindex::reindex(
                &settings, &parsed, batch, restart, !quiet,
            ))?;
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
