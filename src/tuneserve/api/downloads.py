"""GET /v1/fine_tuning/jobs/{job_id}/download: a fine-tuned model as a tar.gz (a tuneserve extension).

OpenAI has no such route; Together offers one (`/v1/finetune/download`). tuneserve serves a
succeeded job's model in three forms:

- `type=adapter`: the PEFT adapter directory (adapter_model.safetensors, adapter_config.json,
  tokenizer and chat template) that vLLM and PEFT load as it is; `checkpoint_step=N` picks the
  checkpoint of step N instead of the final adapter;
- `type=merged`: the base model with the adapter merged in, plain safetensors weights with the
  same tokenizer, chat template and generation_config, that `AutoModelForCausalLM.from_pretrained`
  loads without PEFT. It is built once and cached in JOB_DIR/exports/;
- `type=gguf` (`quant=f16`, the default, or `q8_0`): the merged model as one GGUF file for llama.cpp,
  Ollama and LM Studio, `{job_id}-gguf-{quant}.gguf`, with the Ollama `Modelfile` that goes beside it
  (export.gguf_tarball). A tar.gz rather than the bare .gguf so that the Modelfile comes with it;
  gzip level 1, as the weights hardly compress. Cached in JOB_DIR/exports/ like merged;
- `type=gguf-lora` (same `quant`): the LoRA adapter alone as llama.cpp's LoRA GGUF, `{job_id}-gguf-lora-{quant}.gguf`,
  for `llama-server -m BASE.gguf --lora ADAPTER.gguf` (gguf_lora.py). A 400 for an adapter llama.cpp cannot apply
  (IA3, DoRA, a full fine-tune).

All come as `application/gzip` named `{job_id}-{type}.tar.gz` (`{job_id}-gguf-{quant}.tar.gz`) with a
Content-Length, under one top-level folder of the same name. The job must belong to the caller's project
(404 otherwise) and have succeeded (409 `job_not_succeeded` otherwise: its state, not the request, is at
fault). `quant` belongs to the GGUF types and is ignored with another type (a 400 there would refuse a request the
schema allows); type=gguf for a model the GGUF writer does not handle is a 400 that says why. Exporting
(torch) is imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from tuneserve.api.deps import Jobs, Project
from tuneserve.jobs.service import JobService
from tuneserve.api.responses import error_responses
from tuneserve.errors import Conflict, InvalidRequest, NotFound

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.get(
    "/{job_id}/download",
    response_class=FileResponse,
    responses={
        200: {
            "description": "A tar.gz under one folder: the PEFT adapter, the merged safetensors model, or (type=gguf) "
            "the GGUF file and its Ollama Modelfile",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(400, 401, 404, 409, 507),
    },
)
def download_model(
    jobs: Jobs,
    project: Project,
    job_id: str,
    type: Literal["adapter", "merged", "gguf", "gguf-lora"] = Query(
        "adapter",
        description="adapter (PEFT tar.gz), merged (full safetensors weights), gguf (merged, one GGUF file for "
        "llama.cpp, Ollama and LM Studio, with an Ollama Modelfile), or gguf-lora (the LoRA adapter alone as a GGUF "
        "for llama.cpp's --lora)",
    ),
    quant: Literal["f16", "q8_0"] | None = Query(
        None, description="type=gguf or gguf-lora: the weights' type (default f16); ignored for adapter and merged"
    ),
    checkpoint_step: int | None = Query(None, ge=1, description="a checkpoint's step instead of the final model"),
):
    """Download the fine-tuned model as a tar.gz: its adapter, merged full weights, or GGUF (a tuneserve extension)."""
    return model_tarball(jobs, project, job_id, type, quant, checkpoint_step)


def model_tarball(jobs: JobService, project: str, job_id: str, type: str, quant: str | None, checkpoint_step: int | None):
    """The download's answer, for this route and Together's (api/together.py): built once, kept in the job's exports/."""
    job = jobs.get(project, job_id)  # NotFound for another project's job
    if job.status != "succeeded":
        raise Conflict(
            f"Job {job_id} has status {job.status!r}; only a succeeded job can be downloaded",
            param="fine_tuning_job_id",
            code="job_not_succeeded",
        )
    job_dir: Path = jobs.job_dir(job_id)
    adapter = job_dir / "final" if checkpoint_step is None else job_dir / "checkpoints" / f"step-{checkpoint_step}"
    if not (adapter / "adapter_config.json").is_file():
        what = "final adapter" if checkpoint_step is None else f"checkpoint at step {checkpoint_step}"
        raise NotFound(
            f"Job {job_id} has no {what}",
            param="checkpoint_step" if checkpoint_step else "fine_tuning_job_id",
            code="checkpoint_not_found" if checkpoint_step else "not_found",
        )

    from tuneserve import export

    name = f"{job_id}-{type}" if not type.startswith("gguf") else f"{job_id}-{type}-{quant or 'f16'}"
    cached = job_dir / "exports" / (f"{name}.tar.gz" if checkpoint_step is None else f"{name}-step-{checkpoint_step}.tar.gz")
    if not cached.is_file():
        if type == "adapter":
            export.export_adapter(adapter, cached, top=name)
        elif type == "merged":
            export.merged_tarball(adapter, job.spec["model"], cached, top=name)
        else:
            try:
                export.gguf_tarball(adapter, job.spec["model"], cached, quant=quant or "f16", top=name, lora=type == "gguf-lora")
            except export.ExportError as exc:  # a base GGUF export cannot write (not Llama, a sentencepiece vocabulary)
                raise InvalidRequest(f"Job {job_id}'s model cannot be exported as GGUF: {exc}", param="type") from None
    return FileResponse(cached, media_type="application/gzip", filename=f"{name}.tar.gz")
