"""Command line: serve, check-config, events, keys rotate, dkim keygen, hash-password."""

from __future__ import annotations

import asyncio
import getpass
import logging
import signal
import sys
from types import FrameType
from typing import ClassVar

import click

from engaged.config import (
    MAX_BUS_WORKERS,
    MAX_WORKERS,
    ROLES,
    Config,
    load_config,
    render_config,
    role_problems,
    worker_count,
)
from engaged.errors import ConfigError
from engaged.events.model import EVENT_TYPES
from engaged.events.wire import api_json
from engaged.timestamps import parse_moment
from engaged.types import EventQuery

_config_option = click.option("--config", "config_path", default=None, metavar="FILE",
                              help="TOML configuration (default: ./engaged.toml if present, else built-ins).")


def _load(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as error:
        for line in error.problems:
            click.echo(line, err=True)
        sys.exit(2)


class _EscapingFormatter(logging.Formatter):
    """Log lines with control characters escaped, so bytes a client sent cannot forge or garble lines."""

    _CONTROL: ClassVar[dict[int, str]] = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if c not in (9, 10)}

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(self._CONTROL)


def _exit_before_start(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@click.group()
@click.version_option(package_name="engaged")
def main() -> None:
    """engaged: SMTP injection with SparkPost-style engagement tracking."""


@main.command()
@_config_option
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None, metavar="N",
              help="Worker processes (default: [server] workers, \"auto\" = one per CPU).")
@click.option("--role", "roles", default=None, metavar="ROLES",
              help=f"Comma-separated roles of this node, any of {','.join(ROLES)} (default: [server] roles, all).")
def serve(config_path: str | None, workers: int | None, roles: str | None) -> None:
    """Run every configured component until SIGTERM/SIGINT."""
    # Until the event loop takes the signals over (the first thing the supervisor does), nothing has started that
    # needs draining: a SIGTERM or SIGINT then ends the process cleanly instead of with the default disposition.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_before_start)
    config = _with_roles(_load(config_path), roles)
    logging.basicConfig(level=logging.INFO, format="engaged: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_EscapingFormatter("engaged: %(message)s"))
    for noisy in ("mail.log", "uvicorn.access", "uvicorn.error", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from engaged.server.supervisor import run

    sys.exit(run(config, _workers(config, workers)))


def _with_roles(config: Config, roles: str | None) -> Config:
    """The config with `--role` applied; exits 2 with the reason when the node cannot serve that role set."""
    import msgspec

    if roles is not None:
        names = [name.strip() for name in roles.split(",") if name.strip()]
        config = msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, roles=names))
    problems = role_problems(config)
    for key, reason in problems:
        click.echo(f"{'--role' if roles is not None and key == 'server.roles' else key}: {reason}", err=True)
    if problems:
        sys.exit(2)
    return config


def _workers(config: Config, override: int | None) -> int:
    """Worker processes: none on a node without smtp and tracker; at most MAX_BUS_WORKERS with a bus or node_id."""
    roles = config.server.roles
    if "smtp" not in roles and "tracker" not in roles:
        return 0
    count = worker_count(config, override)
    if config.bus.servers or config.bus.node_id >= 0:
        if override is not None and override > MAX_BUS_WORKERS:
            click.echo(f"--workers: at most {MAX_BUS_WORKERS} with a [bus] or node_id (event ids carry the process)",
                       err=True)
            sys.exit(2)
        count = min(count, MAX_BUS_WORKERS)
    return count


@main.command("tracker-loader", hidden=True)
def tracker_loader() -> None:
    """The tracker journal loader of `engaged serve` (its Config as JSON on stdin); stops on SIGTERM."""
    import msgspec
    import uvloop

    config = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
    logging.basicConfig(level=logging.INFO, format="engaged: %(message)s", stream=sys.stderr)
    from engaged.tracker.loader import run_process

    uvloop.run(run_process(config))


