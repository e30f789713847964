//! A cross-thread shutdown signal that monoio workers can await.
//!
//! The main thread calls [`Shutdown::trigger`]; each worker awaits
//! [`Shutdown::wait`]. Waking goes through monoio's `sync` machinery (an
//! eventfd write unparks the worker), so no thread other than the owner
//! ever touches a worker's io_uring — the promise SINGLE_ISSUER makes.

#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// A one-way, set-once signal shared by all workers.
#[derive(Debug, Default)]
pub struct Shutdown {
    triggered: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Sets the signal and wakes every waiter.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }

    /// Whether the signal has been set.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Resolves once the signal is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait { shutdown: self }
    }
}

/// The future of [`Shutdown::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    shutdown: &'a Shutdown,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        let mut wakers = self
            .shutdown
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: trigger() may have run in between.
        if self.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
