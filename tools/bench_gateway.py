"""The gateway's memory while it streams a large scan, for `make bench`: the real gateway (uvicorn, in its own spawned
process, so that its resident memory is its own) streams a 512 x 512 x N int16 CT as NIfTI (gzip on the wire) from
an annotator stand-in's GetVolume (in this process, generating each chunk as it is asked for: no volume is held
anywhere). The client reads the response as it comes. Reported: the gateway's RSS when idle, its peak during the
download, and the download's time and size.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from concurrent import futures

import grpc
import httpx
import numpy as np

from saim.v1 import annotator_pb2, annotator_pb2_grpc

ROWS = COLS = 512
CHUNK = 4  # slices per message, as the annotator sends 512 x 512 int16 (2 MiB raw)


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Scan(annotator_pb2_grpc.AnnotatorServiceServicer):
    def __init__(self, slices: int):
        self.slices = slices

    def GetSession(self, request, context):
        return annotator_pb2.OpenSessionResponse(
            session_id=request.session_id,
            geometry=annotator_pb2.Geometry(
                shape=[ROWS, COLS, self.slices],
                spacing=[0.7, 0.7, 1.5],
                affine=list(np.diag([0.7, 0.7, 1.5, 1.0]).ravel()),
                slice_axis=2,
                num_slices=self.slices,
                rows=ROWS,
                cols=COLS,
            ),
        )

    def GetVolume(self, request, context):
        import zlib

        rng = np.random.default_rng(0)
        for first in range(0, self.slices, CHUNK):
            n = min(CHUNK, self.slices - first)
            chunk = (rng.normal(40, 300, (n, ROWS, COLS))).astype("<i2")  # CT-like HU noise: compresses as CT does
            yield annotator_pb2.VolumeChunk(
                first_slice=first,
                num_slices=n,
                image_dtype="int16",
                encoding=annotator_pb2.ENCODING_ZLIB,
                data=zlib.compress(chunk.tobytes(), 1),
            )


def _serve_gateway(conn, annotator_port: int) -> None:
    """The child: the real gateway app on uvicorn; reports its RSS when idle and, when told, its peak."""
    import uvicorn

    from saim.stack.local import free_port, wait_port
    from services.gateway.server import Backends, create_app

    channel = grpc.insecure_channel(f"127.0.0.1:{annotator_port}")
    app = create_app(Backends.over(channel, channel, channel))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_port(port, 30)
    httpx.get(f"http://127.0.0.1:{port}/healthz")  # the app's first request: imports and buffers settle
    conn.send({"port": port, "idle_mib": _rss_mib("VmRSS")})
    conn.recv()
    conn.send({"peak_mib": _rss_mib("VmHWM")})
    server.should_exit = True


def gateway_memory(slices: int = 600) -> dict:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    annotator_pb2_grpc.add_AnnotatorServiceServicer_to_server(_Scan(slices), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_serve_gateway, args=(child, port))
    proc.start()
    try:
        ready = parent.recv()
        url = f"http://127.0.0.1:{ready['port']}/api/sessions/bench/volume.nii"  # gzip on the wire
        size = 0
        t0 = time.perf_counter()
        with httpx.stream("GET", url, headers={"Authorization": "Bearer x"}, timeout=300) as reply:
            reply.raise_for_status()
            for piece in reply.iter_raw():
                size += len(piece)
        seconds = time.perf_counter() - t0
        parent.send("done")
        peak = parent.recv()["peak_mib"]
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        server.stop(0)
    return {
        "slices": slices,
        "raw_mib": ROWS * COLS * slices * 2 / 2**20,
        "gzip_mib": size / 2**20,
        "seconds": seconds,
        "idle_mib": ready["idle_mib"],
        "peak_mib": peak,
        "above_idle_mib": peak - ready["idle_mib"],
    }


if __name__ == "__main__":
    print(gateway_memory())
