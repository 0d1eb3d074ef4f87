//! Retries with exponential backoff, for calls that are safe to repeat: reads, and the
//! admin calls that resume from a checkpoint (backfill batches, verification, the email
//! audit, rollback rounds). A phase move or an import is never repeated: its first
//! attempt may have acted before the answer was lost.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::client::Answer;
use crate::outcome::{CommandResult, Failure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Five attempts over about 7.5 s (0.5, 1, 2, 4 s, each with jitter): a worker
    /// redeploy or a KV blip passes; a worker that is down is reported within seconds.
    pub const STANDARD: RetryPolicy = RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(8),
    };

    /// How long to wait before retry `retry` (1 for the first), given `jitter` in [0, 1):
    /// between half and all of `first_delay × 2^(retry-1)`, capped at `max_delay`, so
    /// clients that failed together do not all come back together.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let doubling = 2u32.saturating_pow(retry.saturating_sub(1).min(16));
        let full = self
            .first_delay
            .saturating_mul(doubling)
            .min(self.max_delay);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A number in [0, 1) from std's per-process random keys, enough for jitter.
pub fn jitter() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Why an attempt is worth repeating: the worker or a store failed (5xx), or the
/// worker could not be reached. `None`: keep the outcome.
fn retry_reason(outcome: &CommandResult<Answer>) -> Option<String> {
    match outcome {
        Ok(answer) if (500..=599).contains(&answer.status) => {
            Some(format!("answered {} ({})", answer.status, answer.failure()))
        }
        Err(Failure::Unreachable(message)) => Some(format!("failed: {message}")),
        _ => None,
    }
}

/// Runs `attempt` until it succeeds, fails in a way retrying cannot mend, or the policy's
/// attempts are spent (then the last outcome stands). Each retry is announced through
/// `notice`, and waited for through `pause`.
pub fn with_retries(
    policy: RetryPolicy,
    what: &str,
    mut attempt: impl FnMut() -> CommandResult<Answer>,
    mut pause: impl FnMut(Duration),
    mut notice: impl FnMut(&str),
) -> CommandResult<Answer> {
    let mut tries = 1;
    loop {
        let outcome = attempt();
        let Some(reason) = retry_reason(&outcome) else {
            return outcome;
        };
        if tries >= policy.attempts {
            return outcome;
        }
        let delay = policy.delay(tries, jitter());
        notice(&format!(
            "kv-migrate: {what} {reason}; retrying in {:.1}s (attempt {} of {})",
            delay.as_secs_f64(),
            tries + 1,
            policy.attempts
        ));
        pause(delay);
        tries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> CommandResult<Answer> {
        Ok(Answer {
            status,
            body: r#"{"error":{"code":"store_unavailable","message":"retry"}}"#.into(),
            headers: Vec::new(),
        })
    }

    /// Runs `with_retries` over scripted outcomes; returns the final status (or exit
    /// code of the failure), the attempts made and the pauses taken.
    fn run(outcomes: Vec<CommandResult<Answer>>) -> (Result<u16, u8>, usize, Vec<Duration>) {
        let mut outcomes = outcomes.into_iter();
        let mut attempts = 0;
        let mut pauses = Vec::new();
        let mut notices = Vec::new();
        let result = with_retries(
            RetryPolicy::STANDARD,
            "GET /admin/migrate/status",
            || {
                attempts += 1;
                outcomes.next().expect("no more outcomes scripted")
            },
            |d| pauses.push(d),
            |n| notices.push(n.to_owned()),
        );
        assert_eq!(notices.len(), pauses.len());
        assert!(notices
            .iter()
            .all(|n| n.starts_with("kv-migrate: GET /admin/migrate/status ")));
        (
            result.map(|a| a.status).map_err(|f| f.exit_code()),
            attempts,
            pauses,
        )
    }

    #[test]
    fn delays_double_from_half_a_second_up_to_eight_with_jitter_below() {
        let policy = RetryPolicy::STANDARD;
        let top: Vec<u64> = (1..=6)
            .map(|r| policy.delay(r, 1.0).as_millis() as u64)
            .collect();
        assert_eq!(top, [500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(policy.delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(policy.delay(40, 0.0), Duration::from_secs(4));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn a_503_then_a_200_succeeds_after_one_pause() {
        let (result, attempts, pauses) = run(vec![answer(503), answer(200)]);
        assert_eq!(result, Ok(200));
        assert_eq!(attempts, 2);
        assert_eq!(pauses.len(), 1);
        assert!(pauses[0] >= Duration::from_millis(250) && pauses[0] <= Duration::from_millis(500));
    }

    #[test]
    fn a_network_error_is_retried() {
        let blip = Err(Failure::Unreachable("connection refused".into()));
        let (result, attempts, _) = run(vec![blip, answer(200)]);
        assert_eq!((result, attempts), (Ok(200), 2));
    }

    #[test]
    fn five_failures_give_up_with_the_last_one() {
        let (result, attempts, pauses) = run((0..5).map(|_| answer(502)).collect());
        assert_eq!((result, attempts, pauses.len()), (Ok(502), 5, 4));
        let down = (0..5)
            .map(|_| Err(Failure::Unreachable("refused".into())))
            .collect();
        assert_eq!(run(down).0, Err(6));
    }

    #[test]
    fn answers_that_retrying_cannot_mend_are_kept_at_once() {
        for status in [200, 400, 401, 404, 409] {
            assert_eq!(run(vec![answer(status)]), (Ok(status), 1, Vec::new()));
        }
        let bad = Err(Failure::Other("not JSON".into()));
        assert_eq!(run(vec![bad]).1, 1);
    }
}
