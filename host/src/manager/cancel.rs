//! Cancelling runs: the reconciles in flight for a run are found by its id and stopped (the
//! sandbox ends them as `cancelled` at the next epoch tick, or at once when they are blocked
//! in a host call). A run cancelled while one of its events waits for its turn is remembered
//! for a while, so that event is stopped as soon as it starts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a cancelled run id is remembered.
const REMEMBER: Duration = Duration::from_secs(600);
/// The most cancelled run ids remembered.
const REMEMBER_MAX: usize = 10_000;

#[derive(Default)]
struct State {
    next: u64,
    in_flight: HashMap<String, Vec<(u64, CancellationToken)>>,
    cancelled: VecDeque<(Instant, String)>,
}

/// The reconciles in flight, by run id.
#[derive(Default)]
pub struct Cancellations {
    state: Mutex<State>,
}

/// A reconcile's registration; dropping it forgets the reconcile.
pub struct Registered {
    owner: Arc<Cancellations>,
    run_id: String,
    id: u64,
    /// Cancelled when the run is.
    pub token: CancellationToken,
}

impl Cancellations {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a reconcile of `run_id`; its token is already cancelled if the run is.
    pub fn register(self: &Arc<Self>, run_id: &str) -> Registered {
        let token = CancellationToken::new();
        let mut s = self.state();
        s.next += 1;
        let id = s.next;
        if s.cancelled.iter().any(|(_, r)| r == run_id) {
            token.cancel();
        }
        s.in_flight
            .entry(run_id.to_string())
            .or_default()
            .push((id, token.clone()));
        Registered {
            owner: self.clone(),
            run_id: run_id.to_string(),
            id,
            token,
        }
    }

    /// Stops every reconcile of `run_id` in flight, and any that starts soon; returns how many
    /// were running.
    pub fn cancel(&self, run_id: &str) -> usize {
        let mut s = self.state();
        let now = Instant::now();
        while s
            .cancelled
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REMEMBER)
            || s.cancelled.len() >= REMEMBER_MAX
        {
            s.cancelled.pop_front();
        }
        s.cancelled.push_back((now, run_id.to_string()));
        let running = s.in_flight.get(run_id).map_or(&[][..], Vec::as_slice);
        for (_, t) in running {
            t.cancel();
        }
        running.len()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut s = self.owner.state();
        if let Some(list) = s.in_flight.get_mut(&self.run_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                s.in_flight.remove(&self.run_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_reaches_running_and_later_reconciles() {
        let c = Arc::new(Cancellations::default());
        let a = c.register("R");
        let other = c.register("S");
        assert_eq!(c.cancel("R"), 1);
        assert!(a.token.is_cancelled());
        assert!(!other.token.is_cancelled());
        assert!(
            c.register("R").token.is_cancelled(),
            "a late start is stopped too"
        );
        drop(a);
        drop(other);
        assert!(c.state().in_flight.is_empty());
    }
}
