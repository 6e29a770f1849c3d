//! The BG/NBD model of repeat buying (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy
//! Way"). Each customer buys as a Poisson process with rate λ ~ Gamma(r, α) while alive and, after
//! every repeat purchase, drops out with probability p ~ Beta(a, b). Time in weeks; x repeat
//! purchases, the last at t_x, observed for T since the first.

use super::optimize::{Objective, chunked_sum, maximize};
use super::special::{digamma, ln_gamma, ln_hyp2f1};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// Customers sharing one (x, t_x, T): they contribute one likelihood term, `count` times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
    pub count: f64,
}

/// The result of a fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdFit {
    pub params: BgNbd,
    /// Total log-likelihood at the optimum.
    pub ll: f64,
    pub n: u64,
}

/// Fewer customers than this give no meaningful fit.
pub const MIN_CUSTOMERS: f64 = 10.0;

impl BgNbd {
    /// ln of the likelihood of one customer (eq. 6 of the paper, in log space).
    pub fn ln_likelihood(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + t).ln();
        if x > 0.0 {
            let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln();
            a1 + a2 + log_add(a3, a4)
        } else {
            a1 + a2 + a3
        }
    }

    /// P(alive | x, t_x, T).
    pub fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        if x == 0.0 {
            return 1.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let ln_odds = a.ln() - (b + x - 1.0).ln() + (r + x) * ((alpha + t).ln() - (alpha + t_x).ln());
        1.0 / (1.0 + ln_odds.exp())
    }

    /// E[X(t) | x, t_x, T]: expected purchases in the next `horizon` weeks (eq. 10).
    pub fn expected_purchases(&self, x: f64, t_x: f64, t: f64, horizon: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let z = horizon / (alpha + t + horizon);
        let ln_f = ln_hyp2f1(r + x, b + x, a + b + x - 1.0, z);
        let ln_decay = (r + x) * ((alpha + t).ln() - (alpha + t + horizon).ln());
        // 1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(…), without cancellation when the product is near 1.
        let bracket = -(ln_decay + ln_f).exp_m1();
        let numerator = (a + b + x - 1.0) / (a - 1.0) * bracket;
        let denominator = if x > 0.0 {
            1.0 + (a / (b + x - 1.0)) * ((r + x) * ((alpha + t).ln() - (alpha + t_x).ln())).exp()
        } else {
            1.0
        };
        numerator / denominator
    }

    /// E[X(t)] for a customer just acquired (eq. 9).
    pub fn unconditional_expected(&self, horizon: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let z = horizon / (alpha + horizon);
        let ln_f = ln_hyp2f1(r, b, a + b - 1.0, z);
        let bracket = -(r * (alpha.ln() - (alpha + horizon).ln()) + ln_f).exp_m1();
        (a + b - 1.0) / (a - 1.0) * bracket
    }
}

/// ln(eᵘ + eᵛ) without overflow.
fn log_add(u: f64, v: f64) -> f64 {
    u.max(v) + (-(u - v).abs()).exp().ln_1p()
}

/// The grouped data as the likelihood reads it. The terms that depend only on x (the ln Γ and ψ
/// values) are computed once per distinct x and the logarithms of α + t once per distinct time,
/// so that each group costs only the mixing of "alive at T" with "dropped out after t_x".
struct Likelihood {
    /// Distinct purchase counts, ascending, and the customers having each.
    xs: Vec<f64>,
    x_customers: Vec<f64>,
    /// Distinct times (t_x and T values together), ascending.
    times: Vec<f64>,
    /// Groups with a repeat purchase: indexes into `xs` and `times` (t_x, T), and the count.
    repeaters: Vec<(u32, u32, u32, f64)>,
    /// Groups without: index of T, and the count.
    one_timers: Vec<(u32, f64)>,
    customers: f64,
}

impl Likelihood {
    fn new(groups: &[Group]) -> Likelihood {
        let distinct = |values: Vec<f64>| {
            let mut values = values;
            values.sort_by(f64::total_cmp);
            values.dedup();
            values
        };
        let xs = distinct(groups.iter().map(|g| g.x).collect());
        let times = distinct(groups.iter().flat_map(|g| [g.t_x, g.t]).collect());
        let index = |values: &[f64], v: f64| values.partition_point(|w| *w < v) as u32;
        let mut x_customers = vec![0.0; xs.len()];
        let (mut repeaters, mut one_timers) = (Vec::new(), Vec::new());
        for g in groups {
            let xi = index(&xs, g.x);
            x_customers[xi as usize] += g.count;
            if g.x > 0.0 {
                repeaters.push((xi, index(&times, g.t_x), index(&times, g.t), g.count));
            } else {
                one_timers.push((index(&times, g.t), g.count));
            }
        }
        let customers = groups.iter().map(|g| g.count).sum();
        Likelihood { xs, x_customers, times, repeaters, one_timers, customers }
    }

