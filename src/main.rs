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

fn run(cli: Cli) -> anyhow::Result<()> {
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
            Ok(())
        }
        Command::Migrate { common } => {
            let settings = load(&common, None)?;
            fhirbridge::telemetry::init(
                &settings.telemetry.log_filter,
                &settings.telemetry.log_format,
            );
            fhirbridge::open_backend(&settings)?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fhirbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
