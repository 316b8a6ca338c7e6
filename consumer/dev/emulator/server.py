"""The Iterable emulator's HTTP server: Iterable's users endpoints, plus `/_admin/` for tests.

    iterable-emulator --port 8080 --project-type hybrid --api-key test-key

It prints `listening on http://HOST:PORT` first (port 0 picks a free one), then one line
per request. `/_admin/faults` changes faults at run time, `/_admin/calls` returns the call
log, `/_admin/state` the whole project, `/_admin/reset` forgets everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from aiohttp import web

from consumer.dev.emulator import bodies
from consumer.dev.emulator.faults import DOCUMENTED_LIMITS, Faults, RateLimits, limit_group
from consumer.dev.emulator.store import PROJECT_TYPES, ApiError, Project

MAX_BULK_BYTES: Final = 4 * 1024 * 1024
_PROJECT_ID: Final = 1

Handler = Callable[[Project, dict[str, Any], float], dict[str, Any]]


@dataclass
class Emulator:
    """Everything the server holds: the project, faults, limits and the call log."""

    project: Project
    api_keys: set[str]
    faults: Faults
    limits: RateLimits
    rng: random.Random
    quiet: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)
    make_project: Callable[[], Project] | None = None

    def log(self, method: str, path: str, status: int, code: str | None, started: float) -> None:
        if not self.quiet:
            took = (time.monotonic() - started) * 1000
            sys.stdout.write(f"{method} {path} {status} {code or '-'} {took:.1f}ms\n")


def _envelope(
    msg: str, code: str = "Success", params: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"msg": msg, "code": code, "params": params}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def _error_response(emulator: Emulator, error: ApiError, retry_after: bool = False) -> web.Response:
    headers = {}
    if retry_after and emulator.faults.retry_after is not None:
        headers["Retry-After"] = str(int(emulator.faults.retry_after))
    if emulator.faults.non_json_errors and error.status >= 429:
        title = f"{error.status} {error.msg}"
        page = f"<html><head><title>{title}</title></head><body>{title}</body></html>"
        return web.Response(
            status=error.status, text=page, content_type="text/html", headers=headers
        )
    return _json(error.status, _envelope(error.msg, error.code, error.params), headers)


# -- the API --------------------------------------------------------------------------------


def _update(project: Project, body: dict[str, Any], now: float) -> dict[str, Any]:
    return _envelope(project.update(body, now))


def _register(project: Project, body: dict[str, Any], now: float) -> dict[str, Any]:
    project.register_device(body, now)
    return _envelope("Device registered")


def _disable(project: Project, body: dict[str, Any], now: float) -> dict[str, Any]:
    project.disable_device(body, now)
    return _envelope("Device disabled")


def _update_email(project: Project, body: dict[str, Any], now: float) -> dict[str, Any]:
    project.update_email(body, now)
    return _envelope("Email updated")


def _bulk(project: Project, body: dict[str, Any], now: float) -> dict[str, Any]:
    return project.bulk_update(body, now)


_POSTS: Final[dict[str, Handler]] = {
    "/api/users/update": _update,
    "/api/users/registerDeviceToken": _register,
    "/api/users/disableDevice": _disable,
    "/api/users/updateEmail": _update_email,
    "/api/users/bulkUpdate": _bulk,
}


def _read(project: Project, method: str, path: str, query: dict[str, str]) -> dict[str, Any]:
    """GET and DELETE by email or userId, in query or path form."""
    tail = path.removeprefix("/api/users/")
    if tail == "getByEmail" and method == "GET":
        return project.get_by_email(_required(query, "email"))
    if tail == "byUserId" and method == "GET":
        return project.get_by_user_id(_required(query, "userId"))
    if tail.startswith("byUserId/"):
        user_id = unquote(tail.removeprefix("byUserId/"))
        if method == "GET":
            return project.get_by_user_id(user_id)
        return _envelope(project.delete_by_user_id(user_id))
    if "/" in tail or not tail:
        raise ApiError(404, "NotFound", f"Unknown endpoint {path}")
    email = unquote(tail)
    if method == "GET":
        return project.get_by_email(email)
    return _envelope(project.delete_by_email(email))


def _required(query: dict[str, str], name: str) -> str:
    if not query.get(name):
        raise ApiError(400, "BadParams", f"Missing parameter {name}")
    return query[name]


async def _api(request: web.Request) -> web.Response:
    emulator: Emulator = request.app["emulator"]
    started = time.monotonic()
    path, method = request.path, request.method
    status, code, response = await _answer(emulator, request, started)
    emulator.log(method, path, status, code, started)
    return response


async def _answer(
    emulator: Emulator, request: web.Request, started: float
) -> tuple[int, str | None, web.Response]:
    faults, path, method = emulator.faults, request.path, request.method
    raw = await request.read()
    entry: dict[str, Any] = {
        "seq": len(emulator.calls),
        "received": time.time(),
        "method": method,
        "path": path,
        "query": dict(request.query),
        "body": _maybe_json(raw),
        "status": None,
        "code": None,
    }

    def finish(
        status: int, code: str | None, response: web.Response
    ) -> tuple[int, str | None, web.Response]:
        entry.update(status=status, code=code, time=time.time())
        emulator.calls.append(entry)
        return status, code, response

    if started < faults.outage_until:
        error = ApiError(faults.outage_status, "GenericError", "Service temporarily unavailable")
        return finish(error.status, error.code, _error_response(emulator, error, retry_after=True))
    if faults.hang_rate and emulator.rng.random() < faults.hang_rate:
        await asyncio.sleep(faults.hang_seconds)
    delay = faults.delay(emulator.rng)
    if delay:
        await asyncio.sleep(delay)

    key = request.headers.get("Api-Key") or request.headers.get("Api_Key")
    if key not in emulator.api_keys:
        code = "Success" if faults.success_code_on_401 else "BadApiKey"
        params = {"ip": request.remote or "", "endpoint": path}
        return finish(401, code, _json(401, _envelope("Invalid API key", code, params)))

    now = time.monotonic()
    group = limit_group(method, path)
    if now < faults.throttle_until or not emulator.limits.admit(group, now):
        error = ApiError(
            429,
            "RateLimitExceeded",
            f"Exceeded rate limit for endpoint: {path}, project: {_PROJECT_ID} ",
            {},
        )
        return finish(429, error.code, _error_response(emulator, error, retry_after=True))
    injected = faults.injected_status(emulator.rng)
    if injected is not None:
        error = ApiError(injected, "GenericError", "Injected failure")
        return finish(injected, error.code, _error_response(emulator, error, retry_after=True))

    try:
        body = _dispatch(emulator, method, path, raw, dict(request.query))
    except ApiError as rejected:
        return finish(rejected.status, rejected.code, _error_response(emulator, rejected))
    if faults.apply_then_fail_rate and emulator.rng.random() < faults.apply_then_fail_rate:
        # The write happened but the answer is lost: the client must retry idempotently.
        error = ApiError(500, "GenericError", "Injected failure after the write")
        return finish(500, error.code, _error_response(emulator, error))
    return finish(200, body.get("code"), _json(200, body))


def _dispatch(
    emulator: Emulator, method: str, path: str, raw: bytes, query: dict[str, str]
) -> dict[str, Any]:
    project = emulator.project
    wall = time.time()
    if method == "POST":
        handler = _POSTS.get(path)
        if handler is None:
            raise ApiError(404, "NotFound", f"Unknown endpoint {path}")
        if path == "/api/users/bulkUpdate" and len(raw) > MAX_BULK_BYTES:
            raise ApiError(413, "BatchTooLarge", f"Request body over {MAX_BULK_BYTES} bytes")
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise ApiError(
                400, "BadJsonBody", f"[{path}] Invalid JSON body", {"obj": "Invalid Json"}
            ) from None
        return handler(project, bodies.check(path, parsed), wall)
    if method in ("GET", "DELETE"):
        return _read(project, method, path, query)
    raise ApiError(405, "BadParams", f"Method {method} not allowed")


def _maybe_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


# -- admin ----------------------------------------------------------------------------------


async def _admin_faults(request: web.Request) -> web.Response:
    emulator: Emulator = request.app["emulator"]
    now = time.monotonic()
    if request.method == "POST":
        patch = await request.json()
        try:
            limits = patch.pop("rate_limits", None)
            if limits is not None:
                emulator.limits.set(limits)
            keys = patch.pop("api_keys", None)
            if keys is not None:
                emulator.api_keys = set(keys)
            emulator.faults.update(patch, now)
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
    return _json(200, {**emulator.faults.as_json(now), "rate_limits": emulator.limits.as_json()})


async def _admin_calls(request: web.Request) -> web.Response:
    emulator: Emulator = request.app["emulator"]
    since = int(request.query.get("since", "0"))
    calls = emulator.calls[since:]
    return _json(200, {"calls": calls, "next": since + len(calls)})


async def _admin_state(request: web.Request) -> web.Response:
    project: Project = request.app["emulator"].project
    return _json(
        200,
        {
            "projectType": project.project_type,
            "users": [user.as_json() for user in project.users],
            "fieldTypes": project.field_types,
        },
    )


async def _admin_reset(request: web.Request) -> web.Response:
    emulator: Emulator = request.app["emulator"]
    if emulator.make_project is not None:
        emulator.project = emulator.make_project()
    emulator.calls.clear()
    emulator.faults = Faults()
    return _json(200, {"reset": True})


async def _admin_health(request: web.Request) -> web.Response:
    return _json(200, {"ok": True})


def make_app(emulator: Emulator) -> web.Application:
    app = web.Application(client_max_size=MAX_BULK_BYTES * 2)
    app["emulator"] = emulator
    app.router.add_route("*", "/_admin/faults", _admin_faults)
    app.router.add_get("/_admin/calls", _admin_calls)
    app.router.add_get("/_admin/state", _admin_state)
    app.router.add_post("/_admin/reset", _admin_reset)
    app.router.add_get("/_admin/health", _admin_health)
    app.router.add_route("*", "/api/{tail:.*}", _api)
    return app


# -- command line ---------------------------------------------------------------------------


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iterable-emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--project-type", choices=PROJECT_TYPES, default="hybrid")
    parser.add_argument("--api-key", action="append", required=True, help="repeat for several")
    parser.add_argument(
        "--push-integration",
        action="append",
        metavar="APP:PLATFORM",
        help="accepted applicationName/platform pairs (default: accept any)",
    )
    parser.add_argument("--unknown-user-id", choices=("empty", "error"), default="empty")
    parser.add_argument("--no-rate-limits", action="store_true", help="switch every limit off")
    parser.add_argument(
        "--rate-limit",
        action="append",
        type=_pair,
        default=[],
        metavar="GROUP=RPS",
        help=f"override a limit; groups: {', '.join(DOCUMENTED_LIMITS)}; RPS 'off' disables",
    )
    parser.add_argument("--rate-burst-seconds", type=float, default=1.0)
    parser.add_argument("--retry-after", type=float, help="send Retry-After on 429 and 503")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument(
        "--latency-distribution", choices=("uniform", "exponential"), default="uniform"
    )
    parser.add_argument("--error-rate", action="append", type=_pair, default=[], metavar="STATUS=P")
    parser.add_argument("--hang-rate", type=float, default=0.0)
    parser.add_argument("--apply-then-fail-rate", type=float, default=0.0)
    parser.add_argument("--outage-seconds", type=float, default=0.0)
    parser.add_argument("--non-json-errors", action="store_true")
    parser.add_argument("--success-code-on-401", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    return parser


def _integration(text: str) -> tuple[str, str]:
    app, _, platform = text.rpartition(":")
    if not app or not platform:
        raise ValueError(f"--push-integration wants APP:PLATFORM, got {text!r}")
    return app, platform


def build(args: argparse.Namespace) -> Emulator:
    integrations: list[tuple[str, str]] | None = None
    if args.push_integration:
        integrations = [_integration(text) for text in args.push_integration]

    def make_project() -> Project:
        return Project(
            args.project_type,
            push_integrations=integrations,
            unknown_user_id=args.unknown_user_id,
        )

    limits: dict[str, float | None] = (
        dict.fromkeys(DOCUMENTED_LIMITS) if args.no_rate_limits else dict(DOCUMENTED_LIMITS)
    )
    for group, value in args.rate_limit:
        limits[group] = None if value == "off" else float(value)
    faults = Faults(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        latency_distribution=args.latency_distribution,
        error_rates={int(s): float(p) for s, p in args.error_rate},
        hang_rate=args.hang_rate,
        apply_then_fail_rate=args.apply_then_fail_rate,
        outage_until=time.monotonic() + args.outage_seconds if args.outage_seconds else 0.0,
        retry_after=args.retry_after,
        non_json_errors=args.non_json_errors,
        success_code_on_401=args.success_code_on_401,
    )
    return Emulator(
        project=make_project(),
        api_keys=set(args.api_key),
        faults=faults,
        limits=RateLimits(limits, args.rate_burst_seconds),
        rng=random.Random(args.seed),
        quiet=args.quiet,
        make_project=make_project,
    )


async def _serve(
    emulator: Emulator, host: str, port: int, tls: ssl.SSLContext | None = None
) -> None:
    runner = web.AppRunner(make_app(emulator), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, ssl_context=tls)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    scheme = "https" if tls else "http"
    sys.stdout.write(f"listening on {scheme}://{host}:{bound}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        emulator = build(args)
    except ValueError as exc:
        sys.stderr.write(f"iterable-emulator: {exc}\n")
        return 2
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(emulator, args.host, args.port, tls))
    return 0
