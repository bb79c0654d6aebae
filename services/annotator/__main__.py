"""python -m services.annotator — reads SAIM_* settings, serves until SIGTERM."""

from saim.annotation import DraftStore
from saim.rpc.peers import LeaseChecker
from saim.settings import ServiceSettings
from services.common import Infra, main

from .server import AnnotatorApp, AnnotatorDeps


def build(settings: ServiceSettings, infra: Infra) -> AnnotatorDeps:
    compute = infra.tensor_thread()  # every forward, resampling and model build of the process runs there
    return AnnotatorDeps(
        pool=infra.every_slice_pool(),
        model=infra.live_model(compute),
        compute=compute,
        sessions=infra.sessions(),
        publisher=infra.publisher("annotator"),
        leases=LeaseChecker(infra.selector_channel()),
        renew_every_s=min(30.0, settings.lease_ttl_s / 3),
        overlap=settings.overlap,
        drafts=DraftStore(infra.store),
        propagate_max_slices=settings.serving.propagate_max_slices,
    )


if __name__ == "__main__":
    main(AnnotatorApp, build)
