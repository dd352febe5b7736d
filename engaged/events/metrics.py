"""SparkPost's Metrics API names as SQL aggregates over stored events, and the groupings they are reported by.

Each metric is one aggregate expression over `events` rows (SQL shared by both stores, fields read
through the store's Dialect). A recipient is a distinct (message_id, rcpt_to) pair. Our additions sit
beside SparkPost's names: `count_human_*` leave out every engagement the tracker flagged as
machine-made, where SparkPost's `count_nonprefetched_*` leave out only prefetches (Apple Mail Privacy
Protection, other prefetchers, security scanners that fetch every link): an image proxy that fetches
when the reader opens (Gmail) is a real, non-prefetched open.
"""

from __future__ import annotations

from collections.abc import Callable

from engaged.events.dialect import Dialect

__all__ = ["ADD_ON_METRICS", "BOUNCE_CLASSES", "GROUPS", "METRIC_NAMES", "PREFETCH_KINDS", "metric_sql"]

PREFETCH_KINDS = ("apple_mpp", "prefetch", "security_scanner", "scanner")
"""Machine kinds that fetch without the reader opening: left out of `count_nonprefetched_*`."""

BOUNCE_CLASSES: dict[str, tuple[str, str, str]] = {
    "1": ("Undetermined", "The response text could not be identified.", "Undetermined"),
    "10": ("Invalid Recipient", "The recipient is invalid.", "Hard"),
    "20": ("Soft Bounce", "The message soft bounced.", "Soft"),
    "21": ("DNS Failure", "The message bounced due to a DNS failure.", "Soft"),
    "22": ("Mailbox Full", "The message bounced due to the remote mailbox being over quota.", "Soft"),
    "23": ("Too Large", "The message bounced because it was too large for the recipient.", "Soft"),
    "24": ("Timeout", "The message timed out.", "Soft"),
    "25": ("Admin Failure", "The message was failed by the configured policies.", "Admin"),
    "30": ("Generic Bounce: No RCPT", "No recipient could be determined for the message.", "Hard"),
    "40": ("Generic Bounce", "The message failed for unspecified reasons.", "Soft"),
    "50": ("Mail Block", "The message was blocked by the receiver.", "Block"),
    "51": ("Spam Block", "The message was blocked by the receiver as coming from a known spam source.", "Block"),
    "52": ("Spam Content", "The message was blocked by the receiver as spam.", "Block"),
    "53": ("Prohibited Attachment", "The message was blocked by the receiver because it contained an attachment.",
           "Block"),
    "54": ("Relaying Denied", "The message was blocked by the receiver because relaying is not allowed.", "Block"),
    "60": ("Auto-Reply", "The message is an auto-reply/vacation mail.", "Soft"),
    "70": ("Transient Failure", "Message transmission has been temporarily delayed.", "Soft"),
    "80": ("Subscribe", "The message is a subscribe request.", "Admin"),
    "90": ("Unsubscribe", "The message is an unsubscribe request.", "Hard"),
    "100": ("Challenge-Response", "The message is a challenge-response probe.", "Soft"),
}
"""SparkPost's bounce classification codes: name, description, category."""

BOUNCE_CATEGORY_IDS = {"Undetermined": 0, "Hard": 1, "Soft": 2, "Block": 3, "Admin": 4}

ADD_ON_METRICS = ("count_inbox_panel", "count_spam_panel", "count_inbox_seed", "count_spam_seed",
                  "count_inbox_seed_private", "count_spam_seed_private", "count_inbox_seed_virtual",
                  "count_spam_seed_virtual", "count_moved_to_inbox", "count_moved_to_spam")
"""SparkPost's Deliverability Add-On metrics (seed and panel data engaged does not have): refused."""

_RECIPIENT = "message_id || ' ' || rcpt_to"
_REJECTED = ("policy_rejection", "generation_rejection", "generation_failure")
_CONFIRMED = ("open", "initial_open", "click", "link_unsubscribe", "amp_open", "amp_initial_open", "amp_click")


def _types(types: tuple[str, ...]) -> str:
    return "type IN (" + ", ".join(f"'{name}'" for name in types) + ")"


def _classes(category: str) -> str:
    return ", ".join(f"'{code}'" for code, (_, _, kind) in BOUNCE_CLASSES.items() if kind == category)


