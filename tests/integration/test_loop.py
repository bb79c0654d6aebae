"""The distributed SAIM loop, checked through the public gRPC API, the bucket and the topics."""

from __future__ import annotations

import json

import boto3
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaProducer

from saim.data.nifti import volume_from_bytes
from saim.events import BATCH_COMPLETED, GROUP_SELECTOR, GROUP_TRAINER, new_meta
from saim.stack.local import ACCESS_KEY, SECRET_KEY, SERVICES
from saim.v1 import events_pb2, selector_pb2, trainer_pb2
from tests.waiting import poll

from .conftest import annotator_serves, committed_to_end


def models(run):
    return sorted(run.trainer().ListModels(trainer_pb2.ListModelsRequest(), timeout=10).models, key=lambda m: m.version)


def test_standard_health_check_answers_serving(completed_run):
    for service in SERVICES:
        with grpc.insecure_channel(completed_run.stack.target(service)) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_each_finished_batch_produces_exactly_one_retrain(completed_run):
    versions = models(completed_run)
    assert [m.iteration for m in versions] == [0, 1, 2]
    assert [m.version for m in versions] == ["v0000", "v0001", "v0002"]
    assert [m.parent_version for m in versions] == ["", "v0000", "v0001"]
    obs = completed_run.observer
    assert len(obs.of("saim.batch.completed")) == 2
    assert len(obs.of("saim.model.published")) == 3
    assert len(obs.of("saim.annotation.submitted")) == 4  # 2 batches x 2 series, each annotated once


def test_new_version_is_in_storage_with_metadata_before_its_event(completed_run):
    store = completed_run.stack.store()
    for rec in completed_run.observer.of("saim.model.published"):
        event = events_pb2.ModelPublished.FromString(rec.value)
        assert rec.metadata_existed, f"{event.version}: metadata missing when its event arrived"
        meta = store.get_json(event.metadata_key)
        assert meta["version"] == event.version and meta["iteration"] == event.iteration
        assert {"parent_version", "training_set", "metrics", "created_at", "weights_sha256"} <= set(meta)
        stat = store.client.stat_object(store.bucket, event.metadata_key)
        assert stat.last_modified.timestamp() <= event.meta.created_unix_ms / 1000 + 1.0
    assert store.get_json("models/CURRENT")["version"] == "v0002"


def test_training_set_manifest_grows_with_the_annotated_pool(completed_run):
    store = completed_run.stack.store()
    sizes = [len(store.get_json(f"models/{v}/metadata.json")["training_set"]) for v in ("v0000", "v0001", "v0002")]
    initial = sizes[0]
    assert sizes == [initial, initial + 2, initial + 4]
    last = store.get_json("models/v0002/metadata.json")["training_set"]
    assert {e["source"] for e in last} == {"ground_truth", "saim"}


def test_annotations_carry_full_provenance_and_clicks_use_the_batch_model(completed_run):
    store = completed_run.stack.store()
    keys = [k for k in store.list("annotations/") if k.endswith(".json")]
    assert len(keys) == 4
    by_iteration = {}
    for key in keys:
        prov = store.get_json(key)
        assert prov["annotator"] in {"ann-0", "ann-1"} and prov["lease_id"]
        assert prov["num_clicks"] > 0 and prov["seconds_spent_server"] > 0 and prov["seconds_spent_client"] > 0
        by_iteration.setdefault(prov["iteration"], []).append(prov)
        volume, affine = volume_from_bytes(store.get_bytes(key.replace(".json", ".nii.gz")))
        image, image_affine = volume_from_bytes(store.get_bytes(f"dataset/imagesTr/{prov['case']}_0000.nii.gz"))
        assert volume.shape == image.shape == tuple(prov["geometry"]["shape"])  # the scan's geometry, every slice
        assert np.allclose(affine, image_affine)
        assert sorted(prov["slices_edited"] + prov["slices_accepted_unedited"]) == list(range(image.shape[2]))
    # batch n was chosen with the model of iteration n-1, and every click on it was answered by that version
    assert sorted(by_iteration) == [1, 2]
    assert all(p["model_versions_used"] == ["v0000"] for p in by_iteration[1])
    assert all(p["model_versions_used"] == ["v0001"] for p in by_iteration[2])


