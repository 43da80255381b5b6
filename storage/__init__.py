"""Storage: corpus and shard Parquet I/O, score files, and the SQL ledger."""
