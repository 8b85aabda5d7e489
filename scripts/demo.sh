#!/usr/bin/env bash
# `make demo`: the stack is up; show where everything is. (The pipeline issue turns this into a full job.)
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; source infra/local.env; set +a
infra/stack.sh status
cat <<TXT

InfiniteFlow stack is running:
  S3 (MinIO)     $S3_ENDPOINT   buckets: $INCOMING_BUCKET (drop videos here), $WORK_BUCKET, $OUTPUT_BUCKET
  Kafka          $KAFKA_BOOTSTRAP   topics: .venv/bin/python -c 'from infiniteflow_common.topics import topic_specs; print(*topic_specs(), sep="\n")'
  PostgreSQL     ${DATABASE_URL#*@}
  Prometheus     $PROMETHEUS_URL
  Credentials and endpoints: infra/local.env.   Stop everything: make down
TXT
