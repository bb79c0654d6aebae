"""`make bench-annotate`: a virtual annotator in the real page annotates whole series until every class reaches the
Dice target against the ground truth, in three ways: slice by slice (by-slice), with propagation (and boxes), and with
interpolation between key slices (and boxes); it prints the interactions per series, the wall time in the page and
the person-time of the time model.

Everything a person's input passes is the real thing -- Debian's chromium driven by Playwright, the annotator page
(web/dist), the HTTP gateway, a real annotator servicer with the model -- except the selector, a stand-in that hands
out the series being annotated (tests.unit.harness.OneCaseSelector). The virtual annotator sees what a person sees
(the page's masks, `saim.state.masks`) and acts as a person does: keys for the class, the tool and propagation, mouse
clicks and drags at the voxels' screen positions (`saim.voxelToClient`), Enter to accept a slice.

Its hand on a slice, the same in every way: while a class's Dice on the slice is below the target and its largest
error region is a structure a person would correct (at least `--min-error` pixels), it corrects that region, at most
`--max-clicks` times a slice. A region with depth is clicked at its innermost pixel (positive for a missed region,
negative -- the right button -- for a false one); a sliver along a border (its innermost pixel at most
`--stroke-depth` pixels from its edge), which a click of the model's radius would overshoot, is painted with a
one-voxel brush stroke along it (the eraser for a false region over background). By-slice walks the slices in order
with that hand alone. Assisted corrects the slice where the structures are largest and propagates it both ways (P);
then it walks up and down from there, correcting each slice, first with a box where a class is mostly missed (Dice
under 0.5), and it carries a slice it corrected on one way (] or [) when the next slice is wrong too (unless
`--no-carry-on`; `PageAnnotator.assisted`). Interpolated corrects key slices every `--key-every` slices over the
structures' extent, fills a gap between two corrected ones (i) where the model's answers in it are mostly wrong, then
reviews and corrects every other slice (`PageAnnotator.interpolated`).

The model is trained here on series other than those annotated (with box prompts and the propagation samples of the
training recipe), once per settings, and kept in --out: phantoms (the model at the scan's in-plane size, `--size`),
or the TotalSegmentator CT (`--data totalseg`, 96 px). Each row also says which slices the clicks, boxes and strokes
went to (`prompts_on`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench_browser import gateway, open_case  # noqa: E402

from saim.data import phantom, totalseg  # noqa: E402
from saim.data.dataset import NnUNetDataset  # noqa: E402
from saim.data.sources import load_series  # noqa: E402
from saim.data.splits import Splits  # noqa: E402
from saim.model.clicks import ErrorRegion, box_around, largest_error  # noqa: E402
from saim.model.config import ModelConfig  # noqa: E402
from saim.model.predictor import InteractivePredictor  # noqa: E402
from saim.storage.pool import import_dataset  # noqa: E402
from saim.training.config import TrainConfig  # noqa: E402
from saim.training.metrics import iou_per_class  # noqa: E402
from saim.training.recipe import train_predictor  # noqa: E402
from tests.unit.fakes import MemoryStore  # noqa: E402
from tests.unit.harness import serve_annotator  # noqa: E402

SECONDS_PER_CLICK, SECONDS_PER_SLICE, MANUAL_SECONDS_PER_SLICE = 3.0, 1.9, 15.0  # the experiment's time model
WAIT_MS = 120_000


def dice_per_class(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of each foreground class, from its IoU (NaN where neither map has it)."""
    iou = iou_per_class(gt, pred, num_classes)
    return 2 * iou / (1 + iou)


def stroke_path(region: np.ndarray) -> list[tuple[int, int]]:
    """A path through every pixel of a 4-connected region, each step to a 4-neighbour within it (a depth-first walk
    that steps back the way it came): the pointer's way for a one-voxel brush stroke that paints the region and
    nothing else."""
    pixels = set(zip(*(a.tolist() for a in np.nonzero(region)), strict=True))
    start = min(pixels)
    path, seen, stack, end = [start], {start}, [start], 1
    while stack:
        r, c = stack[-1]
        nxt = next((n for n in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)) if n in pixels and n not in seen), None)
        if nxt is None:
            stack.pop()
            if stack:
                path.append(stack[-1])
            continue
        seen.add(nxt)
        stack.append(nxt)
        path.append(nxt)
        end = len(path)
    return path[:end]  # no walk back from the last new pixel


