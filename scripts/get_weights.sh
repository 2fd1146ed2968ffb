#!/usr/bin/env bash
# Fetch and convert the real ImageNet weights of timm's vit_base_patch16_224 (needs internet; the project's
# development machines have none, so this script is exercised only up to the download).
#
#   scripts/get_weights.sh [timm|npz] [out-dir]
#
# timm: the weights timm's `vit_base_patch16_224` loads by default (tag augreg2_in21k_ft_in1k), as safetensors
#       from timm's Hugging Face repository.
# npz:  the original google-research/vision_transformer checkpoint (ImageNet-21k pre-trained, ImageNet-1k
#       fine-tuned at 224 px), in Google's naming; the converter maps it to timm's names and layouts.
# For CIFAR-10 fine-tuning add --num-classes 10 (a zero-initialised head) to the convert command below.
set -euo pipefail
source=${1:-timm}
out=${2:-models/vit_base_patch16_224}
case "$source" in
  timm) url="https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/resolve/main/model.safetensors" ;;
  npz) url="https://storage.googleapis.com/vit_models/imagenet21k+imagenet2012/ViT-B_16-224.npz" ;;
  *) echo "usage: $0 [timm|npz] [out-dir]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
# convert accepts the URL directly; it records the URL and the file's sha256 in model.json.
deno task convert "$url" --arch vit_base_patch16_224 --out "$out"
echo "converted to $out; classify with: deno task classify --model $out image.jpg"
