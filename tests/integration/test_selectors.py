"""Two selector replicas over one bucket (saim.selection.leader): one leads, the other forwards its calls to it,
and takes over with the leader's state when the leader is killed -9."""

from __future__ import annotations

import time

import grpc

from saim.data import phantom
from saim.model.config import ModelConfig
from saim.model.predictor import InteractivePredictor
from saim.registry.versions import ModelRegistry
from saim.rpc.channel import channel as open_channel
from saim.selection.leader import LEADER_KEY
from saim.stack.local import LocalStack
from saim.v1 import selector_pb2, selector_pb2_grpc
from tests.stack_settings import stack_settings
from tests.waiting import poll

LEASE_S = 3.0


def test_a_standby_forwards_to_the_leader_and_takes_over_its_state_when_it_dies(tmp_path):
    data = phantom.generate(tmp_path / "dataset", num_series=10, depth=4, size=48, seed=4)
    settings = stack_settings(
        epochs=1, steps_per_epoch=1, batch_size=2, iterations=2, SAIM_SELECTOR_LEASE_S=str(LEASE_S)
    )
    stack = LocalStack(tmp_path / "stack", settings=settings)
    try:
        stack.start_broker()
        stack.start_s3()
        stack.import_dataset(data, seed=0)
        store = stack.store()
        config = ModelConfig(classes=phantom.CLASSES, image_size=64, encoder="resnet18")
        ModelRegistry(store).publish(InteractivePredictor(config), iteration=0)
        stack.start_service("selector")
        stack.wait_serving(["selector"], timeout_s=120)  # the first one leads (the lease was free)
        stack.start_service("selector-2", "services.selector")
        stack.wait_serving(["selector-2"], timeout_s=60)  # a standby is ready: it forwards while a leader lives
        assert store.get_json(LEADER_KEY)["holder"] == "local-selector"

        def stub(name: str):
            return selector_pb2_grpc.SelectorServiceStub(stack.channel(name))

        standby = stub("selector-2")
        via_standby = standby.NextCase(selector_pb2.NextCaseRequest(annotator_id="ann-1"), timeout=30)
        leader_status = stub("selector").GetStatus(selector_pb2.GetStatusRequest(), timeout=30)
        assert via_standby.case_id in leader_status.batch  # answered by the leader, with its batch
        assert [a.annotator_id for a in leader_status.annotators] == ["ann-1"]

        stack.kill("selector")  # kill -9: the lease is not released, it runs out
        killed = time.monotonic()

        def answered():
            try:
                return standby.NextCase(selector_pb2.NextCaseRequest(annotator_id="ann-1"), timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc  # nobody leads yet: retry, never a wrong answer
                return None

        again = poll(answered, 60, "the standby to lead")
        outage = time.monotonic() - killed
        assert store.get_json(LEADER_KEY)["holder"] == "local-selector-2"
        assert again.case_id == via_standby.case_id and again.lease_id == via_standby.lease_id  # the state carried over
        # what an annotator or gateway of this stack is given: every selector, tried in order (the first is dead)
        with open_channel(stack.selector_target(), stack.admin_token) as channel:
            anyone = selector_pb2_grpc.SelectorServiceStub(channel)
            same = anyone.NextCase(selector_pb2.NextCaseRequest(annotator_id="ann-1"), timeout=30)
            assert (same.case_id, same.lease_id) == (again.case_id, again.lease_id)
        other = standby.NextCase(selector_pb2.NextCaseRequest(annotator_id="ann-2"), timeout=30)
        assert other.case_id != again.case_id
        assert outage < LEASE_S + 30, outage
        print(f"selector leader killed -9: the standby answered {outage:.1f} s later (lease term {LEASE_S:g} s)")
    finally:
        stack.stop()
