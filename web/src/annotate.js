// The annotator's page: a Niivue view of the leased scan (source voxels, source affine), the mask overlaid per
// class, clicks answered by the model, brush and eraser, undo, a draft that survives reloads and restarts.
//
// Coordinates: the API speaks the scan's native voxels (i, j, k). Niivue shows the volume reoriented to RAS and
// reports RAS voxels; `reorientation` (both directions) and nativeToMM convert. A slice's mask is rows x cols over the two in-plane axes
// (in increasing order), row-major, as the annotator's API defines it.
//
// The mask is shown in Niivue's drawing layer (a uint8 bitmap in RAS voxel order, one texture upload per change)
// rather than as a second volume: a volume layer is re-oriented on the GPU for the whole scan at every update, which
// in software WebGL costs seconds at 512 x 512 x 200.
import { DRAG_MODE, Niivue, SHOW_RENDER, SLICE_TYPE, cmapper } from "@niivue/niivue";
import { api, authHeaders, colour, deflate, inflate, login, setMessage } from "./api.js";

const $ = (id) => document.getElementById(id);
const canvas = $("gl");

const state = {
  session: null, // the OpenSession answer
  g: null, // its geometry
  classes: [],
  active: 1,
  tool: "click",
  slice: 0,
  masks: new Map(), // slice -> Uint8Array(rows*cols), as last answered
  info: new Map(), // slice -> {clicks, edits, model_version}
  reviewed: new Set(),
  rtt: [], // per click: {rtt_ms, request_ms, inference_ms}
  openedAt: 0,
  lease: { expires: 0, ttl: 0, renewing: false },
  resumed: null, // the draft found at the last open
  timings: null, // the last new case: loading the volume, setting up the mask layer (ms)
  propagated: [], // per propagation: {from, slices written}
  boxes: [], // per box: {slice, cls, box: [row0, col0, row1, col1]}
  scribbles: [], // per scribble: {slice, cls, positive, points}
  interpolated: [], // per interpolation: {from, slices written, gaps}
  hidden: new Set(), // classes not shown in the mask layer
  views: "acquisition", // or "multiplanar": the three planes and a 3D render, one crosshair
  outline: false, // the mask layer as outlines only
};
let layout = null; // the loaded volume's voxel mapping and mask-layer indexing (drawingLayout); null while loading
let queue = Promise.resolve(); // operations apply in order
let autoWindow = null;
// usable while a case is open
const CASE_BUTTONS = ["submit", "undo", "redo", "accept", "propagate", "propagate-up", "propagate-down", "interpolate"];

const nv = new Niivue({
  backColor: [0.07, 0.08, 0.1, 1],
  show3Dcrosshair: false,
  crosshairColor: [1, 0.85, 0.2, 0.3],
  crosshairWidth: 0.15,
  crosshairWidthUnit: "percent", // thin at any zoom
  crosshairGap: 12, // the crosshair never hides the voxel under it
  isColorbar: false,
  dragAndDropEnabled: false,
  isRadiologicalConvention: true, // patient right on the screen's left, as radiologists read
  // the keys are the page's (C: clicks, P: propagate, V: views); Niivue's own would also cycle clip planes and views
  clipPlaneHotKey: "",
  cycleClipPlaneHotKey: "",
  viewModeHotKey: "",
  mouseEventConfig: {
    leftButton: { primary: DRAG_MODE.none, withShift: DRAG_MODE.none, withCtrl: DRAG_MODE.none },
    rightButton: DRAG_MODE.none,
    centerButton: DRAG_MODE.pan,
  },
});

// ---- geometry ------------------------------------------------------------------------------------------------------
const inplane = () => [0, 1, 2].filter((a) => a !== state.g.slice_axis);

// Niivue shows the volume reoriented to RAS by a signed permutation of its axes. Its toRASvox maps a RAS voxel to the
// native one (native = m ras + t; column-major, as Niivue's own getValue uses it); the inverse is the transpose.
function reorientation(back) {
  const p = back.permRAS;
  // Niivue hands out voxels as Float32Arrays: the answers are plain arrays (they go into JSON requests)
  if (p[0] === 1 && p[1] === 2 && p[2] === 3) return { toNative: (v) => Array.from(v, Math.round), toRAS: (v) => v };
  const m = back.toRASvox;
  return {
    toNative: (v) => [0, 1, 2].map((r) => Math.round(m[r] * v[0] + m[4 + r] * v[1] + m[8 + r] * v[2] + m[12 + r])),
    toRAS: (v) =>
      [0, 1, 2].map((c) => m[4 * c] * (v[0] - m[12]) + m[4 * c + 1] * (v[1] - m[13]) + m[4 * c + 2] * (v[2] - m[14])),
  };
}

