"""``python -m sktransfer``: the ``sktransfer`` command."""

from .cli import run

if __name__ == "__main__":  # imported by tools that list modules: nothing runs
    run()
