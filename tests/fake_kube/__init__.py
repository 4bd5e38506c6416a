"""A protocol-level fake Kubernetes API server for tests (see `server.FakeKube`)."""

from tests.fake_kube.errors import KubeError
from tests.fake_kube.server import FakeKube, Fault, RequestRecord, WatchRecord

__all__ = ["FakeKube", "Fault", "KubeError", "RequestRecord", "WatchRecord"]