// The drawing bitmap's index of native voxel v is affine in v: index(v) = c0 + s[0] v0 + s[1] v1 + s[2] v2.
function drawingLayout(back) {
  const { toNative, toRAS } = reorientation(back);
  const d = back.dimsRAS;
  const index = (v) => {
    const [x, y, z] = toRAS(v).map(Math.round);
    return x + y * d[1] + z * d[1] * d[2];
  };
  const c0 = index([0, 0, 0]);
  const s = [0, 1, 2].map((a) => index([0, 1, 2].map((b) => (a === b ? 1 : 0))) - c0);
  // the RAS axis a native slice lies across, and where on it native slice k is
  const unit = [0, 1, 2].map((b) => (b === state.g.slice_axis ? 1 : 0));
  const rasAxis = [0, 1, 2].find((r) => Math.round(toRAS(unit)[r] - toRAS([0, 0, 0])[r]) !== 0);
  const planeOf = (k) => Math.round(toRAS(unit.map((x) => x * k))[rasAxis]);
  return { toNative, c0, s, rasAxis, planeOf, dims: [d[1], d[2], d[3]] };
}

function nativeToMM(v) {
  const a = state.g.affine; // row-major 4x4
  return [0, 1, 2].map((r) => a[4 * r] * v[0] + a[4 * r + 1] * v[1] + a[4 * r + 2] * v[2] + a[4 * r + 3]);
}

function inside(v) {
  return v.every((x, a) => x >= 0 && x < state.g.shape[a]);
}

function sliceType() {
  const letter = (state.g.orientation || "RAS")[state.g.slice_axis];
  if ("SI".includes(letter)) return SLICE_TYPE.AXIAL;
  if ("AP".includes(letter)) return SLICE_TYPE.CORONAL;
  return SLICE_TYPE.SAGITTAL;
}

const dpr = () => nv.uiData.dpr || window.devicePixelRatio || 1;

// Prompts are given in the acquisition plane only; the other planes and the 3D render are for review.
function voxelAtEvent(e) {
  const pos = nv.getNoPaddingNoBorderCanvasRelativeMousePosition(e, canvas);
  const tile = nv.tileIndex(pos.x * dpr(), pos.y * dpr());
  if (tile < 0 || nv.screenSlices[tile].axCorSag !== sliceType()) return null;
  const frac = nv.canvasPos2frac([pos.x * dpr(), pos.y * dpr()]);
  if (!frac || frac[0] < 0) return null;
  const v = layout.toNative(nv.frac2vox(frac));
  return inside(v) ? v : null;
}

// Where a native voxel is on the screen (client coordinates): what a test or a tutorial overlay needs.
function voxelToClient(v) {
  const frac = nv.mm2frac(nativeToMM(v));
  const hit = nv.frac2canvasPosWithTile(frac, sliceType());
  if (!hit) return null;
  const rect = canvas.getBoundingClientRect();
  return { x: rect.left + hit.pos[0] / dpr(), y: rect.top + hit.pos[1] / dpr() };
}

function currentSlice() {
  return layout.toNative(nv.frac2vox(nv.scene.crosshairPos))[state.g.slice_axis];
}

function goToSlice(k) {
  const v = state.g.shape.map((n) => Math.floor(n / 2));
  v[state.g.slice_axis] = Math.max(0, Math.min(state.g.num_slices - 1, k));
  nv.scene.crosshairPos = nv.mm2frac(nativeToMM(v));
  nv.createOnLocationChange();
  nv.drawScene();
}

function moveSlices(delta) {
  goToSlice(state.slice + delta);
}

// ---- the overlay: Niivue's drawing layer -----------------------------------------------------------------------
function drawColormap() {
  const n = state.classes.length + 1;
  const idx = [...Array(n).keys()];
  return {
    R: idx.map((k) => colour(k)[0]),
    G: idx.map((k) => colour(k)[1]),
    B: idx.map((k) => colour(k)[2]),
    A: idx.map((k) => (k === 0 || state.hidden.has(k) ? 0 : 255)),
    I: idx,
    labels: ["background", ...state.classes],
  };
}

