"""Epoch checkpoints of a training run in object storage, so that a killed run resumes instead of restarting.

One object per run (`checkpoints/{run}.pt`), rewritten at the end of an epoch when `TrainConfig.checkpoint_every_s`
has passed since the last one: the network, optimiser, schedule and random generator states, the loss and validation
history, and the best weights so far (about 4 x the weights: 0.4 GB for the ResNet34-Unet). It carries a fingerprint
of what the run trains on (the training set, the configuration, the parent version); a checkpoint with another
fingerprint is never resumed. Each write replaces the previous one with all its versions (the bucket is versioned),
and the run removes it once its version is published.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging

import torch

from saim.errors import NotFound

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """A stable digest of JSON-serialisable parts (manifest, configuration, parent version)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Checkpoints:
    def __init__(self, store, key: str, fingerprint: str):
        self.store, self.key, self.fingerprint = store, key, fingerprint

    def load(self) -> dict | None:
        """The last epoch's state of this run, or None (no checkpoint, another run's, or unreadable)."""
        try:
            blob = self.store.get_bytes(self.key)
        except NotFound:
            return None
        try:
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign object: train from the start rather than fail
            log.warning("checkpoint %s unreadable (%s): not resumed", self.key, exc)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.info("checkpoint %s is of another run: not resumed", self.key)
            return None
        return state

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save({**state, "fingerprint": self.fingerprint}, buf)
        self.store.put_bytes(self.key, buf.getvalue())
        self._purge(keep_latest=True)  # written first: a kill in between leaves the new one, never none

    def clear(self) -> None:
        self._purge(keep_latest=False)

    def _purge(self, keep_latest: bool) -> None:
        purge = getattr(self.store, "purge", None)  # a versioned bucket would keep every epoch's 0.4 GB otherwise
        if purge is not None:
            purge(self.key, keep_latest=keep_latest)
        elif not keep_latest:
            self.store.delete(self.key)
