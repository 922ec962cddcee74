"""``python -m taskloom``: the same as the ``taskloom`` command."""
import sys

from taskloom.cli import main

sys.exit(main())
