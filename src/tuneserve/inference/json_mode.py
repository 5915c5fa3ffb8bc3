"""JSON mode: an incremental checker that a text is a prefix of one JSON object.

Owns: `JsonPrefix`, an immutable state of a character-level JSON parser (RFC 8259) whose top
level must be an object, fed a piece of text at a time; and `allowed`, which tells whether a
candidate token's text keeps a generated text a valid prefix. The decoder (batcher.py) uses it
to constrain each step of a json_mode row to the most likely candidates that keep the output
valid, and ends the row once the object is complete.
Does not own: choosing among the candidates (logits.py / batcher.py), tokenization.

States are small tuples, so a candidate is tried by feeding it to the current state and keeping
the result only if it is not None: no copying, no backtracking.
"""

from __future__ import annotations

from dataclasses import dataclass

_WS = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = '"\\/bfnrtu'

# modes
_START = 0  # before the top-level object: whitespace or "{"
_OBJ_FIRST = 1  # after "{": whitespace, '"' (a key) or "}"
_OBJ_KEY = 2  # after ",": whitespace or '"'
_COLON = 3  # after a key: whitespace or ":"
_VALUE = 4  # a value is expected
_ARR_FIRST = 5  # after "[": a value or "]"
_AFTER = 6  # after a value: whitespace, "," or the closing bracket
_STRING = 7  # inside a string (aux: 1 if it is a key)
_ESC = 8  # after a backslash in a string (aux: key flag)
_UNICODE = 9  # in \uXXXX (aux: (key flag, hex digits left))
_NUMBER = 10  # in a number (aux: number sub-state)
_LITERAL = 11  # in true/false/null (aux: the characters still expected)
_DONE = 12  # the top-level object is closed

# number sub-states; the terminable ones may end at a delimiter
_N_MINUS, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_EXP, _N_EXP_SIGN, _N_EXP_DIGITS = range(8)
_N_TERMINABLE = {_N_ZERO, _N_INT, _N_FRAC, _N_EXP_DIGITS}


@dataclass(frozen=True)
class JsonPrefix:
    """A parser state: `stack` of open containers ("{" / "["), `mode`, `aux` (mode data), and
    `ws` (whitespace characters in a row outside strings, to stop endless whitespace)."""

    stack: str = ""
    mode: int = _START
    aux: object = None
    ws: int = 0

    @property
    def complete(self) -> bool:
        return self.mode == _DONE

    def feed(self, text: str, max_whitespace: int = 8) -> JsonPrefix | None:
        """The state after `text`, or None when `text` cannot continue a JSON object here."""
        stack, mode, aux, ws = self.stack, self.mode, self.aux, self.ws
        for ch in text:
            result = _step(stack, mode, aux, ch)
            if result is None:
                return None
            stack, mode, aux = result
            if ch in _WS and mode not in (_STRING, _ESC, _UNICODE):
                ws += 1
                if ws > max_whitespace:
                    return None
            else:
                ws = 0
        return JsonPrefix(stack, mode, aux, ws)

    def closing(self) -> str:
        """A shortest text that completes the object from here (a fallback when no candidate fits)."""
        mode, aux, stack = self.mode, self.aux, self.stack
        tail = ""
        if mode == _START:
            return "{}"
        if mode in (_ESC,):
            tail += "n"
            mode = _STRING
        if mode == _UNICODE:
            tail += "0" * aux[1]
            mode, aux = _STRING, aux[0]
        if mode == _STRING:
            tail += '"'
            if aux:  # a key: it needs a value
                tail += ":0"
        elif mode == _NUMBER:
            tail += {_N_MINUS: "0", _N_DOT: "0", _N_EXP: "0", _N_EXP_SIGN: "0"}.get(aux, "")
        elif mode == _LITERAL:
            tail += aux
        elif mode == _COLON:
            tail += ":0"
        elif mode == _VALUE:
            tail += "0"
        elif mode == _OBJ_KEY:
            tail += '"":0'
        return tail + "".join("}" if c == "{" else "]" for c in reversed(stack))


