"""Transports: where a built mail goes.  One interface, a stub beside every real one.

* ``file`` (the embedded default): each mail is an ``.eml`` file under
  ``LIFECYCLE_OUTBOX_DIR/<YYYY-MM-DD>/``, named by our message id, written
  atomically (temporary file, then rename).  Writing it again replaces it, so
  the transport is idempotent and a mail abandoned mid-send is simply sent
  again.
* ``smtp`` and ``sendgrid``: issue 5.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from lifecycle.config import Settings


class Transport(Protocol):
    #: True when sending the same message twice delivers it once.
    idempotent: bool

    def send(self, message_id: int, mail: EmailMessage) -> str:
        """Hand the mail over; return the provider's id for it.  Raise on failure."""
        ...


@dataclass
class FileTransport:
    folder: Path
    idempotent: bool = True

    def path_for(self, message_id: int, mail: EmailMessage) -> Path:
        day = str(mail["X-Lifecycle-Date"] or "undated")
        return self.folder / day / f"{message_id:08d}-{mail['X-Lifecycle-Template']}.eml"

    def send(self, message_id: int, mail: EmailMessage) -> str:
        path = self.path_for(message_id, mail)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".sending-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(mail.as_bytes())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return f"file:{path.relative_to(self.folder)}"


def transport_for(settings: Settings) -> Transport:
    if settings.mail_transport == "file":
        return FileTransport(settings.outbox_dir)
    raise NotImplementedError(f"the {settings.mail_transport} transport comes with issue 5; "
                              "use LIFECYCLE_MAIL_TRANSPORT=file")
