"""Drafts survive: every click, edit and undo is in the bucket before its answer, and a new session on the same case
by the same annotator (a reload, a restarted replica) resumes exactly what was shown."""

import time

import numpy as np
import pytest

from saim.annotation.drafts import DraftStore, decode_slice, encode_slice
from saim.annotation.session import Op, SliceState
from saim.data.splits import make_splits
from saim.errors import SaimError
from saim.model.config import ModelConfig
from saim.rpc.wire import decode_mask, encode_mask
from saim.storage.pool import draft_prefix, import_dataset
from saim.v1 import annotator_pb2
from tests.unit.echo import echo_predictor
from tests.unit.fakes import MemoryStore
from tests.unit.harness import annotator_stub
from tests.unit.test_scan_space import INFO, SHAPE, dataset  # noqa: F401  (the fixture)


def _click(stub, sid, ijk, cls=1, positive=True):
    i, j, k = ijk
    request = annotator_pb2.AddClickRequest(
        session_id=sid, class_index=cls, positive=positive, voxel=annotator_pb2.Voxel(i=i, j=j, k=k)
    )
    return stub.AddClick(request)


def test_a_new_session_resumes_the_draft_and_submit_discards_it(dataset):  # noqa: F811
    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=2))
    with annotator_stub(store, echo, 32, publish=False) as (stub, deps):
        deps.drafts = DraftStore(store)
        first = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann"))
        assert not first.draft_slices and first.draft_clicks == 0
        sid = first.session_id
        _click(stub, sid, (41, 7, 3), cls=2)
        clicked = _click(stub, sid, (20, 20, 3), cls=1)
        stroke = np.zeros(SHAPE[:2], np.uint8)
        stroke[5:8, 30:33] = 1
        request = annotator_pb2.EditSliceRequest(session_id=sid, slice=1, class_index=1, painted=encode_mask(1, stroke))
        edited = stub.EditSlice(request)
        _click(stub, sid, (10, 10, 0), cls=1)
        stub.Undo(annotator_pb2.UndoRequest(session_id=sid, slice=0))  # undone: slice 0 is not in the draft
        assert store.list(draft_prefix("u6", "ann"))  # in the bucket before the answers came back

        # the page reloads (or the replica restarts): the same annotator opens the case again
        again = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann"))
        assert again.session_id != sid
        assert list(again.draft_slices) == [1, 3] and again.draft_clicks == 2 and again.draft_edits == 1
        for index, shown in ((3, clicked), (1, edited)):
            got = stub.GetSlice(annotator_pb2.GetSliceRequest(session_id=again.session_id, slice=index))
            np.testing.assert_array_equal(decode_mask(got.mask), decode_mask(shown.mask))
            assert (got.clicks_on_slice, got.edits_on_slice) == (shown.clicks_on_slice, shown.edits_on_slice)
        # undo works across the resume: the second click of slice 3 goes, the first stays
        undone = stub.Undo(annotator_pb2.UndoRequest(session_id=again.session_id, slice=3))
        assert undone.clicks_on_slice == 1 and decode_mask(undone.mask)[41, 7] == 2

        # another annotator does not see this draft
        other = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="bob"))
        assert not other.draft_slices

        stub.Submit(annotator_pb2.SubmitRequest(session_id=again.session_id))
        assert not store.list(draft_prefix("u6", "ann"))
        assert store.stored_versions(draft_prefix("u6", "ann")) == 0  # no version kept under a delete marker
        prov = store.get_json("annotations/u6.json")
        assert prov["num_clicks"] == 1 and prov["num_edits"] == 1 and prov["slices_edited"] == [1, 3]