// The class colours, without setDrawColormap: it re-renders every layer (seconds for a large scan in software GL).
function applyColours() {
  nv.drawLut = cmapper.makeDrawLut(drawColormap());
  nv.refreshColormaps();
  nv.drawScene();
}

function showClass(k, shown) {
  if (shown) state.hidden.delete(k);
  else state.hidden.add(k);
  applyColours();
}

function setViews(all) {
  state.views = all ? "multiplanar" : "acquisition";
  $("views").checked = all;
  nv.opts.multiplanarShowRender = all ? SHOW_RENDER.ALWAYS : SHOW_RENDER.NEVER;
  nv.setSliceType(all ? SLICE_TYPE.MULTIPLANAR : sliceType());
}

// Outlines: the mask layer's interior nearly clear, its rim opaque (Niivue's drawRimOpacity).
function setOutline(on) {
  state.outline = on;
  $("outline").checked = on;
  nv.drawRimOpacity = on ? 1.0 : -1;
  nv.setDrawOpacity(on ? 0.02 : Number($("opacity").value) / 100);
}

function writeSlice(k, mask) {
  const [p, q] = inplane();
  const { rows, cols, slice_axis: axis } = state.g;
  const { c0, s } = layout;
  const bitmap = nv.drawBitmap;
  const base = c0 + k * s[axis];
  for (let r = 0; r < rows; r++) {
    const rowBase = base + r * s[p];
    for (let c = 0; c < cols; c++) bitmap[rowBase + c * s[q]] = mask[r * cols + c];
  }
}

const painted = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));

// Upload the mask layer: only slice k's plane when k is given (a whole 512 x 512 x 200 bitmap costs about 200 ms
// per click in software WebGL; one plane, about 1 %), else all of it.
function repaint(k) {
  if (k === undefined || nv.opts.is2DSliceShader || !nv.drawTexture) {
    nv.refreshDrawing(true);
    return;
  }
  const { rasAxis: r, dims } = layout;
  const plane = layout.planeOf(k);
  const offset = [0, 0, 0];
  const size = dims.slice();
  offset[r] = plane;
  size[r] = 1;
  const [dx, dy] = dims;
  let data;
  if (r === 2) {
    data = nv.drawBitmap.subarray(plane * dx * dy, (plane + 1) * dx * dy);
  } else {
    data = new Uint8Array(size[0] * size[1] * size[2]);
    let n = 0;
    for (let z = offset[2]; z < offset[2] + size[2]; z++)
      for (let y = offset[1]; y < offset[1] + size[1]; y++)
        for (let x = offset[0]; x < offset[0] + size[0]; x++) data[n++] = nv.drawBitmap[x + y * dx + z * dx * dy];
  }
  const gl = nv.gl;
  gl.activeTexture(gl.TEXTURE7); // Niivue's unit for the drawing texture
  gl.bindTexture(gl.TEXTURE_3D, nv.drawTexture);
  gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
  gl.texSubImage3D(gl.TEXTURE_3D, 0, ...offset, ...size, gl.RED, gl.UNSIGNED_BYTE, data);
  nv.drawScene();
}

async function applyMask(reply) {
  const mask = await inflate(reply.mask);
  if (mask.length !== reply.rows * reply.cols) throw new Error(`mask of ${mask.length} bytes`);
  state.masks.set(reply.slice, mask);
  state.info.set(reply.slice, { clicks: reply.clicks, edits: reply.edits, model_version: reply.model_version });
  writeSlice(reply.slice, mask);
  repaint(reply.slice);
  showSlice();
}

async function ensureMask(k) {
  if (state.masks.has(k) || !state.session) return;
  const reply = await sessionCall("GET", `/slices/${k}`);
  await applyMask(reply);
}

// ---- operations ----------------------------------------------------------------------------------------------------
// A session call; when the annotator no longer knows the session (a restarted replica, an expired session) the
// case is opened again -- the draft brings back every click and edit -- and the call is made once more.
async function sessionCall(method, path, body) {
  try {
    return await api(method, `/api/sessions/${state.session.session_id}${path}`, body);
  } catch (err) {
    if (err.status !== 404 || !/session/.test(err.message)) throw err;
    setMessage("the annotator restarted or the session expired: resuming your draft ...");
    await openCase(true);
    return api(method, `/api/sessions/${state.session.session_id}${path}`, body);
  }
}

