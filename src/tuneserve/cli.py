"""The `tuneserve` command: serve, train, keys, data, eval, demo.

One function per subcommand; each is thin over the same services the API uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CommandError(Exception):
    """A bad flag or setting: `main` prints it as one `error: ...` line and exits 2, with no traceback."""


def settings_from(args: argparse.Namespace):
    """Settings from the flags given on the command line, over TUNESERVE_* variables, over defaults.

    Every flag that maps to a setting defaults to None in argparse, so that a flag left out lets the
    environment (then the default) decide. A bad value raises CommandError, naming flag and variable.
    """
    from pydantic import ValidationError

    from tuneserve.settings import Settings

    flags = {name: value for name in Settings.model_fields if (value := getattr(args, name, None)) is not None}
    if getattr(args, "api_only", False):
        flags["run_scheduler"] = False
    try:
        return Settings(**flags)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = f"--{field.replace('_', '-')} / TUNESERVE_{field.upper()}: " if field in Settings.model_fields else ""
        raise CommandError(where + error["msg"].removeprefix("Value error, ")) from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneserve.app import build_app
    from tuneserve.store.db import make_engine, make_sessionmaker, migrate
    from tuneserve.store.keys import KeyService

    settings = settings_from(args)
    if settings.runner == "ray" and settings.run_scheduler:
        from tuneserve.jobs.worker import runner_from

        try:  # say now, not in a traceback at start-up, when the cluster cannot be reached
            runner_from(settings)
        except (ConnectionError, ImportError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if settings.inference_backend == "llamacpp":
        from tuneserve.inference.llamacpp import check_llama_cpp

        try:  # llama-cpp-python is not a dependency (it compiles llama.cpp): say so now, with the fix
            check_llama_cpp(settings.llama_cpp_python or sys.executable)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.run_scheduler:  # --api-only shares the data dir with a server by design
        _lock_data_dir(settings.data_dir)  # its descriptor stays open: held until this process ends, however it ends
    engine = make_engine(settings.db_url)
    migrate(engine)
    has_keys = KeyService(make_sessionmaker(engine)).any()
    engine.dispose()
    if not has_keys and not settings.host_is_loopback and not settings.insecure:
        print(
            f"refusing to serve on {settings.host} with no API key: anyone on the network could use it.\n"
            f"Create one with `tuneserve keys create --data-dir {settings.data_dir} --project NAME`, "
            "or pass --insecure to serve without keys anyway.",
            file=sys.stderr,
        )
        return 2
    print(
        f"tuneserve {'(API keys required)' if has_keys else '(no API keys: loopback only)'} on "
        f"http://{settings.host}:{settings.port}  data: {settings.data_dir.resolve()}",
        file=sys.stderr,
    )
    uvicorn.run(build_app(settings), host=settings.host, port=settings.port, log_level=args.log_level)
    return 0


def _lock_data_dir(data_dir: Path) -> int:
    from tuneserve.store.lock import DataDirInUse, lock_data_dir

    try:
        return lock_data_dir(data_dir)
    except DataDirInUse as exc:
        raise CommandError(f"{exc}; stop it first, or serve another --data-dir") from None


def _add_store_arguments(parser: argparse.ArgumentParser, *, shared: bool = False) -> None:
    """--data-dir and --database-url, as `serve`, `worker` and `keys create` take them."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=("the same data directory as the API's (shared storage across hosts); " if shared else "")
        + "default ./tuneserve-data ($TUNESERVE_DATA_DIR)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL, e.g. postgresql://user@db/tuneserve (default: SQLite in the data dir; $TUNESERVE_DATABASE_URL)",
    )


def _add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runner",
        choices=("local", "ray"),
        default=None,
        help="local (default): training processes on this machine; ray: Ray jobs on --ray-address",
    )
    parser.add_argument(
        "--ray-address", default=None, help="the Ray cluster's Jobs API, i.e. its dashboard: http://RAY_HEAD:8265"
    )
    parser.add_argument(
        "--ray-python",
        default=None,
        help="the interpreter Ray jobs run with on every node, with tuneserve installed "
        "(default `python` from the PATH `ray start` had; $TUNESERVE_RAY_PYTHON)",
    )
    parser.add_argument(
        "--procs-per-job",
        type=int,
        default=None,
        help="local runner: processes per job (default: one per visible GPU, 1 without GPUs)",
    )
    parser.add_argument(
        "--heartbeat-timeout-s", type=float, default=None, help="take back a job whose worker was silent this long (default 30)"
    )


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from tuneserve.jobs.worker import run_worker

    settings = settings_from(args)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_worker(settings)


