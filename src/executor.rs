//! The hub thread's single-threaded executor, as a handle tasks keep to
//! spawn further tasks.
//!
//! The handle is weak so that tasks do not keep their own executor alive:
//! when the hub thread drops the executor, every task still in it is
//! cancelled and its sockets are closed.

use std::future::Future;
use std::rc::{Rc, Weak};

use smol::LocalExecutor;

/// Spawns detached tasks on the hub thread's executor.
#[derive(Debug, Clone)]
pub(crate) struct Spawner(Weak<LocalExecutor<'static>>);

impl Spawner {
    /// A handle on `executor`.
    pub fn new(executor: &Rc<LocalExecutor<'static>>) -> Self {
        Self(Rc::downgrade(executor))
    }

    /// Runs `task` to completion in the background; does nothing once the
    /// executor is gone (the hub is stopping and the task would be cancelled).
    pub fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        if let Some(executor) = self.0.upgrade() {
            executor.spawn(task).detach();
        }
    }
}
