//! One function per subcommand: the requests it makes and what it prints.

use std::io::{BufRead, Write};
use std::thread::sleep;
use std::time::Duration;

use customer_kv_migration::api::{
    AuditPageView, BatchView, CohortView, EmailAuditView, ImportView, InventoryView,
    RollbackAnswer, StatusView, VerificationView,
};
use customer_kv_migration::migration::backup::BackupLine;
use customer_kv_migration::migration::checking::conflicts::{ConflictPage, Pruned};
use customer_kv_migration::migration::checking::email_issues::IssuePage;
use customer_kv_migration::migration::keys::MIGRATION_PREFIX;
use customer_kv_migration::migration::state::finalize::Finalized;
use customer_kv_migration::migration::state::purge::Purge;
use customer_kv_migration::migration::state::rollback::Step;
use customer_kv_migration::migration::state::tombstones::Purged as PurgedTombstones;
use customer_kv_migration::migration::state::working_keys::Purged as PurgedWorkingKeys;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cli::{Args, BackfillControl, Command, Force, SettleRule, StoreArg};
use crate::client::{mint_token, Client};
use crate::confirm::confirm;
use crate::credentials;
use crate::outcome::{CommandResult, Failure};
use crate::plan;
use crate::ready;
use crate::render;
use crate::retry::RetryPolicy;

/// Requests a looping command makes before it gives up: far more than any run needs.
const MAX_ROUNDS: usize = 100_000;
/// An import request's body stays under the worker's 64 KiB limit, in at most this many
/// lines (the worker takes 500); a longer line's value goes alone, raw, to
/// `/admin/migrate/import/value`.
const IMPORT_BODY_BYTES: usize = 60 * 1024;
const IMPORT_LINES: usize = 400;

pub fn run(args: Args) -> CommandResult {
    let global = &args.global;
    match &args.command {
        Command::Token { role, sub, minutes } => {
            let secret = credentials::signing_secret(role)?;
            println!("{}", mint_token(secret.expose(), role, sub, *minutes)?);
            return Ok(());
        }
        Command::Completions { shell } => {
            let mut command = <Args as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "kv-migrate", &mut std::io::stdout());
            return Ok(());
        }
        _ => {}
    }
    let profile = credentials::profile(global)?;
    let connection = credentials::connection(global, profile.as_ref())?;
    let client = Client::new(connection, RetryPolicy::STANDARD);
    if let Some(action) = needs_confirmation(&args.command) {
        confirm(&format!("{action} on {}", client.base_url()), global.yes)?;
    }
    let out = Output { json: global.json };
    match args.command {
        Command::Status { watch, interval } => status(&client, &out, watch, interval),
        Command::Ready => ready::ready(&client, &out),
        Command::Phase {
            phase,
            force,
            dry_run: true,
            ..
        } => plan::phase(&client, &out, phase, &force),
        Command::Phase {
            phase, force, wait, ..
        } => {
            if wait {
                wait_until_settled(&client, &out)?;
            }
            change_phase(&client, &out, phase, &force)
        }
        Command::Backfill {
            control: Some(control),
            ..
        } => backfill_control(&client, &out, control),
        Command::Backfill {
            control: None,
            dry_run,
            max_records,
            until_done,
        } => backfill(&client, &out, dry_run, max_records, until_done),
        Command::Verify { full: _, sample } => verify(&client, &out, sample),
        Command::Emails { issues: true, .. } => {
            let pages = Pages {
                limit: 100,
                all: true,
            };
            pages.show(
                &client,
                &out,
                "/admin/migrate/emails/issues",
                |page: &IssuePage| (page.cursor.clone(), render::email_issues(page)),
            )
        }
        Command::Emails { dry_run, .. } => emails(&client, &out, dry_run),
        Command::Inventory { restart } => inventory(&client, &out, restart),
        Command::Rollback {
            phase,
            force,
            dry_run: true,
            ..
        } => plan::rollback(&client, &out, phase, &force),
        Command::Rollback {
            phase,
            force,
            no_wait,
            ..
        } => rollback(&client, &out, phase, &force, no_wait),
        Command::Export {
            store,
            prefix,
            all_keys,
        } => export(&client, store, &prefix, all_keys),
        Command::Import {
            store,
            overwrite,
            all_keys,
            file,
        } => import(&client, &out, (store, overwrite, all_keys), &file),
        Command::Audit { limit, all } => {
            let pages = Pages { limit, all };
            pages.show(
                &client,
                &out,
                "/admin/migrate/audit",
                |page: &AuditPageView| (page.cursor.clone(), render::audit_page(page)),
            )
        }
        Command::PurgeNew {
            dry_run,
            restart,
            force,
        } => purge_new(&client, &out, (dry_run, restart), &force),
        Command::Cohort {
            to,
            percent,
            customers,
            cancel,
            force,
        } => {
            let (path, mut body) = match (cancel, to) {
                (true, _) | (false, None) => ("/admin/migrate/cohort/cancel", json!({})),
                (false, Some(to)) => (
                    "/admin/migrate/cohort",
                    json!({ "to": to, "percent": percent, "customers": customers }),
                ),
            };
            if force.force {
                body["force"] = json!(true);
                body["reason"] = json!(force.reason);
            }
            let answer = client.post_json(path, &body)?.success()?;
            let done: CohortView = typed(&answer)?;
            out.show(&answer, &done, render::cohort);
            Ok(())
        }
        Command::Finalize {
            dry_run,
            purge_working_keys: true,
            export: Some(file),
            ..
        } => purge_working_keys(&client, &out, dry_run, &file),
        Command::Finalize {
            dry_run,
            purge_tombstones: true,
            export: Some(file),
            ..
        } => purge_tombstones(&client, &out, dry_run, &file),
        Command::Finalize { dry_run, .. } => {
            let answer = client
                .post_json("/admin/migrate/finalize", &json!({ "dryRun": dry_run }))?
                .success()?;
            let done: Finalized = typed(&answer)?;
            out.show(&answer, &done, render::finalized);
            // A dry run that finds a check unmet exits 3, as a refused move does.
            match done.unmet.is_empty() {
                true => Ok(()),
                false => Err(Failure::Refused("not ready to finalize".into())),
            }
        }
        Command::Conflicts { prune: true, .. } => prune_conflicts(&client, &out),
        Command::Conflicts {
            settle: Some(rule),
            keys,
            dry_run,
            ..
        } => settle_conflicts(&client, &out, (rule, dry_run), &keys),
        Command::Conflicts { limit, all, .. } => {
            let pages = Pages { limit, all };
            pages.show(
                &client,
                &out,
                "/admin/migrate/conflicts",
                |page: &ConflictPage| (page.cursor.clone(), render::conflicts(page)),
            )
        }
        Command::Token { .. } | Command::Completions { .. } => Ok(()),
    }
}

