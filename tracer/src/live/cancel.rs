//! The one way to stop a run: a cloneable handle that the terminal UI, signals and the
//! deadline all go through, and that the agent's loop waits on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every holder to stop. Idempotent.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once [`Cancel::cancel`] has been called (at once if it was already).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a cancel in between is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_cancel_from_another_thread_wakes_the_waiter() {
        let c = Cancel::new();
        let other = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.cancel();
        });
        rt().block_on(async {
            tokio::time::timeout(Duration::from_secs(10), c.cancelled())
                .await
                .expect("woken");
        });
        t.join().unwrap();
        assert!(c.is_cancelled());
    }

    #[test]
    fn waiting_after_the_cancel_returns_at_once() {
        let c = Cancel::new();
        assert!(!c.is_cancelled());
        c.cancel();
        c.cancel();
        rt().block_on(async {
            tokio::time::timeout(Duration::from_secs(1), c.cancelled())
                .await
                .expect("already cancelled");
        });
    }
}
