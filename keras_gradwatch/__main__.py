"""`python -m keras_gradwatch`: the `gradwatch` command."""

import sys

from keras_gradwatch.cli import main

sys.exit(main())