@dataclass
class Tally:
    clicks: int = 0
    boxes: int = 0
    strokes: int = 0
    stroke_voxels: int = 0  # the voxels the strokes went over, all together
    propagations: int = 0
    interpolations: int = 0
    slices_accepted: int = 0  # Enter presses: a slice reviewed again after a fill is accepted again
    at_cap: set[int] = field(default_factory=set)  # slices left below the target after --max-clicks
    prompts_on: dict[int, int] = field(default_factory=dict)  # slice -> clicks, boxes, strokes on it (slices corrected)

    def on(self, k: int) -> None:
        self.prompts_on[k] = self.prompts_on.get(k, 0) + 1

    @property
    def interactions(self) -> int:
        return self.clicks + self.boxes + self.strokes + self.propagations + self.interpolations


class PageAnnotator:
    """The virtual annotator at the page: reads the masks the page shows, acts with keys and the mouse."""

    def __init__(
        self, page, label: np.ndarray, target: float, min_error: int, max_clicks: int, boxes: bool, stroke_depth: float
    ):
        self.page, self.label = page, label
        self.target, self.min_error, self.max_clicks, self.boxes = target, min_error, max_clicks, boxes
        self.stroke_depth = stroke_depth
        g = page.evaluate("saim.state.session.geometry")
        self.axis, self.rows, self.cols, self.num_slices = g["slice_axis"], g["rows"], g["cols"], g["num_slices"]
        self.num_classes = len(page.evaluate("saim.state.classes"))
        self.tally = Tally()

    # ---- what the page shows --------------------------------------------------------------------------------------
    def gt(self, k: int) -> np.ndarray:
        return np.take(self.label, k, axis=self.axis)  # rows x cols over the in-plane axes, in increasing order

    def mask(self, k: int) -> np.ndarray:
        data = self.page.evaluate("k => Array.from(saim.state.masks.get(k))", k)
        return np.asarray(data, np.uint8).reshape(self.rows, self.cols)

    def go(self, k: int) -> None:
        self.page.evaluate("k => saim.goToSlice(k)", k)
        self.page.wait_for_function(
            "k => saim.state.slice === k && saim.state.masks.has(k)", arg=k, timeout=WAIT_MS, polling=50
        )

    def needs(self, gt: np.ndarray, pred: np.ndarray):
        """The largest error region a person would correct on the slice (None when the slice is right)."""
        regions = []
        for c, d in enumerate(dice_per_class(gt, pred, self.num_classes), start=1):
            if not d < self.target:  # right, or the class in neither map (NaN)
                continue
            r = largest_error(gt, pred, c)
            if r is not None and r.size >= self.min_error:
                regions.append(r)
        return max(regions, key=lambda r: r.size) if regions else None

    # ---- what the person does -------------------------------------------------------------------------------------
    def _voxel(self, k: int, row: int, col: int) -> list[int]:
        p, q = [a for a in range(3) if a != self.axis]
        v = [0, 0, 0]
        v[self.axis], v[p], v[q] = k, row, col
        return v

    def _screen(self, k: int, row: int, col: int) -> tuple[float, float]:
        pos = self.page.evaluate("v => saim.voxelToClient(v)", self._voxel(k, row, col))
        return pos["x"], pos["y"]

    def _class(self, c: int) -> None:
        if self.page.evaluate("saim.state.active") != c:
            self.page.keyboard.press(str(c))

    def _count(self, what: str) -> int:
        return self.page.evaluate(f"saim.state.{what}.length")

    def _wait(self, what: str, n: int) -> None:
        self.page.wait_for_function(f"saim.state.{what}.length > {n}", timeout=WAIT_MS, polling=50)

    def click(self, k: int, cls: int, row: int, col: int, positive: bool) -> None:
        self._class(cls)
        x, y = self._screen(k, row, col)
        n = self._count("rtt")
        self.page.mouse.click(x, y, button="left" if positive else "right")
        self._wait("rtt", n)
        self.tally.clicks += 1
        self.tally.on(k)

    def box(self, k: int, cls: int, gt: np.ndarray) -> None:
        b = box_around(gt, cls)
        if b is None:
            return
        self._class(cls)
        self.page.keyboard.press("x")
        n = self._count("boxes")
        x0, y0 = self._screen(k, b.y0, b.x0)
        x1, y1 = self._screen(k, b.y1, b.x1)
        self.page.mouse.move(x0, y0)
        self.page.mouse.down()
        self.page.mouse.move(x1, y1, steps=4)
        self.page.mouse.up()
        self._wait("boxes", n)
        self.page.keyboard.press("c")
        self.tally.boxes += 1
        self.tally.on(k)

    def stroke(self, k: int, gt: np.ndarray, pred: np.ndarray, error: ErrorRegion) -> np.ndarray:
        """A one-voxel brush stroke over an error region: a missed one painted with its class, a false one with what
        the ground truth has under most of it (the eraser where that is background). Returns the slice's new mask."""
        region, cls = error.mask, error.click.cls
        value = cls if error.click.positive else int(np.argmax(np.bincount(gt[region], minlength=self.num_classes + 1)))
        if value:
            self._class(value)
        self.page.keyboard.press("b" if value else "e")
        self.page.fill("#radius", "0")
        points = self.page.evaluate(
            "vs => vs.map((v) => saim.voxelToClient(v))", [self._voxel(k, r, c) for r, c in stroke_path(region)]
        )
        n = self.page.evaluate(f"(saim.state.info.get({k}) || {{edits: 0}}).edits")
        self.page.mouse.move(points[0]["x"], points[0]["y"])
        self.page.mouse.down()
        for p in points[1:]:
            self.page.mouse.move(p["x"], p["y"])
        self.page.mouse.up()
        self.page.wait_for_function(f"saim.state.info.get({k}).edits > {n}", timeout=WAIT_MS, polling=50)
        self.page.keyboard.press("c")
        after = self.mask(k)
        if not ((after[region] == value).all() and (after[~region] == pred[~region]).all()):
            raise RuntimeError(f"the stroke on slice {k} painted other pixels than the {int(region.sum())} under it")
        self.tally.strokes += 1
        self.tally.stroke_voxels += error.size
        self.tally.on(k)
        return after

    def interpolate(self, k: int) -> None:
        """i on slice k: the slices between it and the corrected slices above and below it, filled."""
        self.go(k)
        n = self._count("interpolated")
        self.page.keyboard.press("i")
        self._wait("interpolated", n)
        self.tally.interpolations += 1

    def propagate(self, direction: int) -> None:
        """P both ways, ] up, [ down."""
        n = self._count("propagated")
        self.page.keyboard.press({0: "p", 1: "]", -1: "["}[direction])
        self._wait("propagated", n)
        self.tally.propagations += 1

    def correct(self, k: int, boxes: bool) -> bool:
        """Make slice k right (the page on it); True if it needed anything."""
        gt, pred = self.gt(k), self.mask(k)
        before = self.tally.prompts_on.get(k, 0)
        if boxes:  # a class mostly missed: a box around it first
            for c, d in enumerate(dice_per_class(gt, pred, self.num_classes), start=1):
                if d < 0.5 and (gt == c).sum() >= self.min_error:
                    self.box(k, c, gt)
            pred = self.mask(k)
        for _ in range(self.max_clicks):
            region = self.needs(gt, pred)
            if region is None:
                break
            if region.depth <= self.stroke_depth:  # a sliver along a border: painted, not clicked
                pred = self.stroke(k, gt, pred, region)
            else:
                c = region.click
                self.click(k, c.cls, c.y, c.x, c.positive)
                pred = self.mask(k)
        else:
            if self.needs(gt, pred) is not None:
                self.tally.at_cap.add(k)
        return self.tally.prompts_on.get(k, 0) > before

    def accept(self) -> None:
        self.page.keyboard.press("Enter")
        self.tally.slices_accepted += 1

    # ---- the ways of working --------------------------------------------------------------------------------------
    def by_slice(self) -> None:
        for k in range(self.num_slices):
            self.go(k)
            self.correct(k, boxes=False)
            self.accept()

    def assisted(self, carry_on: bool) -> None:
        """The slice where the structures are largest corrected and propagated both ways (P), then a walk up and a
        walk down from it, each slice corrected (a box where a class is mostly missed, then clicks and strokes). With
        `carry_on`, a slice that needed correcting is carried on one way (] or [) when the next slice is wrong too; a
        one-way propagation never writes behind the walk, so one pass ends it."""
        areas = [int((self.gt(k) > 0).sum()) for k in range(self.num_slices)]
        key = int(np.argmax(areas))
        self.go(key)
        self.correct(key, boxes=self.boxes)
        self.accept()
        self.go(key)
        self.propagate(0)
        for step, end in ((1, self.num_slices), (-1, -1)):
            for k in range(key + step, end, step):
                self.go(k)
                fixed = self.correct(k, boxes=self.boxes)
                self.accept()
                nxt = k + step
                if carry_on and fixed and 0 <= nxt < self.num_slices:
                    self.go(nxt)  # a look at the next slice: is what was carried there wrong too?
                    if self.needs(self.gt(nxt), self.mask(nxt)) is not None:
                        self.go(k)
                        self.propagate(step)

    def wrong(self, k: int) -> bool:
        """Whether slice k, as the page shows it, still needs correcting (a look at it: the page goes there)."""
        self.go(k)
        return self.needs(self.gt(k), self.mask(k)) is not None

    def interpolated(self, every: int) -> None:
        """A walk up over key slices every `every` slices of the structures' extent: each key slice that is wrong is
        corrected (a box where a class is mostly missed, then clicks), and the gap between two corrected key slices
        is filled (i) when most of the model's answers in it were wrong (the person scrolled through them on the
        way); a gap the model got mostly right keeps the model's answers. Then every other slice is reviewed and
        corrected. i fills the gaps on both sides of the slice it is pressed on, so a needed gap waits for the next
        one: if that is needed too, one i on the key slice between them fills both; if not, the waiting gap is
        filled alone before the next key slice is corrected (until then nothing above bounds a gap)."""
        present = [k for k in range(self.num_slices) if (self.gt(k) > 0).any()]
        keys = sorted({*range(present[0], present[-1] + 1, every), present[-1]})
        corrected: list[int] = []
        waiting = False  # the gap below corrected[-1] is to be filled
        for k in keys:
            if not self.wrong(k):
                self.accept()  # right as it is: not a bound, it lies in a gap and is reviewed with the rest
                continue
            gap = range(corrected[-1] + 1, k) if corrected else range(0)
            needed = len(gap) > 0 and 2 * sum(map(self.wrong, gap)) > len(gap)
            if waiting and not needed:
                self.interpolate(corrected[-1])  # alone: k is not corrected yet, nothing above bounds a gap
            self.go(k)
            self.correct(k, boxes=self.boxes)
            self.accept()
            if waiting and needed:
                self.interpolate(corrected[-1])  # both gaps, below it and up to k
            waiting = needed and not waiting
            corrected.append(k)
        if waiting:
            self.interpolate(corrected[-1])
        for k in range(self.num_slices):
            if k not in corrected:
                self.go(k)
                self.correct(k, boxes=self.boxes)
                self.accept()

    def volume(self) -> np.ndarray:
        out = np.zeros_like(self.label)
        for k in range(self.num_slices):
            self.go(k)
            index = [slice(None)] * 3
            index[self.axis] = k
            out[tuple(index)] = self.mask(k)
        return out


