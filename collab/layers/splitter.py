"""ArraySplitter: the elements of a JSON array, cut out of its bytes as they stream in.

A sans-I/O scanner: numpy finds the structure of each piece (strings, escapes, nesting) in a few
vectorized passes, so the whole elements received so far can be handed to orjson at once, and
only the last, unfinished element is carried over to the next piece. It checks nothing but the
structure: orjson parses (and refuses) what it cuts out.
"""

from __future__ import annotations

import numpy as np

_BACKSLASH, _QUOTE, _COMMA = 92, 34, 44
_OPEN = (123, 91)  # { [
_CLOSE = (125, 93)  # } ]


class ArraySplitter:
    """Fed the bytes that follow an array's opening bracket; answers the complete elements."""

    def __init__(self) -> None:
        self.depth = 0  # nesting inside the current element (0: between elements)
        self.in_string = False
        self.escape_next = False  # the piece ended with a backslash that escapes the next byte
        self.rest = b""  # the unfinished element
        self.closed = False  # the array's closing bracket was seen
        self.tail = bytearray()  # what followed it

    def feed(self, data: bytes) -> bytes:
        """Complete elements of the array in `data` (with what was carried over), separated by
        commas, without brackets; b"" when none was completed."""
        if self.closed:
            self.tail += data
            return b""
        if not data:
            return b""
        a = np.frombuffer(data, np.uint8)
        escaped = self._escapes(a)
        # Only quotes, brackets, braces and commas matter: scan those (a fraction of the bytes).
        marks = (a == _QUOTE) | (a == _COMMA) | (a == _OPEN[0]) | (a == _OPEN[1]) | (a == _CLOSE[0]) | (a == _CLOSE[1])
        at = np.flatnonzero(marks)
        if not len(at):
            self.rest += data
            return b""
        v = a[at]
        quotes = v == _QUOTE
        if escaped is not None:
            quotes &= ~escaped[at]
        count = np.cumsum(quotes, dtype=np.int32)
        outside = ((count + int(self.in_string)) & 1) == 0  # an odd quote count: in a string
        delta = (((v == _OPEN[0]) | (v == _OPEN[1])) & outside).astype(np.int32)
        delta -= ((v == _CLOSE[0]) | (v == _CLOSE[1])) & outside
        depth = self.depth + np.cumsum(delta, dtype=np.int32)
        below = np.flatnonzero(depth < 0)
        if len(below):  # the array ends here
            end = int(at[below[0]])
            span = self.rest + data[:end]
            self.rest = b""
            self.closed = True
            self.tail += data[end + 1 :]
            return span
        self.depth = int(depth[-1])
        self.in_string = bool((int(count[-1]) + int(self.in_string)) & 1)
        commas = at[(v == _COMMA) & outside & (depth == 0)]
        if not len(commas):
            self.rest += data
            return b""
        cut = int(commas[-1])
        span = self.rest + data[:cut]
        self.rest = data[cut + 1 :]
        return span

    def _escapes(self, a: np.ndarray) -> np.ndarray | None:
        """Which bytes a backslash escapes (None: none). Backslashes are rare in detection
        exports, so they are walked one by one."""
        backslashes = np.flatnonzero(a == _BACKSLASH)
        if not len(backslashes) and not self.escape_next:
            return None
        escaped = np.zeros(len(a), bool)
        last = -1  # the position the previous backslash escaped
        if self.escape_next:
            escaped[0] = True
            last = 0
        self.escape_next = False
        for p in backslashes.tolist():
            if p == last:
                continue  # an escaped backslash escapes nothing
            if p + 1 < len(a):
                escaped[p + 1] = True
                last = p + 1
            else:
                self.escape_next = True
        return escaped
