"""Object storage, the system of record: the S3 client (objects), the dataset and annotations in the bucket (pool),
and the nnU-Net export of a campaign (export)."""
