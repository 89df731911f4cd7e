"""BG/NBD and Gamma-Gamma: repeat purchases, dropout and order value, fitted by maximum likelihood.

The models are those of Fader, Hardie & Lee: BG/NBD ("Counting Your Customers the Easy
Way", Marketing Science 24(2), 2005) for how many purchases a customer makes and whether
they are still a customer, and Gamma-Gamma ("RFM and CLV: Using Iso-Value Curves", JMR
42(4), 2005) for what their purchases are worth.  Both are fitted here with SciPy on the
log of their parameters; nothing of the unmaintained ``lifetimes`` package is used.

Per customer the inputs are, measured from their first purchase in one *time unit* (a
day for a shop, a week for the papers' CDNOW sample):

- ``x``: repeat purchases (distinct purchase days after the first);
- ``t_x``: time of the last purchase;
- ``T``: time from the first purchase to the end of the observation;
- for Gamma-Gamma, ``n_value`` repeat purchases with a value and ``mean_value`` their
  mean value (a float here: money becomes Decimal again at the boundary, in
  :mod:`lifecycle.predictions.service`).

The fit takes the distinct combinations with their counts as weights (``weights``), so a
million customers cost what their few hundred thousand distinct rows cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

#: Fewest buyers a fit is made for: below this the estimates are too uncertain to act on
#: (Klaviyo asks for 500; the papers' CDNOW sample has 2,357).
MIN_CUSTOMERS = 300
#: Fewest buyers with a repeat purchase in the reporting currency for the value model.
MIN_REPEAT_BUYERS = 30
#: Frequency/value correlation above which the Gamma-Gamma model's assumption (value
#: independent of frequency) is called into doubt in the fit's notes.
CORRELATION_WARNING = 0.3
#: Parameters outside ``[1e-8, 1e8]`` (log-space bounds of the optimiser) mean the
#: likelihood has no interior maximum: the fit is reported as not converged.
_LOG_BOUND = math.log(1e8)


class FitFailed(Exception):
    """The data cannot give a fit worth acting on; ``str(exc)`` says why, in plain words, and
    ``status`` is ``too_little_data`` or ``not_converged``."""

    def __init__(self, message: str, status: str = "too_little_data") -> None:
        super().__init__(message)
        self.status = status


Floats = NDArray[np.float64]


def _wsum(weights: Floats, values: Any) -> float:
    """Σ weights·values without BLAS (``np.dot`` hands vectors to BLAS threads, which on a
    busy machine cost more than the sum: 16 ms against 0.2 ms for 90,000 rows)."""
    return float(np.sum(weights * values))


def _arrays(*values: ArrayLike) -> list[Floats]:
    return [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in values]


# --------------------------------------------------------------------------- BG/NBD


@dataclass(frozen=True)
class BgNbd:
    """BG/NBD parameters: purchase rates Gamma(r, alpha), dropout probabilities Beta(a, b).

    ``alpha`` is in the time unit of the data it was fitted on (``unit``); ``r``, ``a`` and
    ``b`` have none.  ``log_likelihood`` is the total over all customers fitted.
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    customers: int
    unit: str = "day"

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Floats:
        """Probability that each customer is still a customer at ``T`` (0..1)."""
        x, t_x, T = _arrays(x, t_x, T)
        return expit(-self._log_dropout_odds(x, t_x, T))

    def _log_dropout_odds(self, x: Floats, t_x: Floats, T: Floats) -> Floats:
        """log(a/(b+x-1) · ((α+T)/(α+t_x))^(r+x)) for x > 0; -inf for x = 0."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        safe = np.maximum(x, 1.0)
        odds = (math.log(a) - np.log(b + safe - 1)
                + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
        return np.where(x > 0, odds, -np.inf)

    def expected_purchases(self, t: float, x: ArrayLike, t_x: ArrayLike,
                           T: ArrayLike) -> Floats:
        """Expected purchases (purchase days) of each customer in the next ``t`` time units."""
        x, t_x, T = _arrays(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        tail = 1 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp2f1(
            r + x, b + x, a + b + x - 1, z)
        return head * tail * self.p_alive(x, t_x, T)

    def next_purchase_in(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Floats:
        """Time units from ``T`` to the median of each customer's time to their next
        purchase; NaN when they are no more likely than not to buy again at all.

        Given alive, a customer's next purchase comes at their purchase rate λ (BG/NBD
        drops customers only right after a purchase), whose posterior is Gamma(r + x,
        α + T); so P(no purchase within s | alive) = ((α+T)/(α+T+s))^(r+x), and
        P(a purchase within s) = P(alive) · (1 − that).  The median solves
        P(a purchase within s) = 1/2, which has a solution only for P(alive) > 1/2:
        s = (α+T) · (S^(−1/(r+x)) − 1) with S = 1 − 1/(2 P(alive)).
        """
        x, t_x, T = _arrays(x, t_x, T)
        p = self.p_alive(x, t_x, T)
        with np.errstate(divide="ignore", invalid="ignore"):
            survive = 1 - 1 / (2 * p)
            span = (self.alpha + T) * (np.power(survive, -1 / (self.r + x)) - 1)
        return np.where(p > 0.5, span, np.nan)

    def in_unit(self, unit: str, factor: float) -> BgNbd:
        """The same model with time measured in ``unit`` (``factor`` old units per new one:
        weeks → days is 1/7): only ``alpha`` changes."""
        return BgNbd(self.r, self.alpha / factor, self.a, self.b, self.log_likelihood,
                     self.customers, unit)


def bgnbd_log_likelihood(params: ArrayLike, x: Floats, t_x: Floats, T: Floats) -> Floats:
    """Each customer's BG/NBD log-likelihood for ``params`` = (r, alpha, a, b)."""
    r, alpha, a, b = np.asarray(params, dtype=np.float64)
    common = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + betaln(a, b + x) - betaln(a, b)
    stayed = -(r + x) * np.log(alpha + T)
    safe = np.maximum(x, 1.0)
    left = np.where(x > 0, math.log(a) - np.log(b + safe - 1) - (r + x) * np.log(alpha + t_x),
                    -np.inf)
    return common + np.logaddexp(stayed, left)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None, *,
              unit: str = "day", min_customers: int = MIN_CUSTOMERS,
              start: tuple[float, float, float, float] | None = None) -> BgNbd:
    """Maximum-likelihood BG/NBD on customers (or distinct rows with ``weights`` = their
    counts); :class:`FitFailed` for fewer than ``min_customers`` or no convergence.

    ``start``: (r, alpha, a, b) to start the search from (the last fit's: a refit on much
    the same data then takes a few steps); the default start is tried too if it fails."""
    x, t_x, T = _arrays(x, t_x, T)
    w = np.ones_like(x) if weights is None else _arrays(weights)[0]
    n = int(round(w.sum()))
    if n < min_customers:
        raise FitFailed(f"Only {n} buyers; predictions need at least {min_customers}.")
    if not (x > 0).any():
        raise FitFailed("No buyer has bought on a second day yet; repeat purchases cannot be "
                        "modelled.")
    if np.any(t_x > T) or np.any(t_x < 0) or np.any(x < 0):
        raise ValueError("each customer needs 0 <= t_x <= T and x >= 0")
    scale = float(np.average(T, weights=w)) or 1.0  # alpha starts near the typical T
    objective = _BgNbdObjective(x, t_x, T, w)
    logs = _optimise(objective, np.log([1.0, scale, 1.0, 1.0]), "BG/NBD", start)
    r, alpha, a, b = (float(v) for v in np.exp(logs))
    ll = float(_wsum(w, bgnbd_log_likelihood((r, alpha, a, b), x, t_x, T)))
    return BgNbd(r, alpha, a, b, ll, n, unit)


