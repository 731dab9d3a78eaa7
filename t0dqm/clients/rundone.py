"""Client of the Tier-0 Data Service ``run_stream_done`` method.

GET ``<url>?run=<run>&stream=<stream>``; only a 200 reply whose JSON is exactly ``{"result": [true]}``
means done. Anything else (false, another shape, 1 instead of true, HTTP error, timeout, bad JSON)
means not done. Answers are cached for ``cache_ttl`` seconds (300); lookups of many pairs run with
bounded concurrency.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from t0dqm.formats.streamer_names import RUN_RE, STREAM_RE

log = logging.getLogger(__name__)


def is_done_reply(body: bytes | str) -> bool:
    """True only for the exact JSON ``{"result": [true]}``."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(obj, dict) or set(obj) != {"result"}:
        return False
    result = obj["result"]
    return isinstance(result, list) and len(result) == 1 and result[0] is True


class RunStreamDone:
    """Cached, thread-safe run_stream_done client."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        cache_ttl: float = 300.0,
        max_workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        max_body: int = 1 << 16,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"run_stream_done URL must be http(s)://, got {url!r}")
        self.url = url
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.max_workers = max(1, int(max_workers))
        self.clock = clock
        self.max_body = max_body
        self._cache: dict[tuple[int, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0

    def _query(self, run: int, stream: str) -> bool:
        sep = "&" if "?" in self.url else "?"
        url = f"{self.url}{sep}{urllib.parse.urlencode({'run': run, 'stream': stream})}"
        req = urllib.request.Request(  # noqa: S310 - http(s) checked in __init__
            url,
            headers={"Accept": "application/json"},
        )
        with self._lock:
            self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - http(s) checked in __init__
                if resp.status != 200:
                    raise urllib.error.HTTPError(url, resp.status, "not 200", resp.headers, None)
                body = resp.read(self.max_body + 1)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            with self._lock:
                self.errors += 1
            log.warning("run_stream_done run=%s stream=%s: %s (taken as not done)", run, stream, exc)
            return False
        if len(body) > self.max_body:
            return False
        return is_done_reply(body)

    def is_done(self, run: int, stream: str) -> bool:
        """Done status of (run, stream); invalid run or stream names are never done (no request)."""
        if not RUN_RE.match(str(run)) or not STREAM_RE.match(stream):
            return False
        key = (int(run), stream)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.cache_ttl:
                return hit[1]
        value = self._query(int(run), stream)
        with self._lock:
            self._cache[key] = (self.clock(), value)
        return value

    __call__ = is_done

    def many(self, pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], bool]:
        """Done status of many pairs, at most ``max_workers`` requests at a time."""
        keys = list(dict.fromkeys((int(r), s) for r, s in pairs))
        if not keys:
            return {}
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(keys))) as pool:
            values = list(pool.map(lambda k: self.is_done(*k), keys))
        return dict(zip(keys, values, strict=True))


class Prefetching:
    """Predicate for the policy walk: answers in order, prefetching the next ``batch`` pairs."""

    def __init__(self, client: RunStreamDone, order: list[tuple[int, str]], batch: int = 32):
        self.client = client
        self.order = order
        self.batch = max(1, batch)
        self._pos = {k: i for i, k in enumerate(order)}
        self._known: dict[tuple[int, str], bool] = {}

    def __call__(self, run: int, stream: str) -> bool:
        key = (int(run), stream)
        if key not in self._known:
            i = self._pos.get(key)
            chunk = [key] if i is None else self.order[i : i + self.batch]
            chunk = [k for k in chunk if k not in self._known] or [key]
            self._known.update(self.client.many(chunk))
        return self._known[key]
