"""Reading training files and normalizing every supported format to canonical records.

Owns: format detection, normalization to
`Example` / `PreferenceExample` / `TextExample` (records.py), and every per-record check, each
failure a `DataError` naming the line and the field path (`messages[2].content`). Does not own:
the report that collects them (validation.py), tokenization (data/formatting.py, tokens.py).

Formats (detected per record by its keys; a file holds one format; `FORMATS` lists them):
  sft
    chat               {"messages": [...], "tools"?, "parallel_tool_calls"?, "functions"?}     (OpenAI)
    prompt_completion  {"prompt": str, "completion": str}                               (OpenAI legacy, OCI)
    alpaca             {"instruction", "input"?, "output", "system"?, "history"?}       (Stanford Alpaca)
    sharegpt           {"conversations": [{"from", "value"}], "tools"?, "system"?}      (ShareGPT, LLaMA-Factory)
  text
    text               {"text": str}                       trained as it is, loss on every token (Together)
  preference
    openai_dpo         {"input": {"messages", "tools"?}, "preferred_output": [msg], "non_preferred_output": [msg]}
                       (also the older "preferred_completion" / "non_preferred_completion")
    chosen_rejected    {"prompt": str | [messages], "chosen": str | msg | [msg], "rejected": ...}   (TRL)
    sharegpt_dpo       {"conversations": [turns], "chosen": {"from": "gpt", "value"}, "rejected": ...}
    opea_dpo           {"system"?, "question": str, "chosen": str, "rejected": str}     (OPEA)

Containers (JSONL, one JSON array, Parquet) are read by containers.py.

Decisions, and why:
- Roles. "developer" (OpenAI's newer name) becomes "system". The deprecated "function" role
  becomes "tool" and an assistant "function_call" becomes a one-item "tool_calls"; top-level
  "functions" become "tools". OpenAI still accepts them, and they mean the same thing.
- Tool calls keep OpenAI's shape ({"id", "type": "function", "function": {"name", "arguments": str}});
  arguments given as an object are serialized, arguments that are not JSON are an error. Missing
  ids are generated ("call_0", ...). Each tool message answers a call of the nearest preceding
  assistant message: its "tool_call_id" is filled in when absent, and "name" is set to the called
  function. A tool message with nothing to answer, or a user/assistant turn while calls are still
  unanswered, is an error (the chat API rejects both); a conversation may end on a call.
- Consecutive turns. Two user turns or two assistant turns in a row are an ERROR
  (`consecutive_roles`): chat templates reject them (Llama 2/Mistral raise) or glue them into one
  turn, Together's checker refuses them, and in practice they are a data bug (a lost turn, a
  message split in two). Consecutive tool messages are fine (parallel tool calls). A system
  message after a user/assistant turn is a warning (`system_not_first`): legal, but many templates
  move or drop it.
- Unknown keys (top level or in a message) are warnings and are dropped; "id" is ignored
  silently (ShareGPT dumps carry one). A message's "name" is kept only on tool messages.
- Content may be a string or a list of text parts ({"type": "text", "text"}), joined; other parts
  (images) are an error. Null content is allowed only on an assistant message that calls tools.
- `weight` (0 or 1, not a boolean) is allowed only on assistant messages.
- prompt_completion becomes a user turn and an assistant turn, so it trains through the chat
  template: users of chat models who bring this format want the model to answer as an assistant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tuneserve.data.containers import clip, open_records
from tuneserve.data.records import DataError, DataWarning, Example, PreferenceExample, Record, TextExample, Warn

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system", "function": "tool"}
SFT_FORMATS = ("chat", "prompt_completion", "alpaca", "sharegpt")
PREFERENCE_FORMATS = ("openai_dpo", "chosen_rejected", "sharegpt_dpo", "opea_dpo")
FORMATS = (*SFT_FORMATS, "text", *PREFERENCE_FORMATS)

# Top-level keys each format knows; others are warned about and dropped. "id" is ignored everywhere.
FORMAT_KEYS = {
    "chat": {"messages", "tools", "parallel_tool_calls", "functions"},
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "input", "output", "system", "history"},
    "sharegpt": {"conversations", "tools", "system"},
    "text": {"text"},
    "openai_dpo": {"input", "preferred_output", "non_preferred_output", "preferred_completion", "non_preferred_completion"},
    "chosen_rejected": {"prompt", "chosen", "rejected"},
    "sharegpt_dpo": {"conversations", "chosen", "rejected", "tools", "system"},
    "opea_dpo": {"system", "question", "chosen", "rejected"},
}
IGNORED_KEYS = {"id"}
MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id", "function_call"}
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",  # an assistant turn that calls tools: value is {"name", "arguments"} JSON
    "observation": "tool",
    "tool": "tool",  # the answer to the previous call
}


def kind_of(fmt: str | None) -> str | None:
    """sft | preference | text for a format name."""
    if fmt is None:
        return None
    return "preference" if fmt in PREFERENCE_FORMATS else "text" if fmt == "text" else "sft"


# --- detection ----------------------------------------------------------------------------------


def detect_format(record: Any) -> str | None:
    """The format a record is in, or None if its keys match none."""
    if not isinstance(record, dict):
        return None
    has = record.__contains__
    preference = has("chosen") or has("rejected")
    if has("messages"):
        return "chat"
    if has("input") and any(
        has(k) for k in ("preferred_output", "non_preferred_output", "preferred_completion", "non_preferred_completion")
    ):
        return "openai_dpo"
    if has("conversations"):
        return "sharegpt_dpo" if preference else "sharegpt"
    if has("prompt") and preference:
        return "chosen_rejected"
    if has("question") and preference:
        return "opea_dpo"
    if has("prompt") and has("completion"):
        return "prompt_completion"
    if has("instruction") and has("output"):
        return "alpaca"
    if has("text"):
        return "text"
    return None


def unknown_format_message(record: Any) -> str:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {_jtype(record)}"
    keys = ", ".join(clip(str(k), 40) for k in sorted(record)[:8]) or "none"
    return (
        f"unknown record format (keys: {keys}); expected 'messages', 'prompt'+'completion', "
        "'instruction'+'output', 'conversations', 'text', or a preference pair ('chosen'+'rejected', "
        "'preferred_output'+'non_preferred_output')"
    )


# --- normalization ------------------------------------------------------------------------------


def normalize(record: dict[str, Any], fmt: str, line: int, *, warn: Warn | None = None) -> Record:
    """Turn one record of format `fmt` into a canonical record, or raise DataError naming `line`.

    `warn` receives the problems that do not stop training (unknown keys, a late system message...).
    """
    ctx = _Ctx(line, warn or (lambda w: None))
    known = FORMAT_KEYS.get(fmt)
    if known is None:
        raise DataError(f"unknown format {fmt!r}", line=line, code="unknown_format")
    for key in record:
        if key not in known and key not in IGNORED_KEYS:
            ctx.warn("unknown_key", f"unknown key {clip(str(key), 40)!r} for the {fmt} format; it is ignored")
    if fmt == "text":
        text = ctx.string(record, "text", "text")
        if not text.strip():
            raise ctx.error("empty_text", "'text' is empty")
        return TextExample(text=text, line=line)
    if fmt in PREFERENCE_FORMATS:
        return _preference(record, fmt, ctx)
    tools: tuple[dict[str, Any], ...] = ()
    if fmt == "chat":
        messages, paths = _messages(record.get("messages"), "messages", ctx)
        tools = _tools(record.get("tools"), "tools", ctx) + _tools(record.get("functions"), "functions", ctx)
        if record.get("parallel_tool_calls") is not None and not isinstance(record["parallel_tool_calls"], bool):
            raise ctx.error(
                "invalid_value", f"parallel_tool_calls must be true or false, got {_jtype(record['parallel_tool_calls'])}"
            )
    elif fmt == "sharegpt":
        messages, paths = _sharegpt(record, ctx)
        tools = _tools(record.get("tools"), "tools", ctx)
    elif fmt == "prompt_completion":
        messages = [
            {"role": "user", "content": ctx.string(record, "prompt", "prompt")},
            {"role": "assistant", "content": ctx.string(record, "completion", "completion")},
        ]
        paths = ["prompt", "completion"]
    else:
        messages, paths = _alpaca(record, ctx)
    _check_sequence(messages, paths, ctx)
    example = Example(messages=tuple(messages), line=line, tools=tools)
    trained = example.trained_messages()
    if not trained:
        raise ctx.error("missing_assistant_message", "no assistant message to train on")
    if not any(m["content"].strip() or m.get("tool_calls") for m in trained):
        raise ctx.error("empty_assistant_message", "every trained assistant message is empty")
    return example


@dataclass
class _Ctx:
    line: int
    _warn: Warn

    def error(self, code: str, message: str) -> DataError:
        return DataError(message, line=self.line, code=code)

    def warn(self, code: str, message: str) -> None:
        self._warn(DataWarning(self.line, code, message))

    def string(self, obj: dict[str, Any], key: str, path: str, *, required: bool = True) -> str:
        value = obj.get(key)
        if value is None and not required:
            return ""
        if value is None:
            raise self.error(
                "missing_content" if key not in obj else "invalid_content",
                f"{path} is {'missing' if key not in obj else 'null'}; it must be a string",
            )
        if not isinstance(value, str):
            raise self.error("invalid_content", f"{path} must be a string, got {_jtype(value)}")
        return value


def _messages(value: Any, path: str, ctx: _Ctx) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(value, list):
        raise ctx.error("invalid_messages", f"{path} must be a list of messages, got {_jtype(value)}")
    if not value:
        raise ctx.error("invalid_messages", f"{path} is empty")
    paths = [f"{path}[{i}]" for i in range(len(value))]
    return [_message(m, p, ctx) for m, p in zip(value, paths)], paths


def _message(message: Any, path: str, ctx: _Ctx, *, default_role: str | None = None) -> dict[str, Any]:
    """One OpenAI chat message, checked and reduced to the keys training uses."""
    if not isinstance(message, dict):
        raise ctx.error("invalid_messages", f"{path} must be an object, got {_jtype(message)}")
    role = message.get("role", default_role)
    if role is None:
        raise ctx.error("missing_role", f"{path} has no 'role'")
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        raise ctx.error(
            "unknown_role", f"{path}.role: unknown role {_short(role)} (expected one of system, user, assistant, tool)"
        )
    for key in message:
        if key not in MESSAGE_KEYS:
            ctx.warn("unknown_message_key", f"{path}.{clip(str(key), 40)} is not a message key; it is ignored")
    calls = _tool_calls(message, path, ctx)
    if calls and role != "assistant":
        raise ctx.error("invalid_tool_calls", f"{path} is a {role} message; only assistant messages call tools")
    out: dict[str, Any] = {"role": role, "content": _content(message, path, ctx, optional=bool(calls))}
    if calls:
        out["tool_calls"] = calls
    weight = message.get("weight")
    if weight is not None:
        if role != "assistant":
            raise ctx.error("invalid_weight", f"{path}.weight is allowed on assistant messages only (this one is {role})")
        if isinstance(weight, bool) or weight not in (0, 1):
            raise ctx.error("invalid_weight", f"{path}.weight must be 0 or 1, got {_short(weight)}")
        out["weight"] = int(weight)
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if message.get(key) is not None:
                out[key] = ctx.string(message, key, f"{path}.{key}")
    return out


def _content(message: dict[str, Any], path: str, ctx: _Ctx, *, optional: bool) -> str:
    content = message.get("content")
    if content is None:
        if optional:
            return ""
        if "content" not in message:
            raise ctx.error("missing_content", f"{path} has no 'content'")
        raise ctx.error(
            "missing_content", f"{path}.content is null; only an assistant message that calls tools may have no content"
        )
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: text only
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else _jtype(part)
                raise ctx.error("invalid_content", f"{path}.content[{j}] is a {_short(kind)} part; only text parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise ctx.error("invalid_content", f"{path}.content must be a string, got {_jtype(content)}")


def _tool_calls(message: dict[str, Any], path: str, ctx: _Ctx) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    value = message.get("tool_calls")
    if value is not None:
        if not isinstance(value, list):
            raise ctx.error("invalid_tool_calls", f"{path}.tool_calls must be a list, got {_jtype(value)}")
        calls += [_tool_call(call, f"{path}.tool_calls[{j}]", ctx) for j, call in enumerate(value)]
    if message.get("function_call") is not None:  # OpenAI's deprecated single function call
        calls.append(_tool_call(message["function_call"], f"{path}.function_call", ctx))
    return calls


def _tool_call(call: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    """{"id", "type": "function", "function": {"name", "arguments": JSON str}}; also takes a bare {"name", "arguments"}."""
    if not isinstance(call, dict):
        raise ctx.error("invalid_tool_calls", f"{path} must be an object, got {_jtype(call)}")
    if call.get("type", "function") != "function":
        raise ctx.error("invalid_tool_calls", f"{path}.type must be 'function', got {_short(call.get('type'))}")
    function, fpath = (call["function"], f"{path}.function") if "function" in call else (call, path)
    if not isinstance(function, dict):
        raise ctx.error("invalid_tool_calls", f"{fpath} must be an object, got {_jtype(function)}")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ctx.error("invalid_tool_calls", f"{fpath}.name must be a non-empty string")
    arguments = function.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif isinstance(arguments, (dict, list)):
        arguments = json.dumps(arguments, ensure_ascii=False, default=str)
    elif isinstance(arguments, str):
        try:
            json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            raise ctx.error("invalid_tool_calls", f"{fpath}.arguments is not valid JSON") from None
    else:
        raise ctx.error("invalid_tool_calls", f"{fpath}.arguments must be a JSON string, got {_jtype(arguments)}")
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call.get("id") is not None:
        out = {"id": ctx.string(call, "id", f"{path}.id"), **out}
    return out


def _tools(value: Any, path: str, ctx: _Ctx) -> tuple[dict[str, Any], ...]:
    """OpenAI function tools; a JSON string (ShareGPT) is parsed, bare {"name", ...} definitions are wrapped."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise ctx.error("invalid_tools", f"{path} is a string but not valid JSON") from None
    if not isinstance(value, list):
        raise ctx.error("invalid_tools", f"{path} must be a list of tools, got {_jtype(value)}")
    out = []
    for j, tool in enumerate(value):
        tpath = f"{path}[{j}]"
        if not isinstance(tool, dict):
            raise ctx.error("invalid_tools", f"{tpath} must be an object, got {_jtype(tool)}")
        if tool.get("type", "function") != "function":
            raise ctx.error("invalid_tools", f"{tpath}.type must be 'function', got {_short(tool.get('type'))}")
        function, fpath = (tool["function"], f"{tpath}.function") if "function" in tool else (tool, tpath)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise ctx.error("invalid_tools", f"{fpath}.name must be a non-empty string")
        if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            raise ctx.error(
                "invalid_tools", f"{fpath}.parameters must be an object (a JSON schema), got {_jtype(function['parameters'])}"
            )
        out.append({"type": "function", "function": {k: v for k, v in function.items() if k != "type" and v is not None}})
    return tuple(out)


