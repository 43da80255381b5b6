"""What is made of a validated corpus, in the order it happens:

1. ``plan.plan_shards(summary, shard_pairs)`` groups whole queries into shards;
2. ``inputs.write_shard_inputs(path, columns, summary, plans, inputs_dir)`` writes one Parquet file of
   canonical pairs per shard, ``annotations`` adds each pair's content hash and any reused score;
3. a worker reads its shard with ``inputs.read_shard_input(path)`` and writes ``scores``.
"""
