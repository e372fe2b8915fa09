#!/usr/bin/env bash
# The CUDA benchmarks in one call (under 8 minutes on one H200): image-tower throughput
# (bf16 autocast, channels-last, pinned non-blocking copies), PIL-draft against nvJPEG
# decoding, xsearch indexing end to end, and exact search on the GPU through torch at 1M
# vectors. Results go to $OUT/gpu_bench.json (or bench/results/gpu_bench.json).
#
#   bench/gpu.sh prepare   # here, with a package registry: py3.12 wheels into .whl/
#   bench/gpu.sh           # on the CUDA machine (torch present; no faiss, no open_clip)
#
# The GPU machine cannot reach a registry, so whatever xsearch needs beyond its torch,
# timm and transformers is installed from the wheels in .whl/ (carry it along: it is
# git-ignored). PyAV is left out (35 MB; only videos need it, and images are benchmarked).
set -euo pipefail
cd "$(dirname "$0")/.."

# module:distribution, for everything xsearch imports that the GPU image may lack.
NEEDED="open_clip:open_clip_torch faiss:faiss-cpu sqlalchemy:sqlalchemy alembic:alembic
mako:mako markupsafe:markupsafe typer:typer click:click shellingham:shellingham rich:rich
markdown_it:markdown-it-py mdurl:mdurl pygments:pygments pillow_heif:pillow-heif
emoji:emoji ftfy:ftfy wcwidth:wcwidth typing_extensions:typing-extensions"

if [[ "${1:-}" == "prepare" ]]; then
  mkdir -p .whl
  dists=()
  for pair in $NEEDED; do dists+=("${pair##*:}"); done
  # Pin to the versions this environment tests with, where it has them.
  pins=()
  for d in "${dists[@]}"; do
    v=$(python -c "import importlib.metadata as m; print(m.version('$d'))" 2>/dev/null || true)
    pins+=("$d${v:+==$v}")
  done
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    -d .whl "${pins[@]}"
  du -sh .whl
  exit 0
fi

started=$(date +%s)
missing=()
for pair in $NEEDED; do
  python -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
done
if ((${#missing[@]})); then
  echo "installing from .whl/: ${missing[*]}" >&2
  pip install -q --no-index --find-links .whl --no-deps "${missing[@]}"
fi
# xsearch itself runs from the tree (no build backend needed on the GPU machine).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
out_dir="${OUT:-bench/results}"
mkdir -p "$out_dir"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >&2 || true
# Leave the 8-minute call a margin for installs and start-up.
left=$((450 - ($(date +%s) - started)))
timeout "$left" python -m bench.gpu_bench --out "$out_dir/gpu_bench.json" --device cuda
echo "wrote $out_dir/gpu_bench.json" >&2
