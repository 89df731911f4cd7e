"""Configuration, read from environment variables only.

Every setting has one environment variable; :func:`load_settings` reads them
all at once and raises :class:`ConfigError` with one sentence naming the
variable when a value is unusable.  The command line turns that error into a
single line on stderr and exit status 2.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from lifecycle.money import known_currency
from lifecycle.recommendations.urls import DEFAULT_REVIEW_URL, check_review_pattern
from lifecycle.timeutil import is_timezone

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MAIL_TRANSPORTS = ("file", "smtp", "sendgrid")
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps")
DEFAULT_SENDGRID_API_HOST = "https://api.sendgrid.com"


class ConfigError(ValueError):
    """A configuration value cannot be used; the message names the variable (and shows its
    value with :func:`redact_url`: never a password)."""


HIDDEN = "***"
_SCHEMED = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)(.*)$", re.S)
#: Names of query parameters (and path parameters) whose values are credentials.
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|credential|sig", re.I)
_PARAMETER = re.compile(r"([?&;#])([^=&;#]*)=([^&;#]*)")


def redact_url(text: str) -> str:
    """``text`` with the password of a URL and its credential parameters as ``***``.

    Every spelling a parser might read a password from is hidden, even where
    the URL is malformed (a password with an unencoded ``/``, ``?`` or ``#``,
    which ``urlsplit`` reads as path, query or fragment): the userinfo runs
    up to the *last* ``@``.  Parameters (after ``?``, ``&``, ``;`` or ``#``)
    whose percent-decoded name looks like a credential (``password``,
    ``client_secret``, ``auth_token``, ``sslkey`` …) are hidden too.  Text
    without a ``scheme://`` comes back unchanged.
    """
    found = _SCHEMED.match(text)
    if found is None:
        return text
    scheme, rest = found.groups()
    userinfo, at, after = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if at and colon and not any(c in user for c in "/?#"):
        rest = f"{user}:{HIDDEN}@{after}"

    def parameter(match: re.Match[str]) -> str:
        lead, name, value = match.groups()
        return f"{lead}{name}={HIDDEN}" if _SECRET_NAME.search(unquote(name)) else match.group(0)

    return scheme + _PARAMETER.sub(parameter, rest)


def _split(name: str, raw: str) -> SplitResult:
    """``urlsplit(raw)``; ConfigError naming ``name`` for a URL it cannot split."""
    try:
        return urlsplit(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={redact_url(raw)!r} is not a URL ({exc}).") from None


@dataclass(frozen=True)
class Setting:
    """One documented environment variable (the README table is checked against these).

    ``secret`` settings are never shown (``lifecycle config`` says only whether
    they are set).  The value lands in the :class:`Settings` field named
    :attr:`attribute`.
    """

    name: str
    default: str
    description: str
    secret: bool = False

    @property
    def attribute(self) -> str:
        """The :class:`Settings` field: the name without ``LIFECYCLE_``, lower-cased."""
        return self.name.removeprefix("LIFECYCLE_").lower()


SETTINGS: tuple[Setting, ...] = (
    Setting("LIFECYCLE_DATABASE_URL", "sqlite:///lifecycle.db",
            "SQLAlchemy URL of the database. `postgresql://user@host/db` uses psycopg 3. "
            "The default is a SQLite file in the working directory."),
    Setting("LIFECYCLE_BROKER_URL", "(unset)",
            "Message broker for the workers: `redis://…` or `amqp://…`. Unset: the in-process "
            "broker, which only `lifecycle run` can use."),
    Setting("LIFECYCLE_MAIL_TRANSPORT", "file",
            "`file` writes each mail as an .eml file into LIFECYCLE_OUTBOX_DIR; `smtp` sends to "
            "LIFECYCLE_SMTP_URL; `sendgrid` uses the SendGrid v3 API."),
    Setting("LIFECYCLE_OUTBOX_DIR", "outbox",
            "Folder for .eml files of the `file` transport (relative to the working directory)."),
    Setting("LIFECYCLE_SMTP_URL", "smtp://127.0.0.1:1025",
            "SMTP server of the `smtp` transport: `smtp://[user:password@]host:port` "
            "(`smtps://` for TLS)."),
    Setting("SENDGRID_API_KEY", "(unset)",
            "SendGrid API key; required when LIFECYCLE_MAIL_TRANSPORT is `sendgrid`.", secret=True),
    Setting("SENDGRID_API_HOST", DEFAULT_SENDGRID_API_HOST,
            "Base URL the SendGrid client posts to; point staging or tests at another server."),
    Setting("LIFECYCLE_SENDGRID_CLIENT", "pooled",
            "How the `sendgrid` transport posts: `pooled` (one keep-alive connection per worker "
            "thread) or `official` (sendgrid-python's own client, a new connection per mail)."),
    Setting("LIFECYCLE_SEND_TIMEOUT", "10",
            "Seconds a transport waits for each answer: SendGrid's to a mail's post, the SMTP "
            "server's to each command of a send."),
    Setting("LIFECYCLE_SEND_RATE", "0",
            "Most mails per second across all workers (a SendGrid plan's limit); 0 means no "
            "limit. Shared through Redis when the broker is Redis, else per process."),
    Setting("LIFECYCLE_RETRY_BASE_SECONDS", "60",
            "First wait before a mail the provider refused for a passing reason (5xx, timeout) is "
            "tried again; each next wait doubles, with jitter, for 8 attempts (waits of about "
            "2 hours in all with the default)."),
    Setting("LIFECYCLE_SEND_LEASE_SECONDS", "120",
            "How long a mail handed to the broker may wait for a worker, and a worker may hold "
            "it while sending, before it is handed out again or settled (file: sent again; "
            "SendGrid: by its events). Longer than LIFECYCLE_SEND_TIMEOUT: a worker starts no "
            "send in the last LIFECYCLE_SEND_TIMEOUT of it, and hands the rest of its batch "
            "back."),
    Setting("LIFECYCLE_SETTLE_SECONDS", "900",
            "How long an abandoned or unanswered SendGrid mail waits for SendGrid's events "
            "before it is sent again (only once the event webhook has delivered events of after "
            "its lease's end: longer while the webhook lags)."),
    Setting("SENDGRID_WEBHOOK_PUBLIC_KEY", "(unset)",
            "Base64 ECDSA public key that signs SendGrid's Event Webhook posts (Mail Settings → "
            "Signed Event Webhook). Without it the event webhook refuses every post."),
    Setting("LIFECYCLE_WEBHOOK_MAX_AGE", "600",
            "Seconds a signed webhook post may be old (by its signed timestamp) before it is "
            "refused as a possible replay; 0 turns that check off."),
    Setting("LIFECYCLE_SECRET_KEY", "(kept in the database)",
            "Secret for signed links, session cookies and the Inbound Parse URL: at least 32 "
            "characters, random (a placeholder or a repeated pattern is refused). Unset: a key "
            "is generated once and kept in the database, shared by every process on it.",
            secret=True),
    Setting("LIFECYCLE_SECRET_KEY_PREVIOUS", "(unset)",
            "Comma-separated earlier secret keys, during a rotation: links, sessions and the "
            "Inbound Parse URL made with them are still accepted; everything new is signed "
            "with the current key. `database` stands for the key kept in the database (when "
            "moving to an explicit LIFECYCLE_SECRET_KEY).", secret=True),
    Setting("LIFECYCLE_BASE_URL", "http://127.0.0.1:8000",
            "Public URL of the web app, used in unsubscribe and feedback links."),
    Setting("LIFECYCLE_SHOP_NAME", "Example Shop", "The shop's name, shown in mail."),
    Setting("LIFECYCLE_SHOP_URL", "(LIFECYCLE_BASE_URL)", "The shop's web address, linked from mail."),
    Setting("LIFECYCLE_REVIEW_URL", "{shop_url}/reviews",
            "Where a mail asks for a review of a product bought: a pattern with `{shop_url}`, "
            "`{sku}`, `{order_id}` (percent-encoded) and `{url}` (the product's page, only at the "
            "start, e.g. `{url}#reviews`); an order line lacking what it needs gets no link."),
    Setting("LIFECYCLE_SHOP_ADDRESS", "(empty)",
            "The shop's postal address for the mail footer (required by law in many countries)."),
    Setting("LIFECYCLE_OFFER_URL", "{shop_url}/discount/{code}",
            "Where a mail's offer button takes the customer: a pattern with `{code}` (the "
            "offer's code) and optionally `{shop_url}` (LIFECYCLE_SHOP_URL); templates read it "
            "as `offer.url`."),
    Setting("LIFECYCLE_OFFER_WEBHOOK_URL", "(unset)",
            "The shop's endpoint told of every new offer code (a signed Standard Webhooks "
            "post, `offer.created`). Unset: no webhooks; the shop reads codes from "
            "`GET /api/v1/offers` or `lifecycle offers export`."),
    Setting("LIFECYCLE_OFFER_WEBHOOK_SECRET", "(unset)",
            "The secret that signs offer webhooks: `whsec_` and base64 of 24 to 64 random "
            "bytes. Required when LIFECYCLE_OFFER_WEBHOOK_URL is set.", secret=True),
    Setting("LIFECYCLE_MAIL_FROM", "Example Shop <shop@example.com>",
            "Sender of every mail, `Name <address>` (ASCII name, as SendGrid requires)."),
    Setting("LIFECYCLE_REPLY_DOMAIN", "(the domain of LIFECYCLE_MAIL_FROM)",
            "Domain of every mail's Reply-To and `mailto:` unsubscribe address (short signed "
            "local parts); its MX must point at SendGrid's Inbound Parse, so a subdomain such "
            "as `reply.shop.example` keeps the shop's own mailbox on the From domain."),
    Setting("LIFECYCLE_TIMEZONE", "UTC",
            "The shop's IANA timezone: used for imported times without an offset and for "
            "customers whose own timezone is unknown."),
    Setting("LIFECYCLE_CURRENCY", "USD",
            "The shop's reporting currency (ISO 4217). Spend metrics (RFM M, VIP, custom "
            "segments on spend) and flow revenue count only orders in it; orders in other "
            "currencies still count as orders and are shown apart, per currency, never added in."),
    Setting("LIFECYCLE_LOCALE", "en",
            "The shop's default locale (`en`, `de`, `de_AT`, `nb` …): mail and public pages for a "
            "customer whose locale is missing or has no copy use it, and amounts and dates are "
            "formatted in it (see Languages)."),
    Setting("LIFECYCLE_SHOP_LOGO_URL", "(unset)",
            "http(s) URL of the shop's logo for the mail header; unset: the shop's name is shown."),
    Setting("LIFECYCLE_BRAND_COLOR", "#2f5d50",
            "The shop's brand colour for mail buttons and accents, as hex `#rrggbb` or `#rgb`."),
    Setting("LIFECYCLE_SUPPORT_EMAIL", "(the LIFECYCLE_MAIL_FROM address)",
            "The address mail tells customers to write to for help."),
    Setting("LIFECYCLE_WORKER_THREADS", "4",
            "Worker threads per `lifecycle worker` (or `lifecycle run`) process."),
    Setting("LIFECYCLE_TICK_SECONDS", "5",
            "How often the scheduler looks for due work, in seconds."),
    Setting("LIFECYCLE_HEARTBEAT_SECONDS", "30",
            "How often each scheduler and worker process records that it is alive, in seconds; "
            "`/healthz` shows a process as dead after four missed heartbeats."),
    Setting("LIFECYCLE_FLOWS_DIR", "flows (in the checkout)",
            "Folder of flow files and segments.yaml."),
    Setting("LIFECYCLE_CAMPAIGNS_DIR", "campaigns (in the checkout)",
            "Folder of campaigns kept as reviewed files, `<name>.yaml` each (see Campaigns)."),
    Setting("LIFECYCLE_TEMPLATES_DIR", "templates/email (in the checkout)",
            "Folder of email templates, one folder per email."),
    Setting("LIFECYCLE_SEGMENT_REFRESH_HOURS", "24",
            "The scheduler runs a full segment refresh (and RFM recalibration) when the last one "
            "is older than this."),
    Setting("LIFECYCLE_PREDICTION_HORIZON_DAYS", "90",
            "Predictions: each buyer's expected orders are for this many days after the fit "
            "(whole days, 1 to 3650; see Predictions)."),
    Setting("LIFECYCLE_ATTRIBUTION_DAYS", "7",
            "Flow results: an order counts as a conversion of the customer's latest mail sent "
            "or clicked within this many days before it (the results page can try another)."),
    Setting("LIFECYCLE_LOG_LEVEL", "INFO",
            "Log level: DEBUG, INFO, WARNING or ERROR."),
    Setting("LIFECYCLE_PUBLIC_API_DOCS", "false",
            "true: `/docs`, `/redoc` and `/openapi.json` answer anyone; otherwise only logged-in "
            "staff and requests with a valid API key (others get 404)."),
    Setting("LIFECYCLE_NPS_HOLD_SECONDS", "120",
            "An NPS score posted from the feedback page waits this long before it counts: "
            "three or more different scores from one mail's links within it are a link "
            "scanner fetching every link, and count as none; two are a person correcting "
            "(the last counts) (see Feedback (NPS))."),
)


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one process."""

    database_url: URL
    broker_url: str | None = None
    mail_transport: str = "file"
    outbox_dir: Path = Path("outbox")
    smtp_url: str = "smtp://127.0.0.1:1025"
    sendgrid_api_key: str | None = None
    sendgrid_api_host: str = DEFAULT_SENDGRID_API_HOST
    sendgrid_webhook_public_key: str | None = None
    #: LIFECYCLE_SECRET_KEY; None: the key kept in the database (:attr:`lifecycle.app.App.keys`
    #: reads it, and fills this in, when a process starts).
    secret_key: str | None = field(default=None, repr=False)
    #: LIFECYCLE_SECRET_KEY_PREVIOUS: keys still accepted for verifying, never for signing.
    secret_key_previous: tuple[str, ...] = field(default=(), repr=False)
    base_url: str = "http://127.0.0.1:8000"
    shop_name: str = "Example Shop"
    shop_url: str = "http://127.0.0.1:8000"
    shop_address: str = ""
    review_url: str = "{shop_url}/reviews"
    offer_url: str = "{shop_url}/discount/{code}"
    offer_webhook_url: str | None = None
    offer_webhook_secret: str | None = field(default=None, repr=False)
    mail_from: str = "Example Shop <shop@example.com>"
    #: LIFECYCLE_REPLY_DOMAIN; "": the domain of :attr:`mail_from`.
    reply_domain: str = ""
    timezone: str = "UTC"
    currency: str = "USD"
    #: LIFECYCLE_LOCALE as Babel's identifier (``de_AT``).
    locale: str = "en"
    shop_logo_url: str | None = None
    brand_color: str = "#2f5d50"
    #: LIFECYCLE_SUPPORT_EMAIL; empty: the address of :attr:`mail_from` (:attr:`support_address`).
    support_email: str = ""
    worker_threads: int = 4
    tick_seconds: float = 5.0
    heartbeat_seconds: float = 30.0
    log_level: str = "INFO"
    flows_dir: Path = PROJECT_ROOT / "flows"
    campaigns_dir: Path = PROJECT_ROOT / "campaigns"
    templates_dir: Path = PROJECT_ROOT / "templates" / "email"
    segment_refresh_hours: float = 24.0
    #: LIFECYCLE_PREDICTION_HORIZON_DAYS: days the expected orders of a prediction cover.
    prediction_horizon_days: int = 90
    sendgrid_client: str = "pooled"
    send_timeout: float = 10.0
    send_rate: float = 0.0
    retry_base_seconds: float = 60.0
    send_lease_seconds: float = 120.0
    settle_seconds: float = 900.0
    webhook_max_age: float = 600.0
    attribution_days: float = 7.0
    public_api_docs: bool = False
    nps_hold_seconds: float = 120.0

    @property
    def is_embedded(self) -> bool:
        """True when no broker is configured: everything runs in one process."""
        return self.broker_url is None

    @property
    def support_address(self) -> str:
        """Where customers write for help: LIFECYCLE_SUPPORT_EMAIL, else the From address."""
        return self.support_email or sender_parts(self.mail_from)[1]

    @property
    def segments_file(self) -> Path:
        return self.flows_dir / "segments.yaml"


@functools.lru_cache(maxsize=16)
def sender_parts(sender: str) -> tuple[str, str]:
    """``"Name <address>"`` (LIFECYCLE_MAIL_FROM) as (name, address), parsed once: every mail's
    context, headers and payload ask."""
    return parseaddr(sender)


#: A domain name: dot-separated labels of letters, digits and inner hyphens (at most 63 each),
#: 253 characters in all.
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

#: Shortest secret key accepted (characters).
MIN_SECRET_LENGTH = 32
#: Fewest different characters a secret key must have: a random 32-character key has 20 or
#: more (hex: 16); ``aaaa…`` or ``abab…`` has one or two.
MIN_SECRET_DISTINCT = 10
#: Secret keys printed in Lifecycle's own README, compose file or examples, then or now:
#: anyone can read them, so anyone could sign an admin session with them.
PUBLISHED_SECRET_KEYS = frozenset({
    "change-me-to-a-long-random-secret-of-32-chars-or-more",
})
#: Words of a placeholder that a person was meant to replace.
_PLACEHOLDER = re.compile(r"change.?me|replace.?me|placeholder|your.?secret|secret.?key|"
                          r"example|insecure|not.?secret|xxxxxx", re.I)
#: A key that is one piece of up to 16 characters, repeated.
_REPEATED = re.compile(r"(.{1,16}?)\1+", re.S)
#: Least zxcvbn guesses (log10) of a secret key: a random 32-character key scores 30 or more,
#: a keyboard row, the alphabet or repeated words 4–12.
MIN_SECRET_GUESSES_LOG10 = 20
#: In LIFECYCLE_SECRET_KEY_PREVIOUS: the key kept in the database (:mod:`lifecycle.secret`).
KEPT_IN_DATABASE = "database"
#: How to make a good key (named in every refusal).
MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def secret_key_fault(value: str) -> str | None:
    """Why ``value`` cannot be a secret key (a phrase), or None when it can.

    Refused: fewer than :data:`MIN_SECRET_LENGTH` characters; a key printed in
    Lifecycle's docs (:data:`PUBLISHED_SECRET_KEYS`) or one that reads like a
    placeholder (``change-me…``, ``your-secret…``); and an obviously low-entropy
    key: fewer than :data:`MIN_SECRET_DISTINCT` different characters, one
    short piece repeated, or fewer than 10^:data:`MIN_SECRET_GUESSES_LOG10`
    guesses by zxcvbn (keyboard rows, sequences, words).
    """
    if value in PUBLISHED_SECRET_KEYS:
        return "it is the placeholder printed in Lifecycle's documentation, which anyone can read"
    if _PLACEHOLDER.search(value):
        return "it reads like a placeholder from documentation, not a random key"
    if len(value) < MIN_SECRET_LENGTH:
        return f"it must be at least {MIN_SECRET_LENGTH} characters (it has {len(value)})"
    if _REPEATED.fullmatch(value):
        return "it is one short piece repeated, far too regular to be secret"
    if len(set(value)) < MIN_SECRET_DISTINCT:
        return (f"it has only {len(set(value))} different characters, far too regular to be "
                "secret")
    from lifecycle.guessing import judge  # zxcvbn's dictionaries load on first use

    guesses = judge(value)["guesses_log10"]
    if guesses < MIN_SECRET_GUESSES_LOG10:
        return (f"it is made of guessable patterns (about 10^{guesses:.0f} guesses by zxcvbn: "
                "keyboard rows, sequences, words, repeats), not a random key")
    return None


def check_secret_key(name: str, value: str) -> None:
    """ConfigError, one line naming ``name`` and why, when ``value`` is no fit secret key."""
    fault = secret_key_fault(value)
    if fault is None:
        return
    if name.startswith("LIFECYCLE_SECRET_KEY_PREVIOUS"):
        raise ConfigError(f"{name} is refused: {fault}. Remove it: a link or session signed "
                          "with it proves nothing.")
    raise ConfigError(f"{name} is refused: {fault}. Make one with `{MAKE_A_KEY}`, or leave "
                      "it unset to keep a generated key in the database.")


def _database_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"LIFECYCLE_DATABASE_URL={redact_url(raw)!r} is not a database URL "
                          "(expected sqlite:///FILE or postgresql://USER@HOST/DB).") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
            url = url.set(drivername="postgresql+psycopg")
        return url
    if backend == "sqlite":
        return url
    raise ConfigError(f"LIFECYCLE_DATABASE_URL uses {backend!r}; Lifecycle supports "
                      "sqlite and postgresql.")


