"""The packages stand alone: `blvnet_jax` and `input_pipeline` import neither the benchmarks, the
configs nor the tests (those import the packages, never the reverse)."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTSIDE = {"benchmarks", "configs", "tests"}


def imported_top_level(path):
    """The top-level names of every module `path` imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["blvnet_jax", "input_pipeline"])
def test_package_imports_no_benchmark_config_or_test(package):
    modules = sorted((ROOT / package).glob("*.py"))
    assert len(modules) > 5
    found = {str(path.relative_to(ROOT)): sorted(imported_top_level(path) & OUTSIDE) for path in modules}
    assert {path: names for path, names in found.items() if names} == {}


def test_the_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import os\n\ndef f():\n    from configs import demo\n    import benchmarks.report\n")
    assert imported_top_level(module) == {"os", "configs", "benchmarks"}


def test_decoding_videos_imports_no_tensorflow():
    # prepare_tfds' worker processes import tfds_builders to decode videos: TensorFlow would take each
    # several seconds to start; the package's names are imported when first used.
    code = ("import sys, input_pipeline.tfds_builders, input_pipeline.video_files\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'jax'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
