"""Scoring a candidate policy (the search's reward), and the one-shot baselines that choose a
policy without a search."""
