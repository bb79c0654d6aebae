"""The embedded local stack (broker, S3 endpoint, three service processes) and the virtual annotators."""
