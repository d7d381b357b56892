//! A short kill sweep (see `assent_e2e::chaos`): twenty SIGKILLs of the
//! server in the middle of unbinds, decisions, resends, mail and relays,
//! and nothing lost or carried out twice. The long run is
//! `cargo xtask chaos --kills 100` (docs/reliability.md).

use assent_e2e::chaos::{fresh_seed, run, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kills_lose_nothing_and_do_nothing_twice() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(fresh_seed);
    let report = run(&Settings {
        kills: 20,
        seed,
        fail_percent: 10,
    })
    .await;
    eprintln!("{}", report.summary());
    assert!(
        report.held > 20,
        "too little work to judge: {}",
        report.summary()
    );
    assert!(
        report.decisions > 5,
        "too few decisions to judge: {}",
        report.summary()
    );
    assert!(
        report.passed(),
        "{}\n{:#?}\n{:#?}\n{:#?}",
        report.summary(),
        report.lost,
        report.duplicated,
        report.broken
    );
}
