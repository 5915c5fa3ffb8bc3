"""tuneserve: a self-hosted fine-tuning service for open LLMs with an OpenAI-compatible API."""

__version__ = "0.1.0"


def quiet_torchao() -> None:
    """For entry points (the CLI, the training process). transformers imports torchao (QLoRA's NF4)
    in every process, and torchao then warns that its optional CUDA kernels do not load on this
    torch build; NF4 needs none of them."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