def test_every_score_is_stamped_with_the_version_that_made_it(completed_run):
    reply = completed_run.selector().GetScores(selector_pb2.GetScoresRequest(), timeout=10)
    assert reply.strategy == "fg_random"  # the default
    assert {s.model_version for s in reply.scores} == {"v0002"}
    store = completed_run.stack.store()
    for version in ("v0000", "v0001", "v0002"):
        table = store.get_json(f"scores/{version}.json")
        assert table["model_version"] == version and table["strategy"] == "fg_random"
    # each table covers only series that were unannotated when it was made; the pool shrinks as batches are annotated
    # (the pool of the original import: test_export's `saim admin import` may have added a series since)
    whole_pool = set(store.get_json("dataset/splits.json")["pool"])
    pool = whole_pool & set(completed_run.dataset.cases)
    scored = [set(store.get_json(f"scores/{v}.json")["scores"]) for v in ("v0000", "v0001", "v0002")]
    assert all(t <= whole_pool for t in scored)
    tables = [t & pool for t in scored]
    assert len(tables[0]) == len(pool)
    assert len(tables[2]) == len(pool) - 4


def test_replayed_events_change_nothing(completed_run):
    run = completed_run
    bootstrap = run.stack.kafka_bootstrap
    before_models = [m.version for m in models(run)]
    before_status = run.selector().GetStatus(selector_pb2.GetStatusRequest(), timeout=10)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for rec in run.observer.records:  # the same events again, same ids
        producer.send(rec.topic, value=rec.value, key=rec.key)
    # and a completion of batch 1 under a fresh event id (a re-sent notification, not a byte-level duplicate)
    fresh = events_pb2.BatchCompleted(meta=new_meta("test"), iteration=1)
    producer.send(BATCH_COMPLETED.name, fresh.SerializeToString())
    producer.flush()
    producer.close()
    for group, topic in (
        (GROUP_TRAINER, "saim.batch.completed"),
        (GROUP_SELECTOR, "saim.annotation.submitted"),
        (GROUP_SELECTOR, "saim.model.published"),
    ):
        poll(
            lambda g=group, t=topic: committed_to_end(bootstrap, g, t), 60, f"{group} to consume the replay of {topic}"
        )
    status = run.trainer().GetStatus(trainer_pb2.GetTrainerStatusRequest(), timeout=10)
    assert status.state == "idle" and status.queued == 0
    assert [m.version for m in models(run)] == before_models
    after_status = run.selector().GetStatus(selector_pb2.GetStatusRequest(), timeout=10)
    assert after_status == before_status


def test_bucket_is_readable_by_a_plain_s3_client(completed_run):
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{completed_run.stack.s3_endpoint}",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="saim", MaxKeys=1000)["Contents"]}
    assert {"models/CURRENT", "models/v0002/weights.safetensors", "dataset/splits.json"} <= keys
    pointer = json.loads(s3.get_object(Bucket="saim", Key="models/CURRENT")["Body"].read())
    assert pointer["version"] == "v0002"
    assert s3.get_bucket_versioning(Bucket="saim")["Status"] == "Enabled"


def test_topics_decode_with_an_independent_kafka_client(completed_run):
    decoded = {
        "saim.annotation.submitted": events_pb2.AnnotationSubmitted,
        "saim.batch.completed": events_pb2.BatchCompleted,
        "saim.model.published": events_pb2.ModelPublished,
    }
    ids = set()
    for rec in completed_run.observer.records:
        event = decoded[rec.topic].FromString(rec.value)
        assert event.meta.event_id and event.meta.producer in {"annotator", "selector", "trainer", "test"}
        ids.add(event.meta.event_id)
    assert len(ids) == len({r.value for r in completed_run.observer.records})  # every distinct event has its own id


