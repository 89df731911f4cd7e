"""Link scanners: requests that follow a mail's links with no person behind them.

Corporate mail security (Microsoft Defender Safe Links, Mimecast, Proofpoint,
Barracuda …) fetches the links of incoming mail, often every link within
seconds of delivery, with ``GET`` and sometimes ``HEAD``, sometimes with a
browser's user agent and sometimes running the page's script; browsers
prefetch links they expect to be followed.  A link that *acts* when fetched
(an NPS score, an unsubscribe) is answered by them.

This module is the one place that lists the traits that give such a request
away (:func:`scanner_trait`).  A request with none of them may still be a
scanner — one with a browser's user agent is indistinguishable by its
headers — so the pages that act also require a posted form and judge the
timing (see :mod:`lifecycle.feedback`); the list only catches the honest and
the careless early.  Add a scanner's mark to :data:`SCANNER_AGENTS` when the
log or a ``feedback_voided`` timeline entry shows one (their ``agents``).
"""

from __future__ import annotations

from collections.abc import Mapping

#: Headers a browser sends on a speculative fetch (no one has clicked yet), and the values
#: that say so: ``Sec-Purpose: prefetch`` (or ``prefetch;prerender``) from Chromium's
#: speculation rules, ``Purpose: prefetch`` from older Chrome, Firefox's ``X-Moz: prefetch``,
#: Safari's ``X-Purpose: preview``.
PREFETCH_HEADERS: dict[str, tuple[str, ...]] = {
    "sec-purpose": ("prefetch", "prerender"),
    "purpose": ("prefetch", "preview", "prerender"),
    "x-purpose": ("prefetch", "preview", "prerender"),
    "x-moz": ("prefetch",),
}

#: Marks (lower case, matched anywhere in the ``User-Agent``) of link scanners, crawlers,
#: link previewers, headless browsers and HTTP libraries: none is a person's browser.
SCANNER_AGENTS: tuple[str, ...] = (
    # mail security and link scanners
    "barracuda", "mimecast", "proofpoint", "safelinks", "symantec", "messagelabs",
    "trendmicro", "trend micro", "fireeye", "forcepoint", "fortiguard", "sophos", "zscaler",
    "paloalto", "palo alto", "cisco", "ironport", "cloudmark", "spamtitan", "vadesecure",
    "hornetsecurity", "libraesva", "mailguard", "urlscan", "virustotal",
    # Office apps probing a link before opening it
    "ms-office", "microsoft office existence discovery", "microsoft office protocol discovery",
    # crawlers and link previews (bots name a page about them: "+http…"); named one by one,
    # as a bare "bot" is also in phone names ("CUBOT")
    "+http", "googlebot", "bingbot", "slackbot", "slack-imgproxy", "twitterbot", "linkedinbot",
    "discordbot", "telegrambot", "applebot", "yandexbot", "duckduckbot", "petalbot", "ahrefsbot",
    "semrushbot", "bytespider", "gptbot", "claudebot", "amazonbot", "spider", "crawl", "slurp",
    "facebookexternalhit", "embedly", "whatsapp/", "skypeuripreview", "preview",
    # headless and automated browsers
    "headlesschrome", "phantomjs", "puppeteer", "playwright", "selenium", "webdriver",
    "lighthouse",
    # HTTP libraries and command-line tools
    "python-requests", "python-urllib", "python-httpx", "aiohttp", "httpx/", "urllib3",
    "curl/", "wget/", "libwww-perl", "lwp-", "go-http-client", "okhttp", "apache-httpclient",
    "java/", "java-http-client", "jakarta", "node-fetch", "undici", "axios/", "got (", "ruby", "faraday",
    "guzzlehttp", "php/", "httpie", "postmanruntime", "insomnia", "winhttp",
    "windowspowershell", "reqwest", "hyper/", "libcurl", "scrapy", "dart:io", "http.rb",
)


def scanner_trait(method: str, headers: Mapping[str, str]) -> str | None:
    """Why a request to a link is a scanner's rather than a person's click — ``HEAD``, a
    prefetch header, no ``User-Agent``, or one bearing a mark of :data:`SCANNER_AGENTS` — or
    None when it shows none of these.  ``headers`` is looked up by lower-case names (as
    Starlette's are)."""
    if method.upper() == "HEAD":
        return "HEAD request"
    for name, values in PREFETCH_HEADERS.items():
        said = (headers.get(name) or "").lower()
        if said and any(value in said for value in values):
            return f"prefetch ({name}: {said[:40]})"
    agent = (headers.get("user-agent") or "").strip().lower()
    if not agent:
        return "no User-Agent"
    for mark in SCANNER_AGENTS:
        if mark in agent:
            return f"User-Agent of a scanner or HTTP library ({mark.strip()})"
    return None
