#!/usr/bin/env bash
# Build (or reuse) the binaries of the test-only Kubernetes control plane:
# etcd, kube-apiserver, kube-controller-manager, KEDA operator + metrics adapter.
#
# Everything comes from the Go module proxy through the wrapper modules in
# tests/k8s/build/*; binaries and KEDA CRDs go to a per-version cache OUTSIDE
# the repo:  ${CONVEYOR_K8S_CACHE:-~/.cache/conveyor-k8s}/<versions-key>/{bin,crds}
#
# Usage: tests/k8s/build.sh [etcd|kubernetes|keda ...]   (default: all)
#        tests/k8s/build.sh --check   exit 0 if every binary is cached and current, else 1
# The last line printed is the cache dir. Idempotent: present binaries are kept.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$HERE/build"
# Not GOFLAGS=-mod=mod: the committed go.sum files are complete (go mod tidy).
export CGO_ENABLED=0  # static binaries, like upstream release builds

modver() {  # modver <wrapper-dir> <module> -> version pinned by the wrapper
  (cd "$BUILD/$1" && go list -m -f '{{.Version}}' "$2")
}
ETCD_V="$(modver etcd go.etcd.io/etcd/server/v3)"
K8S_V="$(modver kubernetes k8s.io/kubernetes)"
KEDA_V="$(modver keda github.com/kedacore/keda/v2)"
KEY="k8s-${K8S_V}_etcd-${ETCD_V}_keda-${KEDA_V}"
CACHE="${CONVEYOR_K8S_CACHE:-$HOME/.cache/conveyor-k8s}/$KEY"
BIN="$CACHE/bin"
mkdir -p "$BIN" "$CACHE/crds"
TIMINGS="$CACHE/timings.log"

# stamp <wrapper-dir> <args...>: hash of the wrapper's go.mod/go.sum/*.go and the build
# args, so an edited replace block, adapter main or ldflag rebuilds under the same key.
stamp() {
  local dir="$1"; shift
  { (cd "$BUILD/$dir" && find . \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 \
      | sort -z | xargs -0 cat); echo "$*"; } | sha256sum | cut -c1-16
}

# gobuild <wrapper-dir> <output-name> <package> [go build args...]
gobuild() {
  local dir="$1" out="$2" pkg="$3"; shift 3
  local want
  want="$(stamp "$dir" "$pkg" "$@")"
  if [[ -x "$BIN/$out" && "$(cat "$BIN/.$out.stamp" 2>/dev/null)" == "$want" ]]; then
    [[ "$CHECK" == yes ]] || echo "reuse  $BIN/$out" >&2
    return
  fi
  if [[ "$CHECK" == yes ]]; then
    echo "not cached: $out ($BIN)" >&2
    exit 1
  fi
  echo "build  $out ($pkg) ..." >&2
  local t0=$SECONDS
  # nice: the machine is shared with other test runs; -o to a temp name so an
  # interrupted build never leaves a half-written binary that would be reused.
  # -buildvcs=false: the adapter's main lives in this git repo; no git needed to build.
  (cd "$BUILD/$dir" && nice -n 19 go build -trimpath -buildvcs=false "$@" -o "$BIN/.$out.tmp" "$pkg")
  mv "$BIN/.$out.tmp" "$BIN/$out"
  echo "$want" > "$BIN/.$out.stamp"
  echo "$(date -u +%FT%TZ) $out $((SECONDS - t0))s" | tee -a "$TIMINGS" >&2
}

build_etcd() {
  # etcd >= 3.5 keeps its main package at the root of the server/v3 module.
  gobuild etcd etcd go.etcd.io/etcd/server/v3
}

build_kubernetes() {
  # Same -X stamping as kubernetes' hack/lib/version.sh, so /version (kubectl,
  # Helm's .Capabilities.KubeVersion) reports a real release. buildDate is the
  # tag's time from the proxy, which keeps the build reproducible.
  local minor date ld="" k v
  minor="$(echo "$K8S_V" | cut -d. -f2)"
  date="$(cd "$BUILD/kubernetes" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
  for k in gitVersion="$K8S_V" gitMajor=1 gitMinor="$minor" gitCommit="module-proxy-$K8S_V" \
           gitTreeState=clean buildDate="$date"; do
    v="${k#*=}"; k="${k%%=*}"
    ld+=" -X k8s.io/component-base/version.$k=$v -X k8s.io/client-go/pkg/version.$k=$v"
  done
  # Tags as in hack/lib/golang.sh (notest drops test-only code paths).
  local flags=(-tags=selinux,notest -ldflags="-s -w$ld")
  gobuild kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "${flags[@]}"
  gobuild kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "${flags[@]}"
}

build_keda() {
  # Same -X stamping as KEDA's Makefile (GO_LDFLAGS).
  local ld="-s -w -X=github.com/kedacore/keda/v2/version.Version=${KEDA_V#v}"
  ld+=" -X=github.com/kedacore/keda/v2/version.GitCommit=module-proxy"
  gobuild keda keda github.com/kedacore/keda/v2/cmd/operator -ldflags="$ld"
  # Adapter: our ./adapter main (KEDA's packages, no all-interfaces listener).
  gobuild keda keda-adapter ./adapter -ldflags="$ld"
  # CRDs ship in the module zip; copy them next to the binaries (not the repo).
  local dir
  dir="$(cd "$BUILD/keda" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"
  [[ "$CHECK" == yes ]] || install -m 0644 "$dir"/config/crd/bases/*.yaml "$CACHE/crds/"
}

CHECK=no
if [[ "${1:-}" == --check ]]; then
  CHECK=yes
  shift
fi
T0=$SECONDS
for part in "${@:-etcd kubernetes keda}"; do
  for p in $part; do "build_$p"; done
done
echo "total $((SECONDS - T0))s" >&2
echo "$CACHE"
