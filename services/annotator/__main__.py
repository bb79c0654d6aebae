"""python -m services.annotator — reads SAIM_* settings, serves until SIGTERM."""

from services.common import main

from .server import AnnotatorDeps, LeaseChecker, create_annotator


def build(settings, infra):
    deps = AnnotatorDeps(
        pool=infra.pool,
        model=infra.live_model(),
        sessions=infra.sessions(),
        publisher=infra.publisher("annotator"),
        leases=LeaseChecker(infra.selector_channel()),
        renew_every_s=min(30.0, settings.lease_ttl_s / 3),
        overlap=settings.overlap,
    )
    return create_annotator(settings, deps, infra.security())


if __name__ == "__main__":
    main("annotator", build)
