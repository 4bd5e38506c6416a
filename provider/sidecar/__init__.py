"""The data sidecar: stages a job's inputs in before the worker and ships its results out after.

It runs inside job pods (and as a subprocess of the local backend) with scoped credentials only:
a workspace token for the objects API, or temporary S3 credentials for one bucket.
"""
