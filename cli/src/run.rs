//! Runs one operation over every object of a bucket or prefix: in parallel, with a
//! progress bar on stderr, a JSON-lines report and a summary (failures by kind).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::s3::Listed;
use crate::{Fail, FailKind};

/// What became of one object.
pub struct Outcome {
    /// `verified`, `rewrapped`, `skipped`, `would rewrap`, `reencrypted`, …
    pub result: &'static str,
    /// Plaintext bytes read or moved.
    pub bytes: u64,
    pub detail: String,
    pub fail: Option<Fail>,
}

impl Outcome {
    pub fn ok(result: &'static str, bytes: u64, detail: impl Into<String>) -> Outcome {
        Outcome {
            result,
            bytes,
            detail: detail.into(),
            fail: None,
        }
    }
    pub fn failed(f: Fail) -> Outcome {
        Outcome {
            result: "failed",
            bytes: 0,
            detail: String::new(),
            fail: Some(f),
        }
    }
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Runs `f` over `items` with `jobs` threads. Returns whether nothing failed.
pub fn for_each(
    what: &str,
    items: Vec<Listed>,
    jobs: usize,
    report: Option<&str>,
    f: &(dyn Fn(&Listed) -> Outcome + Sync),
) -> Result<bool, Fail> {
    let total = items.len();
    let mut report = match report {
        Some(p) => Some(
            std::fs::File::create(p)
                .map_err(|e| Fail::usage(format!("cannot write the report {p}: {e}")))?,
        ),
        None => None,
    };
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let finished = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.min(total.max(1)))
            .map(|_| {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let o = f(item);
                    bytes.fetch_add(o.bytes, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut r) = results.lock() {
                        r.push((i, o));
                    }
                })
            })
            .collect();
        // Progress: a bar redrawn on a terminal, a line every 10 s otherwise.
        s.spawn(|| {
            let mut last = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let d = done.load(Ordering::Relaxed);
                let line = |d: usize| {
                    let w = 30usize;
                    let filled = d.saturating_mul(w).checked_div(total).unwrap_or(w).min(w);
                    format!(
                        "{what} [{}{}] {d}/{total} objects, {}",
                        "#".repeat(filled),
                        ".".repeat(w - filled),
                        human(bytes.load(Ordering::Relaxed))
                    )
                };
                if tty {
                    eprint!("\r{}", line(d));
                } else if last.elapsed() >= Duration::from_secs(10) {
                    eprintln!("{}", line(d));
                    last = Instant::now();
                }
                if d >= total || finished.load(Ordering::Relaxed) {
                    break;
                }
            }
            if tty {
                eprintln!();
            }
        });
        // The workers end (all of them, even one that failed unexpectedly: waiting for a
        // count it will never reach would hang); then the progress thread.
        while !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        finished.store(true, Ordering::Relaxed);
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut by_result: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<FailKind, usize> = BTreeMap::new();
    for (i, o) in &results {
        let key = &items[*i].key;
        *by_result.entry(o.result).or_default() += 1;
        if let Some(f) = &o.fail {
            *by_kind.entry(f.kind).or_default() += 1;
            eprintln!("FAILED {key}: {f}");
        }
        if let Some(r) = report.as_mut() {
            let line = serde_json::json!({
                "key": key,
                "result": o.result,
                "bytes": o.bytes,
                "detail": o.detail,
                "failure": o.fail.as_ref().map(|f| f.kind.name()),
                "error": o.fail.as_ref().map(|f| f.msg.clone()),
            });
            writeln!(r, "{line}").map_err(Fail::io)?;
        }
    }
    let failures: usize = by_kind.values().sum();
    println!(
        "{what}: {total} objects, {} of plaintext, in {:.1} s",
        human(bytes.load(Ordering::Relaxed)),
        start.elapsed().as_secs_f64()
    );
    for (r, n) in &by_result {
        println!("  {r}: {n}");
    }
    for (k, n) in &by_kind {
        println!("  failure, {}: {n}", k.name());
    }
    if failures == 0 {
        println!("  no failures");
    }
    Ok(failures == 0)
}
