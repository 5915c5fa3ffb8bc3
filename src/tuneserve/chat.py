"""`tuneserve chat MODEL`: an interactive chat in the terminal, with no server (the llama-recipes
seed's local-inference step).

Owns: the read-answer loop: a line in, the answer streamed token by token, the conversation kept;
`/reset` clears it, `/exit` or end of input quits, Ctrl-C during an answer stops that answer and
returns to the prompt.
MODEL is a base model reference, an adapter directory on disk, a job id or an ft: name (looked up
in the store of --data-dir, like `tuneserve export`). Generation goes through the same inference
Engine the server uses, so the chat template, EOS and sampling are the served ones.
Does not own: model lookup (export.lookup_local_model), generation (inference/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

HELP = "/reset clears the conversation, /exit (or Ctrl-D) quits, Ctrl-C stops an answer"


def chat_loop(
    model: str,
    *,
    data_dir: Path | None = None,
    system: str | None = None,
    temperature: float = 0.7,
    max_tokens: int = 512,
    input_stream: TextIO | None = None,
    console=None,
    project: str = "default",
    database_url: str | None = None,
    engine=None,
) -> int:
    """Run the chat until /exit or end of input; 0 then, 2 when MODEL cannot be found or loaded."""
    from rich.console import Console

    from tuneserve.export import ExportError, lookup_local_model

    console = console or Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    input_stream = input_stream if input_stream is not None else sys.stdin
    try:
        base, adapter = lookup_local_model(model, data_dir=data_dir, database_url=database_url, project=project)
    except ExportError as exc:
        err.print(f"error: {exc}", markup=False)
        return 2

    from tuneserve.inference.engine import Engine, Generation, SamplingParams

    own_engine = engine is None
    engine = engine or Engine()
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    interactive = input_stream is sys.stdin and sys.stdin.isatty()
    console.print(f"[bold]{model}[/bold]" + (f" (adapter {adapter} on {base})" if adapter else ""), highlight=False)
    console.print(f"[dim]{HELP}[/dim]")
    try:
        while True:
            try:
                line = _read(console, input_stream, interactive)
            except KeyboardInterrupt:  # Ctrl-C at the prompt quits, like end of input
                console.print()
                return 0
            if line is None or line.strip() in ("/exit", "/quit"):
                return 0
            text = line.strip()
            if not text:
                continue
            if text == "/reset":
                history = list(start)
                console.print("[dim](conversation cleared)[/dim]")
                continue
            if text.startswith("/") and text.split()[0] not in ("/reset", "/exit", "/quit"):
                console.print(f"[dim]unknown command {text.split()[0]}; {HELP}[/dim]", highlight=False)
                continue
            history.append({"role": "user", "content": text})
            try:
                answer, generation = _answer(engine, base, adapter, history, params, console, Generation)
            except KeyboardInterrupt:
                continue  # _answer closed the stream and kept what was shown
            except ValueError as exc:  # the conversation no longer fits the context, or a bad request
                history.pop()
                console.print(f"[red]error:[/red] {exc}", highlight=False)
                continue
            except Exception as exc:  # loading the model failed: nothing else will work either
                err.print(f"error: {type(exc).__name__}: {exc}", markup=False)
                return 2
            history.append({"role": "assistant", "content": answer})
            if generation is not None and generation.finish_reason == "length":
                console.print(f"[dim](stopped at --max-tokens {max_tokens})[/dim]")
    finally:
        if own_engine:
            engine.close()


def _read(console, input_stream: TextIO, interactive: bool) -> str | None:
    """One line of input, or None at end of input."""
    if interactive:
        try:
            return console.input("[bold green]>>> [/bold green]")
        except EOFError:
            console.print()
            return None
    console.print("[bold green]>>> [/bold green]", end="")
    console.file.flush()
    line = input_stream.readline()
    if not line:
        console.print()
        return None
    console.print(line.rstrip("\n"), markup=False, highlight=False)  # echo, so a transcript reads like a session
    return line


def _answer(engine, base, adapter, history, params, console, Generation):
    """Stream one answer to the console; on Ctrl-C close the stream, keep the shown part, and re-raise."""
    stream = engine.stream_chat(base, adapter, history, params)
    pieces: list[str] = []
    generation = None
    try:
        for item in stream:
            if isinstance(item, Generation):
                generation = item
                break
            text = item if isinstance(item, str) else item.text  # the old engine streamed str, the new one Delta
            if text:
                pieces.append(text)
                console.out(text, end="", highlight=False)
                console.file.flush()
        console.out("")
    except KeyboardInterrupt:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        console.out("")
        console.print("[dim](stopped)[/dim]")
        if pieces:
            history.append({"role": "assistant", "content": "".join(pieces)})
        else:
            history.pop()
        raise
    return "".join(pieces) if generation is None else generation.text, generation


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="a base model, an adapter directory, a job id (ftjob-...) or a fine-tuned model name (ft:...)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the server's data directory, to look job ids and ft: names up in"
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--project", default="default")
    parser.add_argument("--system", default=None, help="a system message to start every conversation with")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 answers greedily")
    parser.add_argument("--max-tokens", type=int, default=512, help="the longest answer, in tokens")


def cmd_chat(args: argparse.Namespace) -> int:
    return chat_loop(
        args.model,
        data_dir=args.data_dir,
        system=args.system,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        project=args.project,
        database_url=args.database_url,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuneserve chat", description="Chat with a base or fine-tuned model in the terminal.")
    add_chat_arguments(parser)
    return cmd_chat(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
