"""The run folders: their format, their writer and every reader.

`records` (the files of a run folder: writing, reading back, totals and
summary) with `_schema` (the fields of each record kind), `_folder` (whose a
folder is, its lock), `plots`, `report` and `_html` (the figures and the
review page) and `cli` (the `gradwatch` command).

Nothing here imports TensorFlow or Keras: a run is reviewed without them.
It imports the core only (the alert kinds, `depth`, `errors`).
"""
