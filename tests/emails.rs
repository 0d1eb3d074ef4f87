//! The email-mapping audit: derive, repoint, re-key; report conflicts and orphans.

mod common;

use common::*;
use customer_kv_migration::migration::copying::fanout::local::LocalQueue;
use customer_kv_migration::migration::copying::fanout::{Fanout, QueueMessage};
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::PutOptions;
use serde_json::{json, Value};

fn raw_hash_key(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "email_to_customer_{}",
        hex::encode(Sha256::digest(raw.as_bytes()))
    )
}

/// The messy legacy mappings, in both stores (as after the backfill).
fn messy_world() -> World {
    let world = World::in_phase(Phase::ReadNew);
    let records = [
        ("a", "a@example.com"),
        ("b", "Mixed.Case@Example.COM"),
        ("c", "shared@example.com"),
        ("d", "shared@example.com"),
        ("e", "new@example.com"),
        ("f", "old@example.com"),
    ];
    let mappings = [
        (raw_hash_key("  Mixed.Case@Example.COM "), "b"),
        (mapping_key("shared@example.com"), "c"),
        (mapping_key("old@example.com"), "e"), // e moved on; f holds old@ now
        (mapping_key("new@example.com"), "e"),
        (mapping_key("ghost@example.com"), "ghost"),
    ];
    for store in [&world.stores.old, &world.stores.new] {
        for (id, email) in records {
            let record = json!({ "customerId": id, "email": email });
            store.insert(
                &format!("customer_{id}"),
                record.to_string().as_bytes(),
                PutOptions::default(),
            );
        }
        for (key, id) in &mappings {
            store.insert(key, id.as_bytes(), PutOptions::default());
        }
    }
    world
}

