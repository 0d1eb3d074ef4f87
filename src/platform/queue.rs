//! The backfill queue (docs/design.md §13): the producer the planner sends chunks
//! through, and the consumer event that hands batches to the core. Without the
//! `BACKFILL_QUEUE` binding the worker copies in its cron, as before.

use crate::logging::Level;
use futures::future::LocalBoxFuture;
use worker::js_sys::JSON;
use worker::{event, Context, Env, MessageBatch, MessageExt, RawMessage};

use super::coordinator::DoRegister;
use super::writers::DoWriters;
use crate::migration::copying::fanout::{self, ChunkQueue, Disposition, Fanout, QueueMessage};
use crate::store::{StoreError, StoreResult};

pub const BINDING: &str = "BACKFILL_QUEUE";
/// Messages per `sendBatch` (the platform's cap).
const MESSAGES_PER_SEND: usize = 100;
/// Bytes per `sendBatch`, under the platform's 256 KB.
const BYTES_PER_SEND: usize = 200 * 1024;

pub struct WorkerQueue(worker::Queue);

impl WorkerQueue {
    /// The queue, if the worker has the binding.
    pub fn from_env(env: &Env) -> Option<Self> {
        env.queue(BINDING).ok().map(WorkerQueue)
    }

    async fn send_all(&self, messages: Vec<QueueMessage>) -> StoreResult<()> {
        let failed = |e: worker::Error| StoreError::new("queue send", e.to_string());
        let mut batch: Vec<QueueMessage> = Vec::new();
        let mut bytes = 0;
        for message in messages {
            let size = serde_json::to_vec(&message).map_or(0, |b| b.len());
            if !batch.is_empty()
                && (batch.len() == MESSAGES_PER_SEND || bytes + size > BYTES_PER_SEND)
            {
                self.0
                    .send_batch(std::mem::take(&mut batch))
                    .await
                    .map_err(failed)?;
                bytes = 0;
            }
            bytes += size;
            batch.push(message);
        }
        if !batch.is_empty() {
            self.0.send_batch(batch).await.map_err(failed)?;
        }
        Ok(())
    }
}

impl ChunkQueue for WorkerQueue {
    fn send(&self, messages: Vec<QueueMessage>) -> LocalBoxFuture<'_, StoreResult<()>> {
        Box::pin(self.send_all(messages))
    }
}

/// A batch from the backfill queue or from its dead-letter queue (whose name ends in
/// `-dlq`, as wrangler.toml names it).
#[event(queue)]
async fn queue(batch: MessageBatch<QueueMessage>, env: Env, _ctx: Context) -> worker::Result<()> {
    let (Ok(config), Ok(stores), Some(queue)) = (
        super::config(&env),
        super::stores(&env),
        WorkerQueue::from_env(&env),
    ) else {
        worker::console_error!("queue: the worker is misconfigured");
        batch.retry_all();
        return Ok(());
    };
    let dead_letters = batch.queue().ends_with("-dlq");
    let (messages, bodies) = readable(&batch, dead_letters);
    let register = DoRegister::new(&env);
    let fanout = Fanout {
        register: &register,
        queue: &queue,
    };
    let now_ms = super::now_ms();
    if dead_letters {
        let dispositions = fanout::dead_letters(fanout, &bodies, now_ms).await;
        settle(&messages, dispositions);
        let took = super::now_ms().saturating_sub(now_ms);
        let point = crate::metrics::of_dead_letters(messages.len(), took);
        super::metrics::write(&env, &point, config.log_level);
        let fields = serde_json::json!({ "deadLettered": messages.len() });
        super::log(config.log_level, Level::Warn, "queue", fields, None);
        return Ok(());
    }
    let settings = (config.default_phase, config.gate_settings());
    // A fanned-out email audit repairs mappings through the emails' objects.
    let emails = DoWriters::new(&env);
    let mut consumed = fanout::consume((&stores, &emails), fanout, settings, &bodies, now_ms).await;
    settle(&messages, std::mem::take(&mut consumed.dispositions));
    // The clock moves on at each I/O, so this is the invocation's time waiting on KV, the
    // coordinator and the queue.
    let took_ms = super::now_ms().saturating_sub(now_ms);
    let took = Some(took_ms);
    let point = crate::metrics::of_queue(&consumed, took_ms);
    super::metrics::write(&env, &point, config.log_level);
    let fields = serde_json::json!({ "consumed": consumed });
    super::log(config.log_level, Level::Info, "queue", fields, took);
    Ok(())
}

/// The batch's messages this version can read, with their bodies. One it cannot read
/// (a kind a newer version sends, during a gradual deployment) is settled alone, never
/// with the batch: retried, so a consumer that reads it takes it, or, reaching the
/// dead-letter queue, acknowledged so it cannot block it.
fn readable(
    batch: &MessageBatch<QueueMessage>,
    dead_letters: bool,
) -> (Vec<RawMessage>, Vec<QueueMessage>) {
    let mut messages = Vec::new();
    let mut bodies = Vec::new();
    for message in batch.raw_iter() {
        let body = JSON::stringify(&message.body())
            .ok()
            .and_then(|text| text.as_string())
            .and_then(|text| serde_json::from_str::<QueueMessage>(&text).ok());
        match body {
            Some(body) => {
                messages.push(message);
                bodies.push(body);
            }
            None if dead_letters => message.ack(),
            None => message.retry(),
        }
    }
    if messages.len() < batch.raw_iter().len() {
        worker::console_error!("queue: a batch held messages this version cannot read");
    }
    (messages, bodies)
}

fn settle(messages: &[RawMessage], dispositions: Vec<Disposition>) {
    for (message, disposition) in messages.iter().zip(dispositions) {
        match disposition {
            Disposition::Ack => message.ack(),
            Disposition::Retry => message.retry(),
        }
    }
}
