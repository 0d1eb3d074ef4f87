//! Finalizing the migration (docs/design.md §9, "Finalizing"): in phase 5, after its
//! period and an email audit that ran wholly in it, nothing reads or writes
//! `OTP_AUTH_KV` any more and no phase move is possible.

mod common;

use common::*;
use customer_kv_migration::migration::copying::fanout::local::LocalQueue;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

fn post(world: &World, path: &str, body: Value) -> (u16, Value) {
    let response = world.send("POST", path, Some(&admin()), Some(body));
    (response.status, response.body)
}

fn finalize(world: &World, dry_run: bool) -> (u16, Value) {
    post(
        world,
        "/admin/migrate/finalize",
        json!({ "dryRun": dry_run }),
    )
}

/// A migration that reached phase 5 with its data in the new store.
fn world_in_phase_5() -> World {
    let world = World::in_phase(Phase::Legacy);
    seed_legacy(&world, 30);
    for phase in [Phase::DualWrite, Phase::ReadNew, Phase::Backfill] {
        world.set_phase(phase);
    }
    world.run_cron_until_backfill_stops();
    world.set_phase(Phase::NewPrimary);
    world.set_phase(Phase::Complete);
    world
}

fn email_audit(world: &World) {
    for _ in 0..20 {
        let (status, body) = post(world, "/admin/migrate/emails", json!({}));
        assert_eq!(status, 200, "{body}");
        if body["complete"] == true {
            return;
        }
        if world.queue.is_some() {
            world.drain_queue(8);
        }
    }
    panic!("the email audit never completed");
}