def _check_sequence(messages: list[dict[str, Any]], paths: list[str], ctx: _Ctx) -> None:
    """Turn order: no user/user or assistant/assistant, tool answers follow calls; fills in call ids.

    Idempotent: running it again on its own output changes nothing.
    """
    pending: list[dict[str, Any]] = []  # calls of the latest assistant message not yet answered
    answering = False  # the previous message was an assistant tool call or a tool answer
    counter = 0
    seen_turn = False
    prev: str | None = None
    for i, message in enumerate(messages):
        role = message["role"]
        if role != "tool" and pending:
            raise ctx.error(
                "unanswered_tool_call",
                f"{paths[i]} is a {role} message, but the tool calls of the last assistant message are not all answered by tool messages yet",
            )
        if role == "system":
            if seen_turn:
                ctx.warn(
                    "system_not_first",
                    f"{paths[i]} is a system message after the conversation started; many chat templates move or drop it",
                )
        elif role == "tool":
            if not answering or not pending:
                raise ctx.error(
                    "orphan_tool_message",
                    f"{paths[i]} is a tool message, but it answers no pending tool call of a preceding assistant message",
                )
            wanted = message.get("tool_call_id")
            match = next((c for c in pending if c["id"] == wanted), None) if wanted is not None else pending[0]
            if match is None:
                raise ctx.error(
                    "orphan_tool_message",
                    f"{paths[i]}.tool_call_id {_short(wanted)} matches no pending call of the preceding assistant message",
                )
            pending.remove(match)
            message["tool_call_id"] = match["id"]
            message.setdefault("name", match["function"]["name"])
        else:
            if role == prev:
                other = "assistant" if role == "user" else "user"
                raise ctx.error(
                    "consecutive_roles",
                    f"{paths[i]} is a second {role} turn in a row (after {paths[i - 1]}); merge them or add the missing {other} turn",
                )
            seen_turn = True
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                if "id" not in call:
                    call = {"id": f"call_{counter}", **call}
                counter += 1
                calls.append(call)
            message["tool_calls"] = calls
            pending = list(calls)
        answering = (role == "assistant" and bool(message.get("tool_calls"))) or (role == "tool" and answering)
        prev = role


