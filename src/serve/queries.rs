//! The threads queries compute on, apart from the ones that speak the protocols. A DataFusion
//! operator can compute for seconds inside one poll; on the protocols' threads that starves
//! their timers, so a statement's deadline or a cancel request would be noticed only once the
//! operator yields (seen: a 2 s statement timeout answered after 20 s). Here the computing
//! happens on threads of its own, and its batches cross a short channel; the protocol side
//! waits on that channel with its deadline and cancel, on threads that stay free to notice them.
//!
//! A statement that ends early (its deadline, a cancel, a client gone) drops its [`Producer`]:
//! the plan's tasks are aborted, and each join's output is stopped at its next batch (a
//! [`StopPoint`]), since an aborted task is only dropped once the operator it runs yields.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt};

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
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        let task = runtime.spawn(async move {
            let started = async {
                let frame = ctx.execute_logical_plan(plan).await?;
                let task_ctx = Arc::new(frame.task_ctx());
                let physical = StopPoint::above_joins(frame.create_physical_plan().await?, &stop)?;
                datafusion::physical_plan::execute_stream(physical, task_ctx)
            }
            .await;
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
        (Box::pin(RecordBatchStreamAdapter::new(schema, batches)), Producer { task, stopped })
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

/// The task computing a query's batches; aborted, and its plan's stop points stopped, when dropped.
pub struct Producer {
    task: tokio::task::JoinHandle<()>,
    stopped: Arc<AtomicBool>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// Above a join (or an unnest) in a running plan: its output ends with an error once the
/// statement is stopped. These are the operators whose output can outgrow their input without
/// bound: one poll of an aggregate over a cross join loops over the join's batches for as long as
/// the join has some, and never yields to tokio; at a stop point it stops at the next batch.
#[derive(Debug)]
struct StopPoint {
    input: Arc<dyn ExecutionPlan>,
    stopped: Arc<AtomicBool>,
}

impl StopPoint {
    fn above_joins(
        plan: Arc<dyn ExecutionPlan>,
        stopped: &Arc<AtomicBool>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let placed =
            plan.transform_up(|node| {
                let expands = node.is::<CrossJoinExec>()
                    || node.is::<NestedLoopJoinExec>()
                    || node.is::<HashJoinExec>()
                    || node.is::<SortMergeJoinExec>()
                    || node.is::<SymmetricHashJoinExec>()
                    || node.is::<PiecewiseMergeJoinExec>()
                    || node.is::<UnnestExec>();
                Ok(if expands {
                    Transformed::yes(
                        Arc::new(StopPoint { input: node, stopped: stopped.clone() }) as Arc<dyn ExecutionPlan>
                    )
                } else {
                    Transformed::no(node)
                })
            })?;
        Ok(placed.data)
    }
}

impl DisplayAs for StopPoint {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "StopPoint")
    }
}

impl ExecutionPlan for StopPoint {
    fn name(&self) -> &str {
        "StopPoint"
    }

    /// Invisible to a parent that looks for the join's type.
    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.input.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(StopPoint { input: children.swap_remove(0), stopped: self.stopped.clone() }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(Stoppable { input, stopped: self.stopped.clone() }))
    }
}

struct Stoppable {
    input: SendableRecordBatchStream,
    stopped: Arc<AtomicBool>,
}

impl Stream for Stoppable {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stopped.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(DataFusionError::Execution("the statement was stopped".into()))));
        }
        self.input.poll_next_unpin(cx)
    }
}

impl RecordBatchStream for Stoppable {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
