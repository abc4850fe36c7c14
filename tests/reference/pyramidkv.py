"""PyramidKV (Cai et al. 2024), prefill mode, from Zefan-Cai/KVCache-Factory
pyramidkv/pyramidkv_utils.py:360-375 (GQA path :449-465): SnapKV scoring (snapkv.py) with layer l
of L keeping max_num - l * steps scored tokens plus the window:
    min_num = (C - w) // beta;  max_num = 2 (C - w) - min_num
    if max_num >= q_len - w: max_num = q_len - w; min_num = 2 (C - w) - max_num
    steps = (max_num - min_num) // (L - 1)
and q_len < C: no compression, q_len < 2 (C - w): every layer C - w (uniform SnapKV)."""
import math

from common import budget_tokens
from snapkv import SnapKV


class PyramidKV(SnapKV):
    def __init__(self, budget, n_kv, layer, n_layer, beta=20, **kw):
        super().__init__(budget, n_kv, **kw)
        self.layer, self.n_layer, self.beta = layer, n_layer, beta

    def capacity(self, P):
        C, w, q = budget_tokens(self.budget, P), self.window, P
        m = C - w
        if q < 2 * m:
            cap = m
        else:
            mn = math.floor(m / self.beta)
            mx = 2 * m - mn
            if mx >= q - w:
                mx = q - w
                mn = 2 * m - mx
            cap = mx - self.layer * ((mx - mn) // (self.n_layer - 1))
        return [cap] * len(self.rows)