def test_a_draft_that_does_not_fit_the_scan_is_refused():
    mask = np.zeros((4, 5), np.uint8)
    painted = np.zeros((4, 5), bool)
    painted[1, 1] = True
    state = SliceState(auto=mask, auto_version="v0001", ops=[Op("edit", 1, "v0001", painted=painted)], history=[mask])
    back = decode_slice(encode_slice(state), (4, 5))
    assert back.ops[0].painted[1, 1] and back.ops[0].painted.sum() == 1 and back.auto_version == "v0001"
    with pytest.raises(SaimError, match="does not fit"):
        decode_slice(encode_slice(state), (5, 4))
    with pytest.raises(SaimError, match="not a saim draft"):
        decode_slice(b"garbage", (4, 5))


def test_a_submit_retried_with_its_id_returns_the_first_result_and_stores_nothing_again(dataset):  # noqa: F811
    """A browser that got no answer sends Submit again with the same submission id: one annotation version, one
    event, the first answer; also when the retry races the first submission, or arrives after its session is gone."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=2))
    with annotator_stub(store, echo, 32, publish=False) as (stub, deps):
        published = []
        deps.publisher.publish = lambda topic, event, key=None, **kw: published.append(event.meta.event_id)
        session = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann"))
        _click(stub, session.session_id, (20, 20, 3), cls=1)
        request = annotator_pb2.SubmitRequest(session_id=session.session_id, submission_id="retry-test-0001")
        with ThreadPoolExecutor(2) as pool:  # the retry races the first one on the same session
            answers = list(pool.map(stub.Submit, [request, request]))
        again = stub.Submit(request)  # and once more, after the session is gone
        assert len({(a.annotation_key, a.event_id) for a in [*answers, again]}) == 1
        assert sorted(a.replayed for a in answers) == [False, True] and again.replayed
        assert published == [answers[0].event_id] and store.stored_versions("annotations/u6.json") == 1
        with pytest.raises(grpc.RpcError) as bad:
            stub.Submit(annotator_pb2.SubmitRequest(session_id=session.session_id, submission_id="../../x"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_clicks_never_wait_for_the_selector_and_submit_waits_out_its_restart(dataset):  # noqa: F811
    import threading
    import time

    import grpc

    from saim.errors import PermissionDenied, Unavailable
    from saim.rpc.peers import Lease
    from tests.waiting import poll

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=2))
    selector = {"state": "up", "asked": 0, "expires_at": time.time() + 60}

    def check(case, lease_id, annotator):  # the selector as the annotator's lease checks reach it
        selector["asked"] += 1
        if selector["state"] == "down":
            raise Unavailable("selector could not check the lease: UNAVAILABLE")
        if selector["state"] == "taken":
            raise PermissionDenied(f"case {case} is leased to another annotator")
        return Lease(1, "v0000", selector["expires_at"])

    with annotator_stub(store, echo, 32, publish=False) as (stub, deps):
        deps.leases.check = check
        sid = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann")).session_id
        session = deps.sessions.get(sid)
        selector["state"] = "down"
        for i in range(3):
            session.lease_renewed = 0.0  # a renewal is due at every click
            assert _click(stub, sid, (20, 20 + i, 3)).clicks_on_slice == i + 1  # answered without the selector
        poll(lambda: selector["asked"] >= 2, 10, "the renewals to be tried in the background")
        threading.Timer(1.0, lambda: selector.update(state="up")).start()  # the selector is back in a second
        reply = stub.Submit(annotator_pb2.SubmitRequest(session_id=sid))
        assert reply.annotation_key == "annotations/u6.nii.gz"

        sid = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u7", annotator_id="ann")).session_id
        selector["state"] = "taken"  # the lease went to someone else: the next renewal says so
        deps.sessions.get(sid).lease_renewed = 0.0
        _click(stub, sid, (20, 20, 3))
        with pytest.raises(grpc.RpcError) as lost:
            poll(lambda: _click(stub, sid, (21, 20, 3)) and False, 10, "the refusal to reach the session")
        assert lost.value.code() == grpc.StatusCode.PERMISSION_DENIED

        selector.update(state="up", expires_at=time.time() - 1)  # renewed once more, to an expiry already past
        sid = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u7", annotator_id="ann")).session_id
        with pytest.raises(grpc.RpcError) as expired:
            _click(stub, sid, (20, 20, 3))
        assert expired.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "expired" in expired.value.details()


def test_untouched_slices_are_predicted_once_the_case_is_on_screen_so_submit_predicts_nothing(dataset):  # noqa: F811
    from tests.waiting import poll

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=2))
    with annotator_stub(store, echo, 32, publish=False) as (stub, deps):
        sid = stub.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann")).session_id
        session = deps.sessions.get(sid)
        for _chunk in stub.GetVolume(annotator_pb2.GetVolumeRequest(session_id=sid)):
            pass
        time.sleep(0.5)  # the page still loading the scan: nothing competes with it
        assert all(state.auto is None for state in session.slices.values())
        _click(stub, sid, (20, 20, 3), cls=1)  # the case is on screen
        num_slices = session.geometry.num_slices
        poll(lambda: all(session._state(i).auto is not None for i in range(num_slices)), 30, "the prefill")

        def nothing_left(*args):
            raise AssertionError("Submit predicted a slice")

        session._predict_auto = nothing_left
        reply = stub.Submit(annotator_pb2.SubmitRequest(session_id=sid))
        provenance = store.get_json(reply.provenance_key)
        assert provenance["slices_edited"] == [3]
        assert len(provenance["slices_accepted_unedited"]) == num_slices - 1


def _two_replicas(store):
    """Two annotator replicas over one bucket, as deployed: each with its own sessions in memory."""
    import contextlib

    echo = echo_predictor(ModelConfig(classes=INFO.classes, image_size=32, click_radius=2))
    stack = contextlib.ExitStack()
    replicas = [stack.enter_context(annotator_stub(store, echo, 32, publish=False)) for _ in range(2)]
    for _, deps in replicas:
        deps.drafts = DraftStore(store)
    return stack, [stub for stub, _ in replicas], [deps for _, deps in replicas]


def test_any_replica_serves_any_session_and_the_replicas_never_diverge(dataset):  # noqa: F811
    """Requests of one session alternate between two replicas (a non-sticky load balancer): the second rebuilds the
    session from storage, every operation applies on top of the other replica's, a retried request is applied once,
    and the stored annotation has every click exactly once."""
    import grpc

    from saim.rpc import telemetry

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    rebuilt = telemetry.SESSIONS_REBUILT._value.get()
    stack, (a, b), (deps_a, deps_b) = _two_replicas(store)
    with stack:
        sid = a.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann")).session_id
        assert _click(a, sid, (20, 20, 3)).clicks_on_slice == 1
        assert _click(b, sid, (22, 20, 3)).clicks_on_slice == 2  # B never saw the session: rebuilt from storage
        assert telemetry.SESSIONS_REBUILT._value.get() == rebuilt + 1
        assert _click(a, sid, (24, 20, 3)).clicks_on_slice == 3  # A's copy was stale: it read B's click first
        undone = b.Undo(annotator_pb2.UndoRequest(session_id=sid, slice=3))
        assert undone.clicks_on_slice == 2
        shown = a.GetSlice(annotator_pb2.GetSliceRequest(session_id=sid, slice=3))
        assert shown.clicks_on_slice == 2  # A shows what B left, not its own memory
        np.testing.assert_array_equal(decode_mask(shown.mask), decode_mask(undone.mask))

        # a click whose answer was lost is sent again, to the other replica: applied once
        request = annotator_pb2.AddClickRequest(
            session_id=sid, class_index=2, voxel=annotator_pb2.Voxel(i=41, j=7, k=3), request_id="click-000001"
        )
        first, retried = a.AddClick(request), b.AddClick(request)
        assert (first.clicks_on_slice, first.replayed) == (3, False)
        assert (retried.clicks_on_slice, retried.replayed) == (3, True)
        np.testing.assert_array_equal(decode_mask(first.mask), decode_mask(retried.mask))

        reply = b.Submit(annotator_pb2.SubmitRequest(session_id=sid, submission_id="two-replicas-01"))
        provenance = store.get_json(reply.provenance_key)
        assert provenance["num_clicks"] == 3 and provenance["session_id"] == sid
        assert sorted(tuple(c["voxel"]) for c in provenance["clicks"]) == [(20, 20, 3), (22, 20, 3), (41, 7, 3)]
        assert a.Submit(annotator_pb2.SubmitRequest(session_id=sid, submission_id="two-replicas-01")).replayed
        assert store.stored_versions("annotations/u6.json") == 1
        assert not store.list(draft_prefix("u6")) and not store.list("sessions/")  # nothing left behind
        for stub in (a, b):  # submitted: A drops its stale copy, and no replica rebuilds it
            with pytest.raises(grpc.RpcError) as gone:
                _click(stub, sid, (20, 20, 3))
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        assert not deps_a.sessions.open(sid) and not deps_b.sessions.open(sid)
        with pytest.raises(grpc.RpcError) as again:  # nor submits it again under another id
            a.Submit(annotator_pb2.SubmitRequest(session_id=sid, submission_id="two-replicas-02"))
        assert again.value.code() == grpc.StatusCode.NOT_FOUND and store.stored_versions("annotations/u6.json") == 1


def test_a_replica_that_has_just_started_loads_the_model_before_it_rebuilds_a_session(dataset):  # noqa: F811
    """A restarted replica answers gRPC before its start-up has loaded the current version (the app starts after
    the server): a click that reaches it then, on a session it rebuilds, waits for the model instead of failing."""
    import contextlib

    from saim.model.predictor import InteractivePredictor
    from saim.registry.live import LiveModel
    from saim.registry.versions import ModelRegistry

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    predictor = InteractivePredictor(ModelConfig(classes=INFO.classes, image_size=32, encoder="resnet18"))
    with contextlib.ExitStack() as stack:
        a, deps_a = stack.enter_context(annotator_stub(store, predictor, 32))  # publishes v0000 and serves it
        b, deps_b = stack.enter_context(annotator_stub(store, predictor, 32, publish=False))
        deps_b.model = LiveModel(ModelRegistry(store))  # B's start-up load has not run yet
        for deps in (deps_a, deps_b):
            deps.drafts = DraftStore(store)
        sid = a.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann")).session_id
        assert _click(a, sid, (20, 20, 3)).clicks_on_slice == 1
        assert deps_b.model.version() is None
        answer = _click(b, sid, (22, 20, 3))
        assert (answer.clicks_on_slice, answer.model_version, deps_b.model.version()) == (2, "v0000", "v0000")


def test_a_draft_write_loses_to_the_other_replicas_newer_write():
    """The conditional write: a state read before the other replica's write cannot overwrite it."""
    import threading
    from types import SimpleNamespace

    from saim.annotation.session import AnnotationSession
    from saim.errors import Conflict

    store = MemoryStore()
    drafts = DraftStore(store)
    geometry = SimpleNamespace(slice_shape=(4, 4), check_slice=lambda index: None)

    def replica_copy() -> AnnotationSession:  # one session's copy on a replica: only what drafts touch
        session = AnnotationSession.__new__(AnnotationSession)
        session.case, session.annotator, session.series = "c", "ann", SimpleNamespace(geometry=geometry)
        session.lock, session.versions_used = threading.Lock(), set()
        session.slices = {0: SliceState(auto=np.zeros((4, 4), np.uint8), auto_version="v1")}
        return session

    first, second = replica_copy(), replica_copy()
    first.slices[0].ops.append(Op("edit", 1, "v1", painted=np.ones((4, 4), bool)))
    first.slices[0].history.append(np.ones((4, 4), np.uint8))
    assert drafts.save(first, 0)
    second.slices[0].ops.append(Op("edit", 2, "v1", painted=np.ones((4, 4), bool)))
    second.slices[0].history.append(np.full((4, 4), 2, np.uint8))
    with pytest.raises(Conflict):
        drafts.save(second, 0)  # written from a state that never saw the first replica's edit
    assert drafts.refresh(second, 0)  # read again: the first replica's edit, on which the operation is applied anew
    assert second.slices[0].count("edit") == 1 and second.slices[0].mask.max() == 1
    assert drafts.save(second, 0)


