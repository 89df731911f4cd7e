"""What ``GET /api/v1/offers`` answers (the OpenAPI document describes it from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class OfferOut(BaseModel):
    id: int = Field(description="Lifecycle's id of the offer; pages follow it.")
    code: str = Field(description="The code as the customer got it, e.g. BACK10-7KQ2-M9XD.")
    kind: Literal["percent", "fixed", "free_shipping"]
    value: str | None = Field(description="Percent off (\"15\") or the amount off (\"5.00\", in "
                                          "currency); null for free shipping.")
    currency: str | None = Field(description="The amount's ISO 4217 currency (fixed only).")
    customer_id: str = Field(description="The shop's id of the customer who got the code.")
    email: str | None
    flow: str | None
    step: str | None
    message_id: int | None = Field(description="The mail that hands the code out.")
    mail_status: str | None = Field(description="That mail's status (scheduled, sent, "
                                                "suppressed …): a code whose mail was never "
                                                "sent reached nobody.")
    expires_at: str = Field(description="The last moment the offer is valid (UTC).")
    created_at: str
    redeemed_at: str | None = Field(description="When the first order that used it was placed.")
    redeemed_order_id: str | None = Field(description="That order's order_id.")


class OfferPage(BaseModel):
    offers: list[OfferOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the "
                                                "last page.")
