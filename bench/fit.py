"""Model-fit speed: keymart's bgnbd_fit + gamma_gamma_fit against scipy fitting the same
likelihoods on the same customers, once with Nelder-Mead (what the `lifetimes` library does) and
once with L-BFGS-B (numerical gradient, as scipy gets none from lifetimes' likelihoods).

    python bench/fit.py --keymart target/release/keymart --history H.parquet [--runs 3]

H.parquet holds one row per customer with x, t_x, t_cal (weeks) and m: keymart's
stg_customer_history, as `bench/bench.py` exports it. scipy evaluates the likelihood per customer,
vectorised with numpy, exactly as lifetimes' BetaGeoFitter and GammaGammaFitter do.
"""

import argparse
import json
import statistics
import subprocess
import time

import duckdb
import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln


def bgnbd_nll(log_params, x, t_x, T):
    r, alpha, a, b = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf)
    return -np.mean(a1 + a2 + np.logaddexp(a3, a4))


def gamma_gamma_nll(log_params, x, m):
    p, q, v = np.exp(log_params)
    px = p * x
    ll = gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v) + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(v + m * x)
    return -np.mean(ll)


def scipy_fit(method, x, t_x, T, m):
    started = time.perf_counter()
    bg = minimize(bgnbd_nll, np.zeros(4), args=(x, t_x, T), method=method)
    repeat = (x > 0) & (m > 0)
    gg = minimize(gamma_gamma_nll, np.zeros(3), args=(x[repeat], m[repeat]), method=method)
    seconds = time.perf_counter() - started
    return seconds, {
        "r": float(np.exp(bg.x[0])), "alpha": float(np.exp(bg.x[1])), "a": float(np.exp(bg.x[2])), "b": float(np.exp(bg.x[3])),
        "ll": float(-bg.fun * len(x)), "evaluations": int(bg.nfev),
        "p": float(np.exp(gg.x[0])), "q": float(np.exp(gg.x[1])), "v": float(np.exp(gg.x[2])),
        "gg_ll": float(-gg.fun * repeat.sum()), "gg_evaluations": int(gg.nfev),
    }


def keymart_fit(keymart, project, history):
    sql = (
        "SELECT bg['r'] AS r, bg['alpha'] AS alpha, bg['a'] AS a, bg['b'] AS b, bg['ll'] AS ll, "
        "gg['p'] AS p, gg['q'] AS q, gg['v'] AS v, gg['ll'] AS gg_ll "
        f"FROM (SELECT bgnbd_fit(x, t_x, t_cal) AS bg, gamma_gamma_fit(x, m) AS gg FROM '{history}')"
    )
    started = time.perf_counter()
    out = subprocess.run([keymart, "--project", project, "query", sql, "--format", "json"], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, json.loads(out.stdout)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keymart", required=True)
    parser.add_argument("--project", default=".")
    parser.add_argument("--history", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    x, t_x, T, m = (
        np.asarray(c, dtype=float)
        for c in zip(*duckdb.sql(f"SELECT x, t_x, t_cal, coalesce(m, 0) FROM '{args.history}'").fetchall())
    )
    print(f"{len(x)} customers, {int(((x > 0) & (m > 0)).sum())} repeat buyers")
    results = {}
    for name, fit in [
        ("keymart", lambda: keymart_fit(args.keymart, args.project, args.history)),
        ("scipy Nelder-Mead", lambda: scipy_fit("Nelder-Mead", x, t_x, T, m)),
        ("scipy L-BFGS-B", lambda: scipy_fit("L-BFGS-B", x, t_x, T, m)),
    ]:
        times = []
        for _ in range(args.runs):
            seconds, params = fit()
            times.append(seconds)
        results[name] = statistics.median(times)
        shown = ", ".join(f"{k}={v:.6g}" for k, v in params.items())
        print(f"{name:18} median {results[name]:8.2f} s  ({', '.join(f'{t:.2f}' for t in times)})  {shown}")
    for name in ("scipy Nelder-Mead", "scipy L-BFGS-B"):
        print(f"{name} ÷ keymart: {results[name] / results['keymart']:.1f}")


if __name__ == "__main__":
    main()
