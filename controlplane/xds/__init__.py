"""The ADS server: a sans-IO protocol state machine and its grpcio driver."""
