//! Consumers of the backfill queue in histories that fan out (docs/design.md §13): they
//! run among the clients, the cron and the admins, and the queue misbehaves as
//! at-least-once delivery allows: batches out of order, a message twice, an
//! acknowledgement lost (the message comes again), messages that keep failing
//! dead-lettered. Their copies go through the same faulty stores as everything else, and
//! their ops on the coordinator's tally fail as often, before or after it applies them.

use customer_kv_migration::error::Error;
use customer_kv_migration::migration::checking::comparisons::{CompareAnswer, CompareOp};
use customer_kv_migration::migration::checking::emails_fanout::{AuditAnswer, AuditOp};
use customer_kv_migration::migration::copying::fanout::local::{Delivery, LocalQueue};
use customer_kv_migration::migration::copying::fanout::{
    consume, dead_letters, ChunkQueue, Disposition, Fanout, QueueMessage, TallyAnswer, TallyOp,
};
use customer_kv_migration::migration::state::coordinator::{
    LocalRegister, PhaseRegister, RecordOp, RecordOutcome,
};
use customer_kv_migration::store::{StoreError, StoreResult};

use super::rng::Rng;
use super::store::{pause, Fate, SimKv};
use super::Sim;

/// The coordinator as consumers reach it: a tally op may fail before the coordinator
/// applies it, or after (its answer lost), drawn like any store operation's fault.
struct FaultyRegister<'a> {
    sim: &'a Sim,
    inner: LocalRegister<'a, SimKv>,
}

impl PhaseRegister for FaultyRegister<'_> {
    async fn apply(&self, op: RecordOp) -> Result<RecordOutcome, Error> {
        self.inner.apply(op).await
    }

    async fn tally(&self, op: TallyOp) -> StoreResult<TallyAnswer> {
        match self.fate("tally", &op).await {
            Fate::Succeed => self.inner.tally(op).await,
            Fate::FailBefore => injected(),
            Fate::FailAfter => {
                let _ = self.inner.tally(op).await;
                injected()
            }
        }
    }

    async fn compare(&self, op: CompareOp) -> StoreResult<CompareAnswer> {
        match self.fate("compare", &op).await {
            Fate::Succeed => self.inner.compare(op).await,
            Fate::FailBefore => injected(),
            Fate::FailAfter => {
                let _ = self.inner.compare(op).await;
                injected()
            }
        }
    }

    async fn audit(&self, dry_run: bool, op: AuditOp) -> StoreResult<AuditAnswer> {
        match self.fate("audit", &op).await {
            Fate::Succeed => self.inner.audit(dry_run, op).await,
            Fate::FailBefore => injected(),
            Fate::FailAfter => {
                let _ = self.inner.audit(dry_run, op).await;
                injected()
            }
        }
    }
}

impl FaultyRegister<'_> {
    /// The op's fate, drawn like a store operation's and named by its kind.
    async fn fate(&self, what: &str, op: &impl serde::Serialize) -> Fate {
        let name = serde_json::to_value(op)
            .ok()
            .and_then(|v| v["op"].as_str().map(str::to_owned))
            .unwrap_or_default();
        self.sim.stores.new.step(what, &name).await
    }
}

fn injected<T>() -> StoreResult<T> {
    Err(StoreError::new("coordinator", "injected fault"))
}

fn faulty_register(sim: &Sim) -> FaultyRegister<'_> {
    FaultyRegister {
        sim,
        inner: sim.register(),
    }
}

fn faulty_fanout<'a>(
    sim: &'a Sim,
    register: &'a FaultyRegister<'a>,
) -> Fanout<'a, FaultyRegister<'a>> {
    Fanout {
        register,
        queue: sim.queue.as_ref().expect("a queue") as &dyn ChunkQueue,
    }
}

/// One consumer: `rounds` times, maybe takes a batch and consumes it.
pub async fn consumer_task(sim: &Sim, task: usize, rounds: usize, mut rng: Rng) {
    let Some(queue) = sim.queue.as_ref() else {
        return;
    };
    for step in 0..rounds {
        for _ in 0..rng.below(40) {
            pause().await;
        }
        if !sim.takes_step(task, step) {
            continue;
        }
        let batch = take_batch(queue, &mut rng);
        if !batch.is_empty() {
            consume_batch(sim, queue, batch, &mut rng).await;
            sim.note(format!(
                "[{task}.{step}] consumer: {} waiting",
                queue.waiting()
            ));
        }
        if rng.chance(0.3) {
            let dead: Vec<QueueMessage> =
                queue.take_dead(4).into_iter().map(|d| d.message).collect();
            let register = faulty_register(sim);
            let fanout = faulty_fanout(sim, &register);
            // A dead letter whose tally op failed is simply lost here; the planner never
            // counts its chunk done, which the convergence would show as a stuck pass.
            let _ = dead_letters(fanout, &dead, sim.now()).await;
        }
    }
}

/// Up to four messages, from the front or from anywhere (reordered), sometimes with a
/// duplicate of one delivered again later.
fn take_batch(queue: &LocalQueue, rng: &mut Rng) -> Vec<Delivery> {
    let size = 1 + rng.below(4) as usize;
    let mut batch = Vec::new();
    for _ in 0..size {
        let waiting = queue.waiting();
        if waiting == 0 {
            break;
        }
        let index = if rng.chance(0.3) {
            rng.below(waiting as u64) as usize
        } else {
            0
        };
        if let Some(delivery) = queue.take_at(index) {
            if rng.chance(0.1) {
                queue.redeliver(delivery.clone());
            }
            batch.push(delivery);
        }
    }
    batch
}

async fn consume_batch(sim: &Sim, queue: &LocalQueue, batch: Vec<Delivery>, rng: &mut Rng) {
    let register = faulty_register(sim);
    let fanout = faulty_fanout(sim, &register);
    let settings = (sim.config.default_phase, sim.config.gate_settings());
    let messages: Vec<QueueMessage> = batch.iter().map(|d| d.message.clone()).collect();
    let dispositions = consume(
        (&sim.stores, &sim.writers()),
        fanout,
        settings,
        &messages,
        sim.now(),
    )
    .await
    .dispositions;
    for (delivery, disposition) in batch.into_iter().zip(dispositions) {
        if disposition == Disposition::Ack && rng.chance(0.05) {
            queue.redeliver(delivery); // the acknowledgement was lost
        } else {
            queue.settle(delivery, disposition);
        }
    }
}

/// Consumes everything waiting, dead letters included, in order and without faults.
pub fn drain(sim: &Sim) {
    let Some(queue) = sim.queue.as_ref() else {
        return;
    };
    let register = sim.register();
    let fanout = sim.fanout(&register).expect("a queue");
    let settings = (sim.config.default_phase, sim.config.gate_settings());
    for _ in 0..10_000 {
        let batch = queue.take(8);
        let dead: Vec<QueueMessage> = queue.take_dead(8).into_iter().map(|d| d.message).collect();
        if batch.is_empty() && dead.is_empty() {
            return;
        }
        let messages: Vec<QueueMessage> = batch.iter().map(|d| d.message.clone()).collect();
        let dispositions = super::block_on(consume(
            (&sim.stores, &sim.writers()),
            fanout,
            settings,
            &messages,
            sim.now(),
        ))
        .dispositions;
        for (delivery, disposition) in batch.into_iter().zip(dispositions) {
            queue.settle(delivery, disposition);
        }
        super::block_on(dead_letters(fanout, &dead, sim.now()));
    }
    sim.violation("the queue did not drain".into());
}
