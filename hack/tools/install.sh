#!/usr/bin/env bash
# install.sh TOOL... — builds each tool from the Go module proxy (never a
# prebuilt download: none is reachable on our machines) and links it into
# bin/ as bin/TOOL (a symlink to bin/TOOL-VERSION).
#
# Versions are pinned in one place: this module's go.mod for the tools built
# from it, and the nested modules under hack/tools/<tool>/ for tools whose
# dependencies would clash with Kubernetes'. Binaries are cached by version
# outside the clone ($JETSINK_TOOLS_CACHE, default ~/.cache/jetsink-tools) so a
# fresh clone on the same machine reuses them instead of rebuilding
# kube-apiserver (about 5 minutes on 2 cores).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="$root/bin"
cache="${JETSINK_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetsink-tools}"
mkdir -p "$bin" "$cache"

# tool -> "module-dir|module|package[|binary]" (binary defaults to the tool's
# name: `install.sh toxiproxy` links bin/toxiproxy-server)
spec() {
  case "$1" in
    kube-apiserver) echo ".|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver" ;;
    kubectl)        echo ".|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubectl" ;;
    kube-controller-manager) echo ".|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager" ;;
    kube-scheduler) echo ".|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-scheduler" ;;
    kubelet)        echo ".|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubelet" ;;
    kube-proxy)     echo ".|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-proxy" ;;
    etcd)           echo ".|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3" ;;
    controller-gen) echo ".|sigs.k8s.io/controller-tools|sigs.k8s.io/controller-tools/cmd/controller-gen" ;;
    helm)           echo "helm|helm.sh/helm/v3|helm.sh/helm/v3/cmd/helm" ;;
    versitygw)      echo "versitygw|github.com/versity/versitygw|github.com/versity/versitygw/cmd/versitygw" ;;
    nats)           echo "natscli|github.com/nats-io/natscli|github.com/nats-io/natscli/nats" ;;
    nats-server)    echo "nats-server|github.com/nats-io/nats-server/v2|github.com/nats-io/nats-server/v2" ;;
    toxiproxy)      echo "toxiproxy|github.com/Shopify/toxiproxy/v2|github.com/Shopify/toxiproxy/v2/cmd/server|toxiproxy-server" ;;
    *) echo "install.sh: unknown tool $1" >&2; exit 2 ;;
  esac
}

for tool in "$@"; do
  IFS='|' read -r dir module pkg binary <<<"$(spec "$tool")"
  binary=${binary:-$tool}
  moddir="$here/$dir"
  version=$(cd "$moddir" && go list -m -f '{{.Version}}' "$module")
  name="$binary-$version"
  ldflags=""
  if [ "$module" = k8s.io/kubernetes ]; then
    # Stamp the version: unstamped builds report v0.0.0-master+$Format:%H$,
    # which breaks `kubectl version` and charts with a kubeVersion
    # constraint. "-stamped" keys the cache apart from unstamped builds.
    IFS=. read -r major minor _ <<<"${version#v}"
    ldflags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    name="$name-stamped"
  fi
  if [ ! -x "$cache/$name" ]; then
    echo "install.sh: building $binary $version (first use; cached in $cache)" >&2
    # -trimpath and no VCS stamping keep the build reproducible; CGO off gives
    # static binaries that run anywhere on this machine.
    (cd "$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$cache/$name.tmp" "$pkg")
    mv "$cache/$name.tmp" "$cache/$name"
  fi
  if [ ! -x "$bin/$name" ]; then
    cp "$cache/$name" "$bin/$name.tmp" && mv "$bin/$name.tmp" "$bin/$name"
  fi
  ln -sfn "$name" "$bin/$binary"
done
