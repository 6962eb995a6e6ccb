"""Progress bars (tqdm) for training, evaluation and prediction, shown only where someone watches.

A bar is drawn on process 0 when ``train.progress_bar`` is on and stderr is a terminal: in a log file, a
CI job or a notebook-less subprocess, carriage-return updates are noise, so tqdm's own check turns it off.
"""

from __future__ import annotations

import jax


def progress_bar(enabled: bool, total: int, desc: str, initial: int = 0, leave: bool = True):
    """A tqdm bar of ``total`` steps named ``desc``; a silent one unless ``enabled`` on process 0 of a terminal.
    ``leave=False`` clears it when done (evaluation's bars, so the training bar stays the one on screen)."""
    from tqdm.auto import tqdm

    # disable=None: tqdm disables itself when its stream (stderr) is not a TTY
    disable = None if enabled and jax.process_index() == 0 else True
    return tqdm(total=total, initial=initial, disable=disable, desc=desc, dynamic_ncols=True, leave=leave)
