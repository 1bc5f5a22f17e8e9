"""The model package: model.onnx + ferry.json, validated before anything runs."""

from ferry.package.manifest import Manifest, Provenance, Signature, TensorSpec
from ferry.package.package import ModelPackage, derive, load, save

__all__ = ["Manifest", "ModelPackage", "Provenance", "Signature", "TensorSpec", "derive", "load", "save"]