def _alpaca(record: dict[str, Any], ctx: _Ctx) -> tuple[list[dict[str, Any]], list[str]]:
    instruction = ctx.string(record, "instruction", "instruction")
    output = ctx.string(record, "output", "output")
    extra = {key: ctx.string(record, key, key, required=False) for key in ("input", "system")}
    messages: list[dict[str, Any]] = []
    paths: list[str] = []
    if extra["system"]:
        messages.append({"role": "system", "content": extra["system"]})
        paths.append("system")
    history = record.get("history")
    if history is not None and not isinstance(history, list):
        raise ctx.error("invalid_content", f"history must be a list of [instruction, response] pairs, got {_jtype(history)}")
    for j, turn in enumerate(history or []):
        if not (isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise ctx.error("invalid_content", f"history[{j}] must be an [instruction, response] pair of strings")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
        paths += [f"history[{j}][0]", f"history[{j}][1]"]
    prompt = instruction + (f"\n\n{extra['input']}" if extra["input"] else "")
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    paths += ["instruction", "output"]
    return messages, paths


def _sharegpt(record: dict[str, Any], ctx: _Ctx, key: str = "conversations") -> tuple[list[dict[str, Any]], list[str]]:
    turns = record.get(key)
    if not isinstance(turns, list):
        raise ctx.error("invalid_messages", f"{key} must be a list of turns, got {_jtype(turns)}")
    messages: list[dict[str, Any]] = []
    paths: list[str] = []
    if record.get("system") is not None:
        messages.append({"role": "system", "content": ctx.string(record, "system", "system")})
        paths.append("system")
    for i, turn in enumerate(turns):
        messages.append(_sharegpt_turn(turn, f"{key}[{i}]", ctx))
        paths.append(f"{key}[{i}]")
    if not turns:
        raise ctx.error("invalid_messages", f"{key} is empty")
    return messages, paths


def _sharegpt_turn(turn: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
    if not isinstance(turn, dict):
        raise ctx.error("invalid_messages", f"{path} must be an object with 'from' and 'value', got {_jtype(turn)}")
    source = turn.get("from")
    if not isinstance(source, str) or source not in SHAREGPT_ROLES:
        expected = "human, gpt, system, function_call, observation"
        raise ctx.error("unknown_role", f"{path}.from: unknown role {_short(source)} (expected one of {expected})")
    for key in turn:
        if key not in ("from", "value"):
            ctx.warn("unknown_message_key", f"{path}.{clip(str(key), 40)} is not a turn key; it is ignored")
    value = ctx.string(turn, "value", f"{path}.value")
    if source != "function_call":
        return {"role": SHAREGPT_ROLES[source], "content": value}
    try:
        parsed = json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        raise ctx.error(
            "invalid_tool_calls", f'{path}.value must be a JSON tool call {{"name", "arguments"}}; it is not valid JSON'
        ) from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls:
        raise ctx.error("invalid_tool_calls", f"{path}.value is an empty list of tool calls")
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            _tool_call(c, f"{path}.value" + (f"[{j}]" if isinstance(parsed, list) else ""), ctx) for j, c in enumerate(calls)
        ],
    }


