"""Data: reading records, corpora → packed token shards, task transformations, collation."""
