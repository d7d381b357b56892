//! `cargo xtask chaos [--kills 100] [--seed N] [--fail-percent 10]`: the
//! kill sweep (see `assent_e2e::chaos`) against the release server, on
//! SQLite, or on the PostgreSQL that `TEST_POSTGRES_URL` names.

use assent_e2e::chaos::{fresh_seed, run, Settings};
use std::process::ExitCode;

fn flag(args: &[String], name: &str) -> Result<Option<u64>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(at) => args
            .get(at + 1)
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} takes a whole number")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = (|| {
        if let Some(unknown) = args
            .iter()
            .step_by(2)
            .find(|a| !["--kills", "--seed", "--fail-percent"].contains(&a.as_str()))
        {
            return Err(format!("unknown flag {unknown}"));
        }
        Ok::<_, String>(Settings {
            kills: u32::try_from(flag(&args, "--kills")?.unwrap_or(100))
                .map_err(|_| "--kills is too large".to_owned())?,
            seed: flag(&args, "--seed")?.unwrap_or_else(fresh_seed),
            fail_percent: flag(&args, "--fail-percent")?.unwrap_or(10).min(90),
        })
    })();
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("chaos: {e}\nusage: chaos [--kills 100] [--seed N] [--fail-percent 10]");
            return ExitCode::from(2);
        }
    };
    let database = if std::env::var_os("TEST_POSTGRES_URL").is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "chaos: {} kills on {database}, seed {}, {}% of deliveries refused",
        settings.kills, settings.seed, settings.fail_percent
    );
    let report = run(&settings).await;
    println!("{}", report.summary());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        for problem in report
            .lost
            .iter()
            .chain(&report.duplicated)
            .chain(&report.broken)
        {
            eprintln!("  {problem}");
        }
        ExitCode::FAILURE
    }
}
