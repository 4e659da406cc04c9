"""notebooks/tutorial.ipynb runs to the end on real MNIST (with the suite's small CNN and VAE) and
its cells draw the figures they promise; it is stored without outputs."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.ipynb"


def test_the_tutorial_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 5
    assert all(not c.outputs and c.execution_count is None for c in code)


# nbclient runs in a process of its own: its event loop and zmq threads stay out of the pytest
# worker, which goes on compiling JAX programs
RUN = """
import sys, time, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
start = time.perf_counter()
NotebookClient(nb, timeout=600, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[3]}}).execute()
nbformat.write(nb, sys.argv[2])
print(f"the tutorial ran in {time.perf_counter() - start:.0f} s")
"""


def test_the_tutorial_runs_and_draws_its_figures(trained_run, vae_run, mnist_dir, tmp_path):
    env = {
        **os.environ,
        "MNISTXAI_CHECKPOINT": str(trained_run[0]),
        "MNISTXAI_VAE": str(vae_run[0]),
        "MNISTXAI_DATA_DIR": str(mnist_dir),
    }
    executed = tmp_path / "executed.ipynb"
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(NOTEBOOK), str(executed), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    print(done.stdout.strip())
    nb = nbformat.read(executed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    figures = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in code]
    text = ["".join(o.get("text", "") for o in c.outputs) for c in code]
    # 1: the method grid; 2: the leaderboard's bars; 3: the AM gallery; 4: the latent walk
    assert figures[1:5] == [1, 1, 1, 1], figures
    assert "IG completeness" in text[1]
    assert "| saliency" in text[2] and "integrated_gradients" in text[2]
    assert "classified as their target" in text[3]
