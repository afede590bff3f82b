#!/usr/bin/env bash
# Builds .gpu/server.tar.xz: the server side (gradio, fastapi, uvicorn and the few packages they
# need) that the lent GPU machine's image lacks, for its Python 3.12, about 17 MB. It travels next
# to the training bundle (../shared/gpu/build_bundle.sh -> .gpu/site.tar.xz); both unpack into
# one folder on PYTHONPATH.
#   benchmarks/gpu/build_server_bundle.sh        (from the project root)
# The pins are the versions the project's own venv resolved; the image already has anyio, httpx,
# jinja2, pandas, pillow, psutil, pyyaml, click, h11, typer, huggingface-hub, zipp.
set -euo pipefail
out=${OUT_DIR:-.gpu}
pins=(
  gradio==6.31.0 gradio_client==2.7.2 hf-gradio==0.4.1 fastapi==0.165.0 starlette==1.10.0
  uvicorn==0.55.0 python-multipart==0.0.34 orjson==3.13.0 groovy==0.1.2 safehttpx==0.1.7
  tomlkit==0.14.0 brotli==1.2.1 pydub==0.25.1 semantic-version==2.10.0 opentelemetry-api==1.45.3
  importlib_metadata==10.2.0 lazy-importer==0.1.0 pytz==2026.6 swagger-ui-bundle-v2==5.31.0
)
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d "$work/whl" "${pins[@]}"
python3 -m pip install -q --no-deps --no-compile --target "$work/site" --python-version 3.12 \
  --implementation cp --only-binary=:all: "${plat[@]}" "$work"/whl/*.whl
# Never used there: the SSR build (the server starts with GRADIO_SSR_MODE=false), the component
# sources, media samples and test data. The SPA in templates/frontend stays.
rm -rf "$work"/site/gradio/{templates/node,_frontend_code,media_assets,test_data}
find "$work/site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$out"
tar -cJf "$out/server.tar.xz" -C "$work" site
ls -la "$out/server.tar.xz"
