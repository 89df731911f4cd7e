"""A campaign's mail as one customer would get it, and a manager's test send.

Nothing of a preview is sent or stored; its links are test links.  A test send writes one
outbox row addressed to the manager, inert as a flow's test send is (test tokens, no
timeline entry, no effect on the customer): the real sender and transport take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from lifecycle.campaigns.spec import CampaignSpec
from lifecycle.config import Settings
from lifecycle.db import insert_new
from lifecycle.flows.engine import offer_context
from lifecycle.mail.context import build_context
from lifecycle.mail.templates import Rendered, Renderer, TemplateError
from lifecycle.models import Customer, Message, MessageStatus


@dataclass(frozen=True)
class CampaignPreview:
    template: str
    #: True when the campaign has variants (A/B).
    ab: bool
    mail: Rendered | None
    error: str | None


def utm_of(spec: CampaignSpec, template: str) -> dict[str, str]:
    """The UTM parameters of the campaign's mails of ``template`` (as the real mails carry)."""
    return {"campaign": spec.name, "content": template}


def preview_mails(conn: Connection, settings: Settings, spec: CampaignSpec, customer: Any,
                  as_of: datetime, renderer: Renderer | None = None) -> list[CampaignPreview]:
    """Each variant of the campaign rendered for ``customer`` as of ``as_of`` (or its
    template's error, naming file and line)."""
    renderer = renderer or Renderer(settings.templates_dir, settings.locale)
    ab = len(spec.send.variants) > 1
    found = []
    for variant in spec.send.variants:
        context = build_context(conn, settings, customer, as_of=as_of, offer=spec.send.offer,
                                test=True, utm=utm_of(spec, variant.template))
        try:
            found.append(CampaignPreview(variant.template, ab,
                                         renderer.render(variant.template, context), None))
        except TemplateError as exc:
            found.append(CampaignPreview(variant.template, ab, None, str(exc)))
    return found


def write_test_send(conn: Connection, spec: CampaignSpec, template: str, customer_id: int,
                    staff_id: int, staff_email: str, nonce: str, now: datetime) -> bool:
    """One test mail of ``template`` rendered with ``customer_id``'s data, to the manager;
    False if there is no such customer or template in the campaign.  ``nonce`` (from the
    form) makes a double click one mail."""
    if template not in {v.template for v in spec.send.variants}:
        return False
    if conn.execute(select(Customer.id).where(Customer.id == customer_id)).first() is None:
        return False
    context: dict[str, Any] = {"test": staff_email, "test_flow": f"campaign-{spec.name}",
                               "marketing": False, "utm": utm_of(spec, template)}
    if spec.send.offer is not None:
        context["offer"] = offer_context(spec.send.offer)
    insert_new(conn, Message.__table__, [{
        "idempotency_key": f"test:{staff_id}:{nonce}", "customer_id": customer_id,
        "enrollment_id": None, "flow": None, "step": None, "template": template,
        "variant": None, "to_email": staff_email, "status": MessageStatus.SCHEDULED.value,
        "due_at": now, "attempts": 0, "context": context, "created_at": now,
        "updated_at": now}], ("idempotency_key",))
    return True
