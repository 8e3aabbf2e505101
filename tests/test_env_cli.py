"""`superkern env` and the CLI shell."""
import json
import subprocess
import sys

import superkern
from superkern import backend as B
from superkern.cli import main


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["superkern"] == superkern.__version__
    assert info["torch"] and "backends" in info
    cpu = info["backends"]["cpu"]
    assert cpu["torch"] == "ok"
    # Every backend is either usable or says why not.
    assert set(cpu) == set(B.BACKENDS) and all(isinstance(v, str) and v for v in cpu.values())
    import numpy

    import scipy
    import sentencepiece

    libs = info["libraries"]
    assert libs["numpy"] == numpy.__version__ and libs["scipy"] == scipy.__version__
    assert libs["sentencepiece"] == sentencepiece.__version__
    assert all(isinstance(v, str) and v for v in libs.values())


def test_env_table(capsys):
    """One line per backend under "backends for cpu tensors:", each with its state, as the
    JSON form has it; torch is always usable."""
    assert main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("backends for cpu tensors:")
    table = dict(line.split(None, 1) for line in lines[start + 1:start + 1 + len(B.BACKENDS)])
    assert list(table) == list(B.BACKENDS), table
    assert table["torch"] == "ok"
    assert table == {k: (v or "ok") for k, v in B.available("cpu").items()}, table
    ext = next((s for s in lines if s.startswith("extension ")), "")
    assert "{" not in ext, ext  # a list of fields, not a Python dict's repr


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_import_without_extension_and_triton():
    # `import superkern` must work with neither the compiled extension nor Triton importable.
    code = (
        "import sys; sys.modules['triton'] = None; sys.modules['superkern._C'] = None\n"
        "import superkern, torch\n"
        "from superkern import backend as B\n"
        "assert B.extension() is None and B.triton_error() is not None\n"
        "st = superkern.overlap_stats(torch.randn(20, 5))\n"
        "assert st.backend == 'torch', st.backend\n"
        "print(B.available('cpu'))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "not importable" in res.stdout
