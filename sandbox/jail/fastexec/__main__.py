"""`python -m sandbox.jail.fastexec`: build the compiled exec helper now (bootstrap does),
print where the cache keeps it."""

import sys

from .build import main

sys.exit(main())
