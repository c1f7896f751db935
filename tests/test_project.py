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


def test_readme_main_job_is_fastbp_train_with_the_same_set_up():
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    main_job, setup_and_test = blocks[0].split(" && "), blocks[1].split(" && ")
    assert main_job[-1] == "fastbp train" and main_job[:-1] == setup_and_test[:-1]


def test_no_module_of_the_library_is_over_400_lines():
    """Each module holds one thing a reader can take in: the package's
    layers are split into modules, not grown into long ones."""
    long = {str(path.relative_to(ROOT)): lines for path in (ROOT / "fastbp").rglob("*.py")
            if (lines := len(path.read_text().splitlines())) > 400}
    assert not long, long

