//! The `assent` command: `serve`, `check-config` and `keys rotate`.

use assent_backend::config::Config;
use assent_backend::serve;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "assent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("ASSENT_GIT_REVISION"), ")"),
    about = "Holds homeserver-signed 3PID unbinds until the address owner consents."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (intake, consent pages, admin console, workers).
    Serve {
        /// TOML config file; without one, the embedded defaults are used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also seed one pending demo request and print its links.
        #[arg(long)]
        demo: bool,
    },
    /// Validate the configuration and print it with secrets masked.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage the signing key in the data folder.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Make a new signing key; the current one is kept as an old key (it
    /// still verifies what it signed). Restart every replica with the new
    /// `signing.key` afterwards.
    Rotate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (file, demo, check_only) = match cli.command {
        Command::Serve { config, demo } => (config, demo, false),
        Command::CheckConfig { config } => (config, false, true),
        Command::Keys {
            action: KeysAction::Rotate { config },
        } => return rotate(config),
    };
    let config = match Config::load(file.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("assent: {errors}");
            return ExitCode::from(2);
        }
    };
    // Ended after the runtime: what background tasks log while shutting
    // down is still written.
    let logs = if check_only {
        for warning in &config.load_warnings {
            eprintln!("assent: {warning}");
        }
        None
    } else {
        let logs = serve::init_logging(config.log_format);
        for warning in &config.load_warnings {
            tracing::warn!("{warning}");
        }
        logs
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("assent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if check_only {
        runtime.block_on(serve::check_config(&config))
    } else {
        runtime.block_on(serve::serve(config, demo))
    };
    // Whatever is still queued is written before the last word below.
    drop(runtime);
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("assent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `assent keys rotate`.
fn rotate(file: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(file.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("assent: {errors}");
            return ExitCode::from(2);
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match assent_backend::keys::SigningKey::rotate(&config.data_dir, now_ms) {
        Ok((old, new)) => {
            println!(
                "assent: the signing key is now {new}; {old} is kept as an old key (expired now), \
                 so what it signed still verifies. Copy {} to every replica and restart them.",
                config
                    .data_dir
                    .join(assent_backend::keys::KEY_FILE)
                    .display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("assent: {e}");
            ExitCode::FAILURE
        }
    }
}
