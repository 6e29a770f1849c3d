//! Maximum likelihood with argmin: L-BFGS with an analytic gradient, and Nelder-Mead as the
//! fallback when the line search cannot make progress.

use std::sync::Mutex;

use argmin::core::{CostFunction, Error, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::neldermead::NelderMead;
use argmin::solver::quasinewton::LBFGS;

/// A function to maximize, with its gradient.
pub trait Objective {
    /// The value and the gradient: one pass over the data serves both.
    fn evaluate(&self, theta: &[f64]) -> (f64, Vec<f64>);

    fn value(&self, theta: &[f64]) -> f64 {
        self.evaluate(theta).0
    }

    fn gradient(&self, theta: &[f64]) -> Vec<f64> {
        self.evaluate(theta).1
    }
}

/// argmin minimizes: the objective as its negative. A line search asks for the value and the
/// gradient at the same point one after the other, so the last full evaluation is kept.
struct Negated<'a, O: Objective> {
    objective: &'a O,
    last: Mutex<Option<Evaluation>>,
}

/// A point, the objective's value there and its gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

impl<'a, O: Objective> Negated<'a, O> {
    fn new(objective: &'a O) -> Self {
        Negated { objective, last: Mutex::new(None) }
    }

    /// Value and gradient of the objective at `theta`, from the last evaluation when it was there.
    fn both(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().expect("not poisoned");
        if let Some((at, value, gradient)) = last.as_ref()
            && at.as_slice() == theta
        {
            return (*value, gradient.clone());
        }
        let (value, gradient) = self.objective.evaluate(theta);
        *last = Some((theta.to_vec(), value, gradient.clone()));
        (value, gradient)
    }
}

impl<O: Objective> CostFunction for Negated<'_, O> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, theta: &Vec<f64>) -> Result<f64, Error> {
        let value = -self.both(theta).0;
        Ok(if value.is_finite() { value } else { f64::INFINITY })
    }
}

impl<O: Objective> Gradient for Negated<'_, O> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, Error> {
        Ok(self.both(theta).1.into_iter().map(|g| -g).collect())
    }
}

/// The maximizing parameters, or `None` when neither method reaches a finite optimum.
pub fn maximize<O: Objective>(objective: &O, start: Vec<f64>) -> Option<Vec<f64>> {
    let lbfgs = lbfgs(objective, start.clone());
    if let Some((theta, _)) = &lbfgs {
        let slope = objective.gradient(theta).iter().map(|g| g * g).sum::<f64>().sqrt();
        tracing::debug!("L-BFGS ended where the gradient's norm is {slope:.2e}");
        if slope < 1e-6 {
            return lbfgs.map(|(theta, _)| theta);
        }
    }
    // The line search stalled (flat or ill-conditioned likelihood): Nelder-Mead from where it
    // stopped, and keep whichever is better.
    let from = lbfgs.as_ref().map_or(start, |(theta, _)| theta.clone());
    let polished = nelder_mead(objective, from, 0.5);
    [lbfgs, polished].into_iter().flatten().min_by(|a, b| a.1.total_cmp(&b.1)).map(|(theta, _)| theta)
}

/// The objectives are log-likelihoods per customer (≈ -6 for the bench's BG/NBD): an iteration that
/// moves one by less than 1e-12 moves the whole likelihood of a million customers by 1e-6, and
/// further steps only shuffle the parameters' last digits. With 1e-15 (below a double's resolution
/// there) the line search went on at that noise, evaluating the likelihood several times as often
/// for no better fit.
fn lbfgs<O: Objective>(objective: &O, start: Vec<f64>) -> Option<(Vec<f64>, f64)> {
    let solver =
        LBFGS::new(MoreThuenteLineSearch::new(), 7).with_tolerance_grad(1e-10).ok()?.with_tolerance_cost(1e-12).ok()?;
    let result =
        Executor::new(Negated::new(objective), solver).configure(|s| s.param(start).max_iters(500)).run().ok()?;
    let state = result.state();
    tracing::debug!("L-BFGS: {} iterations, {:?}", state.get_iter(), state.get_termination_status());
    let cost = state.get_best_cost();
    state.get_best_param().filter(|_| cost.is_finite()).map(|p| (p.clone(), cost))
}

fn nelder_mead<O: Objective>(objective: &O, start: Vec<f64>, step: f64) -> Option<(Vec<f64>, f64)> {
    let mut simplex = vec![start.clone()];
    for k in 0..start.len() {
        let mut vertex = start.clone();
        vertex[k] += step;
        simplex.push(vertex);
    }
    let solver = NelderMead::new(simplex).with_sd_tolerance(1e-12).ok()?;
    let result = Executor::new(Negated::new(objective), solver).configure(|s| s.max_iters(5000)).run().ok()?;
    let state = result.state();
    tracing::debug!("Nelder-Mead: {} iterations, {:?}", state.get_iter(), state.get_termination_status());
    let cost = state.get_best_cost();
    state.get_best_param().filter(|_| cost.is_finite()).map(|p| (p.clone(), cost))
}

/// Terms are summed in chunks of this many, each chunk on whichever thread is free and the
/// chunks' sums added in order: the result does not depend on the number of threads.
const CHUNK: usize = 8192;

/// Σ f over `items`, in fixed chunks spread over the machine's threads; `N` sums at once.
pub(super) fn chunked_sum<T: Sync, const N: usize>(items: &[T], f: impl Fn(&T) -> [f64; N] + Sync) -> [f64; N] {
    let chunks: Vec<&[T]> = items.chunks(CHUNK).collect();
    let sum_chunk = |chunk: &[T]| {
        chunk.iter().fold([0.0; N], |mut acc, item| {
            let v = f(item);
            for k in 0..N {
                acc[k] += v[k];
            }
            acc
        })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunks.len());
    let partials: Vec<[f64; N]> = if threads <= 1 {
        chunks.iter().map(|c| sum_chunk(c)).collect()
    } else {
        // Threads take the next chunk as they finish one: a fixed split of the chunks between
        // them was slower, as the cores are shared with the runtime.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut partials = vec![[0.0; N]; chunks.len()];
        let results: Vec<Vec<(usize, [f64; N])>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(chunk) = chunks.get(i) else { break };
                            done.push((i, sum_chunk(chunk)));
                        }
                        done
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("likelihood worker")).collect()
        });
        for (i, partial) in results.into_iter().flatten() {
            partials[i] = partial;
        }
        partials
    };
    partials.iter().fold([0.0; N], |mut acc, p| {
        for k in 0..N {
            acc[k] += p[k];
        }
        acc
    })
}
