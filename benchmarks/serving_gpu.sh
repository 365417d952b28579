#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the serving benchmark on CUDA, then the vLLM resolver plugin
# against a real `vllm serve` (an adapter resolved through the registry, then a branch move
# reloaded in place). Run from the repository root:  bash benchmarks/serving_gpu.sh
# Writes benchmarks/results/serving-gpu.json and prints both reports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD"

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'"

echo "== fmforge serving benchmark on CUDA =="
"$PY" benchmarks/serving.py --device cuda --threads 4 --json "$OUT/serving-gpu.json"

echo "== vLLM LoRAResolver plugin =="
if ! "$PY" -c "import vllm" 2>/dev/null; then
    "$PY" -m pip install --quiet 'vllm>=0.8' || { echo "vllm could not be installed: skipped"; exit 0; }
fi
"$PY" - <<'PYEOF'
import json, os, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
sys.path.insert(0, os.getcwd())
from tests.servingfiles import write_lora, write_tiny_llama
from fmforge.models import checkout, commit_model, reset_branch
from fmforge.models.refs import ModelRefs
from fmforge.repository import Repository

root = Path(tempfile.mkdtemp(prefix="fmforge-vllm-"))
base = write_tiny_llama(root / "base", hidden=256, layers=4, heads=4)
(root / "repo").mkdir()
repo = Repository.init(root / "repo")
commit_model(repo, "tiny", base, "base")
for i, branch in enumerate(("live", "next")):
    commit_model(repo, "svc", write_lora(base, root / f"l{i}", seed=i + 1, rank=8), f"v{i + 1}",
                 base="tiny@main", branch=branch)
checkout(repo, "tiny@main", root / "served")
env = {**os.environ, "FMFORGE_STORE": str(root / "repo"), "FMFORGE_VLLM_BASE": "tiny@main",
       "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true", "VLLM_PLUGINS": "fmforge",
       "FMFORGE_VLLM_URL": "http://127.0.0.1:8011"}
server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                           "--model", str(root / "served"), "--port", "8011", "--enable-lora",
                           "--max-lora-rank", "8", "--max-loras", "4", "--max-model-len", "256",
                           "--gpu-memory-utilization", "0.3", "--enforce-eager"], env=env)
def ask(model):
    body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 8, "temperature": 0}).encode()
    req = urllib.request.Request("http://127.0.0.1:8011/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=120).read())
try:
    for _ in range(600):
        try:
            urllib.request.urlopen("http://127.0.0.1:8011/health", timeout=2); break
        except OSError:
            time.sleep(1)
    t0 = time.perf_counter(); first = ask("svc@live"); cold = time.perf_counter() - t0
    t0 = time.perf_counter(); ask("svc@live"); warm = time.perf_counter() - t0
    reset_branch(repo, "svc", "live", "next")
    time.sleep(3)
    moved = ask("svc@live")
    print(json.dumps({"resolved": first["choices"][0]["text"], "cold_first_request_s": cold,
                      "warm_request_s": warm, "after_move": moved["choices"][0]["text"],
                      "reloaded": moved["choices"][0]["text"] != first["choices"][0]["text"]},
                     indent=2))
finally:
    server.terminate(); server.wait(60)
PYEOF
