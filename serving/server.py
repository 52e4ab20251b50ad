"""`lfm serve`: Feast's HTTP feature server (its FastAPI app) on loopback, behind two platform rules.

- `/get-online-features` with a `features` list is refused (HTTP 400, a clear message) when the refs are not
  registered or mix two exports; a `feature_service` request is Feast's own (unknown -> Feast's 404); entity ids
  of the wrong type (a string where the keys are int64) are refused with 400 naming the key, not a 500.
- The write endpoints (`/push`, `/write-to-online-store`, `/materialize`, `/materialize-incremental`) are
  refused (403): online data only arrives through `lfm materialize`, which honours the quality gate.
Everything else (`/health`, responses, null statuses for unknown ids) is Feast's.
"""
from __future__ import annotations

import json
import logging

from lfm.config import LfmConfig
from lfm.errors import LfmError

log = logging.getLogger("lfm.feast")
WRITE_PATHS = {"/push", "/write-to-online-store", "/materialize", "/materialize-incremental"}


class PlatformRules:
    """Pure ASGI middleware: inspects the request body of feature lookups, then replays it to Feast's app."""

    def __init__(self, app, store, int_keys: tuple[str, ...] = ()) -> None:
        self.app, self.store, self.int_keys = app, store, int_keys

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
        chunks, more = [], True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body or b"{}")
            features = request.get("features") if isinstance(request, dict) else None
            bad = _bad_ids(request, self.int_keys)
            if bad:
                return await self._reply(send, 400, bad)
            if features and not request.get("feature_service"):
                from starlette.concurrency import run_in_threadpool

                from serving.online import version_of_refs

                await run_in_threadpool(version_of_refs, self.store, features)
        except LfmError as err:
            return await self._reply(send, 400, str(err))
        except ValueError:
            pass  # not JSON: Feast's validation answers it
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _bad_ids(request, int_keys: tuple[str, ...]) -> str:
    """A message naming the first entity key whose ids are not integers (feast.entity_key_type int64), else ''."""
    entities = request.get("entities") if isinstance(request, dict) else None
    if not isinstance(entities, dict):
        return ""
    for key in int_keys:
        values = entities.get(key)
        if values is None:
            continue
        wrong = [v for v in (values if isinstance(values, list) else [values])
                 if isinstance(v, bool) or not isinstance(v, int)]
        if wrong:
            return (f"entity key {key!r} takes integer ids (feast.entity_key_type is int64), got {wrong[:3]!r}; "
                    "send numbers, e.g. {\"" + key + "\": [42]}")
    return ""


def build_app(cfg: LfmConfig, store=None):
    """Feast's feature-server app for this config, wrapped in `PlatformRules`."""
    from feast.feature_server import get_app

    from serving.register import registered
    from feature_repo.store import open_store

    store = store or open_store(cfg)
    registered(store).require(None)  # refuse to start on an empty registry: nothing could be served
    int_keys = (cfg.schema.user_key, cfg.schema.item_key) if cfg.feast.entity_key_type.value == "int64" else ()
    return PlatformRules(get_app(store, registry_ttl_sec=60), store, int_keys)


def serve(cfg: LfmConfig, host: str | None = None, port: int | None = None) -> None:
    """Run the server in this process (uvicorn, one worker) until interrupted."""
    import uvicorn

    host = host or cfg.feast.server_host
    port = port or cfg.feast.server_port
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("feature server binds to %s, not loopback: anyone who can reach it can read features", host)
    uvicorn.run(build_app(cfg), host=host, port=port, access_log=False, log_level="warning")
