#!/bin/bash
# GPU probe (bench/gpu-probe.ts) on the device machine, from the repository root, with .gpu/ made by
# tools/gpu/pack.sh: the kernels, then a tiny and the 8B-shape synthetic Llama through the engine,
# on the CPU and on WebGPU. Writes markdown to $OUT.
R=$PWD; G=$R/.gpu; W=/tmp/g
mkdir -p $W && cd $W
nvidia-smi -L; nproc
xz -dc $G/node.xz > node && chmod +x node && tar xJf $G/app.tar.xz || exit 1
for f in $G/*.deb; do dpkg -x $f /; done; ldconfig
for l in $(ls /usr/local/nvidia/lib64/libGLX_nvidia.so* /usr/lib/x86_64-linux-gnu/libGLX_nvidia.so* 2>/dev/null); do echo "$l:"; ldd $l | grep "not found"; done
ICD=$(ls /usr/local/nvidia/share/vulkan/icd.d/*.json /usr/share/vulkan/icd.d/nvidia*.json /etc/vulkan/icd.d/nvidia*.json 2>/dev/null | head -1)
echo "vulkan ICD: $ICD"; [ -n "$ICD" ] && export VK_DRIVER_FILES=$ICD
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/gguf-*.whl && export PYTHONPATH=/tmp/site
xz -dc $G/vocab.gguf.xz > $W/ggml-vocab-llama-bpe.gguf
export LOGIT_LENS_CACHE=$W/cache
timeout 120 ./node dist/bench/gpu-probe.js --providers cpu,webgpu --out $OUT/kernels.md 2>&1 | grep -v "^    at "
python3 $R/tools/synthetic/make_synthetic_gguf.py tiny --out $W/tiny.gguf --vocab-file $W/ggml-vocab-llama-bpe.gguf >/dev/null 2>&1
timeout 120 ./node dist/bench/gpu-probe.js --providers cpu,webgpu --model $W/tiny.gguf --out $OUT/tiny.md 2>&1 | grep -A20 "Whole logit"
( time python3 $R/tools/synthetic/make_synthetic_gguf.py llama3-8b --out $W/8b.gguf --vocab-file $W/ggml-vocab-llama-bpe.gguf ) 2>&1 | tail -3
LOGIT_LENS_THREADS=16 timeout 330 ./node dist/bench/gpu-probe.js --providers cpu,webgpu --model $W/8b.gguf --out $OUT/8b.md 2>&1 | grep -A20 "Whole logit"
echo done