// A call that got no answer (the network, a replica that went away: status 0 or 5xx) is sent again, the same body
// with the same id: the annotator applies a click, an edit or an undo once however often it arrives, and answers a
// submission's retry with the first one's result.
const ATTEMPTS = 4;

function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context; this does not
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function retried(method, path, body, what) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await sessionCall(method, path, body);
    } catch (err) {
      if ((err.status !== 0 && err.status < 500) || attempt >= ATTEMPTS) throw err;
      setMessage(`${what} got no answer (${err.message}): sending it again ...`, true);
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt));
    }
  }
}

function enqueue(fn) {
  queue = queue.then(fn).catch((err) => setMessage(err.message, true));
  return queue;
}

function click(v, positive) {
  return enqueue(async () => {
    const t0 = performance.now();
    const body = { voxel: v, class_index: state.active, positive, request_id: newId() };
    const reply = await retried("POST", "/clicks", body, "the click");
    const answered = performance.now();
    await applyMask(reply);
    await painted();
    const rtt = performance.now() - t0;
    // the click's round trip, and its parts: the annotator's own time, the rest of the request, the page's work
    state.rtt.push({ rtt_ms: rtt, request_ms: answered - t0, inference_ms: reply.inference_ms });
    $("rtt").textContent = `click ${rtt.toFixed(0)} ms (model ${reply.inference_ms.toFixed(0)} ms)`;
    setMessage(`${positive ? "added" : "removed"} ${state.classes[state.active - 1]} at (${v.join(", ")})`);
  });
}

function undo() {
  const k = state.slice;
  return enqueue(async () => {
    const reply = await retried("POST", "/undo", { slice: k, request_id: newId() }, "undo");
    await applyMask(reply);
    setMessage(`undone on slice ${k}`);
  });
}

function redo() {
  const k = state.slice;
  return enqueue(async () => {
    const reply = await retried("POST", "/redo", { slice: k, request_id: newId() }, "redo");
    await applyMask(reply);
    setMessage(`redone on slice ${k}`);
  });
}

// Propagation: the slice's mask carried by the model to the neighbouring slices, both ways (direction 0) or one way
// (+1 up, -1 down), until the structure ends or a slice the person clicked or edited; each slice it writes comes
// back and is shown (undo takes one back). One way is for a walk: correct a slice, carry it on, go on to the next.
function propagate(direction = 0) {
  const k = state.slice;
  return enqueue(async () => {
    setMessage(`propagating slice ${k} ...`);
    const body = { slice: k, direction, request_id: newId() };
    const reply = await retried("POST", "/propagate", body, "the propagation");
    for (const mask of reply.masks) await applyMask(mask);
    const why = Object.entries(reply.stopped)
      .map(([way, reason]) => `${way}: ${reason}`)
      .join(", ");
    const slices = reply.masks.map((m) => m.slice);
    state.propagated.push({ from: k, direction, slices });
    setMessage(
      slices.length
        ? `propagated slice ${k} to ${slices.length} slices (${Math.min(...slices)}–${Math.max(...slices)}; ${why})`
        : `nothing to propagate from slice ${k} (${why})`,
    );
  });
}

// Interpolation: the slices between this one and the slices the person corrected above and below it, filled per
// class by the annotator (shape-based interpolation of the classes on both); each one shown.
function interpolate() {
  const k = state.slice;
  return enqueue(async () => {
    const body = { slice: k, request_id: newId() };
    const reply = await retried("POST", "/interpolate", body, "the interpolation");
    for (const mask of reply.masks) await applyMask(mask);
    const slices = reply.masks.map((m) => m.slice);
    state.interpolated.push({ from: k, slices, gaps: reply.gaps });
    const gaps = reply.gaps.map(([lo, hi]) => `${lo}–${hi}`).join(" and ");
    setMessage(`filled ${slices.length} slices between slices ${gaps}`);
  });
}

// Brush and eraser: a stroke is painted locally (preview) and sent as one edit when the button is released.
let stroke = null;

// The stroke covers the line between two pointer events too (a fast drag leaves no gaps); radius 0 paints the voxels
// under the path only.
function paintTo(v) {
  const [p, q] = inplane();
  const last = stroke.last;
  stroke.last = v;
  if (!last) {
    paintDisk(v);
    return;
  }
  const n = Math.max(Math.abs(v[p] - last[p]), Math.abs(v[q] - last[q]));
  for (let i = 1; i <= n; i++) {
    const w = [...v];
    w[p] = Math.round(last[p] + ((v[p] - last[p]) * i) / n);
    w[q] = Math.round(last[q] + ((v[q] - last[q]) * i) / n);
    paintDisk(w);
  }
}

