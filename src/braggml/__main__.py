"""``python -m braggml``: the command line."""

from .cli import main

raise SystemExit(main())