    fn params(theta: &[f64]) -> BgNbd {
        BgNbd { r: theta[0].exp(), alpha: theta[1].exp(), a: theta[2].exp(), b: theta[3].exp() }
    }

    /// ln(α + t) and 1/(α + t) for every distinct time.
    fn time_terms(&self, alpha: f64) -> (Vec<f64>, Vec<f64>) {
        self.times.iter().map(|t| ((alpha + t).ln(), 1.0 / (alpha + t))).unzip()
    }

    /// ln a − ln(b + x − 1) per distinct x (unused for x = 0).
    fn dropout_terms(&self, model: &BgNbd) -> Vec<f64> {
        self.xs.iter().map(|x| model.a.ln() - (model.b + x - 1.0).ln()).collect()
    }

    /// The two ways a repeat buyer's history can end, in log space: alive at T (a3) or dropped
    /// out right after the last purchase at t_x (a4).
    fn endings(&self, model: &BgNbd, ln_t: &[f64], ln_drop: &[f64], group: &(u32, u32, u32, f64)) -> (f64, f64) {
        let &(xi, txi, ti, _) = group;
        let rx = model.r + self.xs[xi as usize];
        (-rx * ln_t[ti as usize], ln_drop[xi as usize] - rx * ln_t[txi as usize])
    }
}

impl Objective for Likelihood {
    /// Mean log-likelihood per customer (and its gradient), in log-parameters so every parameter
    /// stays positive.
    fn evaluate(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let model = Self::params(theta);
        let BgNbd { r, alpha, a, b } = model;
        let (ln_t, inv_t) = self.time_terms(alpha);
        let ln_drop = self.dropout_terms(&model);
        // a1 + a2 of eq. 6 without their α + t parts: per distinct x.
        let common = ln_gamma(a + b) - ln_gamma(b) - ln_gamma(r) + r * alpha.ln();
        let per_x: f64 = self
            .xs
            .iter()
            .zip(&self.x_customers)
            .map(|(x, n)| n * (common + ln_gamma(r + x) + ln_gamma(b + x) - ln_gamma(a + b + x)))
            .sum();
        // ∂(a1 + a2)/∂(r, α, a, b), per distinct x.
        let (psi_ab, psi_b, psi_r) = (digamma(a + b), digamma(b), digamma(r));
        let mut total = [0.0; 4];
        for (x, n) in self.xs.iter().zip(&self.x_customers) {
            let psi_abx = digamma(a + b + x);
            total[0] += n * (digamma(r + x) - psi_r + alpha.ln());
            total[1] += n * r / alpha;
            total[2] += n * (psi_ab - psi_abx);
            total[3] += n * (psi_ab + digamma(b + x) - psi_b - psi_abx);
        }
        let one_timers = chunked_sum(&self.one_timers, |&(ti, count)| {
            let ti = ti as usize;
            [-count * r * ln_t[ti], -count * ln_t[ti], -count * r * inv_t[ti]]
        });
        let repeaters = chunked_sum(&self.repeaters, |group| {
            let &(xi, txi, ti, count) = group;
            let x = self.xs[xi as usize];
            let (a3, a4) = self.endings(&model, &ln_t, &ln_drop, group);
            let sum = log_add(a3, a4);
            // Weights of the two endings in their log-sum.
            let w4 = (a4 - sum).exp();
            let w3 = 1.0 - w4;
            let (ti, txi) = (ti as usize, txi as usize);
            [
                count * sum,
                count * -(w3 * ln_t[ti] + w4 * ln_t[txi]),
                count * -(r + x) * (w3 * inv_t[ti] + w4 * inv_t[txi]),
                count * w4 / a,
                count * -w4 / (b + x - 1.0),
            ]
        });
        total[0] += one_timers[1] + repeaters[1];
        total[1] += one_timers[2] + repeaters[2];
        total[2] += repeaters[3];
        total[3] += repeaters[4];
        let scale = [r, alpha, a, b];
        let value = (per_x + one_timers[0] + repeaters[0]) / self.customers;
        (value, (0..4).map(|k| total[k] * scale[k] / self.customers).collect())
    }
}