def _preference(record: dict[str, Any], fmt: str, ctx: _Ctx) -> PreferenceExample:
    tools: tuple[dict[str, Any], ...] = ()
    if fmt == "openai_dpo":
        given = record.get("input")
        if not isinstance(given, dict):
            raise ctx.error("invalid_messages", f"input must be an object with 'messages', got {_jtype(given)}")
        for key in given:
            if key not in ("messages", "tools", "parallel_tool_calls", "functions"):
                ctx.warn("unknown_key", f"unknown key input.{clip(str(key), 40)}; it is ignored")
        prompt, paths = _messages(given.get("messages"), "input.messages", ctx)
        tools = _tools(given.get("tools"), "input.tools", ctx) + _tools(given.get("functions"), "input.functions", ctx)
        chosen = _answer(record, ("preferred_output", "preferred_completion"), ctx)
        rejected = _answer(record, ("non_preferred_output", "non_preferred_completion"), ctx)
    elif fmt == "chosen_rejected":
        value = record.get("prompt")
        if isinstance(value, str):
            prompt, paths = [{"role": "user", "content": value}], ["prompt"]
        elif isinstance(value, list):
            prompt, paths = _messages(value, "prompt", ctx)
        else:
            raise ctx.error("invalid_content", f"prompt must be a string or a list of messages, got {_jtype(value)}")
        chosen, rejected = _answer(record, ("chosen",), ctx), _answer(record, ("rejected",), ctx)
    elif fmt == "sharegpt_dpo":
        prompt, paths = _sharegpt(record, ctx)
        tools = _tools(record.get("tools"), "tools", ctx)
        chosen, rejected = _answer(record, ("chosen",), ctx, sharegpt=True), _answer(record, ("rejected",), ctx, sharegpt=True)
    else:  # opea_dpo
        prompt, paths = [], []
        if record.get("system") is not None:
            prompt, paths = [{"role": "system", "content": ctx.string(record, "system", "system")}], ["system"]
        prompt.append({"role": "user", "content": ctx.string(record, "question", "question")})
        paths.append("question")
        chosen, rejected = _answer(record, ("chosen",), ctx), _answer(record, ("rejected",), ctx)
    names = ("chosen", "rejected") if fmt != "openai_dpo" else ("preferred_output", "non_preferred_output")
    for answer, name in ((chosen, names[0]), (rejected, names[1])):
        _check_sequence([*prompt, answer], [*paths, name], ctx)
    if not any(m["role"] in ("user", "tool") for m in prompt):
        raise ctx.error("invalid_messages", "the prompt has no user message")
    if not (chosen["content"].strip() or chosen.get("tool_calls")):
        raise ctx.error("empty_assistant_message", f"the {names[0]} answer is empty")
    if chosen == rejected:
        ctx.warn("identical_pair", f"{names[0]} and {names[1]} are the same answer: the pair teaches nothing")
    return PreferenceExample(prompt=tuple(prompt), chosen=chosen, rejected=rejected, line=ctx.line, tools=tools)


