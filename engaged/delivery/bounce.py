"""Bounce classification, pure: an SMTP reply to SparkPost's bounce_class code."""

from __future__ import annotations

import re

# SparkPost bounce classes (https://support.sparkpost.com/docs/deliverability/bounce-classification-codes)
UNDETERMINED = "1"
INVALID_RECIPIENT = "10"
SOFT_BOUNCE = "20"
DNS_FAILURE = "21"
MAILBOX_FULL = "22"
TOO_LARGE = "23"
TIMEOUT = "24"
ADMIN_FAILURE = "25"
NO_RCPT = "30"
GENERIC_BOUNCE = "40"
MAIL_BLOCK = "50"
SPAM_BLOCK = "51"
SPAM_CONTENT = "52"
PROHIBITED_ATTACHMENT = "53"
RELAYING_DENIED = "54"
AUTO_REPLY = "60"
TRANSIENT_FAILURE = "70"

_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"nxdomain|null mx|does not accept mail|no mx, a or aaaa|dns lookup", re.I), DNS_FAILURE),
    (re.compile(r"\b5\.1\.[0-6]\b|user unknown|no such (user|mailbox|recipient)|does not exist|unknown user"
                r"|recipient (address )?rejected|invalid (recipient|mailbox)|mailbox unavailable|address rejected",
                re.I), INVALID_RECIPIENT),
    (re.compile(r"\b[45]\.2\.2\b|mailbox (is )?full|over ?quota|quota exceeded|insufficient storage", re.I),
     MAILBOX_FULL),
    (re.compile(r"\b[45]\.3\.4\b|too (big|large)|message size exceeds|size limit", re.I), TOO_LARGE),
    (re.compile(r"relay(ing)? (access )?(denied|not permitted)|\b5\.7\.1\b.*relay|not permitted to relay", re.I),
     RELAYING_DENIED),
    (re.compile(r"spam|junk|blocklist|blacklist|block ?list|dnsbl|spamhaus|listed (at|in|on)", re.I), SPAM_BLOCK),
    (re.compile(r"content|virus|malware|phish", re.I), SPAM_CONTENT),
    (re.compile(r"attachment|file type|extension not allowed", re.I), PROHIBITED_ATTACHMENT),
    (re.compile(r"auto[- ]?reply|out of (the )?office|vacation", re.I), AUTO_REPLY),
    (re.compile(r"timed? ?out|timeout|connection (refused|reset|lost|closed)|\b[45]\.4\.[1-27]\b", re.I), TIMEOUT),
    (re.compile(r"\b5\.7\.\d+\b|blocked|refused|denied|not authori[sz]ed|policy", re.I), MAIL_BLOCK),
    (re.compile(r"\b[45]\.4\.[047]\b|host not found|no mx|dns|domain (not found|does not exist)|nxdomain"
                r"|null mx|does not accept mail", re.I), DNS_FAILURE),
]


def classify_bounce(code: str, text: str) -> str:
    """The bounce_class for a failure reply (`code` "550", text "5.1.1 user unknown") or local failure."""
    for pattern, bounce_class in _RULES:
        if pattern.search(text):
            if bounce_class == TIMEOUT and not code.startswith("5"):
                return SOFT_BOUNCE if code.startswith("4") else TIMEOUT
            return bounce_class
    if code.startswith("4"):
        return SOFT_BOUNCE
    if code.startswith("5"):
        return GENERIC_BOUNCE
    return UNDETERMINED
