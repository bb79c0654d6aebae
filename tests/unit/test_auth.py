"""Access control: the token registry, the per-method policy over a real gRPC channel, and TLS."""

from types import SimpleNamespace

import grpc
import pytest

from saim import errors
from saim.rpc import auth, tokens
from saim.rpc.channel import channel
from saim.rpc.server import Health, Security, create_server
from saim.stack.certs import self_signed
from saim.v1 import annotator_pb2, annotator_pb2_grpc, selector_pb2, selector_pb2_grpc
from tests.unit.fakes import MemoryStore


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_tokens_are_stored_hashed_and_resolve_to_their_principal():
    store = MemoryStore()
    registry = tokens.TokenRegistry(store)
    token_id, token = registry.issue("alice")
    assert token.startswith(tokens.TOKEN_PREFIX) and len(token) > 40
    stored = store.objects[tokens.TOKENS_KEY].decode()
    assert token not in stored and tokens.token_hash(token) in stored
    assert registry.verify(token) == tokens.Principal("alice", tokens.ANNOTATOR)
    assert registry.verify(token + "x") is None
    assert [t["id"] for t in registry.list()] == [token_id] and "sha256" not in registry.list()[0]


def test_revocation_takes_effect_after_the_refresh_interval():
    store, clock = MemoryStore(), Clock()
    admin = tokens.TokenRegistry(store)
    server_side = tokens.TokenRegistry(store, refresh_s=5.0, clock=clock)
    _, token = admin.issue("bob")
    assert server_side.verify(token) is not None
    admin.revoke("bob")
    assert server_side.verify(token) is not None  # cached table, within the refresh interval
    clock.t = 6.0
    assert server_side.verify(token) is None
    with pytest.raises(errors.NotFound):
        admin.revoke("bob")  # nothing live left


def test_a_new_token_works_at_once_and_unknown_tokens_reread_at_most_once_a_second():
    store, clock = MemoryStore(), Clock()
    admin = tokens.TokenRegistry(store)
    server_side = tokens.TokenRegistry(store, refresh_s=5.0, clock=clock)
    _, first = admin.issue("dave")
    assert server_side.verify(first) is not None  # the server has its table now
    _, fresh = admin.issue("erin")
    assert server_side.verify(fresh) == tokens.Principal("erin", tokens.ANNOTATOR)  # not only after refresh_s

    reads = []
    get_bytes = store.get_bytes
    store.get_bytes = lambda key: reads.append(key) or get_bytes(key)
    clock.t = 1.0  # a second after erin's miss
    for _ in range(50):
        assert server_side.verify("saim_unknown") is None
    assert len(reads) == 1  # one re-read for the whole flood
    clock.t = 1.5
    assert server_side.verify("saim_unknown") is None and len(reads) == 1
    clock.t = 2.0
    assert server_side.verify("saim_unknown") is None and len(reads) == 2


def test_storage_outage_keeps_the_last_table():
    store, clock = MemoryStore(), Clock()
    _, token = tokens.TokenRegistry(store).issue("carol")
    registry = tokens.TokenRegistry(store, refresh_s=5.0, clock=clock)
    assert registry.verify(token) is not None

    def down(key):
        raise ConnectionError("S3 unreachable")

    store.get_bytes = down
    clock.t = 60.0
    assert registry.verify(token) == tokens.Principal("carol", tokens.ANNOTATOR)


@pytest.mark.parametrize("name, role", [("", "annotator"), ("a b", "annotator"), ("x", "root")])
def test_issue_rejects_bad_names_and_roles(name, role):
    with pytest.raises(errors.InvalidInput):
        tokens.TokenRegistry(MemoryStore()).issue(name, role)


def test_every_rpc_of_every_service_has_a_policy():
    from saim.v1 import annotator_pb2, selector_pb2, trainer_pb2

    methods = [
        m
        for mod in (annotator_pb2, selector_pb2, trainer_pb2)
        for svc in mod.DESCRIPTOR.services_by_name.values()
        for m in svc.methods
    ]
    assert {f"/{m.containing_service.full_name}/{m.name}" for m in methods} == set(auth.POLICY)
    # the interceptors guard unary calls and streamed replies; a streamed request would need its own wrapper
    assert not [m.name for m in methods if m.client_streaming]


class _Echo(selector_pb2_grpc.SelectorServiceServicer):
    def NextCase(self, request, context):
        auth.require_actor(request.annotator_id)
        p = auth.current_principal()
        return selector_pb2.NextCaseResponse(case_id=f"{p.name}/{p.role}")

    def CheckLease(self, request, context):
        return selector_pb2.CheckLeaseResponse(model_version=auth.current_principal().role)


