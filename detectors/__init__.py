"""pantau's detectors: a pure library (no Kafka), shared by the stream and offline replay."""