class _BgNbdObjective:
    """Mean negative log-likelihood over log-parameters, and its gradient.

    The terms that depend on ``x`` alone are summed once per distinct ``x`` (weights added
    up), the rest per row: a million rows cost a few array passes per evaluation."""

    def __init__(self, x: Floats, t_x: Floats, T: Floats, w: Floats) -> None:
        self.x, self.t_x, self.T, self.w = x, t_x, T, w
        self.n = float(w.sum())
        self.xs, inverse = np.unique(x, return_inverse=True)
        self.xw = np.bincount(inverse, weights=w)
        self.repeat = x > 0
        self.bx = np.maximum(x, 1.0) - 1  # b + x - 1 = b + bx for x > 0

    def __call__(self, logs: Floats) -> tuple[float, Floats]:
        r, alpha, a, b = np.exp(logs)
        x, w, xs, xw = self.x, self.w, self.xs, self.xw
        u, v = np.log(alpha + self.T), np.log(alpha + self.t_x)
        stayed = -(r + x) * u
        left = np.where(self.repeat, math.log(a) - np.log(b + self.bx) - (r + x) * v, -np.inf)
        total = np.logaddexp(stayed, left)
        pa, pb = np.exp(stayed - total), np.exp(left - total)
        common = (gammaln(r + xs) - gammaln(r) + r * math.log(alpha)
                  + betaln(a, b + xs) - betaln(a, b))
        ll = float(_wsum(xw, common) + _wsum(w, total))
        d_r = (_wsum(xw, digamma(r + xs) - digamma(r) + math.log(alpha))
               - _wsum(w, pa * u + pb * v))
        d_alpha = (self.n * r / alpha
                   - _wsum(w, (r + x) * (pa / (alpha + self.T) + pb / (alpha + self.t_x))))
        d_a = _wsum(xw, digamma(a + b) - digamma(a + b + xs)) + _wsum(w, pb) / a
        d_b = (_wsum(xw, digamma(b + xs) - digamma(a + b + xs) - digamma(b) + digamma(a + b))
               - _wsum(w, np.where(self.repeat, pb / (b + self.bx), 0.0)))
        grad = np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
        if not math.isfinite(ll) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros(4)
        return -ll / self.n, -grad / self.n