/// What the command would do that is hard to undo, if anything: the operator confirms
/// it first (`--yes` for scripts). Dry runs change nothing and ask nothing.
fn needs_confirmation(command: &Command) -> Option<String> {
    match command {
        Command::Rollback {
            phase,
            force,
            dry_run: false,
            ..
        } => Some(if force.force {
            format!("Roll back to phase {phase}, forcing past every gate")
        } else {
            format!("Roll back to phase {phase}")
        }),
        Command::Phase {
            phase,
            force,
            dry_run: false,
            ..
        } if force.force => Some(format!("Force the move to phase {phase} past its gates")),
        Command::Import {
            store,
            overwrite: true,
            file,
            ..
        } => Some(format!(
            "Overwrite keys of the {} store with those of {file}",
            store.as_str()
        )),
        Command::Backfill {
            control: Some(BackfillControl::Reset),
            ..
        } => Some("Start the backfill over".into()),
        Command::Cohort { cancel: true, .. } => {
            Some("Take the cohort's customers back to the phase everyone else is in".into())
        }
        Command::Cohort {
            to: Some(to),
            percent,
            customers,
            ..
        } => Some(format!(
            "Move {}% of customers and {} named customer(s) to phase {to} ahead of everyone",
            percent.unwrap_or(0.0),
            customers.len()
        )),
        Command::Finalize {
            purge_working_keys: true,
            dry_run: false,
            ..
        } => Some(
            "Remove the migration's working keys from CUSTOMER_KV (after exporting them); the phase record and the audit stay".into(),
        ),
        Command::Finalize {
            purge_tombstones: true,
            dry_run: false,
            ..
        } => Some(
            "Remove CUSTOMER_KV's tombstones, each in its customer's object (writing them to the export file)".into(),
        ),
        Command::Finalize { dry_run: false, .. } => Some(
            "Finalize the migration: OTP_AUTH_KV is no longer read or written, and no phase move is possible after".into(),
        ),
        Command::PurgeNew { dry_run: false, .. } => Some(
            "Remove from CUSTOMER_KV every customer and mapping the migration wrote there".into(),
        ),
        Command::Conflicts {
            settle: Some(rule),
            keys,
            dry_run: false,
            ..
        } => Some(match keys.len() {
            0 => format!("Settle every conflict by {}, in both stores", rule.as_str()),
            n => format!("Settle {n} conflicts by {}, in both stores", rule.as_str()),
        }),
        _ => None,
    }
}

