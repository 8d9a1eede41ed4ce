"""The Triton kernels on CPU through triton's interpreter.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is defined, so it is set here,
before any test module imports triton (``adamp_torch._triton`` imports its kernels on
first use). Each test module skips itself when torch or triton is not importable.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
