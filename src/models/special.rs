//! Special functions the customer-base models need: log-gamma and digamma (statrs), and the Gauss
//! hypergeometric function ₂F₁, computed in log space so large purchase counts do not overflow.

pub use statrs::function::gamma::{digamma, ln_gamma};

/// ln ₂F₁(a, b; c; z) for 0 ≤ z < 1 and c > 0 (the range the BG/NBD expectations use).
///
/// The power series converges for |z| < 1 but, for the BG/NBD arguments (a = r + x,
/// b = b + x, c = a + b + x − 1, x the purchase count), its terms first grow like C(x+n, n)·zⁿ.
/// Euler's transformation ₂F₁(a, b; c; z) = (1 − z)^(c−a−b) ₂F₁(c − a, c − b; c; z) swaps them for
/// the small parameters c − a and c − b, whose series is close to 1 and converges fast; it is
/// used whenever it shrinks the parameters.
pub fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    if !(0.0..1.0).contains(&z) || c <= 0.0 {
        return f64::NAN;
    }
    if z == 0.0 {
        return 0.0;
    }
    let (ca, cb) = (c - a, c - b);
    if ca.abs() + cb.abs() < a.abs() + b.abs() {
        (c - a - b) * (-z).ln_1p() + series(ca, cb, c, z).ln()
    } else {
        series(a, b, c, z).ln()
    }
}

/// ₂F₁(a, b; c; z) for 0 ≤ z < 1.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    ln_hyp2f1(a, b, c, z).exp()
}

/// The power series Σ (a)ₙ(b)ₙ / (c)ₙ zⁿ / n!, summed until a term no longer changes the sum.
fn series(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 0..1_000_000u32 {
        let n = n as f64;
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term == 0.0 || (term.abs() < 1e-16 * sum.abs() && n > 2.0) {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        // ₂F₁(1, 1; 2; z) = −ln(1 − z) / z
        for z in [0.1, 0.5, 0.9, 0.99] {
            let expected = -(1.0f64 - z).ln() / z;
            assert!((hyp2f1(1.0, 1.0, 2.0, z) - expected).abs() < 1e-10 * expected, "z={z}");
        }
        // ₂F₁(a, b; b; z) = (1 − z)^(−a)
        let (a, b, z) = (2.5, 3.0, 0.7);
        assert!((hyp2f1(a, b, b, z) - (1.0f64 - z).powf(-a)).abs() < 1e-9);
    }

    #[test]
    fn large_parameters_stay_finite() {
        // (r + x, b + x; a + b + x − 1) with x = 300: the direct series would pass 1e100.
        let value = ln_hyp2f1(300.24, 302.4, 302.2, 0.45);
        assert!(value.is_finite());
        // Euler's transformation agrees with the direct series where both are exact.
        let direct = series(20.24, 22.4, 22.2, 0.3).ln();
        assert!((ln_hyp2f1(20.24, 22.4, 22.2, 0.3) - direct).abs() < 1e-10);
    }
}
