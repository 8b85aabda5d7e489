// The InfiniteFlow page: an API key for this tab, upload with every option the API offers, the job
// followed live (server-sent events from /api/events, fed by PostgreSQL NOTIFY), a before/after view,
// and a live list of the caller's recent jobs with cancel and download.
// Plain browser JavaScript, no build step. document.body.dataset.state tells tests (and CSS) where the
// current job is; window.progressSeen records every progress value shown.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["completed", "completed_with_warnings", "failed", "cancelled"]);
const SUCCEEDED = new Set(["completed", "completed_with_warnings"]);
const KEY_STORE = "infiniteflow.apiKey";
const LIST_PAGE = 10;
const LIST_REFRESH_MS = 3000;
const POLL_MS = 1000;

// How the options the API describes are shown: label and position. An option the API has but this
// table does not know still appears (labelled with its name, after the known ones).
const OPTION_LABELS = {
  multiplier: "×",
  target_fps: "fps",
  engine: "Engine",
  model: "Model", // RIFE weights (hdv3, v4.25 or auto) once the API offers the `model` option
  quality: "Quality",
  codec: "Codec",
  crf: "CRF",
  bitrate: "Bitrate",
  preset: "Preset",
  dedupe: "Skip duplicate frames",
  webhook_url: "Webhook (optional)",
  priority: "Priority",
};
const OPTION_ORDER = Object.keys(OPTION_LABELS);
const RATE_OPTIONS = new Set(["multiplier", "target_fps"]);

// What the API's error codes mean for someone using this page; other codes show the API's message.
const MESSAGES = {
  E_AUTH_REQUIRED: () => "This server needs an API key: paste yours in the API key field above.",
  E_AUTH_INVALID: () => "The API key was not accepted (unknown or revoked). Check it, or ask for a new one.",
  E_RATE_LIMITED: (e) => `Too many requests with your key; try again in ${e.retry_after_s || 60} s.`,
  E_UPLOAD_TOO_LARGE: (e) => `The video is too large for this server: ${e.message}`,
  E_JOB_NOT_FOUND: () => "There is no such job for your key (it may belong to someone else).",
  E_JOB_FINAL: (e) => `The job had already ${e.status === "failed" ? "failed" : "finished"}; it cannot be cancelled.`,
  E_JOB_NOT_READY: () => "The job has not finished yet; its download appears here when it has.",
  E_JOB_CANCELLED: () => "The job was cancelled; there is nothing to download.",
  E_CANCEL_NOT_ANNOUNCED: () => "The job is cancelled, but its webhook could not be queued yet: press Cancel again.",
  E_INTERNAL: () => "The server had a problem; try again in a moment.",
};

let chosen = null; // the File to upload
let current = null; // id of the job followed above the list
let listWanted = LIST_PAGE;
let listTimer = null;
window.progressSeen = [];

function setState(state) {
  document.body.dataset.state = state;
}

// --- the API key, for this tab only ----------------------------------------------------------------

function apiKey() {
  return (sessionStorage.getItem(KEY_STORE) || "").trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function wireKey() {
  const field = $("api-key");
  field.value = apiKey();
  field.addEventListener("input", () => {
    if (field.value.trim()) sessionStorage.setItem(KEY_STORE, field.value.trim());
    else sessionStorage.removeItem(KEY_STORE);
  });
  field.addEventListener("change", () => refreshJobs());
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    field.value = "";
    refreshJobs();
    field.focus();
  });
}

// --- talking to the API -----------------------------------------------------------------------------

function explain(status, body) {
  const error = body && body.error;
  if (!error) return `The server answered ${status}; try again in a moment.`;
  const known = MESSAGES[error.code];
  return `${known ? known(error) : error.message} (${error.code})`;
}

async function api(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
  } catch (err) {
    return { ok: false, status: 0, body: null, message: "The server could not be reached; is it running?" };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  return { ok: response.ok, status: response.status, body, message: response.ok ? "" : explain(response.status, body) };
}