#[test]
fn finalizing_waits_for_phase_5_and_an_email_audit_run_in_it() {
    let world = World::in_phase(Phase::Backfill);
    let (status, body) = finalize(&world, true);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["unmet"][0].as_str().unwrap().contains("phase 5"),
        "{body}"
    );
    let (status, body) = finalize(&world, false);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("finalize_refused")),
        "{body}"
    );

    let world = world_in_phase_5();
    let (_, body) = finalize(&world, true);
    assert!(body.to_string().contains("email audit"), "{body}");
    assert_eq!(finalize(&world, false).0, 409);
    email_audit(&world);
    let (status, body) = finalize(&world, true);
    assert_eq!(
        (status, body["unmet"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    assert!(
        body.get("finalizedAt").is_none(),
        "a dry run finalizes nothing"
    );

    let (status, body) = finalize(&world, false);
    assert_eq!(status, 200, "{body}");
    assert!(body["finalizedAt"].is_u64(), "{body}");
    assert!(body["next"].as_str().unwrap().contains("export"), "{body}");
    assert!(world.new_value("__migration/phase").unwrap()["finalizedAt"].is_u64());
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(
        status.body["phase"]["finalizedAt"], body["finalizedAt"],
        "the status shows it"
    );
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    assert!(
        audit.body.to_string().contains("\"finalized\""),
        "{}",
        audit.body
    );
    let (again, repeated) = finalize(&world, false);
    assert_eq!(
        (again, &repeated["finalizedAt"]),
        (200, &body["finalizedAt"]),
        "finalizing again changes nothing"
    );
}

#[test]
fn an_email_audit_fanned_out_that_left_a_chunk_unchecked_does_not_count() {
    let mut world = world_in_phase_5();
    world.queue = Some(LocalQueue::default());
    let (status, first) = post(&world, "/admin/migrate/emails", json!({}));
    assert_eq!(
        (status, first["complete"].as_bool()),
        (200, Some(false)),
        "{first}"
    );
    // Saved so that a version from before the fan-out, which would finish an unfinished
    // walk in one call, starts a whole audit instead; and not as completed.
    let saved = world.new_value("__migration/emails").unwrap();
    assert_eq!(
        (saved["pass"].as_str(), saved["completedAt"].as_u64()),
        (Some("done"), None),
        "{saved}"
    );
    world.dead_letter_next();
    email_audit(&world);
    let saved = world.new_value("__migration/emails").unwrap();
    assert_eq!(
        saved["completedAt"],
        Value::Null,
        "a chunk was never checked: {saved}"
    );
    let (_, body) = finalize(&world, true);
    let unmet = body["unmet"].to_string();
    assert!(unmet.contains("could not check 1 chunks"), "{body}");
    assert_eq!(finalize(&world, false).0, 409);
    // The next audit starts over and checks every chunk.
    email_audit(&world);
    let (_, body) = finalize(&world, true);
    assert_eq!(body["unmet"].as_array().map(Vec::len), Some(0), "{body}");
}

#[test]
fn once_finalized_nothing_reads_or_writes_the_old_store() {
    let world = world_in_phase_5();
    email_audit(&world);
    // A mapping only the old store holds: phase 5 reads it as a hint until finalized.
    let hinted = json!({ "customerId": "hinted", "email": "hinted@example.com", "name": "Hinted" });
    world.stores.new.insert(
        "customer_hinted",
        hinted.to_string().as_bytes(),
        PutOptions::default(),
    );
    world.stores.old.insert(
        &mapping_key("hinted@example.com"),
        b"hinted",
        PutOptions::default(),
    );
    let before = world.send(
        "GET",
        "/customer/by-email/hinted@example.com",
        Some(&service()),
        None,
    );
    assert_eq!(
        before.status, 200,
        "phase 5 still reads the old store's hint: {}",
        before.body
    );
    assert_eq!(finalize(&world, false).0, 200);

    world.stores.old.reset_counts();
    let after = world.send(
        "GET",
        "/customer/by-email/hinted@example.com",
        Some(&service()),
        None,
    );
    assert_eq!(after.status, 404, "{}", after.body);
    assert_eq!(
        world
            .send("GET", "/customer/cust_000001", Some(&service()), None)
            .status,
        200
    );
    let updated = world.send(
        "PATCH",
        "/customer/cust_000002",
        Some(&service()),
        Some(json!({ "name": "x" })),
    );
    assert_eq!(updated.status, 200, "{}", updated.body);
    let created = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "after_finalize", "email": "after@example.com" })),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    world.run_cron();
    let counts = world.stores.old.counts();
    assert_eq!(
        (counts.gets, counts.puts, counts.deletes, counts.lists),
        (0, 0, 0, 0),
        "{counts:?}"
    );
}

#[test]
fn once_finalized_no_move_and_no_admin_work_on_the_old_store_is_possible() {
    let world = world_in_phase_5();
    email_audit(&world);
    assert_eq!(finalize(&world, false).0, 200);
    let forced = post(
        &world,
        "/admin/migrate/phase",
        json!({ "phase": 4, "force": true, "reason": "try anyway" }),
    );
    assert_eq!(forced.0, 409, "{}", forced.1);
    assert!(forced.1.to_string().contains("finalized"), "{}", forced.1);
    let rollback = post(&world, "/admin/migrate/rollback", json!({ "toPhase": 2 }));
    assert!(
        rollback.0 == 409 && rollback.1.to_string().contains("finalized"),
        "{}",
        rollback.1
    );
    for (path, body) in [
        ("/admin/migrate/verify", json!({ "mode": "full" })),
        (
            "/admin/migrate/conflicts/settle",
            json!({ "rule": "keep_old" }),
        ),
    ] {
        let (status, answer) = post(&world, path, body);
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (409, Some("finalized")),
            "{path}: {answer}"
        );
    }
    let listing = world.send("GET", "/admin/migrate/conflicts", Some(&admin()), None);
    assert_eq!(listing.status, 409);
    let export = world.send(
        "GET",
        "/admin/migrate/export?store=old",
        Some(&admin()),
        None,
    );
    assert_eq!(
        export.status, 200,
        "the old store can still be exported, to archive it"
    );
    let import = world.send(
        "POST",
        "/admin/migrate/import?store=old",
        Some(&admin()),
        None,
    );
    assert_eq!(import.status, 409, "{}", import.body);
}

