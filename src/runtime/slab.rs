//! Futures in pooled memory: how a connection's large request-serving state
//! exists only while it serves a request.
//!
//! A connection task is one future whose size is fixed when it is spawned:
//! the largest state it can ever be in. Serving a request (parsing,
//! forwarding, caching, streaming bodies) needs kilobytes of state; waiting
//! for the next request needs a few hundred bytes. Were both one future,
//! every idle keep-alive connection would keep the kilobytes resident.
//! So the serving part runs in a block from the worker's [`FutureSlab`]
//! ([`FutureSlab::put`]), taken when the connection becomes busy and given
//! back when it goes idle: blocks follow busy connections, not open ones,
//! and once the slab is warm, taking one allocates nothing.
//!
//! The slab keeps blocks of one layout (that of the first future put in
//! it; a service puts one future type). A future of another layout gets
//! its own allocation, freed when it ends. At most `max` blocks wait in the
//! slab; more are freed.
//!
//! Safety: [`InSlab`] owns a future written into a block it alone points
//! to. The future is polled in place through `Pin::new_unchecked`: it never
//! moves, because `InSlab` hands out no `&mut F` and no way to move it out,
//! and the block is reused only after `InSlab::drop` has dropped the future
//! in place. Blocks are allocated and freed with the layout they were
//! allocated with (the slab's, or the future's own). Everything runs on
//! one worker thread (`InSlab` and the slab are neither `Send` nor
//! `Sync`). The tests below check reuse, drops and layouts.

#![allow(unsafe_code)]

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// A worker's pool of blocks for futures (see the module docs).
#[derive(Debug)]
pub struct FutureSlab {
    layout: Cell<Option<Layout>>,
    free: RefCell<Vec<NonNull<u8>>>,
    max: usize,
    /// Blocks allocated because the slab had none.
    allocated: Cell<u64>,
}

/// A future living in a block of a [`FutureSlab`]; the block goes back to
/// the slab when this is dropped.
pub struct InSlab<'s, F> {
    ptr: NonNull<F>,
    slab: &'s FutureSlab,
    /// Owns an `F` (for the drop checker).
    _owns: PhantomData<F>,
}

impl FutureSlab {
    /// A slab that keeps at most `max` free blocks.
    pub fn new(max: usize) -> FutureSlab {
        FutureSlab {
            layout: Cell::new(None),
            free: RefCell::new(Vec::new()),
            max,
            allocated: Cell::new(0),
        }
    }

    /// Moves `fut` into a block of the slab.
    pub fn put<F: Future>(&self, fut: F) -> InSlab<'_, F> {
        self.put_with(|| fut)
    }

    /// Puts the future `make` returns into a block of the slab. Called from
    /// an `async fn`, this keeps the future out of the caller's own state
    /// (which `put(make())` may not: the argument is a temporary of the
    /// caller, and the caller's state has room for every temporary that
    /// lives across an `.await`).
    #[inline]
    pub fn put_with<F: Future>(&self, make: impl FnOnce() -> F) -> InSlab<'_, F> {
        let layout = Layout::new::<F>();
        let ptr = if layout.size() == 0 {
            NonNull::<F>::dangling()
        } else {
            self.block(layout).cast::<F>()
        };
        // Gives the block back should `make` panic.
        struct Unwind<'s>(&'s FutureSlab, NonNull<u8>, Layout);
        impl Drop for Unwind<'_> {
            fn drop(&mut self) {
                if self.2.size() != 0 {
                    self.0.give(self.1, self.2);
                }
            }
        }
        let unwind = Unwind(self, ptr.cast(), layout);
        // SAFETY: `ptr` is valid for writes of an `F` (a block of `F`'s
        // size and alignment, or dangling and well aligned for a zero-sized
        // `F`) and holds no value yet. `make()` is written in the same
        // expression so the compiler can build the future in the block
        // (an async fn's future is as large as its largest state, kilobytes;
        // building it elsewhere and moving it costs a copy of all of it).
        unsafe { ptr.as_ptr().write(make()) };
        std::mem::forget(unwind);
        InSlab {
            ptr,
            slab: self,
            _owns: PhantomData,
        }
    }

    /// Frees half of the free blocks above `floor` (see
    /// [`super::buffers::BufPool::trim`]).
    pub fn trim(&self, floor: usize) {
        let Some(layout) = self.layout.get() else {
            return;
        };
        let mut free = self.free.borrow_mut();
        let excess = free.len().saturating_sub(floor);
        let keep = free.len() - excess.div_ceil(2);
        for p in free.drain(keep..) {
            // SAFETY: free blocks were allocated with the slab's layout and
            // hold no future.
            unsafe { dealloc(p.as_ptr(), layout) };
        }
    }

    /// Free blocks waiting in the slab.
    pub fn free_blocks(&self) -> usize {
        self.free.borrow().len()
    }

    /// Blocks allocated so far because the slab had none free.
    pub fn allocated(&self) -> u64 {
        self.allocated.get()
    }

    /// A block for `layout` (not zero-sized).
    fn block(&self, layout: Layout) -> NonNull<u8> {
        match self.layout.get() {
            Some(l) if l == layout => {
                if let Some(p) = self.free.borrow_mut().pop() {
                    return p;
                }
            }
            Some(_) => {}
            None => self.layout.set(Some(layout)),
        }
        self.allocated.set(self.allocated.get() + 1);
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { alloc(layout) };
        NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout))
    }

    /// Takes back a block allocated by [`FutureSlab::block`] for `layout`.
    fn give(&self, p: NonNull<u8>, layout: Layout) {
        if self.layout.get() == Some(layout) {
            let mut free = self.free.borrow_mut();
            if free.len() < self.max {
                free.push(p);
                return;
            }
        }
        // SAFETY: `p` was allocated by `block` with this same layout, and
        // its future has been dropped.
        unsafe { dealloc(p.as_ptr(), layout) };
    }
}

