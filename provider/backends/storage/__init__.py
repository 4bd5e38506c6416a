"""Object storage backends: `fs` (local directories) and `s3` (any S3-compatible server)."""
