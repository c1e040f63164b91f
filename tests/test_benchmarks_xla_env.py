"""`xla_env` adds its settings without overriding what the user set, and only on a CPU run."""
import fnmatch
import os
import sys

import pytest

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


def hand_made_host(monkeypatch, jax_platforms=None, files=(), installed=()):
    """This process as if on a host with the device `files` and the `installed` modules."""
    if jax_platforms is None:
        monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    else:
        monkeypatch.setenv("JAX_PLATFORMS", jax_platforms)
    monkeypatch.setattr(xla_env, "device_files", lambda patterns: [
        path for path in files if any(fnmatch.fnmatch(path, pattern) for pattern in patterns)])
    monkeypatch.setattr(xla_env, "importable", lambda module: module in installed)


@pytest.mark.parametrize("jax_platforms,files,installed,platform", [
    ("cpu", ["/dev/nvidiactl", "/dev/nvidia0"], ["jax_cuda12_plugin"], "cpu"),
    ("cuda", [], [], "accelerator"),
    ("tpu", [], [], "accelerator"),
    (None, ["/dev/nvidiactl", "/dev/nvidia0"], ["jax_cuda12_plugin"], "accelerator"),
    (None, ["/dev/nvidia0"], ["jax_cuda13_plugin"], "accelerator"),
    (None, ["/dev/nvidiactl", "/dev/nvidia0"], ["libtpu"], "cpu"),
    (None, [], ["libtpu", "jax_cuda12_plugin"], "cpu"),
    (None, ["/dev/accel0"], ["libtpu"], "accelerator"),
    (None, ["/dev/vfio/vfio", "/dev/vfio/0"], ["libtpu"], "accelerator"),
    (None, ["/dev/vfio/vfio"], ["libtpu"], "cpu"),
    (None, ["/dev/accel0"], [], "cpu"),
])
def test_target_platform_in_hand_made_environments(monkeypatch, jax_platforms, files, installed, platform):
    hand_made_host(monkeypatch, jax_platforms, files, installed)
    assert xla_env.target_platform()[0] == platform


def test_reason_names_what_decided(monkeypatch):
    hand_made_host(monkeypatch, files=["/dev/accel0"], installed=["libtpu"])
    assert xla_env.target_platform() == ("accelerator", "/dev/accel0 and libtpu")
    hand_made_host(monkeypatch, jax_platforms="cpu", files=["/dev/accel0"], installed=["libtpu"])
    assert xla_env.target_platform() == ("cpu", "JAX_PLATFORMS=cpu")


def configure_recording_restarts(monkeypatch, **host) -> list:
    """Runs `configure()` on a hand-made host, with jax not yet imported; returns the restarts
    it asked for (`os.execve` arguments) instead of restarting."""
    hand_made_host(monkeypatch, **host)
    monkeypatch.delenv("BLVNET_XLA_ENV", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    restarts = []
    monkeypatch.setattr(xla_env.os, "execve", lambda *args: restarts.append(args))
    xla_env.configure()
    return restarts


@pytest.mark.parametrize("host", [dict(jax_platforms="cuda"),
                                  dict(files=["/dev/nvidiactl", "/dev/nvidia0"], installed=["jax_cuda12_plugin"]),
                                  dict(files=["/dev/accel0"], installed=["libtpu"])])
def test_configure_leaves_an_accelerator_run_alone(monkeypatch, host):
    assert configure_recording_restarts(monkeypatch, **host) == []
    assert os.environ["XLA_FLAGS"] == "--xla_foo=1"
    assert "GLIBC_TUNABLES" not in os.environ


def test_configure_on_cpu_sets_the_flag_and_restarts_once_with_huge_pages(monkeypatch):
    restarts = configure_recording_restarts(monkeypatch, installed=["libtpu"])
    assert os.environ["XLA_FLAGS"].split() == ["--xla_foo=1", *xla_env.CPU_XLA_FLAGS]
    assert os.environ["GLIBC_TUNABLES"] == xla_env.HUGE_PAGES_TUNABLE
    assert restarts == [(sys.executable, sys.orig_argv, os.environ)]
