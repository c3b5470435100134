"""What a network costs: measured (MACs, bytes, latency), predicted from a policy before any student is built, the
latency tables (eager and in a runtime), and the budget."""
