"""KeyDiff (kvpress KeyDiffPress, kvpress/presses/keydiff_press.py:37-48; Park et al. 2025):
anchor = mean of the L2-normalised keys of the scored tokens (F.normalize), score =
-cosine_similarity(k, anchor), per KV head; the rest of the rule as knorm.py's KeyScore."""
import numpy as np

from knorm import KeyScore


class KeyDiff(KeyScore):
    def score(self, g, scored):
        k = self.k[g, scored]
        n = np.maximum(np.linalg.norm(k, axis=1), 1e-12)
        anchor = (k / n[:, None]).mean(axis=0)
        return -(k @ anchor) / np.maximum(n * np.linalg.norm(anchor), 1e-8)