def test_concurrent_and_orphaned_submissions_store_one_annotation(dataset):  # noqa: F811
    """The same submission reaches both replicas at once: one stores, the other answers its result. A claim whose
    replica died before it stored anything is taken over; one that died after storing is answered from storage."""
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor

    from saim.storage.pool import submission_key

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    stack, (a, b), (deps_a, _) = _two_replicas(store)
    with stack:
        sid = a.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann")).session_id
        _click(a, sid, (20, 20, 3))
        request = annotator_pb2.SubmitRequest(session_id=sid, submission_id="both-at-once-1")
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda stub: stub.Submit(request), [a, b]))
        assert sorted(x.replayed for x in answers) == [False, True]
        assert len({x.provenance_key for x in answers}) == 1 and store.stored_versions("annotations/u6.json") == 1

        # a replica claimed u7's submission and died before storing: the retry, a minute later, stores it
        sid = a.OpenSession(annotator_pb2.OpenSessionRequest(case_id="u7", annotator_id="ann")).session_id
        _click(a, sid, (20, 20, 3))
        orphan = {"state": "pending", "annotator": "ann", "session_id": sid, "at": time.time() - 60}
        store.put_json(submission_key("orphaned-claim-1"), orphan)
        reply = b.Submit(annotator_pb2.SubmitRequest(session_id=sid, submission_id="orphaned-claim-1"))
        assert not reply.replayed and store.stored_versions("annotations/u7.json") == 1
        assert json.loads(store.objects[submission_key("orphaned-claim-1")])["state"] == "done"

        # a replica claimed c5's submission, stored the annotation and died before recording its answer
        sid = a.OpenSession(annotator_pb2.OpenSessionRequest(case_id="c5", annotator_id="ann")).session_id
        _click(a, sid, (20, 20, 3))
        session = deps_a.sessions.get(sid)
        labels = session.labels(deps_a.model.current)
        deps_a.pool.store_submission("c5", "ann", labels, session.affine, session.provenance(None))
        store.put_json(submission_key("stored-then-died"), {**orphan, "session_id": sid})
        reply = b.Submit(annotator_pb2.SubmitRequest(session_id=sid, submission_id="stored-then-died"))
        assert reply.provenance_key == "annotations/c5.json"
        assert store.stored_versions("annotations/c5.json") == 1  # answered from storage, not stored again


def test_a_session_id_chosen_by_the_client_is_checked_and_never_given_twice(dataset):  # noqa: F811
    import grpc

    store = MemoryStore()
    import_dataset(store, dataset, make_splits(dataset.cases, 0, unlabelled=dataset.unlabelled))
    stack, (a, b), _ = _two_replicas(store)
    with stack:
        chosen = "ab" * 16
        request = annotator_pb2.OpenSessionRequest(case_id="u6", annotator_id="ann", session_id=chosen)
        assert a.OpenSession(request).session_id == chosen
        assert _click(b, chosen, (20, 20, 3)).clicks_on_slice == 1  # the id is the session, on any replica
        for stub, session_id, code in (
            (b, chosen, grpc.StatusCode.ABORTED),  # taken (on another replica too): the record exists
            (a, "../sessions/x", grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.OpenSession(
                    annotator_pb2.OpenSessionRequest(case_id="u7", annotator_id="ann", session_id=session_id)
                )
            assert refused.value.code() == code
        assert store.get_json(f"sessions/{chosen}.json")["case"] == "u6"  # the first session's record stands
