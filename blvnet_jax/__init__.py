"""blvnet-jax: bLVNet-TAM and its baselines in JAX/Flax."""
