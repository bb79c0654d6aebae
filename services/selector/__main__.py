"""python -m services.selector — reads SAIM_* settings, serves until SIGTERM."""

import socket

from saim.events import SCORING_PARTS
from saim.rpc.channel import channel
from saim.rpc.service import failure_reporter
from saim.selection import LeaderLease, LocalScoring, Scoring, SelectionLoop, ShardedScoring, make_strategy
from saim.settings import ServiceSettings
from services.common import Infra, main

from .server import Leadership, SelectorApp, SelectorDeps


def advertised(settings: ServiceSettings) -> str:
    """Where the other selector replicas reach this one: SAIM_SELECTOR_ADVERTISE, else the gRPC host (this host's
    name when it listens on every interface) and port."""
    if settings.selector_advertise:
        return settings.selector_advertise
    host = settings.grpc_host if settings.grpc_host not in ("", "0.0.0.0", "::", "[::]") else socket.gethostname()
    return f"{host}:{settings.grpc_port}"


def leadership(settings: ServiceSettings, infra: Infra) -> Leadership:
    address = advertised(settings)
    lease = LeaderLease(infra.store, settings.instance_id or address, address, settings.selector_lease_s)
    return Leadership(lease, lambda target: channel(target, None, settings.tls_ca(), settings.tls_server_name))


def build(settings: ServiceSettings, infra: Infra) -> SelectorDeps:
    strategy = make_strategy(settings.selection, settings.seed)
    publisher = infra.publisher("selector")
    scoring: Scoring
    if settings.scoring == "sharded" and strategy.uses_model:
        scoring = ShardedScoring(infra.store, publisher, strategy, SCORING_PARTS, settings.scoring_resend_s)
    else:
        scoring = LocalScoring(infra.pool, strategy, settings.decode_workers, failure_reporter("selector", publisher))
    loop = SelectionLoop(
        infra.pool,
        strategy,
        settings.batch_size,
        settings.max_iterations,
        settings.lease_ttl_s,
        overlap=settings.overlap,
        scoring=scoring,
        next_batch=settings.next_batch,
    )
    return SelectorDeps(
        loop=loop, model=infra.live_model(), publisher=publisher, leadership=leadership(settings, infra)
    )


if __name__ == "__main__":
    main(SelectorApp, build)
