// The gateway's JSON API: the bearer token (kept in this tab's session storage, never in a URL), errors as messages,
// masks and strokes as base64 of zlib bytes (the annotator's wire format; the browser's deflate streams are zlib).

const TOKEN_KEY = "saim.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export function authHeaders() {
  return { Authorization: `Bearer ${token.get()}` };
}

export async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the gateway is not reachable (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.error) || `${response.status} ${response.statusText}`);
  }
  return data;
}

async function pipe(bytes, stream) {
  const out = new Response(new Blob([bytes]).stream().pipeThrough(stream));
  return new Uint8Array(await out.arrayBuffer());
}

export async function inflate(b64) {
  const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return pipe(bin, new DecompressionStream("deflate"));
}

export async function deflate(bytes) {
  const z = await pipe(bytes, new CompressionStream("deflate"));
  let s = "";
  for (let i = 0; i < z.length; i += 0x8000) s += String.fromCharCode.apply(null, z.subarray(i, i + 0x8000));
  return btoa(s);
}

// One colour per class index (0 = background, transparent; classes beyond the palette reuse its colours).
const PALETTE = [
  [0, 0, 0], [230, 70, 70], [70, 200, 90], [70, 130, 240], [240, 200, 60], [200, 90, 220], [60, 210, 210],
  [250, 140, 50], [160, 110, 70], [150, 150, 250], [250, 120, 170],
];
export const colour = (k) => (k === 0 ? PALETTE[0] : PALETTE[1 + ((k - 1) % (PALETTE.length - 1))]);

export function setMessage(text, isError = false) {
  const el = document.getElementById("message");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// Log in with a token (checked against /api/me); calls onReady(me) once a valid token is held.
export function login(onReady) {
  const box = document.getElementById("login");
  const form = document.getElementById("login-form");
  const logout = document.getElementById("logout");
  logout.onclick = () => {
    token.clear();
    location.reload();
  };
  const tryToken = async () => {
    try {
      const me = await api("GET", "/api/me");
      box.classList.add("hidden");
      logout.classList.remove("hidden");
      await onReady(me);
    } catch (err) {
      if (err.status === 401) token.clear();
      box.classList.remove("hidden");
      setMessage(err.message, true);
    }
  };
  form.onsubmit = (e) => {
    e.preventDefault();
    token.set(document.getElementById("token").value.trim());
    tryToken();
  };
  if (token.get()) tryToken();
  else box.classList.remove("hidden");
}
