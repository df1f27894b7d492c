"""What every PNG the workflows draw shares: matplotlib without a display, and one way to write a
figure (tight, 120 dpi) to a path or a binary file and either hand it back (tests) or close it."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig, path, keep: bool = False, tight_box: bool = True):
    """Lay out ``fig``, write it as PNG to ``path``; return it when ``keep``, else close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png", **({"bbox_inches": "tight"} if tight_box else {}))
    if keep:
        return fig
    pyplot().close(fig)
    return None
