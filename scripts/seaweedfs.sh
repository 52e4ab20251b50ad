#!/usr/bin/env bash
# A real S3-API server (SeaweedFS, Apache-2.0) for the tests and for trying the platform on object storage.
# Never production: loopback only, one process, data in a folder you name.
#
#   bash scripts/seaweedfs.sh build        # builds `weed` once per pinned version (7-15 min, 2 cores); prints it
#   bash scripts/seaweedfs.sh path         # prints where the binary is (or would be)
#   bash scripts/seaweedfs.sh start DIR    # starts master+volume+filer+s3 on 127.0.0.1, data under DIR
#   bash scripts/seaweedfs.sh stop DIR     # stops the server started with DIR
#
# Built from the Go module proxy (no GitHub download): `go install ...@version` refuses this module (its go.mod
# has a replace directive), so the module is downloaded, copied to a writable folder and built there.
# The binary is cached under ${LFM_CACHE:-$HOME/.cache/lfm}/seaweedfs/<version>/weed; the build writes a
# temporary name and renames it, so a killed build never leaves a broken binary behind.
#
# start: S3 on ${LFM_S3_PORT:-8333} (other ports: +1..+3 and +10000..+10003), bucket ${LFM_S3_BUCKET:-lfm} created;
# waits until it accepts a write (~11 s). Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY if both are set,
# else generated once and kept in DIR/credentials.env (source it). They never go to lfm.yaml.
set -euo pipefail

SEAWEEDFS_MODULE="github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"
CACHE_DIR="${LFM_CACHE:-$HOME/.cache/lfm}/seaweedfs/${SEAWEEDFS_VERSION}"
WEED="${CACHE_DIR}/weed"

die() { echo "seaweedfs.sh: $*" >&2; exit 1; }
is_weed() { [ "$(ps -o comm= -p "$1" 2>/dev/null)" = weed ]; }

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "Go is needed to build SeaweedFS once (https://go.dev/dl/, or apt-get install golang-go >= 1.24)"
  fi
}

