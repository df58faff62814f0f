"""AGCL on natural images (PASCAL VOC 2012 layout): the three stages in 2-D, evaluated in IoU.

With no arguments it writes built-in synthetic 2-D scenes (four object classes with their own
colours, textures and shapes on cluttered backgrounds, void bands along the outlines) in the VOC
layout into a cache folder, reads them back through the VOC reader and runs the ``quick`` preset
(minutes on a 2-core CPU), printing IoU per class on the held-out (val) images. It is
``agcl train --domain image2d`` (the same code, the same flags):

    python examples/voc_full.py                                     # synthetic scenes, quick
    python examples/voc_full.py --data-dir /data/VOCdevkit --preset paper --device cuda
    python examples/voc_full.py --ablation                          # all five pre-trainings
    python examples/voc_full.py --resume                            # continue an interrupted run
    torchrun --nproc_per_node=2 examples/voc_full.py                # stages 2-3 distributed

Outputs in ``--out``: run.json, results.json (``{"mean": {"miou"}, "per_class": {name: {"iou"}},
...}``), results.md, predictions/<id>.png (VOC palette), coarse/<id>.png (stage-1 arg-max),
checkpoints/, epochs.jsonl and, with matplotlib, fig_overlays.png and fig_embeddings_pca.png.
"""

from __future__ import annotations

import sys

from agcl.cli.train2d import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="examples/voc_full.py"))