def _answer(record: dict[str, Any], keys: tuple[str, ...], ctx: _Ctx, *, sharegpt: bool = False) -> dict[str, Any]:
    """One assistant message from a string, a message, or a list holding exactly one message."""
    key = next((k for k in keys if k in record), keys[0])
    if key not in record:
        raise ctx.error("missing_content", f"'{key}' is missing: a preference pair needs both answers")
    value, path = record[key], key
    if isinstance(value, list):
        if len(value) != 1:
            raise ctx.error("invalid_preference", f"{key} must hold exactly one assistant message, got {len(value)}")
        value, path = value[0], f"{key}[0]"
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if sharegpt and isinstance(value, dict) and "from" in value:
        message = _sharegpt_turn(value, path, ctx)
    else:
        message = _message(value, path, ctx, default_role="assistant")
    if message["role"] != "assistant":
        raise ctx.error("invalid_preference", f"{path} must be an assistant answer, not a {message['role']} message")
    message.pop("weight", None)
    return message


# --- files --------------------------------------------------------------------------------------


@dataclass
class ScanState:
    """What a scan learned about the file: its container and format (and where the format was set)."""

    container: str | None = None
    format: str | None = None
    format_line: int | None = None

    @property
    def kind(self) -> str | None:
        return kind_of(self.format)


