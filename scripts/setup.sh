#!/usr/bin/env bash
# Installs everything InfiniteFlow needs on a fresh Debian machine. Idempotent: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../infra/versions.env
source infra/versions.env
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# uv itself, hash-pinned (infra/uv.requirements.txt), kept in the cache outside the clone.
uv_home="$INFINITEFLOW_CACHE/uv-$UV_VERSION"
uv="$uv_home/bin/uv"
install_uv() {
  if [ ! -x "$uv" ]; then
    log "installing uv $UV_VERSION (hash-checked) into $uv_home"
    rm -rf "$uv_home"
    python3 -m venv "$uv_home"
    "$uv_home/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
      -r infra/uv.requirements.txt
  fi
}
if [ "${1:-}" = --uv-only ]; then install_uv; exit 0; fi  # `make lock` needs uv and nothing else

# 1. Debian packages: ffmpeg, PostgreSQL (when no server binaries are present), Prometheus.
need_pkgs=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_pkgs+=(ffmpeg)
command -v prometheus >/dev/null && command -v promtool >/dev/null || need_pkgs+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v mvn >/dev/null || need_pkgs+=(maven)
command -v java >/dev/null || need_pkgs+=(openjdk-17-jre-headless)
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)  # the web page's end-to-end test drives it headless
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${need_pkgs[*]}"
  sudo_if_needed apt-get update -q
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -q "${need_pkgs[@]}"
fi

# 2. Apache Kafka broker jars from Maven Central into the cache.
kafka_libs="$INFINITEFLOW_CACHE/kafka-$KAFKA_VERSION/libs"
if [ ! -f "$kafka_libs/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central"
  rm -rf "$kafka_libs.tmp"
  mvn -q -B -f infra/kafka/pom.xml -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
    -DoutputDirectory="$kafka_libs.tmp" -DincludeScope=runtime
  rm -rf "$kafka_libs" && mv "$kafka_libs.tmp" "$kafka_libs"
fi

# 3. MinIO server built with `go install`, kept in the cache by version.
minio_bin="$INFINITEFLOW_CACHE/minio-$MINIO_VERSION/minio"
if [ ! -x "$minio_bin" ]; then
  log "go install $MINIO_MODULE@$MINIO_VERSION (a few minutes on first run)"
  mkdir -p "$(dirname "$minio_bin")"
  GOBIN="$(dirname "$minio_bin")" GOFLAGS=-mod=mod go install "$MINIO_MODULE@$MINIO_VERSION"
fi

# 4. The Python virtual environment, exactly as uv.lock says (hashes checked, no resolver at install time).
#    uv's package cache is ~/.cache/uv. `uv sync --frozen` is exact: it also removes what the lock does
#    not name and repairs a drifted .venv, so it runs every time (a second when nothing changed); then
#    the venv is compared with the lock and setup fails on any difference.
install_uv
if [ ! -x .venv/bin/python ]; then
  log "creating .venv from uv.lock (torch is large; uv caches it outside the clone)"
fi
"$uv" sync --frozen --quiet
if ! .venv/bin/python scripts/venv_check.py --uv "$uv"; then
  # e.g. a stray package was removed and took files another one shares: reinstall everything from the cache
  log "repairing .venv: reinstalling every package from uv.lock"
  "$uv" sync --frozen --quiet --reinstall
  .venv/bin/python scripts/venv_check.py --uv "$uv"
fi
log "ready: kafka=$KAFKA_VERSION minio=$MINIO_VERSION $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"
