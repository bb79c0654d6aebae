"""Virtual annotators: gRPC clients that take cases from the selector and correct the annotator service's masks
with ground-truth-derived clicks (the same virtual user as the emulation, one click and one model answer at a
time). They work in scan space, as a person's client does: the ground truth is the source label volume, slices
and masks come from GetSlice, clicks go out as source voxels."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from saim.rpc.channel import channel
from saim.rpc.wire import decode_mask
from saim.training.virtual_user import next_click
from saim.v1 import annotator_pb2, annotator_pb2_grpc, selector_pb2, selector_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class AnnotatorStats:
    cases: list[str] = field(default_factory=list)
    click_latency_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    idle_s: float = 0.0  # waiting for a case that then came (batch being trained, or leased to others)


class VirtualAnnotator(threading.Thread):
    def __init__(
        self,
        name: str,
        annotator_target: str,
        selector_target: str,
        ground_truth: dict[str, np.ndarray],
        clicks_per_class: int,
        stop: threading.Event,
        token: str | None = None,
        tls_ca: bytes | None = None,
    ):
        super().__init__(name=f"virtual-{name}", daemon=True)
        self.annotator_id, self.gt, self.k, self.stop_event = name, ground_truth, clicks_per_class, stop
        self._ann_channel = channel(annotator_target, token, tls_ca)
        self._sel_channel = channel(selector_target, token, tls_ca)
        self.annotator = annotator_pb2_grpc.AnnotatorServiceStub(self._ann_channel)
        self.selector = selector_pb2_grpc.SelectorServiceStub(self._sel_channel)
        self.stats = AnnotatorStats()

    def run(self) -> None:
        waiting_since = None
        while not self.stop_event.is_set():
            asked = time.perf_counter()
            try:
                lease = self.selector.NextCase(selector_pb2.NextCaseRequest(annotator_id=self.annotator_id), timeout=30)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE):
                    self.stats.errors.append(f"NextCase: {exc.code().name} {exc.details()}")
                waiting_since = asked if waiting_since is None else waiting_since
                self.stop_event.wait(0.5)  # no free case yet: the batch is being worked on or retraining runs
                continue
            if waiting_since is not None:  # only waits that ended with work count (not the wait for the end)
                self.stats.idle_s += time.perf_counter() - waiting_since
                waiting_since = None
            try:
                self.annotate(lease)
            except grpc.RpcError as exc:
                self.stats.errors.append(f"{lease.case_id}: {exc.code().name} {exc.details()}")
                self.stop_event.wait(0.5)
        self._ann_channel.close()
        self._sel_channel.close()

    def annotate(self, lease: selector_pb2.NextCaseResponse) -> None:
        started = time.perf_counter()
        opened = self.annotator.OpenSession(
            annotator_pb2.OpenSessionRequest(
                case_id=lease.case_id, annotator_id=self.annotator_id, lease_id=lease.lease_id
            ),
            timeout=120,
        )
        geo = opened.geometry
        gt_slices = np.moveaxis(self.gt[lease.case_id], geo.slice_axis, 0)  # (S, rows, cols) in source space
        classes = len(opened.classes)
        for index in range(geo.num_slices):
            reply = self.annotator.GetSlice(
                annotator_pb2.GetSliceRequest(session_id=opened.session_id, slice=index), timeout=60
            )
            mask = decode_mask(reply.mask, (geo.rows, geo.cols))
            for _ in range(self.k):
                clicked = False
                for cls in range(1, classes + 1):
                    click = next_click(gt_slices[index], mask, cls)
                    if click is None:
                        continue
                    voxel = [0, 0, 0]
                    inplane = [a for a in range(3) if a != geo.slice_axis]
                    voxel[geo.slice_axis], voxel[inplane[0]], voxel[inplane[1]] = index, click.y, click.x
                    t0 = time.perf_counter()
                    reply = self.annotator.AddClick(
                        annotator_pb2.AddClickRequest(
                            session_id=opened.session_id,
                            class_index=click.cls,
                            positive=click.positive,
                            voxel=annotator_pb2.Voxel(i=voxel[0], j=voxel[1], k=voxel[2]),
                        ),
                        timeout=60,
                    )
                    self.stats.click_latency_ms.append((time.perf_counter() - t0) * 1000)
                    mask = decode_mask(reply.mask, (geo.rows, geo.cols))
                    clicked = True
                if not clicked:
                    break
        self.annotator.Submit(
            annotator_pb2.SubmitRequest(session_id=opened.session_id, seconds_spent=time.perf_counter() - started),
            timeout=60,
        )
        self.stats.cases.append(lease.case_id)