def scan_records(
    path: str | Path,
    *,
    state: ScanState | None = None,
    on_error: Callable[[DataError], None] | None = None,
    warn: Warn | None = None,
    name: str | None = None,
) -> Iterator[Record]:
    """Yield the file's valid records, one pass, streaming (JSON arrays are loaded whole).

    Without `on_error` the first bad record raises DataError. With it, a bad record is reported
    and skipped; a file-level problem (empty, binary, broken JSON, bad bytes) is reported and
    ends the scan: nothing after it can be trusted.
    """
    state = state if state is not None else ScanState()
    try:
        state.container, records = open_records(path, warn=warn, name=name)
        for line, value in records:
            try:
                yield _one(value, line, state, warn)
            except DataError as exc:
                if on_error is None:
                    raise
                on_error(exc)
            except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
                # a shape no rule foresaw: report it on its line rather than fail the upload with a 5xx
                error = DataError(
                    f"this record could not be read ({type(exc).__name__}: {clip(str(exc), 120)})",
                    line=line,
                    code="invalid_record",
                )
                if on_error is None:
                    raise error from exc
                on_error(error)
    except DataError as exc:
        if on_error is None:
            raise
        on_error(exc)


def _one(value: Any, line: int, state: ScanState, warn: Warn | None) -> Record:
    found = detect_format(value)
    if found is None:
        raise DataError(unknown_format_message(value), line=line, code="unknown_format")
    if state.format is None:
        state.format, state.format_line = found, line
    elif found != state.format:
        raise DataError(
            f"this record is {found} but the file started as {state.format} (line {state.format_line}); a file holds one format",
            line=line,
            code="mixed_formats",
        )
    return normalize(value, found, line, warn=warn)


def iter_examples(path: str | Path) -> Iterator[Record]:
    """Yield the file's records (Example, PreferenceExample or TextExample); the first bad one raises DataError."""
    return scan_records(Path(path))


def load_examples(path: str | Path) -> list[Record]:
    """All records of a file. Raises DataError on the first bad record, or if there are none."""
    examples = list(iter_examples(Path(path)))
    if not examples:
        raise DataError("the file holds no training examples", code="no_examples")
    return examples


# --- helpers ------------------------------------------------------------------------------------


def _jtype(value: Any) -> str:
    """A value's JSON type name, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: Any) -> str:
    """repr, clipped: error messages never echo a huge value."""
    return clip(repr(value), 60)
