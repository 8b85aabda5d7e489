#!/usr/bin/env bash
# Starts and stops the local stack (Kafka KRaft, MinIO, PostgreSQL, Prometheus) bound to 127.0.0.1,
# data under the git-ignored .run/. Every action is idempotent: `up` skips what is already healthy,
# `down` ignores what is already stopped.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
set -a
# shellcheck source=versions.env
source infra/versions.env
# local.env holds the defaults; a variable already set in the environment wins, as it does for the
# services (e.g. DATABASE_URL naming a second database on the same server).
overrides=$(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' infra/local.env | while read -r name; do
  if [ -n "${!name+x}" ]; then printf '%s=%q\n' "$name" "${!name}"; fi
done)
# shellcheck source=local.env
source infra/local.env
eval "$overrides"
set +a
run="$root/.run"
log() { printf '\033[1m[stack]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[stack] %s\033[0m\n' "$*" >&2; exit 1; }

host_port() { local hp="${1#*://}"; hp="${hp%%/*}"; hp="${hp##*@}"; echo "$hp"; }
port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
wait_for() {  # wait_for NAME SECONDS COMMAND...
  local name=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$name did not become healthy; see $run/$name/*.log"
    sleep 0.5
  done
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
start_daemon() {  # start_daemon NAME LOGFILE COMMAND... (own session, so it outlives the shell)
  local name=$1 logfile=$2; shift 2
  setsid nohup "$@" >>"$logfile" 2>&1 < /dev/null &
  echo $! >"$run/$name/pid"
}
stop_daemon() {
  local pidf="$run/$1/pid"
  if alive "$pidf"; then
    local pid; pid=$(cat "$pidf"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    log "$1 stopped"
  fi
  rm -f "$pidf"
}

# --- Kafka (KRaft, single node acting as broker and controller) -----------------------------------
kafka_libs="$INFINITEFLOW_CACHE/kafka-$KAFKA_VERSION/libs"
kafka_up() {
  mkdir -p "$run/kafka"
  local props="$run/kafka/server.properties"
  sed -e "s#@DATA@#$run/kafka/data#" -e "s#@BOOTSTRAP@#$KAFKA_BOOTSTRAP#" \
      -e "s#@CONTROLLER@#$KAFKA_CONTROLLER#" infra/kafka/server.properties.in >"$props"
  if alive "$run/kafka/pid" && port_open "$KAFKA_BOOTSTRAP"; then log "kafka already running"; return; fi
  [ -f "$kafka_libs/kafka_2.13-$KAFKA_VERSION.jar" ] || die "Kafka jars missing: run make setup"
  if [ ! -f "$run/kafka/data/meta.properties" ]; then
    log "formatting KRaft storage"
    java -cp "$kafka_libs/*" -Dlog4j2.configurationFile="$root/infra/kafka/log4j2.yaml" \
      kafka.tools.StorageTool format --standalone -t "$(java -cp "$kafka_libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$props" >"$run/kafka/format.log" 2>&1 || die "kafka storage format failed: $(tail -3 "$run/kafka/format.log")"
  fi
  log "starting kafka $KAFKA_VERSION on $KAFKA_BOOTSTRAP"
  KAFKA_LOG_DIR="$run/kafka" start_daemon kafka "$run/kafka/kafka.log" \
    java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$root/infra/kafka/log4j2.yaml" -Dkafka.logs.dir="$run/kafka" \
      -cp "$kafka_libs/*" kafka.Kafka "$props"
  wait_for kafka 90 port_open "$KAFKA_BOOTSTRAP"
}

# --- MinIO with its native Kafka notification target ----------------------------------------------
minio_bin="$INFINITEFLOW_CACHE/minio-$MINIO_VERSION/minio"
minio_up() {
  mkdir -p "$run/minio/data" "$run/minio/queue"
  local addr; addr=$(host_port "$S3_ENDPOINT")
  if alive "$run/minio/pid" && curl -fsS "$S3_ENDPOINT/minio/health/live" >/dev/null 2>&1; then
    log "minio already running"; return
  fi
  [ -x "$minio_bin" ] || die "MinIO binary missing: run make setup"
  log "starting minio on $addr"
  MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
  MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY=on \
  MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY="$KAFKA_BOOTSTRAP" \
  MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY=minio.events \
  MINIO_NOTIFY_KAFKA_QUEUE_DIR_PRIMARY="$run/minio/queue" \
  MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_PRIMARY=100000 \
  MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
    start_daemon minio "$run/minio/minio.log" \
      "$minio_bin" server --quiet --address "$addr" --console-address 127.0.0.1:9001 "$run/minio/data"
  wait_for minio 60 curl -fsS "$S3_ENDPOINT/minio/health/live"
}

# --- PostgreSQL -----------------------------------------------------------------------------------
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pg_port() { local p="${DATABASE_URL##*:}"; echo "${p%%/*}"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_up() {
  [ -n "$pg_bin" ] || die "PostgreSQL server binaries missing: run make setup"
  local port; port=$(pg_port)
  mkdir -p "$run/postgres"
  [ "$(id -u)" = 0 ] && chown postgres: "$run/postgres"
  if [ ! -f "$run/postgres/data/PG_VERSION" ]; then
    log "initdb"
    as_pg "$pg_bin/initdb" -D "$run/postgres/data" -U postgres --auth=trust -E UTF8 >"$run/postgres/initdb.log"
  fi
  if as_pg "$pg_bin/pg_ctl" -D "$run/postgres/data" status >/dev/null 2>&1; then
    log "postgres already running"
  else
    log "starting postgres on 127.0.0.1:$port"
    as_pg "$pg_bin/pg_ctl" -D "$run/postgres/data" -l "$run/postgres/postgres.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $run/postgres -c max_connections=200 -c fsync=on" start >/dev/null
  fi
  wait_for postgres 60 "$pg_bin/pg_isready" -h 127.0.0.1 -p "$port"
  # role and database named in DATABASE_URL (user:password@host:port/db)
  local creds="${DATABASE_URL#*://}"; creds="${creds%%@*}"
  local user="${creds%%:*}" pass="${creds#*:}" db="${DATABASE_URL##*/}"
  local psql=("$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -qtA)
  if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname='$user'")" != 1 ]; then
    "${psql[@]}" -c "create role \"$user\" login password '$pass' createdb"
  fi
  if [ "$("${psql[@]}" -c "select 1 from pg_database where datname='$db'")" != 1 ]; then
    "${psql[@]}" -c "create database \"$db\" owner \"$user\""
  fi
}

