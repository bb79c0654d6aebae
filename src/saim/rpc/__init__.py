"""gRPC plumbing shared by the three services: server construction, error mapping, metrics, health."""
