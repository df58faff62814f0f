"""Repository-wide pytest set-up (applies to tests/ and to the doctests under agcl/).

Triton kernels run on the CPU through Triton's interpreter, which reads TRITON_INTERPRET when
the kernels' module is first imported: set it here, before anything imports agcl.kernels, unless
a CUDA device is present (then the kernels compile for it).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
