"""The chaos run's clients: threads storing, forgetting and listing memories of many agents through
random nodes with the ``dakera`` SDK, every call recorded in a :class:`~tests.chaos.history.History`.

Each thread is one client (a Jepsen process): one SDK client per node URL, no retries (the SDK's
``max_retries=1`` is one attempt), a short timeout, so that every call is one request whose outcome
is known or marked unknown. Contents are unique (``c{client}-{n}``), so the checker can find a
store whose answer never came. A client forgets only memories it stored and saw acknowledged, each
once. After the run, :meth:`Workload.final_reads` lists every agent through every node.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from dakera import DakeraClient, DakeraError
from dakera.exceptions import TimeoutError as SdkTimeout

from .history import History

#: a listing page: the most the node answers at once (validation.parse_listing)
PAGE = 1000

#: 503 answers that the node gives before doing any work (README "Replication" and the routes'
#: refusals): the request changed nothing, so the operation definitely failed. Any other 503 (a
#: write durable on the primary that did not reach its copies in time, an owner that did not
#: answer a forward) may have been applied: indeterminate.
NOTHING_DONE_503 = (
    "node is not ready",  # still starting, storage being recovered, no shard map yet
    "requests, its limit",  # DAKERA_MAX_CONCURRENT_REQUESTS: shed before reading the body
    "too many open connections",  # DAKERA_MAX_CONNECTIONS: refused at accept
    "rejects client requests",  # maintenance with reject_requests
    "being taken over by this node",  # waits for the takeover, then refuses before executing
    "is moving to or from this node",  # the owner refuses the write before logging it
    "retry once the map moves the shard",  # the owner is known down: nothing was forwarded
    "shard maps disagree",  # refused instead of forwarding once more
    "no shard map yet",
)


def classify(exc: BaseException) -> tuple[str, str]:
    """An SDK error's outcome: ``fail`` (nothing done: a 4xx, a 503 refused before any work, or no
    connection made) or ``info`` (anything that may have been applied), and a short description."""
    if isinstance(exc, DakeraError) and exc.status_code is not None:
        text = f"{exc.status_code} {exc.message}"
        if 400 <= exc.status_code < 500:
            return "fail", text
        if exc.status_code == 503 and any(marker in exc.message for marker in NOTHING_DONE_503):
            return "fail", text
        return "info", text
    if isinstance(exc, SdkTimeout):
        return "info", f"timeout: {exc.message}"
    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout) or (
            isinstance(cause, requests.exceptions.ConnectionError) and cause.args
            and isinstance(getattr(cause.args[0], "reason", None), urllib3.exceptions.NewConnectionError)):
        return "fail", f"no connection: {type(cause).__name__}"
    return "info", f"{type(exc).__name__}: {exc}"


class Workload:
    """``clients`` threads against the nodes ``urls()`` names (asked before every operation, so
    the runner can change them: a node killed, a node joined). Mix: ~50% store, ~20% forget,
    ~30% read of the agent's listing; agents ``agent-0`` .. ``agent-{agents-1}``."""

    def __init__(self, urls: Callable[[], list[str]], agents: int, clients: int, history: History,
                 seed: int, api_key: str | None = None, *, timeout: float = 5.0, think: float = 0.0) -> None:
        self.urls = urls
        self.agents = [f"agent-{i}" for i in range(agents)]
        self.clients = clients
        self.history = history
        self.seed = seed
        self.api_key = api_key
        self.timeout = timeout
        self.think = think  # seconds a client waits between two operations
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[tuple[int, BaseException]] = []
        self._lock = threading.Lock()

    # -- running -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        for client in range(self.clients):
            thread = threading.Thread(target=self._guarded, args=(client,), name=f"chaos-client-{client}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every client and wait for it (its call in flight ends within the SDK timeout).
        Raises if a client thread died of anything but its recorded operations' errors."""
        self._stop.set()
        limit = timeout if timeout is not None else self.timeout * 2 + 5
        end = time.monotonic() + limit
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        self._threads = [t for t in self._threads if t.is_alive()]
        with self._lock:
            errors = list(self._errors)
        if errors:
            client, exc = errors[0]
            raise RuntimeError(f"{len(errors)} chaos client(s) crashed; client {client}: {exc!r}") from exc
        if stuck:
            raise RuntimeError(f"chaos clients still running {limit}s after stop: {stuck}")

    def _guarded(self, client: int) -> None:
        try:
            self._run(client)
        except BaseException as exc:  # noqa: BLE001 - kept and raised by stop()
            with self._lock:
                self._errors.append((client, exc))

    def _client(self, sdk: dict[str, DakeraClient], url: str) -> DakeraClient:
        if url not in sdk:
            sdk[url] = DakeraClient(url, api_key=self.api_key, timeout=self.timeout, max_retries=1)
        return sdk[url]

    def _run(self, client: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + client)
        sdk: dict[str, DakeraClient] = {}
        acked: list[tuple[str, str]] = []  # (agent, memory id) stored by this client, not yet forgotten
        stored = 0
        try:
            while not self._stop.is_set():
                urls = self.urls()
                if not urls:
                    self._stop.wait(0.1)
                    continue
                url = rng.choice(urls)
                roll = rng.random()
                if roll < 0.2 and acked:
                    agent, mid = acked.pop(rng.randrange(len(acked)))
                    if self._forget(client, self._client(sdk, url), url, agent, mid) == "fail":
                        acked.append((agent, mid))  # definitely not forgotten: may be tried again
                elif roll < 0.5:
                    self._read(client, self._client(sdk, url), url, rng.choice(self.agents))
                else:
                    agent = rng.choice(self.agents)
                    new = self._store(client, self._client(sdk, url), url, agent, f"c{client}-{stored}")
                    stored += 1
                    if new is not None:
                        acked.append((agent, new))
                if self.think:
                    self._stop.wait(self.think)
        finally:
            for each in sdk.values():
                each.close()

    # -- one operation each ---------------------------------------------------------------
    def _store(self, client: int, sdk: DakeraClient, url: str, agent: str, content: str) -> str | None:
        index = self.history.invoke(client, "store", agent, content, url)
        try:
            memory = sdk.store_memory(agent, content)
        except Exception as exc:  # noqa: BLE001 - every error is an outcome
            outcome, error = classify(exc)
            self.history.complete(index, outcome, error=error)
            return None
        mid = memory.get("id") if isinstance(memory, dict) else None
        if not isinstance(mid, str):
            self.history.complete(index, "info", error=f"answer without a memory id: {memory!r:.200}")
            return None
        self.history.complete(index, "ok", mid)
        return mid

    def _forget(self, client: int, sdk: DakeraClient, url: str, agent: str, mid: str) -> str:
        index = self.history.invoke(client, "forget", agent, mid, url)
        try:
            answer = sdk.forget(agent, mid)
        except Exception as exc:  # noqa: BLE001 - every error is an outcome
            outcome, error = classify(exc)
            self.history.complete(index, outcome, error=error)
            return outcome
        deleted = answer.get("memory_ids") if isinstance(answer, dict) else None
        self.history.complete(index, "ok", [str(d) for d in deleted] if isinstance(deleted, list) else None)
        return "ok"

    def _read(self, client: int, sdk: DakeraClient, url: str, agent: str) -> None:
        index = self.history.invoke(client, "read", agent, None, url)
        try:
            page = sdk.agent_memories(agent, limit=PAGE)
            found = self.history.intern(pairs(page))
        except Exception as exc:  # noqa: BLE001 - every error is an outcome
            # a read changes nothing: whatever went wrong, it did not happen
            self.history.complete(index, "fail", error=classify(exc)[1])
            return
        self.history.complete(index, "ok", found, truncated=len(found) >= PAGE)

    # -- after the run ---------------------------------------------------------------------
    def final_reads(self, urls: list[str], deadline: float = 60.0) -> dict[str, dict[str, list[tuple[str, str]]]]:
        """Every agent's whole listing through every url (``/v1/agents/{id}/memories``, pages of
        1000), each retried until it answers within ``deadline`` seconds (for all of them)."""
        end = time.monotonic() + deadline
        out: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for url in urls:
            with DakeraClient(url, api_key=self.api_key, timeout=self.timeout, max_retries=1) as sdk:
                out[url] = {agent: self._listing(sdk, url, agent, end) for agent in self.agents}
        return out

    def _listing(self, sdk: DakeraClient, url: str, agent: str, end: float) -> list[tuple[str, str]]:
        last: BaseException | None = None
        while time.monotonic() < end:
            try:
                found: list[tuple[str, str]] = []
                while True:
                    page = sdk.agent_memories(agent, limit=PAGE, offset=len(found))
                    found += pairs(page)
                    if len(page) < PAGE:
                        return found
            except DakeraError as exc:
                last = exc
                time.sleep(0.2)  # retrying a node still recovering: not a wait for a test condition
        raise RuntimeError(f"final read of {agent} through {url} did not answer within the deadline: {last!r}")


def pairs(page: Any) -> list[tuple[str, str]]:
    """A listing's ``(memory id, content)`` pairs (the SDK returns the node's list as it is)."""
    if not isinstance(page, list):
        raise TypeError(f"a memory listing is a list, got {type(page).__name__}")
    return [(str(m["id"]), str(m["content"])) for m in page]
