//! The drain as one small type, after mini-redis's `shutdown.rs`: a flag
//! every task can read or wait on (a channel that closes when the drain
//! starts), and a count of the tasks the drain waits for (each holds a
//! [`TaskGuard`]; the waiter drops its own and awaits the channel's close).

use async_channel::{Receiver, Sender};

/// Starts the drain; dropping it starts it too.
#[derive(Debug)]
pub(crate) struct Trigger(Sender<()>);

/// What a task reads to learn that the hub is draining.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(Receiver<()>);

/// A new drain signal: its trigger and the watch every task clones.
pub(crate) fn signal() -> (Trigger, Shutdown) {
    // Nothing is ever sent: closing the channel is the broadcast.
    let (tx, rx) = async_channel::bounded(1);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Starts the drain: every [`Shutdown`] reads it from now on.
    pub fn fire(&self) {
        self.0.close();
    }
}

impl Shutdown {
    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.0.is_closed()
    }

    /// Waits until the drain starts.
    pub async fn started(&self) {
        // Only ever ends with the close: nothing is sent.
        let _ = self.0.recv().await;
    }
}

/// Held by a task the drain waits for; dropped when the task ends.
#[derive(Debug, Clone)]
pub(crate) struct TaskGuard(#[allow(dead_code)] Sender<()>);

/// Waits for every [`TaskGuard`] to be dropped.
#[derive(Debug)]
pub(crate) struct Tasks(Receiver<()>);

/// A new count of tasks: the first guard, and the waiter.
pub(crate) fn tasks() -> (TaskGuard, Tasks) {
    let (tx, rx) = async_channel::bounded(1);
    (TaskGuard(tx), Tasks(rx))
}

impl Tasks {
    /// Returns once every guard is gone.
    pub async fn all_done(self) {
        // Nothing is sent: the channel closes when its last sender drops.
        let _ = self.0.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_is_seen_by_every_watch() {
        let (trigger, watch) = signal();
        let other = watch.clone();
        assert!(!watch.is_draining());
        trigger.fire();
        assert!(watch.is_draining() && other.is_draining());
        smol::block_on(other.started());
    }

    #[test]
    fn dropping_the_trigger_starts_the_drain() {
        let (trigger, watch) = signal();
        drop(trigger);
        assert!(watch.is_draining());
    }

    #[test]
    fn the_waiter_returns_once_every_guard_is_gone() {
        let (guard, tasks) = tasks();
        let more = [guard.clone(), guard.clone()];
        let waiting = std::thread::spawn(move || smol::block_on(tasks.all_done()));
        drop(guard);
        drop(more);
        waiting.join().expect("the waiter returns");
    }
}