impl Drop for FutureSlab {
    fn drop(&mut self) {
        if let Some(layout) = self.layout.get() {
            for p in self.free.get_mut().drain(..) {
                // SAFETY: free blocks were allocated with the slab's layout
                // and hold no future.
                unsafe { dealloc(p.as_ptr(), layout) };
            }
        }
    }
}

impl<F: Future> Future for InSlab<'_, F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays at `ptr` until `InSlab` drops it in place
        // (see the module docs), so pinning it there is sound; `&mut self`
        // makes this the only reference to it.
        let fut = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        fut.poll(cx)
    }
}

impl<F> Drop for InSlab<'_, F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: `ptr` holds the `F` written by `put`, dropped only here.
        // Should its drop panic, the block is leaked, never reused.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() != 0 {
            self.slab.give(self.ptr.cast(), layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(f)
    }

    #[test]
    fn blocks_are_reused_and_futures_dropped() {
        let slab = FutureSlab::new(4);
        let dropped = Rc::new(Cell::new(0));
        struct Count(Rc<Cell<u32>>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let make = |n: u64| {
            let c = Count(dropped.clone());
            async move {
                let _c = c;
                let big = [n; 64];
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                big.iter().sum::<u64>()
            }
        };
        let a = slab.put(make(1));
        let first = a.ptr.cast::<u8>();
        assert_eq!(block_on(a), 64);
        assert_eq!(dropped.get(), 1);
        assert_eq!(slab.free_blocks(), 1);
        let b = slab.put(make(2));
        assert_eq!(b.ptr.cast::<u8>(), first, "the block is reused");
        // Dropped before completion: the future is dropped, the block kept.
        drop(b);
        assert_eq!(dropped.get(), 2);
        assert_eq!(slab.free_blocks(), 1);
        assert_eq!(slab.allocated(), 1);
        slab.trim(0);
        assert_eq!(slab.free_blocks(), 0);
    }

    #[test]
    fn other_layouts_and_zero_sized_futures_are_not_pooled() {
        struct Zst;
        impl Future for Zst {
            type Output = usize;
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
                Poll::Ready(7)
            }
        }
        assert_eq!(std::mem::size_of::<Zst>(), 0);
        let slab = FutureSlab::new(1);
        let a = slab.put(async { [1u8; 32].len() });
        let b = slab.put(async { [1u64; 100].len() });
        let z = slab.put(Zst);
        assert_eq!(block_on(async { a.await + b.await + z.await }), 139);
        assert_eq!(slab.free_blocks(), 1, "only the first layout is kept");
        // A full slab frees what it cannot keep.
        let c = slab.put(async { 1 });
        let d = slab.put(async { 2 });
        drop(c);
        drop(d);
        assert!(slab.free_blocks() <= 1);
    }
}