def test_unknown_case_and_foreign_lease_get_precise_codes(completed_run):
    from saim.v1 import annotator_pb2, annotator_pb2_grpc

    with completed_run.stack.channel("annotator") as channel:
        stub = annotator_pb2_grpc.AnnotatorServiceStub(channel)
        try:
            stub.OpenSession(
                annotator_pb2.OpenSessionRequest(case_id="nope", annotator_id="x", lease_id="y"), timeout=10
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND and "'nope' is not in the annotation pool" in exc.details()
        else:
            raise AssertionError("opening a case without a lease must fail")
        try:
            stub.AddClick(annotator_pb2.AddClickRequest(session_id="missing", class_index=1), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND and "missing" in exc.details()
        else:
            raise AssertionError("a click on an unknown session must fail")
    assert np.all([a.stats.errors == [] for a in completed_run.annotators])


def test_every_service_exports_its_metrics(completed_run):
    import urllib.request

    ports = completed_run.stack.ports
    texts = {
        s: urllib.request.urlopen(f"http://127.0.0.1:{ports[s + '_metrics']}/metrics", timeout=5).read().decode()
        for s in SERVICES
    }
    assert "saim_click_latency_seconds_count" in texts["annotator"]
    assert 'saim_model_version{service="annotator"} 2.0' in texts["annotator"]
    assert 'saim_grpc_requests_total{code="OK",method="AddClick",service="annotator"}' in texts["annotator"]
    assert (
        'saim_pool_series{state="annotated"} 4.0' in texts["selector"]
        and "saim_batch_iteration 2.0" in texts["selector"]
    )
    assert "saim_scoring_slices_per_second" in texts["selector"]
    assert "saim_training_duration_seconds_count 3.0" in texts["trainer"] and "saim_training_loss" in texts["trainer"]
    assert 'saim_event_lag_seconds_count{topic="saim.batch.completed"}' in texts["trainer"]


def test_per_annotator_progress_is_visible(completed_run):
    status = completed_run.selector().GetStatus(selector_pb2.GetStatusRequest(), timeout=10)
    assert status.iteration == 2 and status.complete
    progress = {p.annotator_id: (p.leased, p.submitted) for p in status.annotators}
    assert set(progress) <= {"ann-0", "ann-1"} and sum(s for _, s in progress.values()) == 2
    assert all(leased == 0 for leased, _ in progress.values())


def test_rollback_moves_current_and_the_services_follow(completed_run):
    run = completed_run
    stack, trainer = run.stack, run.trainer()

    try:
        reply = trainer.Rollback(trainer_pb2.RollbackRequest(version="v0001"), timeout=10)
        assert (reply.previous_version, reply.current_version) == ("v0002", "v0001")
        assert stack.store().get_json("models/CURRENT")["version"] == "v0001"
        poll(lambda: annotator_serves(stack, 1), 60, "the annotator to load v0001")
        listed = {m.version: m for m in models(run)}
        assert listed["v0001"].current and not listed["v0002"].current
        try:
            trainer.Rollback(trainer_pb2.RollbackRequest(version="v0099"), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND and "v0099" in exc.details()
        else:
            raise AssertionError("rolling back to an unknown version must fail")
    finally:
        trainer.Rollback(trainer_pb2.RollbackRequest(version="v0002"), timeout=10)
        poll(lambda: annotator_serves(stack, 2), 60, "the annotator to load v0002 again")
        poll(
            lambda: committed_to_end(stack.kafka_bootstrap, GROUP_SELECTOR, "saim.model.published"),
            60,
            f"{GROUP_SELECTOR} to handle the roll-forward",
        )


def test_malformed_events_go_to_the_dead_letter_topic_and_consumers_carry_on(completed_run):
    from tests.chaos.faults import capture_events

    run = completed_run
    bootstrap = run.stack.kafka_bootstrap
    garbage = {"saim.annotation.submitted": b"\xff\xfenot a protobuf", "saim.batch.completed": b"\x0a\x02\x08"}
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for topic, value in garbage.items():
        producer.send(topic, value=value)
    producer.flush()
    producer.close()
    for group, topic in ((GROUP_SELECTOR, "saim.annotation.submitted"), (GROUP_TRAINER, "saim.batch.completed")):
        poll(lambda g=group, t=topic: committed_to_end(bootstrap, g, t), 60, f"{group} to get past the bad message")

    def dead_letters():
        found = {value for _, value, _ in capture_events(bootstrap, ["saim.dead-letter"])}
        return found if set(garbage.values()) <= found else None

    poll(dead_letters, 30, "both bad messages on the dead-letter topic")
    status = run.trainer().GetStatus(trainer_pb2.GetTrainerStatusRequest(), timeout=10)
    assert status.state == "idle" and status.queued == 0  # an event without an id did not start a run
    for service in SERVICES:  # still serving
        with run.stack.channel(service, "") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_no_secret_appears_in_any_service_log(completed_run):
    stack = completed_run.stack
    secrets = {stack.admin_token, stack.service_token, SECRET_KEY}
    text = "".join(stack.procs[s].log_path.read_text(errors="replace") for s in SERVICES)
    assert '"s3_secret_key":"**********"' in text and '"admin_token":"**********"' in text  # settings were logged
    assert not [s for s in secrets if s in text]
