"""Together's create body mapped onto the job service's JobRequest, as api/opea.py maps OPEA's.

The SDK sends its defaults every time (packing true, batch_size "max", a cosine schedule of half a cycle, early
stopping off): those map to what tuneserve does by default. Any value tuneserve cannot honour is a 400 naming the
parameter, never dropped.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from tuneserve.api.together_schemas import TogetherCreateBody
from tuneserve.errors import InvalidRequest
from tuneserve.jobs.names import checkpoint_model_name
from tuneserve.jobs.requests import JobRequest

_EARLY_STOPPING = (
    "Together's early-stopping fields are not mapped; tuneserve's own early stopping is early_stopping_patience "
    "(with a validation_file or validation_split) on POST /v1/fine_tuning/jobs"
)
# Options tuneserve has no counterpart for, with why: refused whenever they ask for more than the SDK's default.
_UNSUPPORTED = {
    "wandb_key": "tuneserve never takes W&B keys in requests: set WANDB_API_KEY in the server's environment "
    "and pass wandb_project_name",
    "wandb_base_url": "the W&B host is the server's (WANDB_BASE_URL in its environment)",
    "early_stopping_enabled": _EARLY_STOPPING,
    "early_stopping_patience": _EARLY_STOPPING,
    "early_stopping_min_delta": _EARLY_STOPPING,
    "early_stopping_warmup_evals": _EARLY_STOPPING,
    "from_hf_model": "to start from a Hugging Face model, give it as `model`",
    "hf_model_revision": "to start from a Hugging Face model, give it as `model`",
    "hf_api_token": "the server's Hugging Face token is used (HF_TOKEN in its environment)",
    "hf_output_repo_name": "tuneserve does not push models to the Hugging Face Hub; download them instead",
}
_UNSUPPORTED_DPO = {
    "dpo_normalize_logratios_by_length": "tuneserve's DPO loss is the standard sigmoid loss on summed log-ratios",
    "dpo_reference_free": "tuneserve's DPO always uses the reference model",
    "rpo_alpha": "tuneserve's DPO has no RPO (NLL) term",
    "simpo_gamma": "tuneserve does not train SimPO",
}


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{param} is not supported by tuneserve: {why}", param=param, code="unsupported_parameter")


def _check_supported(body: TogetherCreateBody) -> None:
    for param, why in _UNSUPPORTED.items():
        if getattr(body, param) not in (None, False):
            raise _refuse(param, why)
    method = body.training_method
    if method is not None:
        for param, why in _UNSUPPORTED_DPO.items():
            if getattr(method, param) not in (None, False, 0):
                raise _refuse(f"training_method.{param}", why)
    if body.multimodal_params is not None and body.multimodal_params.train_vision:
        raise _refuse("multimodal_params.train_vision", "tuneserve trains text models only")
    scheduler = body.lr_scheduler
    if scheduler is not None and scheduler.lr_scheduler_args is not None:
        cycles = scheduler.lr_scheduler_args.num_cycles
        if scheduler.lr_scheduler_type == "cosine" and cycles not in (None, 0.5):
            raise _refuse(
                "lr_scheduler.lr_scheduler_args.num_cycles", "tuneserve's cosine schedule decays over half a cycle (0.5)"
            )


def base_model_of(body: TogetherCreateBody, job_model_name) -> str:
    """`model`, or the model `from_checkpoint` names: JOB_ID[:STEP] or a fine-tuned model's name[:STEP]."""
    if body.model and body.from_checkpoint:
        raise InvalidRequest("give either model or from_checkpoint, not both", param="from_checkpoint")
    if body.model:
        return body.model
    if not body.from_checkpoint:
        raise InvalidRequest("model (or from_checkpoint) is required", param="model")
    ref, _, step = body.from_checkpoint.rpartition(":")
    if not (step.isdigit() and ref):
        ref, step = body.from_checkpoint, ""
    name = ref if ref.startswith("ft:") else job_model_name(ref)
    return checkpoint_model_name(name, int(step)) if step else name


def job_request(body: TogetherCreateBody, model: str) -> JobRequest:
    """The JobRequest for a Together create body whose base (or fine-tuned model to continue from) is `model`."""
    _check_supported(body)
    request: dict[str, Any] = {
        "model": model,
        "training_file": body.training_file,
        "validation_file": body.validation_file or None,  # the SDK sends "" for none
        "suffix": body.suffix,
        "seed": body.random_seed,
        "learning_rate": body.learning_rate,
        "warmup_ratio": body.warmup_ratio,
        "max_grad_norm": body.max_grad_norm,
        "weight_decay": body.weight_decay,
        "n_checkpoints": body.n_checkpoints,
        "n_evals": body.n_evals,
        "max_seq_length": body.max_seq_length,
        "gradient_accumulation_steps": body.gradient_accumulation_steps or None,
    }
    # packing true (the SDK's default) lets tuneserve choose how to avoid padding; false pads examples of like length.
    if body.packing is False:
        request["packing"] = "length_grouped"
    if body.lr_scheduler is not None:
        request["lr_scheduler_type"] = body.lr_scheduler.lr_scheduler_type
        if body.lr_scheduler.lr_scheduler_args is not None:
            request["min_lr_ratio"] = body.lr_scheduler.lr_scheduler_args.min_lr_ratio
    hyperparameters: dict[str, Any] = {"n_epochs": body.n_epochs}
    if body.batch_size != "max":  # "max": the largest that fits, which is what tuneserve's "auto" picks
        hyperparameters["batch_size"] = body.batch_size
    training_type = body.training_type
    if training_type is not None and training_type.type == "Full":
        request["training_type"] = "full"
    elif training_type is not None:
        lora = {
            "r": training_type.lora_r,
            "alpha": training_type.lora_alpha,
            "dropout": training_type.lora_dropout,
            "target_modules": _modules(training_type.lora_trainable_modules),
        }
        request["training_type"] = "lora"
        request["lora"] = {k: v for k, v in lora.items() if v is not None}
    method = body.training_method
    if method is not None and method.method == "dpo":
        hyperparameters["beta"] = method.dpo_beta
        request["method"] = {"type": "dpo", "dpo": {"hyperparameters": _present(hyperparameters)}}
    else:
        request["hyperparameters"] = _present(hyperparameters)
        if method is not None:
            request["train_on_inputs"] = method.train_on_inputs
    wandb = {"project": body.wandb_project_name, "name": body.wandb_name, "entity": body.wandb_entity}
    if body.wandb_project_name or body.wandb_name or body.wandb_entity:
        request["integrations"] = [{"type": "wandb", "wandb": _present(wandb)}]
    try:
        return JobRequest.model_validate(_present(request))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _modules(value: str | None) -> str | list[str] | None:
    """Together's comma-separated module names, or "all-linear"."""
    if value is None or value == "all-linear":
        return value
    return [m.strip() for m in value.split(",") if m.strip()]


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