/// Maximum-likelihood fit; `None` when the data cannot identify the model (too few customers,
/// no repeat purchases) or the optimum is not a finite interior point.
pub fn fit(groups: &[Group]) -> Option<BgNbdFit> {
    let customers: f64 = groups.iter().map(|g| g.count).sum();
    let repeaters: f64 = groups.iter().filter(|g| g.x > 0.0).map(|g| g.count).sum();
    if customers < MIN_CUSTOMERS || repeaters == 0.0 {
        return None;
    }
    let objective = Likelihood::new(groups);
    let theta = maximize(&objective, vec![0.0; 4])?;
    let params = Likelihood::params(&theta);
    let ll = objective.value(&theta) * customers;
    let sane = [params.r, params.alpha, params.a, params.b].iter().all(|p| p.is_finite() && (1e-8..1e8).contains(p));
    (sane && ll.is_finite()).then_some(BgNbdFit { params, ll, n: customers as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lifetimes' fit of the CDNOW sample (its tests print these to six digits).
    const CDNOW: BgNbd = BgNbd { r: 0.242593, alpha: 4.413595, a: 0.792919, b: 2.425881 };

    #[test]
    fn lifetimes_check_values() {
        // lifetimes' tests for the published CDNOW parameters.
        assert!((CDNOW.expected_purchases(2.0, 30.43, 38.86, 39.0) - 1.226).abs() < 1e-3);
        for (t, expected) in [(1.0, 0.0532), (3.0, 0.1506), (32.0, 1.0437), (78.0, 1.8576)] {
            let got = CDNOW.unconditional_expected(t);
            assert!((got - expected).abs() < 5e-4, "t={t}: {got}");
        }
    }

    /// Groups sharing purchase counts and times, as the grouped likelihood indexes them.
    const GROUPS: [Group; 4] = [
        Group { x: 0.0, t_x: 0.0, t: 30.0, count: 3.0 },
        Group { x: 4.0, t_x: 20.0, t: 35.0, count: 2.0 },
        Group { x: 1.0, t_x: 2.0, t: 30.0, count: 1.0 },
        Group { x: 4.0, t_x: 2.0, t: 20.0, count: 5.0 },
    ];

    fn theta() -> [f64; 4] {
        [0.3f64.ln(), 4.0f64.ln(), 0.8f64.ln(), 2.5f64.ln()]
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let objective = Likelihood::new(&GROUPS);
        let theta = theta();
        let analytic = objective.gradient(&theta);
        for k in 0..4 {
            let mut up = theta;
            let mut down = theta;
            up[k] += 1e-6;
            down[k] -= 1e-6;
            let numeric = (objective.value(&up) - objective.value(&down)) / 2e-6;
            assert!((analytic[k] - numeric).abs() < 1e-6, "k={k}: {} vs {numeric}", analytic[k]);
        }
    }

    #[test]
    fn the_grouped_likelihood_is_the_sum_over_customers() {
        let model = Likelihood::params(&theta());
        let direct: f64 = GROUPS.iter().map(|g| g.count * model.ln_likelihood(g.x, g.t_x, g.t)).sum::<f64>() / 11.0;
        let grouped = Likelihood::new(&GROUPS).value(&theta());
        assert!((direct - grouped).abs() < 1e-12, "{direct} vs {grouped}");
    }

    #[test]
    fn p_alive_is_one_without_repeat_purchases_and_falls_with_silence() {
        assert_eq!(CDNOW.p_alive(0.0, 0.0, 30.0), 1.0);
        let recent = CDNOW.p_alive(5.0, 29.0, 30.0);
        let silent = CDNOW.p_alive(5.0, 5.0, 30.0);
        assert!(recent > silent && (0.0..=1.0).contains(&silent), "{recent} {silent}");
    }

    #[test]
    fn degenerate_data_gives_no_fit() {
        assert!(fit(&[Group { x: 0.0, t_x: 0.0, t: 10.0, count: 100.0 }]).is_none());
        assert!(fit(&[Group { x: 2.0, t_x: 5.0, t: 10.0, count: 3.0 }]).is_none());
    }
}
