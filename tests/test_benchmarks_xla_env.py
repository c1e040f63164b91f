"""`xla_env` adds its settings without overriding what the user set."""
from blvnet_jax import xla_env


def test_flags_are_added_once_and_user_values_win():
    added = xla_env.with_flags("--xla_foo=1")
    assert added.split() == ["--xla_foo=1", *xla_env.CPU_XLA_FLAGS]
    assert xla_env.with_flags(added) == added
    mine = "--xla_cpu_experimental_ynn_fusion_type=default"
    assert xla_env.with_flags(mine) == mine


def test_tunable_is_added_unless_its_name_is_set():
    assert xla_env.with_tunable("") == "glibc.malloc.hugetlb=1"
    assert xla_env.with_tunable("glibc.malloc.arena_max=2") == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert xla_env.with_tunable("glibc.malloc.hugetlb=0") == "glibc.malloc.hugetlb=0"