#[test]
fn leftovers_that_read_the_old_store_keep_the_migration_from_being_finalized() {
    let world = world_in_phase_5();
    email_audit(&world);
    world.stores.new.insert(
        "__migration/settle/customer_cust_000001/1",
        b"{}",
        PutOptions::default(),
    );
    let entry = json!({ "key": "customer_cust_000002", "kind": "unordered", "foundAt": 1 });
    world.stores.new.insert(
        "__migration/conflict/customer_cust_000002",
        entry.to_string().as_bytes(),
        PutOptions::default(),
    );
    let (status, body) = finalize(&world, true);
    assert_eq!(status, 200);
    let unmet = body["unmet"].to_string();
    assert!(
        unmet.contains("read-repair") && unmet.contains("conflict"),
        "{unmet}"
    );
    assert_eq!(finalize(&world, false).0, 409);
}

#[test]
fn once_finalized_the_status_and_the_dry_runs_offer_no_move() {
    let world = world_in_phase_5();
    email_audit(&world);
    assert_eq!(finalize(&world, false).0, 200);
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert!(
        status.body["gates"]["forward"].is_null(),
        "{}",
        status.body["gates"]
    );
    assert!(
        status.body["gates"]["back"].is_null(),
        "{}",
        status.body["gates"]
    );
    let (code, body) = post(
        &world,
        "/admin/migrate/rollback",
        json!({ "toPhase": 2, "dryRun": true }),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("finalized"), "{body}");
}

