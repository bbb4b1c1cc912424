"""Shortened binary BCH code for the SPEX shift design, with a decoder batched over words.

SPEX reads the parity bits ``p(k) = H_p k`` of an unknown sparse frequency ``k`` off the signs of
a bin across the shifted sub-samplings. Decoding the received word ``[0_n | p]`` of the
shortened code returns ``k`` whenever ``|k| + #flipped parity bits <= t``.

The code is the narrow-sense primitive binary BCH code of length ``2^m - 1`` and designed
distance ``2t + 1`` with the smallest ``m`` whose dimension is at least ``n``, shortened to
``n`` message bits, in galois's systematic convention (``G = [I | Pi]``; the ``n`` features sit
in the last ``n`` message positions). The field is the one ``galois.BCH`` uses: ``GF(2^m)`` modulo
``galois.matlab_primitive_poly(2, m)``, tabulated below (asking galois at run time compiles numba
code and starts numba's thread pool, which makes small torch models in the same process 5-10x
slower); the test-suite checks the table against galois.
Building ``galois.BCH`` itself costs 6-12 s of numba compilation per process, so the generator
polynomial and parity matrix are derived here with table arithmetic in that same field; the
test-suite checks them against ``galois.BCH`` bit for bit.

Decoding never calls galois per word: syndromes, Berlekamp-Massey and the root search run on
whole batches of words in numpy (syndromes are GF(2)-linear, so they are a matrix product; the
root search evaluates each locator polynomial with log/exp tables), single errors are read off
the locator directly, and the root search only visits the ``n + r`` positions of the shortened
code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..runtime.masks import unique_rows

__all__ = ["MAX_CHASE_PATTERNS", "BCHCode", "DecodedWords", "bch_code", "chase_plan",
           "code_parameters"]

_MAX_M = 20
_CHUNK_ELEMENTS = 1 << 22  # words x positions evaluated at once in the root search

MAX_CHASE_PATTERNS = 256
"""Most flip patterns Chase decoding tries per received word (the default asks for
depth(depth+1)/2: 55 at degree 5, 210 at degree 10, 300 at degree 12)."""
_MAX_CHASE_DEPTH = 63  # flip patterns are int64 bit masks over the least reliable positions


def chase_plan(n_parity: int, depth: int, n_patterns: int) -> tuple[int, int]:
    """``(depth, patterns)`` that :meth:`BCHCode.chase` uses for a request.

    ``patterns`` is ``n_patterns`` capped at MAX_CHASE_PATTERNS and at the 2^depth patterns
    there are. ``depth`` is capped at the ``n_parity`` positions there are and at
    ``patterns - 1``, which loses nothing: a pattern that flips the i-th least reliable
    position costs at least as much as the empty pattern and as each of the i single flips of
    the less reliable positions, so it ranks i + 1 or later (ties go to the smaller bit mask).
    It is also capped at 63 (the patterns are int64 bit masks), which matters only for depths
    above 63 with more than 64 patterns. A word then costs ``patterns`` hard decodes and
    choosing them about ``depth * 2 * patterns`` comparisons, however large the requested
    depth (listing all 2^depth patterns took minutes at depth 24).
    """
    if depth < 0 or n_patterns < 1:
        raise ValueError(f"need depth >= 0 and n_patterns >= 1, got {depth}, {n_patterns}")
    depth = min(int(depth), int(n_parity), _MAX_CHASE_DEPTH)
    patterns = min(int(n_patterns), MAX_CHASE_PATTERNS, 1 << depth)
    return min(depth, patterns - 1), patterns


def _cyclotomic_coset(j: int, m: int, q: int) -> list[int]:
    coset, e = [], j
    while e not in coset:
        coset.append(e)
        e = (2 * e) % q
    return coset


def _generator_exponents(t: int, m: int) -> list[list[int]]:
    """Distinct cyclotomic cosets of alpha^1 .. alpha^2t (their union is the code's zeros)."""
    q = (1 << m) - 1
    cosets, seen = [], set()
    for j in range(1, 2 * t + 1):
        if j % q in seen:
            continue
        coset = _cyclotomic_coset(j % q, m, q)
        seen.update(coset)
        cosets.append(coset)
    return cosets


@functools.cache
def code_parameters(n: int, t: int) -> tuple[int, int, int]:
    """``(m, nc, kc)`` of the shortest primitive BCH code with designed distance 2t+1, kc >= n."""
    if n < 1 or t < 1:
        raise ValueError(f"need n >= 1 and t >= 1, got n={n}, t={t}")
    m = max(2, int(np.ceil(np.log2(2 * t + 2))))
    while m < _MAX_M:
        nc = (1 << m) - 1
        if nc >= 2 * t + 1:
            degree = sum(len(c) for c in _generator_exponents(t, m))
            if nc - degree >= n:
                return m, nc, nc - degree
        m += 1
    raise ValueError(f"no binary BCH code of length < 2^{_MAX_M} carries n={n} bits at t={t}")


PRIMITIVE_POLYS = {
    2: 0x7, 3: 0xB, 4: 0x13, 5: 0x25, 6: 0x43, 7: 0x89, 8: 0x11D, 9: 0x211, 10: 0x409,
    11: 0x805, 12: 0x1053, 13: 0x201B, 14: 0x4443, 15: 0x8003, 16: 0x1100B, 17: 0x20009,
    18: 0x40027, 19: 0x80027, 20: 0x100009,
}
"""``galois.matlab_primitive_poly(2, m)`` as an integer (bit d = coefficient of x^d)."""


@functools.cache
def _field_tables(m: int) -> tuple[np.ndarray, np.ndarray]:
    """exp and log tables of GF(2^m) as galois.BCH defines it, q = 2^m - 1.

    ``log[0]`` is the sentinel 2q and ``exp`` (length 4q + 1) is periodic up to 2q - 1 and zero
    from 2q on, so ``exp[log[a] + log[b]]`` is the product a*b for all a, b, zero included.
    """
    poly = PRIMITIVE_POLYS[m]
    q = (1 << m) - 1
    exp = np.zeros(4 * q + 1, dtype=np.int64)
    x = 1
    for i in range(q):
        exp[i] = x
        x <<= 1
        if x >> m:
            x ^= poly
    exp[q:2 * q] = exp[:q]
    log = np.full(1 << m, 2 * q, dtype=np.int64)
    log[exp[:q]] = np.arange(q)
    return exp, log


def _bits(values: np.ndarray, m: int) -> np.ndarray:
    """Little-endian bit expansion (..., m) of integer field elements."""
    return ((values[..., None] >> np.arange(m)) & 1).astype(np.float32)


@dataclass(frozen=True)
class DecodedWords:
    """Result of decoding W received words.

    ``support``: (W, t) int64, decoded message positions (features) sorted, padded with -1.
    ``parity_errors``: (W, r) bool, parity positions the decoder flipped.
    ``n_errors``: (W,) int64, errors corrected (|k| + flipped parity bits); -1 on failure.
    ``ok``: (W,) bool, decoding succeeded.
    """

    support: np.ndarray
    parity_errors: np.ndarray
    n_errors: np.ndarray
    ok: np.ndarray


class BCHCode:
    """Shortened binary BCH code carrying ``n`` message bits and correcting ``t`` errors.

    Attributes: ``n``, ``t``, ``m``, ``nc``, ``kc``, ``n_parity`` (r = nc - kc),
    ``generator_poly`` (int, bit d = coefficient of x^d) and ``parity_matrix`` H_p,
    (r, n) uint8, so that the parity bits of a message k are ``H_p k mod 2``.

    Work counters (cumulative; the codes are cached and shared, so read differences):
    ``n_decoded``, distinct words hard-decoded, and ``n_chase_patterns``, flip patterns Chase
    decoding tried.
    """

    def __init__(self, n: int, t: int):
        self.n, self.t = int(n), int(t)
        self.m, self.nc, self.kc = code_parameters(self.n, self.t)
        self.n_parity = self.nc - self.kc
        self._exp, self._log = _field_tables(self.m)
        self._q = self.nc
        self.generator_poly = self._generator_poly()
        self.parity_matrix = self._parity_matrix()
        self._syndrome_table = self._make_syndrome_table()
        self._root_exponents = self._make_root_exponents()
        # H_p^T as bool (n + 1, r), a zero row last for the padding index -1
        self._parity_columns = np.vstack([self.parity_matrix.T.astype(bool),
                                          np.zeros((1, self.n_parity), bool)])
        # error position (0..n-1 message, n..n+r-1 parity) of each locator's log, else -1;
        # index 2q is log(0)
        self._position_of_log = np.full(2 * self._q + 1, -1, np.int64)
        self._position_of_log[self._message_log_locators()] = np.arange(self.n)
        self._position_of_log[self._parity_log_locators()] = self.n + np.arange(self.n_parity)
        self.n_decoded = 0
        self.n_chase_patterns = 0

    # --- construction -----------------------------------------------------------------
    def _poly_mul_field(self, a: list[int], b: list[int]) -> list[int]:
        out = [0] * (len(a) + len(b) - 1)
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                out[i + j] ^= self._mul_scalar(x, y)
        return out

    def _mul_scalar(self, x: int, y: int) -> int:
        if x == 0 or y == 0:
            return 0
        return int(self._exp[self._log[x] + self._log[y]])

    def _generator_poly(self) -> int:
        """g(x) = product of the minimal polynomials of alpha^1..alpha^2t, as a GF(2) int."""
        g = 1
        for coset in _generator_exponents(self.t, self.m):
            poly = [1]  # ascending coefficients over GF(2^m)
            for e in coset:
                poly = self._poly_mul_field(poly, [int(self._exp[e]), 1])  # (x + alpha^e)
            if any(c not in (0, 1) for c in poly):
                raise ArithmeticError("minimal polynomial is not binary")  # cannot happen
            minimal = sum(c << d for d, c in enumerate(poly))
            g = _gf2_mul(g, minimal)
        return g

    def _parity_matrix(self) -> np.ndarray:
        """H_p (r, n): column i = x^(r + n - 1 - i) mod g(x), degrees r-1 .. 0 top to bottom."""
        r, n, g = self.n_parity, self.n, self.generator_poly
        state, remainders = 1, []
        for e in range(r + n):
            if e >= r:
                remainders.append(state)
            state <<= 1
            if state >> r & 1:
                state ^= g
        nbytes = (r + 7) // 8
        raw = np.frombuffer(b"".join(s.to_bytes(nbytes, "little") for s in remainders), np.uint8)
        bits = np.unpackbits(raw.reshape(n, nbytes), axis=1, bitorder="little")[:, :r]
        # remainders[e - r] belongs to feature i = r + n - 1 - e; rows run over degree r-1..0
        return np.ascontiguousarray(bits[::-1, ::-1].T)

    def _message_log_locators(self) -> np.ndarray:
        return (self.n_parity + self.n - 1 - np.arange(self.n)) % self._q

    def _parity_log_locators(self) -> np.ndarray:
        return (self.n_parity - 1 - np.arange(self.n_parity)) % self._q

    def _make_syndrome_table(self) -> np.ndarray:
        """(r, 2t*m) float32: bits of X_q^j for parity position q and j = 1..2t."""
        j = np.arange(1, 2 * self.t + 1)
        powers = self._exp[(self._parity_log_locators()[:, None] * j[None, :]) % self._q]
        return _bits(powers, self.m).reshape(self.n_parity, -1)

    def _make_root_exponents(self) -> np.ndarray:
        """(t+1, n+r) int64: l * log(X^{-1}) mod q for every position's locator X."""
        logs = np.concatenate([self._message_log_locators(), self._parity_log_locators()])
        inv = (-logs) % self._q
        return (np.arange(self.t + 1)[:, None] * inv[None, :]) % self._q

    # --- public helpers ------------------------------------------------------------------
    def shift_matrix(self) -> np.ndarray:
        """D = [0; H_p] as bool (P, n), P = r + 1: the zero shift then one row per parity bit."""
        zero = np.zeros((1, self.n), dtype=bool)
        return np.vstack([zero, self.parity_matrix.astype(bool)])

    def parity_bits(self, support: np.ndarray) -> np.ndarray:
        """Parity bits H_p k (W, r) bool for supports (W, d) padded with -1."""
        cols = self._parity_columns[np.where(support < 0, self.n, support)]  # (W, d, r)
        return np.bitwise_xor.reduce(cols, axis=1)

    # --- decoding --------------------------------------------------------------------------
    def _syndromes(self, bits: np.ndarray) -> np.ndarray:
        """(W, 2t) int field elements S_1..S_2t of received parity words (W, r)."""
        prod = bits.astype(np.float32) @ self._syndrome_table
        sbits = prod.astype(np.int64).reshape(len(bits), 2 * self.t, self.m) & 1
        return sbits @ (1 << np.arange(self.m))

    def _mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._exp[self._log[a] + self._log[b]]

    def _berlekamp_massey(self, syndromes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Error locator polynomials (W, t+1) (ascending) and their degrees L (W,).

        Two savings, exact for every word that ends with L <= t (all others fail anyway, and
        L never decreases): for a binary code S_2j = S_j^2, so the discrepancy of every second
        step vanishes and those steps are skipped; and the polynomials never need more than
        t + 1 coefficients.
        """
        w, two_t = syndromes.shape
        t = self.t
        width = t + 1
        locator = np.zeros((w, width), np.int64)
        locator[:, 0] = 1
        shifted = np.zeros((w, width), np.int64)  # x^gap B(x): the last length-change locator
        shifted[:, 1:2] = 1  # B = 1, gap = 1
        degree = np.zeros(w, np.int64)
        last = np.ones(w, np.int64)  # discrepancy at the last length change
        reversed_syndromes = syndromes[:, ::-1]
        for step in range(0, two_t, 2):
            k = min(step, t)
            disc = syndromes[:, step]
            if k:  # S_step + sum_i Lambda_i S_{step-i}
                terms = self._mul(locator[:, 1:k + 1],
                                  reversed_syndromes[:, two_t - step:two_t - step + k])
                disc = disc ^ np.bitwise_xor.reduce(terms, axis=1)
            nonzero = disc != 0
            scale = self._mul(disc, self._exp[self._q - self._log[last]])
            updated = locator ^ self._mul(scale[:, None], shifted)
            grow = nonzero & (2 * degree <= step)
            base = np.where(grow[:, None], locator, shifted)
            last = np.where(grow, disc, last)
            degree = np.where(grow, step + 1 - degree, degree)
            locator = np.where(nonzero[:, None], updated, locator)
            shifted = np.zeros_like(base)  # x^2 B: this step and the skipped odd one
            shifted[:, 2:] = base[:, :-2]
        return locator, degree

    def decode(self, bits: np.ndarray) -> DecodedWords:
        """Hard-decode received parity words (W, r) bool, message part all zeros.

        Identical words are decoded once.
        """
        bits = np.asarray(bits, dtype=bool).reshape(-1, self.n_parity)
        if len(bits) == 0:
            return _empty(self.t, self.n_parity)
        first, inverse = unique_rows(np.packbits(bits, axis=1))
        self.n_decoded += len(first)
        unique = self._decode_unique(bits[first])
        return DecodedWords(*(a[inverse] for a in (unique.support, unique.parity_errors,
                                                   unique.n_errors, unique.ok)))

    def _decode_unique(self, bits: np.ndarray) -> DecodedWords:
        w, t, n, r = len(bits), self.t, self.n, self.n_parity
        support = np.full((w, t), -1, np.int64)
        parity_errors = np.zeros((w, r), bool)
        n_errors = np.full(w, -1, np.int64)
        locator, degree = self._berlekamp_massey(self._syndromes(bits))
        n_errors[degree == 0] = 0
        # one error: Lambda(x) = 1 + X x, the locator X is the coefficient itself
        single = np.flatnonzero(degree == 1)
        position = self._position_of_log[self._log[locator[single, 1]]]
        single, position = single[position >= 0], position[position >= 0]
        message = position < n
        support[single[message], 0] = position[message]
        parity_errors[single[~message], position[~message] - n] = True
        n_errors[single] = 1
        # more errors: search the n + r positions for roots
        todo = np.flatnonzero((degree >= 2) & (degree <= t))
        chunk = max(1, _CHUNK_ELEMENTS // (n + r))
        for start in range(0, len(todo), chunk):
            rows = todo[start:start + chunk]
            # Lambda(X^{-1}) = sum_l Lambda_l X^{-l} at every position, from log/exp tables
            logs = self._log[locator[rows]]  # (W, t+1); log(0) is the sentinel 2q
            value = np.zeros((len(rows), n + r), np.int64)
            for power, exponents in enumerate(self._root_exponents):
                value ^= self._exp[logs[:, power, None] + exponents[None, :]]
            roots = value == 0
            good = roots.sum(axis=1) == degree[rows]
            rows, roots = rows[good], roots[good]
            msg = roots[:, :n]
            # sorted positions, padded with -1: rank each root inside its row
            rank = np.cumsum(msg, axis=1) - 1
            wi, pos = np.nonzero(msg)
            support[rows[wi], rank[wi, pos]] = pos
            parity_errors[rows] = roots[:, n:]
            n_errors[rows] = degree[rows]
        return DecodedWords(support, parity_errors, n_errors, n_errors >= 0)

    def chase(self, reliabilities: np.ndarray, depth: int, n_patterns: int):
        """Chase (soft) decoding candidates.

        ``reliabilities``: (W, r) real soft parity evidence, negative = bit 1. Flip patterns over
        the ``depth`` least reliable positions, the ``n_patterns`` cheapest by summed |r| (the
        empty pattern first, ties to the smaller bit mask), are hard-decoded. ``depth`` and
        ``n_patterns`` are first bounded by :func:`chase_plan` (at most MAX_CHASE_PATTERNS
        patterns), and the cheapest patterns are found without listing all 2^depth of them, so
        a word costs at most MAX_CHASE_PATTERNS hard decodes at any depth. Returns ``(word,
        candidates, cost)`` for the successful decodes: ``word`` (Q,) index of the received
        word, ``candidates`` a :class:`DecodedWords` of length Q, ``cost`` (Q,) = sum of |r|
        over parity bits where the decoded codeword disagrees with the hard decisions (the
        analog distance). ``n_chase_patterns`` counts the patterns tried.
        """
        rel = np.asarray(reliabilities, dtype=float).reshape(-1, self.n_parity)
        w, r = rel.shape
        depth, keep = chase_plan(r, depth, n_patterns)
        self.n_chase_patterns += w * keep
        chunk = max(1, _CHUNK_ELEMENTS // (keep * r))
        parts = [self._chase_chunk(rel[start:start + chunk], depth, keep)
                 for start in range(0, w, chunk)]
        if not parts:
            return np.zeros(0, np.int64), _empty(self.t, r), np.zeros(0)
        word = np.concatenate([p[0] + start for p, start in zip(parts, range(0, w, chunk),
                                                                  strict=True)])
        cand = DecodedWords(*(np.concatenate([getattr(p[1], f) for p in parts])
                              for f in ("support", "parity_errors", "n_errors", "ok")))
        return word, cand, np.concatenate([p[2] for p in parts])

    def _chase_chunk(self, rel: np.ndarray, depth: int, keep: int):
        w, r = rel.shape
        hard = rel < 0
        mag = np.abs(rel)
        weakest = np.argsort(mag, axis=1, kind="stable")[:, :depth]  # (W, depth)
        masks = _cheapest_patterns(np.take_along_axis(mag, weakest, axis=1), keep)  # (W, keep)
        flips = np.zeros((w, keep, r), bool)
        chosen = (masks[:, :, None] >> np.arange(depth)) & 1  # (W, keep, depth)
        wi, pi, di = np.nonzero(chosen)
        flips[wi, pi, weakest[wi, di]] = True
        words = hard[:, None, :] ^ flips
        decoded = self.decode(words.reshape(-1, r))
        ok = decoded.ok
        disagree = flips.reshape(-1, r) ^ decoded.parity_errors
        cost = (disagree * np.repeat(mag, keep, axis=0)).sum(axis=1)
        word = np.repeat(np.arange(w), keep)
        cand = DecodedWords(decoded.support[ok], decoded.parity_errors[ok],
                            decoded.n_errors[ok], ok[ok])
        return word[ok], cand, cost[ok]


def _cheapest_patterns(costs: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` cheapest subsets of the columns of ``costs`` (W, d), costs >= 0.

    Returns int64 bit masks (W, keep) ordered by (summed cost, mask), the order a full listing
    of all 2^d subsets sorted stably by cost gives. Built one column at a time: the cheapest
    subsets of the first q + 1 columns are among the cheapest ``keep`` of the first q, with
    and without column q, so each step merges 2 * keep candidates.
    """
    w, d = costs.shape
    sums = np.zeros((w, 1))
    masks = np.zeros((w, 1), np.int64)
    for q in range(d):
        sums = np.concatenate([sums, sums + costs[:, q:q + 1]], axis=1)
        masks = np.concatenate([masks, masks | (1 << q)], axis=1)
        if sums.shape[1] > keep:
            order = np.lexsort((masks, sums), axis=1)[:, :keep]
            sums = np.take_along_axis(sums, order, axis=1)
            masks = np.take_along_axis(masks, order, axis=1)
    order = np.lexsort((masks, sums), axis=1)
    return np.take_along_axis(masks, order, axis=1)[:, :keep]


def _gf2_mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a <<= 1
        b >>= 1
    return out


def _empty(t: int, r: int) -> DecodedWords:
    return DecodedWords(np.zeros((0, t), np.int64), np.zeros((0, r), bool),
                        np.zeros(0, np.int64), np.zeros(0, bool))


@functools.lru_cache(maxsize=32)
def bch_code(n: int, t: int) -> BCHCode:
    """The (cached) shortened BCH code for ``n`` features and degree bound ``t``."""
    return BCHCode(n, t)
