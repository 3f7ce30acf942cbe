"""Datasets and the label-noise protocol.

- :mod:`~visprompt.data.records`: ``Sample`` and ``DatasetSplits``, the records every part shares.
- :mod:`~visprompt.data.datasets`: the dataset registry (CoOp layout, Food101N, image folder, CSV), ``load_dataset``.
- :mod:`~visprompt.data.fewshot`, :mod:`~visprompt.data.noise`: K-shot sampling and synthetic label noise (pure).
- :mod:`~visprompt.data.pipeline`: ``prepare_fewshot`` (load, sample, add noise, cache) and the ``split.json`` record.
- :mod:`~visprompt.data.transforms`, :mod:`~visprompt.data.loader`: image transforms and a seeded DataLoader (torch).
- :mod:`~visprompt.data.verify`: checks of a dataset on disk; :mod:`~visprompt.data.fake`: tiny fake layouts.

The numpy-only submodules (records, fewshot, noise, pipeline) import no torch themselves; ``import visprompt``, which
any import of a submodule runs first, registers every built-in and so does (see ``visprompt/__init__.py``).
"""
