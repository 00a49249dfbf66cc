#!/usr/bin/env bash
# Regenerate every figure and number the README shows, with the README's own commands, and time
# each (bash's `time`: wall clock, then CPU time in user and system mode). From the repository root:
#
#     bash scripts/readme_figures.sh            # all of it
#     bash scripts/readme_figures.sh demo       # one part: demo, image, inpainting, photon
#     python scripts/check_readme_numbers.py    # then: do the README's numbers match?
#
# Everything is written under out/ first; only the figures the README shows (and the JSON or
# report the check script reads) are copied into docs/figures/. The examples write there directly,
# with an explicit --out, as the README says.
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
BIN="${BIN:-.venv/bin}"
TIMEFORMAT="  %R s wall, %U s user + %S s system CPU"
parts=("${@:-demo image inpainting photon}")
parts=(${parts[*]})

has() { [[ " ${parts[*]} " == *" $1 "* ]]; }

if has demo; then
    echo "make demo (posterior demo --out out/demo)"
    rm -rf out/demo
    time "$BIN/posterior" demo --out out/demo --quiet
    cp out/demo/demo_samples.png out/demo/demo_traces.png docs/figures/
    cp out/demo/mnist/mnist-inpaint_images.png docs/figures/demo_mnist.png
    cp out/demo/mnist/report.json docs/figures/demo_mnist.json
fi

if has image; then
    echo "Your own image (posterior sample ... --out out/my_digit)"
    mkdir -p out
    "$BIN/python" -c "import posterior as ps; x, _ = ps.priors.mnist_heldout(8); ps.io.save_image(x[0], 'out/digit.png');
ps.io.save_image(ps.operators.half_mask((28, 28)).float() * 2 - 1, 'out/mask.png')"
    time "$BIN/posterior" sample --prior mnist --observation out/digit.png --operator inpaint:out/mask.png \
        --noise 0.1 --method tds --particles 256 --steps 50 --seed 0 --out out/my_digit --overwrite --quiet
    for f in observation.png mean.png std.png samples.png traces.png report.md; do
        cp "out/my_digit/$f" docs/figures/your_own_image/
    done
    echo "the same observation with --method mcgdiff (one system of 256 particles): its log-evidence"
    time "$BIN/posterior" sample --prior mnist --observation out/digit.png --operator inpaint:out/mask.png \
        --noise 0.1 --method mcgdiff --particles 256 --steps 50 --seed 0 --out out/my_digit_mcgdiff \
        --overwrite --quiet
    grep -E "log-evidence|std per pixel|fell to" out/my_digit_mcgdiff/report.md
fi

if has inpainting; then
    echo "python examples/mnist_inpainting.py --out docs/figures/mnist_inpainting.png"
    time "$BIN/python" examples/mnist_inpainting.py --threads 1 --out docs/figures/mnist_inpainting.png
fi

if has photon; then
    echo "python examples/photon_limited_mnist.py --out docs/figures/photon_limited_mnist.png"
    time "$BIN/python" examples/photon_limited_mnist.py --threads 1 --out docs/figures/photon_limited_mnist.png
fi
