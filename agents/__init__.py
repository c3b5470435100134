"""The agent layer: SB3 agents configured for compression search, callbacks, export and the `amc` CLI."""
