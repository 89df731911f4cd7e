"""What a flow's mails would look like for one customer, nothing sent or stored.

Used by ``lifecycle flows preview`` and the managers' preview page: every send
step, every A/B variant, rendered with the customer's data as of a moment —
or the template's error, naming its file and line.  Its links are test links
(:mod:`lifecycle.mail.context`): following one changes nothing for the customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from lifecycle.config import Settings
from lifecycle.flows.definitions import Flow, Send
from lifecycle.mail.context import build_context
from lifecycle.mail.templates import Rendered, Renderer, TemplateError


@dataclass(frozen=True)
class Preview:
    step: str
    template: str
    #: True when the step picks one of several templates (A/B).
    ab: bool
    mail: Rendered | None
    error: str | None

    @property
    def label(self) -> str:
        return f"step {self.step}" + (f", variant {self.template}" if self.ab else "")


def preview_mails(conn: Connection, settings: Settings, flow: Flow, customer: Any,
                  as_of: datetime, renderer: Renderer | None = None) -> list[Preview]:
    renderer = renderer or Renderer(settings.templates_dir, settings.locale)
    found = []
    for step in flow.steps:
        if not isinstance(step.action, Send):
            continue
        context = build_context(conn, settings, customer, as_of=as_of, flow=flow.name,
                                step=step.id, offer=step.action.offer, test=True,
                                utm=flow.utm)
        ab = len(step.action.variants) > 1
        for variant in step.action.variants:
            try:
                found.append(Preview(step.id, variant.template, ab,
                                     renderer.render(variant.template, context), None))
            except TemplateError as exc:
                found.append(Preview(step.id, variant.template, ab, None, str(exc)))
    return found
