"""Feast's online-store byte formats, produced and parsed in bulk with numpy.

Feast's own materialization builds one `ValueProto` per vector in Python and its reads parse one per value:
that per-element protobuf work is its known hot spot for embeddings. The bytes are simple, so we write and read
exactly the same bytes vectorised. Prefixes are not hand-written: they are taken from Feast's own serializers
at run time, and `check_*` compares a sample against Feast on every batch, so a format change in Feast fails
loudly instead of writing something Feast cannot read.
"""
from __future__ import annotations

import functools
import struct

import numpy as np
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from lfm.errors import LfmError
from serving.feast_bytes import KeyLayout, ValueLayout

KEY_VERSION = 3  # entity_key_serialization_version of the generated feature_store.yaml


class CodecMismatch(LfmError):
    """Our bulk encoding disagrees with Feast's serializer (a Feast upgrade changed its format)."""


def feast_value_bytes(vector) -> bytes:
    return ValueProto(float_list_val=FloatList(val=[float(x) for x in vector])).SerializeToString()


@functools.lru_cache(maxsize=64)
def float_list_prefix(dim: int) -> bytes:
    """Bytes before the packed float32 payload of a `ValueProto(float_list_val=...)` of `dim` floats."""
    whole = feast_value_bytes([0.0] * dim)
    prefix, payload = whole[: len(whole) - 4 * dim], whole[len(whole) - 4 * dim:]
    if payload != b"\x00" * (4 * dim):
        raise CodecMismatch(f"Feast's float list encoding of {dim} zeros does not end in the packed payload")
    return prefix


def value_layout(dim: int) -> ValueLayout:
    """The float-list value layout of `dim` floats, taken from Feast's serializer."""
    return ValueLayout(float_list_prefix(dim), dim)


def encode_vectors(mat: np.ndarray) -> list[bytes]:
    """Serialized ValueProto per row of a (n, dim) float32 matrix, byte-identical to Feast's."""
    mat = np.ascontiguousarray(mat, dtype="<f4")
    out = value_layout(mat.shape[1]).encode(mat)
    if out and out[0] != feast_value_bytes(mat[0]):
        raise CodecMismatch("bulk vector encoding differs from Feast's ValueProto serialization")
    return out


def decode_vector(data: bytes | None, dim: int) -> np.ndarray | None:
    """A stored value back to a float32 vector; None for a null value (Feast stores an empty ValueProto)."""
    if not data:
        return None
    prefix = float_list_prefix(dim)
    if len(data) == len(prefix) + 4 * dim and data.startswith(prefix):
        return np.frombuffer(data, dtype="<f4", offset=len(prefix))
    v = ValueProto.FromString(data)  # anything else (another width, another type): Feast's parser decides
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    if kind not in ("float_list_val", "double_list_val"):
        raise CodecMismatch(f"expected a float list in the online store, found {kind}")
    return np.asarray(getattr(v, kind).val, dtype=np.float32)


def _feast_key(join_key: str, value) -> bytes:
    v = ValueProto(int64_val=int(value)) if isinstance(value, (int, np.integer)) else ValueProto(string_val=str(value))
    return serialize_entity_key(EntityKeyProto(join_keys=[join_key], entity_values=[v]),
                                entity_key_serialization_version=KEY_VERSION)


@functools.lru_cache(maxsize=32)
def key_layout(join_key: str, int64: bool = True) -> KeyLayout:
    """The entity key layout of one join key, taken from Feast's serializer and checked on a sample."""
    if int64:
        whole = _feast_key(join_key, 0)
        if whole[-8:] != struct.pack("<q", 0):
            raise CodecMismatch("Feast's INT64 entity key encoding does not end in the 8-byte value")
        layout = KeyLayout(whole[:-8], True)
        sample = 2**40 + 7
    else:
        whole = _feast_key(join_key, "")
        if whole[-4:] != struct.pack("<I", 0):
            raise CodecMismatch("Feast's STRING entity key encoding does not end in the value's length")
        layout = KeyLayout(whole[:-4], False)
        sample = "ü-2"
    if layout.encode([sample])[0] != _feast_key(join_key, sample):
        raise CodecMismatch("bulk entity key encoding differs from Feast's serialize_entity_key")
    return layout


def entity_keys(join_key: str, ids, int64: bool = True) -> list[bytes]:
    """Serialized entity keys (Feast v3 encoding) for one join key, encoded in bulk."""
    out = key_layout(join_key, int64).encode(ids)
    if out and out[0] != _feast_key(join_key, int(ids[0]) if int64 else str(ids[0])):
        raise CodecMismatch("bulk entity key encoding differs from Feast's serialize_entity_key")
    return out
