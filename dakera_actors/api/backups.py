"""The backup routes, at ``/admin/backups...`` and ``/v1/admin/backups...`` (the SDKs' paths).

The literal segments (``schedule``, ``restore``, ``upload``) are registered before ``/{id}``. The
Python SDK takes only 200, 201 and 204 as success: a started job answers 201 with its record
(``inprogress``), never 202. ``POST /backups/restore`` takes the SDK's JSON request, or a raw gzip
bundle (``Content-Type: application/gzip``), as the seed's "upload the bundle via
/admin/backups/restore".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Response, request

from ..backup.model import created_view
from ..backup.service import Backups
from ..errors import Unavailable
from .deps import FacadeDeps
from .responses import json_body, json_response, request_bytes

GZIP = "application/gzip"


def _is_bundle() -> bool:
    kind = (request.content_type or "").split(";")[0].strip().lower()
    return kind in (GZIP, "application/x-gzip", "application/octet-stream")


def mount_backup_routes(app: Any, node: FacadeDeps, admin_route: Callable[[str, list[str]], Any]) -> None:
    def backups() -> Backups:
        if node.backups is None:
            raise Unavailable("backups are not available until storage is ready")
        return node.backups

    @admin_route("/backups", ["GET"])
    async def list_backups() -> Response:
        found = await backups().list_all()
        return json_response({"backups": [b.view() for b in found], "total": len(found)})

    @admin_route("/backups", ["POST"])
    async def create_backup() -> Response:
        info = await backups().create(await json_body(required=False))
        return json_response(created_view(info), 201)

    @admin_route("/backups/schedule", ["GET"])
    async def get_schedule() -> Response:
        return json_response((await backups().schedule()).view())

    @admin_route("/backups/schedule", ["POST"])
    async def set_schedule() -> Response:
        return json_response((await backups().set_schedule(await json_body())).view())

    @admin_route("/backups/upload", ["POST"])
    async def upload_backup() -> Response:
        info = await backups().upload(await request_bytes())
        return json_response({"backup_id": info.backup_id, "status": "accepted", "backup": info.view()}, 201)

    @admin_route("/backups/restore", ["POST"])
    async def restore_backup() -> Response:
        if _is_bundle():
            job = await backups().restore({}, bundle=await request_bytes())
        else:
            job = await backups().restore(await json_body())
        return json_response(job.view(), 201)

    @admin_route("/backups/restore/<restore_id>", ["GET"])
    async def restore_status(restore_id: str) -> Response:
        return json_response((await backups().restore_status(restore_id)).view())

    @admin_route("/backups/<backup_id>", ["GET"])
    async def get_backup(backup_id: str) -> Response:
        return json_response((await backups().get(backup_id)).view())

    @admin_route("/backups/<backup_id>", ["DELETE"])
    async def delete_backup(backup_id: str) -> Response:
        await backups().delete(backup_id)
        return json_response({"deleted": True, "backup_id": backup_id})

    @admin_route("/backups/<backup_id>/download", ["GET"])
    async def download_backup(backup_id: str) -> Response:
        data = await backups().download(backup_id)
        return Response(data, content_type=GZIP,
                        headers={"Content-Disposition": f'attachment; filename="{backup_id}.tar.gz"'})

    @admin_route("/backups/<backup_id>/restore", ["POST"])
    async def restore_one(backup_id: str) -> Response:
        body = await json_body(required=False) or {}
        if not isinstance(body, dict):
            body = {}
        job = await backups().restore({**body, "backup_id": backup_id})
        return json_response(job.view(), 201)