function paintDisk(v) {
  const [p, q] = inplane();
  const { rows, cols } = state.g;
  const [r0, col0] = [v[p], v[q]];
  const rad = Number($("radius").value);
  const value = state.tool === "eraser" ? 0 : state.active;
  const { c0, s } = layout;
  const base = c0 + stroke.slice * s[state.g.slice_axis];
  for (let r = Math.max(0, r0 - rad); r <= Math.min(rows - 1, r0 + rad); r++) {
    for (let c = Math.max(0, col0 - rad); c <= Math.min(cols - 1, col0 + rad); c++) {
      if ((r - r0) ** 2 + (c - col0) ** 2 > rad * rad) continue;
      stroke.pixels[r * cols + c] = 1;
      nv.drawBitmap[base + r * s[p] + c * s[q]] = value;
    }
  }
  if (!stroke.frame) {
    const k = stroke.slice;
    stroke.frame = requestAnimationFrame(() => {
      if (stroke) stroke.frame = 0;
      repaint(k);
    });
  }
}

function endStroke() {
  const done = stroke;
  stroke = null;
  if (!done || !done.pixels.some((x) => x)) return;
  const cls = done.tool === "eraser" ? 0 : state.active;
  enqueue(async () => {
    const body = { slice: done.slice, class_index: cls, painted: await deflate(done.pixels), request_id: newId() };
    const reply = await retried("POST", "/edits", body, `the ${done.tool} edit`);
    await applyMask(reply);
    setMessage(`${done.tool} edit on slice ${done.slice}`);
  });
}

// Box: dragged in the acquisition plane around a structure of the active class, sent when the button is released;
// the annotator answers the slice with the box as the model's prompt.
let boxDrag = null;

function showBoxPreview() {
  const el = $("box-preview");
  const a = voxelToClient(boxDrag.start);
  const b = voxelToClient(boxDrag.end);
  if (!a || !b) return;
  Object.assign(el.style, {
    left: `${Math.min(a.x, b.x)}px`,
    top: `${Math.min(a.y, b.y)}px`,
    width: `${Math.abs(b.x - a.x)}px`,
    height: `${Math.abs(b.y - a.y)}px`,
  });
  el.classList.remove("hidden");
}

function endBox() {
  const done = boxDrag;
  boxDrag = null;
  $("box-preview").classList.add("hidden");
  if (!done) return;
  const [p, q] = inplane();
  const rows = [done.start[p], done.end[p]].sort((x, y) => x - y);
  const cols = [done.start[q], done.end[q]].sort((x, y) => x - y);
  const cls = state.active;
  enqueue(async () => {
    const body = { slice: done.slice, class_index: cls, box: [rows[0], cols[0], rows[1], cols[1]], request_id: newId() };
    const reply = await retried("POST", "/boxes", body, "the box");
    await applyMask(reply);
    state.boxes.push({ slice: done.slice, cls, box: body.box });
    setMessage(`box for ${state.classes[cls - 1]} on slice ${done.slice}: rows ${rows.join("–")}, columns ${cols.join("–")}`);
  });
}

// Scribble: a path dragged along a structure (left button: the active class; right button or Shift: not it), shown
// as it is drawn and sent when the button is released; the model takes it as clicks along the path.
let scribble = null;

function addScribblePoint(v) {
  const [p, q] = inplane();
  const point = [v[p], v[q]];
  const last = scribble.points[scribble.points.length - 1];
  if (last && last[0] === point[0] && last[1] === point[1]) return;
  scribble.points.push(point);
  const { c0, s } = layout;
  nv.drawBitmap[c0 + scribble.slice * s[state.g.slice_axis] + point[0] * s[p] + point[1] * s[q]] = scribble.positive
    ? state.active
    : 0;
  if (!scribble.frame) {
    const k = scribble.slice;
    scribble.frame = requestAnimationFrame(() => {
      if (scribble) scribble.frame = 0;
      repaint(k);
    });
  }
}

function endScribble() {
  const done = scribble;
  scribble = null;
  if (!done) return;
  const cls = state.active;
  enqueue(async () => {
    const body = { slice: done.slice, class_index: cls, positive: done.positive, points: done.points, request_id: newId() };
    const reply = await retried("POST", "/scribbles", body, "the scribble");
    await applyMask(reply);
    state.scribbles.push({ slice: done.slice, cls, positive: done.positive, points: done.points.length });
    const what = done.positive ? "" : "not ";
    setMessage(`scribble of ${done.points.length} points (${what}${state.classes[cls - 1]}) on slice ${done.slice}`);
  });
}

