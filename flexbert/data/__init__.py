"""FlexBERT data: text -> tokenizer -> MDS shards -> packed, masked rows (no Composer import).

Submodules are imported on use so that ``import flexbert.data`` stays cheap (shard-writing worker
processes and the CLIs do not need torch or Streaming)::

    flexbert.data.config     DataConfig
    flexbert.data.tokenizer  SpecialTokens, train_bpe, build_modernbert_tokenizer, save_tokenizer
    flexbert.data.sources    iter_documents (txt/jsonl/parquet readers), InputError
    flexbert.data.shards     tokenize_to_mds, ShardOptions
    flexbert.data.packing    BestFitPacker, make_row
    flexbert.data.masking    MLMMasker
    flexbert.data.warmup     BatchSizeWarmup
    flexbert.data.loader     build_train_loader, build_eval_loader, PackedLoader
"""
