#!/usr/bin/env bash
# The Python packages benchmarks/gpu_suite.py needs that a bare GPU machine (Python 3.12, torch 2.11, transformers,
# peft, accelerate, triton; no network) lacks, as wheels in .whl/, plus SmolLM2's tokenizer (the random models'
# tokenizer) in .whl/smollm2-tokenizer. Run it here, in the repository root, with the project's venv; then carry
# .whl to the GPU machine (README: "GPU suite"). About 12 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
# Versions as pinned in pyproject.toml (pydantic-core and the small ones as pydantic 2.14.3 pins them).
WHEELS=(pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 pydantic-settings==2.16.3
        python-dotenv==1.2.4 gguf==0.19.0 torchao==0.18.0)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
"$PY" - <<'PY'
from transformers import AutoTokenizer

from tuneserve.models import BUILTIN_SMOLLM2, resolve_model

AutoTokenizer.from_pretrained(resolve_model(BUILTIN_SMOLLM2)).save_pretrained(".whl/smollm2-tokenizer")
PY
du -sh .whl
