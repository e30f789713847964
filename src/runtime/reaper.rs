//! Per-worker connection timeouts without a timer per read.
//!
//! A connection waiting on its socket *arms* its slot with a deadline
//! (`arm`), and *disarms* it when the operation completes. A reaper task
//! wakes once a second, advances a coarse clock, and shuts down the socket
//! of every slot whose deadline has passed — `shutdown(SHUT_RD)` completes
//! a pending read with end-of-file (so a partial head can still be answered
//! 408), `shutdown(SHUT_RDWR)` also fails a pending write. On drain it
//! shuts down every connection that is idle between requests at once.
//!
//! Why not `monoio::time::timeout` per read: a timer entry registered and
//! cancelled on every read, plus a `select!`, cost about 500 instructions
//! per request in callgrind — some 10 % of the whole user-space request path.
//! Arming a slot is two stores. The price is granularity: a timeout fires
//! between its length and one sweep (one second) more after it was armed
//! (the deadline is taken on the coarse clock, which lags by up to a
//! sweep, so a sweep is added to it).
//!
//! Cancelling a read by shutting its socket down also avoids dropping an
//! in-flight io_uring read (liburing #1422): the read completes normally.
//!
//! Parking: a connection that has just answered a request reads for the
//! next one with its buffer (`Wait::Hot`: the cheapest way when the next
//! request comes at once, as it does on a busy keep-alive connection). If
//! it has waited through a whole sweep interval (1 to 2 s after its
//! answer), a sweep cancels that read through the slot's monoio
//! `Canceller`: the read completes, with `ECANCELED` or with the bytes that
//! raced the cancel, and hands its buffer back, never dropping data; the
//! connection then gives its buffers back and waits for readiness holding
//! none. Not at the first sweep: that would also park busy connections
//! caught between two requests, once a second each, and a park allocates
//! (monoio's `Canceller::cancel` makes a new one), which would break "a warm
//! request allocates nothing" for connections that never go quiet. The
//! cost: with 19,500 connections each sending a request every 10 s, about
//! 4 KB per connection stays resident (those inside their window hold
//! buffers and a serving block).
//!
//! Safety: `shutdown` is called on a raw fd. A slot is registered right
//! after accept and removed when the connection's `ClientIo` drops, whose
//! slot field is declared before the stream and so drops before it: the fd
//! in a live slot is always the connection's open socket. All of it runs on one worker
//! thread, so no close can race a sweep.

#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use monoio::io::{CancelHandle, Canceller};

/// The interval between sweeps (the worker's clock task runs one at each
/// second boundary), in ms.
const SWEEP_MS: u64 = 1000;

/// What a sweep does to an expired slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Waiting for the first byte of a request: expire with SHUT_RD; drain
    /// closes it at once.
    Idle,
    /// As `Idle`, in a read that holds the connection's buffers: parked
    /// (the read cancelled) after a whole sweep interval.
    Hot,
    /// Waiting for the rest of a head or body: expire with SHUT_RD.
    Read,
    /// Waiting for a write to complete: expire with SHUT_RDWR.
    Write,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    fd: RawFd,
    /// Coarse-clock milliseconds; 0 = not armed.
    deadline: u64,
    wait: Wait,
    expired: bool,
    live: bool,
    /// Coarse-clock milliseconds when armed.
    since: u64,
    /// A park was asked for since it was armed.
    parking: bool,
}

/// The slots of one worker.
pub(crate) struct Reaper {
    start: Instant,
    /// Milliseconds since `start`, advanced by [`Reaper::tick`].
    now_ms: Cell<u64>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    /// Per slot: what cancels its `Wait::Hot` read (while it has one).
    cancellers: RefCell<Vec<Option<Canceller>>>,
    /// Unused cancellers, so that a parked connection holds none and one
    /// coming back allocates none.
    spare: RefCell<Vec<Canceller>>,
}

/// Most spare cancellers kept.
const MAX_SPARE: usize = 256;

impl Reaper {
    pub fn new() -> Reaper {
        Reaper {
            start: Instant::now(),
            now_ms: Cell::new(1),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            cancellers: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
        }
    }

