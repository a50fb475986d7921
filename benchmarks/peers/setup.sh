#!/usr/bin/env bash
# The peers' own virtual environment (benchmarks/peers/.venv): USB (semilearn) and lucidrains'
# denoising-diffusion-pytorch with what they import, and semigen itself (for its data loading,
# splits and evaluator). semigen never depends on any of them; CI never builds this.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$here/.venv"
python3 -m venv "$venv"
pip=("$venv/bin/pip" install --quiet)
"${pip[@]}" --upgrade pip
"${pip[@]}" "torch>=2.4" "torchvision>=0.19"
"${pip[@]}" -e "$root"
# USB 0.3.2 pins nothing but asks for torchaudio, transformers, wandb and aim, which its image
# algorithms never use (usb_labels.py stands in empty modules for them): install it without
# dependencies, then what its image side imports.
"${pip[@]}" --no-deps "semilearn==0.3.2"
"${pip[@]}" "ruamel.yaml>=0.17" progress scikit-image timm tensorboard matplotlib
"${pip[@]}" "denoising-diffusion-pytorch==2.3.4"
# The libraries weighed against semigen's own code (libraries.py): NT-Xent, precision /
# recall / density / coverage, FID and KID, EMA.
"${pip[@]}" "lightly==1.6.0" "prdc==0.2" "torch-fidelity==0.4.0" "ema-pytorch==0.8.3"
echo "peers' environment ready: $venv"
