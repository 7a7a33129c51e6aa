"""Training: the only FlexBERT package that imports Composer.

``config`` (RunConfig), ``composer_model`` (ComposerModel + DataSpec), ``optim``, ``schedulers``,
``callbacks``, ``checkpointing``, ``flops``, ``builders`` (RunConfig -> Trainer), ``cli``.
"""