def _after_value(stack: str):
    return (stack, _AFTER, None) if stack else (stack, _DONE, None)


def _value_start(stack: str, ch: str):
    if ch == "{":
        return stack + "{", _OBJ_FIRST, None
    if ch == "[":
        return stack + "[", _ARR_FIRST, None
    if ch == '"':
        return stack, _STRING, 0
    if ch == "-":
        return stack, _NUMBER, _N_MINUS
    if ch == "0":
        return stack, _NUMBER, _N_ZERO
    if ch in "123456789":
        return stack, _NUMBER, _N_INT
    for word in ("true", "false", "null"):
        if ch == word[0]:
            return stack, _LITERAL, word[1:]
    return None


def _step(stack: str, mode: int, aux, ch: str):
    """One character: the next (stack, mode, aux), or None if the character is not allowed."""
    if mode == _STRING:
        if ch == '"':
            return (stack, _COLON, None) if aux else _after_value(stack)
        if ch == "\\":
            return stack, _ESC, aux
        if ord(ch) < 0x20:
            return None
        return stack, _STRING, aux
    if mode == _ESC:
        if ch not in _ESCAPES:
            return None
        return (stack, _UNICODE, (aux, 4)) if ch == "u" else (stack, _STRING, aux)
    if mode == _UNICODE:
        if ch not in _HEX:
            return None
        key, left = aux
        return (stack, _UNICODE, (key, left - 1)) if left > 1 else (stack, _STRING, key)
    if mode == _NUMBER:
        nxt = _number_step(aux, ch)
        if nxt is not None:
            return stack, _NUMBER, nxt
        if aux not in _N_TERMINABLE:
            return None
        return _step(*_after_value(stack), ch)  # the number ended: the character belongs to what follows
    if mode == _LITERAL:
        if ch != aux[0]:
            return None
        return (stack, _LITERAL, aux[1:]) if len(aux) > 1 else _after_value(stack)
    if ch in _WS:
        return None if mode == _DONE else (stack, mode, aux)
    if mode == _START:
        return (stack + "{", _OBJ_FIRST, None) if ch == "{" else None
    if mode in (_OBJ_FIRST, _OBJ_KEY):
        if ch == '"':
            return stack, _STRING, 1
        if ch == "}" and mode == _OBJ_FIRST:
            return _after_value(stack[:-1])
        return None
    if mode == _COLON:
        return (stack, _VALUE, None) if ch == ":" else None
    if mode == _ARR_FIRST:
        if ch == "]":
            return _after_value(stack[:-1])
        return _value_start(stack, ch)
    if mode == _VALUE:
        return _value_start(stack, ch)
    if mode == _AFTER:
        top = stack[-1]
        if ch == ",":
            return (stack, _OBJ_KEY, None) if top == "{" else (stack, _VALUE, None)
        if (ch == "}" and top == "{") or (ch == "]" and top == "["):
            return _after_value(stack[:-1])
        return None
    return None  # _DONE: nothing may follow but nothing is generated after it either


def _number_step(sub: int, ch: str):
    digit = ch in _DIGITS
    if sub == _N_MINUS:
        return _N_ZERO if ch == "0" else (_N_INT if digit else None)
    if sub in (_N_ZERO, _N_INT):
        if digit:
            return None if sub == _N_ZERO else _N_INT
        if ch == ".":
            return _N_DOT
        return _N_EXP if ch in "eE" else None
    if sub in (_N_DOT, _N_FRAC):
        if digit:
            return _N_FRAC
        return _N_EXP if sub == _N_FRAC and ch in "eE" else None
    if sub == _N_EXP:
        return _N_EXP_SIGN if ch in "+-" else (_N_EXP_DIGITS if digit else None)
    if sub in (_N_EXP_SIGN, _N_EXP_DIGITS):
        return _N_EXP_DIGITS if digit else None
    return None


def is_json_object_prefix(text: str) -> bool:
    return JsonPrefix().feed(text, max_whitespace=len(text) + 1) is not None