def _serve(name: str, add, servicer, security: Security):
    """A started server of the saim.v1 service `name` with `security`: (server, port)."""
    service = f"saim.v1.{name.capitalize()}Service"
    server, port = create_server(
        name,
        service,
        lambda s: add(servicer, s),
        Health(service),
        SimpleNamespace(grpc_host="127.0.0.1", grpc_port=0, max_message_mb=4),
        security,
    )
    server.start()
    return server, port


@pytest.fixture
def secured(tmp_path):
    """A selector-shaped server with auth and TLS (self-signed certificate for 127.0.0.1)."""
    certs = self_signed(tmp_path)
    store = MemoryStore()
    registry = tokens.TokenRegistry(store)
    authenticator = auth.Authenticator(registry, admin_token="adm-secret", service_token="svc-secret")
    security = Security(authenticator, (certs["key"].read_bytes(), certs["cert"].read_bytes()))
    server, port = _serve("selector", selector_pb2_grpc.add_SelectorServiceServicer_to_server, _Echo(), security)
    yield SimpleNamespace(target=f"127.0.0.1:{port}", ca=certs["cert"].read_bytes(), registry=registry)
    server.stop(0)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_policy_over_tls(secured):
    _, alice = secured.registry.issue("alice")

    def stub(token):
        return selector_pb2_grpc.SelectorServiceStub(channel(secured.target, token, secured.ca))

    req = selector_pb2.NextCaseRequest(annotator_id="alice")
    assert stub(alice).NextCase(req, timeout=5).case_id == "alice/annotator"
    assert stub("adm-secret").NextCase(req, timeout=5).case_id == "admin/admin"  # admin acts for anyone
    assert _code(lambda: stub(None).NextCase(req, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: stub("saim_forged").NextCase(req, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    other = selector_pb2.NextCaseRequest(annotator_id="bob")
    assert _code(lambda: stub(alice).NextCase(other, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    check = selector_pb2.CheckLeaseRequest(case_id="c", lease_id="l", annotator_id="alice")
    assert _code(lambda: stub(alice).CheckLease(check, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    assert stub("svc-secret").CheckLease(check, timeout=5).model_version == "service"
    assert _code(lambda: stub("svc-secret").NextCase(req, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED


def test_malformed_authorization_header_is_unauthenticated(secured):
    with channel(secured.target, None, secured.ca) as ch:
        stub = selector_pb2_grpc.SelectorServiceStub(ch)
        req = selector_pb2.NextCaseRequest(annotator_id="alice")
        call = lambda: stub.NextCase(req, timeout=5, metadata=[("authorization", "Basic abc")])  # noqa: E731
        assert _code(call) == grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_client_cannot_talk_to_a_tls_server(secured):
    with grpc.insecure_channel(secured.target) as ch:
        stub = selector_pb2_grpc.SelectorServiceStub(ch)
        code = _code(lambda: stub.NextCase(selector_pb2.NextCaseRequest(annotator_id="a"), timeout=3))
        assert code == grpc.StatusCode.UNAVAILABLE


def test_health_is_open_without_a_token(secured):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with channel(secured.target, None, secured.ca) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class _Volume(annotator_pb2_grpc.AnnotatorServiceServicer):
    def GetVolume(self, request, context):
        yield annotator_pb2.VolumeChunk(first_slice=0, num_slices=1, image_dtype=auth.current_principal().name)
        raise errors.NotFound(f"unknown or expired session {request.session_id!r}")


def test_a_streamed_reply_is_authorised_before_its_first_message_and_its_errors_mapped():
    registry = tokens.TokenRegistry(MemoryStore())
    _, carol = registry.issue("carol")
    security = Security(auth.Authenticator(registry, admin_token="adm", service_token="svc"))
    server, port = _serve("annotator", annotator_pb2_grpc.add_AnnotatorServiceServicer_to_server, _Volume(), security)
    try:

        def read(token):
            with channel(f"127.0.0.1:{port}", token) as ch:
                stream = annotator_pb2_grpc.AnnotatorServiceStub(ch).GetVolume(
                    annotator_pb2.GetVolumeRequest(session_id="s1"), timeout=5
                )
                got = []
                with pytest.raises(grpc.RpcError) as info:
                    got.extend(stream)
                return [c.image_dtype for c in got], info.value.code()

        assert read(None) == ([], grpc.StatusCode.UNAUTHENTICATED)
        assert read("svc") == ([], grpc.StatusCode.PERMISSION_DENIED)  # the services' token may not read scans
        assert read(carol) == (["carol"], grpc.StatusCode.NOT_FOUND)  # the caller, then the domain error's status
    finally:
        server.stop(0)
