"""InboundService: binds every [inbound] listen address on the SMTP engine and runs the processor."""

from __future__ import annotations

import socket

from engaged.config import Config
from engaged.events.ids import EventIdGenerator
from engaged.inbound.handler import InboundHandler
from engaged.inbound.processor import InboundProcessor, Outcome
from engaged.inbound.spool import InboundSpool
from engaged.smtp.gate import ConnectionGate
from engaged.smtp.listener import Listener, Servers
from engaged.smtp.protocol import Settings
from engaged.tokens import SigningKeys
from engaged.types import EventLog


def inbound_domains(config: Config) -> tuple[str, ...]:
    """The domains the inbound listener receives for: the bounce domain, then [inbound] domains."""
    inbound = config.inbound
    return tuple(domain.lower() for domain in (inbound.bounce_domain, *inbound.domains) if domain)


class InboundService:
    """The listener for mail sent back to engaged; `addresses` are (configured, bound) pairs after start."""

    def __init__(self, config: Config, store: EventLog, keys: SigningKeys, *, ids: EventIdGenerator,
                 outcome: Outcome | None = None) -> None:
        self._config = config
        self.spool = InboundSpool(config.data_path / "inbound")
        domains = inbound_domains(config)
        self.processor = InboundProcessor(self.spool, store, keys, domains, ids=ids, outcome=outcome,
                                          wait_for_copy=config.inbound.wait_for_copy)
        self._handler = InboundHandler(self.spool, self.processor, domains,
                                       max_recipients=config.inbound.max_recipients)
        smtp = config.smtp
        self._gate = ConnectionGate(smtp.max_connections, smtp.max_connections_per_ip,
                                    reserved=smtp.reserved_connections, max_idle_per_ip=smtp.max_idle_per_ip)
        self._listening = Servers()

    async def start(self) -> None:
        if not self._config.inbound.listen:
            return
        self.spool.open()
        await self.processor.start()
        smtp, inbound = self._config.smtp, self._config.inbound
        settings = Settings(hostname=smtp.hostname or socket.getfqdn(), max_message_size=inbound.max_message_size,
                            max_commands=smtp.max_commands, max_errors=smtp.max_errors, tls_available=False,
                            auth=False)
        for listen in inbound.listen:
            shared = Listener(self._handler, self._gate, settings=settings, tls=None,
                              command_timeout=smtp.command_timeout, first_command_timeout=smtp.first_command_timeout,
                              data_timeout=smtp.data_timeout, name=f"inbound {listen}")
            await self._listening.open(shared, listen)

    @property
    def addresses(self) -> list[tuple[str, str]]:
        """(configured, bound) address pairs, after start."""
        return self._listening.addresses

    async def stop(self) -> None:
        await self._listening.close()
        await self.processor.stop()
