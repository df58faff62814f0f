"""The whole AGCL pipeline end to end on CT: coarse attention, contrastive pre-training,
segmentation.

With no arguments it writes a small synthetic two-modality BTCV-like dataset into a cache folder
(reused on later runs), reads it back through the same loading code as real data and runs the
three stages with the ``quick`` preset (a few minutes on a 2-core CPU), printing per-organ Dice,
MSD (ASSD) and HD95 on the held-out cases. It is ``agcl train`` (the same code, the same flags):

    python examples/btcv_full.py                                   # synthetic, quick preset
    python examples/btcv_full.py --data-dir /data/BTCV --preset paper --device cuda
    python examples/btcv_full.py --data-dir /data/nnUNet_raw/Dataset017_BTCV    # nnU-Net layout
    python examples/btcv_full.py --data-dir /data/ce --modality contrast \\
                                 --data-dir /data/nce --modality non-contrast
    python examples/btcv_full.py --ablation --seeds 3              # all five, with Wilcoxon
    python examples/btcv_full.py --resume                          # continue an interrupted run
    python examples/btcv_full.py --overwrite                       # replace the run in --out
    torchrun --nproc_per_node=2 examples/btcv_full.py              # stages 2-3 distributed

Outputs in ``--out``: run.json, results.json, results.md, checkpoints/, coarse/ and predictions/
NIfTI files (with the input's affine and header), epochs.jsonl and, with matplotlib, the PCA plot
of the projected embeddings (paper Fig. 3) and overlays of prediction vs ground truth (Fig. 4).
``agcl predict --run runs/btcv_full --input NEW_SCAN.nii.gz --out DIR`` applies the run to new
scans; ``agcl evaluate`` scores any segmenter's output.
"""

from __future__ import annotations

import sys

from agcl.cli.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="examples/btcv_full.py"))
