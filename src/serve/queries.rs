//! The threads queries compute on, apart from the ones that speak the protocols. A DataFusion
//! operator can compute for seconds inside one poll; on the protocols' threads that starves
//! their timers, so a statement's deadline or a cancel request would be noticed only once the
//! operator yields (seen: a 2 s statement timeout answered after 20 s). Here the computing
//! happens on threads of its own, and its batches cross a short channel; the protocol side
//! waits on that channel with its deadline and cancel, on threads that stay free to notice them.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::{Error, Result};

/// Batches in flight between the query threads and a connection: the next one is computed while
/// the connection sends this one.
const IN_FLIGHT: usize = 2;

pub struct QueryThreads(Option<tokio::runtime::Runtime>);

impl QueryThreads {
    /// One worker per core.
    pub fn start() -> Result<QueryThreads> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name("keymart-query")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("starting the query threads: {e}")))?;
        Ok(QueryThreads(Some(runtime)))
    }

    /// Plan and run `plan` on the query threads: its batches as a stream, and the task that
    /// computes them (stopped, with every task of the plan, when dropped).
    pub fn execute(
        &self,
        ctx: SessionContext,
        plan: LogicalPlan,
        schema: SchemaRef,
    ) -> (SendableRecordBatchStream, Producer) {
        let (sender, receiver) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let runtime = self.0.as_ref().expect("the query threads run until the server stops");
        let task = runtime.spawn(async move {
            let started = async { ctx.execute_logical_plan(plan).await?.execute_stream().await }.await;
            let mut batches = match started {
                Ok(batches) => batches,
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            };
            while let Some(batch) = batches.next().await {
                if sender.send(batch).await.is_err() {
                    return;
                }
            }
        });
        let batches =
            futures::stream::unfold(
                receiver,
                |mut receiver| async move { receiver.recv().await.map(|b| (b, receiver)) },
            );
        (Box::pin(RecordBatchStreamAdapter::new(schema, batches)), Producer(task))
    }
}

impl Drop for QueryThreads {
    /// Inside the server's own runtime a runtime may not block to stop: its threads are let go.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The task computing a query's batches; aborted when dropped.
pub struct Producer(tokio::task::JoinHandle<()>);

impl Drop for Producer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
