"""``python -m distox``: the ``distox`` command."""
from .cli import main

if __name__ == "__main__":
    main()
