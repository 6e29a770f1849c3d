//! The Gamma-Gamma model of spend per purchase (Fader & Hardie 2013; Colombo & Jiang 1999): a
//! customer's purchases are worth z ~ Gamma(p, ν) with ν ~ Gamma(q, γ) across customers; fitted on
//! repeat buyers from x (repeat purchases) and m (their mean value).

use super::optimize::{Objective, chunked_sum, maximize};
use super::special::{digamma, ln_gamma};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    /// γ, the scale (called v in `lifetimes`).
    pub v: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaFit {
    pub params: GammaGamma,
    pub ll: f64,
    pub n: u64,
}

/// Fewer repeat buyers than this give no meaningful fit.
pub const MIN_CUSTOMERS: usize = 10;

impl GammaGamma {
    /// ln of the density of a mean spend `m` over `x` purchases.
    pub fn ln_likelihood(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, v } = *self;
        ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * v.ln() + (p * x - 1.0) * m.ln() + p * x * x.ln()
            - (p * x + q) * (v + m * x).ln()
    }

    /// E[M | x, m]: the customer's expected spend per purchase; the population mean for x = 0.
    pub fn expected_spend(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, v } = *self;
        (p * (v + x * m)) / (p * x + q - 1.0)
    }
}

/// Repeat buyers grouped by purchase count: the terms that depend only on x are computed once
/// per group; only ln(γ + m·x) is per customer.
struct Likelihood {
    /// (x, customers, Σ ln m) per distinct x.
    groups: Vec<(f64, f64, f64)>,
    /// (x, m) per customer.
    customers: Vec<(f64, f64)>,
}

impl Likelihood {
    fn new(data: &[(f64, f64)]) -> Likelihood {
        let mut customers: Vec<(f64, f64)> = data.to_vec();
        customers.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut groups: Vec<(f64, f64, f64)> = Vec::new();
        for &(x, m) in &customers {
            match groups.last_mut() {
                Some(last) if last.0 == x => {
                    last.1 += 1.0;
                    last.2 += m.ln();
                }
                _ => groups.push((x, 1.0, m.ln())),
            }
        }
        Likelihood { groups, customers }
    }

    fn params(theta: &[f64]) -> GammaGamma {
        GammaGamma { p: theta[0].exp(), q: theta[1].exp(), v: theta[2].exp() }
    }
}

impl Objective for Likelihood {
    fn evaluate(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let GammaGamma { p, q, v } = Self::params(theta);
        let n = self.customers.len() as f64;
        let per_x: f64 = self
            .groups
            .iter()
            .map(|&(x, n, sum_ln_m)| {
                n * (ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * v.ln() + p * x * x.ln())
                    + (p * x - 1.0) * sum_ln_m
            })
            .sum();
        let (mut dp, mut dq, mut dv) = (0.0, 0.0, 0.0);
        for &(x, n, sum_ln_m) in &self.groups {
            let (psi_xq, psi_x) = (digamma(p * x + q), digamma(p * x));
            dp += n * x * (psi_xq - psi_x + x.ln()) + x * sum_ln_m;
            dq += n * (psi_xq - digamma(q) + v.ln());
            dv += n * q / v;
        }
        let [per_customer, sp, sq, sv] = chunked_sum(&self.customers, |&(x, m)| {
            let ln_vm = (v + m * x).ln();
            [(p * x + q) * ln_vm, x * ln_vm, ln_vm, (p * x + q) / (v + m * x)]
        });
        (dp, dq, dv) = (dp - sp, dq - sq, dv - sv);
        ((per_x - per_customer) / n, vec![dp * p / n, dq * q / n, dv * v / n])
    }
}

/// Maximum-likelihood fit on repeat buyers (x > 0, m > 0); `None` when the data cannot identify
/// the model (too few repeat buyers, every mean spend the same) or the optimum is not interior.
pub fn fit(data: &[(f64, f64)]) -> Option<GammaGammaFit> {
    let usable: Vec<(f64, f64)> = data.iter().copied().filter(|(x, m)| *x > 0.0 && *m > 0.0 && m.is_finite()).collect();
    if usable.len() < MIN_CUSTOMERS {
        return None;
    }
    let first = usable[0].1;
    if usable.iter().all(|(_, m)| (m - first).abs() <= 1e-12 * first) {
        return None;
    }
    let objective = Likelihood::new(&usable);
    let mean_m = usable.iter().map(|(_, m)| m).sum::<f64>() / usable.len() as f64;
    // Start at p = q = 1 (a wide prior) with γ putting the mean spend right.
    let theta = maximize(&objective, vec![0.0, 0.0, mean_m.max(1e-6).ln()])?;
    let params = Likelihood::params(&theta);
    let ll = objective.value(&theta) * usable.len() as f64;
    let sane = [params.p, params.q, params.v].iter().all(|x| x.is_finite() && (1e-8..1e12).contains(x));
    (sane && ll.is_finite()).then_some(GammaGammaFit { params, ll, n: usable.len() as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let data = [(1.0, 20.0), (3.0, 35.5), (3.0, 12.0), (7.0, 40.0), (2.0, 18.25)];
        let objective = Likelihood::new(&data);
        let theta = [6.25f64.ln(), 3.74f64.ln(), 15.44f64.ln()];
        let analytic = objective.gradient(&theta);
        for k in 0..3 {
            let (mut up, mut down) = (theta, theta);
            up[k] += 1e-6;
            down[k] -= 1e-6;
            let numeric = (objective.value(&up) - objective.value(&down)) / 2e-6;
            assert!((analytic[k] - numeric).abs() < 1e-6, "k={k}: {} vs {numeric}", analytic[k]);
        }
    }

    #[test]
    fn degenerate_data_gives_no_fit() {
        assert!(fit(&[(1.0, 10.0); 50]).is_none(), "every mean spend equal");
        assert!(fit(&[(1.0, 10.0), (2.0, 12.0)]).is_none(), "too few");
        assert!(fit(&[(0.0, 0.0); 100]).is_none(), "no repeat buyers");
    }
}
