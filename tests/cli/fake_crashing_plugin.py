"""An adapter whose import kills its process, as a segfaulting framework would."""

import os
import sys

print("fake crash: the framework took the process down", file=sys.stderr, flush=True)
os._exit(70)
