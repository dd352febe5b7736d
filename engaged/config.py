"""Configuration: typed Structs for the whole TOML file, loaded and validated once at startup."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from engaged.dkim_keys import entry_problems as dkim_entry_problems
from engaged.errors import ConfigError
from engaged.webhook_rules import entry_problems as webhook_entry_problems

__all__ = ["Config", "ConfigError", "effective_smtpapi", "load_config", "parse_hostport", "render_config"]

DEFAULT_CONFIG_FILE = "engaged.toml"
_ENV_PREFIX = "ENGAGED_"


PeerVendor = Literal["sendgrid", "mailgun", "postmark", "ses"]


class _Section(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every config section: unknown keys are errors."""


class SmtpapiSettings(_Section, frozen=True):
    """The six Momentum smtpapi options plus SparkPost's initial pixel switch ([smtpapi])."""

    open_tracking_enabled: bool = False
    click_tracking_enabled: bool = False
    open_tracking_scheme: str = "http"
    click_tracking_scheme: str = "http"
    tracking_domain: str = "localhost:8080"
    tracking_link_expiry: int = 31536000
    initial_open_enabled: bool = True
    accept_headers: list[PeerVendor] = msgspec.field(default_factory=list)  # peers' headers read (smtpapi/peers.py)


class SmtpapiOverride(_Section, frozen=True):
    """Per-listener overrides of [smtpapi] (Momentum's listen scope); unset fields fall through."""

    open_tracking_enabled: bool | None = None
    click_tracking_enabled: bool | None = None
    open_tracking_scheme: str | None = None
    click_tracking_scheme: str | None = None
    tracking_domain: str | None = None
    tracking_link_expiry: int | None = None
    initial_open_enabled: bool | None = None
    accept_headers: list[PeerVendor] | None = None


class SmtpUser(_Section, frozen=True):
    """An account that may AUTH; `customer_id` becomes the message's mo_customer_id."""

    name: str
    password_hash: str
    customer_id: str = ""


class SmtpListen(_Section, frozen=True):
    """An [smtp] listen entry written as a table: its address and what this listener overrides."""

    address: str
    proxy_protocol: bool | None = None  # unset: [smtp] proxy_protocol


class SmtpConfig(_Section, frozen=True):
    """[smtp]: injection listeners and their limits.

    A `listen` entry is a "host:port" string or a table with `address` (and `proxy_protocol`);
    `listeners()` gives every entry as a table with the global defaults filled in.
    """

    listen: list[str | SmtpListen] = msgspec.field(default_factory=lambda: ["127.0.0.1:2525"])
    hostname: str = ""
    max_message_size: int = 26214400
    max_recipients: int = 1000
    relay_networks: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    tls_cert_file: str = ""
    tls_key_file: str = ""
    users: list[SmtpUser] = msgspec.field(default_factory=list)
    overrides: dict[str, SmtpapiOverride] = msgspec.field(default_factory=dict)
    max_connections: int = 1000
    max_connections_per_ip: int = 100
    command_timeout: float = 300.0
    data_timeout: float = 180.0
    max_commands: int = 10000
    max_errors: int = 20
    first_command_timeout: float = 30.0  # before the first complete command (slowloris)
    max_idle_per_ip: int = 20  # idle sessions per client address; a new one closes the oldest
    reserved_connections: int = 50  # of max_connections, kept for relay_networks and authenticated clients
    auth_max_failures: int = 10  # failed AUTH per client address within auth_lockout_window
    auth_max_failures_per_user: int = 5  # failed AUTH per user name and client address
    auth_lockout_window: float = 300.0
    auth_hash_threads: int = 2
    proxy_protocol: bool = False  # expect a PROXY v1/v2 header first (HAProxy, cloud load balancers)
    sync: Literal["syncfs", "fsync", "none"] = "syncfs"

    def listeners(self) -> list[SmtpListen]:
        """Every listen entry, with `proxy_protocol` resolved (the entry's own, else the [smtp] one)."""
        return [SmtpListen(address=entry, proxy_protocol=self.proxy_protocol) if isinstance(entry, str)
                else SmtpListen(address=entry.address,
                                proxy_protocol=self.proxy_protocol if entry.proxy_protocol is None
                                else entry.proxy_protocol)
                for entry in self.listen]

    def addresses(self) -> list[str]:
        """The address of every listen entry (how per-listener settings name a listener)."""
        return [entry if isinstance(entry, str) else entry.address for entry in self.listen]


