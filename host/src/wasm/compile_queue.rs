//! Compiles run one at a time, smallest component first.
//!
//! One compile already uses every core (wasmtime compiles functions in parallel), so running
//! two at once only interleaves them: a 50 KiB Rust driver queued beside a 17 MiB Python one
//! would finish when the Python one does, seconds later. Ordered by size, each driver is
//! served as soon as its own compile ends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The queue. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct CompileQueue {
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Default)]
struct State {
    running: bool,
    /// Waiting compiles by (size, arrival): the smallest, then the earliest, goes next.
    waiting: BinaryHeap<Reverse<(u64, u64)>>,
    arrivals: u64,
}

impl CompileQueue {
    /// Runs `compile` (of a component of `size` bytes) when it is its turn. Blocking: call it
    /// from a blocking thread.
    pub fn run<T>(&self, size: u64, compile: impl FnOnce() -> T) -> T {
        let mut state = self.lock();
        let me = Reverse((size, state.arrivals));
        state.arrivals += 1;
        state.waiting.push(me);
        while state.running || state.waiting.peek() != Some(&me) {
            state = self.turn.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.waiting.pop();
        state.running = true;
        drop(state);
        // Hands the turn on even if the compile panics.
        let _done = Done(self);
        compile()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Done<'a>(&'a CompileQueue);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.lock().running = false;
        self.0.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    #[test]
    fn the_smallest_waiting_compile_goes_next() {
        let queue = Arc::new(CompileQueue::default());
        let (order_tx, order_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        // A first compile holds the queue until released.
        let first = {
            let (queue, order_tx) = (queue.clone(), order_tx.clone());
            std::thread::spawn(move || {
                queue.run(500, || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    order_tx.send(500).unwrap();
                })
            })
        };
        started_rx.recv().unwrap();
        // Three more arrive, largest first, while it runs.
        let mut others = Vec::new();
        for size in [17_000_000u64, 1_600_000, 45_000] {
            let (q, order_tx) = (queue.clone(), order_tx.clone());
            others.push(std::thread::spawn(move || {
                q.run(size, || order_tx.send(size).unwrap())
            }));
            while queue.lock().waiting.len() < others.len() {
                std::thread::yield_now();
            }
        }
        release_tx.send(()).unwrap();
        first.join().unwrap();
        for t in others {
            t.join().unwrap();
        }
        drop(order_tx);
        let order: Vec<u64> = order_rx.iter().collect();
        assert_eq!(order, [500, 45_000, 1_600_000, 17_000_000]);
    }

    #[test]
    fn a_panicking_compile_hands_the_turn_on() {
        let queue = Arc::new(CompileQueue::default());
        let q = queue.clone();
        let r = std::thread::spawn(move || q.run(1, || panic!("boom"))).join();
        assert!(r.is_err());
        assert_eq!(queue.run(2, || 7), 7);
    }
}
