"""Rewriter throughput: MB/s on the corpus and generated mails, cost per link, and linearity on hostile input.

Run: .venv/bin/python bench/rewrite.py   (about 40 s; one core; figures are the best of several runs, in CPU time)
Two minters: engaged's own (tokens.RecipientLinks, a realistic recipient identity with metadata and
subject) and a reference HmacMinter that signs a ~200-byte JSON payload per link from scratch; the
reference is measured in the same run, so the ratio between them holds on a busy machine.
Adversarial rows print the time for n and 2n repeats: linear work doubles.
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engaged.keys import Keyring  # noqa: E402
from engaged.recipient import RecipientIdentity, TrackingPlan  # noqa: E402
from engaged.rewrite.html import HtmlPlans, rewrite_html  # noqa: E402
from engaged.rewrite.mime import RewriteOptions, rewrite_message  # noqa: E402
from engaged.rewrite.text import rewrite_text  # noqa: E402
from engaged.tokens import RecipientLinks  # noqa: E402
from engaged.types import LinkMinter  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
BOTH = RewriteOptions(open_tracking=True, click_tracking=True)
ADVERSARIAL_HTML = [
    '<a "',
    "<a title='",
    '<a title="',
    "<!--",
    "<!--[if a]>-->",
    "<!--[if a]>",
    "<a href=http://x/ ",
    "<style>",
    "</",
    "<!",
    "<a/",
    "&notify&copy",
    '<a href="http://x/">',
]
ADVERSARIAL_TEXT = ["http://a.b/c?d=", "xn--a.", " ", "(http://a/", "http://a/)", "[[data-msys-"]


class HmacMinter:
    """Signs like a real minter: compact JSON (~200 bytes) + truncated HMAC-SHA256, base64url."""

    def __init__(self) -> None:
        self._mac = hmac.new(b"bench-key-" * 4, digestmod=hashlib.sha256)
        self._fixed = {
            "m": "0000018f3a2b4c5d-6e7f8091a2b3c4d5",
            "x": "tx-7359113298102",
            "r": "recipient.name@example.com",
            "c": "spring-sale-2026",
            "e": 1_800_000_000,
        }

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        payload = {**self._fixed, "t": target_url, "n": None if link_name == target_url else link_name}
        return f"https://track.example.com/f/{sublink or 'a'}/{self._seal(payload)}"

    def open_url(self, initial: bool) -> str:
        return f"https://track.example.com/q/{self._seal({**self._fixed, 'i': initial})}"

    def _seal(self, payload: dict[str, object]) -> str:
        data = json.dumps(payload, separators=(",", ":")).encode()
        mac = self._mac.copy()
        mac.update(data)
        return base64.urlsafe_b64encode(data + mac.digest()[:16]).rstrip(b"=").decode()


def engaged_minter() -> RecipientLinks:
    """engaged's minter for one recipient, as delivery builds it (identity with metadata, tags, subject)."""
    identity = RecipientIdentity(
        message_id="0000018f3a2b4c5d6e7f", transmission_id="7359113298102", rcpt_to="recipient.name@example.com",
        raw_rcpt_to="Recipient.Name@example.com", injection_time=1_800_000_000.25, campaign_id="spring-sale-2026",
        customer_id="42", tags=("promo", "newsletter"),
        metadata={"user_id": "123456", "plan": "gold", "segment": "spring-2026", "locale": "en-US"},
        subject="Our spring sale starts today", friendly_from="Shop <news@shop.example.com>",
        msg_from="bounces@shop.example.com", routing_domain="example.com", delv_method="esmtp",
    )
    plan = TrackingPlan(open_tracking=True, click_tracking=True, click_scheme="https", open_scheme="https",
                        tracking_domain="track.example.com")
    return RecipientLinks(Keyring(current_id=1, keys={1: bytes(range(32))}), identity, plan)


def best(function: Callable[[], object], runs: int) -> float:
    """The shortest of `runs` timings of `function`, in seconds of this process's CPU time (garbage
    collection off, as timeit does). CPU time, not wall-clock time: on a shared machine the time spent
    waiting for a core is not this code's cost, and it made the per-link difference swing below zero."""
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.process_time()
            function()
            times.append(time.process_time() - start)
    finally:
        gc.enable()
    return min(times)


