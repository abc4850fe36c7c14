"""Pieces shared by the trace and results readers: the error type, attribute decoding, the
checks every kvscope file gets (format, schema version) and dataset shape checks."""
import os

import numpy as np


class KvscopeError(Exception):
    """A file kvscope cannot use: the message is one line naming the file and the cause."""


def fail(msg):
    raise KvscopeError(msg)


def attr_str(obj, name, where):
    if name not in obj.attrs:
        fail(f"{where}: missing attribute '{name}'")
    v = obj.attrs[name]
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, str):
        return v
    fail(f"{where}: attribute '{name}' is not a string")


def attr_int(obj, name, where):
    if name not in obj.attrs:
        fail(f"{where}: missing attribute '{name}'")
    v = np.asarray(obj.attrs[name])
    if v.size != 1 or not (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_):
        fail(f"{where}: attribute '{name}' is not an integer")
    return int(v.reshape(()))


def attr_float(obj, name, where):
    if name not in obj.attrs:
        fail(f"{where}: missing attribute '{name}'")
    v = np.asarray(obj.attrs[name])
    if v.size != 1 or not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        fail(f"{where}: attribute '{name}' is not a number")
    return float(v.reshape(()))


def attr_bool(obj, name, where):
    if name not in obj.attrs:
        fail(f"{where}: missing attribute '{name}'")
    v = np.asarray(obj.attrs[name])
    if v.size != 1:
        fail(f"{where}: attribute '{name}' is not a boolean")
    return bool(v.reshape(()))


def open_h5(path, kind):
    """Opens `path` read-only as an HDF5 file; `kind` ("trace" / "results") names it in errors."""
    import h5py

    where = f"{kind} '{path}'"
    if not os.path.isfile(path):
        fail(f"{where}: no such file")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as e:
        fail(f"{where}: cannot open: {e}")
    if not is_h5:
        fail(f"{where}: not an HDF5 file, so not a kvscope {kind}" +
             (" file" if kind == "results" else ""))
    try:
        return h5py.File(path, "r"), where
    except OSError as e:
        fail(f"{where}: cannot open: {e}")


def check_format(f, where, fmt, version, what):
    """The checks the C++ readers make first: the format attribute, then the schema version
    (a newer one is refused: "schema_version 2 is newer than this kvscope reads (1); update
    kvscope")."""
    if "format" not in f.attrs:
        fail(f"{where}: not a kvscope {what} (no 'format' attribute)")
    got = attr_str(f, "format", where)
    if got != fmt:
        fail(f"{where}: not a kvscope {what} (format is '{got}', expected '{fmt}')")
    ver = attr_int(f, "schema_version", where)
    if ver > version:
        fail(f"{where}: schema_version {ver} is newer than this kvscope reads ({version}); "
             "update kvscope")
    if ver < 1:
        fail(f"{where}: bad schema_version {ver}")
    return ver


def dataset(group, path, where, shape=None, kind=None, dims=""):
    """The dataset `path` under `group`, checked: exists, numeric kind ("f" / "i"), shape."""
    import h5py

    if path not in group:
        fail(f"{where}: missing dataset '{path}'")
    d = group[path]
    if not isinstance(d, h5py.Dataset):
        fail(f"{where}: '{path}' is not a dataset")
    if kind == "f" and d.dtype.kind != "f":
        fail(f"{where}: dataset '{path}' is not floating-point")
    if kind == "i" and d.dtype.kind not in "iu":
        fail(f"{where}: dataset '{path}' is not integer")
    if kind == "s" and d.dtype.kind not in "SOU":
        fail(f"{where}: dataset '{path}' is not a string dataset")
    if shape is not None and tuple(d.shape) != tuple(shape):
        fail(f"{where}: dataset '{path}' has shape {list(d.shape)}, expected {list(shape)}"
             + (f" ({dims})" if dims else ""))
    return d
