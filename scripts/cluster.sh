#!/usr/bin/env bash
# Try the platform where its users run it, on one machine: a local S3-API server (SeaweedFS), a Spark standalone
# master with 2 workers that share no folder with the driver, and Redis; then `lfm` runs against them with the
# config this script writes. Never production: loopback only.
#
#   bash scripts/cluster.sh up DIR      # start all of it, write DIR/lfm.yaml and DIR/env.sh
#   . DIR/env.sh                        # the S3 credentials, in this shell only (never in lfm.yaml)
#   .venv/bin/lfm --config DIR/lfm.yaml synth --out DIR/raw && ...   (README: "Run on an object store and a cluster")
#   bash scripts/cluster.sh down DIR    # stop all of it (the store's data stays in DIR/s3/data)
#
# Each worker gets its own empty work dir, HOME and scratch folder under DIR/worker-N: what the executors read
# comes from the object store, or from the driver through Spark.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"

die() { echo "cluster.sh: $*" >&2; exit 1; }

spark_home() { "$REPO/.venv/bin/python" -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))'; }

wait_for() {  # wait_for LOG TEXT: until a daemon logs TEXT (90 s)
  local i
  for i in $(seq 1 180); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.5; done
  die "no '$2' in $1 after 90 s"
}

up() {
  local dir="${1:?usage: cluster.sh up DIR}"
  [ -x "$REPO/.venv/bin/lfm" ] || bash scripts/bootstrap.sh
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
  [ ! -f "$dir/pids" ] || die "already up in $dir ('down $dir' first)"
  bash scripts/seaweedfs.sh build >/dev/null
  bash scripts/seaweedfs.sh start "$dir/s3"
  # shellcheck disable=SC1091
  . "$dir/s3/credentials.env"
  local home; home="$(spark_home)"
  local port="${LFM_SPARK_PORT:-7077}" redis_port="${LFM_REDIS_PORT:-6390}"
  export SPARK_HOME="$home" SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$REPO/.venv/bin/python" \
         SPARK_LOG_DIR="$dir/logs"
  setsid "$home/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" \
    --webui-port 0 >"$dir/master.log" 2>&1 < /dev/null &
  echo $! >>"$dir/pids"
  wait_for "$dir/master.log" "I have been elected leader"
  local i
  for i in 0 1; do
    mkdir -p "$dir/worker-$i/work" "$dir/worker-$i/home" "$dir/worker-$i/scratch"
    HOME="$dir/worker-$i/home" SPARK_LOCAL_DIRS="$dir/worker-$i/scratch" \
      setsid "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker "spark://127.0.0.1:$port" \
      --host 127.0.0.1 --cores "${LFM_WORKER_CORES:-1}" --memory "${LFM_WORKER_MEMORY:-2g}" --webui-port 0 \
      --work-dir "$dir/worker-$i/work" >"$dir/worker-$i/worker.log" 2>&1 < /dev/null &
    echo $! >>"$dir/pids"
    wait_for "$dir/worker-$i/worker.log" "Successfully registered with master"
  done
  command -v redis-server >/dev/null || die "redis-server is needed (apt-get install redis-server)"
  setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$dir/redis.log" 2>&1 < /dev/null &
  echo $! >>"$dir/pids"
  cat >"$dir/lfm.yaml" <<EOF
# written by scripts/cluster.sh: the same platform, config only. For AWS S3 drop storage.endpoint and
# storage.allow_http; for MinIO or Ceph point storage.endpoint at it; credentials stay in the environment.
lakehouse: s3://lfm/lakehouse
registry: {path: s3://lfm/models}
storage: {endpoint: http://127.0.0.1:$(cat "$dir/s3/weed.port"), region: us-east-1, allow_http: true}
spark:
  master: spark://127.0.0.1:$port
  log_file: $dir/spark.log
feast: {repo_path: $dir/feature_repo, online_store: redis, redis_connection: "127.0.0.1:$redis_port"}
EOF
  cp "$dir/s3/credentials.env" "$dir/env.sh"
  echo "up: S3 on $AWS_ENDPOINT_URL (bucket s3://lfm), Spark master spark://127.0.0.1:$port with 2 workers,"
  echo "    Redis on 127.0.0.1:$redis_port; config $dir/lfm.yaml; credentials: . $dir/env.sh"
}

down() {
  local dir="${1:?usage: cluster.sh down DIR}"
  if [ -f "$dir/pids" ]; then
    local pid
    while read -r pid; do kill -- "-$pid" 2>/dev/null || true; done <"$dir/pids"  # each daemon's process group
    rm -f "$dir/pids"
  fi
  [ ! -f "$dir/s3/weed.pid" ] || bash scripts/seaweedfs.sh stop "$dir/s3"
  echo "down: $dir"
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  *) echo "usage: $0 up DIR | down DIR" >&2; exit 2 ;;
esac