def annotate_series(url: str, label: np.ndarray, mode: str, args) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser, page, open_s = open_case(pw, url)
        opened = time.perf_counter()
        page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page, not a button
        person = PageAnnotator(
            page, label, args.target, args.min_error, args.max_clicks, mode != "by-slice", args.stroke_depth
        )
        if mode == "assisted":
            person.assisted(args.carry_on)
        elif mode == "interpolated":
            person.interpolated(args.key_every)
        else:
            person.by_slice()
        done = time.perf_counter()
        result = person.volume()
        message = page.text_content("#message")
        browser.close()
    t = person.tally
    dice = dice_per_class(label, result, person.num_classes)
    fg_slices = int(sum((person.gt(k) > 0).any() for k in range(person.num_slices)))
    # how far a perfect carry gets: each slice's ground truth scored against the one below it
    neighbour = [
        dice_per_class(person.gt(k), person.gt(k - 1), person.num_classes) for k in range(1, person.num_slices)
    ]
    person_s = SECONDS_PER_CLICK * t.interactions + SECONDS_PER_SLICE * person.num_slices
    return {
        "mode": mode,
        **{k: v for k, v in asdict(t).items() if k not in ("at_cap", "prompts_on")},
        "prompts_on": {str(k): n for k, n in sorted(t.prompts_on.items())},
        "slices_corrected": len(t.prompts_on),
        "slices_at_cap": sorted(t.at_cap),
        "interactions": t.interactions,
        "dice": [None if np.isnan(d) else float(d) for d in dice],
        "min_dice": float(np.nanmin(dice)),
        "slices": person.num_slices,
        "slices_with_foreground": fg_slices,
        "neighbour_dice": float(np.nanmean(neighbour)),
        "open_s": open_s,
        "page_s": done - opened,
        "person_s": person_s,
        "manual_s": MANUAL_SECONDS_PER_SLICE * fg_slices,
        "last_message": message,
    }


