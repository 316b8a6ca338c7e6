"""Development tools: a local Kafka broker, example events. Production code never imports these."""