#[test]
fn once_finalized_and_settled_the_working_keys_go_and_the_record_and_audit_stay() {
    let purge = |world: &World, body: Value| post(world, "/admin/migrate/finalize/purge", body);
    let world = world_in_phase_5();
    let (status, body) = purge(&world, json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "purge_not_allowed");

    email_audit(&world);
    assert_eq!(finalize(&world, false).0, 200);
    let working = |world: &World| {
        let keys = world.stores.new.keys();
        let of = |p: &str| keys.iter().filter(|k| k.starts_with(p)).count();
        (
            of("__migration/") - of("__migration/audit/") - of("__migration/phase"),
            of("__migration/audit/"),
        )
    };
    let (before, audited) = working(&world);
    assert!(
        before >= 2,
        "the checkpoint and the email audit at least: {before}"
    );

    let (status, body) = purge(&world, json!({ "dryRun": true }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], before as u64, "{body}");
    assert_eq!(body["complete"], true);
    assert_eq!(working(&world).0, before, "a dry run removes nothing");

    let (status, body) = purge(&world, json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"], before as u64, "{body}");
    let (after, audited_after) = working(&world);
    assert_eq!(after, 0);
    assert!(
        audited_after >= audited + 2,
        "the purge is audited, the audit kept"
    );
    assert!(world.new_value("__migration/phase").unwrap()["finalizedAt"].is_u64());
    let read = world.send("GET", "/customer/cust_000001", Some(&service()), None);
    assert_eq!(read.status, 200, "{}", read.body);
    let status = world.send("GET", "/admin/migrate/status", Some(&admin()), None);
    assert_eq!(status.status, 200, "{}", status.body);
    let (status, body) = purge(&world, json!({ "cursor": 7 }));
    assert_eq!(status, 400, "{body}");
}

/// A migration in phase 5 whose clients deleted `deleted` customers after the backfill,
/// finalized: their tombstones are in the new store.
fn finalized_with_tombstones(deleted: usize) -> World {
    let world = World::in_phase(Phase::Legacy);
    seed_legacy(&world, 30);
    for phase in [Phase::DualWrite, Phase::ReadNew, Phase::Backfill] {
        world.set_phase(phase);
    }
    world.run_cron_until_backfill_stops();
    for i in 0..deleted {
        let path = format!("/customer/cust_{i:06}");
        let answer = world.send("DELETE", &path, Some(&service()), None);
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    world.set_phase(Phase::NewPrimary);
    world.set_phase(Phase::Complete);
    email_audit(&world);
    assert_eq!(finalize(&world, false).0, 200);
    world
}

fn tombstones_in(world: &World) -> Vec<String> {
    let mut keys: Vec<String> = world
        .stores
        .new
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("customer_"))
        .filter(|k| {
            world
                .new_value(k)
                .is_some_and(|v| v.get("__tombstone").is_some())
        })
        .collect();
    keys.sort();
    keys
}

#[test]
fn tombstones_are_purged_only_once_finalized() {
    let world = World::in_phase(Phase::Complete);
    let (status, body) = post(&world, "/admin/migrate/finalize/tombstones", json!({}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "purge_not_allowed");
    let (status, body) = post(
        &world,
        "/admin/migrate/finalize/tombstones",
        json!({ "dryRun": true, "everything": true }),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn once_finalized_the_tombstones_go_page_by_page_and_the_customers_can_come_back() {
    let purge =
        |world: &World, body: Value| post(world, "/admin/migrate/finalize/tombstones", body);
    let world = finalized_with_tombstones(7);
    let before = tombstones_in(&world);
    assert_eq!(before.len(), 7, "{before:?}");

    let (status, body) = purge(&world, json!({ "dryRun": true }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["tombstones"].as_u64(), body["removed"].as_u64()),
        (Some(7), Some(7)),
        "{body}"
    );
    assert_eq!(tombstones_in(&world), before, "a dry run removes nothing");

    world.stores.old.reset_counts();
    let (mut removed, mut export, mut cursor, mut pages) = (0, String::new(), Value::Null, 0);
    loop {
        let (status, body) = purge(&world, json!({ "cursor": cursor, "limit": 4 }));
        assert_eq!(status, 200, "{body}");
        assert!(body["listed"].as_u64().unwrap() <= 4, "{body}");
        removed += body["removed"].as_u64().unwrap();
        export.push_str(body["export"].as_str().unwrap());
        pages += 1;
        if body["complete"] == true {
            break;
        }
        cursor = body["cursor"].clone();
    }
    assert_eq!(removed, 7);
    assert!(pages >= 8, "30 customer keys in pages of 4: {pages}");
    assert!(tombstones_in(&world).is_empty());
    let exported: Vec<String> = export
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .inspect(|line| assert!(line["value"].as_str().unwrap().contains("__tombstone")))
        .map(|line| line["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exported, before, "the export holds each tombstone removed");
    let counts = world.stores.old.counts();
    assert_eq!(
        (counts.gets, counts.puts, counts.deletes, counts.lists),
        (0, 0, 0, 0)
    );

    let gone = world.send("GET", "/customer/cust_000001", Some(&service()), None);
    assert_eq!(gone.status, 404, "{}", gone.body);
    let kept = world.send("GET", "/customer/cust_000009", Some(&service()), None);
    assert_eq!(kept.status, 200, "{}", kept.body);
    let again = world.send(
        "POST",
        "/customer",
        Some(&service()),
        Some(json!({ "customerId": "cust_000001", "email": "back@example.com" })),
    );
    assert_eq!(again.status, 201, "{}", again.body);
    let (status, body) = purge(&world, json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["tombstones"].as_u64(), body["removed"].as_u64()),
        (Some(0), Some(0))
    );
    let audit = world.send("GET", "/admin/migrate/audit", Some(&admin()), None);
    let actions = audit.body.to_string();
    assert!(actions.contains("tombstones_purge") && actions.contains("tombstones_purged"));
}

#[test]
fn once_finalized_a_delete_leaves_no_tombstone() {
    let world = finalized_with_tombstones(0);
    let answer = world.send("DELETE", "/customer/cust_000004", Some(&service()), None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(world.new_value("customer_cust_000004").is_none());
    assert!(tombstones_in(&world).is_empty());
}