class EngagementTrackerConfig(_Section, frozen=True):
    """[engagement_tracker]: the public HTTP listener for opens and clicks."""

    listen: str = "127.0.0.1:8080"
    click_tracking_include_metadata: bool = True
    max_metadata_len: int = 1000
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    geoip_database: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_connections: int = 10_000


class PolicyConfig(_Section, frozen=True):
    """[policy]: Momentum-style Lua policy scripts."""

    scripts: list[str] = msgspec.field(default_factory=list)


class DeliveryConfig(_Section, frozen=True):
    """[delivery]: where accepted mail goes."""

    mode: Literal["capture", "relay", "mx"] = "capture"
    relay: str = ""
    relay_username: str = ""
    relay_password: str = ""
    max_attempt_age: int = 259200
    tls: Literal["opportunistic", "required", "verify", "none"] = "opportunistic"
    helo_name: str = ""
    source_address: str = ""  # local IP outgoing connections bind to; events carry it as sending_ip
    dns_servers: list[str] = msgspec.field(default_factory=list)
    mx_port: int = 25
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    retry_base: float = 60.0
    workers: int = 32
    max_connections: int = 100
    max_connections_per_destination: int = 10


class EventsConfig(_Section, frozen=True):
    """[events]: the event store."""

    store: str = "sqlite"


class ApiConfig(_Section, frozen=True):
    """[api]: the private listener (events, metrics, webhooks, dashboard)."""

    listen: str = "127.0.0.1:8081"
    keys: list[str] = msgspec.field(default_factory=list)
    tls_cert: str = ""  # PEM certificate chain: HTTPS on the API listener when set with tls_key
    tls_key: str = ""
    webhook_private_networks: list[str] = msgspec.field(default_factory=list)  # CIDRs webhook targets may reach


class SuppressionConfig(_Section, frozen=True):
    """[suppression]: the suppression list (kept in the event store's database, or data_dir for SQLite)."""

    enabled: bool = True


class UnsubscribeConfig(_Section, frozen=True):
    """[unsubscribe]: List-Unsubscribe on non-transactional copies."""

    list_unsubscribe: bool = False


class InboundConfig(_Section, frozen=True):
    """[inbound]: the SMTP listener for mail sent back to engaged (bounces, feedback loops, unsubscribes)."""

    listen: list[str] = msgspec.field(default_factory=list)
    bounce_domain: str = ""
    domains: list[str] = msgspec.field(default_factory=list)
    max_message_size: int = 20 * 1024 * 1024
    max_recipients: int = 100
    wait_for_copy: float = 600.0  # seconds a message naming a copy not (yet) in the event store is looked at again


class WebhookConfig(_Section, frozen=True):
    """One [[webhooks]] entry."""

    name: str
    target: str
    events: list[str] = msgspec.field(default_factory=list)
    auth_type: Literal["none", "basic", "bearer", "oauth2"] = "none"
    auth_token: str = ""
    auth_credentials: dict[str, str] = msgspec.field(default_factory=dict)
    auth_request_details: dict[str, Any] = msgspec.field(default_factory=dict)
    custom_headers: dict[str, str] = msgspec.field(default_factory=dict)
    exception_subaccounts: list[str] = msgspec.field(default_factory=list)
    active: bool = True
    allow_private_targets: bool = False
    batch_size: int = 1000
    batch_age: float = 1.0
    timeout: float = 10.0
    retry_base: float = 5.0
    retry_max_age: float = 28800.0


class DkimConfig(_Section, frozen=True):
    """One [[dkim]] signing key: `private_key` is a PEM file (RSA of 2048 bits or more, or Ed25519)."""

    domain: str
    selector: str
    private_key: str
    headers: list[str] = msgspec.field(default_factory=list)  # empty: delivery.dkim.DEFAULT_SIGNED_HEADERS
    name: str = ""  # what options.dkim_key and smtpapi_dkim_key call it; the domain when empty


ROLES = ("smtp", "tracker", "events", "api")
"""What a node of `engaged serve` can run (`[server] roles`, `--role`); all four is the single-node setup."""
MAX_NODE_ID = 31
MAX_BUS_WORKERS = 31  # event ids carry node_id (5 bits) and the process's slot (5 bits)


class ServerConfig(_Section, frozen=True):
    """[server]: the process model of `engaged serve`."""

    workers: int | Literal["auto"] = "auto"
    roles: list[str] = msgspec.field(default_factory=lambda: list(ROLES))  # any of ROLES; `--role` overrides