class _Sql:
    """Builds each metric's aggregate for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.field = dialect.field

    def total(self, condition: str) -> str:
        return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    def unique(self, condition: str) -> str:
        return f"COUNT(DISTINCT CASE WHEN {condition} THEN {_RECIPIENT} END)"

    def summed(self, condition: str, field: str) -> str:
        return f"SUM(CASE WHEN {condition} THEN CAST(NULLIF({self.field(field)}, '') AS BIGINT) ELSE 0 END)"

    def first(self) -> str:
        return f"{self.field('num_retries')} = '0'"


_HUMAN = "machine IS NULL"
_NONPREFETCHED = "(machine IS NULL OR machine NOT IN (" + ", ".join(f"'{kind}'" for kind in PREFETCH_KINDS) + "))"


def _engagement(sql: _Sql, prefix: str, keep: str | None) -> dict[str, str]:
    def only(types: tuple[str, ...]) -> str:
        return _types(types) + (f" AND {keep}" if keep else "")

    return {
        f"count_{prefix}rendered": sql.total(only(("open",))),
        f"count_unique_{prefix}rendered": sql.unique(only(("open",))),
        f"count_{prefix}initial_rendered": sql.total(only(("initial_open",))),
        f"count_unique_{prefix}initial_rendered": sql.unique(only(("initial_open",))),
        f"count_unique_{prefix}confirmed_opened": sql.unique(only(_CONFIRMED)),
    }


def _nonprefetched(sql: _Sql) -> dict[str, str]:
    def only(types: tuple[str, ...]) -> str:
        return _types(types) + f" AND {_NONPREFETCHED}"

    return {
        "count_nonprefetched_rendered": sql.total(only(("open",))),
        "count_nonprefetched_unique_rendered": sql.unique(only(("open",))),
        "count_nonprefetched_initial_rendered": sql.total(only(("initial_open",))),
        "count_nonprefetched_unique_initial_rendered": sql.unique(only(("initial_open",))),
        "count_nonprefetched_unique_confirmed_opened": sql.unique(only(_CONFIRMED)),
    }


def _all(dialect: Dialect) -> dict[str, str]:
    sql = _Sql(dialect)
    bounce_class = dialect.field("bounce_class")
    delivery, bounce, oob = _types(("delivery",)), _types(("bounce",)), _types(("out_of_band",))
    return {
        "count_targeted": sql.total(_types(("injection", *_REJECTED))),
        "count_injected": sql.total(_types(("injection",))),
        "count_sent": sql.total(_types(("delivery", "bounce"))),
        "count_accepted": f"({sql.total(delivery)} - {sql.total(oob)})",
        "count_delivered": sql.total(delivery),
        "count_delivered_first": sql.total(f"{delivery} AND {sql.first()}"),
        "count_delivered_subsequent": sql.total(f"{delivery} AND NOT {sql.first()}"),
        "count_bounce": sql.total(_types(("bounce", "out_of_band"))),
        "count_inband_bounce": sql.total(bounce),
        "count_outofband_bounce": sql.total(oob),
        **{f"count_{kind.lower()}_bounce": sql.total(f"{_types(('bounce', 'out_of_band'))} AND "
                                                     f"{bounce_class} IN ({_classes(kind)})")
           for kind in ("Hard", "Soft", "Block", "Admin", "Undetermined")},
        "count_rejected": sql.total(_types(_REJECTED)),
        "count_policy_rejection": sql.total(_types(("policy_rejection",))),
        "count_generation_failed": sql.total(_types(("generation_failure",))),
        "count_generation_rejection": sql.total(_types(("generation_rejection",))),
        "count_delayed": sql.total(_types(("delay",))),
        "count_delayed_first": sql.total(f"{_types(('delay',))} AND {sql.first()}"),
        "total_msg_volume": sql.summed(delivery, "msg_size"),
        "total_delivery_time_first": sql.summed(f"{delivery} AND {sql.first()}", "queue_time"),
        "total_delivery_time_subsequent": sql.summed(f"{delivery} AND NOT {sql.first()}", "queue_time"),
        "count_spam_complaint": sql.total(_types(("spam_complaint",))),
        "count_unsubscribe": sql.total(_types(("link_unsubscribe", "list_unsubscribe"))),
        "count_clicked": sql.total(_types(("click",))),
        "count_unique_clicked": sql.unique(_types(("click",))),
        "count_raw_clicked": sql.total(_types(("click",))),
        **_engagement(sql, "", None),
        **_nonprefetched(sql),
        "count_human_clicked": sql.total(f"{_types(('click',))} AND {_HUMAN}"),
        "count_unique_human_clicked": sql.unique(f"{_types(('click',))} AND {_HUMAN}"),
        **_engagement(sql, "human_", _HUMAN),
    }


_CACHE: dict[Dialect, dict[str, str]] = {}


def metric_sql(dialect: Dialect) -> dict[str, str]:
    """Every metric name and its aggregate expression in `dialect`."""
    cached = _CACHE.get(dialect)
    if cached is None:
        cached = _CACHE[dialect] = _all(dialect)
    return cached


METRIC_NAMES: tuple[str, ...] = tuple(
    metric_sql(Dialect(json_field="{}", domain="{}", json_path="{}", path_separator=".")))
"""Every metric the API answers to, SparkPost's and ours (`count_human_*`)."""

GROUPS: dict[str, tuple[str, Callable[[Dialect], str]]] = {
    "campaign": ("campaign_id", lambda d: "campaign_id"),
    "domain": ("domain", lambda d: d.field("recipient_domain")),
    "watched-domain": ("watched_domain", lambda d: d.field("recipient_domain")),
    "sending-ip": ("sending_ip", lambda d: d.field("sending_ip")),
    "ip-pool": ("ip_pool", lambda d: d.field("ip_pool")),
    "sending-domain": ("sending_domain", lambda d: d.field("sending_domain")),
    "template": ("template_id", lambda d: d.field("template_id")),
    "subaccount": ("subaccount_id", lambda d: d.field("subaccount_id")),
    "mailbox-provider": ("mailbox_provider", lambda d: d.field("mailbox_provider")),
    "mailbox-provider-region": ("mailbox_provider_region", lambda d: d.field("mailbox_provider_region")),
}
"""`/deliverability/<name>`: the result key and the SQL of its group (the event field it groups by)."""
