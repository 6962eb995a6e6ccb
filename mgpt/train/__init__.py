"""Training: state, pure steps, Orbax checkpoints and the loop."""
