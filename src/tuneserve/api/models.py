"""/v1/models: base models available here and the project's fine-tuned models.

Lineage is in each card: `root` is the base model, `parent` the model it was fine-tuned from
(a base model or another fine-tuned model), and `fine_tuning_job_id` the job that made it.
"""

from __future__ import annotations

from fastapi import APIRouter

from tuneserve.api.deps import Catalog, LocalInference, Project, UpstreamServer
from tuneserve.api.responses import FineTunedModel, Model, ModelDeleted, ModelList, error_responses
from tuneserve.errors import NotFound
from tuneserve.jobs.catalog import ModelCatalog

router = APIRouter(prefix="/v1/models", tags=["models"])


def _cards(catalog: ModelCatalog, project: str) -> list[Model]:
    cards = [Model(id=name, created=0, owned_by="tuneserve", root=name, parent=None) for name in catalog.base_models()]
    cards += [
        FineTunedModel(
            id=job.fine_tuned_model,
            created=job.finished_at or job.created_at,
            owned_by=project,
            root=job.spec["model"],
            parent=job.model,
            fine_tuning_job_id=job.id,
        )
        for job in catalog.fine_tuned(project)
    ]
    cards += [  # loaded with /v1/load_lora_adapter (vLLM's protocol)
        Model(id=adapter["name"], created=adapter["created"], owned_by=project, root=adapter["base"], parent=adapter["base"])
        for adapter in catalog.runtime_adapters(project)
    ]
    return cards


@router.get("", response_model=ModelList, responses=error_responses(401))
def list_models(catalog: Catalog, project: Project):
    """Every base model available and every fine-tuned model of the caller's project."""
    return ModelList(data=_cards(catalog, project))


@router.get("/{model:path}", response_model=FineTunedModel | Model, responses=error_responses(401, 404))
def retrieve_model(catalog: Catalog, project: Project, model: str):
    """One model card."""
    for card in _cards(catalog, project):
        if card.id == model:
            return card
    raise NotFound(f"The model {model!r} does not exist", param="model", code="model_not_found")


@router.delete("/{model:path}", response_model=ModelDeleted, responses=error_responses(401, 403, 404, 502))
def delete_model(catalog: Catalog, upstream: UpstreamServer, engine: LocalInference, project: Project, model: str):
    """Remove a fine-tuned model from serving: it leaves /v1/models and answers 404 from then on."""
    adapter = catalog.delete(project, model)
    if upstream is not None:
        upstream.unregister_adapter(model)
    engine.unload_adapter(adapter)
    return ModelDeleted(id=model, deleted=True)
