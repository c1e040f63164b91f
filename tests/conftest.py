"""Test-session settings: compiled programs are cached on disk so repeated shapes compile once."""
import tempfile

import jax

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="blvnet_jax_test_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
