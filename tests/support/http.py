"""A real uvicorn server for an ASGI app on a free loopback port, in a thread, for the HTTP tests."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager


@contextmanager
def http_server(app):
    import uvicorn

    from tests.support.redis_local import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "feature server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
