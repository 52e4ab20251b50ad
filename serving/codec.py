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


def encode_vectors(mat: np.ndarray) -> list[bytes]:
    """Serialized ValueProto per row of a (n, dim) float32 matrix, byte-identical to Feast's."""
    mat = np.ascontiguousarray(mat, dtype="<f4")
    n, dim = mat.shape
    prefix = float_list_prefix(dim)
    width = len(prefix) + 4 * dim
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix):] = mat.view(np.uint8).reshape(n, 4 * dim)
    blob = buf.tobytes()
    out = [blob[i * width:(i + 1) * width] for i in range(n)]
    if n and out[0] != feast_value_bytes(mat[0]):
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


@functools.lru_cache(maxsize=16)
def _int64_key_prefix(join_key: str) -> bytes:
    whole = _feast_key(join_key, 0)
    if whole[-8:] != struct.pack("<q", 0):
        raise CodecMismatch("Feast's INT64 entity key encoding does not end in the 8-byte value")
    return whole[:-8]


def entity_keys(join_key: str, ids, int64: bool = True) -> list[bytes]:
    """Serialized entity keys (Feast v3 encoding) for one join key; INT64 ids are encoded in bulk."""
    if not int64:
        return [_feast_key(join_key, str(i)) for i in ids]
    arr = np.asarray(ids, dtype="<i8")
    prefix = _int64_key_prefix(join_key)
    raw = arr.tobytes()
    out = [prefix + raw[8 * i: 8 * i + 8] for i in range(len(arr))]
    if len(arr) and out[0] != _feast_key(join_key, int(arr[0])):
        raise CodecMismatch("bulk entity key encoding differs from Feast's serialize_entity_key")
    return out
