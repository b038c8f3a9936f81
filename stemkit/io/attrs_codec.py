"""Encode attributes so that netCDF and zarr store them and give back exactly the same values.

netCDF attributes hold strings, numbers and 1-D numeric arrays only; booleans, ``None``,
dicts and mixed lists are written as JSON text behind a marker and decoded on load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

JSON_MARKER = "__stemkit_json__:"


def encode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Return attrs with every value in a form that netCDF and zarr store losslessly."""
    return {key: _encode(value) for key, value in attrs.items()}


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Invert :func:`encode_attrs`."""
    return {key: _decode(value) for key, value in attrs.items()}


def _encode(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iuf" and value.size > 0:
        return value
    return JSON_MARKER + json.dumps(_to_json(value), ensure_ascii=False)


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(JSON_MARKER):
        return _from_json(json.loads(value[len(JSON_MARKER):]))
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(
        f"cannot save attribute value {value!r} of type {type(value).__name__}; "
        "attributes must be numbers, strings, booleans, None, lists, tuples, dicts or numpy arrays"
    )


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value
