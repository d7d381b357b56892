//! `cargo xtask bench consent`: cold loads of the consent page in headless
//! Chromium on loopback, each in a fresh browser session (empty cache),
//! measured with the Performance API: bytes on the wire per resource, first
//! contentful paint (the server-rendered disclosure with working forms), and
//! the moment the Leptos app has taken over with its buttons
//! (`assent-interactive`). Prints medians and the 150 KB / 300 ms budgets.
//!
//! Usage: consent-bench [--loads 15]

use assent_e2e::browser::{wait_for_app, Browser};
use assent_e2e::{Assent, Options};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MEASURE: &str = "
const nav = performance.getEntriesByType('navigation')[0];
const fcp = performance.getEntriesByName('first-contentful-paint')[0];
const ready = performance.getEntriesByName('assent-interactive')[0];
const files = [{name: 'document', encoded: nav.encodedBodySize, transfer: nav.transferSize, decoded: nav.decodedBodySize}];
for (const r of performance.getEntriesByType('resource')) {
  if (r.name.includes('/_assent/')) continue;
  files.push({name: r.name.split('/').pop(), encoded: r.encodedBodySize, transfer: r.transferSize, decoded: r.decodedBodySize});
}
return {
  fcp: fcp ? fcp.startTime : null,
  interactive: ready ? ready.startTime : null,
  files: files,
};";

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() -> Result<(), String> {
    let mut loads = 15usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--loads", Some(n)) => loads = n.parse().map_err(|e| format!("--loads: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: consent-bench [--loads 15]"
                ))
            }
        }
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let assent = Assent::start(Options {
            demo: true,
            ..Options::default()
        })
        .await;
        let line = assent
            .stdout_line_containing("/consent/")
            .ok_or("no demo link")?;
        let link = line[line.find("http").ok_or("no link")?..].trim().to_owned();
        let browser = Browser::start().await;
        let results: Arc<Mutex<Vec<Value>>> = Arc::default();
        for _ in 0..loads {
            let link = link.clone();
            let results = results.clone();
            browser
                .with_session(move |client| async move {
                    client.goto(&link).await.expect("open the page");
                    wait_for_app(&client).await;
                    let started = Instant::now();
                    loop {
                        let measured = client.execute(MEASURE, vec![]).await.expect("measure");
                        if !measured["interactive"].is_null() || started.elapsed() > Duration::from_secs(5) {
                            results.lock().expect("lock").push(measured);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
        }
        let results = results.lock().map_err(|e| e.to_string())?.clone();
        let fcp = median(results.iter().filter_map(|r| r["fcp"].as_f64()).collect());
        let interactive = median(
            results
                .iter()
                .filter_map(|r| r["interactive"].as_f64())
                .collect(),
        );
        let first = results.first().ok_or("no loads measured")?;
        let mut total_encoded = 0.0;
        let mut total_transfer = 0.0;
        println!("{:<48} {:>10} {:>10} {:>10}", "file", "raw", "encoded", "on wire");
        for file in first["files"].as_array().ok_or("no files")? {
            let encoded = file["encoded"].as_f64().unwrap_or(0.0);
            let transfer = file["transfer"].as_f64().unwrap_or(0.0);
            total_encoded += encoded;
            total_transfer += transfer;
            println!(
                "{:<48} {:>10} {:>10} {:>10}",
                file["name"].as_str().unwrap_or("?"),
                file["decoded"].as_f64().unwrap_or(0.0),
                encoded,
                transfer
            );
        }
        println!(
            "{{\"loads\": {loads}, \"compressed_bytes\": {total_encoded}, \"on_wire_bytes\": {total_transfer}, \
             \"fcp_median_ms\": {fcp:.1}, \"interactive_median_ms\": {interactive:.1}}}"
        );
        println!(
            "consent page cold load: {:.1} KB compressed ({:.1} KB with headers; budget 150 KB), first paint {fcp:.0} ms, \
             app interactive {interactive:.0} ms (median of {}; budget 300 ms)",
            total_encoded / 1000.0,
            total_transfer / 1000.0,
            results.len()
        );
        Ok(())
    })
}
