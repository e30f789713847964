//! Worker-local drain signal, set when a graceful shutdown starts.
//!
//! The accept loops wait on it ([`Drain::wait`]) to stop accepting.
//! Connections do not wait on it: a connection idle between requests is
//! closed by the reaper's drain sweep (its pending read ends at once), and
//! one with a request in flight checks [`Drain::is_draining`] when it
//! answers, so that response says `Connection: close`.
//!
//! Waiters live in a slot vector with a free list, so registering and
//! deregistering allocate nothing once the vector has grown to the peak
//! number of waiters.

#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// The drain state of one worker.
#[derive(Debug, Default)]
pub struct Drain {
    draining: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Drain {
    /// Not draining.
    pub fn new() -> Drain {
        Drain::default()
    }

    /// Whether the worker is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts draining and wakes every idle waiter.
    pub fn start(&self) {
        self.draining.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves when draining starts.
    pub fn wait(&self) -> DrainWait<'_> {
        DrainWait {
            drain: self,
            slot: None,
        }
    }
}

/// The future of [`Drain::wait`].
#[derive(Debug)]
pub struct DrainWait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.draining.get() {
            return Poll::Ready(());
        }
        let mut slots = self.drain.slots.borrow_mut();
        match self.slot {
            Some(i) => slots[i] = Some(cx.waker().clone()),
            None => {
                let i = match self.drain.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        slots.push(Some(cx.waker().clone()));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.drain.slots.borrow_mut()[i] = None;
            self.drain.free.borrow_mut().push(i);
        }
    }
}
