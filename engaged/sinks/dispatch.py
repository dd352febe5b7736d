"""Runs one WebhookWorker per stored webhook and merges the [[webhooks]] config into the webhook table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from engaged.config import WebhookConfig
from engaged.errors import ConfigError
from engaged.prometheus import Metrics
from engaged.sinks.guard import Networks, check_target
from engaged.sinks.oauth import TokenCache
from engaged.sinks.signing import new_secret
from engaged.sinks.webhooks import WebhookWorker
from engaged.types import WebhookOutbox
from engaged.webhook_rules import config_webhook_id, entry_problems, record_from_config

log = logging.getLogger("engaged")

SYNC_INTERVAL = 5.0
"""How often the table is re-read, so webhooks created or deleted by other processes are picked up."""
async def target_problems(hooks: Sequence[WebhookConfig], networks: Networks = ()) -> list[str]:
    """`webhooks[i].target: reason` for every [[webhooks]] target that resolves to an address it may not reach.

    A host that does not resolve at startup is accepted (every connection checks it again), so a DNS
    hiccup cannot stop the server; one that resolves to a refused address is an error.
    """
    problems: list[str] = []
    for index, hook in enumerate(hooks):
        refused = await check_target(hook.target, hook.allow_private_targets, unresolved_ok=True, networks=networks)
        if refused is not None:
            problems.append(f"webhooks[{index}].target: {refused}")
    return problems


async def config_problems(hooks: Sequence[WebhookConfig], networks: Networks = ()) -> list[str]:
    """Every problem of [[webhooks]]: load_config's (engaged.webhook_rules) and the targets' addresses."""
    return [f"{key}: {reason}" for key, reason in entry_problems(hooks)] + await target_problems(hooks, networks)


class WebhookDispatcher:
    """Starts and stops workers as webhooks appear in and vanish from the store."""

    def __init__(self, store: WebhookOutbox, metrics: Metrics, owner: str, networks: Networks = ()) -> None:
        self._store = store
        self._networks = networks
        self._tokens = TokenCache()
        self._metrics = metrics
        self._owner = owner
        self._workers: dict[str, tuple[WebhookWorker, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def merge_config(self, hooks: Sequence[WebhookConfig]) -> None:
        """Store the configured webhooks (secret and cursor kept) and drop configured ones no longer listed.

        Raises ConfigError, before changing anything, when an entry is invalid (load_config refuses those
        already; its targets' addresses are checked by target_problems before the API binds).
        """
        problems = [f"{key}: {reason}" for key, reason in entry_problems(hooks)]
        if problems:
            raise ConfigError(problems)
        existing = {row.record.id: row for row in await self._store.webhooks()}
        wanted: set[str] = set()
        for hook in hooks:
            previous = existing.get(config_webhook_id(hook.name))
            record = record_from_config(hook, previous.record.created if previous else time.time())
            wanted.add(record.id)
            await self._store.put_webhook(record, previous.secret if previous else new_secret())
        for webhook_id, row in existing.items():
            if row.record.source == "config" and webhook_id not in wanted:
                await self._store.delete_webhook(webhook_id)
                log.info("webhook %s: removed from the configuration, deleted", row.record.name)

    async def start(self) -> None:
        await self._sync()
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    def refresh(self) -> None:
        """Re-read the webhook table now (after a change made through the API)."""
        self._wake.set()

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SYNC_INTERVAL)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                await self._sync()
            except Exception:  # a store outage: keep the running workers, try again later
                log.exception("webhooks: cannot read the webhook table")

    async def _sync(self) -> None:
        ids = {row.record.id for row in await self._store.webhooks()}
        for webhook_id in ids - self._workers.keys():
            worker = WebhookWorker(webhook_id, self._store, self._metrics, self._owner, networks=self._networks,
                                   tokens=self._tokens)
            self._workers[webhook_id] = (worker, asyncio.get_running_loop().create_task(worker.run()))
        for webhook_id in self._workers.keys() - ids:
            worker, task = self._workers.pop(webhook_id)
            worker.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self, grace: float = 1.0) -> None:
        """Stop every worker (an attempt still running after `grace` is abandoned and resent later), release leases."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        workers, self._workers = self._workers, {}
        for worker, _ in workers.values():
            worker.stop()
        tasks = [task for _, task in workers.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for webhook_id in workers:
            with contextlib.suppress(Exception):
                await self._store.release_webhook(webhook_id, self._owner)