// --- the options, as the API describes them ------------------------------------------------------

function optionId(name) {
  return name.replace(/_/g, "-");
}

function optionControl(name, schema) {
  const id = optionId(name);
  let control;
  if (Array.isArray(schema.enum)) {
    control = document.createElement("select");
    if (schema.default === undefined) control.append(new Option("server default", ""));
    for (const value of schema.enum) {
      control.append(new Option(String(value), String(value), false, String(value) === String(schema.default)));
    }
  } else {
    control = document.createElement("input");
    if (schema.type === "boolean") {
      control.type = "checkbox";
      control.checked = schema.default === true;
    } else if (schema.type === "integer" || schema.type === "number") {
      control.type = "number";
      if (schema.minimum !== undefined) control.min = schema.minimum;
      if (schema.maximum !== undefined) control.max = schema.maximum;
      if (schema.default !== undefined) control.value = String(schema.default);
      if (schema.type === "integer") control.step = "1";
      // a phone's numeric keypad has no minus sign
      control.inputMode = schema.minimum < 0 ? "text" : "numeric";
    } else {
      control.type = schema.format === "uri" ? "url" : "text";
      if (schema.example !== undefined) control.placeholder = String(schema.example);
      else if (schema.format === "uri") control.placeholder = "https://example.com/hook";
    }
  }
  control.id = id;
  control.name = name;
  control.dataset.option = name;
  return control;
}

function optionField(name, schema) {
  const id = optionId(name);
  const field = document.createElement("div");
  field.className = schema.type === "boolean" ? "field check" : "field";
  field.id = `${id}-field`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = OPTION_LABELS[name] || name.replace(/_/g, " ");
  const control = optionControl(name, schema);
  if (schema.description) {
    const help = document.createElement("span");
    help.className = "help";
    help.id = `${id}-help`;
    help.textContent = schema.description;
    control.setAttribute("aria-describedby", help.id);
    field.append(...(schema.type === "boolean" ? [control, label, help] : [label, control, help]));
  } else {
    field.append(...(schema.type === "boolean" ? [control, label] : [label, control]));
  }
  return field;
}

async function loadOptions() {
  let properties;
  try {
    const spec = await (await fetch("/openapi.json")).json();
    properties = spec.paths["/api/upload"].post.requestBody.content["multipart/form-data"].schema.properties;
  } catch (err) {
    showFormError("The job options could not be loaded from the server; reload the page to try again.");
    return;
  }
  const names = Object.keys(properties).filter((name) => name !== "file");
  const rank = (name) => (OPTION_ORDER.includes(name) ? OPTION_ORDER.indexOf(name) : OPTION_ORDER.length);
  names.sort((a, b) => rank(a) - rank(b));
  const container = $("option-fields");
  container.replaceChildren(...names.map((name) => optionField(name, properties[name])));
  showRateMode();
  if (chosen) $("submit").disabled = false;
}

function showRateMode() {
  const byFps = $("rate-mode").value === "target_fps";
  const fps = $("target-fps-field");
  const multiplier = $("multiplier-field");
  if (fps) fps.hidden = !byFps;
  if (multiplier) multiplier.hidden = byFps;
}

function formData() {
  const data = new FormData();
  data.append("file", chosen, chosen.name);
  const rate = $("rate-mode").value;
  for (const control of document.querySelectorAll("[data-option]")) {
    const name = control.dataset.option;
    if (RATE_OPTIONS.has(name) && name !== rate) continue;
    if (control.type === "checkbox") {
      if (control.checked) data.append(name, "true");
    } else if (control.value.trim() !== "") {
      data.append(name, control.value.trim());
    }
  }
  return data;
}

// --- choosing and uploading ------------------------------------------------------------------------

