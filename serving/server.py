"""`lfm serve`: Feast's HTTP feature server (its FastAPI app) on loopback, behind the platform's rules.

- `/get-online-features` with a `features` list is refused (HTTP 400, a clear message) when the refs are not
  registered or mix two exports; a `feature_service` request is Feast's own (unknown -> Feast's 404); a body that
  names no features, entity ids of the wrong type or beyond int64 (where a key is declared an integer), unknown
  entity keys, a key the asked views need but the request lacks, empty or null ids and key lists of different
  lengths are refused with 400 naming the key and a body that would be answered, never Feast's 500. A request
  for one side's views (a user's UR and CR(u) by its refs) needs that side's key alone.
- Every answer holds whole entities: Feast reads view by view, so its answer goes out only once it agrees with a
  one-step read of the same entities, else it is read again (`serving.whole`; 503 if loads never pause).
- The write endpoints (`/push`, `/write-to-online-store`, `/materialize`, `/materialize-incremental`) are
  refused (403): online data only arrives through `lfm materialize`, which honours the quality gate.
Everything else (`/health`, responses, null statuses for unknown ids) is Feast's.
"""
from __future__ import annotations

import asyncio
import json
import logging

from lfm.config import KeyType, LfmConfig
from lfm.errors import LfmError
from lfm.names import BadInput

log = logging.getLogger("lfm.feast")
WRITE_PATHS = {"/push", "/write-to-online-store", "/materialize", "/materialize-incremental"}


class PlatformRules:
    """Pure ASGI middleware: checks the request body of feature lookups, lets Feast's app answer, and sends the
    answer only once it agrees with a one-step read of the same entities (`serving.whole`), else reads again."""

    def __init__(self, app, cfg: LfmConfig, store, int_keys: tuple[str, ...] = ()) -> None:
        from serving.online import OnlineReader
        from serving.whole import Readers

        self.app, self.cfg, self.store, self.int_keys = app, cfg, store, int_keys
        self.readers = Readers(lambda spec: OnlineReader(cfg, spec=spec))

    async def _reply(self, send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in WRITE_PATHS:
            return await self._reply(send, 403, f"{path} is disabled: online data is loaded only by "
                                                "`lfm materialize`, which honours the quality gate")
        if path != "/get-online-features":
            return await self.app(scope, receive, send)
        body = await _body(receive)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return await self.app(scope, _replay(body), send)  # not JSON: Feast's validation answers it
        from starlette.concurrency import run_in_threadpool

        try:
            bad = _bad_ids(request, self.int_keys)
            if bad:
                return await self._reply(send, 400, bad)
            asked = await run_in_threadpool(self._plan, request)
        except LfmError as err:
            return await self._reply(send, 400, str(err))
        if asked is None:
            return await self.app(scope, _replay(body), send)
        return await self._whole(scope, body, send, asked)

    def _plan(self, request):
        """What the request reads (`serving.whole.Asked`), or None where Feast answers it alone (an unknown
        feature service: Feast's 404; a body Feast's own validation refuses)."""
        from serving.online import version_of_refs, views_of
        from serving.whole import columns, plan

        if not isinstance(request, dict) or not isinstance(request.get("entities"), dict):
            return None
        if request.get("feature_service"):
            try:
                target = self.store.get_feature_service(str(request["feature_service"]), allow_cache=True)
            except Exception:  # FeatureServiceNotFoundException: Feast answers 404
                return None
        elif request.get("features"):
            version_of_refs(self.store, request["features"])
            target = list(request["features"])
        else:
            raise BadInput(no_features(self.cfg, self.store))
        return plan(self.cfg, self.store, views_of(target), columns(request["entities"]))

    async def _whole(self, scope, body: bytes, send, asked) -> None:
        """Feast's answer between two one-step reads, read again until its entities are whole (`serving.whole`);
        503 when loads never paused."""
        from starlette.concurrency import run_in_threadpool

        from serving.whole import BUSY, http_columns, pauses, whole

        for pause in pauses():
            before = await run_in_threadpool(self.readers.snapshot, asked)
            start, chunks = await _captured(self.app, scope, body)
            text = b"".join(chunks)
            if start.get("status") != 200:
                break
            after = await run_in_threadpool(self.readers.snapshot, asked)
            if whole(asked, http_columns(json.loads(text)), before, after):
                break
            await asyncio.sleep(pause)
        else:
            return await self._reply(send, 503, BUSY)
        await send(start)
        await send({"type": "http.response.body", "body": text})


async def _body(receive) -> bytes:
    chunks, more = [], True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes):
    """A `receive` that hands the app the body already read, once."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _captured(app, scope, body: bytes) -> tuple[dict, list[bytes]]:
    """Run the app on the request and keep its response (start message, body chunks) instead of sending it."""
    start: dict = {}
    chunks: list[bytes] = []

    async def send(msg) -> None:
        if msg["type"] == "http.response.start":
            start.update(msg)
        elif msg["type"] == "http.response.body":
            chunks.append(msg.get("body", b""))

    await app(scope, _replay(body), send)
    return start, chunks


def no_features(cfg: LfmConfig, store) -> str:
    """The refusal of a request that names neither a feature service nor features, with a body that works."""
    from serving.register import registered
    from serving.whole import example_body

    try:
        example = example_body(cfg, registered(store).require(None))
    except LfmError:
        example = "(nothing is registered yet: run `lfm register`)"
    return ('the request names no features: send "feature_service" (lfm_current, or lfm_e<export id>) or '
            f'"features" (view:feature refs) with "entities", e.g. {example}')


def _bad_ids(request, int_keys: tuple[str, ...]) -> str:
    """A message naming the first entity key whose ids are not int64 integers (a key declared an integer)."""
    from serving.online import int64_refusal, is_int64

    entities = request.get("entities") if isinstance(request, dict) else None
    if not isinstance(entities, dict):
        return ""
    for key in int_keys:
        values = entities.get(key)
        if values is None:
            continue
        wrong = [v for v in (values if isinstance(values, list) else [values]) if v is not None and not is_int64(v)]
        if wrong:
            return int64_refusal(key, wrong)
    return ""


def build_app(cfg: LfmConfig, store=None):
    """Feast's feature-server app for this config, wrapped in `PlatformRules`."""
    from feast.feature_server import get_app

    from serving.register import registered
    from feature_repo.store import open_store

    store = store or open_store(cfg)
    registered(store).require(None)  # refuse to start on an empty registry: nothing could be served
    int_keys = tuple(key for side, key in (("user", cfg.schema.user_key), ("item", cfg.schema.item_key))
                     if cfg.key_type(side) == KeyType.int64)
    return PlatformRules(get_app(store, registry_ttl_sec=60), cfg, store, int_keys)


def serve(cfg: LfmConfig, host: str | None = None, port: int | None = None) -> None:
    """Run the server in this process (uvicorn, one worker) until interrupted."""
    import uvicorn

    host = host or cfg.feast.server_host
    port = port or cfg.feast.server_port
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("feature server binds to %s, not loopback: anyone who can reach it can read features", host)
    uvicorn.run(build_app(cfg), host=host, port=port, access_log=False, log_level="warning")
