"""Suite-wide settings: deterministic, single-threaded torch for small, fast tests.

Tiny tensors run faster on one thread than on two (less OpenMP overhead), and the
suite's timings should not depend on the machine's core count.
"""

import torch

torch.set_num_threads(1)