function choose(file) {
  if (!file) return;
  chosen = file;
  $("drop-text").textContent = `${file.name} (${(file.size / 1e6).toFixed(1)} MB)`;
  $("drop-zone").classList.add("chosen");
  $("submit").disabled = !$("option-fields").children.length;
}

function wireDropZone() {
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (e) => choose(e.dataTransfer.files[0]));
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file-input").click(); }
  });
  $("file-input").addEventListener("change", (e) => choose(e.target.files[0]));
  $("rate-mode").addEventListener("change", showRateMode);
}

function showFormError(message) {
  $("form-error").textContent = message;
  $("form-error").hidden = !message;
}

function showProgress(percent, stage) {
  window.progressSeen.push(percent);
  $("progress").value = percent;
  $("progress-text").textContent = `${percent} %`;
  $("stage").textContent = stage;
}

function upload(event) {
  event.preventDefault();
  if (!chosen) return;
  showFormError("");
  $("submit").disabled = true;
  $("job").hidden = false;
  $("error").hidden = true;
  $("result").hidden = true;
  $("compare").hidden = true;
  $("cancel-current").hidden = true;
  $("queue").hidden = true;
  $("job-id").textContent = "";
  current = null;
  setState("uploading");
  const request = new XMLHttpRequest();
  request.open("POST", "/api/upload");
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  request.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) showProgress(0, `uploading ${Math.round((100 * e.loaded) / e.total)} %`);
  });
  request.addEventListener("load", () => {
    let body = {};
    try { body = JSON.parse(request.responseText || "{}"); } catch (err) { body = {}; }
    if (request.status !== 202) {
      $("job").hidden = true;
      $("submit").disabled = false;
      showFormError(explain(request.status, body));
      setState("refused");
      return;
    }
    current = body.job_id;
    $("job-id").textContent = body.job_id;
    $("cancel-current").hidden = false;
    setState("running");
    refreshJobs();
    follow(body.job_id);
  });
  request.addEventListener("error", () => {
    $("submit").disabled = false;
    showFormError("The upload did not reach the server; check the connection and try again.");
    setState("refused");
  });
  request.send(formData());
}

// --- following one job -----------------------------------------------------------------------------

function fps(rate) {
  return rate ? `${String(rate).replace(/\/1$/, "")} fps` : "";
}

// A queued job's place (no chunk of it has started): position and estimated start, local time.
function queueText(queue) {
  if (!queue) return "";
  const ahead = queue.jobs_ahead === 1 ? "1 job" : `${queue.jobs_ahead} jobs`;
  const start = new Date(queue.estimated_start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `Queued: position ${queue.position} (${ahead} ahead), should start about ${start}.`;
}

function onStatus(jobId, job) {
  if (jobId !== current) return true; // another job was started meanwhile: stop following this one
  const chunks = job.chunks && job.chunks.total ? ` · chunks ${job.chunks.done}/${job.chunks.total}` : "";
  showProgress(job.progress, job.status);
  $("chunks").textContent = chunks;
  $("job-priority").textContent = `priority ${job.priority ?? 0}`;
  $("queue").textContent = queueText(job.queue);
  $("queue").hidden = !job.queue;
  $("cancel-current").hidden = FINAL.has(job.status);
  if (SUCCEEDED.has(job.status)) done(jobId, job);
  else if (job.status === "failed") fail(job.error ? `${job.error.message} (${job.error.code})` : "The job failed.");
  else if (job.status === "cancelled") {
    $("submit").disabled = false;
    setState("cancelled");
  }
  return FINAL.has(job.status);
}

function showJobError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("submit").disabled = false;
  setState("failed");
}

