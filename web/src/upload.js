// The upload queue: tus (resumable) uploads with tus-js-client, three at a time.
//
// - Chunks of 50 MiB, so proxies with a body limit see bounded requests; a 413 from a
//   stricter proxy restarts the same upload with 1/8 of the chunk (down to 256 KiB).
// - Resuming: tus-js-client keeps each upload's URL in localStorage under our
//   fingerprint (folder + name + size + mtime), so picking the same file again after a
//   reload or a server restart continues from the server's offset. Where localStorage is
//   off (a sandboxed frame), the server's own list of unfinished uploads is matched.
// - The server's Location header holds its own root path; behind a proxy that strips a
//   prefix it lacks that prefix, which the HTTP stack below puts back.
import { DefaultHttpStack, Upload } from "tus-js-client";
import { ROOT, serviceUrl } from "./base.js";
import { api, csrfToken } from "./api.js";

const CHUNK = 50 * 1024 * 1024;
const MIN_CHUNK = 256 * 1024;
const PARALLEL = 3;
const NO_RETRY = new Set([400, 401, 403, 404, 409, 410, 413, 415, 460, 507]);

class PrefixStack {
  constructor() { this.inner = new DefaultHttpStack(); }
  getName() { return "AtelierStack"; }
  createRequest(method, url) {
    const req = this.inner.createRequest(method, url);
    const send = req.send.bind(req);
    req.send = (body) => send(body).then((res) => {
      const get = res.getHeader.bind(res);
      res.getHeader = (name) => {
        const v = get(name);
        if (name.toLowerCase() === "location" && v && v.startsWith("/") && !v.startsWith(ROOT.pathname)) {
          return ROOT.pathname + v.slice(1);
        }
        return v;
      };
      return res;
    });
    return req;
  }
}

const items = [];
const subs = new Set();
let nextId = 1;
let lastEmit = 0;
let emitTimer = null;

function emit(now = false) {
  // Progress events come by the hundred per second: re-render at most ~10 times a second.
  const t = performance.now();
  if (now || t - lastEmit > 100) {
    lastEmit = t;
    clearTimeout(emitTimer);
    emitTimer = null;
    subs.forEach((fn) => fn());
  } else if (!emitTimer) {
    emitTimer = setTimeout(() => emit(true), 110);
  }
}

export function subscribe(fn) { subs.add(fn); return () => subs.delete(fn); }
export function uploads() { return items; }

/** Files to upload: [{file, folder}] where folder is the NAS folder it goes to. */
export function enqueue(list, conflict = "fail") {
  for (const { file, folder } of list) {
    items.push({
      id: nextId++, file, name: file.name, folder, size: file.size, sent: 0, speed: 0,
      eta: null, state: "queued", error: "", conflict, chunk: CHUNK, resumedFrom: null,
      upload: null, samples: [],
    });
  }
  emit(true);
  pump();
}

function active() { return items.filter((x) => x.state === "uploading").length; }

function pump() {
  for (const item of items) {
    if (active() >= PARALLEL) break;
    if (item.state === "queued") start(item);
  }
}

let serverList = null;
/** Unfinished uploads the server holds for us (reload, other browser, restart). */
export async function unfinished(refresh = false) {
  if (!serverList || refresh) {
    try {
      const all = await api("api/tus/");
      serverList = all.filter((u) => !u.final_path && (u.length === null || u.offset < u.length));
    } catch {
      serverList = [];
    }
  }
  return serverList;
}

export async function discard(id) {
  await api("api/tus/" + encodeURIComponent(id), { method: "DELETE", headers: { "Tus-Resumable": "1.0.0" } });
  serverList = (serverList || []).filter((u) => u.id !== id);
  emit(true);
}

function fingerprint(item) {
  const f = item.file;
  return Promise.resolve(["atelier", ROOT.href, item.folder, f.name, f.size, f.lastModified].join("|"));
}

function statusOf(err) {
  const res = err && err.originalResponse;
  return res ? res.getStatus() : 0;
}

function messageOf(err) {
  const res = err && err.originalResponse;
  if (res) {
    try {
      const body = JSON.parse(res.getBody() || "{}");
      if (body.message) return body.message;
    } catch { /* not JSON */ }
  }
  return (err && err.message ? err.message : String(err)).split("\n")[0];
}