def _http_url(name: str, raw: str) -> str:
    parts = _split(name, raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={redact_url(raw)!r} is not an http(s) URL.")
    return raw.rstrip("/")


def _review_url(raw: str | None, shop_url: str) -> str:
    try:
        return check_review_pattern((raw or "").strip() or DEFAULT_REVIEW_URL, shop_url)
    except ValueError as exc:
        raise ConfigError(f"LIFECYCLE_REVIEW_URL={raw!r} {exc}.") from None


def _positive(name: str, raw: str, kind: type[int] | type[float],
              zero_allowed: bool = False) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number.") from None
    if value < 0 or (value == 0 and not zero_allowed):
        raise ConfigError(f"{name}={raw!r} must be {'0 or more' if zero_allowed else 'greater than zero'}.")
    return value


#: Longest prediction horizon (days): beyond ten years the models' assumptions mean nothing.
MAX_PREDICTION_HORIZON_DAYS = 3650


def _horizon(raw: str) -> int:
    value = int(_positive("LIFECYCLE_PREDICTION_HORIZON_DAYS", raw, int))
    if value > MAX_PREDICTION_HORIZON_DAYS:
        raise ConfigError(f"LIFECYCLE_PREDICTION_HORIZON_DAYS={raw!r} must be at most "
                          f"{MAX_PREDICTION_HORIZON_DAYS} (days).")
    return value


#: Longest hold of an NPS vote (seconds): a person waits for nothing, but their answer reaches
#: the segments (and the advocacy flow) only after it.
MAX_NPS_HOLD = 3600.0


def _nps_hold(raw: str) -> float:
    value = float(_positive("LIFECYCLE_NPS_HOLD_SECONDS", raw, float))
    if not value <= MAX_NPS_HOLD:  # also NaN
        raise ConfigError(f"LIFECYCLE_NPS_HOLD_SECONDS={raw!r} must be at most "
                          f"{MAX_NPS_HOLD:g} seconds.")
    return value


def _folder(name: str, raw: str | None, default: Path) -> Path:
    if raw is None:
        return default
    folder = Path(raw).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{name}={raw!r} is not a folder.")
    return folder


_HEX_COLOR = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")
_EMAIL = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+")


def _locale(raw: str) -> str:
    """Babel's identifier for LIFECYCLE_LOCALE (``de-AT`` → ``de_AT``); ConfigError naming it
    when Babel has no such locale."""
    from babel import Locale, UnknownLocaleError

    text = raw.strip()
    try:
        if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*", text):
            raise ValueError(text)
        return str(Locale.parse(text.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ConfigError(f"LIFECYCLE_LOCALE={raw!r} is not a locale Babel knows; use a "
                          "language code with an optional region, such as en, de, de_AT, nb "
                          "or pl.") from None


#: The placeholders LIFECYCLE_OFFER_URL may use.
OFFER_URL_PLACEHOLDERS = ("shop_url", "code")
_PLACEHOLDER_NAME = re.compile(r"\{([^{}]*)\}")


def _offer_url(raw: str) -> str:
    """LIFECYCLE_OFFER_URL checked: only ``{shop_url}`` and ``{code}``, ``{code}`` present, and
    an http(s) URL once filled in."""
    names = _PLACEHOLDER_NAME.findall(raw)
    unknown = sorted({n for n in names if n not in OFFER_URL_PLACEHOLDERS})
    if unknown:
        raise ConfigError(f"LIFECYCLE_OFFER_URL={raw!r} uses the placeholder "
                          f"{{{unknown[0]}}}; it may use only {{shop_url}} and {{code}}.")
    stray = _PLACEHOLDER_NAME.sub("", raw)
    if "{" in stray or "}" in stray:
        raise ConfigError(f"LIFECYCLE_OFFER_URL={raw!r} has an unmatched {{ or }}.")
    if "code" not in names:
        raise ConfigError(f"LIFECYCLE_OFFER_URL={raw!r} must contain {{code}}: the button "
                          "carries the code to the shop.")
    sample = raw.replace("{shop_url}", "https://shop.test").replace("{code}", "CODE")
    parts = _split("LIFECYCLE_OFFER_URL", sample)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"LIFECYCLE_OFFER_URL={raw!r} is not an http(s) URL once filled in "
                          "(start it with {shop_url} or https://).")
    return raw


#: Bytes a Standard Webhooks secret may have (the specification: 24 to 64).
WEBHOOK_SECRET_BYTES = (24, 64)


def _webhook_secret(raw: str) -> str:
    """LIFECYCLE_OFFER_WEBHOOK_SECRET checked: ``whsec_`` and base64 of 24 to 64 bytes."""
    low, high = WEBHOOK_SECRET_BYTES
    how = (f"`whsec_` followed by base64 of {low} to {high} random bytes, e.g. python -c "
           "'import base64, secrets; print(\"whsec_\" + base64.b64encode(secrets.token_bytes(32))"
           ".decode())'")
    if not raw.startswith("whsec_"):
        raise ConfigError(f"LIFECYCLE_OFFER_WEBHOOK_SECRET must be {how}.")
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"LIFECYCLE_OFFER_WEBHOOK_SECRET is not base64 after whsec_; it must "
                          f"be {how}.") from None
    if not low <= len(key) <= high:
        raise ConfigError(f"LIFECYCLE_OFFER_WEBHOOK_SECRET holds {len(key)} bytes; it must be "
                          f"{how}.")
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every ``LIFECYCLE_*`` and ``SENDGRID_*`` variable."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    database_url = _database_url(get("LIFECYCLE_DATABASE_URL") or "sqlite:///lifecycle.db")

    broker_url = get("LIFECYCLE_BROKER_URL")
    if broker_url is not None and _split("LIFECYCLE_BROKER_URL", broker_url).scheme \
            not in BROKER_SCHEMES:
        raise ConfigError(f"LIFECYCLE_BROKER_URL={redact_url(broker_url)!r} must start with "
                          "redis:// or "
                          "amqp:// (leave it unset for the in-process broker).")
    if broker_url is not None:  # schemes are case-insensitive; redis-py takes only lower case
        scheme, sep, rest = broker_url.partition("://")
        broker_url = f"{scheme.lower()}{sep}{rest}"

    transport = (get("LIFECYCLE_MAIL_TRANSPORT") or "file").lower()
    if transport not in MAIL_TRANSPORTS:
        raise ConfigError(f"LIFECYCLE_MAIL_TRANSPORT={transport!r} must be one of "
                          f"{', '.join(MAIL_TRANSPORTS)}.")

    smtp_url = get("LIFECYCLE_SMTP_URL") or "smtp://127.0.0.1:1025"
    smtp_parts = _split("LIFECYCLE_SMTP_URL", smtp_url)
    if smtp_parts.scheme not in ("smtp", "smtps") or not smtp_parts.hostname:
        raise ConfigError(f"LIFECYCLE_SMTP_URL={redact_url(smtp_url)!r} must look like "
                          "smtp://host:port.")
    try:
        if smtp_parts.port == 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"LIFECYCLE_SMTP_URL={redact_url(smtp_url)!r} has a bad port.") from None

    sendgrid_client = (get("LIFECYCLE_SENDGRID_CLIENT") or "pooled").lower()
    if sendgrid_client not in ("pooled", "official"):
        raise ConfigError(f"LIFECYCLE_SENDGRID_CLIENT={sendgrid_client!r} must be pooled or official.")

    api_key = get("SENDGRID_API_KEY")
    if transport == "sendgrid" and api_key is None:
        raise ConfigError("SENDGRID_API_KEY must be set when LIFECYCLE_MAIL_TRANSPORT is sendgrid.")

    public_key = get("SENDGRID_WEBHOOK_PUBLIC_KEY")
    if public_key is not None:
        try:
            base64.b64decode(public_key, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY is not base64 "
                              "(paste the key exactly as SendGrid shows it).") from None

    secret_key = get("LIFECYCLE_SECRET_KEY")
    if secret_key is not None:
        check_secret_key("LIFECYCLE_SECRET_KEY", secret_key)
    previous = tuple(key.strip() for key in (get("LIFECYCLE_SECRET_KEY_PREVIOUS") or "").split(",")
                     if key.strip())
    for number, key in enumerate(previous, 1):
        if key != KEPT_IN_DATABASE:
            check_secret_key(f"LIFECYCLE_SECRET_KEY_PREVIOUS (key {number})", key)

    timezone = get("LIFECYCLE_TIMEZONE") or "UTC"
    if not is_timezone(timezone):
        raise ConfigError(f"LIFECYCLE_TIMEZONE={timezone!r} is not an IANA timezone "
                          "such as Europe/Berlin.")

    currency = (get("LIFECYCLE_CURRENCY") or "USD").upper()
    if not known_currency(currency):
        raise ConfigError(f"LIFECYCLE_CURRENCY={currency!r} is not an ISO 4217 currency code "
                          "such as USD or EUR.")

    locale = _locale(get("LIFECYCLE_LOCALE") or "en")
    brand_color = (get("LIFECYCLE_BRAND_COLOR") or "#2f5d50").strip().lower()
    if not _HEX_COLOR.fullmatch(brand_color):
        raise ConfigError(f"LIFECYCLE_BRAND_COLOR={brand_color!r} must be a hex colour such as "
                          "#2f5d50 or #363.")
    logo_url = get("LIFECYCLE_SHOP_LOGO_URL") or None
    if logo_url is not None:
        logo_url = _http_url("LIFECYCLE_SHOP_LOGO_URL", logo_url)

    log_level = (get("LIFECYCLE_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LIFECYCLE_LOG_LEVEL={log_level!r} must be DEBUG, INFO, WARNING or ERROR.")

    mail_from = get("LIFECYCLE_MAIL_FROM") or "Example Shop <shop@example.com>"
    from_name, from_address = parseaddr(mail_from)
    if "@" not in from_address or not from_name.isascii() or any(c in from_name for c in ";,"):
        raise ConfigError(f"LIFECYCLE_MAIL_FROM={mail_from!r} must look like "
                          "'Shop Name <shop@example.com>' with an ASCII name and no ; or ,.")
    support_email = (get("LIFECYCLE_SUPPORT_EMAIL") or "").strip()
    if support_email and not _EMAIL.fullmatch(support_email):
        raise ConfigError(f"LIFECYCLE_SUPPORT_EMAIL={support_email!r} must be a plain address "
                          "such as help@example.com.")
    reply_domain = (get("LIFECYCLE_REPLY_DOMAIN") or "").lower().rstrip(".")
    if reply_domain and not _DOMAIN.fullmatch(reply_domain):
        raise ConfigError(f"LIFECYCLE_REPLY_DOMAIN={reply_domain!r} is not a domain name such "
                          "as reply.shop.example (letters, digits, hyphens and dots, at most "
                          "253 characters).")
    base_url = _http_url("LIFECYCLE_BASE_URL", get("LIFECYCLE_BASE_URL") or "http://127.0.0.1:8000")
    send_timeout = float(_positive("LIFECYCLE_SEND_TIMEOUT",
                                   get("LIFECYCLE_SEND_TIMEOUT") or "10", float))
    send_lease = float(_positive("LIFECYCLE_SEND_LEASE_SECONDS",
                                 get("LIFECYCLE_SEND_LEASE_SECONDS") or "120", float))
    if send_lease <= send_timeout:
        raise ConfigError(f"LIFECYCLE_SEND_LEASE_SECONDS={send_lease:g} must be longer than "
                          f"LIFECYCLE_SEND_TIMEOUT={send_timeout:g}: a worker starts no send "
                          f"that could outlast its claim on the mail.")
    shop_url = _http_url("LIFECYCLE_SHOP_URL", get("LIFECYCLE_SHOP_URL") or base_url)
    public_docs = (get("LIFECYCLE_PUBLIC_API_DOCS") or "false").strip().lower()
    if public_docs not in ("true", "false"):
        raise ConfigError(f"LIFECYCLE_PUBLIC_API_DOCS={public_docs!r} must be true or false.")
    offer_webhook_url = get("LIFECYCLE_OFFER_WEBHOOK_URL")
    if offer_webhook_url is not None:
        offer_webhook_url = _http_url("LIFECYCLE_OFFER_WEBHOOK_URL", offer_webhook_url)
    offer_webhook_secret = get("LIFECYCLE_OFFER_WEBHOOK_SECRET")
    if offer_webhook_secret is not None:
        offer_webhook_secret = _webhook_secret(offer_webhook_secret)
    if offer_webhook_url is not None and offer_webhook_secret is None:
        raise ConfigError("LIFECYCLE_OFFER_WEBHOOK_SECRET must be set when "
                          "LIFECYCLE_OFFER_WEBHOOK_URL is: the shop verifies every post with it.")
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        mail_transport=transport,
        outbox_dir=Path(get("LIFECYCLE_OUTBOX_DIR") or "outbox"),
        smtp_url=smtp_url,
        sendgrid_api_key=api_key,
        sendgrid_api_host=_http_url("SENDGRID_API_HOST",
                                    get("SENDGRID_API_HOST") or DEFAULT_SENDGRID_API_HOST),
        sendgrid_webhook_public_key=public_key,
        secret_key=secret_key,
        secret_key_previous=previous,
        base_url=base_url,
        shop_name=get("LIFECYCLE_SHOP_NAME") or "Example Shop",
        shop_url=shop_url,
        review_url=_review_url(get("LIFECYCLE_REVIEW_URL"), shop_url),
        shop_address=get("LIFECYCLE_SHOP_ADDRESS") or "",
        offer_url=_offer_url(get("LIFECYCLE_OFFER_URL") or "{shop_url}/discount/{code}"),
        offer_webhook_url=offer_webhook_url,
        offer_webhook_secret=offer_webhook_secret,
        mail_from=mail_from,
        reply_domain=reply_domain,
        timezone=timezone,
        currency=currency,
        locale=locale,
        shop_logo_url=logo_url,
        brand_color=brand_color,
        support_email=support_email,
        worker_threads=int(_positive("LIFECYCLE_WORKER_THREADS",
                                     get("LIFECYCLE_WORKER_THREADS") or "4", int)),
        tick_seconds=float(_positive("LIFECYCLE_TICK_SECONDS",
                                     get("LIFECYCLE_TICK_SECONDS") or "5", float)),
        heartbeat_seconds=float(_positive("LIFECYCLE_HEARTBEAT_SECONDS",
                                          get("LIFECYCLE_HEARTBEAT_SECONDS") or "30", float)),
        log_level=log_level,
        flows_dir=_folder("LIFECYCLE_FLOWS_DIR", get("LIFECYCLE_FLOWS_DIR"), PROJECT_ROOT / "flows"),
        campaigns_dir=_folder("LIFECYCLE_CAMPAIGNS_DIR", get("LIFECYCLE_CAMPAIGNS_DIR"),
                              PROJECT_ROOT / "campaigns"),
        templates_dir=_folder("LIFECYCLE_TEMPLATES_DIR", get("LIFECYCLE_TEMPLATES_DIR"),
                              PROJECT_ROOT / "templates" / "email"),
        segment_refresh_hours=float(_positive("LIFECYCLE_SEGMENT_REFRESH_HOURS",
                                              get("LIFECYCLE_SEGMENT_REFRESH_HOURS") or "24", float)),
        prediction_horizon_days=_horizon(get("LIFECYCLE_PREDICTION_HORIZON_DAYS") or "90"),
        sendgrid_client=sendgrid_client,
        send_timeout=send_timeout,
        send_rate=float(_positive("LIFECYCLE_SEND_RATE", get("LIFECYCLE_SEND_RATE") or "0", float,
                                  zero_allowed=True)),
        retry_base_seconds=float(_positive("LIFECYCLE_RETRY_BASE_SECONDS",
                                           get("LIFECYCLE_RETRY_BASE_SECONDS") or "60", float)),
        send_lease_seconds=send_lease,
        settle_seconds=float(_positive("LIFECYCLE_SETTLE_SECONDS",
                                       get("LIFECYCLE_SETTLE_SECONDS") or "900", float)),
        webhook_max_age=float(_positive("LIFECYCLE_WEBHOOK_MAX_AGE",
                                        get("LIFECYCLE_WEBHOOK_MAX_AGE") or "600", float,
                                        zero_allowed=True)),
        attribution_days=float(_positive("LIFECYCLE_ATTRIBUTION_DAYS",
                                         get("LIFECYCLE_ATTRIBUTION_DAYS") or "7", float)),
        public_api_docs=public_docs == "true",
        nps_hold_seconds=_nps_hold(get("LIFECYCLE_NPS_HOLD_SECONDS") or "120"),
    )