/// Prints either the worker's JSON or the human rendering of it.
pub struct Output {
    pub json: bool,
}

impl Output {
    /// The worker's answer as it came (`--json`), or read as `T` and rendered for people.
    pub fn show<T>(&self, value: &Value, typed: &T, human: impl FnOnce(&T) -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human(typed));
        }
    }

    /// Progress lines go to standard error in JSON mode, so standard output stays
    /// one document per line.
    pub fn progress(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
}

/// The error shape every refusal has.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    message: String,
}

/// An answer read as the library's type for it.
pub fn typed<T: DeserializeOwned>(value: &Value) -> CommandResult<T> {
    T::deserialize(value).map_err(|e| {
        Failure::Other(format!(
            "the worker's answer does not have the expected shape: {e}"
        ))
    })
}

fn status(client: &Client, out: &Output, watch: bool, interval: u64) -> CommandResult {
    let fetch = || -> CommandResult<(Value, StatusView)> {
        let raw = client.get("/admin/migrate/status", &[])?.success()?;
        let status = typed(&raw)?;
        Ok((raw, status))
    };
    if !watch {
        let (raw, status) = fetch()?;
        out.show(&raw, &status, render::status);
        return Ok(());
    }
    let interactive = !out.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let (raw, status) = fetch()?;
        if out.json {
            println!("{raw}");
        } else if interactive {
            // Clear the screen and redraw in place.
            println!("\x1b[2J\x1b[H{}", render::status(&status));
        } else {
            println!("{}", render::progress_line(&status));
        }
        std::io::stdout().flush().ok();
        if render::nothing_running(&status) {
            return Ok(());
        }
        sleep(Duration::from_secs(interval.max(1)));
    }
}

fn wait_until_settled(client: &Client, out: &Output) -> CommandResult {
    loop {
        let raw = client.get("/admin/migrate/status", &[])?.success()?;
        let status: StatusView = typed(&raw)?;
        let left = status.phase.unsettled_ms.unwrap_or(0);
        if left == 0 {
            return Ok(());
        }
        out.progress(&format!(
            "waiting {} for the last phase move to settle",
            render::duration(left)
        ));
        sleep(Duration::from_millis(left.min(60_000)));
    }
}

fn force_fields(body: &mut Value, force: &Force) {
    if force.force {
        body["force"] = json!(true);
    }
    if let Some(reason) = &force.reason {
        body["reason"] = json!(reason);
    }
}

fn change_phase(client: &Client, out: &Output, phase: u8, force: &Force) -> CommandResult {
    let mut body = json!({ "phase": phase });
    force_fields(&mut body, force);
    let answer = client.post_json("/admin/migrate/phase", &body)?.success()?;
    out.show(&answer, &typed(&answer)?, render::phase_change);
    Ok(())
}

fn backfill_control(client: &Client, out: &Output, control: BackfillControl) -> CommandResult {
    let body = match control {
        BackfillControl::Throttle { max_in_flight } => json!({ "maxInFlight": max_in_flight }),
        _ => json!({}),
    };
    let path = format!("/admin/migrate/backfill/{}", control.action());
    let answer = client.post_json(&path, &body)?.success()?;
    let batch: BatchView = typed(&answer)?;
    out.show(&answer, &batch, render::backfill_batch);
    Ok(())
}

