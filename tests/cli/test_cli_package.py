"""The command line is a package of its own: the library does not load it,
its modules stay small, and the old path of its tolerances still works."""
import pathlib
import subprocess
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def test_import_fastbp_loads_neither_the_command_line_nor_the_bench_harness():
    code = ("import sys, fastbp, fastbp.data; "
            "print(sorted(m for m in sys.modules if m.startswith('fastbp.cli') or 'bench' in m))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_the_command_line_loads_the_bench_harness_it_offers():
    code = "import sys, fastbp.cli; print('fastbp.cli.bench.harness' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize("folder", ["fastbp/cli", "fastbp/cli/bench", "fastbp/data"])
def test_no_module_of_the_command_line_or_the_data_readers_is_over_400_lines(folder):
    sizes = {path.name: len(path.read_text().splitlines()) for path in (ROOT / folder).glob("*.py")}
    assert len(sizes) >= 3 and max(sizes.values()) <= 400, sizes


def test_fastbp_check_still_imports_with_a_deprecation_warning_naming_the_new_module():
    sys.modules.pop("fastbp.check", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastbp.check
    from fastbp.cli import check
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == \
        ["fastbp.check is deprecated; use fastbp.cli.check"]
    assert fastbp.check.TOLERANCE is check.TOLERANCE and fastbp.check.rows is check.rows
