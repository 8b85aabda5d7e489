#!/usr/bin/env bash
# The container images, built and run with podman (no Docker engine here).
#   scripts/images.sh build   `make images`: the Debian base (debootstrap, cached), then the one service
#                             image infra/k8s runs, `localhost/infiniteflow:<version in pyproject.toml>`
#   scripts/images.sh test    `make test-images`: the five services from that image against the stack of
#                             `make up` (host network), one job end to end; the local services are
#                             stopped meanwhile and started again after. Takes the stack lock itself
#                             (INFINITEFLOW_STACK_LOCKED=1 where the caller holds it).
#   scripts/images.sh sizes   the images' sizes
# podman's settings come from a containers.conf this script writes ($INFINITEFLOW_CACHE/images), not
# from /etc: runc (crun fails on these machines' cgroup v1 layout), cgroupfs (no systemd), and no
# default ulimits (this machine's hard nofile limit, 20000, is below what podman sets for root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR/..
source infra/versions.env
log() { printf '\033[1m[images]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[images] %s\033[0m\n' "$*" >&2; exit 1; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

cache="$INFINITEFLOW_CACHE/images"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
image="localhost/infiniteflow:$version"  # infra/k8s/base names it `infiniteflow:<version>`
base="localhost/infiniteflow-base:$IMAGE_DEBIAN_SUITE-$IMAGE_BASE_DATE"
base_tarball="$cache/debian-$IMAGE_DEBIAN_SUITE-$IMAGE_BASE_DATE.tar.gz"
uv_cache="${UV_CACHE_DIR:-$HOME/.cache/uv}"  # the host's, shared with `make setup`
export CONTAINERS_CONF="$cache/containers.conf"

setup_podman() {
  local need=()
  for tool in podman:podman runc:runc debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    sudo_if_needed apt-get update -q
    DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -q "${need[@]}"
  fi
  mkdir -p "$cache"
  cat >"$CONTAINERS_CONF" <<EOF
# Written by scripts/images.sh (CONTAINERS_CONF points here); edits are overwritten.
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[engine.runtimes]
runc = ["$(command -v runc || echo /usr/sbin/runc)"]
EOF
}

# Debian's packages only: debootstrap's minimal system from the mirror, with the suite's updates and
# security repositories enabled so the image build can upgrade. Made once per IMAGE_BASE_DATE.
build_base() {
  if podman image exists "$base"; then
    log "base $base (exists)"
    return
  fi
  if [ ! -s "$base_tarball" ]; then
    local root
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    log "debootstrap $IMAGE_DEBIAN_SUITE from $IMAGE_DEBIAN_MIRROR (a few minutes)"
    sudo_if_needed debootstrap --variant=minbase --components=main "$IMAGE_DEBIAN_SUITE" "$root" \
      "$IMAGE_DEBIAN_MIRROR" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed; see $cache/debootstrap.log"; }
    cat >"$root/etc/apt/sources.list" <<EOF
deb $IMAGE_DEBIAN_MIRROR $IMAGE_DEBIAN_SUITE main
deb $IMAGE_DEBIAN_MIRROR $IMAGE_DEBIAN_SUITE-updates main
deb ${IMAGE_DEBIAN_MIRROR%/debian}/debian-security $IMAGE_DEBIAN_SUITE-security main
EOF
    # What a container does not need: downloaded packages, package lists, the mirror's logs.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/debootstrap \
      "$root"/var/log/*.log
    sudo_if_needed tar --numeric-owner -C "$root" -czf "$base_tarball.tmp" .
    mv "$base_tarball.tmp" "$base_tarball"
    sudo_if_needed rm -rf "$root"
  fi
  log "podman import $base_tarball → $base"
  podman import --quiet --change 'CMD ["/bin/bash"]' "$base_tarball" "$base" >/dev/null
}

# The service image FROM the base. uv installs uv.lock into /app/.venv with the host's uv cache
# mounted, so torch and its CUDA wheels are downloaded once per machine (and not at all where
# `make setup` ran), and the cache never becomes part of the image.
build_image() {
  mkdir -p "$uv_cache"
  local revision
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain -- infiniteflow_common services schemas pyproject.toml uv.lock 2>/dev/null)" ]; then
    revision="$revision-dirty"
  fi
  # The host's CA bundle, for a build behind a TLS-inspecting proxy (mounted, never copied in).
  local ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt} trust=()
  if [ -s "$ca" ]; then
    trust=(--volume "$ca:/run/build-ca.crt:ro" --build-arg SSL_CERT_FILE=/run/build-ca.crt
      --build-arg PIP_CERT=/run/build-ca.crt)
  fi
  log "podman build $image (from $base; revision $revision)"
  podman build --network host --layers "${trust[@]}" \
    --volume "$uv_cache:/root/.cache/uv-host" --build-arg UV_CACHE_DIR=/root/.cache/uv-host \
    --build-arg BASE="$base" --label org.opencontainers.image.revision="$revision" \
    --label org.opencontainers.image.version="$version" \
    -f infra/docker/Dockerfile -t "$image" .
}

sizes() {
  podman images --filter reference='localhost/infiniteflow*' \
    --format '{{.Repository}}:{{.Tag}}  {{.Size}}  (created {{.CreatedSince}})'
}

cmd_build() {
  setup_podman
  local t0=$SECONDS t1
  build_base
  t1=$SECONDS
  build_image
  log "base $((t1 - t0)) s, service image $((SECONDS - t1)) s, in all $((SECONDS - t0)) s"
  # A rebuild after a change to uv.lock leaves the previous venv layer (GBs) untagged: drop it.
  podman image prune --force >/dev/null
  sizes
}

# --- make test-images ------------------------------------------------------------------------------

containers=()
restore_local=""

stop_containers() {
  if [ ${#containers[@]} -gt 0 ]; then
    log "stopping ${containers[*]}"
    podman rm --force --time 30 "${containers[@]}" >/dev/null 2>&1 || true
  fi
}

finish() {
  local status=$?
  if [ $status -ne 0 ] && [ ${#containers[@]} -gt 0 ]; then
    for name in "${containers[@]}"; do
      log "last lines of $name"
      podman logs --tail 15 "$name" 2>&1 | sed 's/^/    /' || true
    done
  fi
  stop_containers
  if [ -n "$restore_local" ]; then
    log "starting the local services again (infiniteflow services up --workers $restore_local)"
    .venv/bin/infiniteflow services up --workers "$restore_local" >/dev/null || status=1
  fi
  exit $status
}

run_service() {  # run_service NAME MODULE [podman options...]
  local name="infiniteflow-test-$1" module=$2
  shift 2
  # As in infra/k8s: uid 10001, read-only root file system with /tmp as the scratch volume, the
  # endpoints from the environment (here the local stack's, from infra/local.env).
  podman run --detach --replace --name "$name" --network host --user 10001:10001 \
    --read-only --tmpfs /tmp:rw,mode=1777,size=4g --env-file infra/local.env \
    --env PROBE_NETWORK_ISOLATION=auto --env PROMETHEUS_TARGETS_DIR=/tmp/prometheus-targets \
    "$@" "$image" python -m "services.$module" >/dev/null
  containers+=("$name")
}

wait_started() {  # wait_started NAME SECONDS: until the service logs that it started
  local deadline=$((SECONDS + $2))
  until grep -q '"service started"' <<<"$(podman logs "infiniteflow-test-$1" 2>&1)"; do
    [ "$(podman inspect --format '{{.State.Running}}' "infiniteflow-test-$1")" = true ] \
      || die "$1 exited; see podman logs infiniteflow-test-$1"
    [ $SECONDS -lt $deadline ] || die "$1 did not start within $2 s"
    sleep 1
  done
}

cmd_test() {
  setup_podman
  podman image exists "$image" || die "no image $image: run \`make images\` first"
  [ -x .venv/bin/infiniteflow ] || die "no .venv: run \`make setup\` (and \`make up\`) first"
  # The stack lock, unless the caller holds it already (INFINITEFLOW_STACK_LOCKED=1: a second flock
  # of ours would wait for the caller's forever).
  if [ "${INFINITEFLOW_STACK_LOCKED:-}" != 1 ]; then
    exec 9>/tmp/infiniteflow-stack.lock
    if ! flock --nonblock 9; then
      log "waiting for the stack lock /tmp/infiniteflow-stack.lock (another session's tests hold it)"
      flock 9
    fi
  fi
  local stack
  stack=$(infra/stack.sh status)
  [ "$(grep -c ' up ' <<<"$stack")" = 4 ] || die "the stack is not up (\`make up\`):"$'\n'"$stack"
  trap finish EXIT
  # The local services and the containers would share consumer groups and ports: stop them first.
  local local_status running
  local_status=$(.venv/bin/infiniteflow services status)
  running=$(grep -c '^gpu_interp-[0-9]* *up' <<<"$local_status" || true)
  if grep -q '^[a-z_0-9-]* *up,' <<<"$local_status"; then
    restore_local=$((running > 0 ? running : 2))
    log "stopping the local services for the test ($(.venv/bin/infiniteflow services down))"
  fi
  local t0=$SECONDS
  log "starting ingest, splitter, gpu_interp, muxer, notifier from $image"
  run_service ingest ingest
  run_service splitter splitter
  run_service gpu_interp gpu_interp --env WORKER_ID="$(hostname)-image-worker-1"
  run_service muxer muxer
  run_service notifier notifier
  for name in ingest splitter muxer notifier gpu_interp; do wait_started "$name" 180; done
  log "all five started in $((SECONDS - t0)) s; one job end to end (sample clip ×2, rife engine, webhook)"
  # The client runs from the image too (scripts/images_job.py): the image's FFmpeg makes the sample,
  # the ingest container's API takes it, the notifier container's webhook comes back to it.
  local out
  out=$(mktemp -d /tmp/infiniteflow-test-images.XXXXXX)
  chmod 777 "$out"
  podman run --rm --network host --user 10001:10001 --read-only --tmpfs /tmp:rw,mode=1777 \
    --volume "$PWD/scripts/images_job.py:/check/images_job.py:ro" --volume "$out:/out" \
    --env-file infra/local.env "$image" python /check/images_job.py /out | tee "$out/job.log" || true
  local report
  report=$(tail -1 "$out/job.log")
  .venv/bin/python - "$report" <<'PY' || die "the job did not pass (files in $out)"
import json, sys
report = json.loads(sys.argv[1])
out = report.get("output", {})
print(f"job {report['job_id']} {report['status']} in {report['seconds']} s; webhook: {report.get('webhook')}; "
      f"output {out.get('frame rate')} fps, {out.get('frames')} frames, audio {out.get('audio')}")
sys.exit(1 if report["problems"] else 0)
PY
  log "passed: the services ran from $image (files in $out)"
}

case "${1:-build}" in
  build) cmd_build ;;
  test) cmd_test ;;
  sizes) setup_podman && sizes ;;
  *) die "usage: $0 build|test|sizes" ;;
esac