fn backfill(
    client: &Client,
    out: &Output,
    dry_run: bool,
    max_records: Option<u64>,
    until_done: bool,
) -> CommandResult {
    // Batches are refused until the last phase move has settled.
    wait_until_settled(client, out)?;
    let mut body = json!({ "dryRun": dry_run });
    if let Some(max) = max_records {
        body["maxRecords"] = json!(max);
    }
    for _ in 0..MAX_ROUNDS {
        let answer = client
            .post_json_resumable("/admin/migrate/backfill", &body)?
            .success()?;
        let batch: BatchView = typed(&answer)?;
        out.show(&answer, &batch, render::backfill_batch);
        if !until_done || dry_run || batch.progress.complete {
            return Ok(());
        }
        // A pass that copied is followed by one that re-reads, once KV has spread the
        // copies to every location.
        let wait = batch.report.and_then(|r| r.wait_ms);
        if let Some(wait) = wait.filter(|ms| *ms > 0) {
            out.progress(&format!(
                "waiting {} before the next pass re-reads what this one copied",
                render::duration(wait)
            ));
            sleep(Duration::from_millis(wait.min(60_000)));
        }
    }
    Err(Failure::Refused("the backfill did not finish".into()))
}

fn verify(client: &Client, out: &Output, sample: Option<u64>) -> CommandResult {
    let mut body = match sample {
        Some(n) => json!({ "mode": "sample", "sample": n }),
        None => json!({ "mode": "full" }),
    };
    // A fresh verification, resumed call after call until it is complete.
    body["restart"] = json!(true);
    for _ in 0..MAX_ROUNDS {
        let answer = client
            .post_json_resumable("/admin/migrate/verify", &body)?
            .success()?;
        body["restart"] = json!(false);
        let verification: VerificationView = typed(&answer)?;
        if verification.complete {
            out.show(&answer, &verification, render::verification);
            return if verification.clean {
                Ok(())
            } else {
                Err(Failure::Refused(
                    "the stores differ: see the keys above".into(),
                ))
            };
        }
        match &verification.fanout {
            Some(chunks) => {
                out.progress(&format!(
                    "verifying: {} keys listed, {} compared; chunks: {} queued, {} in flight",
                    verification.listed,
                    verification.values_compared,
                    chunks.queued,
                    chunks.in_flight
                ));
                // Consumers compare the values: give them time between calls.
                sleep(Duration::from_secs(1));
            }
            None => out.progress(&format!(
                "verifying: {} keys listed, {} compared",
                verification.listed, verification.values_compared
            )),
        }
    }
    Err(Failure::Refused("the verification did not finish".into()))
}

fn inventory(client: &Client, out: &Output, restart: bool) -> CommandResult {
    let mut body = json!({ "restart": restart });
    for _ in 0..MAX_ROUNDS {
        let answer = client
            .post_json_resumable("/admin/migrate/inventory", &body)?
            .success()?;
        body["restart"] = json!(false);
        let inventory: InventoryView = typed(&answer)?;
        if inventory.complete {
            out.show(&answer, &inventory, render::inventory);
            return Ok(());
        }
        out.progress(&format!(
            "taking the inventory: {} customer keys sorted",
            inventory.listed
        ));
    }
    Err(Failure::Refused("the inventory did not finish".into()))
}

fn emails(client: &Client, out: &Output, dry_run: bool) -> CommandResult {
    let body = json!({ "dryRun": dry_run });
    for _ in 0..MAX_ROUNDS {
        let answer = client
            .post_json_resumable("/admin/migrate/emails", &body)?
            .success()?;
        let audit: EmailAuditView = typed(&answer)?;
        if audit.complete {
            out.show(&answer, &audit, render::email_audit);
            return match &audit.fanout {
                Some(f) if f.failed.count > 0 => Err(Failure::Refused(
                    "some chunks were not audited: run the audit again".into(),
                )),
                _ => Ok(()),
            };
        }
        let counts = &audit.audit.counts;
        let scanned = counts.records_scanned + counts.mappings_scanned;
        match &audit.fanout {
            Some(chunks) => {
                out.progress(&format!(
                    "auditing email mappings: {scanned} keys checked; chunks: {} queued, {} in flight",
                    chunks.queued, chunks.in_flight
                ));
                // Consumers check the chunks: give them time between calls.
                sleep(Duration::from_secs(1));
            }
            None => out.progress(&format!("auditing email mappings: {scanned} keys checked")),
        }
    }
    Err(Failure::Refused("the email audit did not finish".into()))
}

