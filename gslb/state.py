"""The site-state table: regional check results and operator overrides -> an immutable StateView.

INTERFACE STUB (to be implemented): the signatures below are the contract between the health
monitor, the DNS path, the HTTP API and the state backends (memory, Redis). Keep them.

- Writers: the health monitor (``report``) and the HTTP API (``set_override``).
- Readers: the DNS path reads ``table.view`` once per query (an attribute read, no call, no
  lock: one event loop); the view is replaced as a whole whenever anything changes, and its
  ``version`` grows, so per-(pool, client network, version) decision caches stay correct.
- Backends store and share results/overrides; the table aggregates (staleness, which sites
  exist, unchecked sites) and builds views. Quorum is per pool, so the view carries the fresh
  regional results and ``SiteStatus.state(quorum)`` decides.
"""

from __future__ import annotations

from typing import Callable, Protocol

from gslb.model import Override, RegionResult, StateView, ZoneSet

#: key of one site in the table: (zone key, site name)
SiteKey = tuple[str, str]


class StateBackend(Protocol):
    """Where results and overrides live: process memory, or Redis shared by a cluster."""

    url: str

    @property
    def connected(self) -> bool:
        """Whether the shared table is reachable now (always True in memory)."""

    async def start(self, on_change: Callable[[], None]) -> None:
        """Connect (never raise for an unreachable store: retry with backoff in the background).

        ``on_change`` is called whenever results or overrides may have changed, including on
        connect/disconnect and after each full resynchronisation.
        """

    async def close(self) -> None:
        """Disconnect and stop background tasks."""

    async def put_result(self, key: SiteKey, region: str, result: RegionResult) -> None:
        """Store one region's result for a site (kept at least result.stale_after seconds)."""

    async def put_override(self, key: SiteKey, state: Override | None) -> None:
        """Store (or with None remove) an operator override; durable."""

    def results(self) -> dict[SiteKey, dict[str, RegionResult]]:
        """The latest results known to this node (last known when disconnected)."""

    def overrides(self) -> dict[SiteKey, Override]:
        """The overrides known to this node (last known when disconnected)."""
