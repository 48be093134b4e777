"""`python -m keras_gradwatch`: the `gradwatch` command."""

import sys

from keras_gradwatch.runs.cli import main

sys.exit(main())
