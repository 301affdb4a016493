"""`visionloop serve`: the REST app on uvicorn, one process, 127.0.0.1 by default.

The model is resolved and loaded before the port opens (a wrong URI or a missing champion
stops the command with one line); then uvicorn serves until SIGINT/SIGTERM, finishing the
requests in flight. The bound address is printed once, so `--port 0` (any free port) works
for scripts and tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

from visionloop.artifacts.prediction_log import PredictionLog
from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.serving.app import ServerState, create_app
from visionloop.serving.batcher import MicroBatcher
from visionloop.serving.follow import Follower, ModelHolder
from visionloop.serving.inputs import image_rules
from visionloop.serving.metrics import Metrics
from visionloop.serving.source import LoadedModel, default_uri, load_model, resolve

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_SECONDS = 30


def build_state(config: Config, model: LoadedModel, uri: str, runtime: str | None) -> ServerState:
    serving = config.serving
    metrics = Metrics()
    holder = ModelHolder(model, metrics)
    follower = Follower(config, uri, runtime, holder, metrics) if model.ref.alias else None
    store = serving.image_store if serving.keep_images else None
    workers = serving.workers or min(8, os.cpu_count() or 1)
    return ServerState(
        config=config,
        holder=holder,
        follower=follower,
        batcher=MicroBatcher(serving.batching.max_batch, serving.batching.max_wait_ms, metrics),
        metrics=metrics,
        prediction_log=PredictionLog(serving.prediction_log, store),
        rules=image_rules(config),
        decoders=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode"),
    )


LISTEN_BACKLOG = 2048  # uvicorn's own default


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it, Nagle's
    # algorithm and the client's delayed ACK add 40 ms to every keep-alive answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # listening before the address is printed: a client that connects at once waits in
        # the backlog until uvicorn accepts, instead of being refused
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise VisionloopError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port (0: any free)"
        ) from None
    return sock


def serve(
    config: Config,
    model_uri: str | None = None,
    host: str | None = None,
    port: int | None = None,
    runtime: str | None = None,
) -> None:
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uri = model_uri or default_uri(config)
    model = load_model(config, resolve(config, uri), runtime)
    state = build_state(config, model, uri, runtime)
    sock = bind(host or config.serving.host, config.serving.port if port is None else port)
    address, bound_port = sock.getsockname()[:2]
    following = (
        f", following {uri} every {config.serving.poll_seconds:g} s" if state.follower else ""
    )
    print(
        f"serving {model.ref.label} ({model.runtime.name}: {model.runtime_reason}) "
        f"on http://{address}:{bound_port}{following}",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(state),
            log_level="warning",
            access_log=False,
            limit_concurrency=config.serving.limits.max_concurrency,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    # uvicorn finishes the requests in flight on SIGINT/SIGTERM, then raises the signal
    # again: a stop asked for is a normal end here, not an error.
    signal.signal(signal.SIGTERM, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    print("stopped", file=sys.stderr, flush=True)