fn rollback(
    client: &Client,
    out: &Output,
    phase: u8,
    force: &Force,
    no_wait: bool,
) -> CommandResult {
    let mut body = json!({ "toPhase": phase });
    force_fields(&mut body, force);
    for _ in 0..MAX_ROUNDS {
        let answer = client.post_json_resumable("/admin/migrate/rollback", &body)?;
        if answer.status == 200 {
            let done = answer.json()?;
            out.show(&done, &typed::<RollbackAnswer>(&done)?, |r| {
                render::rollback(r, None)
            });
            return Ok(());
        }
        let in_progress = answer
            .json()
            .ok()
            .filter(|_| answer.status == 409)
            .and_then(|v| {
                let error: ErrorBody = typed(&v).ok()?;
                (error.error.code == "rollback_in_progress").then_some((v, error))
            });
        let Some((raw, error)) = in_progress else {
            return Err(answer.failure());
        };
        let progress: RollbackAnswer = typed(&raw)?;
        let message = error.error.message.as_str();
        out.show(&raw, &progress, |r| render::rollback(r, Some(message)));
        if no_wait {
            return Err(Failure::Refused(format!(
                "rollback to phase {phase} is not finished; run the command again"
            )));
        }
        let wait_ms = match progress.rollback.next {
            Some(Step::Blocked { .. }) => return Err(answer.failure()),
            Some(Step::Wait { ms }) => ms,
            _ => 0,
        };
        sleep(Duration::from_millis(wait_ms.clamp(200, 10_000)));
    }
    Err(Failure::Refused("the rollback did not finish".into()))
}

fn export(client: &Client, store: StoreArg, prefix: &str, all_keys: bool) -> CommandResult {
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let keys = export_to(client, (store, prefix, all_keys), &mut stdout)?;
    eprintln!("exported {keys} keys from the {} store", store.as_str());
    Ok(())
}

/// Writes every page of the export to `sink`; returns how many keys it held.
fn export_to(
    client: &Client,
    (store, prefix, all_keys): (StoreArg, &str, bool),
    sink: &mut dyn Write,
) -> Result<usize, Failure> {
    let mut cursor = String::new();
    let mut keys = 0usize;
    loop {
        let query = [
            ("store", store.as_str()),
            ("prefix", prefix),
            ("cursor", cursor.as_str()),
            ("allKeys", if all_keys { "true" } else { "false" }),
        ];
        let answer = client.get("/admin/migrate/export", &query)?;
        if answer.status != 200 {
            return Err(answer.failure());
        }
        keys += answer.body.lines().filter(|l| !l.trim().is_empty()).count();
        sink.write_all(answer.body.as_bytes())
            .map_err(|e| Failure::Other(format!("writing the export: {e}")))?;
        let complete = answer.header("X-Export-Complete") == Some("true");
        match answer.header("X-Export-Cursor") {
            Some(next) if !complete => cursor = next.to_owned(),
            _ => break,
        }
    }
    sink.flush()
        .map_err(|e| Failure::Other(format!("writing the export: {e}")))?;
    Ok(keys)
}

/// Exports CUSTOMER_KV's `__migration/` keys to `file`, then removes them page by page
/// (docs/design.md §9, "Finalizing"); a dry run exports nothing and removes nothing.
fn purge_working_keys(client: &Client, out: &Output, dry_run: bool, file: &str) -> CommandResult {
    if !dry_run {
        let mut sink = private_file(file, false)?;
        let scope = (StoreArg::New, MIGRATION_PREFIX, true);
        let keys = export_to(client, scope, &mut sink)?;
        eprintln!("exported {keys} working keys to {file}");
    }
    let mut total = PurgedWorkingKeys::default();
    let mut cursor: Option<String> = None;
    loop {
        let body = json!({ "dryRun": dry_run, "cursor": cursor });
        let answer = client
            .post_json_resumable("/admin/migrate/finalize/purge", &body)?
            .success()?;
        let page: PurgedWorkingKeys = typed(&answer)?;
        total.listed += page.listed;
        total.removed += page.removed;
        total.kept += page.kept;
        total.dry_run = page.dry_run;
        if page.complete {
            total.complete = true;
            out.show(&answer, &total, render::purged_working_keys);
            return Ok(());
        }
        cursor = page.cursor;
    }
}

/// Opens `file` for an export that names customers: readable by its owner alone, and
/// appended to or started afresh.
fn private_file(file: &str, append: bool) -> Result<std::fs::File, Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true);
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(file)
        .map_err(|e| Failure::Other(format!("opening {file}: {e}")))
}

