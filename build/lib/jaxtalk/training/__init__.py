"""Training: train state, sharded train step, orbax checkpointing, metrics logging."""