// ---- mouse and keys ------------------------------------------------------------------------------------------------
// Left and right buttons are ours (clicks, strokes): Niivue never sees them, so a click costs no redraw of its own
// and the crosshair stays put. The middle button (pan) and the wheel (slices) stay Niivue's.
for (const type of ["mousedown", "mouseup", "mousemove"]) {
  $("viewer").addEventListener(
    type,
    (e) => {
      const ours = type === "mousemove" ? (e.buttons & 3) !== 0 : e.button === 0 || e.button === 2;
      if (ours) e.stopPropagation();
    },
    { capture: true },
  );
}
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("pointerdown", (e) => {
  if (!state.session || !layout || e.button === 1) return;
  const v = voxelAtEvent(e);
  if (!v) return;
  if (state.tool === "scribble" && (e.button === 0 || e.button === 2)) {
    const positive = e.button === 0 && !e.shiftKey;
    scribble = { slice: v[state.g.slice_axis], positive, points: [], frame: 0 };
    canvas.setPointerCapture(e.pointerId);
    addScribblePoint(v);
    return;
  }
  if (state.tool === "box" && e.button === 0) {
    boxDrag = { slice: v[state.g.slice_axis], start: v, end: v };
    canvas.setPointerCapture(e.pointerId);
    showBoxPreview();
    return;
  }
  if (state.tool !== "click" && e.button === 0) {
    stroke = { slice: v[state.g.slice_axis], tool: state.tool, pixels: new Uint8Array(state.g.rows * state.g.cols) };
    canvas.setPointerCapture(e.pointerId);
    paintTo(v);
    return;
  }
  if (e.button === 0 || e.button === 2) click(v, e.button === 0 && !e.shiftKey);
});
canvas.addEventListener("pointermove", (e) => {
  if (scribble) {
    const v = voxelAtEvent(e);
    if (v && v[state.g.slice_axis] === scribble.slice) addScribblePoint(v);
    return;
  }
  if (boxDrag) {
    const v = voxelAtEvent(e);
    if (v && v[state.g.slice_axis] === boxDrag.slice) {
      boxDrag.end = v;
      showBoxPreview();
    }
    return;
  }
  if (!stroke) return;
  const v = voxelAtEvent(e);
  if (v && v[state.g.slice_axis] === stroke.slice) paintTo(v);
});
canvas.addEventListener("pointerup", () => (scribble ? endScribble() : boxDrag ? endBox() : endStroke()));
canvas.addEventListener("pointercancel", () => {
  boxDrag = null;
  scribble = null;
  $("box-preview").classList.add("hidden");
  endStroke();
});

window.addEventListener("keydown", (e) => {
  if (!state.session || e.target.tagName === "INPUT") return;
  const n = Number(e.key);
  if (Number.isInteger(n) && n >= 1 && n <= state.classes.length) selectClass(n);
  else if (e.key === "c") selectTool("click");
  else if (e.key === "b") selectTool("brush");
  else if (e.key === "e") selectTool("eraser");
  else if (e.key === "x") selectTool("box");
  else if (e.key === "s") selectTool("scribble");
  else if ((e.key === "y" && (e.ctrlKey || e.metaKey)) || (e.key === "Z" && (e.ctrlKey || e.metaKey))) redo();
  else if (e.key === "u" || (e.key === "z" && (e.ctrlKey || e.metaKey))) undo();
  else if (e.key === "r") redo();
  else if (e.key === "ArrowUp" || e.key === "PageUp") moveSlices(1);
  else if (e.key === "ArrowDown" || e.key === "PageDown") moveSlices(-1);
  else if (e.key === "Enter") accept();
  else if (e.key === "p") propagate(0);
  else if (e.key === "]") propagate(1);
  else if (e.key === "[") propagate(-1);
  else if (e.key === "i") interpolate();
  else if (e.key === "v") setViews(state.views !== "multiplanar");
  else if (e.key === "o") setOutline(!state.outline);
  else if (e.key === "+" || e.key === "=") zoom(1.25);
  else if (e.key === "-") zoom(0.8);
  else return;
  e.preventDefault();
});

