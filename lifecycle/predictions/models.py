"""Tables of the predictions: each fit (or refused fit) and every buyer's latest prediction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Float, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.models.base import Base, BigIntPK, IdMixin


class PredictionFit(IdMixin, Base):
    """One fit of the models, as of a moment; ``status`` ``fitted`` or why not.

    ``status``: ``fitted``; ``too_little_data`` or ``not_converged`` (``reason`` says it in
    words, no parameters, nothing predicted).  BG/NBD's ``alpha`` is in ``time_unit``
    (always ``day`` for a shop's own data); Gamma-Gamma's ``gamma`` in ``currency``.
    ``log_likelihood`` is BG/NBD's total over ``customers``; ``value_customers`` are the
    buyers with a repeat purchase the value model was fitted on, ``correlation`` the
    correlation of their repeat purchases with their mean value (the model assumes none).
    """

    __tablename__ = "prediction_fits"

    as_of: Mapped[datetime]
    fitted_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    time_unit: Mapped[str] = mapped_column(String(8), default="day")
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    horizon_days: Mapped[int] = mapped_column(Integer)
    customers: Mapped[int] = mapped_column(Integer)
    value_customers: Mapped[int | None] = mapped_column(Integer)
    r: Mapped[float | None] = mapped_column(Float)
    alpha: Mapped[float | None] = mapped_column(Float)
    a: Mapped[float | None] = mapped_column(Float)
    b: Mapped[float | None] = mapped_column(Float)
    log_likelihood: Mapped[float | None] = mapped_column(Float)
    p: Mapped[float | None] = mapped_column(Float)
    q: Mapped[float | None] = mapped_column(Float)
    gamma: Mapped[float | None] = mapped_column(Float)
    value_log_likelihood: Mapped[float | None] = mapped_column(Float)
    correlation: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)


class CustomerPrediction(Base):
    """A buyer's prediction from the latest fit that predicted (replaced by every refit).

    ``expected_orders``: purchase days expected in the fit's ``horizon_days`` after its
    ``as_of``; money in the fit's currency (Decimal, its minor units)."""

    __tablename__ = "customer_predictions"

    #: (No foreign keys, as for ``customer_suggestions``: customers are never deleted —
    #: erasure keeps the row — nor are fits, and checking two keys for each of a million rows
    #: every refresh writes costs more than the rows.  ``fit_id`` is not indexed: a fit's
    #: predictions are replaced all at once, never looked up by fit.)
    customer_id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    fit_id: Mapped[int] = mapped_column(BigIntPK)
    p_alive: Mapped[float] = mapped_column(Float)
    expected_orders: Mapped[float] = mapped_column(Float)
    expected_order_value: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    predicted_clv: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    expected_next_order_at: Mapped[datetime | None]
