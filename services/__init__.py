"""The three saim gRPC services. Each wires the core package (saim) to gRPC and Kafka; no domain logic here."""
