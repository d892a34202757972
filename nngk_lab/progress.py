"""Progress bars that leave no trace in a saved notebook.

In Jupyter, tqdm draws each bar as a widget in the cell's output. A closed bar
(``leave=False``) disappears from the live page, but the saved notebook keeps one output
per bar, which static viewers (GitHub, nbviewer) show as a "0%" line: dozens after a
training run. :func:`transient_progress` collects the bars drawn inside it in one output
area and empties that area when the block ends.
"""

from __future__ import annotations

import contextlib
import io
import sys

_depth = 0  # nested blocks share the outermost one's area


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws widgets), False in a terminal
    or a plain Python process."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


@contextlib.contextmanager
def transient_progress():
    """Inside a Jupyter kernel: show the block's progress bars in one output area that is
    replaced by nothing when the block ends; text printed in the block is printed after
    it, so it stays in the cell. Elsewhere (terminal, tests, scripts): does nothing."""
    global _depth
    if _depth or not in_notebook_kernel():
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    import ipywidgets
    from IPython.display import display

    area = ipywidgets.Output()
    handle = display(area, display_id=True)
    out, err = io.StringIO(), io.StringIO()
    _depth += 1
    try:
        # Text would otherwise be routed into the area and vanish with the bars.
        with area, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        _depth -= 1
        area.clear_output()
        handle.update({"text/plain": ""}, raw=True)
        area.close()
        sys.stdout.write(out.getvalue())
        sys.stderr.write(err.getvalue())
