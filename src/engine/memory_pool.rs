//! The memory pool keymart's queries run under: DataFusion's fair spilling pool for the sorts,
//! aggregations and joins, with the repartitions' in-flight batches kept out of it.
//!
//! Why: DataFusion 55.2's RepartitionExec, refused memory by the pool, writes the batch to a
//! spill pool instead, and when two of its input tasks spill at once the reader can wait forever
//! on the older of two open spill files (apache/datafusion#24883, fixed after 55.2): every thread
//! parks, the query neither ends nor fails. A nightly job must not hang, so a repartition here is
//! never refused and never spills. What it holds is a few batches per channel in flight, not a
//! table; it is counted in `reserved()` but not against the limit. A side effect, wanted: a
//! repartition no longer registers as one more spilling consumer, so the fair pool no longer
//! divides the aggregations' and sorts' share by them too.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation};

#[derive(Debug)]
pub struct RepartitionsApart<P> {
    inner: P,
    in_flight: AtomicUsize,
}

impl<P: MemoryPool> RepartitionsApart<P> {
    pub fn new(inner: P) -> Self {
        RepartitionsApart { inner, in_flight: AtomicUsize::new(0) }
    }

    /// Bytes the repartitions hold now, outside the limit.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// DataFusion names a repartition's reservations `RepartitionExec[<output partition>]`.
fn is_repartition(consumer: &MemoryConsumer) -> bool {
    consumer.name().starts_with("RepartitionExec[")
}

impl<P: MemoryPool> MemoryPool for RepartitionsApart<P> {
    fn name(&self) -> &str {
        "keymart"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if !is_repartition(consumer) {
            self.inner.register(consumer);
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if !is_repartition(consumer) {
            self.inner.unregister(consumer);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        if is_repartition(reservation.consumer()) {
            self.in_flight.fetch_add(additional, Ordering::Relaxed);
        } else {
            self.inner.grow(reservation, additional);
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        if is_repartition(reservation.consumer()) {
            self.in_flight.fetch_sub(shrink, Ordering::Relaxed);
        } else {
            self.inner.shrink(reservation, shrink);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition(reservation.consumer()) {
            self.in_flight.fetch_add(additional, Ordering::Relaxed);
            Ok(())
        } else {
            self.inner.try_grow(reservation, additional)
        }
    }

    fn reserved(&self) -> usize {
        self.inner.reserved() + self.in_flight()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

impl<P: MemoryPool> fmt::Display for RepartitionsApart<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (repartitions apart: {} bytes in flight)", self.inner, self.in_flight())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::execution::memory_pool::FairSpillPool;

    use super::*;

    #[test]
    fn a_full_pool_refuses_a_sort_but_not_a_repartition_and_counts_both() {
        let pool: Arc<dyn MemoryPool> = Arc::new(RepartitionsApart::new(FairSpillPool::new(1000)));
        let sort = MemoryConsumer::new("ExternalSorter[0]").with_can_spill(true).register(&pool);
        let repartition = MemoryConsumer::new("RepartitionExec[0]").with_can_spill(true).register(&pool);
        sort.try_grow(900).unwrap();
        repartition.try_grow(5000).unwrap();
        assert!(sort.try_grow(200).is_err(), "the sort is held to the limit");
        assert_eq!(pool.reserved(), 5900);
        drop(repartition);
        assert_eq!(pool.reserved(), 900);
    }

    #[test]
    fn a_repartition_does_not_shrink_the_share_of_the_spilling_consumers() {
        let pool: Arc<dyn MemoryPool> = Arc::new(RepartitionsApart::new(FairSpillPool::new(1000)));
        let aggregation = MemoryConsumer::new("GroupedHashAggregateStream[0]").with_can_spill(true).register(&pool);
        let _repartitions: Vec<MemoryReservation> = (0..3)
            .map(|i| MemoryConsumer::new(format!("RepartitionExec[{i}]")).with_can_spill(true).register(&pool))
            .collect();
        // Registered with the fair pool, the three would have cut the aggregation's share to 250.
        aggregation.try_grow(1000).unwrap();
    }
}
