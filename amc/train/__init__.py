"""The one training loop, knowledge distillation, BatchNorm recalibration, distributed (torchrun) and precision."""
