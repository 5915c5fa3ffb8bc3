"""The CPU's bf16 matmul rate against its fp32 rate, on the shape of a SmolLM2 MLP projection
(2048 tokens x 576 -> 1536): why training computes in bf16 on CPUs that have AVX512-BF16 or AMX
(tuneserve.training.model.device_and_dtype).

    .venv/bin/python benchmarks/matmul_rate.py            # median of 20 products per dtype
"""

from __future__ import annotations

import statistics
import time

import torch

TOKENS, HIDDEN, INTERMEDIATE = 2048, 576, 1536


def gflops(dtype: torch.dtype, repeat: int = 20) -> float:
    a = torch.randn(TOKENS, HIDDEN).to(dtype)
    b = torch.randn(HIDDEN, INTERMEDIATE).to(dtype)
    for _ in range(3):  # warm-up: oneDNN picks its kernel on the first calls
        a @ b
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * TOKENS * HIDDEN * INTERMEDIATE / statistics.median(times) / 1e9


def main() -> None:
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    fp32, bf16 = gflops(torch.float32), gflops(torch.bfloat16)
    print(
        f"{TOKENS}x{HIDDEN} @ {HIDDEN}x{INTERMEDIATE}: fp32 {fp32:,.0f} GFLOP/s, bf16 {bf16:,.0f} GFLOP/s (native bf16: {native})"
    )
    print(f"ratio bf16 / fp32: {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
