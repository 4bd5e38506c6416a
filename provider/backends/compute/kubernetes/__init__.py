"""Executions as Kubernetes Jobs (see backend.py)."""

from provider.backends.compute.kubernetes.backend import KubernetesCompute, KubernetesOptions
from provider.backends.compute.kubernetes.manifests import JobSettings

__all__ = ["JobSettings", "KubernetesCompute", "KubernetesOptions"]