// Server-sent events read through fetch, so the API key can travel in a header (EventSource cannot
// send one); when the stream breaks before the job is final, poll its status instead.
async function follow(jobId) {
  try {
    const response = await fetch(`/api/events/${jobId}`, {
      headers: { ...authHeaders(), Accept: "text/event-stream" },
    });
    if (response.ok && response.body) {
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        buffer += value;
        for (let end = buffer.search(/\r?\n\r?\n/); end >= 0; end = buffer.search(/\r?\n\r?\n/)) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          const lines = block.split(/\r?\n/);
          const type = (lines.find((l) => l.startsWith("event:")) || "event:message").slice(6).trim();
          const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (type === "status" && data && onStatus(jobId, JSON.parse(data))) {
            reader.cancel();
            return;
          }
        }
      }
    }
  } catch (err) {
    // the stream broke (server restart, network); polling below takes over
  }
  await poll(jobId);
}

async function poll(jobId) {
  while (jobId === current) {
    const answer = await api(`/api/status/${jobId}`);
    if (answer.ok && onStatus(jobId, answer.body)) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function downloadUrl(jobId) {
  if (!apiKey()) return `/api/download/${jobId}`;
  const answer = await api(`/api/download/${jobId}?redirect=false`);
  if (!answer.ok) throw new Error(answer.message);
  return answer.body.url;
}

// With a key, a plain link cannot send it: ask for the presigned URL first, then open it.
async function openDownload(event, jobId, report) {
  if (!apiKey()) return;
  event.preventDefault();
  try {
    window.open(await downloadUrl(jobId), "_blank", "noopener");
  } catch (err) {
    report(err.message);
  }
}

async function done(jobId, job) {
  const link = $("download");
  link.href = `/api/download/${jobId}`;
  link.onclick = (e) => openDownload(e, jobId, showJobError);
  const result = job.result || {};
  $("result-info").textContent = result.out_frames
    ? ` · ${result.out_frames} frames at ${fps(job.output_fps)}, ${(result.output_size_bytes / 1e6).toFixed(2)} MB`
    : "";
  $("result").hidden = false;
  $("submit").disabled = false;
  $("before-fps").textContent = fps(job.probe && job.probe.fps);
  $("after-fps").textContent = fps(job.output_fps);
  $("before").src = URL.createObjectURL(chosen);
  try {
    $("after").src = await downloadUrl(jobId);
  } catch (err) {
    fail(err.message);
    return;
  }
  $("compare").hidden = false;
  setState(job.status);
  refreshJobs();
}

async function cancelJob(jobId, report) {
  const answer = await api(`/api/jobs/${jobId}/cancel`, { method: "POST" });
  if (!answer.ok) {
    report(answer.message);
    return;
  }
  if (jobId === current) onStatus(jobId, answer.body);
  refreshJobs();
}

// --- the list of recent jobs -----------------------------------------------------------------------

function fileName(job) {
  const key = (job.source && job.source.key) || job.job_id;
  return key.split("/").pop();
}

function actionsOf(job) {
  const cell = document.createElement("td");
  cell.className = "actions";
  const name = fileName(job);
  if (job.download_url) {
    const link = document.createElement("a");
    link.href = job.download_url;
    link.textContent = "Download";
    link.target = "_blank";
    link.rel = "noopener";
    link.setAttribute("aria-label", `Download ${name}`);
    link.addEventListener("click", (e) => openDownload(e, job.job_id, showListError));
    cell.append(link);
  }
  if (job.cancel_url) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "danger small";
    button.textContent = "Cancel";
    button.setAttribute("aria-label", `Cancel ${name}`);
    button.addEventListener("click", () => {
      button.disabled = true;
      cancelJob(job.job_id, (message) => { button.disabled = false; showListError(message); });
    });
    cell.append(button);
  }
  return cell;
}

function renderRow(row, job) {
  const actions = `${Boolean(job.download_url)}|${Boolean(job.cancel_url)}`;
  row.dataset.status = job.status;
  if (!row.children.length) {
    const cells = ["name", "status", "progress", "created"].map((kind) => {
      const cell = document.createElement("td");
      cell.className = kind;
      return cell;
    });
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.setAttribute("aria-label", `progress of ${fileName(job)}`);
    const text = document.createElement("span");
    cells[2].append(bar, text);
    row.append(...cells);
  }
  const [name, status, progress, created] = row.children;
  name.textContent = fileName(job);
  name.title = job.job_id;
  const error = job.error ? ` — ${job.error.code}` : "";
  const queued = job.queue ? ` — #${job.queue.position} in queue` : "";
  status.textContent = `${job.status.replace(/_/g, " ")}${error}${queued}`;
  status.title = queueText(job.queue);
  progress.firstChild.value = job.progress;
  progress.lastChild.textContent = ` ${job.progress} %`;
  const at = job.timings && job.timings.created_at;
  created.textContent = at ? new Date(at).toLocaleString() : "";
  if (row.dataset.actions !== actions) {
    // rebuilt only when the possible actions change, so keyboard focus on a button is not lost
    if (row.children[4]) row.children[4].remove();
    row.append(actionsOf(job));
    row.dataset.actions = actions;
  }
}

function showListError(message) {
  $("jobs-error").textContent = message;
  $("jobs-error").hidden = !message;
}

async function fetchJobs(wanted) {
  const jobs = [];
  let cursor = null;
  let more = false;
  while (jobs.length < wanted) {
    const limit = Math.min(100, wanted - jobs.length);
    const query = `limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const answer = await api(`/api/jobs?${query}`);
    if (!answer.ok) return { error: answer.message };
    jobs.push(...answer.body.jobs);
    cursor = answer.body.next;
    more = Boolean(cursor);
    if (!cursor) break;
  }
  return { jobs, more };
}

async function refreshJobs() {
  clearTimeout(listTimer);
  const page = await fetchJobs(listWanted);
  if (page.error) {
    showListError(page.error);
  } else {
    showListError("");
    const body = $("jobs-body");
    const rows = new Map([...body.children].map((row) => [row.dataset.jobId, row]));
    const order = page.jobs.map((job) => job.job_id);
    for (const job of page.jobs) {
      let row = rows.get(job.job_id);
      if (!row) {
        row = document.createElement("tr");
        row.dataset.jobId = job.job_id;
      }
      renderRow(row, job);
      rows.delete(job.job_id);
      if (!row.isConnected) body.append(row);
    }
    for (const stale of rows.values()) stale.remove();
    if ([...body.children].map((row) => row.dataset.jobId).join() !== order.join()) {
      for (const id of order) body.append(body.querySelector(`tr[data-job-id="${id}"]`));
    }
    $("jobs-empty").hidden = page.jobs.length > 0;
    $("jobs-more").hidden = !page.more;
  }
  listTimer = setTimeout(refreshJobs, LIST_REFRESH_MS);
}

// --- before / after --------------------------------------------------------------------------------

function seekBoth() {
  const before = $("before");
  const after = $("after");
  const duration = Math.min(before.duration || 0, after.duration || 0);
  if (!duration) return;
  const at = (duration * $("moment").value) / 1000;
  before.pause();
  after.pause();
  before.currentTime = at;
  after.currentTime = at;
  $("moment-text").textContent = `${at.toFixed(2)} s`;
}

function playBoth() {
  for (const video of [$("before"), $("after")]) {
    video.loop = true;
    video.currentTime = 0;
    video.play();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setState("loading");
  wireKey();
  wireDropZone();
  $("upload-form").addEventListener("submit", upload);
  $("cancel-current").addEventListener("click", () => {
    if (current) cancelJob(current, showJobError);
  });
  $("jobs-more").addEventListener("click", () => {
    listWanted += LIST_PAGE;
    refreshJobs();
  });
  $("moment").addEventListener("input", seekBoth);
  $("play-both").addEventListener("click", playBoth);
  for (const id of ["before", "after"]) $(id).addEventListener("loadedmetadata", seekBoth);
  refreshJobs();
  loadOptions().then(() => setState("idle"));
});
