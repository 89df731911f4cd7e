"""Offers that redeem: every discount code a mail hands out, stored, told to the shop, redeemed.

A send step with an ``offer`` (``flows/*.yaml``, :class:`lifecycle.flows.definitions.Offer`)
gets a code when the engine decides the mail: one random, readable code with the step's
prefix (``BACK10-7KQ2-M9XD``, :func:`lifecycle.offers.service.new_code`), written to the
``offers`` table in the transaction that writes the outbox row, with — when
``LIFECYCLE_OFFER_WEBHOOK_URL`` is set — a row in ``offer_webhooks`` that tells the shop
(:mod:`lifecycle.offers.webhooks`).  The shop reads codes through ``GET /api/v1/offers``
(:mod:`lifecycle.offers.endpoints`) or ``lifecycle offers export``; an order that arrives with
``discount_codes`` marks them redeemed (:func:`lifecycle.offers.service.redeem`).

Modules: :mod:`.model` (tables), :mod:`.service` (codes, issuing, redeeming, listing),
:mod:`.context` (the template's ``offer``), :mod:`.webhooks` (the signed outbound webhook
and its delivery), :mod:`.tasks` (the actor), :mod:`.schemas` and :mod:`.endpoints` (API).
"""

# The tables are registered with every other one (lifecycle.models imports .model): load
# lifecycle.models first, so that importing lifecycle.offers.model on its own finds them ready.
import lifecycle.models  # noqa: F401
