"""Annotation: a person's session on one series (clicks, brush and eraser strokes, propagation, interpolation, undo,
all at source resolution)
and its drafts in object storage, from which any annotator replica restores it. Services use these names only."""

from saim.annotation.drafts import DraftStore
from saim.annotation.interpolation import interpolate_masks
from saim.annotation.leases import LeaseKeeper
from saim.annotation.session import AnnotationSession, SessionStore, SliceState

__all__ = ["AnnotationSession", "DraftStore", "LeaseKeeper", "SessionStore", "SliceState", "interpolate_masks"]