function zoom(factor) {
  const [x, y, z, s] = nv.scene.pan2Dxyzmm;
  nv.setPan2Dxyzmm([x, y, z, factor === 0 ? 1 : Math.max(0.5, Math.min(16, s * factor))]);
}

function selectClass(k) {
  state.active = k;
  document.querySelectorAll("#classes .cls").forEach((b) => b.classList.toggle("active", Number(b.dataset.k) === k));
}

function selectTool(tool) {
  state.tool = tool;
  document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
}

function accept() {
  state.reviewed.add(state.slice);
  moveSlices(1);
}

const WINDOWS = { soft: [-160, 240], liver: [-25, 225], lung: [-1350, 150], bone: [-700, 1300] };

function setWindow(name) {
  const back = nv.volumes[0];
  const [lo, hi] = name === "auto" ? autoWindow : WINDOWS[name];
  back.cal_min = lo;
  back.cal_max = hi;
  nv.updateGLVolume();
}

// ---- case and session ----------------------------------------------------------------------------------------------
function showSlice() {
  const k = state.slice;
  const info = state.info.get(k) || { clicks: 0, edits: 0, model_version: "–" };
  $("slice").textContent = `${k + 1} / ${state.g.num_slices}`;
  $("slice-info").textContent = `slice ${k}: ${info.clicks} clicks, ${info.edits} edits, mask by ${info.model_version}`;
  $("reviewed").textContent = `accepted ${state.reviewed.size} of ${state.g.num_slices} slices`;
}

