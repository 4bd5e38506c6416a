#!/usr/bin/env bash
# The Kubernetes quick start, in one command on a laptop (docs/deploy.md, "Quick start on kind"):
# a kind cluster, the two images built and loaded into it, PostgreSQL and MinIO (S3 with STS),
# the service from the Helm chart with Kubernetes compute, then the demo against it: a tenant,
# a workspace, a file uploaded, the dummy asset run as a Kubernetes Job, its output downloaded
# and compared. Needs docker, kind, kubectl and helm; `kind delete cluster --name provider`
# removes everything.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cluster="${PROVIDER_KIND_CLUSTER:-provider}"
namespace=provider
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/provider/__init__.py")"
service_image="ghcr.io/provider/provider:$version"
sidecar_image="ghcr.io/provider/provider-sidecar:$version"
port="${PROVIDER_KIND_PORT:-8080}"

say() { printf '\n== %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null || { echo "quickstart.sh: $1 is needed ($2)" >&2; exit 2; }; }
need docker "https://docs.docker.com/get-docker/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
random() { openssl rand -hex 24 2>/dev/null || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

say "cluster $cluster"
if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config "$here/cluster.yaml" --wait 120s
fi
kubectl config use-context "kind-$cluster" >/dev/null

say "images $service_image, $sidecar_image"
docker build -f "$repo/deploy/docker/Dockerfile" -t "$service_image" "$repo"
docker build -f "$repo/deploy/docker/Dockerfile.sidecar" -t "$sidecar_image" "$repo"
kind load docker-image --name "$cluster" "$service_image" "$sidecar_image"

say "namespace $namespace, secrets"
kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
if ! kubectl -n "$namespace" get secret quickstart-secrets >/dev/null 2>&1; then
  kubectl -n "$namespace" create secret generic quickstart-secrets \
    --from-literal=POSTGRES_PASSWORD="$(random)" \
    --from-literal=MINIO_ROOT_PASSWORD="$(random)" \
    --from-literal=S3_SERVICE_SECRET="$(random)"
fi
secret() { kubectl -n "$namespace" get secret quickstart-secrets -o "jsonpath={.data.$1}" | base64 -d; }

say "PostgreSQL and MinIO"
kubectl apply -f "$here/postgres.yaml" -f "$here/minio.yaml"
kubectl -n "$namespace" rollout status statefulset/postgres --timeout=300s
kubectl -n "$namespace" rollout status deployment/minio --timeout=300s
kubectl -n "$namespace" wait --for=condition=complete job/minio-setup --timeout=300s

say "the service (Helm)"
helm upgrade --install provider "$repo/deploy/helm/provider" --namespace "$namespace" \
  --values "$here/values.yaml" \
  --set-string "config.server.public_url=http://127.0.0.1:$port" \
  --set-string "secret.values.PROVIDER_STORE__URL=postgresql+asyncpg://provider:$(secret POSTGRES_PASSWORD)@postgres.$namespace.svc:5432/provider" \
  --set-string "secret.values.PROVIDER_STORAGE__S3__SECRET_ACCESS_KEY=$(secret S3_SERVICE_SECRET)" \
  --wait --timeout 300s
admin_key="$(kubectl -n "$namespace" get secret provider -o jsonpath='{.data.PROVIDER_AUTH__BOOTSTRAP_ADMIN_KEY}' | base64 -d)"

say "port-forward 127.0.0.1:$port"
kubectl -n "$namespace" port-forward service/provider "$port:8080" >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$port/readyz"; echo

say "the demo: a tenant, a workspace, the dummy asset as a Kubernetes Job"
make -C "$repo" venv >/dev/null
bash "$here/demo.sh" "http://127.0.0.1:$port" "$admin_key"
echo "Service: http://127.0.0.1:$port (while the port-forward runs), admin key: kubectl -n $namespace get secret provider -o jsonpath='{.data.PROVIDER_AUTH__BOOTSTRAP_ADMIN_KEY}' | base64 -d" >&2
echo "Remove it all: kind delete cluster --name $cluster" >&2
