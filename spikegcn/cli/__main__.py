"""``python -m spikegcn.cli``: the ``spikegcn`` command."""
import sys

from . import main

sys.exit(main())
