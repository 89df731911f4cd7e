"""The BG/NBD and Gamma-Gamma models against the papers' own CDNOW estimates, and their
per-customer predictions (pure: no database)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from lifecycle.config import ConfigError, load_settings
from lifecycle.predictions.model import (
    BgNbd,
    FitFailed,
    GammaGamma,
    fit_bgnbd,
    fit_gamma_gamma,
)

CDNOW = Path(__file__).parent / "data" / "cdnow_sample.txt"
CALIBRATION_END = date(1997, 9, 30)


def cdnow_calibration() -> np.ndarray:
    """Rows (x, t_x, T, mean repeat value) in weeks, calibration to 1997-09-30 inclusive;
    purchases on one day are one purchase (their values summed), as the papers count."""
    days: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for line in CDNOW.read_text().splitlines():
        customer, _sample, day, _cds, value = line.split()
        when = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        if when <= CALIBRATION_END:
            days[customer][when] += Decimal(value)
    rows = []
    for spend in days.values():
        ordered = sorted(spend)
        x = len(ordered) - 1
        repeat = [spend[d] for d in ordered[1:]]
        rows.append((x, (ordered[-1] - ordered[0]).days / 7,
                     (CALIBRATION_END - ordered[0]).days / 7,
                     float(sum(repeat) / len(repeat)) if repeat else 0.0))
    return np.array(rows)


@pytest.fixture(scope="module")
def cdnow() -> np.ndarray:
    return cdnow_calibration()


def test_the_cdnow_sample_has_the_papers_2357_customers(cdnow):
    assert len(cdnow) == 2357
    assert int((cdnow[:, 0] > 0).sum()) == 946


def test_bgnbd_on_cdnow_matches_the_published_estimates_and_log_likelihood(cdnow):
    model = fit_bgnbd(cdnow[:, 0], cdnow[:, 1], cdnow[:, 2], unit="week")
    assert (round(model.r, 3), round(model.alpha, 3), round(model.a, 3), round(model.b, 3)) == (
        0.243, 4.414, 0.793, 2.426)
    assert round(model.log_likelihood, 1) == -9582.4
    assert model.customers == 2357 and model.unit == "week"


def test_gamma_gamma_on_cdnow_matches_the_published_estimates(cdnow):
    model = fit_gamma_gamma(cdnow[:, 0], cdnow[:, 3])
    assert (round(model.p, 2), round(model.q, 2), round(model.gamma, 2)) == (6.25, 3.74, 15.44)
    assert model.customers == 946
    # The papers' check of the model's assumption: frequency and value barely correlate.
    assert 0 < model.correlation < 0.3


def test_fitting_distinct_rows_with_counts_as_weights_gives_the_same_fit(cdnow):
    counts = Counter(map(tuple, cdnow[:, :3].tolist()))
    rows = np.array(list(counts))
    assert len(rows) < len(cdnow) / 2
    grouped = fit_bgnbd(rows[:, 0], rows[:, 1], rows[:, 2], list(counts.values()), unit="week")
    each = fit_bgnbd(cdnow[:, 0], cdnow[:, 1], cdnow[:, 2], unit="week")
    assert grouped.customers == each.customers
    assert grouped.log_likelihood == pytest.approx(each.log_likelihood, abs=1e-6)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(grouped, name) == pytest.approx(getattr(each, name), rel=1e-4)


def test_expected_purchases_match_the_papers_worked_example(cdnow):
    # Fader, Hardie & Lee (2005), section 5: x = 2, t_x = 30.43, T = 38.86 weeks expects
    # 1.226 purchases in the next 39 weeks.
    model = fit_bgnbd(cdnow[:, 0], cdnow[:, 1], cdnow[:, 2], unit="week")
    assert round(float(model.expected_purchases(39, 2, 30.43, 38.86)[0]), 3) == 1.226


def test_a_customer_without_repeat_purchase_is_alive_and_long_silence_lowers_the_chance():
    model = BgNbd(0.243, 4.414, 0.793, 2.426, 0.0, 1, "week")
    alive = model.p_alive([0, 3, 3], [0, 30, 5], [30, 30, 30])
    assert alive[0] == 1.0
    assert alive[1] > alive[2]


def test_the_time_unit_changes_only_alpha_and_not_the_predictions():
    weeks = BgNbd(0.243, 4.414, 0.793, 2.426, 0.0, 1, "week")
    days = weeks.in_unit("day", 1 / 7)
    assert days.alpha == pytest.approx(4.414 * 7)
    assert days.r == weeks.r and days.a == weeks.a and days.b == weeks.b
    assert days.expected_purchases(39 * 7, 2, 30.43 * 7, 38.86 * 7)[0] == pytest.approx(
        weeks.expected_purchases(39, 2, 30.43, 38.86)[0])
    assert days.next_purchase_in(2, 30 * 7, 31 * 7)[0] == pytest.approx(
        7 * weeks.next_purchase_in(2, 30, 31)[0])


def test_the_next_purchase_is_the_median_of_the_time_to_it_and_none_below_even_odds():
    model = BgNbd(0.243, 4.414, 0.793, 2.426, 0.0, 1, "week")
    x, t_x, T = 5, 30.0, 31.0
    span = float(model.next_purchase_in(x, t_x, T)[0])
    alive = float(model.p_alive(x, t_x, T)[0])
    # P(a purchase within span) = P(alive) · (1 - ((α+T)/(α+T+span))^(r+x)) = 1/2
    bought = alive * (1 - ((model.alpha + T) / (model.alpha + T + span)) ** (model.r + x))
    assert bought == pytest.approx(0.5)
    assert math.isnan(float(model.next_purchase_in(5, 2.0, 60.0)[0]))  # long gone: P(alive) < 1/2


def test_too_few_buyers_are_refused_in_plain_words(cdnow):
    with pytest.raises(FitFailed, match="Only 100 buyers; predictions need at least 300"):
        fit_bgnbd(cdnow[:100, 0], cdnow[:100, 1], cdnow[:100, 2])


def test_buyers_who_never_came_back_give_no_fit():
    with pytest.raises(FitFailed, match="second day"):
        fit_bgnbd(np.zeros(500), np.zeros(500), np.full(500, 10.0))


def test_a_likelihood_without_a_maximum_is_reported_as_not_converged():
    # Everybody buys on every day: the dropout probability runs to zero (b to infinity).
    T = np.arange(1, 501, dtype=float)
    with pytest.raises(FitFailed, match="did not converge") as failed:
        fit_bgnbd(T, T, T)
    assert failed.value.status == "not_converged"


def test_too_few_repeat_buyers_give_no_value_model():
    with pytest.raises(FitFailed, match="Only 10 buyers with a repeat purchase"):
        fit_gamma_gamma(np.ones(10), np.full(10, 20.0))


def test_a_correlation_of_frequency_and_value_above_0_3_is_noted():
    from lifecycle.predictions.service import correlation_note

    assert correlation_note(GammaGamma(6.25, 3.74, 15.44, 0.0, 946, 0.11)) is None
    note = correlation_note(GammaGamma(6.25, 3.74, 15.44, 0.0, 946, -0.45))
    assert note and note.startswith("Repeat purchases and order value correlate (-0.45)")


def test_the_horizon_setting_is_whole_days_from_1_to_3650():
    assert load_settings({}).prediction_horizon_days == 90
    assert load_settings({"LIFECYCLE_PREDICTION_HORIZON_DAYS": "3650"}).prediction_horizon_days \
        == 3650
    for bad in ("0", "3651", "30.5", "soon"):
        with pytest.raises(ConfigError, match="LIFECYCLE_PREDICTION_HORIZON_DAYS"):
            load_settings({"LIFECYCLE_PREDICTION_HORIZON_DAYS": bad})


def test_a_refit_from_the_last_fits_parameters_finds_the_same_maximum(cdnow):
    cold = fit_bgnbd(cdnow[:, 0], cdnow[:, 1], cdnow[:, 2], unit="week")
    warm = fit_bgnbd(cdnow[:, 0], cdnow[:, 1], cdnow[:, 2], unit="week",
                     start=(0.3, 5.0, 0.9, 2.0))
    far = fit_bgnbd(cdnow[:, 0], cdnow[:, 1], cdnow[:, 2], unit="week",
                    start=(1e-12, 1e12, 1e-12, 1e12))  # hopeless: the default start is tried
    for model in (warm, far):
        assert model.log_likelihood == pytest.approx(cold.log_likelihood, abs=1e-6)
        assert model.r == pytest.approx(cold.r, rel=1e-4) and model.b == pytest.approx(cold.b,
                                                                                      rel=1e-4)
    value = fit_gamma_gamma(cdnow[:, 0], cdnow[:, 3], start=(6.0, 3.5, 15.0))
    assert (round(value.p, 2), round(value.q, 2), round(value.gamma, 2)) == (6.25, 3.74, 15.44)