/// Removes CUSTOMER_KV's tombstones page by page once finalized (docs/design.md §9,
/// "Finalizing"), appending each page's removed tombstones to `file` as export lines; a
/// dry run writes no file. Exits 1 if any could not be removed, after the totals.
fn purge_tombstones(client: &Client, out: &Output, dry_run: bool, file: &str) -> CommandResult {
    // Appended to, so that running the purge again (after a failure) keeps what the
    // earlier run removed.
    let mut sink = match dry_run {
        true => None,
        false => Some(private_file(file, true)?),
    };
    let mut total = PurgedTombstones::default();
    let mut cursor: Option<String> = None;
    loop {
        let body = json!({ "dryRun": dry_run, "cursor": cursor });
        let answer = client
            .post_json_resumable("/admin/migrate/finalize/tombstones", &body)?
            .success()?;
        let page: PurgedTombstones = typed(&answer)?;
        if let Some(sink) = sink.as_mut() {
            sink.write_all(page.export.as_bytes())
                .and_then(|()| sink.flush())
                .map_err(|e| Failure::Other(format!("writing {file}: {e}")))?;
        }
        total.add(&page);
        if page.complete {
            break;
        }
        cursor = page.cursor;
    }
    out.show(&json!(total), &total, render::purged_tombstones);
    match total.failed {
        0 => Ok(()),
        n => Err(Failure::Other(format!(
            "{n} tombstone(s) could not be removed: run the purge again"
        ))),
    }
}

fn import(
    client: &Client,
    out: &Output,
    (store, overwrite, all_keys): (StoreArg, bool, bool),
    file: &str,
) -> CommandResult {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| Failure::Other(format!("cannot open {file}: {e}")))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let mode = if overwrite { "overwrite" } else { "missing" };
    let mut totals = ImportView {
        store: store.as_str().to_owned(),
        written: 0,
        already_present: 0,
        skipped_migration_state: 0,
    };
    let mut batch = String::new();
    let mut lines_in_batch = 0;
    let send = |batch: &mut String, lines: &mut usize, totals: &mut ImportView| -> CommandResult {
        if batch.is_empty() {
            return Ok(());
        }
        let all = if all_keys { "true" } else { "false" };
        let query = [("store", store.as_str()), ("mode", mode), ("allKeys", all)];
        let answer = client
            .post(
                "/admin/migrate/import",
                &query,
                "application/x-ndjson",
                std::mem::take(batch).into_bytes(),
            )?
            .success()?;
        let part: ImportView = typed(&answer)?;
        add(totals, &part);
        *lines = 0;
        Ok(())
    };
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Failure::Other(format!("reading {file}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() + 1 > IMPORT_BODY_BYTES {
            // Too large for an NDJSON request: its value goes alone, raw.
            let part = import_value(client, (store, overwrite, all_keys), &line, index + 1)?;
            add(&mut totals, &part);
            continue;
        }
        if batch.len() + line.len() + 1 > IMPORT_BODY_BYTES || lines_in_batch == IMPORT_LINES {
            send(&mut batch, &mut lines_in_batch, &mut totals)?;
        }
        batch.push_str(&line);
        batch.push('\n');
        lines_in_batch += 1;
    }
    send(&mut batch, &mut lines_in_batch, &mut totals)?;
    out.show(&json!(totals), &totals, render::import);
    Ok(())
}

fn add(totals: &mut ImportView, part: &ImportView) {
    totals.written += part.written;
    totals.already_present += part.already_present;
    totals.skipped_migration_state += part.skipped_migration_state;
}

/// Sends one backup line's value as raw bytes to `POST /admin/migrate/import/value`,
/// which takes up to 25 MiB (KV's largest value) where an NDJSON request takes 64 KiB.
fn import_value(
    client: &Client,
    (store, overwrite, all_keys): (StoreArg, bool, bool),
    raw: &str,
    line_number: usize,
) -> CommandResult<ImportView> {
    let invalid = |problem: String| Failure::Invalid(format!("line {line_number}: {problem}"));
    let mut line: BackupLine =
        serde_json::from_str(raw).map_err(|e| invalid(format!("not a backup line: {e}")))?;
    let bytes = line.take_bytes().map_err(invalid)?;
    let expiration = line.expiration.map(|e| e.to_string());
    let metadata = line.metadata.map(|m| m.to_string());
    let flag = |on: bool| if on { "true" } else { "false" };
    let mut query = vec![
        ("store", store.as_str()),
        ("key", line.key.as_str()),
        ("overwrite", flag(overwrite)),
        ("allKeys", flag(all_keys)),
    ];
    if let Some(expiration) = &expiration {
        query.push(("expiration", expiration));
    }
    if let Some(metadata) = &metadata {
        query.push(("metadata", metadata));
    }
    let answer = client
        .post(
            "/admin/migrate/import/value",
            &query,
            "application/octet-stream",
            bytes,
        )?
        .success()?;
    typed(&answer)
}

