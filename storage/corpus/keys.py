"""64-bit keys for ids, pairs and texts, computed with numpy over whole Arrow arrays.

Integer ids are their own key (exact). Strings are hashed: each 8-byte word of a string, mixed
with its position and the seed, contributes one 64-bit value; a string's hash is the mixed sum of
its contributions and its length. That is vectorised over the Arrow buffers, with no Python loop
per string. Hashes can
collide, so callers treat equal hashes as "maybe equal" and confirm exactly where it matters.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MASK64 = (1 << 64) - 1
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_POSITION_FACTOR = np.uint64(0xC2B2AE3D27D4EB4F)
_PAIR_FACTOR = np.uint64(0x165667B19E3779F9)
# Bytes hashed per step: the temporaries take about 8 times this much memory.
_CHUNK_BYTES = 1 << 22
# Keeps the first r bytes of a little-endian word, for r = 0..8.
_TAIL_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(9)], dtype=np.uint64)
# Strings of at most this many words (ids, mostly) are hashed word position by word position.
_SHORT_WORDS = 4
# Salt of the second, independent query-id hash used to spot collisions of the first.
CHECK_SALT = 0x5851F42D4C957F2D


def _mix(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, elementwise; uint64 array arithmetic wraps without warnings."""
    values = values ^ (values >> np.uint64(33))
    values *= _MIX1
    values ^= values >> np.uint64(33)
    values *= _MIX2
    values ^= values >> np.uint64(33)
    return values


def _seed_word(seed: int) -> np.uint64:
    value = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64
    value ^= value >> 31
    value = (value * 0xBF58476D1CE4E5B9) & _MASK64
    return np.uint64(value ^ (value >> 29))


def hash_strings(array: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A uint64 hash per string (nulls hash like the empty string)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type != pa.large_string():
        array = pc.cast(array, pa.large_string())
    count = len(array)
    hashes = np.empty(count, dtype=np.uint64)
    if count == 0:
        return hashes
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[array.offset : array.offset + count + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    if array.null_count:
        lengths = np.where(array.is_valid().to_numpy(zero_copy_only=False), lengths, 0)
    seed_word = _seed_word(seed)
    start = 0
    while start < count:
        stop = int(np.searchsorted(offsets, offsets[start] + _CHUNK_BYTES, side="right")) - 1
        stop = min(max(stop, start + 1), count)
        chunk_lengths = lengths[start:stop]
        longest_words = (int(chunk_lengths.max()) + 7) // 8
        rows = _hash_short_rows if longest_words <= _SHORT_WORDS else _hash_string_rows
        hashes[start:stop] = rows(data, offsets[start : stop + 1], chunk_lengths, seed_word)
        start = stop
    return hashes


def _word_view(data: np.ndarray, low: int, high: int) -> np.ndarray:
    """Element i is the little-endian 8-byte word starting at byte low + i (zeros past high)."""
    padded = np.zeros(high - low + 8, dtype=np.uint8)
    padded[: high - low] = data[low:high]
    return np.ndarray(shape=(high - low + 1,), dtype="<u8", buffer=padded, strides=(1,))


def _hash_short_rows(
    data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, seed_word: np.uint64
) -> np.ndarray:
    """The same hashes as ``_hash_string_rows`` for rows of at most _SHORT_WORDS words (ids), one
    word position at a time: no per-word index arrays."""
    low, high = int(offsets[0]), int(offsets[-1])
    word_at = _word_view(data, low, high)
    starts = offsets[:-1] - low
    sums = np.zeros(lengths.size, dtype=np.uint64)
    for position in range(_SHORT_WORDS):
        bytes_left = np.clip(lengths - 8 * position, 0, 8)
        if not bytes_left.any():
            break
        words = word_at[np.minimum(starts + 8 * position, high - low)].astype(np.uint64)
        words &= _TAIL_MASKS[bytes_left]
        words ^= np.uint64((position * int(_POSITION_FACTOR) + int(seed_word)) & _MASK64)
        contributions = _mix(words)
        contributions[bytes_left == 0] = 0
        sums += contributions
    return _mix(sums ^ _mix(lengths.astype(np.uint64) + seed_word))


def _hash_string_rows(
    data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, seed_word: np.uint64
) -> np.ndarray:
    """Hash rows whose bytes are data[offsets[0]:offsets[-1]], eight bytes at a time."""
    low, high = int(offsets[0]), int(offsets[-1])
    word_at = _word_view(data, low, high)
    word_counts = (lengths + 7) // 8
    first_words = np.cumsum(word_counts) - word_counts
    word_in_row = np.arange(int(word_counts.sum()), dtype=np.int64) - np.repeat(first_words, word_counts)
    words = word_at[np.repeat(offsets[:-1] - low, word_counts) + 8 * word_in_row].astype(np.uint64)
    bytes_left = np.minimum(np.repeat(lengths, word_counts) - 8 * word_in_row, 8)
    words &= _TAIL_MASKS[bytes_left]
    words ^= word_in_row.astype(np.uint64) * _POSITION_FACTOR + seed_word
    running = np.zeros(words.size + 1, dtype=np.uint64)
    np.cumsum(_mix(words), out=running[1:])
    sums = running[first_words + word_counts] - running[first_words]
    return _mix(sums ^ _mix(lengths.astype(np.uint64) + seed_word))


def id_keys(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """uint64 keys of canonical ids: int64 values reinterpreted exactly, strings hashed."""
    if pa.types.is_integer(ids.type):
        return np.asarray(pc.fill_null(ids, 0).to_numpy(), dtype=np.int64).view(np.uint64)
    return hash_strings(ids, seed)


def id_check_keys(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A second, independent key: two ids with equal ``id_keys`` but different check keys collided."""
    if pa.types.is_integer(ids.type):
        return np.zeros(len(ids), dtype=np.uint64)
    return hash_strings(ids, seed ^ CHECK_SALT)


def pair_keys(query_keys: np.ndarray, doc_keys: np.ndarray, seed: int) -> np.ndarray:
    """uint64 hash of (query key, doc key) pairs; order matters."""
    mixed_query = _mix(query_keys ^ _seed_word(seed))
    return _mix(mixed_query ^ (doc_keys * _PAIR_FACTOR + _seed_word(seed + 1)))
