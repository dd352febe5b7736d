"""engaged.rewrite.parts: which parts are "top", and their exact offsets in the raw message."""

from __future__ import annotations

from engaged.rewrite.parts import MAX_DEPTH, MAX_PARTS, TextPart, TopParts, find_top_parts


def message(*lines: str, linesep: str = "\r\n") -> bytes:
    return linesep.join(lines).encode("utf-8")


def body(raw: bytes, part: TextPart | None) -> bytes:
    assert part is not None
    return raw[part.body_start : part.body_end]


def multipart(subtype: str, boundary: str, *children: list[str], close: bool = True) -> list[str]:
    lines = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"', "", "preamble"]
    for child in children:
        lines += [f"--{boundary}", *child]
    return [*lines, f"--{boundary}--", "epilogue"] if close else lines


HTML = ["Content-Type: text/html; charset=utf-8", "", "<p>html</p>"]
PLAIN = ["Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable", "", "plain"]


def test_single_part_html_is_the_top_html() -> None:
    raw = message("Subject: x", "Content-Type: text/html", "", "<p>hi</p>", "")
    top = find_top_parts(raw)
    assert body(raw, top.html) == b"<p>hi</p>\r\n" and top.plain is None


def test_a_message_without_content_type_is_plain_text() -> None:
    raw = message("Subject: x", "", "hello")
    top = find_top_parts(raw)
    assert top.plain is not None and top.plain.charset is None and top.plain.transfer_encoding == "7bit"


def test_alternative_gives_both_parts_with_exact_offsets() -> None:
    raw = message("Subject: x", *multipart("alternative", "b1", PLAIN, HTML))
    top = find_top_parts(raw)
    assert body(raw, top.plain) == b"plain" and body(raw, top.html) == b"<p>html</p>"
    assert top.plain is not None and top.plain.transfer_encoding == "quoted-printable"
    assert top.html is not None and top.html.charset == "utf-8" and top.html.linesep == b"\r\n"
    assert raw[top.html.headers_start : top.html.headers_end] == b"Content-Type: text/html; charset=utf-8\r\n"


def test_mixed_takes_only_its_first_child() -> None:
    raw = message(*multipart("mixed", "m", PLAIN, HTML))
    top = find_top_parts(raw)
    assert body(raw, top.plain) == b"plain" and top.html is None


def test_related_inside_alternative_inside_mixed_is_entered() -> None:
    related = multipart("related", "r", HTML, ["Content-Type: image/png", "", "png"])
    alternative = multipart("alternative", "a", PLAIN, ["Content-Type: text/watch-html", "", "w"], related)
    raw = message(*multipart("mixed", "m", alternative, ["Content-Type: text/html", "", "<p>attachment</p>"]))
    top = find_top_parts(raw)
    assert body(raw, top.plain) == b"plain" and body(raw, top.html) == b"<p>html</p>"


def test_the_first_part_of_each_type_wins() -> None:
    second = ["Content-Type: text/html", "", "<p>second</p>"]
    raw = message(*multipart("alternative", "a", HTML, second))
    assert body(raw, find_top_parts(raw).html) == b"<p>html</p>"


def test_attachments_are_never_taken() -> None:
    attached = ["Content-Type: text/html", "Content-Disposition: attachment; filename=a.html", "", "<p>a</p>"]
    raw = message(*multipart("alternative", "a", attached, PLAIN))
    top = find_top_parts(raw)
    assert top.html is None and body(raw, top.plain) == b"plain"
    assert find_top_parts(message("Content-Disposition: ATTACHMENT", "", "text")).plain is None


def test_message_rfc822_and_digest_parts_are_never_entered() -> None:
    inner = ["Content-Type: message/rfc822", "", "Content-Type: text/html", "", "<p>inner</p>"]
    raw = message(*multipart("mixed", "m", inner))
    assert find_top_parts(raw) == TopParts(html=None, plain=None, warnings=())
    digest = multipart("digest", "d", ["", "Content-Type: text/plain", "", "forwarded"])
    assert find_top_parts(message(*digest)).plain is None


def test_malformed_parts_are_passed_over() -> None:
    assert find_top_parts(message("Content-Type: text", "", "x")).plain is None
    assert find_top_parts(message("not a header line", "", "x")).plain is None
    assert find_top_parts(message("Content-Type: text/plain")).plain is None  # no blank line, no body
    assert find_top_parts(message("Content-Type: multipart/alternative", "", "--x", *PLAIN)).plain is None


def test_unterminated_multipart_ends_at_its_parent_end() -> None:
    raw = message(*multipart("alternative", "a", PLAIN, HTML, close=False), "")
    assert body(raw, find_top_parts(raw).html) == b"<p>html</p>\r\n"


def test_delimiters_allow_trailing_space_but_not_other_text() -> None:
    raw = message('Content-Type: multipart/alternative; boundary="a"', "", "--a \t", *HTML, "--ab", "--a--")
    assert body(raw, find_top_parts(raw).html) == b"<p>html</p>\r\n--ab"


def test_lf_only_messages_are_read_with_their_own_line_breaks() -> None:
    raw = message("Subject: x", *multipart("alternative", "b1", PLAIN, HTML), linesep="\n")
    top = find_top_parts(raw)
    assert body(raw, top.html) == b"<p>html</p>" and top.html is not None and top.html.linesep == b"\n"


def test_nesting_deeper_than_the_limit_is_not_examined() -> None:
    lines = HTML
    for level in range(MAX_DEPTH + 1):
        lines = multipart("mixed", f"level{level}", lines)
    top = find_top_parts(message(*lines))
    assert top.html is None
    assert top.warnings == (f"MIME nesting deeper than {MAX_DEPTH} levels: deeper parts not examined",)


def test_more_parts_than_the_limit_are_not_examined() -> None:
    images = [["Content-Type: image/png", "", "png"]] * MAX_PARTS
    top = find_top_parts(message(*multipart("alternative", "a", *images, HTML)))
    assert top.html is None and top.warnings == (f"more than {MAX_PARTS} MIME parts: the rest not examined",)