def trained_model(ds: NnUNetDataset, cases: list[str], mc: ModelConfig, tc: TrainConfig, out: Path):
    """The model trained on `cases` of `ds`, kept in `out` under a key of the dataset (its directory names the phantoms'
    depth, size and seed) and the settings: trained again when any of them changes."""
    settings = [ds.root.name, cases, asdict(mc), asdict(tc)]
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    directory = out / f"model-{key[:12]}"
    if directory.is_dir() and any(directory.iterdir()):
        return InteractivePredictor.load(directory), 0.0
    series = [s for s in load_series(ds, mc.image_size, None) if s.case in cases]
    images = np.concatenate([s.images for s in series])
    labels = np.concatenate([s.labels for s in series])
    t0 = time.perf_counter()
    result = train_predictor(mc, images, labels, tc, series_counts=[s.num_slices for s in series])
    seconds = time.perf_counter() - t0
    result.predictor.save(directory)
    return result.predictor, seconds


@dataclass
class Bench:
    """What is annotated and what the model learns from: per annotated case, the cases its model is trained on."""

    dataset: NnUNetDataset
    bench_cases: list[str]
    train_cases: dict[str, list[str]]
    model: ModelConfig


def phantom_bench(args) -> Bench:
    """Phantom series: the last `--series` annotated, one model trained on the `--train-series` before them. Their
    anatomy spans 120 mm whatever `--depth`: more slices are thinner ones (24: 5 mm)."""
    root = phantom.generate(
        args.out / f"phantoms-{args.train_series + args.series}x{args.depth}x{args.size}-s{args.seed}",
        num_series=args.train_series + args.series,
        depth=args.depth,
        size=args.size,
        seed=args.seed,
        affine=np.diag([1.5, 1.5, 120.0 / args.depth, 1.0]),
    )
    ds = NnUNetDataset(root)
    train, bench = ds.cases[: args.train_series], ds.cases[args.train_series :]
    # the scan's own in-plane grid unless told: at 64 px on these 96 px slices 7-12 % of the slices cannot reach the
    # 0.90 target even from a perfect answer (docs/benchmarks.md), and the count would measure the resampling
    mc = ModelConfig(classes=tuple(ds.info.classes), image_size=args.image_size or args.size, box_prompts=True)
    return Bench(ds, bench, {case: train for case in bench}, mc)


