//! The customer base behind the synthetic extracts: who the customers are and when they buy,
//! drawn from the BG/NBD and Gamma-Gamma processes with known parameters (so that a later fit can
//! be checked against them).
//!
//! BG/NBD (Fader, Hardie & Lee 2005): each customer buys as a Poisson process with rate
//! λ ~ Gamma(r, α) per week while alive, and after every repeat purchase drops out with
//! probability p ~ Beta(a, b). Gamma-Gamma (Fader & Hardie 2013): each purchase is worth
//! z ~ Gamma(p, ν), with ν ~ Gamma(q, γ) per customer.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Exp, Gamma};
use serde::Serialize;

/// BG/NBD parameters (time unit: weeks).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BgNbdParams {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// Gamma-Gamma spend parameters (money unit: the currency, CNY).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GammaGammaParams {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

#[derive(Debug, Clone)]
pub struct Customer {
    /// Window day of acquisition, which is the day of the first purchase.
    pub birth_day: u32,
    /// Window day after the purchase at which the customer dropped out (`None`: alive at the end).
    pub death_day: Option<u32>,
    /// Purchases per week while alive.
    pub lambda: f64,
    pub dropout: f64,
    /// Expected spend per purchase, p/ν.
    pub mean_spend: f64,
    pub enterprise: bool,
}

/// One purchase occasion: a customer-day with its total spend (completed order lines).
#[derive(Debug, Clone, Copy)]
pub struct Occasion {
    pub day: u32,
    pub customer: u32,
    pub spend_cents: i64,
}

/// A deterministic random stream for one purpose and one entity.
pub fn stream(seed: u64, purpose: u64, entity: u64) -> ChaCha8Rng {
    let mut z = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ entity.wrapping_mul(0xD1B5_4A32_D192_ED03);
    // splitmix64 finaliser: nearby inputs give unrelated seeds.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

pub const STREAM_CUSTOMER: u64 = 1;
pub const STREAM_ORDERS: u64 = 2;
pub const STREAM_CONTACTS: u64 = 3;
pub const STREAM_DIRT: u64 = 4;
pub const STREAM_MASTER: u64 = 5;

/// Draw the customers and their purchase occasions over a window of `window_days` days.
/// Occasions come back sorted by (day, customer).
pub fn simulate(
    customers: u32,
    window_days: u32,
    bgnbd: BgNbdParams,
    spend: GammaGammaParams,
    enterprise_share: f64,
    seed: u64,
) -> (Vec<Customer>, Vec<Occasion>) {
    let rate = Gamma::new(bgnbd.r, 1.0 / bgnbd.alpha).expect("validated r, alpha");
    let dropout = Beta::new(bgnbd.a, bgnbd.b).expect("validated a, b");
    let nu = Gamma::new(spend.q, 1.0 / spend.gamma).expect("validated q, gamma");
    let mut population = Vec::with_capacity(customers as usize);
    let mut occasions = Vec::new();
    for index in 0..customers {
        let mut rng = stream(seed, STREAM_CUSTOMER, index as u64);
        let birth_day = rng.random_range(0..window_days);
        let lambda = rate.sample(&mut rng).max(1e-9);
        let p = dropout.sample(&mut rng);
        let customer_nu = nu.sample(&mut rng).max(1e-9);
        let purchase = Gamma::new(spend.p, 1.0 / customer_nu).expect("positive shape and scale");
        let gap = Exp::new(lambda).expect("positive rate");

        // The first purchase happens at a random time of the birth day; every purchase counts on
        // its calendar day, and purchases on the same day are one occasion (as the models count
        // them), so the dates carry the usual day-resolution rounding of real data.
        let first_time_of_day: f64 = rng.random_range(0.0..1.0);
        let mut days: Vec<(u32, i64)> = vec![(birth_day, cents(purchase.sample(&mut rng)))];
        let mut t_weeks = 0.0;
        let mut death_day = None;
        loop {
            t_weeks += gap.sample(&mut rng);
            let day = birth_day as f64 + (first_time_of_day + t_weeks * 7.0).floor();
            if day >= window_days as f64 {
                break;
            }
            let day = day as u32;
            let amount = cents(purchase.sample(&mut rng));
            match days.last_mut() {
                Some(last) if last.0 == day => last.1 += amount,
                _ => days.push((day, amount)),
            }
            if rng.random_bool(p) {
                death_day = Some(day);
                break;
            }
        }
        occasions.extend(days.into_iter().map(|(day, spend_cents)| Occasion { day, customer: index, spend_cents }));
        population.push(Customer {
            birth_day,
            death_day,
            lambda,
            dropout: p,
            mean_spend: spend.p / customer_nu,
            enterprise: false,
        });
    }
    mark_enterprises(&mut population, enterprise_share);
    occasions.sort_by_key(|o| (o.day, o.customer));
    (population, occasions)
}

/// The customers with the highest expected yearly value are the enterprise accounts: a few of
/// them carry most of the revenue, as in a real B2B base.
fn mark_enterprises(population: &mut [Customer], share: f64) {
    let mut values: Vec<(f64, usize)> =
        population.iter().enumerate().map(|(i, c)| (c.lambda * 52.0 * c.mean_spend, i)).collect();
    values.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let count = ((population.len() as f64) * share).round() as usize;
    for (_, i) in values.into_iter().take(count) {
        population[i].enterprise = true;
    }
}

/// Money to whole cents, at least one cent.
pub fn cents(amount: f64) -> i64 {
    ((amount * 100.0).round() as i64).max(1)
}
