"""File-host faults: what a CDN or an S3 bucket serving the result video does when it misbehaves.

They fire on the public ``/files/...`` routes only (see :data:`~.faults.FILE_FAULTS`) and replace
the answer entirely; the video bytes are those of the sample MP4.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from aiohttp import web

from .faults import FaultSpec

VIDEO = Path(__file__).parent / "assets" / "sample.mp4"

_S3_EXPIRED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    "<Message>Request has expired</Message><X-Amz-Expires>86400</X-Amz-Expires>"
    "<RequestId>0SIMULATED0</RequestId><HostId>simulator</HostId></Error>"
)


async def file_fault_response(request: web.Request, spec: FaultSpec) -> web.StreamResponse:
    """The answer of a file-host fault (``spec.fault`` in :data:`~.faults.FILE_FAULTS`)."""
    video = VIDEO.read_bytes()
    if spec.fault == "gzip":
        body = gzip.compress(video)
        return web.Response(body=body, headers={"Content-Type": "video/mp4", "Content-Encoding": "gzip"})
    if spec.fault == "truncated_video":
        return web.Response(body=video[: len(video) // 2], content_type="video/mp4")
    if spec.fault == "short_body":
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(video)
        await response.prepare(request)
        await response.write(video[: len(video) // 2])
        if request.transport is not None:
            request.transport.abort()
        return response
    if spec.fault == "expired_403":
        return web.Response(status=403, text=_S3_EXPIRED, content_type="application/xml")
    return web.Response(status=410, text="Gone", content_type="text/plain")  # "gone_410"
