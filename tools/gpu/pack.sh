#!/usr/bin/env bash
# Packs what bench/gpu-probe.ts needs on a GPU machine that has no Node.js and no network (this
# project's device machines: see docs/big-models.md, "GPU") into .gpu/ (keep it out of git:
# `echo /.gpu/ >> .git/info/exclude`), about 40 MB:
#   node.xz         this machine's Node.js binary (x86-64)
#   app.tar.xz      dist/ and only the packages the engine imports (onnxruntime-node for linux-x64,
#                   onnx-proto, protobufjs, @huggingface/tokenizers)
#   vocab.gguf.xz   llama.cpp's ggml-vocab-llama-bpe.gguf, for tools/synthetic/make_synthetic_gguf.py
#   gguf-*.whl      the gguf Python package for that script
#   *.deb           the Vulkan loader and libglvnd: ONNX Runtime's WebGPU provider (Dawn) runs on
#                   Vulkan, and NVIDIA's Vulkan driver (libGLX_nvidia) needs libglvnd's libraries
# Then: the device tool's run with command `bash tools/gpu/run-on-device.sh` and carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/../.."
npm run build >/dev/null
out=.gpu; mkdir -p $out; stage=$(mktemp -d)
cp -r dist package.json "$stage/"
for p in onnxruntime-node onnxruntime-common onnx-proto protobufjs @protobufjs @huggingface/tokenizers; do
  mkdir -p "$stage/node_modules/$(dirname $p)"; cp -rL "node_modules/$p" "$stage/node_modules/$p"
done
rm -rf "$stage"/node_modules/onnxruntime-node/bin/napi-v6/{darwin,win32,linux/arm64}
tar cf - -C "$stage" dist package.json node_modules | xz -T0 -6 > $out/app.tar.xz
xz -T0 -6 -c "$(command -v node)" > $out/node.xz
xz -T0 -6 -c "${LOGIT_LENS_CACHE:-$HOME/.cache/logit-lens}/llamacpp-vocab/ggml-vocab-llama-bpe.gguf" > $out/vocab.gguf.xz
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d $out gguf
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'; mkdir -p /tmp/amd64/partial
apt-get $o update -qq && (cd $out && apt-get $o download libvulkan1 libglvnd0 libglx0 libegl1 libgl1 libopengl0)
rm -rf "$stage"; du -sh $out
