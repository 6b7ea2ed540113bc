//! Memory the core borrows for `'static` during one run.
//!
//! In the image the task descriptors, their names, slot and region tables
//! and the interrupt table are part of the image, so the core's
//! `TaskDesc` and `IrqDesc` references are `'static`. The harness builds
//! them for each run (`Harness::setup`), with the memory of the regions it
//! allocates itself ([`crate::TaskSpec::region`]). Leaking them, as it
//! once did, cost about 1.3 KB per schedule of an explore target (1.3 GB
//! over a sweep of 10^6 schedules) and the whole region per run. They are
//! lent instead (`tests/harness_memory.rs`): [`Lent::lend`] hands out a
//! `'static` reference and remembers the allocation, and the run frees
//! everything once nothing of it can reach the memory any more
//! (`machine::run`, after the run's state is dropped).

/// An allocation handed out by [`Lent::lend`], freed by [`Lent::free`].
struct Raw<T: ?Sized>(*mut T);

// SAFETY: a `Raw` is the sole owner of its allocation (the `Box` it came
// from), as a `Box<T>` would be; it only moves to where the run is freed.
unsafe impl<T: ?Sized + Send> Send for Raw<T> {}

/// Allocations lent for `'static` to one run. Dropping it without
/// [`Lent::free`] leaks them, which is what a run must do when something
/// of it may still be running (a worker abandoned after a wall-clock
/// timeout, or parked in a shutdown without unwinding).
#[derive(Default)]
pub(crate) struct Lent {
    frees: Vec<Box<dyn FnOnce() + Send>>,
}

impl Lent {
    /// Lends `b` for `'static`: it stays allocated until [`Lent::free`].
    pub(crate) fn lend<T: ?Sized + Send + 'static>(&mut self, b: Box<T>) -> &'static mut T {
        let p = Box::into_raw(b);
        let raw = Raw(p);
        self.frees.push(Box::new(move || {
            let raw = raw;
            // SAFETY: `raw.0` came from `Box::into_raw` above and is freed
            // only here, once (`free` consumes the `Lent`); `free`'s caller
            // guarantees no reference to it is used any more.
            drop(unsafe { Box::from_raw(raw.0) });
        }));
        // SAFETY: `p` is a fresh, valid allocation that stays allocated until
        // `free`, whose caller guarantees the reference is no longer used.
        unsafe { &mut *p }
    }

    /// Frees every allocation lent.
    ///
    /// # Safety
    ///
    /// No reference returned by [`Lent::lend`] (or derived from one, such
    /// as a region's address) may be used after this call.
    pub(crate) unsafe fn free(self) {
        for f in self.frees {
            f();
        }
    }
}
