from __future__ import annotations

from metering.cli import main

if __name__ == "__main__":
    main()
