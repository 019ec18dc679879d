"""Active health checks: probes sent to each target of an upstream on Kong's intervals.

Healthy targets are probed every `healthy.interval` seconds, unhealthy ones every
`unhealthy.interval` (0 switches that half off); each probe's outcome is counted by the target's
TargetHealth with the active thresholds. A probe is a TCP connect (`type: tcp`) or a GET of
`http_path` whose status decides (`http`, `https`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

from fastgw.balancer.health import HTTP_FAILURE, SUCCESS, TCP_FAILURE, TIMEOUT, ActiveCheck
from fastgw.http.tls import upstream_context
from fastgw.proxy.targets import UpstreamTarget

log = logging.getLogger("fastgw.balancer")

# A probe's response head larger than this is a failure (a health endpoint answers briefly).
MAX_PROBE_HEAD = 16 * 1024


class ActiveChecker:
    """Runs one upstream's probes until stopped."""

    def __init__(self, upstream_name: str, targets: Sequence[UpstreamTarget], check: ActiveCheck):
        self.upstream_name = upstream_name
        self.targets = tuple(targets)
        self.check = check
        self._tasks: list[asyncio.Task[None]] = []
        self._semaphore: asyncio.Semaphore | None = None
        self._ssl: ssl.SSLContext | None = None
        if check.check_type == "https":
            self._ssl = upstream_context(check.https_verify_certificate)

    def start(self) -> None:
        self._semaphore = asyncio.Semaphore(self.check.concurrency)
        if self.check.healthy_interval:
            self._tasks.append(asyncio.ensure_future(self._loop(True)))
        if self.check.unhealthy_interval:
            self._tasks.append(asyncio.ensure_future(self._loop(False)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, healthy: bool) -> None:
        check = self.check
        interval = check.healthy_interval if healthy else check.unhealthy_interval
        while True:
            await asyncio.sleep(interval)
            due = [target for target in self.targets if target.health.healthy == healthy]
            if due:
                await asyncio.gather(*(self._probe_bounded(target) for target in due))

    async def _probe_bounded(self, target: UpstreamTarget) -> None:
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                outcome = await self.probe(target)
            except Exception:  # a probe must never stop the checker
                log.exception("active health check of %s failed", target.name)
                outcome = TCP_FAILURE
        if outcome >= 0:
            target.report_active(outcome, self.check.thresholds)

    async def probe(self, target: UpstreamTarget) -> int:
        """One probe's outcome (health.SUCCESS, HTTP_FAILURE, TCP_FAILURE, TIMEOUT), or -1
        for a status the thresholds do not count."""
        check = self.check
        pool = target.pool
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(check.timeout):
                reader, writer = await asyncio.open_connection(
                    pool.host,
                    pool.port,
                    ssl=self._ssl,
                    server_hostname=(check.https_sni or pool.host) if self._ssl else None,
                )
                if check.check_type == "tcp":
                    return SUCCESS
                lines = [f"GET {check.http_path} HTTP/1.1", f"Host: {target.host_header.decode()}"]
                lines += [f"{name}: {value}" for name, value in check.headers]
                lines += ["Connection: close", "", ""]
                writer.write("\r\n".join(lines).encode("latin-1"))
                status_line = await reader.readline()
        except TimeoutError:
            return TIMEOUT
        except (OSError, ssl.SSLError, EOFError):
            return TCP_FAILURE
        finally:
            if writer is not None:
                writer.close()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return HTTP_FAILURE
        outcome = check.thresholds.outcome_of_status(int(parts[1]))
        return outcome