@main.command("check-config")
@_config_option
def check_config(config_path: str | None) -> None:
    """Validate the configuration and print the effective settings."""
    config = _load(config_path)
    from engaged.policy.engine import PolicyEngine
    from engaged.sinks.dispatch import target_problems
    from engaged.sinks.guard import parse_networks

    networks = parse_networks(config.api.webhook_private_networks)
    problems: list[str] = list(asyncio.run(target_problems(config.webhooks, networks)))
    try:
        PolicyEngine.load(config.policy.scripts).close()
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        for line in problems:
            click.echo(line, err=True)
        sys.exit(2)
    click.echo(render_config(config), nl=False)


def _parse_since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 time or epoch seconds: {value}") from None


@main.command()
@_config_option
@click.option("--type", "types", multiple=True, type=click.Choice(EVENT_TYPES), help="Only these types.")
@click.option("--since", default=None, help="Only events at or after this time (ISO-8601 or epoch).")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--follow", is_flag=True, help="Keep printing new events as they are stored.")
def events(config_path: str | None, types: tuple[str, ...], since: str | None, limit: int, follow: bool) -> None:
    """Print stored events, one JSON object a line, oldest first, as the Events API shows them (ISO timestamps)."""
    config = _load(config_path)
    asyncio.run(_print_events(config, types, _parse_since(since), limit, follow))


async def _print_events(config: Config, types: tuple[str, ...], since: float | None, limit: int,
                        follow: bool) -> None:
    from engaged.app import build_store

    store = build_store(config)
    await store.open()
    try:
        after = 0
        printed = 0
        while True:
            batch = await store.query(EventQuery(types=types, since=since, after_seq=after,
                                                 limit=min(limit - printed, 1000) if not follow else 1000))
            for stored in batch:
                sys.stdout.write(api_json(stored.event).decode() + "\n")  # as the Events API shows it
                after = stored.seq
            printed += len(batch)
            sys.stdout.flush()
            if not follow and (not batch or printed >= limit):
                return
            if follow and not batch:
                await asyncio.sleep(0.25)
    except KeyboardInterrupt:
        return
    finally:
        await store.close()


@main.group()
def keys() -> None:
    """Link-signing keys."""


@keys.command("rotate")
@_config_option
def keys_rotate(config_path: str | None) -> None:
    """Add a new link-signing key and make it current; older keys keep verifying."""
    config = _load(config_path)
    from engaged.keys import rotate_key

    key_id = rotate_key(config.data_path)
    click.echo(f"current signing key is now {key_id}")


@main.group()
def dkim() -> None:
    """DKIM signing keys."""


@dkim.command("keygen")
@click.option("--domain", required=True, help="The signing domain (d=), e.g. example.com.")
@click.option("--selector", required=True, help="The selector (s=), e.g. s2026.")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True)
@click.option("--bits", type=click.IntRange(2048, 8192), default=2048, show_default=True, help="RSA key size.")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to write DOMAIN.SELECTOR.key (private, mode 0600) and DOMAIN.SELECTOR.pub.")
def dkim_keygen(domain: str, selector: str, algorithm: str, bits: int, directory: str) -> None:
    """Write a new key pair and print the DNS TXT record that publishes it."""
    import os
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization

    from engaged.dkim_keys import generate_key, read_private_key, txt_record

    domain = domain.lower().rstrip(".")
    base = Path(directory) / f"{domain}.{selector}"
    private, public = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise click.ClickException(f"{path} exists; not overwriting it")
    pem = generate_key(algorithm, bits)
    Path(directory).mkdir(parents=True, exist_ok=True)
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    material = read_private_key(str(private))
    if isinstance(material, str):
        raise click.ClickException(material)
    key = serialization.load_pem_private_key(pem, password=None)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    name, strings = txt_record(domain, selector, material)
    click.echo(f"{name} IN TXT ( " + " ".join(f'"{part}"' for part in strings) + " )")
    click.echo(f"wrote {private} (private, 0600) and {public}; add to engaged.toml:\n\n[[dkim]]\n"
               f'domain = "{domain}"\nselector = "{selector}"\nprivate_key = "{private.resolve()}"', err=True)


@main.command("hash-password")
@click.option("--password", default=None, help="The password (default: prompt).")
def hash_password_cmd(password: str | None) -> None:
    """Print a password_hash for [[smtp.users]]."""
    from engaged.smtp.auth import hash_password

    secret = password if password is not None else getpass.getpass("Password: ")
    click.echo(hash_password(secret))


