//! `kv-migrate`: the operator's command-line client for the migration's admin API.
//!
//! It speaks HTTP to a running worker (local `wrangler dev` or production) with an admin
//! token, prints what the worker answers for people (or as JSON with `--json`), and
//! exits with a code scripts can rely on (see [`outcome::Failure`]). It is a native
//! program: the worker's wasm build never includes it.

#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod client;
#[cfg(not(target_arch = "wasm32"))]
mod commands;
#[cfg(not(target_arch = "wasm32"))]
mod config;
#[cfg(not(target_arch = "wasm32"))]
mod confirm;
#[cfg(not(target_arch = "wasm32"))]
mod credentials;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod fake_worker;
#[cfg(not(target_arch = "wasm32"))]
mod outcome;
#[cfg(not(target_arch = "wasm32"))]
mod plan;
#[cfg(not(target_arch = "wasm32"))]
mod ready;
#[cfg(not(target_arch = "wasm32"))]
mod render;
#[cfg(not(target_arch = "wasm32"))]
mod retry;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    use clap::Parser;
    let args = cli::Args::parse();
    match commands::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("kv-migrate: {failure}");
            std::process::ExitCode::from(failure.exit_code())
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}
