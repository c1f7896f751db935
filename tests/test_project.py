"""The README's commands are the ones CI runs, and the kernels stand alone."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    setup_and_test = blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in setup_and_test.split(" && "):
        assert command in ci, f"README command {command!r} is not in .ci/run"


def test_kernels_import_without_fastbp():
    code = "import sys, kernels; assert not any(m.startswith('fastbp') for m in sys.modules); print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr
