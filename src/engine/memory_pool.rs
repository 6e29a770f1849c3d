//! The memory pool keymart's queries run under: DataFusion's fair spilling pool, except that a
//! repartition is never refused memory.
//!
//! Why: DataFusion 55.2's RepartitionExec, refused memory by the pool, writes the batch to a
//! spill pool instead, and when two of its input tasks spill at once the reader can wait forever
//! on the older of two open spill files (apache/datafusion#24883, fixed after 55.2): every thread
//! parks, the query neither ends nor fails. A nightly job must not hang, so here a repartition's
//! request is always granted (and counted, so the other consumers see it) and it never spills.
//! What it holds is a few batches per channel in flight, not a table.
//!
//! Keeping repartitions out of the pool altogether was tried too: the fair pool then divides
//! the spilling consumers' share among fewer of them, so a night spills less and runs a little
//! faster, but the untracked repartitions push its peak RSS to the edge of the 1 GiB target.

use std::fmt;

use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};

#[derive(Debug)]
pub struct RepartitionsNeverRefused<P> {
    inner: P,
}

impl<P: MemoryPool> RepartitionsNeverRefused<P> {
    pub fn new(inner: P) -> Self {
        RepartitionsNeverRefused { inner }
    }
}

/// DataFusion names a repartition's reservations `RepartitionExec[<output partition>]`.
fn is_repartition(consumer: &MemoryConsumer) -> bool {
    consumer.name().starts_with("RepartitionExec[")
}

impl<P: MemoryPool> MemoryPool for RepartitionsNeverRefused<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            Ok(())
        } else {
            self.inner.try_grow(reservation, additional)
        }
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

impl<P: MemoryPool> fmt::Display for RepartitionsNeverRefused<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::execution::memory_pool::FairSpillPool;

    use super::*;

    #[test]
    fn a_full_pool_refuses_a_sort_but_not_a_repartition_and_counts_both() {
        let pool: Arc<dyn MemoryPool> = Arc::new(RepartitionsNeverRefused::new(FairSpillPool::new(1000)));
        let sort = MemoryConsumer::new("ExternalSorter[0]").with_can_spill(true).register(&pool);
        let repartition = MemoryConsumer::new("RepartitionExec[0]").with_can_spill(true).register(&pool);
        // Two spilling consumers: a fair share is 500 bytes each.
        sort.try_grow(400).unwrap();
        repartition.try_grow(5000).unwrap();
        assert!(sort.try_grow(200).is_err(), "the sort is held to its share");
        assert_eq!(pool.reserved(), 5400);
        drop(repartition);
        assert_eq!(pool.reserved(), 400);
    }
}
