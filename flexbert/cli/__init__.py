"""The ``flexbert`` command: one module per subcommand (``flexbert/cli/<name>.py``), each a
``parser()`` and a ``run(args)`` made into ``main(argv)`` by ``flexbert/cli/common.py``.

``scripts/*.py``, ``data_prep/*.py`` and ``train.py`` are shims over these modules, so the commands
in README.md and ``composer train.py CONFIG`` keep working; ``flexbert --help`` lists them all.
"""
