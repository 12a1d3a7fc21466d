"""The HTTP facade: Quart-Trio routes over the node's actors.

Routes hold no protocol decisions: they validate input, ask the node, and shape JSON. Every
error leaves as the JSON error shape; the root API key guards everything but ``/health*``;
admin routes exist at ``/admin/...`` (the seed's paths) and ``/v1/admin/...`` (the SDK's).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ..errors import ServiceError
from ..safejson import JsonInvalid
from . import admin_views, openapi, ops
from .backups import mount_backup_routes
from .cache import mount_cache_routes
from .deps import FacadeDeps
from .errors import ApiError
from .memory import mount_memory_routes
from .operations import mount_operation_routes
from .responses import error_response, json_bytes_response, json_response

OPEN_PREFIX = "/health"
#: routes whose body is a backup bundle: DAKERA_MAX_BUNDLE_BYTES instead of DAKERA_MAX_BODY_BYTES
BUNDLE_PATHS = ("/admin/backups/upload", "/admin/backups/restore")
BUNDLE_BODY_TIMEOUT = 600  # seconds a bundle upload may take to arrive
# answered whatever the load: what an orchestrator and a scraper need to see an overloaded node
UNLIMITED_PREFIXES = (OPEN_PREFIX, "/metrics", "/v1/ops/metrics")


def create_app(node: FacadeDeps) -> QuartTrio:
    """The Quart-Trio app of the memory API, the admin routes, health and metrics over ``node``."""
    # no static folder: Quart's default would serve /static/<path> from the package directory
    app = QuartTrio("dakera_actors", static_folder=None)
    # the largest body any route takes (a backup bundle); every other route is held to
    # DAKERA_MAX_BODY_BYTES in _before
    app.config["MAX_CONTENT_LENGTH"] = max(node.config.max_body_bytes, node.config.max_bundle_bytes)
    app.config["BODY_TIMEOUT"] = 30
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    metrics = node.metrics
    root_key = (node.config.root_api_key or "").encode()
    limit = node.config.max_concurrent_requests
    admitted = 0  # requests being served now, health and metrics excepted

    # -- cross-cutting: auth, body limit, latency ----------------------------------------
    @app.before_request
    async def _before() -> Response | None:
        nonlocal admitted
        g.started = time.perf_counter()
        metrics.http_in_flight.inc()
        node.in_flight.enter()
        g.in_flight = g.counted = True
        if not request.path.startswith(UNLIMITED_PREFIXES):
            if admitted >= limit:
                # shed load before reading the body or doing any work: the request changed nothing
                node.log.debug("http_overloaded", path=request.path, in_flight=admitted, limit=limit)
                metrics.http_shed.labels("requests").inc()
                raise ApiError(503, f"node is serving {admitted} requests, its limit "
                                    "(DAKERA_MAX_CONCURRENT_REQUESTS); retry shortly", retry_after=1)
            admitted += 1
            g.admitted = True
        length = request.content_length
        if request.method == "POST" and request.path.endswith(BUNDLE_PATHS):
            # a backup bundle may be far larger than any API request: its own limit (Quart's, the
            # app-wide one, counts it as it streams in), and time to arrive
            body_limit, setting = node.config.max_bundle_bytes, "DAKERA_MAX_BUNDLE_BYTES"
            request.body_timeout = BUNDLE_BODY_TIMEOUT
        else:
            body_limit, setting = node.config.max_body_bytes, "DAKERA_MAX_BODY_BYTES"
            if length is None and request.method in ("POST", "PUT", "PATCH", "DELETE") and (
                    "chunked" in request.headers.get("Transfer-Encoding", "").lower()):
                # only a declared length can be held to DAKERA_MAX_BODY_BYTES before the body is read
                raise ApiError(411, "send the request body with a Content-Length (bodies streamed without "
                                    "one are taken only by the backup bundle routes)")
        if length is not None and length > body_limit:
            raise ApiError(413, f"request body of {length} bytes exceeds the limit of {body_limit} bytes ({setting})")
        if root_key and not request.path.startswith(OPEN_PREFIX):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'")
            if not hmac.compare_digest(token.strip().encode(), root_key):
                raise ApiError(401, "invalid API key", code="INVALID_API_KEY")
        if node.readiness.rejecting and request.path.startswith("/v1/") and not request.path.startswith(
                ("/v1/admin", "/v1/ops")):
            # maintenance with reject_requests: clients go elsewhere (what other nodes forward to
            # this one over the transport is still served, its shards are still here)
            raise ApiError(503, f"node {node.node_id} is in maintenance and rejects client requests; "
                                "send them to another node", retry_after=5)
        return None

    @app.after_request
    async def _after(response: Response) -> Response:
        started = getattr(g, "started", None)
        if getattr(g, "in_flight", False):
            metrics.http_in_flight.dec()
            g.in_flight = False
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics.http_latency.labels(request.method, rule, str(response.status_code)).observe(
                time.perf_counter() - started)
        response.headers["X-Dakera-Node"] = node.node_id
        return response

    @app.teardown_request
    async def _teardown(_exc: BaseException | None) -> None:
        nonlocal admitted
        if getattr(g, "admitted", False):
            g.admitted = False
            admitted -= 1
        if getattr(g, "counted", False):  # runs even when the request was cut short
            g.counted = False
            node.in_flight.leave()

    # -- errors: JSON, always ------------------------------------------------------------
    @app.errorhandler(ServiceError)
    async def _api_error(err: ServiceError) -> Response:
        return error_response(err)

    @app.errorhandler(JsonInvalid)
    async def _bad_json(err: JsonInvalid) -> Response:
        return error_response(ApiError(400, str(err)))

    @app.errorhandler(RequestEntityTooLarge)
    async def _too_large(_err: RequestEntityTooLarge) -> Response:
        return error_response(ApiError(413, f"request body exceeds the limit of "
                                            f"{node.config.max_body_bytes} bytes"))

    @app.errorhandler(HTTPException)
    async def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        message = {404: f"no route {request.method} {request.path}",
                   405: f"method {request.method} not allowed on {request.path}"}.get(
            status, err.description or err.name)
        response = error_response(ApiError(status, message))
        if status == 405 and isinstance(err, MethodNotAllowed) and err.valid_methods:
            # RFC 9110: a 405 names the methods the route does take
            response.headers["Allow"] = ", ".join(sorted(err.valid_methods))
        return response

    @app.errorhandler(Exception)
    async def _unexpected(err: Exception) -> Response:
        node.log.error("http_unhandled_error", method=request.method, path=request.path,
                       error=repr(err), exc_info=err)
        return error_response(ApiError(500, "internal error; see the node's log"))

    # -- health and metrics --------------------------------------------------------------
    @app.get("/health")
    async def health() -> Response:
        return json_response(ops.health_view(node))

    @app.get("/health/live")
    async def live() -> Response:
        return json_response(ops.live_view(node))

    @app.get("/health/ready")
    async def ready() -> Response:
        body, status = ops.ready_view(node)
        return json_response(body, status)

    async def render_metrics() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", render_metrics, methods=["GET"])
    app.add_url_rule("/v1/ops/metrics", "ops_metrics", render_metrics, methods=["GET"])

    # -- admin ---------------------------------------------------------------------------
    def admin_route(path: str, methods: list[str]) -> Callable[[Any], Any]:
        """Mount a handler at both /admin<path> and /v1/admin<path>."""

        def register(view: Any) -> Any:
            for prefix in ("/admin", "/v1/admin"):
                app.add_url_rule(prefix + path, f"{prefix}{path}:{view.__name__}", view, methods=methods)
            return view

        return register

    @admin_route("/cluster/status", ["GET"])
    async def cluster_status() -> Response:
        totals = await ops.cluster_totals(node, ops.STATUS_COUNT_TIMEOUT)
        return json_response(admin_views.cluster_status(node, totals))

    @admin_route("/cluster/nodes", ["GET"])
    async def cluster_nodes() -> Response:
        return json_response(admin_views.cluster_nodes(node))

    @admin_route("/cluster/shards", ["GET"])
    async def cluster_shards() -> Response:
        # lag as each shard's primary sees it (this node only knows its own primaries')
        replication = node.replication
        report = (await replication.cluster_status()
                  if replication is not None and replication.map is not None else None)
        return json_response(admin_views.cluster_shards(node, report, await ops.cluster_totals(node)))

    @admin_route("/cluster/replication", ["GET"])
    async def cluster_replication() -> Response:
        report = await node.replication.cluster_status() if node.replication is not None else None
        return json_response(admin_views.replication_report(report, node.config.write_ack,
                                                            admin_views.members_alive(node)))

    @admin_route("/storage/tiers", ["GET"])
    async def storage_tiers() -> Response:
        return json_response(admin_views.storage_tiers(node))

    mount_operation_routes(app, node, admin_route)
    mount_backup_routes(app, node, admin_route)
    mount_cache_routes(app, node, admin_route)
    app.extensions["admin_route"] = admin_route
    mount_memory_routes(app, node)
    ops.mount_ops_routes(app, node)

    # -- the OpenAPI document of every route above (built once, at the first request) -----
    document: list[bytes] = []

    async def openapi_document() -> Response:
        if not document:
            document.append(json.dumps(openapi.document(app.url_map, secured=bool(root_key),
                                                        can_encrypt=node.config.backup_key is not None,
                                                        shards=node.config.shards),
                                       separators=(",", ":")).encode())
        return json_bytes_response(document[0])

    app.add_url_rule("/openapi.json", "openapi", openapi_document, methods=["GET"])
    app.add_url_rule("/v1/openapi.json", "v1_openapi", openapi_document, methods=["GET"])
    return app
