"""BLAKE2b with an 8-byte digest (RFC 7693) of many byte strings at once, in numpy.

Content hashes are BLAKE2b-64, and ``hashlib`` hashes one string per call: a Python loop over every
pair of a shard. Here the compression function runs on whole columns instead: message ``i`` of a batch
is one lane, and each of BLAKE2b's operations (64-bit additions, xors, rotations) is one numpy operation
over all lanes that still have a block to compress. The state's 16 words are held as four rows of four
(``a, b, c, d``), so the four column mixes of a round are one call each, and so are the four diagonal
mixes, on row slices of ``b, c, d`` rotated into place. Digests equal
``hashlib.blake2b(message, digest_size=8).digest()``, read as little-endian uint64.

Messages are compressed in batches of ``BATCH_MESSAGES``, small enough that the working arrays stay in
cache; per batch, messages are ordered by their number of blocks, so the ones still being compressed at
block ``k`` are always a prefix and no lane is masked.
"""

from __future__ import annotations

import numpy as np

DIGEST_BYTES = 8
BLOCK_BYTES = 128
BATCH_MESSAGES = 4096

_IV = np.array(
    [
        0x6A09E667F3BCC908,
        0xBB67AE8584CAA73B,
        0x3C6EF372FE94F82B,
        0xA54FF53A5F1D36F1,
        0x510E527FADE682D1,
        0x9B05688C2B3E6C1F,
        0x1F83D9ABFB41BD6B,
        0x5BE0CD19137E2179,
    ],
    dtype=np.uint64,
)
# The parameter block's first word: digest length, no key, fanout 1, depth 1.
_H0 = _IV ^ np.array([0x01010000 | DIGEST_BYTES, 0, 0, 0, 0, 0, 0, 0], dtype=np.uint64)
_SIGMA = np.array(
    [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
        [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
        [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
        [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
        [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
        [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
        [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
        [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
        [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    ]
)
# Per round, the message words in the order the mixes take them: x then y of the four column mixes,
# then x then y of the four diagonal mixes.
_MIX_ORDER = [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]
_ROUND_WORDS = np.array([_SIGMA[r % 10][_MIX_ORDER] for r in range(12)])
_WORD_OFFSETS = np.arange(16, dtype=np.int64) * 8
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def blake2b_64(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The BLAKE2b-64 digest, as a little-endian uint64, of each message ``data[offsets[i]:offsets[i+1]]``.

    ``data`` is uint8, ``offsets`` a non-decreasing integer array of one more entry than messages (an
    Arrow binary array's buffers)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = offsets.size - 1
    digests = np.empty(max(n, 0), dtype=np.uint64)
    for start in range(0, n, BATCH_MESSAGES):
        stop = min(start + BATCH_MESSAGES, n)
        first, last = int(offsets[start]), int(offsets[stop])
        digests[start:stop] = _digest_batch(data[first:last], offsets[start : stop + 1] - first)
    return digests


def _digest_batch(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    lengths = np.diff(offsets)
    blocks = np.maximum(1, -(-lengths // BLOCK_BYTES))
    order = np.argsort(-blocks, kind="stable")  # most blocks first: the lanes still going are a prefix
    starts, lengths, blocks = offsets[:-1][order], lengths[order], blocks[order]
    # Zero padding past the end, so that every block's 16 words can be read whole.
    padded = np.zeros(data.size + BLOCK_BYTES + 8, dtype=np.uint8)
    padded[: data.size] = data
    # Every byte offset as the start of a little-endian word (an unaligned, overlapping view).
    words_at = np.ndarray((padded.size - 7,), dtype="<u8", buffer=padded, strides=(1,))
    state = np.repeat(_H0[:, None], lengths.size, axis=1)
    for block in range(int(blocks[0]) if lengths.size else 0):
        lanes = int(np.count_nonzero(blocks > block))
        consumed = BLOCK_BYTES * block
        message = words_at[starts[:lanes] + consumed + _WORD_OFFSETS[:, None]]
        # The lanes whose last block this is come last; past a message's end, its block is zeros.
        ending = int(np.count_nonzero(blocks > block + 1))
        valid_bytes = np.clip(lengths[ending:lanes] - consumed - _WORD_OFFSETS[:, None], 0, 8)
        message[:, ending:] &= _low_bytes_mask(valid_bytes)
        last = np.arange(lanes) >= ending
        counter = np.where(last, lengths[:lanes], consumed + BLOCK_BYTES).astype(np.uint64)
        _compress(state[:, :lanes], message, counter, last)
    digests = np.empty(lengths.size, dtype=np.uint64)
    digests[order] = state[0]
    return digests


def _low_bytes_mask(counts: np.ndarray) -> np.ndarray:
    """A uint64 with the low ``count`` bytes set, for every count of 0 to 8."""
    bits = counts.astype(np.uint64) * np.uint64(8)
    return np.where(counts >= 8, _ALL_ONES, (np.uint64(1) << np.minimum(bits, 63)) - np.uint64(1))


def _compress(state: np.ndarray, message: np.ndarray, counter: np.ndarray, last: np.ndarray) -> None:
    """BLAKE2b's compression function F on every lane: ``state`` (8, lanes) is updated in place with
    ``message`` (16, lanes), the byte ``counter`` (lanes; messages are far below 2**64 bytes, so its
    high word is 0) and ``last``, whether this is the lane's final block."""
    lanes = state.shape[1]
    # b, c and d carry copies of their first rows after the fourth, so that the rows the diagonal
    # mixes take, (1,2,3,0), (2,3,0,1) and (3,0,1,2), are plain slices; the copies are refreshed
    # after each mix.
    a = state[0:4].copy()
    b = np.empty((5, lanes), dtype=np.uint64)
    c = np.empty((6, lanes), dtype=np.uint64)
    d = np.empty((7, lanes), dtype=np.uint64)
    b[0:4] = state[4:8]
    c[0:4] = _IV[0:4, None]
    d[0:4] = _IV[4:8, None]
    d[0] ^= counter
    d[2] ^= np.where(last, _ALL_ONES, np.uint64(0))
    scratch = np.empty_like(a)
    for words in message[_ROUND_WORDS]:
        _mix(a, b[0:4], c[0:4], d[0:4], words[0:4], words[4:8], scratch)
        b[4], c[4:6], d[4:7] = b[0], c[0:2], d[0:3]
        _mix(a, b[1:5], c[2:6], d[3:7], words[8:12], words[12:16], scratch)
        b[0], c[0:2], d[0:3] = b[4], c[4:6], d[4:7]
    state[0:4] ^= a
    state[0:4] ^= c[0:4]
    state[4:8] ^= b[0:4]
    state[4:8] ^= d[0:4]


def _mix(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """The mixing function G on four columns of every lane at once, in place (uint64 wraps mod 2**64)."""
    a += b
    a += x
    d ^= a
    _rotate_right(d, 32, scratch)
    c += d
    b ^= c
    _rotate_right(b, 24, scratch)
    a += b
    a += y
    d ^= a
    _rotate_right(d, 16, scratch)
    c += d
    b ^= c
    _rotate_right(b, 63, scratch)


def _rotate_right(words: np.ndarray, bits: int, scratch: np.ndarray) -> None:
    np.right_shift(words, bits, out=scratch)
    np.left_shift(words, 64 - bits, out=words)
    np.bitwise_or(words, scratch, out=words)
