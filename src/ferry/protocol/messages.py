"""The gRPC protocol's message classes (`inference.GRPCInferenceService`).

They come from `inference.desc` (compiled from `inference.proto` by `scripts/make_grpc_descriptor.sh`)
loaded into a private descriptor pool: no generated modules, and no clash with tritonclient's own
`inference` messages when both live in one process.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "inference.GRPCInferenceService"
_DESCRIPTOR = Path(__file__).with_name("inference.desc")
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse"),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse"),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse"),
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"),
}


@cache
def messages() -> SimpleNamespace:
    """The protocol's message classes, by name."""
    files = descriptor_pb2.FileDescriptorSet.FromString(_DESCRIPTOR.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    names = {n for pair in METHODS.values() for n in pair}
    return SimpleNamespace(
        **{n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{n}")) for n in names}
    )