async function start(item) {
  item.state = "uploading";
  item.error = "";
  item.samples = [];
  const opts = {
    endpoint: serviceUrl("api/tus/"),
    chunkSize: item.chunk,
    retryDelays: [0, 1000, 2000, 4000, 8000, 10000, 15000, 20000, 30000, 30000, 30000],
    metadata: { filename: item.name, folder: item.folder, conflict: item.conflict },
    headers: { "X-CSRF-Token": csrfToken() },
    fingerprint: () => fingerprint(item),
    removeFingerprintOnSuccess: true,
    httpStack: new PrefixStack(),
    onAfterResponse: (req, res) => {
      if (req.getMethod() === "HEAD" && res.getStatus() === 200 && item.resumedFrom === null) {
        item.resumedFrom = Number(res.getHeader("Upload-Offset")) || 0;
      }
    },
    onProgress: (sent, total) => progress(item, sent, total),
    onSuccess: () => {
      item.state = "done";
      item.sent = item.size;
      item.speed = 0;
      item.eta = 0;
      emit(true);
      subs.forEach((fn) => fn({ done: item }));
      pump();
    },
    onShouldRetry: (err) => !NO_RETRY.has(statusOf(err)),
    onError: (err) => failed(item, err),
  };
  const up = new Upload(item.file, opts);
  item.upload = up;
  emit(true);
  try {
    const prev = await up.findPreviousUploads();
    if (prev.length) {
      up.resumeFromPreviousUpload(prev[0]);
    } else {
      const list = await unfinished();
      const match = list.find((u) => u.folder === item.folder && u.name === item.name && u.length === item.size);
      if (match) up.url = serviceUrl("api/tus/" + match.id);
    }
  } catch { /* start fresh */ }
  if (item.state === "uploading") up.start();
}

function progress(item, sent, total) {
  const now = performance.now();
  item.sent = sent;
  item.size = total;
  item.samples.push([now, sent]);
  while (item.samples.length > 2 && now - item.samples[0][0] > 3000) item.samples.shift();
  const [t0, b0] = item.samples[0];
  if (now - t0 > 250) {
    item.speed = ((sent - b0) * 1000) / (now - t0);
    item.eta = item.speed > 0 ? (total - sent) / item.speed : null;
  }
  emit();
}

function failed(item, err) {
  const status = statusOf(err);
  if (status === 413 && item.chunk > MIN_CHUNK) {
    item.chunk = Math.max(MIN_CHUNK, Math.floor(item.chunk / 8));
    item.state = "queued"; // the stored URL is found again: continues where it stopped
    pump();
    emit(true);
    return;
  }
  item.state = status === 409 ? "conflict" : "error";
  item.error = messageOf(err);
  item.speed = 0;
  emit(true);
  pump();
}

export function pause(item) {
  if (item.upload && item.state === "uploading") {
    item.upload.abort();
    item.state = "paused";
    item.speed = 0;
    emit(true);
    pump();
  }
}

export function resume(item, conflict) {
  if (conflict) item.conflict = conflict;
  if (["paused", "error", "conflict"].includes(item.state)) {
    item.state = "queued";
    emit(true);
    pump();
  }
}

export function cancel(item) {
  const up = item.upload;
  const wasRunning = item.state === "uploading";
  item.state = "cancelled";
  if (up) up.abort(true).catch(() => {});
  if (wasRunning) pump();
  remove(item);
}

export function remove(item) {
  const i = items.indexOf(item);
  if (i >= 0) items.splice(i, 1);
  emit(true);
}

export function clearFinished() {
  for (let i = items.length - 1; i >= 0; i--) {
    if (items[i].state === "done") items.splice(i, 1);
  }
  emit(true);
}

/** Files from a drop: folders walked with webkitGetAsEntry, keeping relative paths. */
export async function filesFromDrop(dataTransfer) {
  const entries = [];
  for (const it of dataTransfer.items || []) {
    const entry = it.webkitGetAsEntry ? it.webkitGetAsEntry() : null;
    if (entry) entries.push(entry);
  }
  if (!entries.length) return [...(dataTransfer.files || [])].map((file) => ({ file, rel: "" }));
  const out = [];
  const walk = async (entry, dir) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({ file, rel: dir });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      const sub = dir ? dir + "/" + entry.name : entry.name;
      for (;;) { // readEntries returns at most 100 entries per call
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const child of batch) await walk(child, sub);
      }
    }
  };
  for (const e of entries) await walk(e, "");
  return out;
}

/** Files from <input webkitdirectory>: the relative folder from webkitRelativePath. */
export function filesFromInput(input) {
  return [...input.files].map((file) => {
    const rel = file.webkitRelativePath || "";
    const cut = rel.lastIndexOf("/");
    return { file, rel: cut > 0 ? rel.slice(0, cut) : "" };
  });
}
