"""TFDS `features.json`: the FeatureConnector JSON that describes an RLDS dataset's Example keys.

`features_json` writes it from flat Fields (one per Example key); `parse_features` reads one
(ours or another tool's) back into Fields. Layout as `tensorflow_datasets` 4.9 writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hma.errors import FormatError

_TFDS = "tensorflow_datasets.core.features."


# ---------------------------------------------------------------------------------------------
# features.json: TFDS FeatureConnector JSON, flattened to one Field per Example key


@dataclass(frozen=True)
class Field:
    """One leaf feature. For step fields `shape` is per step; -1 marks an unknown dimension."""

    kind: str  # "tensor" | "image" | "text"
    dtype: str = "string"
    shape: tuple[int, ...] = ()
    encoding: str = "none"  # image: "png" / "jpeg"; tensor: "none" / "bytes" / "zlib"
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        dims = {"dimensions": [str(d) for d in self.shape]} if self.shape else {}
        if self.kind == "image":
            body = {"shape": dims, "dtype": self.dtype, "encodingFormat": self.encoding}
            node = {"pythonClassName": _TFDS + "image_feature.Image", "image": body}
        elif self.kind == "text":
            node = {"pythonClassName": _TFDS + "text_feature.Text", "text": {}}
        else:
            cls = "scalar.Scalar" if not self.shape else "tensor_feature.Tensor"
            body = {"shape": dims, "dtype": self.dtype, "encoding": self.encoding}
            node = {"pythonClassName": _TFDS + cls, "tensor": body}
        if self.description:
            node["description"] = self.description
        return node


def features_json(steps: dict[str, Field], episode: dict[str, Field]) -> dict[str, Any]:
    def tree(fields: dict[str, Field]) -> dict[str, Any]:
        nested: dict[str, Any] = {}
        for path, f in sorted(fields.items()):
            *parents, leaf = path.split("/")
            node = nested
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = f
        return to_dict(nested)

    def to_dict(node: dict[str, Any]) -> dict[str, Any]:
        feats = {k: v.to_json() if isinstance(v, Field) else to_dict(v) for k, v in node.items()}
        return {
            "pythonClassName": _TFDS + "features_dict.FeaturesDict",
            "featuresDict": {"features": feats},
        }

    root = tree(episode)
    root["featuresDict"]["features"]["steps"] = {
        "pythonClassName": _TFDS + "dataset_feature.Dataset",
        "sequence": {
            "feature": tree({k.removeprefix("steps/"): f for k, f in steps.items()}),
            "length": "-1",
        },
    }
    return root


def parse_features(node: dict[str, Any], url: str) -> dict[str, Field]:
    """Example key -> Field for every leaf TFDS can serialise into an Example that we can read."""
    out: dict[str, Field] = {}

    def walk(node: dict[str, Any], path: str, rank: int) -> None:
        if "featuresDict" in node:
            for key, child in node["featuresDict"].get("features", {}).items():
                walk(child, f"{path}/{key}" if path else key, rank)
        elif "sequence" in node:
            walk(node["sequence"].get("feature", {}), path, rank + 1)
        elif rank > (1 if path.startswith("steps/") else 0):
            return  # nested sequences are stored ragged; nothing we read uses them
        elif "tensor" in node:
            t = node["tensor"]
            dims = tuple(int(d) for d in t.get("shape", {}).get("dimensions", []))
            out[path] = Field("tensor", t.get("dtype", "float32"), dims, t.get("encoding", "none"))
        elif "image" in node:
            im = node["image"]
            dims = tuple(int(d) for d in im.get("shape", {}).get("dimensions", []))
            fmt = im.get("encodingFormat") or "png"
            out[path] = Field("image", im.get("dtype", "uint8"), dims, fmt)
        elif "text" in node:
            out[path] = Field("text")
        elif "classLabel" in node:
            out[path] = Field("tensor", "int64")

    if "steps" not in node.get("featuresDict", {}).get("features", {}):
        raise FormatError(f"{url}: no 'steps' feature (not an RLDS dataset)")
    walk(node, "", 0)
    return out


# ---------------------------------------------------------------------------------------------
# Locating the version directory and its metadata
