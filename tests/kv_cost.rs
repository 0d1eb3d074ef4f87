//! KV operations per request, counted exactly by the in-memory stores, with the phase
//! already cached in the isolate (the steady state). Prints the table it checks.

mod common;

use common::*;
use customer_kv_migration::phase::Phase;
use customer_kv_migration::store::OpCounts;
use serde_json::json;

fn cached_world(phase: Phase) -> World {
    let mut world = World::in_phase(phase);
    world.config.phase_cache_ms = 3_600_000;
    assert_eq!(world.send("GET", "/health", None, None).status, 200);
    world
}

fn seed_both(world: &World) {
    let record = br#"{"customerId":"c1","email":"ada@example.com","name":"Ada","updatedAt":"2024-01-01T00:00:00Z"}"#;
    for store in [&world.stores.old, &world.stores.new] {
        store.insert("customer_c1", record, Default::default());
        store.insert(&mapping_key("ada@example.com"), b"c1", Default::default());
    }
}

fn measure(
    world: &World,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, OpCounts, OpCounts) {
    world.reset_counts();
    let response = world.send(method, path, Some(&service()), body);
    (
        response.status,
        world.stores.old.counts(),
        world.stores.new.counts(),
    )
}

fn ops(old: OpCounts, new: OpCounts) -> String {
    format!(
        "{}r {}w",
        old.gets + new.gets + old.lists + new.lists,
        old.puts + new.puts + old.deletes + new.deletes
    )
}

#[test]
fn requests_cost_the_floor_of_their_phase() {
    println!(
        "phase | read hit | fallback read | by-email | update | update+email | create | delete"
    );
    for phase in Phase::ALL {
        let writes = phase.routing().writes.len() as u32;

        let mut world = cached_world(phase);
        seed_both(&world);
        let (status, old, new) = measure(&world, "GET", "/customer/c1", None);
        assert_eq!(status, 200);
        assert_eq!(
            (old.total() + new.total(), old.gets + new.gets),
            (1, 1),
            "{phase:?}: a read hit is one get"
        );
        let read_hit = ops(old, new);

        let fallback = if phase.falls_back() {
            let world = cached_world(phase);
            world
                .stores
                .old
                .insert("customer_c2", br#"{"customerId":"c2"}"#, Default::default());
            let (status, old, new) = measure(&world, "GET", "/customer/c2", None);
            assert_eq!(status, 200);
            // Two gets, and the fallback hit's record (read first: it is written at most
            // once a minute); in phases 2 and 3 also the read-repair: a list for the
            // expiration, the copy and its re-read.
            let expected = if phase.routing().writes.len() == 2 {
                (4, 2, 7)
            } else {
                (3, 1, 4)
            };
            assert_eq!(
                (old.gets + new.gets, new.puts, old.total() + new.total()),
                expected,
                "{phase:?}"
            );
            // The next read of that key hits the new store.
            if phase.routing().writes.len() == 2 {
                let (_, old_after, new_after) = measure(&world, "GET", "/customer/c2", None);
                assert_eq!((old_after.total(), new_after.total()), (0, 1), "{phase:?}");
            }
            ops(old, new)
        } else {
            "-".into()
        };

        let (status, old, new) = measure(&world, "GET", "/customer/by-email/ada@example.com", None);
        assert_eq!(status, 200);
        assert_eq!(
            old.total() + new.total(),
            2,
            "{phase:?}: mapping then record"
        );
        let by_email = ops(old, new);

        let (status, old, new) = measure(
            &world,
            "PATCH",
            "/customer/c1",
            Some(json!({ "name": "Ada L" })),
        );
        assert_eq!(status, 200);
        assert_eq!(
            (old.gets + new.gets, old.puts + new.puts),
            (1, writes),
            "{phase:?}: one read, one put per written store"
        );
        let update = ops(old, new);
        world.now_ms += 1_000; // KV takes one write a second to one key

        let (status, old, new) = measure(
            &world,
            "PATCH",
            "/customer/c1",
            Some(json!({ "email": "ada2@example.com" })),
        );
        assert_eq!(status, 200);
        let update_email = ops(old, new);

        let (status, old, new) = measure(
            &world,
            "POST",
            "/customer",
            Some(json!({ "customerId": "c9", "email": "z@example.com" })),
        );
        assert_eq!(status, 201);
        assert_eq!(
            old.puts + new.puts,
            2 * writes,
            "{phase:?}: record and mapping per written store"
        );
        let create = ops(old, new);
        world.now_ms += 1_000;

        let (status, old, new) = measure(&world, "DELETE", "/customer/c9", None);
        assert_eq!(status, 200);
        let delete = ops(old, new);

        println!("{} | {read_hit} | {fallback} | {by_email} | {update} | {update_email} | {create} | {delete}", phase.number());
    }
}

#[test]
fn the_phase_costs_one_read_per_isolate_per_cache_lifetime() {
    let mut world = World::in_phase(Phase::ReadNew);
    world.config.phase_cache_ms = 5_000;
    world.send("GET", "/health", None, None);
    world.reset_counts();
    world.send("GET", "/health", None, None);
    assert_eq!(world.stores.new.counts().total(), 0, "cached");
    world.now_ms += 5_000;
    world.send("GET", "/health", None, None);
    assert_eq!(world.stores.new.counts().gets, 1, "re-read once stale");
}
