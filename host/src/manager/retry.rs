//! What a sandboxed reconcile's outcome means for its delivery: done, deliver again after a
//! backoff, or give up because the attempts ran out.

use std::time::Duration;

use super::RetryPolicy;
use crate::result::Outcome;
use crate::wasm::{GuestOutcome, RunOutcome};

/// What an outcome means for the delivery.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    /// `Some(delay)`: deliver again; `None`: final.
    pub retry: Option<Duration>,
    /// How the attempt ended.
    pub outcome: Outcome,
    /// The result's message.
    pub message: String,
    /// The result's data.
    pub data: Option<serde_json::Value>,
    /// A line for the run's log, from the host.
    pub note: Option<String>,
    /// Final because a transient failure ran out of attempts.
    pub gave_up: bool,
}

/// Decides what the outcome of attempt `attempt` means under `policy`.
pub fn decide(outcome: RunOutcome, attempt: u32, policy: &RetryPolicy) -> Verdict {
    let can_retry = policy.can_retry(attempt);
    let backoff = policy.delay(attempt);
    match outcome {
        RunOutcome::Returned {
            outcome: GuestOutcome::Success,
            message,
            data,
        } => Verdict {
            retry: None,
            outcome: Outcome::Success,
            message,
            data,
            note: None,
            gave_up: false,
        },
        RunOutcome::Returned {
            outcome: GuestOutcome::Failure,
            message,
            data,
        } => Verdict {
            retry: None,
            outcome: Outcome::Failure,
            message,
            data,
            note: None,
            gave_up: false,
        },
        RunOutcome::Returned {
            outcome: GuestOutcome::Retry(after),
            message,
            data,
        } => {
            let delay = after.map_or(backoff, |a| a.max(backoff));
            Verdict {
                retry: can_retry.then_some(delay),
                outcome: Outcome::Retry,
                note: Some(note(attempt, policy, &message, delay, can_retry)),
                message: given_up(message, attempt, can_retry),
                data,
                gave_up: !can_retry,
            }
        }
        RunOutcome::Failed { kind, message } => {
            let retry = (kind.is_transient() && can_retry).then_some(backoff);
            Verdict {
                retry,
                outcome: Outcome::Failed(kind),
                note: Some(note(
                    attempt,
                    policy,
                    &format!("{message} ({kind})"),
                    backoff,
                    retry.is_some(),
                )),
                message: given_up(message, attempt, retry.is_some() || !kind.is_transient()),
                data: None,
                gave_up: kind.is_transient() && retry.is_none(),
            }
        }
    }
}

fn note(attempt: u32, p: &RetryPolicy, what: &str, delay: Duration, retrying: bool) -> String {
    if retrying {
        format!(
            "attempt {attempt} of {} failed: {what}; retrying in {}",
            p.max_attempts,
            humantime::format_duration(delay)
        )
    } else {
        format!("attempt {attempt} of {} failed: {what}", p.max_attempts)
    }
}

/// Adds "after N attempts" to the final message of a transient failure that ran out of
/// attempts.
fn given_up(message: String, attempt: u32, retrying_or_final: bool) -> String {
    if retrying_or_final || attempt <= 1 {
        message
    } else {
        format!("{message} (gave up after {attempt} attempts)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::FailureKind;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn transient_failures_retry_until_the_limit() {
        let trap = || RunOutcome::Failed {
            kind: FailureKind::Trap,
            message: "boom".into(),
        };
        let v = decide(trap(), 1, &policy(3));
        assert_eq!(v.retry, Some(Duration::from_secs(1)));
        let v = decide(trap(), 3, &policy(3));
        assert_eq!(v.retry, None);
        assert!(!v.outcome.is_success());
        assert_eq!(v.outcome.failure_kind(), Some(FailureKind::Trap));
        assert_eq!(v.message, "boom (gave up after 3 attempts)");
        assert!(v.gave_up);
    }

    #[test]
    fn guest_retry_respects_its_delay_and_the_limit() {
        let retry = |ms| RunOutcome::Returned {
            outcome: GuestOutcome::Retry(Some(Duration::from_millis(ms))),
            message: "busy".into(),
            data: None,
        };
        assert_eq!(
            decide(retry(5000), 1, &policy(2)).retry,
            Some(Duration::from_secs(5))
        );
        assert_eq!(decide(retry(1), 2, &policy(2)).retry, None);
    }

    #[test]
    fn permanent_outcomes_are_final() {
        let v = decide(
            RunOutcome::Returned {
                outcome: GuestOutcome::Failure,
                message: "bad spec".into(),
                data: None,
            },
            1,
            &policy(3),
        );
        assert_eq!(v.retry, None);
        assert_eq!(v.message, "bad spec");
        let v = decide(
            RunOutcome::Failed {
                kind: FailureKind::InvalidResult,
                message: "not json".into(),
            },
            1,
            &policy(3),
        );
        assert_eq!(v.retry, None);
        assert!(!v.gave_up);
    }
}