class BusConfig(_Section, frozen=True):
    """[bus]: NATS JetStream between the nodes (off while `servers` is empty; see docs/deployment.md)."""

    servers: list[str] = msgspec.field(default_factory=list)  # nats:// or tls:// URLs of the cluster
    stream: str = "ENGAGED_EVENTS"  # created when missing, subjects engaged.events.>
    replicas: int = 1  # of a stream engaged creates (3 for a 3-node cluster)
    consumer: str = "engaged-store"  # the durable consumer the `events` nodes share
    node_id: int = -1  # 0–31, distinct per node; -1: random (one node only)
    publish_timeout: float = 5.0  # seconds to wait for the stream's acks of one batch
    duplicate_window: float = 120.0  # seconds JetStream remembers a Nats-Msg-Id (of a stream it creates)
    ack_wait: float = 30.0  # seconds before events a dead events node had fetched go to another (consumer it creates)
    tls_ca: str = ""  # PEM CA bundle to verify the servers (tls:// URLs)
    tls_cert: str = ""  # PEM client certificate, with tls_key, for mutual TLS
    tls_key: str = ""
    credentials: str = ""  # a NATS .creds file (JWT and nkey seed)
    user: str = ""
    password: str = ""
    token: str = ""


class Config(_Section, frozen=True):
    """The whole configuration."""

    data_dir: str = "./engaged-data"
    smtp: SmtpConfig = msgspec.field(default_factory=SmtpConfig)
    smtpapi: SmtpapiSettings = msgspec.field(default_factory=SmtpapiSettings)
    engagement_tracker: EngagementTrackerConfig = msgspec.field(default_factory=EngagementTrackerConfig)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    webhooks: list[WebhookConfig] = msgspec.field(default_factory=list)
    suppression: SuppressionConfig = msgspec.field(default_factory=SuppressionConfig)
    unsubscribe: UnsubscribeConfig = msgspec.field(default_factory=UnsubscribeConfig)
    inbound: InboundConfig = msgspec.field(default_factory=InboundConfig)
    dkim: list[DkimConfig] = msgspec.field(default_factory=list)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)

    @property
    def data_path(self) -> Path:
        """data_dir as an absolute path."""
        return Path(self.data_dir).resolve()


_SECTIONS = ("engagement_tracker", "smtpapi", "smtp", "policy", "delivery", "events", "api", "suppression",
             "unsubscribe", "inbound", "server", "bus")
MAX_WORKERS = 256


def _tls_files_exist(cert: str, key: str) -> bool:
    return bool(cert) and Path(cert).is_file() and (not key or Path(key).is_file())


