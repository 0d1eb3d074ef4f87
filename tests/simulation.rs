//! Deterministic simulation of the migration under concurrency and injected faults.
//!
//! `cargo test --release --test simulation -- --nocapture` runs the default 10,000
//! histories; `SIM_HISTORIES=1000000 SIM_SEED=7 cargo test --release --test simulation
//! -- --nocapture` runs more from another base seed, and `SIM_REPLAY=<seed>` replays one
//! history and prints its trace.

mod sim;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn histories_keep_every_acknowledged_write() {
    if let Some(seed) = env_u64("SIM_REPLAY") {
        let outcome = if std::env::var("SIM_SHRINK").is_ok() {
            let (settings, outcome) = sim::history::shrink(seed);
            println!("shrunk to {settings:?}");
            outcome
        } else {
            sim::history::run(seed)
        };
        for line in &outcome.trace {
            println!("{line}");
        }
        assert!(
            outcome.violations.is_empty(),
            "seed {seed}: {:#?}",
            outcome.violations
        );
        return;
    }
    let histories = env_u64("SIM_HISTORIES").unwrap_or(10_000);
    let base = env_u64("SIM_SEED").unwrap_or(1);
    let (mut faults, mut operations, mut stale_reads) = (0, 0, 0);
    let (mut failing, mut ran) = (Vec::new(), 0);
    for n in 0..histories {
        ran += 1;
        let seed = base.wrapping_mul(1_000_003).wrapping_add(n);
        let outcome = sim::history::run(seed);
        faults += outcome.faults;
        operations += outcome.operations;
        stale_reads += outcome.stale_reads;
        if !outcome.violations.is_empty() {
            failing.push((seed, outcome));
            if failing.len() >= 5 {
                break;
            }
        }
    }
    println!(
        "{ran} histories, {faults} faults injected, {} violations \
         ({operations} KV operations, {stale_reads} stale reads)",
        failing.len()
    );
    if let Some((seed, _)) = failing.first() {
        let (settings, outcome) = sim::history::shrink(*seed);
        println!("first failing seed {seed}; replay with SIM_REPLAY={seed}");
        println!("shrunk to {settings:?}; its steps:");
        for line in &outcome.trace {
            println!("  {line}");
        }
        panic!(
            "seed {seed}: {:#?}\nother failing seeds: {:?}",
            outcome.violations,
            failing.iter().skip(1).map(|(s, _)| s).collect::<Vec<_>>()
        );
    }
}
