// The InfiniteFlow page: upload with options, follow the job live (server-sent events from
// /api/events, fed by PostgreSQL NOTIFY), then offer the download and a before/after view.
// Plain browser JavaScript, no build step. document.body.dataset.state tells tests (and CSS) where we are.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["completed", "completed_with_warnings", "failed"]);
let chosen = null;
window.progressSeen = []; // every progress value shown, in order (the end-to-end test reads it)

function setState(state) {
  document.body.dataset.state = state;
}

function choose(file) {
  if (!file) return;
  chosen = file;
  $("drop-text").textContent = `${file.name} (${(file.size / 1e6).toFixed(1)} MB)`;
  $("drop-zone").classList.add("chosen");
  $("submit").disabled = false;
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
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file-input").click(); });
  $("file-input").addEventListener("change", (e) => choose(e.target.files[0]));
  $("rate-mode").addEventListener("change", (e) => {
    const byFps = e.target.value === "target_fps";
    $("fps-field").hidden = !byFps;
    $("multiplier-field").hidden = byFps;
  });
}

function formData() {
  const data = new FormData();
  data.append("file", chosen, chosen.name);
  if ($("rate-mode").value === "target_fps") data.append("target_fps", $("target-fps").value.trim());
  else data.append("multiplier", $("multiplier").value);
  data.append("engine", $("engine").value);
  if ($("engine").value === "rife") data.append("model", $("model").value);
  const hook = $("webhook-url").value.trim();
  if (hook) data.append("webhook_url", hook);
  return data;
}

function fps(rate) {
  return rate ? `${String(rate).replace(/\/1$/, "")} fps` : "";
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
  $("submit").disabled = true;
  $("job").hidden = false;
  $("error").hidden = true;
  $("result").hidden = true;
  $("compare").hidden = true;
  setState("uploading");
  const request = new XMLHttpRequest();
  request.open("POST", "/api/upload");
  request.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) showProgress(0, `uploading ${Math.round((100 * e.loaded) / e.total)} %`);
  });
  request.addEventListener("load", () => {
    const body = JSON.parse(request.responseText || "{}");
    if (request.status !== 202) {
      fail(body.error ? `${body.error.code}: ${body.error.message}` : `upload failed (${request.status})`);
      return;
    }
    $("job-id").textContent = body.job_id;
    setState("running");
    follow(body.job_id);
  });
  request.addEventListener("error", () => fail("the upload did not reach the server"));
  request.send(formData());
}

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("submit").disabled = false;
  setState("failed");
}

function follow(jobId) {
  const onStatus = (job) => {
    const chunks = job.chunks && job.chunks.total ? ` · chunks ${job.chunks.done}/${job.chunks.total}` : "";
    showProgress(job.progress, job.status);
    $("chunks").textContent = chunks;
    if (job.status === "completed" || job.status === "completed_with_warnings") done(jobId, job);
    else if (job.status === "failed") fail(job.error ? `${job.error.code}: ${job.error.message}` : "the job failed");
    return FINAL.has(job.status);
  };
  if (!window.EventSource) {
    poll(jobId, onStatus);
    return;
  }
  const source = new EventSource(`/api/events/${jobId}`);
  source.addEventListener("status", (e) => { if (onStatus(JSON.parse(e.data))) source.close(); });
  source.addEventListener("error", () => {
    // The stream ends when the job is final; otherwise EventSource reconnects by itself.
    if (FINAL.has(document.body.dataset.state)) source.close();
  });
}

async function poll(jobId, onStatus) {
  for (;;) {
    const response = await fetch(`/api/status/${jobId}`);
    if (response.ok && onStatus(await response.json())) return;
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function done(jobId, job) {
  const url = `/api/download/${jobId}`;
  $("download").href = url;
  const result = job.result || {};
  $("result-info").textContent = result.out_frames
    ? ` · ${result.out_frames} frames at ${fps(job.output_fps)}, ${(result.output_size_bytes / 1e6).toFixed(2)} MB`
    : "";
  $("result").hidden = false;
  $("submit").disabled = false;
  $("before-fps").textContent = fps(job.probe && job.probe.fps);
  $("after-fps").textContent = fps(job.output_fps);
  $("before").src = URL.createObjectURL(chosen);
  $("after").src = url;
  $("compare").hidden = false;
  setState(job.status);
}

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
  setState("idle");
  wireDropZone();
  $("upload-form").addEventListener("submit", upload);
  $("moment").addEventListener("input", seekBoth);
  $("play-both").addEventListener("click", playBoth);
  for (const id of ["before", "after"]) $(id).addEventListener("loadedmetadata", seekBoth);
});
