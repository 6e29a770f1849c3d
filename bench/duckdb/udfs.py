"""keymart's model functions for DuckDB, written again from the papers' closed forms with numpy and
scipy (not ported from src/models): the oracle's own route to the model-based columns.

BG/NBD: Fader, Hardie & Lee (2005), "Counting your customers the easy way", eq. 10 and the P(alive)
of its appendix. Gamma-Gamma: Fader, Hardie & Lee (2005), "RFM and CLV", eq. 5.
Like keymart's: NULL in any argument or a non-finite result gives NULL.
"""

import numpy as np
import pyarrow as pa
from duckdb.sqltypes import DOUBLE
from scipy.special import hyp2f1


def _floats(*columns):
    return [c.to_numpy(zero_copy_only=False).astype(np.float64) for c in columns]


def _result(values):
    values = np.where(np.isfinite(values), values, np.nan)
    return pa.array(values, type=pa.float64(), from_pandas=True)  # NaN becomes NULL


def _odds_of_dropout(r, alpha, a, b, x, t_x, t_cal):
    """a/(b+x-1) · ((α+T)/(α+t_x))^(r+x) for repeat buyers, 0 without repeat purchases."""
    with np.errstate(all="ignore"):
        odds = a / (b + x - 1.0) * ((alpha + t_cal) / (alpha + t_x)) ** (r + x)
    return np.where(x > 0, odds, 0.0)


def bgnbd_p_alive(r, alpha, a, b, x, t_x, t_cal):
    r, alpha, a, b, x, t_x, t_cal = _floats(r, alpha, a, b, x, t_x, t_cal)
    return _result(1.0 / (1.0 + _odds_of_dropout(r, alpha, a, b, x, t_x, t_cal)))


def bgnbd_expected_purchases(r, alpha, a, b, x, t_x, t_cal, horizon):
    r, alpha, a, b, x, t_x, t_cal, t = _floats(r, alpha, a, b, x, t_x, t_cal, horizon)
    with np.errstate(all="ignore"):
        decay = ((alpha + t_cal) / (alpha + t_cal + t)) ** (r + x)
        series = hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + t_cal + t))
        numerator = (a + b + x - 1.0) / (a - 1.0) * (1.0 - decay * series)
    return _result(numerator / (1.0 + _odds_of_dropout(r, alpha, a, b, x, t_x, t_cal)))


def gamma_gamma_expected_spend(p, q, v, x, m):
    p, q, v, x, m = _floats(p, q, v, x, m)
    with np.errstate(all="ignore"):
        return _result(p * (v + x * m) / (p * x + q - 1.0))


def register(con):
    for function, arity in ((bgnbd_p_alive, 7), (bgnbd_expected_purchases, 8), (gamma_gamma_expected_spend, 5)):
        con.create_function(function.__name__, function, [DOUBLE] * arity, DOUBLE, type="arrow")