# ----------------------------------------------------------------------- Gamma-Gamma


@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma parameters of order value: p (shape of each value), and Gamma(q, gamma)
    for the customers' value scale.  ``gamma`` is in the money unit of the values
    (the reporting currency); ``customers`` are those with a repeat purchase."""

    p: float
    q: float
    gamma: float
    log_likelihood: float
    customers: int
    correlation: float  # between repeat purchases and mean value (weighted Pearson)

    def expected_value(self, n_value: ArrayLike, mean_value: ArrayLike) -> Floats:
        """Each customer's expected value of an order: p(γ + x·m̄)/(p·x + q − 1); for a
        customer with no repeat purchase with a value (x = 0) the population mean
        pγ/(q − 1)."""
        n, m = _arrays(n_value, mean_value)
        m = np.where(n > 0, m, 0.0)
        return self.p * (self.gamma + n * m) / (self.p * n + self.q - 1)

    @property
    def population_mean(self) -> float:
        """Mean order value over all customers, pγ/(q − 1)."""
        return self.p * self.gamma / (self.q - 1)


def gamma_gamma_log_likelihood(params: ArrayLike, n: Floats, m: Floats) -> Floats:
    """Each customer's Gamma-Gamma log-likelihood for ``params`` = (p, q, gamma)."""
    p, q, g = np.asarray(params, dtype=np.float64)
    px = p * n
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * math.log(g) + (px - 1) * np.log(m)
            + px * np.log(n) - (px + q) * np.log(n * m + g))


