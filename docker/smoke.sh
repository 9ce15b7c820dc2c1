#!/usr/bin/env bash
# Builds the CPU image, runs it, waits until Docker reports it healthy (the image's own HEALTHCHECK),
# sends a real image to the bundled detector and checks the JSON answer, then removes the container.
#
#   bash docker/smoke.sh                     build docker/Dockerfile as cspserve:smoke and test it
#   bash docker/smoke.sh --no-build IMAGE    test an image built already (e.g. cspserve:cpu)
#
# Needs a running Docker engine (Docker Desktop, dockerd or a remote DOCKER_HOST) and curl. The test
# image (a BMP with two coloured shapes on grey) is written by this script, so nothing is downloaded.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

image=cspserve:smoke
build=1
case ${1:-} in
  --no-build)
    build=0
    image=${2:?usage: docker/smoke.sh --no-build IMAGE}
    ;;
  "") ;;
  *)
    echo "usage: docker/smoke.sh [--no-build IMAGE]" >&2
    exit 2
    ;;
esac

fail() {
  echo "smoke: FAIL: $*" >&2
  exit 1
}

command -v docker >/dev/null 2>&1 || fail "no docker command"
command -v curl >/dev/null 2>&1 || fail "no curl command"
if ! docker info >/dev/null 2>&1; then
  fail "the Docker engine does not answer (docker info failed): start Docker, or set DOCKER_HOST"
fi

if [ "$build" = 1 ]; then
  echo "smoke: building $image from docker/Dockerfile" >&2
  docker build -f docker/Dockerfile -t "$image" .
fi

work=$(mktemp -d)
container=""
cleanup() {
  if [ -n "$container" ]; then
    if [ "${status:-0}" != 0 ]; then
      echo "smoke: the container's log:" >&2
      docker logs "$container" >&2 || true
    fi
    docker rm -f "$container" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap 'status=$?; cleanup' EXIT

# Random free host ports: 127.0.0.1 only, so nothing outside this machine reaches the container.
container=$(docker run -d -p 127.0.0.1::8000 -p 127.0.0.1::8001 "$image")
http=$(docker port "$container" 8000/tcp | head -n 1)
echo "smoke: container ${container:0:12}, REST at http://$http" >&2

# Healthy = the image's HEALTHCHECK (csp-client health: live and ready) passed.
health=""
for _ in $(seq 1 90); do
  health=$(docker inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null || echo gone)
  running=$(docker inspect --format '{{.State.Running}}' "$container" 2>/dev/null || echo false)
  [ "$running" = true ] || fail "the container stopped"
  [ "$health" = healthy ] && break
  sleep 2
done
[ "$health" = healthy ] || fail "not healthy after 180 s (last status: $health)"

# The readiness endpoint directly, as Kubernetes probes it.
curl -fsS "http://$http/v2/health/ready" >/dev/null || fail "GET /v2/health/ready"

# A 64x64 24-bit BMP: grey, with a red square and a blue rectangle (rows bottom-up, BGR, no padding
# since 64 * 3 is a multiple of 4).
# A little-endian 32-bit integer, as bytes.
le32() {
  local shift out=""
  for shift in 0 8 16 24; do out+=$(printf '\\x%02x' $((($1 >> shift) & 255))); done
  printf '%b' "$out"
}
bmp=$work/shapes.bmp
{
  printf 'BM'
  le32 $((54 + 64 * 64 * 3))
  le32 0
  le32 54
  le32 40
  le32 64
  le32 64
  printf '\x01\x00\x18\x00'
  le32 0
  le32 $((64 * 64 * 3))
  le32 2835
  le32 2835
  le32 0
  le32 0
  for ((y = 0; y < 64; y++)); do
    row=""
    for ((x = 0; x < 64; x++)); do
      if ((x >= 8 && x < 28 && y >= 36 && y < 56)); then
        row+='\x20\x20\xd0'
      elif ((x >= 34 && x < 58 && y >= 8 && y < 24)); then
        row+='\xd0\x40\x20'
      else
        row+='\x80\x80\x80'
      fi
    done
    printf '%b' "$row"
  done
} >"$bmp"
[ "$(wc -c <"$bmp")" -eq $((54 + 64 * 64 * 3)) ] || fail "wrote a malformed BMP"

answer=$work/answer.json
code=$(curl -sS -o "$answer" -w '%{http_code}' -X POST -H 'content-type: image/bmp' --data-binary "@$bmp" \
  "http://$http/v1/models/shapes-detector/detect?score_threshold=0.01")
[ "$code" = 200 ] || fail "detect answered HTTP $code: $(cat "$answer")"
# The answer's shape: {"results": [{"detections": [...]}], ...}
grep -q '"results"' "$answer" || fail "no results in the answer: $(cat "$answer")"
grep -q '"detections"' "$answer" || fail "no detections list in the answer: $(cat "$answer")"
echo "smoke: detect answered: $(head -c 300 "$answer")" >&2

# The same over gRPC, from csp-client inside the container.
docker exec "$container" csp-client --grpc models >/dev/null || fail "csp-client --grpc models inside the container"
echo "smoke: ok ($image)" >&2