build() {
  if [ -x "$WEED" ] && "$WEED" version >/dev/null 2>&1; then echo "$WEED"; return 0; fi
  local go; go="$(find_go)"
  mkdir -p "$CACHE_DIR"
  # One build at a time per cache (two test runs starting together wait for each other).
  exec 9>"${CACHE_DIR}/.build.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [ -x "$WEED" ] && "$WEED" version >/dev/null 2>&1; then echo "$WEED"; return 0; fi
  rm -f "${CACHE_DIR}"/.weed.tmp.*  # left by a build that was killed
  echo "building SeaweedFS ${SEAWEEDFS_VERSION} once into ${CACHE_DIR} (takes minutes)" >&2
  local start; start=$(date +%s)
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/lfm-seaweedfs-build.XXXXXX")"
  trap 'chmod -R u+w "'"$work"'" 2>/dev/null; rm -rf "'"$work"'"' EXIT
  # From the Go module proxy into the module cache (read-only there), outside any go.mod.
  local moddir
  moddir="$(cd "$work" && GO111MODULE=on "$go" mod download -json "${SEAWEEDFS_MODULE}@${SEAWEEDFS_VERSION}" \
            | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [ -n "$moddir" ] && [ -d "$moddir" ] || die "go mod download did not give a module folder"
  cp -R "$moddir/." "$work/src"
  chmod -R u+w "$work/src"
  local tmpbin="${CACHE_DIR}/.weed.tmp.$$"
  (cd "$work/src" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod -buildvcs=false" \
     "$go" build -trimpath -ldflags="-s -w" -o "$tmpbin" ./weed) || { rm -f "$tmpbin"; die "go build failed"; }
  "$tmpbin" version >/dev/null || { rm -f "$tmpbin"; die "the built binary does not run"; }
  mv -f "$tmpbin" "$WEED"
  echo "built $WEED in $(( $(date +%s) - start ))s ($(du -h "$WEED" | cut -f1))" >&2
  echo "$WEED"
}

start() {
  local dir="${1:?usage: seaweedfs.sh start DIR}"
  [ -x "$WEED" ] || die "no binary at $WEED: run 'bash scripts/seaweedfs.sh build' first"
  mkdir -p "$dir/data"
  dir="$(cd "$dir" && pwd)"
  if [ -f "$dir/weed.pid" ] && is_weed "$(cat "$dir/weed.pid")"; then
    die "already running (pid $(cat "$dir/weed.pid")); 'stop $dir' first"
  fi
  local key="${AWS_ACCESS_KEY_ID:-}" secret="${AWS_SECRET_ACCESS_KEY:-}"
  if [ -z "$key" ] || [ -z "$secret" ]; then
    if [ -f "$dir/credentials.env" ]; then
      # shellcheck disable=SC1091
      . "$dir/credentials.env"; key="$AWS_ACCESS_KEY_ID"; secret="$AWS_SECRET_ACCESS_KEY"
    else
      key="lfm$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
      secret="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    fi
  fi
  local port="${LFM_S3_PORT:-8333}"
  (umask 077
   cat >"$dir/credentials.env" <<EOF
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ALLOW_HTTP=true
EOF
   cat >"$dir/s3.json" <<EOF
{"identities": [{"name": "lfm", "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
                 "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
  )
  # The other ports follow the S3 port (+1..+3, and +10000 for gRPC), so that two servers with different
  # LFM_S3_PORT do not clash; keep them below the ephemeral range (32768+), where weed's own connections could
  # take one of them before it is bound.
  local base=$(( port + 1 )) p
  for p in $port $base $((base + 1)) $((base + 2)) \
           $((port + 10000)) $((base + 10000)) $((base + 10001)) $((base + 10002)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use: choose another LFM_S3_PORT"; fi
  done
  nohup "$WEED" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port=$((base)) -master.port.grpc=$((base + 10000)) \
    -volume.port=$((base + 1)) -volume.port.grpc=$((base + 10001)) \
    -filer.port=$((base + 2)) -filer.port.grpc=$((base + 10002)) \
    -s3 -s3.port="$port" -s3.port.grpc=$((port + 10000)) -s3.config="$dir/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.volumeSizeLimitMB=64 -volume.max=16 -volume.preStopSeconds=0 \
    -master.electionTimeout=1s -master.telemetry=false \
    >"$dir/weed.log" 2>&1 &
  echo $! >"$dir/weed.pid"
  echo "$port" >"$dir/weed.port"
  # Ready when the bucket exists and an object can be written: the S3 port opens after ~2 s, but the first write
  # waits ~9 s more for weed's volume allocation and lock ring. Signed with curl's SigV4 (credentials via a config
  # on stdin, not the command line); without curl, only the port is waited for.
  local bucket="${LFM_S3_BUCKET:-lfm}" url="http://127.0.0.1:$port" i code ready="" started; started=$(date +%s)
  s3curl() { printf 'user = "%s:%s"\n' "$key" "$secret" \
               | curl -s -o /dev/null -w '%{http_code}' --max-time 10 -K - --aws-sigv4 "aws:amz:us-east-1:s3" \
                      -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }
  for i in $(seq 1 300); do
    kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null || { tail -20 "$dir/weed.log" >&2; die "weed exited"; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      if ! command -v curl >/dev/null 2>&1; then bucket=""; ready=1; break; fi
      code="$(s3curl -X PUT "$url/$bucket" || true)"
      if [ "$code" = 200 ] || [ "$code" = 409 ]; then
        code="$(s3curl -X PUT --data-binary ok "$url/$bucket/.lfm-ready" || true)"
        if [ "$code" = 200 ]; then ready=1; break; fi
      fi
    fi
    sleep 0.2
  done
  [ -n "$ready" ] || { stop "$dir" >/dev/null; die "SeaweedFS did not accept a write in 60s (see $dir/weed.log)"; }
  echo "SeaweedFS S3 on $url, ready in $(( $(date +%s) - started ))s (pid $(cat "$dir/weed.pid"), log $dir/weed.log)"
  [ -z "$bucket" ] || echo "bucket: s3://$bucket/"
  echo "credentials: . $dir/credentials.env"
}

stop() {
  local dir="${1:?usage: seaweedfs.sh stop DIR}"
  [ -f "$dir/weed.pid" ] || die "no $dir/weed.pid: nothing started there"
  local pid; pid="$(cat "$dir/weed.pid")"
  if is_weed "$pid"; then  # not some other process that got the pid of a weed long gone
    kill "$pid"
    local i
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done  # a clean stop takes ~15 s
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid"
      if [ -f "$dir/weed.port" ]; then  # a killed weed leaves its gRPC Unix sockets in /tmp
        local port base svc p; port="$(cat "$dir/weed.port")"; base=$((port + 1))
        for svc in "s3:$((port + 10000))" "master:$((base + 10000))" "volume:$((base + 10001))" \
                   "filer:$((base + 10002))"; do rm -f "/tmp/seaweedfs-${svc%%:*}-grpc-${svc#*:}.sock"; done
        for p in "filer-$((base + 2))" "s3-$port"; do rm -f "/tmp/seaweedfs-$p.sock"; done
      fi
    fi
  fi
  rm -f "$dir/weed.pid"
  echo "stopped (data kept in $dir/data)"
}

case "${1:-}" in
  build) build ;;
  path) echo "$WEED" ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 build|path|start DIR|stop DIR" >&2; exit 2 ;;
esac