def cmd_train(args: argparse.Namespace) -> int:
    from tuneserve.data import DataError, count_examples
    from tuneserve.training.run import train
    from tuneserve.training.spec import load_spec_file

    try:
        spec = load_spec_file(args.spec, count_examples)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output_dir = (args.output_dir or Path("tuneserve-runs") / args.spec.stem).expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    spec.write(output_dir)
    result = train(spec, output_dir, progress=True)
    print(json.dumps(result))
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from tuneserve.store.db import make_engine, make_sessionmaker, migrate
    from tuneserve.store.keys import KeyService

    settings = settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    migrate(engine)
    print(KeyService(make_sessionmaker(engine)).create(args.project))
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from tuneserve.data import validate_file
    from tuneserve.data.report import render_report

    report = validate_file(args.file, model=args.model, max_seq_length=args.max_seq_length, n_epochs=args.n_epochs)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        render_report(args.file, report)
    return 0 if report.ok else 1


def cmd_data_convert(args: argparse.Namespace) -> int:
    from tuneserve.data import DataError
    from tuneserve.data.convert import convert_file

    try:
        summary = convert_file(
            args.input,
            args.output,
            to=args.to,
            system=args.system,
            split=args.split,
            seed=args.seed,
            skip_unconvertible=args.skip_unconvertible,
        )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tuneserve.data import DataError
    from tuneserve.data.preview import preview_examples, render_preview
    from tuneserve.models import ModelNotFound

    try:
        render_preview(preview_examples(args.file, args.model, args.n, max_seq_length=args.max_seq_length), Console())
    except (DataError, ModelNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tuneserve.export import cmd_export as run

    return run(args)


def cmd_chat(args: argparse.Namespace) -> int:
    from tuneserve.chat import cmd_chat as run

    return run(args)


def cmd_data_synthesize(args: argparse.Namespace) -> int:
    from tuneserve.synthesis.cli import cmd_synthesize

    return cmd_synthesize(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from tuneserve.evaluation.cli import cmd_eval as run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from tuneserve.demo import run_demo

    import os

    port = args.port if args.port is not None else os.environ.get("TUNESERVE_PORT", "8015")
    if not str(port).isdigit() or not 1 <= int(port) <= 65535:
        print(f"error: --port / TUNESERVE_PORT: {port!r} is not a port number", file=sys.stderr)
        return 2
    return run_demo(args.data_dir, port=int(port), name=args.name, author=args.author)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneserve", description="Self-hosted fine-tuning with OpenAI's API.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (and its job scheduler)")
    # Flags that are settings default to None: left out, TUNESERVE_<NAME> (then the default) decides.
    serve.add_argument("--host", default=None, help="default 127.0.0.1 ($TUNESERVE_HOST)")
    serve.add_argument("--port", type=int, default=None, help="default 8015 ($TUNESERVE_PORT)")
    _add_store_arguments(serve)
    serve.add_argument("--max-concurrent-jobs", type=int, default=None, help="default 1 ($TUNESERVE_MAX_CONCURRENT_JOBS)")
    serve.add_argument(
        "--max-upload-bytes", type=int, default=None, help="default 536870912, 512 MiB ($TUNESERVE_MAX_UPLOAD_BYTES)"
    )
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="any other request body's limit (JSON), default 16777216, 16 MiB ($TUNESERVE_MAX_REQUEST_BYTES)",
    )
    serve.add_argument(
        "--cors-origins",
        default=None,
        help="comma-separated origins whose pages may call the API from a browser, default none: "
        "the console is same-origin ($TUNESERVE_CORS_ORIGINS)",
    )
    serve.add_argument(
        "--insecure", action="store_true", default=None, help="allow a non-loopback host with no API key ($TUNESERVE_INSECURE=1)"
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--inference-backend",
        choices=("local", "vllm", "llamacpp"),
        default=None,
        help="local (default): generate here; vllm: proxy chat/completions to --vllm-url and "
        "register each new fine-tuned adapter there; llamacpp: run llama-cpp-python's server and proxy to it, "
        "each model as GGUF and each fine-tuned adapter as a LoRA GGUF",
    )
    serve.add_argument(
        "--llama-cpp-python",
        default=None,
        help="llamacpp backend: the Python that has llama-cpp-python[server], default this one ($TUNESERVE_LLAMA_CPP_PYTHON)",
    )
    serve.add_argument(
        "--vllm-url",
        default=None,
        help="root URL of the upstream vLLM server, e.g. http://vllm:8000 (its API key, if any, from TUNESERVE_VLLM_API_KEY)",
    )
    serve.add_argument(
        "--vllm-max-lora-rank",
        type=int,
        default=None,
        help="the upstream's --max-lora-rank (default 16): jobs with a larger lora.r are refused",
    )
    serve.add_argument(
        "--engine-max-batch-size",
        type=int,
        default=None,
        help="requests decoded together, default 16 ($TUNESERVE_ENGINE_MAX_BATCH_SIZE)",
    )
    serve.add_argument(
        "--engine-max-adapters", type=int, default=None, help="adapters kept loaded, default 8 ($TUNESERVE_ENGINE_MAX_ADAPTERS)"
    )
    serve.add_argument(
        "--engine-adapter-budget-mb",
        type=int,
        default=None,
        help="memory the loaded adapters may take, default 512 MiB ($TUNESERVE_ENGINE_ADAPTER_BUDGET_MB)",
    )
    serve.add_argument(
        "--engine-default-max-tokens",
        type=int,
        default=None,
        help="an answer's length when a request gives no max_tokens, default 512 ($TUNESERVE_ENGINE_DEFAULT_MAX_TOKENS)",
    )
    serve.add_argument(
        "--api-only",
        action="store_true",
        help="serve the API but run no jobs: `tuneserve worker` processes on the same database run them",
    )
    _add_worker_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run jobs from a shared database (PostgreSQL), without the API")
    _add_store_arguments(worker, shared=True)
    worker.add_argument("--max-concurrent-jobs", type=int, default=None, help="default 1 ($TUNESERVE_MAX_CONCURRENT_JOBS)")
    worker.add_argument("--log-level", default="info")
    _add_worker_arguments(worker)
    worker.set_defaults(func=cmd_worker)

    train = sub.add_parser("train", help="one training run without a server")
    train.add_argument("spec", type=Path, help="YAML or JSON: model, training_file, hyperparameters, method, lora, seed")
    train.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where the model, checkpoints and logs go (default ./tuneserve-runs/SPEC_NAME)",
    )
    train.set_defaults(func=cmd_train)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="print a new key for a project")
    create.add_argument("--project", required=True)
    _add_store_arguments(create)
    create.set_defaults(func=cmd_keys_create)

    data = sub.add_parser("data", help="training data tools").add_subparsers(dest="data_command", required=True)
    validate = data.add_parser("validate", help="check a training file; exit 1 if it cannot be trained on")
    validate.add_argument("file", type=Path)
    validate.add_argument("--model", default=None, help="add token statistics with this model's tokenizer")
    validate.add_argument("--max-seq-length", type=int, default=1024)
    validate.add_argument("--n-epochs", type=int, default=None, help="for the training-token estimate (default: auto)")
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    validate.set_defaults(func=cmd_data_validate)

    convert = data.add_parser("convert", help="convert a training file to chat, prompt-completion or alpaca JSONL")
    convert.add_argument("input", type=Path)
    convert.add_argument("output", type=Path)
    convert.add_argument("--to", required=True, choices=["chat", "prompt-completion", "alpaca"])
    convert.add_argument("--system", default=None, help="add (or replace) a system message")
    convert.add_argument("--split", type=float, default=None, help="carve this share out as OUTPUT.valid.jsonl")
    convert.add_argument("--seed", type=int, default=0)
    convert.add_argument("--skip-unconvertible", action="store_true", help="skip records the target cannot hold")
    convert.set_defaults(func=cmd_data_convert)

    preview = data.add_parser("preview", help="show examples as the model sees them, trained tokens highlighted")
    preview.add_argument("file", type=Path)
    preview.add_argument("--model", required=True)
    preview.add_argument("-n", type=int, default=3)
    preview.add_argument("--max-seq-length", type=int, default=1024)
    preview.set_defaults(func=cmd_data_preview)

    from tuneserve.synthesis.cli import add_synthesize_arguments
    from tuneserve.evaluation.cli import add_eval_arguments

    synthesize = data.add_parser("synthesize", help="Q&A training data from documents (PDF, Markdown, text) with an LLM")
    add_synthesize_arguments(synthesize)  # DOCS --base-url U --model M --output F [--curate] [--rpm R] [--config Y] ...
    synthesize.set_defaults(func=cmd_data_synthesize)

    evaluate = sub.add_parser("eval", help="compare models on a Q&A dataset: ROUGE, exact match, LLM judge; JSON+HTML report")
    add_eval_arguments(evaluate)  # --base-url U --model M [--model M2] --dataset F --output DIR [--judge-model J] ...
    evaluate.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="fine-tune SmolLM2 on a new identity through the OpenAI client")
    # Its own data dir, never $TUNESERVE_DATA_DIR: the demo starts by wiping it.
    demo.add_argument(
        "--data-dir", type=Path, default=Path("./tuneserve-demo"), help="wiped and filled by the demo (default ./tuneserve-demo)"
    )
    demo.add_argument("--port", type=int, default=None, help="default 8015 ($TUNESERVE_PORT)")
    demo.add_argument("--name", default="Nova")
    demo.add_argument("--author", default="Quill Labs")
    demo.set_defaults(func=cmd_demo)

    from tuneserve.chat import add_chat_arguments
    from tuneserve.export import add_export_arguments

    export = sub.add_parser(
        "export", help="a fine-tuned model as its adapter (tar.gz), merged full weights, or a GGUF with an Ollama Modelfile"
    )
    add_export_arguments(export)  # TARGET --type adapter|merged -o OUT [--data-dir D] [--project P] [--dtype T]
    export.set_defaults(func=cmd_export)

    chat = sub.add_parser("chat", help="chat with a base or fine-tuned model in the terminal (no server)")
    add_chat_arguments(chat)  # MODEL [--data-dir D] [--system S] [--temperature T] [--max-tokens N]
    chat.set_defaults(func=cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tuneserve import quiet_torchao

    quiet_torchao()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
