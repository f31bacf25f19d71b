"""``python -m gpt4all``: the ``gpt4all`` command."""
import sys

from .cli import main

sys.exit(main())
