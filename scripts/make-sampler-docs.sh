#!/usr/bin/env bash
# Regenerates the pictures of README "Samplers, editing and inpainting" (docs/samplers/*.png) with
# `vqd generate` on the tiny model shipped in models/tiny-ithq (32x32 images, upscaled 4x, nearest).
# Needs a built solution (dotnet build VqDiffusion.Grpc.sln) and python3 with PIL (python3-pil).
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/samplers
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
vqd() { dotnet src/VqDiffusion.Cli/bin/Debug/net10.0/vqd.dll generate --model models/tiny-ithq --quiet "$@"; }
prompt=(--prompt "teddy bear playing in the pool" --seed 0)

# One token per timestep for t = 37 … 99 and the rest at t = 0: a prior schedule for the 64-token grid.
/usr/bin/python3 -c "import json; print(json.dumps([1 if t == 0 or t >= 37 else 0 for t in range(100)]))" > "$out/unmask-64.json"

vqd "${prompt[@]}" --truncation-rate 0.86 --output "$work/diffusers"
vqd "${prompt[@]}" --truncation-rate 0.86 --sampler vq-diffusion --output "$work/vq-plain"
for s in 2 4 10; do
  vqd "${prompt[@]}" --truncation-rate 0.86 --sampler vq-diffusion --speed "$s" --output "$work/vq-fast$s"
done
vqd "${prompt[@]}" --truncation-rate 0.86 --sampler vq-diffusion --speed 0.5 --unmask-schedule "$out/unmask-64.json" --output "$work/vq-hq"
vqd "${prompt[@]}" --truncation-rate 0.86 --sampler vq-diffusion --prior purity --prior-weight 1 --unmask-schedule "$out/unmask-64.json" --output "$work/vq-purity"
vqd "${prompt[@]}" --truncation-rate 0.86 --sampler vq-diffusion --cf-embeddings empty-prompt --output "$work/vq-zero-shot"

# Editing the diffusers picture with another prompt, and inpainting its right half.
cp "$work/diffusers/000.png" "$out/source.png"
for r in 0.2 0.5 0.8; do
  vqd --prompt "a red car" --seed 1 --sampler vq-diffusion --edit-image "$out/source.png" --strength "$r" --output "$work/edit-vq-$r"
done
vqd --prompt "a red car" --seed 1 --edit-image "$out/source.png" --strength 0.5 --output "$work/edit-diffusers-0.5"
/usr/bin/python3 - "$out/mask.png" <<'PY'
import sys
from PIL import Image
m = Image.new("RGB", (32, 32), (0, 0, 0))
m.paste((255, 255, 255), (16, 0, 32, 32))
m.save(sys.argv[1])
PY
vqd --prompt "a red car" --seed 1 --steps 50 --edit-image "$out/source.png" --mask "$out/mask.png" --output "$work/inpaint-diffusers"
vqd --prompt "a red car" --seed 1 --sampler vq-diffusion --speed 4 --edit-image "$out/source.png" --mask "$out/mask.png" --output "$work/inpaint-vq-fast4"

/usr/bin/python3 - "$work" "$out" <<'PY'
import os, sys
from PIL import Image
work, out = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(work)):
    with Image.open(os.path.join(work, name, "000.png")) as img:
        img.resize((128, 128), Image.NEAREST).save(os.path.join(out, name + ".png"), optimize=True)
for name in ("source", "mask"):
    path = os.path.join(out, name + ".png")
    with Image.open(path) as img:
        img = img.convert("RGB").resize((128, 128), Image.NEAREST)
    img.save(path, optimize=True)
PY
ls -l "$out"
