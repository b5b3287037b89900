"""earl sandboxes: run one untrusted program isolated (namespaces + rlimits) and a pool for batches."""