    /// Registers a connection's socket; the guard unregisters it.
    pub fn register(&self, fd: RawFd) -> u32 {
        let slot = Slot {
            fd,
            deadline: 0,
            wait: Wait::Idle,
            expired: false,
            live: true,
            since: 0,
            parking: false,
        };
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i as usize] = slot;
                i
            }
            None => {
                slots.push(slot);
                (slots.len() - 1) as u32
            }
        }
    }

    /// Frees slot `i` (the connection is closing).
    pub fn unregister(&self, i: u32) {
        self.slots.borrow_mut()[i as usize].live = false;
        if let Some(c) = self.cancellers.borrow_mut().get_mut(i as usize) {
            if let Some(c) = c.take() {
                self.keep_spare(c);
            }
        }
        self.free.borrow_mut().push(i);
    }

    /// What lets a sweep cancel slot `i`'s `Wait::Hot` read.
    #[inline]
    pub fn cancel_handle(&self, i: u32) -> CancelHandle {
        let mut cancellers = self.cancellers.borrow_mut();
        let i = i as usize;
        if cancellers.len() <= i {
            cancellers.resize_with(i + 1, || None);
        }
        cancellers[i]
            .get_or_insert_with(|| self.spare.borrow_mut().pop().unwrap_or_default())
            .handle()
    }

    fn keep_spare(&self, c: Canceller) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(c);
        }
    }

    /// The deadline `after` from now, on the coarse clock: never before
    /// `after` has passed. The coarse clock is the last sweep's time, up to
    /// one sweep interval behind the real one, so a sweep interval is added:
    /// without it a 1 s timeout armed just before a sweep expired at that
    /// sweep, a few milliseconds later.
    pub fn deadline(&self, after: Duration) -> u64 {
        self.now_ms.get() + after.as_millis().max(1) as u64 + SWEEP_MS
    }

    /// Arms slot `i` until `deadline` (from [`Reaper::deadline`]).
    #[inline]
    pub fn arm(&self, i: u32, deadline: u64, wait: Wait) {
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[i as usize];
        s.deadline = deadline;
        s.wait = wait;
        s.since = self.now_ms.get();
        s.parking = false;
    }

    /// Disarms slot `i`; true if the reaper expired it meanwhile.
    #[inline]
    pub fn disarm(&self, i: u32) -> bool {
        let mut slots = self.slots.borrow_mut();
        let s = &mut slots[i as usize];
        s.deadline = 0;
        s.expired
    }

    /// Advances the clock to `now` and expires what is due (with `drain`,
    /// also every idle connection); parks hot reads armed before the
    /// previous sweep.
    pub fn tick(&self, now: Instant, drain: bool) {
        let now_ms = now.duration_since(self.start).as_millis() as u64 + 1;
        // Slots armed before the previous sweep have `since` below this.
        let previous = self.now_ms.replace(now_ms);
        let mut cancellers = self.cancellers.borrow_mut();
        for (i, s) in self.slots.borrow_mut().iter_mut().enumerate() {
            if !s.live || s.deadline == 0 || s.expired {
                continue;
            }
            let idle = matches!(s.wait, Wait::Idle | Wait::Hot);
            let due = s.deadline <= now_ms || (drain && idle);
            if !due && s.wait == Wait::Hot && !s.parking && s.since < previous {
                if let Some(c) = cancellers.get_mut(i).and_then(Option::take) {
                    // The read completes (cancelled, or with what raced the
                    // cancel) and its connection parks, holding no
                    // canceller; the fresh one cancel() returns is kept.
                    self.keep_spare(c.cancel());
                    s.parking = true;
                }
                continue;
            }
            if due {
                s.expired = true;
                let how = match s.wait {
                    Wait::Idle | Wait::Hot | Wait::Read => libc::SHUT_RD,
                    Wait::Write => libc::SHUT_RDWR,
                };
                // SAFETY: see the module docs — a live slot's fd is the
                // connection's open socket; shutdown does not close it.
                unsafe {
                    libc::shutdown(s.fd, how);
                }
            }
        }
    }
}

impl Reaper {
    /// Shuts down (`SHUT_RDWR`) every live connection's socket and each of
    /// `listeners`, at once: the last resort of a worker whose runtime is
    /// unwinding from a panic, whose tasks will never run or drop again.
    /// Clients see their connections end instead of hanging; a listening
    /// socket that is shut down stops listening and leaves its
    /// `SO_REUSEPORT` group, so the kernel stops queueing connections on it.
    pub fn abort_all(&self, listeners: &[RawFd]) {
        // try_borrow: the panic may have come from inside a borrow.
        if let Ok(slots) = self.slots.try_borrow() {
            for s in slots.iter().filter(|s| s.live) {
                // SAFETY: as in `tick` — a live slot's fd is an open socket
                // (its owner cannot have closed it: its task never ran
                // again); shutdown does not close it.
                unsafe {
                    libc::shutdown(s.fd, libc::SHUT_RDWR);
                }
            }
        }
        for &fd in listeners {
            // SAFETY: the worker's listening sockets, owned by its accept
            // tasks, which never run or drop again; shutdown does not close.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn expires_due_slots_and_idle_ones_on_drain() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _c1 = std::net::TcpStream::connect(addr).unwrap();
        let _c2 = std::net::TcpStream::connect(addr).unwrap();
        let (mut s1, _) = listener.accept().unwrap();
        let (mut s2, _) = listener.accept().unwrap();
        let r = Reaper::new();
        let t0 = Instant::now();
        let a = r.register(s1.as_raw_fd());
        let b = r.register(s2.as_raw_fd());
        r.arm(a, r.deadline(Duration::from_secs(5)), Wait::Read);
        r.arm(b, r.deadline(Duration::from_secs(60)), Wait::Idle);
        r.tick(t0 + Duration::from_secs(1), false);
        assert!(!r.disarm(a) && !r.disarm(b));
        r.arm(a, r.deadline(Duration::from_secs(1)), Wait::Read);
        r.arm(b, r.deadline(Duration::from_secs(60)), Wait::Idle);
        // Not yet at the next sweep, a second later on the coarse clock,
        // though that is past 1 s of the coarse time it was armed at.
        r.tick(t0 + Duration::from_secs(2), false);
        assert!(!r.slots.borrow()[a as usize].expired);
        r.tick(t0 + Duration::from_secs(3), false);
        // a is due: its socket reads end-of-file now; b is not.
        let mut buf = [0u8; 1];
        assert_eq!(s1.read(&mut buf).unwrap(), 0);
        assert!(!r.disarm(b));
        r.arm(b, r.deadline(Duration::from_secs(60)), Wait::Idle);
        r.tick(t0 + Duration::from_secs(4), true);
        assert_eq!(s2.read(&mut buf).unwrap(), 0);
        assert!(r.disarm(b));
        r.unregister(a);
        r.unregister(b);
    }
}
