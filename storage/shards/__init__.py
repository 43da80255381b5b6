"""What is made of a validated corpus, in the order it happens:

1. ``plan.plan_shards(summary, shard_pairs)`` groups whole queries into shards;
2. ``inputs.write_shard_inputs(corpus, columns, summary, plans, inputs_dir, annotations)`` writes one
   Parquet file of canonical pairs per shard, once, each pair with the ``annotations`` of its run: its
   content hash (``content_hash``, hashed in numpy by ``blake2b``) and any score ``reuse`` carries over;
3. a worker reads its shard with ``inputs.read_shard_input(location)`` and writes ``scores``.
"""
