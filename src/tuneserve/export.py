"""Export a fine-tuned model: its adapter as a tar.gz, or merged full weights that load with no PEFT.

Owns: `export_adapter` (a tar.gz of a PEFT adapter directory: weights, adapter_config.json,
tokenizer, chat template; not the trainer's resume state), `export_merged` (base + adapter merged
into plain safetensors, with the adapter directory's tokenizer and chat template and the base's
generation_config, so the merged model formats and stops exactly as training and serving do),
`merged_tarball` (the merged model packed, for the download route), `export_gguf` / `gguf_tarball`
(the merged model as one GGUF file with an Ollama Modelfile beside it; the GGUF writing itself is
gguf_export.py), `lookup_local_model` (what a model name means on this machine: an adapter
directory, a base model, a job id or an ft: name in the store of a data directory) and the
`tuneserve export` command.
Does not own: training (training/), serving (inference/), HTTP (api/downloads.py), the job store.

Every artifact is written under a temporary name and renamed into place, so a crash or a
concurrent reader never sees half a tarball or half a model; a full disk removes the temporary
copy and raises errors.InsufficientStorage (a 507 from the download route, exit 1 from the CLI). Tarballs list their files in sorted
order with fixed owners and a zero gzip timestamp, so the same adapter exports to the same bytes.
torch, transformers and peft are imported only inside the functions that need them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tarfile
import threading
from contextlib import contextmanager
from pathlib import Path

from tuneserve.atomic import disk_full_is_insufficient_storage
from tuneserve.errors import InsufficientStorage

ADAPTER_CONFIG = "adapter_config.json"
EXPORT_KINDS = ("adapter", "merged", "gguf", "gguf-lora")
# In checkpoint directories only: the optimizer, schedule and RNG to resume training; not part of the model.
TRAINING_ONLY_FILES = frozenset({"trainer_state.pt", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"})


class ExportError(Exception):
    """The target cannot be exported (or chatted with): the message says why, for a person."""


# ---- tarballs --------------------------------------------------------------------------------


def _tmp_sibling(path: Path, tag: str = "tmp") -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{threading.get_ident()}")


def _tar_name(out: Path) -> str:
    name = out.name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _write_tarball(src_dir: Path, out: Path, top: str, *, skip: frozenset[str] = frozenset(), level: int = 9) -> Path:
    """Pack `src_dir` as `top/...` into `out` (tmp file, then rename). Sorted names, no owners, gzip mtime 0."""
    files = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.name not in skip and not p.name.startswith("."))
    tmp = _tmp_sibling(out)
    with disk_full_is_insufficient_storage(f"writing {out}"):
        out.parent.mkdir(parents=True, exist_ok=True)
        _pack(files, src_dir, tmp, out, top, level)
    return out


def _pack(files: list[Path], src_dir: Path, tmp: Path, out: Path, top: str, level: int) -> None:
    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path in files:
                info = tar.gettarinfo(str(path), arcname=f"{top}/{path.relative_to(src_dir).as_posix()}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_adapter_dir(adapter_dir: Path) -> Path:
    adapter_dir = Path(adapter_dir).expanduser()
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise ExportError(f"{adapter_dir} is not an adapter directory (no {ADAPTER_CONFIG})")
    if not any(adapter_dir.glob("adapter_model.*")):
        raise ExportError(f"{adapter_dir} has no adapter weights (adapter_model.safetensors)")
    return adapter_dir


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model an adapter was trained on, as adapter_config.json names it."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ExportError(f"{adapter_dir / ADAPTER_CONFIG} names no base_model_name_or_path")
    return base


def export_adapter(adapter_dir: Path, out: Path, *, top: str | None = None) -> Path:
    """A .tar.gz of the PEFT directory under one top-level folder (default: `out`'s name without .tar.gz)."""
    adapter_dir = check_adapter_dir(adapter_dir)
    out = Path(out)
    return _write_tarball(adapter_dir, out, top or _tar_name(out), skip=TRAINING_ONLY_FILES)


# ---- merged weights ---------------------------------------------------------------------------


def _stored_dtype(model_dir: Path):
    """The dtype the base checkpoint is stored in (config.json), float32 when it does not say."""
    import torch

    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _as_dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ExportError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


def export_merged(adapter_dir: Path, base_model: str, out_dir: Path, *, dtype=None) -> Path:
    """Merge the adapter into the base and save a plain transformers model directory at `out_dir`.

    The merge is computed in float32 and saved in `dtype` (default: the dtype the base is stored
    in). The directory holds safetensors weights, config.json, generation_config.json (the base's:
    same EOS and defaults as serving), and the tokenizer + chat template from the adapter
    directory (what training used). `AutoModelForCausalLM.from_pretrained(out_dir)` loads it.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneserve.atomic import write_dir_atomically
    from tuneserve.models import load_tokenizer, resolve_model

    adapter_dir = check_adapter_dir(adapter_dir)
    out_dir = Path(out_dir)
    model_dir = resolve_model(base_model)
    target_dtype = _as_dtype(dtype) or _stored_dtype(model_dir)

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged = merged.to(target_dtype)
    merged.config.name_or_path = base_model
    tokenizer_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else model_dir
    tokenizer = load_tokenizer(tokenizer_dir)

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)  # safetensors (the only format transformers 5 writes) + config + generation_config
        tokenizer.save_pretrained(tmp)
        template = tokenizer_dir / "chat_template.jinja"
        if template.is_file() and not (tmp / "chat_template.jinja").is_file():
            shutil.copy2(template, tmp / "chat_template.jinja")
        if not any(tmp.glob("*.safetensors")):
            raise ExportError("the merged model was not saved as safetensors")

    write_dir_atomically(out_dir, write)
    return out_dir


def merged_tarball(adapter_dir: Path, base_model: str, out: Path, *, top: str | None = None, dtype=None) -> Path:
    """The merged model as a .tar.gz at `out`, built once: an existing `out` is returned as it is.

    An inter-process lock beside `out` makes concurrent callers build it once; the unpacked
    merged directory is removed afterwards (the tarball is what is kept).
    """
    out = Path(out)

    def build(work: Path) -> None:
        export_merged(adapter_dir, base_model, work, dtype=dtype)
        _write_tarball(work, out, top or _tar_name(out))

    return _build_once(out, build)


def _build_once(out: Path, build) -> Path:
    """`build(work_dir)` writes `out` unless it exists; an inter-process lock beside `out` makes it once; the work
    directory is removed afterwards."""
    from tuneserve.models.resolve import file_lock

    if out.is_file():
        return out
    with file_lock(out):
        if out.is_file():
            return out
        work = _tmp_sibling(out, "work")
        try:
            build(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


# ---- GGUF (llama.cpp, Ollama, LM Studio) -----------------------------------------------------------


@contextmanager
def _gguf_errors_as_export_errors():
    from tuneserve.gguf_export import GGUFError

    try:
        yield
    except GGUFError as exc:
        raise ExportError(str(exc)) from None


def export_gguf(adapter_dir: Path, base_model: str, out: Path, *, quant: str = "f16", name: str | None = None) -> Path:
    """The merged model as the single GGUF file `out` (f16 or q8_0), with an Ollama `Modelfile` beside it.

    The merge is computed and kept in float32 (a temporary merged directory, removed after), so the only rounding is
    the GGUF's own. Returns the .gguf path.
    """
    from tuneserve import gguf_export

    with _gguf_errors_as_export_errors():
        gguf_export.check_quant(quant)
        out = Path(out)
        work = _tmp_sibling(out, "merged")
        try:
            export_merged(adapter_dir, base_model, work, dtype="float32")
            gguf_export.write_gguf(work, out, quant=quant, name=name or out.stem)
            modelfile = gguf_export.ollama_modelfile(work, out.name)
            with disk_full_is_insufficient_storage(f"writing {out.parent / gguf_export.MODELFILE}"):
                (out.parent / gguf_export.MODELFILE).write_text(modelfile)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def export_lora_gguf(adapter_dir: Path, base_model: str, out: Path, *, quant: str = "f16", name: str | None = None) -> Path:
    """The LoRA adapter alone as llama.cpp's LoRA GGUF `out` (for `--lora`, beside a GGUF of `base_model`)."""
    from tuneserve.gguf_lora import write_lora_gguf
    from tuneserve.models import resolve_model

    out = Path(out)
    with _gguf_errors_as_export_errors():
        config = json.loads((resolve_model(base_model) / "config.json").read_text())
        return write_lora_gguf(adapter_dir, config, out, quant=quant, name=name or out.stem)


def gguf_tarball(
    adapter_dir: Path, base_model: str, out: Path, *, quant: str = "f16", top: str | None = None, lora: bool = False
) -> Path:
    """A .tar.gz at `out` of `top/` holding `{top}.gguf` and its Modelfile (with `lora`: the LoRA GGUF alone), built
    once (an existing `out` is kept).

    gzip level 1: f16 and q8_0 weights hardly compress, and level 9 would only spend the CPU.
    """
    from tuneserve.gguf_export import check_quant

    with _gguf_errors_as_export_errors():
        check_quant(quant)
    out = Path(out)
    top = top or _tar_name(out)

    def build(work: Path) -> None:
        write = export_lora_gguf if lora else export_gguf
        write(adapter_dir, base_model, work / f"{top}.gguf", quant=quant, name=top)
        _write_tarball(work, out, top, level=1)

    return _build_once(out, build)


# ---- what a name means on this machine (export and chat) ---------------------------------------


def lookup_local_model(
    target: str, *, data_dir: Path | None = None, database_url: str | None = None, project: str = "default"
) -> tuple[str, Path | None]:
    """(base model reference, adapter directory or None) for a name typed at the terminal.

    In order: an adapter directory on disk (its base from adapter_config.json); a model directory
    on disk; a job id (`ftjob-...`) or a fine-tuned model / checkpoint name (`ft:...`) in the store
    of `data_dir` (default: the server's, ./tuneserve-data or $TUNESERVE_DATA_DIR); a base model
    reference (built-in, cached or hub id). Raises ExportError with a message for a person.
    """
    from tuneserve.models import ModelNotFound, check_model

    path = Path(target).expanduser()
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file():
        check_adapter_dir(path)
        base = adapter_base_model(path)
        try:
            return check_model(base), path.resolve()
        except ModelNotFound as exc:
            raise ExportError(f"the adapter {path} was trained on {base!r}, which is not available here: {exc}") from None
    if target.startswith(("ft:", "ftjob-")):
        return _lookup_in_store(target, data_dir, database_url, project)
    try:
        return check_model(target), None
    except ModelNotFound as exc:
        if path.is_dir():
            raise ExportError(
                f"{target} is neither an adapter directory ({ADAPTER_CONFIG}) nor a model directory (config.json)"
            ) from None
        raise ExportError(
            f"unknown model {target!r}: {exc}. Give a base model, an adapter directory, "
            "a job id (ftjob-...) or a fine-tuned model name (ft:...)"
        ) from None


def _lookup_in_store(target: str, data_dir: Path | None, database_url: str | None, project: str) -> tuple[str, Path]:
    from sqlalchemy import select

    from tuneserve.errors import TuneserveError
    from tuneserve.jobs import states
    from tuneserve.jobs.catalog import ModelCatalog
    from tuneserve.settings import Settings
    from tuneserve.store.db import make_engine, make_sessionmaker, migrate
    from tuneserve.store.tables import Job

    settings = Settings(**{k: v for k, v in (("data_dir", data_dir), ("database_url", database_url)) if v is not None})
    if settings.database_url is None and not (settings.data_dir / "tuneserve.db").is_file():
        raise ExportError(
            f"no tuneserve data at {settings.data_dir} to look {target!r} up in; pass --data-dir "
            "(the server's), or give an adapter directory"
        )
    engine = make_engine(settings.db_url)
    try:
        migrate(engine)
        sessions = make_sessionmaker(engine)
        jobs_dir = settings.data_dir / "jobs"
        if target.startswith("ftjob-"):
            with sessions() as session:
                job = session.scalar(select(Job).where(Job.id == target, Job.project == project))
            if job is None:
                raise ExportError(f"no fine-tuning job {target} in project {project!r} at {settings.data_dir}")
            if job.status != states.SUCCEEDED:
                raise ExportError(f"job {target} has status {job.status!r}; only a succeeded job has a model to use")
            base, adapter = job.spec["model"], jobs_dir / job.id / "final"
        else:
            try:
                base, adapter = ModelCatalog(sessions, jobs_dir).lookup(project, target)
            except TuneserveError as exc:
                raise ExportError(f"{exc.message} in project {project!r} at {settings.data_dir}") from None
    finally:
        engine.dispose()
    if adapter is None or not (adapter / ADAPTER_CONFIG).is_file():
        raise ExportError(f"the adapter of {target} is missing on disk ({adapter})")
    return base, adapter


# ---- `tuneserve export` -------------------------------------------------------------------------


def export_command(
    target: str,
    *,
    kind: str,
    output: Path,
    data_dir: Path | None = None,
    database_url: str | None = None,
    project: str = "default",
    dtype: str | None = None,
    quant: str | None = None,
) -> Path:
    """Export `target` (job id, ft: model or checkpoint name, or adapter directory) and return what was written.

    kind "adapter": `output` is the .tar.gz (or a directory to put `NAME-adapter.tar.gz` in).
    kind "merged": `output` is the model directory to create, or a .tar.gz to pack it into.
    kind "gguf": `output` is the .gguf file (its Modelfile beside it), a directory to put `NAME-QUANT.gguf` and the
    Modelfile in, or a .tar.gz to pack both into; `quant` is f16 (default) or q8_0.
    kind "gguf-lora": the same, with the LoRA adapter alone as llama.cpp's LoRA GGUF (`NAME-lora-QUANT.gguf`), no
    Modelfile: it runs beside a GGUF of the base model (`llama-server -m BASE.gguf --lora ADAPTER.gguf`).
    """
    if kind not in EXPORT_KINDS:
        raise ExportError(f"unknown export type {kind!r}; use {', '.join(EXPORT_KINDS)}")
    if quant is not None and not kind.startswith("gguf"):
        raise ExportError(f"--quant is for GGUF exports (--format gguf or gguf-lora), not {kind}")
    if kind.startswith("gguf"):
        from tuneserve.gguf_export import check_quant

        with _gguf_errors_as_export_errors():
            quant = check_quant(quant or "f16")  # before the lookup: a typo is reported at once
    base, adapter = lookup_local_model(target, data_dir=data_dir, database_url=database_url, project=project)
    if adapter is None:
        raise ExportError(f"{target!r} is a base model; export needs a fine-tuned model, a job id or an adapter directory")
    output = Path(output).expanduser()
    name = _export_name(target, adapter)
    packed = output.name.endswith((".tar.gz", ".tgz"))
    if kind == "adapter":
        if output.is_dir():
            output = output / f"{name}-adapter.tar.gz"
        return export_adapter(adapter, output)
    if kind == "gguf":
        return _export_gguf_to(output, adapter, base, f"{name}-{quant}", quant)
    if kind == "gguf-lora":
        return _export_gguf_to(output, adapter, base, f"{name}-lora-{quant}", quant, lora=True)
    if packed:
        output.unlink(missing_ok=True)  # merged_tarball keeps an existing file; the CLI always rebuilds
        return merged_tarball(adapter, base, output, dtype=dtype)
    return export_merged(adapter, base, output, dtype=dtype)


def _export_gguf_to(output: Path, adapter: Path, base: str, name: str, quant: str, *, lora: bool = False) -> Path:
    if output.name.endswith((".tar.gz", ".tgz")):
        output.unlink(missing_ok=True)  # gguf_tarball keeps an existing file; the CLI always rebuilds
        return gguf_tarball(adapter, base, output, quant=quant, lora=lora)
    if output.suffix != ".gguf":
        output = output / f"{name}.gguf"
    write = export_lora_gguf if lora else export_gguf
    return write(adapter, base, output, quant=quant, name=output.stem)


def _export_name(target: str, adapter: Path) -> str:
    if target.startswith("ftjob-"):
        return target
    if target.startswith("ft:"):
        job = "ftjob-" + target.split(":ckpt-step-")[0].rsplit(":", 1)[-1]
        step = target.split(":ckpt-step-")[1] if ":ckpt-step-" in target else None
        return f"{job}-step-{step}" if step else job
    return adapter.name if adapter.name != "final" else adapter.parent.name


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", help="a job id (ftjob-...), a fine-tuned model or checkpoint name (ft:...), or an adapter directory"
    )
    parser.add_argument(
        "--type",
        "--format",
        dest="kind",
        choices=EXPORT_KINDS,
        default="adapter",
        help="adapter: a tar.gz of the PEFT directory; merged: full safetensors weights that load without PEFT; "
        "gguf: the merged model as one GGUF file for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile; "
        "gguf-lora: the LoRA adapter alone as a GGUF for llama.cpp's --lora, beside a GGUF of the base model",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="adapter: the .tar.gz to write (or a directory for it); merged: the model directory (or a .tar.gz); "
        "gguf: the .gguf file, or a directory for NAME-QUANT.gguf and the Modelfile (or a .tar.gz of both); "
        "gguf-lora: the .gguf file, a directory for NAME-lora-QUANT.gguf, or a .tar.gz",
    )
    parser.add_argument(
        "--quant",
        default=None,
        metavar="{f16,q8_0}",
        help="gguf, gguf-lora: the weights' type (default f16; norms stay float32 either way)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the server's data directory, to look job ids and ft: names up in"
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--project", default="default", help="the project that owns the job (default: default)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="merged: the weights' dtype (default: the base model's)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    try:
        written = export_command(
            args.target,
            kind=args.kind,
            output=args.output,
            data_dir=args.data_dir,
            database_url=args.database_url,
            project=args.project,
            dtype=args.dtype,
            quant=args.quant,
        )
    except (ExportError, InsufficientStorage) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(written)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tuneserve export", description="Export a fine-tuned model as its adapter, as merged weights, or as GGUF."
    )
    add_export_arguments(parser)
    return cmd_export(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
