"""KIVI (Liu et al. 2024) widths: keys per channel over blocks of `group` tokens, values per
token; the newest `residual` tokens stay fp16 and a block is quantized once all its tokens are
older (jy-yuan/KIVI: the residual buffer is flushed to the quantized part `group` tokens at a
time). Width of token j once n tokens have arrived: bits if j < floor((n - residual) / group) *
group, else 16."""
from common import Policy


class KIVI(Policy):
    def __init__(self, n_kv, bits=4, group=32, residual=128):
        self.bits, self.group, self.residual = bits, group, residual
        self.widths = [dict() for _ in range(n_kv)]

    def first_observed(self, first_update):
        return 1 << 60

    def update(self, t, held):
        n = t + 1
        done = max(0, (n - self.residual) // self.group) * self.group
        for g in range(len(held)):
            self.widths[g] = {p: (self.bits if p < done else 16) for p in held[g]}
        return held