def fit_gamma_gamma(n_value: ArrayLike, mean_value: ArrayLike, weights: ArrayLike | None = None,
                    *, min_customers: int = MIN_REPEAT_BUYERS,
                    start: tuple[float, float, float] | None = None) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma on customers with at least one repeat purchase with a
    positive value (others are left out); :class:`FitFailed` for too few or no convergence.
    ``start``: (p, q, gamma) to start from, as for :func:`fit_bgnbd`."""
    n, m = _arrays(n_value, mean_value)
    w = np.ones_like(n) if weights is None else _arrays(weights)[0]
    keep = (n > 0) & (m > 0)
    n, m, w = n[keep], m[keep], w[keep]
    count = int(round(w.sum()))
    if count < min_customers:
        raise FitFailed(f"Only {count} buyers with a repeat purchase in the reporting currency; "
                        f"order values need at least {min_customers}.")
    scale = float(np.average(m, weights=w))
    # Terms of n alone are summed once per distinct n (weights added up), the rest per row.
    ns, inverse = np.unique(n, return_inverse=True)
    nw = np.bincount(inverse, weights=w)
    total = float(w.sum())
    log_m = np.log(m)
    wn = w * n
    sum_wn_log_m, sum_w_log_m = _wsum(wn, log_m), _wsum(w, log_m)
    log_ns = np.log(ns)

    def objective(logs: Floats) -> tuple[float, Floats]:
        p, q, g = np.exp(logs)
        pn = p * ns
        spend = np.log(n * m + g)
        per_n = gammaln(pn + q) - gammaln(pn) - gammaln(q) + q * math.log(g) + pn * log_ns
        ll = (_wsum(nw, per_n) + p * sum_wn_log_m - sum_w_log_m
              - p * _wsum(wn, spend) - q * _wsum(w, spend))
        d_p = (_wsum(nw, ns * (digamma(pn + q) - digamma(pn) + log_ns)) + sum_wn_log_m
               - _wsum(wn, spend))
        d_q = _wsum(nw, digamma(pn + q) - digamma(q)) + total * math.log(g) - _wsum(w, spend)
        d_g = total * q / g - _wsum(w, (p * n + q) / (n * m + g))
        grad = np.array([d_p * p, d_q * q, d_g * g])
        if not math.isfinite(ll) or not np.all(np.isfinite(grad)):
            return 1e10, np.zeros(3)
        return -ll / count, -grad / count

    logs = _optimise(objective, np.log([1.0, 1.0, scale]), "Gamma-Gamma", start)
    p, q, g = (float(v) for v in np.exp(logs))
    if q <= 1:
        raise FitFailed(f"The order-value model has q = {q:.3g} <= 1: its mean order value is "
                        "infinite, so no value is predicted.", "not_converged")
    ll = float(_wsum(w, gamma_gamma_log_likelihood((p, q, g), n, m)))
    return GammaGamma(p, q, g, ll, count, weighted_correlation(n, m, w))


def weighted_correlation(a: Floats, b: Floats, w: Floats) -> float:
    """Pearson correlation of ``a`` and ``b`` with weights ``w`` (0 when either is constant)."""
    ma, mb = np.average(a, weights=w), np.average(b, weights=w)
    cov = np.average((a - ma) * (b - mb), weights=w)
    va, vb = np.average((a - ma) ** 2, weights=w), np.average((b - mb) ** 2, weights=w)
    return float(cov / math.sqrt(va * vb)) if va > 0 and vb > 0 else 0.0


def _optimise(objective: Any, default: Floats, name: str,
              warm: tuple[float, ...] | None = None) -> Floats:
    """Minimise ``objective`` (value and gradient) over log-parameters with L-BFGS-B;
    :class:`FitFailed` if it does not converge or a parameter runs to a bound.

    With ``warm`` (parameters: the last fit's) the search starts there; if it fails or ends
    far from it (a parameter more than e² times off), the ``default`` start (logs) is tried
    too and the better maximum kept, so a poor warm start never costs the right answer."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(default)

    def search(start: Floats) -> Any:
        found = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                         options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 3000})
        # A line search that cannot improve on a point whose gradient is ~0 is at the optimum.
        found.settled = bool((found.success or float(np.max(np.abs(found.jac))) < 1e-7)
                             and np.all(np.isfinite(found.x)))
        return found

    best = None
    if warm is not None and all(v > 0 and math.isfinite(v) for v in warm):
        logs = np.clip(np.log(np.asarray(warm, dtype=np.float64)), -_LOG_BOUND + 1,
                       _LOG_BOUND - 1)
        best = search(logs)
        if not best.settled or float(np.max(np.abs(best.x - logs))) > 2:
            cold = search(default)
            if cold.settled and (not best.settled or cold.fun <= best.fun):
                best = cold
    else:
        best = search(default)
    settled = best.settled
    if not settled:
        raise FitFailed(f"The {name} fit did not converge ({best.message}).", "not_converged")
    if np.any(np.abs(best.x) >= _LOG_BOUND - 1e-3):
        raise FitFailed(f"The {name} fit did not converge: a parameter ran to the edge of its "
                        "range (the data hold no maximum of the likelihood).", "not_converged")
    return np.asarray(best.x, dtype=np.float64)
