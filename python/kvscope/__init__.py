"""kvscope: read kvscope attention traces and replay results (HDF5) with numpy, and draw the
standard figures of a KV-cache compression paper (kvscope.figures, needs matplotlib).

    import kvscope
    t = kvscope.open_trace("traces/passkey.h5")
    r = kvscope.open_results("traces/results.h5")

See python/README.md; the formats: docs/trace-format.md, docs/results-format.md.
"""
from ._common import KvscopeError
from .results import Results, Run, open_results
from .trace import Trace, open_trace

__version__ = "0.1.0"
__all__ = ["open_trace", "open_results", "Trace", "Results", "Run", "KvscopeError"]