def generated(size: int, links: int) -> str:
    """A marketing-style document of about `size` bytes: nested tables, mso wrappers, utm links with &amp;."""
    head = '<!DOCTYPE html><html><head><style>td{padding:0}</style></head><body style="margin:0">\r\n'
    link = (
        '<tr><td class="cell"><!--[if mso]><v:roundrect href="https://shop.example.com/item/{i}?utm_source=mail'
        '&amp;utm_campaign=spring" style="height:40px"><![endif]--><a href="https://shop.example.com/item/{i}'
        '?utm_source=mail&amp;utm_medium=email&amp;utm_campaign=spring" style="color:#336699">Item {i}</a>'
        "<!--[if mso]></v:roundrect><![endif]--></td></tr>\r\n"
    )
    filler = '<tr><td class="text"><p style="margin:0 0 12px">Lorem ipsum dolor sit amet.</p></td></tr>\r\n'
    rows = [link.format(i=i) for i in range(links // 2)]  # each row holds two tracked links (VML + <a>)
    body = "".join(rows)
    per_gap = max(0, (size - len(head) - len(body)) // max(1, len(rows) + 1) // len(filler))
    parts = [head, '<table role="presentation" width="100%">\r\n']
    for row in rows:
        parts.append(filler * per_gap)
        parts.append(row)
    while sum(map(len, parts)) < size - 40:
        parts.append(filler)
    return "".join(parts) + "</table></body></html>\r\n"


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def wrap(html: bytes) -> bytes:
    """A multipart/alternative message around an HTML template (CRLF, HTML part quoted-printable)."""
    html = html.replace(b"\r\n", b"\n")
    qp = binascii.b2a_qp(html, istext=True).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: bench\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlain version: https://example.com/plain\r\n--b\r\n"
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + qp
        + b"\r\n--b--\r\n"
    )


def row(label: str, *cells: str) -> None:
    print(f"{label:<44}" + "".join(f"{cell:>14}" for cell in cells))


def throughput(size: int, seconds: float) -> tuple[str, str, str]:
    return f"{size / 1e6:.2f} MB", f"{seconds * 1e3:.1f} ms", f"{size / seconds / 1e6:.0f} MB/s"


def track_html(doc: str, minter: LinkMinter, click: bool = True) -> Callable[[], object]:
    return partial(rewrite_html, doc, minter, click=click, open_=True, initial_open=True)


def corpus_rows(minter: HmacMinter) -> None:
    templates = [path.read_text("utf-8") for path in sorted(CORPUS.glob("html/**/*.html"))]
    if not templates:
        print(f"(no corpus at {CORPUS}: corpus rows skipped)")
        return
    size = sum(len(text.encode()) for text in templates)
    links = sum(
        rewrite_html(text, minter, click=True, open_=True, initial_open=True).links_tracked
        for text in templates
    )
    seconds = best(lambda: [track_html(text, minter)() for text in templates], 9)
    row(f"corpus templates, HTML ({len(templates)} files, {links} links)", *throughput(size, seconds))
    messages = [wrap(text.encode()) for text in templates]
    seconds = best(lambda: [rewrite_message(message, minter, BOTH) for message in messages], 7)
    row("corpus templates, rewrite_message (QP part)", *throughput(sum(map(len, messages)), seconds))
    mails = [crlf(path.read_bytes()) for path in sorted(CORPUS.glob("mime/**/*.eml"))]
    seconds = best(lambda: [rewrite_message(mail, minter, BOTH) for mail in mails], 7)
    row(f"corpus messages, rewrite_message ({len(mails)})", *throughput(sum(map(len, mails)), seconds))


def mint_all(minter: LinkMinter, urls: list[str]) -> list[str]:
    return [minter.click_url(url, "n", None, False) for url in urls]


def generated_rows(minter: HmacMinter) -> None:
    real = engaged_minter()
    for size, links in ((100_000, 50), (100_000, 500), (1_000_000, 50), (1_000_000, 500)):
        doc = generated(size, links)
        tracked = rewrite_html(doc, minter, click=True, open_=True, initial_open=True).links_tracked
        scan = best(track_html(doc, minter, click=False), 25)
        for name, each in (("reference", minter), ("engaged", real)):
            seconds = best(track_html(doc, each), 25)
            per_link = f"{(seconds - scan) / tracked * 1e6:.1f} µs/link"
            row(f"generated {size // 1000} KB, {tracked} links, {name}", *throughput(len(doc.encode()), seconds)[1:],
                per_link)
        # The next copy of the same document (another recipient of the message): its plan is kept, so a
        # copy costs the minting and the splice; per link: click on minus off, both with the plan kept.
        plans = HtmlPlans()
        kept = best(partial(rewrite_html, doc, real, click=True, open_=True, initial_open=True, plans=plans), 25)
        bare = best(partial(rewrite_html, doc, real, click=False, open_=True, initial_open=True, plans=plans), 25)
        row("  next copy (plan kept), engaged", *throughput(len(doc.encode()), kept)[1:],
            f"{(kept - bare) / tracked * 1e6:.1f} µs/link")
    urls = [f"https://shop.example.com/item/{i}?utm_source=mail&utm_medium=email&utm_campaign=spring" for i in
            range(1000)]
    figures = {}
    for name, each in (("reference HMAC minter", minter), ("engaged minter (RecipientLinks)", real)):
        figures[name] = best(partial(mint_all, each, urls), 9) / len(urls)
        row(f"  of which the {name} alone", "", "", f"{figures[name] * 1e6:.1f} µs/link")
    ratio = figures["engaged minter (RecipientLinks)"] / figures["reference HMAC minter"]
    row("  engaged / reference minter", "", "", f"×{ratio:.2f}")


def adversarial_rows(minter: HmacMinter, repeats: int) -> None:
    for unit in ADVERSARIAL_HTML:
        times = [best(track_html(unit * n, minter), 5) for n in (repeats, 2 * repeats)]
        row(f"html {unit!r} × n", *linearity(times))
    for unit in ADVERSARIAL_TEXT:
        times = [best(partial(rewrite_text, unit * n, minter), 5) for n in (repeats, 2 * repeats)]
        row(f"text {unit!r} × n", *linearity(times))


def linearity(times: list[float]) -> tuple[str, str, str]:
    return f"{times[0] * 1e3:.1f} ms", f"{times[1] * 1e3:.1f} ms", f"×{times[1] / times[0]:.2f}"


def main() -> None:
    minter = HmacMinter()
    started = time.perf_counter()
    row("workload", "size", "time", "throughput")
    corpus_rows(minter)
    row("generated (links cost: click on minus off)", "time", "throughput", "per link")
    generated_rows(minter)
    repeats = 20_000
    row(f"adversarial (n = {repeats})", "n", "2n", "2n / n")
    adversarial_rows(minter, repeats)
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
