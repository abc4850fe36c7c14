"""StreamingLLM (Xiao et al. 2023): the first `sinks` tokens plus the most recent ones.
Official: mit-han-lab/streaming-llm streaming_llm/kv_cache.py StartRecentKVCache (start_size +
recent_size, evicting the middle)."""
from common import Policy, budget_tokens


class Window(Policy):
    def __init__(self, budget, sinks=4):
        self.budget, self.sinks = budget, sinks

    def first_observed(self, first_update):
        return 1 << 60  # needs no attention

    def update(self, t, held):
        keep = budget_tokens(self.budget, t + 1)
        out = []
        for h in held:
            if len(h) <= keep:
                out.append(h)
                continue
            sinks = [p for p in h if p < self.sinks]
            rest = [p for p in h if p >= self.sinks]
            out.append(sinks + rest[len(rest) - (keep - len(sinks)):])
        return out