/// Purges the new store page after page (or counts, dry); prints the totals.
fn purge_new(
    client: &Client,
    out: &Output,
    (dry_run, restart): (bool, bool),
    force: &Force,
) -> CommandResult {
    let mut first = true;
    loop {
        let mut body = json!({ "dryRun": dry_run, "restart": first && (restart || dry_run) });
        if force.force {
            body["force"] = json!(true);
            body["reason"] = json!(force.reason);
        }
        first = false;
        let answer = client
            .post_json_resumable("/admin/migrate/purge-new", &body)?
            .success()?;
        let run: Purge = typed(&answer)?;
        if run.complete() {
            out.show(&answer, &run, render::purged);
            return Ok(());
        }
    }
}

/// Removes settled conflict entries, page after page; prints the totals.
fn prune_conflicts(client: &Client, out: &Output) -> CommandResult {
    let mut total = Pruned::default();
    let mut cursor: Option<String> = None;
    loop {
        let answer = client
            .post_json_resumable(
                "/admin/migrate/conflicts/prune",
                &json!({ "cursor": cursor }),
            )?
            .success()?;
        let page: Pruned = typed(&answer)?;
        total.checked += page.checked;
        total.removed += page.removed;
        if page.complete {
            total.complete = true;
            let shown = json!(total);
            out.show(&shown, &total, |t| {
                format!(
                    "{} conflict entries checked, {} settled ones removed",
                    t.checked, t.removed
                )
            });
            return Ok(());
        }
        cursor = page.cursor;
    }
}

/// Settles the keys given, or every entry a page at a time; prints each key's outcome
/// and the totals.
fn settle_conflicts(
    client: &Client,
    out: &Output,
    (rule, dry_run): (SettleRule, bool),
    keys: &[String],
) -> CommandResult {
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({ "rule": rule.as_str(), "dryRun": dry_run });
        if keys.is_empty() {
            body["cursor"] = json!(cursor);
        } else {
            body["keys"] = json!(keys);
        }
        let answer = client
            .post_json_resumable("/admin/migrate/conflicts/settle", &body)?
            .success()?;
        let page: Value = typed(&answer)?;
        for (outcome, n) in page["counts"].as_object().into_iter().flatten() {
            *totals.entry(outcome.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
        out.show(&page, &page, render::settled);
        if keys.is_empty() && page["complete"] != true {
            cursor = page["cursor"].as_str().map(str::to_owned);
            continue;
        }
        if !out.json {
            let line: Vec<String> = totals.iter().map(|(o, n)| format!("{n} {o}")).collect();
            let line = if line.is_empty() {
                "no conflicts".to_owned()
            } else {
                line.join(", ")
            };
            println!("total: {line}");
        }
        return Ok(());
    }
}

/// A listing the worker answers a page at a time (`limit`, `cursor`): the first page, or
/// with `all` every page.
struct Pages {
    limit: u32,
    all: bool,
}

impl Pages {
    /// Shows each page; `read` gives its next cursor and its human rendering.
    fn show<T: DeserializeOwned>(
        &self,
        client: &Client,
        out: &Output,
        path: &str,
        read: impl Fn(&T) -> (Option<String>, String),
    ) -> CommandResult {
        let mut cursor = String::new();
        let limit = self.limit.to_string();
        loop {
            let answer = client
                .get(path, &[("limit", &limit), ("cursor", &cursor)])?
                .success()?;
            let page: T = typed(&answer)?;
            let (next, human) = read(&page);
            out.show(&answer, &human, String::clone);
            match next {
                Some(next) if self.all => cursor = next,
                _ => return Ok(()),
            }
        }
    }
}