def parse_hostport(value: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port`; raises ValueError with the reason."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]*):(\d{1,5})", value.strip())
    if match is None:
        raise ValueError(f"expected host:port or [ipv6]:port, got {value!r}")
    host = match.group(1) or match.group(3) or ""
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host or "0.0.0.0", port


def format_hostport(host: str, port: int) -> str:
    """`host:port`, or `[v6]:port` for an IPv6 address (how listeners log what they bound)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (or ./engaged.toml, or the defaults), apply ENGAGED_* variables, validate."""
    env = os.environ if environ is None else environ
    source = path or (DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None)
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    label = source or "<defaults>"
    if source is not None:
        try:
            with open(source, "rb") as handle:
                raw = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError([f"{source}: file not found"]) from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError([f"{source}: {error}"]) from None
    _apply_environment(raw, env, origins)
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as error:
        key, reason = _split_validation_error(str(error))
        raise ConfigError([f"{origins.get(key, label)}:{key}: {reason}"]) from None
    problems = [f"{origins.get(key, label)}:{key}: {reason}" for key, reason in _check(config)]
    if problems:
        raise ConfigError(problems)
    return config


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str], origins: dict[str, str]) -> None:
    for name, value in sorted(env.items()):
        if not name.startswith(_ENV_PREFIX):
            continue
        rest = name[len(_ENV_PREFIX) :].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        key_path = [rest] if section is None else [section, rest[len(section) + 1 :]]
        target = raw
        for part in key_path[:-1]:
            target = target.setdefault(part, {})
        target[key_path[-1]] = _env_value(value, _field_is_list(key_path))
        origins[".".join(key_path)] = name


def _field_is_list(key_path: list[str]) -> bool:
    struct: Any = Config
    for part in key_path:
        fields = {f.name: f for f in msgspec.structs.fields(struct)}
        if part not in fields:
            return False
        struct = fields[part].type
    return getattr(struct, "__origin__", None) is list


def _env_value(value: str, is_list: bool) -> Any:
    text = value.strip()
    if text[:1] in "[{":
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return value
    if is_list:
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _split_validation_error(message: str) -> tuple[str, str]:
    reason, _, where = message.partition(" - at `$")
    key = where.rstrip("`").lstrip(".")
    unknown = re.match(r"Object contains unknown field `([^`]+)`", reason)
    if unknown:
        key = f"{key}.{unknown.group(1)}" if key else unknown.group(1)
        reason = "unknown key"
    return key or "<root>", reason


def _check(config: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    inbound = config.inbound
    for index, listen in enumerate(inbound.listen):
        _check_hostport(problems, f"inbound.listen[{index}]", listen)
    if not 0 <= inbound.wait_for_copy <= 86400:
        problems.append(("inbound.wait_for_copy", "must be from 0 to 86400 seconds"))
    if inbound.listen and not inbound.bounce_domain:
        problems.append(("inbound.bounce_domain", "an inbound listener needs the bounce domain it receives for"))
    for index, domain in enumerate([inbound.bounce_domain, *inbound.domains]):
        if domain and not re.fullmatch(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", domain):
            key = "inbound.bounce_domain" if index == 0 else f"inbound.domains[{index - 1}]"
            problems.append((key, f"{domain!r} is not a lower-case domain name"))
    smtp = config.smtp
    seen: set[str] = set()
    for index, listen in enumerate(smtp.addresses()):
        key = f"smtp.listen[{index}]" if isinstance(smtp.listen[index], str) else f"smtp.listen[{index}].address"
        _check_hostport(problems, key, listen)
        if listen in seen:
            problems.append((key, f"{listen} is listed twice"))
        seen.add(listen)
    if not smtp.listen:
        problems.append(("smtp.listen", "at least one listener is needed"))
    for index, network in enumerate(smtp.relay_networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as error:
            problems.append((f"smtp.relay_networks[{index}]", str(error)))
    for name, value in (("max_message_size", smtp.max_message_size), ("max_recipients", smtp.max_recipients),
                        ("max_connections", smtp.max_connections),
                        ("max_connections_per_ip", smtp.max_connections_per_ip)):
        if value <= 0:
            problems.append((f"smtp.{name}", "must be a positive number"))
    api = config.api
    if bool(api.tls_cert) != bool(api.tls_key):
        problems.append(("api.tls_cert", "tls_cert and tls_key must be set together"))
    for key in ("tls_cert", "tls_key"):
        value = getattr(api, key)
        if value and not Path(value).is_file():
            problems.append((f"api.{key}", f"file not found: {value}"))
    for index, network in enumerate(api.webhook_private_networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as error:
            problems.append((f"api.webhook_private_networks[{index}]", str(error)))
    if bool(smtp.tls_cert_file) != bool(smtp.tls_key_file):
        problems.append(("smtp.tls_cert_file", "tls_cert_file and tls_key_file must be set together"))
    for key in ("tls_cert_file", "tls_key_file"):
        value = getattr(smtp, key)
        if value and not Path(value).is_file():
            problems.append((f"smtp.{key}", f"file not found: {value}"))
    for index, user in enumerate(smtp.users):
        if not user.password_hash.startswith("pbkdf2_sha256$") or user.password_hash.count("$") != 3:
            problems.append((f"smtp.users[{index}].password_hash",
                             "expected pbkdf2_sha256$<iterations>$<salt>$<hash> (make one with "
                             "`engaged hash-password`)"))
    for listen, override in smtp.overrides.items():
        if listen not in smtp.addresses():
            problems.append((f"smtp.overrides.{listen}", "names no address in smtp.listen"))
        problems.extend(_check_smtpapi(f"smtp.overrides.{listen}", override))
    problems.extend(_check_smtpapi("smtpapi", config.smtpapi))
    tracker = config.engagement_tracker
    _check_hostport(problems, "engagement_tracker.listen", tracker.listen)
    if tracker.max_metadata_len < 0:
        problems.append(("engagement_tracker.max_metadata_len", "must not be negative"))
    for index, network in enumerate(tracker.trusted_proxies):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as error:
            problems.append((f"engagement_tracker.trusted_proxies[{index}]", str(error)))
    if tracker.geoip_database and not Path(tracker.geoip_database).is_file():
        problems.append(("engagement_tracker.geoip_database", f"file not found: {tracker.geoip_database}"))
    for key in ("tls_cert", "tls_key"):
        value = getattr(tracker, key)
        if value and not Path(value).is_file():
            problems.append((f"engagement_tracker.{key}", f"file not found: {value}"))
    if tracker.tls_key and not tracker.tls_cert:
        problems.append(("engagement_tracker.tls_key", "needs tls_cert"))
    elif _tls_files_exist(tracker.tls_cert, tracker.tls_key):
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tracker.tls_cert,
                                                                                tracker.tls_key or None)
        except (OSError, ssl.SSLError) as error:
            problems.append(("engagement_tracker.tls_cert", f"cannot load the certificate and key: {error}"))
    for key in ("header_timeout", "idle_timeout", "max_connections"):
        if getattr(tracker, key) <= 0:
            problems.append((f"engagement_tracker.{key}", "must be positive"))
    for index, script in enumerate(config.policy.scripts):
        if not Path(script).is_file():
            problems.append((f"policy.scripts[{index}]", f"file not found: {script}"))
    if config.delivery.mode == "relay":
        if not config.delivery.relay:
            problems.append(("delivery.relay", 'required when delivery.mode = "relay"'))
        else:
            _check_hostport(problems, "delivery.relay", config.delivery.relay)
    delivery = config.delivery
    for key in ("max_attempt_age", "connect_timeout", "command_timeout", "retry_base", "workers",
                "max_connections", "max_connections_per_destination"):
        if getattr(delivery, key) <= 0:
            problems.append((f"delivery.{key}", "must be a positive number"))
    for index, server in enumerate(delivery.dns_servers):
        try:
            ipaddress.ip_address(server.rsplit(":", 1)[0].strip("[]") if server.count(":") == 1 or "]" in server
                                 else server)
        except ValueError:
            problems.append((f"delivery.dns_servers[{index}]", f"expected an IP address or ip:port, got {server!r}"))
    if delivery.source_address:
        try:
            ipaddress.ip_address(delivery.source_address)
        except ValueError:
            problems.append(("delivery.source_address", f"expected an IP address, got {delivery.source_address!r}"))
    if bool(delivery.relay_username) != bool(delivery.relay_password):
        problems.append(("delivery.relay_username", "relay_username and relay_password must be set together"))
    store = config.events.store
    if store != "sqlite" and not store.startswith(("postgresql://", "postgres://")):
        problems.append(("events.store", 'expected "sqlite" or a postgresql:// DSN'))
    _check_hostport(problems, "api.listen", config.api.listen)
    workers = config.server.workers
    if workers != "auto" and not 1 <= workers <= MAX_WORKERS:
        problems.append(("server.workers", f'must be "auto" or a number from 1 to {MAX_WORKERS}'))
    for index, hook in enumerate(config.webhooks):
        if not hook.target.startswith(("http://", "https://")):
            problems.append((f"webhooks[{index}].target", "must be an http:// or https:// URL"))
    problems.extend(webhook_entry_problems(config.webhooks))
    problems.extend(dkim_entry_problems(config.dkim))
    problems.extend(_check_bus(config.bus))
    problems.extend(role_problems(config))
    return problems


def _check_bus(bus: BusConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for index, server in enumerate(bus.servers):
        if not server.startswith(("nats://", "tls://")):
            problems.append((f"bus.servers[{index}]", f"expected a nats:// or tls:// URL, got {server!r}"))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", bus.stream):
        problems.append(("bus.stream", "letters, digits, - and _ only"))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", bus.consumer):
        problems.append(("bus.consumer", "letters, digits, - and _ only"))
    if not 1 <= bus.replicas <= 5:
        problems.append(("bus.replicas", "must be from 1 to 5"))
    if not -1 <= bus.node_id <= MAX_NODE_ID:
        problems.append(("bus.node_id", f"must be from 0 to {MAX_NODE_ID} (or -1: random, one node only)"))
    for key in ("publish_timeout", "duplicate_window", "ack_wait"):
        if getattr(bus, key) <= 0:
            problems.append((f"bus.{key}", "must be a positive number"))
    if bool(bus.tls_cert) != bool(bus.tls_key):
        problems.append(("bus.tls_cert", "tls_cert and tls_key must be set together"))
    for key in ("tls_ca", "tls_cert", "tls_key", "credentials"):
        value = getattr(bus, key)
        if value and not Path(value).is_file():
            problems.append((f"bus.{key}", f"{value}: file not found"))
    if bus.credentials and (bus.user or bus.token):
        problems.append(("bus.credentials", "credentials, user/password and token are alternatives: set one"))
    return problems


def role_problems(config: Config) -> list[tuple[str, str]]:
    """Why this node cannot serve its role set ([server] roles or `--role`); empty when it can."""
    roles = config.server.roles
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        return [("server.roles", f"expected some of {', '.join(ROLES)}, got {', '.join(roles) or 'none'}")]
    if set(roles) == set(ROLES):
        if config.bus.servers and config.server.workers != "auto" and config.server.workers > MAX_BUS_WORKERS:
            return [("server.workers", f"at most {MAX_BUS_WORKERS} with a [bus] (event ids carry the process)")]
        return []
    named = ",".join(roles)
    problems: list[tuple[str, str]] = []
    if config.events.store == "sqlite":
        problems.append(("server.roles", f"a node with roles {named} shares its work with other nodes: it needs "
                                         "a shared store ([events] store = a postgresql:// DSN), not SQLite in "
                                         "data_dir"))
    if config.bus.node_id < 0:
        problems.append(("bus.node_id", f"a node with roles {named} needs its own node_id (0-{MAX_NODE_ID}, "
                                        "distinct per node): event ids carry it"))
    workers = config.server.workers
    if workers != "auto" and workers > MAX_BUS_WORKERS:
        problems.append(("server.workers", f"at most {MAX_BUS_WORKERS} on a node of several (event ids carry the "
                                           "process)"))
    return problems


def _check_smtpapi(prefix: str, settings: SmtpapiSettings | SmtpapiOverride) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key in ("open_tracking_scheme", "click_tracking_scheme"):
        value = getattr(settings, key)
        if value is not None and value.lower() not in ("http", "https"):
            problems.append((f"{prefix}.{key}", f"must be http or https, got {value!r}"))
    domain = settings.tracking_domain
    if domain is not None and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?", domain):
        problems.append((f"{prefix}.tracking_domain", f"must be host or host:port, got {domain!r}"))
    return problems


def _check_hostport(problems: list[tuple[str, str]], key: str, value: str) -> None:
    try:
        parse_hostport(value)
    except ValueError as error:
        problems.append((key, str(error)))


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, so taskset and cgroup pinning count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def worker_count(config: Config, override: int | None = None) -> int:
    """How many worker processes `engaged serve` runs: `override` (--workers), else [server] workers."""
    if override is not None:
        return override
    workers = config.server.workers
    return min(cpu_count(), MAX_WORKERS) if workers == "auto" else workers


def effective_smtpapi(config: Config, listen: str | None) -> SmtpapiSettings:
    """[smtpapi] with the listener's overrides applied (listener > global > built-in default)."""
    base = config.smtpapi
    override = config.smtp.overrides.get(listen or "")
    if override is None:
        return base
    changes = {f: v for f in SmtpapiOverride.__struct_fields__ if (v := getattr(override, f)) is not None}
    return msgspec.structs.replace(base, **changes)


def render_config(config: Config) -> str:
    """The effective configuration as TOML-like text for `engaged check-config` (secrets masked)."""
    data = msgspec.to_builtins(config)
    for user in data["smtp"]["users"]:
        user["password_hash"] = "***"
    data["api"]["keys"] = ["***" for _ in data["api"]["keys"]]
    if data["delivery"]["relay_password"]:
        data["delivery"]["relay_password"] = "***"
    for hook in data["webhooks"]:
        if hook.get("auth_token"):
            hook["auth_token"] = "***"
        if hook.get("auth_credentials"):
            hook["auth_credentials"] = {key: "***" for key in hook["auth_credentials"]}
    return _to_toml(data)


def _to_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, value in tables:
        if isinstance(value, list):
            for item in value:
                lines.append(f"\n[[{name}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
            continue
        lines.append(f"\n[{name}]")
        nested = []
        for key, item in value.items():
            if isinstance(item, dict) or (isinstance(item, list) and item and all(isinstance(i, dict) for i in item)):
                nested.append((key, item))
            else:
                lines.append(f"{key} = {_toml_value(item)}")
        for key, item in nested:
            if isinstance(item, list):
                for entry in item:
                    lines.append(f"\n[[{name}.{key}]]")
                    lines.extend(f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None)
            else:
                for sub, entry in item.items():
                    lines.append(f'\n[{name}.{key}."{sub}"]')
                    lines.extend(f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None)
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return msgspec.json.encode(str(value)).decode()