function renderClasses() {
  const box = $("classes");
  box.replaceChildren();
  state.classes.forEach((name, i) => {
    const k = i + 1;
    const b = document.createElement("button");
    b.className = "cls";
    b.dataset.k = k;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colour(k).join(",")})`;
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = k;
    b.append(swatch, document.createTextNode(name), key); // class names come from the dataset: text, never HTML
    b.onclick = () => selectClass(k);
    const eye = document.createElement("input"); // shown in the mask layer, or hidden; beside the class, not in it
    eye.type = "checkbox";
    eye.className = "shown";
    eye.dataset.k = k;
    eye.title = `show ${name}`;
    eye.checked = !state.hidden.has(k);
    eye.onchange = () => showClass(k, eye.checked);
    const row = document.createElement("div");
    row.className = "cls-row";
    row.append(eye, b);
    box.append(row);
  });
  selectClass(Math.min(state.active, state.classes.length));
}

function setLease(expiresAt) {
  state.lease.expires = expiresAt;
  state.lease.ttl = Math.max(1, expiresAt - Date.now() / 1000);
  showLease();
}

async function openCase(resume = false) {
  const started = performance.now();
  const next = await api("POST", "/api/next");
  const s = await api("POST", "/api/sessions", { case_id: next.case_id, lease_id: next.lease_id });
  const opened = performance.now();
  const sameCase = resume && state.session && state.session.case_id === s.case_id;
  state.session = s;
  state.g = s.geometry;
  state.classes = s.classes;
  state.masks.clear();
  state.info.clear();
  state.resumed = { slices: s.draft_slices, clicks: s.draft_clicks, edits: s.draft_edits };
  if (!sameCase) state.reviewed.clear();
  state.openedAt = performance.now();
  sessionStorage.setItem("saim.case", s.case_id); // a reload of this tab resumes it
  setLease(s.lease_expires_at || next.lease_expires_at);
  $("case").textContent = s.case_id;
  $("iteration").textContent = s.iteration;
  $("model").textContent = s.model_version;
  if (!sameCase) {
    layout = null;
    const t0 = performance.now();
    // plain NIfTI, gzip on the wire (Content-Encoding): the browser inflates it as it arrives
    await nv.loadVolumes([{ url: `/api/sessions/${s.session_id}/volume.nii`, headers: authHeaders(), name: `${s.case_id}.nii` }]);
    const t1 = performance.now();
    const back = nv.volumes[0];
    autoWindow = [back.cal_min, back.cal_max];
    layout = drawingLayout(back);
    nv.createEmptyDrawing(); // the mask layer (the pen stays off: clicks and strokes are ours)
    nv.drawLut = cmapper.makeDrawLut(drawColormap());
    nv.refreshColormaps();
    setOutline(state.outline);
    const t2 = performance.now();
    setViews(state.views === "multiplanar");
    renderClasses();
    goToSlice(s.draft_slices.length ? s.draft_slices[0] : Math.floor(state.g.num_slices / 2));
    state.timings = {
      open_ms: opened - started,
      volume_ms: t1 - t0,
      viewer_ms: t2 - t1,
      slice_ms: performance.now() - t2,
    };
  } else {
    nv.drawBitmap.fill(0); // the same case reopened: masks come again from the restored draft
    repaint();
  }
  const masks = performance.now();
  for (const k of new Set([...s.draft_slices, state.slice])) await ensureMask(k);
  if (state.timings) state.timings.mask_ms = performance.now() - masks;
  for (const id of CASE_BUTTONS) $(id).disabled = false;
  const n = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;
  setMessage(
    s.draft_slices.length
      ? `resumed your draft: ${n(s.draft_clicks, "click")} and ${n(s.draft_edits, "edit")} on ` +
          `${s.draft_slices.length === 1 ? "slice" : "slices"} ${s.draft_slices.join(", ")}`
      : `case ${s.case_id}: click on a structure to add it to the active class`,
  );
}

async function submit() {
  const seconds = (performance.now() - state.openedAt) / 1000;
  const reply = await retried("POST", "/submit", { seconds_spent: seconds, submission_id: newId() }, "submit");
  setMessage(`submitted ${state.session.case_id} (${reply.annotation_key}); take the next case`);
  state.session = null;
  sessionStorage.removeItem("saim.case");
  $("case").textContent = "–";
  for (const id of CASE_BUTTONS) $(id).disabled = true;
  return reply;
}

nv.onLocationChange = () => {
  if (!layout) return;
  const k = currentSlice();
  if (k === state.slice && state.masks.has(k)) return;
  state.slice = k;
  showSlice();
  enqueue(() => ensureMask(k));
};

function showLease() {
  const left = state.lease.expires - Date.now() / 1000;
  $("lease").textContent = left > 0 ? `${Math.floor(left / 60)}:${String(Math.floor(left % 60)).padStart(2, "0")}` : "expired";
  return left;
}

setInterval(async () => {
  if (!state.session) return;
  const left = showLease();
  if (left < state.lease.ttl / 3 && !state.lease.renewing) {
    state.lease.renewing = true;
    try {
      const next = await api("POST", "/api/next"); // one's own open case: the lease is renewed
      if (next.case_id !== state.session.case_id) setMessage("the lease on this case was lost: submit is refused", true);
      else setLease(next.lease_expires_at);
    } catch (err) {
      setMessage(`lease not renewed: ${err.message}`, true);
    } finally {
      state.lease.renewing = false;
    }
  }
}, 1000);

$("next").onclick = () => enqueue(() => openCase());
$("submit").onclick = () => enqueue(submit);
$("undo").onclick = undo;
$("redo").onclick = redo;
$("accept").onclick = accept;
$("propagate").onclick = () => propagate(0);
$("propagate-up").onclick = () => propagate(1);
$("propagate-down").onclick = () => propagate(-1);
$("interpolate").onclick = interpolate;
$("radius").oninput = () => ($("radius-v").textContent = $("radius").value);
$("opacity").oninput = () => setOutline(state.outline);
$("views").onchange = () => setViews($("views").checked);
$("outline").onchange = () => setOutline($("outline").checked);
$("window").onchange = () => setWindow($("window").value);
$("zoom-in").onclick = () => zoom(1.25);
$("zoom-out").onclick = () => zoom(0.8);
$("zoom-reset").onclick = () => zoom(0);
document.querySelectorAll("[data-tool]").forEach((b) => (b.onclick = () => selectTool(b.dataset.tool)));

// For tests and automation: the page's state, the screen position of a voxel, what the mask layer shows.
window.saim = {
  state,
  voxelToClient,
  reorientation,
  // the class the mask layer shows at a native voxel, found through Niivue's own world -> voxel path
  shownAt(v) {
    const r = nv.frac2vox(nv.mm2frac(nativeToMM(v)));
    const d = nv.volumes[0].dimsRAS;
    return nv.drawBitmap[r[0] + r[1] * d[1] + r[2] * d[1] * d[2]];
  },
  goToSlice,
  showClass,
  nv,
  ready: false,
};

login(async (me) => {
  $("who").textContent = `${me.name} (${me.role})`;
  $("app").classList.remove("hidden");
  await nv.attachToCanvas(canvas);
  window.saim.ready = true;
  if (sessionStorage.getItem("saim.case")) enqueue(() => openCase()); // a reload: one's own case again, with its draft
  else setMessage("take a case: Next case");
});
