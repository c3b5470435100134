"""What can be done to a network: channels pruned (torch-pruning), blocks removed, weights quantized, the policy that
says which, the student built from it, and its export."""