# --- Prometheus -----------------------------------------------------------------------------------
prom_up() {
  mkdir -p "$run/prometheus/data"
  local addr; addr=$(host_port "$PROMETHEUS_URL")
  if alive "$run/prometheus/pid" && curl -fsS "$PROMETHEUS_URL/-/ready" >/dev/null 2>&1; then
    curl -fsS -X POST "$PROMETHEUS_URL/-/reload" >/dev/null 2>&1 || true
    log "prometheus already running (configuration reloaded)"; return
  fi
  log "starting prometheus on $addr"
  start_daemon prometheus "$run/prometheus/prometheus.log" \
    prometheus --config.file="$root/infra/prometheus/prometheus.yml" --storage.tsdb.path="$run/prometheus/data" \
      --web.listen-address="$addr" --web.enable-lifecycle --storage.tsdb.retention.time=2d
  wait_for prometheus 60 curl -fsS "$PROMETHEUS_URL/-/ready"
}

case "${1:-}" in
  up)
    kafka_up; minio_up; pg_up; prom_up
    log "bootstrapping topics, buckets, bucket notifications and database migrations"
    "$root/.venv/bin/infiniteflow" admin bootstrap
    ;;
  down)
    stop_daemon prometheus
    if [ -n "$pg_bin" ] && [ -f "$run/postgres/data/PG_VERSION" ] && \
       as_pg "$pg_bin/pg_ctl" -D "$run/postgres/data" status >/dev/null 2>&1; then
      as_pg "$pg_bin/pg_ctl" -D "$run/postgres/data" -m fast -w stop >/dev/null; log "postgres stopped"
    fi
    stop_daemon minio; stop_daemon kafka
    ;;
  stop)  # stop one component (fault tests): kafka | minio | postgres | prometheus
    case "${2:-}" in
      kafka|minio|prometheus) stop_daemon "$2" ;;
      postgres) as_pg "$pg_bin/pg_ctl" -D "$run/postgres/data" -m fast -w stop >/dev/null; log "postgres stopped" ;;
      *) die "usage: $0 stop kafka|minio|postgres|prometheus" ;;
    esac
    ;;
  start)  # start one component again, without the bootstrap
    case "${2:-}" in
      kafka) kafka_up ;; minio) minio_up ;; postgres) pg_up ;; prometheus) prom_up ;;
      *) die "usage: $0 start kafka|minio|postgres|prometheus" ;;
    esac
    ;;
  status)
    port_open "$KAFKA_BOOTSTRAP" && echo "kafka      up   $KAFKA_BOOTSTRAP" || echo "kafka      down"
    curl -fsS "$S3_ENDPOINT/minio/health/live" >/dev/null 2>&1 && echo "minio      up   $S3_ENDPOINT" || echo "minio      down"
    "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$(pg_port)" && echo "postgres   up   127.0.0.1:$(pg_port)" || echo "postgres   down"
    curl -fsS "$PROMETHEUS_URL/-/ready" >/dev/null 2>&1 && echo "prometheus up   $PROMETHEUS_URL" || echo "prometheus down"
    ;;
  *) die "usage: $0 up|down|status|stop COMPONENT|start COMPONENT" ;;
esac