def totalseg_bench(args) -> Bench:
    """The TotalSegmentator CT cut in `--slab`-slice halves: each CT half annotated by a model trained on the other
    cases (the other CT half and the MR's first slab): 30 slices to learn from, a campaign's weak early model.
    Refinement as `make results` runs these scans (the models follow few clicks unrefined)."""
    ds = NnUNetDataset(totalseg.build(args.out / f"totalseg-slab{args.slab}", slab=args.slab, cache_dir=".cache"))
    bench = [c for c in ds.cases if c.startswith("ts_ct_")][: args.series]
    mc = ModelConfig(
        classes=tuple(ds.info.classes),
        image_size=args.image_size or 96,
        box_prompts=True,
        refine_steps=20,
        refine_radius=3,
    )
    return Bench(ds, bench, {case: [c for c in ds.cases if c != case] for case in bench}, mc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/bench-annotate"))
    ap.add_argument(
        "--data",
        choices=("phantoms", "totalseg"),
        default="phantoms",
        help="phantom series, or the TotalSegmentator CT (from the sdist, cached in .cache)",
    )
    ap.add_argument("--series", type=int, default=2, help="series annotated (each in both ways)")
    ap.add_argument("--train-series", type=int, default=16, help="phantom series the model is trained on")
    ap.add_argument("--depth", type=int, default=24, help="slices per phantom series (over the same 120 mm)")
    ap.add_argument("--size", type=int, default=96, help="phantom in-plane size (voxels)")
    ap.add_argument("--slab", type=int, default=15, help="slices per TotalSegmentator case")
    ap.add_argument("--image-size", type=int, default=None, help="the model's input size (phantoms: --size; CT 96)")
    ap.add_argument("--epochs", type=int, default=12, help="training epochs")
    ap.add_argument("--target", type=float, default=0.90, help="Dice per class a slice (and the series) must reach")
    ap.add_argument("--min-error", type=int, default=4, help="error regions smaller than this are not corrected")
    ap.add_argument("--max-clicks", type=int, default=10, help="clicks and strokes per slice at most")
    ap.add_argument(
        "--stroke-depth",
        type=float,
        default=1.5,
        help="an error region at most this deep (pixels from its border to its innermost pixel) is painted with a "
        "one-voxel brush stroke, a deeper one clicked (0: clicks only)",
    )
    ap.add_argument(
        "--carry-on",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="assisted: after correcting a slice, carry it on one way when the next slice is wrong too",
    )
    ap.add_argument("--ways", default="by-slice,assisted,interpolated", help="the ways of working run, comma-separated")
    ap.add_argument("--key-every", type=int, default=4, help="interpolated: a key slice every this many slices")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (training and the annotator)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ways = args.ways.split(",")
    if ways[0] != "by-slice" or not set(ways) <= {"by-slice", "assisted", "interpolated"}:
        ap.error("--ways: by-slice first (what the others are compared with), then assisted and/or interpolated")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = totalseg_bench(args) if args.data == "totalseg" else phantom_bench(args)
    ds, mc = bench.dataset, bench.model
    tc = TrainConfig(epochs=args.epochs, seed=args.seed, loader_workers=0)
    rows, train_s = [], {}
    for case in bench.bench_cases:
        train_cases = bench.train_cases[case]
        predictor, train_s[case] = trained_model(ds, train_cases, mc, tc, args.out)
        _, label, _ = ds.load_case(case)
        for mode in ways:
            # a bucket and an annotator of its own for each run: the second must not resume the first one's draft
            store = MemoryStore()
            import_dataset(store, ds, Splits(tuple(train_cases[:4]), (), (), (case,)), image_size=mc.image_size)
            with serve_annotator(store, predictor, mc.image_size) as (port, _), gateway(port, case) as url:
                row = {"case": case, **annotate_series(url, label, mode, args)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in ways}
    mean = {
        m: {k: float(np.mean([r[k] for r in rs])) for k in ("interactions", "clicks", "page_s", "person_s", "min_dice")}
        for m, rs in by_mode.items()
    }
    report = {
        "command": " ".join(sys.argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_seconds": train_s,
        "model": asdict(mc),
        "rows": rows,
        "mean": mean,
        "interaction_ratio": {  # by-slice's interactions per series over each other way's
            m: mean["by-slice"]["interactions"] / max(mean[m]["interactions"], 1e-9) for m in ways[1:]
        },
    }
    (args.out / f"report-{args.data}.json").write_text(json.dumps(report, indent=2))
    for m in ways:
        fewer = f" ({report['interaction_ratio'][m]:.1f}x fewer)" if m != "by-slice" else ""
        print(
            f"{m}: {mean[m]['interactions']:.1f} interactions per series{fewer}, lowest class Dice "
            f"{mean[m]['min_dice']:.3f}, person-time {mean[m]['person_s'] / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
