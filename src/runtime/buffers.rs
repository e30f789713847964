//! A worker's pool of I/O buffers: what lets an idle connection hold none.
//!
//! A parked keep-alive connection (silent for 1 to 2 s after an answer)
//! owns no buffer: it waits for readiness (see [`super::conn`]), and takes
//! buffers from its worker's [`BufPool`] only once bytes are there; they go
//! back when it parks again. So the memory of buffers follows the number
//! of *busy* connections, not of open ones.
//!
//! Two classes: [`SMALL`] (read buffers, response buffers, request heads
//! for a backend) and [`LARGE`] (body streaming). The pool is bounded
//! ([`MAX_SMALL`], [`MAX_LARGE`] buffers per worker): what it cannot supply
//! is allocated, and a buffer given back to a full pool is freed. A buffer
//! that grew past its class (a read buffer for a long head, a response
//! buffer for a large body) is freed rather than kept: the pool shrinks
//! back to its classes by itself, and [`BufPool::trim`] (once a second)
//! lets a pool swollen by a burst shrink back. So with the pool warm, a
//! request on an existing connection allocates nothing, and nothing is ever
//! leaked.

#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};

/// The small class: a connection's read and write buffers.
pub const SMALL: usize = 4096;
/// The large class: body bytes streamed through the gateway.
pub const LARGE: usize = 16 * 1024;
/// Most small buffers kept per worker (4 MiB).
pub const MAX_SMALL: usize = 1024;
/// Most large buffers kept per worker (4 MiB).
pub const MAX_LARGE: usize = 256;

/// A worker's buffers (see the module docs). Used by one thread.
#[derive(Debug, Default)]
pub struct BufPool {
    small: RefCell<Vec<Vec<u8>>>,
    large: RefCell<Vec<Vec<u8>>>,
    /// Buffers allocated because the pool had none.
    allocated: Cell<u64>,
}

/// What a pool holds, and has had to allocate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Small buffers waiting in the pool.
    pub small: usize,
    /// Large buffers waiting in the pool.
    pub large: usize,
    /// Buffers allocated since the start because the pool was empty.
    pub allocated: u64,
}

impl BufPool {
    /// An empty pool.
    pub fn new() -> BufPool {
        BufPool::default()
    }

    /// An empty buffer of at least [`SMALL`] bytes.
    #[inline]
    pub fn small(&self) -> Vec<u8> {
        self.take(&self.small, SMALL)
    }

    /// An empty buffer of at least [`LARGE`] bytes.
    #[inline]
    pub fn large(&self) -> Vec<u8> {
        self.take(&self.large, LARGE)
    }

    /// Makes `buf` a small buffer if it has no memory yet.
    #[inline]
    pub fn ensure_small(&self, buf: &mut Vec<u8>) {
        if buf.capacity() == 0 {
            *buf = self.small();
        }
    }

    /// Takes `buf`'s memory back (leaving it empty, with no capacity).
    #[inline]
    pub fn give(&self, buf: &mut Vec<u8>) {
        let cap = buf.capacity();
        if cap == 0 {
            return;
        }
        let mut buf = std::mem::take(buf);
        let (list, max) = if (SMALL..2 * SMALL).contains(&cap) {
            (&self.small, MAX_SMALL)
        } else if (LARGE..2 * LARGE).contains(&cap) {
            (&self.large, MAX_LARGE)
        } else {
            // Grew past its class: freed, so the pool shrinks back.
            return;
        };
        let mut list = list.borrow_mut();
        if list.len() < max {
            buf.clear();
            list.push(buf);
        }
    }

    /// Frees half of what each class holds above `floor` buffers: run once
    /// a second, a pool swollen by a burst (many connections parking at
    /// once) shrinks back within seconds, while one in steady use keeps
    /// what it lends.
    pub fn trim(&self, floor: usize) {
        for list in [&self.small, &self.large] {
            let mut list = list.borrow_mut();
            let excess = list.len().saturating_sub(floor);
            let keep = list.len() - excess.div_ceil(2);
            list.truncate(keep);
        }
    }

    /// What the pool holds now.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            small: self.small.borrow().len(),
            large: self.large.borrow().len(),
            allocated: self.allocated.get(),
        }
    }

    fn take(&self, list: &RefCell<Vec<Vec<u8>>>, size: usize) -> Vec<u8> {
        match list.borrow_mut().pop() {
            Some(buf) => buf,
            None => {
                self.allocated.set(self.allocated.get() + 1);
                Vec::with_capacity(size)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused() {
        let pool = BufPool::new();
        let mut a = pool.small();
        assert!(a.capacity() >= SMALL);
        a.extend_from_slice(b"abc");
        let ptr = a.as_ptr();
        pool.give(&mut a);
        assert_eq!(a.capacity(), 0, "the giver keeps no memory");
        let b = pool.small();
        assert_eq!(b.as_ptr(), ptr, "the same memory comes back");
        assert!(b.is_empty());
        assert_eq!(pool.stats().allocated, 1);
        let mut l = pool.large();
        assert!(l.capacity() >= LARGE);
        pool.give(&mut l);
        assert_eq!(pool.stats().large, 1);
    }

    #[test]
    fn grown_buffers_are_freed_and_the_pool_is_bounded() {
        let pool = BufPool::new();
        let mut big = pool.small();
        big.reserve_exact(64 * 1024);
        pool.give(&mut big);
        assert_eq!(pool.stats().small, 0, "a grown buffer is not kept");
        let mut bufs: Vec<Vec<u8>> = (0..MAX_SMALL + 10).map(|_| pool.small()).collect();
        for b in &mut bufs {
            pool.give(b);
        }
        assert_eq!(pool.stats().small, MAX_SMALL);
        let mut empty = Vec::new();
        pool.give(&mut empty);
        assert_eq!(pool.stats().small, MAX_SMALL);
        // Trimming halves what is above the floor.
        pool.trim(24);
        assert_eq!(pool.stats().small, 24 + (MAX_SMALL - 24) / 2);
        for _ in 0..20 {
            pool.trim(24);
        }
        assert_eq!(pool.stats().small, 24);
    }
}
