"""Kafka/Faust streaming layer of pantau (embedded broker, apps, agents)."""