fn run(world: &World, dry_run: bool) -> Value {
    let response = world.send(
        "POST",
        "/admin/migrate/emails",
        Some(&admin()),
        Some(json!({ "dryRun": dry_run })),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

fn by_email(world: &World, email: &str) -> Option<String> {
    let response = world.send(
        "GET",
        &format!("/customer/by-email/{email}"),
        Some(&service()),
        None,
    );
    response.body["customerId"].as_str().map(str::to_owned)
}

#[test]
fn the_audit_repairs_what_it_can_and_reports_the_rest() {
    let world = messy_world();
    let before: Vec<_> = world.stores.new.keys();
    let dry = run(&world, true);
    let writes_after_dry: Vec<_> = world
        .stores
        .new
        .keys()
        .into_iter()
        .filter(|k| !k.starts_with("__migration/"))
        .collect();
    assert_eq!(
        writes_after_dry,
        before
            .into_iter()
            .filter(|k| !k.starts_with("__migration/"))
            .collect::<Vec<_>>(),
        "a dry run changes no mapping"
    );

    let report = run(&world, false);
    for field in ["derived", "repointed", "rekeyed", "conflicts", "orphans"] {
        assert_eq!(
            dry[field], report[field],
            "dry run and real run agree on {field}"
        );
    }
    assert_eq!(report["complete"], true);
    assert_eq!(report["derived"], 2, "a and b: {report}");
    assert_eq!(report["repointed"], 1, "old@ now belongs to f: {report}");
    assert_eq!(report["rekeyed"], 1, "b's un-normalised mapping: {report}");
    assert_eq!(report["conflicts"], 1, "{report}");
    assert_eq!(report["orphans"], 1, "{report}");
    assert!(report["conflictSamples"][0]
        .as_str()
        .unwrap()
        .contains("c and d"));

    assert_eq!(by_email(&world, "a@example.com").as_deref(), Some("a"));
    assert_eq!(
        by_email(&world, "mixed.case@example.com").as_deref(),
        Some("b")
    );
    assert_eq!(by_email(&world, "old@example.com").as_deref(), Some("f"));
    assert_eq!(
        by_email(&world, "shared@example.com").as_deref(),
        Some("c"),
        "a conflict is not overwritten"
    );
    assert!(
        world
            .stores
            .new
            .peek(&raw_hash_key("  Mixed.Case@Example.COM "))
            .is_none(),
        "re-keyed"
    );
    assert!(
        world
            .stores
            .old
            .peek(&raw_hash_key("  Mixed.Case@Example.COM "))
            .is_none(),
        "in every written store"
    );
    assert!(
        world
            .stores
            .new
            .peek(&mapping_key("ghost@example.com"))
            .is_some(),
        "orphans are reported, not deleted"
    );

    let again = world
        .send(
            "POST",
            "/admin/migrate/emails",
            Some(&admin()),
            Some(json!({ "restart": true })),
        )
        .body;
    assert_eq!(
        (
            again["derived"].as_u64(),
            again["rekeyed"].as_u64(),
            again["repointed"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "idempotent: {again}"
    );
}

fn issues(world: &World, query: &str) -> Value {
    let response = world.send(
        "GET",
        &format!("/admin/migrate/emails/issues{query}"),
        Some(&admin()),
        None,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// Every issue of the latest real audit, page after page.
fn every_issue(world: &World) -> Vec<Value> {
    let mut all = Vec::new();
    let mut query = "?limit=7".to_owned();
    loop {
        let page = issues(world, &query);
        all.extend(page["issues"].as_array().unwrap().iter().cloned());
        match page["cursor"].as_str() {
            Some(cursor) => query = format!("?limit=7&cursor={cursor}"),
            None => return all,
        }
    }
}

#[test]
fn every_conflict_and_orphan_is_listed_not_only_twenty_samples() {
    let mut world = messy_world();
    for n in 0..30 {
        let key = mapping_key(&format!("ghost{n}@example.com"));
        for store in [&world.stores.old, &world.stores.new] {
            store.insert(&key, format!("gone{n}").as_bytes(), PutOptions::default());
        }
    }
    assert_eq!(issues(&world, "")["audit"], Value::Null, "no audit yet");
    run(&world, true);
    assert!(every_issue(&world).is_empty(), "a dry run writes no entry");
    let report = run(&world, false);
    assert_eq!(report["orphans"], 31, "{report}");
    assert_eq!(report["orphanSamples"].as_array().unwrap().len(), 20);
    let listed = every_issue(&world);
    let orphans: Vec<&Value> = listed.iter().filter(|i| i["kind"] == "orphan").collect();
    let conflicts: Vec<&Value> = listed.iter().filter(|i| i["kind"] == "conflict").collect();
    assert_eq!((orphans.len(), conflicts.len()), (31, 1), "{listed:?}");
    assert_eq!(conflicts[0]["key"], mapping_key("shared@example.com"));
    assert_eq!(conflicts[0]["customers"], json!(["c", "d"]));
    assert!(orphans.iter().any(|o| o["customers"] == json!(["gone7"])));

    // Settled by hand, the next audit no longer lists them.
    world.now_ms += 60_000;
    for n in 0..30 {
        let key = mapping_key(&format!("ghost{n}@example.com"));
        for store in [&world.stores.old, &world.stores.new] {
            store.remove(&key);
        }
    }
    let response = world.send(
        "POST",
        "/admin/migrate/emails",
        Some(&admin()),
        Some(json!({ "restart": true })),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(every_issue(&world).len(), 2, "the conflict and the ghost");
}

/// The messy mappings and `missing` more customers whose mappings are missing, audited
/// through the queue when `queued`.
fn messy_world_of(missing: usize, queued: bool) -> World {
    let mut world = messy_world();
    for n in 0..missing {
        let record =
            json!({ "customerId": format!("m{n:03}"), "email": format!("m{n}@example.com") });
        for store in [&world.stores.old, &world.stores.new] {
            store.insert(
                &format!("customer_m{n:03}"),
                record.to_string().as_bytes(),
                PutOptions::default(),
            );
        }
    }
    if queued {
        world.queue = Some(LocalQueue::default());
    }
    world
}

/// Calls the audit until complete, handing what it queued to consumers in between.
fn run_through_the_queue(world: &World, dry_run: bool) -> Value {
    let mut report = run(world, dry_run);
    for _ in 0..20 {
        if report["complete"] == true {
            return report;
        }
        world.drain_queue(8);
        report = run(world, dry_run);
    }
    panic!("the audit did not complete: {report}");
}

const COUNTS: [&str; 7] = [
    "recordsScanned",
    "mappingsScanned",
    "derived",
    "repointed",
    "rekeyed",
    "conflicts",
    "orphans",
];

fn mappings_of(world: &World) -> Vec<(String, Option<Vec<u8>>)> {
    world
        .stores
        .new
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("email_to_customer_"))
        .map(|k| (k.clone(), world.stores.new.peek(&k)))
        .collect()
}

#[test]
fn the_audit_fanned_out_finds_and_repairs_what_the_audit_in_one_call_does() {
    for dry_run in [true, false] {
        let alone = messy_world_of(45, false);
        let in_one_call = run(&alone, dry_run);
        assert_eq!(in_one_call["complete"], true, "{in_one_call}");
        let queued = messy_world_of(45, true);
        let before = mappings_of(&queued);
        let fanned_out = run_through_the_queue(&queued, dry_run);
        for field in COUNTS {
            assert_eq!(
                fanned_out[field], in_one_call[field],
                "{field} (dry run: {dry_run}): {fanned_out}"
            );
        }
        let chunks = &fanned_out["fanout"];
        // 51 records in chunks of 20, then the mappings.
        assert!(chunks["queued"].as_u64().unwrap() > 3, "{chunks}");
        assert_eq!(chunks["done"], chunks["queued"], "{chunks}");
        assert_eq!(chunks["failed"]["count"], 0);
        assert!(fanned_out.get("plannedRepoints").is_none());
        if dry_run {
            assert_eq!(mappings_of(&queued), before, "a dry run writes nothing");
        } else {
            assert_eq!(mappings_of(&queued), mappings_of(&alone));
            assert_eq!(
                by_email(&queued, "m44@example.com").as_deref(),
                Some("m044")
            );
        }
    }
}

fn waiting_audit_keys(world: &World) -> Vec<String> {
    let queue = world.queue.as_ref().unwrap();
    let deliveries = queue.take(usize::MAX);
    let keys = deliveries
        .iter()
        .filter_map(|d| match &d.message {
            QueueMessage::Audit(chunk) => Some(chunk.keys.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    for delivery in deliveries {
        queue.redeliver(delivery);
    }
    keys
}

#[test]
fn the_mappings_pass_waits_until_every_record_is_audited() {
    let world = messy_world_of(45, true);
    let first = run(&world, false);
    assert_eq!(
        (
            first["complete"].as_bool(),
            first["fanout"]["queued"].as_u64()
        ),
        (Some(false), Some(3)),
        "{first}"
    );
    let keys = waiting_audit_keys(&world);
    assert_eq!(keys.len(), 51);
    assert!(keys.iter().all(|k| k.starts_with("customer_")));
    // Until consumers report the records, the mappings (some of them to be derived) wait.
    let waiting = run(&world, false);
    assert_eq!(waiting["fanout"]["queued"], 3, "{waiting}");
    world.drain_queue(8);
    let listed = run(&world, false);
    assert!(listed["fanout"]["queued"].as_u64().unwrap() > 3, "{listed}");
    let keys = waiting_audit_keys(&world);
    assert!(!keys.is_empty() && keys.iter().all(|k| k.starts_with("email_to_customer_")));
}

#[test]
fn a_chunk_delivered_twice_counts_once() {
    let alone = messy_world_of(45, false);
    let in_one_call = run(&alone, false);
    let world = messy_world_of(45, true);
    let mut report = run(&world, false);
    let queue = world.queue.as_ref().unwrap();
    for _ in 0..20 {
        if report["complete"] == true {
            break;
        }
        for delivery in queue.take(usize::MAX) {
            queue.redeliver(delivery.clone());
            queue.redeliver(delivery);
        }
        world.drain_queue(8);
        report = run(&world, false);
    }
    for field in COUNTS {
        assert_eq!(report[field], in_one_call[field], "{field}: {report}");
    }
}

#[test]
fn a_chunk_that_kept_failing_is_reported_and_a_new_audit_checks_it_again() {
    let world = messy_world_of(45, true);
    run(&world, false);
    world.dead_letter_next();
    let report = run_through_the_queue(&world, false);
    assert_eq!(report["fanout"]["failed"]["count"], 1, "{report}");
    assert_eq!(
        report["fanout"]["failed"]["keys"].as_array().unwrap().len(),
        20
    );
    assert_eq!(report["recordsScanned"], 51 - 20, "{report}");
    // The next call starts a new audit, which checks every record again.
    let again = run_through_the_queue(&world, false);
    assert_eq!(
        (
            again["recordsScanned"].as_u64(),
            again["fanout"]["failed"]["count"].as_u64()
        ),
        (Some(51), Some(0)),
        "{again}"
    );
}

#[test]
fn two_customers_found_holding_one_unmapped_email_are_a_conflict_not_two_repairs() {
    for queued in [false, true] {
        let world = messy_world_of(0, queued);
        for id in ["twin_x", "twin_y"] {
            let record = json!({ "customerId": id, "email": "twin@example.com" });
            for store in [&world.stores.old, &world.stores.new] {
                store.insert(
                    &format!("customer_{id}"),
                    record.to_string().as_bytes(),
                    PutOptions::default(),
                );
            }
        }
        let report = run_through_the_queue(&world, false);
        // a, b and the first twin derived; the second twin finds the email taken.
        assert_eq!(
            (report["derived"].as_u64(), report["conflicts"].as_u64()),
            (Some(3), Some(2)),
            "queued: {queued}: {report}"
        );
        let twin = mapping_key("twin@example.com");
        let listed = every_issue(&world);
        assert!(
            listed.iter().any(|issue| issue["key"] == twin.as_str()),
            "{listed:?}"
        );
        assert_eq!(
            by_email(&world, "twin@example.com").as_deref(),
            Some("twin_x")
        );
    }
}

#[test]
fn a_batch_of_audit_chunks_that_all_need_repairs_fits_one_invocation() {
    let world = messy_world_of(200, true);
    run(&world, false);
    let queue = world.queue.as_ref().unwrap();
    let batch: Vec<QueueMessage> = queue.take(8).into_iter().map(|d| d.message).collect();
    assert_eq!(batch.len(), 8);
    let register = world.register();
    let fanout = Fanout {
        register: &register,
        queue,
    };
    let consumed = world.consume_batch(fanout, &batch);
    assert_eq!(consumed.retried, 0, "{consumed:?}");
    assert_eq!(consumed.audited, 160);
    assert!(consumed.operations <= 1_000, "{consumed:?}");
}
