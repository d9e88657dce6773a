"""word2vec.c's skip-gram update loop, compiled by numba: ``SkipGramModel``'s closed-form step on a CPU.

PyTorch's CPU operations cannot fuse a gather, a handful of tiny matrix products and a scatter: the
matrix form (``SkipGramModel._matrix_update``) copies every row it touches twice and spends most of its
time in per-matrix overhead of ``bmm`` on 3 x 100 x 6 products. This loop reads and writes the tables
in place, pair by pair, as word2vec.c's and gensim's (Cython) inner loops do, and releases the GIL, so
``BackgroundUpdates`` threads run it side by side (Hogwild). Compiled once for float32 and float64
tables when this module is imported; numba caches the machine code beside this file (or in its user
cache when this folder is read-only), so later imports only load it. It is a file of its own, not part
of ``modules/skipgram.py``, so that importing ``modules`` (every lesson's command does) does not import
numba: ``SkipGramModel`` imports it when it is built to use it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Tables (vocab, dim), centers (n,), contexts (n, m) with -1 for empty slots, noise words (n, k), the
# learning rate; returns the summed loss before each update and the number of (context, center) pairs.
_SIGNATURES = [
    f"Tuple((float64, int64))({t}[:, ::1], {t}[:, ::1], int64[::1], int64[:, ::1], int64[:, ::1], float64)"
    for t in ("float32", "float64")
]


# reassoc/contract let the 100-term dot products and updates vectorise; no "fast" flags that assume
# finite values, so a NaN in the tables reaches the returned loss, where the training loop sees it.
@numba.njit(_SIGNATURES, nogil=True, cache=True, fastmath={"reassoc", "contract"})
def skipgram_loop(
    u: np.ndarray, v: np.ndarray, center: np.ndarray, context: np.ndarray, negatives: np.ndarray, lr: float
) -> tuple[float, int]:
    """word2vec.c's SGD on the pairs of ``n`` centers, in order: for each context word ``a`` of a center
    (the input) and each of its targets ``t`` (the center, label 1, then its noise words, label 0):
    ``f = u[a]·v[t]``, ``g = (label - σ(f)) lr``, ``neu1e += g v[t]``, ``v[t] += g u[a]``; then
    ``u[a] += neu1e``. Each step sees the last one's result, so a word met many times never overshoots.
    """
    n, m = context.shape
    k = negatives.shape[1]
    d = u.shape[1]
    neu1e = np.empty(d, dtype=u.dtype)
    # Products and updates in the tables' precision: float32 ones vectorise twice as wide as float64.
    real = neu1e.dtype.type
    rate = real(lr)
    loss = 0.0
    pairs = 0
    for c in range(n):
        for i in range(m):
            a = context[c, i]
            if a < 0:
                continue
            pairs += 1
            neu1e[:] = 0.0
            # The pair's loss is -log of the product of its targets' likelihoods: one log per pair, not
            # one per target (that log cost a third of the loop's time).
            likelihood = 1.0
            for j in range(k + 1):
                t = center[c] if j == 0 else negatives[c, j - 1]
                f = real(0.0)
                for x in range(d):
                    f += u[a, x] * v[t, x]
                # z = f for the center and -f for noise: q = σ(z) is the likelihood of the target's label,
                # and |label - σ(f)| = 1 - q = e q with e = exp(-z).
                z = f if j == 0 else -f
                if z > -30.0:
                    e = math.exp(-z)
                    q = real(1.0) / (real(1.0) + e)
                    likelihood *= q
                    g = rate * e * q
                else:  # exp(-z) would overflow: -log σ(z) = -z and 1 - q = 1, to float precision
                    loss -= z
                    g = rate
                if j > 0:
                    g = -g
                for x in range(d):
                    neu1e[x] += g * v[t, x]
                    v[t, x] += g * u[a, x]
            loss -= math.log(likelihood)
            for x in range(d):
                u[a, x] += neu1e[x]
    return loss, pairs
