//! The BG/NBD model of repeat buying (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy
//! Way"). Each customer buys as a Poisson process with rate λ ~ Gamma(r, α) while alive and, after
//! every repeat purchase, drops out with probability p ~ Beta(a, b). Time in weeks; x repeat
//! purchases, the last at t_x, observed for T since the first.

use super::optimize::{Objective, maximize};
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

    /// Gradient of `ln_likelihood` with respect to (r, α, a, b).
    fn gradient_one(&self, x: f64, t_x: f64, t: f64) -> [f64; 4] {
        let BgNbd { r, alpha, a, b } = *self;
        let d_a1 = [digamma(r + x) - digamma(r) + alpha.ln(), r / alpha, 0.0, 0.0];
        let d_a2 = [
            0.0,
            0.0,
            digamma(a + b) - digamma(a + b + x),
            digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x),
        ];
        let d_a3 = [-(alpha + t).ln(), -(r + x) / (alpha + t), 0.0, 0.0];
        let mut grad = [0.0; 4];
        if x > 0.0 {
            let a3 = -(r + x) * (alpha + t).ln();
            let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln();
            let w4 = 1.0 / (1.0 + (a3 - a4).exp());
            let w3 = 1.0 - w4;
            let d_a4 = [-(alpha + t_x).ln(), -(r + x) / (alpha + t_x), 1.0 / a, -1.0 / (b + x - 1.0)];
            for k in 0..4 {
                grad[k] = d_a1[k] + d_a2[k] + w3 * d_a3[k] + w4 * d_a4[k];
            }
        } else {
            for k in 0..4 {
                grad[k] = d_a1[k] + d_a2[k] + d_a3[k];
            }
        }
        grad
    }
}

fn log_add(u: f64, v: f64) -> f64 {
    let m = u.max(v);
    m + ((u - m).exp() + (v - m).exp()).ln()
}

struct Likelihood<'a> {
    groups: &'a [Group],
    customers: f64,
}

impl Likelihood<'_> {
    fn params(theta: &[f64]) -> BgNbd {
        BgNbd { r: theta[0].exp(), alpha: theta[1].exp(), a: theta[2].exp(), b: theta[3].exp() }
    }
}

impl Objective for Likelihood<'_> {
    /// Mean log-likelihood per customer, in log-parameters (so every parameter stays positive).
    fn value(&self, theta: &[f64]) -> f64 {
        let model = Self::params(theta);
        self.groups.iter().map(|g| g.count * model.ln_likelihood(g.x, g.t_x, g.t)).sum::<f64>() / self.customers
    }

    fn gradient(&self, theta: &[f64]) -> Vec<f64> {
        let model = Self::params(theta);
        let mut total = [0.0; 4];
        for g in self.groups {
            let grad = model.gradient_one(g.x, g.t_x, g.t);
            for k in 0..4 {
                total[k] += g.count * grad[k];
            }
        }
        let scale = [model.r, model.alpha, model.a, model.b];
        (0..4).map(|k| total[k] * scale[k] / self.customers).collect()
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
    let objective = Likelihood { groups, customers };
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

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let groups = [
            Group { x: 0.0, t_x: 0.0, t: 30.0, count: 3.0 },
            Group { x: 4.0, t_x: 20.0, t: 35.0, count: 2.0 },
            Group { x: 1.0, t_x: 2.0, t: 10.0, count: 1.0 },
        ];
        let objective = Likelihood { groups: &groups, customers: 6.0 };
        let theta = [0.3f64.ln(), 4.0f64.ln(), 0.8f64.ln(), 2.5f64.ln()];
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
